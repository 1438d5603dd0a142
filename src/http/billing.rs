//! The billing API: tariffs, bill runs and bills, adjustments, disputes, late-fee waivers,
//! arrears, prepaid top-ups and thresholds, account import, meter replacement, usage alerts and
//! per-community billing settings. Staff only (`Authorization: Bearer`): `operator` writes
//! (top-ups also `finance`), `operator`, `finance` and `read_only` read; `admin` does all.
//! Every write is audited with the caller and the request id, and accepts `Idempotency-Key`.
//! Amounts are integer fen (`*_fen`) in answers; amounts a person types (`amount`, `threshold`)
//! are yuan strings such as `"100.00"`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Staff;
use super::error::ApiError;
use super::idempotent::{once, request_id};
use super::AppState;
use crate::billing::accounts_import::{accounts_from_table, read_table, AccountRow, AccountSpec};
use crate::domain::ids::Utility;
use crate::domain::period::cst_date;
use crate::domain::tariff::TariffSpec;
use crate::domain::{Fen, Period};
use crate::store::accounts::Replacement;
use crate::store::billing_settings::BillingSettings;
use crate::store::bills::{BillFilter, ManualLine, RunOptions};
use crate::store::tariffs::TariffFile;

const READ: &[&str] = &["operator", "finance", "read_only"];
const WRITE: &[&str] = &["operator"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tariffs", get(list_tariffs).post(add_tariffs))
        .route("/api/v1/tariffs/import", post(import_tariffs))
        .route("/api/v1/bills/run", post(run_bills))
        .route("/api/v1/bills", get(list_bills))
        .route("/api/v1/bills/{id}", get(show_bill))
        .route("/api/v1/bills/{id}/dispute", post(dispute))
        .route("/api/v1/bills/{id}/undispute", post(undispute))
        .route("/api/v1/bills/{id}/adjustments", post(adjust))
        .route("/api/v1/bills/{id}/waive-late-fee", post(waive))
        .route("/api/v1/arrears", get(arrears))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/prepaid/low-balance", get(low_balance))
        .route("/api/v1/communities/{code}/accounts", post(create_accounts))
        .route("/api/v1/communities/{code}/accounts/import", post(import_accounts))
        .route(
            "/api/v1/communities/{code}/billing-settings",
            get(get_settings).put(put_settings),
        )
        .route("/api/v1/accounts/{id}/balance", get(balance))
        .route("/api/v1/accounts/{id}/bills/open", get(open_bills))
        .route("/api/v1/accounts/{id}/topups", post(top_up))
        .route("/api/v1/accounts/{id}/low-balance", axum::routing::put(set_low_balance))
        .route("/api/v1/meters/{id}/replace", post(replace_meter))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the request body is not valid: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn community_id(state: &AppState, code: &str) -> Result<i64, ApiError> {
    Ok(state
        .store
        .community_by_code(code)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("community {code:?}")))?
        .id)
}

#[derive(Deserialize)]
struct CommunityQuery {
    community: String,
    utility: Option<Utility>,
    period: Option<String>,
    as_of: Option<NaiveDate>,
}

async fn list_tariffs(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<CommunityQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let c = community_id(&state, &q.community).await?;
    Ok(Json(to_json(&state.store.tariff_versions(c, q.utility).await?)))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(Box<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(t) => vec![*t],
        }
    }
}

async fn add_tariffs(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(&state, &headers, "tariffs.add", &actor, &body, || async {
        let specs: Vec<TariffSpec> = parse::<OneOrMany<TariffSpec>>(&body)?.into_vec();
        let r = state
            .store
            .add_tariff_versions(&specs, &actor, request_id(&headers).as_deref(), Utc::now())
            .await?;
        Ok((StatusCode::CREATED, to_json(&r)))
    })
    .await
}

