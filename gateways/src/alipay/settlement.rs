//! Alipay's daily bill (`bill_type=trade`, settlement-files.md §1): parsed into normalised
//! rows, and written (for the sandbox, the benchmark and the tests).
//!
//! What [`parse`] takes, as downloaded: a zip holding `<account>_<yyyyMMdd>_业务明细.csv` (the
//! detail) and `<account>_<yyyyMMdd>_业务明细(汇总).csv` (the summary), both GBK, entry names GBK
//! bytes without the zip UTF-8 flag, in no guaranteed order (they are selected by name). A bare
//! detail CSV (GBK or UTF-8) is taken too, for operators holding an extracted file.
//!
//! The detail: `#` preamble lines; the line holding `业务明细列表` (not `结束`); the header
//! (columns found by name, never by position; unknown or missing columns are errors); data rows
//! until a line starting with `#`, which must be the `业务明细列表结束` line; then the footer
//! `#交易合计：n笔，商家实收共x元，…` and `#退款合计：…`, checked against the rows. Fields carry
//! trailing tabs (so spreadsheets keep long numbers as text); every field is trimmed. Refund
//! rows (`退款`) carry negative amounts; the normalised amount is always positive, with the kind
//! saying which way the money went. The row amount is `订单金额（元）` (what the order was for),
//! its time `完成时间` (payment time on 交易 rows, refund time on 退款 rows).
//!
//! Fees (`服务费（元）`) are kept exactly as written, and in fen when they have at most two
//! decimals. No public bill with non-zero fees exists, so their sign could not be confirmed; the
//! convention written by [`write_zip`] (and expected by reconciliation) is the one the spec
//! expects: charged on 交易 rows (positive), returned on 退款 rows (negative). The summary's `合计`
//! row is checked against the rows: counts, `商家实收`, `订单金额` and `服务费`.

use std::borrow::Cow;
use std::io::{Read, Write};

use chrono::{NaiveDate, NaiveDateTime};

use crate::amount::{fen_to_yuan, yuan_to_fen, AmountError};
use crate::crypto::sha256_hex;
use crate::settlement::{RowKind, SettlementError, SettlementFile, SettlementRow, SettlementTotals};

use super::transformers::{amount_from_wire_signed, parse_naive_time};

/// Decompressed entries larger than this are refused (a day's bill of several million rows is
/// far smaller; this stops a hostile archive from exhausting memory).
const MAX_ENTRY_BYTES: u64 = 4 << 30;

pub const DETAIL_SUFFIX: &str = "业务明细.csv";
pub const SUMMARY_SUFFIX: &str = "业务明细(汇总).csv";

// --- columns ---------------------------------------------------------------------------------

/// The detail file's columns (standard merchant bill). Half-width parentheses in a header are
/// read as the full-width ones.
const DETAIL_COLUMNS: [&str; 25] = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
];

const D_TRADE_NO: &str = "支付宝交易号";
const D_ORDER_NO: &str = "商户订单号";
const D_KIND: &str = "业务类型";
const D_FINISHED: &str = "完成时间";
const D_ORDER_AMOUNT: &str = "订单金额（元）";
const D_RECEIVED: &str = "商家实收（元）";
const D_MERCHANT_DISCOUNT: &str = "商家优惠（元）";
const D_REFUND_NO: &str = "退款批次号/请求号";
const D_FEE: &str = "服务费（元）";
const DETAIL_REQUIRED: [&str; 8] = [
    D_TRADE_NO,
    D_ORDER_NO,
    D_KIND,
    D_FINISHED,
    D_ORDER_AMOUNT,
    D_RECEIVED,
    D_REFUND_NO,
    D_FEE,
];

const SUMMARY_COLUMNS: [&str; 12] = [
    "门店编号",
    "门店名称",
    "交易订单总笔数",
    "退款订单总笔数",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "卡消费金额（元）",
    "服务费（元）",
    "分润（元）",
    "实收净额（元）",
];
const S_STORE: &str = "门店编号";
const S_PAYMENTS: &str = "交易订单总笔数";
const S_REFUNDS: &str = "退款订单总笔数";
const S_ORDER_AMOUNT: &str = "订单金额（元）";
const S_RECEIVED: &str = "商家实收（元）";
const S_FEE: &str = "服务费（元）";
const SUMMARY_REQUIRED: [&str; 5] = [S_STORE, S_PAYMENTS, S_REFUNDS, S_RECEIVED, S_FEE];

fn normalise_header(h: &str) -> String {
    h.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .replace('(', "（")
        .replace(')', "）")
}

/// Where each known column is: index by position in `known`, `None` when absent.
fn map_columns(
    header: &csv::StringRecord,
    known: &[&str],
    required: &[&str],
    line: usize,
) -> Result<Vec<Option<usize>>, SettlementError> {
    let mut at: Vec<Option<usize>> = vec![None; known.len()];
    for (i, cell) in header.iter().enumerate() {
        let name = normalise_header(cell);
        if name.is_empty() && i + 1 == header.len() {
            continue; // a trailing comma
        }
        let k = known
            .iter()
            .position(|k| *k == name)
            .ok_or_else(|| SettlementError::UnknownColumn(cell.trim().to_string()))?;
        if at[k].is_some() {
            return Err(SettlementError::BadRow {
                line,
                reason: format!("column {name:?} appears twice in the header"),
            });
        }
        at[k] = Some(i);
    }
    for r in required {
        let k = known.iter().position(|k| k == r).unwrap_or(0);
        if at[k].is_none() {
            return Err(SettlementError::MissingColumn((*r).to_string()));
        }
    }
    Ok(at)
}

fn col(known: &[&str], at: &[Option<usize>], name: &str) -> Option<usize> {
    known.iter().position(|k| *k == name).and_then(|k| at[k])
}

// --- decoding --------------------------------------------------------------------------------

/// Text of a bill file: UTF-8 when it is valid UTF-8 (a BOM is dropped), otherwise GBK (as
/// GB18030, its superset), refusing bytes that are neither.
fn decode<'a>(bytes: &'a [u8], what: &str) -> Result<Cow<'a, str>, SettlementError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok(Cow::Borrowed(s));
    }
    let mut decoder = encoding_rs::GB18030.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 4);
    let mut read_total = 0;
    loop {
        let (result, read) = decoder.decode_to_string_without_replacement(&bytes[read_total..], &mut out, true);
        read_total += read;
        match result {
            encoding_rs::DecoderResult::InputEmpty => return Ok(Cow::Owned(out)),
            // Room ran out (GBK can grow up to threefold in UTF-8): make more and go on.
            encoding_rs::DecoderResult::OutputFull => out.reserve((bytes.len() - read_total) * 3 + 16),
            encoding_rs::DecoderResult::Malformed(bad, _) => {
                let offset = read_total.saturating_sub(bad as usize);
                let line = bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(SettlementError::Encoding {
                    encoding: "GBK",
                    detail: format!("{what}: byte offset {offset} (line {line}) is neither UTF-8 nor GBK"),
                });
            }
        }
    }
}

