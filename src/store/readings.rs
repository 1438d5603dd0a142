//! Storing readings: batches from the push API and from file imports, checked and written in one
//! transaction (a database error leaves nothing half-written), plus the review queue.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::audit::{insert_audit, AuditRecord};
use super::bulk::{Bulk, ReadingCols};
use super::{in_tx, on_read, Store, StoreError};
use crate::billing::readings::{
    check, BatchReport, IncomingReading, MeterFacts, MeterHistory, ParsedReading, PastReading, ReadingKind,
    RolloverRule, RowOutcome, Verdict,
};
use crate::domain::tariff::TouPeriod;
use crate::domain::Quantity;

const CHUNK: usize = 400;

/// A stored reading.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReadingRow {
    pub id: i64,
    pub meter_id: i64,
    pub read_at: DateTime<Utc>,
    pub value_e4: i64,
    pub kind: String,
    pub source: String,
    pub status: String,
    pub hold_reason: Option<String>,
    pub rollover: bool,
}

/// A held reading with its meter, for the review queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HeldReading {
    pub id: i64,
    pub meter_id: i64,
    pub meter_no: String,
    pub utility: String,
    pub community_id: i64,
    pub read_at: DateTime<Utc>,
    pub value_e4: i64,
    pub kind: String,
    pub hold_reason: Option<String>,
}

/// A pushed batch's signature, remembered to refuse a replay.
pub struct PushSignature<'a> {
    pub key_id: &'a str,
    pub signature: &'a str,
    /// Signatures seen before this are forgotten (they are past the timestamp window anyway).
    pub forget_before: DateTime<Utc>,
}

/// A registered meter concentrator.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Device {
    pub id: i64,
    pub community_id: i64,
    pub key_id: String,
    pub secret_hex: String,
    pub name: String,
    pub active: bool,
}

#[derive(sqlx::FromRow)]
pub(super) struct MeterKey {
    id: i64,
    utility: String,
    meter_no: String,
    community_id: i64,
    digit_count: i32,
    removed_on: Option<NaiveDate>,
    occupied: bool,
}

/// How many of a meter's newest valid readings the checks look at: the history window.
const RECENT: usize = crate::billing::readings::HISTORY_WINDOW;

/// SQLite: the whole chunk of meters as one text value — a record per meter (id, latest read
/// time of any status, its newest [`RECENT`] valid readings newest first, one a line:
/// `read_at`, value, kind, rollover, steady-since, tab-separated), the ids bound as one JSON
/// array. One index walk of 13 entries and one seek per meter, and one value for sqlx to hand
/// over instead of a row per meter.
const SQLITE_RECENT_SQL: &str = "SELECT group_concat(h.id || char(31) || IFNULL(h.latest_any, '') || char(31) || IFNULL(h.recent, ''), char(30)) \
     FROM (SELECT m.id, \
       (SELECT group_concat(y.line, char(10)) FROM (SELECT x.read_at || char(9) || x.value_e4 || char(9) || x.kind \
          || char(9) || x.rollover || char(9) || IFNULL(x.steady_since, '') AS line \
          FROM readings x WHERE x.meter_id = m.id AND x.status = 'valid' ORDER BY x.read_at DESC LIMIT 13) y) AS recent, \
       (SELECT MAX(x.read_at) FROM readings x WHERE x.meter_id = m.id) AS latest_any \
       FROM meters m WHERE m.id IN (SELECT value FROM json_each($1))) h";

/// PostgreSQL: the same as arrays. The arrays of one row are aggregated in one pass, so they
/// line up; their order is not promised (an `ORDER BY` in each aggregate sorted every meter's
/// thirteen rows five times over, half the statement's cost), so the reader sorts by time.
const PG_RECENT_SQL: &str = "SELECT m.id, w.read_ats, w.values_e4, w.kinds, w.rollovers, w.steadies, \
     (SELECT MAX(x.read_at) FROM readings x WHERE x.meter_id = m.id) AS latest_any \
     FROM meters m LEFT JOIN LATERAL (SELECT array_agg(y.read_at) AS read_ats, array_agg(y.value_e4) AS values_e4, \
        array_agg(y.kind) AS kinds, array_agg(y.rollover) AS rollovers, array_agg(y.steady_since) AS steadies \
        FROM (SELECT x.read_at, x.value_e4, x.kind, x.rollover, x.steady_since FROM readings x \
              WHERE x.meter_id = m.id AND x.status = 'valid' ORDER BY x.read_at DESC LIMIT 13) y) w ON TRUE \
     WHERE m.id = ANY($1)";

