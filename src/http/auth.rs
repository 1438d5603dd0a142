//! Staff authentication and CSRF protection.
//!
//! Two ways in, same roles (`admin` passes every check; `operator`, `finance`, `read_only`; see
//! [`crate::access::Role`]):
//! - **API clients**: `Authorization: Bearer <token>` (tokens from `meterpay tokens add` or
//!   `POST /api/v1/tokens`). A request with an `Authorization` header is judged by it alone.
//! - **People**: a session cookie set by `POST /staff/sign-in` (server-side session in
//!   `staff_sessions`; the cookie is `HttpOnly`, `SameSite=Lax`, `Secure` unless
//!   `access.cookie_secure = false`, and named `__Host-meterpay_session` when secure).
//!
//! Extractors for handlers:
//! - [`Staff`]: for API handlers. Accepts a bearer token or a session; `401` otherwise.
//!   `staff.require(&["finance"])?` refuses other roles with `403`; `staff.actor()` is what goes
//!   into the audit log (`token:NAME` or `user:NAME`).
//! - [`StaffPage`]: for pages. A session only; an anonymous browser is redirected (`303`) to
//!   `/staff/sign-in?next=…`. Carries the [`PageCtx`](super::pages::PageCtx) a template needs
//!   (language, CSRF token, who is signed in). `page.require(&[…])?` answers an HTML `403`.
//! - [`CsrfForm<T>`]: for form posts from pages. Checks the form's `csrf_token` field against
//!   the session's token, then deserializes the rest into `T`.
//!
//! **CSRF** is enforced for every route, not only for handlers that remember to: the
//! [`session_layer`] middleware resolves the session cookie once per request and refuses (`403`)
//! any state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) that comes with a live session
//! cookie and no `Authorization` header unless it carries the session's token — in the
//! `x-csrf-token` header, or in the `csrf_token` field of a urlencoded form body, or (multipart
//! forms only, which cannot be read here cheaply) in a `csrf_token` query parameter. The sign-in
//! form has no session yet; it is protected by a double-submit token of its own (see
//! `pages::signin`) and exempt here.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::pages::{PageCtx, PageError};
use super::AppState;
use crate::access::constant_time_eq;
use crate::config::AccessConfig;
use crate::store::users::SessionRow;

/// How a [`Staff`] proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// `Authorization: Bearer <token>`.
    Token,
    /// A signed-in person's session cookie.
    Session,
}

/// An authenticated staff member or API client.
#[derive(Debug, Clone)]
pub struct Staff {
    pub name: String,
    pub role: String,
    pub via: AuthVia,
}

impl Staff {
    /// The actor recorded in the audit log: `token:NAME` or `user:NAME`.
    pub fn actor(&self) -> String {
        match self.via {
            AuthVia::Token => format!("token:{}", self.name),
            AuthVia::Session => format!("user:{}", self.name),
        }
    }

    /// True if the role is one of `roles` (admin always passes).
    pub fn may(&self, roles: &[&str]) -> bool {
        self.role == "admin" || roles.contains(&self.role.as_str())
    }

    /// Refuse unless the role is one of `roles` (admin always passes).
    pub fn require(&self, roles: &[&str]) -> Result<(), ApiError> {
        if self.may(roles) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not do this (needs {})",
                self.role,
                roles.join(" or ")
            )))
        }
    }
}

/// The live session of this request (put in the request's extensions by [`session_layer`]).
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie value (needed to end this session or keep it on a password change).
    pub token: String,
    pub row: SessionRow,
}

impl Session {
    pub fn staff(&self) -> Staff {
        Staff {
            name: self.row.name.clone(),
            role: self.row.role.clone(),
            via: AuthVia::Session,
        }
    }
}

/// The name of the form field (and `x-csrf-token` header) carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's name: `__Host-` prefixed (browser-enforced Secure, Path=/, no Domain)
/// when secure.
pub fn session_cookie_name(cfg: &AccessConfig) -> &'static str {
    if cfg.cookie_secure {
        "__Host-meterpay_session"
    } else {
        "meterpay_session"
    }
}

/// The `Set-Cookie` for a new session.
pub fn session_cookie(cfg: &AccessConfig, token: String) -> Cookie<'static> {
    Cookie::build((session_cookie_name(cfg), token))
        .path("/")
        .http_only(true)
        .secure(cfg.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(cfg.session_lifetime_secs.max(1)))
        .build()
}

/// The `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie(cfg: &AccessConfig) -> Cookie<'static> {
    Cookie::build((session_cookie_name(cfg), ""))
        .path("/")
        .http_only(true)
        .secure(cfg.cookie_secure)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::ZERO)
        .build()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| Cookie::parse(c.trim().to_string()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// The caller's address for lock-out and the audit log: the peer address, or the first
/// `X-Forwarded-For` entry when `access.trust_forwarded_for` is on.
pub fn source_address(parts_headers: &HeaderMap, peer: Option<SocketAddr>, cfg: &AccessConfig) -> String {
    if cfg.trust_forwarded_for {
        if let Some(first) = parts_headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return first.chars().take(64).collect();
        }
    }
    peer.map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into())
}

/// Paths whose posts carry their own CSRF protection (no session exists yet).
const CSRF_EXEMPT: &[&str] = &["/staff/sign-in"];

