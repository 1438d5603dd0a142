//! WeChat Pay's states, event types and error codes in our terms, as exhaustive matches
//! (gateways.md §2.5–2.7). A value we do not know is an explicit `Unknown`/error, never a
//! catch-all arm over the known ones.

use crate::outcome::{ErrorClass, PaymentState, RefundState};

/// `trade_state` of a transaction (query answer and payment notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeState {
    NotPay,
    UserPaying,
    Success,
    Refund,
    Closed,
    Revoked,
    PayError,
}

impl TradeState {
    pub fn parse(s: &str) -> Result<TradeState, String> {
        Ok(match s {
            "NOTPAY" => TradeState::NotPay,
            "USERPAYING" => TradeState::UserPaying,
            "SUCCESS" => TradeState::Success,
            "REFUND" => TradeState::Refund,
            "CLOSED" => TradeState::Closed,
            "REVOKED" => TradeState::Revoked,
            "PAYERROR" => TradeState::PayError,
            other => return Err(format!("unknown trade_state {other:?}")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::NotPay => "NOTPAY",
            TradeState::UserPaying => "USERPAYING",
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::Closed => "CLOSED",
            TradeState::Revoked => "REVOKED",
            TradeState::PayError => "PAYERROR",
        }
    }

    pub fn payment_state(self) -> PaymentState {
        match self {
            TradeState::NotPay | TradeState::UserPaying => PaymentState::Pending,
            TradeState::Success => PaymentState::Paid,
            // "转入退款": paid, and a refund exists.
            TradeState::Refund => PaymentState::Refunded,
            TradeState::Closed | TradeState::Revoked => PaymentState::Closed,
            TradeState::PayError => PaymentState::Failed,
        }
    }
}

/// A refund's `status` (API answers) / `refund_status` (notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Success,
    Closed,
    Processing,
    /// The refund could not reach the payer (e.g. card cancelled): it needs the abnormal-refund
    /// flow or a manual payout. We call it failed.
    Abnormal,
}

impl RefundStatus {
    pub fn parse(s: &str) -> Result<RefundStatus, String> {
        Ok(match s {
            "SUCCESS" => RefundStatus::Success,
            "CLOSED" => RefundStatus::Closed,
            "PROCESSING" => RefundStatus::Processing,
            "ABNORMAL" => RefundStatus::Abnormal,
            other => return Err(format!("unknown refund status {other:?}")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }

    pub fn refund_state(self) -> RefundState {
        match self {
            RefundStatus::Success => RefundState::Succeeded,
            RefundStatus::Closed => RefundState::Closed,
            RefundStatus::Processing => RefundState::Processing,
            RefundStatus::Abnormal => RefundState::Failed,
        }
    }
}

/// A notification's `event_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType {
    TransactionSuccess,
    RefundSuccess,
    RefundAbnormal,
    RefundClosed,
    /// Any other event (e.g. `PAYSCORE.USER_OPEN_SERVICE`): verified and decrypted, but not a
    /// payment or refund meterpay acts on.
    Other(String),
}

impl EventType {
    pub fn parse(s: &str) -> EventType {
        match s {
            "TRANSACTION.SUCCESS" => EventType::TransactionSuccess,
            "REFUND.SUCCESS" => EventType::RefundSuccess,
            "REFUND.ABNORMAL" => EventType::RefundAbnormal,
            "REFUND.CLOSED" => EventType::RefundClosed,
            other => EventType::Other(other.to_string()),
        }
    }

    /// The refund status a refund event must carry.
    pub fn refund_status(&self) -> Option<RefundStatus> {
        match self {
            EventType::RefundSuccess => Some(RefundStatus::Success),
            EventType::RefundAbnormal => Some(RefundStatus::Abnormal),
            EventType::RefundClosed => Some(RefundStatus::Closed),
            EventType::TransactionSuccess | EventType::Other(_) => None,
        }
    }
}

/// An error `code` from WeChat Pay's error answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    SystemError,
    FrequencyLimited,
    OrderPaid,
    OrderClosed,
    OutTradeNoUsed,
    OrderNotExist,
    ResourceNotExists,
    NotEnough,
    UserAccountAbnormal,
    ParamError,
    InvalidRequest,
    SignError,
    NoAuth,
    MchNotExists,
    AppidMchidNotMatch,
    BankError,
    NoStatementExist,
    Unknown(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "SYSTEM_ERROR" | "SYSTEMERROR" => ErrorCode::SystemError,
            "FREQUENCY_LIMITED" => ErrorCode::FrequencyLimited,
            "ORDERPAID" => ErrorCode::OrderPaid,
            "ORDER_CLOSED" | "ORDERCLOSED" => ErrorCode::OrderClosed,
            "OUT_TRADE_NO_USED" => ErrorCode::OutTradeNoUsed,
            "ORDER_NOT_EXIST" | "ORDERNOTEXIST" => ErrorCode::OrderNotExist,
            "RESOURCE_NOT_EXISTS" => ErrorCode::ResourceNotExists,
            "NOT_ENOUGH" => ErrorCode::NotEnough,
            "USER_ACCOUNT_ABNORMAL" => ErrorCode::UserAccountAbnormal,
            "PARAM_ERROR" => ErrorCode::ParamError,
            "INVALID_REQUEST" => ErrorCode::InvalidRequest,
            "SIGN_ERROR" => ErrorCode::SignError,
            "NO_AUTH" | "NOAUTH" => ErrorCode::NoAuth,
            "MCH_NOT_EXISTS" => ErrorCode::MchNotExists,
            "APPID_MCHID_NOT_MATCH" => ErrorCode::AppidMchidNotMatch,
            "BANKERROR" | "BANK_ERROR" => ErrorCode::BankError,
            "NO_STATEMENT_EXIST" => ErrorCode::NoStatementExist,
            other => ErrorCode::Unknown(other.to_string()),
        }
    }

