//! The Alipay bill parser against our own files in the real format (fixtures/alipay/, made by
//! hand and GBK-encoded, zipped with GBK entry names), the writer's files parsed back, and every
//! kind of bad file refused with a clear error.

use std::io::Write;

use chrono::{NaiveDate, NaiveDateTime};
use meterpay_gateways::alipay::settlement::{self, write_detail, write_zip, BillRow};
use meterpay_gateways::settlement::{RowKind, SettlementError};

const FIXTURE_ZIP: &[u8] = include_bytes!("../../fixtures/alipay/20880000000012340156_20240115.csv.zip");
const FIXTURE_DETAIL_GBK: &[u8] = include_bytes!("../../fixtures/alipay/20880000000012340156_20240115_detail_gbk.csv");

fn t(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn gbk(s: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(s).0.into_owned()
}

fn detail_text() -> String {
    encoding_rs::GBK.decode(FIXTURE_DETAIL_GBK).0.into_owned()
}

/// A zip with UTF-8-flagged names (as the zip crate writes them), for files we construct.
fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn summary_of_fixture() -> Vec<u8> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(FIXTURE_ZIP)).unwrap();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        if f.name_raw().ends_with(&gbk("(汇总).csv")) {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            return v;
        }
    }
    panic!("the fixture has a summary entry");
}

#[test]
fn the_fixture_bill_zip_parses_into_normalised_rows_with_exact_fees() {
    let f = settlement::parse(FIXTURE_ZIP).unwrap();
    assert_eq!(f.rows.len(), 4);
    let r = &f.rows[0];
    assert_eq!(r.order_no, "WE20240115000001");
    assert_eq!(r.refund_no, None);
    assert_eq!(r.gateway_txn_id, "2024011522001400000000000001");
    assert_eq!(r.kind, RowKind::Payment);
    assert_eq!(r.amount_fen, 8880);
    assert_eq!(r.fee, "0.53");
    assert_eq!(r.fee_fen, Some(53));
    assert_eq!(r.time, t("2024-01-15 10:00:11"));
    assert!(r
        .original_line
        .starts_with("2024011522001400000000000001\t,WE20240115000001\t,交易\t,水费2024-01 3栋1201,"));
    assert!(r.original_line.ends_with(",0.53,0.00,3栋1201"), "{:?}", r.original_line);

    let refund = &f.rows[2];
    assert_eq!(refund.kind, RowKind::Refund);
    assert_eq!(refund.order_no, "WE20240115000001");
    assert_eq!(refund.refund_no.as_deref(), Some("RF20240115000001"));
    assert_eq!(
        refund.amount_fen, 2000,
        "refund rows are negative in the file, positive here"
    );
    assert_eq!(refund.fee, "-0.12");
    assert_eq!(refund.fee_fen, Some(-12));
    assert_eq!(
        refund.time,
        t("2024-01-15 15:30:00"),
        "the refund's time, not the trade's creation"
    );

    let quoted = &f.rows[3];
    assert_eq!(quoted.order_no, "WE20240115000003");
    assert_eq!(quoted.amount_fen, 1);
    assert!(
        quoted.original_line.contains("\"水电费,合并缴纳\""),
        "a quoted subject with a comma stays one field"
    );

    assert_eq!(f.totals.payment_count, 3);
    assert_eq!(f.totals.payment_fen, 8880 + 12050 + 1);
    assert_eq!(f.totals.refund_count, 1);
    assert_eq!(f.totals.refund_fen, 2000);
    assert_eq!(f.totals.fee_fen, 53 + 72 - 12);
    assert_eq!(f.file_sha256, meterpay_gateways::crypto::sha256_hex(FIXTURE_ZIP));
}

#[test]
fn the_bare_gbk_detail_file_parses_to_the_same_rows_as_the_zip() {
    let zip = settlement::parse(FIXTURE_ZIP).unwrap();
    let bare = settlement::parse(FIXTURE_DETAIL_GBK).unwrap();
    assert_eq!(zip.rows, bare.rows);
    assert_eq!(zip.totals, bare.totals);
}

