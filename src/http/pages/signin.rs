//! Sign-in and sign-out.
//!
//! - `GET /staff/sign-in[?next=PATH]`: the form. It sets a short-lived `meterpay_signin` cookie
//!   holding a random token that the form repeats in its `csrf_token` field (double submit), so
//!   another site cannot sign a browser in to an account of its choosing (login CSRF).
//! - `POST /staff/sign-in`: checks that token, then the lock-out, then the password (argon2,
//!   off the runtime; an unknown name costs the same time as a wrong password). Success: a new
//!   session (new cookie value: no fixation) and `303` to `next`. Wrong: `401` with the form
//!   again. Locked out: `429` with the form and when to try again.
//! - `POST /staff/sign-out` (CSRF-checked): ends the session, clears the cookie, `303` to the
//!   sign-in page.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::layout::{self, notice};
use super::{safe_next, AnyPage, Page, PageCtx, PageError};
use crate::access::{self, random_token, LockoutPolicy};
use crate::http::auth::{self, clear_session_cookie, session_cookie, CsrfForm, SourceAddr, CSRF_FIELD};
use crate::http::AppState;
use crate::store::users::NewSession;

const SIGNIN_COOKIE: &str = "meterpay_signin";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/sign-in", get(form).post(submit))
        .route("/staff/sign-out", post(sign_out))
}

#[derive(Deserialize)]
struct FormQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

fn signin_cookie(state: &AppState, value: String) -> Cookie<'static> {
    Cookie::build((SIGNIN_COOKIE, value))
        .path("/staff/sign-in")
        .http_only(true)
        .secure(state.config.access.cookie_secure)
        .same_site(SameSite::Strict)
        .max_age(time::Duration::hours(1))
        .build()
}

fn set_cookie(resp: &mut Response, c: Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The form, with a fresh double-submit token (set as a cookie on the response).
fn render(
    state: &AppState,
    ctx: &PageCtx,
    next: &str,
    name: &str,
    message: Option<(&str, String)>,
    status: StatusCode,
) -> Response {
    let token = random_token();
    let body = layout::page(
        ctx,
        ctx.t("sign_in.title"),
        html! {
            @if let Some((kind, text)) = &message { (notice(kind, text)) }
            form.stack method="post" action="/staff/sign-in" {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                input type="hidden" name="next" value=(next);
                label for="name" { (ctx.t("sign_in.name")) }
                input #name type="text" name="name" value=(name) autocomplete="username" autocapitalize="none" spellcheck="false" required;
                label for="password" { (ctx.t("sign_in.password")) }
                input #password type="password" name="password" autocomplete="current-password" required;
                button.primary type="submit" { (ctx.t("sign_in.submit")) }
            }
        },
    );
    let mut resp = Page::new(ctx, body).with_status(status).into_response();
    set_cookie(&mut resp, signin_cookie(state, token));
    resp
}

async fn form(State(state): State<AppState>, AnyPage(ctx): AnyPage, Query(q): Query<FormQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if ctx.staff.is_some() {
        return Redirect::to(&next).into_response();
    }
    let message = q.signed_out.map(|_| ("ok", ctx.t("sign_in.signed_out").to_string()));
    render(&state, &ctx, &next, "", message, StatusCode::OK)
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    csrf_token: String,
}

async fn submit(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Result<Response, PageError> {
    let cfg = &state.config.access;
    let next = safe_next(f.next.as_deref());
    let expected = auth::cookie_value(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !access::constant_time_eq(&expected, &f.csrf_token) {
        let msg = ("error", ctx.t("sign_in.expired").to_string());
        return Ok(render(&state, &ctx, &next, &f.name, Some(msg), StatusCode::FORBIDDEN));
    }
    // Count failures under the name as typed (trimmed, bounded), known user or not, so guessing
    // names locks out just the same.
    let name: String = f.name.trim().chars().take(64).collect();
    let policy = LockoutPolicy::from_config(cfg);
    let now = Utc::now();
    let (user_failures, source_failures) = state
        .store
        .recent_sign_in_failures(&name, &source, now - policy.window)
        .await?;
    let minutes = (policy.window.num_seconds() + 59) / 60;
    let locked_msg = || ("error", ctx.tf("sign_in.locked", &[("minutes", &minutes.to_string())]));
    if let Some(lock) = policy.lock(user_failures, source_failures) {
        state.store.record_locked_sign_in(&name, &source, lock, now).await?;
        tracing::warn!(source = %source, locked = lock.as_str(), "sign-in refused: locked out");
        return Ok(render(
            &state,
            &ctx,
            &next,
            &name,
            Some(locked_msg()),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let creds = state.store.staff_credentials(&name).await?;
    let hash = creds.as_ref().map(|c| c.password_hash.clone());
    let password_ok = access::verify_password_blocking(f.password, hash).await;
    let user = match creds {
        Some(c) if password_ok && c.disabled_at.is_none() => c,
        other => {
            let reason = match other {
                None => "unknown user name",
                Some(c) if c.disabled_at.is_some() => "user disabled",
                Some(_) => "wrong password",
            };
            let locks = policy.lock(user_failures + 1, source_failures + 1);
            state
                .store
                .record_sign_in_failure(&name, &source, reason, locks, now)
                .await?;
            tracing::info!(source = %source, reason, "sign-in failed");
            return Ok(match locks {
                Some(_) => render(
                    &state,
                    &ctx,
                    &next,
                    &name,
                    Some(locked_msg()),
                    StatusCode::TOO_MANY_REQUESTS,
                ),
                None => render(
                    &state,
                    &ctx,
                    &next,
                    &name,
                    Some(("error", ctx.t("sign_in.failed").to_string())),
                    StatusCode::UNAUTHORIZED,
                ),
            });
        }
    };
    let token = random_token();
    let csrf = random_token();
    let expires_at = now + chrono::Duration::seconds(cfg.session_lifetime_secs.max(1));
    state
        .store
        .start_session(
            user.id,
            &user.name,
            &NewSession {
                token: &token,
                csrf_token: &csrf,
                source: &source,
                expires_at,
            },
            now,
        )
        .await?;
    tracing::info!(user = %user.name, source = %source, "signed in");
    let mut resp = Redirect::to(&next).into_response();
    set_cookie(&mut resp, session_cookie(cfg, token));
    let mut gone = signin_cookie(&state, String::new());
    gone.set_max_age(time::Duration::ZERO);
    set_cookie(&mut resp, gone);
    Ok(resp)
}

/// Sign-out carries no fields but its CSRF token.
#[derive(Deserialize)]
struct SignOut {}

async fn sign_out(State(state): State<AppState>, post: CsrfForm<SignOut>) -> Result<Response, PageError> {
    state.store.end_session(&post.page.session.token, Utc::now()).await?;
    let mut resp = Redirect::to("/staff/sign-in?signed_out=1").into_response();
    set_cookie(&mut resp, clear_session_cookie(&state.config.access));
    Ok(resp)
}
