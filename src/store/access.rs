//! Staff API tokens: stored as SHA-256, shown once.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::audit::{insert_audit, AuditRecord};
use super::{in_tx, on_read, Store, StoreError};

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenOwner {
    pub id: i64,
    pub name: String,
    pub role: String,
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Create a token; returns the token text (shown once).
    pub async fn create_api_token(
        &self,
        name: &str,
        role: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        use rand::Rng;
        let token = format!("mp_{}", hex::encode(rand::rng().random::<[u8; 24]>()));
        let hash = token_hash(&token);
        let what = "creating an API token";
        in_tx!(self, what, |tx| {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(name)
            .bind(role)
            .bind(&hash)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: "api_token.create".into(),
                subject_type: "api_token".into(),
                subject_id: id.to_string(),
                before: None,
                after: Some(serde_json::json!({"name": name, "role": role})),
                reason: None,
                request_id: None,
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(token.clone())
        })
    }

    pub async fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, TokenOwner>(
                "SELECT id, name, role FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
            )
            .bind(token_hash(token))
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("checking an API token", e))
        })
    }
}

/// An API token as listed to admins (never the token or its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

impl Store {
    /// Every token, newest first, revoked ones included (marked).
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiTokenInfo>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, ApiTokenInfo>(
                "SELECT id, name, role, created_at, revoked_at, revoked_by FROM api_tokens ORDER BY id DESC",
            )
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing API tokens", e))
        })
    }

    /// Revoke a token (idempotent: revoking a revoked token changes nothing and is not audited
    /// again). Returns the token as it now is.
    pub async fn revoke_api_token(&self, id: i64, actor: &str, now: DateTime<Utc>) -> Result<ApiTokenInfo, StoreError> {
        let what = "revoking an API token";
        in_tx!(self, what, |tx| {
            let revoked: Option<ApiTokenInfo> = sqlx::query_as(
                "UPDATE api_tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL \
                 RETURNING id, name, role, created_at, revoked_at, revoked_by",
            )
            .bind(id)
            .bind(now)
            .bind(actor)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            match revoked {
                Some(info) => {
                    let rec = AuditRecord {
                        actor: actor.into(),
                        action: "api_token.revoke".into(),
                        subject_type: "api_token".into(),
                        subject_id: id.to_string(),
                        before: Some(serde_json::json!({"revoked": false})),
                        after: Some(serde_json::json!({"revoked": true, "name": info.name, "role": info.role})),
                        reason: None,
                        request_id: None,
                    };
                    insert_audit!(&mut *tx, &rec, now)?;
                    Ok(info)
                }
                None => {
                    let existing: Option<ApiTokenInfo> = sqlx::query_as(
                        "SELECT id, name, role, created_at, revoked_at, revoked_by FROM api_tokens WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                    existing.ok_or_else(|| StoreError::NotFound(format!("API token {id}")))
                }
            }
        })
    }
}
