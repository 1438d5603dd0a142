//! Alipay notifications: our own fixtures in the real wire format (made by
//! fixtures/alipay/make-notifications.py, independently of this crate, signed with the
//! sandbox's platform key), verified by `inspect_notification` and by the client alike, and the
//! pitfalls that break them refused.

use chrono::Utc;
use meterpay_gateways::alipay::{inspect_notification, AlipayClient, AlipayConfig};
use meterpay_gateways::gateway::{
    IncomingNotification, NotificationEvent, NotifyError, PaymentGateway, VerifiedNotification,
};
use meterpay_gateways::outcome::{PaymentState, RefundState};

const UTF8: &[u8] = include_bytes!("../../fixtures/alipay/notify_trade_success_utf8.txt");
const GBK: &[u8] = include_bytes!("../../fixtures/alipay/notify_trade_success_gbk.txt");
const REFUND: &[u8] = include_bytes!("../../fixtures/alipay/notify_refund_partial_utf8.txt");
/// The sandbox's ("Alipay's") public key in the three forms a merchant may hold it.
const KEY_BARE: &[u8] = include_bytes!("../../fixtures/sandbox/alipay/alipay_public_key.txt");
const KEY_PEM: &[u8] = include_bytes!("../../fixtures/sandbox/alipay/alipay_public_key.pem");
const KEY_CERT: &[u8] = include_bytes!("../../fixtures/sandbox/alipay/alipayCertPublicKey_RSA2.crt");
const APP_KEY: &[u8] = include_bytes!("../../fixtures/alipay/app_private_key_pkcs1.txt");

fn inspect(key: &[u8], body: &[u8]) -> Result<VerifiedNotification, NotifyError> {
    inspect_notification(key, None, IncomingNotification { headers: &[], body }, Utc::now())
}

fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = std::str::from_utf8(body).unwrap();
    assert!(s.contains(from), "{from}");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn a_payment_notification_verifies_with_the_alipay_key_in_any_form() {
    for key in [KEY_BARE, KEY_PEM, KEY_CERT] {
        let v = inspect(key, UTF8).unwrap();
        assert_eq!(v.merchant_id, "2021000000000001");
        assert_eq!(v.event_id, "2024011500222100011200000000000001/TRADE_SUCCESS");
        assert_eq!(
            v.event,
            NotificationEvent::Payment {
                order_no: "WE20240115000001".into(),
                state: PaymentState::Paid,
                gateway_txn_id: "2024011522001400000000000001".into(),
                amount_fen: 8880,
                paid_at: Some("2024-01-15T02:00:11Z".parse().unwrap()),
            }
        );
        assert_eq!(v.fields["subject"], "水费2024-01 3栋1201");
        // Decoded once: passback_params is what we sent (itself URL-encoded), not decoded again.
        assert_eq!(v.fields["passback_params"], "account%3D3-1201%26bill%3D2024-01");
    }
}

#[test]
fn a_gbk_notification_is_decoded_and_verified_in_gbk() {
    let gbk = inspect(KEY_BARE, GBK).unwrap();
    let utf8 = inspect(KEY_BARE, UTF8).unwrap();
    assert_eq!(gbk.event, utf8.event);
    assert_eq!(gbk.fields["subject"], "水费2024-01 3栋1201");
    assert_eq!(gbk.fields["charset"], "GBK");
    // Read as UTF-8 (the charset ignored) it cannot verify.
    let lied = replace(GBK, "charset=GBK", "charset=utf-8");
    assert!(inspect(KEY_BARE, &lied).is_err());
}

#[test]
fn a_partial_refund_notification_is_a_refund_event() {
    let v = inspect(KEY_PEM, REFUND).unwrap();
    assert_eq!(
        v.event_id,
        "2024011500222153000011200000000002/TRADE_SUCCESS/RF20240115000001"
    );
    assert_eq!(
        v.event,
        NotificationEvent::Refund {
            order_no: "WE20240115000001".into(),
            refund_no: "RF20240115000001".into(),
            state: RefundState::Succeeded,
            gateway_refund_id: None,
            amount_fen: 2000,
            refunded_at: Some("2024-01-15T07:30:00Z".parse().unwrap()),
        }
    );
}

