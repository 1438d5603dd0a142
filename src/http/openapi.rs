//! The OpenAPI 3.1 description of the HTTP API, served at `GET /api/v1/openapi.json`.
//!
//! It is kept by hand, as one table ([`OPERATIONS`]): one line per route and method, saying who
//! may call it, what it takes and what it answers. [`document`] turns the table into the OpenAPI
//! document (path parameters come from the `{name}` segments of the path). We chose a hand-kept
//! table over deriving the document with utoipa because the handlers read raw bodies (for
//! `Idempotency-Key` replays and signature checks) rather than typed extractors, so a derive
//! would describe little more than this table does, at the price of an annotation on every
//! handler in every module.
//!
//! What keeps it true: `tests/api/openapi_suite.rs` reads every `.route(…)` in `src/` and fails
//! when a route (or one of its methods) is missing here or when an operation here has no route,
//! and it calls every operation on a running service to prove each one is mounted (an unmounted
//! path answers the fallback's `404 no such endpoint`, a missing method `405`).
//!
//! Covered: everything a program calls — the JSON API under `/api/v1/`, health, readiness,
//! metrics, the signed readings push, gateway callbacks, and the resident unsubscribe link (a
//! mail client posts to it). Not covered: the HTML pages people open in a browser (`/`,
//! `/staff…`, `/pay…`, `/lang/…`, `/assets/…`); [`is_page`] is the rule.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::AppState;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    Public,
    /// A staff bearer token or a signed-in session (with `x-csrf-token` for writes), with one of
    /// these roles (`admin` always passes).
    Staff(&'static [&'static str]),
    /// A meter concentrator's HMAC signature headers.
    Device,
    /// A signed resident link in the path.
    Link,
    /// A gateway's signed notification.
    Gateway,
}

/// What a request carries in its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// A JSON object; the text lists its fields.
    Json(&'static str),
    /// Another media type, with a description.
    Other(&'static str, &'static str),
}

/// One route and method.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Query parameters: `(name, description)`; all optional unless the description starts
    /// with "required".
    pub query: &'static [(&'static str, &'static str)],
    pub body: Body,
    /// The success status and what it carries.
    pub ok: (u16, &'static str),
    /// The answer's media type.
    pub produces: &'static str,
}

const JSON: &str = "application/json";
const READ: &[&str] = &["operator", "finance", "read_only"];
const OPERATOR: &[&str] = &["operator"];
const ADMIN: &[&str] = &["admin"];
const PAYERS: &[&str] = &["operator", "finance"];
const FINANCE: &[&str] = &["finance"];
const FINANCE_READ: &[&str] = &["finance", "read_only"];

const fn op(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str, auth: Auth) -> Op {
    Op {
        method,
        path,
        tag,
        summary,
        auth,
        query: &[],
        body: Body::None,
        ok: (200, "done"),
        produces: JSON,
    }
}

impl Op {
    const fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Op {
        self.query = q;
        self
    }
    const fn json(mut self, fields: &'static str) -> Op {
        self.body = Body::Json(fields);
        self
    }
    const fn body(mut self, media: &'static str, what: &'static str) -> Op {
        self.body = Body::Other(media, what);
        self
    }
    const fn ok(mut self, status: u16, what: &'static str) -> Op {
        self.ok = (status, what);
        self
    }
    const fn produces(mut self, media: &'static str) -> Op {
        self.produces = media;
        self
    }
}

/// True for the HTML pages people open in a browser, which the document leaves out.
pub fn is_page(path: &str) -> bool {
    path == "/"
        || ["/staff", "/pay", "/lang", "/assets"]
            .iter()
            .any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
}