/// A meter's latest valid reading that is not an estimate, when none of its newest [`RECENT`] is one.
const LAST_ACTUAL_SQL: &str = "SELECT read_at, value_e4, kind FROM readings \
     WHERE meter_id = $1 AND status = 'valid' AND kind <> 'estimated' ORDER BY read_at DESC LIMIT 1";

/// A meter's newest valid readings (newest first), as the lookups read them.
pub(super) struct Recent {
    id: i64,
    /// Newest first, at most [`RECENT`], each with its stored steady-since.
    readings: Vec<(PastReading, Option<DateTime<Utc>>)>,
    latest_any: Option<DateTime<Utc>>,
}

impl Recent {
    /// The history the checks need, and whether the latest actual reading lies further back
    /// than the window (every reading in it an estimate) and must be looked up on its own.
    fn into_history(self) -> (MeterHistory, bool) {
        let last_actual = self
            .readings
            .iter()
            .find(|(r, _)| r.kind != ReadingKind::Estimated)
            .map(|(r, _)| PastReading {
                rollover: false,
                ..r.clone()
            });
        let look_further = last_actual.is_none() && self.readings.len() >= RECENT;
        let window_start = self.readings.last().map(|(r, _)| PastReading {
            kind: ReadingKind::Actual,
            rollover: false,
            ..r.clone()
        });
        let count = self.readings.len();
        let mut newest = self.readings.into_iter().next();
        let steady_since = newest.as_mut().and_then(|(_, s)| s.take());
        (
            MeterHistory {
                last: newest.map(|(r, _)| r),
                window_start,
                count,
                last_actual,
                steady_since,
            },
            look_further,
        )
    }
}

#[derive(sqlx::FromRow)]
struct PgRecentRow {
    id: i64,
    read_ats: Option<Vec<DateTime<Utc>>>,
    values_e4: Option<Vec<i64>>,
    kinds: Option<Vec<String>>,
    rollovers: Option<Vec<bool>>,
    steadies: Option<Vec<Option<DateTime<Utc>>>>,
    latest_any: Option<DateTime<Utc>>,
}

/// One record of [`SQLITE_RECENT_SQL`]: the meter's id, and its history unless a time or a
/// value in it is not in the form sqlx writes (then the caller reads that meter's rows).
fn parse_recent_record(record: &str) -> Result<(i64, Option<Recent>), sqlx::Error> {
    let mut f = record.splitn(3, '\x1f');
    let id = f
        .next()
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or_else(|| sqlx::Error::Decode(format!("meter history record {record:?}").into()))?;
    let (latest, recent) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    let latest_any = match latest {
        "" => Some(None),
        t => DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| Some(d.with_timezone(&Utc))),
    };
    let readings: Option<Vec<_>> = match recent {
        "" => Some(Vec::new()),
        text => text.split('\n').map(parse_recent_line).collect(),
    };
    Ok((
        id,
        latest_any.zip(readings).map(|(latest_any, readings)| Recent {
            id,
            readings,
            latest_any,
        }),
    ))
}

/// One line of a record's readings; `None` if it does not parse.
fn parse_recent_line(line: &str) -> Option<(PastReading, Option<DateTime<Utc>>)> {
    let mut f = line.split('\t');
    let (at, v, kind, rollover, steady) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some() {
        return None;
    }
    let read_at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    let steady_since = match steady {
        "" => None,
        s => Some(DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc)),
    };
    let rollover = match rollover {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    Some((
        past(read_at, v.parse().ok()?, kind.parse().ok()?, rollover),
        steady_since,
    ))
}

/// A stored reading as history.
fn past(read_at: DateTime<Utc>, value_e4: i64, kind: ReadingKind, rollover: bool) -> PastReading {
    PastReading {
        read_at,
        value: Quantity::from_scaled(value_e4),
        kind,
        rollover,
    }
}

/// A reading about to be stored.
struct ToInsert {
    index: usize,
    meter_id: i64,
    read_at: DateTime<Utc>,
    value: Quantity,
    kind: ReadingKind,
    rollover: bool,
    hold: Option<String>,
    steady_since: Option<DateTime<Utc>>,
    registers: Vec<(TouPeriod, Quantity)>,
}