#[test]
fn the_client_verifies_exactly_as_inspect_notification_does() {
    let client =
        AlipayClient::new(AlipayConfig::public_key_mode("2021000000000001", APP_KEY, KEY_BARE).unwrap()).unwrap();
    for body in [UTF8, GBK, REFUND] {
        let by_client = client.verify_notification(IncomingNotification { headers: &[], body }, Utc::now());
        assert_eq!(by_client, inspect(KEY_BARE, body));
    }
    let bad = replace(UTF8, "total_amount=88.80", "total_amount=8.88");
    assert_eq!(
        client.verify_notification(
            IncomingNotification {
                headers: &[],
                body: &bad
            },
            Utc::now()
        ),
        inspect(KEY_BARE, &bad)
    );
    let ack = client.ack(true);
    assert_eq!((ack.status, ack.body.as_slice()), (200, &b"success"[..]));
    assert_ne!(client.ack(false).body, b"success");
}

#[test]
fn a_changed_amount_or_status_does_not_verify() {
    for (from, to) in [
        ("total_amount=88.80", "total_amount=8.88"),
        ("trade_status=TRADE_SUCCESS", "trade_status=TRADE_FINISHED"),
        ("out_trade_no=WE20240115000001", "out_trade_no=WE20240115000002"),
        ("app_id=2021000000000001", "app_id=2021000000000002"),
    ] {
        assert!(
            matches!(
                inspect(KEY_BARE, &replace(UTF8, from, to)),
                Err(NotifyError::BadSignature(_))
            ),
            "{from}"
        );
    }
}

#[test]
fn html_escaping_or_decoding_twice_breaks_the_signature() {
    // A framework that HTML-escapes input turns the quotes of fund_bill_list into &quot;.
    let escaped = replace(UTF8, "%22amount%22", "%26quot%3Bamount%26quot%3B");
    assert!(matches!(inspect(KEY_BARE, &escaped), Err(NotifyError::BadSignature(_))));
    // Decoding passback_params a second time before verifying changes what was signed.
    let twice = replace(
        UTF8,
        "account%253D3-1201%2526bill%253D2024-01",
        "account%3D3-1201%26bill%3D2024-01",
    );
    assert!(matches!(inspect(KEY_BARE, &twice), Err(NotifyError::BadSignature(_))));
}

#[test]
fn unsigned_foreign_or_malformed_notifications_say_why() {
    let s = std::str::from_utf8(UTF8).unwrap();
    let unsigned: String = s
        .split('&')
        .filter(|p| !p.starts_with("sign="))
        .collect::<Vec<_>>()
        .join("&");
    assert!(matches!(
        inspect(KEY_BARE, unsigned.as_bytes()),
        Err(NotifyError::MissingSignature(_))
    ));
    let rsa1 = replace(UTF8, "sign_type=RSA2", "sign_type=RSA");
    assert!(matches!(inspect(KEY_BARE, &rsa1), Err(NotifyError::BadSignature(m)) if m.contains("RSA2")));
    let other_key = include_bytes!("../../fixtures/alipay/app_public_key.pem");
    assert!(matches!(inspect(other_key, UTF8), Err(NotifyError::BadSignature(_))));
    assert!(matches!(inspect(b"not a key", UTF8), Err(NotifyError::UnknownKey(_))));
    assert!(matches!(inspect(KEY_BARE, b""), Err(NotifyError::Malformed(_))));
    assert!(matches!(
        inspect(KEY_BARE, b"{\"charset\":\"utf-8\",\"x\":[1]}"),
        Err(NotifyError::Malformed(_))
    ));
    let dup = [UTF8, b"&out_trade_no=X"].concat();
    assert!(matches!(inspect(KEY_BARE, &dup), Err(NotifyError::Malformed(m)) if m.contains("twice")));
}
