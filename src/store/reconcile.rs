//! Reconciliation's tables (migration 0008): settlement files, runs, their items and the
//! decisions that close items; and the reads of the ledger reconciliation matches against.
//!
//! A run is saved in one transaction (file, run, items, automatic decisions), so a run is either
//! all there or not at all. Items and decisions are never updated; an item's state is derived
//! from whether a decision exists for its key in its day.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use meterpay_gateways::gateway::Channel;
use meterpay_gateways::settlement::RowKind;
use serde::Serialize;

use super::{in_tx, on_read, Store, StoreError};
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};
use crate::reconcile::matching::{Class, Item, LedgerItem};

/// Journal kinds of the gateway-clearing entries a run matches against.
pub const PAYMENT_KIND: &str = "payment.apply";
pub const REFUND_KIND: &str = "refund";

/// A decision to record with a run or on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewResolution {
    pub channel: Channel,
    pub merchant_id: String,
    pub bill_date: NaiveDate,
    pub item_key: String,
    pub decision: String,
    pub reason: String,
    pub decided_by: String,
    pub journal: Option<(String, String)>,
    pub evidence: serde_json::Value,
}

/// A run to save.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub channel: Channel,
    pub merchant_id: &'a str,
    pub bill_date: NaiveDate,
    pub file_bytes: &'a [u8],
    pub file_sha256: &'a str,
    pub file_source: &'a str,
    pub started_via: &'a str,
    pub started_by: &'a str,
    pub started_at: DateTime<Utc>,
    pub outcome: &'a str,
    pub summary_json: String,
    pub results_sha256: String,
    pub items: &'a [Item],
    pub resolutions: &'a [NewResolution],
}

/// A stored run.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub channel: String,
    pub merchant_id: String,
    pub bill_date: NaiveDate,
    pub file_id: i64,
    pub file_sha256: String,
    pub file_size_bytes: i64,
    pub started_via: String,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub is_current: bool,
    #[serde(skip)]
    pub summary_json: String,
    pub results_sha256: String,
}

/// A stored item with its run's day and its decision, if any.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ItemRow {
    pub id: i64,
    pub run_id: i64,
    pub channel: String,
    pub merchant_id: String,
    pub bill_date: NaiveDate,
    pub item_key: String,
    pub class: String,
    pub kind: String,
    pub order_no: String,
    pub refund_no: Option<String>,
    pub gateway_txn_id: Option<String>,
    pub file_amount_fen: Option<i64>,
    pub ledger_amount_fen: Option<i64>,
    pub difference_fen: i64,
    pub file_fee: Option<String>,
    pub expected_fee_fen: Option<i64>,
    pub file_time: Option<NaiveDateTime>,
    pub ledger_date: Option<NaiveDate>,
    pub expected_until: Option<DateTime<Utc>>,
    pub detail: String,
    pub original_line: Option<String>,
    pub file_line: Option<i64>,
    pub decision: Option<String>,
    pub decision_reason: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub journal_reference: Option<String>,
}

impl ItemRow {
    pub fn class(&self) -> Option<Class> {
        Class::parse(&self.class)
    }

    /// The item as a run produced it (for comparing runs).
    pub fn to_item(&self) -> Item {
        Item {
            key: self.item_key.clone(),
            class: self.class().unwrap_or(Class::Long),
            kind: self.kind.clone(),
            order_no: self.order_no.clone(),
            refund_no: self.refund_no.clone(),
            gateway_txn_id: self.gateway_txn_id.clone(),
            file_amount_fen: self.file_amount_fen,
            ledger_amount_fen: self.ledger_amount_fen,
            difference_fen: self.difference_fen,
            file_fee: self.file_fee.clone(),
            expected_fee_fen: self.expected_fee_fen,
            file_time: self.file_time,
            ledger_date: self.ledger_date,
            expected_until: self.expected_until,
            detail: self.detail.clone(),
            original_line: self.original_line.clone(),
            file_line: self.file_line.and_then(|l| u32::try_from(l).ok()),
        }
    }
}

/// A stored decision.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ResolutionRow {
    pub id: i64,
    pub item_key: String,
    pub decision: String,
    pub reason: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub journal_kind: Option<String>,
    pub journal_reference: Option<String>,
    pub evidence_json: String,
}

