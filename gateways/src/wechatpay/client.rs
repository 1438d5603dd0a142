//! [`WechatPayClient`]: one direct merchant at WeChat Pay API v3, speaking for its `mchid`.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use reqwest::header::HeaderMap;
use reqwest::Method;
use sha1::Digest;

use super::aead::{AeadError, ApiV3Key};
use super::notify;
use super::settlement;
use super::sign::{jsapi_params, new_nonce, Authorization};
use super::status::{ErrorCode, RefundStatus, TradeState};
use super::transformers::{
    fen_to_wire, parse_time, rfc3339_cst, wire_to_fen, Amount, BillAnswer, CertificatesAnswer, CloseRequest,
    ErrorAnswer, H5Answer, H5Info, JsapiAnswer, NativeAnswer, OrderRequest, Payer, Refund, RefundAmountRequest,
    RefundRequestBody, SceneInfo, Transaction,
};
use super::verify::{PlatformCertificate, SignedHeaders, WechatPayKeys, PUBLIC_KEY_ID_PREFIX};
use crate::crypto::{load_certificates, load_private_key, load_public_key, KeyError, PrivateKey, PublicKey};
use crate::gateway::{
    is_valid_order_no, Ack, Channel, CloseOutcome, CreateOrder, GatewayError, GatewayOrder, GatewayRefund,
    IncomingNotification, NotifyError, OrderRef, PayMethod, PayerAction, PaymentGateway, RefundRef, RefundRequest,
    VerifiedNotification,
};
use crate::outcome::{PaymentState, TransportError};
use crate::settlement::{SettlementError, SettlementFile};

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WechatPayConfigError {
    #[error("the merchant API private key (apiclient_key.pem): {0}")]
    MerchantKey(KeyError),
    #[error("the APIv3 key: {0}")]
    ApiV3Key(AeadError),
    #[error("the platform certificate(s): {0}")]
    PlatformCertificate(KeyError),
    #[error("the WeChat Pay public key: {0}")]
    PublicKey(String),
    #[error("the merchant certificate (apiclient_cert.pem): {0}")]
    MerchantCertificate(KeyError),
    #[error("{0}")]
    Invalid(String),
}

/// One merchant's WeChat Pay settings. Keys are loaded (never printed); build with
/// [`WechatPayConfig::new`] and the `with_*` methods.
#[derive(Clone)]
pub struct WechatPayConfig {
    /// 商户号.
    pub mchid: String,
    /// The appid bound to the merchant (公众号/小程序 appid), sent with every order.
    pub appid: String,
    /// Serial of the merchant API certificate (`apiclient_cert.pem`), upper-case hex.
    pub merchant_serial_no: String,
    /// The merchant API private key (`apiclient_key.pem`).
    pub merchant_key: PrivateKey,
    /// The APIv3 key (32 bytes): decrypts notifications and downloaded certificates.
    pub apiv3_key: ApiV3Key,
    /// Platform certificates trusted up front (always kept, whatever a download says). May be
    /// empty in certificate mode: the client downloads them at its first answer.
    pub platform_certificates: Vec<PlatformCertificate>,
    /// WeChat Pay public-key mode: the key id (`PUB_KEY_ID_…`) and the key.
    pub wechatpay_public_key: Option<(String, PublicKey)>,
    /// If not empty, a downloaded platform certificate must be issued by one of these CAs.
    pub platform_ca: Vec<x509_cert::Certificate>,
    /// `https://api.mch.weixin.qq.com` by default; the sandbox's `…/wechatpay` in tests.
    pub base_url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub user_agent: String,
}

