//! What a gateway's answer means for us, whichever gateway gave it. Every gateway maps its own
//! error codes into [`ErrorClass`] with an exhaustive match, as gateways.md lists them.

use serde::Serialize;

/// How the caller should treat a gateway error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Transient (system busy, timeout, rate limit): try again later with the same request.
    Retry,
    /// The thing asked for is already so (order already paid, closed or refunded): treat as success
    /// and query for the final state.
    AlreadyDone,
    /// Permanent failure: do not retry; surface it.
    Failure,
}

/// The state of a payment at the gateway, in our terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Created, waiting for the payer.
    Pending,
    /// Paid (Alipay TRADE_SUCCESS/TRADE_FINISHED, WeChat SUCCESS, UnionPay respCode 00).
    Paid,
    /// Closed or revoked without payment.
    Closed,
    /// Paid, then fully refunded (WeChat REFUND, Alipay TRADE_CLOSED after refund).
    Refunded,
    /// Payment failed.
    Failed,
    /// The gateway has no such order.
    NotFound,
}

/// The state of a refund at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    Processing,
    Succeeded,
    Failed,
    Closed,
}

/// Transport-level failure talking to a gateway (network, timeout, 5xx), as distinct from a
/// well-formed refusal.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("request to {url} timed out")]
    Timeout { url: String },
    #[error("request to {url} failed: {detail}")]
    Network { url: String, detail: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16, body: String },
}
