//! The payments API and the gateways' callbacks.
//!
//! - `POST /api/v1/payments`: an order for open bills of an account (or a prepaid top-up), staff
//!   (`operator`, `finance`) with `Authorization: Bearer`, or the resident holding the account's
//!   pay link (`X-Pay-Link: <token>`). `Idempotency-Key` is required: the same key and body replay
//!   the first answer, the same key with another body is refused (422).
//! - `POST /notify/{channel}/{merchant}`: a gateway's notification, verified over the raw bytes
//!   and applied once; the answer is in the gateway's required form. The work runs in its own task,
//!   so a gateway hanging up mid-request cannot cut a transaction short.
//! - orders, queries, closing, refunds, receipts and flags for finance: see [`router`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use meterpay_gateways::gateway::Channel;
use serde_json::{json, Value};

use super::auth::Staff;
use super::error::ApiError;
use super::idempotent::{once, HEADER};
use super::AppState;
use crate::paylink::LinkPurpose;
use crate::payments::{OrderRequest, PaymentError, RefundRequestBody};
use crate::store::payments::{OrderRow, ReceiptRow, RefundRow};

const READ: &[&str] = &["operator", "finance", "read_only"];
const PAY: &[&str] = &["operator", "finance"];
const REFUND: &[&str] = &["finance"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/payments", post(create_order))
        .route("/api/v1/payments/flags", get(flags))
        .route("/api/v1/payments/{order_no}", get(show_order))
        .route("/api/v1/payments/{order_no}/query", post(query_order))
        .route("/api/v1/payments/{order_no}/close", post(close_order))
        .route("/api/v1/payments/{order_no}/refunds", post(refund))
        .route("/api/v1/refunds/{refund_no}", get(show_refund))
        .route("/api/v1/receipts/{receipt_no}", get(show_receipt))
        .route("/api/v1/accounts/{id}/receipts", get(account_receipts))
        .route("/notify/{channel}/{merchant}", post(notify))
        .route("/payments/return/{order_no}", get(returned))
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::Invalid(m) => ApiError::BadRequest(m),
            PaymentError::NotFound(m) => ApiError::NotFound(m),
            PaymentError::Conflict(m) => ApiError::Conflict(m),
            PaymentError::Refused(m) => ApiError::Unprocessable(m),
            PaymentError::Unavailable(m) => ApiError::Unavailable(m),
            PaymentError::Unexpected(e) => ApiError::Unexpected(e),
        }
    }
}

fn require_key(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get(HEADER).is_none() {
        return Err(ApiError::BadRequest(
            "this call needs an Idempotency-Key header (any unique string per intended operation)".into(),
        ));
    }
    Ok(())
}

/// A staff member when the request carries credentials (a bearer token or a session), else none.
struct MaybeStaff(Option<Staff>);

impl axum::extract::FromRequestParts<AppState> for MaybeStaff {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let has_bearer = parts.headers.contains_key(axum::http::header::AUTHORIZATION);
        let has_session = parts.extensions.get::<super::auth::Session>().is_some();
        if !has_bearer && !has_session {
            return Ok(MaybeStaff(None));
        }
        Ok(MaybeStaff(Some(Staff::from_request_parts(parts, state).await?)))
    }
}

/// Who is asking: a staff member, or the holder of an account's pay link.
enum Caller {
    Staff(Staff),
    Resident { account_id: i64 },
}

async fn caller(state: &AppState, headers: &HeaderMap, staff: Option<Staff>) -> Result<Caller, ApiError> {
    if let Some(s) = staff {
        s.require(PAY)?;
        return Ok(Caller::Staff(s));
    }
    let Some(token) = headers.get("x-pay-link").and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::Unauthorized(
            "missing Authorization: Bearer <token>, or X-Pay-Link: <the account's pay-link token>".into(),
        ));
    };
    let now = Utc::now();
    let signer = crate::dunning::outbox::link_signer(&state.store, &state.config, now).await?;
    let claims = signer
        .verify(token.trim(), LinkPurpose::Pay, now)
        .map_err(|e| ApiError::Unauthorized(format!("the pay link is not valid: {e}")))?;
    Ok(Caller::Resident {
        account_id: claims.account_id,
    })
}

