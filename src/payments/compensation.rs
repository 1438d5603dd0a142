//! Compensation: what happens when a callback never comes. All of it runs through the task
//! queue, so each piece of work happens once across instances:
//!
//! - the clock fires `payments.sweep` (every 30 s; its slot is claimed once across instances),
//!   which enqueues one `payments.query` task per order whose next query is due (dedupe key:
//!   order and attempt number), one `payments.close` per order past its expiry, and one
//!   `payments.refund_query` per refund in flight;
//! - `payments.query` asks the gateway and applies a payment it shows, exactly as a callback
//!   would; otherwise it schedules the next query on the channel's curve ([`query_delays`]),
//!   which follows the gateway's own notification retry schedule (a query lands just after
//!   each delivery the gateway would have tried);
//! - `payments.close` closes an expired order **at the gateway first**, then here; if the gateway
//!   says it was paid meanwhile, the payment is queried and applied instead. A payment that still
//!   arrives for an order we closed is applied and flagged (`paid_after_close`), never lost.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use meterpay_gateways::gateway::Channel;

use super::service::{PaymentError, Payments};
use super::QueryOutcome;
use crate::jobs::queue::handler;
use crate::jobs::{CronJob, Handler, TaskError};
use crate::store::jobs::NewTask;
use crate::store::Store;

/// The first active query of a new order comes this long after it was created.
pub const FIRST_QUERY_AFTER_SECS: i64 = 30;
/// Orders (and refunds) a sweep takes at most.
const SWEEP_BATCH: i64 = 500;

pub const SWEEP_JOB: &str = "payments.sweep";
pub const QUERY_TASK: &str = "payments.query";
pub const CLOSE_TASK: &str = "payments.close";
pub const REFUND_QUERY_TASK: &str = "payments.refund_query";

/// Delays between active queries of an unpaid order, shaped like the channel's notification
/// retry curve (spec/gateways.md §1.10, §2.5, §3.5).
pub fn query_delays(channel: Channel) -> Vec<Duration> {
    let secs: &[i64] = match channel {
        Channel::Alipay => &[4 * 60, 10 * 60, 10 * 60, 3600, 2 * 3600, 6 * 3600, 15 * 3600],
        Channel::Wechatpay => &[
            15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
        ],
        Channel::Unionpay => &[60, 120, 240, 300],
    };
    secs.iter().map(|s| Duration::seconds(*s)).collect()
}

/// When to query again after `attempts` queries (None: the curve is exhausted; the expiry close
/// takes over).
pub fn next_query_at(channel: Channel, attempts: i32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    query_delays(channel).get(attempts.max(0) as usize).map(|d| now + *d)
}

/// The sweep job: enqueue what is due.
pub fn sweep_job() -> anyhow::Result<CronJob> {
    CronJob::new(SWEEP_JOB, "*/30 * * * * *", |store, at| async move {
        let n = sweep(&store, at.max(Utc::now())).await?;
        if n > 0 {
            tracing::info!(enqueued = n, "payments sweep");
        }
        Ok(())
    })
}

/// Enqueue the queries, closes and refund queries due at `now`; returns how many were new.
pub async fn sweep(store: &Store, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut n = 0;
    // Runnable at once (a sweep run for a later `now`, as tests do, still enqueues runnable work).
    let run_at = now.min(Utc::now());
    let task = |kind: &str, payload: serde_json::Value, key: String| NewTask {
        kind: kind.to_string(),
        payload,
        dedupe_key: Some(key),
        run_at,
        max_attempts: 20,
    };
    for o in store.expired_orders(now, SWEEP_BATCH).await? {
        let t = task(
            CLOSE_TASK,
            serde_json::json!({"order_no": o.order_no}),
            format!("{CLOSE_TASK}:{}", o.order_no),
        );
        n += store.enqueue_task(&t, now).await?.is_some() as usize;
    }
    for o in store.orders_due_for_query(now, SWEEP_BATCH).await? {
        if o.expires_at < now {
            continue; // the close takes it
        }
        let t = task(
            QUERY_TASK,
            serde_json::json!({"order_no": o.order_no}),
            format!("{QUERY_TASK}:{}:{}", o.order_no, o.query_attempts),
        );
        n += store.enqueue_task(&t, now).await?.is_some() as usize;
    }
    let minute = now.timestamp() / 60;
    for (r, _order_no) in store.pending_refunds(SWEEP_BATCH).await? {
        let t = task(
            REFUND_QUERY_TASK,
            serde_json::json!({"refund_no": r.refund_no}),
            format!("{REFUND_QUERY_TASK}:{}:{minute}", r.refund_no),
        );
        n += store.enqueue_task(&t, now).await?.is_some() as usize;
    }
    Ok(n)
}

