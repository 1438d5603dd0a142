//! Server-rendered pages: HTML from [maud](https://maud.lambda.xyz) templates compiled into the
//! binary (no JavaScript, no build step), one small embedded stylesheet, Chinese first with
//! English available.
//!
//! # Pieces
//! - [`layout::page`]: the base layout (`<html lang>`, header, role-filtered navigation, sign-out,
//!   `<main>`); [`layout::csrf_field`] and [`layout::notice`] for forms and messages.
//! - [`i18n`]: the message catalogue ([`i18n::MESSAGES`]) and [`i18n::Lang`].
//! - [`chart`]: bar and line charts as SVG ([`chart::bar_chart`], [`chart::line_chart`]).
//! - [`PageCtx`]: what a template needs (language, CSRF token, who is signed in, current path).
//! - [`Page`]: the response type (adds `Content-Type`, `Cache-Control: no-store`, a strict
//!   `Content-Security-Policy` and friends); [`PageError`]: HTML error pages.
//! - [`NAV`]: the navigation; each entry says which roles see it.
//! - Extractors in [`crate::http::auth`]: [`StaffPage`](crate::http::auth::StaffPage) (signed in,
//!   else redirect to sign-in) and [`CsrfForm`](crate::http::auth::CsrfForm) (a checked form post).
//!
//! # Adding a page (for example finance's reconciliation page)
//! 1. **Messages**: add `("recon.title", "对账", "Reconciliation")` … to [`i18n::MESSAGES`].
//! 2. **Template and handler** in your own module (e.g. `src/http/pages/recon.rs`, `pub mod recon;`
//!    here, or in your resource module):
//!    ```ignore
//!    use maud::html;
//!    use crate::http::auth::{CsrfForm, StaffPage};
//!    use crate::http::pages::{layout, Page, PageError};
//!
//!    async fn recon_page(State(state): State<AppState>, page: StaffPage) -> Result<Page, PageError> {
//!        page.require(&["finance"])?;                 // admin always passes; others get a 403 page
//!        let ctx = &page.ctx;
//!        let rows = state.store.something().await?;   // StoreError → PageError automatically
//!        Ok(Page::new(ctx, layout::page(ctx, ctx.t("recon.title"), html! {
//!            form method="post" action="/staff/recon/resolve" {
//!                (layout::csrf_field(ctx))             // every POST form carries it
//!                label for="reason" { (ctx.t("recon.reason")) }   // every control has a label
//!                input #reason name="reason" required;
//!                button type="submit" { (ctx.t("recon.resolve")) }
//!            }
//!        })))
//!    }
//!
//!    #[derive(serde::Deserialize)]
//!    struct Resolve { reason: String }
//!
//!    async fn resolve(State(state): State<AppState>, post: CsrfForm<Resolve>) -> Result<Response, PageError> {
//!        post.page.require(&["finance"])?;
//!        let actor = post.page.staff.actor();         // "user:NAME" for the audit log
//!        // … do the work (with its audit record), then redirect (Post/Redirect/Get):
//!        Ok(Redirect::to("/staff/recon").into_response())
//!    }
//!    ```
//! 3. **Route**: `.route("/staff/recon", get(recon_page)).route("/staff/recon/resolve", post(resolve))`
//!    in your `router()`, merged in [`crate::http::app`]. Staff pages live under `/staff/`.
//! 4. **Navigation**: one line in [`NAV`] with the roles that may open it.
//! 5. **Tests**: add the route to the anonymous-refusal table in `tests/api/access_suite.rs`
//!    (`PROTECTED`); drive the page in the browser with `tests/api/browser.rs` and call
//!    `assert_accessible`.
//!
//! Rules the layout and tests hold you to: every control has a `<label>` (or `aria-label`),
//! text contrast is at least 4.5:1 (use the stylesheet's classes and colours), pages work without
//! JavaScript, and state changes are `POST` forms with the CSRF field (the session middleware
//! refuses a cookie-authenticated `POST` without it, whether or not the handler checks).

pub mod audit;
pub mod chart;
pub mod home;
pub mod i18n;
pub mod layout;
pub mod password;
pub mod signin;

