//! Wire data for UnionPay 5.1.0, apart from behaviour: the request field sets, the two message
//! syntaxes (form-urlencoded notifications; raw `key=value&…` synchronous answers), the amount
//! and time formats at the edge, and the conversions from answer fields into our terms.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::codes::{RespCode, TxnType};
use super::cst;
use crate::amount::{fen_string_to_fen, AmountError};
use crate::gateway::{CreateOrder, GatewayError, NotificationEvent, NotifyError, PayMethod};

pub const VERSION: &str = "5.1.0";
pub const ENCODING: &str = "UTF-8";
pub const SIGN_METHOD_RSA: &str = "01";
/// `bizType` of B2C gateway payment (consume, refund, undo).
pub const BIZ_GATEWAY_PAY: &str = "000201";
/// `bizType` of token payment (back consume with `tokenPayData`).
pub const BIZ_TOKEN_PAY: &str = "000902";
/// `bizType` of query and file transfer.
pub const BIZ_NONE: &str = "000000";
pub const CURRENCY_CNY: &str = "156";
/// Largest amount the ZM file's 12-digit amount field can hold, in fen.
pub const MAX_TXN_AMT_FEN: i64 = 999_999_999_999;

/// A message's fields in the order received (or built).
pub type Fields = Vec<(String, String)>;

/// Look a field up by name.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn owned(pairs: &[(&str, &str)]) -> Fields {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// --- amounts ---------------------------------------------------------------------------------

/// Fen to `txnAmt`: digits only, no decimal point; 1 ..= 999 999 999 999.
pub fn fen_to_txn_amt(fen: i64) -> Result<String, GatewayError> {
    if !(1..=MAX_TXN_AMT_FEN).contains(&fen) {
        return Err(GatewayError::Invalid(format!(
            "amount {fen} fen is outside UnionPay's range 1 ..= {MAX_TXN_AMT_FEN} fen"
        )));
    }
    Ok(fen.to_string())
}

/// `txnAmt` (or any fen field) to fen. Anything but digits — a decimal point above all — is
/// refused, never rounded.
pub fn txn_amt_to_fen(text: &str) -> Result<i64, AmountError> {
    fen_string_to_fen(text)
}

// --- times -----------------------------------------------------------------------------------

/// `YYYYMMDDhhmmss` in Beijing time.
pub fn wire_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&cst()).format("%Y%m%d%H%M%S").to_string()
}

/// Parse a `YYYYMMDDhhmmss` Beijing time.
pub fn parse_wire_time(text: &str) -> Option<DateTime<Utc>> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S").ok()?;
    cst()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// `MMDD` of a day (settleDate).
pub fn mmdd(day: NaiveDate) -> String {
    day.format("%m%d").to_string()
}

/// The clearing day a moment belongs to: UnionPay's day runs 23:00 (previous day) → 23:00
/// Beijing time, so a payment at 23:30 on the 15th settles on the 16th.
pub fn clearing_day(t: DateTime<Utc>) -> NaiveDate {
    (t.with_timezone(&cst()) + chrono::Duration::hours(1)).date_naive()
}

/// A year-less `MMDDhhmmss` (traceTime, ZM field 5) placed in the year that puts it nearest to
/// `reference` (the file's settlement date, or the order's txnTime): `1231233000` next to
/// 2027-01-01 is 2026-12-31, `0101000500` next to 2026-12-31 is 2027-01-01. Invalid dates
/// (`0230…`, or `0229…` with no 29 February within half a year) are refused.
pub fn year_less_time(mmddhhmmss: &str, reference: NaiveDate) -> Option<NaiveDateTime> {
    if mmddhhmmss.len() != 10 || !mmddhhmmss.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| mmddhhmmss[r].parse::<u32>().ok();
    let (mo, d, h, mi, s) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    let y = reference.year();
    [y - 1, y, y + 1]
        .into_iter()
        .filter_map(|year| NaiveDate::from_ymd_opt(year, mo, d)?.and_hms_opt(h, mi, s))
        .min_by_key(|t| (t.date() - reference).num_days().abs())
        .filter(|t| (t.date() - reference).num_days().abs() <= 183)
}

// --- message syntaxes ------------------------------------------------------------------------

