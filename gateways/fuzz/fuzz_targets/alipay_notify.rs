#![no_main]
//! Alipay notification parsing and verification on arbitrary bodies: decoding (form or JSON,
//! UTF-8 or GBK), the V1/V2 sign content and RSA2 verification must never panic, and nothing
//! but a body signed by the key may verify. Also feeds the synchronous-answer splitter.
use libfuzzer_sys::fuzz_target;
use meterpay_gateways::alipay::signature::{parse_notification, split_response, verify_response};
use meterpay_gateways::gateway::IncomingNotification;

const KEY: &[u8] = include_bytes!("../../../fixtures/sandbox/alipay/alipay_public_key.txt");

fuzz_target!(|data: &[u8]| {
    let v = meterpay_gateways::alipay::inspect_notification(
        KEY,
        None,
        IncomingNotification { headers: &[], body: data },
        chrono::Utc::now(),
    );
    // A fuzzer cannot forge RSA2: only the unchanged fixture could verify.
    assert!(v.is_err() || data.windows(4).any(|w| w == b"sign"));
    if let Ok(p) = parse_notification(data) {
        let _ = p.sign_content(false);
        let _ = p.to_json();
    }
    if let Ok(r) = split_response(data, "alipay.trade.query") {
        let key = meterpay_gateways::crypto::load_public_key(KEY).unwrap();
        let _ = verify_response(&r, &key);
    }
});
