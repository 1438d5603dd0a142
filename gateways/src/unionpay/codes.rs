//! UnionPay's response codes (`respCode`, and `origRespCode` in query answers), what each means
//! for a transaction's state, and how a caller should treat a refusal. Every code the ACP 5.1.0
//! code table lists has its variant; a code outside the table is [`RespCode::Unknown`] and
//! treated as a failure, never retried blindly (gateways.md §3.6).

use crate::outcome::{ErrorClass, PaymentState, RefundState};

/// A `respCode` / `origRespCode` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    /// `00` success (for a request: accepted; the transaction's result comes from the
    /// notification or a query).
    Success,
    /// `A6` successful with a defect: the money moved; treat as success and flag it.
    SuccessWithDefect,
    /// `01` transaction failed.
    Failed,
    /// `02` system not open or temporarily closed.
    SystemClosed,
    /// `03` communication timeout: query.
    Timeout,
    /// `04` status unknown: query (or see the settlement file).
    StatusUnknown,
    /// `05` accepted, in progress: query later.
    InProgress,
    /// `06` system busy.
    Busy,
    /// `10` message format error.
    FormatError,
    /// `11` signature verification failed (our request's signature, or our certId).
    SignatureRejected,
    /// `12` duplicate transaction (this orderId/txnTime was already submitted).
    Duplicate,
    /// `13` required elements missing.
    MissingElements,
    /// `14` batch file format error.
    BatchFileFormat,
    /// `30` transaction not approved.
    NotApproved,
    /// `31` merchant status incorrect.
    MerchantStatus,
    /// `32` no permission for this transaction.
    NoPermission,
    /// `33` amount over the limit.
    AmountLimit,
    /// `34` no such transaction.
    NoSuchTransaction,
    /// `35` original transaction missing or in the wrong state (e.g. refunding an unpaid order).
    OriginalMissing,
    /// `36` disagrees with the original transaction (e.g. refund amount above what was paid).
    OriginalMismatch,
    /// `37` too many queries / too frequent.
    TooFrequent,
    /// `38` refused by UnionPay risk control.
    RiskControl,
    /// `39` outside the accepted time window.
    OutsideWindow,
    /// `40` binding check failed.
    BindingCheck,
    /// `41` batch status incorrect, cannot download.
    BatchStatus,
    /// `42` charged, but after the payment timeout (UnionPay reverses it).
    PaidAfterTimeout,
    /// `43` no permission for this business.
    NoBusinessPermission,
    /// `44` number wrong or service not opened.
    ServiceNotOpened,
    /// `45` the original was already refunded or undone.
    AlreadyRefunded,
    /// `70` redirected, waiting for the cardholder.
    AwaitingCardholder,
    /// `83` the issuer (channel) is still processing.
    IssuerProcessing,
    /// `60`–`69`, `71`–`82`, `84`: refused by or for the card (issuer refusal, balance, password,
    /// expiry, limits…).
    CardRefused(String),
    /// `90`–`96`: account or merchant licence problems.
    AccountRefused(String),
    /// `98` file does not exist (file transfer: not generated yet).
    FileNotFound,
    /// `99` general error.
    General,
    /// Any other code (including the 7-digit `6xxxxxx` family).
    Unknown(String),
}

impl RespCode {
    pub fn parse(code: &str) -> RespCode {
        match code {
            "00" => RespCode::Success,
            "A6" => RespCode::SuccessWithDefect,
            "01" => RespCode::Failed,
            "02" => RespCode::SystemClosed,
            "03" => RespCode::Timeout,
            "04" => RespCode::StatusUnknown,
            "05" => RespCode::InProgress,
            "06" => RespCode::Busy,
            "10" => RespCode::FormatError,
            "11" => RespCode::SignatureRejected,
            "12" => RespCode::Duplicate,
            "13" => RespCode::MissingElements,
            "14" => RespCode::BatchFileFormat,
            "30" => RespCode::NotApproved,
            "31" => RespCode::MerchantStatus,
            "32" => RespCode::NoPermission,
            "33" => RespCode::AmountLimit,
            "34" => RespCode::NoSuchTransaction,
            "35" => RespCode::OriginalMissing,
            "36" => RespCode::OriginalMismatch,
            "37" => RespCode::TooFrequent,
            "38" => RespCode::RiskControl,
            "39" => RespCode::OutsideWindow,
            "40" => RespCode::BindingCheck,
            "41" => RespCode::BatchStatus,
            "42" => RespCode::PaidAfterTimeout,
            "43" => RespCode::NoBusinessPermission,
            "44" => RespCode::ServiceNotOpened,
            "45" => RespCode::AlreadyRefunded,
            "70" => RespCode::AwaitingCardholder,
            "83" => RespCode::IssuerProcessing,
            "60" | "61" | "62" | "63" | "64" | "65" | "66" | "67" | "68" | "69" | "71" | "72" | "73" | "74" | "75"
            | "76" | "77" | "78" | "79" | "80" | "81" | "82" | "84" => RespCode::CardRefused(code.to_string()),
            "90" | "91" | "92" | "93" | "94" | "95" | "96" => RespCode::AccountRefused(code.to_string()),
            "98" => RespCode::FileNotFound,
            "99" => RespCode::General,
            other => RespCode::Unknown(other.to_string()),
        }
    }