fn kind_of(s: &str) -> ReadingKind {
    s.parse().unwrap_or(ReadingKind::Actual)
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lookups a batch of readings starts with, per backend: SQLite takes an `IN (…)` list of
/// [`CHUNK`] parameters per statement; PostgreSQL one array parameter per [`PG_LOOKUP`] keys
/// (an `IN` list of 400 made its planner join `premises` by a sequential scan for every 400
/// meters: 100 ms each, most of a 50,000-meter import).
#[async_trait::async_trait]
pub(super) trait Lookups: Send {
    async fn meters_by_number(&mut self, numbers: &[&str]) -> Result<Vec<MeterKey>, sqlx::Error>;
    async fn meter_histories(&mut self, ids: &[i64]) -> Result<Vec<Recent>, sqlx::Error>;
    async fn last_actual(&mut self, id: i64) -> Result<Option<PastReading>, sqlx::Error>;
}

/// Keys per PostgreSQL lookup statement.
const PG_LOOKUP: usize = 20_000;

const METERS_SQL: &str = "SELECT m.id, m.utility, m.meter_no, m.community_id, m.digit_count, m.removed_on, \
     COALESCE(p.occupied, TRUE) AS occupied FROM meters m LEFT JOIN premises p ON p.id = m.premises_id WHERE ";

#[async_trait::async_trait]
impl<'c> Lookups for sqlx::Transaction<'c, sqlx::Sqlite> {
    async fn meters_by_number(&mut self, numbers: &[&str]) -> Result<Vec<MeterKey>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in numbers.chunks(CHUNK) {
            let sql = format!("{METERS_SQL}m.meter_no IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query_as::<_, MeterKey>(sqlx::AssertSqlSafe(sql));
            for n in chunk {
                q = q.bind(*n);
            }
            out.extend(q.fetch_all(&mut **self).await?);
        }
        Ok(out)
    }

    async fn meter_histories(&mut self, ids: &[i64]) -> Result<Vec<Recent>, sqlx::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(5_000) {
            let block = sqlx::query_scalar::<_, Option<String>>(SQLITE_RECENT_SQL)
                .bind(serde_json::to_string(chunk).expect("ids as JSON"))
                .fetch_one(&mut **self)
                .await?
                .unwrap_or_default();
            for record in block.split('\x1e').filter(|r| !r.is_empty()) {
                match parse_recent_record(record)? {
                    (_, Some(recent)) => out.push(recent),
                    // A time stored in another form: this meter's rows, decoded by sqlx.
                    (id, None) => out.push(sqlite_recent_rows(&mut **self, id).await?),
                }
            }
        }
        Ok(out)
    }

    async fn last_actual(&mut self, id: i64) -> Result<Option<PastReading>, sqlx::Error> {
        Ok(last_actual_row(
            sqlx::query_as(LAST_ACTUAL_SQL)
                .bind(id)
                .fetch_optional(&mut **self)
                .await?,
        ))
    }
}

/// One meter's history read as rows (the fallback when its record did not parse).
async fn sqlite_recent_rows(conn: &mut sqlx::SqliteConnection, id: i64) -> Result<Recent, sqlx::Error> {
    type Row = (DateTime<Utc>, i64, String, bool, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT read_at, value_e4, kind, rollover, steady_since FROM readings \
         WHERE meter_id = $1 AND status = 'valid' ORDER BY read_at DESC LIMIT 13",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let latest_any: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT MAX(read_at) FROM readings WHERE meter_id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Recent {
        id,
        readings: rows
            .into_iter()
            .map(|(at, v, kind, rollover, steady)| (past(at, v, kind_of(&kind), rollover), steady))
            .collect(),
        latest_any,
    })
}

fn last_actual_row(row: Option<(DateTime<Utc>, i64, String)>) -> Option<PastReading> {
    row.map(|(at, v, kind)| past(at, v, kind_of(&kind), false))
}

