//! `[payments]` settings and `[[payments.merchants]]`: one merchant account per community and
//! channel. Keys are never written in the configuration itself: each key names a file
//! (`{ file = "…" }`) or an environment variable (`{ env = "…" }`) it is read from at start, and
//! what is read is held only inside the gateway client (never printed, never logged).
//!
//! ```toml
//! [payments]
//! order_ttl_minutes = 30
//!
//! [[payments.merchants]]
//! community = "DEMO"
//! channel = "alipay"
//! merchant_id = "2021000000000001"           # Alipay app id / WeChat mchid / UnionPay merId
//! fee_rate_ppm = 6000
//! app_private_key = { file = "/etc/meterpay/alipay_app_key.pem" }
//! gateway_public_key = { file = "/etc/meterpay/alipay_public_key.pem" }
//! ```

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use meterpay_gateways::gateway::Channel;

/// `[payments]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// How long an order stays payable (minutes); afterwards it is closed at the gateway, then here.
    pub order_ttl_minutes: i64,
    /// The base URL gateways send notifications to (`{base}/notify/{channel}/{merchant}`).
    /// Empty: `http.public_base_url`.
    pub notify_base_url: String,
    pub merchants: Vec<MerchantConfig>,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            order_ttl_minutes: 30,
            notify_base_url: String::new(),
            merchants: Vec::new(),
        }
    }
}

/// Where a key is read from. Exactly one of `file` and `env`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KeySource {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

impl std::fmt::Debug for KeySource {
    // Only where it comes from: never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, &self.env) {
            (Some(p), _) => write!(f, "file {}", p.display()),
            (None, Some(v)) => write!(f, "env {v}"),
            (None, None) => f.write_str("(none)"),
        }
    }
}

impl KeySource {
    pub fn file(path: impl Into<PathBuf>) -> KeySource {
        KeySource {
            file: Some(path.into()),
            env: None,
        }
    }

    /// The key's bytes. The error names the source, never the content.
    pub fn read(&self, what: &str) -> anyhow::Result<Vec<u8>> {
        match (&self.file, &self.env) {
            (Some(_), Some(_)) => anyhow::bail!("{what}: give either file or env, not both"),
            (Some(p), None) => {
                std::fs::read(p).with_context(|| format!("{what}: reading the key file {}", p.display()))
            }
            (None, Some(v)) => std::env::var(v)
                .map(String::into_bytes)
                .map_err(|_| anyhow::anyhow!("{what}: the environment variable {v} is not set")),
            (None, None) => anyhow::bail!("{what}: no key source (give file = \"…\" or env = \"…\")"),
        }
    }

    /// Read as text with surrounding whitespace removed (passwords, API keys).
    pub fn read_text(&self, what: &str) -> anyhow::Result<String> {
        let b = self.read(what)?;
        let s = String::from_utf8(b).map_err(|_| anyhow::anyhow!("{what}: the key is not UTF-8 text"))?;
        Ok(s.trim().to_string())
    }
}

/// How a merchant's keys are given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantKind {
    /// A real merchant account: every key from its source.
    #[default]
    Live,
    /// A merchant at the meterpay sandbox (`meterpay sandbox`, the demo): the project's test
    /// keys compiled into the binary; `gateway_url` is the sandbox's base URL. Never for money.
    Sandbox,
}

/// `[[payments.merchants]]`: one merchant account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MerchantConfig {
    /// The community's code.
    pub community: String,
    pub channel: Option<Channel>,
    /// Alipay app id, WeChat Pay mchid, UnionPay merId.
    pub merchant_id: String,
    /// Contracted fee in parts per million (6‰ = 6000).
    pub fee_rate_ppm: u32,
    pub kind: MerchantKind,
    /// Override the gateway's URL: Alipay the full `gateway.do` URL, WeChat Pay the API base,
    /// UnionPay the gateway base; for `kind = "sandbox"` the sandbox's base URL.
    pub gateway_url: String,
    /// UnionPay only: the file-transfer URL (default: production, or the test host with
    /// `unionpay_test_environment`).
    pub file_url: String,
    /// Alipay: the app private key; WeChat Pay: the merchant API key (`apiclient_key.pem`).
    pub app_private_key: Option<KeySource>,
    /// Alipay: the Alipay public key (or `alipayCertPublicKey_RSA2.crt`).
    pub gateway_public_key: Option<KeySource>,
    /// WeChat Pay: the appid bound to the merchant.
    pub appid: String,
    /// WeChat Pay: the merchant certificate (`apiclient_cert.pem`), for its serial number.
    pub merchant_cert: Option<KeySource>,
    /// WeChat Pay: the APIv3 key (32 bytes).
    pub apiv3_key: Option<KeySource>,
    /// WeChat Pay: platform certificates trusted up front (PEM bundle), optional.
    pub platform_certificates: Option<KeySource>,
    /// WeChat Pay: the CA that must issue downloaded platform certificates, optional.
    pub platform_ca: Option<KeySource>,
    /// WeChat Pay public-key mode: the key id (`PUB_KEY_ID_…`) and the key.
    pub wechatpay_public_key_id: String,
    pub wechatpay_public_key: Option<KeySource>,
    /// UnionPay: the signing certificate `.pfx` and its password.
    pub signing_pfx: Option<KeySource>,
    pub signing_pfx_password: Option<KeySource>,
    /// UnionPay: the root and middle certificates.
    pub root_cert: Option<KeySource>,
    pub middle_cert: Option<KeySource>,
    /// UnionPay: talk to the test environment (and accept its signer).
    pub unionpay_test_environment: bool,
}
