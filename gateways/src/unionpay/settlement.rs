//! UnionPay's daily settlement files, as the file transfer (txnType 76, fileType 00) delivers
//! them (settlement-files.md §3).
//!
//! The answer's `fileContent` is base64 of a zlib-deflated zip. [`parse`] takes those bytes as
//! downloaded — the base64 text, or already decoded to the zlib stream, or already inflated to
//! the zip — and reads the zip's entries:
//!
//! - `INN<YYMMDD>88ZM_<merId>` (optionally `.txt`): the general transaction flow, one
//!   fixed-width line per transaction, 41 fields separated by single spaces, 607 characters;
//! - `INN<YYMMDD>88ZME_<merId>`: the error/adjustment flow, 22 fields, 339 characters;
//! - anything else is ignored (and logged).
//!
//! `<YYMMDD>` is the clearing date; it gives the year of the lines' year-less `MMDDhhmmss` times
//! (a line of 31 December in the file of 1 January belongs to the previous year). Entries are GBK;
//! lines are sliced by decoded character, as the official demo parsers do, and every line must
//! have exactly its width with a space between fields — anything else is refused with the entry,
//! line and field named.
//!
//! Field conventions (not all confirmed on a real file, see settlement-files.md §3.2): amounts
//! are zero-padded fen; the 13-character money fields (fee, settlement amount, net) are a
//! debit/credit letter and 12 digits — `D` takes money from the merchant, `C` gives it. So a
//! payment's fee is `D…` (a positive fee for us) and a refund's returned fee is `C…` (negative).
//! A line whose money field has no such letter is refused rather than guessed at.
//!
//! Normalised rows ([`SettlementRow`]): consume (`01`) is a payment; refund (`04`) and undo
//! (`31`) are refunds. A refund line names only its own orderId (our refund number) and the
//! payment's queryId (`origQryId`); its `order_no` is the payment's orderId when that payment
//! is in the same file, else the 商户自定义域 field (our client sends the original order number
//! as `reqReserved`, which UnionPay echoes there), else empty. A refund row's `gateway_txn_id`
//! is the payment's queryId, as on the other gateways' refund rows. ZME lines are kept apart in
//! [`UnionPayFile::adjustments`]: they are exceptions for a person to look at (chargebacks,
//! adjustments), not transactions to match; [`parse`] logs a warning when there are any.
//! UnionPay files carry no summary: the totals are computed from the rows.

use std::io::Read;

use chrono::{NaiveDate, NaiveDateTime};

use super::codes::TxnType;
use super::transformers::year_less_time;
use crate::amount::fen_to_yuan;
use crate::crypto;
use crate::settlement::{RowKind, SettlementError, SettlementFile, SettlementRow, SettlementTotals};

/// Field widths of a ZM line (41 fields; with the 40 separators, 607 characters).
pub const ZM_WIDTHS: [usize; 41] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21, 15, 1, 15, 32, 13,
    13, 8, 32, 13, 13, 12, 2, 1, 131,
];
/// Field names of a ZM line, by position.
pub const ZM_NAMES: [&str; 41] = [
    "交易代码",
    "代理机构标识码",
    "发送机构标识码",
    "系统跟踪号",
    "交易传输时间",
    "帐号",
    "交易金额",
    "商户类别",
    "终端类型",
    "查询流水号",
    "支付方式（旧）",
    "商户订单号",
    "支付卡类型",
    "原始交易的系统跟踪号",
    "原始交易日期时间",
    "商户手续费",
    "结算金额",
    "支付方式",
    "集团商户代码",
    "交易类型",
    "交易子类",
    "业务类型",
    "帐号类型",
    "账单类型",
    "账单号码",
    "交互方式",
    "原交易查询流水号",
    "商户代码",
    "分账入账方式",
    "二级商户代码",
    "二级商户简称",
    "二级商户分账入账金额",
    "清算净额",
    "终端号",
    "商户自定义域",
    "优惠金额",
    "发票金额",
    "分期付款附加手续费",
    "分期付款期数",
    "交易介质",
    "保留使用",
];
/// Field widths of a ZME line (22 fields; 339 characters).
pub const ZME_WIDTHS: [usize; 22] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 2, 6, 10, 4, 12, 13, 13, 15, 15, 1, 12, 2, 135,
];