    /// How to treat the error (gateways.md §2.7).
    pub fn class(&self) -> ErrorClass {
        match self {
            // Transient: retry with the same parameters (same out_trade_no / out_refund_no).
            ErrorCode::SystemError | ErrorCode::FrequencyLimited | ErrorCode::BankError => ErrorClass::Retry,
            // Refundable balance short for now; the bill is generated after 10:00 next day.
            ErrorCode::NotEnough | ErrorCode::NoStatementExist => ErrorClass::Retry,
            // Paid already: query and apply the payment.
            ErrorCode::OrderPaid => ErrorClass::AlreadyDone,
            ErrorCode::OrderClosed
            | ErrorCode::OutTradeNoUsed
            | ErrorCode::OrderNotExist
            | ErrorCode::ResourceNotExists
            | ErrorCode::UserAccountAbnormal
            | ErrorCode::ParamError
            | ErrorCode::InvalidRequest
            | ErrorCode::SignError
            | ErrorCode::NoAuth
            | ErrorCode::MchNotExists
            | ErrorCode::AppidMchidNotMatch => ErrorClass::Failure,
            // A code we have never seen: surface it rather than retry blindly.
            ErrorCode::Unknown(_) => ErrorClass::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trade_state_maps_to_one_of_ours_and_unknown_ones_are_refused() {
        for (s, p) in [
            ("NOTPAY", PaymentState::Pending),
            ("USERPAYING", PaymentState::Pending),
            ("SUCCESS", PaymentState::Paid),
            ("REFUND", PaymentState::Refunded),
            ("CLOSED", PaymentState::Closed),
            ("REVOKED", PaymentState::Closed),
            ("PAYERROR", PaymentState::Failed),
        ] {
            let t = TradeState::parse(s).unwrap();
            assert_eq!(t.payment_state(), p, "{s}");
            assert_eq!(t.as_str(), s);
        }
        assert!(TradeState::parse("PAID").unwrap_err().contains("PAID"));
    }

    #[test]
    fn refund_statuses_map_and_abnormal_is_a_failure() {
        for (s, r) in [
            ("SUCCESS", RefundState::Succeeded),
            ("CLOSED", RefundState::Closed),
            ("PROCESSING", RefundState::Processing),
            ("ABNORMAL", RefundState::Failed),
        ] {
            assert_eq!(RefundStatus::parse(s).unwrap().refund_state(), r);
            assert_eq!(RefundStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(
            RefundStatus::parse("FAIL").is_err(),
            "the bill file's vocabulary is not the API's"
        );
    }

    #[test]
    fn error_codes_are_classed_as_the_spec_lists() {
        use ErrorClass::*;
        for (code, class) in [
            ("SYSTEM_ERROR", Retry),
            ("FREQUENCY_LIMITED", Retry),
            ("BANKERROR", Retry),
            ("NOT_ENOUGH", Retry),
            ("NO_STATEMENT_EXIST", Retry),
            ("ORDERPAID", AlreadyDone),
            ("ORDER_CLOSED", Failure),
            ("OUT_TRADE_NO_USED", Failure),
            ("ORDER_NOT_EXIST", Failure),
            ("RESOURCE_NOT_EXISTS", Failure),
            ("USER_ACCOUNT_ABNORMAL", Failure),
            ("PARAM_ERROR", Failure),
            ("INVALID_REQUEST", Failure),
            ("SIGN_ERROR", Failure),
            ("NO_AUTH", Failure),
            ("NOAUTH", Failure),
            ("MCH_NOT_EXISTS", Failure),
            ("APPID_MCHID_NOT_MATCH", Failure),
            ("SOMETHING_NEW", Failure),
        ] {
            assert_eq!(ErrorCode::parse(code).class(), class, "{code}");
        }
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW"),
            ErrorCode::Unknown("SOMETHING_NEW".into())
        );
    }

    #[test]
    fn refund_events_carry_their_status_and_other_events_are_kept_by_name() {
        assert_eq!(
            EventType::parse("REFUND.ABNORMAL").refund_status(),
            Some(RefundStatus::Abnormal)
        );
        assert_eq!(EventType::parse("TRANSACTION.SUCCESS"), EventType::TransactionSuccess);
        assert_eq!(
            EventType::parse("PAYSCORE.USER_OPEN_SERVICE"),
            EventType::Other("PAYSCORE.USER_OPEN_SERVICE".into())
        );
    }
}
