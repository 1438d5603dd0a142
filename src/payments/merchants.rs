//! The merchant registry: per community, one merchant account per channel, each with its gateway
//! client (`Arc<dyn PaymentGateway>`) built once from `[[payments.merchants]]` (keys read from
//! their files or environment variables, held only inside the client) or added at run time (the
//! demo and tests add the sandbox's merchants).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use meterpay_gateways::alipay::{AlipayClient, AlipayConfig};
use meterpay_gateways::gateway::{Channel, PaymentGateway};
use meterpay_gateways::unionpay::{UnionPayClient, UnionPayConfig, UnionPayEnvironment, UnionPaySigningKey};
use meterpay_gateways::wechatpay::{merchant_serial_from_certificate, WechatPayClient, WechatPayConfig};

use super::config::{KeySource, MerchantConfig, MerchantKind};

/// One merchant as the service uses it.
#[derive(Debug, Clone)]
pub struct Merchant {
    /// The community's code (its id is resolved against the database when needed).
    pub community: String,
    pub channel: Channel,
    pub merchant_id: String,
    pub fee_rate_ppm: u32,
    pub gateway: Arc<dyn PaymentGateway>,
}

/// Every configured merchant, by (channel, merchant id).
#[derive(Debug, Default)]
pub struct MerchantRegistry {
    by_id: RwLock<HashMap<(Channel, String), Merchant>>,
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

impl MerchantRegistry {
    /// Build every merchant of the configuration. Fails on the first merchant whose keys cannot
    /// be read or loaded, naming it and the key (never the key's content).
    pub fn from_config(merchants: &[MerchantConfig]) -> anyhow::Result<MerchantRegistry> {
        let reg = MerchantRegistry::default();
        for m in merchants {
            let channel = m
                .channel
                .ok_or_else(|| anyhow::anyhow!("payments.merchants: merchant {:?} has no channel", m.merchant_id))?;
            let gateway = build_gateway(channel, m).with_context(|| {
                format!(
                    "payments.merchants: building the {channel} merchant {:?} of community {:?}",
                    m.merchant_id, m.community
                )
            })?;
            reg.add(Merchant {
                community: m.community.clone(),
                channel,
                merchant_id: m.merchant_id.clone(),
                fee_rate_ppm: m.fee_rate_ppm,
                gateway,
            })?;
        }
        Ok(reg)
    }

    /// Add (or replace) a merchant. A community has at most one merchant per channel.
    pub fn add(&self, m: Merchant) -> anyhow::Result<()> {
        if m.gateway.merchant_id() != m.merchant_id || m.gateway.channel() != m.channel {
            anyhow::bail!(
                "the {} client speaks for {} {:?}, not {} {:?}",
                m.channel,
                m.gateway.channel(),
                m.gateway.merchant_id(),
                m.channel,
                m.merchant_id
            );
        }
        let mut map = self.by_id.write().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = map
            .values()
            .find(|o| o.community == m.community && o.channel == m.channel && o.merchant_id != m.merchant_id)
        {
            anyhow::bail!(
                "community {:?} already has a {} merchant ({:?}); one per channel",
                m.community,
                m.channel,
                other.merchant_id
            );
        }
        map.insert((m.channel, m.merchant_id.clone()), m);
        Ok(())
    }

    pub fn get(&self, channel: Channel, merchant_id: &str) -> Option<Merchant> {
        read_lock(&self.by_id).get(&(channel, merchant_id.to_string())).cloned()
    }

    /// The merchant of a community for a channel.
    pub fn for_community(&self, community: &str, channel: Channel) -> Option<Merchant> {
        read_lock(&self.by_id)
            .values()
            .find(|m| m.community == community && m.channel == channel)
            .cloned()
    }

    pub fn all(&self) -> Vec<Merchant> {
        let mut v: Vec<Merchant> = read_lock(&self.by_id).values().cloned().collect();
        v.sort_by(|a, b| (&a.community, a.channel, &a.merchant_id).cmp(&(&b.community, b.channel, &b.merchant_id)));
        v
    }
}

fn need<'a>(k: &'a Option<KeySource>, what: &str) -> anyhow::Result<&'a KeySource> {
    k.as_ref().ok_or_else(|| anyhow::anyhow!("{what} is not configured"))
}

const SANDBOX_WECHAT_OLD_CERT: &str = include_str!("../../fixtures/sandbox/wechatpay/platform_old_cert.pem");
const SANDBOX_WECHAT_CA: &str = include_str!("../../fixtures/sandbox/wechatpay/ca.pem");