/// How a detail's bytes were decoded: what [`original_lines`] needs to decode a line exactly
/// as the parse did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailEncoding {
    Utf8,
    Gbk,
}

fn entry_name(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) => encoding_rs::GB18030.decode_without_bom_handling(raw).0.into_owned(),
    }
}

/// The detail and summary entries of a bill zip: the detail's index and name, the summary's index.
fn bill_entries(zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>) -> Result<(usize, String, usize), SettlementError> {
    let mut detail = None;
    let mut summary = None;
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| SettlementError::Archive(format!("entry {}: {e}", i + 1)))?;
        let name = entry_name(f.name_raw());
        let slot = if name.ends_with(SUMMARY_SUFFIX) || name.ends_with("业务明细（汇总）.csv") {
            &mut summary
        } else if name.ends_with(DETAIL_SUFFIX) {
            &mut detail
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(SettlementError::Archive(format!(
                "the zip holds two entries like {name:?}"
            )));
        }
        *slot = Some((i, name));
    }
    let (detail, name) =
        detail.ok_or_else(|| SettlementError::Archive(format!("the zip holds no *_{DETAIL_SUFFIX} entry")))?;
    let (summary, _) =
        summary.ok_or_else(|| SettlementError::Archive(format!("the zip holds no *_{SUMMARY_SUFFIX} entry")))?;
    Ok((detail, name, summary))
}

/// The whole of a (small) zip entry, refusing one that inflates beyond [`MAX_ENTRY_BYTES`].
fn read_entry(zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, index: usize) -> Result<Vec<u8>, SettlementError> {
    let mut f = zip
        .by_index(index)
        .map_err(|e| SettlementError::Archive(format!("entry {}: {e}", index + 1)))?;
    let name = entry_name(f.name_raw());
    let mut buf = Vec::with_capacity(f.size().min(1 << 20) as usize);
    (&mut f)
        .take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SettlementError::Truncated(format!("entry {name:?} could not be decompressed: {e}")))?;
    if buf.len() as u64 > MAX_ENTRY_BYTES {
        return Err(SettlementError::Archive(format!("entry {name:?} is larger than 4 GiB")));
    }
    Ok(buf)
}

/// The text of the rows that start on `lines` (1-based, as [`SettlementRow::line`] gives them)
/// of a bill [`parse_lean`] read, exactly as [`parse`] would have kept them in
/// `original_line`: a row whose quoted field spans lines comes whole, its line ends trimmed.
/// The detail is read again as a stream (inflated, never held whole) up to the last line
/// wanted, and only those lines are decoded.
pub fn original_lines(
    bytes: &[u8],
    encoding: DetailEncoding,
    lines: &[u32],
) -> Result<std::collections::BTreeMap<u32, String>, SettlementError> {
    let mut wanted: Vec<u32> = lines.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    if !is_zip(bytes) {
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        return collect_lines(body, encoding, &wanted);
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| SettlementError::Archive(format!("not a readable zip ({e}); is the download truncated?")))?;
    for i in 0..zip.len() {
        let f = zip
            .by_index(i)
            .map_err(|e| SettlementError::Archive(format!("entry {}: {e}", i + 1)))?;
        let name = entry_name(f.name_raw());
        if name.ends_with(DETAIL_SUFFIX) {
            return collect_lines(
                std::io::BufReader::with_capacity(1 << 20, f.take(MAX_ENTRY_BYTES)),
                encoding,
                &wanted,
            );
        }
    }
    Err(SettlementError::Archive(format!(
        "the zip holds no *_{DETAIL_SUFFIX} entry"
    )))
}

/// Read `wanted` (sorted, 1-based line numbers) out of a detail's bytes.
fn collect_lines(
    mut r: impl std::io::BufRead,
    encoding: DetailEncoding,
    wanted: &[u32],
) -> Result<std::collections::BTreeMap<u32, String>, SettlementError> {
    let io = |e: std::io::Error| SettlementError::Truncated(format!("the detail could not be read again: {e}"));
    let mut out = std::collections::BTreeMap::new();
    // Lines read so far.
    let mut at: u32 = 0;
    let mut raw = Vec::new();
    for &want in wanted {
        if want <= at {
            // Inside a multi-line row read for an earlier number: not the start of a row.
            return Err(bad(want as usize, "no row starts on this line"));
        }
        // Skip to the start of line `want`.
        let mut skip = want - 1 - at;
        while skip > 0 {
            let buf = r.fill_buf().map_err(io)?;
            if buf.is_empty() {
                return Err(bad(want as usize, "the detail ends before this line"));
            }
            let mut used = buf.len();
            let mut seen = 0;
            for nl in memchr::memchr_iter(b'\n', buf) {
                seen += 1;
                if seen == skip {
                    used = nl + 1;
                    break;
                }
            }
            skip -= seen;
            at += seen;
            r.consume(used);
        }
        raw.clear();
        if r.read_until(b'\n', &mut raw).map_err(io)? == 0 {
            return Err(bad(want as usize, "the detail ends before this line"));
        }
        at += 1;
        // A quoted field may run over lines: take lines while its quotes are open, as the
        // parse does ('"' and '\n' never occur inside a GBK or UTF-8 multi-byte character).
        while memchr::memchr_iter(b'"', &raw).count() % 2 == 1 {
            if r.read_until(b'\n', &mut raw).map_err(io)? == 0 {
                break;
            }
            at += 1;
        }
        while raw.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            raw.pop();
        }
        let text = match encoding {
            DetailEncoding::Utf8 => String::from_utf8(raw.clone()).map_err(|_| SettlementError::Encoding {
                encoding: "UTF-8",
                detail: format!("line {want} is not UTF-8 on a second reading"),
            })?,
            DetailEncoding::Gbk => encoding_rs::GB18030
                .decode_without_bom_handling_and_without_replacement(&raw)
                .ok_or_else(|| SettlementError::Encoding {
                    encoding: "GBK",
                    detail: format!("line {want} is not GBK on a second reading"),
                })?
                .into_owned(),
        };
        out.insert(want, text);
    }
    Ok(out)
}

// --- identity --------------------------------------------------------------------------------

/// Whose bill of which day a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillIdentity {
    /// The account the bill is for: the 2088… partner id followed by `0156`.
    pub account: String,
    pub day: NaiveDate,
}

