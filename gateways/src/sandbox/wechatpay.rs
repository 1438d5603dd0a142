//! WeChat Pay API v3's server side (gateways.md §2): orders, query, close, refunds, the trade
//! bill and its download, and `/v3/certificates`, under `/wechatpay/v3/…`.
//!
//! Like WeChat Pay, the sim
//! - verifies every request's `Authorization` (scheme, the merchant's certificate serial, a
//!   timestamp within five minutes of the wall clock, the signature over
//!   `method\npath?query\ntimestamp\nnonce\nbody\n` with the merchant's public key) and refuses
//!   with 401 `SIGN_ERROR` otherwise;
//! - signs every answer (errors too; the bill download excepted) with its platform key:
//!   `Wechatpay-Timestamp` (wall clock), `-Nonce`, `-Signature`, `-Serial`;
//! - has platform certificates of its own, issued by its own test CA, with a **rotation**: an
//!   old and a new certificate with overlapping validity, both served (encrypted with the
//!   merchant's APIv3 key) by `/v3/certificates`; it signs with the old one until
//!   [`WechatPaySim::sign_with_new_certificate`]; or, for a merchant in public-key mode, with
//!   its WeChat Pay public key `PUB_KEY_ID_…`;
//! - notifies `TRANSACTION.SUCCESS` and `REFUND.SUCCESS` (resource encrypted with the APIv3 key)
//!   on the real schedule (15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h),
//!   signing each attempt afresh, until answered 200 or 204;
//! - answers refunds `PROCESSING`, then succeeds them after the sandbox's settle delay and
//!   notifies;
//! - writes trade bills (ALL, SUCCESS, REFUND) in the real format, fees with five decimals.
//!
//! Times in bodies (`success_time`, bill rows) follow the sandbox's clock; signature timestamps
//! follow the wall clock, as a real client's window does.
//!
//! # Merchant settings read from [`SimMerchant::extra`]
//! | key | meaning |
//! |---|---|
//! | `appid` | the appid bound to the merchant; orders naming another are refused `APPID_MCHID_NOT_MATCH` |
//! | `apiv3_key` | the merchant's APIv3 key (32 characters): encrypts notifications and certificates |
//! | `serial_no` | the merchant API certificate's serial; an `Authorization` naming another is refused |
//! | `key_mode` | `certificate` (default: sign with the platform certificate) or `public_key` |

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sha1::Digest;

use super::{
    cst, GatewaySim, OutgoingNotification, Sandbox, SimError, SimMerchant, SimOrder, SimOrderState, SimRefund,
    SimRefundState, SimTxn,
};
use crate::amount::fen_to_yuan;
use crate::crypto::{b64, load_private_key, load_public_key, sha256_hex, unb64, PrivateKey};
use crate::gateway::{Channel, PayMethod};
use crate::settlement::RowKind;
use crate::wechatpay::aead::ApiV3Key;
use crate::wechatpay::settlement::BillType;
use crate::wechatpay::sign::{new_nonce, request_message, response_message, Authorization};
use crate::wechatpay::transformers::{
    rfc3339_cst, BillAnswer, CertificateItem, CertificatesAnswer, CloseRequest, EncryptedResource, ErrorAnswer,
    NotificationEnvelope, OrderRequest, Payer, Refund, RefundAmount, RefundNotice, RefundNoticeAmount,
    RefundRequestBody, Transaction, TransactionAmount,
};
use crate::wechatpay::verify::{PlatformCertificate, TIMESTAMP_WINDOW_SECS};
use crate::wechatpay::{WechatPayClient, WechatPayConfig};

/// WeChat Pay's notification retry delays (after the first attempt).
pub const RETRY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];

/// The appid [`connect`] registers.
pub const SANDBOX_APPID: &str = "wx5a1b2c3d4e5f6a7b";

const CA_PEM: &str = include_str!("../../../fixtures/sandbox/wechatpay/ca.pem");
const OLD_CERT: &str = include_str!("../../../fixtures/sandbox/wechatpay/platform_old_cert.pem");
const OLD_KEY: &str = include_str!("../../../fixtures/sandbox/wechatpay/platform_old_key.pem");
const NEW_CERT: &str = include_str!("../../../fixtures/sandbox/wechatpay/platform_new_cert.pem");
const NEW_KEY: &str = include_str!("../../../fixtures/sandbox/wechatpay/platform_new_key.pem");
const PUBKEY_KEY: &str = include_str!("../../../fixtures/sandbox/wechatpay/pubkey_mode_key.pem");
const PUBKEY_PUBLIC: &str = include_str!("../../../fixtures/sandbox/wechatpay/pubkey_mode_public.pem");
const PUBKEY_ID: &str = include_str!("../../../fixtures/sandbox/wechatpay/pubkey_id.txt");
/// The project's test merchant (fixtures/wechatpay/), used by [`connect`].
pub const MERCHANT_KEY_PEM: &str = include_str!("../../../fixtures/wechatpay/merchant_apiclient_key.pem");
pub const MERCHANT_CERT_PEM: &str = include_str!("../../../fixtures/wechatpay/merchant_apiclient_cert.pem");
pub const MERCHANT_APIV3_KEY: &str = include_str!("../../../fixtures/wechatpay/apiv3_key.txt");

struct PlatformKey {
    cert: PlatformCertificate,
    pem: String,
    key: PrivateKey,
}

struct Inner {
    certs: Vec<PlatformKey>,
    signing: AtomicUsize,
    pubkey_id: String,
    pubkey: PrivateKey,
    downloads: Mutex<HashMap<String, Download>>,
}

struct Download {
    mchid: String,
    bytes: Vec<u8>,
}

/// WeChat Pay's server side. Cheap to clone; clones share state, so a test can keep one to
/// switch the signing certificate after plugging another into the sandbox.
#[derive(Clone)]
pub struct WechatPaySim {
    inner: Arc<Inner>,
}

