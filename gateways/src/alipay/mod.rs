//! Alipay, classic OpenAPI (`gateway.do`, RSA2), spoken exactly (gateways.md §1).
//!
//! ## The flow
//! One URL (`gateway.do`) serves every API; the `method` parameter picks it. A call carries the
//! common parameters (`app_id`, `method`, `format`, `charset`, `sign_type`, `timestamp` in
//! Beijing time, `version`, `notify_url`, certificate SNs in certificate mode, `sign`) in the
//! **URL query** and `biz_content` (the API's JSON, serialised once, the same string signed and
//! sent) in a form-encoded POST body. The answer is
//! `{"<method_with_underscores>_response":{…},"sign":"…"}`, verified over the raw text of the
//! node. Browser flows (`alipay.trade.page.pay`, `alipay.trade.wap.pay`) make no server call: the
//! signed parameters become a URL the payer's browser opens. The result arrives as an
//! asynchronous notification (a signed form POST, answered `success`) and can always be asked
//! for with `alipay.trade.query`.
//!
//! | what | method | here |
//! |---|---|---|
//! | QR code | `alipay.trade.precreate` | [`AlipayClient::create_order`] with `PayMethod::Qr` |
//! | mobile browser | `alipay.trade.wap.pay` | `PayMethod::H5`: a signed redirect URL |
//! | desktop browser | `alipay.trade.page.pay` | `PayMethod::Web`: a signed redirect URL |
//! | query | `alipay.trade.query` | `query_order` |
//! | close | `alipay.trade.close` | `close_order` |
//! | refund | `alipay.trade.refund` | `refund` |
//! | refund query | `alipay.trade.fastpay.refund.query` | `query_refund` |
//! | bill | `alipay.data.dataservice.bill.downloadurl.query` + GET | `download_settlement` |
//!
//! ## Files
//! - [`signature`]: the three signed messages (requests, answers, notifications) in small steps.
//! - [`cert`]: certificate mode's `app_cert_sn` / `alipay_root_cert_sn`.
//! - [`transformers`]: wire structs, amounts and times at the edge, status and error-code maps.
//! - [`notify`]: notifications into our terms.
//! - [`client`]: [`AlipayClient`], the [`crate::gateway::PaymentGateway`] for one app.
//! - [`settlement`]: the daily bill (a zip of GBK CSVs) parsed into normalised rows, and written.
//!
//! ## Pitfalls handled (gateways.md §4)
//! - **Raw answer text**: the `…_response` node is cut out of the bytes received, never
//!   re-serialised; the `\/` → `/` variant is tried only after the raw bytes fail.
//! - **`sign_type`**: included when signing requests; excluded when verifying trade
//!   notifications (V1), kept as a second attempt (V2) for notifications signed that way.
//! - **`charset` in the URL query**: always, so Alipay decodes requests as UTF-8 and notifies in
//!   UTF-8. Notifications are decoded in the charset they declare, GBK included, and verified
//!   over the bytes in that charset.
//! - **`timestamp`'s space**: raw in the sign string, percent-encoded in the URL.
//! - **Decode once**: notification values are decoded once and verified as decoded; nothing is
//!   HTML-escaped, and `passback_params` is left as received.
//! - **Precreate**: `ACQ.TRADE_NOT_EXIST` before the payer scans is "not found" for a query and
//!   "nothing to close" for a close, not an error.
//! - **Refunds**: `fund_change` `N` is confirmed with the refund query; `refund_fee` is
//!   cumulative and never taken for the refund's own amount.
//! - **Unsigned answers** (error bodies may carry no `sign`) are used for retry decisions only:
//!   nothing is concluded from them (no "not found", "nothing to close", "paid").
//! - **Amounts**: fen inside, a two-decimal yuan string at the edge; a wire amount with more than
//!   two decimals is refused, not rounded.
//! - **Keys** in every form Alipay hands out: bare base64 or PEM, PKCS#1 or PKCS#8, the Alipay
//!   public key bare or as `alipayCertPublicKey_RSA2.crt`.

pub mod cert;
pub mod client;
pub mod notify;
pub mod settlement;
pub mod signature;
pub mod transformers;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use client::AlipayClient;

use crate::crypto::{load_private_key, load_public_key, KeyError, PrivateKey, PublicKey};
use crate::gateway::{IncomingNotification, NotifyError, VerifiedNotification};

/// Alipay's production gateway.
pub const PRODUCTION_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";
/// Alipay's own developer sandbox (not meterpay's).
pub const ALIPAY_SANDBOX_GATEWAY: &str = "https://openapi-sandbox.dl.alipaydev.com/gateway.do";

/// How we know the Alipay side's key.
#[derive(Debug, Clone)]
pub enum AlipayKey {
    /// Public-key mode: the Alipay public key (`alipay_public_key`).
    PublicKey(PublicKey),
    /// Certificate mode (公钥证书模式).
    Certificate(CertificateMode),
}