impl std::fmt::Debug for WechatPayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayConfig")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial_no", &self.merchant_serial_no)
            .field("merchant_key", &self.merchant_key)
            .field("apiv3_key", &self.apiv3_key)
            .field(
                "platform_certificates",
                &self
                    .platform_certificates
                    .iter()
                    .map(|c| &c.serial_no)
                    .collect::<Vec<_>>(),
            )
            .field(
                "wechatpay_public_key_id",
                &self.wechatpay_public_key.as_ref().map(|(id, _)| id),
            )
            .field("platform_ca", &self.platform_ca.len())
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WechatPayConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.mch.weixin.qq.com";

    /// `merchant_key`: the API private key in any form (PEM PKCS#8 as WeChat hands it out,
    /// PKCS#1, bare base64, DER); `apiv3_key`: the 32 key bytes (surrounding whitespace ignored).
    pub fn new(
        mchid: &str,
        appid: &str,
        merchant_serial_no: &str,
        merchant_key: &[u8],
        apiv3_key: &[u8],
    ) -> Result<WechatPayConfig, WechatPayConfigError> {
        // Real mchids are digits; the sandbox accepts any alphanumeric id.
        if mchid.is_empty() || !mchid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(WechatPayConfigError::Invalid(format!(
                "mchid {mchid:?} is not alphanumeric"
            )));
        }
        if appid.trim().is_empty() {
            return Err(WechatPayConfigError::Invalid("appid is empty".into()));
        }
        let serial = merchant_serial_no.trim();
        if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WechatPayConfigError::Invalid(format!(
                "merchant serial_no {serial:?} is not hex"
            )));
        }
        Ok(WechatPayConfig {
            mchid: mchid.to_string(),
            appid: appid.trim().to_string(),
            merchant_serial_no: serial.to_ascii_uppercase(),
            merchant_key: load_private_key(merchant_key).map_err(WechatPayConfigError::MerchantKey)?,
            apiv3_key: ApiV3Key::new(apiv3_key).map_err(WechatPayConfigError::ApiV3Key)?,
            platform_certificates: Vec::new(),
            wechatpay_public_key: None,
            platform_ca: Vec::new(),
            base_url: Self::DEFAULT_BASE_URL.to_string(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            user_agent: format!("meterpay-gateways/{} (WeChat Pay API v3)", env!("CARGO_PKG_VERSION")),
        })
    }

    /// Trust these platform certificates (PEM, one or a bundle; bare base64; DER).
    pub fn with_platform_certificates(mut self, certs: &[u8]) -> Result<Self, WechatPayConfigError> {
        let certs = PlatformCertificate::parse_all(certs).map_err(WechatPayConfigError::PlatformCertificate)?;
        self.platform_certificates.extend(certs);
        Ok(self)
    }

    /// WeChat Pay public-key mode: the key id `PUB_KEY_ID_…` and the `PUBLIC KEY` PEM (any form).
    pub fn with_public_key(mut self, key_id: &str, key: &[u8]) -> Result<Self, WechatPayConfigError> {
        let id = key_id.trim();
        if !id.starts_with(PUBLIC_KEY_ID_PREFIX) {
            return Err(WechatPayConfigError::PublicKey(format!(
                "key id {id:?} does not start with {PUBLIC_KEY_ID_PREFIX}"
            )));
        }
        let k = load_public_key(key).map_err(|e| WechatPayConfigError::PublicKey(e.to_string()))?;
        self.wechatpay_public_key = Some((id.to_string(), k));
        Ok(self)
    }

    /// Require downloaded platform certificates to be issued by this CA (PEM or DER).
    pub fn with_platform_ca(mut self, ca: &[u8]) -> Result<Self, WechatPayConfigError> {
        let cas = load_certificates(ca).map_err(WechatPayConfigError::PlatformCertificate)?;
        self.platform_ca.extend(cas);
        Ok(self)
    }

    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_string();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The serial (`serial_no`) of a merchant API certificate, as the `Authorization` header needs it.
pub fn merchant_serial_from_certificate(cert: &[u8]) -> Result<String, WechatPayConfigError> {
    let certs = load_certificates(cert).map_err(WechatPayConfigError::MerchantCertificate)?;
    Ok(super::verify::serial_hex(&certs[0]))
}

/// After an unknown serial made us download the certificates, the same serial does not make us
/// download again for this long (a rotation needs one download; a bogus serial gets no more).
const UNKNOWN_SERIAL_MEMORY: Duration = Duration::from_secs(300);