/// Which key a merchant's answers and notifications are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// Platform certificates (downloaded from `/v3/certificates`).
    Certificate,
    /// The WeChat Pay public key (`PUB_KEY_ID_…`).
    PublicKey,
}

impl WechatPaySim {
    /// The sim with the committed test keys of `fixtures/sandbox/wechatpay/`.
    pub fn from_fixtures() -> WechatPaySim {
        let load = |cert: &str, key: &str| PlatformKey {
            cert: PlatformCertificate::parse_all(cert.as_bytes())
                .expect("a fixture platform certificate")
                .remove(0),
            pem: cert.to_string(),
            key: load_private_key(key.as_bytes()).expect("a fixture platform key"),
        };
        WechatPaySim {
            inner: Arc::new(Inner {
                certs: vec![load(OLD_CERT, OLD_KEY), load(NEW_CERT, NEW_KEY)],
                signing: AtomicUsize::new(0),
                pubkey_id: PUBKEY_ID.trim().to_string(),
                pubkey: load_private_key(PUBKEY_KEY.as_bytes()).expect("a fixture key"),
                downloads: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The rotation: from now on sign with the new certificate (both stay served).
    pub fn sign_with_new_certificate(&self) {
        self.inner.signing.store(1, Ordering::SeqCst);
    }

    /// Back to the old certificate.
    pub fn sign_with_old_certificate(&self) {
        self.inner.signing.store(0, Ordering::SeqCst);
    }

    /// Serial of the certificate signing now.
    pub fn signing_serial(&self) -> String {
        self.inner.certs[self.inner.signing.load(Ordering::SeqCst)]
            .cert
            .serial_no
            .clone()
    }

    /// Serials of the old and the new platform certificate.
    pub fn certificate_serials(&self) -> Vec<String> {
        self.inner.certs.iter().map(|c| c.cert.serial_no.clone()).collect()
    }

    /// The old (first) platform certificate's PEM, as a merchant would have downloaded it before.
    pub fn old_certificate_pem() -> &'static str {
        OLD_CERT
    }

    /// The sandbox's test CA, which issued the platform certificates.
    pub fn ca_pem() -> &'static str {
        CA_PEM
    }

    /// Public-key mode: the key id and the public key PEM a merchant configures.
    pub fn public_key_id() -> String {
        PUBKEY_ID.trim().to_string()
    }

    pub fn public_key_pem() -> &'static str {
        PUBKEY_PUBLIC
    }

    fn signer(&self, merchant: Option<&SimMerchant>) -> (String, &PrivateKey) {
        if merchant.and_then(|m| m.extra.get("key_mode")).map(String::as_str) == Some("public_key") {
            return (self.inner.pubkey_id.clone(), &self.inner.pubkey);
        }
        let c = &self.inner.certs[self.inner.signing.load(Ordering::SeqCst)];
        (c.cert.serial_no.clone(), &c.key)
    }

    fn sign_with(&self, serial: &str, body: &[u8]) -> Option<Vec<(String, String)>> {
        let key = if serial == self.inner.pubkey_id {
            &self.inner.pubkey
        } else {
            &self.inner.certs.iter().find(|c| c.cert.serial_no == serial)?.key
        };
        let ts = Utc::now().timestamp().to_string();
        let nonce = new_nonce();
        let sig = key.sign_sha256_base64(&response_message(&ts, &nonce, body));
        Some(vec![
            ("Wechatpay-Timestamp".into(), ts),
            ("Wechatpay-Nonce".into(), nonce),
            ("Wechatpay-Signature".into(), sig),
            ("Wechatpay-Serial".into(), serial.to_string()),
        ])
    }

    /// The `Wechatpay-*` headers WeChat Pay puts on an answer or a notification with this body.
    pub fn signed_headers(&self, merchant: Option<&SimMerchant>, body: &[u8]) -> Vec<(String, String)> {
        let (serial, _) = self.signer(merchant);
        self.sign_with(&serial, body).unwrap_or_default()
    }

    fn answer(&self, merchant: Option<&SimMerchant>, status: StatusCode, body: Vec<u8>) -> Response {
        let mut headers = self.signed_headers(merchant, &body);
        headers.push(("Request-ID".into(), format!("sandbox-{}", uuid::Uuid::new_v4())));
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                axum::http::HeaderValue::from_str(&v),
            ) {
                h.insert(k, v);
            }
        }
        if status != StatusCode::NO_CONTENT {
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
        }
        resp
    }

    fn json(&self, merchant: &SimMerchant, status: StatusCode, value: &impl serde::Serialize) -> Response {
        self.answer(
            Some(merchant),
            status,
            serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
        )
    }

    fn error(&self, merchant: Option<&SimMerchant>, status: StatusCode, code: &str, message: &str) -> Response {
        let body = ErrorAnswer {
            code: code.into(),
            message: message.into(),
            detail: None,
        };
        self.answer(merchant, status, serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Check the request's `Authorization` as WeChat Pay does; the merchant it speaks for.
    #[allow(clippy::result_large_err)] // the refusal is the answer itself, built once per request
    fn authenticate(
        &self,
        sb: &Sandbox,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<SimMerchant, Response> {
        let sign_error =
            |m: Option<&SimMerchant>, msg: &str| self.error(m, StatusCode::UNAUTHORIZED, "SIGN_ERROR", msg);
        let value = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| sign_error(None, "缺少Authorization请求头 (Authorization header missing)"))?;
        let auth = Authorization::parse(value)
            .map_err(|e| sign_error(None, &format!("Http头Authorization值格式错误 ({e})")))?;
        let merchant = sb.merchant(Channel::Wechatpay, &auth.mchid).map_err(|_| {
            self.error(
                None,
                StatusCode::BAD_REQUEST,
                "MCH_NOT_EXISTS",
                "商户号不存在 (no such mchid)",
            )
        })?;
        if let Some(serial) = merchant.extra.get("serial_no") {
            if !serial.eq_ignore_ascii_case(&auth.serial_no) {
                return Err(sign_error(
                    Some(&merchant),
                    &format!(
                        "商户证书序列号有误 (serial_no {} is not the merchant's certificate)",
                        auth.serial_no
                    ),
                ));
            }
        }
        if (Utc::now().timestamp() - auth.timestamp).abs() >= TIMESTAMP_WINDOW_SECS {
            return Err(sign_error(
                Some(&merchant),
                "请求的时间戳已过期 (timestamp outside five minutes)",
            ));
        }
        let canonical = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let message = request_message(method.as_str(), canonical, auth.timestamp, &auth.nonce_str, body);
        let ok = unb64(&auth.signature)
            .map(|sig| merchant.merchant_public_key.verify_sha256(&message, &sig).is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(sign_error(Some(&merchant), "签名错误 (the signature does not verify)"));
        }
        Ok(merchant)
    }

    async fn handle(self, op: Op, sb: Sandbox, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        let merchant = match self.authenticate(&sb, &method, &uri, &headers, &body) {
            Ok(m) => m,
            Err(r) => return r,
        };
        match op {
            Op::Create(kind) => self.create(&sb, &merchant, kind, &body),
            Op::Query => self.query(&sb, &merchant, &uri),
            Op::Close => self.close(&sb, &merchant, &uri, &body),
            Op::Refund => self.refund(&sb, &merchant, &body),
            Op::RefundQuery => self.refund_query(&sb, &merchant, &uri),
            Op::TradeBill => self.trade_bill(&sb, &merchant, &uri),
            Op::Download => self.download(&merchant, &uri),
            Op::Certificates => self.certificates(&sb, &merchant),
        }
    }

    fn param_error(&self, m: &SimMerchant, msg: &str) -> Response {
        self.error(Some(m), StatusCode::BAD_REQUEST, "PARAM_ERROR", msg)
    }

    fn sim_error(&self, m: &SimMerchant, e: SimError, on_refund: bool) -> Response {
        let (status, code, msg) = match &e {
            SimError::AlreadyPaid(_) => (StatusCode::FORBIDDEN, "ORDERPAID", "该订单已支付 (order already paid)"),
            SimError::Closed(_) | SimError::Expired(_) => {
                (StatusCode::BAD_REQUEST, "ORDER_CLOSED", "订单已关闭 (order closed)")
            }
            SimError::DuplicateOrder(_) => (
                StatusCode::FORBIDDEN,
                "OUT_TRADE_NO_USED",
                "商户订单号重复 (out_trade_no used with other details)",
            ),
            SimError::NoSuchOrder(_) if on_refund => (
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "订单不存在 (no such order)",
            ),
            SimError::NoSuchOrder(_) => (StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在 (no such order)"),
            SimError::NotPaid(_) => (
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "订单未支付 (the order is not paid)",
            ),
            SimError::RefundTooLarge { .. } => (
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "可退金额不足 (refundable balance short)",
            ),
            SimError::RefundConflict(_) => (
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "退款单号已存在且金额不一致 (out_refund_no used with another amount)",
            ),
            SimError::NoSuchRefund(_) => (
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "退款单不存在 (no such refund)",
            ),
            SimError::UnknownMerchant(..) => (
                StatusCode::BAD_REQUEST,
                "MCH_NOT_EXISTS",
                "商户号不存在 (no such mchid)",
            ),
        };
        self.error(Some(m), status, code, &format!("{msg}: {e}"))
    }

    fn create(&self, sb: &Sandbox, m: &SimMerchant, kind: CreateKind, body: &[u8]) -> Response {
        let req: OrderRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return self.param_error(m, &format!("请求参数格式错误 (the body does not parse: {e})")),
        };
        if req.mchid != m.merchant_id {
            return self.param_error(
                m,
                "mchid与请求头中的商户号不一致 (mchid differs from the Authorization's)",
            );
        }
        if m.extra.get("appid") != Some(&req.appid) {
            return self.error(
                Some(m),
                StatusCode::BAD_REQUEST,
                "APPID_MCHID_NOT_MATCH",
                "appid和mch_id不匹配",
            );
        }
        let no_ok = (6..=32).contains(&req.out_trade_no.len())
            && req
                .out_trade_no
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-*|".contains(&b));
        if !no_ok {
            return self.param_error(m, "out_trade_no 须为6-32位数字、字母或_-*| (out_trade_no malformed)");
        }
        let desc_len = req.description.chars().count();
        if desc_len == 0 || desc_len > 127 {
            return self.param_error(m, "description 长度须为1-127 (description length)");
        }
        if req.amount.total < 1 || req.amount.currency != "CNY" {
            return self.param_error(m, "amount.total 须为正整数，currency 须为CNY");
        }
        match url::Url::parse(&req.notify_url) {
            Ok(u) if u.query().is_none() && matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return self.param_error(
                    m,
                    "notify_url 格式错误，且不能携带参数 (notify_url malformed or has a query)",
                )
            }
        }
        let expires_at = match req.time_expire.as_deref().map(DateTime::parse_from_rfc3339).transpose() {
            Ok(t) => t.map(|t| t.with_timezone(&Utc)),
            Err(_) => return self.param_error(m, "time_expire 须为RFC3339格式 (time_expire malformed)"),
        };
        let (trade_type, method) = match kind {
            CreateKind::Native => ("NATIVE", PayMethod::Qr),
            CreateKind::Jsapi => ("JSAPI", PayMethod::Jsapi),
            CreateKind::H5 => ("MWEB", PayMethod::H5),
        };
        let mut extra = HashMap::from([
            ("appid".to_string(), req.appid.clone()),
            ("trade_type".to_string(), trade_type.to_string()),
            ("attach".to_string(), req.attach.clone().unwrap_or_default()),
        ]);
        match kind {
            CreateKind::Jsapi => match req.payer.as_ref().map(|p| p.openid.clone()).filter(|o| !o.is_empty()) {
                Some(openid) => {
                    extra.insert("openid".into(), openid);
                }
                None => return self.param_error(m, "JSAPI下单须提供payer.openid (payer.openid missing)"),
            },
            CreateKind::H5 => {
                let ok = req
                    .scene_info
                    .as_ref()
                    .is_some_and(|s| !s.payer_client_ip.is_empty() && s.h5_info.is_some());
                if !ok {
                    return self.param_error(m, "H5下单须提供scene_info.payer_client_ip和h5_info");
                }
            }
            CreateKind::Native => {}
        }
        let now = sb.now();
        extra.insert(
            "prepay_id".into(),
            format!(
                "wx{}{:020}",
                now.with_timezone(&cst()).format("%d%H%M%S"),
                sb.next_seq()
            ),
        );
        if let Some(existing) = sb.order(Channel::Wechatpay, &m.merchant_id, &req.out_trade_no) {
            if existing.extra.get("trade_type").map(String::as_str) != Some(trade_type) {
                return self.sim_error(m, SimError::DuplicateOrder(req.out_trade_no), false);
            }
        }
        let order = SimOrder {
            channel: Channel::Wechatpay,
            merchant_id: m.merchant_id.clone(),
            order_no: req.out_trade_no.clone(),
            amount_fen: req.amount.total,
            subject: req.description.clone(),
            notify_url: req.notify_url.clone(),
            return_url: None,
            method,
            created_at: now,
            expires_at,
            state: SimOrderState::Created,
            gateway_txn_id: None,
            paid_at: None,
            refunds: vec![],
            extra,
        };
        let order = match sb.create_order(order) {
            Ok(o) => o,
            Err(e) => return self.sim_error(m, e, false),
        };
        let prepay_id = order.extra.get("prepay_id").cloned().unwrap_or_default();
        let wallet = format!(
            "{}/sandbox/wallet/wechatpay/{}/{}",
            sb.base_url(),
            m.merchant_id,
            order.order_no
        );
        match kind {
            CreateKind::Native => self.json(m, StatusCode::OK, &serde_json::json!({ "code_url": wallet })),
            CreateKind::Jsapi => self.json(m, StatusCode::OK, &serde_json::json!({ "prepay_id": prepay_id })),
            CreateKind::H5 => self.json(
                m,
                StatusCode::OK,
                &serde_json::json!({ "h5_url": format!("{wallet}?prepay_id={prepay_id}") }),
            ),
        }
    }

    fn query(&self, sb: &Sandbox, m: &SimMerchant, uri: &Uri) -> Response {
        let Some(no) = segment_after(uri.path(), "out-trade-no/") else {
            return self.param_error(m, "out_trade_no missing");
        };
        if query_param(uri, "mchid").as_deref() != Some(m.merchant_id.as_str()) {
            return self.param_error(
                m,
                "mchid 参数与请求头不一致 (the mchid query parameter is missing or not yours)",
            );
        }
        match sb.order(Channel::Wechatpay, &m.merchant_id, &no) {
            Some(o) => self.json(m, StatusCode::OK, &transaction(m, &o)),
            None => self.sim_error(m, SimError::NoSuchOrder(no), false),
        }
    }

    fn close(&self, sb: &Sandbox, m: &SimMerchant, uri: &Uri, body: &[u8]) -> Response {
        let Some(no) = segment_after(uri.path(), "out-trade-no/") else {
            return self.param_error(m, "out_trade_no missing");
        };
        match serde_json::from_slice::<CloseRequest>(body) {
            Ok(c) if c.mchid == m.merchant_id => {}
            _ => return self.param_error(m, "请求体须为{\"mchid\":…} (the body must name your mchid)"),
        }
        match sb.close(Channel::Wechatpay, &m.merchant_id, &no) {
            Ok(_) => self.answer(Some(m), StatusCode::NO_CONTENT, Vec::new()),
            Err(e) => self.sim_error(m, e, false),
        }
    }

    fn refund(&self, sb: &Sandbox, m: &SimMerchant, body: &[u8]) -> Response {
        let req: RefundRequestBody = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return self.param_error(m, &format!("请求参数格式错误 (the body does not parse: {e})")),
        };
        if req.out_refund_no.is_empty() || req.out_refund_no.len() > 64 {
            return self.param_error(m, "out_refund_no 长度须为1-64");
        }
        let order = match (&req.out_trade_no, &req.transaction_id) {
            (Some(no), _) => sb.order(Channel::Wechatpay, &m.merchant_id, no),
            (None, Some(txn)) => sb.orders().into_iter().find(|o| {
                o.channel == Channel::Wechatpay
                    && o.merchant_id == m.merchant_id
                    && o.gateway_txn_id.as_deref() == Some(txn)
            }),
            (None, None) => return self.param_error(m, "须提供out_trade_no或transaction_id"),
        };
        let Some(order) = order else {
            return self.sim_error(m, SimError::NoSuchOrder(req.out_trade_no.unwrap_or_default()), true);
        };
        if req.amount.currency != "CNY" || req.amount.refund < 1 {
            return self.param_error(m, "amount.refund 须为正整数，currency 须为CNY");
        }
        if req.amount.total != order.amount_fen {
            return self.error(
                Some(m),
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单金额与原订单不一致 (amount.total is not the order's total)",
            );
        }
        let r = sb.refund(
            Channel::Wechatpay,
            &m.merchant_id,
            &order.order_no,
            &req.out_refund_no,
            req.amount.refund,
            req.reason.as_deref().unwrap_or(""),
            req.notify_url.clone(),
            false,
        );
        match r {
            Ok(r) => {
                let order = sb
                    .order(Channel::Wechatpay, &m.merchant_id, &order.order_no)
                    .unwrap_or(order);
                self.json(m, StatusCode::OK, &refund_wire(&order, &r))
            }
            Err(e) => self.sim_error(m, e, true),
        }
    }

    fn refund_query(&self, sb: &Sandbox, m: &SimMerchant, uri: &Uri) -> Response {
        let Some(no) = segment_after(uri.path(), "refunds/") else {
            return self.param_error(m, "out_refund_no missing");
        };
        let found = sb
            .orders()
            .into_iter()
            .filter(|o| o.channel == Channel::Wechatpay && o.merchant_id == m.merchant_id)
            .find_map(|o| o.refunds.iter().find(|r| r.refund_no == no).cloned().map(|r| (o, r)));
        match found {
            Some((o, r)) => self.json(m, StatusCode::OK, &refund_wire(&o, &r)),
            None => self.sim_error(m, SimError::NoSuchRefund(no), true),
        }
    }

    fn trade_bill(&self, sb: &Sandbox, m: &SimMerchant, uri: &Uri) -> Response {
        let Some(day) = query_param(uri, "bill_date").and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
        else {
            return self.param_error(m, "bill_date 须为YYYY-MM-DD");
        };
        let bill_type = match query_param(uri, "bill_type").as_deref() {
            None | Some("ALL") => BillType::All,
            Some("SUCCESS") => BillType::Success,
            Some("REFUND") => BillType::Refund,
            Some(_) => return self.param_error(m, "bill_type 须为ALL、SUCCESS或REFUND"),
        };
        let gzip = match query_param(uri, "tar_type").as_deref() {
            None => false,
            Some("GZIP") => true,
            Some(_) => return self.param_error(m, "tar_type 须为GZIP"),
        };
        if day > sb.now().with_timezone(&cst()).date_naive() {
            return self.error(
                Some(m),
                StatusCode::BAD_REQUEST,
                "NO_STATEMENT_EXIST",
                "账单文件不存在 (no bill for a day still to come)",
            );
        }
        let txns = sb.day_transactions(Channel::Wechatpay, &m.merchant_id, day);
        let csv = self.bill(sb, m, &txns, bill_type);
        let hash = hex::encode(sha1::Sha1::digest(&csv));
        let bytes = if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = enc.write_all(&csv);
            enc.finish().unwrap_or_default()
        } else {
            csv
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.inner.downloads.lock().unwrap_or_else(|e| e.into_inner()).insert(
            token.clone(),
            Download {
                mchid: m.merchant_id.clone(),
                bytes,
            },
        );
        self.json(
            m,
            StatusCode::OK,
            &BillAnswer {
                hash_type: "SHA1".into(),
                hash_value: hash,
                download_url: format!("{}/wechatpay/v3/billdownload/file?token={token}", sb.base_url()),
            },
        )
    }

    fn download(&self, m: &SimMerchant, uri: &Uri) -> Response {
        let token = query_param(uri, "token").unwrap_or_default();
        let downloads = self.inner.downloads.lock().unwrap_or_else(|e| e.into_inner());
        match downloads.get(&token) {
            // Not signed: WeChat Pay's download answer carries no signature.
            Some(d) if d.mchid == m.merchant_id => (
                [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
                d.bytes.clone(),
            )
                .into_response(),
            _ => self.error(
                Some(m),
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "token 无效或已过期 (unknown token)",
            ),
        }
    }

    fn certificates(&self, sb: &Sandbox, m: &SimMerchant) -> Response {
        let key = match apiv3_of(m) {
            Ok(k) => k,
            Err(msg) => return self.error(Some(m), StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", &msg),
        };
        let now = sb.now();
        let mut data = Vec::new();
        for c in self.inner.certs.iter().filter(|c| now < c.cert.not_after) {
            let nonce = short_nonce();
            let Ok(ciphertext) = key.encrypt(&nonce, "certificate", c.pem.as_bytes()) else {
                return self.error(
                    Some(m),
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SYSTEM_ERROR",
                    "encryption failed",
                );
            };
            data.push(CertificateItem {
                serial_no: c.cert.serial_no.clone(),
                effective_time: rfc3339_cst(c.cert.not_before),
                expire_time: rfc3339_cst(c.cert.not_after),
                encrypt_certificate: EncryptedResource {
                    algorithm: "AEAD_AES_256_GCM".into(),
                    ciphertext,
                    associated_data: "certificate".into(),
                    nonce,
                    original_type: None,
                },
            });
        }
        self.json(m, StatusCode::OK, &CertificatesAnswer { data })
    }

    /// A signed, encrypted notification exactly as WeChat Pay sends it, for any event and
    /// plaintext (the sandbox sends `TRANSACTION.SUCCESS` and `REFUND.SUCCESS` itself; tests use
    /// this for `REFUND.ABNORMAL`, `REFUND.CLOSED` and others).
    #[allow(clippy::too_many_arguments)]
    pub fn notification(
        &self,
        sb: &Sandbox,
        merchant: &SimMerchant,
        url: &str,
        order_no: &str,
        refund_no: Option<&str>,
        event_type: &str,
        summary: &str,
        original_type: &str,
        plaintext: &[u8],
    ) -> Option<OutgoingNotification> {
        let key = apiv3_of(merchant).ok()?;
        let nonce = short_nonce();
        let ciphertext = key.encrypt(&nonce, original_type, plaintext).ok()?;
        let envelope = NotificationEnvelope {
            id: uuid::Uuid::new_v4().to_string(),
            create_time: rfc3339_cst(sb.now()),
            resource_type: "encrypt-resource".into(),
            event_type: event_type.into(),
            summary: summary.into(),
            resource: EncryptedResource {
                algorithm: "AEAD_AES_256_GCM".into(),
                ciphertext,
                associated_data: original_type.into(),
                nonce,
                original_type: Some(original_type.into()),
            },
        };
        let body = serde_json::to_vec(&envelope).ok()?;
        let mut headers = self.signed_headers(Some(merchant), &body);
        headers.push(("Wechatpay-Signature-Type".into(), "WECHATPAY2-SHA256-RSA2048".into()));
        Some(OutgoingNotification {
            channel: Channel::Wechatpay,
            order_no: order_no.to_string(),
            refund_no: refund_no.map(str::to_string),
            url: url.to_string(),
            content_type: "application/json".into(),
            headers,
            body,
            schedule: RETRY_SCHEDULE_SECS.iter().map(|s| Duration::from_secs(*s)).collect(),
            acknowledged: |status, _body| status == 200 || status == 204,
        })
    }

    /// A trade bill of one merchant's transactions, in the given layout.
    pub fn bill(&self, sb: &Sandbox, m: &SimMerchant, txns: &[SimTxn], bill_type: BillType) -> Vec<u8> {
        write_bill(sb, m, txns, bill_type)
    }
}

#[derive(Debug, Clone, Copy)]
enum CreateKind {
    Native,
    Jsapi,
    H5,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create(CreateKind),
    Query,
    Close,
    Refund,
    RefundQuery,
    TradeBill,
    Download,
    Certificates,
}

fn segment_after(path: &str, marker: &str) -> Option<String> {
    let rest = &path[path.find(marker)? + marker.len()..];
    let seg = rest.split('/').next()?;
    (!seg.is_empty()).then(|| {
        percent_encoding::percent_decode_str(seg)
            .decode_utf8_lossy()
            .into_owned()
    })
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn apiv3_of(m: &SimMerchant) -> Result<ApiV3Key, String> {
    let k = m.extra.get("apiv3_key").ok_or_else(|| {
        format!(
            "sandbox merchant {} has no apiv3_key in its extra settings",
            m.merchant_id
        )
    })?;
    ApiV3Key::new(k.as_bytes()).map_err(|e| format!("sandbox merchant {}: {e}", m.merchant_id))
}

/// A 12-character nonce, as WeChat Pay uses for resources.
fn short_nonce() -> String {
    new_nonce()[..12].to_string()
}

fn openid_of(m: &SimMerchant, o: &SimOrder) -> String {
    o.extra.get("openid").cloned().unwrap_or_else(|| {
        format!(
            "o{}",
            &sha256_hex(format!("{}/{}", m.merchant_id, o.order_no).as_bytes())[..27]
        )
    })
}

fn transaction(m: &SimMerchant, o: &SimOrder) -> Transaction {
    let paid = o.state == SimOrderState::Paid;
    let (state, desc) = match o.state {
        SimOrderState::Created => ("NOTPAY", "未支付"),
        SimOrderState::Paid if o.refunds.is_empty() => ("SUCCESS", "支付成功"),
        SimOrderState::Paid => ("REFUND", "转入退款"),
        SimOrderState::Closed => ("CLOSED", "订单已关闭"),
    };
    Transaction {
        appid: o.extra.get("appid").cloned().unwrap_or_default(),
        mchid: m.merchant_id.clone(),
        out_trade_no: o.order_no.clone(),
        transaction_id: o.gateway_txn_id.clone(),
        trade_type: o.extra.get("trade_type").cloned(),
        trade_state: state.into(),
        trade_state_desc: desc.into(),
        bank_type: paid.then(|| "OTHERS".to_string()),
        attach: Some(o.extra.get("attach").cloned().unwrap_or_default()),
        success_time: o.paid_at.map(rfc3339_cst),
        payer: paid.then(|| Payer {
            openid: openid_of(m, o),
        }),
        amount: Some(TransactionAmount {
            total: Some(o.amount_fen),
            payer_total: paid.then_some(o.amount_fen),
            currency: Some("CNY".into()),
            payer_currency: Some("CNY".into()),
        }),
    }
}

fn refund_wire(o: &SimOrder, r: &SimRefund) -> Refund {
    Refund {
        refund_id: r.gateway_refund_id.clone(),
        out_refund_no: r.refund_no.clone(),
        transaction_id: o.gateway_txn_id.clone().unwrap_or_default(),
        out_trade_no: o.order_no.clone(),
        channel: "ORIGINAL".into(),
        user_received_account: "支付用户零钱".into(),
        success_time: r.refunded_at.map(rfc3339_cst),
        create_time: rfc3339_cst(r.requested_at),
        status: match r.state {
            SimRefundState::Processing => "PROCESSING",
            SimRefundState::Succeeded => "SUCCESS",
        }
        .into(),
        funds_account: Some("AVAILABLE".into()),
        amount: RefundAmount {
            total: o.amount_fen,
            refund: r.amount_fen,
            payer_total: o.amount_fen,
            payer_refund: r.amount_fen,
            settlement_refund: Some(r.amount_fen),
            settlement_total: Some(o.amount_fen),
            discount_refund: Some(0),
            currency: Some("CNY".into()),
        },
    }
}

/// Fee in units of 10⁻⁵ yuan (= 10⁻³ fen), half-up, signed like the core's fee.
fn fee_e5(t: &SimTxn) -> i64 {
    let magnitude = match t.fee_override_fen {
        Some(f) => return f * 1000,
        None => ((t.amount_fen as i128 * t.fee_rate_ppm as i128 + 500) / 1000) as i64,
    };
    match t.kind {
        RowKind::Payment => magnitude,
        RowKind::Refund => -magnitude,
    }
}

fn e5_text(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:05}", a / 100_000, a % 100_000)
}

fn rate_text(ppm: u32) -> String {
    let mut d = Decimal::new(ppm as i64, 4).normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    format!("{d}%")
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            '`' => '\'',
            c => c,
        })
        .collect()
}

