//! Bulk writes for the hot paths (readings ingest, bill runs, their ledger postings), one way per
//! backend behind one trait, implemented for each backend's transaction:
//!
//! - SQLite: multi-row `INSERT … VALUES` of [`ROWS`] rows (cheap to parse in-process);
//! - PostgreSQL: one `INSERT … SELECT … FROM UNNEST($1::…[], …)` per [`PG_ROWS`] rows, each
//!   column bound as one array: a `VALUES` list of thousands of bound parameters costs more to
//!   parse and plan than the insert itself (measured: 25 µs a row against 8).
//!
//! Rows are passed column-wise (`…Cols`), which is what both forms need.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// Rows per SQLite statement.
pub(crate) const ROWS: usize = 1000;
/// Rows per PostgreSQL statement.
pub(crate) const PG_ROWS: usize = 20_000;

#[derive(Default)]
pub(crate) struct ReadingCols {
    pub meter_id: Vec<i64>,
    pub read_at: Vec<DateTime<Utc>>,
    pub value_e4: Vec<i64>,
    pub kind: Vec<&'static str>,
    pub status: Vec<&'static str>,
    pub hold_reason: Vec<Option<String>>,
    pub rollover: Vec<bool>,
    pub steady_since: Vec<Option<DateTime<Utc>>>,
}

/// Reminder outbox rows (see `store::reminders`).
#[derive(Default)]
pub(crate) struct ReminderCols {
    pub account_id: Vec<i64>,
    pub community_id: Vec<i64>,
    pub household: Vec<String>,
    pub track: Vec<String>,
    pub step: Vec<String>,
    pub channel: Vec<String>,
    pub bill_ids: Vec<String>,
    pub bill_steps: Vec<String>,
    pub dedupe_key: Vec<String>,
    pub provider: Vec<String>,
    pub profile: Vec<String>,
    pub recipient: Vec<String>,
    pub message_kind: Vec<String>,
    pub content_json: Vec<String>,
    pub legally_required: Vec<bool>,
    pub status: Vec<&'static str>,
    pub not_before: Vec<DateTime<Utc>>,
}

/// Task rows of one kind.
#[derive(Default)]
pub(crate) struct TaskCols {
    pub payload: Vec<String>,
    pub dedupe_key: Vec<String>,
    pub run_at: Vec<DateTime<Utc>>,
    pub max_attempts: Vec<i32>,
}

#[derive(Default)]
pub(crate) struct BillCols {
    pub account_id: Vec<i64>,
    pub period: Vec<String>,
    pub kind: Vec<&'static str>,
    pub adjusts: Vec<Option<i64>>,
    pub reason: Vec<Option<String>>,
    pub total_fen: Vec<i64>,
}

/// What every bill of one insert shares.
pub(crate) struct BillCommon<'a> {
    pub community_id: i64,
    pub due_date: NaiveDate,
    pub run_id: Option<i64>,
    pub now: DateTime<Utc>,
    pub actor: &'a str,
}

#[derive(Default)]
pub(crate) struct LineCols {
    pub bill_id: Vec<i64>,
    pub line_no: Vec<i32>,
    pub utility: Vec<Option<&'static str>>,
    pub kind: Vec<&'static str>,
    pub component: Vec<String>,
    pub description: Vec<String>,
    pub tier: Vec<Option<i32>>,
    pub tou_period: Vec<Option<&'static str>>,
    pub quantity_e4: Vec<i64>,
    pub unit_price_e6: Vec<i64>,
    pub amount_fen: Vec<i64>,
    pub tariff_version_id: Vec<Option<i64>>,
    pub usage_period: Vec<Option<String>>,
    pub date_from: Vec<Option<NaiveDate>>,
    pub date_to: Vec<Option<NaiveDate>>,
    pub trace: Vec<Option<String>>,
    pub ledger_code: Vec<Option<String>>,
}

