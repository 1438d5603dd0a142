//! The double-entry ledger: the chart of accounts and journal entries.
//!
//! Every movement of money is a [`JournalEntry`] whose lines sum to zero (debits positive,
//! credits negative). Entries are append-only: a correction is a new entry, never an edit.
//! Balances are derived from the journal, never stored. The database enforces both rules on
//! each backend (see `migrations/*/0001_foundation.sql`), so a bug in code cannot break them.
//!
//! Sign convention per account kind: assets and expenses carry debit (positive) balances;
//! liabilities and income carry credit (negative) balances. [`LedgerAccount::normal_balance`]
//! turns a raw balance into the figure a finance person expects to read.
//!
//! Chart of accounts (design.md §3):
//!
//! | code | kind | meaning |
//! |---|---|---|
//! | `receivable:{account_id}` | asset | what a customer account owes |
//! | `revenue:{utility}` | income | billed usage per utility |
//! | `late_fee_income` | income | late fees (违约金) |
//! | `credit:{account_id}` | liability | prepaid balance and overpayments held for the customer |
//! | `clearing:{channel}:{merchant}` | asset | collected by a gateway, not yet settled to the bank |
//! | `bank` | asset | settled money |
//! | `gateway_fees` | expense | gateways' fees (手续费) |
//! | `payable:{name}` | liability | pass-through charges owed onward (water resource fee, sewage) |
//! | `suspense` | liability | money received that cannot yet be placed (挂账) |
//! | `write_off` | expense | amounts finance decided not to pursue |

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ids::{Channel, Utility};
use crate::domain::Fen;

/// An account in the chart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LedgerAccount {
    Receivable { account_id: i64 },
    Revenue { utility: Utility },
    LateFeeIncome,
    CustomerCredit { account_id: i64 },
    GatewayClearing { channel: Channel, merchant: String },
    Bank,
    GatewayFees,
    Payable { name: String },
    Suspense,
    WriteOff,
}

/// The kind of an account, which fixes the side its balance normally sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Asset,
    Liability,
    Income,
    Expense,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Asset => "asset",
            AccountKind::Liability => "liability",
            AccountKind::Income => "income",
            AccountKind::Expense => "expense",
        }
    }
}

impl LedgerAccount {
    /// The stable code stored in `ledger_accounts.code`.
    pub fn code(&self) -> String {
        match self {
            LedgerAccount::Receivable { account_id } => format!("receivable:{account_id}"),
            LedgerAccount::Revenue { utility } => format!("revenue:{utility}"),
            LedgerAccount::LateFeeIncome => "late_fee_income".into(),
            LedgerAccount::CustomerCredit { account_id } => format!("credit:{account_id}"),
            LedgerAccount::GatewayClearing { channel, merchant } => format!("clearing:{channel}:{merchant}"),
            LedgerAccount::Bank => "bank".into(),
            LedgerAccount::GatewayFees => "gateway_fees".into(),
            LedgerAccount::Payable { name } => format!("payable:{name}"),
            LedgerAccount::Suspense => "suspense".into(),
            LedgerAccount::WriteOff => "write_off".into(),
        }
    }

    pub fn kind(&self) -> AccountKind {
        match self {
            LedgerAccount::Receivable { .. } | LedgerAccount::GatewayClearing { .. } | LedgerAccount::Bank => {
                AccountKind::Asset
            }
            LedgerAccount::CustomerCredit { .. } | LedgerAccount::Payable { .. } | LedgerAccount::Suspense => {
                AccountKind::Liability
            }
            LedgerAccount::Revenue { .. } | LedgerAccount::LateFeeIncome => AccountKind::Income,
            LedgerAccount::GatewayFees | LedgerAccount::WriteOff => AccountKind::Expense,
        }
    }

    /// A human name for reports.
    pub fn name(&self) -> String {
        match self {
            LedgerAccount::Receivable { account_id } => format!("Receivable, account {account_id}"),
            LedgerAccount::Revenue { utility } => format!("Revenue, {utility}"),
            LedgerAccount::LateFeeIncome => "Late-fee income".into(),
            LedgerAccount::CustomerCredit { account_id } => format!("Customer credit, account {account_id}"),
            LedgerAccount::GatewayClearing { channel, merchant } => format!("Gateway clearing, {channel} {merchant}"),
            LedgerAccount::Bank => "Bank".into(),
            LedgerAccount::GatewayFees => "Gateway fees".into(),
            LedgerAccount::Payable { name } => format!("Payable, {name}"),
            LedgerAccount::Suspense => "Suspense".into(),
            LedgerAccount::WriteOff => "Write-offs".into(),
        }
    }

    /// The balance as finance reads it: positive when the account holds what its kind says
    /// (an asset owned, a liability owed, income earned, an expense spent).
    pub fn normal_balance(&self, raw: Fen) -> Fen {
        match self.kind() {
            AccountKind::Asset | AccountKind::Expense => raw,
            AccountKind::Liability | AccountKind::Income => Fen::new(-raw.get()),
        }
    }
}

