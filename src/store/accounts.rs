//! Accounts moved over from an existing system (file import and API), and meter replacement.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::audit::{AuditRecord, INSERT_AUDIT};
use super::bills::ROWS;
use super::directory::Meter;
use super::{in_tx, Store, StoreError};
use crate::billing::accounts_import::AccountRow;
use crate::billing::readings::{check, MeterFacts, ParsedReading, ReadingKind, RolloverRule, Verdict};
use crate::domain::Quantity;

/// The outcome of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AccountOutcome {
    Created {
        account_id: i64,
        meters: usize,
    },
    /// An account with this code is already in the community: left as it is.
    Exists {
        account_id: i64,
    },
    Refused {
        reason: String,
    },
}

/// What an import did, row by row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountImportReport {
    pub rows: usize,
    pub created: usize,
    pub existing: usize,
    pub refused: usize,
    pub meters: usize,
    pub results: Vec<(usize, AccountOutcome)>,
}

impl AccountImportReport {
    pub fn text(&self, name: &str) -> String {
        let mut out = format!(
            "{name}: {} rows — {} accounts created ({} meters), {} already there, {} refused",
            self.rows, self.created, self.meters, self.existing, self.refused
        );
        for (line, o) in self
            .results
            .iter()
            .filter(|(_, o)| matches!(o, AccountOutcome::Refused { .. }))
            .take(50)
        {
            if let AccountOutcome::Refused { reason } = o {
                out.push_str(&format!("\n  line {line}: refused: {reason}"));
            }
        }
        out
    }
}

/// A meter replacement (换表): the old meter closes with its final reading, the new one opens
/// with its initial reading (each optional here: they may also come through the push API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    pub new_meter_no: String,
    pub digit_count: i32,
    #[serde(default = "one")]
    pub multiplier: Quantity,
    #[serde(default)]
    pub model: Option<String>,
    pub replaced_on: NaiveDate,
    /// When the readings were taken (default: noon China time on `replaced_on`).
    #[serde(default)]
    pub read_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub final_value: Option<Quantity>,
    #[serde(default)]
    pub initial_value: Option<Quantity>,
    /// fault, periodic verification, upgrade, …
    pub reason: String,
    #[serde(default)]
    pub work_order_ref: Option<String>,
    #[serde(default)]
    pub read_by: Option<String>,
    #[serde(default)]
    pub photo_ref: Option<String>,
}

fn one() -> Quantity {
    Quantity::parse("1").expect("1")
}

