//! Reminder routes.
//!
//! Staff (`Authorization: Bearer`, or a session):
//! - `POST /api/v1/reminders/run` `{"community"?, "dry_run"?, "at"?}`: plan (and unless a dry
//!   run, enqueue) reminders; the report names, per account, the step and channel or the reason
//!   nothing goes. A dry run may be asked by any staff role; a real run needs `operator`.
//! - `GET /api/v1/accounts/{id}/reminders`: the account's reminder history with attempts.
//! - `POST /api/v1/reminders/{id}/served` `{"evidence"}`: staff served the written notice
//!   (letter or door posting); audited.
//!
//! Providers: `POST /api/v1/reminders/sms-replies/{aliyun|tencent}?token=…` takes the
//! providers' pushed SMS replies (uplink messages); a reply such as 退订/TD/T/N opts the sender's
//! accounts out of reminder SMS.
//!
//! Residents:
//! - `GET /unsubscribe/{token}`: a small page with a confirm button (link scanners and mail
//!   previews fetch links with GET, so GET never changes anything).
//! - `POST /unsubscribe/{token}`: record the opt-out — the confirm button, and the one-click
//!   `List-Unsubscribe-Post` of RFC 8058 that mail clients send. Repeating it is harmless.
//!
//! The token is a signed link (`crate::paylink`, purpose "unsubscribe e-mail" or "… SMS"); an
//! altered or expired one is refused with 400 and changes nothing. Opting out stops reminder
//! messages on that channel; legally required notices then go by letter (see the policy).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Staff;
use super::error::ApiError;
use super::idempotent::{once, request_id};
use super::AppState;
use crate::dunning::planner::{self, PlanOptions, Planner};
use crate::paylink::{LinkError, LinkPurpose};
use crate::store::audit::AuditRecord;

const READ: &[&str] = &["operator", "finance", "read_only"];
const WRITE: &[&str] = &["operator"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/unsubscribe/{token}", get(confirm_page).post(unsubscribe))
        .route("/api/v1/reminders/run", post(run))
        .route("/api/v1/accounts/{id}/reminders", get(history))
        .route("/api/v1/reminders/{id}/served", post(served))
        .route("/api/v1/reminders/sms-replies/{provider}", post(sms_replies))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    community: Option<String>,
    #[serde(default)]
    dry_run: bool,
    /// Plan as of this instant instead of now (a dry run only: what would happen then).
    at: Option<DateTime<Utc>>,
}

async fn run(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: RunBody = if body.is_empty() {
        RunBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid: {e}")))?
    };
    if b.at.is_some() && !b.dry_run {
        return Err(ApiError::BadRequest(
            "\"at\" is only for a dry run: a real run plans as of now".into(),
        ));
    }
    staff.require(if b.dry_run { READ } else { WRITE })?;
    if let Some(code) = &b.community {
        if state.store.community_by_code(code).await?.is_none() {
            return Err(ApiError::NotFound(format!("community {code:?}")));
        }
    }
    let actor = staff.actor();
    let work = || async {
        let port: Option<std::sync::Arc<dyn crate::payments::PaymentsPort>> = Some(state.payments.clone());
        let p = Planner::new(state.store.clone(), state.config.clone(), port);
        let opts = PlanOptions {
            community: b.community.clone(),
            dry_run: b.dry_run,
        };
        let r = p.run(&opts, b.at.unwrap_or_else(Utc::now)).await?;
        if !b.dry_run {
            state
                .store
                .record_audit(
                    &AuditRecord {
                        actor: actor.clone(),
                        action: "reminders.run".into(),
                        subject_type: "community".into(),
                        subject_id: b.community.clone().unwrap_or_else(|| "*".into()),
                        before: None,
                        after: Some(json!({
                            "enqueued": r.communities.iter().map(|c| c.enqueued).sum::<usize>(),
                        })),
                        reason: None,
                        request_id: request_id(&headers),
                    },
                    Utc::now(),
                )
                .await?;
        }
        Ok::<_, ApiError>((StatusCode::OK, serde_json::to_value(&r).unwrap_or(Value::Null)))
    };
    if b.dry_run {
        let (status, v) = work().await?;
        return Ok(axum::response::IntoResponse::into_response((status, Json(v))));
    }
    once(&state, &headers, "reminders.run", &actor, &body, work).await
}