const RUN_COLUMNS: &str = "r.id, r.channel, r.merchant_id, r.bill_date, r.file_id, f.sha256 AS file_sha256, \
     f.size_bytes AS file_size_bytes, r.started_via, r.started_by, r.started_at, r.finished_at, r.outcome, \
     r.is_current, r.summary_json, r.results_sha256";

const ITEM_SELECT: &str = "SELECT i.id, i.run_id, r.channel, r.merchant_id, r.bill_date, i.item_key, i.class, i.kind, \
     i.order_no, i.refund_no, i.gateway_txn_id, i.file_amount_fen, i.ledger_amount_fen, i.difference_fen, i.file_fee, \
     i.expected_fee_fen, i.file_time, i.ledger_date, i.expected_until, i.detail, i.original_line, i.file_line, \
     d.decision, d.reason AS decision_reason, d.decided_by, d.decided_at, d.journal_reference \
     FROM recon_items i JOIN recon_runs r ON r.id = i.run_id \
     LEFT JOIN recon_resolutions d ON d.channel = r.channel AND d.merchant_id = r.merchant_id \
     AND d.bill_date = r.bill_date AND d.item_key = i.item_key";

fn clearing_code(channel: Channel, merchant: &str) -> String {
    crate::reconcile::clearing_account(channel, merchant).code()
}

fn ledger_item(kind: &str, reference: String, amount: i64, date: NaiveDate, posted: DateTime<Utc>) -> LedgerItem {
    let kind = if kind == REFUND_KIND {
        RowKind::Refund
    } else {
        RowKind::Payment
    };
    clearing_item(kind, reference, amount, date, posted)
}

fn clearing_item(kind: RowKind, reference: String, amount: i64, date: NaiveDate, posted: DateTime<Utc>) -> LedgerItem {
    LedgerItem {
        kind,
        reference,
        // Payments debit clearing, refunds credit it: both are read as positive amounts.
        amount_fen: amount.abs(),
        accounting_date: date,
        posted_at: posted,
    }
}

/// Rows of the day's clearing read per SQLite statement row: sqlx hands SQLite's rows over one
/// by one from its worker thread, about 2 µs each, which was 2 of the 3.3 s a million-row day
/// took to read (the query itself: 1.3 s). So SQLite joins each block of 16,384 lines into one
/// text (`kind TAB amount TAB posted_at TAB reference`, a line each) and they are split here.
/// `None` when a line cannot be read back that way (a reference holding a line break, a time
/// in another format): the caller then reads the rows one by one.
const CLEARING_BLOCKS_SQL: &str =
    "SELECT group_concat(iif(e.kind = 'refund', '1', '0') || char(9) || l.amount_fen || char(9) \
     || e.posted_at || char(9) || e.reference, char(10)) \
     FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id \
     WHERE e.accounting_date = $1 AND e.kind IN ('payment.apply', 'refund') AND l.ledger_account_id = $2 \
     GROUP BY l.id >> 14";

async fn clearing_day_in_blocks(
    pool: &sqlx::SqlitePool,
    day: NaiveDate,
    account_id: i64,
) -> Result<Option<Vec<LedgerItem>>, StoreError> {
    let mut blocks = sqlx::query_scalar::<_, String>(CLEARING_BLOCKS_SQL)
        .bind(day)
        .bind(account_id)
        .fetch(pool);
    let mut out = Vec::new();
    while let Some(block) = futures::TryStreamExt::try_next(&mut blocks)
        .await
        .map_err(|e| StoreError::db("reading the day's clearing entries", e))?
    {
        for line in block.split('\n') {
            let mut f = line.splitn(4, '\t');
            let (Some(k), Some(a), Some(p), Some(r)) = (f.next(), f.next(), f.next(), f.next()) else {
                return Ok(None);
            };
            let (Ok(amount), Ok(posted)) = (a.parse::<i64>(), DateTime::parse_from_rfc3339(p)) else {
                return Ok(None);
            };
            let kind = if k == "1" { RowKind::Refund } else { RowKind::Payment };
            out.push(clearing_item(
                kind,
                r.to_string(),
                amount,
                day,
                posted.with_timezone(&Utc),
            ));
        }
    }
    Ok(Some(out))
}

