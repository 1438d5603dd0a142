//! Communities (tenants), premises, customer accounts and meters: the seed records.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::audit::{insert_audit, AuditRecord};
use super::{in_tx, on_read, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Community {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub timezone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Premises {
    pub id: i64,
    pub community_id: i64,
    pub building: String,
    pub unit: String,
    pub door_no: String,
    pub kind: String,
    pub area_m2_e2: Option<i64>,
    pub occupied: bool,
}

/// A customer account (the seeds' customer record plus its premises).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Account {
    pub id: i64,
    pub community_id: i64,
    pub premises_id: Option<i64>,
    pub code: String,
    pub name: String,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub email: Option<String>,
    pub credit_rating: String,
    pub payment_mode: String,
    pub status: String,
    /// `residential` or `non_residential` (late-fee rates, tariffs by class).
    pub customer_class: String,
    /// When the account was opened (pro-rates annual tiers in its first tier year).
    pub opened_on: Option<NaiveDate>,
    /// Prepaid reminders: the credit balance (fen) below which to remind.
    pub low_balance_fen: Option<i64>,
}

/// What it takes to open an account at an address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAccount {
    pub code: String,
    pub name: String,
    pub building: String,
    pub unit: String,
    pub door_no: String,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub email: Option<String>,
    #[serde(default = "default_credit")]
    pub credit_rating: String,
    #[serde(default = "default_mode")]
    pub payment_mode: String,
}