/// Whose bill of which day a file is, without parsing its rows: from the zip's detail entry name
/// (`<account>_<yyyyMMdd>_业务明细.csv`) or, for a bare detail CSV, from its `#账号：[…]` and
/// `#起始日期：[yyyy年MM月dd日 …]` lines.
pub fn identity(bytes: &[u8]) -> Result<BillIdentity, SettlementError> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| SettlementError::Archive(format!("not a readable zip ({e}); is the download truncated?")))?;
        for i in 0..zip.len() {
            let f = zip
                .by_index_raw(i)
                .map_err(|e| SettlementError::Archive(format!("entry {}: {e}", i + 1)))?;
            let name = entry_name(f.name_raw());
            let base = name.rsplit('/').next().unwrap_or(&name);
            let Some(stem) = base.strip_suffix(DETAIL_SUFFIX).and_then(|s| s.strip_suffix('_')) else {
                continue;
            };
            let (account, day) = stem.rsplit_once('_').ok_or_else(|| {
                SettlementError::Archive(format!("entry {name:?} is not <account>_<yyyyMMdd>_{DETAIL_SUFFIX}"))
            })?;
            let day = NaiveDate::parse_from_str(day, "%Y%m%d")
                .map_err(|_| SettlementError::Archive(format!("entry {name:?} names no yyyyMMdd day")))?;
            return Ok(BillIdentity {
                account: account.to_string(),
                day,
            });
        }
        return Err(SettlementError::Archive(format!(
            "the zip holds no *_{DETAIL_SUFFIX} entry"
        )));
    }
    let head = &bytes[..bytes.len().min(4096)];
    // The preamble is read as UTF-8 as far as it is valid UTF-8 (a file may break further on),
    // else as GBK.
    let text = match std::str::from_utf8(head) {
        Ok(s) => Cow::Borrowed(s),
        Err(e) => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(prefix) if prefix.contains("#账号") => Cow::Borrowed(prefix),
            _ => encoding_rs::GB18030.decode_without_bom_handling(head).0,
        },
    };
    let field = |label: &str| -> Option<String> {
        let line = text.lines().find(|l| l.contains(label))?;
        let rest = &line[line.find(label)? + label.len()..];
        let rest = rest.trim_start_matches(['：', ':', ' ']).trim_start_matches('[');
        Some(rest.split(']').next()?.trim().to_string())
    };
    let account = field("#账号").ok_or_else(|| bad(1, "no #账号 line: not an Alipay 业务明细 file"))?;
    let start = field("#起始日期").ok_or_else(|| bad(1, "no #起始日期 line: not an Alipay 业务明细 file"))?;
    let day_text = start.split_whitespace().next().unwrap_or("");
    let day = NaiveDate::parse_from_str(day_text, "%Y年%m月%d日")
        .map_err(|_| bad(3, format!("#起始日期 {start:?} is not yyyy年MM月dd日")))?;
    Ok(BillIdentity {
        account: account.trim_start_matches('\u{feff}').to_string(),
        day,
    })
}

// --- parsing ---------------------------------------------------------------------------------

fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Parse a bill as downloaded (the zip), or a bare detail CSV.
pub fn parse(bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
    parse_with(bytes, true).map(|(file, _)| file)
}

/// [`parse`], with every check, but without each row's text: rows keep their `line` and an
/// empty `original_line`. The text of the few rows a reconciliation reports is read back with
/// [`original_lines`] (given the encoding returned here). A million-row day is about 200 MB of
/// text; a copy of every line beside the rows doubled their size.
pub fn parse_lean(bytes: &[u8]) -> Result<(SettlementFile, DetailEncoding), SettlementError> {
    parse_with(bytes, false)
}

fn parse_with(bytes: &[u8], keep_lines: bool) -> Result<(SettlementFile, DetailEncoding), SettlementError> {
    let file_sha256 = sha256_hex(bytes);
    let (rows, encoding) = if is_zip(bytes) {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| SettlementError::Archive(format!("not a readable zip ({e}); is the download truncated?")))?;
        let (detail_at, detail_name, summary_at) = bill_entries(&mut zip)?;
        let summary = read_entry(&mut zip, summary_at)?;
        // The detail is inflated, decoded and read as a stream: a million-row day is a few
        // hundred megabytes of bytes and as much again of text, and neither is held whole.
        let entry = zip
            .by_index(detail_at)
            .map_err(|e| SettlementError::Archive(format!("entry {}: {e}", detail_at + 1)))?;
        let mut src = DetailSource::new(entry, format!("entry {detail_name:?}"));
        let (parts, sums) = parse_detail(&mut src, keep_lines)?;
        let encoding = src.encoding();
        drop(src);
        let summary = parse_summary(&decode(&summary, "the summary file")?)?;
        check_summary(&summary, &sums)?;
        (join(parts), encoding)
    } else {
        let mut src = DetailSource::new(bytes, "the detail file".to_string());
        let (parts, _) = parse_detail(&mut src, keep_lines)?;
        let encoding = src.encoding();
        (join(parts), encoding)
    };
    let totals = SettlementTotals::of(&rows);
    Ok((
        SettlementFile {
            rows,
            totals,
            file_sha256,
        },
        encoding,
    ))
}

/// Sums over the detail rows that the footer and the summary are checked against (signed, as
/// the file writes them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DetailSums {
    payments: u64,
    refunds: u64,
    received_payments: i64,
    received_refunds: i64,
    discount_payments: i64,
    discount_refunds: i64,
    order_amount: i64,
    /// `None` once a fee has more than two decimals.
    fee: Option<i64>,
}

fn lines_with_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |raw| {
        let start = offset;
        offset += raw.len();
        (start, raw.trim_end_matches(['\n', '\r']))
    })
}

fn bad(line: usize, reason: impl Into<String>) -> SettlementError {
    SettlementError::BadRow {
        line,
        reason: reason.into(),
    }
}

fn money(line: usize, column: &str, text: &str) -> Result<i64, SettlementError> {
    amount_from_wire_signed(text, true).map_err(|e| bad(line, format!("{column}: {e}")))
}

/// The rows of the chunks a detail was read in, in file order, as one list: grown in place where
/// the allocator can (large buffers are remapped, not copied) and each chunk freed once taken.
fn join(parts: Vec<Vec<SettlementRow>>) -> Vec<SettlementRow> {
    let total = parts.iter().map(Vec::len).sum::<usize>();
    let mut parts = parts.into_iter();
    let Some(mut rows) = parts.next() else {
        return Vec::new();
    };
    rows.reserve_exact(total - rows.len());
    for part in parts {
        rows.extend(part);
    }
    rows
}

// --- the detail, read as a stream ------------------------------------------------------------

/// Bytes read from the detail at a time.
const READ_BYTES: usize = 1 << 20;
/// Text handed to a reader thread at a time (cut at a row's start).
const PIECE_BYTES: usize = 4 << 20;
/// The preamble and header must lie within this much text (Alipay's preamble is five lines).
const PREAMBLE_BYTES: usize = 64 << 10;

/// What a detail's text has shown itself to be so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Only ASCII yet: UTF-8 and GBK read it alike.
    Ascii,
    Utf8,
    Gbk,
}

