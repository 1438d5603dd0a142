#![no_main]
//! WeChat Pay notification parsing and verification on arbitrary input: the input is
//! `headers\0body` (one `Name: value` per line) or, without a NUL, a body under the headers of
//! our own fixture notification. Nothing may panic; nothing forged may verify.
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use meterpay_gateways::gateway::IncomingNotification;
use meterpay_gateways::wechatpay::notify::{interpret, OpenedNotification};
use meterpay_gateways::wechatpay::transformers::NotificationEnvelope;
use meterpay_gateways::wechatpay::{inspect_notification, ApiV3Key};

const CERT: &[u8] = include_bytes!("../../../fixtures/sandbox/wechatpay/platform_old_cert.pem");
const APIV3: &[u8] = include_bytes!("../../../fixtures/wechatpay/apiv3_key.txt");
const HEADERS: &str = include_str!("../../../fixtures/wechatpay/notify_transaction_success.headers.txt");
const BODY: &[u8] = include_bytes!("../../../fixtures/wechatpay/notify_transaction_success.body.json");

fn headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let now = Utc.timestamp_opt(1764554410, 0).unwrap();
    let (hs, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (headers(&String::from_utf8_lossy(&data[..i])), &data[i + 1..]),
        None => (headers(HEADERS), data),
    };
    let r = inspect_notification(CERT, Some(APIV3), IncomingNotification { headers: &hs, body }, now);
    if r.is_ok() && body != BODY {
        // Only the genuine body verifies under the fixture's signature.
        let genuine_headers = headers(HEADERS);
        assert!(hs != genuine_headers, "a changed body verified under the genuine signature");
    }
    // The steps after verification, on whatever the input says.
    if let Ok(envelope) = serde_json::from_slice::<NotificationEnvelope>(data) {
        let _ = interpret(&OpenedNotification { envelope: envelope.clone(), plaintext: String::from_utf8_lossy(data).into_owned() });
        if let Ok(key) = ApiV3Key::new(APIV3) {
            let r = &envelope.resource;
            let _ = key.decrypt(&r.nonce, &r.associated_data, &r.ciphertext);
        }
    }
});