fn task_error(e: PaymentError) -> TaskError {
    match e {
        PaymentError::Unavailable(m) => TaskError::Transient(m),
        PaymentError::Unexpected(e) => TaskError::Transient(format!("{e:#}")),
        other => TaskError::Permanent(other.to_string()),
    }
}

fn order_no_of(payload: &str, field: &str) -> Result<String, TaskError> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v[field].as_str().map(str::to_string))
        .ok_or_else(|| TaskError::Permanent(format!("the task payload has no {field}")))
}

impl Payments {
    /// One active query of a created order: apply it if the gateway shows it paid, otherwise
    /// schedule the next query on the channel's curve.
    pub async fn run_query_task(&self, order_no: &str, now: DateTime<Utc>) -> Result<QueryOutcome, PaymentError> {
        let outcome = self.query_and_apply_inner(order_no, now).await?;
        if let QueryOutcome::NotPaid { .. } = &outcome {
            if let Some(o) = self.store().payment_order_fresh(order_no).await? {
                let channel: Channel = o
                    .channel
                    .parse()
                    .map_err(|e: String| PaymentError::Unexpected(anyhow::anyhow!(e)))?;
                let next = next_query_at(channel, o.query_attempts, now);
                self.store().schedule_order_query(order_no, next, now).await?;
            }
        }
        Ok(outcome)
    }

    /// Close an expired order: at the gateway first, then here.
    pub async fn run_close_task(&self, order_no: &str, now: DateTime<Utc>) -> Result<String, PaymentError> {
        let Some(o) = self.store().payment_order_fresh(order_no).await? else {
            return Ok("unknown order".into());
        };
        if o.status != "created" {
            return Ok(format!("already {}", o.status));
        }
        match self.close_everywhere(&o, "expired", None, now).await {
            Ok(_) => Ok("closed".into()),
            // Paid meanwhile: close_everywhere applied it.
            Err(PaymentError::Conflict(m)) => Ok(m),
            Err(e) => Err(e),
        }
    }

    /// The task handlers of payments, for the workers.
    pub fn task_handlers(self: &Arc<Self>) -> HashMap<String, Handler> {
        let mut h: HashMap<String, Handler> = HashMap::new();
        let me = self.clone();
        h.insert(
            QUERY_TASK.into(),
            handler(move |t| {
                let me = me.clone();
                async move {
                    let no = order_no_of(&t.payload, "order_no")?;
                    me.run_query_task(&no, Utc::now()).await.map(|_| ()).map_err(task_error)
                }
            }),
        );
        let me = self.clone();
        h.insert(
            CLOSE_TASK.into(),
            handler(move |t| {
                let me = me.clone();
                async move {
                    let no = order_no_of(&t.payload, "order_no")?;
                    me.run_close_task(&no, Utc::now()).await.map(|_| ()).map_err(task_error)
                }
            }),
        );
        let me = self.clone();
        h.insert(
            REFUND_QUERY_TASK.into(),
            handler(move |t| {
                let me = me.clone();
                async move {
                    let no = order_no_of(&t.payload, "refund_no")?;
                    me.settle_refund(&no, Utc::now()).await.map(|_| ()).map_err(task_error)
                }
            }),
        );
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_curve_follows_each_gateways_retry_schedule() {
        let now = Utc::now();
        assert_eq!(
            next_query_at(Channel::Wechatpay, 0, now),
            Some(now + Duration::seconds(15))
        );
        assert_eq!(next_query_at(Channel::Alipay, 0, now), Some(now + Duration::minutes(4)));
        assert_eq!(
            next_query_at(Channel::Unionpay, 3, now),
            Some(now + Duration::minutes(5))
        );
        assert_eq!(
            next_query_at(Channel::Unionpay, 4, now),
            None,
            "exhausted: the expiry close takes over"
        );
        let total: i64 = query_delays(Channel::Wechatpay).iter().map(|d| d.num_seconds()).sum();
        assert_eq!(total, 24 * 3600 + 4 * 60);
    }
}
