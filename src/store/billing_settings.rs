//! Per-community billing settings: due dates, allocation order, late-fee policy, usage alerts.
//! A community without a row uses the defaults.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::audit::{insert_audit, AuditRecord};
use super::{in_tx, on_read, Store, StoreError};
use crate::domain::ids::Utility;
use crate::domain::late_fee::{AllocationOrder, LateFeePolicy};
use crate::domain::{Fen, Period};

/// A community's billing settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// Bills are due on this day of the month after their period (1–28); when unset, they are
    /// due `due_days_after_issue` days after they are issued.
    #[serde(default)]
    pub due_day_of_month: Option<i32>,
    #[serde(default = "fifteen")]
    pub due_days_after_issue: i32,
    /// The order a payment settles open bills in.
    #[serde(default = "oldest")]
    pub allocation_order: AllocationOrder,
    /// Within a bill, settle the late fee before the principal.
    #[serde(default)]
    pub penalty_first: bool,
    #[serde(default)]
    pub late_fee_grace_days: i32,
    /// Daily late-fee rates in parts per million (1‰ = 1000).
    #[serde(default = "r1")]
    pub late_fee_residential_ppm: i64,
    #[serde(default = "r2")]
    pub late_fee_current_year_ppm: i64,
    #[serde(default = "r3")]
    pub late_fee_cross_year_ppm: i64,
    /// A late fee below this (fen) is charged this (1.00 yuan = 100).
    #[serde(default = "hundred")]
    pub late_fee_min_fen: i64,
    /// Cap on a bill's late fee, basis points of its principal.
    #[serde(default)]
    pub late_fee_cap_bp: Option<i64>,
    /// Utilities whose charges bear late fees.
    #[serde(default = "electricity_only")]
    pub late_fee_utilities: Vec<Utility>,
    /// Usage above this multiple × 100 of the account's average raises an alert (300 = 3×).
    #[serde(default = "three_hundred")]
    pub usage_alert_multiple_e2: i64,
}

fn fifteen() -> i32 {
    15
}
fn oldest() -> AllocationOrder {
    AllocationOrder::OldestFirst
}
fn r1() -> i64 {
    1000
}
fn r2() -> i64 {
    2000
}
fn r3() -> i64 {
    3000
}
fn hundred() -> i64 {
    100
}
fn electricity_only() -> Vec<Utility> {
    vec![Utility::Electricity]
}
fn three_hundred() -> i64 {
    300
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            due_day_of_month: None,
            due_days_after_issue: fifteen(),
            allocation_order: oldest(),
            penalty_first: false,
            late_fee_grace_days: 0,
            late_fee_residential_ppm: r1(),
            late_fee_current_year_ppm: r2(),
            late_fee_cross_year_ppm: r3(),
            late_fee_min_fen: hundred(),
            late_fee_cap_bp: None,
            late_fee_utilities: electricity_only(),
            usage_alert_multiple_e2: three_hundred(),
        }
    }
}

impl BillingSettings {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(d) = self.due_day_of_month {
            if !(1..=28).contains(&d) {
                return Err("due_day_of_month must be 1 to 28".into());
            }
        }
        if !(0..=366).contains(&self.due_days_after_issue) {
            return Err("due_days_after_issue must be 0 to 366".into());
        }
        if self.late_fee_grace_days < 0 {
            return Err("late_fee_grace_days cannot be negative".into());
        }
        for (n, v) in [
            ("late_fee_residential_ppm", self.late_fee_residential_ppm),
            ("late_fee_current_year_ppm", self.late_fee_current_year_ppm),
            ("late_fee_cross_year_ppm", self.late_fee_cross_year_ppm),
            ("late_fee_min_fen", self.late_fee_min_fen),
        ] {
            if v < 0 {
                return Err(format!("{n} cannot be negative"));
            }
        }
        if self.late_fee_cap_bp.is_some_and(|c| c < 0) {
            return Err("late_fee_cap_bp cannot be negative".into());
        }
        if self.usage_alert_multiple_e2 <= 100 {
            return Err("usage_alert_multiple_e2 must be above 100 (more than the average)".into());
        }
        Ok(())
    }

    /// The due date of a bill for `period` issued on `issued`.
    pub fn due_date(&self, period: Period, issued: NaiveDate) -> NaiveDate {
        match self.due_day_of_month {
            Some(day) => NaiveDate::from_ymd_opt(period.next().year(), period.next().month(), day as u32)
                .expect("day 1 to 28 exists in every month"),
            None => issued + chrono::Duration::days(self.due_days_after_issue as i64),
        }
    }

    pub fn late_fee_policy(&self) -> LateFeePolicy {
        LateFeePolicy {
            grace_days: self.late_fee_grace_days as i64,
            residential_ppm: self.late_fee_residential_ppm,
            current_year_ppm: self.late_fee_current_year_ppm,
            cross_year_ppm: self.late_fee_cross_year_ppm,
            minimum: Fen::new(self.late_fee_min_fen),
            cap_bp: self.late_fee_cap_bp,
        }
    }

    pub fn alert_multiple(&self) -> Decimal {
        Decimal::new(self.usage_alert_multiple_e2, 2)
    }
}

