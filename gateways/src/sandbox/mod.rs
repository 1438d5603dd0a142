//! The sandbox: the server side of Alipay, WeChat Pay v3 and UnionPay 5.1.0, speaking their real
//! protocols, so the demo and the tests can pay, refund and reconcile with no merchant account
//! (design.md §4). Nothing in the service knows it is talking to a sandbox: its gateway clients
//! simply point at the sandbox's base URL.
//!
//! Layout:
//! - this module: the core every gateway shares — registered merchants, orders and refunds, the
//!   day's transactions (for settlement files), a controllable clock, notification delivery on
//!   the gateways' retry schedules (compressible with [`SandboxConfig::time_scale`]), the fault
//!   switches ([`Faults`]), the wallet page where a person presses Pay, and a JSON control API
//!   for tests and the demo (`/sandbox/api/…`).
//! - one [`GatewaySim`] per gateway (`alipay`, `wechatpay`, `unionpay` submodules): its HTTP
//!   routes (verifying every request with the merchant's public key, signing every answer with
//!   the sandbox's own platform key), its notifications, and its settlement-file writer in the
//!   real format with fees.
//!
//! Invariants: an order's state only moves forward (`Created → Paid`, `Created → Closed`);
//! refunds never exceed what was paid; every payment and successful refund is recorded once as a
//! [`SimTxn`] and lands in exactly one day's settlement file (China Standard Time day), unless a
//! [`FilePlant`] deliberately plants a difference.

pub mod alipay;
pub mod unionpay;
pub mod wallet;
pub mod wechatpay;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::gateway::{Channel, PayMethod};
use crate::settlement::RowKind;

/// China Standard Time, in which every gateway writes its times and cuts its days.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("valid offset")
}

/// How the sandbox behaves before any fault is switched on.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Divide the gateways' real notification retry delays by this (1 = the real schedule;
    /// tests use e.g. 10_000 so a day-long curve takes seconds).
    pub time_scale: u32,
    /// How long an asynchronous refund stays `Processing` before it succeeds (divided by
    /// `time_scale` like every other delay).
    pub refund_settle_delay: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            time_scale: 1,
            refund_settle_delay: Duration::from_secs(5),
        }
    }
}

/// A merchant account the sandbox knows: whose requests it accepts and how it charges them.
#[derive(Debug, Clone)]
pub struct SimMerchant {
    pub channel: Channel,
    /// Alipay `app_id`, WeChat Pay `mchid`, UnionPay `merId`.
    pub merchant_id: String,
    /// Verifies the merchant's request signatures.
    pub merchant_public_key: PublicKey,
    /// The contracted fee rate in parts per million of each payment (6000 = 0.6 %).
    pub fee_rate_ppm: u32,
    /// Gateway-specific settings, e.g. WeChat `appid` and `apiv3_key`, the merchant's
    /// certificate serial number. Each [`GatewaySim`] documents the keys it reads.
    pub extra: HashMap<String, String>,
}

/// An order's state at the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimOrderState {
    Created,
    Paid,
    Closed,
}

/// A refund's state at the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimRefundState {
    Processing,
    Succeeded,
}

/// An order as the sandbox holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SimOrder {
    pub channel: Channel,
    pub merchant_id: String,
    pub order_no: String,
    pub amount_fen: i64,
    pub subject: String,
    pub notify_url: String,
    pub return_url: Option<String>,
    pub method: PayMethod,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub state: SimOrderState,
    pub gateway_txn_id: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub refunds: Vec<SimRefund>,
    /// Gateway-specific fields echoed back in answers (e.g. WeChat `appid`, `attach`, `openid`;
    /// UnionPay `txnTime`; Alipay `passback_params`).
    pub extra: HashMap<String, String>,
}

impl SimOrder {
    /// Fen refunded or being refunded so far.
    pub fn refunded_fen(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount_fen).sum()
    }
}

/// A refund as the sandbox holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SimRefund {
    pub refund_no: String,
    pub amount_fen: i64,
    pub reason: String,
    pub state: SimRefundState,
    pub gateway_refund_id: String,
    pub notify_url: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub extra: HashMap<String, String>,
}

/// A payment or a successful refund, as it goes into the settlement file.
#[derive(Debug, Clone, Serialize)]
pub struct SimTxn {
    pub channel: Channel,
    pub merchant_id: String,
    pub kind: RowKind,
    pub order_no: String,
    pub refund_no: Option<String>,
    pub gateway_txn_id: String,
    pub gateway_refund_id: Option<String>,
    /// Positive; `kind` says which way the money went.
    pub amount_fen: i64,
    /// The order's full amount (files show it beside a refund).
    pub order_amount_fen: i64,
    pub subject: String,
    /// The contracted rate at the time (the writer computes the fee in its own precision).
    pub fee_rate_ppm: u32,
    /// A planted fee (see [`FilePlant::ChangeFee`]), in fen, overriding the computed one.
    pub fee_override_fen: Option<i64>,
    /// A planted status text (see [`FilePlant::ChangeStatus`]), overriding the writer's normal one.
    pub status_override: Option<String>,
    pub at: DateTime<Utc>,
    pub extra: HashMap<String, String>,
}

impl SimTxn {
    /// The fee in fen, half-up, at the contracted rate (unless planted). Refunds return the fee
    /// proportionally, so their fee is the negative of the fee on their amount.
    pub fn fee_fen(&self) -> i64 {
        if let Some(f) = self.fee_override_fen {
            return f;
        }
        let fee = fee_half_up(self.amount_fen, self.fee_rate_ppm);
        match self.kind {
            RowKind::Payment => fee,
            RowKind::Refund => -fee,
        }
    }
}