impl Store {
    /// Create the accounts of a file (or an API call) in one transaction: each row is created
    /// with its premises and meters, left alone if its code exists, or refused with the reason
    /// (a bad cell, a code twice in the file, a meter number already in use). A database error
    /// stores nothing.
    pub async fn import_accounts(
        &self,
        community_id: i64,
        rows: &[AccountRow],
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<AccountImportReport, StoreError> {
        let what = "importing accounts";
        let long_ago = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date");
        in_tx!(self, what, |tx| {
            let existing: HashMap<String, i64> =
                sqlx::query_as::<_, (String, i64)>("SELECT code, id FROM accounts WHERE community_id = $1")
                    .bind(community_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                    .into_iter()
                    .collect();
            let used_meters: HashSet<(String, String)> =
                sqlx::query_as::<_, (String, String)>("SELECT utility, meter_no FROM meters")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                    .into_iter()
                    .collect();
            let mut report = AccountImportReport {
                rows: rows.len(),
                ..Default::default()
            };
            let mut seen_codes: HashSet<String> = HashSet::new();
            let mut seen_meters: HashSet<(String, String)> = HashSet::new();
            let mut accepted = Vec::new();
            for (line, row) in rows {
                let outcome = match row {
                    Err(reason) => AccountOutcome::Refused { reason: reason.clone() },
                    Ok(a) if !seen_codes.insert(a.code.clone()) => AccountOutcome::Refused {
                        reason: format!("account {} appears twice in the file", a.code),
                    },
                    Ok(a) if existing.contains_key(&a.code) => AccountOutcome::Exists {
                        account_id: existing[&a.code],
                    },
                    Ok(a) => {
                        let clash = a.meters.iter().find(|m| {
                            let k = (m.utility.as_str().to_string(), m.meter_no.clone());
                            used_meters.contains(&k) || seen_meters.contains(&k)
                        });
                        match clash {
                            Some(m) => AccountOutcome::Refused {
                                reason: format!("{} meter {} is already installed elsewhere", m.utility, m.meter_no),
                            },
                            None => {
                                for m in &a.meters {
                                    seen_meters.insert((m.utility.as_str().to_string(), m.meter_no.clone()));
                                }
                                accepted.push((*line, a));
                                continue;
                            }
                        }
                    }
                };
                match &outcome {
                    AccountOutcome::Refused { .. } => report.refused += 1,
                    AccountOutcome::Exists { .. } => report.existing += 1,
                    AccountOutcome::Created { .. } => {}
                }
                report.results.push((*line, outcome));
            }
            for chunk in accepted.chunks(ROWS) {
                // Premises (new ones with their area and occupancy; existing ones are kept).
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO premises (community_id, building, unit, door_no, area_m2_e2, occupied, created_at) ",
                );
                qb.push_values(chunk, |mut b, (_, a)| {
                    b.push_bind(community_id)
                        .push_bind(a.building.clone())
                        .push_bind(a.unit.clone())
                        .push_bind(a.door_no.clone())
                        .push_bind(a.area_m2_e2)
                        .push_bind(a.occupied.unwrap_or(true))
                        .push_bind(now);
                });
                qb.push(" ON CONFLICT (community_id, building, unit, door_no) DO NOTHING");
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                let mut qb =
                    sqlx::QueryBuilder::new("SELECT id, building, unit, door_no FROM premises WHERE community_id = ");
                qb.push_bind(community_id);
                qb.push(" AND building IN (");
                let mut sep = qb.separated(", ");
                let buildings: HashSet<&str> = chunk.iter().map(|(_, a)| a.building.as_str()).collect();
                for b in buildings {
                    sep.push_bind(b.to_string());
                }
                qb.push(")");
                let premises: HashMap<(String, String, String), i64> = qb
                    .build_query_as::<(i64, String, String, String)>()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                    .into_iter()
                    .map(|(id, b, u, d)| ((b, u, d), id))
                    .collect();
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO accounts (community_id, premises_id, code, name, phone, mobile, email, credit_rating, payment_mode, \
                     customer_class, opened_on, low_balance_fen, created_at) ",
                );
                qb.push_values(chunk, |mut b, (_, a)| {
                    b.push_bind(community_id)
                        .push_bind(
                            premises
                                .get(&(a.building.clone(), a.unit.clone(), a.door_no.clone()))
                                .copied(),
                        )
                        .push_bind(a.code.clone())
                        .push_bind(a.name.clone())
                        .push_bind(a.phone.clone())
                        .push_bind(a.mobile.clone())
                        .push_bind(a.email.clone())
                        .push_bind(a.credit_rating.clone())
                        .push_bind(a.payment_mode.clone())
                        .push_bind(a.customer_class.clone())
                        .push_bind(a.opened_on)
                        .push_bind(a.low_balance_fen)
                        .push_bind(now);
                });
                qb.push(" RETURNING id, code, premises_id");
                let created: HashMap<String, (i64, Option<i64>)> = qb
                    .build_query_as::<(i64, String, Option<i64>)>()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                    .into_iter()
                    .map(|(id, code, p)| (code, (id, p)))
                    .collect();
                let mut meters = Vec::new();
                for (line, a) in chunk {
                    let (id, premises_id) = created[&a.code];
                    for m in &a.meters {
                        // Meters moved over from another system were installed before it: without an
                        // opening date, their installation is taken as long ago.
                        meters.push((id, premises_id, a.opened_on.unwrap_or(long_ago), m));
                    }
                    report.created += 1;
                    report.meters += a.meters.len();
                    report.results.push((
                        *line,
                        AccountOutcome::Created {
                            account_id: id,
                            meters: a.meters.len(),
                        },
                    ));
                }
                for mc in meters.chunks(ROWS) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO meters (community_id, account_id, premises_id, meter_no, utility, digit_count, multiplier_e4, installed_on, created_at) ",
                    );
                    qb.push_values(mc, |mut b, (account, premises, installed, m)| {
                        b.push_bind(community_id)
                            .push_bind(*account)
                            .push_bind(*premises)
                            .push_bind(m.meter_no.clone())
                            .push_bind(m.utility.as_str())
                            .push_bind(m.digit_count)
                            .push_bind(m.multiplier.to_scaled())
                            .push_bind(*installed)
                            .push_bind(now);
                    });
                    qb.build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| StoreError::db(what, e))?;
                }
                let audits: Vec<AuditRecord> = chunk
                    .iter()
                    .map(|(_, a)| AuditRecord {
                        actor: actor.into(),
                        action: "account.import".into(),
                        subject_type: "account".into(),
                        subject_id: created[&a.code].0.to_string(),
                        before: None,
                        after: Some(serde_json::json!({
                            "code": a.code, "community_id": community_id, "payment_mode": a.payment_mode,
                            "customer_class": a.customer_class,
                            "meters": a.meters.iter().map(|m| format!("{}:{}", m.meter_no, m.utility)).collect::<Vec<_>>(),
                        })),
                        reason: None,
                        request_id: request_id.map(str::to_string),
                    })
                    .collect();
                let insert = INSERT_AUDIT.split(" VALUES").next().expect("INSERT … VALUES");
                let mut qb = sqlx::QueryBuilder::new(format!("{insert} "));
                qb.push_values(&audits, |mut b, r| {
                    b.push_bind(now)
                        .push_bind(r.actor.clone())
                        .push_bind(r.action.clone())
                        .push_bind(r.subject_type.clone())
                        .push_bind(r.subject_id.clone())
                        .push_bind(None::<String>)
                        .push_bind(r.after.as_ref().map(|v| v.to_string()))
                        .push_bind(None::<String>)
                        .push_bind(r.request_id.clone());
                });
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
            }
            report.results.sort_by_key(|(line, _)| *line);
            Ok(report)
        })
    }

    /// Replace a meter: the old one is closed (removed on `replaced_on`, with its final reading
    /// if given) and a new one installed for the same account and premises (with its initial
    /// reading if given), in one transaction, recorded with the reason and work order, audited.
    pub async fn replace_meter(
        &self,
        old_meter_id: i64,
        r: &Replacement,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Meter, StoreError> {
        let what = "replacing a meter";
        let refuse = |reason: String| StoreError::Refused { what, reason };
        if r.reason.trim().is_empty() {
            return Err(refuse(
                "a reason is required (fault, periodic verification, upgrade, …)".into(),
            ));
        }
        if !(1..=12).contains(&r.digit_count) || r.multiplier.get() <= rust_decimal::Decimal::ZERO {
            return Err(refuse(
                "the new meter needs 1 to 12 digits and a positive multiplier".into(),
            ));
        }
        let read_at = r
            .read_at
            .unwrap_or_else(|| crate::domain::period::cst_midnight(r.replaced_on) + chrono::Duration::hours(12));
        in_tx!(self, what, |tx| {
            let old: Option<Meter> = sqlx::query_as(
                "SELECT id, community_id, account_id, premises_id, meter_no, utility, model, digit_count, multiplier_e4, installed_on, removed_on \
                 FROM meters WHERE id = $1",
            )
            .bind(old_meter_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let old = old.ok_or_else(|| StoreError::NotFound(format!("meter {old_meter_id}")))?;
            if let Some(d) = old.removed_on {
                return Err(refuse(format!("meter {} was already removed on {d}", old.meter_no)));
            }
            if r.replaced_on < old.installed_on {
                return Err(refuse(format!(
                    "meter {} was installed on {}, after {}",
                    old.meter_no, old.installed_on, r.replaced_on
                )));
            }
            // The old meter's history, as the readings' checks read it.
            let history = super::readings::histories(&mut tx, &[old.id])
                .await
                .map_err(|e| StoreError::db(what, e))?
                .remove(&old.id)
                .map(|(h, _)| h)
                .unwrap_or_default();
            if r.final_value.is_some() && history.last.as_ref().is_some_and(|l| l.read_at >= read_at) {
                return Err(refuse(format!(
                    "meter {} already has a reading at or after {read_at}",
                    old.meter_no
                )));
            }
            // The final reading is checked as any reading is (readings' rule): measured from the
            // last real reading when estimates ran ahead, a fall accepted as a rollover when it
            // is plausible for the meter's own history and the days elapsed.
            let mut final_rollover = false;
            if let Some(v) = r.final_value {
                let facts = MeterFacts {
                    id: old.id,
                    digit_count: old.digit_count,
                    removed_on: None,
                    occupied: false,
                };
                let reading = ParsedReading {
                    meter_no: old.meter_no.clone(),
                    utility: old
                        .utility
                        .parse()
                        .map_err(|_| refuse(format!("meter {} has an unknown utility", old.meter_no)))?,
                    read_at,
                    value: v,
                    kind: ReadingKind::Final,
                    registers: Default::default(),
                };
                match check(&facts, &history, &reading, &RolloverRule::default()) {
                    Verdict::Accept { rollover } => final_rollover = rollover,
                    Verdict::Hold(reason) => {
                        return Err(refuse(format!("final reading {v} of meter {}: {reason}", old.meter_no)))
                    }
                }
            }
            sqlx::query("UPDATE meters SET removed_on = $1 WHERE id = $2")
                .bind(r.replaced_on)
                .bind(old.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let new: Meter = sqlx::query_as(
                "INSERT INTO meters (community_id, account_id, premises_id, meter_no, utility, model, digit_count, multiplier_e4, installed_on, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 RETURNING id, community_id, account_id, premises_id, meter_no, utility, model, digit_count, multiplier_e4, installed_on, removed_on",
            )
            .bind(old.community_id)
            .bind(old.account_id)
            .bind(old.premises_id)
            .bind(r.new_meter_no.trim())
            .bind(&old.utility)
            .bind(&r.model)
            .bind(r.digit_count)
            .bind(r.multiplier.to_scaled())
            .bind(r.replaced_on)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let insert_reading = |meter: i64, kind: &'static str, v: Quantity, rollover: bool| {
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO readings (meter_id, read_at, value_e4, kind, source, status, rollover, created_at) \
                     VALUES ($1, $2, $3, $4, 'replacement', 'valid', $5, $6) RETURNING id",
                )
                .bind(meter)
                .bind(read_at)
                .bind(v.to_scaled())
                .bind(kind)
                .bind(rollover)
                .bind(now)
            };
            let final_id = match r.final_value {
                Some(v) => Some(
                    insert_reading(old.id, "final", v, final_rollover)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| StoreError::db(what, e))?,
                ),
                None => None,
            };
            let initial_id = match r.initial_value {
                Some(v) => Some(
                    insert_reading(new.id, "initial", v, false)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| StoreError::db(what, e))?,
                ),
                None => None,
            };
            sqlx::query(
                "INSERT INTO meter_replacements (old_meter_id, new_meter_id, replaced_on, final_reading_id, initial_reading_id, reason, \
                 work_order_ref, read_by, photo_ref, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(old.id)
            .bind(new.id)
            .bind(r.replaced_on)
            .bind(final_id)
            .bind(initial_id)
            .bind(r.reason.trim())
            .bind(&r.work_order_ref)
            .bind(&r.read_by)
            .bind(&r.photo_ref)
            .bind(actor)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "meter.replace".into(),
                subject_type: "meter".into(),
                subject_id: old.id.to_string(),
                before: Some(serde_json::to_value(&old).unwrap_or_default()),
                after: Some(
                    serde_json::json!({"new_meter": new, "final_reading_id": final_id, "initial_reading_id": initial_id,
                    "work_order_ref": r.work_order_ref}),
                ),
                reason: Some(r.reason.trim().to_string()),
                request_id: request_id.map(str::to_string),
            };
            super::audit::insert_audit!(&mut *tx, &rec, now)?;
            Ok(new)
        })
    }
}
