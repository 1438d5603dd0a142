//! Asynchronous notifications (`trade_status_sync`): verified over the raw decoded parameters
//! (see [`super::signature`]), then read into our terms.
//!
//! What a notification means:
//! - no refund fields: a payment event; `TRADE_SUCCESS`/`TRADE_FINISHED` are paid,
//!   `TRADE_CLOSED` is closed unpaid, `WAIT_BUYER_PAY` pending (not normally sent).
//! - with refund fields (`out_biz_no`, `refund_fee`, `gmt_refund`): a refund event, sent as
//!   `TRADE_SUCCESS` after a partial refund and `TRADE_CLOSED` after a full one. Alipay states
//!   the **cumulative** amount refunded on the trade (`refund_fee`), not this refund's amount, so
//!   the event's `amount_fen` is that cumulative amount; a refund's own amount comes from
//!   [`crate::gateway::PaymentGateway::query_refund`].
//!
//! The event id is `notify_id/trade_status[/out_biz_no]`: `notify_id` stays the same across
//! retries of one notification, and with the status and refund number it names one event.
//! Alipay notifications carry no freshness window (retries run for about 25 hours), so `now` is
//! not used; the signature and the caller's checks (app id, amount against the order) are what
//! make a notification trusted.

use crate::crypto::PublicKey;
use crate::gateway::{IncomingNotification, NotificationEvent, NotifyError, VerifiedNotification};
use crate::outcome::RefundState;

use super::signature::{parse_notification, verify_notification_params, NotifyParams};
use super::transformers::{amount_from_wire, parse_beijing_time, TradeStatus};

/// Verify a notification with the Alipay public key and read it. This is exactly what both
/// [`super::AlipayClient`]'s `verify_notification` and [`super::inspect_notification`] do.
pub fn verify_with_key(
    key: &PublicKey,
    notification: IncomingNotification<'_>,
) -> Result<VerifiedNotification, NotifyError> {
    let params = parse_notification(notification.body)?;
    verify_notification_params(&params, key)?;
    read_event(&params)
}

fn required(params: &NotifyParams, name: &str) -> Result<String, NotifyError> {
    match params.text(name) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(NotifyError::Malformed(format!("the notification has no {name}"))),
    }
}

fn optional(params: &NotifyParams, name: &str) -> Option<String> {
    params.text(name).filter(|v| !v.is_empty()).map(str::to_string)
}

fn amount(params: &NotifyParams, name: &str) -> Result<i64, NotifyError> {
    let text = required(params, name)?;
    amount_from_wire(&text).map_err(|e| NotifyError::Malformed(format!("{name}: {e}")))
}

/// `yyyy-MM-dd HH:mm:ss`, or with milliseconds as `gmt_refund` carries them.
fn time(params: &NotifyParams, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, NotifyError> {
    let Some(text) = optional(params, name) else {
        return Ok(None);
    };
    let whole = text.split_once('.').map_or(text.as_str(), |(w, _)| w);
    parse_beijing_time(whole)
        .map(Some)
        .ok_or_else(|| NotifyError::Malformed(format!("{name} {text:?} is not yyyy-MM-dd HH:mm:ss")))
}

/// Read a verified notification's parameters into our terms.
pub fn read_event(params: &NotifyParams) -> Result<VerifiedNotification, NotifyError> {
    let notify_type = required(params, "notify_type")?;
    if notify_type != "trade_status_sync" {
        return Err(NotifyError::Malformed(format!(
            "notify_type {notify_type:?} is not a trade notification (trade_status_sync)"
        )));
    }
    let app_id = required(params, "app_id")?;
    let notify_id = required(params, "notify_id")?;
    let status_text = required(params, "trade_status")?;
    let status = TradeStatus::parse(&status_text)
        .ok_or_else(|| NotifyError::Malformed(format!("unknown trade_status {status_text:?}")))?;
    let order_no = required(params, "out_trade_no")?;
    let trade_no = required(params, "trade_no")?;

    let out_biz_no = optional(params, "out_biz_no");
    let is_refund =
        out_biz_no.is_some() || optional(params, "refund_fee").is_some() || optional(params, "gmt_refund").is_some();
    let (event, event_id) = if is_refund {
        // A refund without its own request number was made with the order number as that number.
        let refund_no = out_biz_no.clone().unwrap_or_else(|| order_no.clone());
        let event = NotificationEvent::Refund {
            order_no,
            refund_no: refund_no.clone(),
            state: RefundState::Succeeded,
            gateway_refund_id: None,
            amount_fen: amount(params, "refund_fee")?,
            refunded_at: time(params, "gmt_refund")?,
        };
        (event, format!("{notify_id}/{}/{refund_no}", status.as_str()))
    } else {
        let paid_at = time(params, "gmt_payment")?;
        let event = NotificationEvent::Payment {
            order_no,
            state: status.payment_state(false),
            gateway_txn_id: trade_no,
            amount_fen: amount(params, "total_amount")?,
            paid_at,
        };
        (event, format!("{notify_id}/{}", status.as_str()))
    };
    Ok(VerifiedNotification {
        event,
        merchant_id: app_id,
        event_id,
        fields: params.to_json(),
    })
}
