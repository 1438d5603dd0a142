//! Prepaid credit (domain.md §4.4): the balance is the ledger account `credit:{account}`, never a
//! mutable number. Manual top-ups (cash or a bank transfer taken by an operator) debit `bank`
//! and credit it; open bills are then settled from it at once, and new bills as they are issued.
//! Each account may have a low-balance threshold for reminders.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::{insert_audit, AuditRecord};
use super::billing_settings::billing_settings_in_tx;
use super::bills::{account_bills_in_tx, insert_allocations_in_tx, OpenBill};
use super::{in_tx, on_read, Store, StoreError};
use crate::domain::late_fee::{plan, OpenItem};
use crate::domain::period::cst_date;
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};

/// What a top-up did.
#[derive(Debug, Clone, Serialize)]
pub struct TopUp {
    pub topup_id: i64,
    pub account_id: i64,
    pub amount_fen: i64,
    /// Credit used at once on open bills.
    pub settled_fen: i64,
    pub credit_balance_fen: i64,
}

/// An account's money position.
#[derive(Debug, Clone, Serialize)]
pub struct AccountBalance {
    pub account_id: i64,
    /// What the account owes (`receivable:{account}`).
    pub receivable_fen: i64,
    /// Credit held for it (`credit:{account}`).
    pub credit_fen: i64,
    pub low_balance_fen: Option<i64>,
    pub below_threshold: bool,
    pub open_bills: Vec<OpenBill>,
}

/// An account whose credit is below its threshold.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LowBalance {
    pub account_id: i64,
    pub account_code: String,
    pub credit_fen: i64,
    pub low_balance_fen: i64,
}

/// Credit of an account inside a transaction (normal balance: positive when held).
macro_rules! credit_balance_in_tx {
    ($tx:expr, $account_id:expr) => {{
        let raw: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM journal_lines l \
             JOIN ledger_accounts a ON a.id = l.ledger_account_id WHERE a.code = $1",
        )
        .bind(
            LedgerAccount::CustomerCredit {
                account_id: $account_id,
            }
            .code(),
        )
        .fetch_one(&mut *$tx)
        .await
        .map_err(|e| StoreError::db("reading a credit balance", e))?;
        -raw
    }};
}