fn rows(n: usize) -> Vec<BillRow> {
    (0..n)
        .map(|i| {
            let refund = i % 5 == 4;
            let amount = 100 + (i as i64 * 37) % 100_000;
            let s = if refund { -1 } else { 1 };
            BillRow {
                trade_no: format!("20240115220014{:014}", i / 5 * 5),
                out_trade_no: format!("WE2024011500{:06}", i / 5 * 5),
                kind: if refund { RowKind::Refund } else { RowKind::Payment },
                subject: if i % 7 == 0 {
                    "水电费, 合并".into()
                } else {
                    format!("水费 {i}")
                },
                created: t("2024-01-15 08:00:00"),
                finished: t("2024-01-15 08:00:00") + chrono::Duration::seconds(i as i64),
                store_id: if i % 2 == 0 { "MP001".into() } else { String::new() },
                store_name: String::new(),
                operator: String::new(),
                terminal: String::new(),
                buyer: "*张三(138****0000)".into(),
                order_amount_fen: s * amount,
                received_fen: s * amount,
                merchant_discount_fen: 0,
                refund_no: refund.then(|| format!("RF{:014}", i)),
                fee_fen: s * (amount * 6 / 1000),
                remark: String::new(),
            }
        })
        .collect()
}

#[test]
fn a_written_bill_parses_back_to_the_rows_it_was_written_from() {
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let written = rows(53);
    let zip = write_zip("20880000000012340156", day, &written, t("2024-01-16 05:00:00"));
    let f = settlement::parse(&zip).unwrap();
    assert_eq!(f.rows.len(), written.len());
    for (w, r) in written.iter().zip(&f.rows) {
        assert_eq!(r.order_no, w.out_trade_no);
        assert_eq!(r.gateway_txn_id, w.trade_no);
        assert_eq!(r.kind, w.kind);
        assert_eq!(r.amount_fen, w.order_amount_fen.abs());
        assert_eq!(r.fee_fen, Some(w.fee_fen));
        assert_eq!(r.refund_no, w.refund_no);
        assert_eq!(r.time, w.finished);
    }
}

#[test]
fn the_written_zip_has_gbk_entry_names_without_the_utf8_flag_summary_first() {
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let zip = write_zip("20880000000012340156", day, &rows(3), t("2024-01-16 05:00:00"));
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(&zip)).unwrap();
    let names: Vec<Vec<u8>> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name_raw().to_vec())
        .collect();
    assert_eq!(names[0], gbk("20880000000012340156_20240115_业务明细(汇总).csv"));
    assert_eq!(names[1], gbk("20880000000012340156_20240115_业务明细.csv"));
    // General-purpose flag of the first local header: bit 11 (UTF-8) clear.
    assert_eq!(u16::from_le_bytes([zip[6], zip[7]]) & 0x0800, 0);
    let mut detail = Vec::new();
    std::io::Read::read_to_end(&mut z.by_index(1).unwrap(), &mut detail).unwrap();
    assert!(std::str::from_utf8(&detail).is_err(), "the content is GBK, not UTF-8");
    assert!(encoding_rs::GBK.decode(&detail).0.contains("#支付宝业务明细查询"));
}

#[test]
fn entry_order_does_not_matter() {
    let detail = FIXTURE_DETAIL_GBK.to_vec();
    let summary = summary_of_fixture();
    let a = zip_of(&[
        ("x_业务明细.csv", detail.clone()),
        ("x_业务明细(汇总).csv", summary.clone()),
    ]);
    let b = zip_of(&[
        ("x_业务明细(汇总).csv", summary),
        ("readme.txt", b"hi".to_vec()),
        ("x_业务明细.csv", detail),
    ]);
    assert_eq!(settlement::parse(&a).unwrap().rows, settlement::parse(&b).unwrap().rows);
}

#[test]
fn an_unknown_column_is_refused_by_name() {
    let text = detail_text().replace("分润（元）", "神秘列（元）");
    let err = settlement::parse(&gbk(&text)).unwrap_err();
    assert_eq!(err, SettlementError::UnknownColumn("神秘列（元）".into()));
}

