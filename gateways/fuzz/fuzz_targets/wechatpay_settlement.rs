#![no_main]
//! The WeChat Pay trade-bill parser on arbitrary bytes: it may refuse, never panic, and what it
//! accepts holds only positive amounts and rows that agree with the totals.
use libfuzzer_sys::fuzz_target;
use meterpay_gateways::settlement::SettlementTotals;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = meterpay_gateways::wechatpay::settlement::parse(data) {
        assert!(f.rows.iter().all(|r| r.amount_fen > 0));
        assert_eq!(f.totals, SettlementTotals::of(&f.rows));
    }
});