/// Line length of a ZM line.
pub const ZM_LINE_CHARS: usize = line_chars(&ZM_WIDTHS);
/// Line length of a ZME line.
pub const ZME_LINE_CHARS: usize = line_chars(&ZME_WIDTHS);

const fn line_chars(widths: &[usize]) -> usize {
    let mut sum = widths.len() - 1;
    let mut i = 0;
    while i < widths.len() {
        sum += widths[i];
        i += 1;
    }
    sum
}

/// Decompressed sizes beyond this are refused (a day's ZM file of a million lines is ~600 MB).
const MAX_INFLATED: u64 = 1 << 30;

/// One ZM line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmRecord {
    /// 1-based line number in the ZM entry.
    pub line: usize,
    pub trace_no: String,
    /// 交易传输时间, Beijing time, year from the clearing date.
    pub trace_time: NaiveDateTime,
    /// Masked account number as written.
    pub acc_no: String,
    pub amount_fen: i64,
    pub query_id: String,
    pub order_id: String,
    /// 商户手续费, signed: positive is charged to us.
    pub fee_fen: i64,
    /// 结算金额, signed: positive is credited to us.
    pub settle_amount_fen: i64,
    pub txn_type: TxnType,
    pub txn_sub_type: String,
    pub biz_type: String,
    /// 原交易查询流水号 (refunds and undos).
    pub orig_query_id: Option<String>,
    pub mer_id: String,
    /// 清算净额, signed: positive is credited to us.
    pub net_fen: i64,
    /// 商户自定义域 (our reqReserved).
    pub merchant_reserved: String,
    pub original_line: String,
}

/// One ZME (error/adjustment) line: its fields as written (trimmed), and the ones we can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmeRecord {
    pub line: usize,
    pub trace_no: String,
    pub trace_time: NaiveDateTime,
    pub amount_fen: i64,
    /// All 22 fields, trimmed, in order.
    pub fields: Vec<String>,
    pub original_line: String,
}

/// A whole file-transfer payload, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnionPayFile {
    /// The clearing date the entries are named for.
    pub settle_date: NaiveDate,
    pub mer_id: String,
    pub zm_entry: String,
    pub records: Vec<ZmRecord>,
    pub adjustments: Vec<ZmeRecord>,
    /// Entries that are neither ZM nor ZME, by name.
    pub ignored_entries: Vec<String>,
    /// The normalised rows and totals (what reconciliation uses).
    pub settlement: SettlementFile,
}

/// Parse the file-transfer payload into normalised rows (see the module docs).
pub fn parse(bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
    let file = parse_file(bytes)?;
    if !file.adjustments.is_empty() {
        tracing::warn!(
            entries = file.adjustments.len(),
            settle_date = %file.settle_date,
            "UnionPay ZME (error/adjustment) lines are present: they are not settlement rows; review them"
        );
    }
    Ok(file.settlement)
}

/// Parse the payload, keeping UnionPay's own detail (ZM records, ZME adjustments).
pub fn parse_file(bytes: &[u8]) -> Result<UnionPayFile, SettlementError> {
    let file_sha256 = crypto::sha256_hex(bytes);
    let zip_bytes = decode_payload(bytes)?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.as_slice()))
        .map_err(|e| SettlementError::Archive(format!("the inflated payload is not a zip: {e}")))?;
    let mut zm: Option<(EntryName, Vec<u8>)> = None;
    let mut zme: Option<(EntryName, Vec<u8>)> = None;
    let mut ignored = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| SettlementError::Archive(format!("zip entry {i} cannot be read: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let raw_name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let Some(name) = EntryName::parse(&raw_name) else {
            tracing::info!(entry = %raw_name, "UnionPay settlement zip: ignoring an entry that is neither ZM nor ZME");
            ignored.push(raw_name);
            continue;
        };
        let mut content = Vec::new();
        (&mut entry)
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut content)
            .map_err(|e| SettlementError::Archive(format!("zip entry {raw_name} cannot be inflated: {e}")))?;
        if content.len() as u64 > MAX_INFLATED {
            return Err(SettlementError::Archive(format!(
                "zip entry {raw_name} inflates beyond 1 GiB"
            )));
        }
        let slot = if name.adjustments { &mut zme } else { &mut zm };
        if let Some((prev, _)) = slot {
            return Err(SettlementError::Archive(format!(
                "the zip holds two {} entries ({} and {raw_name})",
                if name.adjustments { "ZME" } else { "ZM" },
                prev.raw
            )));
        }
        *slot = Some((name, content));
    }
    let (zm_name, zm_bytes) = zm.ok_or_else(|| {
        SettlementError::Archive("the zip holds no INN<YYMMDD>88ZM_<merId> entry (the transaction flow)".into())
    })?;
    if let Some((zme_name, _)) = &zme {
        if zme_name.settle_date != zm_name.settle_date || zme_name.mer_id != zm_name.mer_id {
            return Err(SettlementError::Archive(format!(
                "the ZM entry {} and the ZME entry {} are for different days or merchants",
                zm_name.raw, zme_name.raw
            )));
        }
    }
    let zm_text = gbk(&zm_name.raw, &zm_bytes)?;
    let records = parse_zm(&zm_text, zm_name.settle_date, &zm_name.mer_id)?;
    let adjustments = match &zme {
        Some((n, b)) => parse_zme(&gbk(&n.raw, b)?, n.settle_date)?,
        None => Vec::new(),
    };
    let rows = normalise(&records);
    let totals = SettlementTotals::of(&rows);
    Ok(UnionPayFile {
        settle_date: zm_name.settle_date,
        mer_id: zm_name.mer_id,
        zm_entry: zm_name.raw,
        records,
        adjustments,
        ignored_entries: ignored,
        settlement: SettlementFile {
            rows,
            totals,
            file_sha256,
        },
    })
}

