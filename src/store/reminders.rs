//! The reminder outbox (migration 0006): messages, their attempts, opt-outs, application secrets.
//!
//! State of a message (`reminder_outbox.status`):
//!
//! ```text
//! queued ──begin attempt──► sending ──accepted──► sent ──receipt──► delivered | failed
//!   ▲                          │ transient (refused for now) ──► queued (task retries with back-off)
//!   │                          │ permanent ──► failed (no retry)
//!   │                          └ unknown (timeout, connection lost, sender killed) ──► unknown
//!   │                                         │ status query finds it ──► sent / delivered / failed
//!   └── status query proves it never arrived ─┘ (after the settle window) ──► queued
//! letter: awaiting_staff ──► served
//! ```
//!
//! Every transition is one transaction and is fenced on the current status and attempt number,
//! so a sender whose task lease was taken over cannot overwrite what the new owner recorded.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{in_tx, on_read, on_write, Store, StoreError};
use crate::ledger::LedgerAccount;

/// A message to enqueue (built from a policy decision).
#[derive(Debug, Clone)]
pub struct NewReminder {
    pub account_id: i64,
    pub community_id: i64,
    pub household: String,
    /// `electricity`, `water` or `property_fee`.
    pub track: String,
    /// `Step::code()`.
    pub step: String,
    /// `sms`, `email` or `letter`.
    pub channel: String,
    pub bill_ids: Vec<i64>,
    /// `(bill id, step code)` per bill.
    pub bill_steps: Vec<(i64, String)>,
    /// `aliyun`, `tencent`, `smtp` or `letter`.
    pub provider: String,
    /// The configuration profile (community code) whose sign name and templates were used.
    pub profile: String,
    pub recipient: String,
    pub message_kind: String,
    pub content: serde_json::Value,
    pub legally_required: bool,
    /// Not before this instant (the next send window).
    pub not_before: DateTime<Utc>,
    /// Task attempts allowed (each retry and each status check of an unknown outcome is one).
    pub max_attempts: i32,
}

impl NewReminder {
    /// The uniqueness of a message: the same step for the same bills, person and channel.
    pub fn dedupe_key(&self) -> String {
        let mut ids = self.bill_ids.clone();
        ids.sort_unstable();
        let bills = if ids.is_empty() {
            "-".to_string()
        } else {
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        };
        format!(
            "{}:{}:{}:{}:{}",
            self.account_id, self.track, self.step, self.channel, bills
        )
    }
}

/// Whether an enqueue created the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    New(i64),
    /// That step was already enqueued for that person and channel: nothing was added.
    AlreadyThere(i64),
}

impl Enqueued {
    pub fn id(self) -> i64 {
        match self {
            Enqueued::New(id) | Enqueued::AlreadyThere(id) => id,
        }
    }
}

/// A message as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReminderRow {
    pub id: i64,
    pub account_id: i64,
    pub community_id: i64,
    pub household: String,
    pub track: String,
    pub step: String,
    pub channel: String,
    pub bill_ids: String,
    pub bill_steps: String,
    pub provider: String,
    pub profile: String,
    #[serde(skip)]
    pub recipient: String,
    pub message_kind: String,
    pub content_json: String,
    pub legally_required: bool,
    pub status: String,
    pub attempts: i32,
    pub provider_message_id: Option<String>,
    pub delivery_status: Option<String>,
    pub last_error: Option<String>,
    pub not_before: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One attempt as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub outbox_id: i64,
    pub attempt_no: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub provider_message_id: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Accepted {
        message_id: Option<String>,
        delivery: Option<String>,
    },
    Transient {
        code: String,
        message: String,
    },
    Permanent {
        code: String,
        message: String,
    },
    Unknown {
        reason: String,
    },
    /// The status query proved the provider never got it: the message may be attempted again.
    NotSent,
}

const COLS: &str =
    "id, account_id, community_id, household, track, step, channel, bill_ids, bill_steps, provider, profile, \
     recipient, message_kind, content_json, legally_required, status, attempts, provider_message_id, delivery_status, \
     last_error, not_before, created_at, last_attempt_at, sent_at, delivered_at";

/// The task kind that delivers one outbox message; its payload is `{"outbox_id": N}`.
pub const SEND_TASK: &str = "reminder.send";

/// How an outcome is written: attempt outcome, message status, message id, delivery, code, message.
type OutcomeColumns<'a> = (
    &'a str,
    &'a str,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A new message's status: letters wait for staff to print and serve them; the rest are queued.
