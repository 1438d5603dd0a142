//! What the later steps (reconciliation, reminders, pages) need from payments, as one trait.
//!
//! The payments module implements it over the store and the configured merchants
//! ([`PaymentsPort`]); reconciliation and reminders take an `Arc<dyn PaymentsPort>` so that each
//! step owns its own tables and talks to the previous one only through this contract.
//!
//! Ledger conventions every step relies on (design.md §3 "Payments"):
//! - a confirmed payment posts one entry of kind `payment.apply` (see `allocate_payment_in_tx!`),
//!   reference = the order number, debit `clearing:{channel}:{merchant}` by the amount the
//!   gateway took, credits to `receivable:{account}` (bills, allocation order) and
//!   `credit:{account}` (any overpayment or a top-up); its accounting date is the gateway's
//!   payment time as a date in Asia/Shanghai (the gateways' settlement files use that day).
//! - a refund posts kind `refund`, reference = the refund number: credit the clearing account,
//!   debit receivable/credit back; accounting date = the refund's success time in Asia/Shanghai.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use meterpay_gateways::gateway::{Channel, PaymentGateway};
use serde::Serialize;

use crate::domain::money::Fen;

/// One configured merchant: who it belongs to and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MerchantRef {
    pub channel: Channel,
    /// The app id (Alipay), mchid (WeChat Pay) or merId (UnionPay).
    pub merchant_id: String,
    pub community_id: i64,
    /// The contracted fee rate in parts per million of the amount (6‰ = 6000).
    pub fee_rate_ppm: u32,
}

/// What an active query of one order found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum QueryOutcome {
    /// Paid at the gateway and applied now, exactly as a callback would have been.
    AppliedNow { amount: Fen, gateway_txn_id: String },
    /// Paid, and it was already in the ledger.
    AlreadyApplied,
    /// The gateway does not (yet) show it paid; `state` is the gateway's word for it.
    NotPaid { state: String },
    /// We have no such order.
    UnknownOrder,
}

/// Payment activity on an account: a confirmed payment or a live order still pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentActivity {
    pub order_no: String,
    /// `paid` or `pending`.
    pub state: String,
    pub amount: Fen,
    pub at: DateTime<Utc>,
}

#[async_trait]
pub trait PaymentsPort: Send + Sync {
    /// Every configured merchant, across communities.
    async fn merchants(&self) -> anyhow::Result<Vec<MerchantRef>>;
    /// The gateway client for a merchant (to download its settlement files, or to query).
    async fn gateway(&self, channel: Channel, merchant_id: &str) -> anyhow::Result<Arc<dyn PaymentGateway>>;
    /// Query an order at its gateway and, when the gateway shows it paid and we do not, apply it
    /// in one transaction exactly as its callback would have been. Idempotent.
    async fn query_and_apply(&self, order_no: &str, now: DateTime<Utc>) -> anyhow::Result<QueryOutcome>;
    /// Payments confirmed, and orders still pending, for an account since `since` (for
    /// "stop reminding once any payment arrives, even one still pending at the gateway").
    async fn payment_activity(&self, account_id: i64, since: DateTime<Utc>) -> anyhow::Result<Vec<PaymentActivity>>;
    /// [`PaymentsPort::payment_activity`] for many `(account, since)` at once (a planning run
    /// asks about every account it would remind). An account with no activity may be absent.
    /// The default asks 16 at a time; the service answers from one query per 500 accounts.
    async fn payment_activity_many(
        &self,
        asks: &[(i64, DateTime<Utc>)],
    ) -> anyhow::Result<HashMap<i64, Vec<PaymentActivity>>> {
        let mut out = HashMap::with_capacity(asks.len());
        for chunk in asks.chunks(16) {
            let futs: Vec<_> = chunk
                .iter()
                .map(|(id, since)| self.payment_activity(*id, *since))
                .collect();
            for ((id, _), answer) in chunk.iter().zip(futures::future::join_all(futs).await) {
                let activity = answer.map_err(|e| anyhow::anyhow!("asking payments about account {id}: {e:#}"))?;
                out.insert(*id, activity);
            }
        }
        Ok(out)
    }
}