const ALL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUCCESS_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
const REFUND_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

fn write_bill(sb: &Sandbox, m: &SimMerchant, txns: &[SimTxn], bill_type: BillType) -> Vec<u8> {
    let fmt_time = |t: DateTime<Utc>| t.with_timezone(&cst()).format("%Y-%m-%d %H:%M:%S").to_string();
    let appid = m.extra.get("appid").cloned().unwrap_or_default();
    let mut out = String::from("\u{feff}");
    out.push_str(match bill_type {
        BillType::All => ALL_HEADER,
        BillType::Success => SUCCESS_HEADER,
        BillType::Refund => REFUND_HEADER,
    });
    out.push_str("\r\n");
    let (mut count, mut settle, mut refund_sum, mut fees, mut order_sum) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for t in txns {
        let keep = match (bill_type, t.kind) {
            (BillType::All, _) | (BillType::Success, RowKind::Payment) | (BillType::Refund, RowKind::Refund) => true,
            (BillType::Success, RowKind::Refund) | (BillType::Refund, RowKind::Payment) => false,
        };
        if !keep {
            continue;
        }
        let order = sb.order(Channel::Wechatpay, &m.merchant_id, &t.order_no);
        let refund = t
            .refund_no
            .as_ref()
            .and_then(|no| order.as_ref()?.refunds.iter().find(|r| &r.refund_no == no).cloned());
        let is_pay = t.kind == RowKind::Payment;
        let amount = fen_to_yuan(t.amount_fen);
        let zero = "0.00".to_string();
        let fee = fee_e5(t);
        count += 1;
        fees += fee;
        if is_pay {
            settle += t.amount_fen;
            order_sum += t.amount_fen;
        } else {
            refund_sum += t.amount_fen;
        }
        let time = match (bill_type, &order) {
            (BillType::Refund, Some(o)) => o.paid_at.unwrap_or(t.at),
            _ => t.at,
        };
        let status = t
            .status_override
            .clone()
            .unwrap_or_else(|| if is_pay { "SUCCESS" } else { "REFUND" }.into());
        let trade_type = t.extra.get("trade_type").cloned().unwrap_or_else(|| "NATIVE".into());
        let openid = order.as_ref().map(|o| openid_of(m, o)).unwrap_or_default();
        let mut f: Vec<String> = vec![
            fmt_time(time),
            appid.clone(),
            m.merchant_id.clone(),
            "0".into(),
            String::new(),
            t.gateway_txn_id.clone(),
            t.order_no.clone(),
            openid,
            trade_type,
            status,
            "OTHERS".into(),
            "CNY".into(),
            if is_pay { amount.clone() } else { zero.clone() },
            zero.clone(),
        ];
        if bill_type == BillType::Refund {
            f.push(
                refund
                    .as_ref()
                    .map(|r| fmt_time(r.requested_at))
                    .unwrap_or_else(|| fmt_time(t.at)),
            );
            f.push(fmt_time(t.at));
        }
        if bill_type != BillType::Success {
            f.push(t.gateway_refund_id.clone().unwrap_or_else(|| "0".into()));
            f.push(t.refund_no.clone().unwrap_or_else(|| "0".into()));
            f.push(if is_pay { zero.clone() } else { amount.clone() });
            f.push(zero.clone());
            f.push(if is_pay { String::new() } else { "ORIGINAL".into() });
            f.push(if is_pay { String::new() } else { "SUCCESS".into() });
        }
        f.push(clean(&t.subject));
        f.push(clean(t.extra.get("attach").map(String::as_str).unwrap_or("")));
        f.push(e5_text(fee));
        f.push(rate_text(t.fee_rate_ppm));
        f.push(if is_pay { amount.clone() } else { zero.clone() });
        if bill_type != BillType::Success {
            f.push(if is_pay { zero.clone() } else { amount.clone() });
        }
        f.push(String::new());
        out.push('`');
        out.push_str(&f.join(",`"));
        out.push_str("\r\n");
    }
    out.push_str(SUMMARY_HEADER);
    out.push_str("\r\n");
    out.push_str(&format!(
        "`{count},`{},`{},`0.00,`{},`{},`{}\r\n",
        fen_to_yuan(settle),
        fen_to_yuan(refund_sum),
        e5_text(fees),
        fen_to_yuan(order_sum),
        fen_to_yuan(refund_sum)
    ));
    out.into_bytes()
}

