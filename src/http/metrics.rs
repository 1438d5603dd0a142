//! Prometheus metrics: requests by route and status, request latency, and the task queue by
//! status (read at scrape time so every instance reports the shared queue).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::AppState;

/// The registry and the instruments. One per application (tests run many side by side).
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub tasks: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("meterpay".into()), None).expect("valid prefix");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method, route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route"),
            &["route"],
        )
        .expect("valid metric");
        let tasks =
            IntGaugeVec::new(Opts::new("tasks", "Tasks in the queue by status"), &["status"]).expect("valid metric");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(http_latency.clone()))
            .expect("registered once");
        registry.register(Box::new(tasks.clone())).expect("registered once");
        Metrics {
            registry,
            http_requests,
            http_latency,
            tasks,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> Response {
    if let Ok(counts) = state.store.task_counts().await {
        state.metrics.tasks.reset();
        for (status, n) in counts {
            state.metrics.tasks.with_label_values(&[status.as_str()]).set(n);
        }
    }
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&state.metrics.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "could not encode metrics");
    }
    ([(CONTENT_TYPE, encoder.format_type().to_string())], buf).into_response()
}

/// Middleware: count and time each request by its route template (never the raw path, which
/// would carry ids and blow up the label set).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .http_latency
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), resp.status().as_str()])
        .inc();
    resp
}