#[derive(sqlx::FromRow)]
#[doc(hidden)]
pub struct SettingsRow {
    due_day_of_month: Option<i32>,
    due_days_after_issue: i32,
    allocation_order: String,
    penalty_first: bool,
    late_fee_grace_days: i32,
    late_fee_residential_ppm: i64,
    late_fee_current_year_ppm: i64,
    late_fee_cross_year_ppm: i64,
    late_fee_min_fen: i64,
    late_fee_cap_bp: Option<i64>,
    late_fee_utilities: String,
    usage_alert_multiple_e2: i64,
}

impl SettingsRow {
    pub fn into_settings(self) -> BillingSettings {
        BillingSettings {
            due_day_of_month: self.due_day_of_month,
            due_days_after_issue: self.due_days_after_issue,
            allocation_order: AllocationOrder::parse(&self.allocation_order).unwrap_or(AllocationOrder::OldestFirst),
            penalty_first: self.penalty_first,
            late_fee_grace_days: self.late_fee_grace_days,
            late_fee_residential_ppm: self.late_fee_residential_ppm,
            late_fee_current_year_ppm: self.late_fee_current_year_ppm,
            late_fee_cross_year_ppm: self.late_fee_cross_year_ppm,
            late_fee_min_fen: self.late_fee_min_fen,
            late_fee_cap_bp: self.late_fee_cap_bp,
            late_fee_utilities: self
                .late_fee_utilities
                .split(',')
                .filter_map(|u| u.trim().parse().ok())
                .collect(),
            usage_alert_multiple_e2: self.usage_alert_multiple_e2,
        }
    }
}

pub(crate) const SETTINGS_SQL: &str =
    "SELECT due_day_of_month, due_days_after_issue, allocation_order, penalty_first, \
     late_fee_grace_days, late_fee_residential_ppm, late_fee_current_year_ppm, late_fee_cross_year_ppm, \
     late_fee_min_fen, late_fee_cap_bp, late_fee_utilities, usage_alert_multiple_e2 \
     FROM billing_settings WHERE community_id = $1";

/// A community's settings read inside an open transaction (defaults when unset).
macro_rules! billing_settings_in_tx {
    ($tx:expr, $community_id:expr) => {{
        let row: Option<$crate::store::billing_settings::SettingsRow> =
            sqlx::query_as($crate::store::billing_settings::SETTINGS_SQL)
                .bind($community_id)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(|e| $crate::store::StoreError::db("reading billing settings", e))?;
        row.map(|r| r.into_settings()).unwrap_or_default()
    }};
}
pub(crate) use billing_settings_in_tx;

impl Store {
    pub async fn billing_settings(&self, community_id: i64) -> Result<BillingSettings, StoreError> {
        let row: Option<SettingsRow> = on_read!(self, |pool| {
            sqlx::query_as(SETTINGS_SQL)
                .bind(community_id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("reading billing settings", e))
        })?;
        Ok(row.map(SettingsRow::into_settings).unwrap_or_default())
    }

    /// Replace a community's settings (audited with before and after).
    pub async fn set_billing_settings(
        &self,
        community_id: i64,
        settings: &BillingSettings,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<BillingSettings, StoreError> {
        settings.validate().map_err(|reason| StoreError::Refused {
            what: "changing billing settings",
            reason,
        })?;
        let before = self.billing_settings(community_id).await?;
        let what = "changing billing settings";
        let utilities: Vec<&str> = settings.late_fee_utilities.iter().map(|u| u.as_str()).collect();
        in_tx!(self, what, |tx| {
            sqlx::query(
                "INSERT INTO billing_settings (community_id, due_day_of_month, due_days_after_issue, allocation_order, penalty_first, \
                 late_fee_grace_days, late_fee_residential_ppm, late_fee_current_year_ppm, late_fee_cross_year_ppm, late_fee_min_fen, \
                 late_fee_cap_bp, late_fee_utilities, usage_alert_multiple_e2, updated_at, updated_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (community_id) DO UPDATE SET due_day_of_month = excluded.due_day_of_month, \
                 due_days_after_issue = excluded.due_days_after_issue, allocation_order = excluded.allocation_order, \
                 penalty_first = excluded.penalty_first, late_fee_grace_days = excluded.late_fee_grace_days, \
                 late_fee_residential_ppm = excluded.late_fee_residential_ppm, late_fee_current_year_ppm = excluded.late_fee_current_year_ppm, \
                 late_fee_cross_year_ppm = excluded.late_fee_cross_year_ppm, late_fee_min_fen = excluded.late_fee_min_fen, \
                 late_fee_cap_bp = excluded.late_fee_cap_bp, late_fee_utilities = excluded.late_fee_utilities, \
                 usage_alert_multiple_e2 = excluded.usage_alert_multiple_e2, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            )
            .bind(community_id)
            .bind(settings.due_day_of_month)
            .bind(settings.due_days_after_issue)
            .bind(settings.allocation_order.as_str())
            .bind(settings.penalty_first)
            .bind(settings.late_fee_grace_days)
            .bind(settings.late_fee_residential_ppm)
            .bind(settings.late_fee_current_year_ppm)
            .bind(settings.late_fee_cross_year_ppm)
            .bind(settings.late_fee_min_fen)
            .bind(settings.late_fee_cap_bp)
            .bind(utilities.join(","))
            .bind(settings.usage_alert_multiple_e2)
            .bind(now)
            .bind(actor)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "billing_settings.update".into(),
                subject_type: "community".into(),
                subject_id: community_id.to_string(),
                before: Some(serde_json::to_value(&before).unwrap_or_default()),
                after: Some(serde_json::to_value(settings).unwrap_or_default()),
                reason: None,
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(settings.clone())
        })
    }
}