async fn create_order(
    State(state): State<AppState>,
    MaybeStaff(staff): MaybeStaff,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers, staff).await?;
    require_key(&headers)?;
    let req: OrderRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the order request is not valid: {e}")))?;
    let actor = match &who {
        Caller::Staff(s) => s.actor(),
        Caller::Resident { account_id } => {
            if *account_id != req.account_id {
                return Err(ApiError::Forbidden("the pay link is for another account".into()));
            }
            format!("resident:{account_id}")
        }
    };
    let mut req = req;
    if req.payer_ip.is_none() {
        req.payer_ip = Some("127.0.0.1".into());
    }
    let payments = state.payments.clone();
    let scope = "payments.create";
    let who_acts = actor.clone();
    once(&state, &headers, scope, &actor, &body, || async move {
        let created = payments.create_order(&req, &who_acts, Utc::now()).await?;
        let status = if created.reused {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok((status, serde_json::to_value(&created).unwrap_or(Value::Null)))
    })
    .await
}

fn order_json(o: &OrderRow, bills: &[(i64, i64)], refunds: &[RefundRow]) -> Value {
    json!({
        "order_no": o.order_no,
        "account_id": o.account_id,
        "channel": o.channel,
        "merchant_id": o.merchant_id,
        "method": o.method,
        "purpose": o.purpose,
        "amount_fen": o.amount_fen,
        "status": o.status,
        "refunded_fen": o.refunded_fen,
        "bills": bills.iter().map(|(b, f)| json!({"bill_id": b, "amount_fen": f})).collect::<Vec<_>>(),
        "created_at": o.created_at,
        "expires_at": o.expires_at,
        "paid_at": o.paid_at,
        "gateway_txn_id": o.gateway_txn_id,
        "closed_at": o.closed_at,
        "close_reason": o.close_reason,
        "superseded_by": o.superseded_by,
        "receipt_no": if o.status == "paid" { Some(crate::store::payments::receipt_no(&o.order_no)) } else { None },
        "refunds": refunds,
    })
}

async fn show_order(
    State(state): State<AppState>,
    staff: Staff,
    Path(order_no): Path<String>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let o = state
        .store
        .payment_order(&order_no)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("payment order {order_no} not found")))?;
    let bills = state.store.payment_order_bills(o.id).await?;
    let refunds = state.store.refunds_of_order(o.id).await?;
    Ok(Json(order_json(&o, &bills, &refunds)))
}

async fn query_order(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(order_no): Path<String>,
) -> Result<Response, ApiError> {
    staff.require(PAY)?;
    let payments = state.payments.clone();
    let no = order_no.clone();
    once(
        &state,
        &headers,
        "payments.query",
        &staff.actor(),
        order_no.as_bytes(),
        || async move {
            let q = payments.query_and_apply_inner(&no, Utc::now()).await?;
            Ok((StatusCode::OK, serde_json::to_value(&q).unwrap_or(Value::Null)))
        },
    )
    .await
}

async fn close_order(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(order_no): Path<String>,
) -> Result<Response, ApiError> {
    staff.require(PAY)?;
    require_key(&headers)?;
    let payments = state.payments.clone();
    let actor = staff.actor();
    let (no, who) = (order_no.clone(), actor.clone());
    once(
        &state,
        &headers,
        "payments.close",
        &actor,
        order_no.as_bytes(),
        || async move {
            let order_no = no;
            let actor = who;
            let o = payments
                .store()
                .payment_order_fresh(&order_no)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("payment order {order_no} not found")))?;
            if o.status != "created" {
                return Err(ApiError::Conflict(format!(
                    "order {order_no} is {}, not open",
                    o.status
                )));
            }
            payments
                .close_everywhere(&o, &format!("closed by {actor}"), None, Utc::now())
                .await?;
            Ok((StatusCode::OK, json!({"order_no": order_no, "status": "closed"})))
        },
    )
    .await
}

async fn refund(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(order_no): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(REFUND)?;
    require_key(&headers)?;
    let req: RefundRequestBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the refund request is not valid: {e}")))?;
    let payments = state.payments.clone();
    let actor = staff.actor();
    let mut hashed = order_no.as_bytes().to_vec();
    hashed.extend_from_slice(&body);
    once(
        &state,
        &headers,
        "payments.refund",
        &actor.clone(),
        &hashed,
        || async move {
            let r = payments.request_refund(&order_no, &req, &actor, Utc::now()).await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&r).unwrap_or(Value::Null)))
        },
    )
    .await
}

