//! Payments persistence: merchants, orders and the bills they pay, raw gateway events, refunds,
//! receipts, rejected callbacks and flags for finance (migration 0007).
//!
//! Exactly once: [`Store::apply_payment`] locks the order row, decides, and in the same
//! transaction moves the order to `paid`, allocates the money over the account's bills with
//! [`allocate_payment_in_tx!`] (journal `payment.apply` / order number), writes the receipt and
//! stores the raw event, unique per gateway event. A copy of the same event finds its row (or the
//! order already paid) and changes nothing; the journal's unique `(kind, reference)` is the last
//! line of defence. [`Store::apply_refund`] does the same for a refund (journal `refund` /
//! refund number), reversing the payment with new rows (negative allocations), never edits.
//!
//! Those two and [`Store::record_payment_event`] — the writes of a callback — are group
//! committed ([`super::group_commit`]): they share a transaction with the callbacks that arrived
//! meanwhile and answer only once it committed; a group's plain payments are applied set-wise
//! ([`super::payment_batch`]), the rest one by one. The one-by-one work is written once, for both
//! backends, with `on_each_backend!` at the end of this file.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::bills::{allocate_payment_in_tx, insert_allocations_in_tx, PaymentAllocation};
use super::group_commit::{EventWrite, Job, PaymentWrite, RefundWrite};
use super::ledger::post_entry_in_tx;
use super::{in_tx, on_read, on_write, Store, StoreError};
use crate::domain::late_fee::Share;
use crate::domain::period::cst_date;
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};

/// Columns of [`OrderRow`], in order.
const ORDER_COLS: &str = "id, order_no, community_id, account_id, channel, merchant_id, method, purpose, amount_fen, \
     subject, status, payer_action, created_at, expires_at, created_by, gateway_txn_id, paid_amount_fen, paid_at, \
     to_credit_fen, refunded_fen, closed_at, close_reason, superseded_by, next_query_at, query_attempts";

/// A payment order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub order_no: String,
    pub community_id: i64,
    pub account_id: i64,
    pub channel: String,
    pub merchant_id: String,
    pub method: String,
    pub purpose: String,
    pub amount_fen: i64,
    pub subject: String,
    pub status: String,
    pub payer_action: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    pub gateway_txn_id: Option<String>,
    pub paid_amount_fen: Option<i64>,
    pub paid_at: Option<DateTime<Utc>>,
    pub to_credit_fen: i64,
    pub refunded_fen: i64,
    pub closed_at: Option<DateTime<Utc>>,
    pub close_reason: Option<String>,
    pub superseded_by: Option<String>,
    pub next_query_at: Option<DateTime<Utc>>,
    pub query_attempts: i32,
}

/// A new order and the bills it pays `(bill id, outstanding fen)`.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub order_no: &'a str,
    pub community_id: i64,
    pub account_id: i64,
    pub channel: &'a str,
    pub merchant_id: &'a str,
    pub method: &'a str,
    pub purpose: &'a str,
    pub amount_fen: i64,
    pub subject: &'a str,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: &'a str,
    pub bills: &'a [(i64, i64)],
    pub next_query_at: DateTime<Utc>,
}

/// A gateway event to store raw, once.
#[derive(Debug, Clone)]
pub struct EventRecord<'a> {
    /// Unique per gateway event (Alipay `notify_id`, WeChat notification id, UnionPay
    /// `queryId`+`txnType`+`respCode`; `query:{txn id}` for an active query's finding).
    pub event_id: &'a str,
    /// `payment`, `refund` or `query`.
    pub kind: &'a str,
    /// JSON array of `[name, value]`.
    pub headers: &'a str,
    pub body: &'a [u8],
    /// JSON of the verified fields.
    pub fields: &'a str,
}

/// A confirmed payment to apply.
#[derive(Debug, Clone)]
pub struct ApplyPayment<'a> {
    pub channel: &'a str,
    /// The merchant the notification was verified for (the URL's).
    pub merchant_id: &'a str,
    /// The merchant the notification itself names.
    pub reported_merchant_id: &'a str,
    pub order_no: &'a str,
    pub gateway_txn_id: &'a str,
    pub amount_fen: i64,
    pub paid_at: DateTime<Utc>,
    pub event: Option<EventRecord<'a>>,
    pub now: DateTime<Utc>,
}

/// What applying a payment did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PaymentApplied {
    /// Applied now: the order is paid, its bills settled, the journal posted, the receipt written.
    Applied {
        allocation: PaymentAllocation,
        /// The order had been closed here: applied anyway and flagged for finance.
        after_close: bool,
    },
    /// The order was already paid (by another copy, another event or an active query).
    AlreadyApplied,
    /// This very gateway event was stored before: nothing to do.
    DuplicateEvent,
    /// We have no such order (stored and flagged).
    UnknownOrder,
    /// The merchant or the amount does not match the order: not applied, flagged for finance.
    Mismatch { reason: String },
}

/// A successful refund to apply.
#[derive(Debug, Clone)]
pub struct ApplyRefund<'a> {
    pub channel: &'a str,
    pub merchant_id: &'a str,
    pub order_no: &'a str,
    pub refund_no: &'a str,
    pub amount_fen: i64,
    pub gateway_refund_id: Option<&'a str>,
    pub refunded_at: DateTime<Utc>,
    pub event: Option<EventRecord<'a>>,
    pub now: DateTime<Utc>,
}

/// What applying a refund did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefundApplied {
    Applied {
        from_bills_fen: i64,
        from_credit_fen: i64,
    },
    AlreadyApplied,
    DuplicateEvent,
    UnknownOrder,
    /// The order is not paid here yet: apply its payment first (query), then the refund.
    OrderNotPaid,
    Mismatch {
        reason: String,
    },
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RefundRow {
    pub id: i64,
    pub refund_no: String,
    pub order_id: i64,
    pub amount_fen: i64,
    pub reason: String,
    pub requested_by: String,
    pub status: String,
    pub gateway_refund_id: Option<String>,
    pub failure: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub refunded_at: Option<DateTime<Utc>>,
}