#[test]
fn a_missing_required_column_is_refused_by_name() {
    let mut text = String::new();
    for line in detail_text().lines() {
        // Drop the 23rd column (服务费) from the header and every data row.
        if line.starts_with('#') {
            text.push_str(line);
        } else {
            let cells: Vec<&str> = line.split(',').collect();
            let kept: Vec<&str> = cells
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != cells.len() - 3)
                .map(|(_, c)| *c)
                .collect();
            text.push_str(&kept.join(","));
        }
        text.push('\n');
    }
    let err = settlement::parse(&gbk(&text)).unwrap_err();
    assert_eq!(err, SettlementError::MissingColumn("服务费（元）".into()));
}

#[test]
fn columns_are_found_by_name_not_position() {
    // Swap two columns in the header and in every row: the rows read the same.
    let swap = |line: &str| -> String {
        if line.starts_with('#') {
            return line.to_string();
        }
        let mut cells: Vec<String> = Vec::new();
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        for f in rdr.records().next().unwrap().unwrap().iter() {
            cells.push(if f.contains(',') {
                format!("\"{f}\"")
            } else {
                f.to_string()
            });
        }
        cells.swap(0, 1);
        cells.swap(11, 22);
        cells.join(",")
    };
    let text: String = detail_text()
        .lines()
        .map(|l| swap(l.trim_end_matches('\r')) + "\n")
        .collect();
    let swapped = settlement::parse(&gbk(&text)).unwrap();
    let original = settlement::parse(FIXTURE_DETAIL_GBK).unwrap();
    for (a, b) in swapped.rows.iter().zip(&original.rows) {
        assert_eq!(
            (&a.order_no, &a.gateway_txn_id, a.amount_fen, &a.fee),
            (&b.order_no, &b.gateway_txn_id, b.amount_fen, &b.fee)
        );
    }
}