fn initial_status(r: &NewReminder) -> &'static str {
    if r.channel == "letter" {
        "awaiting_staff"
    } else {
        "queued"
    }
}

impl Store {
    /// Put a message in the outbox and its delivery task in the queue, in one transaction. A
    /// message with the same dedupe key is not added again (nobody gets the same step twice).
    /// A letter is recorded as `awaiting_staff` with no task.
    pub async fn enqueue_reminder(&self, r: &NewReminder, now: DateTime<Utc>) -> Result<Enqueued, StoreError> {
        let mut v = self.enqueue_reminders(std::slice::from_ref(r), now).await?;
        Ok(v.remove(0))
    }

    /// [`Store::enqueue_reminder`] for many messages: one transaction per chunk of 2,000 (a
    /// planning run enqueues thousands), each message with the same once-only rule, written in bulk
    /// (multi-row `VALUES` on SQLite, `UNNEST` arrays on PostgreSQL). Results are in the order given; a message whose key is
    /// already there (in the table, or earlier in `rs`) is [`Enqueued::AlreadyThere`].
    pub async fn enqueue_reminders(&self, rs: &[NewReminder], now: DateTime<Utc>) -> Result<Vec<Enqueued>, StoreError> {
        let what = "enqueueing reminders";
        let mut out = Vec::with_capacity(rs.len());
        for chunk in rs.chunks(2000) {
            let keys: Vec<String> = chunk.iter().map(NewReminder::dedupe_key).collect();
            let mut cols = crate::store::bulk::ReminderCols::default();
            for (r, key) in chunk.iter().zip(&keys) {
                cols.account_id.push(r.account_id);
                cols.community_id.push(r.community_id);
                cols.household.push(r.household.clone());
                cols.track.push(r.track.clone());
                cols.step.push(r.step.clone());
                cols.channel.push(r.channel.clone());
                cols.bill_ids
                    .push(serde_json::to_string(&r.bill_ids).unwrap_or_else(|_| "[]".into()));
                cols.bill_steps
                    .push(serde_json::to_string(&r.bill_steps).unwrap_or_else(|_| "[]".into()));
                cols.dedupe_key.push(key.clone());
                cols.provider.push(r.provider.clone());
                cols.profile.push(r.profile.clone());
                cols.recipient.push(r.recipient.clone());
                cols.message_kind.push(r.message_kind.clone());
                cols.content_json.push(r.content.to_string());
                cols.legally_required.push(r.legally_required);
                cols.status.push(initial_status(r));
                cols.not_before.push(r.not_before);
            }
            let part: Vec<Enqueued> = in_tx!(self, what, |tx| {
                let inserted = crate::store::bulk::Bulk::insert_reminders(&mut tx, &cols, now)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                let mut new: HashMap<String, i64> = inserted.into_iter().map(|(id, k)| (k, id)).collect();
                let missing: Vec<&String> = keys.iter().filter(|k| !new.contains_key(*k)).collect();
                let mut existing: HashMap<String, i64> = HashMap::new();
                if !missing.is_empty() {
                    let mut qb =
                        sqlx::QueryBuilder::new("SELECT id, dedupe_key FROM reminder_outbox WHERE dedupe_key IN (");
                    let mut sep = qb.separated(", ");
                    for k in &missing {
                        sep.push_bind((*k).clone());
                    }
                    qb.push(")");
                    let rows: Vec<(i64, String)> = qb
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(|e| StoreError::db(what, e))?;
                    existing.extend(rows.into_iter().map(|(id, k)| (k, id)));
                }
                let mut part = Vec::with_capacity(chunk.len());
                let mut tasks: Vec<(i64, &NewReminder)> = Vec::new();
                for (r, key) in chunk.iter().zip(&keys) {
                    if let Some(id) = new.remove(key) {
                        // The first message with this key is the new one; a repeat finds it.
                        existing.insert(key.clone(), id);
                        if initial_status(r) == "queued" {
                            tasks.push((id, r));
                        }
                        part.push(Enqueued::New(id));
                    } else {
                        let id = *existing.get(key).ok_or_else(|| StoreError::Refused {
                            what,
                            reason: format!("the reminder {key} was neither written nor found"),
                        })?;
                        part.push(Enqueued::AlreadyThere(id));
                    }
                }
                if !tasks.is_empty() {
                    let mut t = crate::store::bulk::TaskCols::default();
                    for (id, r) in &tasks {
                        t.payload.push(serde_json::json!({ "outbox_id": id }).to_string());
                        t.dedupe_key.push(format!("{SEND_TASK}:{id}"));
                        t.run_at.push(r.not_before);
                        t.max_attempts.push(r.max_attempts);
                    }
                    crate::store::bulk::Bulk::insert_tasks(&mut tx, SEND_TASK, &t, now)
                        .await
                        .map_err(|e| StoreError::db(what, e))?;
                }
                Ok::<_, StoreError>(part)
            })?;
            out.extend(part);
        }
        Ok(out)
    }

