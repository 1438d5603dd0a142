//! The sandbox SMS provider: the server side of Alibaba Cloud Dysmsapi and Tencent Cloud SMS,
//! close enough to the real wire formats that our clients cannot tell (the SMS twin of the
//! gateway sandbox, design.md §4).
//!
//! - `POST /aliyun/`: SendSms and QuerySendDetails, signed with V3 (`ACS3-HMAC-SHA256`
//!   `Authorization` header) or V2 (`Signature` parameter). A wrong signature is answered as
//!   Alibaba answers it: HTTP 400 `{"Code":"SignatureDoesNotMatch",…}`; an unknown key 404
//!   `InvalidAccessKeyId.NotFound`; a stale `x-acs-date` (> 15 min) `InvalidTimeStamp.Expired`;
//!   a reused nonce `SignatureNonceUsed`; over the rate limit `Throttling.User`.
//! - `POST /tencent/`: SendSms, PullSmsSendStatusByPhoneNumber and PullSmsSendStatus, signed
//!   with TC3-HMAC-SHA256 over the exact body bytes and the `Content-Type` received. Refusals
//!   are HTTP 200 with `Response.Error` as Tencent sends them: `AuthFailure.SignatureFailure`,
//!   `AuthFailure.SecretIdNotFound`, `AuthFailure.SignatureExpire` (> 5 min),
//!   `RequestLimitExceeded`.
//!
//! Messages that pass are recorded ([`SmsSandbox::messages`]) with the text the resident
//! would read (`【签名】` + the filled template), and delivered at once unless told otherwise;
//! status queries answer from that record. Fault switches ([`Fault`]) make it time out, answer
//! 5xx, refuse a number for good, or take a message and then drop the connection (or hang), so
//! the client's outcome is unknown — the case the outbox must settle by status.
//!
//! [`SmsSandbox::router`] is an axum `Router` to mount anywhere (the demo, a `meterpay
//! sandbox` command); [`SmsSandbox::spawn`] serves it on a port of its own (tests use port 0).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use super::sms::aliyun::sign as acs;
use super::sms::aliyun::transformers::{ApiAnswer, SendDetail, SendDetails};
use super::sms::tencent::sign as tc3;
use super::sms::tencent::transformers::{
    ApiError, Envelope, PullByPhoneRequest, PullStatus, ResponseBody, SendSmsRequest, SendStatus,
};
use super::sms::{china_date, normalize_cn_mobile, DeliveryState, ProviderKind};

/// Credentials the sandbox accepts. The defaults are what `demo` configures its clients with.
#[derive(Debug, Clone)]
pub struct SandboxCredentials {
    pub aliyun_access_key_id: String,
    pub aliyun_access_key_secret: String,
    pub tencent_secret_id: String,
    pub tencent_secret_key: String,
    pub tencent_sms_sdk_app_id: String,
}

impl Default for SandboxCredentials {
    fn default() -> Self {
        SandboxCredentials {
            aliyun_access_key_id: "LTAIsandbox".into(),
            aliyun_access_key_secret: "sandbox-aliyun-secret".into(),
            tencent_secret_id: "AKIDsandbox".into(),
            tencent_secret_key: "sandbox-tencent-secret".into(),
            tencent_sms_sdk_app_id: "1400000000".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub credentials: SandboxCredentials,
    /// Requests per second per provider before `Throttling.User` / `RequestLimitExceeded`.
    pub rate_per_sec: u32,
    /// Approved templates by code/id (Alibaba `${name}`, Tencent `{1}`); empty accepts any code.
    pub templates: HashMap<String, String>,
    /// Approved signature names; empty accepts any.
    pub sign_names: Vec<String>,
    /// How long [`Fault::Timeout`] holds a request before answering 504.
    pub timeout_hold: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            credentials: SandboxCredentials::default(),
            rate_per_sec: 500,
            templates: HashMap::new(),
            sign_names: Vec::new(),
            timeout_hold: Duration::from_secs(30),
        }
    }
}

/// A fault switch, per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Hold the request, record nothing, answer 504 after `timeout_hold`.
    Timeout,
    /// Answer 503 and record nothing.
    ServerError,
    /// Record (and deliver) the message, then break the connection instead of answering.
    DropAfterAccept,
    /// Record the message and never answer (a sender killed while waiting).
    HangAfterAccept,
}