const REFUND_COLS: &str =
    "id, refund_no, order_id, amount_fen, reason, requested_by, status, gateway_refund_id, failure, \
     requested_at, refunded_at";

/// A receipt as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReceiptRow {
    pub receipt_no: String,
    pub order_no: String,
    pub account_id: i64,
    pub account_code: String,
    pub amount_fen: i64,
    pub channel: String,
    pub merchant_id: String,
    pub gateway_txn_id: String,
    /// JSON: `[{"bill_id", "principal_fen", "late_fee_fen"}]`.
    pub bills: String,
    pub to_credit_fen: i64,
    pub refunded_fen: i64,
    pub paid_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

/// A flag for finance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FlagRow {
    pub id: i64,
    pub kind: String,
    pub channel: String,
    pub merchant_id: String,
    pub order_no: Option<String>,
    pub detail: String,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A rejected callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RejectedRow {
    pub id: i64,
    pub channel: String,
    pub merchant_id: String,
    pub reason: String,
    pub body_sha256: String,
    pub received_at: DateTime<Utc>,
}

/// A configured merchant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MerchantRow {
    pub community_id: i64,
    pub channel: String,
    pub merchant_id: String,
    pub fee_rate_ppm: i32,
}

/// Payment activity of an account (for reminders).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActivityRow {
    pub order_no: String,
    pub status: String,
    pub amount_fen: i64,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

/// `(account_id, order_no, status, amount_fen, created_at, paid_at)`, as the bulk activity query
/// reads it.
type AccountActivity = (i64, String, String, i64, DateTime<Utc>, Option<DateTime<Utc>>);

/// Insert a flag for finance inside an open transaction.
macro_rules! insert_flag_in_tx {
    ($tx:expr, $kind:expr, $channel:expr, $merchant:expr, $order_no:expr, $detail:expr, $now:expr) => {{
        let order_no: Option<&str> = $order_no;
        sqlx::query(
            "INSERT INTO payment_flags (kind, channel, merchant_id, order_no, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($kind)
        .bind($channel)
        .bind($merchant)
        .bind(order_no)
        .bind($detail)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(|e| StoreError::db("raising a payment flag", e))?;
    }};
}

/// Store a raw event inside an open transaction; false when this gateway event is already there.
macro_rules! insert_event_in_tx {
    ($tx:expr, $channel:expr, $merchant:expr, $ev:expr, $order_no:expr, $refund_no:expr, $outcome:expr, $now:expr) => {{
        let ev: &EventRecord<'_> = $ev;
        let refund_no: Option<&str> = $refund_no;
        sqlx::query(
            "INSERT INTO payment_events (channel, merchant_id, event_id, kind, order_no, refund_no, headers, body, fields, outcome, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (channel, merchant_id, event_id) DO NOTHING",
        )
        .bind($channel)
        .bind($merchant)
        .bind(ev.event_id)
        .bind(ev.kind)
        .bind($order_no)
        .bind(refund_no)
        .bind(ev.headers)
        .bind(ev.body)
        .bind(ev.fields)
        .bind($outcome)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(|e| StoreError::db("storing a gateway event", e))?
        .rows_affected()
            == 1
    }};
}

/// Is this gateway event stored already (read before doing any work)?
macro_rules! event_seen_in_tx {
    ($tx:expr, $channel:expr, $merchant:expr, $event_id:expr) => {{
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM payment_events WHERE channel = $1 AND merchant_id = $2 AND event_id = $3",
        )
        .bind($channel)
        .bind($merchant)
        .bind($event_id)
        .fetch_one(&mut *$tx)
        .await
        .map_err(|e| StoreError::db("looking up a gateway event", e))?
            > 0
    }};
}

/// A receipt's `bills`: what the payment settled on each bill, as JSON.
pub(crate) fn receipt_bills(shares: &[Share]) -> String {
    serde_json::to_string(
        &shares
            .iter()
            .map(|s| serde_json::json!({"bill_id": s.bill_id, "principal_fen": s.principal.get(), "late_fee_fen": s.late_fee.get()}))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into())
}

/// Why a payment must not be applied to the order it names (`(flag kind, detail)`), or `None`:
/// the channel, the merchant it was verified for and the merchant it names must all be the
/// order's, and the amount the order's.
pub(crate) fn payment_mismatch(
    p: &ApplyPayment<'_>,
    channel: &str,
    merchant_id: &str,
    amount_fen: i64,
) -> Option<(&'static str, String)> {
    if channel != p.channel || merchant_id != p.merchant_id || p.reported_merchant_id != merchant_id {
        Some((
            "merchant_mismatch",
            format!(
                "the payment names {} merchant {:?} (notified at {:?}) but the order belongs to {channel} merchant {merchant_id:?}",
                p.channel, p.reported_merchant_id, p.merchant_id
            ),
        ))
    } else if p.amount_fen != amount_fen {
        Some((
            "amount_mismatch",
            format!(
                "the gateway reports {} paid but the order is for {}",
                Fen::new(p.amount_fen),
                Fen::new(amount_fen)
            ),
        ))
    } else {
        None
    }
}

pub(crate) fn clearing_account(channel: &str, merchant_id: &str) -> Result<LedgerAccount, StoreError> {
    let channel = match channel {
        "alipay" => crate::domain::ids::Channel::Alipay,
        "wechatpay" => crate::domain::ids::Channel::Wechatpay,
        "unionpay" => crate::domain::ids::Channel::Unionpay,
        other => {
            return Err(StoreError::Refused {
                what: "finding the clearing account",
                reason: format!("unknown channel {other:?}"),
            })
        }
    };
    Ok(LedgerAccount::GatewayClearing {
        channel,
        merchant: merchant_id.to_string(),
    })
}