/// A detail's bytes (a zip entry being inflated, or a bare file) read and decoded a block at a
/// time, so that neither its bytes nor its whole text are ever held. UTF-8 when its text is
/// UTF-8 (a BOM is dropped), otherwise GBK (as GB18030, its superset), refusing bytes that are
/// neither. The choice is made on the first block with non-ASCII bytes in it (a preamble line of
/// Chinese, in Alipay's files): GBK text is not valid UTF-8 for long, so a block that is holds
/// UTF-8, and a UTF-8 file that stops being UTF-8 further on is refused where it stops.
struct DetailSource<R> {
    src: R,
    /// The detail, for errors: `the detail file` or `entry "…"`.
    what: String,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` read but not yet decoded (an incomplete UTF-8 character).
    held: usize,
    seen: Seen,
    gbk: encoding_rs::Decoder,
    started: bool,
    done: bool,
    /// Bytes read, bytes decoded (after a BOM), and the newlines among those decoded.
    read: u64,
    decoded: usize,
    newlines: usize,
}

impl<R: Read> DetailSource<R> {
    fn new(src: R, what: String) -> Self {
        DetailSource {
            src,
            what,
            buf: Vec::new(),
            held: 0,
            seen: Seen::Ascii,
            gbk: encoding_rs::GB18030.new_decoder_without_bom_handling(),
            started: false,
            done: false,
            read: 0,
            decoded: 0,
            newlines: 0,
        }
    }

    fn encoding(&self) -> DetailEncoding {
        match self.seen {
            Seen::Gbk => DetailEncoding::Gbk,
            Seen::Ascii | Seen::Utf8 => DetailEncoding::Utf8,
        }
    }

    /// Read and decode the next block onto `out`. `false` once the input is exhausted (what
    /// this call decoded is on `out` all the same).
    fn fill(&mut self, out: &mut String) -> Result<bool, SettlementError> {
        if self.done {
            return Ok(false);
        }
        if self.buf.len() < self.held + READ_BYTES {
            self.buf.resize(self.held + READ_BYTES, 0);
        }
        let n = loop {
            match self.src.read(&mut self.buf[self.held..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(SettlementError::Truncated(format!(
                        "{} could not be decompressed: {e}",
                        self.what
                    )))
                }
            }
        };
        self.read += n as u64;
        if self.read > MAX_ENTRY_BYTES {
            return Err(SettlementError::Archive(format!("{} is larger than 4 GiB", self.what)));
        }
        let last = n == 0;
        let len = self.held + n;
        let mut start = 0;
        if !self.started {
            if len < 3 && !last {
                self.held = len;
                return Ok(true);
            }
            self.started = true;
            if self.buf[..len].starts_with(b"\xEF\xBB\xBF") {
                start = 3;
                self.seen = Seen::Utf8;
            }
        }
        let used = self.decode(start, len, last, out)?;
        let input = &self.buf[start..start + used];
        self.newlines += memchr::memchr_iter(b'\n', input).count();
        self.decoded += used;
        self.buf.copy_within(start + used..len, 0);
        self.held = len - start - used;
        if last {
            self.done = true;
        }
        Ok(!last)
    }

    /// Decode `buf[start..end]` onto `out`; the bytes used (all but an incomplete UTF-8
    /// character at the end, unless `last`).
    fn decode(&mut self, start: usize, end: usize, last: bool, out: &mut String) -> Result<usize, SettlementError> {
        let input = &self.buf[start..end];
        if self.seen != Seen::Gbk {
            match std::str::from_utf8(input) {
                Ok(s) => {
                    if !s.is_ascii() {
                        self.seen = Seen::Utf8;
                    }
                    out.push_str(s);
                    return Ok(input.len());
                }
                Err(e) if e.error_len().is_none() && !last => {
                    let s = std::str::from_utf8(&input[..e.valid_up_to()]).unwrap_or_default();
                    if !s.is_ascii() {
                        self.seen = Seen::Utf8;
                    }
                    out.push_str(s);
                    return Ok(s.len());
                }
                Err(_) if self.seen == Seen::Ascii => self.seen = Seen::Gbk,
                Err(e) => {
                    let offset = e.valid_up_to();
                    return Err(SettlementError::Encoding {
                        encoding: "UTF-8",
                        detail: format!(
                            "{}: byte offset {} (line {}) is not UTF-8, though the text before it is",
                            self.what,
                            self.decoded + offset,
                            self.newlines + memchr::memchr_iter(b'\n', &input[..offset]).count() + 1
                        ),
                    });
                }
            }
        }
        out.reserve(input.len() + input.len() / 2 + 16);
        let mut used = 0;
        loop {
            let (result, read) = self.gbk.decode_to_string_without_replacement(&input[used..], out, last);
            used += read;
            match result {
                encoding_rs::DecoderResult::InputEmpty => return Ok(input.len()),
                // Room ran out (GBK can grow up to threefold in UTF-8): make more and go on.
                encoding_rs::DecoderResult::OutputFull => out.reserve((input.len() - used) * 3 + 16),
                encoding_rs::DecoderResult::Malformed(bad, _) => {
                    let offset = used.saturating_sub(bad as usize);
                    return Err(SettlementError::Encoding {
                        encoding: "GBK",
                        detail: format!(
                            "{}: byte offset {} (line {}) is neither UTF-8 nor GBK",
                            self.what,
                            self.decoded + offset,
                            self.newlines + memchr::memchr_iter(b'\n', &input[..offset]).count() + 1
                        ),
                    });
                }
            }
        }
    }
}

/// Where the list begins: the header's line number, the offset of the first data line in
/// `text`, and the columns. `text` holds whole lines only unless `all` (the input has ended);
/// `None` while more text is needed.
fn find_header(text: &str, all: bool) -> Result<Option<(usize, usize, DetailCols)>, SettlementError> {
    let mut lines = lines_with_offsets(text).enumerate();
    let mut header = None;
    for (i, (_, line)) in lines.by_ref() {
        if line.starts_with('#') && line.contains("业务明细列表") && !line.contains("结束") {
            header = lines.next().map(|(j, (off, l))| (j + 1, off, l));
            if header.is_none() {
                if !all {
                    return Ok(None);
                }
                return Err(SettlementError::Truncated(format!(
                    "the file ends after line {} without a header",
                    i + 1
                )));
            }
            break;
        }
    }
    let Some((header_line, header_off, header_text)) = header else {
        // (A marker without its header line has returned above.)
        if !all && text.len() < PREAMBLE_BYTES {
            return Ok(None);
        }
        return Err(bad(
            1,
            "not an Alipay 业务明细 (trade detail) file: no #…业务明细列表… line",
        ));
    };
    let header_record = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(header_text.as_bytes())
        .records()
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| bad(header_line, "the header line is empty"))?;
    let at = map_columns(&header_record, &DETAIL_COLUMNS, &DETAIL_REQUIRED, header_line)?;
    let c = |name: &str| col(&DETAIL_COLUMNS, &at, name).unwrap_or(0);
    let cols = DetailCols {
        trade: c(D_TRADE_NO),
        order: c(D_ORDER_NO),
        kind: c(D_KIND),
        finished: c(D_FINISHED),
        amount: c(D_ORDER_AMOUNT),
        received: c(D_RECEIVED),
        refund_no: c(D_REFUND_NO),
        fee: c(D_FEE),
        discount: col(&DETAIL_COLUMNS, &at, D_MERCHANT_DISCOUNT),
        width: header_record.len(),
    };
    let after = header_off + header_text.len();
    let data = if text[after..].starts_with("\r\n") {
        after + 2
    } else if text[after..].starts_with('\n') {
        after + 1
    } else {
        after
    };
    Ok(Some((header_line, data, cols)))
}

/// The detail's rows, as read piece by piece (see [`join`]), and their sums. The text is
/// decoded on this thread and cut into pieces at rows' starts (never inside a quoted field);
/// reader threads turn the pieces into rows while the next ones are decoded. The first line
/// starting with `#` outside quotes ends the rows: it and everything after it is the footer.
fn parse_detail<R: Read>(
    src: &mut DetailSource<R>,
    keep_lines: bool,
) -> Result<(Vec<Vec<SettlementRow>>, DetailSums), SettlementError> {
    // 1. The preamble, up to the line that opens the list, and the header.
    let mut text = String::new();
    let (more, (header_line, data, cols)) = loop {
        let more = src.fill(&mut text)?;
        let whole = if more {
            memchr::memrchr(b'\n', text.as_bytes()).map_or(0, |i| i + 1)
        } else {
            text.len()
        };
        if let Some(found) = find_header(&text[..whole], !more)? {
            break (more, found);
        }
    };
    text.drain(..data);

    // 2. The rows, in pieces, on reader threads.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let (to_readers, pieces) = std::sync::mpsc::sync_channel::<(usize, String)>(workers);
    let pieces = std::sync::Mutex::new(pieces);
    let (done, results) = std::sync::mpsc::channel::<(usize, Result<Chunk, SettlementError>)>();
    let produced = std::thread::scope(|scope| {
        for _ in 0..workers {
            let (pieces, done, cols) = (&pieces, done.clone(), &cols);
            scope.spawn(move || loop {
                let next = match pieces.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((i, piece)) = next else { return };
                let chunk = read_rows(&piece, cols, keep_lines);
                drop(piece);
                if done.send((i, chunk)).is_err() {
                    return;
                }
            });
        }
        let produced = cut_pieces(src, text, more, &to_readers);
        drop(to_readers);
        produced
    });
    drop(done);
    let (count, footer) = produced?;
    let mut chunks: Vec<Option<Result<Chunk, SettlementError>>> = (0..count).map(|_| None).collect();
    for (i, chunk) in results.try_iter() {
        chunks[i] = Some(chunk);
    }

    // 3. The pieces' rows in file order, numbered from the header.
    let mut parts = Vec::with_capacity(count);
    let mut sums = DetailSums {
        fee: Some(0),
        ..DetailSums::default()
    };
    let mut lines_before = header_line;
    for chunk in chunks {
        let chunk = chunk.unwrap_or_else(|| Err(bad(lines_before + 1, "a reader thread failed")));
        let mut chunk = chunk.map_err(|e| match e {
            SettlementError::BadRow { line, reason } => SettlementError::BadRow {
                line: line + lines_before,
                reason,
            },
            other => other,
        })?;
        if let Some((line, _)) = chunk.footer {
            // Pieces are cut before the first `#` line outside quotes; a reader finding one
            // means the cut and the reader disagree about quotes.
            return Err(bad(line + lines_before, "a line starting with '#' inside the rows"));
        }
        let before = u32::try_from(lines_before).map_err(|_| bad(lines_before, "the file has too many lines"))?;
        for r in &mut chunk.rows {
            r.line += before;
        }
        parts.push(chunk.rows);
        sums.add(&chunk.sums);
        lines_before += chunk.lines;
    }

    // 4. The footer: the end line, then the totals.
    let footer = footer.ok_or_else(|| {
        SettlementError::Truncated("the 业务明细列表结束 line and the totals after the rows are missing".into())
    })?;
    check_footer(&footer, lines_before + 1, &sums)?;
    Ok((parts, sums))
}

/// Decode the data region (`text` holds its start) and send it to the readers in pieces of
/// about [`PIECE_BYTES`], each ending where a row ends. Returns the number of pieces and the
/// footer's text, from the first line starting with `#` outside quotes to the end.
fn cut_pieces<R: Read>(
    src: &mut DetailSource<R>,
    mut text: String,
    mut more: bool,
    readers: &std::sync::mpsc::SyncSender<(usize, String)>,
) -> Result<(usize, Option<String>), SettlementError> {
    let mut count = 0;
    let mut send = |piece: String| -> Result<(), SettlementError> {
        readers
            .send((count, piece))
            .map_err(|_| bad(0, "a reader thread failed"))?;
        count += 1;
        Ok(())
    };
    // How far `text` has been looked at; whether the quotes before there are balanced; the
    // last row start seen; whether `text[scanned]` starts a line.
    let mut scanned = 0;
    let mut even = true;
    let mut cut = 0;
    let mut line_start = true;
    loop {
        let b = text.as_bytes();
        let mut footer_at = None;
        if line_start && scanned < b.len() {
            line_start = false;
            if even && b[scanned] == b'#' {
                footer_at = Some(scanned);
            }
        }
        if footer_at.is_none() {
            for i in memchr::memchr2_iter(b'"', b'\n', &b[scanned..]) {
                let i = scanned + i;
                if b[i] == b'"' {
                    even = !even;
                    continue;
                }
                if !even {
                    continue;
                }
                cut = i + 1;
                match b.get(i + 1) {
                    Some(b'#') => {
                        footer_at = Some(i + 1);
                        break;
                    }
                    Some(_) => {}
                    None => line_start = true,
                }
            }
            scanned = b.len();
        }
        if let Some(at) = footer_at {
            let mut footer = text[at..].to_string();
            text.truncate(at);
            if !text.is_empty() {
                send(text)?;
            }
            while src.fill(&mut footer)? {}
            return Ok((count, Some(footer)));
        }
        if !more {
            if !text.is_empty() {
                send(text)?;
            }
            return Ok((count, None));
        }
        if cut >= PIECE_BYTES {
            let rest = text.split_off(cut);
            send(std::mem::replace(&mut text, rest))?;
            scanned -= cut;
            cut = 0;
        }
        more = src.fill(&mut text)?;
    }
}

/// The rows of one chunk of the data region.
struct Chunk {
    rows: Vec<SettlementRow>,
    sums: DetailSums,
    /// Lines in the chunk (for the next chunk's line numbers).
    lines: usize,
    /// (line number within the chunk, byte offset) of the first line starting with '#'.
    footer: Option<(usize, usize)>,
}

impl DetailSums {
    fn add(&mut self, o: &DetailSums) {
        self.payments += o.payments;
        self.refunds += o.refunds;
        self.received_payments += o.received_payments;
        self.received_refunds += o.received_refunds;
        self.discount_payments += o.discount_payments;
        self.discount_refunds += o.discount_refunds;
        self.order_amount += o.order_amount;
        self.fee = match (self.fee, o.fee) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
}

/// Read data rows, one per line, to the first line starting with '#'. A line without quotes is
/// split on commas (what a CSV reader does with it, only faster); a line with quotes goes
/// through the csv crate, together with the lines after it while its quotes are open. Line
/// numbers in errors count from the chunk's start (the caller adds the lines before it).
fn read_rows(rest: &str, cols: &DetailCols, keep_lines: bool) -> Result<Chunk, SettlementError> {
    let mut rows = Vec::with_capacity(rest.len() / 220 + 1);
    let mut sums = DetailSums {
        fee: Some(0),
        ..DetailSums::default()
    };
    let mut fields: Vec<&str> = Vec::with_capacity(cols.width + 1);
    let mut line_no = 0;
    let mut pos = 0;
    let next_line_end = |from: usize| rest[from..].find('\n').map_or(rest.len(), |e| from + e + 1);
    while pos < rest.len() {
        let mut end = next_line_end(pos);
        line_no += 1;
        let first_line = line_no;
        let mut line = rest[pos..end].trim_end_matches(['\n', '\r']);
        if line.starts_with('#') {
            return Ok(Chunk {
                rows,
                sums,
                lines: line_no - 1,
                footer: Some((line_no, pos)),
            });
        }
        if line.trim().is_empty() {
            pos = end;
            continue;
        }
        let row = if line.contains('"') {
            while line.bytes().filter(|&b| b == b'"').count() % 2 == 1 && end < rest.len() {
                end = next_line_end(end);
                line_no += 1;
                line = rest[pos..end].trim_end_matches(['\n', '\r']);
            }
            let rec = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(line.as_bytes())
                .records()
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| bad(first_line, "not readable as CSV (unbalanced quotes?)"))?;
            let quoted: Vec<&str> = rec.iter().collect();
            read_row(&quoted, keep_lines.then_some(line), first_line, cols, &mut sums)?
        } else {
            fields.clear();
            fields.extend(line.split(','));
            read_row(&fields, keep_lines.then_some(line), first_line, cols, &mut sums)?
        };
        rows.push(row);
        pos = end;
    }
    Ok(Chunk {
        rows,
        sums,
        lines: line_no,
        footer: None,
    })
}

/// Where the detail's columns are.
struct DetailCols {
    trade: usize,
    order: usize,
    kind: usize,
    finished: usize,
    amount: usize,
    received: usize,
    refund_no: usize,
    fee: usize,
    discount: Option<usize>,
    width: usize,
}

/// One data row (its fields, its text if kept, its line number) into a normalised row; adds to
/// the sums.
fn read_row(
    fields: &[&str],
    original: Option<&str>,
    line: usize,
    c: &DetailCols,
    sums: &mut DetailSums,
) -> Result<SettlementRow, SettlementError> {
    let width = c.width;
    let width_here = if fields.len() == width + 1 && fields[width].trim().is_empty() {
        width
    } else {
        fields.len()
    };
    if width_here != width {
        return Err(bad(
            line,
            format!("{} fields where the header has {width}", fields.len()),
        ));
    }
    let f = |i: usize| fields[i].trim();
    let kind = match f(c.kind) {
        "交易" => RowKind::Payment,
        "退款" => RowKind::Refund,
        other => return Err(bad(line, format!("业务类型 {other:?} is neither 交易 nor 退款"))),
    };
    let trade_no = f(c.trade);
    let order_no = f(c.order);
    if trade_no.is_empty() {
        return Err(bad(line, "支付宝交易号 is empty"));
    }
    if order_no.is_empty() {
        return Err(bad(line, "商户订单号 is empty"));
    }
    let amount = money(line, D_ORDER_AMOUNT, f(c.amount))?;
    let received = money(line, D_RECEIVED, f(c.received))?;
    let discount = match c.discount {
        Some(i) if !f(i).is_empty() => money(line, D_MERCHANT_DISCOUNT, f(i))?,
        _ => 0,
    };
    match kind {
        RowKind::Payment if amount <= 0 => return Err(bad(line, format!("a 交易 row with 订单金额 {}", f(c.amount)))),
        RowKind::Refund if amount >= 0 => {
            return Err(bad(
                line,
                format!("a 退款 row with 订单金额 {} (refunds are negative)", f(c.amount)),
            ))
        }
        _ => {}
    }
    let fee_text = match f(c.fee) {
        "" => "0.00",
        t => t,
    };
    let fee_fen = match yuan_to_fen(fee_text, true) {
        Ok(v) => Some(v),
        Err(AmountError::TooPrecise(_)) => None,
        Err(e) => return Err(bad(line, format!("{D_FEE}: {e}"))),
    };
    let time_text = f(c.finished);
    let time = parse_naive_time(time_text)
        .ok_or_else(|| bad(line, format!("完成时间 {time_text:?} is not yyyy-MM-dd HH:mm:ss")))?;
    let refund_no = match kind {
        RowKind::Payment => None,
        // A refund made without a request number has the order number as its request number.
        RowKind::Refund => Some(match f(c.refund_no) {
            "" => order_no.to_string(),
            n => n.to_string(),
        }),
    };
    match kind {
        RowKind::Payment => {
            sums.payments += 1;
            sums.received_payments += received;
            sums.discount_payments += discount;
        }
        RowKind::Refund => {
            sums.refunds += 1;
            sums.received_refunds += received;
            sums.discount_refunds += discount;
        }
    }
    sums.order_amount += amount;
    sums.fee = match (sums.fee, fee_fen) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    Ok(SettlementRow {
        order_no: order_no.to_string(),
        refund_no,
        gateway_txn_id: trade_no.to_string(),
        kind,
        amount_fen: amount.abs(),
        fee: fee_text.to_string(),
        fee_fen,
        time,
        line: u32::try_from(line).map_err(|_| bad(line, "the file has too many lines"))?,
        original_line: original.map(str::to_string).unwrap_or_default(),
    })
}

/// The numbers in a footer line, in order (`#交易合计：6笔，商家实收共0.06元，…` → 6, 0.06, …).
fn numbers(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i] == b'-' || b[i].is_ascii_digit() {
            i += 1;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let t = &line[start..i];
            if t != "-" {
                out.push(t);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn check_footer(footer: &str, first_line: usize, sums: &DetailSums) -> Result<(), SettlementError> {
    let mut lines = footer.lines().map(|l| l.trim_end_matches('\r'));
    match lines.next() {
        Some(l) if l.contains("业务明细列表结束") => {}
        Some(l) => {
            return Err(bad(
                first_line,
                format!("the rows end at {l:?} rather than the 业务明细列表结束 line"),
            ))
        }
        None => {
            return Err(SettlementError::Truncated(
                "the 业务明细列表结束 line is missing".into(),
            ))
        }
    }
    let mut trades = None;
    let mut refunds = None;
    for l in lines {
        if l.starts_with("#交易合计") {
            trades = Some(l);
        } else if l.starts_with("#退款合计") {
            refunds = Some(l);
        }
    }
    let trades = trades.ok_or_else(|| SettlementError::Truncated("the #交易合计 line is missing".into()))?;
    let refunds = refunds.ok_or_else(|| SettlementError::Truncated("the #退款合计 line is missing".into()))?;
    let check = |label: &str, line: &str, count: u64, received: i64, discount: i64| -> Result<(), SettlementError> {
        let n = numbers(line);
        if n.len() < 2 {
            return Err(SettlementError::SummaryMismatch(format!(
                "the {label} line {line:?} states no totals"
            )));
        }
        let stated_count: u64 = n[0].parse().map_err(|_| {
            SettlementError::SummaryMismatch(format!("the {label} line's count {:?} is not a number", n[0]))
        })?;
        if stated_count != count {
            return Err(SettlementError::SummaryMismatch(format!(
                "{label} states {stated_count} rows, the file holds {count}"
            )));
        }
        let stated = amount_from_wire_signed(n[1], true)
            .map_err(|e| SettlementError::SummaryMismatch(format!("{label}: {e}")))?;
        if stated != received {
            return Err(SettlementError::SummaryMismatch(format!(
                "{label} states 商家实收 {} yuan, the rows add up to {}",
                n[1],
                fen_to_yuan(received)
            )));
        }
        if let Some(d) = n.get(2) {
            let stated = amount_from_wire_signed(d, true)
                .map_err(|e| SettlementError::SummaryMismatch(format!("{label}: {e}")))?;
            if stated != discount {
                return Err(SettlementError::SummaryMismatch(format!(
                    "{label} states 商家优惠 {d} yuan, the rows add up to {}",
                    fen_to_yuan(discount)
                )));
            }
        }
        Ok(())
    };
    check(
        "#交易合计",
        trades,
        sums.payments,
        sums.received_payments,
        sums.discount_payments,
    )?;
    check(
        "#退款合计",
        refunds,
        sums.refunds,
        sums.received_refunds,
        sums.discount_refunds,
    )?;
    Ok(())
}

/// The summary's `合计` row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SummaryTotals {
    payments: u64,
    refunds: u64,
    order_amount: Option<i64>,
    received: i64,
    fee: Option<i64>,
}

fn parse_summary(text: &str) -> Result<SummaryTotals, SettlementError> {
    let mut header: Option<(usize, Vec<Option<usize>>)> = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let rec = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(line.as_bytes())
            .records()
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| bad(line_no, "summary line is not readable as CSV"))?;
        let Some((_, at)) = &header else {
            header = Some((
                line_no,
                map_columns(&rec, &SUMMARY_COLUMNS, &SUMMARY_REQUIRED, line_no)?,
            ));
            continue;
        };
        let f = |name: &str| col(&SUMMARY_COLUMNS, at, name).and_then(|i| rec.get(i)).map(str::trim);
        if f(S_STORE) != Some("合计") {
            continue;
        }
        let count = |name: &str| -> Result<u64, SettlementError> {
            f(name)
                .unwrap_or("")
                .parse()
                .map_err(|_| bad(line_no, format!("summary {name} is not a count")))
        };
        let amount = |name: &str| -> Result<Option<i64>, SettlementError> {
            match f(name) {
                None | Some("") => Ok(None),
                Some(t) => match yuan_to_fen(t, true) {
                    Ok(v) => Ok(Some(v)),
                    Err(AmountError::TooPrecise(_)) => Ok(None),
                    Err(e) => Err(bad(line_no, format!("summary {name}: {e}"))),
                },
            }
        };
        return Ok(SummaryTotals {
            payments: count(S_PAYMENTS)?,
            refunds: count(S_REFUNDS)?,
            order_amount: amount(S_ORDER_AMOUNT)?,
            received: amount(S_RECEIVED)?.ok_or_else(|| bad(line_no, "the summary's 合计 row has no 商家实收"))?,
            fee: amount(S_FEE)?,
        });
    }
    match header {
        None => Err(SettlementError::Truncated("the summary file has no header".into())),
        Some(_) => Err(SettlementError::Truncated("the summary file has no 合计 row".into())),
    }
}

