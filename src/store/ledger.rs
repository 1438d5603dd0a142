//! Posting journal entries and deriving balances.
//!
//! Posting order matters for the database's balance check: lines go in first, then the entry
//! row, whose insert trigger checks the lines (see the 0001 migration).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{in_tx, on_read, Store, StoreError};
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};

/// Insert the ledger account if new and return its id.
macro_rules! ledger_account_id {
    ($tx:expr, $acct:expr, $now:expr) => {{
        let acct: &$crate::ledger::LedgerAccount = $acct;
        let code = acct.code();
        sqlx::query(
            "INSERT INTO ledger_accounts (code, kind, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO NOTHING",
        )
        .bind(&code)
        .bind(acct.kind().as_str())
        .bind(acct.name())
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(|e| $crate::store::StoreError::db("creating a ledger account", e))?;
        sqlx::query_scalar::<_, i64>("SELECT id FROM ledger_accounts WHERE code = $1")
            .bind(&code)
            .fetch_one(&mut *$tx)
            .await
            .map_err(|e| $crate::store::StoreError::db("finding a ledger account", e))?
    }};
}

/// Post `$entry` inside the open transaction `$tx`. Later steps (bill issue, payment apply)
/// call this inside their own transactions so the business change and its posting commit together.
///
/// Three statements whatever the number of lines (a payment's apply runs this on every callback):
/// one multi-row `INSERT … ON CONFLICT (code) DO NOTHING` makes sure every ledger account exists
/// (codes de-duplicated and sorted, so concurrent posters insert new codes in the same order),
/// one multi-row insert writes the lines with each account id resolved by a sub-select on its
/// code, and then the entry row, whose insert trigger checks the lines balance.
macro_rules! post_entry_in_tx {
    ($tx:expr, $entry:expr, $now:expr) => {{
        let entry: &$crate::ledger::JournalEntry = $entry;
        let mut accounts: std::collections::BTreeMap<String, (&'static str, String)> =
            std::collections::BTreeMap::new();
        let mut codes: Vec<(i32, String, i64)> = Vec::with_capacity(entry.lines.len());
        for (i, (acct, amount)) in entry.lines.iter().enumerate() {
            let code = acct.code();
            accounts
                .entry(code.clone())
                .or_insert_with(|| (acct.kind().as_str(), acct.name()));
            codes.push((i as i32 + 1, code, amount.get()));
        }
        let accounts: Vec<(String, (&'static str, String))> = accounts.into_iter().collect();
        for chunk in accounts.chunks($crate::store::bills::ROWS) {
            let mut qb = sqlx::QueryBuilder::new("INSERT INTO ledger_accounts (code, kind, name, created_at) ");
            qb.push_values(chunk, |mut b, (code, (kind, name))| {
                b.push_bind(code.as_str())
                    .push_bind(*kind)
                    .push_bind(name.as_str())
                    .push_bind($now);
            });
            qb.push(" ON CONFLICT (code) DO NOTHING");
            qb.build()
                .execute(&mut *$tx)
                .await
                .map_err(|e| $crate::store::StoreError::db("creating the ledger accounts of a journal entry", e))?;
        }
        for chunk in codes.chunks($crate::store::bills::ROWS) {
            let mut qb =
                sqlx::QueryBuilder::new("INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) ");
            qb.push_values(chunk, |mut b, (line_no, code, amount)| {
                b.push_bind(entry.id)
                    .push_bind(*line_no)
                    .push("(SELECT id FROM ledger_accounts WHERE code = ")
                    .push_bind_unseparated(code.as_str())
                    .push_unseparated(")")
                    .push_bind(*amount);
            });
            qb.build()
                .execute(&mut *$tx)
                .await
                .map_err(|e| $crate::store::StoreError::db("writing the lines of a journal entry", e))?;
        }
        sqlx::query(
            "INSERT INTO journal_entries (id, kind, reference, memo, accounting_date, posted_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(entry.id)
        .bind(&entry.kind)
        .bind(&entry.reference)
        .bind(&entry.memo)
        .bind(entry.accounting_date)
        .bind($now)
        .bind(&entry.created_by)
        .execute(&mut *$tx)
        .await
        .map_err(|e| $crate::store::StoreError::db("posting a journal entry", e))?;
    }};
}
#[allow(unused_imports)] // post_entry_in_tx is for the steps that post inside their own transactions
pub(crate) use {ledger_account_id, post_entry_in_tx};

/// One posted line, for statements and tests.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PostedLine {
    pub entry_id: Uuid,
    pub kind: String,
    pub reference: String,
    pub line_no: i32,
    pub account_code: String,
    pub amount_fen: i64,
}

/// Balance of every account with postings.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TrialBalanceRow {
    pub code: String,
    pub kind: String,
    pub balance_fen: i64,
}

impl Store {
    /// Post a balanced entry atomically. Posting the same `(kind, reference)` twice is refused
    /// as a duplicate, so a retried event cannot double a posting.
    pub async fn post_entry(&self, entry: &JournalEntry, now: DateTime<Utc>) -> Result<(), StoreError> {
        in_tx!(self, "posting a journal entry", |tx| {
            post_entry_in_tx!(tx, entry, now);
            Ok::<(), StoreError>(())
        })
    }

    /// Raw balance (debits positive) of an account, derived from the journal.
    pub async fn balance(&self, account: &LedgerAccount) -> Result<Fen, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM journal_lines l \
                 JOIN ledger_accounts a ON a.id = l.ledger_account_id WHERE a.code = $1",
            )
            .bind(account.code())
            .fetch_one(pool)
            .await
            .map(Fen::new)
            .map_err(|e| StoreError::db("computing a balance", e))
        })
    }

    /// Every account's balance. Its sum is zero whenever the journal is sound.
    pub async fn trial_balance(&self) -> Result<Vec<TrialBalanceRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, TrialBalanceRow>(
                "SELECT a.code, a.kind, CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) AS balance_fen \
                 FROM ledger_accounts a LEFT JOIN journal_lines l ON l.ledger_account_id = a.id \
                 GROUP BY a.code, a.kind ORDER BY a.code",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("computing the trial balance", e))
        })
    }

    /// The lines of an entry, in order.
    pub async fn entry_lines(&self, kind: &str, reference: &str) -> Result<Vec<PostedLine>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, PostedLine>(
                "SELECT e.id AS entry_id, e.kind, e.reference, l.line_no, a.code AS account_code, l.amount_fen \
                 FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id \
                 JOIN ledger_accounts a ON a.id = l.ledger_account_id \
                 WHERE e.kind = $1 AND e.reference = $2 ORDER BY l.line_no",
            )
            .bind(kind)
            .bind(reference)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading a journal entry", e))
        })
    }

    /// Number of posted entries (for metrics and tests).
    pub async fn entry_count(&self) -> Result<i64, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM journal_entries")
                .fetch_one(pool)
                .await
                .map_err(|e| StoreError::db("counting journal entries", e))
        })
    }
}
