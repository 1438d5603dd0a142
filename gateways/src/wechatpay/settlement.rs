//! The trade bill (`/v3/bill/tradebill`, 交易账单) parser: settlement-files.md §2.
//!
//! The file: UTF-8 with a BOM, CRLF (LF accepted), a header line of column names, one line per
//! transaction with every field prefixed by a back-tick, then a summary header
//! (`总交易单数,…`) and one summary line, also back-ticked. Three layouts, told apart by their
//! columns, which are always found by name:
//! - `ALL` (27 columns): payments (`交易状态` SUCCESS) and refunds (REFUND);
//! - `SUCCESS` (20): payments only;
//! - `REFUND` (29): refunds only, with `退款申请时间`/`退款成功时间`; there `交易时间` is the
//!   original payment's time, so a refund row's time is its `退款申请时间` (the bill's data day
//!   is cut on refund acceptance).
//!
//! Normalisation: a payment's amount is `订单金额` (the order total we asked for; the legacy
//! layout's `总金额`, else `应结订单金额`), a refund's is `申请退款金额` (else `退款金额`); both
//! positive, at most two decimals (more is refused, never rounded). The fee (`手续费`) carries
//! five decimals: it is kept as written, and `fee_fen` is set only when it is a whole number of
//! fen. The gateway transaction id is `微信订单号` on both kinds (a refund's own
//! `微信退款单号` stays in the original line). `REVOKED` rows (micropay revocations) are not
//! payments: they are counted against the summary but not returned as rows.
//!
//! Checks: unknown or missing columns, a file not ending in a line break (truncated), a field without its back-tick, a row with the wrong number
//! of fields, bad UTF-8, a file that ends before its summary (truncated), and every summary total
//! against the sum of its column (a summary written with fewer decimals than its rows is compared
//! after rounding the sum half-up to the summary's decimals).
//!
//! Fields are split by hand on `` ,` `` rather than with a CSV reader: the format quotes nothing,
//! and the back-tick that starts every field is what keeps a comma inside `商品名称` from
//! splitting it.

use std::io::Read;
use std::str::FromStr;

use chrono::NaiveDateTime;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::amount::yuan_to_fen;
use crate::crypto::sha256_hex;
use crate::settlement::{RowKind, SettlementError, SettlementFile, SettlementRow, SettlementTotals};

/// Which trade bill a file is (`bill_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillType {
    All,
    Success,
    Refund,
}

impl BillType {
    pub fn as_str(self) -> &'static str {
        match self {
            BillType::All => "ALL",
            BillType::Success => "SUCCESS",
            BillType::Refund => "REFUND",
        }
    }
}

/// Every detail column a trade bill may carry (current layouts, plus the legacy layout's
/// `子商户号`, `总金额`, `企业红包金额`, `企业红包退款金额`).
pub const KNOWN_COLUMNS: &[&str] = &[
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "子商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "总金额",
    "代金券金额",
    "企业红包金额",
    "退款申请时间",
    "退款成功时间",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "企业红包退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// Summary columns and the detail column each totals (None: the count).
pub const SUMMARY_COLUMNS: &[(&str, Option<&str>)] = &[
    ("总交易单数", None),
    ("应结订单总金额", Some("应结订单金额")),
    ("退款总金额", Some("退款金额")),
    ("充值券退款总金额", Some("充值券退款金额")),
    ("手续费总金额", Some("手续费")),
    ("订单总金额", Some("订单金额")),
    ("申请退款总金额", Some("申请退款金额")),
    // Legacy layout.
    ("总交易额", Some("总金额")),
    ("总退款金额", Some("退款金额")),
    ("总企业红包退款金额", Some("企业红包退款金额")),
];

/// The header line of the summary section starts with this.
pub const SUMMARY_FIRST_COLUMN: &str = "总交易单数";

/// Decompressed files larger than this are refused (a gzip bomb, not a bill).
const MAX_DECOMPRESSED: u64 = 2 << 30;

/// Parse a trade bill: the CSV bytes (a gzip stream, as downloaded with `tar_type=GZIP`, is
/// decompressed first; `file_sha256` is always over the CSV bytes, like WeChat Pay's own hash).
pub fn parse(bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
    parse_with_type(bytes).map(|(f, _)| f)
}

/// [`parse`], also saying which layout the file has.
pub fn parse_with_type(bytes: &[u8]) -> Result<(SettlementFile, BillType), SettlementError> {
    let owned;
    let csv: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        owned = gunzip(bytes)?;
        &owned
    } else {
        bytes
    };
    let file_sha256 = sha256_hex(csv);
    let body = csv.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv);
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        SettlementError::Encoding {
            encoding: "UTF-8",
            detail: format!("invalid byte at offset {} (line {line})", e.valid_up_to()),
        }
    })?;
    let (rows, bill_type) = parse_text(text)?;
    let totals = SettlementTotals::of(&rows);
    Ok((
        SettlementFile {
            rows,
            totals,
            file_sha256,
        },
        bill_type,
    ))
}

