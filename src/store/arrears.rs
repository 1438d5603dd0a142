//! Arrears: the nightly late-fee accrual, waivers, and the arrears listing (domain.md §3).
//!
//! Each night (`billing.late_fees`, 00:30 China time, for the day that just ended) every bill
//! past its due date whose principal is unpaid, or was paid since its fee was last computed, has
//! its fee recomputed from the due date ([`crate::domain::late_fee::compute`]) and the change
//! posted: a `late_fee_postings` row with the computation trace (days, principal, rate per run)
//! and a journal entry `late_fee` / `bill:{id}:{date}` (debit `receivable:{account}`, credit
//! `late_fee_income`; reversed when the fee went down, e.g. after a credit note). The base is the
//! bill's principal for the community's late-fee utilities, less credit notes that corrected it
//! (no fee on an over-estimate); payments reduce it from the day after their accounting date.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use super::audit::{insert_audit, AuditRecord};
use super::bills::{post_entries_batch_in_tx, ROWS};
use super::{in_tx, on_read, Store, StoreError};
use crate::domain::late_fee::{compute, LateFeeInput};
use crate::domain::period::{cst_date, Period};
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};

/// What a night's accrual did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccrualReport {
    pub as_of: Option<NaiveDate>,
    pub bills_checked: usize,
    pub postings: usize,
    pub accrued_fen: i64,
    pub reversed_fen: i64,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: i64,
    account_id: i64,
    period: String,
    due_date: NaiveDate,
    customer_class: String,
}

/// One account in arrears.
#[derive(Debug, Clone, Serialize)]
pub struct ArrearsRow {
    pub account_id: i64,
    pub account_code: String,
    pub credit_rating: String,
    /// Outstanding on bills past their due date.
    pub overdue_fen: i64,
    /// Of which late fees.
    pub late_fee_fen: i64,
    pub bills: usize,
    pub oldest_due_date: NaiveDate,
    pub days_overdue: i64,
    pub disputed: bool,
}

