//! The UnionPay settlement parser on our own file in the real format
//! (fixtures/unionpay/filetransfer_270101_777290058110048.b64, written by make_settlement.py
//! beside it, independently of the sandbox's writer), and every refusal it owes.

use std::io::{Read, Write};

use chrono::NaiveDate;
use meterpay_gateways::settlement::{RowKind, SettlementError};
use meterpay_gateways::unionpay::settlement::{
    decode_payload, parse, parse_file, parse_zm, parse_zme, ZME_LINE_CHARS, ZM_LINE_CHARS,
};
use meterpay_gateways::unionpay::TxnType;
use meterpay_gateways::{crypto, unionpay};

const FIXTURE: &[u8] = include_bytes!("../../fixtures/unionpay/filetransfer_270101_777290058110048.b64");
const MER: &str = "777290058110048";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
}

/// The fixture's ZM text (decoded from GBK).
fn zm_text() -> String {
    let zip = decode_payload(FIXTURE).unwrap();
    let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut e = a.by_name(&format!("INN27010188ZM_{MER}")).unwrap();
    let mut b = Vec::new();
    e.read_to_end(&mut b).unwrap();
    encoding_rs::GBK.decode(&b).0.into_owned()
}

/// Package entries the way the file transfer does: base64(zlib(zip)), entries GBK.
fn payload(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut zip_bytes = Vec::new();
    {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        for (name, text) in entries {
            z.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            z.write_all(&encoding_rs::GBK.encode(text).0).unwrap();
        }
        z.finish().unwrap();
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&zip_bytes).unwrap();
    crypto::b64(&enc.finish().unwrap()).into_bytes()
}

fn line(text: &str, n: usize) -> String {
    text.split("\r\n").nth(n - 1).unwrap().to_string()
}

/// Replace the characters of 1-based `field` (by the ZM widths) in a ZM line.
fn with_field(l: &str, field: usize, value: &str) -> String {
    let widths = unionpay::settlement::ZM_WIDTHS;
    let start: usize = widths[..field - 1].iter().sum::<usize>() + field - 1;
    let w = widths[field - 1];
    let mut chars: Vec<char> = l.chars().collect();
    let padded: Vec<char> = format!("{value:<w$}").chars().collect();
    chars.splice(start..start + w, padded);
    chars.into_iter().collect()
}

/// kind, order, refund, gateway txn id, amount, fee text, fee fen, time.
type Summary<'a> = (
    RowKind,
    &'a str,
    Option<&'a str>,
    &'a str,
    i64,
    &'a str,
    Option<i64>,
    String,
);

#[test]
fn the_file_transfer_payload_parses_into_payments_and_refunds_with_exact_fees() {
    let f = parse_file(FIXTURE).unwrap();
    assert_eq!(f.settle_date, day());
    assert_eq!(f.mer_id, MER);
    assert_eq!(
        f.ignored_entries,
        vec!["README.txt".to_string()],
        "unknown entries are ignored, not fatal"
    );
    let s = &f.settlement;
    assert_eq!(
        s.file_sha256,
        crypto::sha256_hex(FIXTURE),
        "the hash is of the bytes as downloaded"
    );
    let summary: Vec<Summary> = s
        .rows
        .iter()
        .map(|r| {
            (
                r.kind,
                r.order_no.as_str(),
                r.refund_no.as_deref(),
                r.gateway_txn_id.as_str(),
                r.amount_fen,
                r.fee.as_str(),
                r.fee_fen,
                r.time.to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                RowKind::Payment,
                "W20261231000001",
                None,
                "512612312305000000001",
                12345,
                "0.74",
                Some(74),
                "2026-12-31 23:05:00".into()
            ),
            (
                RowKind::Payment,
                "W20270101000002",
                None,
                "512701011000000000002",
                8880,
                "0.53",
                Some(53),
                "2027-01-01 10:00:00".into()
            ),
            (
                RowKind::Refund,
                "W20261231000001",
                Some("R20270101000003"),
                "512612312305000000001",
                2345,
                "-0.14",
                Some(-14),
                "2027-01-01 11:30:00".into()
            ),
            (
                RowKind::Refund,
                "W20261220000077",
                Some("R20270101000004"),
                "512612200900000000077",
                500,
                "-0.03",
                Some(-3),
                "2027-01-01 12:00:00".into()
            ),
            (
                RowKind::Refund,
                "W20270101000002",
                Some("U20270101000005"),
                "512701011000000000002",
                8880,
                "-0.53",
                Some(-53),
                "2027-01-01 15:00:00".into()
            ),
        ]
    );
    assert_eq!(s.totals.payment_count, 2);
    assert_eq!(s.totals.payment_fen, 21_225);
    assert_eq!(s.totals.refund_count, 3);
    assert_eq!(s.totals.refund_fen, 11_725);
    assert_eq!(s.totals.fee_fen, 57);
    assert!(s.rows.iter().all(|r| r.original_line.chars().count() == ZM_LINE_CHARS));

    // UnionPay's own detail survives too.
    assert_eq!(f.records[4].txn_type, TxnType::ConsumeUndo);
    assert_eq!(f.records[1].net_fen, 8827);
    assert_eq!(f.records[2].settle_amount_fen, -2345);
    assert_eq!(
        f.adjustments.len(),
        1,
        "the ZME line is kept apart for a person to review"
    );
    assert_eq!(f.adjustments[0].amount_fen, 1000);
    assert_eq!(f.adjustments[0].fields[21], "调账");
    assert_eq!(f.adjustments[0].original_line.chars().count(), ZME_LINE_CHARS);
}