impl Store {
    /// Record a manual top-up and settle the account's open bills from its credit. `reference`
    /// is unique (the receipt number): the same top-up twice is refused as a duplicate.
    #[allow(clippy::too_many_arguments)]
    pub async fn top_up(
        &self,
        account_id: i64,
        amount: Fen,
        reference: &str,
        note: Option<&str>,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TopUp, StoreError> {
        let what = "recording a top-up";
        if !amount.is_positive() {
            return Err(StoreError::Refused {
                what,
                reason: format!("a top-up must be positive (got {amount})"),
            });
        }
        if reference.trim().is_empty() {
            return Err(StoreError::Refused {
                what,
                reason: "a top-up needs a reference (the receipt number)".into(),
            });
        }
        in_tx!(self, what, |tx| {
            let community_id: i64 =
                sqlx::query_scalar("UPDATE accounts SET status = status WHERE id = $1 RETURNING community_id")
                    .bind(account_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                    .ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
            let topup_id: i64 = sqlx::query_scalar(
                "INSERT INTO topups (account_id, amount_fen, reference, note, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(account_id)
            .bind(amount.get())
            .bind(reference.trim())
            .bind(note)
            .bind(actor)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let date = cst_date(now);
            let e = JournalEntry::transfer(
                "topup",
                reference.trim(),
                date,
                actor,
                LedgerAccount::Bank,
                LedgerAccount::CustomerCredit { account_id },
                amount,
            )
            .map_err(|e| StoreError::Refused {
                what,
                reason: e.to_string(),
            })?;
            super::ledger::post_entry_in_tx!(tx, &e, now);
            // Settle open bills from the credit now held.
            let credit = credit_balance_in_tx!(tx, account_id);
            let settings = billing_settings_in_tx!(tx, community_id);
            let bills = account_bills_in_tx!(tx, account_id);
            let items: Vec<OpenItem> = bills
                .iter()
                .filter(|b| b.outstanding_fen > 0)
                .map(|b| b.to_item())
                .collect();
            let (shares, _) = plan(
                &items,
                Fen::new(credit),
                settings.allocation_order,
                settings.penalty_first,
            );
            let settled: i64 = shares.iter().map(|s| s.total().get()).sum();
            if settled > 0 {
                insert_allocations_in_tx!(tx, account_id, &shares, "credit", "credit".to_string(), now);
                let e = JournalEntry::transfer(
                    "credit.apply",
                    format!("topup:{}", reference.trim()),
                    date,
                    actor,
                    LedgerAccount::CustomerCredit { account_id },
                    LedgerAccount::Receivable { account_id },
                    Fen::new(settled),
                )
                .map_err(|e| StoreError::Refused {
                    what,
                    reason: e.to_string(),
                })?;
                super::ledger::post_entry_in_tx!(tx, &e, now);
            }
            let rec = AuditRecord {
                actor: actor.into(),
                action: "account.topup".into(),
                subject_type: "account".into(),
                subject_id: account_id.to_string(),
                before: None,
                after: Some(
                    serde_json::json!({"topup_id": topup_id, "amount_fen": amount.get(), "reference": reference.trim(), "settled_fen": settled}),
                ),
                reason: note.map(str::to_string),
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(TopUp {
                topup_id,
                account_id,
                amount_fen: amount.get(),
                settled_fen: settled,
                credit_balance_fen: credit - settled,
            })
        })
    }

    /// The account's receivable, credit and open bills.
    pub async fn account_balance(&self, account_id: i64) -> Result<AccountBalance, StoreError> {
        let threshold: Option<Option<i64>> = on_read!(self, |pool| {
            sqlx::query_scalar("SELECT low_balance_fen FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("reading an account", e))
        })?;
        let threshold = threshold.ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
        let receivable = self.balance(&LedgerAccount::Receivable { account_id }).await?;
        let credit = -self.balance(&LedgerAccount::CustomerCredit { account_id }).await?.get();
        Ok(AccountBalance {
            account_id,
            receivable_fen: receivable.get(),
            credit_fen: credit,
            low_balance_fen: threshold,
            below_threshold: threshold.is_some_and(|t| credit < t),
            open_bills: self.open_bills(account_id).await?,
        })
    }

    /// Set (or clear, with `None`) an account's low-balance threshold. Audited.
    pub async fn set_low_balance_threshold(
        &self,
        account_id: i64,
        threshold: Option<Fen>,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = "setting a low-balance threshold";
        if threshold.is_some_and(|t| t.is_negative()) {
            return Err(StoreError::Refused {
                what,
                reason: "a threshold cannot be negative".into(),
            });
        }
        in_tx!(self, what, |tx| {
            let before: Option<Option<i64>> = sqlx::query_scalar("SELECT low_balance_fen FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let before = before.ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
            sqlx::query("UPDATE accounts SET low_balance_fen = $1 WHERE id = $2")
                .bind(threshold.map(|t| t.get()))
                .bind(account_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "account.low_balance".into(),
                subject_type: "account".into(),
                subject_id: account_id.to_string(),
                before: Some(serde_json::json!({"low_balance_fen": before})),
                after: Some(serde_json::json!({"low_balance_fen": threshold.map(|t| t.get())})),
                reason: None,
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(())
        })
    }

    /// Accounts of a community whose credit is below their threshold (for reminders).
    pub async fn low_balance_accounts(&self, community_id: i64) -> Result<Vec<LowBalance>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, LowBalance>(
                "SELECT a.id AS account_id, a.code AS account_code, \
                 CAST(-COALESCE((SELECT SUM(l.amount_fen) FROM journal_lines l JOIN ledger_accounts la ON la.id = l.ledger_account_id \
                   WHERE la.code = 'credit:' || CAST(a.id AS TEXT)), 0) AS BIGINT) AS credit_fen, a.low_balance_fen \
                 FROM accounts a WHERE a.community_id = $1 AND a.status = 'active' AND a.low_balance_fen IS NOT NULL \
                 AND -COALESCE((SELECT SUM(l.amount_fen) FROM journal_lines l JOIN ledger_accounts la ON la.id = l.ledger_account_id \
                   WHERE la.code = 'credit:' || CAST(a.id AS TEXT)), 0) < a.low_balance_fen ORDER BY a.code",
            )
            .bind(community_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing low balances", e))
        })
    }
}
