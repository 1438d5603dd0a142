//! Reads the staff and resident pages need that no other step offers, and the resident
//! look-up's attempt log (migration 0010).
//!
//! Nothing here writes business data: the pages change things only through the owning step's
//! store methods (reviewing a reading, running bills, …), which keep their own audit records.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::{insert_audit, AuditRecord};
use super::directory::{Account, Meter};
use super::{in_tx, on_read, Store, StoreError};

/// A community with the counts its overview shows.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CommunityCounts {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub accounts: i64,
    pub meters: i64,
    pub held_readings: i64,
}

/// A reminder as the operator's history lists it (no recipient, no content).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReminderListRow {
    pub id: i64,
    pub account_id: i64,
    pub account_code: String,
    pub track: String,
    pub step: String,
    pub channel: String,
    pub provider: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One point of an account's usage history: a utility's quantity in a billing period.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UsagePoint {
    pub utility: String,
    pub period: String,
    pub quantity_e4: i64,
}

const ACCOUNT_COLS: &str =
    "id, community_id, premises_id, code, name, phone, mobile, email, credit_rating, payment_mode, status, \
     customer_class, opened_on, low_balance_fen";
const METER_COLS: &str =
    "id, community_id, account_id, premises_id, meter_no, utility, model, digit_count, multiplier_e4, installed_on, removed_on";

impl Store {
    /// Every community with its number of accounts, meters and held readings.
    pub async fn community_counts(&self) -> Result<Vec<CommunityCounts>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, CommunityCounts>(
                "SELECT c.id, c.code, c.name, \
                 CAST((SELECT COUNT(*) FROM accounts a WHERE a.community_id = c.id) AS BIGINT) AS accounts, \
                 CAST((SELECT COUNT(*) FROM meters m WHERE m.community_id = c.id) AS BIGINT) AS meters, \
                 CAST((SELECT COUNT(*) FROM readings r JOIN meters m ON m.id = r.meter_id \
                       WHERE m.community_id = c.id AND r.status = 'held') AS BIGINT) AS held_readings \
                 FROM communities c ORDER BY c.code",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("counting the communities' accounts and meters", e))
        })
    }

    /// One account by its id.
    pub async fn account_by_id(&self, id: i64) -> Result<Option<Account>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Account>(sqlx::AssertSqlSafe(format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding an account", e))
        })
    }

    /// One meter by its id.
    pub async fn meter_by_id(&self, id: i64) -> Result<Option<Meter>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Meter>(sqlx::AssertSqlSafe(format!(
                "SELECT {METER_COLS} FROM meters WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding a meter", e))
        })
    }

    /// Every meter of a community, by meter number.
    pub async fn meters_of_community(&self, community_id: i64) -> Result<Vec<Meter>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, Meter>(sqlx::AssertSqlSafe(format!(
                "SELECT {METER_COLS} FROM meters WHERE community_id = $1 ORDER BY utility, meter_no"
            )))
            .bind(community_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing a community's meters", e))
        })
    }

    /// A community's reminders, newest first, at most `limit`, optionally of one account.
    pub async fn reminder_history(
        &self,
        community_id: i64,
        account_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReminderListRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ReminderListRow>(
                "SELECT o.id, o.account_id, a.code AS account_code, o.track, o.step, o.channel, o.provider, o.status, \
                 o.attempts, o.last_error, o.created_at, o.sent_at, o.delivered_at \
                 FROM reminder_outbox o JOIN accounts a ON a.id = o.account_id \
                 WHERE o.community_id = $1 AND ($2 IS NULL OR o.account_id = $2) \
                 ORDER BY o.created_at DESC, o.id DESC LIMIT $3",
            )
            .bind(community_id)
            .bind(account_id)
            .bind(limit.clamp(1, 1000))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing reminder history", e))
        })
    }

    /// An account's billed usage per utility and period, oldest first (the resident's chart).
    pub async fn usage_history(&self, account_id: i64, limit: i64) -> Result<Vec<UsagePoint>, StoreError> {
        let mut rows = on_read!(self, |pool| {
            sqlx::query_as::<_, UsagePoint>(
                "SELECT u.utility, u.usage_period AS period, CAST(SUM(u.quantity_e4) AS BIGINT) AS quantity_e4 \
                 FROM bill_usage u JOIN bills b ON b.id = u.bill_id \
                 WHERE u.account_id = $1 AND b.kind = 'regular' AND b.status = 'issued' \
                 GROUP BY u.utility, u.usage_period ORDER BY u.usage_period DESC, u.utility LIMIT $2",
            )
            .bind(account_id)
            .bind(limit.clamp(1, 240))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading an account's usage history", e))
        })?;
        rows.reverse();
        Ok(rows)
    }

    /// Failed resident look-ups since `since` for an account key and for a source address.
    pub async fn recent_lookup_failures(
        &self,
        account_key: &str,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        let what = "counting failed account look-ups";
        on_read!(self, |pool| {
            let by_key: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM resident_lookups WHERE account_key = $1 AND NOT succeeded AND at > $2 \
                 AND at > COALESCE((SELECT MAX(at) FROM resident_lookups WHERE account_key = $1 AND succeeded), $2)",
            )
            .bind(account_key)
            .bind(since)
            .fetch_one(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let by_source: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM resident_lookups WHERE source = $1 AND NOT succeeded AND at > $2",
            )
            .bind(source)
            .bind(since)
            .fetch_one(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            Ok((by_key, by_source))
        })
    }

    /// Record a resident look-up (and, when it failed, its audit record).
    pub async fn record_lookup(
        &self,
        account_key: &str,
        source: &str,
        succeeded: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = "recording an account look-up";
        in_tx!(self, what, |tx| {
            sqlx::query("INSERT INTO resident_lookups (at, account_key, source, succeeded) VALUES ($1, $2, $3, $4)")
                .bind(now)
                .bind(account_key)
                .bind(source)
                .bind(succeeded)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: format!("resident@{source}"),
                action: if succeeded {
                    "resident.lookup".into()
                } else {
                    "resident.lookup_failed".into()
                },
                subject_type: "account".into(),
                subject_id: account_key.into(),
                before: None,
                after: None,
                reason: None,
                request_id: None,
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(())
        })
    }
}

impl Store {
    /// A premises' address as `building-unit-door` parts, if there is one.
    pub async fn premises_address(&self, premises_id: i64) -> Result<Option<(String, String, String)>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, (String, String, String)>("SELECT building, unit, door_no FROM premises WHERE id = $1")
                .bind(premises_id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("reading a premises' address", e))
        })
    }
}
