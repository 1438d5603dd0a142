//! The audit log: who changed what, when, with before/after. Append-only (enforced by triggers).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{on_read, on_write, Store, StoreError};

/// One change by a person, a token or the system.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
}

/// A stored audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
}

pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (at, actor, action, subject_type, subject_id, before_json, after_json, reason, request_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Bind an [`AuditRecord`] to [`INSERT_AUDIT`] and execute it on `$exec` (a pool or transaction).
macro_rules! insert_audit {
    ($exec:expr, $rec:expr, $now:expr) => {{
        let rec: &$crate::store::audit::AuditRecord = $rec;
        sqlx::query($crate::store::audit::INSERT_AUDIT)
            .bind($now)
            .bind(&rec.actor)
            .bind(&rec.action)
            .bind(&rec.subject_type)
            .bind(&rec.subject_id)
            .bind(rec.before.as_ref().map(|v| v.to_string()))
            .bind(rec.after.as_ref().map(|v| v.to_string()))
            .bind(&rec.reason)
            .bind(&rec.request_id)
            .execute($exec)
            .await
            .map_err(|e| $crate::store::StoreError::db("writing the audit log", e))
    }};
}
pub(crate) use insert_audit;

impl Store {
    pub async fn record_audit(&self, rec: &AuditRecord, now: DateTime<Utc>) -> Result<(), StoreError> {
        on_write!(self, |pool| insert_audit!(pool, rec, now).map(|_| ()))
    }

    pub async fn audit_for(&self, subject_type: &str, subject_id: &str) -> Result<Vec<AuditRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, AuditRow>(
                "SELECT id, at, actor, action, subject_type, subject_id, before_json, after_json, reason, request_id \
                 FROM audit_log WHERE subject_type = $1 AND subject_id = $2 ORDER BY id",
            )
            .bind(subject_type)
            .bind(subject_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading the audit log", e))
        })
    }
}

impl Store {
    /// The latest `limit` audit records, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, AuditRow>(
                "SELECT id, at, actor, action, subject_type, subject_id, before_json, after_json, reason, request_id \
                 FROM audit_log ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("reading the audit log", e))
        })
    }
}