fn check_summary(s: &SummaryTotals, d: &DetailSums) -> Result<(), SettlementError> {
    let mismatch = |what: &str, summary: String, rows: String| {
        Err(SettlementError::SummaryMismatch(format!(
            "the summary's 合计 states {what} {summary}, the detail rows give {rows}"
        )))
    };
    if s.payments != d.payments {
        return mismatch("交易订单总笔数", s.payments.to_string(), d.payments.to_string());
    }
    if s.refunds != d.refunds {
        return mismatch("退款订单总笔数", s.refunds.to_string(), d.refunds.to_string());
    }
    let received = d.received_payments + d.received_refunds;
    if s.received != received {
        return mismatch("商家实收", fen_to_yuan(s.received), fen_to_yuan(received));
    }
    if let Some(a) = s.order_amount {
        if a != d.order_amount {
            return mismatch("订单金额", fen_to_yuan(a), fen_to_yuan(d.order_amount));
        }
    }
    if let (Some(a), Some(b)) = (s.fee, d.fee) {
        if a != b {
            return mismatch("服务费", fen_to_yuan(a), fen_to_yuan(b));
        }
    }
    Ok(())
}

// --- writing ---------------------------------------------------------------------------------

/// One detail row to write, in the file's own terms (amounts signed as the file writes them:
/// negative on refund rows; the fee signed as charged (+) or returned (−)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    pub trade_no: String,
    pub out_trade_no: String,
    pub kind: RowKind,
    pub subject: String,
    /// The trade's creation time (also on its refund rows).
    pub created: NaiveDateTime,
    /// Payment time (交易) or refund time (退款).
    pub finished: NaiveDateTime,
    pub store_id: String,
    pub store_name: String,
    pub operator: String,
    pub terminal: String,
    /// Masked buyer account, e.g. `*津水(602***@qq.com)`.
    pub buyer: String,
    pub order_amount_fen: i64,
    pub received_fen: i64,
    pub merchant_discount_fen: i64,
    /// `out_request_no` on refund rows.
    pub refund_no: Option<String>,
    pub fee_fen: i64,
    pub remark: String,
}

