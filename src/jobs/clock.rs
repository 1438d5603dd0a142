//! Cron jobs claimed once across instances.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::Instrument;

use crate::store::Store;

type JobFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type JobFn = Arc<dyn Fn(Store, DateTime<Utc>) -> JobFuture + Send + Sync>;

/// China Standard Time: every schedule is read in it.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// A named job on a cron schedule (six fields, seconds first, in CST).
#[derive(Clone)]
pub struct CronJob {
    pub name: String,
    pub schedule: String,
    cron: Cron,
    run: JobFn,
}

impl std::fmt::Debug for CronJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronJob")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish()
    }
}

impl CronJob {
    /// `run` receives the store and the slot's scheduled time.
    pub fn new<F, Fut>(name: &str, schedule: &str, run: F) -> anyhow::Result<CronJob>
    where
        F: Fn(Store, DateTime<Utc>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(schedule)
            .map_err(|e| {
                anyhow::anyhow!("job {name}: schedule {schedule:?} is not a six-field cron expression: {e}")
            })?;
        Ok(CronJob {
            name: name.to_string(),
            schedule: schedule.to_string(),
            cron,
            run: Arc::new(move |store, at| Box::pin(run(store, at))),
        })
    }

    /// The scheduled time a firing at `now` belongs to: the latest occurrence at or before
    /// `now` plus one second of slack (a tick may be delivered a little early or late; every
    /// instance maps it to the same slot).
    pub fn slot_for(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: croner keeps the sub-second part of its starting point.
        let local = (now + chrono::Duration::seconds(1))
            .with_timezone(&cst())
            .with_nanosecond(0)?;
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Claim the slot and, if this instance won it, run the job and record the outcome.
    /// Returns whether this instance ran it.
    pub async fn fire(&self, store: &Store, instance: &str, scheduled_for: DateTime<Utc>) -> anyhow::Result<bool> {
        let claimed = store
            .claim_job_slot(&self.name, scheduled_for, instance, Utc::now())
            .await?;
        if !claimed {
            tracing::debug!(job = %self.name, %scheduled_for, "slot already claimed by another instance");
            return Ok(false);
        }
        let span = tracing::info_span!("cron_job", job = %self.name, %scheduled_for, instance);
        let result = (self.run)(store.clone(), scheduled_for).instrument(span).await;
        match &result {
            Ok(()) => {
                store
                    .finish_job_slot(&self.name, scheduled_for, "ok", None, Utc::now())
                    .await?
            }
            Err(e) => {
                tracing::error!(job = %self.name, error = %format!("{e:#}"), "cron job failed");
                store
                    .finish_job_slot(&self.name, scheduled_for, "error", Some(&format!("{e:#}")), Utc::now())
                    .await?
            }
        }
        Ok(true)
    }
}

/// The clock: one tokio-cron-scheduler per instance, firing every registered job.
pub struct Scheduler {
    inner: JobScheduler,
}

impl Scheduler {
    pub async fn start(store: Store, instance: String, jobs: Vec<CronJob>) -> anyhow::Result<Scheduler> {
        let inner = JobScheduler::new()
            .await
            .map_err(|e| anyhow::anyhow!("starting the scheduler: {e}"))?;
        for job in jobs {
            let store = store.clone();
            let instance = instance.clone();
            let schedule = job.schedule.clone();
            let name = job.name.clone();
            let job = Arc::new(job);
            let entry = Job::new_async_tz(schedule.as_str(), cst(), move |_id, _lock| {
                let job = job.clone();
                let store = store.clone();
                let instance = instance.clone();
                Box::pin(async move {
                    let Some(slot) = job.slot_for(Utc::now()) else { return };
                    if let Err(e) = job.fire(&store, &instance, slot).await {
                        tracing::error!(job = %job.name, error = %format!("{e:#}"), "could not run cron job");
                    }
                })
            })
            .map_err(|e| anyhow::anyhow!("job {name}: bad schedule {schedule:?}: {e}"))?;
            inner
                .add(entry)
                .await
                .map_err(|e| anyhow::anyhow!("adding job {name}: {e}"))?;
        }
        inner
            .start()
            .await
            .map_err(|e| anyhow::anyhow!("starting the scheduler: {e}"))?;
        Ok(Scheduler { inner })
    }

    pub async fn shutdown(mut self) {
        if let Err(e) = self.inner.shutdown().await {
            tracing::warn!(error = %e, "scheduler did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_late_or_early_tick_maps_to_the_same_slot() {
        let job = CronJob::new("t", "0 30 10 * * *", |_, _| async { Ok(()) }).unwrap();
        // 10:30:00 CST is 02:30:00 UTC.
        let slot = Utc.with_ymd_and_hms(2026, 1, 5, 2, 30, 0).unwrap();
        let early = Utc.with_ymd_and_hms(2026, 1, 5, 2, 29, 59).unwrap() + chrono::Duration::milliseconds(400);
        let late = Utc.with_ymd_and_hms(2026, 1, 5, 2, 30, 0).unwrap() + chrono::Duration::milliseconds(700);
        assert_eq!(job.slot_for(early), Some(slot));
        assert_eq!(job.slot_for(late), Some(slot));
    }

    #[test]
    fn a_bad_schedule_is_refused_with_its_name() {
        let err = CronJob::new("nightly", "every night", |_, _| async { Ok(()) }).unwrap_err();
        assert!(err.to_string().contains("nightly"), "{err}");
    }
}
