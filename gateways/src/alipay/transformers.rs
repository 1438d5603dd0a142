//! Alipay wire data, apart from behaviour: the `biz_content` structs we send, the `…_response`
//! structs we read, amounts and times at the edge, and the exhaustive mappings of trade statuses
//! and error codes into our terms (gateways.md §1.6–§1.9).
//!
//! Field order in the request structs is the order they are serialised in; `biz_content` is
//! serialised once and the same string is signed and sent.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::amount::{fen_to_yuan, yuan_to_fen, AmountError};
use crate::outcome::{ErrorClass, PaymentState, RefundState};

// --- amounts ---------------------------------------------------------------------------------

/// The smallest and largest amount Alipay accepts in one trade: 0.01 … 100,000,000.00 yuan.
pub const MIN_FEN: i64 = 1;
/// 100,000,000.00 yuan.
pub const MAX_FEN: i64 = 10_000_000_000;

/// Fen → the yuan string Alipay expects (`8880` → `"88.80"`), refusing what Alipay would refuse.
pub fn amount_to_wire(fen: i64) -> Result<String, String> {
    if !(MIN_FEN..=MAX_FEN).contains(&fen) {
        return Err(format!(
            "amount {fen} fen is outside Alipay's range of 0.01 to 100000000.00 yuan"
        ));
    }
    Ok(fen_to_yuan(fen))
}

/// An Alipay yuan string → fen, exactly. More than two decimal places is refused even when the
/// extra digits are zeros (`"1.000"`): Alipay writes two, and anything else is not its amount.
pub fn amount_from_wire(text: &str) -> Result<i64, AmountError> {
    amount_from_wire_signed(text, false)
}

/// As [`amount_from_wire`]; `allow_negative` for bill files, where refunds are negative.
pub fn amount_from_wire_signed(text: &str, allow_negative: bool) -> Result<i64, AmountError> {
    let t = text.trim();
    if let Some((_, frac)) = t.split_once('.') {
        if frac.len() > 2 {
            return Err(AmountError::TooPrecise(text.to_string()));
        }
    }
    yuan_to_fen(t, allow_negative)
}

// --- times -----------------------------------------------------------------------------------

