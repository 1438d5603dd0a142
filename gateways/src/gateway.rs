//! The one interface the service uses for every gateway: [`PaymentGateway`].
//!
//! The service (orders, callbacks, compensation, refunds, reconciliation) only ever talks to a
//! `dyn PaymentGateway`; each gateway folder implements it over its own wire format. Requests and
//! answers here are in our terms: amounts in fen, times in UTC, our order and refund numbers,
//! states from [`crate::outcome`]. What a gateway needs beyond the common fields (an openid for
//! WeChat JSAPI, the original order time for UnionPay) is carried by optional fields, documented
//! where they apply.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::outcome::{ErrorClass, PaymentState, RefundState, TransportError};
use crate::settlement::{SettlementError, SettlementFile};

/// A payment channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Alipay,
    Wechatpay,
    Unionpay,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Alipay, Channel::Wechatpay, Channel::Unionpay];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Alipay => "alipay",
            Channel::Wechatpay => "wechatpay",
            Channel::Unionpay => "unionpay",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "alipay" => Ok(Channel::Alipay),
            "wechatpay" | "wechat" | "wxpay" => Ok(Channel::Wechatpay),
            "unionpay" => Ok(Channel::Unionpay),
            other => Err(format!(
                "unknown channel {other:?} (expected alipay, wechatpay or unionpay)"
            )),
        }
    }
}

/// How the payer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayMethod {
    /// A QR code shown on a screen and scanned with the payer's phone (Alipay precreate, WeChat
    /// Native; UnionPay has no QR in this gateway and answers with its web form).
    Qr,
    /// A mobile browser outside the wallet app (Alipay wap.pay, WeChat H5, UnionPay WAP form).
    H5,
    /// Inside WeChat (JSAPI, needs the payer's openid).
    Jsapi,
    /// A desktop browser (Alipay page.pay, UnionPay web form).
    Web,
}

/// Ask the gateway for a payment.
#[derive(Debug, Clone)]
pub struct CreateOrder {
    /// Ours, `[A-Za-z0-9]{8,32}` (valid for all three gateways).
    pub order_no: String,
    pub amount_fen: i64,
    /// What the payer sees, e.g. "2026-11 water and electricity, 3-2-1201".
    pub subject: String,
    /// Where the gateway sends its asynchronous notification.
    pub notify_url: String,
    /// Where the payer's browser returns after paying (web/H5 flows).
    pub return_url: Option<String>,
    /// When the order stops being payable.
    pub expires_at: DateTime<Utc>,
    /// The order's creation time (UnionPay `txnTime`, part of the order's key there).
    pub created_at: DateTime<Utc>,
    pub method: PayMethod,
    /// WeChat JSAPI only: the payer's openid under our appid.
    pub payer_openid: Option<String>,
    /// The payer's IP address (WeChat H5 requires it; UnionPay optional).
    pub payer_ip: Option<String>,
}

/// What the payer needs to pay, as the gateway gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PayerAction {
    /// Show this text as a QR code.
    QrCode { content: String },
    /// Send the browser to this URL (GET).
    Redirect { url: String },
    /// WeChat JSAPI: the parameters for `WeixinJSBridge.invoke('getBrandWCPayRequest', …)`:
    /// appId, timeStamp, nonceStr, package, signType, paySign.
    Jsapi { params: Vec<(String, String)> },
    /// An auto-submitting HTML form (POST `action` with `fields`), e.g. UnionPay front consume.
    Form {
        action: String,
        fields: Vec<(String, String)>,
    },
}

/// Names an order at the gateway.
#[derive(Debug, Clone)]
pub struct OrderRef {
    pub order_no: String,
    /// The order's creation time as sent in [`CreateOrder::created_at`] (UnionPay needs it).
    pub created_at: DateTime<Utc>,
}

/// An order as the gateway reports it (query answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayOrder {
    pub order_no: String,
    pub state: PaymentState,
    /// The gateway's transaction id, once it has one.
    pub gateway_txn_id: Option<String>,
    /// What the gateway says was paid, in fen (None until paid).
    pub amount_fen: Option<i64>,
    pub paid_at: Option<DateTime<Utc>>,
    /// The app / merchant id the gateway reports the order under.
    pub merchant_id: Option<String>,
}