/// A bill's file names inside the zip: `<account>_<yyyyMMdd>_业务明细.csv` and the summary's.
pub fn entry_names(account: &str, day: NaiveDate) -> (String, String) {
    let d = day.format("%Y%m%d");
    (
        format!("{account}_{d}_{DETAIL_SUFFIX}"),
        format!("{account}_{d}_{SUMMARY_SUFFIX}"),
    )
}

fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

fn chinese_date(d: NaiveDate) -> String {
    d.format("%Y年%m月%d日").to_string()
}

fn preamble(out: &mut String, title: &str, account: &str, day: NaiveDate, list: &str) {
    let next = day.succ_opt().unwrap_or(day);
    out.push_str(&format!("#{title}\r\n#账号：[{account}]\r\n"));
    out.push_str(&format!(
        "#起始日期：[{} 00:00:00]   终止日期：[{} 00:00:00]\r\n",
        chinese_date(day),
        chinese_date(next)
    ));
    out.push_str(&format!(
        "#-----------------------------------------{list}----------------------------------------\r\n"
    ));
}

/// The detail file's text (before GBK encoding), exactly in the real layout, with the footer
/// totals computed from the rows.
pub fn write_detail(account: &str, day: NaiveDate, rows: &[BillRow], exported_at: NaiveDateTime) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(256 * rows.len() + 1024);
    preamble(&mut out, "支付宝业务明细查询", account, day, "业务明细列表");
    out.push_str(&DETAIL_COLUMNS.join(","));
    out.push_str("\r\n");
    let (mut n_pay, mut n_ref, mut recv_pay, mut recv_ref, mut disc_pay, mut disc_ref) =
        (0u64, 0u64, 0i64, 0i64, 0i64, 0i64);
    let t = |d: &NaiveDateTime| d.format("%Y-%m-%d %H:%M:%S").to_string();
    for r in rows {
        let kind = match r.kind {
            RowKind::Payment => {
                n_pay += 1;
                recv_pay += r.received_fen;
                disc_pay += r.merchant_discount_fen;
                "交易"
            }
            RowKind::Refund => {
                n_ref += 1;
                recv_ref += r.received_fen;
                disc_ref += r.merchant_discount_fen;
                "退款"
            }
        };
        // Text columns carry a trailing tab, as Alipay writes them.
        let _ = write!(
            out,
            "{}\t,{}\t,{}\t,{},{},{},{}\t,{}\t,{}\t,{}\t,{}\t,{},{},0.00,0.00,0.00,{},0.00,,0.00\t,0.00,{}\t,{},0.00,{}\r\n",
            csv_field(&r.trade_no),
            csv_field(&r.out_trade_no),
            kind,
            csv_field(&r.subject),
            t(&r.created),
            t(&r.finished),
            csv_field(&r.store_id),
            csv_field(&r.store_name),
            csv_field(&r.operator),
            csv_field(&r.terminal),
            csv_field(&r.buyer),
            fen_to_yuan(r.order_amount_fen),
            fen_to_yuan(r.received_fen),
            fen_to_yuan(r.merchant_discount_fen),
            csv_field(r.refund_no.as_deref().unwrap_or("")),
            fen_to_yuan(r.fee_fen),
            csv_field(&r.remark),
        );
    }
    out.push_str("#-----------------------------------------业务明细列表结束------------------------------------\r\n");
    let _ = write!(
        out,
        "#交易合计：{n_pay}笔，商家实收共{}元，商家优惠共{}元\r\n#退款合计：{n_ref}笔，商家实收退款共{}元，商家优惠退款共{}元\r\n",
        fen_to_yuan(recv_pay),
        fen_to_yuan(disc_pay),
        fen_to_yuan(recv_ref),
        fen_to_yuan(disc_ref)
    );
    let _ = write!(out, "#导出时间：[{}]\r\n", exported_at.format("%Y年%m月%d日 %H:%M:%S"));
    out
}