#[test]
fn lines_are_sliced_by_character_so_chinese_in_a_field_does_not_shift_the_rest() {
    let text = zm_text();
    let l2 = line(&text, 2);
    assert!(l2.contains("水电收费"));
    assert_eq!(l2.chars().count(), 607);
    assert!(
        encoding_rs::GBK.encode(&l2).0.len() > 607,
        "in GBK bytes the line is longer"
    );
    let recs = parse_zm(&text, day(), MER).unwrap();
    assert_eq!(recs[1].order_id, "W20270101000002");
    assert_eq!(recs[1].merchant_reserved, "");
}

#[test]
fn the_payload_is_accepted_as_base64_as_zlib_or_as_the_zip_alike() {
    let zip = decode_payload(FIXTURE).unwrap();
    let zlib = crypto::unb64(std::str::from_utf8(FIXTURE).unwrap()).unwrap();
    let wrapped: String = std::str::from_utf8(FIXTURE)
        .unwrap()
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let rows = parse(FIXTURE).unwrap().rows;
    for form in [zip, zlib, wrapped.into_bytes()] {
        assert_eq!(parse(&form).unwrap().rows, rows);
    }
}

#[test]
fn a_year_boundary_puts_31_december_in_the_previous_year() {
    let text = zm_text();
    let recs = parse_zm(&text, day(), MER).unwrap();
    assert_eq!(recs[0].trace_time.to_string(), "2026-12-31 23:05:00");
    // The same line in a mid-year file stays in that year.
    let mid = NaiveDate::from_ymd_opt(2027, 12, 31).unwrap();
    assert_eq!(
        parse_zm(&line(&text, 1), mid, MER).unwrap()[0].trace_time.to_string(),
        "2027-12-31 23:05:00"
    );
}

fn refusal(l: &str) -> String {
    match parse_zm(l, day(), MER) {
        Err(SettlementError::BadRow { line, reason }) => {
            assert_eq!(line, 1);
            reason
        }
        other => panic!("expected a refused line, got {other:?}"),
    }
}

#[test]
fn malformed_zm_lines_are_refused_naming_the_field() {
    let good = line(&zm_text(), 1);
    assert!(parse_zm(&good, day(), MER).is_ok());
    let cases: Vec<(String, &str)> = vec![
        (with_field(&good, 7, "00000123.45"), "交易金额"),
        (with_field(&good, 7, "000000000000"), "more than zero"),
        (with_field(&good, 5, "1332230500"), "MMDDhhmmss"),
        (with_field(&good, 4, "00001X"), "系统跟踪号"),
        (with_field(&good, 16, "X000000000074"), "C or D"),
        (with_field(&good, 16, "0000000000074"), "C or D"),
        (with_field(&good, 17, "C00000001234"), "C or D"),
        (with_field(&good, 20, "02"), "not a consume"),
        (
            with_field(&with_field(&good, 20, "04"), 27, ""),
            "must name the payment",
        ),
        (with_field(&good, 28, "777290058110049"), "is not the merchant"),
        (with_field(&good, 12, ""), "orderId"),
        (with_field(&good, 10, "512-12312305000000001"), "queryId"),
        (format!("{good} "), "607"),
        (good.chars().take(600).collect::<String>() + "\r\n", "607"),
    ];
    for (l, expect) in cases {
        let reason = refusal(&l);
        assert!(reason.contains(expect), "{reason:?} should mention {expect:?}");
    }
    // A separator that is not a space.
    let mut chars: Vec<char> = good.chars().collect();
    chars[3] = 'X';
    assert!(refusal(&chars.into_iter().collect::<String>()).contains("not followed by a space"));
}

