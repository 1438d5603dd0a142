//! Staff users, their sessions and sign-in attempts (migration 0005).
//!
//! Every change is written to the audit log in the same transaction as the change itself:
//! `staff_user.create`, `staff_user.role_change` (before/after role), `staff_user.password_change`
//! (never the hash), `staff_user.disable`, `staff.sign_in`, `staff.sign_out`,
//! `staff.sign_in_failed` (with the source address) and `staff.locked_out`.
//!
//! Sessions are looked up by the SHA-256 of the cookie value; a session is valid while it is not
//! revoked, not expired (`expires_at > now`) and its user is not disabled.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::access::token_hash;
use super::audit::{insert_audit, AuditRecord};
use super::{in_tx, on_read, Store, StoreError};
use crate::access::{Lock, Role, UserName};

/// A staff user as shown to admins (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StaffUser {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// What sign-in needs: the user and their password hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaffCredentials {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A live session with its user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: i64,
    pub user_id: i64,
    pub name: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new session to store at sign-in.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// The cookie value (only its SHA-256 is stored).
    pub token: &'a str,
    pub csrf_token: &'a str,
    pub source: &'a str,
    pub expires_at: DateTime<Utc>,
}

fn audit(
    actor: &str,
    action: &str,
    subject: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> AuditRecord {
    AuditRecord {
        actor: actor.into(),
        action: action.into(),
        subject_type: "staff_user".into(),
        subject_id: subject.into(),
        before,
        after,
        reason: None,
        request_id: None,
    }
}

const USER_COLUMNS: &str = "id, name, role, created_at, disabled_at";

impl Store {
    /// Create a staff user with an already-hashed password.
    pub async fn create_staff_user(
        &self,
        name: &UserName,
        role: Role,
        password_hash: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<StaffUser, StoreError> {
        let what = "creating a staff user";
        in_tx!(self, what, |tx| {
            let user: StaffUser = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO staff_users (name, role, password_hash, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) RETURNING {USER_COLUMNS}"
            )))
            .bind(name.as_str())
            .bind(role.as_str())
            .bind(password_hash)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = audit(
                actor,
                "staff_user.create",
                name.as_str(),
                None,
                Some(json!({"name": name.as_str(), "role": role.as_str()})),
            );
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(user)
        })
    }

    pub async fn staff_user(&self, name: &str) -> Result<Option<StaffUser>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, StaffUser>(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM staff_users WHERE name = $1"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading a staff user", e))
        })
    }

    pub async fn list_staff_users(&self) -> Result<Vec<StaffUser>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, StaffUser>(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM staff_users ORDER BY name"
            )))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing staff users", e))
        })
    }

    pub async fn staff_credentials(&self, name: &str) -> Result<Option<StaffCredentials>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, StaffCredentials>(
                "SELECT id, name, role, password_hash, disabled_at FROM staff_users WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading staff credentials", e))
        })
    }

    /// Change a user's role; the audit record carries the old and new role.
    pub async fn set_staff_role(
        &self,
        name: &str,
        role: Role,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<StaffUser, StoreError> {
        let what = "changing a staff user's role";
        in_tx!(self, what, |tx| {
            let before: Option<String> = sqlx::query_scalar("SELECT role FROM staff_users WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let before = before.ok_or_else(|| StoreError::NotFound(format!("staff user {name}")))?;
            let user: StaffUser = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE staff_users SET role = $2, updated_at = $3 WHERE name = $1 RETURNING {USER_COLUMNS}"
            )))
            .bind(name)
            .bind(role.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = audit(
                actor,
                "staff_user.role_change",
                name,
                Some(json!({"role": before})),
                Some(json!({"role": role.as_str()})),
            );
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(user)
        })
    }

    /// Replace a user's password hash and end their sessions, except the one identified by
    /// `keep_session_token` (the session that made the change, if any).
    pub async fn set_staff_password(
        &self,
        name: &str,
        password_hash: &str,
        keep_session_token: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = "changing a staff user's password";
        let keep = keep_session_token.map(token_hash).unwrap_or_default();
        in_tx!(self, what, |tx| {
            let id: Option<i64> = sqlx::query_scalar(
                "UPDATE staff_users SET password_hash = $2, updated_at = $3 WHERE name = $1 RETURNING id",
            )
            .bind(name)
            .bind(password_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let id = id.ok_or_else(|| StoreError::NotFound(format!("staff user {name}")))?;
            let ended = sqlx::query(
                "UPDATE staff_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL AND token_sha256 <> $3",
            )
            .bind(id)
            .bind(now)
            .bind(&keep)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?
            .rows_affected();
            let rec = audit(
                actor,
                "staff_user.password_change",
                name,
                None,
                Some(json!({"password": "changed", "other_sessions_ended": ended})),
            );
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(())
        })
    }

    /// Disable (or re-enable) a user; disabling ends their sessions.
    pub async fn set_staff_disabled(
        &self,
        name: &str,
        disabled: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<StaffUser, StoreError> {
        let what = "disabling or enabling a staff user";
        in_tx!(self, what, |tx| {
            let user: Option<StaffUser> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE staff_users SET disabled_at = $2, updated_at = $3 WHERE name = $1 RETURNING {USER_COLUMNS}"
            )))
            .bind(name)
            .bind(if disabled { Some(now) } else { None })
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let user = user.ok_or_else(|| StoreError::NotFound(format!("staff user {name}")))?;
            if disabled {
                sqlx::query("UPDATE staff_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                    .bind(user.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
            }
            let rec = audit(
                actor,
                if disabled {
                    "staff_user.disable"
                } else {
                    "staff_user.enable"
                },
                name,
                Some(json!({"disabled": !disabled})),
                Some(json!({"disabled": disabled})),
            );
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(user)
        })
    }

    /// Failed sign-ins since `since` that count towards lock-out: for the user name and for the
    /// source address, each counted only after that key's last successful sign-in.
    pub async fn recent_sign_in_failures(
        &self,
        user_name: &str,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        let what = "counting failed sign-ins";
        on_read!(self, |pool| {
            let by_user: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sign_in_attempts WHERE user_name = $1 AND NOT succeeded AND at > $2 \
                 AND at > COALESCE((SELECT MAX(at) FROM sign_in_attempts WHERE user_name = $1 AND succeeded), $2)",
            )
            .bind(user_name)
            .bind(since)
            .fetch_one(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let by_source: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sign_in_attempts WHERE source = $1 AND NOT succeeded AND at > $2 \
                 AND at > COALESCE((SELECT MAX(at) FROM sign_in_attempts WHERE source = $1 AND succeeded), $2)",
            )
            .bind(source)
            .bind(since)
            .fetch_one(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            Ok((by_user, by_source))
        })
    }

    /// Record a failed sign-in (counted towards lock-out) with its audit record, and a
    /// `staff.locked_out` record if this failure reached the limit (`locks`).
    pub async fn record_sign_in_failure(
        &self,
        user_name: &str,
        source: &str,
        reason: &str,
        locks: Option<Lock>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = "recording a failed sign-in";
        in_tx!(self, what, |tx| {
            sqlx::query("INSERT INTO sign_in_attempts (at, user_name, source, succeeded) VALUES ($1, $2, $3, $4)")
                .bind(now)
                .bind(user_name)
                .bind(source)
                .bind(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let actor = format!("anonymous@{source}");
            let mut rec = audit(
                &actor,
                "staff.sign_in_failed",
                user_name,
                None,
                Some(json!({"source": source})),
            );
            rec.reason = Some(reason.into());
            insert_audit!(&mut *tx, &rec, now)?;
            if let Some(lock) = locks {
                let rec = audit(
                    &actor,
                    "staff.locked_out",
                    user_name,
                    None,
                    Some(json!({"source": source, "locked": lock.as_str()})),
                );
                insert_audit!(&mut *tx, &rec, now)?;
            }
            Ok(())
        })
    }

    /// A sign-in refused because a lock-out is in force: audited, not counted again (so an
    /// attacker cannot keep a user locked for ever by hammering).
    pub async fn record_locked_sign_in(
        &self,
        user_name: &str,
        source: &str,
        lock: Lock,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut rec = audit(
            &format!("anonymous@{source}"),
            "staff.sign_in_refused_locked",
            user_name,
            None,
            Some(json!({"source": source, "locked": lock.as_str()})),
        );
        rec.reason = Some("locked out after repeated failures".into());
        self.record_audit(&rec, now).await
    }

    /// Successful sign-in: the attempt, the session and the audit record, in one transaction.
    pub async fn start_session(
        &self,
        user_id: i64,
        user_name: &str,
        session: &NewSession<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = "starting a staff session";
        let hash = token_hash(session.token);
        in_tx!(self, what, |tx| {
            sqlx::query("INSERT INTO sign_in_attempts (at, user_name, source, succeeded) VALUES ($1, $2, $3, $4)")
                .bind(now)
                .bind(user_name)
                .bind(session.source)
                .bind(true)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let session_id: i64 = sqlx::query_scalar(
                "INSERT INTO staff_sessions (token_sha256, user_id, csrf_token, source, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&hash)
            .bind(user_id)
            .bind(session.csrf_token)
            .bind(session.source)
            .bind(now)
            .bind(session.expires_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = audit(
                &format!("user:{user_name}"),
                "staff.sign_in",
                user_name,
                None,
                Some(json!({"session": session_id, "source": session.source, "expires_at": session.expires_at})),
            );
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(())
        })
    }

    /// The live session for a cookie value, if any.
    pub async fn session_by_token(&self, token: &str, now: DateTime<Utc>) -> Result<Option<SessionRow>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, SessionRow>(
                "SELECT s.id AS session_id, u.id AS user_id, u.name, u.role, s.csrf_token, s.expires_at \
                 FROM staff_sessions s JOIN staff_users u ON u.id = s.user_id \
                 WHERE s.token_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.disabled_at IS NULL",
            )
            .bind(token_hash(token))
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("looking up a staff session", e))
        })
    }

    /// Sign-out: end the session for this cookie value. Returns false if it was not live.
    pub async fn end_session(&self, token: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let what = "ending a staff session";
        let hash = token_hash(token);
        in_tx!(self, what, |tx| {
            // SQLite's RETURNING may not name the tables of an UPDATE … FROM, so the user's
            // name is read separately.
            let ended: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE staff_sessions SET revoked_at = $2 WHERE token_sha256 = $1 AND revoked_at IS NULL \
                 RETURNING id, user_id",
            )
            .bind(&hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let ended = match ended {
                Some((id, user_id)) => {
                    let name: String = sqlx::query_scalar("SELECT name FROM staff_users WHERE id = $1")
                        .bind(user_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| StoreError::db(what, e))?;
                    Some((id, name))
                }
                None => None,
            };
            match ended {
                Some((id, name)) => {
                    let rec = audit(
                        &format!("user:{name}"),
                        "staff.sign_out",
                        &name,
                        None,
                        Some(json!({"session": id})),
                    );
                    insert_audit!(&mut *tx, &rec, now)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }
}