/// base64 text → zlib stream → zip, taking the input at whichever of those stages it already is.
pub fn decode_payload(bytes: &[u8]) -> Result<Vec<u8>, SettlementError> {
    let is_zip = |b: &[u8]| b.starts_with(b"PK\x03\x04") || b.starts_with(b"PK\x05\x06");
    let is_zlib = |b: &[u8]| b.len() >= 2 && b[0] & 0x0f == 8 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0;
    if is_zip(bytes) {
        return Ok(bytes.to_vec());
    }
    let zlib = if is_zlib(bytes) {
        bytes.to_vec()
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| SettlementError::Encoding {
            encoding: "base64",
            detail: "the payload is neither a zip, nor a zlib stream, nor base64 text".into(),
        })?;
        if text.trim().is_empty() {
            return Err(SettlementError::Truncated("the payload is empty".into()));
        }
        crypto::unb64(text).ok_or_else(|| SettlementError::Encoding {
            encoding: "base64",
            detail: "fileContent is not valid base64".into(),
        })?
    };
    if is_zip(&zlib) {
        return Ok(zlib);
    }
    if !is_zlib(&zlib) {
        return Err(SettlementError::Archive(
            "the decoded fileContent is not a zlib stream (expected base64 of zlib-deflated zip bytes)".into(),
        ));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(zlib.as_slice())
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                SettlementError::Truncated(format!("the zlib stream ends early after {} bytes: {e}", out.len()))
            }
            _ => SettlementError::Archive(format!("the zlib stream cannot be inflated: {e}")),
        })?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(SettlementError::Archive("the zlib stream inflates beyond 1 GiB".into()));
    }
    Ok(out)
}

fn gbk(entry: &str, bytes: &[u8]) -> Result<String, SettlementError> {
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|c| c.into_owned())
        .ok_or_else(|| SettlementError::Encoding {
            encoding: "GBK",
            detail: format!("entry {entry} holds bytes that are not GBK"),
        })
}

/// A parsed entry name: `INN<YYMMDD>88ZM_<merId>[.txt]` or `…ZME_…`.
#[derive(Debug, Clone)]
struct EntryName {
    raw: String,
    settle_date: NaiveDate,
    mer_id: String,
    adjustments: bool,
}

impl EntryName {
    fn parse(raw: &str) -> Option<EntryName> {
        let base = raw.rsplit('/').next()?;
        let base = base
            .strip_suffix(".txt")
            .or_else(|| base.strip_suffix(".TXT"))
            .unwrap_or(base);
        if !base.is_ascii() || !base.starts_with("INN") || base.len() < 15 {
            return None;
        }
        let yymmdd = &base[3..9];
        if !yymmdd.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (adjustments, mer) = if let Some(m) = base[11..].strip_prefix("ZME_") {
            (true, m)
        } else if let Some(m) = base[11..].strip_prefix("ZM_") {
            (false, m)
        } else {
            return None;
        };
        if mer.is_empty() || !mer.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let settle_date = NaiveDate::parse_from_str(&format!("20{yymmdd}"), "%Y%m%d").ok()?;
        Some(EntryName {
            raw: raw.to_string(),
            settle_date,
            mer_id: mer.to_string(),
            adjustments,
        })
    }
}