/// Decompress a gzip stream (the download with `tar_type=GZIP`).
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, SettlementError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| SettlementError::Archive(format!("the gzip stream could not be decompressed: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(SettlementError::Archive(format!(
            "the gzip stream decompresses to more than {MAX_DECOMPRESSED} bytes"
        )));
    }
    Ok(out)
}

struct Line<'a> {
    no: usize,
    text: &'a str,
}

/// The fields of a back-ticked line, or why it is not one.
fn fields(line: &str) -> Result<Vec<&str>, String> {
    let rest = line
        .strip_prefix('`')
        .ok_or_else(|| "the line does not start with a back-tick".to_string())?;
    Ok(rest.split(",`").collect())
}

fn bad(line: usize, reason: impl Into<String>) -> SettlementError {
    SettlementError::BadRow {
        line,
        reason: reason.into(),
    }
}

fn decimal(text: &str) -> Option<Decimal> {
    if text.is_empty() {
        return Some(Decimal::ZERO);
    }
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
        return None;
    }
    Decimal::from_str(text).ok()
}

fn parse_text(text: &str) -> Result<(Vec<SettlementRow>, BillType), SettlementError> {
    let lines: Vec<Line<'_>> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| Line {
            no: i + 1,
            text: l.strip_suffix('\r').unwrap_or(l),
        })
        .collect();
    let nonempty: Vec<&Line<'_>> = lines.iter().filter(|l| !l.text.trim().is_empty()).collect();
    let Some(header_line) = nonempty.first() else {
        return Err(SettlementError::Truncated("the file is empty".into()));
    };
    if header_line.text.starts_with('`') {
        return Err(bad(
            header_line.no,
            "the first line is a data row, not the column header",
        ));
    }
    // A file that ends before its summary is truncated, whatever else is wrong with it.
    let Some(summary_at) = nonempty
        .iter()
        .rposition(|l| l.text.starts_with(SUMMARY_FIRST_COLUMN))
        .filter(|i| *i > 0)
    else {
        let last = nonempty.last().map(|l| l.no).unwrap_or(1);
        return Err(SettlementError::Truncated(format!(
            "no summary ({SUMMARY_FIRST_COLUMN},…) follows the rows; the file ends at line {last}"
        )));
    };
    let summary_header_line = nonempty[summary_at];
    let Some(summary_line) = nonempty.get(summary_at + 1) else {
        return Err(SettlementError::Truncated(format!(
            "the summary header at line {} has no values after it",
            summary_header_line.no
        )));
    };
    if let Some(extra) = nonempty.get(summary_at + 2) {
        return Err(bad(extra.no, "unexpected line after the summary"));
    }
    // The summary's last value could be cut at a trailing zero and still add up: the line break
    // that ends every bill is what shows it is whole.
    if !text.ends_with('\n') {
        return Err(SettlementError::Truncated(format!(
            "the summary at line {} is not followed by the line break that ends the file",
            summary_line.no
        )));
    }

    let header: Vec<&str> = header_line.text.split(',').map(str::trim).collect();
    for (i, name) in header.iter().enumerate() {
        if !KNOWN_COLUMNS.contains(name) {
            return Err(SettlementError::UnknownColumn(name.to_string()));
        }
        if header[..i].contains(name) {
            return Err(bad(
                header_line.no,
                format!("column {name:?} appears twice in the header"),
            ));
        }
    }
    let col = |name: &str| header.iter().position(|h| *h == name);
    let need = |name: &str| col(name).ok_or_else(|| SettlementError::MissingColumn(name.to_string()));
    let c_time = need("交易时间")?;
    let c_txn = need("微信订单号")?;
    let c_order = need("商户订单号")?;
    let c_state = need("交易状态")?;
    let c_fee = need("手续费")?;
    let c_pay_amount = col("订单金额")
        .or_else(|| col("总金额"))
        .or_else(|| col("应结订单金额"))
        .ok_or_else(|| SettlementError::MissingColumn("订单金额".into()))?;
    let bill_type = if col("退款申请时间").is_some() {
        BillType::Refund
    } else if col("商户退款单号").is_some() {
        BillType::All
    } else {
        BillType::Success
    };
    let refund_cols = match bill_type {
        BillType::Success => None,
        BillType::All | BillType::Refund => Some((
            need("商户退款单号")?,
            col("申请退款金额")
                .or_else(|| col("退款金额"))
                .ok_or_else(|| SettlementError::MissingColumn("申请退款金额".into()))?,
            col("退款申请时间"),
            col("退款成功时间"),
        )),
    };

    // Detail rows.
    let mut rows = Vec::new();
    let mut sums = vec![Decimal::ZERO; header.len()];
    let mut count: u64 = 0;
    for line in &nonempty[1..summary_at] {
        let f = fields(line.text).map_err(|e| bad(line.no, e))?;
        if f.len() != header.len() {
            return Err(bad(
                line.no,
                format!("the row has {} fields, the header has {}", f.len(), header.len()),
            ));
        }
        count += 1;
        for (i, name) in header.iter().enumerate() {
            if SUMMARY_COLUMNS.iter().any(|(_, d)| *d == Some(*name)) {
                let v = decimal(f[i]).ok_or_else(|| bad(line.no, format!("{name} {:?} is not a number", f[i])))?;
                sums[i] += v;
            }
        }
        let kind = match f[c_state] {
            "SUCCESS" => RowKind::Payment,
            "REFUND" => RowKind::Refund,
            "REVOKED" => continue,
            other => return Err(bad(line.no, format!("unknown 交易状态 {other:?}"))),
        };
        let parse_time = |s: &str, what: &str| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .map_err(|_| bad(line.no, format!("{what} {s:?} is not yyyy-MM-dd HH:mm:ss")))
        };
        let amount = |c: usize, what: &str| {
            let fen = yuan_to_fen(f[c], false).map_err(|e| bad(line.no, format!("{what}: {e}")))?;
            if fen <= 0 {
                return Err(bad(line.no, format!("{what} {:?} is not positive", f[c])));
            }
            Ok(fen)
        };
        let (refund_no, amount_fen, time) = match (kind, refund_cols) {
            (RowKind::Payment, _) if bill_type == BillType::Refund => {
                return Err(bad(line.no, "a SUCCESS (payment) row in a REFUND bill"))
            }
            (RowKind::Payment, _) => (
                None,
                amount(c_pay_amount, header[c_pay_amount])?,
                parse_time(f[c_time], "交易时间")?,
            ),
            (RowKind::Refund, None) => return Err(bad(line.no, "a REFUND row in a SUCCESS bill")),
            (RowKind::Refund, Some((c_refund_no, c_refund_amount, c_applied, c_done))) => {
                let no = f[c_refund_no];
                if no.is_empty() || no == "0" {
                    return Err(bad(line.no, "a REFUND row without 商户退款单号"));
                }
                let time_text = [c_applied, c_done]
                    .into_iter()
                    .flatten()
                    .map(|c| f[c])
                    .find(|t| !t.is_empty())
                    .unwrap_or(f[c_time]);
                (
                    Some(no.to_string()),
                    amount(c_refund_amount, header[c_refund_amount])?,
                    parse_time(time_text, "the refund time")?,
                )
            }
        };
        let fee = f[c_fee];
        if fee.is_empty() || decimal(fee).is_none() {
            return Err(bad(line.no, format!("手续费 {fee:?} is not a number")));
        }
        if f[c_order].is_empty() || f[c_txn].is_empty() {
            return Err(bad(line.no, "the row lacks 商户订单号 or 微信订单号"));
        }
        rows.push(SettlementRow {
            order_no: f[c_order].to_string(),
            refund_no,
            gateway_txn_id: f[c_txn].to_string(),
            kind,
            amount_fen,
            fee: fee.to_string(),
            fee_fen: yuan_to_fen(fee, true).ok(),
            time,
            line: line.no as u32,
            original_line: line.text.to_string(),
        });
    }

    // Summary.
    let s_header: Vec<&str> = summary_header_line.text.split(',').map(str::trim).collect();
    for name in &s_header {
        if !SUMMARY_COLUMNS.iter().any(|(n, _)| n == name) {
            return Err(SettlementError::UnknownColumn(name.to_string()));
        }
    }
    let s_values = fields(summary_line.text).map_err(|e| bad(summary_line.no, format!("summary: {e}")))?;
    if s_values.len() < s_header.len() {
        return Err(SettlementError::Truncated(format!(
            "the summary at line {} has {} of its {} values",
            summary_line.no,
            s_values.len(),
            s_header.len()
        )));
    }
    if s_values.len() > s_header.len() {
        return Err(bad(
            summary_line.no,
            "the summary has more values than its header names",
        ));
    }
    for (name, value) in s_header.iter().zip(&s_values) {
        let v =
            decimal(value).ok_or_else(|| bad(summary_line.no, format!("summary {name} {value:?} is not a number")))?;
        let detail = SUMMARY_COLUMNS.iter().find(|(n, _)| n == name).and_then(|(_, d)| *d);
        let (sum, what) = match detail {
            None => {
                if v.fract() != Decimal::ZERO {
                    return Err(bad(summary_line.no, format!("{name} {value:?} is not a whole number")));
                }
                (Decimal::from(count), "rows")
            }
            Some(d) => (col(d).map(|c| sums[c]).unwrap_or(Decimal::ZERO), "rows sum"),
        };
        let compared = if v.scale() < sum.scale() {
            sum.round_dp_with_strategy(v.scale(), RoundingStrategy::MidpointAwayFromZero)
        } else {
            sum
        };
        if compared != v {
            return Err(SettlementError::SummaryMismatch(format!(
                "{name} is {value} but the {what} to {sum}"
            )));
        }
    }
    Ok((rows, bill_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    const SUMMARY: &str =
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
    const PAY: &str = "`2026-12-01 10:00:00,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202612010000000001,`W20261201000001,`oUser,`NATIVE,`SUCCESS,`OTHERS,`CNY,`88.80,`0.00,`0,`0,`0.00,`0.00,`,`,`水费, 3-2-1201,`,`0.53280,`0.60%,`88.80,`0.00,`";
    const REF: &str = "`2026-12-01 11:00:00,`wx5a1b2c3d4e5f6a7b,`1900000109,`0,`,`4200000000202612010000000001,`W20261201000001,`oUser,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300000000000000001,`R20261201000001,`10.00,`0.00,`ORIGINAL,`SUCCESS,`水费, 3-2-1201,`,`-0.06000,`0.60%,`0.00,`10.00,`";

    fn file(rows: &[&str], summary: &str) -> Vec<u8> {
        let mut s = String::from("\u{feff}");
        s.push_str(HEADER);
        s.push_str("\r\n");
        for r in rows {
            s.push_str(r);
            s.push_str("\r\n");
        }
        s.push_str(SUMMARY);
        s.push_str("\r\n");
        s.push_str(summary);
        s.push_str("\r\n");
        s.into_bytes()
    }

    #[test]
    fn an_all_bill_gives_a_payment_and_a_refund_with_fees_kept_exactly() {
        let f = parse(&file(&[PAY, REF], "`2,`88.80,`10.00,`0.00,`0.47280,`88.80,`10.00")).unwrap();
        assert_eq!(f.rows.len(), 2);
        let (p, r) = (&f.rows[0], &f.rows[1]);
        assert_eq!(p.kind, RowKind::Payment);
        assert_eq!(p.order_no, "W20261201000001");
        assert_eq!(p.refund_no, None);
        assert_eq!(p.amount_fen, 8880);
        assert_eq!(p.fee, "0.53280");
        assert_eq!(p.fee_fen, None, "0.5328 yuan is not a whole number of fen");
        assert!(
            p.original_line.contains("水费, 3-2-1201"),
            "a comma inside a field stays inside it"
        );
        assert_eq!(r.kind, RowKind::Refund);
        assert_eq!(r.refund_no.as_deref(), Some("R20261201000001"));
        assert_eq!(r.amount_fen, 1000);
        assert_eq!((r.fee.as_str(), r.fee_fen), ("-0.06000", Some(-6)));
        assert_eq!(r.gateway_txn_id, "4200000000202612010000000001");
        assert_eq!(f.totals.payment_fen, 8880);
        assert_eq!(f.totals.refund_fen, 1000);
        assert_eq!(f.file_sha256.len(), 64);
    }

    #[test]
    fn a_summary_that_disagrees_with_the_rows_is_refused() {
        let e = parse(&file(&[PAY, REF], "`2,`88.80,`10.00,`0.00,`0.47280,`88.81,`10.00")).unwrap_err();
        assert!(
            matches!(&e, SettlementError::SummaryMismatch(m) if m.contains("订单总金额")),
            "{e}"
        );
        let e = parse(&file(&[PAY], "`2,`88.80,`0.00,`0.00,`0.53280,`88.80,`0.00")).unwrap_err();
        assert!(
            matches!(&e, SettlementError::SummaryMismatch(m) if m.contains("总交易单数")),
            "{e}"
        );
        // Fewer decimals in the summary: compared after rounding the sum.
        assert!(parse(&file(&[PAY], "`1.0,`88.80,`0.00,`0.0,`0.53,`88.80,`0.00")).is_ok());
        assert!(parse(&file(&[PAY], "`1.0,`88.80,`0.00,`0.0,`0.54,`88.80,`0.00")).is_err());
        assert!(parse(&file(&[PAY], "`1.5,`88.80,`0.00,`0.0,`0.53,`88.80,`0.00")).is_err());
    }

    #[test]
    fn a_truncated_file_is_refused_as_truncated() {
        let full = file(&[PAY, REF], "`2,`88.80,`10.00,`0.00,`0.47280,`88.80,`10.00");
        let text = String::from_utf8(full.clone()).unwrap();
        let cut_in_rows = text.find("`2026-12-01 11").unwrap() + 40;
        assert!(matches!(
            parse(&full[..cut_in_rows]),
            Err(SettlementError::Truncated(_))
        ));
        let cut_after_summary_header = text.find(SUMMARY).unwrap() + SUMMARY.len() + 2;
        assert!(matches!(
            parse(&full[..cut_after_summary_header]),
            Err(SettlementError::Truncated(_))
        ));
        let cut_in_summary = full.len() - 12;
        assert!(matches!(
            parse(&full[..cut_in_summary]),
            Err(SettlementError::Truncated(_))
        ));
        assert!(matches!(parse(b""), Err(SettlementError::Truncated(_))));
    }

    #[test]
    fn unknown_and_missing_columns_and_bad_fields_are_named() {
        let unknown = String::from_utf8(file(&[], "`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00"))
            .unwrap()
            .replace("费率备注", "新列");
        assert_eq!(
            parse(unknown.as_bytes()).unwrap_err(),
            SettlementError::UnknownColumn("新列".into())
        );
        let missing = String::from_utf8(file(&[], "`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00"))
            .unwrap()
            .replace("商户订单号,", "");
        assert_eq!(
            parse(missing.as_bytes()).unwrap_err(),
            SettlementError::MissingColumn("商户订单号".into())
        );
        let no_tick = PAY.replace(",`NATIVE", ",NATIVE");
        assert!(matches!(
            parse(&file(&[&no_tick], "`1,`88.80,`0.00,`0.00,`0.53280,`88.80,`0.00")),
            Err(SettlementError::BadRow { line: 2, .. })
        ));
        let precise = PAY.replace("`88.80,`0.00,`", "`88.805,`0.00,`");
        let e = parse(&file(&[&precise], "`1,`88.80,`0.00,`0.00,`0.53280,`88.805,`0.00")).unwrap_err();
        assert!(
            matches!(&e, SettlementError::BadRow { line: 2, reason } if reason.contains("more than two decimal")),
            "{e}"
        );
        let status = PAY.replace("`SUCCESS", "`PAID");
        assert!(parse(&file(&[&status], "`1,`88.80,`0.00,`0.00,`0.53280,`88.80,`0.00")).is_err());
    }

    #[test]
    fn bad_utf8_is_refused_with_its_line() {
        let mut f = file(&[PAY], "`1,`88.80,`0.00,`0.00,`0.53280,`88.80,`0.00");
        let at = f.len() - 20;
        f[at] = 0xff;
        assert!(matches!(
            parse(&f),
            Err(SettlementError::Encoding { encoding: "UTF-8", detail }) if detail.contains("line 4")
        ));
    }

    #[test]
    fn a_gzip_stream_is_decompressed_and_hashed_as_its_csv() {
        use std::io::Write;
        let csv = file(&[PAY], "`1,`88.80,`0.00,`0.00,`0.53280,`88.80,`0.00");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&csv).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(parse(&gz).unwrap(), parse(&csv).unwrap());
        assert!(matches!(parse(&gz[..gz.len() / 2]), Err(SettlementError::Archive(_))));
    }

    #[test]
    fn revoked_rows_count_in_the_summary_but_are_not_payments() {
        let revoked = PAY.replace("`SUCCESS", "`REVOKED");
        let f = parse(&file(&[&revoked], "`1,`88.80,`0.00,`0.00,`0.53280,`88.80,`0.00")).unwrap();
        assert!(f.rows.is_empty());
    }
}
