//! The published Alipay test vectors (test-vectors.md A1–A4, D1) reproduced, and the public
//! sample files verified or parsed. Keys and samples are read from `../shared/samples/` (they
//! are not copied into the repository); when that folder is absent each test prints a loud
//! `!!! SKIPPED` line. The expected values are written here, by us.

use std::path::PathBuf;

use meterpay_gateways::alipay::cert::{cert_sn, root_cert_sn};
use meterpay_gateways::alipay::signature::{
    parse_notification, request_sign_content, split_response, verify_notification_params, verify_response, ContentRule,
    NotifyParams,
};
use meterpay_gateways::alipay::{inspect_notification, settlement, AlipayClient, AlipayConfig};
use meterpay_gateways::crypto::{load_private_key, load_public_key};
use meterpay_gateways::gateway::{IncomingNotification, NotificationEvent, NotifyError};
use meterpay_gateways::outcome::PaymentState;
use meterpay_gateways::settlement::RowKind;

/// `../shared/samples/<rel>` from the worktree root, or `None` (with a loud line) when absent.
fn shared(rel: &str, test: &str) -> Option<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateways crate sits in the worktree")
        .to_path_buf();
    let path = root.join("../shared/samples").join(rel);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!(
                "!!! SKIPPED {test}: {} is absent (CI always has ../shared)",
                path.display()
            );
            None
        }
    }
}

/// A1's Alipay public key, inline in the Node SDK's test ("notifyAlipayPublicKeyV1").
const A1_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB";

/// A1's content to verify, computed by us (sign and sign_type removed, sorted).
const A1_CONTENT: &str = "app_id=2019073166072302&auth_app_id=2019073166072302&buyer_id=2088102534368455&buyer_logon_id=xud***@126.com&buyer_pay_amount=0.10&charset=utf-8&fund_bill_list=[{\"amount\":\"0.10\",\"fundChannel\":\"ALIPAYACCOUNT\"}]&gmt_create=2019-08-15 15:56:22&gmt_payment=2019-08-15 15:56:24&invoice_amount=0.10&notify_id=2019081500222155624068450559358070&notify_time=2019-08-15 15:56:25&notify_type=trade_status_sync&out_trade_no=20190815155618536-564-57&point_amount=0.00&receipt_amount=0.10&seller_email=z97-yuquerevenue@service.aliyun.com&seller_id=2088531891668739&subject=语雀空间 500人规模&total_amount=0.10&trade_no=2019081522001468450512505578&trade_status=TRADE_SUCCESS&version=1.0";

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn form_of(params: &NotifyParams) -> Vec<u8> {
    params
        .pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                meterpay_gateways::alipay::signature::form_encode(k.as_bytes()),
                meterpay_gateways::alipay::signature::form_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

#[test]
fn a1_the_real_trade_notification_verifies_only_without_sign_type() {
    let Some(json) = shared("alipay/notify_trade_status_sync_alipay-sdk-nodejs-all.json", "a1") else {
        return;
    };
    let key = load_public_key(A1_KEY.as_bytes()).unwrap();
    let params = parse_notification(&json).unwrap();
    assert_eq!(String::from_utf8(params.sign_content(false)).unwrap(), A1_CONTENT);
    assert_eq!(verify_notification_params(&params, &key).unwrap(), ContentRule::V1);

    // The same notification as Alipay POSTs it (form-encoded) verifies the same way, and reads
    // as a payment of 0.10 yuan.
    let body = form_of(&params);
    let v = inspect_notification(
        A1_KEY.as_bytes(),
        None,
        IncomingNotification {
            headers: &[],
            body: &body,
        },
        now(),
    )
    .unwrap();
    assert_eq!(v.merchant_id, "2019073166072302");
    assert_eq!(v.event_id, "2019081500222155624068450559358070/TRADE_SUCCESS");
    match v.event {
        NotificationEvent::Payment {
            order_no,
            state,
            gateway_txn_id,
            amount_fen,
            paid_at,
        } => {
            assert_eq!(order_no, "20190815155618536-564-57");
            assert_eq!(state, PaymentState::Paid);
            assert_eq!(gateway_txn_id, "2019081522001468450512505578");
            assert_eq!(amount_fen, 10);
            assert_eq!(paid_at.unwrap().to_rfc3339(), "2019-08-15T07:56:24+00:00");
        }
        other => panic!("not a payment: {other:?}"),
    }
    assert_eq!(v.fields["subject"], "语雀空间 500人规模");

    // Keeping sign_type in the content does not verify: the V1 rule is what makes it pass.
    let with_sign_type = params.sign_content(true);
    let sign = params.text("sign").unwrap();
    assert!(key.verify_sha256_base64(&with_sign_type, sign).is_err());
}

#[test]
fn a1_the_other_notification_in_the_sdk_test_fails() {
    // "verify fail" in the same test file (app_id 2018121762595097), with the A1 key.
    let body = b"app_id=2018121762595097&auth_app_id=2018121762595097&buyer_id=2088512613526436&buyer_logon_id=152****6706&buyer_pay_amount=0.01&charset=utf-8&fund_bill_list=%5B%7B%22amount%22%3A%220.01%22%2C%22fundChannel%22%3A%22PCREDIT%22%7D%5D&gmt_create=2019-05-23+14%3A13%3A56&gmt_payment=2019-05-23+14%3A17%3A13&invoice_amount=0.01&notify_id=2019052300222141714026431019971405&notify_time=2019-05-23+14%3A17%3A14&notify_type=trade_status_sync&out_trade_no=tpxy23962362669658&point_amount=0.00&receipt_amount=0.01&seller_email=myapp%40alitest.com&seller_id=2088331578818800&sign=T946S2qyNFAXLhAaRgNMmatxH6SO3MyWYFnTamQOgW1iAcheL%2FZz%2BVoizwvEc6mTEwYewvvKS1wNkMQ1oEajMUHv9%2BcXQ9IFvU%2FqKS9Ktvw5xHvCaK0fj7LsVcQ7VxfyT3kSvXUDfKDP4cHSPuSZKwM2ybkzr53bIH9OUTpTQd2d3J0rbdf76OoUt%2BXF9vwqj7OVE7AGjH2HPWp842DgL%2FYVy4qeA9N2uFKRevT3YUskjaRxuI%2FE66reNjTMFhbjEqGLKvMcDD4BaQXnibq9ojAj60589fBwzKk3yWsVQmqGfksMQoheVMtZ3lAw4o2ty3TFngbVFFLwgx8FDpBZ9Q%3D%3D&sign_type=RSA2&subject=tpxy2222896485&total_amount=0.01&trade_no=111111112019052322001426431037869358&trade_status=TRADE_SUCCESS&version=1.0";
    let err = inspect_notification(
        A1_KEY.as_bytes(),
        None,
        IncomingNotification { headers: &[], body },
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, NotifyError::BadSignature(_)), "{err:?}");
}