impl GatewaySim for WechatPaySim {
    fn channel(&self) -> Channel {
        Channel::Wechatpay
    }

    fn routes(&self) -> Router<Sandbox> {
        let h = |op: Op| {
            let sim = self.clone();
            move |State(sb): State<Sandbox>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let sim = sim.clone();
                async move { sim.handle(op, sb, method, uri, headers, body).await }
            }
        };
        Router::new()
            .route(
                "/wechatpay/v3/pay/transactions/native",
                post(h(Op::Create(CreateKind::Native))),
            )
            .route(
                "/wechatpay/v3/pay/transactions/jsapi",
                post(h(Op::Create(CreateKind::Jsapi))),
            )
            .route("/wechatpay/v3/pay/transactions/h5", post(h(Op::Create(CreateKind::H5))))
            .route("/wechatpay/v3/pay/transactions/out-trade-no/{no}", get(h(Op::Query)))
            .route(
                "/wechatpay/v3/pay/transactions/out-trade-no/{no}/close",
                post(h(Op::Close)),
            )
            .route("/wechatpay/v3/refund/domestic/refunds", post(h(Op::Refund)))
            .route("/wechatpay/v3/refund/domestic/refunds/{no}", get(h(Op::RefundQuery)))
            .route("/wechatpay/v3/bill/tradebill", get(h(Op::TradeBill)))
            .route("/wechatpay/v3/billdownload/file", get(h(Op::Download)))
            .route("/wechatpay/v3/certificates", get(h(Op::Certificates)))
    }

    fn new_txn_id(&self, sb: &Sandbox, _order: &SimOrder) -> String {
        // 28 digits starting 42, with the CST date inside like the real ones.
        format!(
            "42{}{}{:018}",
            "0000",
            sb.now().with_timezone(&cst()).format("%Y"),
            sb.next_seq() % 10u64.pow(18)
        )
    }

    fn new_refund_id(&self, sb: &Sandbox, _order: &SimOrder) -> String {
        format!(
            "503{}{:019}",
            sb.now().with_timezone(&cst()).format("%Y%m%d"),
            sb.next_seq() % 10u64.pow(19)
        )
    }

    fn payment_notification(
        &self,
        sb: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
    ) -> Option<OutgoingNotification> {
        let mut t = transaction(merchant, order);
        t.trade_state = "SUCCESS".into();
        t.trade_state_desc = "支付成功".into();
        let plaintext = serde_json::to_vec(&t).ok()?;
        self.notification(
            sb,
            merchant,
            &order.notify_url,
            &order.order_no,
            None,
            "TRANSACTION.SUCCESS",
            "支付成功",
            "transaction",
            &plaintext,
        )
    }

    fn refund_notification(
        &self,
        sb: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
        refund: &SimRefund,
    ) -> Option<OutgoingNotification> {
        let url = refund.notify_url.clone()?;
        let notice = RefundNotice {
            mchid: merchant.merchant_id.clone(),
            out_trade_no: order.order_no.clone(),
            transaction_id: order.gateway_txn_id.clone().unwrap_or_default(),
            out_refund_no: refund.refund_no.clone(),
            refund_id: refund.gateway_refund_id.clone(),
            refund_status: "SUCCESS".into(),
            success_time: refund.refunded_at.map(rfc3339_cst),
            user_received_account: "支付用户零钱".into(),
            amount: RefundNoticeAmount {
                total: order.amount_fen,
                refund: refund.amount_fen,
                payer_total: order.amount_fen,
                payer_refund: refund.amount_fen,
            },
        };
        let plaintext = serde_json::to_vec(&notice).ok()?;
        self.notification(
            sb,
            merchant,
            &url,
            &order.order_no,
            Some(&refund.refund_no),
            "REFUND.SUCCESS",
            "退款成功",
            "refund",
            &plaintext,
        )
    }

    fn tamper(&self, n: &mut OutgoingNotification) {
        for (k, v) in n.headers.iter_mut() {
            if k.eq_ignore_ascii_case("Wechatpay-Signature") {
                if let Some(mut sig) = unb64(v) {
                    if let Some(b) = sig.first_mut() {
                        *b ^= 0x01;
                    }
                    *v = b64(&sig);
                }
            }
        }
    }

    fn refresh_notification(&self, _sb: &Sandbox, n: &mut OutgoingNotification) -> bool {
        let serial = n
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Wechatpay-Serial"))
            .map(|(_, v)| v.clone());
        let Some(fresh) = serial.and_then(|s| self.sign_with(&s, &n.body)) else {
            return false;
        };
        n.headers.retain(|(k, _)| {
            !k.to_ascii_lowercase().starts_with("wechatpay-") || k.eq_ignore_ascii_case("Wechatpay-Signature-Type")
        });
        n.headers.extend(fresh);
        true
    }

    fn settlement_file(&self, sb: &Sandbox, merchant: &SimMerchant, _day: NaiveDate, txns: &[SimTxn]) -> Vec<u8> {
        write_bill(sb, merchant, txns, BillType::All)
    }
}