/// A WeChat Pay direct merchant.
pub struct WechatPayClient {
    cfg: WechatPayConfig,
    http: reqwest::Client,
    keys: RwLock<WechatPayKeys>,
    refreshed_for: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for WechatPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatPayClient")
            .field("mchid", &self.cfg.mchid)
            .field("base_url", &self.cfg.base_url)
            .finish()
    }
}

/// An answer as received.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn protocol(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Protocol(format!("{what}: {e}"))
}

impl WechatPayClient {
    pub fn new(cfg: WechatPayConfig) -> Result<WechatPayClient, GatewayError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(cfg.user_agent.clone())
            .build()
            .map_err(|e| GatewayError::Invalid(format!("the HTTP client could not be built: {e}")))?;
        let mut keys = WechatPayKeys::new();
        keys.add_certificates(cfg.platform_certificates.iter().cloned());
        if let Some((id, k)) = &cfg.wechatpay_public_key {
            keys.set_public_key(id, k.clone());
        }
        Ok(WechatPayClient {
            cfg,
            http,
            keys: RwLock::new(keys),
            refreshed_for: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &WechatPayConfig {
        &self.cfg
    }

    /// Serials of the platform certificates trusted now.
    pub fn trusted_certificate_serials(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .certificate_serials()
    }

    /// A copy of the keys trusted now (for verifying outside the client).
    pub fn keys(&self) -> WechatPayKeys {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn url(&self, path_and_query: &str) -> Result<url::Url, GatewayError> {
        url::Url::parse(&format!("{}{path_and_query}", self.cfg.base_url))
            .map_err(|e| GatewayError::Invalid(format!("bad URL {}{path_and_query}: {e}", self.cfg.base_url)))
    }

    /// Send a signed request and check a 2xx answer's signature.
    async fn call_verified(
        &self,
        method: Method,
        url: url::Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GatewayError> {
        let answer = self.call(method, url, body).await?;
        self.verify_answer(&answer).await?;
        Ok(answer)
    }

    /// Send a signed request; the answer is not verified here.
    async fn call(&self, method: Method, url: url::Url, body: Option<Vec<u8>>) -> Result<Answer, GatewayError> {
        let mut canonical = url.path().to_string();
        if let Some(q) = url.query() {
            canonical.push('?');
            canonical.push_str(q);
        }
        let body_bytes = body.clone().unwrap_or_default();
        let auth = Authorization::sign(
            &self.cfg.merchant_key,
            &self.cfg.mchid,
            &self.cfg.merchant_serial_no,
            method.as_str(),
            &canonical,
            Utc::now().timestamp(),
            &new_nonce(),
            &body_bytes,
        );
        let shown = url.to_string();
        let mut req = self
            .http
            .request(method, url)
            .header("Authorization", auth.header_value())
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                TransportError::Timeout { url: shown.clone() }
            } else {
                TransportError::Network {
                    url: shown.clone(),
                    detail: e.to_string(),
                }
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    TransportError::Timeout { url: shown.clone() }
                } else {
                    TransportError::Network {
                        url: shown.clone(),
                        detail: format!("reading the answer: {e}"),
                    }
                }
            })?
            .to_vec();
        let request_id = headers
            .get("Request-ID")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" (Request-ID {v})"))
            .unwrap_or_default();
        if status >= 500 {
            return Err(TransportError::Status {
                url: shown,
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            }
            .into());
        }
        if !(200..300).contains(&status) {
            let err: ErrorAnswer = serde_json::from_slice(&body).map_err(|_| {
                GatewayError::Protocol(format!(
                    "{shown} answered HTTP {status} without an error body{request_id}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ))
            })?;
            return Err(GatewayError::Refused {
                class: ErrorCode::parse(&err.code).class(),
                message: format!("{} (HTTP {status}){request_id}", err.message),
                code: err.code,
            });
        }
        Ok(Answer { status, headers, body })
    }

    /// Verify an answer; an unknown certificate serial makes us download the certificates once.
    async fn verify_answer(&self, a: &Answer) -> Result<(), GatewayError> {
        let first = self.verify_with(&self.keys(), a);
        let serial = match first {
            Err(NotifyError::UnknownKey(_)) => a
                .headers
                .get("Wechatpay-Serial")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            other => return other.map_err(|e| GatewayError::Unverified(e.to_string())),
        };
        let may_refresh = !serial.starts_with(PUBLIC_KEY_ID_PREFIX) && {
            let mut tried = lock(&self.refreshed_for);
            tried.retain(|_, at| at.elapsed() < UNKNOWN_SERIAL_MEMORY);
            tried.insert(serial.clone(), Instant::now()).is_none()
        };
        if !may_refresh {
            return first.map_err(|e| GatewayError::Unverified(e.to_string()));
        }
        tracing::info!(mchid = %self.cfg.mchid, serial = %serial, "wechatpay: unknown platform serial, downloading certificates");
        self.refresh_certificates().await?;
        self.verify_with(&self.keys(), a)
            .map_err(|e| GatewayError::Unverified(format!("{e} (after downloading the platform certificates)")))
    }

    fn verify_with(&self, keys: &WechatPayKeys, a: &Answer) -> Result<(), NotifyError> {
        let h = SignedHeaders::from_lookup(|n| a.headers.get(n).and_then(|v| v.to_str().ok()))?;
        keys.verify(&h, &a.body, Utc::now())
    }

    /// Download the platform certificates (`GET /v3/certificates`), decrypt them with the APIv3
    /// key, check them, verify the answer with them (bootstrap) or a key already trusted, and
    /// trust exactly them (plus the configured ones) from now on.
    pub async fn refresh_certificates(&self) -> Result<Vec<String>, GatewayError> {
        let a = self.call(Method::GET, self.url("/v3/certificates")?, None).await?;
        let list: CertificatesAnswer =
            serde_json::from_slice(&a.body).map_err(|e| protocol("the certificate list", e))?;
        let now = Utc::now();
        let mut fresh = Vec::new();
        for item in &list.data {
            let e = &item.encrypt_certificate;
            let pem = self
                .cfg
                .apiv3_key
                .decrypt_to_string(&e.nonce, &e.associated_data, &e.ciphertext)
                .map_err(|err| {
                    GatewayError::Unverified(format!(
                        "platform certificate {} did not decrypt: {err}",
                        item.serial_no
                    ))
                })?;
            let mut certs = PlatformCertificate::parse_all(pem.as_bytes())
                .map_err(|err| protocol(&format!("platform certificate {}", item.serial_no), err))?;
            if certs.len() != 1 {
                return Err(protocol(
                    "the certificate list",
                    format!("item {} holds {} certificates", item.serial_no, certs.len()),
                ));
            }
            let cert = certs.remove(0);
            if !cert.serial_no.eq_ignore_ascii_case(&item.serial_no) {
                return Err(GatewayError::Unverified(format!(
                    "the certificate listed as {} has serial {}",
                    item.serial_no, cert.serial_no
                )));
            }
            if !self.cfg.platform_ca.is_empty() {
                let issued: Vec<String> = self
                    .cfg
                    .platform_ca
                    .iter()
                    .filter_map(|ca| cert.check_issued_by(ca).err())
                    .collect();
                if issued.len() == self.cfg.platform_ca.len() {
                    return Err(GatewayError::Unverified(issued.join("; ")));
                }
            }
            if now < cert.not_after {
                fresh.push(cert);
            }
        }
        let mut candidate = self.keys();
        candidate.add_certificates(fresh.iter().cloned());
        self.verify_with(&candidate, &a)
            .map_err(|e| GatewayError::Unverified(format!("the certificate list: {e}")))?;
        let serials: Vec<String> = fresh.iter().map(|c| c.serial_no.clone()).collect();
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace_certificates(fresh, &self.cfg.platform_certificates);
        Ok(serials)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<T, GatewayError> {
        let a = self.call_verified(method, self.url(path_and_query)?, body).await?;
        serde_json::from_slice(&a.body).map_err(|e| protocol(what, e))
    }

    fn check_order_no(no: &str, what: &str) -> Result<(), GatewayError> {
        if !is_valid_order_no(no) {
            return Err(GatewayError::Invalid(format!(
                "{what} {no:?} is not [A-Za-z0-9]{{8,32}}"
            )));
        }
        Ok(())
    }

    fn gateway_refund(&self, r: Refund, order_no: &str) -> Result<GatewayRefund, GatewayError> {
        if r.out_trade_no != order_no {
            return Err(protocol(
                "the refund",
                format!("belongs to order {}, not {order_no}", r.out_trade_no),
            ));
        }
        let status = RefundStatus::parse(&r.status).map_err(|e| protocol("the refund", e))?;
        Ok(GatewayRefund {
            order_no: r.out_trade_no,
            refund_no: r.out_refund_no,
            state: status.refund_state(),
            gateway_refund_id: Some(r.refund_id),
            amount_fen: Some(wire_to_fen(r.amount.refund, "amount.refund").map_err(|e| protocol("the refund", e))?),
            refunded_at: r
                .success_time
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()
                .map_err(|e| protocol("the refund's success_time", e))?,
        })
    }

    /// Verify a notification; if its certificate serial is unknown, download the certificates
    /// once and try again (what the service should do with [`PaymentGateway::verify_notification`]
    /// returning `UnknownKey`).
    pub async fn verify_notification_refreshing(
        &self,
        n: IncomingNotification<'_>,
        now: chrono::DateTime<Utc>,
    ) -> Result<VerifiedNotification, NotifyError> {
        match self.verify_notification(n, now) {
            Err(NotifyError::UnknownKey(detail)) => {
                let serial = n.header("Wechatpay-Serial").unwrap_or_default().to_string();
                let may = !serial.starts_with(PUBLIC_KEY_ID_PREFIX) && {
                    let mut tried = lock(&self.refreshed_for);
                    tried.retain(|_, at| at.elapsed() < UNKNOWN_SERIAL_MEMORY);
                    tried.insert(serial, Instant::now()).is_none()
                };
                if !may {
                    return Err(NotifyError::UnknownKey(detail));
                }
                self.refresh_certificates().await.map_err(|e| {
                    NotifyError::UnknownKey(format!("{detail}; downloading the certificates failed: {e}"))
                })?;
                self.verify_notification(n, now)
            }
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl PaymentGateway for WechatPayClient {
    fn channel(&self) -> Channel {
        Channel::Wechatpay
    }

    fn merchant_id(&self) -> &str {
        &self.cfg.mchid
    }

    async fn create_order(&self, req: &CreateOrder) -> Result<PayerAction, GatewayError> {
        Self::check_order_no(&req.order_no, "order number")?;
        let subject = req.subject.trim();
        if subject.is_empty() || subject.chars().count() > 127 {
            return Err(GatewayError::Invalid(format!(
                "description must be 1–127 characters, got {}",
                subject.chars().count()
            )));
        }
        let notify = url::Url::parse(&req.notify_url)
            .map_err(|e| GatewayError::Invalid(format!("notify_url {:?}: {e}", req.notify_url)))?;
        if notify.query().is_some() || !matches!(notify.scheme(), "https" | "http") {
            return Err(GatewayError::Invalid(format!(
                "notify_url {:?} must be an HTTPS URL without a query string",
                req.notify_url
            )));
        }
        let mut body = OrderRequest {
            appid: self.cfg.appid.clone(),
            mchid: self.cfg.mchid.clone(),
            description: subject.to_string(),
            out_trade_no: req.order_no.clone(),
            time_expire: Some(rfc3339_cst(req.expires_at)),
            attach: None,
            notify_url: req.notify_url.clone(),
            amount: Amount {
                total: fen_to_wire(req.amount_fen, "amount")?,
                currency: "CNY".into(),
            },
            payer: None,
            scene_info: None,
        };
        let path = match req.method {
            // A desktop checkout shows the Native QR code too: WeChat Pay has no web-pay form.
            PayMethod::Qr | PayMethod::Web => "/v3/pay/transactions/native",
            PayMethod::Jsapi => {
                let openid = req
                    .payer_openid
                    .clone()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| GatewayError::Invalid("a JSAPI order needs the payer's openid".into()))?;
                body.payer = Some(Payer { openid });
                "/v3/pay/transactions/jsapi"
            }
            PayMethod::H5 => {
                let ip = req
                    .payer_ip
                    .clone()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| GatewayError::Invalid("an H5 order needs the payer's IP address".into()))?;
                body.scene_info = Some(SceneInfo {
                    payer_client_ip: ip,
                    h5_info: Some(H5Info { kind: "Wap".into() }),
                });
                "/v3/pay/transactions/h5"
            }
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        match req.method {
            PayMethod::Qr | PayMethod::Web => {
                let a: NativeAnswer = self
                    .json(Method::POST, path, Some(bytes), "the Native order answer")
                    .await?;
                Ok(PayerAction::QrCode { content: a.code_url })
            }
            PayMethod::Jsapi => {
                let a: JsapiAnswer = self
                    .json(Method::POST, path, Some(bytes), "the JSAPI order answer")
                    .await?;
                Ok(PayerAction::Jsapi {
                    params: jsapi_params(
                        &self.cfg.merchant_key,
                        &self.cfg.appid,
                        &a.prepay_id,
                        Utc::now().timestamp(),
                        &new_nonce(),
                    ),
                })
            }
            PayMethod::H5 => {
                let a: H5Answer = self
                    .json(Method::POST, path, Some(bytes), "the H5 order answer")
                    .await?;
                let mut url = a.h5_url;
                if let Some(ret) = &req.return_url {
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str("redirect_url=");
                    url.extend(form_urlencoded::byte_serialize(ret.as_bytes()));
                }
                Ok(PayerAction::Redirect { url })
            }
        }
    }

    async fn query_order(&self, order: &OrderRef) -> Result<GatewayOrder, GatewayError> {
        Self::check_order_no(&order.order_no, "order number")?;
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            order.order_no, self.cfg.mchid
        );
        let t: Transaction = match self.json(Method::GET, &path, None, "the transaction").await {
            Ok(t) => t,
            Err(GatewayError::Refused { code, .. }) if ErrorCode::parse(&code) == ErrorCode::OrderNotExist => {
                return Ok(GatewayOrder {
                    order_no: order.order_no.clone(),
                    state: PaymentState::NotFound,
                    gateway_txn_id: None,
                    amount_fen: None,
                    paid_at: None,
                    merchant_id: None,
                })
            }
            Err(e) => return Err(e),
        };
        if t.out_trade_no != order.order_no || t.mchid != self.cfg.mchid {
            return Err(protocol(
                "the transaction",
                format!(
                    "is {} of {}, not {} of {}",
                    t.out_trade_no, t.mchid, order.order_no, self.cfg.mchid
                ),
            ));
        }
        let state = TradeState::parse(&t.trade_state).map_err(|e| protocol("the transaction", e))?;
        let paid = matches!(state, TradeState::Success | TradeState::Refund);
        let amount_fen = match (paid, t.amount.as_ref().and_then(|a| a.total)) {
            (true, Some(total)) => {
                Some(wire_to_fen(total, "amount.total").map_err(|e| protocol("the transaction", e))?)
            }
            (true, None) => return Err(protocol("the transaction", "a paid transaction without amount.total")),
            (false, _) => None,
        };
        Ok(GatewayOrder {
            order_no: t.out_trade_no,
            state: state.payment_state(),
            gateway_txn_id: t.transaction_id.filter(|s| !s.is_empty()),
            amount_fen,
            paid_at: t
                .success_time
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_time)
                .transpose()
                .map_err(|e| protocol("the transaction's success_time", e))?,
            merchant_id: Some(t.mchid),
        })
    }

    async fn close_order(&self, order: &OrderRef) -> Result<CloseOutcome, GatewayError> {
        Self::check_order_no(&order.order_no, "order number")?;
        let path = format!("/v3/pay/transactions/out-trade-no/{}/close", order.order_no);
        let body = serde_json::to_vec(&CloseRequest {
            mchid: self.cfg.mchid.clone(),
        })
        .map_err(|e| GatewayError::Invalid(e.to_string()))?;
        match self.call_verified(Method::POST, self.url(&path)?, Some(body)).await {
            Ok(a) if a.status == 204 || a.status == 200 => Ok(CloseOutcome::Closed),
            Ok(a) => Err(protocol("closing the order", format!("unexpected HTTP {}", a.status))),
            Err(GatewayError::Refused { code, message, class }) => match ErrorCode::parse(&code) {
                ErrorCode::OrderPaid => Ok(CloseOutcome::AlreadyPaid),
                ErrorCode::OrderClosed => Ok(CloseOutcome::Closed),
                ErrorCode::OrderNotExist => Ok(CloseOutcome::NothingToClose),
                _ => Err(GatewayError::Refused { code, message, class }),
            },
            Err(e) => Err(e),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<GatewayRefund, GatewayError> {
        Self::check_order_no(&req.order_no, "order number")?;
        Self::check_order_no(&req.refund_no, "refund number")?;
        if req.refund_fen > req.order_total_fen {
            return Err(GatewayError::Invalid(format!(
                "refund of {} fen exceeds the order's {} fen",
                req.refund_fen, req.order_total_fen
            )));
        }
        let reason = req.reason.trim();
        let body = RefundRequestBody {
            transaction_id: None,
            out_trade_no: Some(req.order_no.clone()),
            out_refund_no: req.refund_no.clone(),
            reason: (!reason.is_empty()).then(|| reason.chars().take(80).collect()),
            notify_url: req.notify_url.clone(),
            amount: RefundAmountRequest {
                refund: fen_to_wire(req.refund_fen, "refund")?,
                total: fen_to_wire(req.order_total_fen, "order total")?,
                currency: "CNY".into(),
            },
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        let r: Refund = self
            .json(
                Method::POST,
                "/v3/refund/domestic/refunds",
                Some(bytes),
                "the refund answer",
            )
            .await?;
        self.gateway_refund(r, &req.order_no)
    }

    async fn query_refund(&self, refund: &RefundRef) -> Result<GatewayRefund, GatewayError> {
        Self::check_order_no(&refund.refund_no, "refund number")?;
        let path = format!("/v3/refund/domestic/refunds/{}", refund.refund_no);
        let r: Refund = self.json(Method::GET, &path, None, "the refund").await?;
        self.gateway_refund(r, &refund.order_no)
    }

    fn verify_notification(
        &self,
        notification: IncomingNotification<'_>,
        now: chrono::DateTime<Utc>,
    ) -> Result<VerifiedNotification, NotifyError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        notify::verify_notification(&keys, Some(&self.cfg.apiv3_key), notification, now)
    }

    fn ack(&self, accepted: bool) -> Ack {
        notify::ack(accepted)
    }

    async fn download_settlement(&self, day: NaiveDate) -> Result<Vec<u8>, GatewayError> {
        let path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type=ALL&tar_type=GZIP",
            day.format("%Y-%m-%d")
        );
        let bill: BillAnswer = self.json(Method::GET, &path, None, "the trade bill answer").await?;
        if !bill.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(protocol(
                "the trade bill answer",
                format!("hash_type {} is not SHA1", bill.hash_type),
            ));
        }
        let url = url::Url::parse(&bill.download_url).map_err(|e| protocol("the trade bill download_url", e))?;
        // The download is signed by us like any request, but its answer carries no signature:
        // the SHA-1 from the signed answer above is what vouches for it.
        let file = self.call(Method::GET, url, None).await?;
        let csv = if file.body.starts_with(&[0x1f, 0x8b]) {
            settlement::gunzip(&file.body).map_err(|e| protocol("the trade bill", e))?
        } else {
            file.body
        };
        let got = hex::encode(sha1::Sha1::digest(&csv));
        if !got.eq_ignore_ascii_case(bill.hash_value.trim()) {
            return Err(protocol(
                "the trade bill",
                format!(
                    "SHA-1 of the download is {got}, the signed answer says {}",
                    bill.hash_value
                ),
            ));
        }
        Ok(csv)
    }

    fn parse_settlement(&self, bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
        settlement::parse(bytes)
    }

    async fn refresh_keys(&self) -> Result<(), GatewayError> {
        if self.cfg.wechatpay_public_key.is_some() && self.cfg.platform_certificates.is_empty() {
            // Public-key mode only: there is nothing to download.
            return Ok(());
        }
        self.refresh_certificates().await.map(|_| ())
    }
}