/// What closing an order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseOutcome {
    /// Closed now (or already closed): no payment can land on it any more.
    Closed,
    /// The gateway never saw the order (the payer never opened it): nothing to close, and nothing
    /// can be paid on it any more once we stop handing it out. (Alipay `ACQ.TRADE_NOT_EXIST`.)
    NothingToClose,
    /// It cannot be closed because it was paid: query it and apply the payment.
    AlreadyPaid,
}

/// Ask for a refund.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub order_no: String,
    /// Ours, `[A-Za-z0-9]{8,32}`; also the idempotency key at the gateway (retry with the same
    /// number and amount).
    pub refund_no: String,
    pub refund_fen: i64,
    /// The original order's amount (WeChat requires it).
    pub order_total_fen: i64,
    pub reason: String,
    pub notify_url: Option<String>,
    /// The payment's gateway transaction id (UnionPay `origQryId` requires it).
    pub gateway_txn_id: Option<String>,
    /// When we create the refund request (UnionPay `txnTime` of the refund).
    pub requested_at: DateTime<Utc>,
}

/// Names a refund at the gateway.
#[derive(Debug, Clone)]
pub struct RefundRef {
    pub order_no: String,
    pub refund_no: String,
    /// When the refund was requested (UnionPay queries the refund by its own orderId + txnTime).
    pub requested_at: DateTime<Utc>,
}

/// A refund as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayRefund {
    pub order_no: String,
    pub refund_no: String,
    pub state: RefundState,
    pub gateway_refund_id: Option<String>,
    /// This refund's amount in fen, when the gateway states it.
    pub amount_fen: Option<i64>,
    pub refunded_at: Option<DateTime<Utc>>,
}

/// A notification as it arrived: headers (name, value) and the exact body bytes.
#[derive(Debug, Clone, Copy)]
pub struct IncomingNotification<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl IncomingNotification<'_> {
    /// A header's value, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a verified notification says, in our terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotificationEvent {
    Payment {
        order_no: String,
        state: PaymentState,
        gateway_txn_id: String,
        /// What the payer paid for the order, in fen (checked against the order by the caller).
        amount_fen: i64,
        paid_at: Option<DateTime<Utc>>,
    },
    Refund {
        order_no: String,
        refund_no: String,
        state: RefundState,
        gateway_refund_id: Option<String>,
        amount_fen: i64,
        refunded_at: Option<DateTime<Utc>>,
    },
}

/// A notification whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedNotification {
    pub event: NotificationEvent,
    /// The app / merchant id the notification names (Alipay `app_id`, WeChat `mchid`, UnionPay
    /// `merId`); the caller checks it against the merchant the URL names.
    pub merchant_id: String,
    /// Unique per gateway event, for storing the raw event once (Alipay `notify_id`, WeChat the
    /// notification `id`, UnionPay `queryId` + `txnType` + `respCode`).
    pub event_id: String,
    /// Every field the gateway sent (decrypted where the gateway encrypts), for audit and for
    /// `meterpay notify verify`.
    pub fields: serde_json::Value,
}

/// Why a notification was not accepted. Each names exactly what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("the notification carries no signature ({0})")]
    MissingSignature(String),
    #[error("the signature does not verify: {0}")]
    BadSignature(String),
    #[error("the notification's timestamp {timestamp} is outside the accepted window of {window_secs} s")]
    StaleTimestamp { timestamp: i64, window_secs: i64 },
    #[error("the notification is signed with a key we do not know: {0}")]
    UnknownKey(String),
    #[error("the notification is malformed: {0}")]
    Malformed(String),
    #[error("the notification's resource could not be decrypted: {0}")]
    Decrypt(String),
}

/// What to answer the gateway over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

/// Why a call to a gateway did not give an answer we can use.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Network, timeout, 5xx: nothing is known about the effect; retry the same request (or query).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The gateway answered, but the answer's signature did not verify: it is not trusted.
    #[error("the gateway's answer did not verify: {0}")]
    Unverified(String),
    /// A well-formed refusal, with the gateway's code and how to treat it.
    #[error("the gateway refused ({code}): {message}")]
    Refused {
        code: String,
        message: String,
        class: ErrorClass,
    },
    /// The answer could not be understood.
    #[error("the gateway's answer could not be read: {0}")]
    Protocol(String),
    /// We could not build the request (bad order number, amount out of range, missing openid…).
    #[error("the request is invalid: {0}")]
    Invalid(String),
}