/// One message the sandbox took.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxMessage {
    pub provider: ProviderKind,
    /// 11 digits.
    pub phone: String,
    pub sign_name: String,
    pub template_code: String,
    pub params: Vec<(String, String)>,
    /// What the phone shows: `【签名】` + the filled template.
    pub content: String,
    /// Alibaba `OutId` / Tencent `SessionContext`.
    pub out_id: String,
    /// Alibaba `BizId` / Tencent `SerialNo`.
    pub message_id: String,
    pub received_at: DateTime<Utc>,
    pub state: DeliveryState,
    /// Tencent's PullSmsSendStatus hands each report out once.
    #[serde(skip)]
    pulled: bool,
}

/// A request refused before anything was recorded, for tests to inspect.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub provider: ProviderKind,
    pub code: String,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Inner {
    opts: SandboxOptions,
    messages: Mutex<Vec<SandboxMessage>>,
    refusals: Mutex<Vec<Refusal>>,
    faults: Mutex<HashMap<ProviderKind, Fault>>,
    failing_numbers: Mutex<HashSet<String>>,
    nonces: Mutex<HashSet<String>>,
    buckets: Mutex<HashMap<ProviderKind, Bucket>>,
    next_id: Mutex<u64>,
    recorded: watch::Sender<usize>,
}

/// The sandbox provider. Cheap to clone; every clone shares one record.
#[derive(Clone)]
pub struct SmsSandbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SmsSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSandbox").finish_non_exhaustive()
    }
}

/// A sandbox served on its own port.
pub struct SandboxServer {
    pub addr: SocketAddr,
    pub sandbox: SmsSandbox,
    handle: tokio::task::JoinHandle<()>,
}

impl SandboxServer {
    pub fn aliyun_endpoint(&self) -> String {
        format!("http://{}/aliyun/", self.addr)
    }
    pub fn tencent_endpoint(&self) -> String {
        format!("http://{}/tencent/", self.addr)
    }
    pub fn stop(self) {
        self.handle.abort();
    }
}

impl SmsSandbox {
    pub fn new(opts: SandboxOptions) -> SmsSandbox {
        let (recorded, _) = watch::channel(0);
        SmsSandbox {
            inner: Arc::new(Inner {
                opts,
                messages: Mutex::new(Vec::new()),
                refusals: Mutex::new(Vec::new()),
                faults: Mutex::new(HashMap::new()),
                failing_numbers: Mutex::new(HashSet::new()),
                nonces: Mutex::new(HashSet::new()),
                buckets: Mutex::new(HashMap::new()),
                next_id: Mutex::new(1),
                recorded,
            }),
        }
    }

    pub fn options(&self) -> &SandboxOptions {
        &self.inner.opts
    }