use axum::extract::{Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use axum_extra::extract::cookie::{Cookie, SameSite};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{Session, Staff};
use super::error::ApiError;
use super::AppState;
use crate::store::StoreError;
pub use i18n::Lang;

/// Where the stylesheet is served (cached for a day; change the name when it changes a lot).
pub const STYLESHEET_PATH: &str = "/assets/meterpay.css";
const STYLESHEET: &str = include_str!("meterpay.css");

/// One navigation entry: shown to the roles listed (admin sees everything; [`ANY_ROLE`] is all).
#[derive(Debug, Clone, Copy)]
pub struct NavItem {
    pub path: &'static str,
    /// A message key.
    pub label: &'static str,
    pub roles: &'static [&'static str],
}

/// Every staff role.
pub const ANY_ROLE: &[&str] = &["operator", "finance", "read_only"];

/// The staff navigation, in order. Add your page here.
pub const NAV: &[NavItem] = &[
    NavItem {
        path: "/staff",
        label: "nav.home",
        roles: ANY_ROLE,
    },
    NavItem {
        path: "/staff/ops",
        label: "nav.ops",
        roles: crate::pages::operator::READ,
    },
    NavItem {
        path: "/staff/ops/readings",
        label: "nav.held",
        roles: &["operator", "read_only"],
    },
    NavItem {
        path: "/staff/ops/bill-runs",
        label: "nav.bill_runs",
        roles: crate::pages::operator::WRITE,
    },
    NavItem {
        path: "/staff/ops/reminders",
        label: "nav.reminders",
        roles: &["operator", "read_only"],
    },
    NavItem {
        path: "/staff/users",
        label: "nav.users",
        roles: &["admin"],
    },
    NavItem {
        path: "/staff/audit",
        label: "nav.audit",
        roles: &["admin"],
    },
    NavItem {
        path: "/staff/password",
        label: "nav.password",
        roles: ANY_ROLE,
    },
];

/// What a template needs to know about the request.
#[derive(Debug, Clone)]
pub struct PageCtx {
    pub lang: Lang,
    /// The signed-in person, if any.
    pub staff: Option<Staff>,
    /// The session's CSRF token (for [`layout::csrf_field`]); `None` when anonymous.
    pub csrf_token: Option<String>,
    /// The request path (for `aria-current` and the language switch's way back).
    pub path: String,
    /// Path and query, for coming back after switching language.
    pub path_and_query: String,
}

impl PageCtx {
    pub fn from_parts(parts: &Parts, session: Option<&Session>) -> PageCtx {
        PageCtx {
            lang: Lang::from_headers(&parts.headers),
            staff: session.map(Session::staff),
            csrf_token: session.map(|s| s.row.csrf_token.clone()),
            path: parts.uri.path().to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
        }
    }

    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }

    pub fn tf(&self, key: &str, args: &[(&str, &str)]) -> String {
        self.lang.tf(key, args)
    }

    /// The translated name of a role.
    pub fn role_name(&self, role: &str) -> &'static str {
        match role {
            "admin" => self.t("role.admin"),
            "operator" => self.t("role.operator"),
            "finance" => self.t("role.finance"),
            "read_only" => self.t("role.read_only"),
            _ => "?",
        }
    }

    /// The language switch's link: to the other language, coming back here.
    pub fn lang_switch_href(&self) -> String {
        let next: String = url::form_urlencoded::byte_serialize(self.path_and_query.as_bytes()).collect();
        format!("/lang/{}?next={next}", self.lang.other().short())
    }
}

/// Anonymous pages (sign-in, resident pages) take this extractor for their [`PageCtx`]; it
/// includes the session if there is one.
pub struct AnyPage(pub PageCtx);

impl axum::extract::FromRequestParts<AppState> for AnyPage {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        let session = parts.extensions.get::<Session>().cloned();
        Ok(AnyPage(PageCtx::from_parts(parts, session.as_ref())))
    }
}

/// An HTML page response with the headers every page carries.
pub struct Page {
    pub status: StatusCode,
    pub lang: Lang,
    pub body: Markup,
    /// Set when the page carries an inline script: only `<script nonce="…">` elements with this
    /// value run (see [`Page::with_script_nonce`]).
    pub script_nonce: Option<String>,
}

impl Page {
    pub fn new(ctx: &PageCtx, body: Markup) -> Page {
        Page {
            status: StatusCode::OK,
            lang: ctx.lang,
            body,
            script_nonce: None,
        }
    }

