//! `GET /staff/password` and `POST /staff/password`: a signed-in person changes their own
//! password (current password required). Other sessions of that person end; this one stays.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::layout::{self, csrf_field, notice};
use super::{Page, PageCtx, PageError};
use crate::access::{self, UserName, MIN_PASSWORD_CHARS};
use crate::http::auth::{CsrfForm, StaffPage};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/staff/password", get(form).post(change))
}

fn render(ctx: &PageCtx, message: Option<(&str, String)>) -> Page {
    let body = html! {
        @if let Some((kind, text)) = &message { (notice(kind, text)) }
        form.stack method="post" action="/staff/password" {
            (csrf_field(ctx))
            label for="current" { (ctx.t("password.current")) }
            input #current type="password" name="current" autocomplete="current-password" required;
            label for="new" { (ctx.t("password.new")) }
            input #new type="password" name="new" autocomplete="new-password" aria-describedby="new-hint" required;
            p.hint #new-hint { (ctx.tf("password.hint", &[("n", &MIN_PASSWORD_CHARS.to_string())])) }
            label for="confirm" { (ctx.t("password.confirm")) }
            input #confirm type="password" name="confirm" autocomplete="new-password" required;
            button.primary type="submit" { (ctx.t("password.submit")) }
        }
    };
    Page::new(ctx, layout::page(ctx, ctx.t("password.title"), body))
}

#[derive(Deserialize)]
struct Done {
    changed: Option<String>,
}

async fn form(page: StaffPage, Query(q): Query<Done>) -> Page {
    let msg = q.changed.map(|_| ("ok", page.ctx.t("password.changed").to_string()));
    render(&page.ctx, msg)
}

#[derive(Deserialize)]
struct Change {
    current: String,
    new: String,
    confirm: String,
}

async fn change(State(state): State<AppState>, post: CsrfForm<Change>) -> Result<Response, PageError> {
    let CsrfForm { page, form } = post;
    let ctx = &page.ctx;
    let refuse = |msg: String| {
        render(ctx, Some(("error", msg)))
            .with_status(StatusCode::UNPROCESSABLE_ENTITY)
            .into_response()
    };
    let creds = state
        .store
        .staff_credentials(&page.staff.name)
        .await?
        .ok_or_else(|| PageError::Forbidden("the signed-in user no longer exists".into()))?;
    if !access::verify_password_blocking(form.current, Some(creds.password_hash)).await {
        return Ok(refuse(ctx.t("password.wrong_current").to_string()));
    }
    if form.new != form.confirm {
        return Ok(refuse(ctx.t("password.mismatch").to_string()));
    }
    let name = UserName::parse(&page.staff.name).map_err(PageError::BadRequest)?;
    if let Err(e) = access::check_new_password(&name, &form.new) {
        return Ok(refuse(e));
    }
    let hash = access::hash_password_blocking(form.new).await?;
    state
        .store
        .set_staff_password(
            &page.staff.name,
            &hash,
            Some(&page.session.token),
            &page.staff.actor(),
            Utc::now(),
        )
        .await?;
    Ok(Redirect::to("/staff/password?changed=1").into_response())
}