fn default_credit() -> String {
    "normal".into()
}
fn default_mode() -> String {
    "postpaid".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Meter {
    pub id: i64,
    pub community_id: i64,
    pub account_id: Option<i64>,
    pub premises_id: Option<i64>,
    pub meter_no: String,
    pub utility: String,
    pub model: Option<String>,
    pub digit_count: i32,
    pub multiplier_e4: i64,
    pub installed_on: NaiveDate,
    pub removed_on: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMeter {
    pub meter_no: String,
    pub utility: crate::domain::ids::Utility,
    pub model: Option<String>,
    pub digit_count: i32,
    /// CT ratio; 1 for direct-connected meters.
    pub multiplier: crate::domain::Quantity,
    pub installed_on: NaiveDate,
}

const COMMUNITY_COLS: &str = "id, code, name, timezone";
const ACCOUNT_COLS: &str =
    "id, community_id, premises_id, code, name, phone, mobile, email, credit_rating, payment_mode, status, \
     customer_class, opened_on, low_balance_fen";
const METER_COLS: &str =
    "id, community_id, account_id, premises_id, meter_no, utility, model, digit_count, multiplier_e4, installed_on, removed_on";

impl Store {
    /// Create a community, or return the existing one with that code (idempotent by code).
    pub async fn ensure_community(
        &self,
        code: &str,
        name: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Community, bool), StoreError> {
        let what = "creating a community";
        in_tx!(self, what, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO communities (code, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (code) DO NOTHING",
            )
            .bind(code)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?
            .rows_affected()
                == 1;
            let c = sqlx::query_as::<_, Community>(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMUNITY_COLS} FROM communities WHERE code = $1"
            )))
            .bind(code)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            if inserted {
                let rec = AuditRecord {
                    actor: actor.into(),
                    action: "community.create".into(),
                    subject_type: "community".into(),
                    subject_id: c.id.to_string(),
                    before: None,
                    after: Some(serde_json::to_value(&c).unwrap_or_default()),
                    reason: None,
                    request_id: None,
                };
                insert_audit!(&mut *tx, &rec, now)?;
            }
            Ok((c, inserted))
        })
    }

    pub async fn community_by_code(&self, code: &str) -> Result<Option<Community>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Community>(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMUNITY_COLS} FROM communities WHERE code = $1"
            )))
            .bind(code)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding a community", e))
        })
    }

    pub async fn list_communities(&self) -> Result<Vec<Community>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Community>(sqlx::AssertSqlSafe(format!(
                "SELECT {COMMUNITY_COLS} FROM communities ORDER BY code"
            )))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing communities", e))
        })
    }

    /// Open an account at an address (the premises is created if new). A second account with the
    /// same code in the community is refused as a duplicate.
    pub async fn create_account(
        &self,
        community_id: i64,
        new: &NewAccount,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Account, StoreError> {
        let what = "opening an account";
        in_tx!(self, what, |tx| {
            sqlx::query(
                "INSERT INTO premises (community_id, building, unit, door_no, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (community_id, building, unit, door_no) DO NOTHING",
            )
            .bind(community_id)
            .bind(&new.building)
            .bind(&new.unit)
            .bind(&new.door_no)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let premises_id: i64 = sqlx::query_scalar(
                "SELECT id FROM premises WHERE community_id = $1 AND building = $2 AND unit = $3 AND door_no = $4",
            )
            .bind(community_id)
            .bind(&new.building)
            .bind(&new.unit)
            .bind(&new.door_no)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let account = sqlx::query_as::<_, Account>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO accounts (community_id, premises_id, code, name, phone, mobile, email, credit_rating, payment_mode, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {ACCOUNT_COLS}"
            )))
            .bind(community_id)
            .bind(premises_id)
            .bind(&new.code)
            .bind(&new.name)
            .bind(&new.phone)
            .bind(&new.mobile)
            .bind(&new.email)
            .bind(&new.credit_rating)
            .bind(&new.payment_mode)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "account.create".into(),
                subject_type: "account".into(),
                subject_id: account.id.to_string(),
                before: None,
                after: Some(serde_json::json!({"code": account.code, "community_id": community_id})),
                reason: None,
                request_id: None,
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(account)
        })
    }

    pub async fn account_by_code(&self, community_id: i64, code: &str) -> Result<Option<Account>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Account>(sqlx::AssertSqlSafe(format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE community_id = $1 AND code = $2"
            )))
            .bind(community_id)
            .bind(code)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding an account", e))
        })
    }

    pub async fn list_accounts(&self, community_id: i64) -> Result<Vec<Account>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Account>(sqlx::AssertSqlSafe(format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE community_id = $1 ORDER BY code"
            )))
            .bind(community_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing accounts", e))
        })
    }

    /// Install a meter for an account. The meter number is unique per utility.
    pub async fn install_meter(
        &self,
        account: &Account,
        new: &NewMeter,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Meter, StoreError> {
        let what = "installing a meter";
        in_tx!(self, what, |tx| {
            let meter = sqlx::query_as::<_, Meter>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO meters (community_id, account_id, premises_id, meter_no, utility, model, digit_count, multiplier_e4, installed_on, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {METER_COLS}"
            )))
            .bind(account.community_id)
            .bind(account.id)
            .bind(account.premises_id)
            .bind(&new.meter_no)
            .bind(new.utility.as_str())
            .bind(&new.model)
            .bind(new.digit_count)
            .bind(new.multiplier.to_scaled())
            .bind(new.installed_on)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "meter.install".into(),
                subject_type: "meter".into(),
                subject_id: meter.id.to_string(),
                before: None,
                after: Some(serde_json::to_value(&meter).unwrap_or_default()),
                reason: None,
                request_id: None,
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(meter)
        })
    }

    pub async fn meters_of_account(&self, account_id: i64) -> Result<Vec<Meter>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Meter>(sqlx::AssertSqlSafe(format!(
                "SELECT {METER_COLS} FROM meters WHERE account_id = $1 ORDER BY utility, meter_no"
            )))
            .bind(account_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing an account's meters", e))
        })
    }

    pub async fn meter_by_number(&self, utility: &str, meter_no: &str) -> Result<Option<Meter>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Meter>(sqlx::AssertSqlSafe(format!(
                "SELECT {METER_COLS} FROM meters WHERE utility = $1 AND meter_no = $2"
            )))
            .bind(utility)
            .bind(meter_no)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding a meter", e))
        })
    }
}
