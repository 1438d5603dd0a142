//! Storing readings: batches from the push API and from file imports, checked and written in one
//! transaction (a database error leaves nothing half-written), plus the review queue.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::audit::{insert_audit, AuditRecord};
use super::bulk::{Bulk, ReadingCols};
use super::{in_tx, on_read, on_write, Store, StoreError};
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
struct MeterKey {
    id: i64,
    utility: String,
    meter_no: String,
    community_id: i64,
    digit_count: i32,
    removed_on: Option<NaiveDate>,
    occupied: bool,
}

/// One row per meter: its latest valid reading, its latest valid reading that is not an estimate,
/// the oldest of its newest 13 valid readings (or its first), how many valid readings that window
/// holds, and its latest read time of any status. Each correlated subquery is one index seek on
/// `(meter_id, read_at)`; the readings they find are joined by id.
const HISTORY_SQL: &str = "SELECT h.id, l.read_at AS last_at, l.value_e4 AS last_value, l.kind AS last_kind, \
     l.rollover AS last_rollover, l.steady_since AS last_steady_since, \
     a.read_at AS actual_at, a.value_e4 AS actual_value, a.kind AS actual_kind, \
     s.read_at AS start_at, s.value_e4 AS start_value, h.window_count, h.latest_any \
     FROM (SELECT m.id, \
       (SELECT x.id FROM readings x WHERE x.meter_id = m.id AND x.status = 'valid' ORDER BY x.read_at DESC LIMIT 1) AS last_id, \
       (SELECT x.id FROM readings x WHERE x.meter_id = m.id AND x.status = 'valid' AND x.kind <> 'estimated' ORDER BY x.read_at DESC LIMIT 1) AS actual_id, \
       COALESCE((SELECT x.id FROM readings x WHERE x.meter_id = m.id AND x.status = 'valid' ORDER BY x.read_at DESC LIMIT 1 OFFSET 12), \
                (SELECT x.id FROM readings x WHERE x.meter_id = m.id AND x.status = 'valid' ORDER BY x.read_at LIMIT 1)) AS start_id, \
       (SELECT COUNT(*) FROM (SELECT 1 FROM readings x WHERE x.meter_id = m.id AND x.status = 'valid' ORDER BY x.read_at DESC LIMIT 13) w) AS window_count, \
       (SELECT MAX(x.read_at) FROM readings x WHERE x.meter_id = m.id) AS latest_any \
       FROM meters m WHERE {ids}) h \
     LEFT JOIN readings l ON l.id = h.last_id LEFT JOIN readings a ON a.id = h.actual_id LEFT JOIN readings s ON s.id = h.start_id";

#[derive(sqlx::FromRow)]
struct HistSummary {
    id: i64,
    last_at: Option<DateTime<Utc>>,
    last_value: Option<i64>,
    last_kind: Option<String>,
    last_rollover: Option<bool>,
    last_steady_since: Option<DateTime<Utc>>,
    actual_at: Option<DateTime<Utc>>,
    actual_value: Option<i64>,
    actual_kind: Option<String>,
    start_at: Option<DateTime<Utc>>,
    start_value: Option<i64>,
    window_count: i64,
    latest_any: Option<DateTime<Utc>>,
}

impl HistSummary {
    fn into_history(self) -> MeterHistory {
        let last = match (self.last_at, self.last_value) {
            (Some(at), Some(v)) => Some(PastReading {
                read_at: at,
                value: Quantity::from_scaled(v),
                kind: kind_of(self.last_kind.as_deref().unwrap_or("actual")),
                rollover: self.last_rollover.unwrap_or(false),
            }),
            _ => None,
        };
        let window_start = match (self.start_at, self.start_value) {
            (Some(at), Some(v)) => Some(PastReading {
                read_at: at,
                value: Quantity::from_scaled(v),
                kind: ReadingKind::Actual,
                rollover: false,
            }),
            _ => None,
        };
        let last_actual = match (self.actual_at, self.actual_value) {
            (Some(at), Some(v)) => Some(PastReading {
                read_at: at,
                value: Quantity::from_scaled(v),
                kind: kind_of(self.actual_kind.as_deref().unwrap_or("actual")),
                rollover: false,
            }),
            _ => None,
        };
        MeterHistory {
            last,
            window_start,
            count: self.window_count.max(0) as usize,
            last_actual,
            steady_since: self.last_steady_since,
        }
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
trait Lookups: Send {
    async fn meters_by_number(&mut self, numbers: &[&str]) -> Result<Vec<MeterKey>, sqlx::Error>;
    async fn meter_histories(&mut self, ids: &[i64]) -> Result<Vec<HistSummary>, sqlx::Error>;
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

    async fn meter_histories(&mut self, ids: &[i64]) -> Result<Vec<HistSummary>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = HISTORY_SQL.replace("{ids}", &format!("m.id IN ({})", placeholders(1, chunk.len())));
            let mut q = sqlx::query_as::<_, HistSummary>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(q.fetch_all(&mut **self).await?);
        }
        Ok(out)
    }
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

    async fn meter_histories(&mut self, ids: &[i64]) -> Result<Vec<HistSummary>, sqlx::Error> {
        let mut out = Vec::new();
        for chunk in ids.chunks(PG_LOOKUP) {
            out.extend(
                sqlx::query_as::<_, HistSummary>(sqlx::AssertSqlSafe(HISTORY_SQL.replace("{ids}", "m.id = ANY($1)")))
                    .bind(chunk)
                    .fetch_all(&mut **self)
                    .await?,
            );
        }
        Ok(out)
    }
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
        let rule = RolloverRule::default();
        let parsed: Vec<Result<ParsedReading, String>> = incoming.iter().map(|r| r.parse(now)).collect();
        let what = "storing readings";
        in_tx!(self, what, |tx| {
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
            // 2. Per meter, what the checks need: its latest valid reading, the start of its
            //    history window, and its latest read time of any status. Each is an index seek,
            //    so the cost follows the batch, not the meters' whole history.
            let mut history: HashMap<i64, MeterHistory> = HashMap::new();
            let mut latest_any: HashMap<i64, DateTime<Utc>> = HashMap::new();
            for h in tx.meter_histories(&ids).await.map_err(|e| StoreError::db(what, e))? {
                if let Some(t) = h.latest_any {
                    latest_any.insert(h.id, t);
                }
                history.insert(h.id, h.into_history());
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
            Ok(report)
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

    /// Remember a push signature; `false` if it was seen before (a replay). Forgets signatures
    /// older than `forget_before` (older requests fail the timestamp window anyway).
    pub async fn remember_push_signature(
        &self,
        key_id: &str,
        signature: &str,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_write!(self, |pool| {
            sqlx::query("DELETE FROM push_signatures WHERE seen_at < $1")
                .bind(forget_before)
                .execute(pool)
                .await
                .map_err(|e| StoreError::db("forgetting old push signatures", e))?;
            sqlx::query(
                "INSERT INTO push_signatures (key_id, signature, seen_at) VALUES ($1, $2, $3) ON CONFLICT (key_id, signature) DO NOTHING",
            )
            .bind(key_id)
            .bind(signature)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("remembering a push signature", e))
        })
    }
}
