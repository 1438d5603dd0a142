#![no_main]
//! UnionPay back notifications: form decoding, signer-certificate checks and signature
//! verification on arbitrary bytes (must never panic), and the synchronous-answer scanner.
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meterpay_gateways::gateway::IncomingNotification;
use meterpay_gateways::unionpay::{transformers, TrustStore, UnionPayClient};

const BUNDLE: &[u8] = concat!(
    include_str!("../../../fixtures/sandbox/unionpay/root.pem"),
    include_str!("../../../fixtures/sandbox/unionpay/middle.pem")
)
.as_bytes();

fuzz_target!(|data: &[u8]| {
    // The trust store is built once (what inspect_notification builds per call), so the fuzzer
    // spends its time in the notification path.
    static TRUST: OnceLock<TrustStore> = OnceLock::new();
    let trust = TRUST.get_or_init(|| TrustStore::from_bundle(BUNDLE, None).expect("the sandbox anchors"));
    let now = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap();
    let _ = UnionPayClient::verify_with(trust, IncomingNotification { headers: &[], body: data }, now);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(fields) = transformers::parse_answer(text) {
            // Writing what was parsed never grows it (only empty segments are dropped).
            assert!(transformers::write_answer(&fields).len() <= text.len());
        }
    }
});