/// Parse a synchronous answer: `key=value&…` with values **not** URL-encoded. `&` inside `{…}`
/// or `[…]` belongs to the value (`tokenPayData={token=…&trId=…}`), as the official SDK's
/// `parseQString` reads it. Values keep every byte (`signPubKeyCert` has `+ / =` and `\r\n`).
pub fn parse_answer(text: &str) -> Result<Fields, String> {
    let mut out: Fields = Vec::new();
    let mut depth: i32 = 0;
    let mut key: Option<String> = None;
    let mut buf = String::new();
    let push = |key: Option<String>, value: String, out: &mut Fields| -> Result<(), String> {
        match key {
            Some(k) if !k.is_empty() => {
                if out.iter().any(|(e, _)| *e == k) {
                    return Err(format!("field {k:?} appears twice"));
                }
                out.push((k, value));
                Ok(())
            }
            Some(_) => Err("a field has an empty name".into()),
            None if value.is_empty() => Ok(()),
            None => Err(format!("{value:?} is not key=value")),
        }
    };
    for c in text.chars() {
        match c {
            '{' | '[' if key.is_some() => {
                depth += 1;
                buf.push(c);
            }
            '}' | ']' if key.is_some() => {
                depth -= 1;
                buf.push(c);
            }
            '=' if key.is_none() => key = Some(std::mem::take(&mut buf)),
            '&' if depth <= 0 => {
                push(key.take(), std::mem::take(&mut buf), &mut out)?;
                depth = 0;
            }
            c => buf.push(c),
        }
    }
    push(key, buf, &mut out)?;
    Ok(out)
}