/// Largest urlencoded body the CSRF check buffers.
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// Middleware: resolve the session cookie (once per request) into a [`Session`] extension, and
/// refuse state-changing cookie-authenticated requests without the session's CSRF token.
pub async fn session_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let name = session_cookie_name(&state.config.access);
    let Some(token) = cookie_value(req.headers(), name).filter(|t| !t.is_empty()) else {
        return next.run(req).await;
    };
    let session = match state.store.session_by_token(&token, chrono::Utc::now()).await {
        Ok(Some(row)) => Session { token, row },
        // An unknown or expired cookie authenticates nothing; the extractors answer for it.
        Ok(None) => return next.run(req).await,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let bearer = req.headers().contains_key(header::AUTHORIZATION);
    let mut req = req;
    if unsafe_method && !bearer && !CSRF_EXEMPT.contains(&req.uri().path()) {
        let (ok, rebuilt) = csrf_ok(req, &session.row.csrf_token).await;
        match rebuilt {
            Some(r) if ok => req = r,
            Some(r) => return csrf_refusal(r.headers()),
            None => return ApiError::BadRequest("the request body could not be read".into()).into_response(),
        }
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// Check the CSRF token of `req` against `expected`, returning the request (body restored).
async fn csrf_ok(req: Request, expected: &str) -> (bool, Option<Request>) {
    if let Some(h) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        let ok = constant_time_eq(h, expected);
        return (ok, Some(req));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return (false, None);
        };
        let ok = form_field(&bytes, CSRF_FIELD).is_some_and(|t| constant_time_eq(&t, expected));
        return (ok, Some(Request::from_parts(parts, Body::from(bytes))));
    }
    if content_type.starts_with("multipart/form-data") {
        let ok = req
            .uri()
            .query()
            .and_then(|q| form_field(q.as_bytes(), CSRF_FIELD))
            .is_some_and(|t| constant_time_eq(&t, expected));
        return (ok, Some(req));
    }
    (false, Some(req))
}

fn form_field(bytes: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(bytes)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/html") || ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/")
}

fn csrf_refusal(headers: &HeaderMap) -> Response {
    let msg = "the form's security token is missing or wrong (reload the page and try again)";
    if wants_html(headers) {
        PageError::Forbidden(msg.into()).into_response()
    } else {
        ApiError::Forbidden(msg.into()).into_response()
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(header) = parts.headers.get(header::AUTHORIZATION) {
            let header = header
                .to_str()
                .map_err(|_| ApiError::Unauthorized("Authorization must be a Bearer token".into()))?;
            let token = header
                .strip_prefix("Bearer ")
                .ok_or_else(|| ApiError::Unauthorized("Authorization must be a Bearer token".into()))?;
            let owner = state
                .store
                .token_owner(token.trim())
                .await?
                .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
            return Ok(Staff {
                name: owner.name,
                role: owner.role,
                via: AuthVia::Token,
            });
        }
        match parts.extensions.get::<Session>() {
            Some(s) => Ok(s.staff()),
            None => Err(ApiError::Unauthorized(
                "missing Authorization: Bearer <token> (or sign in at /staff/sign-in)".into(),
            )),
        }
    }
}

/// A signed-in person on a page: who they are and what the page's template needs.
#[derive(Debug, Clone)]
pub struct StaffPage {
    pub staff: Staff,
    pub session: Session,
    pub ctx: PageCtx,
}

impl StaffPage {
    /// Refuse (HTML `403`) unless the role is one of `roles` (admin always passes).
    pub fn require(&self, roles: &[&str]) -> Result<(), PageError> {
        if self.staff.may(roles) {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "role {} may not open this page (needs {})",
                self.staff.role,
                roles.join(" or ")
            )))
        }
    }
}

/// Where an anonymous browser is sent: the sign-in page, coming back to `uri` afterwards.
pub fn sign_in_redirect(uri: &axum::http::Uri) -> Response {
    let back = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/staff");
    let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
    Redirect::to(&format!("/staff/sign-in?next={next}")).into_response()
}

impl FromRequestParts<AppState> for StaffPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(session) = parts.extensions.get::<Session>().cloned() else {
            return Err(sign_in_redirect(&parts.uri));
        };
        let staff = session.staff();
        let ctx = PageCtx::from_parts(parts, Some(&session));
        Ok(StaffPage { staff, session, ctx })
    }
}

/// A form posted from a page by a signed-in person, CSRF-checked. `T` is deserialized from the
/// urlencoded body without the `csrf_token` field (so `T` may `deny_unknown_fields`).
#[derive(Debug)]
pub struct CsrfForm<T> {
    pub page: StaffPage,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let page = StaffPage::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| PageError::BadRequest("the form is too large".into()).into_response())?;
        let token = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
        if !constant_time_eq(&token, &page.session.row.csrf_token) {
            return Err(csrf_refusal(&parts.headers));
        }
        let rest: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
            .filter(|(k, _)| k != CSRF_FIELD)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(rest)
            .finish();
        let form = serde_urlencoded::from_str::<T>(&encoded)
            .map_err(|e| PageError::BadRequest(format!("the form is incomplete: {e}")).into_response())?;
        Ok(CsrfForm { page, form })
    }
}

/// The caller's address as [`source_address`] decides it (peer, or `X-Forwarded-For` when
/// trusted), for lock-out and the audit log.
#[derive(Debug, Clone)]
pub struct SourceAddr(pub String);

impl FromRequestParts<AppState> for SourceAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        Ok(SourceAddr(source_address(&parts.headers, peer, &state.config.access)))
    }
}