#[derive(Default)]
pub(crate) struct BillReadingCols {
    pub bill_id: Vec<i64>,
    pub meter_id: Vec<i64>,
    pub utility: Vec<&'static str>,
    pub from_reading_id: Vec<i64>,
    pub to_reading_id: Vec<i64>,
    pub from_value_e4: Vec<i64>,
    pub to_value_e4: Vec<i64>,
    pub from_at: Vec<DateTime<Utc>>,
    pub to_at: Vec<DateTime<Utc>>,
    pub from_kind: Vec<&'static str>,
    pub to_kind: Vec<&'static str>,
    pub multiplier_e4: Vec<i64>,
    pub usage_e4: Vec<i64>,
    pub rollovers: Vec<i32>,
}

#[derive(Default)]
pub(crate) struct UsageCols {
    pub bill_id: Vec<i64>,
    pub account_id: Vec<i64>,
    pub utility: Vec<&'static str>,
    pub usage_period: Vec<String>,
    pub tier_year_start: Vec<Option<NaiveDate>>,
    pub quantity_e4: Vec<i64>,
    pub estimated: Vec<bool>,
}

#[derive(Default)]
pub(crate) struct StateCols {
    pub meter_id: Vec<i64>,
    pub account_id: Vec<i64>,
    pub reading_id: Vec<i64>,
    pub read_at: Vec<DateTime<Utc>>,
    pub value_e4: Vec<i64>,
    pub kind: Vec<&'static str>,
    pub anchor_reading_id: Vec<i64>,
    pub anchor_at: Vec<DateTime<Utc>>,
    pub anchor_value_e4: Vec<i64>,
    pub anchor_period: Vec<Option<String>>,
    pub bill_id: Vec<i64>,
}

#[derive(Default)]
pub(crate) struct JournalLineCols {
    pub entry_id: Vec<Uuid>,
    pub line_no: Vec<i32>,
    pub ledger_account_id: Vec<i64>,
    pub amount_fen: Vec<i64>,
}

#[derive(Default)]
pub(crate) struct JournalEntryCols {
    pub id: Vec<Uuid>,
    pub kind: Vec<String>,
    pub reference: Vec<String>,
    pub memo: Vec<String>,
    pub accounting_date: Vec<NaiveDate>,
    /// When each was posted (a payment's is the time it was paid).
    pub posted_at: Vec<DateTime<Utc>>,
    pub created_by: Vec<String>,
}

fn ranges(n: usize, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n.div_ceil(size)).map(move |k| k * size..((k + 1) * size).min(n))
}

/// The bulk writes, implemented for each backend's transaction.
#[async_trait::async_trait]
pub(crate) trait Bulk: Send {
    /// Returns `(id, meter_id, read_at)` of each inserted reading.
    async fn insert_readings(
        &mut self,
        c: &ReadingCols,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64, DateTime<Utc>)>, sqlx::Error>;
    /// Inserts drafts; returns `(id, account_id, kind, adjusts_bill_id)` of each.
    async fn insert_bills(
        &mut self,
        c: &BillCols,
        common: &BillCommon<'_>,
    ) -> Result<Vec<(i64, i64, String, Option<i64>)>, sqlx::Error>;
    async fn insert_bill_lines(&mut self, c: &LineCols) -> Result<(), sqlx::Error>;
    async fn insert_bill_readings(&mut self, c: &BillReadingCols) -> Result<(), sqlx::Error>;
    async fn insert_bill_usage(&mut self, c: &UsageCols, community_id: i64) -> Result<(), sqlx::Error>;
    async fn issue_bills(&mut self, ids: &[i64], now: DateTime<Utc>) -> Result<(), sqlx::Error>;
    async fn upsert_meter_states(&mut self, c: &StateCols, now: DateTime<Utc>) -> Result<(), sqlx::Error>;
    async fn insert_journal_lines(&mut self, c: &JournalLineCols) -> Result<(), sqlx::Error>;
    async fn insert_journal_entries(&mut self, c: &JournalEntryCols) -> Result<(), sqlx::Error>;
    /// Inserts outbox rows whose key is new; returns `(id, dedupe_key)` of those inserted.
    async fn insert_reminders(
        &mut self,
        c: &ReminderCols,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String)>, sqlx::Error>;
    /// Inserts tasks of `kind` whose key is new.
    async fn insert_tasks(&mut self, kind: &str, c: &TaskCols, now: DateTime<Utc>) -> Result<(), sqlx::Error>;
}