/// Why an entry was refused before it reached the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("a journal entry needs at least two lines")]
    TooFewLines,
    #[error("journal entry lines sum to {0} fen, not zero")]
    Unbalanced(i64),
    #[error("a journal line of zero is meaningless")]
    ZeroLine,
    #[error("amount overflow adding the entry's lines")]
    Overflow,
    #[error("a journal entry needs a reference (the bill, payment or refund it records)")]
    NoReference,
}

/// A balanced set of lines, ready to post. Construct with [`JournalEntry::new`], which checks
/// the lines; the database checks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub id: Uuid,
    /// What kind of event: `bill.issue`, `payment.apply`, `refund`, `late_fee`, `settlement`, …
    pub kind: String,
    /// The business reference (bill id, order number, …). `(kind, reference)` is unique, so
    /// posting the same event twice is refused rather than doubled.
    pub reference: String,
    pub memo: String,
    pub accounting_date: NaiveDate,
    pub created_by: String,
    pub lines: Vec<(LedgerAccount, Fen)>,
}

impl JournalEntry {
    pub fn new(
        kind: impl Into<String>,
        reference: impl Into<String>,
        accounting_date: NaiveDate,
        created_by: impl Into<String>,
        lines: Vec<(LedgerAccount, Fen)>,
    ) -> Result<JournalEntry, EntryError> {
        let reference = reference.into();
        if reference.is_empty() {
            return Err(EntryError::NoReference);
        }
        if lines.len() < 2 {
            return Err(EntryError::TooFewLines);
        }
        if lines.iter().any(|(_, a)| a.is_zero()) {
            return Err(EntryError::ZeroLine);
        }
        let total = Fen::sum(lines.iter().map(|(_, a)| *a)).map_err(|_| EntryError::Overflow)?;
        if !total.is_zero() {
            return Err(EntryError::Unbalanced(total.get()));
        }
        Ok(JournalEntry {
            id: Uuid::now_v7(),
            kind: kind.into(),
            reference,
            memo: String::new(),
            accounting_date,
            created_by: created_by.into(),
            lines,
        })
    }

    pub fn with_memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = memo.into();
        self
    }

    /// A debit of `amount` to `debit` and the matching credit to `credit`.
    pub fn transfer(
        kind: impl Into<String>,
        reference: impl Into<String>,
        accounting_date: NaiveDate,
        created_by: impl Into<String>,
        debit: LedgerAccount,
        credit: LedgerAccount,
        amount: Fen,
    ) -> Result<JournalEntry, EntryError> {
        let neg = amount.checked_neg().map_err(|_| EntryError::Overflow)?;
        JournalEntry::new(
            kind,
            reference,
            accounting_date,
            created_by,
            vec![(debit, amount), (credit, neg)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
    }

    #[test]
    fn unbalanced_entries_are_refused_before_the_database() {
        let lines = vec![
            (LedgerAccount::Bank, Fen::new(100)),
            (LedgerAccount::Suspense, Fen::new(-99)),
        ];
        assert_eq!(
            JournalEntry::new("t", "r", d(), "test", lines),
            Err(EntryError::Unbalanced(1))
        );
        assert_eq!(
            JournalEntry::new("t", "r", d(), "test", vec![(LedgerAccount::Bank, Fen::new(1))]),
            Err(EntryError::TooFewLines)
        );
        let zero = vec![(LedgerAccount::Bank, Fen::ZERO), (LedgerAccount::Suspense, Fen::ZERO)];
        assert_eq!(
            JournalEntry::new("t", "r", d(), "test", zero),
            Err(EntryError::ZeroLine)
        );
        let big = vec![
            (LedgerAccount::Bank, Fen::new(i64::MAX)),
            (LedgerAccount::Suspense, Fen::new(1)),
        ];
        assert_eq!(JournalEntry::new("t", "r", d(), "test", big), Err(EntryError::Overflow));
    }

    #[test]
    fn codes_are_stable_and_kinds_fix_the_normal_side() {
        let clearing = LedgerAccount::GatewayClearing {
            channel: Channel::Alipay,
            merchant: "M1".into(),
        };
        assert_eq!(clearing.code(), "clearing:alipay:M1");
        assert_eq!(
            LedgerAccount::Revenue {
                utility: Utility::Water
            }
            .code(),
            "revenue:water"
        );
        assert_eq!(
            LedgerAccount::CustomerCredit { account_id: 7 }.normal_balance(Fen::new(-500)),
            Fen::new(500)
        );
        assert_eq!(
            LedgerAccount::Receivable { account_id: 7 }.normal_balance(Fen::new(500)),
            Fen::new(500)
        );
    }
}