/// `amount_fen × ppm / 10⁶`, rounded half-up to the fen, in integers.
pub fn fee_half_up(amount_fen: i64, ppm: u32) -> i64 {
    let num = amount_fen as i128 * ppm as i128;
    ((num + 500_000) / 1_000_000) as i64
}

/// A difference planted into a settlement file on purpose, for reconciliation tests and the demo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "plant", rename_all = "snake_case")]
pub enum FilePlant {
    /// Leave this order's payment out of the file (we have it, the gateway does not: 短款).
    DropOrder { order_no: String },
    /// Add a payment we never made an order for (the gateway has it, we do not: 长款).
    ExtraPayment { order_no: String, amount_fen: i64 },
    /// State another amount for this order's payment.
    ChangeAmount { order_no: String, amount_fen: i64 },
    /// List this order's payment twice.
    DuplicateOrder { order_no: String },
    /// Charge another fee (fen) on this order's payment.
    ChangeFee { order_no: String, fee_fen: i64 },
    /// Write another status text on this order's payment row (e.g. WeChat `REVOKED`).
    ChangeStatus { order_no: String, status: String },
}

/// Switches that make the sandbox misbehave the ways real gateways do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Send no notifications at all (the merchant must find payments by querying).
    pub drop_notifications: bool,
    /// Send no notifications for these orders.
    pub drop_for_orders: HashSet<String>,
    /// Send each notification this many extra times, concurrently.
    pub duplicate_notifications: u32,
    /// Wait this long (ms, not scaled) before the first delivery of each notification.
    pub delay_notifications_ms: u64,
    /// Hold notifications back until [`Sandbox::release_held_notifications`], which sends them
    /// newest first (a refund's notification before its payment's).
    pub hold_notifications: bool,
    /// Corrupt the signature of every notification sent.
    pub bad_signature: bool,
    /// API requests hang (the client's timeout fires).
    pub api_timeout: bool,
    /// API requests are answered HTTP 503.
    pub api_5xx: bool,
    /// Differences planted into settlement files.
    pub file_plants: Vec<FilePlant>,
}

/// A notification ready to deliver: the exact request a gateway would send.
#[derive(Debug, Clone)]
pub struct OutgoingNotification {
    pub channel: Channel,
    /// The order (and refund) it is about, for delivery records and per-order faults.
    pub order_no: String,
    pub refund_no: Option<String>,
    pub url: String,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Delays between attempts on the gateway's real schedule (before scaling); delivery stops
    /// when acknowledged or when the schedule is exhausted.
    pub schedule: Vec<Duration>,
    /// Whether the merchant's answer (status, body) acknowledges the notification.
    pub acknowledged: fn(u16, &[u8]) -> bool,
}

/// One delivery attempt, for tests and the control API.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub order_no: String,
    pub refund_no: Option<String>,
    pub url: String,
    pub attempt: u32,
    /// None when the request failed (connection refused, timeout).
    pub status: Option<u16>,
    pub acknowledged: bool,
    pub at: DateTime<Utc>,
    pub tampered: bool,
}

/// Why the sandbox refused an operation (the sims map these to their gateway's error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("no merchant {0} is registered for {1}")]
    UnknownMerchant(String, Channel),
    #[error("no order {0}")]
    NoSuchOrder(String),
    #[error("order {0} already exists with other details")]
    DuplicateOrder(String),
    #[error("order {0} is already paid")]
    AlreadyPaid(String),
    #[error("order {0} is closed")]
    Closed(String),
    #[error("order {0} has expired")]
    Expired(String),
    #[error("order {0} is not paid")]
    NotPaid(String),
    #[error("refund of {requested} fen exceeds the {remaining} fen still refundable")]
    RefundTooLarge { requested: i64, remaining: i64 },
    #[error("refund {0} already exists with another amount")]
    RefundConflict(String),
    #[error("no refund {0}")]
    NoSuchRefund(String),
}

/// One gateway's server side, plugged into the core.
pub trait GatewaySim: Send + Sync + 'static {
    fn channel(&self) -> Channel;
    /// Its HTTP routes, with their full paths (e.g. `/alipay/gateway.do`,
    /// `/wechatpay/v3/pay/transactions/native`, `/unionpay/gateway/api/backTransReq.do`).
    fn routes(&self) -> Router<Sandbox>;
    /// A new gateway transaction id in the gateway's format (Alipay 28 digits, WeChat 28 digits
    /// starting `42`, UnionPay 21 characters).
    fn new_txn_id(&self, sandbox: &Sandbox, order: &SimOrder) -> String;
    /// A new gateway refund id in the gateway's format.
    fn new_refund_id(&self, sandbox: &Sandbox, order: &SimOrder) -> String;
    /// The signed notification for a paid order (None if the gateway sends none for it).
    fn payment_notification(
        &self,
        sandbox: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
    ) -> Option<OutgoingNotification>;
    /// The signed notification for a completed refund (None if the gateway sends none).
    fn refund_notification(
        &self,
        sandbox: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
        refund: &SimRefund,
    ) -> Option<OutgoingNotification>;
    /// Corrupt the notification's signature where this gateway carries it (for
    /// [`Faults::bad_signature`]).
    fn tamper(&self, notification: &mut OutgoingNotification);
    /// Called before every delivery attempt. A gateway that signs each attempt afresh (WeChat Pay:
    /// its merchants refuse a `Wechatpay-Timestamp` older than five minutes, so a retry hours
    /// later carries a new timestamp and signature) updates the notification and returns true;
    /// the core then re-applies [`GatewaySim::tamper`] if the bad-signature fault was on.
    /// Default: nothing to refresh.
    fn refresh_notification(&self, _sandbox: &Sandbox, _notification: &mut OutgoingNotification) -> bool {
        false
    }
    /// The day's settlement file for a merchant, in the gateway's real format (the bytes its
    /// download answers with), from the day's transactions (plants already applied).
    fn settlement_file(&self, sandbox: &Sandbox, merchant: &SimMerchant, day: NaiveDate, txns: &[SimTxn]) -> Vec<u8>;
    /// The settlement day a transaction at `at` belongs to. Default: its China Standard Time
    /// calendar day. (UnionPay's clearing day runs 23:00 → 23:00, so it overrides this.)
    fn settlement_day(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&cst()).date_naive()
    }
}