#[test]
fn a_file_cut_short_is_reported_truncated() {
    let text = zm_text();
    let cut: String = text.chars().take(ZM_LINE_CHARS * 2 + 2 + 100).collect();
    assert!(matches!(parse_zm(&cut, day(), MER), Err(SettlementError::Truncated(_))));
    let zlib = crypto::unb64(std::str::from_utf8(FIXTURE).unwrap()).unwrap();
    let short = crypto::b64(&zlib[..zlib.len() / 2]);
    assert!(
        matches!(parse(short.as_bytes()), Err(SettlementError::Truncated(_))),
        "{:?}",
        parse(short.as_bytes())
    );
}

#[test]
fn malformed_zme_lines_are_refused() {
    let zme = "E74 00049992    00049992    000006 0101160000 6216***********0018 000000001000 4900 07 01 000002 0101100000      ";
    assert!(matches!(
        parse_zme(zme, day()),
        Err(SettlementError::Truncated(_)) | Err(SettlementError::BadRow { .. })
    ));
    let f = parse_file(FIXTURE).unwrap();
    let good = f.adjustments[0].original_line.clone();
    assert_eq!(parse_zme(&good, day()).unwrap().len(), 1);
    let bad = good.replacen("000000001000", "00000000100X", 1);
    match parse_zme(&bad, day()) {
        Err(SettlementError::BadRow { reason, .. }) => assert!(reason.contains("交易金额"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn broken_containers_are_refused_with_what_is_wrong() {
    let zm = zm_text();
    let name = format!("INN27010188ZM_{MER}");
    assert!(parse(&payload(&[(&name, &zm)])).is_ok(), "a ZM entry alone is a file");
    assert!(matches!(
        parse(&payload(&[("INN27010188ZME_777290058110048", "")])),
        Err(SettlementError::Archive(m)) if m.contains("no INN")
    ));
    assert!(matches!(
        parse(&payload(&[(&name, &zm), (&format!("{name}.txt"), &zm)])),
        Err(SettlementError::Archive(m)) if m.contains("two ZM")
    ));
    assert!(matches!(
        parse(&payload(&[(&name, &zm), ("INN27010288ZME_777290058110048", "")])),
        Err(SettlementError::Archive(m)) if m.contains("different days")
    ));
    assert!(matches!(
        parse(b"not base64 at all!"),
        Err(SettlementError::Encoding { .. })
    ));
    assert!(matches!(
        parse(crypto::b64(b"plain text").as_bytes()),
        Err(SettlementError::Archive(_))
    ));
    assert!(matches!(parse(b""), Err(SettlementError::Truncated(_))));
    assert!(matches!(
        parse(&[0xff, 0xfe, 0x00]),
        Err(SettlementError::Encoding { .. })
    ));

    // Bytes that are not GBK.
    let mut zip_bytes = Vec::new();
    {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        z.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"S22 \xff\xff").unwrap();
        z.finish().unwrap();
    }
    assert!(matches!(
        parse(&zip_bytes),
        Err(SettlementError::Encoding { encoding: "GBK", .. })
    ));
}

#[test]
fn an_empty_day_is_a_file_with_no_rows() {
    let f = parse(&payload(&[
        (&format!("INN27010188ZM_{MER}"), ""),
        (&format!("INN27010188ZME_{MER}"), ""),
    ]))
    .unwrap();
    assert!(f.rows.is_empty());
    assert_eq!(f.totals.payment_count + f.totals.refund_count, 0);
}
