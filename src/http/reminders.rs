//! Resident-facing reminder routes: the unsubscribe link of reminder e-mails.
//!
//! - `GET /unsubscribe/{token}`: a small page with a confirm button (link scanners and mail
//!   previews fetch links with GET, so GET never changes anything).
//! - `POST /unsubscribe/{token}`: record the opt-out — the confirm button, and the one-click
//!   `List-Unsubscribe-Post` of RFC 8058 that mail clients send. Repeating it is harmless.
//!
//! The token is a signed link (`crate::paylink`, purpose "unsubscribe e-mail" or "… SMS"); an
//! altered or expired one is refused with 400 and changes nothing. Opting out stops reminder
//! messages on that channel; legally required notices then go by letter (see the policy).

use axum::extract::{Path, State};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use chrono::Utc;

use super::error::ApiError;
use super::AppState;
use crate::paylink::{LinkError, LinkPurpose};

pub fn router() -> Router<AppState> {
    Router::new().route("/unsubscribe/{token}", get(confirm_page).post(unsubscribe))
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