/// The summary file's text: one row per store, then `合计`.
pub fn write_summary(account: &str, day: NaiveDate, rows: &[BillRow], exported_at: NaiveDateTime) -> String {
    use std::fmt::Write as _;
    #[derive(Default)]
    struct Acc {
        name: String,
        pay: u64,
        refund: u64,
        amount: i64,
        received: i64,
        discount: i64,
        fee: i64,
    }
    let mut stores: Vec<(String, Acc)> = Vec::new();
    let mut total = Acc::default();
    for r in rows {
        let i = match stores.iter().position(|(id, _)| *id == r.store_id) {
            Some(i) => i,
            None => {
                stores.push((
                    r.store_id.clone(),
                    Acc {
                        name: r.store_name.clone(),
                        ..Acc::default()
                    },
                ));
                stores.len() - 1
            }
        };
        for acc in [&mut stores[i].1, &mut total] {
            match r.kind {
                RowKind::Payment => acc.pay += 1,
                RowKind::Refund => acc.refund += 1,
            }
            acc.amount += r.order_amount_fen;
            acc.received += r.received_fen;
            acc.discount += r.merchant_discount_fen;
            acc.fee += r.fee_fen;
        }
    }
    let mut out = String::new();
    preamble(&mut out, "支付宝业务汇总查询", account, day, "业务汇总列表");
    out.push_str(&SUMMARY_COLUMNS.join(","));
    out.push_str("\r\n");
    let line = |out: &mut String, id: &str, a: &Acc| {
        let _ = write!(
            out,
            "{}\t,{}\t,{},{},{},{},0.00,{},0.00,{},0.00,{}\r\n",
            csv_field(id),
            csv_field(&a.name),
            a.pay,
            a.refund,
            fen_to_yuan(a.amount),
            fen_to_yuan(a.received),
            fen_to_yuan(a.discount),
            fen_to_yuan(a.fee),
            fen_to_yuan(a.received - a.fee),
        );
    };
    for (id, acc) in &stores {
        line(&mut out, id, acc);
    }
    line(
        &mut out,
        "合计",
        &Acc {
            name: String::new(),
            ..total
        },
    );
    out.push_str("#-----------------------------------------业务汇总列表结束------------------------------------\r\n");
    let _ = write!(out, "#导出时间：[{}]\r\n", exported_at.format("%Y年%m月%d日 %H:%M:%S"));
    out
}

