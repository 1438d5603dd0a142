//! Notifications: verify the signature over the raw body, decrypt the resource with the APIv3
//! key, then say what it means (gateways.md §2.5). The body is parsed only after it verified,
//! and from the very bytes that were verified (never re-serialised).

use chrono::{DateTime, Utc};

use super::aead::ApiV3Key;
use super::status::{EventType, RefundStatus, TradeState};
use super::transformers::{parse_time, wire_to_fen, NotificationEnvelope, RefundNotice, Transaction};
use super::verify::{SignedHeaders, WechatPayKeys};
use crate::gateway::{Ack, IncomingNotification, NotificationEvent, NotifyError, VerifiedNotification};

/// The only resource algorithm WeChat Pay uses.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";

/// A notification whose signature verified and whose resource decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNotification {
    pub envelope: NotificationEnvelope,
    /// The decrypted resource, exactly as it decrypted (JSON text).
    pub plaintext: String,
}

/// Steps 1–3: signature, algorithm, decryption.
pub fn open(
    keys: &WechatPayKeys,
    apiv3_key: Option<&ApiV3Key>,
    n: IncomingNotification<'_>,
    now: DateTime<Utc>,
) -> Result<OpenedNotification, NotifyError> {
    let headers = SignedHeaders::from_lookup(|name| n.header(name))?;
    keys.verify(&headers, n.body, now)?;
    let envelope: NotificationEnvelope = serde_json::from_slice(n.body)
        .map_err(|e| NotifyError::Malformed(format!("the body is not a WeChat Pay notification: {e}")))?;
    let r = &envelope.resource;
    if r.algorithm != ALGORITHM {
        return Err(NotifyError::Decrypt(format!(
            "resource algorithm {:?} is not {ALGORITHM}",
            r.algorithm
        )));
    }
    let key =
        apiv3_key.ok_or_else(|| NotifyError::Decrypt("the resource is encrypted and no APIv3 key was given".into()))?;
    let plaintext = key
        .decrypt_to_string(&r.nonce, &r.associated_data, &r.ciphertext)
        .map_err(|e| NotifyError::Decrypt(e.to_string()))?;
    Ok(OpenedNotification { envelope, plaintext })
}

/// Steps 4–5: what the decrypted resource says, in our terms.
pub fn interpret(opened: &OpenedNotification) -> Result<VerifiedNotification, NotifyError> {
    let env = &opened.envelope;
    let plaintext: serde_json::Value = serde_json::from_str(&opened.plaintext)
        .map_err(|e| NotifyError::Malformed(format!("the decrypted resource is not JSON: {e}")))?;
    let fields = serde_json::json!({
        "id": env.id,
        "create_time": env.create_time,
        "event_type": env.event_type,
        "resource_type": env.resource_type,
        "summary": env.summary,
        "resource": plaintext,
    });
    let malformed = |what: &str, e: String| NotifyError::Malformed(format!("{what}: {e}"));
    let event_type = EventType::parse(&env.event_type);
    let (event, merchant_id) = match &event_type {
        EventType::TransactionSuccess => {
            let t: Transaction = serde_json::from_str(&opened.plaintext)
                .map_err(|e| malformed("the transaction resource", e.to_string()))?;
            let state = TradeState::parse(&t.trade_state).map_err(|e| malformed("the transaction", e))?;
            if state != TradeState::Success {
                return Err(NotifyError::Malformed(format!(
                    "TRANSACTION.SUCCESS carries trade_state {}",
                    t.trade_state
                )));
            }
            let total = t
                .amount
                .as_ref()
                .and_then(|a| a.total)
                .ok_or_else(|| NotifyError::Malformed("the transaction has no amount.total".into()))?;
            let event = NotificationEvent::Payment {
                order_no: t.out_trade_no.clone(),
                state: state.payment_state(),
                gateway_txn_id: t
                    .transaction_id
                    .clone()
                    .ok_or_else(|| NotifyError::Malformed("the transaction has no transaction_id".into()))?,
                amount_fen: wire_to_fen(total, "amount.total").map_err(|e| malformed("the transaction", e))?,
                paid_at: t
                    .success_time
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| malformed("success_time", e))?,
            };
            (event, t.mchid)
        }
        EventType::RefundSuccess | EventType::RefundAbnormal | EventType::RefundClosed => {
            let r: RefundNotice =
                serde_json::from_str(&opened.plaintext).map_err(|e| malformed("the refund resource", e.to_string()))?;
            let status = RefundStatus::parse(&r.refund_status).map_err(|e| malformed("the refund", e))?;
            if Some(status) != event_type.refund_status() {
                return Err(NotifyError::Malformed(format!(
                    "{} carries refund_status {}",
                    env.event_type, r.refund_status
                )));
            }
            let event = NotificationEvent::Refund {
                order_no: r.out_trade_no.clone(),
                refund_no: r.out_refund_no.clone(),
                state: status.refund_state(),
                gateway_refund_id: Some(r.refund_id.clone()),
                amount_fen: wire_to_fen(r.amount.refund, "amount.refund").map_err(|e| malformed("the refund", e))?,
                refunded_at: r
                    .success_time
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| malformed("success_time", e))?,
            };
            (event, r.mchid)
        }
        EventType::Other(name) => {
            return Err(NotifyError::Malformed(format!(
                "verified and decrypted, but event type {name} is neither a payment \
                 (TRANSACTION.SUCCESS) nor a refund (REFUND.SUCCESS/ABNORMAL/CLOSED)"
            )))
        }
    };
    Ok(VerifiedNotification {
        event,
        merchant_id,
        event_id: env.id.clone(),
        fields,
    })
}