/// A2's parameters (the Node SDK's "verify sign should not delete sign_type").
fn a2_body(service_code: &str) -> Vec<u8> {
    let pairs = [
        ("app_id", "2017122801303261"),
        ("charset", "UTF-8"),
        ("commodity_order_id", "2019030800000018079639"),
        ("contactor", "技术支持测试的公司"),
        ("merchant_pid", "2088721996721370"),
        ("method", "alipay.open.servicemarket.order.notify"),
        ("name", "技术支持测试的公司"),
        ("notify_id", "2019030800222102023008121054923345"),
        ("notify_time", "2019-03-08 10:20:23"),
        ("notify_type", "servicemarket_order_notify"),
        ("order_item_num", "1"),
        ("order_ticket", "29b1c37d99ab48c5bd5bdaeaeaefbB37"),
        ("order_time", "2019-03-08 10:20:08"),
        ("phone", "17826894615"),
        ("service_code", service_code),
        ("sign", "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzFGRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVwXxOtsuB+bstra+W7aw9x9DvkKgdSRw=="),
        ("sign_type", "RSA2"),
        ("timestamp", "2019-03-08 10:20:23"),
        ("title", "麦禾商城模版"),
        ("total_price", "0.00"),
        ("version", "1.0"),
    ];
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                meterpay_gateways::alipay::signature::form_encode(v.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

#[test]
fn a2_the_service_market_notification_verifies_only_with_sign_type() {
    let Some(pem) = shared(
        "vectors/alipay/alipay-sdk-nodejs-all_alipay-notify-sign-public-key-v2.pem",
        "a2",
    ) else {
        return;
    };
    let key = load_public_key(&pem).unwrap();
    let params = parse_notification(&a2_body("58621634")).unwrap();
    assert_eq!(verify_notification_params(&params, &key).unwrap(), ContentRule::V2);
    assert!(
        key.verify_sha256_base64(&params.sign_content(false), params.text("sign").unwrap())
            .is_err(),
        "without sign_type it does not verify"
    );

    let changed = parse_notification(&a2_body("58621634111")).unwrap();
    assert!(matches!(
        verify_notification_params(&changed, &key),
        Err(NotifyError::BadSignature(_))
    ));

    // It verifies, but it is not a trade notification, and says so.
    let err = inspect_notification(
        &pem,
        None,
        IncomingNotification {
            headers: &[],
            body: &a2_body("58621634"),
        },
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, NotifyError::Malformed(m) if m.contains("servicemarket_order_notify")),
        "{err:?}"
    );
}

#[test]
fn a3_the_sync_response_verifies_over_the_raw_node_text() {
    let (Some(body), Some(pem)) = (
        shared("alipay/sync_response_open_file_upload_alipay-sdk-nodejs-all.json", "a3"),
        shared("vectors/alipay/alipay-sdk-nodejs-all_alipay-public-key.pem", "a3"),
    ) else {
        return;
    };
    let body: &[u8] = body.strip_suffix(b"\n").unwrap_or(&body);
    let key = load_public_key(&pem).unwrap();
    let raw = split_response(body, "alipay.open.file.upload").unwrap();
    assert_eq!(
        std::str::from_utf8(raw.node).unwrap(),
        r#"{"code":"10000","msg":"Success","file_id":"CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"}"#
    );
    verify_response(&raw, &key).unwrap();

    // Re-serialised JSON (here: with a space after each colon) is not what Alipay signed.
    let reserialised = r#"{"alipay_open_file_upload_response":{"code": "10000","msg": "Success","file_id": "CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"},"sign":"SIGN"}"#
        .replace("SIGN", raw.sign.as_deref().unwrap());
    let r2 = split_response(reserialised.as_bytes(), "alipay.open.file.upload").unwrap();
    assert!(verify_response(&r2, &key).is_err());

    // The client reads it the same way (a client whose Alipay key is A3's).
    let Some(app_key) = shared("vectors/alipay/alipay-sdk-nodejs-all_app-private-key.pem", "a3") else {
        return;
    };
    let client = AlipayClient::new(AlipayConfig::public_key_mode("2021000122671080", &app_key, &pem).unwrap()).unwrap();
    let v = client.read_answer_value("alipay.open.file.upload", body).unwrap();
    assert_eq!(v["file_id"], "CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr");
}

#[test]
fn a4_certificate_mode_serial_numbers_match_the_sdk() {
    let (Some(app), Some(alipay), Some(root)) = (
        shared(
            "vectors/alipay/alipay-sdk-nodejs-all_appCertPublicKey_2021001161683774.crt",
            "a4",
        ),
        shared(
            "vectors/alipay/alipay-sdk-nodejs-all_alipayCertPublicKey_RSA2.crt",
            "a4",
        ),
        shared("vectors/alipay/alipay-sdk-nodejs-all_alipayRootCert.crt", "a4"),
    ) else {
        return;
    };
    assert_eq!(cert_sn(&app).unwrap(), "866efef280dec9137a87d047ac446315");
    assert_eq!(cert_sn(&alipay).unwrap(), "7513daaaa48aa3ba2e4018d84402479c");
    assert_eq!(
        root_cert_sn(&root).unwrap(),
        "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"
    );
    let key = meterpay_gateways::alipay::cert::cert_public_key(&alipay).unwrap();
    let spki = meterpay_gateways::crypto::b64(
        &rsa::pkcs8::EncodePublicKey::to_public_key_der(key.inner())
            .unwrap()
            .into_vec(),
    );
    assert!(spki.starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKC"), "{spki}");
}

const D1_CONTENT: &str = "app_id=2021000122671080&biz_content={\"out_trade_no\":\"WE20240115000001\",\"total_amount\":\"88.80\",\"subject\":\"水费2024-01 3栋1201\"}&charset=utf-8&format=JSON&method=alipay.trade.precreate&notify_url=https://example.com/pay/alipay/notify&sign_type=RSA2&timestamp=2024-01-15 10:20:30&version=1.0";
const D1_SIGN: &str = "IesdgK1SO0gxaQfxghtbfZxUvVHCkVvKf6lrMWGGIf+nUVUjsYNWP0WjFjTTaEluc0MRtCiDfqx7OAW6Mt1PkAQXvWx8lXxo9xj+ZDde+qqipeyvEOdIvSIxN0LHeY8lP41c8FgYx6AiHHNbotd7JZHczB4iorUJXAEfNBuS+qc4oZa6xEYGwghJ89b3NTPMH6IKRK+P//FUlBXggvD03H94BczfW0QpguumBjtl+ZF8LB1jm99h0B6E/omu9+TRNvErdohbPaa0faelNRvWMxjv9RBC2z+zpTYSs1qCS+IOvbQhl+MnP+DbX/5cbQPiX2oG30LlzP0APOPs+e/qvg==";

#[test]
fn d1_the_client_signs_a_precreate_request_exactly_as_derived() {
    let (Some(pkcs1), Some(pkcs8), Some(public)) = (
        shared("vectors/alipay/alipay-sdk-nodejs-all_app-private-key.pem", "d1"),
        shared("vectors/alipay/alipay-sdk-nodejs-all_app-private-key-pkcs8.pem", "d1"),
        shared("vectors/alipay/alipay-sdk-nodejs-all_alipay-public-key.pem", "d1"),
    ) else {
        return;
    };
    let biz = r#"{"out_trade_no":"WE20240115000001","total_amount":"88.80","subject":"水费2024-01 3栋1201"}"#;
    // The request's timestamp is 2024-01-15 10:20:30 Beijing time.
    let at = chrono::DateTime::parse_from_rfc3339("2024-01-15T10:20:30+08:00")
        .unwrap()
        .with_timezone(&chrono::Utc);
    // The same key as PKCS#1 PEM, PKCS#8 PEM, and each as bare base64 without armour.
    let bare = |pem: &[u8]| -> Vec<u8> {
        String::from_utf8_lossy(pem)
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
            .into_bytes()
    };
    for key in [pkcs1.clone(), pkcs8.clone(), bare(&pkcs1), bare(&pkcs8)] {
        let client =
            AlipayClient::new(AlipayConfig::public_key_mode("2021000122671080", &key, &public).unwrap()).unwrap();
        let params = client.signed_params(
            "alipay.trade.precreate",
            biz,
            Some("https://example.com/pay/alipay/notify"),
            None,
            at,
        );
        let content = request_sign_content(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(content, D1_CONTENT);
        let sign = &params.iter().find(|(k, _)| k == "sign").unwrap().1;
        assert_eq!(sign, D1_SIGN);
    }
    // And the published PKCS#1 and PKCS#8 files are the same key.
    assert_eq!(
        load_private_key(&pkcs1).unwrap().public_key(),
        load_private_key(&pkcs8).unwrap().public_key()
    );
}

#[test]
fn the_sample_trade_detail_parses_in_utf8_and_in_gbk() {
    let (Some(utf8), Some(gbk)) = (
        shared("alipay/trade_detail_20190916_utf8_reconstructed.csv", "sample bill"),
        shared("alipay/trade_detail_20190916_gbk_transcoded.csv", "sample bill"),
    ) else {
        return;
    };
    let a = settlement::parse(&utf8).unwrap();
    let b = settlement::parse(&gbk).unwrap();
    assert_eq!(a.rows, b.rows, "the same rows whatever the encoding");
    assert_ne!(a.file_sha256, b.file_sha256);
    assert_eq!(a.rows.len(), 10);
    assert_eq!(a.totals.payment_count, 6);
    assert_eq!(a.totals.payment_fen, 6);
    assert_eq!(a.totals.refund_count, 4);
    assert_eq!(a.totals.refund_fen, 4);
    assert_eq!(a.totals.fee_fen, 0);
    let first_refund = &a.rows[1];
    assert_eq!(first_refund.kind, RowKind::Refund);
    assert_eq!(first_refund.order_no, "service_1568601259302");
    assert_eq!(first_refund.refund_no.as_deref(), Some("re_test_1568602607356"));
    assert_eq!(first_refund.gateway_txn_id, "2019091622001458860515315453");
    assert_eq!(first_refund.amount_fen, 1);
    assert_eq!(first_refund.fee, "0.00");
    assert_eq!(
        first_refund.time.to_string(),
        "2019-09-16 10:56:48",
        "the refund's own time"
    );
    assert!(first_refund
        .original_line
        .starts_with("2019091622001458860515315453\t,service_1568601259302\t,退款"));
    let last = a.rows.last().unwrap();
    assert_eq!(last.order_no, "qd_201909161844073417CB0wPzR");
    assert_eq!(last.refund_no, None);
}