    /// Let this page's `<script nonce="{nonce}">` elements run (and fetch from this site): the
    /// live order status and the WeChat JSAPI call. `nonce` must be fresh and random per
    /// response ([`crate::access::random_token`]).
    pub fn with_script_nonce(mut self, nonce: String) -> Page {
        self.script_nonce = Some(nonce);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }
}

/// Content Security Policy for pages: no scripts at all, styles and images from us only (inline
/// SVG is markup, not an image load), no framing. A later page that needs a script for the live
/// order status relaxes `script-src` for that page only.
pub const CSP: &str = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; \
                       object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn page_headers(resp: &mut Response, lang: Lang) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CONTENT_LANGUAGE, HeaderValue::from_static(lang.code()));
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body.into_string()).into_response();
        page_headers(&mut resp, self.lang);
        if let Some(nonce) = self
            .script_nonce
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            let csp = CSP.replace(
                "script-src 'none'",
                &format!("script-src 'nonce-{nonce}'; connect-src 'self'"),
            );
            if let Ok(v) = HeaderValue::from_str(&csp) {
                resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
            }
        }
        resp
    }
}

/// A page that could not be shown. Rendered as a small bilingual HTML page (Chinese first).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match ApiError::from(e) {
            ApiError::NotFound(m) => PageError::NotFound(m),
            ApiError::Unexpected(e) => PageError::Unexpected(e),
            other => PageError::BadRequest(other.to_string()),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Forbidden(m) | ApiError::Unauthorized(m) => PageError::Forbidden(m),
            ApiError::NotFound(m) => PageError::NotFound(m),
            ApiError::Unexpected(e) => PageError::Unexpected(e),
            other => PageError::BadRequest(other.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, zh, en, detail) = match &self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "请求有误", "Bad request", m.clone()),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "无权访问", "Not allowed", m.clone()),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "找不到页面", "Not found", m.clone()),
            PageError::Unexpected(e) => {
                tracing::error!(error = %format!("{e:#}"), "page failed unexpectedly");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "服务器出错",
                    "Server error",
                    "an unexpected error occurred; it has been logged".to_string(),
                )
            }
        };
        let body = html! {
            (maud::DOCTYPE)
            html lang="zh-CN" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (zh) " · " (en) }
                    link rel="stylesheet" href=(STYLESHEET_PATH);
                }
                body {
                    main id="main" {
                        h1 { (zh) " " span lang="en" { "· " (en) } }
                        p.notice.error role="alert" lang="en" { (detail) }
                        p { a href="/staff" { "返回首页" } " · " a href="/staff" lang="en" { "Back to the dashboard" } }
                    }
                }
            }
        };
        let mut resp = (status, body.into_string()).into_response();
        page_headers(&mut resp, Lang::Zh);
        resp
    }
}

/// A local path to go back to after a redirect: only `/…` paths on this site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.contains("://") => {
            n.to_string()
        }
        _ => "/staff".to_string(),
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// `GET /lang/{zh|en}?next=PATH`: remember the language in a cookie and go back.
async fn switch_language(
    axum::extract::State(state): axum::extract::State<AppState>,
    Path(code): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<Response, PageError> {
    let lang = Lang::from_short(&code).ok_or_else(|| PageError::NotFound(format!("no language {code:?}")))?;
    let cookie = Cookie::build((i18n::LANG_COOKIE, lang.short()))
        .path("/")
        .http_only(true)
        .secure(state.config.access.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::days(365))
        .build();
    let mut resp = Redirect::to(&safe_next(q.next.as_deref())).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie.to_string()).map_err(|e| anyhow::anyhow!("language cookie: {e}"))?,
    );
    Ok(resp)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// The pages' routes (sign-in/out, home, the language switch, the stylesheet, staff admin pages).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/staff") }))
        .route(STYLESHEET_PATH, get(stylesheet))
        .route("/lang/{code}", get(switch_language))
        .merge(signin::router())
        .merge(home::router())
        .merge(audit::router())
        .merge(password::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/staff/audit?x=1")), "/staff/audit?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/staff");
        assert_eq!(safe_next(Some("https://evil.example/")), "/staff");
        assert_eq!(safe_next(Some("/\\evil.example")), "/staff");
        assert_eq!(safe_next(None), "/staff");
    }

    #[test]
    fn every_navigation_label_is_a_message() {
        for item in NAV {
            assert_ne!(Lang::Zh.t(item.label), "?", "{}", item.label);
        }
    }
}