/// Write an answer the way UnionPay does (values raw, not encoded).
pub fn write_answer(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Parse a form-urlencoded body (notifications, and requests at the sandbox): decoded exactly
/// once; duplicate names refused (they would make the signed string ambiguous).
pub fn parse_form(body: &[u8]) -> Result<Fields, String> {
    if std::str::from_utf8(body).is_err() {
        return Err("the body is not UTF-8".into());
    }
    let mut out: Fields = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if k.is_empty() {
            return Err("a field has an empty name".into());
        }
        if out.iter().any(|(e, _)| e == &k) {
            return Err(format!("field {k:?} appears twice"));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// Form-urlencode fields (requests; the sandbox's notifications).
pub fn write_form(fields: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

// --- requests --------------------------------------------------------------------------------

fn check_order_no(what: &str, no: &str) -> Result<(), GatewayError> {
    if crate::gateway::is_valid_order_no(no) {
        Ok(())
    } else {
        Err(GatewayError::Invalid(format!(
            "{what} {no:?} must be 8-32 letters or digits (UnionPay refuses '-' and '_', and its file holds 32)"
        )))
    }
}

/// The front consume (gateway payment, txnType 01/01, bizType 000201) for a browser: the fields
/// before signing. `channelType` 07 for a desktop browser, 08 for a mobile one (WAP).
pub fn front_consume(mer_id: &str, req: &CreateOrder) -> Result<Fields, GatewayError> {
    check_order_no("order number", &req.order_no)?;
    let channel = match req.method {
        PayMethod::Web | PayMethod::Qr => "07",
        PayMethod::H5 => "08",
        PayMethod::Jsapi => {
            return Err(GatewayError::Invalid(
                "UnionPay has no in-WeChat (JSAPI) payment; use web or H5".into(),
            ))
        }
    };
    let front_url =
        req.return_url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
            GatewayError::Invalid("UnionPay's front consume needs a return_url (its frontUrl)".into())
        })?;
    if req.expires_at <= req.created_at {
        return Err(GatewayError::Invalid(format!(
            "the order expires ({}) before it is created ({})",
            req.expires_at, req.created_at
        )));
    }
    let amt = fen_to_txn_amt(req.amount_fen)?;
    let txn_time = wire_time(req.created_at);
    let pay_timeout = wire_time(req.expires_at);
    let mut f = owned(&[
        ("version", VERSION),
        ("encoding", ENCODING),
        ("signMethod", SIGN_METHOD_RSA),
        ("txnType", "01"),
        ("txnSubType", "01"),
        ("bizType", BIZ_GATEWAY_PAY),
        ("channelType", channel),
        ("accessType", "0"),
        ("merId", mer_id),
        ("orderId", &req.order_no),
        ("txnTime", &txn_time),
        ("currencyCode", CURRENCY_CNY),
        ("txnAmt", &amt),
        ("frontUrl", front_url),
        ("backUrl", &req.notify_url),
        ("payTimeout", &pay_timeout),
    ]);
    if let Some(ip) = req.payer_ip.as_deref().filter(|s| !s.is_empty()) {
        f.push(("customerIp".into(), ip.to_string()));
    }
    Ok(f)
}

/// A token the payer opened earlier (txnType 79 "open" gives `token` and `trId`), for the back
/// consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPayData {
    pub token: String,
    /// The token requestor id.
    pub tr_id: String,
}

/// The back consume (server to server, txnType 01/01, bizType 000902 token payment).
pub fn back_consume(mer_id: &str, req: &CreateOrder, token: &TokenPayData) -> Result<Fields, GatewayError> {
    check_order_no("order number", &req.order_no)?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok(&token.token) || !ok(&token.tr_id) {
        return Err(GatewayError::Invalid(
            "the token and trId must be letters and digits".into(),
        ));
    }
    let amt = fen_to_txn_amt(req.amount_fen)?;
    let txn_time = wire_time(req.created_at);
    let token_pay_data = format!("{{trId={}&token={}}}", token.tr_id, token.token);
    Ok(owned(&[
        ("version", VERSION),
        ("encoding", ENCODING),
        ("signMethod", SIGN_METHOD_RSA),
        ("txnType", "01"),
        ("txnSubType", "01"),
        ("bizType", BIZ_TOKEN_PAY),
        ("channelType", "07"),
        ("accessType", "0"),
        ("merId", mer_id),
        ("orderId", &req.order_no),
        ("txnTime", &txn_time),
        ("currencyCode", CURRENCY_CNY),
        ("txnAmt", &amt),
        ("backUrl", &req.notify_url),
        ("tokenPayData", &token_pay_data),
    ]))
}

/// The single query (txnType 00) by orderId + txnTime of the original transaction.
pub fn query(mer_id: &str, order_id: &str, txn_time: DateTime<Utc>) -> Result<Fields, GatewayError> {
    check_order_no("order number", order_id)?;
    Ok(owned(&[
        ("version", VERSION),
        ("encoding", ENCODING),
        ("signMethod", SIGN_METHOD_RSA),
        ("txnType", "00"),
        ("txnSubType", "00"),
        ("bizType", BIZ_NONE),
        ("accessType", "0"),
        ("merId", mer_id),
        ("orderId", order_id),
        ("txnTime", &wire_time(txn_time)),
    ]))
}

/// The refund (退货, txnType 04): its own orderId (our refund number) and txnTime, the payment's
/// queryId as `origQryId`. `reqReserved` carries our original order number: UnionPay echoes it in
/// the refund's notification and query answer, which otherwise name only the refund's orderId.
pub fn refund(mer_id: &str, req: &crate::gateway::RefundRequest) -> Result<Fields, GatewayError> {
    check_order_no("order number", &req.order_no)?;
    check_order_no("refund number", &req.refund_no)?;
    let orig = req.gateway_txn_id.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        GatewayError::Invalid("a UnionPay refund needs the payment's queryId (gateway_txn_id) as origQryId".into())
    })?;
    let back_url = req.notify_url.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        GatewayError::Invalid("a UnionPay refund needs a notify_url: its result arrives asynchronously".into())
    })?;
    if req.refund_fen > req.order_total_fen {
        return Err(GatewayError::Invalid(format!(
            "refund of {} fen exceeds the order's {} fen",
            req.refund_fen, req.order_total_fen
        )));
    }
    let amt = fen_to_txn_amt(req.refund_fen)?;
    Ok(owned(&[
        ("version", VERSION),
        ("encoding", ENCODING),
        ("signMethod", SIGN_METHOD_RSA),
        ("txnType", "04"),
        ("txnSubType", "00"),
        ("bizType", BIZ_GATEWAY_PAY),
        ("channelType", "07"),
        ("accessType", "0"),
        ("merId", mer_id),
        ("orderId", &req.refund_no),
        ("origQryId", orig),
        ("txnTime", &wire_time(req.requested_at)),
        ("currencyCode", CURRENCY_CNY),
        ("txnAmt", &amt),
        ("backUrl", back_url),
        ("reqReserved", &req.order_no),
    ]))
}

/// The file transfer (txnType 76/01, fileType 00) of a clearing day.
pub fn file_transfer(mer_id: &str, settle_day: NaiveDate, now: DateTime<Utc>) -> Fields {
    owned(&[
        ("version", VERSION),
        ("encoding", ENCODING),
        ("signMethod", SIGN_METHOD_RSA),
        ("txnType", "76"),
        ("txnSubType", "01"),
        ("bizType", BIZ_NONE),
        ("accessType", "0"),
        ("merId", mer_id),
        ("settleDate", &mmdd(settle_day)),
        ("txnTime", &wire_time(now)),
        ("fileType", "00"),
    ])
}