/// Register `merchant_id` at the sandbox with the project's test merchant keys
/// (`fixtures/wechatpay/`), appid [`SANDBOX_APPID`] and the test APIv3 key, in certificate mode,
/// and return a client talking to the sandbox that trusts its old platform certificate (as if
/// downloaded before) and requires downloaded ones to come from the sandbox's CA.
pub fn connect(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32) -> WechatPayClient {
    connect_with(sandbox, merchant_id, fee_rate_ppm, KeyMode::Certificate)
}

/// [`connect`] in either key mode.
pub fn connect_with(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32, mode: KeyMode) -> WechatPayClient {
    let serial = crate::wechatpay::merchant_serial_from_certificate(MERCHANT_CERT_PEM.as_bytes())
        .expect("the fixture merchant certificate");
    sandbox.register_merchant(SimMerchant {
        channel: Channel::Wechatpay,
        merchant_id: merchant_id.to_string(),
        merchant_public_key: load_public_key(MERCHANT_CERT_PEM.as_bytes()).expect("the fixture merchant certificate"),
        fee_rate_ppm,
        extra: HashMap::from([
            ("appid".to_string(), SANDBOX_APPID.to_string()),
            ("apiv3_key".to_string(), MERCHANT_APIV3_KEY.trim().to_string()),
            ("serial_no".to_string(), serial.clone()),
            (
                "key_mode".to_string(),
                match mode {
                    KeyMode::Certificate => "certificate",
                    KeyMode::PublicKey => "public_key",
                }
                .to_string(),
            ),
        ]),
    });
    let mut cfg = WechatPayConfig::new(
        merchant_id,
        SANDBOX_APPID,
        &serial,
        MERCHANT_KEY_PEM.as_bytes(),
        MERCHANT_APIV3_KEY.as_bytes(),
    )
    .expect("the fixture merchant configuration")
    .with_base_url(format!("{}/wechatpay", sandbox.base_url()))
    .with_timeout(Duration::from_secs(3));
    cfg = match mode {
        KeyMode::Certificate => cfg
            .with_platform_certificates(OLD_CERT.as_bytes())
            .and_then(|c| c.with_platform_ca(CA_PEM.as_bytes())),
        KeyMode::PublicKey => cfg.with_public_key(&WechatPaySim::public_key_id(), PUBKEY_PUBLIC.as_bytes()),
    }
    .expect("the fixture platform keys");
    WechatPayClient::new(cfg).expect("a WeChat Pay client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_are_written_with_five_decimals_and_rates_as_percentages() {
        assert_eq!(e5_text(53_280), "0.53280");
        assert_eq!(e5_text(-1_500), "-0.01500");
        assert_eq!(e5_text(0), "0.00000");
        assert_eq!(rate_text(6000), "0.60%");
        assert_eq!(rate_text(6250), "0.625%");
        assert_eq!(rate_text(10_000), "1.00%");
        assert_eq!(
            RETRY_SCHEDULE_SECS.iter().sum::<u64>(),
            24 * 3600 + 4 * 60,
            "about 24h4m in total"
        );
    }
}