    /// The routes, to mount in another app or serve alone.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/aliyun/", post(aliyun).get(aliyun))
            .route("/tencent/", post(tencent))
            .with_state(self.clone())
    }

    /// Serve on `127.0.0.1:0`.
    pub async fn spawn(self) -> std::io::Result<SandboxServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SandboxServer {
            addr,
            sandbox: self,
            handle,
        })
    }

    /// Every message taken so far, in order.
    pub fn messages(&self) -> Vec<SandboxMessage> {
        self.inner.messages.lock().expect("sandbox lock").clone()
    }

    /// Every request refused before recording (signature, key, time, nonce, rate).
    pub fn refusals(&self) -> Vec<Refusal> {
        self.inner.refusals.lock().expect("sandbox lock").clone()
    }

    /// Switch a fault on (`Some`) or off (`None`) for one provider.
    pub fn set_fault(&self, provider: ProviderKind, fault: Option<Fault>) {
        let mut f = self.inner.faults.lock().expect("sandbox lock");
        match fault {
            Some(x) => f.insert(provider, x),
            None => f.remove(&provider),
        };
    }

    /// Refuse this number for good on both providers (invalid number).
    pub fn fail_number(&self, phone: &str) {
        let p = normalize_cn_mobile(phone).unwrap_or_else(|_| phone.to_string());
        self.inner.failing_numbers.lock().expect("sandbox lock").insert(p);
    }

    /// Mark a recorded message undelivered (a carrier failure receipt).
    pub fn set_state(&self, message_id: &str, state: DeliveryState) {
        for m in self.inner.messages.lock().expect("sandbox lock").iter_mut() {
            if m.message_id == message_id {
                m.state = state.clone();
            }
        }
    }

    /// Wait until at least `n` messages are recorded.
    pub async fn wait_for_messages(&self, n: usize) {
        let mut rx = self.inner.recorded.subscribe();
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    fn fault(&self, p: ProviderKind) -> Option<Fault> {
        self.inner.faults.lock().expect("sandbox lock").get(&p).copied()
    }

    fn refuse(&self, provider: ProviderKind, code: &str) {
        self.inner.refusals.lock().expect("sandbox lock").push(Refusal {
            provider,
            code: code.to_string(),
        });
    }

    /// Take one token from the provider's bucket.
    fn allow(&self, p: ProviderKind) -> bool {
        let rate = f64::from(self.inner.opts.rate_per_sec.max(1));
        let mut buckets = self.inner.buckets.lock().expect("sandbox lock");
        let now = Instant::now();
        let b = buckets.entry(p).or_insert(Bucket { tokens: rate, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn nonce_is_fresh(&self, nonce: &str) -> bool {
        self.inner
            .nonces
            .lock()
            .expect("sandbox lock")
            .insert(nonce.to_string())
    }

    fn new_id(&self) -> u64 {
        let mut n = self.inner.next_id.lock().expect("sandbox lock");
        *n += 1;
        *n
    }

    fn record(&self, m: SandboxMessage) {
        let count = {
            let mut all = self.inner.messages.lock().expect("sandbox lock");
            all.push(m);
            all.len()
        };
        self.inner.recorded.send_replace(count);
    }

    fn number_fails(&self, phone: &str) -> bool {
        self.inner.failing_numbers.lock().expect("sandbox lock").contains(phone)
    }

    /// Check the template and render what the phone shows. `Err(code)` names the refusal.
    fn render(
        &self,
        provider: ProviderKind,
        sign: &str,
        code: &str,
        params: &[(String, String)],
    ) -> Result<String, &'static str> {
        let (sign_err, tpl_err, params_err) = match provider {
            ProviderKind::Aliyun => (
                "isv.SMS_SIGNATURE_ILLEGAL",
                "isv.SMS_TEMPLATE_ILLEGAL",
                "isv.TEMPLATE_MISSING_PARAMETERS",
            ),
            ProviderKind::Tencent => (
                "FailedOperation.SignatureIncorrectOrUnapproved",
                "FailedOperation.TemplateIncorrectOrUnapproved",
                "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            ),
        };
        let opts = &self.inner.opts;
        if sign.is_empty() || (!opts.sign_names.is_empty() && !opts.sign_names.iter().any(|s| s == sign)) {
            return Err(sign_err);
        }
        let body = if opts.templates.is_empty() {
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("，")
        } else {
            let text = opts.templates.get(code).ok_or(tpl_err)?;
            let mut out = text.clone();
            match provider {
                ProviderKind::Aliyun => {
                    for name in placeholders_aliyun(text) {
                        let v = params.iter().find(|(k, _)| *k == name).ok_or(params_err)?;
                        out = out.replace(&format!("${{{name}}}"), &v.1);
                    }
                }
                ProviderKind::Tencent => {
                    let n = placeholders_tencent(text);
                    if n != params.len() {
                        return Err(params_err);
                    }
                    for (i, (_, v)) in params.iter().enumerate().rev() {
                        out = out.replace(&format!("{{{}}}", i + 1), v);
                    }
                }
            }
            out
        };
        Ok(format!("【{sign}】{body}"))
    }
}

fn placeholders_aliyun(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        if let Some(j) = rest.find('}') {
            out.push(rest[..j].to_string());
            rest = &rest[j + 1..];
        }
    }
    out
}

fn placeholders_tencent(text: &str) -> usize {
    (1..=20).take_while(|i| text.contains(&format!("{{{i}}}"))).count()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Percent-decode `a=b&c=d` the RFC 3986 way (`+` stays `+`).
fn decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

// ---- Alibaba Cloud ----

fn aliyun_error(status: StatusCode, code: &str, message: &str) -> Response {
    let a = ApiAnswer {
        code: code.into(),
        message: message.into(),
        request_id: Some(request_id()),
        host_id: Some("dysmsapi.aliyuncs.com".into()),
        recommend: Some(format!("https://api.aliyun.com/troubleshoot?q={code}")),
        ..Default::default()
    };
    (status, axum::Json(a)).into_response()
}

fn aliyun_ok(a: ApiAnswer) -> Response {
    (StatusCode::OK, axum::Json(a)).into_response()
}

/// Check the request's signature; `Ok((action, params))` when it holds.
#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
fn aliyun_verify(
    sb: &SmsSandbox,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &[u8],
) -> Result<(String, Vec<(String, String)>), Response> {
    let creds = &sb.inner.opts.credentials;
    let bad = |status: StatusCode, code: &str, msg: &str| {
        sb.refuse(ProviderKind::Aliyun, code);
        aliyun_error(status, code, msg)
    };
    if let Some(auth) = header(headers, "authorization") {
        let a = acs::parse_v3_authorization(auth).ok_or_else(|| {
            bad(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        })?;
        if a.access_key_id != creds.aliyun_access_key_id {
            return Err(bad(
                StatusCode::NOT_FOUND,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ));
        }
        // Every x-acs-* header sent and host must be signed.
        let must: Vec<String> = headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| k.starts_with("x-acs-") || k == "host")
            .collect();
        if must.iter().any(|k| !a.signed_headers.contains(k))
            || [
                "x-acs-action",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-version",
                "x-acs-content-sha256",
            ]
            .iter()
            .any(|k| header(headers, k).is_none())
        {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            ));
        }
        let date = header(headers, "x-acs-date").unwrap_or_default();
        let fresh = DateTime::parse_from_rfc3339(date)
            .map(|d| (Utc::now() - d.with_timezone(&Utc)).num_seconds().abs() <= 15 * 60)
            .unwrap_or(false);
        if !fresh {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }
        let signed: Vec<(String, String)> = a
            .signed_headers
            .iter()
            .map(|k| (k.clone(), header(headers, k).unwrap_or_default().to_string()))
            .collect();
        let (canonical, _) = acs::v3_canonical_request(method.as_str(), path, query, &signed, body);
        let (_, _, expected) = acs::v3_signature_of(&creds.aliyun_access_key_secret, &canonical);
        let body_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
        if expected != a.signature || header(headers, "x-acs-content-sha256") != Some(body_hash.as_str()) {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
            ));
        }
        if !sb.nonce_is_fresh(header(headers, "x-acs-signature-nonce").unwrap_or_default()) {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        let mut params = query.to_vec();
        if header(headers, "content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            params.extend(decode_pairs(&String::from_utf8_lossy(body)));
        }
        return Ok((header(headers, "x-acs-action").unwrap_or_default().to_string(), params));
    }
    // V2: everything in the query (GET) or the form body (POST).
    let mut params = query.to_vec();
    if header(headers, "content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        params.extend(decode_pairs(&String::from_utf8_lossy(body)));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(sig) = get("Signature") else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "MissingSignature",
            "Signature is mandatory for this action.",
        ));
    };
    if get("AccessKeyId").as_deref() != Some(creds.aliyun_access_key_id.as_str()) {
        return Err(bad(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let fresh = get("Timestamp")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|d| (Utc::now() - d.with_timezone(&Utc)).num_seconds().abs() <= 15 * 60)
        .unwrap_or(false);
    if !fresh {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    let unsigned: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "Signature").cloned().collect();
    if acs::v2_signature(&creds.aliyun_access_key_secret, method.as_str(), &unsigned) != sig {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature does not match our calculation.",
        ));
    }
    if !sb.nonce_is_fresh(&get("SignatureNonce").unwrap_or_default()) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok((get("Action").unwrap_or_default(), unsigned))
}