// --- answers and notifications in our terms --------------------------------------------------

/// The parts of a query answer (respCode 00) that describe the queried transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueriedTxn {
    pub txn_type: TxnType,
    pub orig_resp_code: RespCode,
    pub orig_resp_msg: String,
    pub order_id: String,
    pub query_id: Option<String>,
    pub amount_fen: Option<i64>,
    /// When the transaction completed (traceTime, its year taken from txnTime).
    pub completed_at: Option<DateTime<Utc>>,
    pub mer_id: Option<String>,
    pub req_reserved: Option<String>,
}

fn nonempty<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    field(fields, name).filter(|v| !v.is_empty())
}

/// traceTime (MMDDhhmmss) as a UTC moment, its year from the transaction's txnTime.
pub fn trace_moment(fields: &[(String, String)]) -> Option<DateTime<Utc>> {
    let reference = parse_wire_time(nonempty(fields, "txnTime")?)?;
    let naive = year_less_time(
        nonempty(fields, "traceTime")?,
        reference.with_timezone(&cst()).date_naive(),
    )?;
    cst()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Read a query answer whose own respCode is 00.
pub fn queried_txn(fields: &[(String, String)]) -> Result<QueriedTxn, String> {
    let orig = nonempty(fields, "origRespCode").ok_or("the query answer has no origRespCode")?;
    let amount_fen = match nonempty(fields, "txnAmt") {
        Some(a) => Some(txn_amt_to_fen(a).map_err(|e| format!("txnAmt: {e}"))?),
        None => None,
    };
    Ok(QueriedTxn {
        txn_type: TxnType::parse(field(fields, "txnType").unwrap_or("")),
        orig_resp_code: RespCode::parse(orig),
        orig_resp_msg: field(fields, "origRespMsg").unwrap_or("").to_string(),
        order_id: field(fields, "orderId").unwrap_or("").to_string(),
        query_id: nonempty(fields, "queryId").map(str::to_string),
        amount_fen,
        completed_at: trace_moment(fields),
        mer_id: nonempty(fields, "merId").map(str::to_string),
        req_reserved: nonempty(fields, "reqReserved").map(str::to_string),
    })
}

/// What a verified back notification says: the event, the merId, and the event id
/// (`queryId` + `txnType` + `respCode`, unique per UnionPay event).
pub fn notification_event(fields: &[(String, String)]) -> Result<(NotificationEvent, String, String), NotifyError> {
    let req = |name: &str| {
        nonempty(fields, name).ok_or_else(|| NotifyError::Malformed(format!("the notification has no {name}")))
    };
    let txn_type_text = req("txnType")?;
    let is_refund = match TxnType::parse(txn_type_text) {
        TxnType::Consume => false,
        TxnType::Refund | TxnType::ConsumeUndo => true,
        other @ (TxnType::Query | TxnType::FileTransfer | TxnType::Other(_)) => {
            return Err(NotifyError::Malformed(format!(
                "txnType {} is neither a consume (01) nor a refund (04) or undo (31): nothing to apply",
                other.as_str()
            )))
        }
    };
    let mer_id = req("merId")?.to_string();
    let order_id = req("orderId")?.to_string();
    let query_id = req("queryId")?.to_string();
    let resp = req("respCode")?;
    let code = RespCode::parse(resp);
    let amount_fen = txn_amt_to_fen(req("txnAmt")?).map_err(|e| NotifyError::Malformed(format!("txnAmt: {e}")))?;
    if amount_fen <= 0 {
        return Err(NotifyError::Malformed("txnAmt must be positive".into()));
    }
    let at = trace_moment(fields);
    let event_id = format!("{query_id}:{txn_type_text}:{resp}");
    let event = if is_refund {
        NotificationEvent::Refund {
            // UnionPay names only the refund's own orderId; our original order number comes back
            // in reqReserved (the client puts it there). Empty if someone else's refund.
            order_no: nonempty(fields, "reqReserved").unwrap_or("").to_string(),
            refund_no: order_id,
            state: code.refund_state(),
            gateway_refund_id: Some(query_id),
            amount_fen,
            refunded_at: at,
        }
    } else {
        NotificationEvent::Payment {
            order_no: order_id,
            state: code.payment_state(),
            gateway_txn_id: query_id,
            amount_fen,
            paid_at: at,
        }
    };
    Ok((event, mer_id, event_id))
}

/// Every field as a JSON object, for audit and `meterpay notify verify`.
pub fn fields_json(fields: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_braced_values_and_raw_bytes_whole() {
        let text = "a=1&tokenPayData={token=62&trId=99}&signPubKeyCert=-----BEGIN CERTIFICATE-----\r\nMI+/=\r\n-----END CERTIFICATE-----&empty=&z=[x&y]";
        let f = parse_answer(text).unwrap();
        assert_eq!(field(&f, "tokenPayData"), Some("{token=62&trId=99}"));
        assert_eq!(
            field(&f, "signPubKeyCert"),
            Some("-----BEGIN CERTIFICATE-----\r\nMI+/=\r\n-----END CERTIFICATE-----")
        );
        assert_eq!(field(&f, "empty"), Some(""));
        assert_eq!(field(&f, "z"), Some("[x&y]"));
        assert_eq!(write_answer(&f), text, "writing it back gives the same bytes");
    }

    #[test]
    fn malformed_answers_are_refused() {
        assert!(parse_answer("a=1&a=2").unwrap_err().contains("twice"));
        assert!(parse_answer("a=1&junk").unwrap_err().contains("not key=value"));
        assert!(parse_answer("=1").is_err());
        assert_eq!(parse_answer("").unwrap(), Vec::<(String, String)>::new());
    }

    #[test]
    fn forms_decode_once_and_refuse_duplicates() {
        let f = parse_form(b"a=%2B+b&c=x%26y").unwrap();
        assert_eq!(field(&f, "a"), Some("+ b"));
        assert_eq!(field(&f, "c"), Some("x&y"));
        assert!(parse_form(b"a=1&a=1").is_err());
        assert!(parse_form(b"a=\xff").is_err());
        let back = parse_form(write_form(&f).as_bytes()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn amounts_convert_at_the_edge_and_round_trip() {
        for fen in [1i64, 9, 10, 8880, 100_000, MAX_TXN_AMT_FEN] {
            let wire = fen_to_txn_amt(fen).unwrap();
            assert!(wire.bytes().all(|b| b.is_ascii_digit()), "{wire}");
            assert_eq!(txn_amt_to_fen(&wire), Ok(fen));
        }
        assert!(fen_to_txn_amt(0).is_err());
        assert!(fen_to_txn_amt(-5).is_err());
        assert!(fen_to_txn_amt(MAX_TXN_AMT_FEN + 1).is_err());
        assert_eq!(txn_amt_to_fen("000000008880"), Ok(8880));
        for bad in ["88.80", "88.8", "1.005", "-1", "1e3", "", " "] {
            assert!(txn_amt_to_fen(bad).is_err(), "{bad:?} refused, never rounded");
        }
    }

    #[test]
    fn times_are_beijing_time_and_year_less_times_take_the_nearest_year() {
        let t = parse_wire_time("20240115102030").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-15T02:20:30+00:00");
        assert_eq!(wire_time(t), "20240115102030");
        assert!(parse_wire_time("2024011510203").is_none());
        assert!(parse_wire_time("20241315102030").is_none());

        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        let at = |s: &str, r| year_less_time(s, r).map(|t| t.to_string());
        assert_eq!(at("1231233000", d(2027, 1, 1)).as_deref(), Some("2026-12-31 23:30:00"));
        assert_eq!(
            at("0101000500", d(2026, 12, 31)).as_deref(),
            Some("2027-01-01 00:05:00")
        );
        assert_eq!(at("0615120000", d(2026, 6, 16)).as_deref(), Some("2026-06-15 12:00:00"));
        assert_eq!(at("0229120000", d(2028, 3, 1)).as_deref(), Some("2028-02-29 12:00:00"));
        assert_eq!(at("0229120000", d(2027, 3, 1)), None, "no 29 February near 2027");
        assert_eq!(at("1301120000", d(2027, 3, 1)), None);
        assert_eq!(at("12312330", d(2027, 3, 1)), None);
    }

    #[test]
    fn the_clearing_day_turns_at_23_00_beijing_time() {
        let t = |s| parse_wire_time(s).unwrap();
        assert_eq!(clearing_day(t("20261215225959")).to_string(), "2026-12-15");
        assert_eq!(clearing_day(t("20261215230000")).to_string(), "2026-12-16");
        assert_eq!(clearing_day(t("20261231233000")).to_string(), "2027-01-01");
    }
}