#[async_trait::async_trait]
impl<'c> Lookups for sqlx::Transaction<'c, sqlx::Postgres> {
    async fn meters_by_number(&mut self, numbers: &[&str]) -> Result<Vec<MeterKey>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in numbers.chunks(PG_LOOKUP) {
            out.extend(
                sqlx::query_as::<_, MeterKey>(sqlx::AssertSqlSafe(format!("{METERS_SQL}m.meter_no = ANY($1)")))
                    .bind(chunk)
                    .fetch_all(&mut **self)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn meter_histories(&mut self, ids: &[i64]) -> Result<Vec<Recent>, sqlx::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PG_LOOKUP) {
            let rows = sqlx::query_as::<_, PgRecentRow>(PG_RECENT_SQL)
                .bind(chunk)
                .fetch_all(&mut **self)
                .await?;
            for row in rows {
                let read_ats = row.read_ats.unwrap_or_default();
                let values = row.values_e4.unwrap_or_default();
                let kinds = row.kinds.unwrap_or_default();
                let rollovers = row.rollovers.unwrap_or_default();
                let steadies = row.steadies.unwrap_or_default();
                let mut readings: Vec<(PastReading, Option<DateTime<Utc>>)> = read_ats
                    .into_iter()
                    .zip(values)
                    .zip(kinds)
                    .zip(rollovers)
                    .zip(steadies)
                    .map(|((((at, v), kind), rollover), steady)| (past(at, v, kind_of(&kind), rollover), steady))
                    .collect();
                // Newest first (times are unique per meter).
                readings.sort_unstable_by_key(|r| std::cmp::Reverse(r.0.read_at));
                out.push(Recent {
                    id: row.id,
                    readings,
                    latest_any: row.latest_any,
                });
            }
        }
        Ok(out)
    }

    async fn last_actual(&mut self, id: i64) -> Result<Option<PastReading>, sqlx::Error> {
        Ok(last_actual_row(
            sqlx::query_as(LAST_ACTUAL_SQL)
                .bind(id)
                .fetch_optional(&mut **self)
                .await?,
        ))
    }
}

/// Each meter's history for the checks and its latest read time of any status, by meter id;
/// the latest real reading is looked further back only for a meter whose whole window is
/// estimates. Shared by the ingest and a meter replacement's final reading.
pub(super) async fn histories<L: Lookups + ?Sized>(
    tx: &mut L,
    ids: &[i64],
) -> Result<HashMap<i64, (MeterHistory, Option<DateTime<Utc>>)>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for r in tx.meter_histories(ids).await? {
        let (id, latest_any) = (r.id, r.latest_any);
        let (mut h, look_further) = r.into_history();
        if look_further {
            h.last_actual = tx.last_actual(id).await?;
        }
        out.insert(id, (h, latest_any));
    }
    Ok(out)
}

