#![no_main]
// PLACEHOLDER: replaced by the unionpay_settlement target (see gateways/fuzz/Cargo.toml).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