impl GatewayError {
    /// How the caller should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            GatewayError::Transport(_) => ErrorClass::Retry,
            // An answer we cannot trust or read says nothing about the effect: ask again later.
            GatewayError::Unverified(_) | GatewayError::Protocol(_) => ErrorClass::Retry,
            GatewayError::Refused { class, .. } => *class,
            GatewayError::Invalid(_) => ErrorClass::Failure,
        }
    }
}

/// One merchant account at one gateway, as the service uses it. Implementations hold their keys
/// (loaded once, never printed) and their base URL (the real gateway or the sandbox).
#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    fn channel(&self) -> Channel;
    /// The app id (Alipay), mchid (WeChat Pay) or merId (UnionPay) this client speaks for.
    fn merchant_id(&self) -> &str;

    /// Create the payment at the gateway (or, for browser flows, build the signed request) and
    /// return what the payer needs.
    async fn create_order(&self, req: &CreateOrder) -> Result<PayerAction, GatewayError>;
    /// Ask for the order's state. An order the gateway never saw is `PaymentState::NotFound`, not
    /// an error.
    async fn query_order(&self, order: &OrderRef) -> Result<GatewayOrder, GatewayError>;
    /// Close an unpaid order so that no payment can land on it.
    async fn close_order(&self, order: &OrderRef) -> Result<CloseOutcome, GatewayError>;
    async fn refund(&self, req: &RefundRequest) -> Result<GatewayRefund, GatewayError>;
    async fn query_refund(&self, refund: &RefundRef) -> Result<GatewayRefund, GatewayError>;

    /// Verify an asynchronous notification over the exact bytes received and say what it means.
    /// `now` bounds timestamp windows.
    fn verify_notification(
        &self,
        notification: IncomingNotification<'_>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedNotification, NotifyError>;
    /// The answer the gateway requires: `accepted` true once the event is durably stored;
    /// false makes the gateway deliver again.
    fn ack(&self, accepted: bool) -> Ack;

    /// Download the day's settlement (trade bill) file, as the bytes the parser takes.
    async fn download_settlement(&self, day: NaiveDate) -> Result<Vec<u8>, GatewayError>;
    /// Parse a settlement file of this gateway.
    fn parse_settlement(&self, bytes: &[u8]) -> Result<SettlementFile, SettlementError>;

    /// Refresh keys that rotate (WeChat Pay platform certificates). Default: nothing to do.
    async fn refresh_keys(&self) -> Result<(), GatewayError> {
        Ok(())
    }
}

/// Is `s` a valid order or refund number for all three gateways (`[A-Za-z0-9]{8,32}`)?
pub fn is_valid_order_no(s: &str) -> bool {
    (8..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_fit_all_three_gateways() {
        assert!(is_valid_order_no("W20261201000000000001"));
        assert!(is_valid_order_no("abcd1234"));
        assert!(!is_valid_order_no("abc1234"), "too short");
        assert!(!is_valid_order_no(&"a".repeat(33)), "too long for UnionPay's file");
        assert!(!is_valid_order_no("W2026-1201"), "UnionPay refuses '-'");
        assert!(!is_valid_order_no("W2026_1201"), "UnionPay refuses '_'");
    }

    #[test]
    fn channels_parse_from_their_names() {
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
        }
        assert!("paypal".parse::<Channel>().is_err());
    }

    #[test]
    fn transport_errors_are_retried_and_invalid_requests_are_not() {
        let t = GatewayError::Transport(TransportError::Timeout { url: "x".into() });
        assert_eq!(t.class(), ErrorClass::Retry);
        assert_eq!(GatewayError::Invalid("no openid".into()).class(), ErrorClass::Failure);
        let r = GatewayError::Refused {
            code: "ORDERPAID".into(),
            message: "paid".into(),
            class: ErrorClass::AlreadyDone,
        };
        assert_eq!(r.class(), ErrorClass::AlreadyDone);
    }
}
