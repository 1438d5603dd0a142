//! The project's own WeChat Pay fixtures (`fixtures/wechatpay/`): notifications signed with the
//! sandbox's platform key and encrypted with the test APIv3 key, and trade bills in the three
//! layouts, checked against values written here. They depend on nothing in `../shared`.
//!
//! Regenerate them with `WECHATPAY_WRITE_FIXTURES=1 cargo test -p meterpay-gateways --test
//! wechatpay_fixtures` (deterministic: fixed timestamps and nonces; RSA PKCS#1 v1.5 and AES-GCM
//! with a fixed nonce give the same bytes every time).

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use meterpay_gateways::crypto::load_private_key;
use meterpay_gateways::gateway::{IncomingNotification, NotificationEvent};
use meterpay_gateways::outcome::{PaymentState, RefundState};
use meterpay_gateways::settlement::{RowKind, SettlementError};
use meterpay_gateways::wechatpay::settlement::{parse, parse_with_type, BillType};
use meterpay_gateways::wechatpay::sign::response_message;
use meterpay_gateways::wechatpay::{inspect_notification, ApiV3Key};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(dir().join(rel)).unwrap_or_else(|e| panic!("fixtures/{rel}: {e}"))
}

const TS: i64 = 1764554400; // 2025-12-01T02:00:00Z
const PAY_PLAINTEXT: &str = r#"{"appid":"wx5a1b2c3d4e5f6a7b","mchid":"1900000109","out_trade_no":"W20251201000001","transaction_id":"4200000000202512010000000001","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2025-12-01T09:59:58+08:00","payer":{"openid":"o6d3b0d4e8c1f2a5b7c9e0f1a2b3c4"},"amount":{"total":8880,"payer_total":8880,"currency":"CNY","payer_currency":"CNY"}}"#;
const REFUND_PLAINTEXT: &str = r#"{"mchid":"1900000109","out_trade_no":"W20251201000001","transaction_id":"4200000000202512010000000001","out_refund_no":"R20251201000001","refund_id":"50320251201000000000000000001","refund_status":"SUCCESS","success_time":"2025-12-01T10:05:00+08:00","user_received_account":"支付用户零钱","amount":{"total":8880,"refund":1000,"payer_total":8880,"payer_refund":1000}}"#;

fn make_notification(
    id: &str,
    event: &str,
    summary: &str,
    original_type: &str,
    nonce: &str,
    plaintext: &str,
    header_nonce: &str,
) -> (Vec<u8>, String) {
    let key = ApiV3Key::new(&read("wechatpay/apiv3_key.txt")).unwrap();
    let ciphertext = key.encrypt(nonce, original_type, plaintext.as_bytes()).unwrap();
    let body = format!(
        r#"{{"id":"{id}","create_time":"2025-12-01T10:00:00+08:00","resource_type":"encrypt-resource","event_type":"{event}","summary":"{summary}","resource":{{"original_type":"{original_type}","algorithm":"AEAD_AES_256_GCM","ciphertext":"{ciphertext}","associated_data":"{original_type}","nonce":"{nonce}"}}}}"#
    )
    .into_bytes();
    let platform = load_private_key(&read("sandbox/wechatpay/platform_old_key.pem")).unwrap();
    let sig = platform.sign_sha256_base64(&response_message(&TS.to_string(), header_nonce, &body));
    let headers = format!(
        "Content-Type: application/json\nWechatpay-Nonce: {header_nonce}\nWechatpay-Timestamp: {TS}\nWechatpay-Serial: 3A8F7C2E91B04D56E8A1F03C7B9D2E4F5A6B7C8D\nWechatpay-Signature-Type: WECHATPAY2-SHA256-RSA2048\nWechatpay-Signature: {sig}\n"
    );
    (body, headers)
}

