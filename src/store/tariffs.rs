//! Tariff versions: added (never changed), listed, and loaded for a bill run.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::audit::{insert_audit, AuditRecord};
use super::{in_tx, on_read, Store, StoreError};
use crate::domain::ids::Utility;
use crate::domain::tariff::{PartYear, TariffDefinition, TariffSpec, TariffVersion, TierBasis};

#[derive(sqlx::FromRow)]
pub(crate) struct VersionRow {
    id: i64,
    community_id: i64,
    utility: String,
    customer_class: String,
    name: String,
    effective_from: NaiveDate,
    effective_to: Option<NaiveDate>,
    tier_basis: String,
    tier_year_start_month: i32,
    part_year: String,
    definition: String,
    source_document: Option<String>,
}

pub(crate) const VERSION_COLS: &str = "id, community_id, utility, customer_class, name, effective_from, effective_to, \
     tier_basis, tier_year_start_month, part_year, definition, source_document";

impl VersionRow {
    pub(crate) fn into_version(self) -> Result<TariffVersion, StoreError> {
        let bad = |reason: String| StoreError::Refused {
            what: "reading a tariff version",
            reason,
        };
        Ok(TariffVersion {
            id: self.id,
            community_id: self.community_id,
            utility: self.utility.parse().map_err(bad)?,
            customer_class: self.customer_class,
            name: self.name,
            effective_from: self.effective_from,
            effective_to: self.effective_to,
            tier_basis: TierBasis::parse(&self.tier_basis).map_err(bad)?,
            tier_year_start_month: self.tier_year_start_month as u32,
            part_year: PartYear::parse(&self.part_year).map_err(bad)?,
            definition: serde_json::from_str::<TariffDefinition>(&self.definition)
                .map_err(|e| bad(format!("tariff {} definition: {e}", self.id)))?,
            source_document: self.source_document,
        })
    }
}

/// What adding versions did.
#[derive(Debug, Clone, Serialize)]
pub struct TariffImportReport {
    pub added: Vec<TariffVersion>,
    /// Versions already stored with the same definition (an import run twice).
    pub unchanged: usize,
}

impl Store {
    /// Add tariff versions, all or none, in one transaction. A version identical to a stored
    /// one (same community, utility, class and effective date, same definition) is counted as
    /// unchanged; a different one with the same key is refused: versions are never edited, a
    /// correction is a new version with a later effective date.
    pub async fn add_tariff_versions(
        &self,
        specs: &[TariffSpec],
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TariffImportReport, StoreError> {
        for s in specs {
            s.validate().map_err(|reason| StoreError::Refused {
                what: "adding a tariff version",
                reason,
            })?;
        }
        let what = "adding tariff versions";
        in_tx!(self, what, |tx| {
            let mut added = Vec::new();
            let mut unchanged = 0;
            for spec in specs {
                let community_id: i64 = sqlx::query_scalar("SELECT id FROM communities WHERE code = $1")
                    .bind(&spec.community)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?
                    .ok_or_else(|| StoreError::NotFound(format!("community {:?}", spec.community)))?;
                let definition = serde_json::to_string(&spec.definition()).expect("serialisable");
                let existing: Option<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {VERSION_COLS} FROM tariff_versions WHERE community_id = $1 AND utility = $2 \
                     AND customer_class = $3 AND effective_from = $4"
                )))
                .bind(community_id)
                .bind(spec.utility.as_str())
                .bind(&spec.customer_class)
                .bind(spec.effective_from)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
                if let Some(row) = existing {
                    let v = row.into_version()?;
                    if v.definition == spec.definition()
                        && v.tier_basis == spec.tier_basis
                        && v.effective_to == spec.effective_to
                        && v.tier_year_start_month == spec.tier_year_start_month
                        && v.part_year == spec.part_year
                    {
                        unchanged += 1;
                        continue;
                    }
                    return Err(StoreError::Refused {
                        what,
                        reason: format!(
                            "{} already has a different {} tariff for {} effective {}; versions are never edited — add a new version with a later effective date",
                            spec.community, spec.utility, spec.customer_class, spec.effective_from
                        ),
                    });
                }
                let row: VersionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO tariff_versions (community_id, utility, customer_class, name, effective_from, effective_to, \
                     tier_basis, tier_year_start_month, part_year, definition, source_document, created_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {VERSION_COLS}"
                )))
                .bind(community_id)
                .bind(spec.utility.as_str())
                .bind(&spec.customer_class)
                .bind(&spec.name)
                .bind(spec.effective_from)
                .bind(spec.effective_to)
                .bind(spec.tier_basis.as_str())
                .bind(spec.tier_year_start_month as i32)
                .bind(spec.part_year.as_str())
                .bind(&definition)
                .bind(&spec.source_document)
                .bind(now)
                .bind(actor)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
                let v = row.into_version()?;
                let rec = AuditRecord {
                    actor: actor.into(),
                    action: "tariff.add".into(),
                    subject_type: "tariff_version".into(),
                    subject_id: v.id.to_string(),
                    before: None,
                    after: Some(serde_json::to_value(&v).unwrap_or_default()),
                    reason: None,
                    request_id: request_id.map(str::to_string),
                };
                insert_audit!(&mut *tx, &rec, now)?;
                added.push(v);
            }
            Ok(TariffImportReport { added, unchanged })
        })
    }

    /// A community's versions, optionally of one utility, by utility, class and date.
    pub async fn tariff_versions(
        &self,
        community_id: i64,
        utility: Option<Utility>,
    ) -> Result<Vec<TariffVersion>, StoreError> {
        let rows: Vec<VersionRow> = on_read!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {VERSION_COLS} FROM tariff_versions WHERE community_id = $1 AND ($2 IS NULL OR utility = $2) \
                 ORDER BY utility, customer_class, effective_from"
            )))
            .bind(community_id)
            .bind(utility.map(|u| u.as_str()))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing tariff versions", e))
        })?;
        rows.into_iter().map(VersionRow::into_version).collect()
    }
}