/// The receipt number of an order's payment.
pub fn receipt_no(order_no: &str) -> String {
    format!("RC{order_no}")
}

impl Store {
    /// An account as payments needs it: `(community id, community code, account code, status)`.
    pub async fn payment_account(&self, account_id: i64) -> Result<Option<(i64, String, String, String)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, String, String, String)>(
                "SELECT a.community_id, c.code, a.code, a.status FROM accounts a JOIN communities c ON c.id = a.community_id \
                 WHERE a.id = $1",
            )
            .bind(account_id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding an account", e))
        })
    }

    /// Record a configured merchant (community, channel, id, fee), replacing its fee if it changed.
    pub async fn upsert_payment_merchant(
        &self,
        community_id: i64,
        channel: &str,
        merchant_id: &str,
        fee_rate_ppm: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "INSERT INTO payment_merchants (community_id, channel, merchant_id, fee_rate_ppm, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (channel, merchant_id) DO UPDATE SET \
                 fee_rate_ppm = excluded.fee_rate_ppm, community_id = excluded.community_id, updated_at = excluded.updated_at",
            )
            .bind(community_id)
            .bind(channel)
            .bind(merchant_id)
            .bind(fee_rate_ppm as i32)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::db("recording a payment merchant", e))
        })
    }

    pub async fn payment_merchants(&self) -> Result<Vec<MerchantRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, MerchantRow>(
                "SELECT community_id, channel, merchant_id, fee_rate_ppm FROM payment_merchants ORDER BY community_id, channel",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing payment merchants", e))
        })
    }

    /// Create an order with its bills, taking each bill's live-order lock. A bill that already
    /// has a live order makes this a `Duplicate` (constraint `payment_bill_locks_pkey`).
    pub async fn create_payment_order(&self, o: &NewOrder<'_>) -> Result<OrderRow, StoreError> {
        let what = "creating a payment order";
        in_tx!(self, what, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO payment_orders (order_no, community_id, account_id, channel, merchant_id, method, purpose, amount_fen, \
                 subject, status, created_at, expires_at, created_by, next_query_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'created', $10, $11, $12, $13, $10) RETURNING id",
            )
            .bind(o.order_no)
            .bind(o.community_id)
            .bind(o.account_id)
            .bind(o.channel)
            .bind(o.merchant_id)
            .bind(o.method)
            .bind(o.purpose)
            .bind(o.amount_fen)
            .bind(o.subject)
            .bind(o.created_at)
            .bind(o.expires_at)
            .bind(o.created_by)
            .bind(o.next_query_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            for (bill_id, fen) in o.bills {
                sqlx::query("INSERT INTO payment_order_bills (order_id, bill_id, amount_fen) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(bill_id)
                    .bind(fen)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("recording the bills of a payment order", e))?;
                sqlx::query("INSERT INTO payment_bill_locks (bill_id, order_id) VALUES ($1, $2)")
                    .bind(bill_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("reserving a bill for a payment order", e))?;
            }
            let row: OrderRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE id = $1"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            Ok::<_, StoreError>(row)
        })
    }

    /// Remember what the payer needs for a created order (so a reused order answers the same).
    pub async fn set_payer_action(&self, order_no: &str, action_json: &str) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query("UPDATE payment_orders SET payer_action = $1 WHERE order_no = $2")
                .bind(action_json)
                .bind(order_no)
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::db("recording a payment order's payer action", e))
        })
    }

    pub async fn payment_order(&self, order_no: &str) -> Result<Option<OrderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE order_no = $1"
            )))
            .bind(order_no)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a payment order", e))
        })
    }

    /// The same, read on the write connection (after a write, SQLite's readers may lag a commit).
    pub async fn payment_order_fresh(&self, order_no: &str) -> Result<Option<OrderRow>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE order_no = $1"
            )))
            .bind(order_no)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a payment order", e))
        })
    }

    pub async fn payment_order_by_id(&self, id: i64) -> Result<Option<OrderRow>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a payment order", e))
        })
    }

    /// The bills an order pays `(bill id, outstanding fen when ordered)`.
    pub async fn payment_order_bills(&self, order_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT bill_id, amount_fen FROM payment_order_bills WHERE order_id = $1 ORDER BY bill_id",
            )
            .bind(order_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading the bills of a payment order", e))
        })
    }

    /// The live orders holding any of these bills.
    pub async fn live_orders_for_bills(&self, bill_ids: &[i64]) -> Result<Vec<OrderRow>, StoreError> {
        let mut out: Vec<OrderRow> = Vec::new();
        for b in bill_ids {
            let row: Option<OrderRow> = on_write!(self, |pool| {
                sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {ORDER_COLS} FROM payment_orders WHERE id = (SELECT order_id FROM payment_bill_locks WHERE bill_id = $1)"
                )))
                .bind(b)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("finding a bill's live payment order", e))
            })?;
            if let Some(r) = row {
                if !out.iter().any(|o| o.id == r.id) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Close a created order here (after the gateway closed it, or before it was ever sent):
    /// releases its bills. False when it was not `created` any more (paid or closed meanwhile).
    pub async fn close_payment_order(
        &self,
        order_no: &str,
        reason: &str,
        superseded_by: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let what = "closing a payment order";
        in_tx!(self, what, |tx| {
            let id: Option<i64> = sqlx::query_scalar(
                "UPDATE payment_orders SET status = 'closed', closed_at = $1, close_reason = $2, superseded_by = $3, \
                 next_query_at = NULL, updated_at = $1 WHERE order_no = $4 AND status = 'created' RETURNING id",
            )
            .bind(now)
            .bind(reason)
            .bind(superseded_by)
            .bind(order_no)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            if let Some(id) = id {
                sqlx::query("DELETE FROM payment_bill_locks WHERE order_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("releasing a closed order's bills", e))?;
            }
            Ok::<_, StoreError>(id.is_some())
        })
    }

    /// Apply a confirmed payment exactly once (see the module docs).
    ///
    /// A paid order takes eleven statements: lock the order (reading, in the same statement,
    /// whether this gateway event is stored already), release its bills, lock the account (with
    /// its allocation settings), read its bills, write the allocations, the ledger accounts, the
    /// journal lines and the entry, one `UPDATE` of the order (status, transaction, amount,
    /// credit), the receipt and the event.
    pub async fn apply_payment(&self, p: &ApplyPayment<'_>) -> Result<PaymentApplied, StoreError> {
        let w = PaymentWrite::of(p);
        self.group
            .submit(&self.backend, p.order_no, "applying a payment", |done| {
                Job::Payment(w, done)
            })
            .await
    }

    /// Store a verified event that changes nothing (a notification of a non-final state), once.
    /// False when this gateway event was stored before.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_payment_event(
        &self,
        channel: &str,
        merchant_id: &str,
        order_no: &str,
        refund_no: Option<&str>,
        ev: &EventRecord<'_>,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let w = EventWrite::of(channel, merchant_id, order_no, refund_no, ev, outcome, now);
        self.group
            .submit(&self.backend, order_no, "storing a gateway event", |done| {
                Job::Event(w, done)
            })
            .await
    }

    /// Log a callback that was not accepted, with its reason (a digest and a bounded prefix of
    /// the body only).
    pub async fn record_rejected_callback(
        &self,
        channel: &str,
        merchant_id: &str,
        reason: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(body));
        let prefix = &body[..body.len().min(4096)];
        on_write!(self, |pool| {
            sqlx::query(
                "INSERT INTO payment_rejected_callbacks (channel, merchant_id, reason, body_sha256, body_prefix, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(channel)
            .bind(merchant_id)
            .bind(reason)
            .bind(digest)
            .bind(prefix)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::db("logging a rejected callback", e))
        })
    }

    pub async fn rejected_callbacks(&self) -> Result<Vec<RejectedRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, RejectedRow>(
                "SELECT id, channel, merchant_id, reason, body_sha256, received_at FROM payment_rejected_callbacks ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing rejected callbacks", e))
        })
    }

    /// Raise a flag for finance outside any other write.
    pub async fn raise_payment_flag(
        &self,
        kind: &str,
        channel: &str,
        merchant_id: &str,
        order_no: Option<&str>,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        in_tx!(self, "raising a payment flag", |tx| {
            insert_flag_in_tx!(tx, kind, channel, merchant_id, order_no, detail, now);
            Ok::<_, StoreError>(())
        })
    }

    /// Open flags first, newest first.
    pub async fn payment_flags(&self) -> Result<Vec<FlagRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, FlagRow>(
                "SELECT id, kind, channel, merchant_id, order_no, detail, created_at, resolved_at FROM payment_flags \
                 ORDER BY (resolved_at IS NULL) DESC, id DESC",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing payment flags", e))
        })
    }

    /// Stored events for an order (`(kind, outcome)`), oldest first.
    pub async fn payment_events_for(&self, order_no: &str) -> Result<Vec<(String, String)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (String, String)>(
                "SELECT kind, outcome FROM payment_events WHERE order_no = $1 ORDER BY id",
            )
            .bind(order_no)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing an order's gateway events", e))
        })
    }

    /// The first stored event of an order as received: `(headers JSON, body)` (audit, replays).
    pub async fn payment_event_raw(&self, order_no: &str, kind: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (String, Vec<u8>)>(
                "SELECT headers, body FROM payment_events WHERE order_no = $1 AND kind = $2 ORDER BY id LIMIT 1",
            )
            .bind(order_no)
            .bind(kind)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a stored gateway event", e))
        })
    }

    /// Created orders whose next active query is due, oldest first.
    pub async fn orders_due_for_query(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE status = 'created' AND next_query_at <= $1 \
                 ORDER BY next_query_at LIMIT $2"
            )))
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("finding orders to query", e))
        })
    }

    /// Set an order's next active query (None: no more), counting the attempt.
    pub async fn schedule_order_query(
        &self,
        order_no: &str,
        next: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE payment_orders SET next_query_at = $1, query_attempts = query_attempts + 1, updated_at = $2 \
                 WHERE order_no = $3 AND status = 'created'",
            )
            .bind(next)
            .bind(now)
            .bind(order_no)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::db("scheduling an order query", e))
        })
    }

    /// Created orders past their expiry.
    pub async fn expired_orders(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OrderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE status = 'created' AND expires_at < $1 ORDER BY expires_at LIMIT $2"
            )))
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("finding expired orders", e))
        })
    }

    /// An account's orders since `since` (created or paid, still open or paid), newest first.
    pub async fn account_payment_activity(
        &self,
        account_id: i64,
        since: DateTime<Utc>,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        let mut all = self.accounts_payment_activity(&[(account_id, since)]).await?;
        Ok(all.remove(&account_id).unwrap_or_default())
    }

    /// [`Store::account_payment_activity`] for many `(account, since)` at once: one query per
    /// 500 accounts (a planning run asks about every account it would remind). Each account's
    /// orders created or paid since its own `since`, newest first; an account with none is
    /// absent from the map.
    pub async fn accounts_payment_activity(
        &self,
        asks: &[(i64, DateTime<Utc>)],
    ) -> Result<HashMap<i64, Vec<ActivityRow>>, StoreError> {
        let mut out: HashMap<i64, Vec<ActivityRow>> = HashMap::new();
        for chunk in asks.chunks(500) {
            let Some(earliest) = chunk.iter().map(|(_, since)| *since).min() else {
                continue;
            };
            let since_of: HashMap<i64, DateTime<Utc>> = chunk.iter().copied().collect();
            let rows: Vec<AccountActivity> = on_read!(self, |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT account_id, order_no, status, amount_fen, created_at, paid_at FROM payment_orders \
                     WHERE status IN ('created', 'paid') AND (created_at >= ",
                );
                qb.push_bind(earliest);
                qb.push(" OR paid_at >= ");
                qb.push_bind(earliest);
                qb.push(") AND account_id IN (");
                let mut sep = qb.separated(", ");
                for (id, _) in chunk {
                    sep.push_bind(*id);
                }
                qb.push(") ORDER BY account_id, created_at DESC");
                qb.build_query_as()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| StoreError::db("reading accounts' payment activity", e))?
            });
            for (account_id, order_no, status, amount_fen, created_at, paid_at) in rows {
                // The chunk was read from its earliest `since`; keep each account's own window.
                let since = since_of[&account_id];
                if created_at >= since || paid_at.is_some_and(|p| p >= since) {
                    out.entry(account_id).or_default().push(ActivityRow {
                        order_no,
                        status,
                        amount_fen,
                        created_at,
                        paid_at,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Orders of an account, newest first.
    pub async fn account_payment_orders(&self, account_id: i64) -> Result<Vec<OrderRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ORDER_COLS} FROM payment_orders WHERE account_id = $1 ORDER BY id DESC"
            )))
            .bind(account_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing an account's payment orders", e))
        })
    }

    // --- refunds -----------------------------------------------------------------------------

    /// Record a refund request before the gateway is asked. Refused when it would take more than
    /// is still refundable (counting refunds in flight).
    pub async fn create_refund(
        &self,
        order_no: &str,
        refund_no: &str,
        amount_fen: i64,
        reason: &str,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(OrderRow, RefundRow), StoreError> {
        let what = "recording a refund request";
        in_tx!(self, what, |tx| {
            let order: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE payment_orders SET updated_at = updated_at WHERE order_no = $1 RETURNING {ORDER_COLS}"
            )))
            .bind(order_no)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let order = order.ok_or_else(|| StoreError::NotFound(format!("payment order {order_no}")))?;
            if order.status != "paid" {
                return Err(StoreError::Refused {
                    what,
                    reason: format!(
                        "order {order_no} is {}, not paid: there is nothing to refund",
                        order.status
                    ),
                });
            }
            let committed: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(amount_fen), 0) AS BIGINT) FROM payment_refunds WHERE order_id = $1 AND status <> 'failed'",
            )
            .bind(order.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let paid = order.paid_amount_fen.unwrap_or(0);
            if amount_fen <= 0 || committed + amount_fen > paid {
                return Err(StoreError::Refused {
                    what,
                    reason: format!(
                        "a refund of {} exceeds the {} still refundable on order {order_no}",
                        Fen::new(amount_fen),
                        Fen::new(paid - committed)
                    ),
                });
            }
            let refund: RefundRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO payment_refunds (refund_no, order_id, amount_fen, reason, requested_by, status, requested_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'requested', $6, $6) RETURNING {REFUND_COLS}"
            )))
            .bind(refund_no)
            .bind(order.id)
            .bind(amount_fen)
            .bind(reason)
            .bind(requested_by)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            Ok::<_, StoreError>((order, refund))
        })
    }

    /// Mark a refund processing (the gateway accepted it) or failed (it refused).
    pub async fn set_refund_status(
        &self,
        refund_no: &str,
        status: &str,
        gateway_refund_id: Option<&str>,
        failure: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE payment_refunds SET status = $1, gateway_refund_id = COALESCE($2, gateway_refund_id), failure = $3, \
                 updated_at = $4 WHERE refund_no = $5 AND status IN ('requested', 'processing')",
            )
            .bind(status)
            .bind(gateway_refund_id)
            .bind(failure)
            .bind(now)
            .bind(refund_no)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::db("updating a refund's status", e))
        })
    }

    pub async fn refund(&self, refund_no: &str) -> Result<Option<RefundRow>, StoreError> {
        on_write!(self, |pool| {
            sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {REFUND_COLS} FROM payment_refunds WHERE refund_no = $1"
            )))
            .bind(refund_no)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a refund", e))
        })
    }

    pub async fn refunds_of_order(&self, order_id: i64) -> Result<Vec<RefundRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {REFUND_COLS} FROM payment_refunds WHERE order_id = $1 ORDER BY id"
            )))
            .bind(order_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing an order's refunds", e))
        })
    }

    /// Refunds not yet final (for the compensation sweep).
    pub async fn pending_refunds(&self, limit: i64) -> Result<Vec<(RefundRow, String)>, StoreError> {
        let rows: Vec<RefundRow> = on_read!(self, |pool| {
            sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {REFUND_COLS} FROM payment_refunds WHERE status IN ('requested', 'processing') ORDER BY id LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing pending refunds", e))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let no: Option<String> = on_read!(self, |pool| {
                sqlx::query_scalar("SELECT order_no FROM payment_orders WHERE id = $1")
                    .bind(r.order_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| StoreError::db("reading a refund's order", e))
            })?;
            if let Some(no) = no {
                out.push((r, no));
            }
        }
        Ok(out)
    }

    /// Apply a successful refund exactly once: negative allocations reopen what the payment
    /// settled (its credit part first, then its bills, newest bill first, late fee before
    /// principal), one `refund` entry credits the clearing account.
    pub async fn apply_refund(&self, r: &ApplyRefund<'_>) -> Result<RefundApplied, StoreError> {
        let w = RefundWrite::of(r);
        self.group
            .submit(&self.backend, r.order_no, "applying a refund", |done| {
                Job::Refund(w, done)
            })
            .await
    }

    // --- receipts ----------------------------------------------------------------------------

    pub async fn receipt(&self, receipt_no: &str) -> Result<Option<ReceiptRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReceiptRow>(
                "SELECT r.receipt_no, o.order_no, r.account_id, a.code AS account_code, r.amount_fen, r.channel, o.merchant_id, \
                 r.gateway_txn_id, r.bills, r.to_credit_fen, o.refunded_fen, r.paid_at, r.issued_at FROM payment_receipts r \
                 JOIN payment_orders o ON o.id = r.order_id JOIN accounts a ON a.id = r.account_id WHERE r.receipt_no = $1",
            )
            .bind(receipt_no)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a receipt", e))
        })
    }

    pub async fn account_receipts(&self, account_id: i64) -> Result<Vec<ReceiptRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReceiptRow>(
                "SELECT r.receipt_no, o.order_no, r.account_id, a.code AS account_code, r.amount_fen, r.channel, o.merchant_id, \
                 r.gateway_txn_id, r.bills, r.to_credit_fen, o.refunded_fen, r.paid_at, r.issued_at FROM payment_receipts r \
                 JOIN payment_orders o ON o.id = r.order_id JOIN accounts a ON a.id = r.account_id WHERE r.account_id = $1 \
                 ORDER BY r.paid_at DESC",
            )
            .bind(account_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing an account's receipts", e))
        })
    }

    /// Counts for tests and the demo: `(payment.apply entries, receipts, events)`.
    pub async fn payment_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, i64, i64)>(
                "SELECT (SELECT COUNT(*) FROM journal_entries WHERE kind = 'payment.apply'), \
                 (SELECT COUNT(*) FROM payment_receipts), (SELECT COUNT(*) FROM payment_events)",
            )
            .fetch_one(pool)
            .await
            .map_err(|e| StoreError::db("counting payments", e))
        })
    }
}