/// Alipay's time format, always Beijing time (UTC+8).
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A UTC instant as Alipay writes it: `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn beijing_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&cst()).format(TIME_FORMAT).to_string()
}

/// Alipay's `yyyy-MM-dd HH:mm:ss` (Beijing time) as a UTC instant.
pub fn parse_beijing_time(text: &str) -> Option<DateTime<Utc>> {
    let naive = parse_naive_time(text)?;
    cst()
        .from_local_datetime(&naive)
        .single()
        .map(|d| d.with_timezone(&Utc))
}

/// `yyyy-MM-dd HH:mm:ss` as written (no zone). Hand-parsed: bill files hold millions of these.
pub fn parse_naive_time(text: &str) -> Option<NaiveDateTime> {
    let b = text.trim().as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Some(v)
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)
}

fn cst() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

// --- requests (biz_content) ------------------------------------------------------------------

/// `alipay.trade.precreate` (QR code, face-to-face payment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrecreateBiz {
    pub out_trade_no: String,
    pub total_amount: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time_expire: Option<String>,
}

/// `alipay.trade.page.pay` (desktop browser) and `alipay.trade.wap.pay` (mobile browser).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrowserPayBiz {
    pub out_trade_no: String,
    pub total_amount: String,
    pub subject: String,
    /// `FAST_INSTANT_TRADE_PAY` (page.pay) or `QUICK_WAP_WAY` (wap.pay).
    pub product_code: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time_expire: Option<String>,
    /// wap.pay: where the payer lands when they leave the cashier without paying.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quit_url: Option<String>,
}

pub const PRODUCT_PAGE: &str = "FAST_INSTANT_TRADE_PAY";
pub const PRODUCT_WAP: &str = "QUICK_WAP_WAY";

/// `alipay.trade.query` and `alipay.trade.close`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TradeRefBiz {
    pub out_trade_no: String,
}

/// `alipay.trade.refund`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefundBiz {
    pub out_trade_no: String,
    pub refund_amount: String,
    /// Our refund number: the idempotency key (retry with the same number and amount).
    #[serde(default)]
    pub out_request_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refund_reason: Option<String>,
}

/// `alipay.trade.fastpay.refund.query`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefundQueryBiz {
    pub out_trade_no: String,
    pub out_request_no: String,
    /// `["gmt_refund_pay"]` asks for the refund time.
    #[serde(default)]
    pub query_options: Vec<String>,
}

/// `alipay.data.dataservice.bill.downloadurl.query`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BillUrlBiz {
    /// `trade` (acquiring detail, what we reconcile) or `signcustomer`.
    pub bill_type: String,
    /// `yyyy-MM-dd`.
    pub bill_date: String,
}

// --- responses (the value of `<method>_response`) --------------------------------------------

/// Fields every `…_response` carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Common {
    pub code: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_msg: Option<String>,
}

pub const CODE_SUCCESS: &str = "10000";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrecreateResponse {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueryResponse {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_logon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_pay_amount: Option<String>,
    /// When the money went to the seller: present once the trade was paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_pay_date: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloseResponse {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefundResponse {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_logon_id: Option<String>,
    /// `Y`: this call moved money (the refund succeeded now); `N`: it did not (e.g. a replay of
    /// an already processed `out_request_no`), confirm with the refund query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fund_change: Option<String>,
    /// The **cumulative** amount refunded on the trade so far, not this refund's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_fee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_refund_pay: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefundQueryResponse {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_request_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<String>,
    /// This refund's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_amount: Option<String>,
    /// `REFUND_SUCCESS` when refunded; absent means not (yet) refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_refund_pay: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BillUrlResponse {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_download_url: Option<String>,
}

// --- trade status ----------------------------------------------------------------------------

/// `trade_status` (query answers and notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeStatus {
    WaitBuyerPay,
    TradeSuccess,
    TradeFinished,
    TradeClosed,
}

impl TradeStatus {
    pub fn parse(s: &str) -> Option<TradeStatus> {
        match s {
            "WAIT_BUYER_PAY" => Some(TradeStatus::WaitBuyerPay),
            "TRADE_SUCCESS" => Some(TradeStatus::TradeSuccess),
            "TRADE_FINISHED" => Some(TradeStatus::TradeFinished),
            "TRADE_CLOSED" => Some(TradeStatus::TradeClosed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::TradeSuccess => "TRADE_SUCCESS",
            TradeStatus::TradeFinished => "TRADE_FINISHED",
            TradeStatus::TradeClosed => "TRADE_CLOSED",
        }
    }

    /// Our state for the trade. `TRADE_CLOSED` means "closed unpaid" or "fully refunded";
    /// `was_paid` (the answer carries a payment date) tells them apart.
    pub fn payment_state(self, was_paid: bool) -> PaymentState {
        match self {
            TradeStatus::WaitBuyerPay => PaymentState::Pending,
            TradeStatus::TradeSuccess | TradeStatus::TradeFinished => PaymentState::Paid,
            TradeStatus::TradeClosed if was_paid => PaymentState::Refunded,
            TradeStatus::TradeClosed => PaymentState::Closed,
        }
    }
}

/// `refund_status` of the refund query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    RefundSuccess,
}

impl RefundStatus {
    pub fn parse(s: &str) -> Option<RefundStatus> {
        match s {
            "REFUND_SUCCESS" => Some(RefundStatus::RefundSuccess),
            _ => None,
        }
    }

    /// Our state; `None` (the field absent) means not (yet) refunded. Alipay refunds are
    /// synchronous, so an absent refund is one that did not happen: retrying the refund with the
    /// same `out_request_no` and amount is safe. It is reported as `Processing` so that nothing
    /// is concluded from it.
    pub fn refund_state(status: Option<RefundStatus>) -> RefundState {
        match status {
            Some(RefundStatus::RefundSuccess) => RefundState::Succeeded,
            None => RefundState::Processing,
        }
    }
}

// --- error codes -----------------------------------------------------------------------------

/// The top-level `code` of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// `10000`
    Success,
    /// `20000`: service temporarily unavailable; the outcome is unknown (query).
    ServiceUnavailable,
    /// `20001`: authorisation / token problem.
    InsufficientAuthorization,
    /// `40001`: a required parameter is missing.
    MissingParameter,
    /// `40002`: an invalid parameter (including `isv.invalid-signature`).
    InvalidParameter,
    /// `40004`: business failure; `sub_code` says which.
    BusinessFailed,
    /// `40006`: insufficient permission.
    InsufficientPermission,
    /// Any other code, kept as sent.
    Unknown(String),
}

impl Code {
    pub fn parse(s: &str) -> Code {
        match s {
            "10000" => Code::Success,
            "20000" => Code::ServiceUnavailable,
            "20001" => Code::InsufficientAuthorization,
            "40001" => Code::MissingParameter,
            "40002" => Code::InvalidParameter,
            "40004" => Code::BusinessFailed,
            "40006" => Code::InsufficientPermission,
            other => Code::Unknown(other.to_string()),
        }
    }
}

/// The `sub_code` of a refusal (gateways.md §1.9). The `aop.` prefix some gateways put before
/// `ACQ.` codes is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubCode {
    /// `ACQ.SYSTEM_ERROR`: retry with the same parameters.
    SystemError,
    /// `ACQ.TRADE_NOT_EXIST`: query/close: never scanned or opened; refund: wrong id.
    TradeNotExist,
    /// `ACQ.TRADE_HAS_SUCCESS`: create: already paid.
    TradeHasSuccess,
    /// `ACQ.TRADE_HAS_CLOSE`: create/refund: closed; a new attempt needs a new `out_trade_no`.
    TradeHasClose,
    /// `ACQ.TRADE_STATUS_ERROR`: close/refund: not in a state that allows it; query.
    TradeStatusError,
    /// `ACQ.CONTEXT_INCONSISTENT`: the same `out_trade_no` with another amount/subject (a bug).
    ContextInconsistent,
    /// `ACQ.INVALID_PARAMETER`
    InvalidParameter,
    /// `ACQ.REFUND_AMT_NOT_EQUAL_TOTAL`: a replayed `out_request_no` with another amount, or
    /// more than is refundable.
    RefundAmtNotEqualTotal,
    /// `ACQ.SELLER_BALANCE_NOT_ENOUGH`: the merchant's balance cannot cover the refund yet.
    SellerBalanceNotEnough,
    /// `ACQ.REASON_TRADE_BEEN_FREEZEN`: the trade is frozen; manual handling.
    TradeBeenFrozen,
    /// `isv.invalid-signature`: our sign string or key is wrong.
    InvalidSignature,
    /// `isv.invalid-app-id`: no such app.
    InvalidAppId,
    /// `isv.invalid-timestamp`: the timestamp is malformed or too far from Alipay's clock.
    InvalidTimestamp,
    /// `isp.bill_not_exist`: the day's bill is not generated yet.
    BillNotExist,
    /// Any other sub-code, kept as sent.
    Unknown(String),
}

impl SubCode {
    pub fn parse(s: &str) -> SubCode {
        let s = s.strip_prefix("aop.").unwrap_or(s);
        match s {
            "ACQ.SYSTEM_ERROR" => SubCode::SystemError,
            "ACQ.TRADE_NOT_EXIST" => SubCode::TradeNotExist,
            "ACQ.TRADE_HAS_SUCCESS" => SubCode::TradeHasSuccess,
            "ACQ.TRADE_HAS_CLOSE" => SubCode::TradeHasClose,
            "ACQ.TRADE_STATUS_ERROR" => SubCode::TradeStatusError,
            "ACQ.CONTEXT_INCONSISTENT" => SubCode::ContextInconsistent,
            "ACQ.INVALID_PARAMETER" => SubCode::InvalidParameter,
            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" => SubCode::RefundAmtNotEqualTotal,
            "ACQ.SELLER_BALANCE_NOT_ENOUGH" => SubCode::SellerBalanceNotEnough,
            "ACQ.REASON_TRADE_BEEN_FREEZEN" => SubCode::TradeBeenFrozen,
            "isv.invalid-signature" => SubCode::InvalidSignature,
            "isv.invalid-app-id" => SubCode::InvalidAppId,
            "isv.invalid-timestamp" => SubCode::InvalidTimestamp,
            "isp.bill_not_exist" => SubCode::BillNotExist,
            other => SubCode::Unknown(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SubCode::SystemError => "ACQ.SYSTEM_ERROR",
            SubCode::TradeNotExist => "ACQ.TRADE_NOT_EXIST",
            SubCode::TradeHasSuccess => "ACQ.TRADE_HAS_SUCCESS",
            SubCode::TradeHasClose => "ACQ.TRADE_HAS_CLOSE",
            SubCode::TradeStatusError => "ACQ.TRADE_STATUS_ERROR",
            SubCode::ContextInconsistent => "ACQ.CONTEXT_INCONSISTENT",
            SubCode::InvalidParameter => "ACQ.INVALID_PARAMETER",
            SubCode::RefundAmtNotEqualTotal => "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
            SubCode::SellerBalanceNotEnough => "ACQ.SELLER_BALANCE_NOT_ENOUGH",
            SubCode::TradeBeenFrozen => "ACQ.REASON_TRADE_BEEN_FREEZEN",
            SubCode::InvalidSignature => "isv.invalid-signature",
            SubCode::InvalidAppId => "isv.invalid-app-id",
            SubCode::InvalidTimestamp => "isv.invalid-timestamp",
            SubCode::BillNotExist => "isp.bill_not_exist",
            SubCode::Unknown(s) => s,
        }
    }
}

/// How to treat a refusal, before any operation-specific reading (the client reads
/// `ACQ.TRADE_NOT_EXIST` on query/close and `ACQ.TRADE_STATUS_ERROR` on close itself).
pub fn classify(code: &Code, sub_code: Option<&SubCode>) -> ErrorClass {
    if let Some(sub) = sub_code {
        match sub {
            SubCode::SystemError | SubCode::SellerBalanceNotEnough | SubCode::BillNotExist => return ErrorClass::Retry,
            SubCode::TradeHasSuccess => return ErrorClass::AlreadyDone,
            SubCode::TradeNotExist
            | SubCode::TradeHasClose
            | SubCode::TradeStatusError
            | SubCode::ContextInconsistent
            | SubCode::InvalidParameter
            | SubCode::RefundAmtNotEqualTotal
            | SubCode::TradeBeenFrozen
            | SubCode::InvalidSignature
            | SubCode::InvalidAppId
            | SubCode::InvalidTimestamp => return ErrorClass::Failure,
            // An unknown sub-code says nothing more than its code: fall through to the code.
            SubCode::Unknown(_) => {}
        }
    }
    match code {
        // An answer of "success" is not a refusal; if one is classified, nothing needs retrying.
        Code::Success => ErrorClass::AlreadyDone,
        // The outcome is unknown: query, or repeat the same request.
        Code::ServiceUnavailable => ErrorClass::Retry,
        Code::InsufficientAuthorization
        | Code::MissingParameter
        | Code::InvalidParameter
        | Code::BusinessFailed
        | Code::InsufficientPermission => ErrorClass::Failure,
        // A code we do not know is not retried blindly.
        Code::Unknown(_) => ErrorClass::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_between_fen_and_alipay_yuan_strings() {
        for fen in [1, 9, 10, 99, 100, 101, 8880, 123_456_789, MAX_FEN] {
            let wire = amount_to_wire(fen).unwrap();
            assert_eq!(amount_from_wire(&wire), Ok(fen), "{wire}");
        }
        assert_eq!(amount_to_wire(8880).unwrap(), "88.80");
        assert_eq!(amount_to_wire(1).unwrap(), "0.01");
    }

    #[test]
    fn amounts_outside_alipays_range_are_refused_before_sending() {
        assert!(amount_to_wire(0).is_err());
        assert!(amount_to_wire(-1).is_err());
        assert!(amount_to_wire(MAX_FEN + 1).is_err());
    }

    #[test]
    fn a_wire_amount_with_more_than_two_decimals_is_refused_not_rounded() {
        assert_eq!(
            amount_from_wire("88.801"),
            Err(AmountError::TooPrecise("88.801".into()))
        );
        assert_eq!(
            amount_from_wire("88.800"),
            Err(AmountError::TooPrecise("88.800".into()))
        );
        assert!(matches!(amount_from_wire("-1.00"), Err(AmountError::Negative(_))));
        assert_eq!(amount_from_wire_signed("-0.01", true), Ok(-1));
        assert_eq!(amount_from_wire("88.8"), Ok(8880));
    }

    #[test]
    fn times_are_beijing_time_in_alipays_format() {
        let at = Utc.with_ymd_and_hms(2024, 1, 15, 2, 20, 30).unwrap();
        assert_eq!(beijing_time(at), "2024-01-15 10:20:30");
        assert_eq!(parse_beijing_time("2024-01-15 10:20:30"), Some(at));
        assert_eq!(parse_beijing_time("2024-01-15T10:20:30"), None);
        assert_eq!(parse_beijing_time("2024-13-15 10:20:30"), None);
        assert_eq!(parse_beijing_time("2024-01-15 10:20"), None);
    }

    #[test]
    fn trade_statuses_map_to_our_states() {
        assert_eq!(
            TradeStatus::parse("WAIT_BUYER_PAY").unwrap().payment_state(false),
            PaymentState::Pending
        );
        assert_eq!(
            TradeStatus::parse("TRADE_SUCCESS").unwrap().payment_state(true),
            PaymentState::Paid
        );
        assert_eq!(
            TradeStatus::parse("TRADE_FINISHED").unwrap().payment_state(true),
            PaymentState::Paid
        );
        assert_eq!(
            TradeStatus::parse("TRADE_CLOSED").unwrap().payment_state(false),
            PaymentState::Closed
        );
        assert_eq!(
            TradeStatus::parse("TRADE_CLOSED").unwrap().payment_state(true),
            PaymentState::Refunded,
            "a closed trade that was paid has been fully refunded"
        );
        assert_eq!(TradeStatus::parse("trade_success"), None);
        for s in ["WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED"] {
            assert_eq!(TradeStatus::parse(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn error_codes_are_classified_as_the_spec_lists() {
        let c = |code: &str, sub: Option<&str>| classify(&Code::parse(code), sub.map(SubCode::parse).as_ref());
        assert_eq!(c("40004", Some("ACQ.SYSTEM_ERROR")), ErrorClass::Retry);
        assert_eq!(c("40004", Some("aop.ACQ.SYSTEM_ERROR")), ErrorClass::Retry);
        assert_eq!(
            c("20000", Some("isp.unknow-error")),
            ErrorClass::Retry,
            "unknown outcome: query"
        );
        assert_eq!(c("20000", None), ErrorClass::Retry);
        assert_eq!(c("40004", Some("ACQ.TRADE_HAS_SUCCESS")), ErrorClass::AlreadyDone);
        assert_eq!(c("40004", Some("ACQ.TRADE_HAS_CLOSE")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("ACQ.TRADE_NOT_EXIST")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("ACQ.TRADE_STATUS_ERROR")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("ACQ.CONTEXT_INCONSISTENT")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("ACQ.INVALID_PARAMETER")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("ACQ.SELLER_BALANCE_NOT_ENOUGH")), ErrorClass::Retry);
        assert_eq!(c("40004", Some("ACQ.REASON_TRADE_BEEN_FREEZEN")), ErrorClass::Failure);
        assert_eq!(c("40002", Some("isv.invalid-signature")), ErrorClass::Failure);
        assert_eq!(c("40004", Some("isp.bill_not_exist")), ErrorClass::Retry);
        assert_eq!(
            c("40004", Some("ACQ.SOMETHING_NEW")),
            ErrorClass::Failure,
            "unknown sub-code: its code decides"
        );
        assert_eq!(c("20001", None), ErrorClass::Failure);
        assert_eq!(c("40001", None), ErrorClass::Failure);
        assert_eq!(c("40006", None), ErrorClass::Failure);
        assert_eq!(
            c("99999", None),
            ErrorClass::Failure,
            "unknown code: not retried blindly"
        );
        assert_eq!(SubCode::parse("aop.ACQ.SYSTEM_ERROR").as_str(), "ACQ.SYSTEM_ERROR");
    }
}
