#![no_main]
//! The Alipay bill parser on arbitrary bytes (zip or bare CSV, any encoding): it answers rows or
//! a clear error, never panics, and every row it returns is normalised (positive amounts,
//! refunds with a refund number, payments without).
use libfuzzer_sys::fuzz_target;
use meterpay_gateways::settlement::RowKind;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = meterpay_gateways::alipay::settlement::parse(data) {
        for r in &f.rows {
            assert!(r.amount_fen > 0);
            assert_eq!(r.refund_no.is_some(), r.kind == RowKind::Refund);
        }
        assert_eq!(f.file_sha256.len(), 64);
    }
});
