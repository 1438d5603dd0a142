//! Readings: the concentrators' signed push, and the review queue for held readings.
//!
//! - `POST /api/v1/readings` — device-signed (see [`crate::billing::push`]); body
//!   `{"readings": [{"meter_no", "utility", "read_at", "value", "kind"}]}`; answers 200 with an
//!   outcome per reading (accepted, held, duplicate, refused with its reason).
//! - `GET /api/v1/readings/held[?community=CODE]` — operators: the review queue.
//! - `POST /api/v1/readings/{id}/accept|reject` with `{"note": "…"}` — operators decide
//!   (audited with the note; accepts `Idempotency-Key`). Accepting a reading that went
//!   backwards confirms a rollover; a meter replacement goes through `/api/v1/meters/{id}/replace`.
//! - `GET /api/v1/meters/{id}/readings` — a meter's readings with their status, for review.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;

use super::auth::Staff;
use super::error::ApiError;
use super::AppState;
use crate::billing::push::{self, PushAuthError};
use crate::billing::readings::{BatchReport, IncomingReading};
use crate::store::readings::{HeldReading, PushSignature};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/readings", post(push_readings))
        .route("/api/v1/readings/held", get(list_held))
        .route("/api/v1/readings/{id}/accept", post(accept))
        .route("/api/v1/readings/{id}/reject", post(reject))
        .route("/api/v1/meters/{id}/readings", get(meter_readings))
}

/// Most readings one push may carry.
pub const MAX_BATCH: usize = 10_000;

#[derive(Deserialize)]
struct PushBody {
    readings: Vec<IncomingReading>,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, PushAuthError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(PushAuthError::MissingHeader(name))
}

async fn push_readings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BatchReport>, ApiError> {
    let unauthorized = |e: PushAuthError| ApiError::Unauthorized(format!("push refused: {e}"));
    let key_id = header(&headers, push::HEADER_KEY_ID).map_err(unauthorized)?;
    let timestamp = header(&headers, push::HEADER_TIMESTAMP).map_err(unauthorized)?;
    let signature = header(&headers, push::HEADER_SIGNATURE).map_err(unauthorized)?;
    let device = state
        .store
        .device_by_key_id(key_id)
        .await?
        .filter(|d| d.active)
        .ok_or_else(|| unauthorized(PushAuthError::UnknownDevice))?;
    let secret =
        hex::decode(&device.secret_hex).map_err(|e| ApiError::Unexpected(anyhow::anyhow!("device secret: {e}")))?;
    let now = Utc::now();
    push::verify(
        &secret,
        "POST",
        "/api/v1/readings",
        timestamp,
        signature,
        &body,
        now.timestamp(),
    )
    .map_err(unauthorized)?;
    let parsed: PushBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not {{\"readings\": [...]}}: {e}")))?;
    if parsed.readings.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!("at most {MAX_BATCH} readings per push")));
    }
    // The signature is remembered with the readings, in one transaction.
    let guard = PushSignature {
        key_id,
        signature,
        forget_before: now - chrono::Duration::seconds(2 * push::WINDOW_SECS),
    };
    let report = state
        .store
        .ingest_pushed_readings(
            device.community_id,
            &parsed.readings,
            &guard,
            &format!("device:{}", device.key_id),
            now,
        )
        .await?
        .ok_or_else(|| unauthorized(PushAuthError::Replayed))?;
    tracing::info!(device = %device.key_id, accepted = report.accepted, held = report.held,
        duplicates = report.duplicates, refused = report.refused, "readings pushed");
    Ok(Json(report))
}

#[derive(Deserialize)]
struct HeldQuery {
    community: Option<String>,
}

async fn list_held(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<HeldQuery>,
) -> Result<Json<Vec<HeldReading>>, ApiError> {
    staff.require(&["operator", "read_only", "finance"])?;
    let community_id = match q.community {
        Some(code) => Some(
            state
                .store
                .community_by_code(&code)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("community {code}")))?
                .id,
        ),
        None => None,
    };
    Ok(Json(state.store.held_readings(community_id).await?))
}

#[derive(Deserialize)]
struct Decision {
    note: String,
}

async fn meter_readings(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
) -> Result<Json<Vec<crate::store::readings::ReadingRow>>, ApiError> {
    staff.require(&["operator", "read_only", "finance"])?;
    Ok(Json(state.store.readings_of_meter(id).await?))
}

async fn decide(
    state: AppState,
    staff: Staff,
    headers: HeaderMap,
    id: i64,
    body: Bytes,
    accept: bool,
) -> Result<axum::response::Response, ApiError> {
    staff.require(&["operator"])?;
    let actor = staff.actor();
    let scope = format!("readings.{}:{id}", if accept { "accept" } else { "reject" });
    super::idempotent::once(&state, &headers, &scope, &actor, &body, || async {
        let body: Decision = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("body is not {{\"note\": \"…\"}}: {e}")))?;
        if body.note.trim().is_empty() {
            return Err(ApiError::BadRequest("a note saying why is required".into()));
        }
        let row = state
            .store
            .review_reading(
                id,
                accept,
                &actor,
                body.note.trim(),
                super::idempotent::request_id(&headers).as_deref(),
                Utc::now(),
            )
            .await?;
        Ok((
            axum::http::StatusCode::OK,
            serde_json::json!({"id": row.id, "status": row.status}),
        ))
    })
    .await
}

async fn accept(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    decide(state, staff, headers, id, body, true).await
}

async fn reject(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    decide(state, staff, headers, id, body, false).await
}
