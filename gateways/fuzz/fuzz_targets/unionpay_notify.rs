#![no_main]
//! UnionPay back notifications: form decoding, signer-certificate checks and signature
//! verification on arbitrary bytes (must never panic), and the synchronous-answer scanner.
use libfuzzer_sys::fuzz_target;
use meterpay_gateways::gateway::IncomingNotification;
use meterpay_gateways::unionpay::{inspect_notification, transformers};

const BUNDLE: &[u8] = concat!(
    include_str!("../../../fixtures/sandbox/unionpay/root.pem"),
    include_str!("../../../fixtures/sandbox/unionpay/middle.pem")
)
.as_bytes();

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap();
    let _ = inspect_notification(BUNDLE, None, IncomingNotification { headers: &[], body: data }, now);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(fields) = transformers::parse_answer(text) {
            // What parses writes back to the same text.
            assert!(transformers::write_answer(&fields).len() <= text.len());
        }
    }
});
