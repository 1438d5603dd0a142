//! Idempotency keys: the same key with the same request replays the first response; the same key
//! with a different request is refused. Written insert-first, so of two concurrent duplicates
//! exactly one does the work and the other sees it in flight (then replays once it completes).

use chrono::{DateTime, Utc};

use super::{on_read, on_write, Store, StoreError};

/// What to do with a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// First time: do the work, then [`Store::idempotency_complete`].
    Proceed,
    /// Done before: send this response again.
    Replay { status: u16, body: Vec<u8> },
    /// The same key was used for a different request.
    Mismatch,
    /// The first request with this key is still being processed.
    InFlight,
}

impl Store {
    pub async fn idempotency_start(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyStart, StoreError> {
        let inserted = on_write!(self, |pool| {
            sqlx::query(
                "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (scope, idem_key) DO NOTHING",
            )
            .bind(scope)
            .bind(key)
            .bind(request_hash)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| StoreError::db("recording an idempotency key", e))
        })?;
        if inserted {
            return Ok(IdempotencyStart::Proceed);
        }
        let row: Option<(String, Option<i32>, Option<Vec<u8>>)> = on_write!(self, |pool| {
            sqlx::query_as(
                "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("reading an idempotency key", e))
        })?;
        Ok(match row {
            None => IdempotencyStart::Proceed,
            Some((hash, _, _)) if hash != request_hash => IdempotencyStart::Mismatch,
            Some((_, Some(status), body)) => IdempotencyStart::Replay {
                status: status as u16,
                body: body.unwrap_or_default(),
            },
            Some((_, None, _)) => IdempotencyStart::InFlight,
        })
    }

    pub async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET response_status = $1, response_body = $2, completed_at = $3 \
                 WHERE scope = $4 AND idem_key = $5",
            )
            .bind(status as i32)
            .bind(body)
            .bind(now)
            .bind(scope)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::db("storing an idempotent response", e))
        })
    }

    /// Forget a key whose request failed before producing a response worth replaying (a server
    /// error), so the client may retry with the same key.
    pub async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND response_status IS NULL")
                .bind(scope)
                .bind(key)
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::db("abandoning an idempotency key", e))
        })
    }

    pub async fn idempotency_key_count(&self) -> Result<i64, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys")
                .fetch_one(pool)
                .await
                .map_err(|e| StoreError::db("counting idempotency keys", e))
        })
    }
}
