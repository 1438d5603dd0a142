//! The normalised settlement row every gateway's parser produces, whatever its file looks like.
//! Reconciliation (in the service) matches these rows against the ledger; it never sees a
//! gateway's own columns.

use serde::Serialize;

/// Payment or refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    Payment,
    Refund,
}

/// One transaction in a gateway's daily file, in our terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettlementRow {
    /// Our order number (`out_trade_no` / `orderId`).
    pub order_no: String,
    /// Our refund number, for refunds (`out_request_no` / `out_refund_no`); `None` for payments.
    pub refund_no: Option<String>,
    /// The gateway's own transaction id.
    pub gateway_txn_id: String,
    pub kind: RowKind,
    /// Always positive, in fen; `kind` says which way the money went.
    pub amount_fen: i64,
    /// The gateway's fee on this row, exactly as the file states it, as a decimal string in yuan
    /// (fees can carry more than two decimals in some files, so they are kept as text here).
    pub fee: String,
    /// The fee in fen when the file's fee has at most two decimals (it is signed: a refund's fee
    /// is usually returned, i.e. negative).
    pub fee_fen: Option<i64>,
    /// Transaction time as written in the file, interpreted in China Standard Time (UTC+8).
    pub time: chrono::NaiveDateTime,
    /// The line of the file (1-based, counted in the decoded text of the file or, for a zip,
    /// of its detail entry) the row starts on.
    pub line: u32,
    /// The row exactly as it appeared in the file (decoded to UTF-8). Empty when the file was
    /// read without its rows' text (`alipay::settlement::parse_lean`); such lines are read back
    /// from the file by number (`alipay::settlement::original_lines`).
    pub original_line: String,
}

/// Totals over a file's rows (and, where the file has a summary, checked against it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettlementTotals {
    pub payment_count: u64,
    pub payment_fen: i64,
    pub refund_count: u64,
    pub refund_fen: i64,
    /// Sum of row fees in fen (signed).
    pub fee_fen: i64,
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettlementFile {
    pub rows: Vec<SettlementRow>,
    pub totals: SettlementTotals,
    /// SHA-256 of the file's bytes as received, lowercase hex.
    pub file_sha256: String,
}

/// Why a file was refused. Every variant names where in the file the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("the file is not valid {encoding}: {detail}")]
    Encoding { encoding: &'static str, detail: String },
    #[error("required column {0:?} is missing from the header")]
    MissingColumn(String),
    #[error("unknown column {0:?} in the header")]
    UnknownColumn(String),
    #[error("line {line}: {reason}")]
    BadRow { line: usize, reason: String },
    #[error("the file is truncated: {0}")]
    Truncated(String),
    #[error("the summary disagrees with the rows: {0}")]
    SummaryMismatch(String),
    #[error("the archive could not be read: {0}")]
    Archive(String),
}

impl SettlementTotals {
    /// Totals computed from rows.
    pub fn of(rows: &[SettlementRow]) -> Self {
        let mut t = SettlementTotals::default();
        for r in rows {
            match r.kind {
                RowKind::Payment => {
                    t.payment_count += 1;
                    t.payment_fen += r.amount_fen;
                }
                RowKind::Refund => {
                    t.refund_count += 1;
                    t.refund_fen += r.amount_fen;
                }
            }
            t.fee_fen += r.fee_fen.unwrap_or(0);
        }
        t
    }
}