/// The bill as Alipay's download delivers it: a zip of the GBK detail and summary, entry names
/// GBK bytes without the UTF-8 flag, the summary first (entry order is not to be relied on).
pub fn write_zip(account: &str, day: NaiveDate, rows: &[BillRow], exported_at: NaiveDateTime) -> Vec<u8> {
    let (detail_name, summary_name) = entry_names(account, day);
    let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
    let entries = [
        (gbk(&summary_name), gbk(&write_summary(account, day, rows, exported_at))),
        (gbk(&detail_name), gbk(&write_detail(account, day, rows, exported_at))),
    ];
    zip_store(&entries, exported_at)
}

/// A minimal deflate zip writer: the zip crate always marks non-ASCII names as UTF-8, and
/// Alipay's names are GBK bytes without that flag.
fn zip_store(entries: &[(Vec<u8>, Vec<u8>)], at: NaiveDateTime) -> Vec<u8> {
    use chrono::{Datelike, Timelike};
    let dos_time = ((at.hour() << 11) | (at.minute() << 5) | (at.second() / 2)) as u16;
    let dos_date = (((at.year().max(1980) - 1980) as u32) << 9 | at.month() << 5 | at.day()) as u16;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = enc.write_all(data);
        let compressed = enc.finish().unwrap_or_default();
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // version made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags: no UTF-8 bit
            h.extend_from_slice(&8u16.to_le_bytes()); // deflate
            h.extend_from_slice(&dos_time.to_le_bytes());
            h.extend_from_slice(&dos_date.to_le_bytes());
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra length
            if central {
                h.extend_from_slice(&0u16.to_le_bytes()); // comment length
                h.extend_from_slice(&0u16.to_le_bytes()); // disk number
                h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name);
            h
        };
        out.extend_from_slice(&header(0x0403_4b50, false));
        out.extend_from_slice(&compressed);
        central.extend_from_slice(&header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_numbers_are_read_in_order() {
        assert_eq!(
            numbers("#交易合计：6笔，商家实收共0.06元，商家优惠共0.00元"),
            vec!["6", "0.06", "0.00"]
        );
        assert_eq!(
            numbers("#退款合计：4笔，商家实收退款共-0.04元，商家优惠退款共0.00元"),
            vec!["4", "-0.04", "0.00"]
        );
    }

    #[test]
    fn half_width_parentheses_in_headers_are_read_as_full_width() {
        assert_eq!(normalise_header(" 订单金额(元)\t"), "订单金额（元）");
    }
}