    pub async fn reminder(&self, id: i64) -> Result<Option<ReminderRow>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLS} FROM reminder_outbox WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a reminder", e))
        })
    }

    /// An account's reminders, newest first (the per-account history; the policy's input).
    pub async fn reminders_for_account(&self, account_id: i64) -> Result<Vec<ReminderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLS} FROM reminder_outbox WHERE account_id = $1 ORDER BY created_at DESC, id DESC"
            )))
            .bind(account_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading an account's reminders", e))
        })
    }

    /// A household's messages created since `since` (for the daily and weekly caps).
    pub async fn reminders_for_household(
        &self,
        household: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<ReminderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLS} FROM reminder_outbox WHERE household = $1 AND created_at >= $2 ORDER BY created_at, id"
            )))
            .bind(household)
            .bind(since)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading a household's reminders", e))
        })
    }

    pub async fn reminder_attempts(&self, outbox_id: i64) -> Result<Vec<AttemptRow>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_as::<_, AttemptRow>(
                "SELECT outbox_id, attempt_no, started_at, finished_at, outcome, provider_message_id, code, message \
                 FROM reminder_attempts WHERE outbox_id = $1 ORDER BY attempt_no",
            )
            .bind(outbox_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading reminder attempts", e))
        })
    }

    /// Record a new attempt before calling the provider: `queued` → `sending`. Returns the
    /// attempt number, or `None` if the message is not `queued` (another sender has it, or it
    /// is settled).
    pub async fn begin_reminder_attempt(&self, id: i64, now: DateTime<Utc>) -> Result<Option<i32>, StoreError> {
        let what = "recording a reminder attempt";
        in_tx!(self, what, |tx| {
            let n: Option<i32> = sqlx::query_scalar(
                "UPDATE reminder_outbox SET status = 'sending', attempts = attempts + 1, last_attempt_at = $1, updated_at = $1 \
                 WHERE id = $2 AND status = 'queued' RETURNING attempts",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            if let Some(n) = n {
                sqlx::query("INSERT INTO reminder_attempts (outbox_id, attempt_no, started_at) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(n)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
            }
            Ok(n)
        })
    }

    /// Record how attempt `attempt_no` ended. `false` when the message is no longer in that
    /// attempt (fenced: a late result of a superseded sender changes nothing).
    pub async fn finish_reminder_attempt(
        &self,
        id: i64,
        attempt_no: i32,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let what = "recording a reminder attempt's outcome";
        let (attempt_outcome, status, message_id, delivery, code, message): OutcomeColumns<'_> = match outcome {
            AttemptOutcome::Accepted { message_id, delivery } => {
                let status = match delivery.as_deref() {
                    Some("delivered") => "delivered",
                    Some(d) if d.starts_with("failed") => "failed",
                    _ => "sent",
                };
                ("accepted", status, message_id.clone(), delivery.clone(), None, None)
            }
            AttemptOutcome::Transient { code, message } => (
                "transient",
                "queued",
                None,
                None,
                Some(code.clone()),
                Some(message.clone()),
            ),
            AttemptOutcome::Permanent { code, message } => (
                "permanent",
                "failed",
                None,
                None,
                Some(code.clone()),
                Some(message.clone()),
            ),
            AttemptOutcome::Unknown { reason } => ("unknown", "unknown", None, None, None, Some(reason.clone())),
            AttemptOutcome::NotSent => (
                "not_sent",
                "queued",
                None,
                None,
                None,
                Some("the provider has no record of it".into()),
            ),
        };
        let error = match (&code, &message) {
            (Some(c), Some(m)) => Some(format!("{c}: {m}")),
            (None, Some(m)) => Some(m.clone()),
            _ => None,
        };
        in_tx!(self, what, |tx| {
            let changed = sqlx::query(
                "UPDATE reminder_outbox SET status = $1, \
                   provider_message_id = COALESCE($2, provider_message_id), delivery_status = COALESCE($3, delivery_status), \
                   last_error = CASE WHEN $1 IN ('sent', 'delivered') THEN NULL ELSE COALESCE($4, last_error) END, \
                   sent_at = CASE WHEN $1 IN ('sent', 'delivered', 'failed') AND CAST($5 AS TEXT) = 'accepted' THEN COALESCE(sent_at, $6) ELSE sent_at END, \
                   delivered_at = CASE WHEN $1 = 'delivered' THEN $6 ELSE delivered_at END, \
                   updated_at = $6 \
                 WHERE id = $7 AND attempts = $8 AND status IN ('sending', 'unknown')",
            )
            .bind(status)
            .bind(&message_id)
            .bind(&delivery)
            .bind(&error)
            .bind(attempt_outcome)
            .bind(now)
            .bind(id)
            .bind(attempt_no)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?
            .rows_affected()
                == 1;
            if changed {
                sqlx::query(
                    "UPDATE reminder_attempts SET outcome = $1, finished_at = $2, provider_message_id = $3, code = $4, message = $5 \
                     WHERE outbox_id = $6 AND attempt_no = $7",
                )
                .bind(attempt_outcome)
                .bind(now)
                .bind(&message_id)
                .bind(&code)
                .bind(&message)
                .bind(id)
                .bind(attempt_no)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            }
            Ok(changed)
        })
    }

    /// Record a delivery receipt for a sent message.
    pub async fn record_reminder_delivery(
        &self,
        id: i64,
        delivery: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let status = if delivery == "delivered" {
            "delivered"
        } else if delivery.starts_with("failed") {
            "failed"
        } else {
            "sent"
        };
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE reminder_outbox SET status = $1, delivery_status = $2, \
                   delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END, updated_at = $3 \
                 WHERE id = $4 AND status IN ('sent', 'delivered', 'failed') AND sent_at IS NOT NULL",
            )
            .bind(status)
            .bind(delivery)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("recording a delivery receipt", e))
        })
    }

    /// Staff served a letter (the written notice): `awaiting_staff` → `served`, with evidence.
    pub async fn mark_letter_served(&self, id: i64, evidence: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE reminder_outbox SET status = 'served', delivery_status = $1, sent_at = $2, updated_at = $2 \
                 WHERE id = $3 AND status = 'awaiting_staff'",
            )
            .bind(evidence)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("recording a served letter", e))
        })
    }

    /// Record an opt-out of a channel (`sms` or `email`); repeating it changes nothing.
    pub async fn add_opt_out(
        &self,
        account_id: i64,
        channel: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "INSERT INTO reminder_opt_outs (account_id, channel, source, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, channel) DO NOTHING",
            )
            .bind(account_id)
            .bind(channel)
            .bind(source)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("recording an opt-out", e))
        })
    }

    /// The channels an account opted out of.
    pub async fn opt_outs(&self, account_id: i64) -> Result<Vec<String>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT channel FROM reminder_opt_outs WHERE account_id = $1 ORDER BY channel",
            )
            .bind(account_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading opt-outs", e))
        })
    }

    /// The secret named `name`, created with `generate()` the first time (insert-first, so
    /// instances starting together agree on one value).
    pub async fn ensure_app_secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let what = "reading or creating an application secret";
        let candidate = generate();
        in_tx!(self, what, |tx| {
            sqlx::query(
                "INSERT INTO app_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(&candidate)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            sqlx::query_scalar::<_, String>("SELECT value FROM app_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))
        })
    }
}