/// Verify, decrypt and interpret.
pub fn verify_notification(
    keys: &WechatPayKeys,
    apiv3_key: Option<&ApiV3Key>,
    n: IncomingNotification<'_>,
    now: DateTime<Utc>,
) -> Result<VerifiedNotification, NotifyError> {
    interpret(&open(keys, apiv3_key, n, now)?)
}

/// The answer WeChat Pay requires: 200 with no body once stored; otherwise a 5xx with
/// `{"code":"FAIL","message":…}` so that it delivers again.
pub fn ack(accepted: bool) -> Ack {
    if accepted {
        Ack {
            status: 200,
            content_type: None,
            body: Vec::new(),
        }
    } else {
        fail(500, "the notification could not be stored; deliver it again")
    }
}

/// The answer for a notification that was refused: 401 for a signature problem (gateways.md
/// §2.5), 400 for a malformed or undecryptable one; always with the FAIL JSON.
pub fn ack_refused(error: &NotifyError) -> Ack {
    let status = match error {
        NotifyError::MissingSignature(_)
        | NotifyError::BadSignature(_)
        | NotifyError::StaleTimestamp { .. }
        | NotifyError::UnknownKey(_) => 401,
        NotifyError::Malformed(_) | NotifyError::Decrypt(_) => 400,
    };
    fail(status, &error.to_string())
}

fn fail(status: u16, message: &str) -> Ack {
    Ack {
        status,
        content_type: Some("application/json"),
        body: serde_json::to_vec(&serde_json::json!({"code": "FAIL", "message": message}))
            .unwrap_or_else(|_| b"{\"code\":\"FAIL\",\"message\":\"FAIL\"}".to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_acknowledged_with_no_body_and_failure_with_the_fail_json() {
        let ok = ack(true);
        assert_eq!((ok.status, ok.body.is_empty(), ok.content_type), (200, true, None));
        let no = ack(false);
        assert_eq!(no.status, 500);
        let v: serde_json::Value = serde_json::from_slice(&no.body).unwrap();
        assert_eq!(v["code"], "FAIL");
        assert!(v["message"].as_str().unwrap().contains("again"));
        assert_eq!(ack_refused(&NotifyError::BadSignature("x".into())).status, 401);
        assert_eq!(ack_refused(&NotifyError::Decrypt("x".into())).status, 400);
    }
}