struct Inner {
    config: SandboxConfig,
    base_url: RwLock<String>,
    clock_offset: RwLock<chrono::Duration>,
    merchants: RwLock<HashMap<(Channel, String), SimMerchant>>,
    orders: Mutex<HashMap<(Channel, String, String), SimOrder>>,
    txns: Mutex<Vec<SimTxn>>,
    faults: Mutex<Faults>,
    held: Mutex<Vec<OutgoingNotification>>,
    deliveries: Mutex<Vec<DeliveryRecord>>,
    sims: RwLock<HashMap<Channel, Arc<dyn GatewaySim>>>,
    http: reqwest::Client,
    seq: AtomicU64,
}

/// The sandbox. Cheap to clone; every clone is the same sandbox.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("base_url", &self.base_url()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sandbox {
    /// A sandbox with no gateways plugged in yet (add them with [`Sandbox::with_sim`]).
    pub fn new(config: SandboxConfig) -> Sandbox {
        Sandbox {
            inner: Arc::new(Inner {
                config,
                base_url: RwLock::new("http://127.0.0.1".into()),
                clock_offset: RwLock::new(chrono::Duration::zero()),
                merchants: RwLock::new(HashMap::new()),
                orders: Mutex::new(HashMap::new()),
                txns: Mutex::new(Vec::new()),
                faults: Mutex::new(Faults::default()),
                held: Mutex::new(Vec::new()),
                deliveries: Mutex::new(Vec::new()),
                sims: RwLock::new(HashMap::new()),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("an HTTP client builds"),
                seq: AtomicU64::new(1),
            }),
        }
    }

    /// Plug in a gateway.
    pub fn with_sim(self, sim: impl GatewaySim) -> Sandbox {
        self.inner
            .sims
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sim.channel(), Arc::new(sim));
        self
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    fn sim(&self, channel: Channel) -> Option<Arc<dyn GatewaySim>> {
        self.inner
            .sims
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&channel)
            .cloned()
    }

    /// The URL the sandbox is reached at (set once it is bound).
    pub fn base_url(&self) -> String {
        self.inner.base_url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_base_url(&self, url: impl Into<String>) {
        *self.inner.base_url.write().unwrap_or_else(|e| e.into_inner()) = url.into().trim_end_matches('/').to_string();
    }

    /// The sandbox's clock: real time plus the offset set by [`Sandbox::advance_clock`].
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.inner.clock_offset.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Move the sandbox's clock forward (or back, with a negative duration).
    pub fn advance_clock(&self, by: chrono::Duration) {
        *self.inner.clock_offset.write().unwrap_or_else(|e| e.into_inner()) += by;
    }

    /// A process-unique sequence number (for ids).
    pub fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Scale a real-gateway delay by the configured time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        d / self.inner.config.time_scale.max(1)
    }

    // --- merchants ---------------------------------------------------------------------------

    pub fn register_merchant(&self, merchant: SimMerchant) {
        self.inner
            .merchants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((merchant.channel, merchant.merchant_id.clone()), merchant);
    }

    pub fn merchant(&self, channel: Channel, merchant_id: &str) -> Result<SimMerchant, SimError> {
        self.inner
            .merchants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(channel, merchant_id.to_string()))
            .cloned()
            .ok_or_else(|| SimError::UnknownMerchant(merchant_id.to_string(), channel))
    }

    pub fn merchants(&self) -> Vec<SimMerchant> {
        let mut v: Vec<SimMerchant> = self
            .inner
            .merchants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.channel, &a.merchant_id).cmp(&(b.channel, &b.merchant_id)));
        v
    }

    // --- faults ------------------------------------------------------------------------------

    pub fn faults(&self) -> Faults {
        lock(&self.inner.faults).clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    /// Change some switches, keeping the rest.
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut lock(&self.inner.faults));
    }

    /// The API fault to answer with, if one is switched on. Every sim's API handler calls this
    /// first: `if let Some(r) = sandbox.injected_api_fault().await { return r; }`.
    pub async fn injected_api_fault(&self) -> Option<Response> {
        let (timeout, fail) = {
            let f = lock(&self.inner.faults);
            (f.api_timeout, f.api_5xx)
        };
        if timeout {
            // Longer than any client timeout; the client gives up first.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if fail {
            return Some(
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "sandbox: injected 503 (faults.api_5xx)",
                )
                    .into_response(),
            );
        }
        None
    }

    // --- orders ------------------------------------------------------------------------------

    /// Record a new order. The same order again with the same amount is fine (the gateways
    /// accept a repeated create); with another amount it is refused.
    pub fn create_order(&self, order: SimOrder) -> Result<SimOrder, SimError> {
        self.merchant(order.channel, &order.merchant_id)?;
        let key = (order.channel, order.merchant_id.clone(), order.order_no.clone());
        let mut orders = lock(&self.inner.orders);
        if let Some(existing) = orders.get(&key) {
            if existing.amount_fen != order.amount_fen {
                return Err(SimError::DuplicateOrder(order.order_no));
            }
            return match existing.state {
                SimOrderState::Created => Ok(existing.clone()),
                SimOrderState::Paid => Err(SimError::AlreadyPaid(order.order_no)),
                SimOrderState::Closed => Err(SimError::Closed(order.order_no)),
            };
        }
        orders.insert(key, order.clone());
        Ok(order)
    }

    pub fn order(&self, channel: Channel, merchant_id: &str, order_no: &str) -> Option<SimOrder> {
        lock(&self.inner.orders)
            .get(&(channel, merchant_id.to_string(), order_no.to_string()))
            .cloned()
    }

    /// Every order, newest first.
    pub fn orders(&self) -> Vec<SimOrder> {
        let mut v: Vec<SimOrder> = lock(&self.inner.orders).values().cloned().collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.order_no.cmp(&a.order_no)));
        v
    }

    /// Change gateway-specific fields of an order (e.g. a sim recording an openid).
    pub fn update_order_extra(
        &self,
        channel: Channel,
        merchant_id: &str,
        order_no: &str,
        f: impl FnOnce(&mut HashMap<String, String>),
    ) -> Result<(), SimError> {
        let mut orders = lock(&self.inner.orders);
        let o = orders
            .get_mut(&(channel, merchant_id.to_string(), order_no.to_string()))
            .ok_or_else(|| SimError::NoSuchOrder(order_no.to_string()))?;
        f(&mut o.extra);
        Ok(())
    }

    /// The payer pays (the wallet's Pay button, or a test): the order becomes paid, its
    /// transaction is recorded for the day's file, and its notification is sent.
    pub fn pay(&self, channel: Channel, merchant_id: &str, order_no: &str) -> Result<SimOrder, SimError> {
        let merchant = self.merchant(channel, merchant_id)?;
        let sim = self
            .sim(channel)
            .ok_or(SimError::UnknownMerchant(merchant_id.to_string(), channel))?;
        let now = self.now();
        let paid = {
            let mut orders = lock(&self.inner.orders);
            let o = orders
                .get_mut(&(channel, merchant_id.to_string(), order_no.to_string()))
                .ok_or_else(|| SimError::NoSuchOrder(order_no.to_string()))?;
            match o.state {
                SimOrderState::Paid => return Err(SimError::AlreadyPaid(order_no.to_string())),
                SimOrderState::Closed => return Err(SimError::Closed(order_no.to_string())),
                SimOrderState::Created => {}
            }
            if o.expires_at.is_some_and(|e| e < now) {
                return Err(SimError::Expired(order_no.to_string()));
            }
            let txn_id = sim.new_txn_id(self, o);
            o.state = SimOrderState::Paid;
            o.gateway_txn_id = Some(txn_id);
            o.paid_at = Some(now);
            o.clone()
        };
        lock(&self.inner.txns).push(SimTxn {
            channel,
            merchant_id: merchant_id.to_string(),
            kind: RowKind::Payment,
            order_no: paid.order_no.clone(),
            refund_no: None,
            gateway_txn_id: paid.gateway_txn_id.clone().unwrap_or_default(),
            gateway_refund_id: None,
            amount_fen: paid.amount_fen,
            order_amount_fen: paid.amount_fen,
            subject: paid.subject.clone(),
            fee_rate_ppm: merchant.fee_rate_ppm,
            fee_override_fen: None,
            status_override: None,
            at: now,
            extra: paid.extra.clone(),
        });
        if let Some(n) = sim.payment_notification(self, &merchant, &paid) {
            self.send_notification(n);
        }
        Ok(paid)
    }

    /// Close an unpaid order.
    pub fn close(&self, channel: Channel, merchant_id: &str, order_no: &str) -> Result<SimOrder, SimError> {
        let mut orders = lock(&self.inner.orders);
        let o = orders
            .get_mut(&(channel, merchant_id.to_string(), order_no.to_string()))
            .ok_or_else(|| SimError::NoSuchOrder(order_no.to_string()))?;
        match o.state {
            SimOrderState::Paid => Err(SimError::AlreadyPaid(order_no.to_string())),
            SimOrderState::Closed | SimOrderState::Created => {
                o.state = SimOrderState::Closed;
                Ok(o.clone())
            }
        }
    }

    /// Start a refund. The same refund number with the same amount returns the existing refund
    /// (gateways treat it as a retry); with another amount it is refused. With `complete_now`
    /// the refund succeeds at once (Alipay's synchronous refunds); otherwise it stays
    /// `Processing` for [`SandboxConfig::refund_settle_delay`] (scaled), then succeeds and its
    /// notification is sent (WeChat Pay, UnionPay).
    #[allow(clippy::too_many_arguments)]
    pub fn refund(
        &self,
        channel: Channel,
        merchant_id: &str,
        order_no: &str,
        refund_no: &str,
        amount_fen: i64,
        reason: &str,
        notify_url: Option<String>,
        complete_now: bool,
    ) -> Result<SimRefund, SimError> {
        let sim = self
            .sim(channel)
            .ok_or(SimError::UnknownMerchant(merchant_id.to_string(), channel))?;
        let now = self.now();
        let refund = {
            let mut orders = lock(&self.inner.orders);
            let o = orders
                .get_mut(&(channel, merchant_id.to_string(), order_no.to_string()))
                .ok_or_else(|| SimError::NoSuchOrder(order_no.to_string()))?;
            if let Some(r) = o.refunds.iter().find(|r| r.refund_no == refund_no) {
                return if r.amount_fen == amount_fen {
                    Ok(r.clone())
                } else {
                    Err(SimError::RefundConflict(refund_no.to_string()))
                };
            }
            if o.state != SimOrderState::Paid {
                return Err(SimError::NotPaid(order_no.to_string()));
            }
            let remaining = o.amount_fen - o.refunded_fen();
            if amount_fen <= 0 || amount_fen > remaining {
                return Err(SimError::RefundTooLarge {
                    requested: amount_fen,
                    remaining,
                });
            }
            let r = SimRefund {
                refund_no: refund_no.to_string(),
                amount_fen,
                reason: reason.to_string(),
                state: SimRefundState::Processing,
                gateway_refund_id: sim.new_refund_id(self, o),
                notify_url,
                requested_at: now,
                refunded_at: None,
                extra: HashMap::new(),
            };
            o.refunds.push(r.clone());
            r
        };
        if complete_now {
            return self.complete_refund(channel, merchant_id, order_no, refund_no);
        }
        let me = self.clone();
        let (merchant_id, order_no, refund_no) = (merchant_id.to_string(), order_no.to_string(), refund_no.to_string());
        let delay = self.scaled(self.inner.config.refund_settle_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = me.complete_refund(channel, &merchant_id, &order_no, &refund_no) {
                tracing::warn!(error = %e, "sandbox: completing a refund failed");
            }
        });
        Ok(refund)
    }

    /// A processing refund succeeds: it is recorded for the day's file and its notification sent.
    /// Completing a refund twice changes nothing.
    pub fn complete_refund(
        &self,
        channel: Channel,
        merchant_id: &str,
        order_no: &str,
        refund_no: &str,
    ) -> Result<SimRefund, SimError> {
        let merchant = self.merchant(channel, merchant_id)?;
        let sim = self
            .sim(channel)
            .ok_or(SimError::UnknownMerchant(merchant_id.to_string(), channel))?;
        let now = self.now();
        let (order, refund) = {
            let mut orders = lock(&self.inner.orders);
            let o = orders
                .get_mut(&(channel, merchant_id.to_string(), order_no.to_string()))
                .ok_or_else(|| SimError::NoSuchOrder(order_no.to_string()))?;
            let r = o
                .refunds
                .iter_mut()
                .find(|r| r.refund_no == refund_no)
                .ok_or_else(|| SimError::NoSuchRefund(refund_no.to_string()))?;
            if r.state == SimRefundState::Succeeded {
                return Ok(r.clone());
            }
            r.state = SimRefundState::Succeeded;
            r.refunded_at = Some(now);
            let r = r.clone();
            (o.clone(), r)
        };
        lock(&self.inner.txns).push(SimTxn {
            channel,
            merchant_id: merchant_id.to_string(),
            kind: RowKind::Refund,
            order_no: order.order_no.clone(),
            refund_no: Some(refund.refund_no.clone()),
            gateway_txn_id: order.gateway_txn_id.clone().unwrap_or_default(),
            gateway_refund_id: Some(refund.gateway_refund_id.clone()),
            amount_fen: refund.amount_fen,
            order_amount_fen: order.amount_fen,
            subject: order.subject.clone(),
            fee_rate_ppm: merchant.fee_rate_ppm,
            fee_override_fen: None,
            status_override: None,
            at: now,
            extra: order.extra.clone(),
        });
        if let Some(n) = sim.refund_notification(self, &merchant, &order, &refund) {
            self.send_notification(n);
        }
        Ok(refund)
    }

    // --- notifications -----------------------------------------------------------------------

    /// Deliver a notification, honouring the faults: dropped, held, delayed, duplicated or
    /// tampered as switched; otherwise retried on its schedule (scaled) until acknowledged.
    pub fn send_notification(&self, mut n: OutgoingNotification) {
        let faults = self.faults();
        if faults.drop_notifications || faults.drop_for_orders.contains(&n.order_no) {
            tracing::info!(order_no = %n.order_no, "sandbox: notification dropped (fault)");
            return;
        }
        let tampered = faults.bad_signature;
        if tampered {
            if let Some(sim) = self.sim(n.channel) {
                sim.tamper(&mut n);
            }
        }
        if faults.hold_notifications {
            lock(&self.inner.held).push(n);
            return;
        }
        let copies = 1 + faults.duplicate_notifications;
        let delay = Duration::from_millis(faults.delay_notifications_ms);
        for _ in 0..copies {
            let me = self.clone();
            let n = n.clone();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                me.deliver(n, tampered).await;
            });
        }
    }

    /// Send the held notifications, newest first (see [`Faults::hold_notifications`]).
    pub fn release_held_notifications(&self) -> usize {
        let mut held: Vec<OutgoingNotification> = std::mem::take(&mut *lock(&self.inner.held));
        held.reverse();
        let n = held.len();
        let tampered = self.faults().bad_signature;
        let me = self.clone();
        tokio::spawn(async move {
            for h in held {
                me.deliver(h, tampered).await;
            }
        });
        n
    }

    async fn deliver(&self, mut n: OutgoingNotification, tampered: bool) {
        let delays: Vec<Duration> = std::iter::once(Duration::ZERO)
            .chain(n.schedule.iter().copied())
            .collect();
        for (i, d) in delays.into_iter().enumerate() {
            if !d.is_zero() {
                tokio::time::sleep(self.scaled(d)).await;
            }
            if let Some(sim) = self.sim(n.channel) {
                if sim.refresh_notification(self, &mut n) && tampered {
                    sim.tamper(&mut n);
                }
            }
            let attempt = i as u32 + 1;
            let mut req = self
                .inner
                .http
                .post(&n.url)
                .header("content-type", &n.content_type)
                .body(n.body.clone());
            for (k, v) in &n.headers {
                req = req.header(k, v);
            }
            let (status, acked) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.bytes().await.unwrap_or_default();
                    (Some(status), (n.acknowledged)(status, &body))
                }
                Err(_) => (None, false),
            };
            lock(&self.inner.deliveries).push(DeliveryRecord {
                order_no: n.order_no.clone(),
                refund_no: n.refund_no.clone(),
                url: n.url.clone(),
                attempt,
                status,
                acknowledged: acked,
                at: self.now(),
                tampered,
            });
            if acked {
                return;
            }
        }
    }

    /// Every delivery attempt so far, in order.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.inner.deliveries).clone()
    }

    // --- settlement files --------------------------------------------------------------------

    /// The day's transactions for a merchant (its settlement day: the China Standard Time day
    /// unless the gateway's sim says otherwise, see [`GatewaySim::settlement_day`]), with the planted
    /// differences applied, in time order.
    pub fn day_transactions(&self, channel: Channel, merchant_id: &str, day: NaiveDate) -> Vec<SimTxn> {
        let sim = self.sim(channel);
        let day_of = |at: DateTime<Utc>| match &sim {
            Some(s) => s.settlement_day(at),
            None => at.with_timezone(&cst()).date_naive(),
        };
        let mut txns: Vec<SimTxn> = lock(&self.inner.txns)
            .iter()
            .filter(|t| t.channel == channel && t.merchant_id == merchant_id && day_of(t.at) == day)
            .cloned()
            .collect();
        txns.sort_by_key(|t| t.at);
        for plant in &self.faults().file_plants {
            apply_plant(&mut txns, plant, channel, merchant_id, day, self);
        }
        txns
    }

    /// The day's settlement file in the gateway's format.
    pub fn settlement_file(&self, channel: Channel, merchant_id: &str, day: NaiveDate) -> Result<Vec<u8>, SimError> {
        let merchant = self.merchant(channel, merchant_id)?;
        let sim = self
            .sim(channel)
            .ok_or(SimError::UnknownMerchant(merchant_id.to_string(), channel))?;
        let txns = self.day_transactions(channel, merchant_id, day);
        Ok(sim.settlement_file(self, &merchant, day, &txns))
    }

    // --- serving -----------------------------------------------------------------------------

    /// Every route: each gateway's, the wallet page and the control API.
    pub fn router(&self) -> Router {
        let mut r: Router<Sandbox> = Router::new().merge(wallet::routes());
        let sims: Vec<Arc<dyn GatewaySim>> = self
            .inner
            .sims
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for sim in sims {
            r = r.merge(sim.routes());
        }
        r.with_state(self.clone())
    }

    /// Serve on `listener` (records the base URL from its address) until the task is dropped.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        if let Ok(addr) = listener.local_addr() {
            self.set_base_url(format!("http://{addr}"));
        }
        let app = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        })
    }
}