fn bill_all() -> String {
    let h = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    let rows = [
        "`2025-12-01 09:59:58,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202512010000000001,`W20251201000001,`o6d3b0d4e8c1f2a5b7c9e0f1a2b3c4,`NATIVE,`SUCCESS,`OTHERS,`CNY,`88.80,`0.00,`0,`0,`0.00,`0.00,`,`,`2025-11 水电费, 3-2-1201,`,`0.53280,`0.60%,`88.80,`0.00,`",
        "`2025-12-01 12:30:00,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202512010000000002,`W20251201000002,`o1f2e3d4c5b6a79808f7e6d5c4b3a2,`JSAPI,`SUCCESS,`OTHERS,`CNY,`100.00,`0.00,`0,`0,`0.00,`0.00,`,`,`2025-11 电费 5-1-302,`,`0.60000,`0.60%,`100.00,`0.00,`",
        "`2025-12-01 10:05:00,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202512010000000001,`W20251201000001,`o6d3b0d4e8c1f2a5b7c9e0f1a2b3c4,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50320251201000000000000000001,`R20251201000001,`10.00,`0.00,`ORIGINAL,`SUCCESS,`2025-11 水电费, 3-2-1201,`,`-0.06000,`0.60%,`0.00,`10.00,`",
    ];
    let s = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
    format!(
        "\u{feff}{h}\r\n{}\r\n{s}\r\n`3,`188.80,`10.00,`0.00,`1.07280,`188.80,`10.00\r\n",
        rows.join("\r\n")
    )
}

fn bill_success() -> String {
    let h = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
    let row = "`2025-12-01 12:30:00,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202512010000000002,`W20251201000002,`o1f2e3d4c5b6a79808f7e6d5c4b3a2,`MWEB,`SUCCESS,`OTHERS,`CNY,`100.00,`0.00,`2025-11 电费 5-1-302,`,`0.60000,`0.60%,`100.00,`";
    let s = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
    format!("\u{feff}{h}\r\n{row}\r\n{s}\r\n`1,`100.00,`0.00,`0.00,`0.60000,`100.00,`0.00\r\n")
}

fn bill_refund() -> String {
    let h = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    let row = "`2025-12-01 09:59:58,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202512010000000001,`W20251201000001,`o6d3b0d4e8c1f2a5b7c9e0f1a2b3c4,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`2025-12-01 10:04:55,`2025-12-01 10:05:00,`50320251201000000000000000001,`R20251201000001,`10.00,`0.00,`ORIGINAL,`SUCCESS,`2025-11 水电费, 3-2-1201,`,`-0.06000,`0.60%,`0.00,`10.00,`";
    let s = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
    format!("\u{feff}{h}\r\n{row}\r\n{s}\r\n`1,`0.00,`10.00,`0.00,`-0.06000,`0.00,`10.00\r\n")
}

#[test]
fn regenerate_fixtures_when_asked() {
    if std::env::var_os("WECHATPAY_WRITE_FIXTURES").is_none() {
        return;
    }
    let w = |rel: &str, bytes: &[u8]| std::fs::write(dir().join(rel), bytes).unwrap();
    let (b, h) = make_notification(
        "5e2c1b7a-0d4f-5a9e-8c3b-20251201000001",
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        "pXm2Qe8Lr4Tz",
        PAY_PLAINTEXT,
        "N8WQ4K2ZC7P1R5TX3M9B6D0FJ2H8L4VS",
    );
    w("wechatpay/notify_transaction_success.body.json", &b);
    w("wechatpay/notify_transaction_success.headers.txt", h.as_bytes());
    let (b, h) = make_notification(
        "5e2c1b7a-0d4f-5a9e-8c3b-20251201000002",
        "REFUND.SUCCESS",
        "退款成功",
        "refund",
        "Rf7Kd2Wq9Ln3",
        REFUND_PLAINTEXT,
        "A3LK9Q2W7E5R1T8Y4U6I0O2P9S3D5F7G",
    );
    w("wechatpay/notify_refund_success.body.json", &b);
    w("wechatpay/notify_refund_success.headers.txt", h.as_bytes());
    w("wechatpay/tradebill_ALL.csv", bill_all().as_bytes());
    w("wechatpay/tradebill_SUCCESS.csv", bill_success().as_bytes());
    w("wechatpay/tradebill_REFUND.csv", bill_refund().as_bytes());
}

fn headers(text: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(text)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(TS + 10, 0).unwrap()
}

