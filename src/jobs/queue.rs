//! Task workers: claim with a lease, run with no transaction open, record the outcome.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use tokio::sync::watch;
use tracing::Instrument;

use crate::store::jobs::{backoff, ClaimedTask};
use crate::store::Store;

/// How a task failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Worth retrying later (timeout, 5xx, rate limit).
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (invalid input, rejected permanently).
    #[error("permanent: {0}")]
    Permanent(String),
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;
/// Runs one task kind.
pub type Handler = Arc<dyn Fn(ClaimedTask) -> HandlerFuture + Send + Sync>;

/// Wrap an async function as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(ClaimedTask) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    Arc::new(move |t| Box::pin(f(t)))
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub lease: Duration,
    pub batch: i64,
    pub poll_interval: StdDuration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            lease: Duration::minutes(5),
            batch: 8,
            poll_interval: StdDuration::from_millis(500),
            backoff_base: Duration::seconds(10),
            backoff_cap: Duration::hours(1),
        }
    }
}

/// A worker: one per instance (or several), identified by a unique id used as the lease owner.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    id: String,
    handlers: Arc<HashMap<String, Handler>>,
    opts: WorkerOptions,
}

impl Worker {
    pub fn new(store: Store, id: impl Into<String>, handlers: HashMap<String, Handler>, opts: WorkerOptions) -> Self {
        Worker {
            store,
            id: id.into(),
            handlers: Arc::new(handlers),
            opts,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claim one batch and run it. Returns how many tasks were run.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let tasks = self
            .store
            .claim_tasks(&self.id, self.opts.lease, self.opts.batch, Utc::now())
            .await?;
        let n = tasks.len();
        for task in tasks {
            self.run_task(task).await?;
        }
        Ok(n)
    }

    async fn run_task(&self, task: ClaimedTask) -> anyhow::Result<()> {
        let span =
            tracing::info_span!("task", id = task.id, kind = %task.kind, attempt = task.attempts, worker = %self.id);
        self.run_task_inner(task).instrument(span).await
    }

    async fn run_task_inner(&self, task: ClaimedTask) -> anyhow::Result<()> {
        let outcome = match self.handlers.get(&task.kind) {
            Some(h) => {
                // Run the handler in its own tokio task so a panic is contained and recorded.
                let fut = h(task.clone());
                match tokio::spawn(fut).await {
                    Ok(r) => r,
                    Err(e) => Err(TaskError::Transient(format!("handler panicked: {e}"))),
                }
            }
            None => Err(TaskError::Permanent(format!(
                "no handler for task kind {:?}",
                task.kind
            ))),
        };
        let now = Utc::now();
        match outcome {
            Ok(()) => {
                if !self.store.complete_task(task.id, &self.id, now).await? {
                    tracing::warn!("task finished after its lease was taken over; the other worker's result stands");
                }
            }
            Err(err) => {
                let permanent = matches!(err, TaskError::Permanent(_));
                let retry_at = now + backoff(task.attempts, self.opts.backoff_base, self.opts.backoff_cap);
                tracing::warn!(error = %err, permanent, "task failed");
                self.store
                    .fail_task(task.id, &self.id, &err.to_string(), retry_at, permanent, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// Run until `shutdown` turns true; finishes the task in hand before returning.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let ran = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), worker = %self.id, "task worker could not claim or record tasks");
                    0
                }
            };
            if ran == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(self.opts.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