/// Certificate mode: the serial numbers sent with every request and the Alipay certificate's key.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateMode {
    /// SN of `appCertPublicKey_<appid>.crt`, sent as `app_cert_sn`.
    pub app_cert_sn: String,
    /// SN of `alipayRootCert.crt` (RSA roots joined with `_`), sent as `alipay_root_cert_sn`.
    pub alipay_root_cert_sn: String,
    /// SN of `alipayCertPublicKey_RSA2.crt`; answers naming another `alipay_cert_sn` are not
    /// trusted (Alipay has rotated its certificate: download the new one first).
    pub alipay_cert_sn: String,
    /// The key inside `alipayCertPublicKey_RSA2.crt`.
    pub alipay_public_key: PublicKey,
}

/// One Alipay app, as [`AlipayClient`] needs it.
#[derive(Debug, Clone)]
pub struct AlipayConfig {
    /// The APPID.
    pub app_id: String,
    /// Our app private key (signs requests). Never printed.
    pub app_private_key: PrivateKey,
    /// The Alipay side's key (verifies answers and notifications).
    pub alipay_key: AlipayKey,
    /// The full `gateway.do` URL: [`PRODUCTION_GATEWAY`] by default, the sandbox's
    /// `<base>/alipay/gateway.do` in tests and the demo.
    pub gateway_url: String,
    /// Whole-request timeout for API calls and the bill download.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl AlipayConfig {
    /// Public-key mode. `app_private_key` and `alipay_public_key` may be in any form Alipay hands
    /// out (bare base64 or PEM; PKCS#1 or PKCS#8; the Alipay key also as a certificate).
    pub fn public_key_mode(
        app_id: impl Into<String>,
        app_private_key: &[u8],
        alipay_public_key: &[u8],
    ) -> Result<AlipayConfig, KeyError> {
        Ok(AlipayConfig {
            app_id: app_id.into(),
            app_private_key: load_private_key(app_private_key)?,
            alipay_key: AlipayKey::PublicKey(load_public_key(alipay_public_key)?),
            gateway_url: PRODUCTION_GATEWAY.to_string(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Certificate mode, from the three files Alipay hands out: `appCertPublicKey_<appid>.crt`,
    /// `alipayCertPublicKey_RSA2.crt` and `alipayRootCert.crt`. The app certificate must hold
    /// the public half of `app_private_key`.
    pub fn certificate_mode(
        app_id: impl Into<String>,
        app_private_key: &[u8],
        app_cert: &[u8],
        alipay_cert: &[u8],
        alipay_root_cert: &[u8],
    ) -> Result<AlipayConfig, KeyError> {
        let key = load_private_key(app_private_key)?;
        let app_cert_key = cert::cert_public_key(app_cert)?;
        if app_cert_key != key.public_key() {
            return Err(KeyError::Certificate(
                "the app certificate does not hold the app private key's public key".into(),
            ));
        }
        Ok(AlipayConfig {
            app_id: app_id.into(),
            app_private_key: key,
            alipay_key: AlipayKey::Certificate(CertificateMode {
                app_cert_sn: cert::cert_sn(app_cert)?,
                alipay_root_cert_sn: cert::root_cert_sn(alipay_root_cert)?,
                alipay_cert_sn: cert::cert_sn(alipay_cert)?,
                alipay_public_key: cert::cert_public_key(alipay_cert)?,
            }),
            gateway_url: PRODUCTION_GATEWAY.to_string(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Talk to another `gateway.do` (the sandbox, or Alipay's developer sandbox).
    pub fn with_gateway_url(mut self, url: impl Into<String>) -> AlipayConfig {
        self.gateway_url = url.into();
        self
    }

    pub fn with_timeouts(mut self, timeout: Duration, connect_timeout: Duration) -> AlipayConfig {
        self.timeout = timeout;
        self.connect_timeout = connect_timeout;
        self
    }

    /// The key that verifies Alipay's answers and notifications.
    pub fn alipay_public_key(&self) -> &PublicKey {
        match &self.alipay_key {
            AlipayKey::PublicKey(k) => k,
            AlipayKey::Certificate(c) => &c.alipay_public_key,
        }
    }
}

/// Verify a notification with only the Alipay key (`gateway_key`: the public key bare or PEM, or
/// `alipayCertPublicKey_RSA2.crt`), as `meterpay notify verify` does: exactly what
/// [`AlipayClient`]'s `verify_notification` does. `apiv3_key` is WeChat's and ignored; `now` is
/// not needed (Alipay notifications carry no freshness window, see [`notify`]).
pub fn inspect_notification(
    gateway_key: &[u8],
    _apiv3_key: Option<&[u8]>,
    notification: IncomingNotification<'_>,
    _now: DateTime<Utc>,
) -> Result<VerifiedNotification, NotifyError> {
    let key = load_public_key(gateway_key)
        .map_err(|e| NotifyError::UnknownKey(format!("the Alipay key could not be read: {e}")))?;
    notify::verify_with_key(&key, notification)
}