impl Store {
    /// Accrue late fees as of `as_of` (inclusive) in every community, or one. Idempotent: a
    /// second run for the same day posts nothing new.
    pub async fn accrue_late_fees(
        &self,
        as_of: NaiveDate,
        community_id: Option<i64>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<AccrualReport, StoreError> {
        let communities: Vec<i64> = match community_id {
            Some(c) => vec![c],
            None => self.list_communities().await?.into_iter().map(|c| c.id).collect(),
        };
        let mut report = AccrualReport {
            as_of: Some(as_of),
            ..Default::default()
        };
        for c in communities {
            let settings = self.billing_settings(c).await?;
            let policy = settings.late_fee_policy();
            let utilities: Vec<String> = settings
                .late_fee_utilities
                .iter()
                .map(|u| u.as_str().to_string())
                .collect();
            let what = "accruing late fees";
            let r = in_tx!(self, what, |tx| {
                let candidates: Vec<Candidate> = sqlx::query_as(
                    "SELECT b.id, b.account_id, b.period, b.due_date, a.customer_class FROM bills b JOIN accounts a ON a.id = b.account_id \
                     WHERE b.community_id = $1 AND b.status = 'issued' AND b.late_fee_waived = FALSE AND b.total_fen > 0 AND b.due_date < $2 \
                     AND (b.total_fen > CAST(COALESCE((SELECT SUM(x.principal_fen) FROM bill_allocations x WHERE x.bill_id = b.id), 0) AS BIGINT) \
                          OR EXISTS (SELECT 1 FROM bill_allocations x WHERE x.bill_id = b.id \
                                     AND x.accounting_date > COALESCE(b.late_fee_through, b.due_date))) \
                     ORDER BY b.id",
                )
                .bind(c)
                .bind(as_of)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
                let mut part = AccrualReport::default();
                for chunk in candidates.chunks(ROWS) {
                    let ids: Vec<i64> = chunk.iter().map(|b| b.id).collect();
                    let list = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                    // Late-fee-bearing principal per bill, and credit notes correcting it.
                    let bases: Vec<(i64, Option<String>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT bill_id, utility, CAST(SUM(amount_fen) AS BIGINT) FROM bill_lines WHERE bill_id IN ({list}) GROUP BY bill_id, utility"
                    )))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    let notes: Vec<(i64, Option<String>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT c.adjusts_bill_id, l.utility, CAST(SUM(l.amount_fen) AS BIGINT) FROM bills c JOIN bill_lines l ON l.bill_id = c.id \
                         WHERE c.status = 'issued' AND c.adjusts_bill_id IN ({list}) GROUP BY c.adjusts_bill_id, l.utility"
                    )))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    // Money that reduced each bill's principal, by day (credit notes that
                    // corrected the bill are already in its base).
                    let paid: Vec<(i64, NaiveDate, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT x.bill_id, x.accounting_date, CAST(SUM(x.principal_fen) AS BIGINT) FROM bill_allocations x \
                         WHERE x.bill_id IN ({list}) AND x.principal_fen > 0 AND NOT (x.source = 'adjustment' AND x.source_ref IN \
                         (SELECT 'bill:' || CAST(c.id AS TEXT) FROM bills c WHERE c.adjusts_bill_id = x.bill_id)) \
                         GROUP BY x.bill_id, x.accounting_date"
                    )))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    let posted: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT bill_id, CAST(SUM(delta_fen) AS BIGINT) FROM late_fee_postings WHERE bill_id IN ({list}) GROUP BY bill_id"
                    )))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    let bears = |u: &Option<String>| u.as_ref().is_some_and(|u| utilities.contains(u));
                    let mut base: HashMap<i64, i64> = HashMap::new();
                    for (b, u, amt) in &bases {
                        if bears(u) {
                            *base.entry(*b).or_default() += amt;
                        }
                    }
                    let mut corrections: HashMap<(i64, Option<String>), i64> = HashMap::new();
                    for (b, u, amt) in notes {
                        *corrections.entry((b, u)).or_default() += amt;
                    }
                    for ((b, u), amt) in &corrections {
                        if bears(u) && *amt < 0 {
                            *base.entry(*b).or_default() += amt;
                        }
                    }
                    let mut payments: HashMap<i64, Vec<(NaiveDate, Fen)>> = HashMap::new();
                    for (b, d, amt) in paid {
                        payments.entry(b).or_default().push((d, Fen::new(amt)));
                    }
                    let posted: HashMap<i64, i64> = posted.into_iter().collect();
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE bills SET late_fee_through = $1 WHERE id IN ({list})"
                    )))
                    .bind(as_of)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    let mut rows = Vec::new();
                    let mut entries = Vec::new();
                    for b in chunk {
                        part.bills_checked += 1;
                        let bill_year = Period::parse(&b.period).map(|p| p.year()).unwrap_or(b.due_date.year());
                        let input = LateFeeInput {
                            base: Fen::new(base.get(&b.id).copied().unwrap_or_default().max(0)),
                            due_date: b.due_date,
                            bill_year,
                            residential: b.customer_class == "residential",
                            payments: payments.remove(&b.id).unwrap_or_default(),
                            as_of,
                        };
                        let fee = compute(&policy, &input).map_err(|e| StoreError::Refused {
                            what,
                            reason: e.to_string(),
                        })?;
                        let before = posted.get(&b.id).copied().unwrap_or_default();
                        let delta = fee.fee.get() - before;
                        if delta == 0 {
                            continue;
                        }
                        let trace = serde_json::json!({
                            "base_fen": input.base.get(),
                            "due_date": b.due_date,
                            "as_of": as_of,
                            "residential": input.residential,
                            "grace_days": policy.grace_days,
                            "minimum_fen": policy.minimum.get(),
                            "cap_bp": policy.cap_bp,
                            "days": fee.days,
                            "runs": fee.runs,
                            "accrued": fee.accrued.to_string(),
                            "fee_fen": fee.fee.get(),
                            "previously_posted_fen": before,
                        });
                        let (debit, credit) = if delta > 0 {
                            (
                                LedgerAccount::Receivable {
                                    account_id: b.account_id,
                                },
                                LedgerAccount::LateFeeIncome,
                            )
                        } else {
                            (
                                LedgerAccount::LateFeeIncome,
                                LedgerAccount::Receivable {
                                    account_id: b.account_id,
                                },
                            )
                        };
                        let entry = JournalEntry::transfer(
                            "late_fee",
                            format!("bill:{}:{as_of}", b.id),
                            as_of,
                            actor,
                            debit,
                            credit,
                            Fen::new(delta.abs()),
                        )
                        .map_err(|e| StoreError::Refused {
                            what,
                            reason: e.to_string(),
                        })?
                        .with_memo(format!("late fee of bill {} to {as_of}: {}", b.id, fee.fee));
                        rows.push((b.id, fee.fee.get(), delta, fee.accrued.to_string(), trace.to_string()));
                        entries.push(entry);
                        if delta > 0 {
                            part.accrued_fen += delta;
                        } else {
                            part.reversed_fen -= delta;
                        }
                    }
                    if rows.is_empty() {
                        continue;
                    }
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO late_fee_postings (bill_id, as_of, kind, fee_to_date_fen, delta_fen, accrued_exact, trace, actor, created_at) ",
                    );
                    qb.push_values(&rows, |mut q, (bill, fee, delta, accrued, trace)| {
                        q.push_bind(*bill)
                            .push_bind(as_of)
                            .push_bind("accrual")
                            .push_bind(*fee)
                            .push_bind(*delta)
                            .push_bind(accrued.clone())
                            .push_bind(trace.clone())
                            .push_bind(actor)
                            .push_bind(now);
                    });
                    qb.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| StoreError::db(what, e))?;
                    post_entries_batch_in_tx!(tx, &entries, now);
                    part.postings += rows.len();
                }
                Ok::<_, StoreError>(part)
            });
            let r = match r {
                // Tonight's accrual for this day is already posted (a second run): nothing new.
                Err(e) if e.is_duplicate() => AccrualReport::default(),
                other => other?,
            };
            report.bills_checked += r.bills_checked;
            report.postings += r.postings;
            report.accrued_fen += r.accrued_fen;
            report.reversed_fen += r.reversed_fen;
        }
        Ok(report)
    }

    /// Waive a bill's unpaid late fee (an operator's decision, with the reason); no more fee
    /// accrues on the bill. Posted as a reversal and audited.
    pub async fn waive_late_fee(
        &self,
        bill_id: i64,
        reason: &str,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let what = "waiving a late fee";
        if reason.trim().is_empty() {
            return Err(StoreError::Refused {
                what,
                reason: "a reason is required".into(),
            });
        }
        in_tx!(self, what, |tx| {
            let row: Option<(i64, bool)> = sqlx::query_as(
                "UPDATE bills SET late_fee_waived = late_fee_waived WHERE id = $1 AND status = 'issued' RETURNING account_id, late_fee_waived",
            )
            .bind(bill_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let (account_id, waived) = row.ok_or_else(|| StoreError::NotFound(format!("bill {bill_id}")))?;
            if waived {
                return Err(StoreError::Refused {
                    what,
                    reason: format!("bill {bill_id}'s late fee is already waived"),
                });
            }
            let fee: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(delta_fen), 0) AS BIGINT) FROM late_fee_postings WHERE bill_id = $1",
            )
            .bind(bill_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let fee_paid: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(late_fee_fen), 0) AS BIGINT) FROM bill_allocations WHERE bill_id = $1",
            )
            .bind(bill_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            // What was already paid stays paid; the rest is forgiven.
            let waived_fen = (fee - fee_paid).max(0);
            sqlx::query("UPDATE bills SET late_fee_waived = TRUE WHERE id = $1")
                .bind(bill_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let today = cst_date(now);
            let trace = serde_json::json!({"fee_fen": fee, "paid_fen": fee_paid, "waived_fen": waived_fen});
            sqlx::query(
                "INSERT INTO late_fee_postings (bill_id, as_of, kind, fee_to_date_fen, delta_fen, accrued_exact, trace, actor, reason, created_at) \
                 VALUES ($1, $2, 'waiver', $3, $4, '0', $5, $6, $7, $8)",
            )
            .bind(bill_id)
            .bind(today)
            .bind(fee - waived_fen)
            .bind(-waived_fen)
            .bind(trace.to_string())
            .bind(actor)
            .bind(reason.trim())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            if waived_fen > 0 {
                let e = JournalEntry::transfer(
                    "late_fee.waive",
                    format!("bill:{bill_id}"),
                    today,
                    actor,
                    LedgerAccount::LateFeeIncome,
                    LedgerAccount::Receivable { account_id },
                    Fen::new(waived_fen),
                )
                .map_err(|e| StoreError::Refused {
                    what,
                    reason: e.to_string(),
                })?
                .with_memo(reason.trim().to_string());
                super::ledger::post_entry_in_tx!(tx, &e, now);
            }
            let rec = AuditRecord {
                actor: actor.into(),
                action: "late_fee.waive".into(),
                subject_type: "bill".into(),
                subject_id: bill_id.to_string(),
                before: Some(serde_json::json!({"late_fee_fen": fee})),
                after: Some(serde_json::json!({"late_fee_fen": fee - waived_fen, "waived_fen": waived_fen})),
                reason: Some(reason.trim().to_string()),
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(waived_fen)
        })
    }

    /// Accounts of a community with money overdue on `as_of`, largest first.
    pub async fn arrears(&self, community_id: i64, as_of: NaiveDate) -> Result<Vec<ArrearsRow>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            account_id: i64,
            code: String,
            credit_rating: String,
            due_date: NaiveDate,
            total_fen: i64,
            disputed: bool,
            allocated: i64,
            fee: i64,
            fee_paid: i64,
        }
        let rows: Vec<Row> = on_read!(self, |pool| {
            sqlx::query_as(
                "SELECT b.account_id, a.code, a.credit_rating, b.due_date, b.total_fen, b.disputed, \
                 CAST(COALESCE((SELECT SUM(x.amount_fen) FROM bill_allocations x WHERE x.bill_id = b.id), 0) AS BIGINT) AS allocated, \
                 CAST(COALESCE((SELECT SUM(f.delta_fen) FROM late_fee_postings f WHERE f.bill_id = b.id), 0) AS BIGINT) AS fee, \
                 CAST(COALESCE((SELECT SUM(x.late_fee_fen) FROM bill_allocations x WHERE x.bill_id = b.id), 0) AS BIGINT) AS fee_paid \
                 FROM bills b JOIN accounts a ON a.id = b.account_id \
                 WHERE b.community_id = $1 AND b.status = 'issued' AND b.due_date < $2",
            )
            .bind(community_id)
            .bind(as_of)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing arrears", e))
        })?;
        let mut by: BTreeMap<i64, ArrearsRow> = BTreeMap::new();
        for r in rows {
            let outstanding = r.total_fen + r.fee - r.allocated;
            if outstanding <= 0 {
                continue;
            }
            let e = by.entry(r.account_id).or_insert_with(|| ArrearsRow {
                account_id: r.account_id,
                account_code: r.code.clone(),
                credit_rating: r.credit_rating.clone(),
                overdue_fen: 0,
                late_fee_fen: 0,
                bills: 0,
                oldest_due_date: r.due_date,
                days_overdue: 0,
                disputed: false,
            });
            e.overdue_fen += outstanding;
            e.late_fee_fen += (r.fee - r.fee_paid).max(0);
            e.bills += 1;
            e.oldest_due_date = e.oldest_due_date.min(r.due_date);
            e.disputed |= r.disputed;
        }
        let mut out: Vec<ArrearsRow> = by
            .into_values()
            .map(|mut r| {
                r.days_overdue = (as_of - r.oldest_due_date).num_days();
                r
            })
            .collect();
        out.sort_by(|a, b| {
            b.overdue_fen
                .cmp(&a.overdue_fen)
                .then(a.account_code.cmp(&b.account_code))
        });
        Ok(out)
    }
}

/// The cron job: accrue late fees every night for the day that just ended.
pub fn late_fee_job() -> anyhow::Result<crate::jobs::CronJob> {
    crate::jobs::CronJob::new("billing.late_fees", LATE_FEE_SCHEDULE, |store, at| async move {
        let as_of = cst_date(at) - chrono::Duration::days(1);
        let r = store
            .accrue_late_fees(as_of, None, "job:billing.late_fees", Utc::now())
            .await?;
        tracing::info!(%as_of, bills = r.bills_checked, postings = r.postings, accrued_fen = r.accrued_fen,
            reversed_fen = r.reversed_fen, "late fees accrued");
        Ok(())
    })
}

/// 00:30 China Standard Time every night.
pub const LATE_FEE_SCHEDULE: &str = "0 30 0 * * *";