/// Every route and method of the API. Add a line when you add a route.
pub const OPERATIONS: &[Op] = &[
    // operations
    op("GET", "/healthz", "operations", "Liveness: the process is up", Auth::Public).ok(200, "{\"status\":\"ok\"}"),
    op(
        "GET",
        "/readyz",
        "operations",
        "Readiness: the database answers",
        Auth::Public,
    )
    .ok(200, "{\"status\":\"ready\",\"database\":\"sqlite\"|\"postgres\"}; 503 when the database does not answer"),
    op("GET", "/metrics", "operations", "Prometheus metrics", Auth::Public)
        .ok(200, "Prometheus text exposition")
        .produces("text/plain"),
    op(
        "GET",
        "/api/v1/openapi.json",
        "operations",
        "This document",
        Auth::Public,
    )
    .ok(200, "the OpenAPI 3.1 document"),
    // access
    op("GET", "/api/v1/tokens", "access", "List API tokens (never their secrets)", Auth::Staff(ADMIN)),
    op("POST", "/api/v1/tokens", "access", "Create an API token; the secret is shown once", Auth::Staff(ADMIN))
        .json("name, role")
        .ok(201, "{id, name, role, token}"),
    op("DELETE", "/api/v1/tokens/{id}", "access", "Revoke an API token (idempotent)", Auth::Staff(ADMIN)),
    op("GET", "/api/v1/users", "access", "List staff users (no password hashes)", Auth::Staff(ADMIN)),
    op("POST", "/api/v1/users", "access", "Create a staff user", Auth::Staff(ADMIN))
        .json("name, role, password")
        .ok(201, "the user"),
    op("PUT", "/api/v1/users/{name}/role", "access", "Change a staff user's role", Auth::Staff(ADMIN)).json("role"),
    op(
        "PUT",
        "/api/v1/users/{name}/password",
        "access",
        "Set a staff user's password (ends their sessions)",
        Auth::Staff(ADMIN),
    )
    .json("password"),
    op(
        "PUT",
        "/api/v1/users/{name}/disabled",
        "access",
        "Disable or enable a staff user (ends their sessions)",
        Auth::Staff(ADMIN),
    )
    .json("disabled (boolean)"),
    // readings
    op(
        "POST",
        "/api/v1/readings",
        "readings",
        "A meter concentrator's signed batch of readings",
        Auth::Device,
    )
    .json("readings: [{meter_no, utility, read_at (RFC 3339), value (decimal string), kind, registers?}], at most 10,000")
    .ok(200, "an outcome per reading: accepted, held (with the reason), duplicate, refused (with the reason)"),
    op("GET", "/api/v1/readings/held", "readings", "The review queue of held readings", Auth::Staff(READ))
        .query(&[("community", "a community code")]),
    op(
        "POST",
        "/api/v1/readings/{id}/accept",
        "readings",
        "Accept a held reading (audited with the note)",
        Auth::Staff(OPERATOR),
    )
    .json("note"),
    op(
        "POST",
        "/api/v1/readings/{id}/reject",
        "readings",
        "Reject a held reading (audited with the note)",
        Auth::Staff(OPERATOR),
    )
    .json("note"),
    op("GET", "/api/v1/meters/{id}/readings", "readings", "A meter's readings with their status", Auth::Staff(READ)),
    op("POST", "/api/v1/meters/{id}/replace", "readings", "Replace a meter", Auth::Staff(OPERATOR))
        .json("new_meter_no, digit_count, multiplier, replaced_on, final_value, initial_value, reason, work_order_ref, read_by, photo_ref")
        .ok(201, "the new meter"),
    // billing
    op("GET", "/api/v1/tariffs", "billing", "Tariff versions of a community", Auth::Staff(READ))
        .query(&[("community", "required: a community code"), ("utility", "electricity, water or gas")]),
    op("POST", "/api/v1/tariffs", "billing", "Add tariff versions", Auth::Staff(OPERATOR))
        .json("a tariff version, or a list of them")
        .ok(201, "{added, unchanged}"),
    op(
        "POST",
        "/api/v1/tariffs/import",
        "billing",
        "Add tariff versions from a TOML tariff file",
        Auth::Staff(OPERATOR),
    )
    .body("application/toml", "a tariff file")
    .ok(201, "{added, unchanged}"),
    op("POST", "/api/v1/bills/run", "billing", "Run bills for a period (or preview with dry_run)", Auth::Staff(OPERATOR))
        .json("period, community?, dry_run?, due_date?")
        .ok(200, "the run report"),
    op("GET", "/api/v1/bills", "billing", "Bills with derived status and outstanding", Auth::Staff(READ)).query(&[
        ("community", "a community code"),
        ("account", "an account id"),
        ("period", "YYYY-MM"),
        ("limit", "at most this many"),
    ]),
    op(
        "GET",
        "/api/v1/bills/{id}",
        "billing",
        "One bill with lines, readings, usage, allocations and late fees",
        Auth::Staff(READ),
    ),
    op("POST", "/api/v1/bills/{id}/dispute", "billing", "Mark a bill disputed", Auth::Staff(OPERATOR)).json("reason"),
    op("POST", "/api/v1/bills/{id}/undispute", "billing", "Clear a bill's dispute", Auth::Staff(OPERATOR)).json("reason"),
    op("POST", "/api/v1/bills/{id}/adjustments", "billing", "Issue an adjustment bill", Auth::Staff(OPERATOR))
        .json("reason, lines: [{utility, description, quantity, unit_price}]")
        .ok(201, "the adjustment bill"),
    op(
        "POST",
        "/api/v1/bills/{id}/waive-late-fee",
        "billing",
        "Waive a bill's unpaid late fee",
        Auth::Staff(OPERATOR),
    )
    .json("reason"),
    op("GET", "/api/v1/arrears", "billing", "The arrears listing of a community", Auth::Staff(READ))
        .query(&[("community", "required: a community code"), ("as_of", "a date, default today")]),
    op("GET", "/api/v1/alerts", "billing", "Usage alerts of a community", Auth::Staff(READ))
        .query(&[("community", "required: a community code"), ("period", "YYYY-MM")]),
    op(
        "GET",
        "/api/v1/prepaid/low-balance",
        "billing",
        "Prepaid accounts whose credit is below their threshold",
        Auth::Staff(READ),
    )
    .query(&[("community", "required: a community code")]),
    op("POST", "/api/v1/communities/{code}/accounts", "billing", "Create accounts", Auth::Staff(OPERATOR))
        .json("an account, or a list of them")
        .ok(200, "the per-row report"),
    op(
        "POST",
        "/api/v1/communities/{code}/accounts/import",
        "billing",
        "Create accounts from a CSV or XLSX file",
        Auth::Staff(OPERATOR),
    )
    .body("text/csv", "an account file (CSV, or XLSX with its spreadsheet media type)")
    .ok(200, "the per-row report"),
    op(
        "GET",
        "/api/v1/communities/{code}/billing-settings",
        "billing",
        "A community's billing settings",
        Auth::Staff(READ),
    ),
    op(
        "PUT",
        "/api/v1/communities/{code}/billing-settings",
        "billing",
        "Change a community's billing settings",
        Auth::Staff(OPERATOR),
    )
    .json("the billing settings"),
    op("GET", "/api/v1/accounts/{id}/balance", "billing", "Receivable, credit and threshold", Auth::Staff(READ)),
    op("GET", "/api/v1/accounts/{id}/bills/open", "billing", "Open bills in allocation order", Auth::Staff(READ)),
    op(
        "POST",
        "/api/v1/accounts/{id}/topups",
        "billing",
        "A manual prepaid top-up (operator or finance)",
        Auth::Staff(&["operator", "finance"]),
    )
    .json("amount (yuan string), reference, note?")
    .ok(201, "the top-up"),
    op("PUT", "/api/v1/accounts/{id}/low-balance", "billing", "Set the low-balance threshold", Auth::Staff(OPERATOR))
        .json("threshold (yuan string or null)"),
    // reminders
    op(
        "GET",
        "/unsubscribe/{token}",
        "reminders",
        "The unsubscribe link's confirmation page (changes nothing)",
        Auth::Link,
    )
    .ok(200, "an HTML page with a confirm button; 400 for an altered or expired link")
    .produces("text/html"),
    op(
        "POST",
        "/unsubscribe/{token}",
        "reminders",
        "Opt out of reminder e-mails or SMS (also the RFC 8058 one-click target)",
        Auth::Link,
    )
    .ok(200, "an HTML confirmation; 400 for an altered or expired link")
    .produces("text/html"),
    op(
        "POST",
        "/api/v1/reminders/run",
        "reminders",
        "Plan reminders and (unless a dry run) enqueue them: who, by which channel, and why or why not",
        Auth::Staff(OPERATOR),
    )
    .json("community?, dry_run? (any reader may dry-run), at? (RFC 3339, dry run only)")
    .ok(200, "the plan: per account the decision, channel and reasons"),
    op(
        "GET",
        "/api/v1/accounts/{id}/reminders",
        "reminders",
        "An account's reminder history with delivery attempts and statuses",
        Auth::Staff(READ),
    ),
    op(
        "POST",
        "/api/v1/reminders/{id}/served",
        "reminders",
        "Record that a formal written notice was served",
        Auth::Staff(OPERATOR),
    )
    .json("evidence (how and when it was served)"),
    op(
        "POST",
        "/api/v1/reminders/sms-replies/{provider}",
        "reminders",
        "The SMS provider's inbound replies (TD/退订 opts out); provider aliyun or tencent",
        Auth::Link,
    )
    .query(&[("token", "required: the inbound-reply token configured at the provider")])
    .json("the provider's reply push (Alibaba: list of {phone_number, content}; Tencent: list of {mobile, text})"),
    // payments
    op(
        "POST",
        "/api/v1/payments",
        "payments",
        "Create (or reuse, or supersede) a payment order for open bills of an account, or a top-up; also with the account's pay link in X-Pay-Link; Idempotency-Key required",
        Auth::Staff(PAYERS),
    )
    .json("account_id, bill_ids[] or top_up (yuan string), channel (alipay|wechatpay|unionpay), method (qr|h5|jsapi|web), if_live? (reuse|supersede), payer_openid?, payer_ip?, return_url?")
    .ok(201, "the order with what the payer needs (payer_action: qr_code, redirect, jsapi or form); 200 with reused=true for the same live order; 409 when a bill has another live order"),
    op("GET", "/api/v1/payments/flags", "payments", "Flags for finance and rejected callbacks with their reasons", Auth::Staff(FINANCE_READ)),
    op("GET", "/api/v1/payments/{order_no}", "payments", "A payment order: bills, status, refunds, receipt number", Auth::Staff(READ)),
    op("POST", "/api/v1/payments/{order_no}/query", "payments", "Query the order at its gateway and apply a payment it shows", Auth::Staff(PAYERS))
        .ok(200, "what the query found and did"),
    op("POST", "/api/v1/payments/{order_no}/close", "payments", "Close an open order (at the gateway first); Idempotency-Key required", Auth::Staff(PAYERS)),
    op("POST", "/api/v1/payments/{order_no}/refunds", "payments", "Refund a paid order in full or in part; Idempotency-Key required", Auth::Staff(FINANCE))
        .json("amount? (yuan string; default: all that is left), reason")
        .ok(201, "the refund (processing until the gateway confirms)"),
    op("GET", "/api/v1/refunds/{refund_no}", "payments", "A refund and its status", Auth::Staff(READ)),
    op("GET", "/api/v1/receipts/{receipt_no}", "payments", "A receipt (staff, or the account's pay link in X-Pay-Link)", Auth::Staff(READ)),
    op("GET", "/api/v1/accounts/{id}/receipts", "payments", "An account's receipts (staff, or its pay link in X-Pay-Link)", Auth::Staff(READ)),
    op("POST", "/notify/{channel}/{merchant}", "payments", "A gateway's payment or refund notification, verified over the raw bytes and applied once", Auth::Gateway)
        .body("application/x-www-form-urlencoded", "the gateway's notification as it sends it (JSON for WeChat Pay)")
        .ok(200, "the gateway's required answer (Alipay `success`, WeChat Pay 200/204, UnionPay 200); a failure answer makes it deliver again"),
    op("GET", "/payments/return/{order_no}", "payments", "Where a payer's browser returns after a browser flow: how the order stands", Auth::Public)
        .ok(200, "a short text")
        .produces("text/plain"),
    // reconciliation
    op(
        "POST",
        "/api/v1/reconcile/runs",
        "reconciliation",
        "Reconcile a channel, merchant and day (the file given, or downloaded)",
        Auth::Staff(FINANCE),
    )
    .json("channel, merchant, date (YYYY-MM-DD), file_base64?")
    .ok(200, "the run: summary, items, settled"),
    op("GET", "/api/v1/reconcile/runs", "reconciliation", "Reconciliation runs, newest first", Auth::Staff(FINANCE))
        .query(&[("channel", "alipay, wechatpay or unionpay"), ("merchant", "a merchant id"), ("date", "YYYY-MM-DD")]),
    op(
        "GET",
        "/api/v1/reconcile/runs/{id}",
        "reconciliation",
        "A run's summary and items with their state now",
        Auth::Staff(FINANCE),
    ),
    op(
        "GET",
        "/api/v1/reconcile/discrepancies",
        "reconciliation",
        "Open discrepancies of the current runs",
        Auth::Staff(FINANCE),
    )
    .query(&[("date", "up to this bill date")]),
    op(
        "POST",
        "/api/v1/reconcile/discrepancies/{id}/resolve",
        "reconciliation",
        "Finance's decision on a discrepancy, posted as a balanced journal entry",
        Auth::Staff(FINANCE),
    )
    .json("decision (post_payment, refund, write_off, carry_over), reason"),
    op(
        "GET",
        "/api/v1/reconcile/report",
        "reconciliation",
        "The morning reconciliation report",
        Auth::Staff(FINANCE),
    )
    .query(&[("date", "required: the bill date"), ("format", "json (default), csv or xlsx")]),
];

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn operation_id(op: &Op) -> String {
    let mut id = op.method.to_ascii_lowercase();
    for seg in op
        .path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api" && *s != "v1")
    {
        id.push('_');
        id.extend(seg.trim_matches(|c| c == '{' || c == '}').chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    id
}

fn operation(op: &Op) -> Value {
    let mut params: Vec<Value> = path_params(op.path)
        .into_iter()
        .map(|name| {
            let integer = name == "id";
            json!({
                "name": name, "in": "path", "required": true,
                "schema": if integer { json!({"type": "integer", "format": "int64"}) } else { json!({"type": "string"}) }
            })
        })
        .collect();
    for (name, what) in op.query {
        params.push(json!({
            "name": name, "in": "query", "required": what.starts_with("required"),
            "description": what, "schema": {"type": "string"}
        }));
    }
    let mutating = op.method != "GET";
    if mutating && matches!(op.auth, Auth::Staff(_)) {
        params.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "the same key and body replay the first answer; another body is 422",
            "schema": {"type": "string"}
        }));
    }
    let mut o = Map::new();
    o.insert("operationId".into(), json!(operation_id(op)));
    o.insert("summary".into(), json!(op.summary));
    o.insert("tags".into(), json!([op.tag]));
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    match op.body {
        Body::None => {}
        Body::Json(fields) => {
            o.insert(
                "requestBody".into(),
                json!({"required": true, "description": fields, "content": {(JSON): {"schema": {}}}}),
            );
        }
        Body::Other(media, what) => {
            o.insert(
                "requestBody".into(),
                json!({"required": true, "description": what, "content": {(media): {"schema": {"type": "string"}}}}),
            );
        }
    }
    let mut responses = Map::new();
    responses.insert(
        op.ok.0.to_string(),
        json!({"description": op.ok.1, "content": {(op.produces): {"schema": {}}}}),
    );
    let error =
        |d: &str| json!({"description": d, "content": {(JSON): {"schema": {"$ref": "#/components/schemas/Error"}}}});
    if op.produces == JSON && op.auth != Auth::Public {
        responses.insert("400".into(), error("the request is not valid"));
    }
    match op.auth {
        Auth::Staff(roles) => {
            responses.insert("401".into(), error("no or unknown credentials"));
            responses.insert(
                "403".into(),
                error(&format!(
                    "the role may not do this (needs {}), or a session write without its CSRF token",
                    if roles == ADMIN {
                        "admin".to_string()
                    } else {
                        format!("{} or admin", roles.join(", "))
                    }
                )),
            );
            let sec = vec![json!({"bearer": []}), json!({"session": []})];
            o.insert("security".into(), Value::Array(sec));
            o.insert("x-roles".into(), json!(roles));
        }
        Auth::Device => {
            responses.insert("401".into(), error("unsigned, badly signed, stale or replayed"));
            o.insert("security".into(), json!([{"device": []}]));
        }
        Auth::Public | Auth::Link | Auth::Gateway => {
            o.insert("security".into(), json!([]));
        }
    }
    o.insert("responses".into(), Value::Object(responses));
    Value::Object(o)
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
        item[op.method.to_ascii_lowercase()] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "meterpay",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Bills residents for water and electricity and gets them paid. Money is integer fen \
                (`*_fen`), quantities ×10⁴ (`*_e4`), prices ×10⁶ (`*_e6`); amounts a person types are yuan strings. \
                Errors are `{\"error\": {\"code\", \"message\"}}`. Every response carries `x-request-id`."
        },
        "tags": [
            {"name": "operations"}, {"name": "access"}, {"name": "readings"}, {"name": "billing"},
            {"name": "payments"}, {"name": "reconciliation"}, {"name": "reminders"}
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API token from `meterpay tokens add` or POST /api/v1/tokens"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-meterpay_session",
                    "description": "a signed-in staff session; writes also need the session's CSRF token in `x-csrf-token`"},
                "device": {"type": "apiKey", "in": "header", "name": "X-Meterpay-Signature",
                    "description": "hex HMAC-SHA256 of METHOD\\nPATH\\nTIMESTAMP\\nhex(SHA-256(body)) with the device key named by X-Meterpay-Key-Id, timestamp in X-Meterpay-Timestamp"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string", "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict", "unprocessable", "unavailable", "internal"]},
                        "message": {"type": "string"}
                    }}}
                }
            }
        }
    })
}