async fn aliyun(
    State(sb): State<SmsSandbox>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !sb.allow(ProviderKind::Aliyun) {
        sb.refuse(ProviderKind::Aliyun, "Throttling.User");
        return aliyun_error(
            StatusCode::BAD_REQUEST,
            "Throttling.User",
            "Request was denied due to user flow control.",
        );
    }
    let query = decode_pairs(uri.query().unwrap_or_default());
    let (action, params) = match aliyun_verify(&sb, &method, uri.path(), &headers, &query, &body) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match action.as_str() {
        "SendSms" => {
            match sb.fault(ProviderKind::Aliyun) {
                Some(Fault::Timeout) => {
                    tokio::time::sleep(sb.inner.opts.timeout_hold).await;
                    return aliyun_error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "ServiceUnavailable",
                        "The request has timed out.",
                    );
                }
                Some(Fault::ServerError) => {
                    return aliyun_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "The request has failed due to a temporary failure of the server.",
                    )
                }
                _ => {}
            }
            let Ok(phone) = normalize_cn_mobile(&get("PhoneNumbers")) else {
                return aliyun_error(StatusCode::OK, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
            };
            if sb.number_fails(&phone) {
                return aliyun_error(StatusCode::OK, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
            }
            let vars: Vec<(String, String)> =
                match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&get("TemplateParam")) {
                    Ok(m) => m
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                        .collect(),
                    Err(_) if get("TemplateParam").is_empty() => Vec::new(),
                    Err(_) => {
                        return aliyun_error(
                            StatusCode::OK,
                            "isv.INVALID_JSON_PARAM",
                            "JSON参数不合法，只接受字符串值",
                        )
                    }
                };
            if vars.iter().any(|(_, v)| v.contains("://")) {
                return aliyun_error(StatusCode::OK, "isv.PARAM_NOT_SUPPORT_URL", "不支持URL");
            }
            let content = match sb.render(ProviderKind::Aliyun, &get("SignName"), &get("TemplateCode"), &vars) {
                Ok(c) => c,
                Err(code) => return aliyun_error(StatusCode::OK, code, "模板或签名不合法"),
            };
            let biz_id = format!("{:018}^0", 900_000_000_000_000_000u64 + sb.new_id());
            sb.record(SandboxMessage {
                provider: ProviderKind::Aliyun,
                phone,
                sign_name: get("SignName"),
                template_code: get("TemplateCode"),
                params: vars,
                content,
                out_id: get("OutId"),
                message_id: biz_id.clone(),
                received_at: Utc::now(),
                state: DeliveryState::Delivered,
                pulled: false,
            });
            if let Some(resp) = after_accept(sb.fault(ProviderKind::Aliyun)).await {
                return resp;
            }
            aliyun_ok(ApiAnswer {
                code: "OK".into(),
                message: "OK".into(),
                request_id: Some(request_id()),
                biz_id: Some(biz_id),
                ..Default::default()
            })
        }
        "QuerySendDetails" => {
            let phone = normalize_cn_mobile(&get("PhoneNumber")).unwrap_or_default();
            let date = get("SendDate");
            let biz = get("BizId");
            let items: Vec<SendDetail> = sb
                .messages()
                .into_iter()
                .filter(|m| m.provider == ProviderKind::Aliyun && m.phone == phone)
                .filter(|m| china_date(m.received_at).format("%Y%m%d").to_string() == date)
                .filter(|m| biz.is_empty() || m.message_id == biz)
                .map(|m| {
                    let local = (m.received_at + chrono::Duration::hours(8))
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string();
                    let (status, err) = match &m.state {
                        DeliveryState::Pending => (1, String::new()),
                        DeliveryState::Failed { code } => (2, code.clone()),
                        DeliveryState::Delivered => (3, "DELIVERED".to_string()),
                    };
                    SendDetail {
                        phone_num: m.phone,
                        send_status: status,
                        err_code: err,
                        template_code: m.template_code,
                        content: m.content,
                        send_date: local.clone(),
                        receive_date: local,
                        out_id: m.out_id,
                    }
                })
                .collect();
            aliyun_ok(ApiAnswer {
                code: "OK".into(),
                message: "OK".into(),
                request_id: Some(request_id()),
                total_count: Some(items.len() as i64),
                details: Some(SendDetails { items }),
                ..Default::default()
            })
        }
        other => aliyun_error(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            &format!("Specified api {other} is not found, please check your url and method."),
        ),
    }
}