/// Lines of a text, with 1-based numbers, whatever the line ends (`\r\n`, `\r`, `\n`); blank
/// lines are skipped. The bool says whether the line was ended (false: the text's last line).
fn lines(text: &str) -> Vec<(usize, &str, bool)> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut rest = text;
    while !rest.is_empty() {
        n += 1;
        let (line, next, ended) = match rest.find(['\r', '\n']) {
            Some(i) => {
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                (&rest[..i], &rest[i + skip..], true)
            }
            None => (rest, "", false),
        };
        if !line.trim().is_empty() {
            out.push((n, line, ended));
        }
        rest = next;
    }
    out
}

/// Slice a fixed-width line into its fields (trimmed), checking its width and separators.
fn slice(
    what: &str,
    line_no: usize,
    line: &str,
    ended: bool,
    widths: &[usize],
) -> Result<Vec<String>, SettlementError> {
    let chars: Vec<char> = line.chars().collect();
    let want = line_chars(widths);
    if chars.len() != want {
        let reason = format!(
            "{what} line {line_no} has {} characters, a {what} line has {want}",
            chars.len()
        );
        return Err(if !ended && chars.len() < want {
            SettlementError::Truncated(reason)
        } else {
            SettlementError::BadRow { line: line_no, reason }
        });
    }
    let mut out = Vec::with_capacity(widths.len());
    let mut at = 0;
    for (i, w) in widths.iter().enumerate() {
        out.push(chars[at..at + w].iter().collect::<String>().trim().to_string());
        at += w;
        if i + 1 < widths.len() {
            if chars[at] != ' ' {
                return Err(SettlementError::BadRow {
                    line: line_no,
                    reason: format!(
                        "{what} field {} is not followed by a space (character {at} is {:?})",
                        i + 1,
                        chars[at]
                    ),
                });
            }
            at += 1;
        }
    }
    Ok(out)
}

fn bad(line: usize, field: usize, value: &str, why: &str) -> SettlementError {
    SettlementError::BadRow {
        line,
        reason: format!("ZM field {field} {} {value:?} {why}", ZM_NAMES[field - 1]),
    }
}

fn digits(line: usize, field: usize, value: &str, len: usize) -> Result<i64, SettlementError> {
    if value.len() != len || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(line, field, value, &format!("is not {len} digits")));
    }
    value.parse().map_err(|_| bad(line, field, value, "is out of range"))
}

/// A 13-character money field: `C` or `D` and 12 digits of fen. Returns the amount signed from
/// the merchant's side: credit positive, debit negative.
fn credit_fen(line: usize, field: usize, value: &str) -> Result<i64, SettlementError> {
    let (sign, rest) = match value.as_bytes().first() {
        Some(b'C') => (1, &value[1..]),
        Some(b'D') => (-1, &value[1..]),
        _ => return Err(bad(line, field, value, "is not C or D followed by 12 digits of fen")),
    };
    if rest.len() != 12 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(line, field, value, "is not C or D followed by 12 digits of fen"));
    }
    Ok(sign
        * rest
            .parse::<i64>()
            .map_err(|_| bad(line, field, value, "is out of range"))?)
}

