//! [`Payments`]: orders, callbacks, active queries, expiry and refunds over the store and the
//! merchant registry; it implements [`PaymentsPort`] for the later steps.
//!
//! Callbacks (design.md §3 "Payments"), in small steps: find the merchant the URL names → verify
//! over the exact bytes (an unknown WeChat Pay serial refreshes the platform certificates once)
//! → check the merchant and the amount against the order and, in one transaction, store the raw
//! event (unique per gateway event), mark the order paid, settle the bills, post the journal
//! entry and write the receipt ([`Store::apply_payment`]) → answer in the gateway's form, and
//! only `accepted` once that transaction committed. An unverifiable callback is logged with its
//! reason, answered as a failure, and the order it names (if it names one of ours) is queried at
//! the gateway instead: the gateway is the truth, never an unverified body.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use meterpay_gateways::gateway::{
    Ack, Channel, CloseOutcome, CreateOrder, GatewayError, IncomingNotification, NotificationEvent, NotifyError,
    OrderRef, PayMethod, PayerAction, PaymentGateway, RefundRef, RefundRequest,
};
use meterpay_gateways::outcome::{ErrorClass, PaymentState, RefundState};
use serde::{Deserialize, Serialize};

use super::merchants::{Merchant, MerchantRegistry};
use super::port::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
use crate::config::Config;
use crate::domain::Fen;
use crate::store::payments::{
    ApplyPayment, ApplyRefund, EventRecord, NewOrder, OrderRow, PaymentApplied, RefundApplied, RefundRow,
};
use crate::store::{Store, StoreError};

/// Why a payments operation was refused; each variant says what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with what exists (a live order on the bill, an order already paid).
    #[error("{0}")]
    Conflict(String),
    /// Refused by a rule (nothing open to pay, no merchant, the gateway refused).
    #[error("{0}")]
    Refused(String),
    /// The gateway could not be reached or did not answer usably: try again later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for PaymentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(w) => PaymentError::NotFound(format!("{w} not found")),
            StoreError::Refused { .. } => PaymentError::Refused(e.to_string()),
            StoreError::Duplicate { .. } => PaymentError::Conflict(e.to_string()),
            other => PaymentError::Unexpected(anyhow::Error::new(other)),
        }
    }
}

/// What to do when a bill already has a live order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfLive {
    /// Answer with the live order when it is the same request (same bills, channel and
    /// method); otherwise refuse (409) and say which order holds the bill.
    #[default]
    Reuse,
    /// Close the live order at the gateway, then here (recording which order superseded it),
    /// and create a new one.
    Supersede,
}

/// `POST /api/v1/payments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub account_id: i64,
    /// The open bills to pay; empty for a prepaid top-up.
    #[serde(default)]
    pub bill_ids: Vec<i64>,
    /// A prepaid top-up's amount in yuan (`"100.00"`); only without `bill_ids`.
    #[serde(default)]
    pub top_up: Option<String>,
    pub channel: Channel,
    pub method: PayMethod,
    #[serde(default)]
    pub payer_openid: Option<String>,
    #[serde(default)]
    pub payer_ip: Option<String>,
    #[serde(default)]
    pub return_url: Option<String>,
    #[serde(default)]
    pub if_live: IfLive,
}

/// The answer to an order request.
#[derive(Debug, Clone, Serialize)]
pub struct OrderCreated {
    pub order_no: String,
    pub account_id: i64,
    pub amount_fen: i64,
    pub channel: Channel,
    pub merchant_id: String,
    pub method: String,
    pub status: String,
    pub bill_ids: Vec<i64>,
    pub expires_at: DateTime<Utc>,
    /// What the payer needs: a QR code's content, a redirect URL, JSAPI parameters or a form.
    pub payer_action: Option<PayerAction>,
    /// True when an existing live order was returned instead of a new one.
    pub reused: bool,
    /// The orders this one superseded.
    pub superseded: Vec<String>,
}

/// What a callback did, and the answer for the gateway.
#[derive(Debug, Clone)]
pub struct NotifyOutcome {
    pub ack: Ack,
    /// `applied`, `already_applied`, `duplicate_event`, `mismatch: …`, `rejected: …`, …
    pub outcome: String,
}

/// A refund request (`POST /api/v1/payments/{order_no}/refunds`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    /// Yuan (`"12.34"`); the whole remaining amount when absent.
    #[serde(default)]
    pub amount: Option<String>,
    pub reason: String,
}

/// The service. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Payments {
    store: Store,
    merchants: MerchantRegistry,
    notify_base: RwLock<String>,
    order_ttl: Duration,
}

fn channel_of(s: &str) -> Result<Channel, PaymentError> {
    s.parse::<Channel>()
        .map_err(|e| PaymentError::Unexpected(anyhow::anyhow!(e)))
}

