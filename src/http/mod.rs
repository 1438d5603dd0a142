//! The HTTP surface: health, readiness, metrics, and (added by each step) the API, callbacks and
//! pages. [`app`] builds the router from state so tests can serve it on port 0 or call it
//! in-process; [`error::ApiError`] is the one place errors become HTTP responses.

pub mod auth;
pub mod billing;
pub mod error;
pub mod health;
pub mod idempotent;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod payments;
pub mod readings;
pub mod reconcile;
pub mod reminders;
pub mod staff_admin;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Request};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<metrics::Metrics>,
    /// This process's id: the lease owner of its workers and the instance of its cron claims.
    pub instance_id: Arc<str>,
    /// Orders, callbacks, queries and refunds over the configured merchants.
    pub payments: Arc<crate::payments::Payments>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The application router with its middleware: request ids (taken from `x-request-id` or made
/// up, and echoed back), a span per request carrying that id, a timeout, panic containment and
/// request metrics.
pub fn app(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs.max(1));
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(readings::router())
        .merge(staff_admin::router())
        .merge(pages::router())
        .merge(reminders::router())
        .merge(billing::router())
        .merge(reconcile::router())
        .merge(openapi::router())
        .merge(crate::pages::router())
        .merge(payments::router())
        .fallback(error::not_found)
        // Resolves the session cookie and enforces CSRF on every route (see `auth`).
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::session_layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            let path = crate::pages::resident::loggable_path(req.uri().path());
            tracing::info_span!("http", method = %req.method(), path = %path, request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