    /// The code as UnionPay writes it.
    pub fn as_str(&self) -> &str {
        match self {
            RespCode::Success => "00",
            RespCode::SuccessWithDefect => "A6",
            RespCode::Failed => "01",
            RespCode::SystemClosed => "02",
            RespCode::Timeout => "03",
            RespCode::StatusUnknown => "04",
            RespCode::InProgress => "05",
            RespCode::Busy => "06",
            RespCode::FormatError => "10",
            RespCode::SignatureRejected => "11",
            RespCode::Duplicate => "12",
            RespCode::MissingElements => "13",
            RespCode::BatchFileFormat => "14",
            RespCode::NotApproved => "30",
            RespCode::MerchantStatus => "31",
            RespCode::NoPermission => "32",
            RespCode::AmountLimit => "33",
            RespCode::NoSuchTransaction => "34",
            RespCode::OriginalMissing => "35",
            RespCode::OriginalMismatch => "36",
            RespCode::TooFrequent => "37",
            RespCode::RiskControl => "38",
            RespCode::OutsideWindow => "39",
            RespCode::BindingCheck => "40",
            RespCode::BatchStatus => "41",
            RespCode::PaidAfterTimeout => "42",
            RespCode::NoBusinessPermission => "43",
            RespCode::ServiceNotOpened => "44",
            RespCode::AlreadyRefunded => "45",
            RespCode::AwaitingCardholder => "70",
            RespCode::IssuerProcessing => "83",
            RespCode::CardRefused(c) | RespCode::AccountRefused(c) | RespCode::Unknown(c) => c,
            RespCode::FileNotFound => "98",
            RespCode::General => "99",
        }
    }

    /// Is this a final success of the transaction (`00`, `A6`)?
    pub fn is_success(&self) -> bool {
        matches!(self, RespCode::Success | RespCode::SuccessWithDefect)
    }

    /// How a caller treats a request refused with this code. `Retry`: transient or still in
    /// progress (query or send again later); `AlreadyDone`: the thing asked for has already been
    /// submitted or done (query for its state); `Failure`: permanent, surface it.
    pub fn class(&self) -> ErrorClass {
        match self {
            RespCode::Success | RespCode::SuccessWithDefect => ErrorClass::AlreadyDone,
            RespCode::SystemClosed
            | RespCode::Timeout
            | RespCode::StatusUnknown
            | RespCode::InProgress
            | RespCode::Busy
            | RespCode::TooFrequent
            | RespCode::AwaitingCardholder
            | RespCode::IssuerProcessing => ErrorClass::Retry,
            RespCode::Duplicate | RespCode::AlreadyRefunded => ErrorClass::AlreadyDone,
            RespCode::Failed
            | RespCode::FormatError
            | RespCode::SignatureRejected
            | RespCode::MissingElements
            | RespCode::BatchFileFormat
            | RespCode::NotApproved
            | RespCode::MerchantStatus
            | RespCode::NoPermission
            | RespCode::AmountLimit
            | RespCode::NoSuchTransaction
            | RespCode::OriginalMissing
            | RespCode::OriginalMismatch
            | RespCode::RiskControl
            | RespCode::OutsideWindow
            | RespCode::BindingCheck
            | RespCode::BatchStatus
            | RespCode::PaidAfterTimeout
            | RespCode::NoBusinessPermission
            | RespCode::ServiceNotOpened
            | RespCode::CardRefused(_)
            | RespCode::AccountRefused(_)
            | RespCode::FileNotFound
            | RespCode::General
            | RespCode::Unknown(_) => ErrorClass::Failure,
        }
    }