fn method_str(m: PayMethod) -> &'static str {
    match m {
        PayMethod::Qr => "qr",
        PayMethod::H5 => "h5",
        PayMethod::Jsapi => "jsapi",
        PayMethod::Web => "web",
    }
}

fn method_of(s: &str) -> PayMethod {
    match s {
        "h5" => PayMethod::H5,
        "jsapi" => PayMethod::Jsapi,
        "web" => PayMethod::Web,
        _ => PayMethod::Qr,
    }
}

/// A new order or refund number: a letter, the China-time date, 16 random digits and letters
/// (`[A-Za-z0-9]{8,32}`, valid at all three gateways, ≤ 32 for UnionPay's file).
pub fn new_number(prefix: char, now: DateTime<Utc>) -> String {
    let day = crate::domain::period::cst_date(now).format("%Y%m%d");
    let tail = uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase();
    format!("{prefix}{day}{}", &tail[..16])
}

fn gateway_unavailable(what: &str, e: &GatewayError) -> PaymentError {
    match e.class() {
        ErrorClass::Retry => PaymentError::Unavailable(format!("{what}: {e}; try again later")),
        _ => PaymentError::Refused(format!("{what}: {e}")),
    }
}

fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".into())
}

/// The order number a (possibly forged) form-encoded body names, to query it instead.
fn order_named_in(body: &[u8]) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "out_trade_no" || k == "orderId")
        .map(|(_, v)| v)
        .filter(|v| meterpay_gateways::gateway::is_valid_order_no(v))
}

impl Payments {
    /// Build from the configuration: every `[[payments.merchants]]` client (keys read now;
    /// an unreadable key fails start-up, naming the merchant and the key).
    pub fn from_config(store: Store, config: &Config) -> anyhow::Result<Payments> {
        let merchants = MerchantRegistry::from_config(&config.payments.merchants)?;
        let base = if config.payments.notify_base_url.trim().is_empty() {
            config.http.public_base_url.clone()
        } else {
            config.payments.notify_base_url.clone()
        };
        Ok(Payments::new(
            store,
            merchants,
            &base,
            Duration::minutes(config.payments.order_ttl_minutes.max(1)),
        ))
    }