/// The `meterpay tariffs import` file: one `[[tariff]]` table per version.
///
/// ```toml
/// [[tariff]]
/// community = "DEMO"
/// utility = "electricity"            # or "water"
/// customer_class = "residential"     # all (default), residential, non_residential
/// name = "Residential electricity"
/// effective_from = 2026-01-01        # a TOML date or "YYYY-MM-DD"
/// # effective_to = 2027-01-01        # first day no longer in effect; default: until the next version
/// tier_basis = "annual"              # period (default) or annual
/// tier_year_start_month = 1          # annual ladder: the month the tier year starts (default 1)
/// part_year = "started_month"        # started_month (default), whole_months, none
/// thresholds = ["2880", "4800"]      # upper bounds of tiers 1..n-1 (inclusive), as strings
/// source_document = "京发改〔2012〕xxx号"
///
/// [[tariff.components]]
/// kind = "energy"
/// name = "Electricity"
/// prices = ["0.4883", "0.5383", "0.7883"]   # yuan per unit, one per tier or one for all
/// # tou = { peak = ["0.617", "0.677", "0.977"], valley = ["0.307", "0.337", "0.487"] }
/// # quantity_factor = "0.9"                  # e.g. sewage on 90 % of volume
/// # payable = "sewage"                       # credit payable:sewage instead of revenue
///
/// [[tariff.fixed]]                   # per bill
/// name = "Meter service"
/// amount = "2.00"
///
/// [[tariff.per_area]]                # per m² of the premises per bill
/// name = "Shared lighting"
/// price = "0.05"
/// ```
///
/// Prices and quantities are strings so they are read exactly (a TOML float is refused).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffFile {
    pub tariff: Vec<TariffSpec>,
}

impl TariffFile {
    pub fn parse(text: &str) -> Result<TariffFile, String> {
        let f: TariffFile = toml::from_str(text).map_err(|e| format!("the tariff file is not valid: {e}"))?;
        if f.tariff.is_empty() {
            return Err("the tariff file has no [[tariff]] tables".into());
        }
        for t in &f.tariff {
            t.validate()?;
        }
        Ok(f)
    }
}