impl Store {
    /// Check and store a batch of readings, in one transaction. `community_id` limits which
    /// meters a device may report for (`None`: any, for operators' imports).
    /// `progress` is called with the number of rows processed so far.
    pub async fn ingest_readings(
        &self,
        community_id: Option<i64>,
        incoming: &[IncomingReading],
        source: &str,
        actor: &str,
        now: DateTime<Utc>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<BatchReport, StoreError> {
        let report = self
            .ingest_guarded(community_id, incoming, source, actor, now, None, progress)
            .await?;
        Ok(report.expect("no replay guard, never refused as a replay"))
    }

    /// A pushed batch: its signature is remembered in the same transaction as its readings
    /// (one commit per push, and a batch whose write fails leaves no trace of its signature).
    /// `None`: the signature was seen before, and nothing is stored.
    pub async fn ingest_pushed_readings(
        &self,
        community_id: i64,
        incoming: &[IncomingReading],
        signature: &PushSignature<'_>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BatchReport>, StoreError> {
        self.ingest_guarded(
            Some(community_id),
            incoming,
            "push",
            actor,
            now,
            Some(signature),
            &|_| {},
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn ingest_guarded(
        &self,
        community_id: Option<i64>,
        incoming: &[IncomingReading],
        source: &str,
        actor: &str,
        now: DateTime<Utc>,
        guard: Option<&PushSignature<'_>>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Option<BatchReport>, StoreError> {
        let rule = RolloverRule::default();
        let parsed: Vec<Result<ParsedReading, String>> = incoming.iter().map(|r| r.parse(now)).collect();
        let what = "storing readings";
        in_tx!(self, what, |tx| 'tx: {
            // 0. A push's signature, refused if seen before (its time window is twice the
            //    timestamp tolerance; older ones are forgotten here).
            if let Some(g) = guard {
                sqlx::query("DELETE FROM push_signatures WHERE seen_at < $1")
                    .bind(g.forget_before)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("forgetting old push signatures", e))?;
                let fresh = sqlx::query(
                    "INSERT INTO push_signatures (key_id, signature, seen_at) VALUES ($1, $2, $3) ON CONFLICT (key_id, signature) DO NOTHING",
                )
                .bind(g.key_id)
                .bind(g.signature)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(|e| StoreError::db("remembering a push signature", e))?;
                if !fresh {
                    break 'tx Ok(None);
                }
            }
            // 1. The meters named in the batch.
            let mut numbers: Vec<&str> = parsed
                .iter()
                .filter_map(|p| p.as_ref().ok())
                .map(|p| p.meter_no.as_str())
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            let t_phase = std::time::Instant::now();
            let mut meters: HashMap<String, Vec<MeterKey>> = HashMap::new();
            for m in tx
                .meters_by_number(&numbers)
                .await
                .map_err(|e| StoreError::db(what, e))?
            {
                meters.entry(m.meter_no.clone()).or_default().push(m);
            }
            let meters_ms = t_phase.elapsed().as_millis();
            let mut ids: Vec<i64> = meters.values().flatten().map(|m| m.id).collect();
            ids.sort_unstable();
            // 2. Per meter, what the checks need: its newest 13 valid readings (the history
            //    window) and its latest read time of any status. One short index walk and one
            //    seek each, so the cost follows the batch, not the meters' whole history.
            let mut history: HashMap<i64, MeterHistory> = HashMap::new();
            let mut latest_any: HashMap<i64, DateTime<Utc>> = HashMap::new();
            for (id, (h, latest)) in histories(&mut tx, &ids).await.map_err(|e| StoreError::db(what, e))? {
                if let Some(t) = latest {
                    latest_any.insert(id, t);
                }
                history.insert(id, h);
            }
            let history_ms = t_phase.elapsed().as_millis() - meters_ms;
            // 3. Decide each reading, in time order per meter.
            let mut order: Vec<usize> = (0..parsed.len()).collect();
            let key = |i: usize| match &parsed[i] {
                Ok(p) => (0u8, p.meter_no.as_str(), p.read_at, i),
                Err(_) => (1u8, "", DateTime::<Utc>::MIN_UTC, i),
            };
            order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)));
            let mut outcomes: Vec<Option<RowOutcome>> = vec![None; parsed.len()];
            // (meter_id, read_at) → (index, value, kind) of readings to insert.
            let mut pending: HashMap<(i64, DateTime<Utc>), (usize, Quantity, ReadingKind)> = HashMap::new();
            let mut to_insert: Vec<ToInsert> = Vec::new();
            for (done, &i) in order.iter().enumerate() {
                if done % 10_000 == 0 {
                    progress(done);
                }
                let p = match &parsed[i] {
                    Ok(p) => p,
                    Err(reason) => {
                        outcomes[i] = Some(RowOutcome::Refused { reason: reason.clone() });
                        continue;
                    }
                };
                let meter = meters
                    .get(p.meter_no.as_str())
                    .and_then(|ms| ms.iter().find(|m| m.utility == p.utility.as_str()));
                let Some(meter) = meter else {
                    outcomes[i] = Some(RowOutcome::Refused {
                        reason: format!("unknown {} meter {:?}", p.utility, p.meter_no),
                    });
                    continue;
                };
                if community_id.is_some_and(|c| c != meter.community_id) {
                    outcomes[i] = Some(RowOutcome::Refused {
                        reason: format!("meter {:?} does not belong to this device's community", p.meter_no),
                    });
                    continue;
                }
                // Same meter and time earlier in this batch.
                if let Some((_, v, k)) = pending.get(&(meter.id, p.read_at)) {
                    outcomes[i] = Some(if *v == p.value && *k == p.kind {
                        RowOutcome::Duplicate { reading_id: 0 }
                    } else {
                        RowOutcome::Refused {
                            reason: format!(
                                "conflicting duplicate: meter {} at {} appears twice in the batch with different values",
                                p.meter_no, p.read_at
                            ),
                        }
                    });
                    continue;
                }
                // Same meter and time already stored?
                if latest_any.get(&meter.id).is_some_and(|t| p.read_at <= *t) {
                    let existing = sqlx::query_as::<_, (i64, i64, String)>(
                        "SELECT id, value_e4, kind FROM readings WHERE meter_id = $1 AND read_at = $2",
                    )
                    .bind(meter.id)
                    .bind(p.read_at)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    if let Some((id, v, k)) = existing {
                        outcomes[i] = Some(if v == p.value.to_scaled() && k == p.kind.as_str() {
                            RowOutcome::Duplicate { reading_id: id }
                        } else {
                            RowOutcome::Refused {
                                reason: format!(
                                    "conflicting duplicate: meter {} already has reading {} ({}) at {}; {} ({}) refused",
                                    p.meter_no,
                                    Quantity::from_scaled(v),
                                    k,
                                    p.read_at,
                                    p.value,
                                    p.kind.as_str()
                                ),
                            }
                        });
                        continue;
                    }
                }
                let facts = MeterFacts {
                    id: meter.id,
                    digit_count: meter.digit_count,
                    removed_on: meter.removed_on,
                    occupied: meter.occupied,
                };
                let hist = history.entry(meter.id).or_default();
                let out_of_order = hist.last.as_ref().is_some_and(|last| p.read_at <= last.read_at)
                    || latest_any.get(&meter.id).is_some_and(|t| p.read_at <= *t);
                let verdict = if out_of_order {
                    Verdict::Hold("older than the meter's latest reading (out of order)".into())
                } else {
                    check(&facts, hist, p, &rule)
                };
                pending.insert((meter.id, p.read_at), (i, p.value, p.kind));
                let steady_since = hist.steady_since_for(p.value);
                let (rollover, hold) = match verdict {
                    Verdict::Accept { rollover } => {
                        hist.push(PastReading {
                            read_at: p.read_at,
                            value: p.value,
                            kind: p.kind,
                            rollover,
                        });
                        (rollover, None)
                    }
                    Verdict::Hold(reason) => (false, Some(reason)),
                };
                to_insert.push(ToInsert {
                    index: i,
                    meter_id: meter.id,
                    read_at: p.read_at,
                    value: p.value,
                    kind: p.kind,
                    rollover,
                    hold,
                    steady_since,
                    registers: p.registers.iter().map(|(k, v)| (*k, *v)).collect(),
                });
            }
            progress(parsed.len());
            let check_ms = t_phase.elapsed().as_millis() - meters_ms - history_ms;
            // 4. Insert, many rows per statement.
            let mut cols = ReadingCols::default();
            for r in &to_insert {
                cols.meter_id.push(r.meter_id);
                cols.read_at.push(r.read_at);
                cols.value_e4.push(r.value.to_scaled());
                cols.kind.push(r.kind.as_str());
                cols.status.push(if r.hold.is_some() { "held" } else { "valid" });
                cols.hold_reason.push(r.hold.clone());
                cols.rollover.push(r.rollover);
                cols.steady_since.push(r.steady_since);
            }
            let new_ids: HashMap<(i64, DateTime<Utc>), i64> = tx
                .insert_readings(&cols, source, now)
                .await
                .map_err(|e| StoreError::db(what, e))?
                .into_iter()
                .map(|(id, m, t)| ((m, t), id))
                .collect();
            let registers: Vec<(i64, TouPeriod, Quantity)> = to_insert
                .iter()
                .flat_map(|r| {
                    let id = new_ids.get(&(r.meter_id, r.read_at)).copied().unwrap_or_default();
                    r.registers.iter().map(move |(p, v)| (id, *p, *v))
                })
                .collect();
            for chunk in registers.chunks(CHUNK) {
                let mut qb = sqlx::QueryBuilder::new("INSERT INTO reading_registers (reading_id, register, value_e4) ");
                qb.push_values(chunk, |mut b, (id, p, v)| {
                    b.push_bind(*id).push_bind(p.as_str()).push_bind(v.to_scaled());
                });
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
            }
            for r in to_insert {
                let id = new_ids.get(&(r.meter_id, r.read_at)).copied().unwrap_or_default();
                outcomes[r.index] = Some(match r.hold {
                    None => RowOutcome::Accepted {
                        reading_id: id,
                        rollover: r.rollover,
                    },
                    Some(reason) => RowOutcome::Held { reading_id: id, reason },
                });
            }
            tracing::debug!(
                rows = parsed.len(),
                meters = ids.len(),
                meters_ms,
                history_ms,
                check_ms,
                insert_ms = t_phase.elapsed().as_millis() - meters_ms - history_ms - check_ms,
                "readings ingest"
            );
            let report =
                BatchReport::from_results(outcomes.into_iter().map(|o| o.expect("every row decided")).collect());
            if report.accepted + report.held > 0 {
                let rec = AuditRecord {
                    actor: actor.into(),
                    action: "readings.ingest".into(),
                    subject_type: "readings".into(),
                    subject_id: source.into(),
                    before: None,
                    after: Some(serde_json::json!({
                        "accepted": report.accepted, "held": report.held,
                        "duplicates": report.duplicates, "refused": report.refused
                    })),
                    reason: None,
                    request_id: None,
                };
                insert_audit!(&mut *tx, &rec, now)?;
            }
            Ok(Some(report))
        })
    }

    /// Readings of a meter, oldest first.
    pub async fn readings_of_meter(&self, meter_id: i64) -> Result<Vec<ReadingRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReadingRow>(
                "SELECT id, meter_id, read_at, value_e4, kind, source, status, hold_reason, rollover FROM readings \
                 WHERE meter_id = $1 ORDER BY read_at",
            )
            .bind(meter_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing a meter's readings", e))
        })
    }

    pub async fn reading_count(&self) -> Result<i64, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM readings")
                .fetch_one(pool)
                .await
                .map_err(|e| StoreError::db("counting readings", e))
        })
    }

    /// Readings held for review, optionally in one community.
    pub async fn held_readings(&self, community_id: Option<i64>) -> Result<Vec<HeldReading>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, HeldReading>(
                "SELECT r.id, r.meter_id, m.meter_no, m.utility, m.community_id, r.read_at, r.value_e4, r.kind, r.hold_reason \
                 FROM readings r JOIN meters m ON m.id = r.meter_id \
                 WHERE r.status = 'held' AND ($1 IS NULL OR m.community_id = $1) ORDER BY r.read_at, r.id",
            )
            .bind(community_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing held readings", e))
        })
    }

    /// An operator's decision on a held reading: accept (it becomes valid) or reject. Recorded in
    /// the audit log with the reason. Refused if the reading is not held.
    pub async fn review_reading(
        &self,
        reading_id: i64,
        accept: bool,
        actor: &str,
        note: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ReadingRow, StoreError> {
        let what = "reviewing a held reading";
        let status = if accept { "valid" } else { "rejected" };
        in_tx!(self, what, |tx| {
            let row = sqlx::query_as::<_, ReadingRow>(
                "UPDATE readings SET status = $1, reviewed_by = $2, reviewed_at = $3, review_note = $4 \
                 WHERE id = $5 AND status = 'held' \
                 RETURNING id, meter_id, read_at, value_e4, kind, source, status, hold_reason, rollover",
            )
            .bind(status)
            .bind(actor)
            .bind(now)
            .bind(note)
            .bind(reading_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?
            .ok_or_else(|| StoreError::NotFound(format!("held reading {reading_id}")))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: if accept {
                    "reading.accept".into()
                } else {
                    "reading.reject".into()
                },
                subject_type: "reading".into(),
                subject_id: reading_id.to_string(),
                before: Some(serde_json::json!({"status": "held", "hold_reason": row.hold_reason})),
                after: Some(serde_json::json!({"status": status})),
                reason: Some(note.to_string()),
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(row)
        })
    }

    /// Register a meter concentrator for a community. The caller generates the secret.
    pub async fn add_device(
        &self,
        community_id: i64,
        name: &str,
        key_id: &str,
        secret_hex: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Device, StoreError> {
        let what = "registering a device";
        in_tx!(self, what, |tx| {
            let d = sqlx::query_as::<_, Device>(
                "INSERT INTO devices (community_id, key_id, secret_hex, name, created_at) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING id, community_id, key_id, secret_hex, name, active",
            )
            .bind(community_id)
            .bind(key_id)
            .bind(secret_hex)
            .bind(name)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "device.add".into(),
                subject_type: "device".into(),
                subject_id: key_id.into(),
                before: None,
                after: Some(serde_json::json!({"community_id": community_id, "name": name})),
                reason: None,
                request_id: None,
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(d)
        })
    }

    pub async fn device_by_key_id(&self, key_id: &str) -> Result<Option<Device>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Device>(
                "SELECT id, community_id, key_id, secret_hex, name, active FROM devices WHERE key_id = $1",
            )
            .bind(key_id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding a device", e))
        })
    }
}