// ------------------------------------------------------------------ planning reads, in bulk
//
// The planner (`dunning::planner`) reads a whole community at once: a handful of set queries
// instead of a dozen per account, so planning 100,000 accounts takes seconds, not minutes.

/// An active account with its premises, as the planner reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanAccountRow {
    pub id: i64,
    pub code: String,
    pub mobile: Option<String>,
    pub email: Option<String>,
    pub credit_rating: String,
    pub payment_mode: String,
    pub premises_id: Option<i64>,
    pub building: Option<String>,
    pub unit: Option<String>,
    pub door_no: Option<String>,
    pub occupied: Option<bool>,
    pub low_balance_fen: Option<i64>,
}

/// An issued bill with something outstanding.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanBillRow {
    pub id: i64,
    pub account_id: i64,
    pub period: String,
    pub due_date: chrono::NaiveDate,
    pub issued_at: Option<DateTime<Utc>>,
    pub disputed: bool,
    pub total_fen: i64,
    pub outstanding_fen: i64,
}

/// The sum of an open bill's lines per utility (`None`: no utility) and property-fee flag.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanLineRow {
    pub bill_id: i64,
    pub utility: Option<String>,
    pub property: bool,
    pub amount_fen: i64,
}

/// A confirmed payment in the journal, by the ledger account it credited.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanPaymentRow {
    pub code: String,
    pub reference: String,
    pub posted_at: DateTime<Utc>,
}