#[test]
fn our_payment_notification_fixture_verifies_with_the_sandbox_certificate_and_decrypts() {
    let body = read("wechatpay/notify_transaction_success.body.json");
    let h = headers(&read("wechatpay/notify_transaction_success.headers.txt"));
    let cert = read("sandbox/wechatpay/platform_old_cert.pem");
    let key = read("wechatpay/apiv3_key.txt");
    let v = inspect_notification(
        &cert,
        Some(&key),
        IncomingNotification {
            headers: &h,
            body: &body,
        },
        now(),
    )
    .unwrap();
    assert_eq!(
        v.event,
        NotificationEvent::Payment {
            order_no: "W20251201000001".into(),
            state: PaymentState::Paid,
            gateway_txn_id: "4200000000202512010000000001".into(),
            amount_fen: 8880,
            paid_at: Some("2025-12-01T01:59:58Z".parse().unwrap()),
        }
    );
    assert_eq!(
        (v.merchant_id.as_str(), v.event_id.as_str()),
        ("1900000109", "5e2c1b7a-0d4f-5a9e-8c3b-20251201000001")
    );
    // The other platform certificate did not sign it.
    let other = read("sandbox/wechatpay/platform_new_cert.pem");
    assert!(inspect_notification(
        &other,
        Some(&key),
        IncomingNotification {
            headers: &h,
            body: &body
        },
        now()
    )
    .is_err());
}

#[test]
fn our_refund_notification_fixture_verifies_and_says_the_refund_succeeded() {
    let body = read("wechatpay/notify_refund_success.body.json");
    let h = headers(&read("wechatpay/notify_refund_success.headers.txt"));
    let v = inspect_notification(
        &read("sandbox/wechatpay/platform_old_cert.pem"),
        Some(&read("wechatpay/apiv3_key.txt")),
        IncomingNotification {
            headers: &h,
            body: &body,
        },
        now(),
    )
    .unwrap();
    assert_eq!(
        v.event,
        NotificationEvent::Refund {
            order_no: "W20251201000001".into(),
            refund_no: "R20251201000001".into(),
            state: RefundState::Succeeded,
            gateway_refund_id: Some("50320251201000000000000000001".into()),
            amount_fen: 1000,
            refunded_at: Some("2025-12-01T02:05:00Z".parse().unwrap()),
        }
    );
}

#[test]
fn our_trade_bill_fixtures_parse_in_their_layouts() {
    let (all, t) = parse_with_type(&read("wechatpay/tradebill_ALL.csv")).unwrap();
    assert_eq!(t, BillType::All);
    type Row<'a> = (RowKind, &'a str, Option<&'a str>, i64, &'a str, Option<i64>);
    let got: Vec<Row<'_>> = all
        .rows
        .iter()
        .map(|r| {
            (
                r.kind,
                r.order_no.as_str(),
                r.refund_no.as_deref(),
                r.amount_fen,
                r.fee.as_str(),
                r.fee_fen,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (RowKind::Payment, "W20251201000001", None, 8880, "0.53280", None),
            (RowKind::Payment, "W20251201000002", None, 10_000, "0.60000", Some(60)),
            (
                RowKind::Refund,
                "W20251201000001",
                Some("R20251201000001"),
                1000,
                "-0.06000",
                Some(-6)
            ),
        ]
    );
    assert_eq!(all.rows[0].time.to_string(), "2025-12-01 09:59:58");
    let (s, t) = parse_with_type(&read("wechatpay/tradebill_SUCCESS.csv")).unwrap();
    assert_eq!((t, s.rows.len(), s.rows[0].amount_fen), (BillType::Success, 1, 10_000));
    let (r, t) = parse_with_type(&read("wechatpay/tradebill_REFUND.csv")).unwrap();
    assert_eq!(
        (t, r.rows.len(), r.rows[0].time.to_string()),
        (BillType::Refund, 1, "2025-12-01 10:04:55".to_string())
    );
}

#[test]
fn every_truncation_of_our_bill_is_refused() {
    let full = read("wechatpay/tradebill_ALL.csv");
    // Cutting the file anywhere, even just before its final line break, is refused.
    for cut in 1..full.len() {
        let r = parse(&full[..cut]);
        assert!(
            matches!(
                r,
                Err(SettlementError::Truncated(_)
                    | SettlementError::SummaryMismatch(_)
                    | SettlementError::BadRow { .. }
                    | SettlementError::Encoding { .. })
            ),
            "cut at {cut}: {r:?}"
        );
    }
}