async fn serve() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| serde_json::to_string_pretty(&document()).unwrap_or_default());
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body.as_str(),
    )
        .into_response()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for op in OPERATIONS {
            assert!(seen.insert((op.method, op.path)), "{} {} twice", op.method, op.path);
            assert!(
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&op.method),
                "{}",
                op.method
            );
            assert!(op.path.starts_with('/'), "{}", op.path);
            assert!(!is_page(op.path), "{} is a page, not API", op.path);
            assert!(!op.summary.is_empty());
        }
        let ids: std::collections::HashSet<String> = OPERATIONS.iter().map(operation_id).collect();
        assert_eq!(ids.len(), OPERATIONS.len(), "operation ids are unique");
    }

    #[test]
    fn the_document_declares_every_path_parameter() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let op = &doc["paths"]["/api/v1/users/{name}/role"]["put"];
        assert_eq!(op["parameters"][0]["name"], "name");
        assert_eq!(op["parameters"][0]["in"], "path");
        assert_eq!(op["security"][0]["bearer"], json!([]));
        assert!(doc["paths"]["/healthz"]["get"]["security"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn pages_are_told_apart_from_the_api() {
        for p in [
            "/",
            "/staff",
            "/staff/ops/readings",
            "/pay/abc",
            "/pay",
            "/lang/en",
            "/assets/meterpay.css",
        ] {
            assert!(is_page(p), "{p}");
        }
        for p in [
            "/api/v1/bills",
            "/healthz",
            "/unsubscribe/{token}",
            "/paying",
            "/staffing",
        ] {
            assert!(!is_page(p), "{p}");
        }
    }
}
