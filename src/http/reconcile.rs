//! Reconciliation API (role finance; admin passes every check):
//!
//! - `POST /api/v1/reconcile/runs` `{channel, merchant, date, file_base64?}`: run a day (the file
//!   given, or downloaded from the gateway); answers the run's summary and items.
//! - `GET /api/v1/reconcile/runs?channel=&merchant=&date=`: runs, newest first (history included).
//! - `GET /api/v1/reconcile/runs/{id}`: a run's summary and items, each with its state now.
//! - `GET /api/v1/reconcile/discrepancies?date=`: open items of the current runs.
//! - `POST /api/v1/reconcile/discrepancies/{id}/resolve` `{decision, reason}`: finance's
//!   decision (post_payment, refund, write_off, carry_over), posted as a balanced entry.
//! - `GET /api/v1/reconcile/report?date=&format=json|csv|xlsx`: the morning report.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{NaiveDate, Utc};
use meterpay_gateways::gateway::Channel;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Staff;
use super::error::ApiError;
use super::AppState;
use crate::payments::PaymentsPort;
use crate::reconcile::{item_state, report, Decision, ReconcileError, Reconciler, RunRequest, Via};

const FINANCE: &[&str] = &["finance"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reconcile/runs", get(list_runs).post(start_run))
        .route("/api/v1/reconcile/runs/{id}", get(show_run))
        .route("/api/v1/reconcile/discrepancies", get(open_items))
        .route("/api/v1/reconcile/discrepancies/{id}/resolve", post(resolve))
        .route("/api/v1/reconcile/report", get(report_export))
}

impl From<ReconcileError> for ApiError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::UnknownMerchant { .. } | ReconcileError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ReconcileError::BadFile { .. }
            | ReconcileError::WrongMerchant { .. }
            | ReconcileError::WrongDay { .. }
            | ReconcileError::Invalid(_) => ApiError::Unprocessable(e.to_string()),
            ReconcileError::Conflict(_) => ApiError::Conflict(e.to_string()),
            ReconcileError::Download { .. } => ApiError::Unavailable(e.to_string()),
            ReconcileError::Store(s) => s.into(),
            ReconcileError::Port(p) => ApiError::Unexpected(p),
        }
    }
}

/// The payments port this process reconciles through.
fn port(state: &AppState) -> Arc<dyn PaymentsPort> {
    crate::reconcile::port_for(state)
}

fn reconciler(state: &AppState) -> Reconciler {
    Reconciler::new(state.store.clone(), port(state), state.config.reconcile.clone())
}

#[derive(Deserialize)]
struct StartRun {
    channel: Channel,
    merchant: String,
    date: NaiveDate,
    /// The settlement file, base64; omitted: download it from the gateway.
    file_base64: Option<String>,
}

async fn start_run(
    State(state): State<AppState>,
    staff: Staff,
    Json(body): Json<StartRun>,
) -> Result<Json<Value>, ApiError> {
    staff.require(FINANCE)?;
    let file = match body.file_base64 {
        Some(b) => Some((
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| ApiError::BadRequest(format!("file_base64 is not base64: {e}")))?,
            "upload".to_string(),
        )),
        None => None,
    };
    let out = reconciler(&state)
        .run(
            RunRequest {
                channel: body.channel,
                merchant_id: body.merchant,
                bill_date: body.date,
                file,
                via: Via::Api,
                started_by: staff.actor(),
            },
            Utc::now(),
        )
        .await?;
    Ok(Json(serde_json::to_value(&out).map_err(anyhow::Error::from)?))
}

#[derive(Deserialize)]
struct RunQuery {
    channel: Option<Channel>,
    merchant: Option<String>,
    date: Option<NaiveDate>,
}

async fn list_runs(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(FINANCE)?;
    let runs = state
        .store
        .recon_runs(q.channel, q.merchant.as_deref(), q.date, false)
        .await?;
    Ok(Json(json!({ "runs": runs })))
}

async fn show_run(State(state): State<AppState>, staff: Staff, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    staff.require(FINANCE)?;
    let run = state
        .store
        .recon_run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("reconciliation run {id}")))?;
    let now = Utc::now();
    let items: Vec<Value> = state
        .store
        .recon_run_items(id)
        .await?
        .into_iter()
        .map(|i| {
            let state = item_state(&i, now);
            let mut v = serde_json::to_value(&i).unwrap_or_default();
            v["state"] = serde_json::to_value(state).unwrap_or_default();
            v
        })
        .collect();
    let summary: Value = serde_json::from_str(&run.summary_json).unwrap_or_default();
    Ok(Json(json!({ "run": run, "summary": summary, "items": items })))
}

#[derive(Deserialize)]
struct OpenQuery {
    date: Option<NaiveDate>,
}

async fn open_items(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<OpenQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(FINANCE)?;
    let now = Utc::now();
    let items: Vec<Value> = state
        .store
        .recon_open_items(q.date)
        .await?
        .into_iter()
        .map(|i| {
            let st = item_state(&i, now);
            let mut v = serde_json::to_value(&i).unwrap_or_default();
            v["state"] = serde_json::to_value(st).unwrap_or_default();
            v
        })
        .collect();
    Ok(Json(json!({ "discrepancies": items })))
}

#[derive(Deserialize)]
struct ResolveBody {
    decision: String,
    reason: String,
}

async fn resolve(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Json(body): Json<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    staff.require(FINANCE)?;
    let decision: Decision = body.decision.parse().map_err(ApiError::BadRequest)?;
    let r = reconciler(&state)
        .resolve(id, decision, &body.reason, &staff.actor(), Utc::now())
        .await?;
    Ok(Json(serde_json::to_value(&r).map_err(anyhow::Error::from)?))
}

#[derive(Deserialize)]
struct ReportQuery {
    date: NaiveDate,
    format: Option<String>,
}

async fn report_export(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    staff.require(FINANCE)?;
    let r = report::morning_report(&state.store, q.date, Utc::now()).await?;
    let day = q.date.format("%Y%m%d");
    let attach = |ext: &str| format!("attachment; filename=\"reconciliation_{day}.{ext}\"");
    Ok(match q.format.as_deref().unwrap_or("json") {
        "json" => Json(report::to_json(&r)).into_response(),
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, attach("csv")),
            ],
            report::to_csv(&r)?,
        )
            .into_response(),
        "xlsx" => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_string(),
                ),
                (header::CONTENT_DISPOSITION, attach("xlsx")),
            ],
            report::to_xlsx(&r)?,
        )
            .into_response(),
        other => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?} is not json, csv or xlsx"
            )))
        }
    })
}