async fn history(State(state): State<AppState>, staff: Staff, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    staff.require(READ)?;
    if state.store.plan_account_exists(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("account {id}")));
    }
    let h = planner::account_history(&state.store, id).await?;
    let opt_outs = state.store.opt_outs(id).await?;
    Ok(Json(json!({ "account_id": id, "opted_out": opt_outs, "reminders": h })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServedBody {
    evidence: String,
}

async fn served(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    staff.require(WRITE)?;
    let actor = staff.actor();
    once(&state, &headers, "reminders.served", &actor, &body, || async {
        let b: ServedBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid: {e}")))?;
        if b.evidence.trim().is_empty() {
            return Err(ApiError::BadRequest(
                "evidence is required: how and when the notice was served (letter number, photo reference)".into(),
            ));
        }
        let row = state
            .store
            .reminder(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("reminder {id}")))?;
        if row.channel != "letter" {
            return Err(ApiError::Unprocessable(format!(
                "reminder {id} is a {} message, not a written notice",
                row.channel
            )));
        }
        let now = Utc::now();
        if !state.store.mark_letter_served(id, b.evidence.trim(), now).await? {
            return Err(ApiError::Conflict(format!(
                "reminder {id} is {}, not awaiting staff",
                row.status
            )));
        }
        state
            .store
            .record_audit(
                &AuditRecord {
                    actor: actor.clone(),
                    action: "reminders.served".into(),
                    subject_type: "reminder".into(),
                    subject_id: id.to_string(),
                    before: Some(json!({ "status": row.status })),
                    after: Some(json!({ "status": "served", "evidence": b.evidence.trim() })),
                    reason: None,
                    request_id: request_id(&headers),
                },
                now,
            )
            .await?;
        Ok((StatusCode::OK, json!({ "id": id, "status": "served" })))
    })
    .await
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// One reply: the sender's number and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReply {
    pub phone: String,
    pub text: String,
}

/// The providers' push bodies for replies: Alibaba's `SmsUp` report (a JSON array of
/// `{"phone_number", "content", …}`), Tencent's reply callback (`{"mobile", "text", …}`, or an
/// array of them).
pub fn parse_sms_replies(provider: &str, body: &[u8]) -> Result<Vec<SmsReply>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the reply push is not JSON: {e}"))?;
    let items: Vec<Value> = match v {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => return Err("the reply push is neither an object nor an array".into()),
    };
    let (phone_key, text_key) = match provider {
        "aliyun" => ("phone_number", "content"),
        "tencent" => ("mobile", "text"),
        other => return Err(format!("unknown SMS provider {other:?} (aliyun or tencent)")),
    };
    items
        .iter()
        .map(|i| {
            let phone = i[phone_key]
                .as_str()
                .ok_or_else(|| format!("a reply without {phone_key}"))?;
            let text = i[text_key]
                .as_str()
                .ok_or_else(|| format!("a reply without {text_key}"))?;
            Ok(SmsReply {
                phone: phone.trim().to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

async fn sms_replies(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<TokenQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = state.config.reminders.sms_reply_token.expose_secret();
    if expected.is_empty() {
        return Err(ApiError::NotFound(
            "SMS replies are not enabled (reminders.sms_reply_token)".into(),
        ));
    }
    let given = q.token.unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes())) {
        return Err(ApiError::Unauthorized(
            "the SMS reply push carries a wrong token".into(),
        ));
    }
    let replies = parse_sms_replies(&provider, &body).map_err(ApiError::BadRequest)?;
    let now = Utc::now();
    let mut opted = 0usize;
    for r in &replies {
        if !crate::dunning::policy::parse_sms_reply(&r.text) {
            continue;
        }
        for account in state.store.accounts_by_mobile(&r.phone).await? {
            if state.store.add_opt_out(account, "sms", "sms_reply", now).await? {
                opted += 1;
                tracing::info!(account, phone = %crate::telemetry::mask_phone(&r.phone), "reminder SMS opt-out by reply");
            }
        }
    }
    // The providers expect a success body or they push again.
    let ack = if provider == "aliyun" {
        json!({ "code": 0, "msg": "成功", "opted_out": opted })
    } else {
        json!({ "result": 0, "errmsg": "OK", "opted_out": opted })
    };
    Ok(axum::response::IntoResponse::into_response((StatusCode::OK, Json(ack))))
}

async fn verify(state: &AppState, token: &str) -> Result<(i64, &'static str), ApiError> {
    let now = Utc::now();
    let signer = crate::dunning::outbox::link_signer(&state.store, &state.config, now).await?;
    for (purpose, channel) in [
        (LinkPurpose::UnsubscribeEmail, "email"),
        (LinkPurpose::UnsubscribeSms, "sms"),
    ] {
        match signer.verify(token, purpose, now) {
            Ok(c) => return Ok((c.account_id, channel)),
            Err(LinkError::WrongPurpose) => continue,
            Err(e) => return Err(ApiError::BadRequest(e.to_string())),
        }
    }
    Err(ApiError::BadRequest(LinkError::WrongPurpose.to_string()))
}

async fn confirm_page(State(state): State<AppState>, Path(token): Path<String>) -> Result<Html<String>, ApiError> {
    let (_, channel) = verify(&state, &token).await?;
    let what = if channel == "email" {
        "缴费提醒邮件 / reminder e-mails"
    } else {
        "缴费提醒短信 / reminder SMS"
    };
    Ok(Html(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>退订 / Unsubscribe</title></head><body style=\"font-family:sans-serif\">\
         <p>不再接收{what}？账单和法定通知仍会送达。<br>Stop {what}? Bills and legally required notices still reach you.</p>\
         <form method=\"post\"><button type=\"submit\">确认退订 / Unsubscribe</button></form></body></html>"
    )))
}

async fn unsubscribe(State(state): State<AppState>, Path(token): Path<String>) -> Result<Html<String>, ApiError> {
    let (account_id, channel) = verify(&state, &token).await?;
    state.store.add_opt_out(account_id, channel, "link", Utc::now()).await?;
    tracing::info!(account = account_id, channel, "reminder opt-out recorded");
    Ok(Html(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>已退订 / Unsubscribed</title></head>\
         <body style=\"font-family:sans-serif\"><p>已退订。/ You are unsubscribed.</p></body></html>"
            .to_string(),
    ))
}
