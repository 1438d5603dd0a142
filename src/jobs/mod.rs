//! The clock and the task queue.
//!
//! - [`clock`]: tokio-cron-scheduler fires every job on every instance; each firing claims its
//!   slot in `job_runs` (unique on job and scheduled time), so a job runs once however many
//!   instances run. Schedules are six-field cron expressions (with seconds) in China Standard
//!   Time (UTC+8, no daylight saving), the business time zone of every community.
//! - [`queue`]: workers claim tasks with a lease, run them with no transaction open, and record
//!   success or a failure with exponential back-off. A task whose worker died is claimed again
//!   once its lease expires.

pub mod clock;
pub mod queue;

pub use clock::{CronJob, Scheduler};
pub use queue::{Handler, TaskError, Worker, WorkerOptions};
