//! `Idempotency-Key` for mutating staff API calls (design.md §3): the first request with a key
//! does the work and its answer is stored; the same key with the same request replays that
//! answer; the same key with a different request is refused (422), and while the first is still
//! running a second gets 409. Keys are scoped per route and caller. A server error is not
//! stored, so the client may retry with the same key.

use std::future::Future;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::store::idempotency::IdempotencyStart;

pub const HEADER: &str = "idempotency-key";

/// The request id the middleware set (for the audit log).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Run `work` at most once per idempotency key (when the request carries one).
pub async fn once<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
    actor: &str,
    body: &[u8],
    work: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(key) = headers.get(HEADER) else {
        let (status, v) = work().await?;
        return Ok((status, axum::Json(v)).into_response());
    };
    let key = key
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters".into()))?
        .to_string();
    let scope = format!("{scope}:{actor}");
    let hash = hex::encode(Sha256::digest(body));
    match state.store.idempotency_start(&scope, &key, &hash, Utc::now()).await? {
        IdempotencyStart::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok((
                status,
                [("content-type", "application/json"), ("idempotent-replayed", "true")],
                body,
            )
                .into_response())
        }
        IdempotencyStart::Mismatch => Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for a different request".into(),
        )),
        IdempotencyStart::InFlight => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still being processed; retry later".into(),
        )),
        IdempotencyStart::Proceed => {
            let (status, body) = match work().await {
                Ok((s, v)) => (s, serde_json::to_vec(&v).unwrap_or_default()),
                Err(ApiError::Unexpected(e)) => {
                    state.store.idempotency_abandon(&scope, &key).await?;
                    return Err(ApiError::Unexpected(e));
                }
                Err(ApiError::Unavailable(m)) => {
                    state.store.idempotency_abandon(&scope, &key).await?;
                    return Err(ApiError::Unavailable(m));
                }
                Err(client) => {
                    // A refusal is the answer to this request: replay it too.
                    let resp = client.into_response();
                    let status = resp.status();
                    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                        .await
                        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("reading an error body: {e}")))?;
                    state
                        .store
                        .idempotency_complete(&scope, &key, status.as_u16(), &bytes, Utc::now())
                        .await?;
                    return Ok((status, [("content-type", "application/json")], bytes).into_response());
                }
            };
            state
                .store
                .idempotency_complete(&scope, &key, status.as_u16(), &body, Utc::now())
                .await?;
            Ok((status, [("content-type", "application/json")], body).into_response())
        }
    }
}