const REMINDER_COLUMNS: &str = "INSERT INTO reminder_outbox (account_id, community_id, household, track, step, channel, \
     bill_ids, bill_steps, dedupe_key, provider, profile, recipient, message_kind, content_json, legally_required, status, \
     not_before, created_at, updated_at) ";
const TASK_COLUMNS: &str =
    "INSERT INTO tasks (kind, payload, dedupe_key, run_at, max_attempts, created_at, updated_at) ";

const STATE_UPSERT: &str = " ON CONFLICT (meter_id) DO UPDATE SET account_id = excluded.account_id, \
     reading_id = excluded.reading_id, read_at = excluded.read_at, value_e4 = excluded.value_e4, kind = excluded.kind, \
     anchor_reading_id = excluded.anchor_reading_id, anchor_at = excluded.anchor_at, \
     anchor_value_e4 = excluded.anchor_value_e4, anchor_period = excluded.anchor_period, \
     bill_id = excluded.bill_id, updated_at = excluded.updated_at";

#[async_trait::async_trait]
impl<'c> Bulk for sqlx::Transaction<'c, sqlx::Sqlite> {
    async fn insert_readings(
        &mut self,
        c: &ReadingCols,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64, DateTime<Utc>)>, sqlx::Error> {
        // The new rows' ids come back as one text value rather than a RETURNING row each (sqlx
        // hands every row from its SQLite thread to the caller's, a wake-up each; 1,000 of them
        // were a fifth of a push batch). Inside this write transaction SQLite is the only
        // writer and gives a new row the largest rowid plus one, so the rows above the largest
        // id before the insert are exactly these.
        let before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM readings")
            .fetch_one(&mut **self)
            .await?;
        for r in ranges(c.meter_id.len(), 400) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO readings (meter_id, read_at, value_e4, kind, source, status, hold_reason, rollover, steady_since, created_at) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.meter_id[i])
                    .push_bind(c.read_at[i])
                    .push_bind(c.value_e4[i])
                    .push_bind(c.kind[i])
                    .push_bind(source.to_string())
                    .push_bind(c.status[i])
                    .push_bind(c.hold_reason[i].clone())
                    .push_bind(c.rollover[i])
                    .push_bind(c.steady_since[i])
                    .push_bind(now);
            });
            qb.build().execute(&mut **self).await?;
        }
        let text: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(id || char(9) || meter_id || char(9) || read_at, char(10)) FROM readings WHERE id > $1",
        )
        .bind(before)
        .fetch_one(&mut **self)
        .await?;
        let parse = |line: &str| -> Option<(i64, i64, DateTime<Utc>)> {
            let mut f = line.splitn(3, '\t');
            let (id, meter, at) = (f.next()?, f.next()?, f.next()?);
            Some((
                id.parse().ok()?,
                meter.parse().ok()?,
                DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            ))
        };
        let parsed: Option<Vec<_>> = match text.as_deref() {
            None | Some("") => Some(Vec::new()),
            Some(t) => t.split('\n').map(parse).collect(),
        };
        match parsed {
            Some(rows) if rows.len() == c.meter_id.len() => Ok(rows),
            // Not in the form sqlx writes, or not as many as inserted: read them as rows.
            _ => {
                sqlx::query_as("SELECT id, meter_id, read_at FROM readings WHERE id > $1")
                    .bind(before)
                    .fetch_all(&mut **self)
                    .await
            }
        }
    }

    async fn insert_bills(
        &mut self,
        c: &BillCols,
        k: &BillCommon<'_>,
    ) -> Result<Vec<(i64, i64, String, Option<i64>)>, sqlx::Error> {
        // The new bills come back as one packed value, not a `RETURNING` row each (see
        // `store::packed`); as for readings, the rows above the largest id before the insert
        // are exactly these, this being the one writer.
        let before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM bills")
            .fetch_one(&mut **self)
            .await?;
        for r in ranges(c.account_id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO bills (community_id, account_id, period, kind, adjusts_bill_id, reason, status, total_fen, due_date, run_id, created_at, created_by) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(k.community_id)
                    .push_bind(c.account_id[i])
                    .push_bind(c.period[i].clone())
                    .push_bind(c.kind[i])
                    .push_bind(c.adjusts[i])
                    .push_bind(c.reason[i].clone())
                    .push_bind("draft")
                    .push_bind(c.total_fen[i])
                    .push_bind(k.due_date)
                    .push_bind(k.run_id)
                    .push_bind(k.now)
                    .push_bind(k.actor.to_string());
            });
            qb.build().execute(&mut **self).await?;
        }
        let sql = crate::store::packed::packed_sql(
            &["id", "account_id", "kind", "adjusts_bill_id"],
            "FROM bills WHERE id > $1",
        );
        let text: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .fetch_one(&mut **self)
            .await?;
        let out: Vec<(i64, i64, String, Option<i64>)> =
            crate::store::packed::unpack(text.as_deref()).map_err(|e| sqlx::Error::Decode(e.into()))?;
        if out.len() != c.account_id.len() {
            return Err(sqlx::Error::Protocol(format!(
                "inserted {} bills but found {} new ones",
                c.account_id.len(),
                out.len()
            )));
        }
        Ok(out)
    }

    async fn insert_bill_lines(&mut self, c: &LineCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.bill_id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO bill_lines (bill_id, line_no, utility, kind, component, description, tier, tou_period, quantity_e4, \
                 unit_price_e6, amount_fen, tariff_version_id, usage_period, date_from, date_to, trace, ledger_code) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.bill_id[i])
                    .push_bind(c.line_no[i])
                    .push_bind(c.utility[i])
                    .push_bind(c.kind[i])
                    .push_bind(c.component[i].clone())
                    .push_bind(c.description[i].clone())
                    .push_bind(c.tier[i])
                    .push_bind(c.tou_period[i])
                    .push_bind(c.quantity_e4[i])
                    .push_bind(c.unit_price_e6[i])
                    .push_bind(c.amount_fen[i])
                    .push_bind(c.tariff_version_id[i])
                    .push_bind(c.usage_period[i].clone())
                    .push_bind(c.date_from[i])
                    .push_bind(c.date_to[i])
                    .push_bind(c.trace[i].clone())
                    .push_bind(c.ledger_code[i].clone());
            });
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn insert_bill_readings(&mut self, c: &BillReadingCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.bill_id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO bill_readings (bill_id, meter_id, utility, from_reading_id, to_reading_id, from_value_e4, to_value_e4, \
                 from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4, rollovers) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.bill_id[i])
                    .push_bind(c.meter_id[i])
                    .push_bind(c.utility[i])
                    .push_bind(c.from_reading_id[i])
                    .push_bind(c.to_reading_id[i])
                    .push_bind(c.from_value_e4[i])
                    .push_bind(c.to_value_e4[i])
                    .push_bind(c.from_at[i])
                    .push_bind(c.to_at[i])
                    .push_bind(c.from_kind[i])
                    .push_bind(c.to_kind[i])
                    .push_bind(c.multiplier_e4[i])
                    .push_bind(c.usage_e4[i])
                    .push_bind(c.rollovers[i]);
            });
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn insert_bill_usage(&mut self, c: &UsageCols, community_id: i64) -> Result<(), sqlx::Error> {
        for r in ranges(c.bill_id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO bill_usage (bill_id, community_id, account_id, utility, usage_period, tier_year_start, quantity_e4, estimated) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.bill_id[i])
                    .push_bind(community_id)
                    .push_bind(c.account_id[i])
                    .push_bind(c.utility[i])
                    .push_bind(c.usage_period[i].clone())
                    .push_bind(c.tier_year_start[i])
                    .push_bind(c.quantity_e4[i])
                    .push_bind(c.estimated[i]);
            });
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn issue_bills(&mut self, ids: &[i64], now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(ROWS) {
            let mut qb = sqlx::QueryBuilder::new("UPDATE bills SET status = 'issued', issued_at = ");
            qb.push_bind(now);
            qb.push(" WHERE status = 'draft' AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn upsert_meter_states(&mut self, c: &StateCols, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for r in ranges(c.meter_id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO meter_bill_state (meter_id, account_id, reading_id, read_at, value_e4, kind, anchor_reading_id, \
                 anchor_at, anchor_value_e4, anchor_period, bill_id, updated_at) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.meter_id[i])
                    .push_bind(c.account_id[i])
                    .push_bind(c.reading_id[i])
                    .push_bind(c.read_at[i])
                    .push_bind(c.value_e4[i])
                    .push_bind(c.kind[i])
                    .push_bind(c.anchor_reading_id[i])
                    .push_bind(c.anchor_at[i])
                    .push_bind(c.anchor_value_e4[i])
                    .push_bind(c.anchor_period[i].clone())
                    .push_bind(c.bill_id[i])
                    .push_bind(now);
            });
            qb.push(STATE_UPSERT);
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn insert_journal_lines(&mut self, c: &JournalLineCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.entry_id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.entry_id[i])
                    .push_bind(c.line_no[i])
                    .push_bind(c.ledger_account_id[i])
                    .push_bind(c.amount_fen[i]);
            });
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn insert_journal_entries(&mut self, c: &JournalEntryCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.id.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO journal_entries (id, kind, reference, memo, accounting_date, posted_at, created_by) ",
            );
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.id[i])
                    .push_bind(c.kind[i].clone())
                    .push_bind(c.reference[i].clone())
                    .push_bind(c.memo[i].clone())
                    .push_bind(c.accounting_date[i])
                    .push_bind(c.posted_at[i])
                    .push_bind(c.created_by[i].clone());
            });
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }

    async fn insert_reminders(
        &mut self,
        c: &ReminderCols,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        let mut out = Vec::with_capacity(c.account_id.len());
        for r in ranges(c.account_id.len(), 500) {
            let mut qb = sqlx::QueryBuilder::new(REMINDER_COLUMNS);
            qb.push_values(r, |mut b, i| {
                b.push_bind(c.account_id[i])
                    .push_bind(c.community_id[i])
                    .push_bind(c.household[i].clone())
                    .push_bind(c.track[i].clone())
                    .push_bind(c.step[i].clone())
                    .push_bind(c.channel[i].clone())
                    .push_bind(c.bill_ids[i].clone())
                    .push_bind(c.bill_steps[i].clone())
                    .push_bind(c.dedupe_key[i].clone())
                    .push_bind(c.provider[i].clone())
                    .push_bind(c.profile[i].clone())
                    .push_bind(c.recipient[i].clone())
                    .push_bind(c.message_kind[i].clone())
                    .push_bind(c.content_json[i].clone())
                    .push_bind(c.legally_required[i])
                    .push_bind(c.status[i])
                    .push_bind(c.not_before[i])
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key");
            out.extend(qb.build_query_as::<(i64, String)>().fetch_all(&mut **self).await?);
        }
        Ok(out)
    }

    async fn insert_tasks(&mut self, kind: &str, c: &TaskCols, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for r in ranges(c.payload.len(), ROWS) {
            let mut qb = sqlx::QueryBuilder::new(TASK_COLUMNS);
            qb.push_values(r, |mut b, i| {
                b.push_bind(kind.to_string())
                    .push_bind(c.payload[i].clone())
                    .push_bind(c.dedupe_key[i].clone())
                    .push_bind(c.run_at[i])
                    .push_bind(c.max_attempts[i])
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (dedupe_key) DO NOTHING");
            qb.build().execute(&mut **self).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl<'c> Bulk for sqlx::Transaction<'c, sqlx::Postgres> {
    async fn insert_readings(
        &mut self,
        c: &ReadingCols,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64, DateTime<Utc>)>, sqlx::Error> {
        let mut out = Vec::with_capacity(c.meter_id.len());
        for r in ranges(c.meter_id.len(), PG_ROWS) {
            let rows: Vec<(i64, i64, DateTime<Utc>)> = sqlx::query_as(
                "INSERT INTO readings (meter_id, read_at, value_e4, kind, source, status, hold_reason, rollover, steady_since, created_at) \
                 SELECT u.m, u.t, u.v, u.k, $9, u.s, u.h, u.r, u.ss, $10 \
                 FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::timestamptz[]) \
                   AS u(m, t, v, k, s, h, r, ss) \
                 RETURNING id, meter_id, read_at",
            )
            .bind(&c.meter_id[r.clone()])
            .bind(&c.read_at[r.clone()])
            .bind(&c.value_e4[r.clone()])
            .bind(&c.kind[r.clone()])
            .bind(&c.status[r.clone()])
            .bind(&c.hold_reason[r.clone()])
            .bind(&c.rollover[r.clone()])
            .bind(&c.steady_since[r.clone()])
            .bind(source)
            .bind(now)
            .fetch_all(&mut **self)
            .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn insert_bills(
        &mut self,
        c: &BillCols,
        k: &BillCommon<'_>,
    ) -> Result<Vec<(i64, i64, String, Option<i64>)>, sqlx::Error> {
        let mut out = Vec::with_capacity(c.account_id.len());
        for r in ranges(c.account_id.len(), PG_ROWS) {
            let rows: Vec<(i64, i64, String, Option<i64>)> = sqlx::query_as(
                "INSERT INTO bills (community_id, account_id, period, kind, adjusts_bill_id, reason, status, total_fen, due_date, run_id, created_at, created_by) \
                 SELECT $7, u.a, u.p, u.k, u.adj, u.reason, 'draft', u.total, $8, $9, $10, $11 \
                 FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[]) AS u(a, p, k, adj, reason, total) \
                 RETURNING id, account_id, kind, adjusts_bill_id",
            )
            .bind(&c.account_id[r.clone()])
            .bind(&c.period[r.clone()])
            .bind(&c.kind[r.clone()])
            .bind(&c.adjusts[r.clone()])
            .bind(&c.reason[r.clone()])
            .bind(&c.total_fen[r.clone()])
            .bind(k.community_id)
            .bind(k.due_date)
            .bind(k.run_id)
            .bind(k.now)
            .bind(k.actor)
            .fetch_all(&mut **self)
            .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn insert_bill_lines(&mut self, c: &LineCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.bill_id.len(), PG_ROWS) {
            sqlx::query(
                "INSERT INTO bill_lines (bill_id, line_no, utility, kind, component, description, tier, tou_period, quantity_e4, \
                 unit_price_e6, amount_fen, tariff_version_id, usage_period, date_from, date_to, trace, ledger_code) \
                 SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::text[], \
                   $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::date[], $15::date[], $16::text[], $17::text[])",
            )
            .bind(&c.bill_id[r.clone()])
            .bind(&c.line_no[r.clone()])
            .bind(&c.utility[r.clone()])
            .bind(&c.kind[r.clone()])
            .bind(&c.component[r.clone()])
            .bind(&c.description[r.clone()])
            .bind(&c.tier[r.clone()])
            .bind(&c.tou_period[r.clone()])
            .bind(&c.quantity_e4[r.clone()])
            .bind(&c.unit_price_e6[r.clone()])
            .bind(&c.amount_fen[r.clone()])
            .bind(&c.tariff_version_id[r.clone()])
            .bind(&c.usage_period[r.clone()])
            .bind(&c.date_from[r.clone()])
            .bind(&c.date_to[r.clone()])
            .bind(&c.trace[r.clone()])
            .bind(&c.ledger_code[r.clone()])
            .execute(&mut **self)
            .await?;
        }
        Ok(())
    }

    async fn insert_bill_readings(&mut self, c: &BillReadingCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.bill_id.len(), PG_ROWS) {
            sqlx::query(
                "INSERT INTO bill_readings (bill_id, meter_id, utility, from_reading_id, to_reading_id, from_value_e4, to_value_e4, \
                 from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4, rollovers) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], \
                   $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::int8[], $13::int8[], $14::int4[])",
            )
            .bind(&c.bill_id[r.clone()])
            .bind(&c.meter_id[r.clone()])
            .bind(&c.utility[r.clone()])
            .bind(&c.from_reading_id[r.clone()])
            .bind(&c.to_reading_id[r.clone()])
            .bind(&c.from_value_e4[r.clone()])
            .bind(&c.to_value_e4[r.clone()])
            .bind(&c.from_at[r.clone()])
            .bind(&c.to_at[r.clone()])
            .bind(&c.from_kind[r.clone()])
            .bind(&c.to_kind[r.clone()])
            .bind(&c.multiplier_e4[r.clone()])
            .bind(&c.usage_e4[r.clone()])
            .bind(&c.rollovers[r.clone()])
            .execute(&mut **self)
            .await?;
        }
        Ok(())
    }

    async fn insert_bill_usage(&mut self, c: &UsageCols, community_id: i64) -> Result<(), sqlx::Error> {
        for r in ranges(c.bill_id.len(), PG_ROWS) {
            sqlx::query(
                "INSERT INTO bill_usage (bill_id, community_id, account_id, utility, usage_period, tier_year_start, quantity_e4, estimated) \
                 SELECT u.b, $8, u.a, u.u, u.p, u.y, u.q, u.e \
                 FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::date[], $6::int8[], $7::bool[]) AS u(b, a, u, p, y, q, e)",
            )
            .bind(&c.bill_id[r.clone()])
            .bind(&c.account_id[r.clone()])
            .bind(&c.utility[r.clone()])
            .bind(&c.usage_period[r.clone()])
            .bind(&c.tier_year_start[r.clone()])
            .bind(&c.quantity_e4[r.clone()])
            .bind(&c.estimated[r.clone()])
            .bind(community_id)
            .execute(&mut **self)
            .await?;
        }
        Ok(())
    }

    async fn issue_bills(&mut self, ids: &[i64], now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(PG_ROWS) {
            sqlx::query("UPDATE bills SET status = 'issued', issued_at = $1 WHERE status = 'draft' AND id = ANY($2)")
                .bind(now)
                .bind(chunk)
                .execute(&mut **self)
                .await?;
        }
        Ok(())
    }

    async fn upsert_meter_states(&mut self, c: &StateCols, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for r in ranges(c.meter_id.len(), PG_ROWS) {
            let sql = format!(
                "INSERT INTO meter_bill_state (meter_id, account_id, reading_id, read_at, value_e4, kind, anchor_reading_id, \
                 anchor_at, anchor_value_e4, anchor_period, bill_id, updated_at) \
                 SELECT u.*, $12 FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::timestamptz[], $5::int8[], $6::text[], $7::int8[], \
                   $8::timestamptz[], $9::int8[], $10::text[], $11::int8[]) AS u WHERE TRUE{STATE_UPSERT}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&c.meter_id[r.clone()])
                .bind(&c.account_id[r.clone()])
                .bind(&c.reading_id[r.clone()])
                .bind(&c.read_at[r.clone()])
                .bind(&c.value_e4[r.clone()])
                .bind(&c.kind[r.clone()])
                .bind(&c.anchor_reading_id[r.clone()])
                .bind(&c.anchor_at[r.clone()])
                .bind(&c.anchor_value_e4[r.clone()])
                .bind(&c.anchor_period[r.clone()])
                .bind(&c.bill_id[r.clone()])
                .bind(now)
                .execute(&mut **self)
                .await?;
        }
        Ok(())
    }

    async fn insert_journal_lines(&mut self, c: &JournalLineCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.entry_id.len(), PG_ROWS) {
            sqlx::query(
                "INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) \
                 SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::int8[])",
            )
            .bind(&c.entry_id[r.clone()])
            .bind(&c.line_no[r.clone()])
            .bind(&c.ledger_account_id[r.clone()])
            .bind(&c.amount_fen[r.clone()])
            .execute(&mut **self)
            .await?;
        }
        Ok(())
    }

    async fn insert_journal_entries(&mut self, c: &JournalEntryCols) -> Result<(), sqlx::Error> {
        for r in ranges(c.id.len(), PG_ROWS) {
            sqlx::query(
                "INSERT INTO journal_entries (id, kind, reference, memo, accounting_date, posted_at, created_by) \
                 SELECT u.i, u.k, u.r, u.m, u.d, u.p, u.c \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[], $6::text[], $7::timestamptz[]) \
                   AS u(i, k, r, m, d, c, p)",
            )
            .bind(&c.id[r.clone()])
            .bind(&c.kind[r.clone()])
            .bind(&c.reference[r.clone()])
            .bind(&c.memo[r.clone()])
            .bind(&c.accounting_date[r.clone()])
            .bind(&c.created_by[r.clone()])
            .bind(&c.posted_at[r.clone()])
            .execute(&mut **self)
            .await?;
        }
        Ok(())
    }

    async fn insert_reminders(
        &mut self,
        c: &ReminderCols,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        let mut out = Vec::with_capacity(c.account_id.len());
        for r in ranges(c.account_id.len(), PG_ROWS) {
            let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{REMINDER_COLUMNS} SELECT u.a, u.c, u.h, u.t, u.s, u.ch, u.bi, u.bs, u.k, u.p, u.pr, u.r, u.m, u.j, u.l, u.st, u.nb, $18, $18 \
                 FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                   $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::bool[], $16::text[], $17::timestamptz[]) \
                   AS u(a, c, h, t, s, ch, bi, bs, k, p, pr, r, m, j, l, st, nb) \
                 ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
            )))
            .bind(&c.account_id[r.clone()])
            .bind(&c.community_id[r.clone()])
            .bind(&c.household[r.clone()])
            .bind(&c.track[r.clone()])
            .bind(&c.step[r.clone()])
            .bind(&c.channel[r.clone()])
            .bind(&c.bill_ids[r.clone()])
            .bind(&c.bill_steps[r.clone()])
            .bind(&c.dedupe_key[r.clone()])
            .bind(&c.provider[r.clone()])
            .bind(&c.profile[r.clone()])
            .bind(&c.recipient[r.clone()])
            .bind(&c.message_kind[r.clone()])
            .bind(&c.content_json[r.clone()])
            .bind(&c.legally_required[r.clone()])
            .bind(&c.status[r.clone()])
            .bind(&c.not_before[r.clone()])
            .bind(now)
            .fetch_all(&mut **self)
            .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn insert_tasks(&mut self, kind: &str, c: &TaskCols, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        for r in ranges(c.payload.len(), PG_ROWS) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{TASK_COLUMNS} SELECT $1, u.p, u.k, u.r, u.m, $6, $6 \
                 FROM UNNEST($2::text[], $3::text[], $4::timestamptz[], $5::int4[]) AS u(p, k, r, m) \
                 ON CONFLICT (dedupe_key) DO NOTHING"
            )))
            .bind(kind)
            .bind(&c.payload[r.clone()])
            .bind(&c.dedupe_key[r.clone()])
            .bind(&c.run_at[r.clone()])
            .bind(&c.max_attempts[r.clone()])
            .bind(now)
            .execute(&mut **self)
            .await?;
        }
        Ok(())
    }
}