#[test]
fn bytes_that_are_neither_utf8_nor_gbk_are_refused_with_their_place() {
    let mut bytes = FIXTURE_DETAIL_GBK.to_vec();
    let pos = bytes.len() - 40;
    bytes[pos] = 0xFF; // 0xFF is never valid in GBK
    match settlement::parse(&bytes).unwrap_err() {
        SettlementError::Encoding { encoding, detail } => {
            assert_eq!(encoding, "GBK");
            assert!(detail.contains("byte offset 1690 (line 12)"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_truncated_download_is_refused() {
    let err = settlement::parse(&FIXTURE_ZIP[..FIXTURE_ZIP.len() / 2]).unwrap_err();
    assert!(
        matches!(&err, SettlementError::Archive(m) if m.contains("truncated")),
        "{err:?}"
    );
    // A detail file cut after its rows has no end line nor totals.
    let text = detail_text();
    let cut = &text[..text
        .find("#-----------------------------------------业务明细列表结束")
        .unwrap()];
    let err = settlement::parse(&gbk(cut)).unwrap_err();
    assert!(matches!(&err, SettlementError::Truncated(_)), "{err:?}");
    // Cut inside the totals.
    let cut = &text[..text.find("#退款合计").unwrap()];
    let err = settlement::parse(&gbk(cut)).unwrap_err();
    assert_eq!(err, SettlementError::Truncated("the #退款合计 line is missing".into()));
}

#[test]
fn footer_totals_that_disagree_with_the_rows_are_refused() {
    let text = detail_text().replace("#交易合计：3笔", "#交易合计：4笔");
    let err = settlement::parse(&gbk(&text)).unwrap_err();
    assert_eq!(
        err,
        SettlementError::SummaryMismatch("#交易合计 states 4 rows, the file holds 3".into())
    );
    let text = detail_text().replace("商家实收共209.31元", "商家实收共209.30元");
    assert!(matches!(settlement::parse(&gbk(&text)), Err(SettlementError::SummaryMismatch(m)) if m.contains("209.30")));
    let text = detail_text().replace("商家实收退款共-20.00元", "商家实收退款共-19.00元");
    assert!(matches!(
        settlement::parse(&gbk(&text)),
        Err(SettlementError::SummaryMismatch(_))
    ));
}

#[test]
fn a_summary_that_disagrees_with_the_detail_is_refused() {
    let summary = encoding_rs::GBK.decode(&summary_of_fixture()).0.into_owned();
    for (from, to, what) in [
        ("合计,,3,1,", "合计,,2,1,", "交易订单总笔数"),
        ("合计,,3,1,", "合计,,3,2,", "退款订单总笔数"),
        (",0.00,1.13,0.00,188.18\r\n#", ",0.00,1.14,0.00,188.18\r\n#", "服务费"),
        ("合计,,3,1,189.31,189.31", "合计,,3,1,189.31,189.30", "商家实收"),
    ] {
        assert!(summary.contains(from), "{from}");
        let changed = summary.replacen(from, to, 1);
        let zip = zip_of(&[
            ("x_业务明细.csv", FIXTURE_DETAIL_GBK.to_vec()),
            ("x_业务明细(汇总).csv", gbk(&changed)),
        ]);
        match settlement::parse(&zip).unwrap_err() {
            SettlementError::SummaryMismatch(m) => assert!(m.contains(what), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let no_total = summary
        .lines()
        .filter(|l| !l.starts_with("合计"))
        .collect::<Vec<_>>()
        .join("\n");
    let zip = zip_of(&[
        ("x_业务明细.csv", FIXTURE_DETAIL_GBK.to_vec()),
        ("x_业务明细(汇总).csv", gbk(&no_total)),
    ]);
    assert_eq!(
        settlement::parse(&zip).unwrap_err(),
        SettlementError::Truncated("the summary file has no 合计 row".into())
    );
}

#[test]
fn a_zip_without_detail_or_summary_is_refused() {
    let only_detail = zip_of(&[("x_业务明细.csv", FIXTURE_DETAIL_GBK.to_vec())]);
    assert!(matches!(settlement::parse(&only_detail), Err(SettlementError::Archive(m)) if m.contains("汇总")));
    let only_summary = zip_of(&[("x_业务明细(汇总).csv", summary_of_fixture())]);
    assert!(matches!(settlement::parse(&only_summary), Err(SettlementError::Archive(m)) if m.contains("业务明细.csv")));
}

#[test]
fn bad_rows_are_refused_with_their_line_number() {
    let text = detail_text();
    // (change, reason, line): the second data row is line 7, the refund row line 8.
    let cases = [
        (",交易	,电费", ",冻结	,电费", "业务类型", 7),
        (",120.50,120.50,", ",120.505,120.50,", "more than two decimal places", 7),
        (",-20.00,-20.00,", ",20.00,-20.00,", "refunds are negative", 8),
        ("2024-01-15 10:16:02", "2024-01-15 10:16", "完成时间", 7),
        (",0.72,0.00,", ",abc,0.00,", "服务费", 7),
        (
            "2024011522001400000000000002	,WE20240115000002	,",
            "	,WE20240115000002	,",
            "支付宝交易号",
            7,
        ),
    ];
    for (from, to, reason, at) in cases {
        assert!(text.contains(from), "{from}");
        match settlement::parse(&gbk(&text.replacen(from, to, 1))).unwrap_err() {
            SettlementError::BadRow { line, reason: r } => {
                assert_eq!(line, at, "{r}");
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("{from}: {other:?}"),
        }
    }
    let short = text.replacen(",0.72,0.00,3栋1202", ",0.72", 1);
    assert!(
        matches!(settlement::parse(&gbk(&short)), Err(SettlementError::BadRow { line: 7, reason }) if reason.contains("fields"))
    );
}

#[test]
fn a_file_that_is_not_a_bill_is_refused() {
    assert!(matches!(
        settlement::parse(b"hello"),
        Err(SettlementError::BadRow { line: 1, .. })
    ));
    assert!(matches!(
        settlement::parse(b""),
        Err(SettlementError::BadRow { line: 1, .. })
    ));
}

#[test]
fn an_empty_day_is_a_valid_bill() {
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let text = write_detail("20880000000012340156", day, &[], t("2024-01-16 05:00:00"));
    assert!(text.contains("#交易合计：0笔，商家实收共0.00元"));
    let f = settlement::parse(&write_zip("20880000000012340156", day, &[], t("2024-01-16 05:00:00"))).unwrap();
    assert!(f.rows.is_empty());
    assert_eq!(f.totals.payment_count, 0);
}

#[test]
fn a_quoted_field_may_hold_a_line_break() {
    let text = detail_text().replace("\"水电费,合并缴纳\"", "\"水电费,\r\n合并缴纳\"");
    let f = settlement::parse(&gbk(&text)).unwrap();
    assert_eq!(f.rows.len(), 4);
    assert!(f.rows[3].original_line.contains("水电费,\r\n合并缴纳"));
    // The footer after it is still found and checked.
    assert_eq!(f.totals.payment_count, 3);
}

#[test]
fn gbk_that_grows_threefold_in_utf8_still_decodes() {
    // GBK writes the euro sign as the single byte 0x80; in UTF-8 it takes three.
    let remark = "€".repeat(20_000);
    let text = detail_text().replacen(",0.72,0.00,3栋1202", &format!(",0.72,0.00,{remark}"), 1);
    assert!(text.contains(&remark));
    let bytes = gbk(&text);
    assert!(bytes.len() < 25_000);
    let f = settlement::parse(&bytes).unwrap();
    assert!(f.rows[1].original_line.ends_with(&remark));
}

#[test]
fn a_large_bill_read_in_parallel_chunks_keeps_row_order_and_line_numbers() {
    // Large enough (> 8 MB of rows) to be read in chunks.
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let written = rows(45_000);
    let text = write_detail("20880000000012340156", day, &written, t("2024-01-16 05:00:00"));
    assert!(text.len() > 9 << 20, "{}", text.len());
    let f = settlement::parse(&gbk(&text)).unwrap();
    assert_eq!(f.rows.len(), written.len());
    assert!(f
        .rows
        .iter()
        .zip(&written)
        .all(|(r, w)| r.order_no == w.out_trade_no && r.time == w.finished));

    // A bad row far into the file is reported at its own line (row i is on line 6 + i).
    for i in [10, 22_500, 44_998] {
        let lines: Vec<&str> = text.split("\r\n").collect();
        let mut changed = lines.clone();
        let bad = lines[5 + i]
            .replacen(",交易\t,", ",冻结\t,", 1)
            .replacen(",退款\t,", ",冻结\t,", 1);
        changed[5 + i] = &bad;
        match settlement::parse(&gbk(&changed.join("\r\n"))).unwrap_err() {
            SettlementError::BadRow { line, .. } => assert_eq!(line, 6 + i, "row {i}"),
            other => panic!("{other:?}"),
        }
    }
}

/// `parse_lean` reads the same rows as `parse`, each on the line it names, without their text;
/// `original_lines` gives back exactly the text `parse` keeps, from the zip (GBK, read again as
/// a stream) and from a bare CSV (GBK or UTF-8), quoted line breaks included.
#[test]
fn a_lean_parse_keeps_line_numbers_and_the_lines_read_back_are_the_ones_parse_keeps() {
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    // Large enough to be read in parallel chunks, so chunk-relative numbering is exercised.
    let mut written = rows(45_000);
    written[7].remark = "水电费,\r\n合并缴纳".into();
    written[30_001].subject = "\"引号\" 与,逗号".into();
    let zip = write_zip("20880000000012340156", day, &written, t("2024-01-16 05:00:00"));
    let text = write_detail("20880000000012340156", day, &written, t("2024-01-16 05:00:00"));
    let text_lines: Vec<&str> = text.split('\n').collect();
    for (label, bytes, want_encoding) in [
        ("zip", zip.clone(), settlement::DetailEncoding::Gbk),
        ("bare GBK", gbk(&text), settlement::DetailEncoding::Gbk),
        (
            "bare UTF-8",
            text.clone().into_bytes(),
            settlement::DetailEncoding::Utf8,
        ),
    ] {
        let full = settlement::parse(&bytes).unwrap();
        let (lean, encoding) = settlement::parse_lean(&bytes).unwrap();
        assert_eq!(encoding, want_encoding, "{label}");
        assert_eq!(lean.rows.len(), full.rows.len(), "{label}");
        assert_eq!(lean.totals, full.totals, "{label}");
        assert_eq!(lean.file_sha256, full.file_sha256, "{label}");
        for (l, f) in lean.rows.iter().zip(&full.rows) {
            assert!(l.original_line.is_empty(), "{label}: a lean row keeps no text");
            let mut l = l.clone();
            l.original_line = f.original_line.clone();
            assert_eq!(&l, f, "{label}");
            // The line number is the row's first line in the detail.
            let first = text_lines[f.line as usize - 1].trim_end_matches('\r');
            assert!(f.original_line.starts_with(first), "{label}: line {}", f.line);
        }
        let wanted: Vec<u32> = [0usize, 7, 8, 22_500, 30_001, 44_999]
            .iter()
            .map(|&i| full.rows[i].line)
            .collect();
        let back = settlement::original_lines(&bytes, encoding, &wanted).unwrap();
        assert_eq!(back.len(), wanted.len(), "{label}");
        for &i in &[0usize, 7, 8, 22_500, 30_001, 44_999] {
            let r = &full.rows[i];
            assert_eq!(back[&r.line], r.original_line, "{label}: row {i}");
        }
        assert!(back[&full.rows[7].line].contains("水电费,\r\n合并缴纳"), "{label}");
        // The row after the two-line one starts two lines further on.
        assert_eq!(full.rows[8].line, full.rows[7].line + 2, "{label}");
        // A line no row starts on, or past the end, is an error, not a guess.
        let inside = full.rows[7].line + 1;
        assert!(
            settlement::original_lines(&bytes, encoding, &[full.rows[7].line, inside]).is_err(),
            "{label}"
        );
        assert!(
            matches!(
                settlement::original_lines(&bytes, encoding, &[10_000_000]),
                Err(SettlementError::BadRow { line: 10_000_000, .. })
            ),
            "{label}"
        );
        assert!(settlement::original_lines(&bytes, encoding, &[]).unwrap().is_empty());
    }
}

/// The detail is read as a stream and cut into pieces at rows' starts: a quoted field holding a
/// line break followed by `#` (which outside quotes would end the rows) never ends them nor
/// splits a row, whichever piece it falls in; a UTF-8 detail whose characters straddle the
/// reads parses to the same rows as its GBK form, from a bare file and from the zip.
#[test]
fn a_large_bill_read_as_a_stream_keeps_quoted_rows_whole_in_either_encoding() {
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let mut written = rows(45_000);
    for (i, w) in written.iter_mut().enumerate() {
        if i % 11 == 3 {
            w.remark = format!("3栋,\r\n#{i} 号\"室\"");
        }
    }
    let text = write_detail("20880000000012340156", day, &written, t("2024-01-16 05:00:00"));
    assert!(text.len() > 9 << 20, "{}", text.len());
    let gbk_rows = settlement::parse(&gbk(&text)).unwrap().rows;
    let utf8_rows = settlement::parse(text.as_bytes()).unwrap().rows;
    let zip_rows = settlement::parse(&write_zip(
        "20880000000012340156",
        day,
        &written,
        t("2024-01-16 05:00:00"),
    ))
    .unwrap()
    .rows;
    assert_eq!(gbk_rows.len(), written.len());
    assert_eq!(gbk_rows, utf8_rows);
    assert_eq!(gbk_rows, zip_rows);
    let mut line = gbk_rows[0].line;
    for (i, (r, w)) in gbk_rows.iter().zip(&written).enumerate() {
        assert_eq!(r.order_no, w.out_trade_no, "row {i}");
        assert_eq!(r.line, line, "row {i}");
        line += if w.remark.is_empty() { 1 } else { 2 };
        if !w.remark.is_empty() {
            assert!(
                r.original_line.contains(&format!("3栋,\r\n#{i} 号")),
                "row {i}: {}",
                r.original_line
            );
        }
    }
}

/// A UTF-8 detail that stops being UTF-8 further on is refused where it stops (it is not read
/// again as GBK, which would turn its Chinese into other Chinese).
#[test]
fn a_utf8_detail_with_a_bad_byte_further_on_is_refused_at_that_byte() {
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let text = write_detail("20880000000012340156", day, &rows(20_000), t("2024-01-16 05:00:00"));
    let mut bytes = text.into_bytes();
    assert!(bytes.len() > 3 << 20);
    let at = bytes.len() / 2;
    let at = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    bytes.insert(at, 0xFF);
    match settlement::parse(&bytes).unwrap_err() {
        SettlementError::Encoding { encoding, detail } => {
            assert_eq!(encoding, "UTF-8");
            assert!(detail.contains(&format!("byte offset {at} (line {line})")), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}