async fn import_tariffs(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(&state, &headers, "tariffs.import", &actor, &body, || async {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::BadRequest("the tariff file must be UTF-8 TOML".into()))?;
        let file = TariffFile::parse(text).map_err(ApiError::BadRequest)?;
        let r = state
            .store
            .add_tariff_versions(&file.tariff, &actor, request_id(&headers).as_deref(), Utc::now())
            .await?;
        Ok((StatusCode::CREATED, to_json(&r)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    period: String,
    #[serde(default)]
    community: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    due_date: Option<NaiveDate>,
}

async fn run_bills(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(&state, &headers, "bills.run", &actor, &body, || async {
        let b: RunBody = parse(&body)?;
        let period = Period::parse(&b.period).map_err(ApiError::BadRequest)?;
        let mut opts = RunOptions::new(period);
        opts.community = b.community;
        opts.dry_run = b.dry_run;
        opts.due_date = b.due_date;
        let r = state
            .store
            .run_bills(&opts, &actor, request_id(&headers).as_deref(), Utc::now(), &|_| {})
            .await?;
        Ok((StatusCode::OK, to_json(&r)))
    })
    .await
}

#[derive(Deserialize)]
struct BillQuery {
    community: Option<String>,
    account: Option<i64>,
    period: Option<String>,
    limit: Option<i64>,
}

async fn list_bills(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<BillQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let community_id = match &q.community {
        Some(c) => Some(community_id(&state, c).await?),
        None => None,
    };
    if let Some(p) = &q.period {
        Period::parse(p).map_err(ApiError::BadRequest)?;
    }
    let f = BillFilter {
        community_id,
        account_id: q.account,
        period: q.period,
        limit: q.limit,
    };
    Ok(Json(to_json(&state.store.list_bills(&f).await?)))
}

async fn show_bill(State(state): State<AppState>, staff: Staff, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    Ok(Json(to_json(&state.store.bill_detail(id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

async fn set_dispute(
    state: AppState,
    staff: Staff,
    headers: HeaderMap,
    id: i64,
    body: Bytes,
    on: bool,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    let scope = if on { "bills.dispute" } else { "bills.undispute" };
    once(&state, &headers, &format!("{scope}:{id}"), &actor, &body, || async {
        let r: Reason = parse(&body)?;
        if r.reason.trim().is_empty() {
            return Err(ApiError::BadRequest("a reason is required".into()));
        }
        state
            .store
            .set_bill_dispute(id, on, &r.reason, &actor, request_id(&headers).as_deref(), Utc::now())
            .await?;
        Ok((StatusCode::OK, json!({"bill_id": id, "disputed": on})))
    })
    .await
}

async fn dispute(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_dispute(state, staff, headers, id, body, true).await
}

async fn undispute(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    set_dispute(state, staff, headers, id, body, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    reason: String,
    lines: Vec<ManualLine>,
}

async fn adjust(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("bills.adjust:{id}"),
        &actor,
        &body,
        || async {
            let b: AdjustBody = parse(&body)?;
            let d = state
                .store
                .issue_adjustment(
                    id,
                    &b.lines,
                    &b.reason,
                    &actor,
                    request_id(&headers).as_deref(),
                    Utc::now(),
                )
                .await?;
            Ok((StatusCode::CREATED, to_json(&d)))
        },
    )
    .await
}

async fn waive(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("bills.waive:{id}"),
        &actor,
        &body,
        || async {
            let r: Reason = parse(&body)?;
            if r.reason.trim().is_empty() {
                return Err(ApiError::BadRequest("a reason is required".into()));
            }
            let fen = state
                .store
                .waive_late_fee(id, &r.reason, &actor, request_id(&headers).as_deref(), Utc::now())
                .await?;
            Ok((StatusCode::OK, json!({"bill_id": id, "waived_fen": fen})))
        },
    )
    .await
}

async fn arrears(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<CommunityQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let c = community_id(&state, &q.community).await?;
    let as_of = q.as_of.unwrap_or_else(|| cst_date(Utc::now()));
    Ok(Json(
        json!({"as_of": as_of, "accounts": state.store.arrears(c, as_of).await?}),
    ))
}

async fn alerts(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<CommunityQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let c = community_id(&state, &q.community).await?;
    let period = q
        .period
        .as_deref()
        .map(Period::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    Ok(Json(to_json(&state.store.usage_alerts(c, period).await?)))
}

async fn low_balance(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<CommunityQuery>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let c = community_id(&state, &q.community).await?;
    Ok(Json(to_json(&state.store.low_balance_accounts(c).await?)))
}

async fn store_accounts(
    state: &AppState,
    code: &str,
    rows: Vec<AccountRow>,
    actor: &str,
    headers: &HeaderMap,
) -> Result<(StatusCode, Value), ApiError> {
    let c = community_id(state, code).await?;
    let r = state
        .store
        .import_accounts(c, &rows, actor, request_id(headers).as_deref(), Utc::now())
        .await?;
    Ok((StatusCode::OK, to_json(&r)))
}

async fn create_accounts(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("accounts.create:{code}"),
        &actor,
        &body,
        || async {
            let specs: Vec<AccountSpec> = parse::<OneOrMany<AccountSpec>>(&body)?.into_vec();
            let rows: Vec<AccountRow> = specs
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i + 1, s.validate()))
                .collect();
            store_accounts(&state, &code, rows, &actor, &headers).await
        },
    )
    .await
}

async fn import_accounts(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("accounts.import:{code}"),
        &actor,
        &body,
        || async {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            let name = if ct.contains("spreadsheetml") {
                "upload.xlsx"
            } else {
                "upload.csv"
            };
            let t = read_table(name, &body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let rows = accounts_from_table(name, &t).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            store_accounts(&state, &code, rows, &actor, &headers).await
        },
    )
    .await
}

async fn get_settings(
    State(state): State<AppState>,
    staff: Staff,
    Path(code): Path<String>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let c = community_id(&state, &code).await?;
    Ok(Json(to_json(&state.store.billing_settings(c).await?)))
}

async fn put_settings(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("billing_settings:{code}"),
        &actor,
        &body,
        || async {
            let s: BillingSettings = parse(&body)?;
            s.validate().map_err(ApiError::BadRequest)?;
            let c = community_id(&state, &code).await?;
            let saved = state
                .store
                .set_billing_settings(c, &s, &actor, request_id(&headers).as_deref(), Utc::now())
                .await?;
            Ok((StatusCode::OK, to_json(&saved)))
        },
    )
    .await
}

async fn balance(State(state): State<AppState>, staff: Staff, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    Ok(Json(to_json(&state.store.account_balance(id).await?)))
}

async fn open_bills(State(state): State<AppState>, staff: Staff, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    Ok(Json(to_json(&state.store.open_bills(id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpBody {
    /// Yuan, e.g. "100.00".
    amount: String,
    reference: String,
    #[serde(default)]
    note: Option<String>,
}

async fn top_up(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(&["operator", "finance"])?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("accounts.topup:{id}"),
        &actor,
        &body,
        || async {
            let b: TopUpBody = parse(&body)?;
            let amount = Fen::parse_yuan(&b.amount).map_err(|e| ApiError::BadRequest(format!("amount: {e}")))?;
            let r = state
                .store
                .top_up(
                    id,
                    amount,
                    &b.reference,
                    b.note.as_deref(),
                    &actor,
                    request_id(&headers).as_deref(),
                    Utc::now(),
                )
                .await?;
            Ok((StatusCode::CREATED, to_json(&r)))
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdBody {
    /// Yuan, or null to clear.
    threshold: Option<String>,
}

async fn set_low_balance(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("accounts.low_balance:{id}"),
        &actor,
        &body,
        || async {
            let b: ThresholdBody = parse(&body)?;
            let t = b
                .threshold
                .as_deref()
                .map(Fen::parse_yuan)
                .transpose()
                .map_err(|e| ApiError::BadRequest(format!("threshold: {e}")))?;
            state
                .store
                .set_low_balance_threshold(id, t, &actor, request_id(&headers).as_deref(), Utc::now())
                .await?;
            Ok((
                StatusCode::OK,
                json!({"account_id": id, "low_balance_fen": t.map(|f| f.get())}),
            ))
        },
    )
    .await
}

async fn replace_meter(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(
        &state,
        &headers,
        &format!("meters.replace:{id}"),
        &actor,
        &body,
        || async {
            let r: Replacement = parse(&body)?;
            let m = state
                .store
                .replace_meter(id, &r, &actor, request_id(&headers).as_deref(), Utc::now())
                .await?;
            Ok((StatusCode::CREATED, to_json(&m)))
        },
    )
    .await
}