// --- the callback writes' work, per backend (run by the group committer) ---------------------

/// Define one function per backend from one body: the first takes a `&mut SqliteConnection`,
/// the second a `&mut PgConnection` — a transaction or savepoint the caller opened (the group
/// committer, [`super::group_commit`]). Each arm type-checks against its own driver, as
/// [`in_tx!`] does.
macro_rules! on_each_backend {
    ($(#[$m:meta])* fn $sqlite:ident, $pg:ident ($tx:ident $(, $arg:ident: $ty:ty)*) -> $ret:ty $body:block) => {
        $(#[$m])*
        pub(crate) async fn $sqlite($tx: &mut sqlx::SqliteConnection $(, $arg: $ty)*) -> $ret $body
        $(#[$m])*
        pub(crate) async fn $pg($tx: &mut sqlx::PgConnection $(, $arg: $ty)*) -> $ret $body
    };
}

on_each_backend! {
    /// The work of [`Store::apply_payment`], in a transaction or savepoint the caller opened.
    fn apply_payment_sqlite, apply_payment_postgres(tx, p: &ApplyPayment<'_>) -> Result<PaymentApplied, StoreError> {
        let what = "applying a payment";
        'body: {
            // Locks the order row (both backends) so copies of one payment apply one at a time,
            // and says whether this very event was stored before (then nothing is done).
            let row: Option<(i64, i64, String, i64, String, String, i64)> = sqlx::query_as(
                "UPDATE payment_orders SET query_attempts = query_attempts WHERE order_no = $1 \
                 RETURNING id, account_id, status, amount_fen, channel, merchant_id, \
                 (SELECT COUNT(*) FROM payment_events e WHERE e.channel = $2 AND e.merchant_id = $3 AND e.event_id = $4)",
            )
            .bind(p.order_no)
            .bind(p.channel)
            .bind(p.merchant_id)
            .bind(p.event.as_ref().map(|ev| ev.event_id))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let Some((order_id, account_id, status, amount_fen, channel, merchant_id, seen)) = row else {
                if let Some(ev) = &p.event {
                    // Stored once: a copy finds the row and is a duplicate (no second flag).
                    if !insert_event_in_tx!(
                        tx,
                        p.channel,
                        p.merchant_id,
                        ev,
                        p.order_no,
                        None,
                        "unknown_order",
                        p.now
                    ) {
                        break 'body Ok(PaymentApplied::DuplicateEvent);
                    }
                }
                insert_flag_in_tx!(
                    tx,
                    "unknown_order",
                    p.channel,
                    p.merchant_id,
                    Some(p.order_no),
                    format!(
                        "a payment of {} for an order we do not have (gateway transaction {})",
                        Fen::new(p.amount_fen),
                        p.gateway_txn_id
                    ),
                    p.now
                );
                break 'body Ok(PaymentApplied::UnknownOrder);
            };
            if seen > 0 {
                break 'body Ok(PaymentApplied::DuplicateEvent);
            }
            let mismatch = payment_mismatch(p, &channel, &merchant_id, amount_fen);
            if let Some((kind, detail)) = mismatch {
                if let Some(ev) = &p.event {
                    let _ = insert_event_in_tx!(tx, p.channel, p.merchant_id, ev, p.order_no, None, kind, p.now);
                }
                insert_flag_in_tx!(
                    tx,
                    kind,
                    p.channel,
                    p.merchant_id,
                    Some(p.order_no),
                    detail.clone(),
                    p.now
                );
                break 'body Ok(PaymentApplied::Mismatch { reason: detail });
            }
            if status == "paid" {
                if let Some(ev) = &p.event {
                    let _ = insert_event_in_tx!(
                        tx,
                        p.channel,
                        p.merchant_id,
                        ev,
                        p.order_no,
                        None,
                        "already_applied",
                        p.now
                    );
                }
                break 'body Ok(PaymentApplied::AlreadyApplied);
            }
            let after_close = status == "closed";
            if !after_close {
                sqlx::query("DELETE FROM payment_bill_locks WHERE order_id = $1")
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("releasing a paid order's bills", e))?;
            }
            let clearing = clearing_account(&channel, &merchant_id)?;
            let allocation = allocate_payment_in_tx!(
                kind = "payment.apply",
                tx,
                account_id,
                Fen::new(p.amount_fen),
                p.order_no,
                &clearing,
                p.paid_at
            );
            // The order row is locked since the first statement: one UPDATE moves it to paid
            // with what the allocation put to credit.
            sqlx::query(
                "UPDATE payment_orders SET status = 'paid', gateway_txn_id = $1, paid_amount_fen = $2, paid_at = $3, \
                 to_credit_fen = $4, next_query_at = NULL, updated_at = $5 WHERE id = $6",
            )
            .bind(p.gateway_txn_id)
            .bind(p.amount_fen)
            .bind(p.paid_at)
            .bind(allocation.to_credit_fen)
            .bind(p.now)
            .bind(order_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db("marking an order paid", e))?;
            let bills_json = receipt_bills(&allocation.bills);
            sqlx::query(
                "INSERT INTO payment_receipts (receipt_no, order_id, account_id, amount_fen, channel, gateway_txn_id, bills, \
                 to_credit_fen, paid_at, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(receipt_no(p.order_no))
            .bind(order_id)
            .bind(account_id)
            .bind(p.amount_fen)
            .bind(p.channel)
            .bind(p.gateway_txn_id)
            .bind(bills_json)
            .bind(allocation.to_credit_fen)
            .bind(p.paid_at)
            .bind(p.now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db("writing a receipt", e))?;
            if after_close {
                insert_flag_in_tx!(
                    tx,
                    "paid_after_close",
                    p.channel,
                    p.merchant_id,
                    Some(p.order_no),
                    format!(
                        "{} arrived for an order we had closed; applied (gateway transaction {})",
                        Fen::new(p.amount_fen),
                        p.gateway_txn_id
                    ),
                    p.now
                );
            }
            if let Some(ev) = &p.event {
                let _ = insert_event_in_tx!(tx, p.channel, p.merchant_id, ev, p.order_no, None, "applied", p.now);
            }
            Ok::<_, StoreError>(PaymentApplied::Applied {
                allocation,
                after_close,
            })
        }
    }
}

on_each_backend! {
    /// The work of [`Store::record_payment_event`], in a transaction or savepoint the caller opened.
    fn record_event_sqlite, record_event_postgres(tx, w: &EventWrite) -> Result<bool, StoreError> {
        let fresh = insert_event_in_tx!(
            tx,
            &w.channel,
            &w.merchant_id,
            &w.record(),
            &w.order_no,
            w.refund_no.as_deref(),
            &w.outcome,
            w.now
        );
        Ok(fresh)
    }
}

on_each_backend! {
    /// The work of [`Store::apply_refund`], in a transaction or savepoint the caller opened.
    fn apply_refund_sqlite, apply_refund_postgres(tx, r: &ApplyRefund<'_>) -> Result<RefundApplied, StoreError> {
        let what = "applying a refund";
        'body: {
            if let Some(ev) = &r.event {
                if event_seen_in_tx!(tx, r.channel, r.merchant_id, ev.event_id) {
                    break 'body Ok(RefundApplied::DuplicateEvent);
                }
            }
            let order: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE payment_orders SET updated_at = updated_at WHERE order_no = $1 RETURNING {ORDER_COLS}"
            )))
            .bind(r.order_no)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let Some(order) = order else {
                if let Some(ev) = &r.event {
                    let _ = insert_event_in_tx!(
                        tx,
                        r.channel,
                        r.merchant_id,
                        ev,
                        r.order_no,
                        Some(r.refund_no),
                        "unknown_order",
                        r.now
                    );
                }
                insert_flag_in_tx!(
                    tx,
                    "unknown_order",
                    r.channel,
                    r.merchant_id,
                    Some(r.order_no),
                    format!(
                        "a refund {} of {} for an order we do not have",
                        r.refund_no,
                        Fen::new(r.amount_fen)
                    ),
                    r.now
                );
                break 'body Ok(RefundApplied::UnknownOrder);
            };
            if order.channel != r.channel || order.merchant_id != r.merchant_id {
                let detail = format!(
                    "refund {} notified for {} {:?} but order {} belongs to {} {:?}",
                    r.refund_no, r.channel, r.merchant_id, r.order_no, order.channel, order.merchant_id
                );
                if let Some(ev) = &r.event {
                    let _ = insert_event_in_tx!(
                        tx,
                        r.channel,
                        r.merchant_id,
                        ev,
                        r.order_no,
                        Some(r.refund_no),
                        "merchant_mismatch",
                        r.now
                    );
                }
                insert_flag_in_tx!(
                    tx,
                    "merchant_mismatch",
                    r.channel,
                    r.merchant_id,
                    Some(r.order_no),
                    detail.clone(),
                    r.now
                );
                break 'body Ok(RefundApplied::Mismatch { reason: detail });
            }
            if order.status != "paid" {
                break 'body Ok(RefundApplied::OrderNotPaid);
            }
            let existing: Option<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {REFUND_COLS} FROM payment_refunds WHERE refund_no = $1"
            )))
            .bind(r.refund_no)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let refund_id = match existing {
                Some(x) if x.order_id == order.id && x.status == "succeeded" => {
                    if let Some(ev) = &r.event {
                        let _ = insert_event_in_tx!(
                            tx,
                            r.channel,
                            r.merchant_id,
                            ev,
                            r.order_no,
                            Some(r.refund_no),
                            "already_applied",
                            r.now
                        );
                    }
                    break 'body Ok(RefundApplied::AlreadyApplied);
                }
                Some(x) if x.order_id != order.id || x.amount_fen != r.amount_fen => {
                    let detail = format!(
                        "refund {} reported as {} on order {} but we asked for {}",
                        r.refund_no,
                        Fen::new(r.amount_fen),
                        r.order_no,
                        Fen::new(x.amount_fen)
                    );
                    if let Some(ev) = &r.event {
                        let _ = insert_event_in_tx!(
                            tx,
                            r.channel,
                            r.merchant_id,
                            ev,
                            r.order_no,
                            Some(r.refund_no),
                            "refund_mismatch",
                            r.now
                        );
                    }
                    insert_flag_in_tx!(
                        tx,
                        "refund_mismatch",
                        r.channel,
                        r.merchant_id,
                        Some(r.order_no),
                        detail.clone(),
                        r.now
                    );
                    break 'body Ok(RefundApplied::Mismatch { reason: detail });
                }
                Some(x) => x.id,
                None => {
                    // A refund made at the gateway (merchant console), not through us: applied so the
                    // ledger matches the money, and flagged.
                    insert_flag_in_tx!(
                        tx,
                        "unknown_refund",
                        r.channel,
                        r.merchant_id,
                        Some(r.order_no),
                        format!(
                            "refund {} of {} was not requested through meterpay; applied",
                            r.refund_no,
                            Fen::new(r.amount_fen)
                        ),
                        r.now
                    );
                    sqlx::query_scalar::<_, i64>(
                        "INSERT INTO payment_refunds (refund_no, order_id, amount_fen, reason, requested_by, status, requested_at, updated_at) \
                         VALUES ($1, $2, $3, 'refund made at the gateway', 'gateway', 'processing', $4, $4) RETURNING id",
                    )
                    .bind(r.refund_no)
                    .bind(order.id)
                    .bind(r.amount_fen)
                    .bind(r.now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                }
            };
            let paid = order.paid_amount_fen.unwrap_or(0);
            if order.refunded_fen + r.amount_fen > paid {
                let detail = format!(
                    "refund {} of {} would take more than the {} left on order {}",
                    r.refund_no,
                    Fen::new(r.amount_fen),
                    Fen::new(paid - order.refunded_fen),
                    r.order_no
                );
                if let Some(ev) = &r.event {
                    let _ = insert_event_in_tx!(
                        tx,
                        r.channel,
                        r.merchant_id,
                        ev,
                        r.order_no,
                        Some(r.refund_no),
                        "refund_mismatch",
                        r.now
                    );
                }
                insert_flag_in_tx!(
                    tx,
                    "refund_mismatch",
                    r.channel,
                    r.merchant_id,
                    Some(r.order_no),
                    detail.clone(),
                    r.now
                );
                break 'body Ok(RefundApplied::Mismatch { reason: detail });
            }
            // What this order still has on each bill, net of its earlier refunds.
            let per_bill: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT bill_id, CAST(SUM(principal_fen) AS BIGINT), CAST(SUM(late_fee_fen) AS BIGINT) FROM bill_allocations \
                 WHERE account_id = $1 AND source = 'payment' AND (source_ref = $2 OR source_ref IN \
                 (SELECT refund_no FROM payment_refunds WHERE order_id = $3 AND status = 'succeeded')) \
                 GROUP BY bill_id ORDER BY bill_id DESC",
            )
            .bind(order.account_id)
            .bind(r.order_no)
            .bind(order.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| StoreError::db("reading what a payment settled", e))?;
            let on_bills: i64 = per_bill.iter().map(|(_, p, f)| p + f).sum();
            let credit_left = (paid - order.refunded_fen - on_bills).max(0);
            let from_credit = r.amount_fen.min(credit_left);
            let mut left = r.amount_fen - from_credit;
            let mut shares: Vec<Share> = Vec::new();
            for (bill_id, principal, fee) in per_bill {
                if left == 0 {
                    break;
                }
                let f = fee.max(0).min(left);
                left -= f;
                let p = principal.max(0).min(left);
                left -= p;
                if f + p > 0 {
                    shares.push(Share {
                        bill_id,
                        principal: Fen::new(-p),
                        late_fee: Fen::new(-f),
                    });
                }
            }
            let from_bills: i64 = r.amount_fen - from_credit - left;
            // Anything neither on bills nor in credit (cannot happen while the books agree) comes
            // out of credit too, so the entry still balances against the money returned.
            let from_credit = from_credit + left;
            insert_allocations_in_tx!(
                tx,
                order.account_id,
                &shares,
                "payment",
                r.refund_no.to_string(),
                r.refunded_at
            );
            let clearing = clearing_account(&order.channel, &order.merchant_id)?;
            let mut lines = vec![(clearing, Fen::new(-r.amount_fen))];
            if from_bills > 0 {
                lines.push((
                    LedgerAccount::Receivable {
                        account_id: order.account_id,
                    },
                    Fen::new(from_bills),
                ));
            }
            if from_credit > 0 {
                lines.push((
                    LedgerAccount::CustomerCredit {
                        account_id: order.account_id,
                    },
                    Fen::new(from_credit),
                ));
            }
            let entry = JournalEntry::new(
                "refund",
                r.refund_no,
                cst_date(r.refunded_at),
                format!("refund:{}", r.refund_no),
                lines,
            )
            .map_err(|e| StoreError::Refused {
                what,
                reason: e.to_string(),
            })?
            .with_memo(format!("refund of order {}", r.order_no));
            post_entry_in_tx!(tx, &entry, r.refunded_at);
            sqlx::query(
                "UPDATE payment_refunds SET status = 'succeeded', gateway_refund_id = COALESCE($1, gateway_refund_id), \
                 refunded_at = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(r.gateway_refund_id)
            .bind(r.refunded_at)
            .bind(r.now)
            .bind(refund_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db("marking a refund succeeded", e))?;
            sqlx::query("UPDATE payment_orders SET refunded_fen = refunded_fen + $1, updated_at = $2 WHERE id = $3")
                .bind(r.amount_fen)
                .bind(r.now)
                .bind(order.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db("recording a refund on its order", e))?;
            if let Some(ev) = &r.event {
                let _ = insert_event_in_tx!(
                    tx,
                    r.channel,
                    r.merchant_id,
                    ev,
                    r.order_no,
                    Some(r.refund_no),
                    "applied",
                    r.now
                );
            }
            Ok::<_, StoreError>(RefundApplied::Applied {
                from_bills_fen: from_bills,
                from_credit_fen: from_credit,
            })
        }
    }
}