/// The faults that strike after a message is recorded.
async fn after_accept(fault: Option<Fault>) -> Option<Response> {
    match fault {
        Some(Fault::DropAfterAccept) => {
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by the sandbox"))
            });
            Some(
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from_stream(broken))
                    .expect("a response"),
            )
        }
        Some(Fault::HangAfterAccept) => {
            std::future::pending::<()>().await;
            None
        }
        _ => None,
    }
}

// ---- Tencent Cloud ----

fn tencent_answer(body: ResponseBody) -> Response {
    (StatusCode::OK, axum::Json(Envelope { response: body })).into_response()
}

fn tencent_error(code: &str, message: &str) -> Response {
    tencent_answer(ResponseBody {
        error: Some(ApiError {
            code: code.into(),
            message: message.into(),
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    })
}

#[allow(clippy::result_large_err)] // the refusal is the response itself, built once
fn tencent_verify(
    sb: &SmsSandbox,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
) -> Result<String, Response> {
    let creds = &sb.inner.opts.credentials;
    let bad = |code: &str, msg: &str| {
        sb.refuse(ProviderKind::Tencent, code);
        tencent_error(code, msg)
    };
    let auth = header(headers, "authorization")
        .and_then(tc3::parse_authorization)
        .ok_or_else(|| {
            bad(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            )
        })?;
    if auth.secret_id != creds.tencent_secret_id {
        return Err(bad(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.",
        ));
    }
    let Some(ts) = header(headers, "x-tc-timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return Err(bad(
            "MissingParameter",
            "The request is missing a required parameter `Timestamp`.",
        ));
    };
    if (Utc::now().timestamp() - ts).abs() > 300 {
        return Err(bad(
            "AuthFailure.SignatureExpire",
            "Signature expired. Timestamp and server time cannot differ by more than five minutes.",
        ));
    }
    let action = header(headers, "x-tc-action").unwrap_or_default().to_string();
    let signs = |h: &str| auth.signed_headers.iter().any(|s| s == h);
    if !signs("content-type")
        || !signs("host")
        || auth.service != super::sms::tencent::SERVICE
        || auth.date != tc3::utc_date(ts)
    {
        return Err(bad(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        ));
    }
    let req = tc3::Tc3Request {
        method: method.as_str(),
        host: header(headers, "host").unwrap_or_default(),
        query,
        content_type: header(headers, "content-type").unwrap_or_default(),
        action: &action,
        sign_action: signs("x-tc-action"),
        timestamp: ts,
        service: super::sms::tencent::SERVICE,
        body,
    };
    let expected = tc3::sign(&auth.secret_id, &creds.tencent_secret_key, &req);
    if expected.signature != auth.signature {
        return Err(bad(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        ));
    }
    Ok(action)
}

