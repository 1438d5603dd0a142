//! Building and running the application: connect and migrate the store, bind the listener
//! (before anything runs, so tests can use port 0 and read the real port), start the clock and
//! the task workers, serve until shutdown, then finish in-flight requests and tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::jobs::{CronJob, Handler, Scheduler, Worker, WorkerOptions};
use crate::store::{Store, StoreOptions};

/// Connect to the configured database and apply migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let opts = StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_secs(config.database.acquire_timeout_secs),
        pg_schema: None,
        sqlite_mmap_mib: config.database.sqlite_mmap_mib,
        ..Default::default()
    };
    let store = Store::connect(config.database_url(), &opts).await.with_context(|| {
        format!(
            "opening the database {}",
            crate::config::redact_url(config.database_url())
        )
    })?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}

/// The jobs every instance's clock fires. Later steps add theirs here.
pub fn cron_jobs() -> anyhow::Result<Vec<CronJob>> {
    Ok(vec![
        crate::store::arrears::late_fee_job()?,
        crate::payments::compensation::sweep_job()?,
        CronJob::new("queue.heartbeat", "0 */5 * * * *", |store, at| async move {
            let counts = store.task_counts().await?;
            tracing::info!(scheduled_for = %at, ?counts, "task queue heartbeat");
            Ok(())
        })?,
    ])
}

/// The task handlers this process runs. Later steps add theirs here.
pub fn task_handlers(state: &AppState) -> HashMap<String, Handler> {
    let mut handlers = HashMap::new();
    handlers.extend(state.payments.task_handlers());
    if state.config.reminders.enabled {
        match crate::dunning::outbox::Deliverer::from_config(state.store.clone(), &state.config) {
            Ok(d) => handlers.extend(crate::dunning::outbox::task_handlers(Arc::new(d))),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reminder delivery is off: its configuration is invalid")
            }
        }
    }
    handlers
}

/// A bound, ready-to-run application.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Build on an existing store (tests share theirs), binding `config.http.listen`.
    pub async fn build_with_store(config: Config, store: Store) -> anyhow::Result<Application> {
        let addr = config.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let payments = crate::payments::Payments::from_config(store.clone(), &config)
            .context("configuring the payment merchants")?;
        if config.payments.notify_base_url.trim().is_empty() && config.http.listen.ends_with(":0") {
            // Bound on a free port (tests, `demo --no-serve`): gateways reach us where we are.
            payments.set_notify_base_url(&format!("http://{addr}"));
        }
        if let Err(e) = payments.sync_merchants(chrono::Utc::now()).await {
            tracing::warn!(error = %format!("{e:#}"), "recording the configured merchants failed");
        }
        let state = AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(http::metrics::Metrics::new()),
            instance_id: format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()).into(),
            payments: Arc::new(payments),
        };
        Ok(Application { listener, addr, state })
    }

    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = open_store(&config).await?;
        Self::build_with_store(config, store).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves; then stop taking requests, let in-flight ones finish
    /// (up to `http.shutdown_grace_secs`), stop the clock and the workers, and close the store.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application { listener, state, .. } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        let mut scheduler = None;
        if state.config.jobs.enabled {
            let opts = WorkerOptions {
                lease: chrono::Duration::seconds(state.config.jobs.lease_secs),
                poll_interval: Duration::from_millis(state.config.jobs.poll_interval_ms),
                backoff_base: chrono::Duration::seconds(state.config.jobs.backoff_base_secs),
                backoff_cap: chrono::Duration::seconds(state.config.jobs.backoff_cap_secs),
                ..WorkerOptions::default()
            };
            for i in 0..state.config.jobs.workers {
                let worker = Worker::new(
                    state.store.clone(),
                    format!("{}/w{i}", state.instance_id),
                    task_handlers(&state),
                    opts.clone(),
                );
                workers.push(tokio::spawn(worker.run(stop_rx.clone())));
            }
            let mut jobs = cron_jobs()?;
            jobs.push(crate::dunning::planner::cron_job(state.config.clone())?);
            jobs.extend(crate::reconcile::cron_jobs(state.config.clone())?);
            scheduler = Some(Scheduler::start(state.store.clone(), state.instance_id.to_string(), jobs).await?);
        }
        let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
        let store = state.store.clone();
        let router = http::app(state);
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = drain_tx.send(());
            });
        let server = tokio::spawn(async move { server.await });
        let mut server = server;
        tokio::select! {
            res = &mut server => { res.context("server task")?.context("serving HTTP")?; }
            _ = drain_rx => {
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(res) => { res.context("server task")?.context("serving HTTP")?; }
                    Err(_) => { tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time"); server.abort(); }
                }
            }
        }
        let _ = stop_tx.send(true);
        if let Some(s) = scheduler {
            s.shutdown().await;
        }
        for w in workers {
            let _ = tokio::time::timeout(grace, w).await;
        }
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "meterpay".into())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