async fn show_refund(
    State(state): State<AppState>,
    staff: Staff,
    Path(refund_no): Path<String>,
) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    let r = state
        .store
        .refund(&refund_no)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("refund {refund_no} not found")))?;
    Ok(Json(serde_json::to_value(&r).unwrap_or(Value::Null)))
}

fn receipt_json(r: &ReceiptRow) -> Value {
    json!({
        "receipt_no": r.receipt_no,
        "order_no": r.order_no,
        "account_id": r.account_id,
        "account": r.account_code,
        "amount_fen": r.amount_fen,
        "channel": r.channel,
        "merchant_id": r.merchant_id,
        "gateway_txn_id": r.gateway_txn_id,
        "bills": serde_json::from_str::<Value>(&r.bills).unwrap_or(Value::Null),
        "to_credit_fen": r.to_credit_fen,
        "refunded_fen": r.refunded_fen,
        "paid_at": r.paid_at,
        "issued_at": r.issued_at,
    })
}

async fn show_receipt(
    State(state): State<AppState>,
    MaybeStaff(staff): MaybeStaff,
    headers: HeaderMap,
    Path(receipt_no): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = state
        .store
        .receipt(&receipt_no)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("receipt {receipt_no} not found")))?;
    match staff {
        Some(s) => s.require(READ)?,
        None => match caller(&state, &headers, None).await? {
            Caller::Resident { account_id } if account_id == r.account_id => {}
            _ => return Err(ApiError::NotFound(format!("receipt {receipt_no} not found"))),
        },
    }
    Ok(Json(receipt_json(&r)))
}

async fn account_receipts(
    State(state): State<AppState>,
    MaybeStaff(staff): MaybeStaff,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    match staff {
        Some(s) => s.require(READ)?,
        None => match caller(&state, &headers, None).await? {
            Caller::Resident { account_id } if account_id == id => {}
            _ => return Err(ApiError::Forbidden("the pay link is for another account".into())),
        },
    }
    let rows = state.store.account_receipts(id).await?;
    Ok(Json(
        json!({"receipts": rows.iter().map(receipt_json).collect::<Vec<_>>()}),
    ))
}

async fn flags(State(state): State<AppState>, staff: Staff) -> Result<Json<Value>, ApiError> {
    staff.require(&["finance", "read_only"])?;
    Ok(Json(json!({
        "flags": state.store.payment_flags().await?,
        "rejected_callbacks": state.store.rejected_callbacks().await?,
    })))
}

async fn notify(
    State(state): State<AppState>,
    Path((channel, merchant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(channel) = channel.parse::<Channel>() else {
        return (StatusCode::NOT_FOUND, "unknown channel").into_response();
    };
    let hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let payments = state.payments.clone();
    // Its own task: the work runs to its end even if the gateway hangs up.
    let task = tokio::spawn(async move {
        payments
            .handle_notification(channel, &merchant, &hs, &body, Utc::now())
            .await
    });
    match task.await {
        Ok(out) => {
            let status = StatusCode::from_u16(out.ack.status).unwrap_or(StatusCode::OK);
            let mut resp = (status, out.ack.body).into_response();
            if let Some(ct) = out.ack.content_type {
                if let Ok(v) = ct.parse() {
                    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
                }
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "the notification task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "failed").into_response()
        }
    }
}

/// Where a payer's browser comes back after a browser flow: says how the order stands (the
/// notification or the query, never this visit, is what marks it paid).
async fn returned(State(state): State<AppState>, Path(order_no): Path<String>) -> Result<Response, ApiError> {
    let o = state
        .store
        .payment_order(&order_no)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("payment order {order_no} not found")))?;
    let text = match o.status.as_str() {
        "paid" => format!("Payment {order_no} received. Thank you."),
        "closed" => format!("Payment {order_no} was closed without payment."),
        _ => format!("Payment {order_no} is being confirmed; this page does not need to stay open."),
    };
    Ok((StatusCode::OK, [("content-type", "text/plain; charset=utf-8")], text).into_response())
}