    /// What a query's `origRespCode` says about a consume: `00`/`A6` paid; `03`/`04`/`05` (and
    /// the "waiting"/"issuer processing" codes, and the transient system codes) still pending —
    /// query again later; anything else failed (after `payTimeout` the ACP demo treats every code
    /// but `00`/`A6` as failed).
    pub fn payment_state(&self) -> PaymentState {
        match self.transaction_outcome() {
            Outcome::Succeeded => PaymentState::Paid,
            Outcome::Pending => PaymentState::Pending,
            Outcome::Failed => PaymentState::Failed,
        }
    }

    /// The same reading for a refund (`txnType` 04) or undo (31).
    pub fn refund_state(&self) -> RefundState {
        match self.transaction_outcome() {
            Outcome::Succeeded => RefundState::Succeeded,
            Outcome::Pending => RefundState::Processing,
            Outcome::Failed => RefundState::Failed,
        }
    }

    fn transaction_outcome(&self) -> Outcome {
        match self.class() {
            _ if self.is_success() => Outcome::Succeeded,
            ErrorClass::Retry => Outcome::Pending,
            ErrorClass::AlreadyDone | ErrorClass::Failure => Outcome::Failed,
        }
    }
}

enum Outcome {
    Succeeded,
    Pending,
    Failed,
}

impl std::fmt::Display for RespCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transaction type (`txnType`), as far as this service meets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnType {
    /// `00`
    Query,
    /// `01`
    Consume,
    /// `04` (退货)
    Refund,
    /// `31` (消费撤销, same clearing day only)
    ConsumeUndo,
    /// `76`
    FileTransfer,
    /// Anything else (e.g. `79` token open, `02` pre-authorisation…), named as sent.
    Other(String),
}

impl TxnType {
    pub fn parse(code: &str) -> TxnType {
        match code {
            "00" => TxnType::Query,
            "01" => TxnType::Consume,
            "04" => TxnType::Refund,
            "31" => TxnType::ConsumeUndo,
            "76" => TxnType::FileTransfer,
            other => TxnType::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            TxnType::Query => "00",
            TxnType::Consume => "01",
            TxnType::Refund => "04",
            TxnType::ConsumeUndo => "31",
            TxnType::FileTransfer => "76",
            TxnType::Other(c) => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_code_parses_back_to_itself() {
        let listed = [
            "00", "A6", "01", "02", "03", "04", "05", "06", "10", "11", "12", "13", "14", "30", "31", "32", "33", "34",
            "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "60", "65", "70", "71", "83", "84", "90",
            "96", "98", "99",
        ];
        for c in listed {
            let code = RespCode::parse(c);
            assert!(!matches!(code, RespCode::Unknown(_)), "{c} is in the table");
            assert_eq!(code.as_str(), c);
        }
        assert_eq!(RespCode::parse("6100001"), RespCode::Unknown("6100001".into()));
    }

    #[test]
    fn in_progress_codes_mean_query_again_later() {
        for c in ["03", "04", "05", "70", "83"] {
            assert_eq!(RespCode::parse(c).class(), ErrorClass::Retry, "{c}");
            assert_eq!(RespCode::parse(c).payment_state(), PaymentState::Pending, "{c}");
            assert_eq!(RespCode::parse(c).refund_state(), RefundState::Processing, "{c}");
        }
        for c in ["02", "06", "37"] {
            assert_eq!(RespCode::parse(c).class(), ErrorClass::Retry, "{c} is transient");
        }
    }

    #[test]
    fn success_and_defective_success_both_mean_paid() {
        assert_eq!(RespCode::parse("00").payment_state(), PaymentState::Paid);
        assert_eq!(RespCode::parse("A6").payment_state(), PaymentState::Paid);
        assert_eq!(RespCode::parse("A6").refund_state(), RefundState::Succeeded);
    }

    #[test]
    fn duplicates_are_already_done_and_refusals_are_failures() {
        assert_eq!(RespCode::parse("12").class(), ErrorClass::AlreadyDone);
        assert_eq!(RespCode::parse("45").class(), ErrorClass::AlreadyDone);
        for c in [
            "01", "11", "31", "34", "35", "36", "42", "61", "64", "91", "99", "ZZ", "6100001",
        ] {
            assert_eq!(RespCode::parse(c).class(), ErrorClass::Failure, "{c}");
            assert_eq!(RespCode::parse(c).payment_state(), PaymentState::Failed, "{c}");
        }
    }
}