    pub fn new(store: Store, merchants: MerchantRegistry, notify_base_url: &str, order_ttl: Duration) -> Payments {
        Payments {
            store,
            merchants,
            notify_base: RwLock::new(notify_base_url.trim_end_matches('/').to_string()),
            order_ttl,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &MerchantRegistry {
        &self.merchants
    }

    /// Add a merchant at run time (the demo and tests add the sandbox's).
    pub fn add_merchant(
        &self,
        community: &str,
        fee_rate_ppm: u32,
        gateway: Arc<dyn PaymentGateway>,
    ) -> anyhow::Result<()> {
        self.merchants.add(Merchant {
            community: community.to_string(),
            channel: gateway.channel(),
            merchant_id: gateway.merchant_id().to_string(),
            fee_rate_ppm,
            gateway,
        })
    }

    /// Where gateways are told to send notifications.
    pub fn set_notify_base_url(&self, url: &str) {
        *self.notify_base.write().unwrap_or_else(|e| e.into_inner()) = url.trim_end_matches('/').to_string();
    }

    pub fn notify_url(&self, channel: Channel, merchant_id: &str) -> String {
        let base = self.notify_base.read().unwrap_or_else(|e| e.into_inner()).clone();
        format!("{base}/notify/{channel}/{merchant_id}")
    }

    /// Record every configured merchant whose community exists (the `payment_merchants` table
    /// the finance side reads). Returns how many were recorded.
    pub async fn sync_merchants(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut n = 0;
        for m in self.merchants.all() {
            if let Some(c) = self.store.community_by_code(&m.community).await? {
                self.store
                    .upsert_payment_merchant(c.id, m.channel.as_str(), &m.merchant_id, m.fee_rate_ppm, now)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn merchant(&self, channel: Channel, merchant_id: &str) -> Result<Merchant, PaymentError> {
        self.merchants.get(channel, merchant_id).ok_or_else(|| {
            PaymentError::Unexpected(anyhow::anyhow!("no {channel} merchant {merchant_id:?} is configured"))
        })
    }

    // --- orders ------------------------------------------------------------------------------

    /// Create (or reuse, or supersede) an order for some open bills of an account, or a top-up.
    pub async fn create_order(
        &self,
        req: &OrderRequest,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<OrderCreated, PaymentError> {
        let (community_id, community_code, account_code, status) = self
            .store
            .payment_account(req.account_id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("account {} not found", req.account_id)))?;
        if status != "active" {
            return Err(PaymentError::Refused(format!("account {account_code} is {status}")));
        }
        let merchant = self
            .merchants
            .for_community(&community_code, req.channel)
            .ok_or_else(|| {
                PaymentError::Refused(format!(
                    "community {community_code} has no {} merchant configured",
                    req.channel
                ))
            })?;
        if req.method == PayMethod::Jsapi && req.channel != Channel::Wechatpay {
            return Err(PaymentError::Invalid("method jsapi is for wechatpay only".into()));
        }
        if req.method == PayMethod::Jsapi && req.payer_openid.as_deref().unwrap_or("").is_empty() {
            return Err(PaymentError::Invalid("method jsapi needs payer_openid".into()));
        }
        let mut bill_ids = req.bill_ids.clone();
        bill_ids.sort_unstable();
        if bill_ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(PaymentError::Invalid("bill_ids lists a bill twice".into()));
        }
        let (purpose, amount, bills): (&str, i64, Vec<(i64, i64)>) = if bill_ids.is_empty() {
            let Some(t) = &req.top_up else {
                return Err(PaymentError::Invalid(
                    "give bill_ids (the open bills to pay) or top_up (an amount in yuan)".into(),
                ));
            };
            let fen = Fen::parse_yuan(t).map_err(|e| PaymentError::Invalid(format!("top_up {t:?}: {e}")))?;
            if !fen.is_positive() {
                return Err(PaymentError::Invalid("top_up must be positive".into()));
            }
            ("topup", fen.get(), Vec::new())
        } else {
            if req.top_up.is_some() {
                return Err(PaymentError::Invalid("give bill_ids or top_up, not both".into()));
            }
            let open = self.store.open_bills(req.account_id).await?;
            let mut bills = Vec::new();
            for id in &bill_ids {
                let b = open.iter().find(|b| b.bill_id == *id).ok_or_else(|| {
                    PaymentError::Refused(format!(
                        "bill {id} is not an open bill of account {account_code} (paid, not issued, or another account's)"
                    ))
                })?;
                bills.push((*id, b.outstanding_fen));
            }
            ("bills", bills.iter().map(|(_, f)| f).sum(), bills)
        };
        if amount > 10_000_000_000 {
            return Err(PaymentError::Invalid(
                "the amount is beyond what a gateway takes".into(),
            ));
        }

        // A live order on any of these bills: reuse it, supersede it, or refuse.
        let mut superseded = Vec::new();
        let order_no = new_number('P', now);
        if !bills.is_empty() {
            let live = self.store.live_orders_for_bills(&bill_ids).await?;
            for o in live {
                let o_bills: Vec<i64> = self
                    .store
                    .payment_order_bills(o.id)
                    .await?
                    .into_iter()
                    .map(|(b, _)| b)
                    .collect();
                let same = o_bills == bill_ids
                    && o.channel == req.channel.as_str()
                    && o.method == method_str(req.method)
                    && o.amount_fen == amount
                    && o.expires_at > now;
                match req.if_live {
                    IfLive::Reuse if same => return self.reuse(o, req, now).await,
                    IfLive::Reuse => {
                        return Err(PaymentError::Conflict(format!(
                            "bill(s) {:?} already have a live order {} ({} {}, {}); pay that one, or send \"if_live\": \"supersede\" to replace it",
                            o_bills,
                            o.order_no,
                            o.channel,
                            o.method,
                            Fen::new(o.amount_fen)
                        )))
                    }
                    IfLive::Supersede => {
                        self.close_everywhere(&o, &format!("superseded by {order_no}"), Some(&order_no), now)
                            .await?;
                        superseded.push(o.order_no.clone());
                    }
                }
            }
        }

        let expires_at = now + self.order_ttl;
        let subject = if purpose == "topup" {
            format!("Prepaid top-up, account {account_code}")
        } else {
            format!("Utility bills, account {account_code}")
        };
        let row = self
            .store
            .create_payment_order(&NewOrder {
                order_no: &order_no,
                community_id,
                account_id: req.account_id,
                channel: req.channel.as_str(),
                merchant_id: &merchant.merchant_id,
                method: method_str(req.method),
                purpose,
                amount_fen: amount,
                subject: &subject,
                created_at: now,
                expires_at,
                created_by: actor,
                bills: &bills,
                next_query_at: now + Duration::seconds(super::compensation::FIRST_QUERY_AFTER_SECS),
            })
            .await
            .map_err(|e| match e {
                StoreError::Duplicate { .. } => PaymentError::Conflict(
                    "another order for these bills was created at the same moment; ask again to reuse it".into(),
                ),
                other => other.into(),
            })?;
        let action = self.send_to_gateway(&merchant, &row, req).await?;
        tracing::info!(order_no = %row.order_no, account_id = row.account_id, channel = %req.channel, amount_fen = amount, "payment order created");
        Ok(OrderCreated {
            order_no: row.order_no,
            account_id: row.account_id,
            amount_fen: row.amount_fen,
            channel: req.channel,
            merchant_id: row.merchant_id,
            method: row.method,
            status: row.status,
            bill_ids,
            expires_at: row.expires_at,
            payer_action: Some(action),
            reused: false,
            superseded,
        })
    }

    async fn reuse(&self, o: OrderRow, req: &OrderRequest, _now: DateTime<Utc>) -> Result<OrderCreated, PaymentError> {
        let merchant = self.merchant(req.channel, &o.merchant_id)?;
        let action = match o
            .payer_action
            .as_deref()
            .and_then(|a| serde_json::from_str::<ActionJson>(a).ok())
        {
            Some(a) => a.into_action(),
            // The gateway was not reached the first time: ask again with the same order.
            None => self.send_to_gateway(&merchant, &o, req).await?,
        };
        let bill_ids = self
            .store
            .payment_order_bills(o.id)
            .await?
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        Ok(OrderCreated {
            order_no: o.order_no,
            account_id: o.account_id,
            amount_fen: o.amount_fen,
            channel: req.channel,
            merchant_id: o.merchant_id,
            method: o.method,
            status: o.status,
            bill_ids,
            expires_at: o.expires_at,
            payer_action: Some(action),
            reused: true,
            superseded: vec![],
        })
    }

    async fn send_to_gateway(
        &self,
        merchant: &Merchant,
        o: &OrderRow,
        req: &OrderRequest,
    ) -> Result<PayerAction, PaymentError> {
        let create = CreateOrder {
            order_no: o.order_no.clone(),
            amount_fen: o.amount_fen,
            subject: o.subject.clone(),
            notify_url: self.notify_url(merchant.channel, &merchant.merchant_id),
            // Browser flows (UnionPay's front consume, Alipay page/wap pay) need somewhere to
            // send the payer back to; by default our own return page.
            return_url: req.return_url.clone().or_else(|| {
                let base = self.notify_base.read().unwrap_or_else(|e| e.into_inner()).clone();
                Some(format!("{base}/payments/return/{}", o.order_no))
            }),
            expires_at: o.expires_at,
            created_at: o.created_at,
            method: req.method,
            payer_openid: req.payer_openid.clone(),
            payer_ip: req.payer_ip.clone(),
        };
        match merchant.gateway.create_order(&create).await {
            Ok(action) => {
                let json = serde_json::to_string(&ActionJson::from_action(&action)).unwrap_or_default();
                self.store.set_payer_action(&o.order_no, &json).await?;
                Ok(action)
            }
            Err(e) if e.class() == ErrorClass::Retry => {
                // Unknown at the gateway: the order stays live (a retry reuses it; the
                // compensation sweep queries and in the end closes it).
                tracing::warn!(order_no = %o.order_no, error = %e, "creating the order at the gateway failed; it will be retried or closed");
                Err(gateway_unavailable("creating the order at the gateway", &e))
            }
            Err(e) => {
                self.store
                    .close_payment_order(&o.order_no, &format!("the gateway refused it: {e}"), None, Utc::now())
                    .await?;
                Err(PaymentError::Refused(format!("the gateway refused the order: {e}")))
            }
        }
    }

    /// Close an order at the gateway first, then here. Paid meanwhile: applied, and refused as a
    /// conflict (the caller must not create another order for the same bills).
    pub async fn close_everywhere(
        &self,
        o: &OrderRow,
        reason: &str,
        superseded_by: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, PaymentError> {
        let merchant = self.merchant(channel_of(&o.channel)?, &o.merchant_id)?;
        let outcome = merchant
            .gateway
            .close_order(&OrderRef {
                order_no: o.order_no.clone(),
                created_at: o.created_at,
            })
            .await
            .map_err(|e| gateway_unavailable(&format!("closing order {} at the gateway", o.order_no), &e))?;
        match outcome {
            CloseOutcome::Closed | CloseOutcome::NothingToClose => Ok(self
                .store
                .close_payment_order(&o.order_no, reason, superseded_by, now)
                .await?),
            CloseOutcome::AlreadyPaid => {
                let q = self.query_and_apply_inner(&o.order_no, now).await?;
                Err(PaymentError::Conflict(format!(
                    "order {} was paid at the gateway meanwhile ({q:?}); nothing to supersede",
                    o.order_no
                )))
            }
        }
    }

    // --- callbacks ---------------------------------------------------------------------------

    /// Handle a notification as received (see the module docs).
    pub async fn handle_notification(
        &self,
        channel: Channel,
        merchant_id: &str,
        headers: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> NotifyOutcome {
        let Some(merchant) = self.merchants.get(channel, merchant_id) else {
            let reason = format!("no {channel} merchant {merchant_id:?} is configured");
            self.reject(channel, merchant_id, &reason, body, now).await;
            return NotifyOutcome {
                ack: Ack {
                    status: 404,
                    content_type: Some("text/plain"),
                    body: b"unknown merchant".to_vec(),
                },
                outcome: format!("rejected: {reason}"),
            };
        };
        let gw = &merchant.gateway;
        let incoming = IncomingNotification { headers, body };
        let mut verified = gw.verify_notification(incoming, now);
        if let Err(NotifyError::UnknownKey(_)) = &verified {
            // WeChat Pay rotated its platform certificate: fetch the new ones once, verify again.
            if gw.refresh_keys().await.is_ok() {
                verified = gw.verify_notification(incoming, now);
            }
        }
        let v = match verified {
            Ok(v) => v,
            Err(e) => {
                let reason = format!("unverifiable: {e}");
                self.reject(channel, merchant_id, &reason, body, now).await;
                if let Some(no) = order_named_in(body) {
                    self.query_in_background(no);
                }
                return NotifyOutcome {
                    ack: refused_ack(gw.as_ref(), &e),
                    outcome: format!("rejected: {reason}"),
                };
            }
        };
        let h = headers_json(headers);
        let fields = v.fields.to_string();
        let result = match &v.event {
            NotificationEvent::Payment {
                order_no,
                state,
                gateway_txn_id,
                amount_fen,
                paid_at,
            } => {
                let ev = EventRecord {
                    event_id: &v.event_id,
                    kind: "payment",
                    headers: &h,
                    body,
                    fields: &fields,
                };
                if *state != PaymentState::Paid {
                    self.store
                        .record_payment_event(
                            channel.as_str(),
                            merchant_id,
                            order_no,
                            None,
                            &ev,
                            &format!("not_paid:{state:?}"),
                            now,
                        )
                        .await
                        .map(|_| format!("recorded ({state:?})"))
                } else {
                    self.store
                        .apply_payment(&ApplyPayment {
                            channel: channel.as_str(),
                            merchant_id,
                            reported_merchant_id: &v.merchant_id,
                            order_no,
                            gateway_txn_id,
                            amount_fen: *amount_fen,
                            paid_at: paid_at.unwrap_or(now),
                            event: Some(ev),
                            now,
                        })
                        .await
                        .map(|a| describe_payment(order_no, &a))
                }
            }
            NotificationEvent::Refund {
                order_no,
                refund_no,
                state,
                gateway_refund_id,
                amount_fen,
                refunded_at,
            } => {
                let ev = EventRecord {
                    event_id: &v.event_id,
                    kind: "refund",
                    headers: &h,
                    body,
                    fields: &fields,
                };
                self.refund_event(
                    channel,
                    merchant_id,
                    order_no,
                    refund_no,
                    *state,
                    gateway_refund_id.as_deref(),
                    *amount_fen,
                    refunded_at.unwrap_or(now),
                    ev,
                    now,
                )
                .await
            }
        };
        match result {
            Ok(outcome) => {
                tracing::info!(%channel, merchant_id, event_id = %v.event_id, outcome = %outcome, "notification handled");
                NotifyOutcome {
                    ack: gw.ack(true),
                    outcome,
                }
            }
            Err(e) => {
                tracing::error!(%channel, merchant_id, event_id = %v.event_id, error = %e, "a verified notification could not be stored; the gateway will deliver it again");
                NotifyOutcome {
                    ack: gw.ack(false),
                    outcome: format!("failed: {e}"),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn refund_event(
        &self,
        channel: Channel,
        merchant_id: &str,
        order_no: &str,
        refund_no: &str,
        state: RefundState,
        gateway_refund_id: Option<&str>,
        amount_fen: i64,
        refunded_at: DateTime<Utc>,
        ev: EventRecord<'_>,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        match state {
            RefundState::Succeeded => {
                let apply = ApplyRefund {
                    channel: channel.as_str(),
                    merchant_id,
                    order_no,
                    refund_no,
                    amount_fen,
                    gateway_refund_id,
                    refunded_at,
                    event: Some(ev),
                    now,
                };
                let mut r = self.store.apply_refund(&apply).await?;
                if r == RefundApplied::OrderNotPaid {
                    // The refund's notification came before its payment's: the refund proves the
                    // payment, so find it at the gateway first, then apply the refund.
                    match self.query_and_apply_inner(order_no, now).await {
                        Ok(_) => r = self.store.apply_refund(&apply).await?,
                        Err(e) => tracing::warn!(order_no, error = %e, "querying the order of an early refund failed"),
                    }
                }
                if r == RefundApplied::OrderNotPaid {
                    return Err(StoreError::Refused {
                        what: "applying a refund",
                        reason: format!(
                            "order {order_no} is not paid here yet; the refund will be applied on redelivery"
                        ),
                    });
                }
                Ok(format!("refund {refund_no}: {r:?}"))
            }
            RefundState::Failed | RefundState::Closed => {
                self.store
                    .set_refund_status(
                        refund_no,
                        "failed",
                        gateway_refund_id,
                        Some(&format!("{state:?} at the gateway")),
                        now,
                    )
                    .await?;
                self.store
                    .record_payment_event(
                        channel.as_str(),
                        merchant_id,
                        order_no,
                        Some(refund_no),
                        &ev,
                        "refund_failed",
                        now,
                    )
                    .await?;
                Ok(format!("refund {refund_no} failed at the gateway"))
            }
            RefundState::Processing => {
                self.store
                    .record_payment_event(
                        channel.as_str(),
                        merchant_id,
                        order_no,
                        Some(refund_no),
                        &ev,
                        "refund_processing",
                        now,
                    )
                    .await?;
                Ok(format!("refund {refund_no} processing"))
            }
        }
    }

    async fn reject(&self, channel: Channel, merchant_id: &str, reason: &str, body: &[u8], now: DateTime<Utc>) {
        tracing::warn!(%channel, merchant_id, reason, body_len = body.len(), "callback rejected");
        if let Err(e) = self
            .store
            .record_rejected_callback(channel.as_str(), merchant_id, reason, body, now)
            .await
        {
            tracing::error!(error = %e, "logging a rejected callback failed");
        }
    }

    fn query_in_background(&self, order_no: String) {
        // The query runs in the compensation sweep's task queue so it happens once across
        // instances; here we only bring it forward.
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store
                .schedule_order_query(&order_no, Some(Utc::now()), Utc::now())
                .await
            {
                tracing::warn!(order_no, error = %e, "bringing an order's query forward failed");
            }
        });
    }

    // --- active queries ----------------------------------------------------------------------

    pub(crate) async fn query_and_apply_inner(
        &self,
        order_no: &str,
        now: DateTime<Utc>,
    ) -> Result<QueryOutcome, PaymentError> {
        let Some(o) = self.store.payment_order_fresh(order_no).await? else {
            return Ok(QueryOutcome::UnknownOrder);
        };
        if o.status == "paid" {
            return Ok(QueryOutcome::AlreadyApplied);
        }
        let channel = channel_of(&o.channel)?;
        let merchant = self.merchant(channel, &o.merchant_id)?;
        let q = merchant
            .gateway
            .query_order(&OrderRef {
                order_no: o.order_no.clone(),
                created_at: o.created_at,
            })
            .await
            .map_err(|e| gateway_unavailable(&format!("querying order {order_no}"), &e))?;
        match q.state {
            PaymentState::Paid | PaymentState::Refunded => {
                let txn = q.gateway_txn_id.clone().unwrap_or_default();
                let amount = q.amount_fen.unwrap_or(0);
                let body = serde_json::to_vec(&q).unwrap_or_default();
                let event_id = format!("query:{txn}");
                let applied = self
                    .store
                    .apply_payment(&ApplyPayment {
                        channel: channel.as_str(),
                        merchant_id: &o.merchant_id,
                        reported_merchant_id: q.merchant_id.as_deref().unwrap_or(&o.merchant_id),
                        order_no,
                        gateway_txn_id: &txn,
                        amount_fen: amount,
                        paid_at: q.paid_at.unwrap_or(now),
                        event: Some(EventRecord {
                            event_id: &event_id,
                            kind: "query",
                            headers: "[]",
                            body: &body,
                            fields: &String::from_utf8_lossy(&body),
                        }),
                        now,
                    })
                    .await?;
                tracing::info!(order_no, outcome = %describe_payment(order_no, &applied), "order queried");
                Ok(match applied {
                    PaymentApplied::Applied { allocation, .. } => QueryOutcome::AppliedNow {
                        amount: Fen::new(allocation.amount_fen),
                        gateway_txn_id: txn,
                    },
                    PaymentApplied::AlreadyApplied | PaymentApplied::DuplicateEvent => QueryOutcome::AlreadyApplied,
                    PaymentApplied::UnknownOrder => QueryOutcome::UnknownOrder,
                    PaymentApplied::Mismatch { reason } => QueryOutcome::NotPaid {
                        state: format!("mismatch: {reason}"),
                    },
                })
            }
            other => Ok(QueryOutcome::NotPaid {
                state: format!("{other:?}").to_lowercase(),
            }),
        }
    }

    // --- refunds -----------------------------------------------------------------------------

    /// Ask for a refund of a paid order (all that is left, or `amount`), recording the reason and
    /// the operator. Alipay answers at once; WeChat Pay and UnionPay confirm by notification or
    /// query ([`Payments::settle_refund`]).
    pub async fn request_refund(
        &self,
        order_no: &str,
        body: &RefundRequestBody,
        operator: &str,
        now: DateTime<Utc>,
    ) -> Result<RefundRow, PaymentError> {
        if body.reason.trim().is_empty() {
            return Err(PaymentError::Invalid("a refund needs a reason".into()));
        }
        let o = self
            .store
            .payment_order_fresh(order_no)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("payment order {order_no} not found")))?;
        let amount = match &body.amount {
            Some(a) => Fen::parse_yuan(a)
                .map_err(|e| PaymentError::Invalid(format!("amount {a:?}: {e}")))?
                .get(),
            None => o.paid_amount_fen.unwrap_or(0) - o.refunded_fen,
        };
        if amount <= 0 {
            return Err(PaymentError::Refused(format!(
                "nothing left to refund on order {order_no}"
            )));
        }
        let refund_no = new_number('R', now);
        let (o, refund) = self
            .store
            .create_refund(order_no, &refund_no, amount, body.reason.trim(), operator, now)
            .await?;
        let merchant = self.merchant(channel_of(&o.channel)?, &o.merchant_id)?;
        let req = RefundRequest {
            order_no: o.order_no.clone(),
            refund_no: refund_no.clone(),
            refund_fen: amount,
            order_total_fen: o.paid_amount_fen.unwrap_or(o.amount_fen),
            reason: body.reason.trim().to_string(),
            notify_url: Some(self.notify_url(merchant.channel, &merchant.merchant_id)),
            gateway_txn_id: o.gateway_txn_id.clone(),
            requested_at: refund.requested_at,
        };
        tracing::info!(order_no, refund_no = %refund_no, amount_fen = amount, operator, "refund requested");
        match merchant.gateway.refund(&req).await {
            Ok(g) => {
                self.apply_gateway_refund(&o, &refund, g.state, g.gateway_refund_id.as_deref(), g.refunded_at, now)
                    .await?;
            }
            Err(e) if e.class() == ErrorClass::Retry => {
                // Unknown: the sweep queries the refund (same number) until it is final.
                self.store
                    .set_refund_status(
                        &refund_no,
                        "processing",
                        None,
                        Some(&format!("unknown after: {e}")),
                        now,
                    )
                    .await?;
            }
            Err(e) => {
                self.store
                    .set_refund_status(&refund_no, "failed", None, Some(&e.to_string()), now)
                    .await?;
            }
        }
        Ok(self.store.refund(&refund_no).await?.unwrap_or(refund))
    }

    async fn apply_gateway_refund(
        &self,
        o: &OrderRow,
        refund: &RefundRow,
        state: RefundState,
        gateway_refund_id: Option<&str>,
        refunded_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        match state {
            RefundState::Succeeded => {
                self.store
                    .apply_refund(&ApplyRefund {
                        channel: &o.channel,
                        merchant_id: &o.merchant_id,
                        order_no: &o.order_no,
                        refund_no: &refund.refund_no,
                        amount_fen: refund.amount_fen,
                        gateway_refund_id,
                        refunded_at: refunded_at.unwrap_or(now),
                        event: None,
                        now,
                    })
                    .await?;
            }
            RefundState::Processing => {
                self.store
                    .set_refund_status(&refund.refund_no, "processing", gateway_refund_id, None, now)
                    .await?;
            }
            RefundState::Failed | RefundState::Closed => {
                self.store
                    .set_refund_status(
                        &refund.refund_no,
                        "failed",
                        gateway_refund_id,
                        Some(&format!("{state:?}")),
                        now,
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Query a refund still in flight and apply what the gateway says.
    pub async fn settle_refund(&self, refund_no: &str, now: DateTime<Utc>) -> Result<String, PaymentError> {
        let refund = self
            .store
            .refund(refund_no)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("refund {refund_no} not found")))?;
        if refund.status == "succeeded" || refund.status == "failed" {
            return Ok(refund.status);
        }
        let o = self
            .store
            .payment_order_by_id(refund.order_id)
            .await?
            .ok_or_else(|| PaymentError::NotFound(format!("the order of refund {refund_no}")))?;
        let merchant = self.merchant(channel_of(&o.channel)?, &o.merchant_id)?;
        let g = merchant
            .gateway
            .query_refund(&RefundRef {
                order_no: o.order_no.clone(),
                refund_no: refund_no.to_string(),
                requested_at: refund.requested_at,
            })
            .await
            .map_err(|e| gateway_unavailable(&format!("querying refund {refund_no}"), &e))?;
        self.apply_gateway_refund(&o, &refund, g.state, g.gateway_refund_id.as_deref(), g.refunded_at, now)
            .await?;
        Ok(format!("{:?}", g.state).to_lowercase())
    }
}

fn describe_payment(order_no: &str, a: &PaymentApplied) -> String {
    match a {
        PaymentApplied::Applied {
            allocation,
            after_close,
        } => format!(
            "applied {} to order {order_no}{}",
            Fen::new(allocation.amount_fen),
            if *after_close { " (after close: flagged)" } else { "" }
        ),
        PaymentApplied::AlreadyApplied => "already_applied".into(),
        PaymentApplied::DuplicateEvent => "duplicate_event".into(),
        PaymentApplied::UnknownOrder => format!("unknown_order {order_no} (flagged)"),
        PaymentApplied::Mismatch { reason } => format!("mismatch (flagged): {reason}"),
    }
}

/// The failure answer for an unverifiable notification: WeChat Pay wants 401 with JSON.
fn refused_ack(gw: &dyn PaymentGateway, e: &NotifyError) -> Ack {
    if gw.channel() == Channel::Wechatpay {
        return meterpay_gateways::wechatpay::notify::ack_refused(e);
    }
    gw.ack(false)
}

/// [`PayerAction`] as stored (it serialises but does not deserialise).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ActionJson {
    QrCode {
        content: String,
    },
    Redirect {
        url: String,
    },
    Jsapi {
        params: Vec<(String, String)>,
    },
    Form {
        action: String,
        fields: Vec<(String, String)>,
    },
}

impl ActionJson {
    fn from_action(a: &PayerAction) -> ActionJson {
        match a.clone() {
            PayerAction::QrCode { content } => ActionJson::QrCode { content },
            PayerAction::Redirect { url } => ActionJson::Redirect { url },
            PayerAction::Jsapi { params } => ActionJson::Jsapi { params },
            PayerAction::Form { action, fields } => ActionJson::Form { action, fields },
        }
    }
    fn into_action(self) -> PayerAction {
        match self {
            ActionJson::QrCode { content } => PayerAction::QrCode { content },
            ActionJson::Redirect { url } => PayerAction::Redirect { url },
            ActionJson::Jsapi { params } => PayerAction::Jsapi { params },
            ActionJson::Form { action, fields } => PayerAction::Form { action, fields },
        }
    }
}

#[async_trait]
impl PaymentsPort for Payments {
    async fn merchants(&self) -> anyhow::Result<Vec<MerchantRef>> {
        let mut out = Vec::new();
        for m in self.merchants.all() {
            let Some(c) = self.store.community_by_code(&m.community).await? else {
                continue;
            };
            out.push(MerchantRef {
                channel: m.channel,
                merchant_id: m.merchant_id.clone(),
                community_id: c.id,
                fee_rate_ppm: m.fee_rate_ppm,
            });
        }
        Ok(out)
    }

    async fn gateway(&self, channel: Channel, merchant_id: &str) -> anyhow::Result<Arc<dyn PaymentGateway>> {
        self.merchants
            .get(channel, merchant_id)
            .map(|m| m.gateway)
            .ok_or_else(|| anyhow::anyhow!("no {channel} merchant {merchant_id:?} is configured"))
    }

    async fn query_and_apply(&self, order_no: &str, now: DateTime<Utc>) -> anyhow::Result<QueryOutcome> {
        self.query_and_apply_inner(order_no, now)
            .await
            .map_err(|e| anyhow::anyhow!("querying and applying order {order_no}: {e}"))
    }

    async fn payment_activity(&self, account_id: i64, since: DateTime<Utc>) -> anyhow::Result<Vec<PaymentActivity>> {
        let rows = self.store.account_payment_activity(account_id, since).await?;
        Ok(rows.into_iter().map(activity_of).collect())
    }

    async fn payment_activity_many(
        &self,
        asks: &[(i64, DateTime<Utc>)],
    ) -> anyhow::Result<std::collections::HashMap<i64, Vec<PaymentActivity>>> {
        let rows = self.store.accounts_payment_activity(asks).await?;
        Ok(rows
            .into_iter()
            .map(|(id, rs)| (id, rs.into_iter().map(activity_of).collect()))
            .collect())
    }
}

/// An order as reminders read it: paid, or still pending at the gateway.
fn activity_of(r: crate::store::payments::ActivityRow) -> PaymentActivity {
    PaymentActivity {
        state: if r.status == "paid" {
            "paid".into()
        } else {
            "pending".into()
        },
        amount: Fen::new(r.amount_fen),
        at: r.paid_at.unwrap_or(r.created_at),
        order_no: r.order_no,
    }
}

/// Helper for callers holding only an order row.
pub fn order_method(o: &OrderRow) -> PayMethod {
    method_of(&o.method)
}