/// Insert a decision inside `$tx`.
macro_rules! insert_resolution {
    ($tx:expr, $r:expr, $now:expr) => {{
        let r: &NewResolution = $r;
        let (jk, jr) = match &r.journal {
            Some((k, rf)) => (Some(k.clone()), Some(rf.clone())),
            None => (None, None),
        };
        sqlx::query(
            "INSERT INTO recon_resolutions (channel, merchant_id, bill_date, item_key, decision, reason, decided_by, \
             decided_at, journal_kind, journal_reference, evidence_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(r.channel.as_str())
        .bind(&r.merchant_id)
        .bind(r.bill_date)
        .bind(&r.item_key)
        .bind(&r.decision)
        .bind(&r.reason)
        .bind(&r.decided_by)
        .bind($now)
        .bind(jk)
        .bind(jr)
        .bind(r.evidence.to_string())
        .execute(&mut *$tx)
        .await
        .map_err(|e| StoreError::db("recording a reconciliation decision", e))?;
    }};
}

impl Store {
    /// The day's gateway-clearing payments and refunds of a merchant (see the ledger conventions
    /// in `payments::port`).
    pub async fn recon_clearing_day(
        &self,
        channel: Channel,
        merchant: &str,
        day: NaiveDate,
    ) -> Result<Vec<LedgerItem>, StoreError> {
        let code = clearing_code(channel, merchant);
        on_read!(self, |pool| {
            let Some(account_id) = sqlx::query_scalar::<_, i64>("SELECT id FROM ledger_accounts WHERE code = $1")
                .bind(&code)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("finding the clearing account", e))?
            else {
                return Ok(Vec::new());
            };
            if let super::Backend::Sqlite { reader, .. } = &self.backend {
                if let Some(items) = clearing_day_in_blocks(reader, day, account_id).await? {
                    return Ok(items);
                }
            }
            // A million-row day: rows are turned into items as they stream in (no second copy),
            // and the kind comes as a number rather than a string per row.
            let mut rows = sqlx::query_as::<_, (i32, String, i64, DateTime<Utc>)>(
                "SELECT CASE WHEN e.kind = 'refund' THEN 1 ELSE 0 END, e.reference, l.amount_fen, e.posted_at \
                 FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id \
                 WHERE e.accounting_date = $1 AND e.kind IN ('payment.apply', 'refund') AND l.ledger_account_id = $2",
            )
            .bind(day)
            .bind(account_id)
            .fetch(pool);
            let mut out = Vec::new();
            while let Some((k, r, a, p)) = futures::TryStreamExt::try_next(&mut rows)
                .await
                .map_err(|e| StoreError::db("reading the day's clearing entries", e))?
            {
                let kind = if k == 1 { RowKind::Refund } else { RowKind::Payment };
                out.push(clearing_item(kind, r, a, day, p));
            }
            Ok(out)
        })
    }

    /// Clearing entries of a merchant for these references, on any day.
    pub async fn recon_clearing_by_refs(
        &self,
        channel: Channel,
        merchant: &str,
        refs: &[(RowKind, String)],
    ) -> Result<Vec<LedgerItem>, StoreError> {
        let code = clearing_code(channel, merchant);
        let mut out = Vec::new();
        for chunk in refs.chunks(500) {
            let rows: Vec<(String, String, i64, NaiveDate, DateTime<Utc>)> = on_read!(self, |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT e.kind, e.reference, l.amount_fen, e.accounting_date, e.posted_at FROM journal_entries e \
                     JOIN journal_lines l ON l.entry_id = e.id JOIN ledger_accounts a ON a.id = l.ledger_account_id \
                     WHERE a.code = ",
                );
                qb.push_bind(code.clone());
                qb.push(" AND (");
                for (i, (kind, reference)) in chunk.iter().enumerate() {
                    if i > 0 {
                        qb.push(" OR ");
                    }
                    qb.push("(e.kind = ");
                    qb.push_bind(match kind {
                        RowKind::Payment => PAYMENT_KIND,
                        RowKind::Refund => REFUND_KIND,
                    });
                    qb.push(" AND e.reference = ");
                    qb.push_bind(reference.clone());
                    qb.push(")");
                }
                qb.push(")");
                qb.build_query_as()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| StoreError::db("looking up clearing entries by reference", e))?
            });
            out.extend(rows.into_iter().map(|(k, r, a, d, p)| ledger_item(&k, r, a, d, p)));
        }
        Ok(out)
    }

    /// Which of these orders have a confirmed payment in the ledger (any channel, any day).
    pub async fn recon_paid_orders(&self, orders: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for chunk in orders.chunks(500) {
            let rows: Vec<String> = on_read!(self, |pool| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT reference FROM journal_entries WHERE kind = 'payment.apply' AND reference IN (",
                );
                let mut sep = qb.separated(", ");
                for o in chunk {
                    sep.push_bind(o.clone());
                }
                qb.push(")");
                qb.build_query_scalar()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| StoreError::db("looking up paid orders", e))?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Cross-day matches that the neighbouring days' current runs made against entries booked
    /// on `day`: (kind, reference).
    pub async fn recon_claims_on(
        &self,
        channel: Channel,
        merchant: &str,
        day: NaiveDate,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let rows: Vec<(String, String, Option<String>)> = on_read!(self, |pool| {
            sqlx::query_as(
                "SELECT i.kind, i.order_no, i.refund_no FROM recon_items i JOIN recon_runs r ON r.id = i.run_id \
                 WHERE r.is_current AND r.channel = $1 AND r.merchant_id = $2 AND r.bill_date <> $3 \
                 AND i.class = 'cross_day' AND i.ledger_date = $3",
            )
            .bind(channel.as_str())
            .bind(merchant)
            .bind(day)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading the neighbouring days' cross-day matches", e))?
        });
        Ok(rows
            .into_iter()
            .map(|(k, o, r)| {
                let reference = if k == "refund" { r.unwrap_or(o) } else { o };
                (k, reference)
            })
            .collect())
    }

    /// The decisions recorded for a day.
    pub async fn recon_resolutions(
        &self,
        channel: Channel,
        merchant: &str,
        day: NaiveDate,
    ) -> Result<Vec<ResolutionRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ResolutionRow>(
                "SELECT id, item_key, decision, reason, decided_by, decided_at, journal_kind, journal_reference, evidence_json \
                 FROM recon_resolutions WHERE channel = $1 AND merchant_id = $2 AND bill_date = $3 ORDER BY id",
            )
            .bind(channel.as_str())
            .bind(merchant)
            .bind(day)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading a day's reconciliation decisions", e))
        })
    }

    /// Save a run: its file (once per content), the run (now the day's current one), its items
    /// and its automatic decisions, in one transaction.
    pub async fn recon_save_run(&self, run: &NewRun<'_>, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let existing_file: Option<i64> = on_read!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM recon_files WHERE channel = $1 AND merchant_id = $2 AND bill_date = $3 AND sha256 = $4",
            )
            .bind(run.channel.as_str())
            .bind(run.merchant_id)
            .bind(run.bill_date)
            .bind(run.file_sha256)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("looking for a stored settlement file", e))?
        });
        in_tx!(self, "saving a reconciliation run", |tx| {
            let file_id = match existing_file {
                Some(id) => id,
                None => sqlx::query_scalar::<_, i64>(
                    "INSERT INTO recon_files (channel, merchant_id, bill_date, sha256, size_bytes, content, source, received_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                )
                .bind(run.channel.as_str())
                .bind(run.merchant_id)
                .bind(run.bill_date)
                .bind(run.file_sha256)
                .bind(run.file_bytes.len() as i64)
                .bind(run.file_bytes)
                .bind(run.file_source)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::db("storing the settlement file", e))?,
            };
            sqlx::query(
                "UPDATE recon_runs SET is_current = FALSE WHERE channel = $1 AND merchant_id = $2 AND bill_date = $3 AND is_current",
            )
            .bind(run.channel.as_str())
            .bind(run.merchant_id)
            .bind(run.bill_date)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db("retiring the day's previous run", e))?;
            let run_id = sqlx::query_scalar::<_, i64>(
                "INSERT INTO recon_runs (channel, merchant_id, bill_date, file_id, started_via, started_by, started_at, \
                 finished_at, outcome, is_current, summary_json, results_sha256) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE, $10, $11) RETURNING id",
            )
            .bind(run.channel.as_str())
            .bind(run.merchant_id)
            .bind(run.bill_date)
            .bind(file_id)
            .bind(run.started_via)
            .bind(run.started_by)
            .bind(run.started_at)
            .bind(now)
            .bind(run.outcome)
            .bind(&run.summary_json)
            .bind(&run.results_sha256)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db("recording the reconciliation run", e))?;
            for it in run.items {
                sqlx::query(
                    "INSERT INTO recon_items (run_id, item_key, class, kind, order_no, refund_no, gateway_txn_id, \
                     file_amount_fen, ledger_amount_fen, difference_fen, file_fee, expected_fee_fen, file_time, ledger_date, \
                     expected_until, detail, original_line, file_line) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                )
                .bind(run_id)
                .bind(&it.key)
                .bind(it.class.as_str())
                .bind(&it.kind)
                .bind(&it.order_no)
                .bind(&it.refund_no)
                .bind(&it.gateway_txn_id)
                .bind(it.file_amount_fen)
                .bind(it.ledger_amount_fen)
                .bind(it.difference_fen)
                .bind(&it.file_fee)
                .bind(it.expected_fee_fen)
                .bind(it.file_time)
                .bind(it.ledger_date)
                .bind(it.expected_until)
                .bind(&it.detail)
                .bind(&it.original_line)
                .bind(it.file_line.map(i64::from))
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db("recording a reconciliation item", e))?;
            }
            for r in run.resolutions {
                insert_resolution!(tx, r, now);
            }
            Ok::<i64, StoreError>(run_id)
        })
    }

    /// Record a decision and post its journal entry (if any) in one transaction. A second
    /// decision on the same item is refused as a duplicate.
    pub async fn recon_resolve(
        &self,
        resolution: &NewResolution,
        entry: Option<&JournalEntry>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        in_tx!(self, "recording a reconciliation decision", |tx| {
            insert_resolution!(tx, resolution, now);
            if let Some(entry) = entry {
                crate::store::ledger::post_entry_in_tx!(tx, entry, now);
            }
            Ok::<(), StoreError>(())
        })
    }

    /// Runs, newest first, filtered by channel, merchant and day when given.
    pub async fn recon_runs(
        &self,
        channel: Option<Channel>,
        merchant: Option<&str>,
        day: Option<NaiveDate>,
        only_current: bool,
    ) -> Result<Vec<RunRow>, StoreError> {
        on_read!(self, |pool| {
            let mut qb = sqlx::QueryBuilder::new(format!(
                "SELECT {RUN_COLUMNS} FROM recon_runs r JOIN recon_files f ON f.id = r.file_id WHERE 1 = 1"
            ));
            if let Some(c) = channel {
                qb.push(" AND r.channel = ").push_bind(c.as_str());
            }
            if let Some(m) = merchant {
                qb.push(" AND r.merchant_id = ").push_bind(m.to_string());
            }
            if let Some(d) = day {
                qb.push(" AND r.bill_date = ").push_bind(d);
            }
            if only_current {
                qb.push(" AND r.is_current");
            }
            qb.push(" ORDER BY r.id DESC LIMIT 1000");
            qb.build_query_as::<RunRow>()
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("listing reconciliation runs", e))
        })
    }

    pub async fn recon_run(&self, id: i64) -> Result<Option<RunRow>, StoreError> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM recon_runs r JOIN recon_files f ON f.id = r.file_id WHERE r.id = $1");
        on_read!(self, |pool| {
            sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("reading a reconciliation run", e))
        })
    }

    /// The items of a run, by key.
    pub async fn recon_run_items(&self, run_id: i64) -> Result<Vec<ItemRow>, StoreError> {
        let sql = format!("{ITEM_SELECT} WHERE i.run_id = $1 ORDER BY i.item_key");
        on_read!(self, |pool| {
            sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(run_id)
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("reading a run's items", e))
        })
    }

    /// Items of current runs that no decision has closed (cross-day matches excluded), oldest
    /// day first; `day` limits them to one bill date or earlier.
    pub async fn recon_open_items(&self, up_to: Option<NaiveDate>) -> Result<Vec<ItemRow>, StoreError> {
        on_read!(self, |pool| {
            let mut qb = sqlx::QueryBuilder::new(format!(
                "{ITEM_SELECT} WHERE r.is_current AND d.id IS NULL AND i.class <> 'cross_day'"
            ));
            if let Some(d) = up_to {
                qb.push(" AND r.bill_date <= ").push_bind(d);
            }
            qb.push(" ORDER BY r.bill_date, r.channel, r.merchant_id, i.item_key");
            qb.build_query_as::<ItemRow>()
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("listing open reconciliation items", e))
        })
    }

    pub async fn recon_item(&self, id: i64) -> Result<Option<ItemRow>, StoreError> {
        let sql = format!("{ITEM_SELECT} WHERE i.id = $1");
        on_read!(self, |pool| {
            sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("reading a reconciliation item", e))
        })
    }

    /// A stored settlement file's bytes.
    pub async fn recon_file_bytes(&self, file_id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT content FROM recon_files WHERE id = $1")
                .bind(file_id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("reading a stored settlement file", e))
        })
    }

    /// The raw balance of a clearing account over the entries of one accounting date.
    pub async fn recon_clearing_balance_on(
        &self,
        channel: Channel,
        merchant: &str,
        day: NaiveDate,
    ) -> Result<Fen, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM journal_lines l \
                 JOIN journal_entries e ON e.id = l.entry_id JOIN ledger_accounts a ON a.id = l.ledger_account_id \
                 WHERE a.code = $1 AND e.accounting_date = $2",
            )
            .bind(clearing_code(channel, merchant))
            .bind(day)
            .fetch_one(pool)
            .await
            .map(Fen::new)
            .map_err(|e| StoreError::db("computing a day's clearing balance", e))
        })
    }

    /// Whether an entry of this kind and reference has been posted.
    pub async fn recon_entry_exists(&self, kind: &str, reference: &str) -> Result<bool, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM journal_entries WHERE kind = $1 AND reference = $2")
                .bind(kind)
                .bind(reference)
                .fetch_one(pool)
                .await
                .map(|n| n > 0)
                .map_err(|e| StoreError::db("looking for a journal entry", e))
        })
    }

    /// Benchmarks only: post many two-line clearing entries at once (bulk statements; the
    /// database's balance checks still run). `(kind, reference, accounting date, debit, credit,
    /// amount)`.
    #[doc(hidden)]
    pub async fn recon_bulk_post_for_bench(
        &self,
        entries: &[(String, String, NaiveDate, LedgerAccount, LedgerAccount, i64)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use crate::store::bulk::{Bulk, JournalEntryCols, JournalLineCols};
        for chunk in entries.chunks(50_000) {
            in_tx!(self, "bulk-posting benchmark entries", |tx| {
                let mut ids = std::collections::HashMap::new();
                let mut lines = JournalLineCols::default();
                let mut heads = JournalEntryCols::default();
                for (kind, reference, date, debit, credit, amount) in chunk {
                    let id = uuid::Uuid::now_v7();
                    for (n, (acct, a)) in [(debit, *amount), (credit, -*amount)].into_iter().enumerate() {
                        let code = acct.code();
                        let account_id = match ids.get(&code) {
                            Some(id) => *id,
                            None => {
                                let v = crate::store::ledger::ledger_account_id!(tx, acct, now);
                                ids.insert(code, v);
                                v
                            }
                        };
                        lines.entry_id.push(id);
                        lines.line_no.push(n as i32 + 1);
                        lines.ledger_account_id.push(account_id);
                        lines.amount_fen.push(a);
                    }
                    heads.id.push(id);
                    heads.kind.push(kind.clone());
                    heads.reference.push(reference.clone());
                    heads.memo.push(String::new());
                    heads.accounting_date.push(*date);
                    heads.posted_at.push(now);
                    heads.created_by.push("bench".into());
                }
                tx.insert_journal_lines(&lines)
                    .await
                    .map_err(|e| StoreError::db("bulk-posting journal lines", e))?;
                tx.insert_journal_entries(&heads)
                    .await
                    .map_err(|e| StoreError::db("bulk-posting journal entries", e))?;
                Ok::<(), StoreError>(())
            })?;
        }
        Ok(())
    }
}
