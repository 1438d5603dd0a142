//! Cron slots and the task queue.
//!
//! - `job_runs`: one row per (job, scheduled time). Every instance's clock fires; the one whose
//!   insert wins runs the job, so a job runs once however many instances run.
//! - `tasks`: the real work. Claimed with a lease (`lease_owner`, `lease_expires_at`); a worker
//!   that dies leaves its lease to expire and the task is claimed again. Completion and failure
//!   are fenced on the lease owner, so a worker whose lease was taken over cannot overwrite the
//!   new owner's result. Failures back off exponentially until `max_attempts`, then the task is
//!   `dead` and kept for inspection. No transaction is held while a task runs.
//!
//! Claiming: PostgreSQL uses `FOR UPDATE SKIP LOCKED`, so concurrent workers take disjoint
//! tasks without waiting; SQLite claims inside `BEGIN IMMEDIATE`, which serialises claimers.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{in_tx, on_read, on_write, Backend, Store, StoreError};

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ClaimedTask {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// A task as stored, for inspection.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub dedupe_key: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub last_error: Option<String>,
}

/// A task to enqueue.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: String,
    pub payload: serde_json::Value,
    /// At most one task with this key ever exists; enqueueing it again is a no-op.
    pub dedupe_key: Option<String>,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
}

/// The delay before retry `attempt` (1-based): 2^(attempt-1) × base, capped.
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exp = attempt.clamp(1, 30) - 1;
    let factor = 1i64 << exp;
    let secs = base.num_seconds().saturating_mul(factor);
    Duration::seconds(secs.min(cap.num_seconds()))
}

const CLAIM_PG: &str = "UPDATE tasks SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
       attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT id FROM tasks \
                  WHERE (status = 'queued' AND run_at <= $3) OR (status = 'running' AND lease_expires_at < $3) \
                  ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, kind, payload, attempts, max_attempts";

const CLAIM_SQLITE: &str = "UPDATE tasks SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
       attempts = attempts + 1, updated_at = $3 \
     WHERE id IN (SELECT id FROM tasks \
                  WHERE (status = 'queued' AND run_at <= $3) OR (status = 'running' AND lease_expires_at < $3) \
                  ORDER BY run_at, id LIMIT $4) \
     RETURNING id, kind, payload, attempts, max_attempts";

impl Store {
    /// Claim the slot `(job, scheduled_for)` for this instance. `true` means this instance runs it.
    pub async fn claim_job_slot(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        instance: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "INSERT INTO job_runs (job_name, scheduled_for, instance_id, started_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job_name, scheduled_for) DO NOTHING",
            )
            .bind(job)
            .bind(scheduled_for)
            .bind(instance)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("claiming a cron slot", e))
        })
    }

    pub async fn finish_job_slot(
        &self,
        job: &str,
        scheduled_for: DateTime<Utc>,
        outcome: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE job_runs SET finished_at = $1, outcome = $2, error = $3 WHERE job_name = $4 AND scheduled_for = $5",
            )
            .bind(now)
            .bind(outcome)
            .bind(error)
            .bind(job)
            .bind(scheduled_for)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::db("recording a cron run", e))
        })
    }

    /// How many times a job has run (for tests and the status page).
    pub async fn job_run_count(&self, job: &str) -> Result<i64, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_runs WHERE job_name = $1")
                .bind(job)
                .fetch_one(pool)
                .await
                .map_err(|e| StoreError::db("counting cron runs", e))
        })
    }

    /// Enqueue a task. Returns its id, or `None` when a task with the same dedupe key exists.
    pub async fn enqueue_task(&self, task: &NewTask, now: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO tasks (kind, payload, dedupe_key, run_at, max_attempts, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(&task.kind)
            .bind(task.payload.to_string())
            .bind(&task.dedupe_key)
            .bind(task.run_at)
            .bind(task.max_attempts)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("enqueueing a task", e))
        })
    }

    /// Claim up to `limit` ready tasks (queued and due, or running with an expired lease).
    pub async fn claim_tasks(
        &self,
        worker: &str,
        lease: Duration,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        let what = "claiming tasks";
        let sql = match self.backend {
            Backend::Sqlite { .. } => CLAIM_SQLITE,
            Backend::Postgres(_) => CLAIM_PG,
        };
        let mut claimed = in_tx!(self, what, |tx| {
            sqlx::query_as::<_, ClaimedTask>(sql)
                .bind(worker)
                .bind(now + lease)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))
        })?;
        claimed.sort_by_key(|t| t.id);
        Ok(claimed)
    }

    /// Mark a task done. `false` if this worker no longer holds its lease.
    pub async fn complete_task(&self, id: i64, worker: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE tasks SET status = 'done', lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
                 WHERE id = $2 AND status = 'running' AND lease_owner = $3",
            )
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("completing a task", e))
        })
    }

    /// Record a failed attempt: back to `queued` at `retry_at`, or `dead` after the last attempt
    /// (or at once when `permanent`). `false` if this worker no longer holds the lease.
    pub async fn fail_task(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: DateTime<Utc>,
        permanent: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE tasks SET status = CASE WHEN $1 OR attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                   run_at = $2, last_error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 \
                 WHERE id = $5 AND status = 'running' AND lease_owner = $6",
            )
            .bind(permanent)
            .bind(retry_at)
            .bind(error)
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("recording a task failure", e))
        })
    }

    pub async fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, TaskRow>(
                "SELECT id, kind, payload, dedupe_key, status, attempts, max_attempts, run_at, lease_owner, last_error FROM tasks WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a task", e))
        })
    }

    /// Tasks for inspection, newest first; `status` filters (`queued`, `running`, `done`, `dead`).
    pub async fn list_tasks(&self, status: Option<&str>, limit: i64) -> Result<Vec<TaskRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, TaskRow>(
                "SELECT id, kind, payload, dedupe_key, status, attempts, max_attempts, run_at, lease_owner, last_error \
                 FROM tasks WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing tasks", e))
        })
    }

    /// Give a `dead` task (one that ran out of attempts) a fresh set of attempts, to run now.
    /// Its last error is kept until it runs again. `false` if the task is not dead.
    pub async fn revive_task(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE tasks SET status = 'queued', attempts = 0, run_at = $1, updated_at = $1 \
                 WHERE id = $2 AND status = 'dead'",
            )
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("reviving a dead task", e))
        })
    }

    /// Count of tasks per status (for `/metrics`).
    pub async fn task_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("counting tasks", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::seconds(10);
        let cap = Duration::seconds(300);
        assert_eq!(backoff(1, base, cap), Duration::seconds(10));
        assert_eq!(backoff(2, base, cap), Duration::seconds(20));
        assert_eq!(backoff(4, base, cap), Duration::seconds(80));
        assert_eq!(backoff(10, base, cap), Duration::seconds(300));
        assert_eq!(backoff(1000, base, cap), Duration::seconds(300));
    }
}