/// Read a ZM entry's text (already decoded from GBK).
pub fn parse_zm(text: &str, settle_date: NaiveDate, mer_id: &str) -> Result<Vec<ZmRecord>, SettlementError> {
    let mut out = Vec::new();
    for (n, line, ended) in lines(text) {
        let f = slice("ZM", n, line, ended, &ZM_WIDTHS)?;
        let trace_no = f[3].clone();
        digits(n, 4, &trace_no, 6)?;
        let trace_time =
            year_less_time(&f[4], settle_date).ok_or_else(|| bad(n, 5, &f[4], "is not a valid MMDDhhmmss time"))?;
        let amount_fen = digits(n, 7, &f[6], 12)?;
        if amount_fen <= 0 {
            return Err(bad(n, 7, &f[6], "must be more than zero"));
        }
        let query_id = f[9].clone();
        if query_id.is_empty() || !query_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(n, 10, &query_id, "is not a queryId"));
        }
        let order_id = f[11].clone();
        if order_id.is_empty() || !order_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(n, 12, &order_id, "is not an orderId"));
        }
        let fee_fen = -credit_fen(n, 16, &f[15])?;
        let settle_amount_fen = credit_fen(n, 17, &f[16])?;
        let txn_type = match TxnType::parse(&f[19]) {
            t @ (TxnType::Consume | TxnType::Refund | TxnType::ConsumeUndo) => t,
            TxnType::Query | TxnType::FileTransfer | TxnType::Other(_) => {
                return Err(bad(n, 20, &f[19], "is not a consume (01), refund (04) or undo (31)"))
            }
        };
        let orig_query_id = Some(f[26].clone()).filter(|s| !s.is_empty());
        if txn_type != TxnType::Consume && orig_query_id.is_none() {
            return Err(bad(n, 27, "", "is empty on a refund or undo: it must name the payment"));
        }
        let line_mer = f[27].clone();
        if line_mer != mer_id {
            return Err(bad(
                n,
                28,
                &line_mer,
                &format!("is not the merchant {mer_id} the file is named for"),
            ));
        }
        let net_fen = credit_fen(n, 33, &f[32])?;
        out.push(ZmRecord {
            line: n,
            trace_no,
            trace_time,
            acc_no: f[5].clone(),
            amount_fen,
            query_id,
            order_id,
            fee_fen,
            settle_amount_fen,
            txn_type,
            txn_sub_type: f[20].clone(),
            biz_type: f[21].clone(),
            orig_query_id,
            mer_id: line_mer,
            net_fen,
            merchant_reserved: f[34].clone(),
            original_line: line.to_string(),
        });
    }
    Ok(out)
}

/// Read a ZME entry's text (already decoded from GBK).
pub fn parse_zme(text: &str, settle_date: NaiveDate) -> Result<Vec<ZmeRecord>, SettlementError> {
    let mut out = Vec::new();
    for (n, line, ended) in lines(text) {
        let f = slice("ZME", n, line, ended, &ZME_WIDTHS)?;
        let err = |field: usize, why: &str| SettlementError::BadRow {
            line: n,
            reason: format!("ZME field {field} {:?} {why}", f[field - 1]),
        };
        if f[3].len() != 6 || !f[3].bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(4, "(系统跟踪号) is not 6 digits"));
        }
        let trace_time =
            year_less_time(&f[4], settle_date).ok_or_else(|| err(5, "(交易传输时间) is not MMDDhhmmss"))?;
        if f[6].len() != 12 || !f[6].bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(7, "(交易金额) is not 12 digits"));
        }
        out.push(ZmeRecord {
            line: n,
            trace_no: f[3].clone(),
            trace_time,
            amount_fen: f[6].parse().map_err(|_| err(7, "is out of range"))?,
            fields: f,
            original_line: line.to_string(),
        });
    }
    Ok(out)
}

/// ZM records → normalised rows.
pub fn normalise(records: &[ZmRecord]) -> Vec<SettlementRow> {
    let payments: std::collections::HashMap<&str, &str> = records
        .iter()
        .filter(|p| p.txn_type == TxnType::Consume)
        .map(|p| (p.query_id.as_str(), p.order_id.as_str()))
        .collect();
    records
        .iter()
        .map(|r| {
            let (kind, order_no, refund_no, txn_id) = match r.txn_type {
                TxnType::Consume => (RowKind::Payment, r.order_id.clone(), None, r.query_id.clone()),
                TxnType::Refund | TxnType::ConsumeUndo | TxnType::Query | TxnType::FileTransfer | TxnType::Other(_) => {
                    let orig = r.orig_query_id.clone().unwrap_or_default();
                    let order_no = payments
                        .get(orig.as_str())
                        .map(|o| o.to_string())
                        .or_else(|| Some(r.merchant_reserved.clone()).filter(|s| crate::gateway::is_valid_order_no(s)))
                        .unwrap_or_default();
                    (RowKind::Refund, order_no, Some(r.order_id.clone()), orig)
                }
            };
            SettlementRow {
                order_no,
                refund_no,
                gateway_txn_id: txn_id,
                kind,
                amount_fen: r.amount_fen,
                fee: fen_to_yuan(r.fee_fen),
                fee_fen: Some(r.fee_fen),
                time: r.trace_time,
                line: r.line as u32,
                original_line: r.original_line.clone(),
            }
        })
        .collect()
}
