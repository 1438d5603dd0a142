#![no_main]
//! The UnionPay settlement parser on arbitrary payloads (base64 / zlib / zip) and on arbitrary
//! ZM and ZME text: errors, never panics.
use libfuzzer_sys::fuzz_target;
use meterpay_gateways::unionpay::settlement;

fuzz_target!(|data: &[u8]| {
    let _ = settlement::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let day = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        if let Ok(records) = settlement::parse_zm(text, day, "777290058110048") {
            let rows = settlement::normalise(&records);
            assert!(rows.iter().all(|r| r.amount_fen > 0));
        }
        let _ = settlement::parse_zme(text, day);
    }
});