/// Build one gateway client from its configuration.
pub fn build_gateway(channel: Channel, m: &MerchantConfig) -> anyhow::Result<Arc<dyn PaymentGateway>> {
    if m.merchant_id.trim().is_empty() {
        anyhow::bail!("merchant_id is empty");
    }
    let base = m.gateway_url.trim_end_matches('/').to_string();
    match (channel, m.kind) {
        (Channel::Alipay, MerchantKind::Sandbox) => {
            use meterpay_gateways::sandbox::alipay::{MERCHANT_PRIVATE_KEY, PLATFORM_PUBLIC_KEY};
            let cfg = AlipayConfig::public_key_mode(&m.merchant_id, MERCHANT_PRIVATE_KEY, PLATFORM_PUBLIC_KEY)?
                .with_gateway_url(format!("{base}/alipay/gateway.do"))
                .with_timeouts(Duration::from_secs(5), Duration::from_secs(2));
            Ok(Arc::new(AlipayClient::new(cfg)?))
        }
        (Channel::Alipay, MerchantKind::Live) => {
            let key = need(&m.app_private_key, "app_private_key")?.read("app_private_key")?;
            let public = need(&m.gateway_public_key, "gateway_public_key")?.read("gateway_public_key")?;
            let mut cfg = AlipayConfig::public_key_mode(&m.merchant_id, &key, &public)
                .map_err(|e| anyhow::anyhow!("loading the Alipay keys: {e}"))?;
            if !base.is_empty() {
                cfg = cfg.with_gateway_url(base);
            }
            Ok(Arc::new(AlipayClient::new(cfg)?))
        }
        (Channel::Wechatpay, MerchantKind::Sandbox) => {
            use meterpay_gateways::sandbox::wechatpay::{
                MERCHANT_APIV3_KEY, MERCHANT_CERT_PEM, MERCHANT_KEY_PEM, SANDBOX_APPID,
            };
            let serial = merchant_serial_from_certificate(MERCHANT_CERT_PEM.as_bytes())?;
            let cfg = WechatPayConfig::new(
                &m.merchant_id,
                SANDBOX_APPID,
                &serial,
                MERCHANT_KEY_PEM.as_bytes(),
                MERCHANT_APIV3_KEY.as_bytes(),
            )?
            .with_base_url(format!("{base}/wechatpay"))
            .with_timeout(Duration::from_secs(5))
            .with_platform_certificates(SANDBOX_WECHAT_OLD_CERT.as_bytes())?
            .with_platform_ca(SANDBOX_WECHAT_CA.as_bytes())?;
            Ok(Arc::new(WechatPayClient::new(cfg)?))
        }
        (Channel::Wechatpay, MerchantKind::Live) => {
            let key = need(&m.app_private_key, "app_private_key (apiclient_key.pem)")?.read("app_private_key")?;
            let cert = need(&m.merchant_cert, "merchant_cert (apiclient_cert.pem)")?.read("merchant_cert")?;
            let apiv3 = need(&m.apiv3_key, "apiv3_key")?.read_text("apiv3_key")?;
            let serial = merchant_serial_from_certificate(&cert)?;
            let mut cfg = WechatPayConfig::new(&m.merchant_id, &m.appid, &serial, &key, apiv3.as_bytes())?;
            if !base.is_empty() {
                cfg = cfg.with_base_url(base);
            }
            if let Some(k) = &m.platform_certificates {
                cfg = cfg.with_platform_certificates(&k.read("platform_certificates")?)?;
            }
            if let Some(k) = &m.platform_ca {
                cfg = cfg.with_platform_ca(&k.read("platform_ca")?)?;
            }
            if let Some(k) = &m.wechatpay_public_key {
                cfg = cfg.with_public_key(&m.wechatpay_public_key_id, &k.read("wechatpay_public_key")?)?;
            }
            Ok(Arc::new(WechatPayClient::new(cfg)?))
        }
        (Channel::Unionpay, MerchantKind::Sandbox) => {
            use meterpay_gateways::sandbox::unionpay::{MERCHANT_PFX, MERCHANT_PFX_PASSWORD, MIDDLE_PEM, ROOT_PEM};
            let cfg = UnionPayConfig {
                merchant_id: m.merchant_id.clone(),
                signing_key: UnionPaySigningKey::Pkcs12 {
                    pfx: MERCHANT_PFX.to_vec(),
                    password: MERCHANT_PFX_PASSWORD.to_string(),
                },
                root_cert: ROOT_PEM.to_vec(),
                middle_cert: MIDDLE_PEM.to_vec(),
                environment: UnionPayEnvironment::Test,
                gateway_url: format!("{base}/unionpay"),
                file_url: format!("{base}/unionpay/filedownload/"),
                timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(2),
            };
            Ok(Arc::new(UnionPayClient::new(cfg)?))
        }
        (Channel::Unionpay, MerchantKind::Live) => {
            let pfx = need(&m.signing_pfx, "signing_pfx")?.read("signing_pfx")?;
            let password = need(&m.signing_pfx_password, "signing_pfx_password")?.read_text("signing_pfx_password")?;
            let root = need(&m.root_cert, "root_cert")?.read("root_cert")?;
            let middle = need(&m.middle_cert, "middle_cert")?.read("middle_cert")?;
            let mut cfg = UnionPayConfig::new(
                &m.merchant_id,
                UnionPaySigningKey::Pkcs12 { pfx, password },
                root,
                middle,
            );
            if m.unionpay_test_environment {
                cfg = cfg.test_environment();
            }
            if !base.is_empty() {
                cfg.gateway_url = base;
            }
            if !m.file_url.is_empty() {
                cfg.file_url = m.file_url.clone();
            }
            Ok(Arc::new(UnionPayClient::new(cfg)?))
        }
    }
}