fn apply_plant(
    txns: &mut Vec<SimTxn>,
    plant: &FilePlant,
    channel: Channel,
    merchant_id: &str,
    day: NaiveDate,
    sb: &Sandbox,
) {
    let is_payment_of = |t: &SimTxn, no: &str| t.kind == RowKind::Payment && t.order_no == no;
    match plant {
        FilePlant::DropOrder { order_no } => txns.retain(|t| !is_payment_of(t, order_no)),
        FilePlant::ExtraPayment { order_no, amount_fen } => {
            // Into whichever day's file is written while the plant is set.
            if !txns.iter().any(|t| is_payment_of(t, order_no)) {
                let at = day
                    .and_hms_opt(12, 0, 0)
                    .and_then(|d| d.and_local_timezone(cst()).single())
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_else(Utc::now);
                let merchant_fee = sb.merchant(channel, merchant_id).map(|m| m.fee_rate_ppm).unwrap_or(0);
                txns.push(SimTxn {
                    channel,
                    merchant_id: merchant_id.to_string(),
                    kind: RowKind::Payment,
                    order_no: order_no.clone(),
                    refund_no: None,
                    gateway_txn_id: format!("9{:027}", sb.next_seq()),
                    gateway_refund_id: None,
                    amount_fen: *amount_fen,
                    order_amount_fen: *amount_fen,
                    subject: "planted".into(),
                    fee_rate_ppm: merchant_fee,
                    fee_override_fen: None,
                    status_override: None,
                    at,
                    extra: HashMap::new(),
                });
                txns.sort_by_key(|t| t.at);
            }
        }
        FilePlant::ChangeAmount { order_no, amount_fen } => {
            for t in txns.iter_mut().filter(|t| is_payment_of(t, order_no)) {
                t.amount_fen = *amount_fen;
                t.order_amount_fen = *amount_fen;
            }
        }
        FilePlant::DuplicateOrder { order_no } => {
            if let Some(pos) = txns.iter().position(|t| is_payment_of(t, order_no)) {
                let dup = txns[pos].clone();
                txns.insert(pos + 1, dup);
            }
        }
        FilePlant::ChangeFee { order_no, fee_fen } => {
            for t in txns.iter_mut().filter(|t| is_payment_of(t, order_no)) {
                t.fee_override_fen = Some(*fee_fen);
            }
        }
        FilePlant::ChangeStatus { order_no, status } => {
            for t in txns.iter_mut().filter(|t| is_payment_of(t, order_no)) {
                t.status_override = Some(status.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_round_half_up_in_integers() {
        assert_eq!(fee_half_up(10_000, 6000), 60, "0.6 % of 100.00 yuan");
        assert_eq!(fee_half_up(250, 6000), 2, "1.5 fen rounds up");
        assert_eq!(fee_half_up(249, 6000), 1, "1.494 fen rounds down");
        assert_eq!(fee_half_up(1, 6000), 0);
        assert_eq!(fee_half_up(0, 6000), 0);
    }
}

/// The core exercised through a minimal gateway that signs nothing: what every real sim relies on.
#[cfg(test)]
mod core_tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::crypto::load_public_key;

    struct PlainSim;

    impl GatewaySim for PlainSim {
        fn channel(&self) -> Channel {
            Channel::Alipay
        }
        fn routes(&self) -> Router<Sandbox> {
            Router::new()
        }
        fn new_txn_id(&self, sb: &Sandbox, _o: &SimOrder) -> String {
            format!("T{:027}", sb.next_seq())
        }
        fn new_refund_id(&self, sb: &Sandbox, _o: &SimOrder) -> String {
            format!("R{:027}", sb.next_seq())
        }
        fn payment_notification(&self, _sb: &Sandbox, _m: &SimMerchant, o: &SimOrder) -> Option<OutgoingNotification> {
            Some(OutgoingNotification {
                channel: Channel::Alipay,
                order_no: o.order_no.clone(),
                refund_no: None,
                url: o.notify_url.clone(),
                content_type: "text/plain".into(),
                headers: vec![("x-sig".into(), "good".into())],
                body: format!("paid {}", o.order_no).into_bytes(),
                schedule: vec![Duration::from_secs(240), Duration::from_secs(600)],
                acknowledged: |status, body| status == 200 && body == b"success",
            })
        }
        fn refund_notification(
            &self,
            _sb: &Sandbox,
            _m: &SimMerchant,
            _o: &SimOrder,
            _r: &SimRefund,
        ) -> Option<OutgoingNotification> {
            None
        }
        fn tamper(&self, n: &mut OutgoingNotification) {
            n.headers = vec![("x-sig".into(), "bad".into())];
        }
        fn settlement_file(&self, _sb: &Sandbox, _m: &SimMerchant, _d: NaiveDate, txns: &[SimTxn]) -> Vec<u8> {
            txns.iter()
                .map(|t| format!("{},{},{}\n", t.order_no, t.amount_fen, t.fee_fen()))
                .collect::<String>()
                .into_bytes()
        }
    }

    fn key() -> PublicKey {
        // Any RSA public key will do: the plain sim verifies nothing.
        let pem = include_str!("../../../fixtures/sandbox/core-test-public.pem");
        load_public_key(pem.as_bytes()).expect("a test key")
    }

    fn sandbox(scale: u32) -> Sandbox {
        let sb = Sandbox::new(SandboxConfig {
            time_scale: scale,
            refund_settle_delay: Duration::from_millis(10),
        })
        .with_sim(PlainSim);
        sb.register_merchant(SimMerchant {
            channel: Channel::Alipay,
            merchant_id: "M1".into(),
            merchant_public_key: key(),
            fee_rate_ppm: 6000,
            extra: HashMap::new(),
        });
        sb
    }

    fn order(no: &str, amount: i64, notify_url: &str) -> SimOrder {
        SimOrder {
            channel: Channel::Alipay,
            merchant_id: "M1".into(),
            order_no: no.into(),
            amount_fen: amount,
            subject: "test".into(),
            notify_url: notify_url.into(),
            return_url: None,
            method: PayMethod::Qr,
            created_at: Utc::now(),
            expires_at: None,
            state: SimOrderState::Created,
            gateway_txn_id: None,
            paid_at: None,
            refunds: vec![],
            extra: HashMap::new(),
        }
    }

    /// A merchant endpoint that refuses the first `refuse` deliveries, then acknowledges.
    async fn receiver(refuse: u32) -> (String, Arc<AtomicU32>, Arc<Mutex<Vec<String>>>) {
        let hits = Arc::new(AtomicU32::new(0));
        let sigs = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), sigs.clone());
        let app = Router::new().route(
            "/notify",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let (h, s) = (h.clone(), s.clone());
                async move {
                    let n = h.fetch_add(1, Ordering::SeqCst);
                    lock(&s).push(
                        headers
                            .get("x-sig")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string(),
                    );
                    if n < refuse {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "fail")
                    } else {
                        (axum::http::StatusCode::OK, "success")
                    }
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (url, hits, sigs)
    }

    async fn wait_for(mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 5 s");
    }

    #[tokio::test]
    async fn a_refused_notification_is_retried_on_the_schedule_until_acknowledged() {
        let sb = sandbox(100_000);
        let (url, hits, _) = receiver(2).await;
        sb.create_order(order("ORDER0001", 1000, &url)).unwrap();
        sb.pay(Channel::Alipay, "M1", "ORDER0001").unwrap();
        wait_for(|| sb.deliveries().iter().any(|d| d.acknowledged)).await;
        let d = sb.deliveries();
        assert_eq!(d.len(), 3, "two refusals, then the acknowledged third attempt: {d:?}");
        assert_eq!(d.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn delivery_stops_when_the_schedule_is_exhausted() {
        let sb = sandbox(100_000);
        let (url, hits, _) = receiver(u32::MAX).await;
        sb.create_order(order("ORDER0002", 1000, &url)).unwrap();
        sb.pay(Channel::Alipay, "M1", "ORDER0002").unwrap();
        wait_for(|| sb.deliveries().len() == 3).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            hits.load(Ordering::SeqCst),
            3,
            "first attempt plus the schedule's two retries, no more"
        );
        assert!(sb.deliveries().iter().all(|d| !d.acknowledged));
    }

    #[tokio::test]
    async fn faults_drop_duplicate_tamper_and_hold_notifications() {
        let sb = sandbox(100_000);
        let (url, hits, sigs) = receiver(0).await;
        sb.update_faults(|f| {
            f.drop_for_orders.insert("ORDER0003".into());
        });
        sb.create_order(order("ORDER0003", 100, &url)).unwrap();
        sb.pay(Channel::Alipay, "M1", "ORDER0003").unwrap();

        sb.set_faults(Faults {
            duplicate_notifications: 2,
            bad_signature: true,
            ..Faults::default()
        });
        sb.create_order(order("ORDER0004", 100, &url)).unwrap();
        sb.pay(Channel::Alipay, "M1", "ORDER0004").unwrap();
        wait_for(|| hits.load(Ordering::SeqCst) == 3).await;
        assert!(lock(&sigs).iter().all(|s| s == "bad"), "every copy tampered");
        assert!(
            sb.deliveries().iter().all(|d| d.order_no == "ORDER0004"),
            "ORDER0003's was dropped"
        );

        sb.set_faults(Faults {
            hold_notifications: true,
            ..Faults::default()
        });
        sb.create_order(order("ORDER0005", 100, &url)).unwrap();
        sb.create_order(order("ORDER0006", 100, &url)).unwrap();
        sb.pay(Channel::Alipay, "M1", "ORDER0005").unwrap();
        sb.pay(Channel::Alipay, "M1", "ORDER0006").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hits.load(Ordering::SeqCst), 3, "held, not sent");
        assert_eq!(sb.release_held_notifications(), 2);
        wait_for(|| hits.load(Ordering::SeqCst) == 5).await;
        let order: Vec<String> = sb.deliveries().iter().skip(3).map(|d| d.order_no.clone()).collect();
        assert_eq!(order, vec!["ORDER0006", "ORDER0005"], "released newest first");
    }

    #[tokio::test]
    async fn orders_move_only_forward_and_refunds_never_exceed_the_payment() {
        let sb = sandbox(100_000);
        sb.set_faults(Faults {
            drop_notifications: true,
            ..Faults::default()
        });
        sb.create_order(order("ORDER0007", 1000, "http://127.0.0.1:9/none"))
            .unwrap();
        assert_eq!(
            sb.create_order(order("ORDER0007", 999, "http://127.0.0.1:9/none"))
                .unwrap_err(),
            SimError::DuplicateOrder("ORDER0007".into())
        );
        assert!(matches!(
            sb.refund(Channel::Alipay, "M1", "ORDER0007", "REFUND001", 100, "r", None, true),
            Err(SimError::NotPaid(_))
        ));
        sb.pay(Channel::Alipay, "M1", "ORDER0007").unwrap();
        assert_eq!(
            sb.pay(Channel::Alipay, "M1", "ORDER0007").unwrap_err(),
            SimError::AlreadyPaid("ORDER0007".into())
        );
        assert_eq!(
            sb.close(Channel::Alipay, "M1", "ORDER0007").unwrap_err(),
            SimError::AlreadyPaid("ORDER0007".into())
        );
        let r = sb
            .refund(Channel::Alipay, "M1", "ORDER0007", "REFUND001", 600, "r", None, true)
            .unwrap();
        assert_eq!(r.state, SimRefundState::Succeeded);
        let again = sb
            .refund(Channel::Alipay, "M1", "ORDER0007", "REFUND001", 600, "r", None, true)
            .unwrap();
        assert_eq!(
            again.gateway_refund_id, r.gateway_refund_id,
            "a retried refund is the same refund"
        );
        assert_eq!(
            sb.refund(Channel::Alipay, "M1", "ORDER0007", "REFUND002", 401, "r", None, true)
                .unwrap_err(),
            SimError::RefundTooLarge {
                requested: 401,
                remaining: 400
            }
        );
        let slow = sb
            .refund(Channel::Alipay, "M1", "ORDER0007", "REFUND003", 400, "r", None, false)
            .unwrap();
        assert_eq!(slow.state, SimRefundState::Processing);
        wait_for(|| {
            sb.order(Channel::Alipay, "M1", "ORDER0007")
                .unwrap()
                .refunds
                .iter()
                .all(|r| r.state == SimRefundState::Succeeded)
        })
        .await;
    }

    #[tokio::test]
    async fn the_days_file_holds_each_transaction_once_with_plants_applied() {
        let sb = sandbox(100_000);
        sb.set_faults(Faults {
            drop_notifications: true,
            ..Faults::default()
        });
        for (no, amt) in [("ORDERA001", 10_000), ("ORDERA002", 250), ("ORDERA003", 500)] {
            sb.create_order(order(no, amt, "http://127.0.0.1:9/none")).unwrap();
            sb.pay(Channel::Alipay, "M1", no).unwrap();
        }
        sb.refund(Channel::Alipay, "M1", "ORDERA001", "REFUNDA01", 5000, "r", None, true)
            .unwrap();
        let today = sb.now().with_timezone(&cst()).date_naive();
        let file = String::from_utf8(sb.settlement_file(Channel::Alipay, "M1", today).unwrap()).unwrap();
        assert_eq!(
            file,
            "ORDERA001,10000,60\nORDERA002,250,2\nORDERA003,500,3\nORDERA001,5000,-30\n"
        );

        sb.update_faults(|f| {
            f.file_plants = vec![
                FilePlant::DropOrder {
                    order_no: "ORDERA002".into(),
                },
                FilePlant::DuplicateOrder {
                    order_no: "ORDERA003".into(),
                },
                FilePlant::ChangeAmount {
                    order_no: "ORDERA001".into(),
                    amount_fen: 9_999,
                },
                FilePlant::ChangeFee {
                    order_no: "ORDERA003".into(),
                    fee_fen: 7,
                },
                FilePlant::ExtraPayment {
                    order_no: "GHOST0001".into(),
                    amount_fen: 123,
                },
            ]
        });
        let planted = String::from_utf8(sb.settlement_file(Channel::Alipay, "M1", today).unwrap()).unwrap();
        let lines: Vec<&str> = planted.lines().collect();
        assert!(lines.contains(&"ORDERA001,9999,60"), "{planted}");
        assert!(!planted.contains("ORDERA002"), "{planted}");
        assert_eq!(
            lines.iter().filter(|l| **l == "ORDERA003,500,7").count(),
            2,
            "{planted}"
        );
        assert!(lines.contains(&"GHOST0001,123,1"), "{planted}");
        let other_day = today.pred_opt().unwrap();
        assert!(
            !String::from_utf8(sb.settlement_file(Channel::Alipay, "M1", other_day).unwrap())
                .unwrap()
                .contains("ORDERA"),
            "yesterday's file holds none of today's transactions"
        );
    }
}