/// Issued bills of a community with an outstanding amount (total + late fees − allocations).
const OPEN_BILLS_CTE: &str = "WITH open_bills AS (\
     SELECT b.id, b.account_id, b.period, b.due_date, b.issued_at, b.disputed, b.total_fen, \
       CAST(b.total_fen + COALESCE(f.amt, 0) - COALESCE(x.amt, 0) AS BIGINT) AS outstanding_fen \
     FROM bills b \
     LEFT JOIN (SELECT a.bill_id, SUM(a.amount_fen) AS amt FROM bill_allocations a JOIN bills bb ON bb.id = a.bill_id \
                WHERE bb.community_id = $1 GROUP BY a.bill_id) x ON x.bill_id = b.id \
     LEFT JOIN (SELECT p.bill_id, SUM(p.delta_fen) AS amt FROM late_fee_postings p JOIN bills bb ON bb.id = p.bill_id \
                WHERE bb.community_id = $1 GROUP BY p.bill_id) f ON f.bill_id = b.id \
     WHERE b.community_id = $1 AND b.status = 'issued' \
       AND b.total_fen + COALESCE(f.amt, 0) - COALESCE(x.amt, 0) > 0) ";

impl Store {
    /// The community's active accounts with their premises.
    pub async fn plan_accounts(&self, community_id: i64) -> Result<Vec<PlanAccountRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, PlanAccountRow>(
                "SELECT a.id, a.code, a.mobile, a.email, a.credit_rating, a.payment_mode, a.premises_id, \
                   p.building, p.unit, p.door_no, p.occupied, a.low_balance_fen \
                 FROM accounts a LEFT JOIN premises p ON p.id = a.premises_id \
                 WHERE a.community_id = $1 AND a.status = 'active' ORDER BY a.id",
            )
            .bind(community_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading the accounts to plan reminders for", e))
        })
    }

    /// The community's bills with something outstanding, and their lines summed per utility.
    pub async fn plan_open_bills(&self, community_id: i64) -> Result<(Vec<PlanBillRow>, Vec<PlanLineRow>), StoreError> {
        let bills_sql = format!(
            "{OPEN_BILLS_CTE} SELECT id, account_id, period, due_date, issued_at, disputed, total_fen, outstanding_fen \
             FROM open_bills ORDER BY account_id, due_date, id"
        );
        let lines_sql = format!(
            "{OPEN_BILLS_CTE} SELECT l.bill_id, l.utility, \
               (l.component = 'property_fee' OR COALESCE(l.ledger_code, '') LIKE 'revenue:property%') AS property, \
               CAST(SUM(l.amount_fen) AS BIGINT) AS amount_fen \
             FROM bill_lines l JOIN open_bills o ON o.id = l.bill_id \
             GROUP BY l.bill_id, l.utility, (l.component = 'property_fee' OR COALESCE(l.ledger_code, '') LIKE 'revenue:property%')"
        );
        on_read!(self, |pool| {
            let bills = sqlx::query_as::<_, PlanBillRow>(sqlx::AssertSqlSafe(bills_sql))
                .bind(community_id)
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("reading open bills to plan reminders", e))?;
            let lines = sqlx::query_as::<_, PlanLineRow>(sqlx::AssertSqlSafe(lines_sql))
                .bind(community_id)
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("reading open bills' lines to plan reminders", e))?;
            Ok((bills, lines))
        })
    }

    /// `(account id, channel)` of every opt-out in the community.
    pub async fn plan_opt_outs(&self, community_id: i64) -> Result<Vec<(i64, String)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, String)>(
                "SELECT o.account_id, o.channel FROM reminder_opt_outs o JOIN accounts a ON a.id = o.account_id \
                 WHERE a.community_id = $1",
            )
            .bind(community_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading opt-outs to plan reminders", e))
        })
    }

    /// The community's outbox rows created since `since` (not cancelled): the policy's history.
    pub async fn plan_history(&self, community_id: i64, since: DateTime<Utc>) -> Result<Vec<ReminderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLS} FROM reminder_outbox WHERE community_id = $1 AND created_at >= $2 AND status <> 'cancelled' \
                 ORDER BY created_at, id"
            )))
            .bind(community_id)
            .bind(since)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading reminder history to plan reminders", e))
        })
    }

    /// Confirmed payments posted since `since` (journal kinds `payment.apply` and the billing
    /// building block's `payment.allocate`), one row per receivable or credit account credited.
    pub async fn plan_payments(&self, since: DateTime<Utc>) -> Result<Vec<PlanPaymentRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, PlanPaymentRow>(
                "SELECT la.code, e.reference, e.posted_at FROM journal_entries e \
                 JOIN journal_lines l ON l.entry_id = e.id JOIN ledger_accounts la ON la.id = l.ledger_account_id \
                 WHERE e.kind IN ('payment.apply', 'payment.allocate') AND e.posted_at >= $1 AND l.amount_fen < 0 \
                   AND (la.code LIKE 'receivable:%' OR la.code LIKE 'credit:%')",
            )
            .bind(since)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading payments to plan reminders", e))
        })
    }

    /// The last top-up of an account (prepaid notices re-arm after one).
    /// For each of these (prepaid) accounts: its balance — credit held less receivable owed, as
    /// [`Store::account_balance`] gives them — and the time of its last top-up, read in bulk (two queries
    /// per 500 accounts). Every account asked about is in the map.
    pub async fn plan_prepaid(
        &self,
        account_ids: &[i64],
    ) -> Result<HashMap<i64, (i64, Option<DateTime<Utc>>)>, StoreError> {
        let mut out: HashMap<i64, (i64, Option<DateTime<Utc>>)> =
            account_ids.iter().map(|id| (*id, (0, None))).collect();
        for chunk in account_ids.chunks(500) {
            let sums: Vec<(String, i64)> = on_read!(self, |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT a.code, CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM ledger_accounts a \
                     JOIN journal_lines l ON l.ledger_account_id = a.id WHERE a.code IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(LedgerAccount::Receivable { account_id: *id }.code());
                    sep.push_bind(LedgerAccount::CustomerCredit { account_id: *id }.code());
                }
                qb.push(") GROUP BY a.code");
                qb.build_query_as()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| StoreError::db("reading prepaid accounts' balances", e))?
            });
            for (code, sum) in sums {
                let id = code
                    .strip_prefix("receivable:")
                    .or_else(|| code.strip_prefix("credit:"))
                    .and_then(|s| s.parse::<i64>().ok());
                if let Some(entry) = id.and_then(|id| out.get_mut(&id)) {
                    // Receivable is a debit balance owed; credit a credit balance held (negative):
                    // credit held − receivable owed = −(sum over both).
                    entry.0 -= sum;
                }
            }
            let tops: Vec<(i64, DateTime<Utc>)> = on_read!(self, |pool| {
                let mut qb =
                    sqlx::QueryBuilder::new("SELECT account_id, MAX(created_at) FROM topups WHERE account_id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(") GROUP BY account_id");
                qb.build_query_as()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| StoreError::db("reading prepaid accounts' last top-ups", e))?
            });
            for (id, at) in tops {
                if let Some(entry) = out.get_mut(&id) {
                    entry.1 = Some(at);
                }
            }
        }
        Ok(out)
    }

    /// Accounts of a community whose mobile number matches (an SMS reply's sender), in any of
    /// the forms stored (`+86…`, `86…`, bare 11 digits).
    pub async fn accounts_by_mobile(&self, mobile_digits: &str) -> Result<Vec<i64>, StoreError> {
        let bare = mobile_digits.trim_start_matches('+');
        let bare = bare
            .strip_prefix("0086")
            .or_else(|| bare.strip_prefix("86"))
            .filter(|b| b.len() == 11)
            .unwrap_or(bare);
        let forms = [
            bare.to_string(),
            format!("+86{bare}"),
            format!("86{bare}"),
            format!("0086{bare}"),
        ];
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT id FROM accounts WHERE mobile IN ($1, $2, $3, $4) AND status = 'active' ORDER BY id",
            )
            .bind(&forms[0])
            .bind(&forms[1])
            .bind(&forms[2])
            .bind(&forms[3])
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("finding accounts by mobile number", e))
        })
    }
}

impl Store {
    /// `Some(community id)` if the account exists.
    pub async fn plan_account_exists(&self, account_id: i64) -> Result<Option<i64>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT community_id FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("finding an account", e))
        })
    }
}