async fn tencent(
    State(sb): State<SmsSandbox>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !sb.allow(ProviderKind::Tencent) {
        sb.refuse(ProviderKind::Tencent, "RequestLimitExceeded");
        return tencent_error(
            "RequestLimitExceeded",
            "Your current request times equals to `MaxRequestTimes` in a second.",
        );
    }
    let action = match tencent_verify(&sb, &method, &headers, uri.query().unwrap_or_default(), &body) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let creds = &sb.inner.opts.credentials;
    match action.as_str() {
        "SendSms" => {
            match sb.fault(ProviderKind::Tencent) {
                Some(Fault::Timeout) => {
                    tokio::time::sleep(sb.inner.opts.timeout_hold).await;
                    return (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response();
                }
                Some(Fault::ServerError) => {
                    return (StatusCode::BAD_GATEWAY, "<html><body>502 Bad Gateway</body></html>").into_response()
                }
                _ => {}
            }
            let Ok(req) = serde_json::from_slice::<SendSmsRequest>(&body) else {
                return tencent_error("InvalidParameter", "The request body is not valid JSON for SendSms.");
            };
            if req.sms_sdk_app_id != creds.tencent_sms_sdk_app_id {
                return tencent_error(
                    "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
                    "SmsSdkAppId verification failed.",
                );
            }
            let params: Vec<(String, String)> = req
                .template_param_set
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1).to_string(), v.clone()))
                .collect();
            let mut set = Vec::new();
            let mut accepted = false;
            for number in &req.phone_number_set {
                let fee_status = |code: &str, message: &str| SendStatus {
                    serial_no: String::new(),
                    phone_number: number.clone(),
                    fee: 0,
                    session_context: req.session_context.clone().unwrap_or_default(),
                    code: code.into(),
                    message: message.into(),
                    iso_code: "CN".into(),
                };
                let phone = match normalize_cn_mobile(number) {
                    Ok(p) if !sb.number_fails(&p) => p,
                    _ => {
                        set.push(fee_status(
                            "InvalidParameterValue.IncorrectPhoneNumber",
                            "incorrect number format",
                        ));
                        continue;
                    }
                };
                let content = match sb.render(ProviderKind::Tencent, &req.sign_name, &req.template_id, &params) {
                    Ok(c) => c,
                    Err(code) => {
                        set.push(fee_status(code, "template or signature not approved"));
                        continue;
                    }
                };
                let serial = format!("3369:{:028}", sb.new_id());
                sb.record(SandboxMessage {
                    provider: ProviderKind::Tencent,
                    phone,
                    sign_name: req.sign_name.clone(),
                    template_code: req.template_id.clone(),
                    params: params.clone(),
                    content,
                    out_id: req.session_context.clone().unwrap_or_default(),
                    message_id: serial.clone(),
                    received_at: Utc::now(),
                    state: DeliveryState::Delivered,
                    pulled: false,
                });
                accepted = true;
                let mut ok = fee_status("Ok", "send success");
                ok.serial_no = serial;
                ok.fee = 1;
                set.push(ok);
            }
            if accepted {
                if let Some(resp) = after_accept(sb.fault(ProviderKind::Tencent)).await {
                    return resp;
                }
            }
            tencent_answer(ResponseBody {
                send_status_set: Some(set),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            })
        }
        "PullSmsSendStatusByPhoneNumber" => {
            let Ok(req) = serde_json::from_slice::<PullByPhoneRequest>(&body) else {
                return tencent_error(
                    "InvalidParameter",
                    "The request body is not valid JSON for PullSmsSendStatusByPhoneNumber.",
                );
            };
            let phone = normalize_cn_mobile(&req.phone_number).unwrap_or_default();
            let end = req.end_time.unwrap_or(i64::MAX);
            let items: Vec<PullStatus> = sb
                .messages()
                .into_iter()
                .filter(|m| m.provider == ProviderKind::Tencent && m.phone == phone)
                .filter(|m| m.received_at.timestamp() >= req.begin_time && m.received_at.timestamp() <= end)
                .filter_map(pull_status)
                .skip(req.offset.max(0) as usize)
                .take(req.limit.clamp(0, 100) as usize)
                .collect();
            tencent_answer(ResponseBody {
                pull_status_set: Some(items),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            })
        }
        "PullSmsSendStatus" => {
            let limit = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Limit"].as_u64())
                .unwrap_or(100)
                .min(100) as usize;
            let mut out = Vec::new();
            for m in sb.inner.messages.lock().expect("sandbox lock").iter_mut() {
                if out.len() >= limit {
                    break;
                }
                if m.provider == ProviderKind::Tencent && !m.pulled && m.state != DeliveryState::Pending {
                    m.pulled = true;
                    out.extend(pull_status(m.clone()));
                }
            }
            tencent_answer(ResponseBody {
                pull_status_set: Some(out),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            })
        }
        other => tencent_error("InvalidAction", &format!("The action {other} does not exist.")),
    }
}

/// A delivery report for a message, once it has one.
fn pull_status(m: SandboxMessage) -> Option<PullStatus> {
    let (status, description) = match &m.state {
        DeliveryState::Pending => return None,
        DeliveryState::Delivered => ("SUCCESS", "DELIVRD".to_string()),
        DeliveryState::Failed { code } => ("FAIL", code.clone()),
    };
    Some(PullStatus {
        user_receive_time: Some(m.received_at.timestamp()),
        country_code: "86".into(),
        subscriber_number: m.phone.clone(),
        phone_number: format!("+86{}", m.phone),
        serial_no: m.message_id,
        report_status: status.into(),
        description,
        session_context: m.out_id,
    })
}
