//! SMS through Alibaba Cloud (Dysmsapi) and Tencent Cloud (SMS API 3.0).
//!
//! One folder per provider, wire data apart from behaviour: `sign.rs` (the signature),
//! `transformers.rs` (request and response structs), `mod.rs` (the client: URLs, headers, send,
//! status query, error classification). This module holds what both share: the message we ask
//! for ([`SmsMessage`]), the three ways a send can end ([`SendError`]: refused for now, refused
//! for good, or **unknown**), the delivery status, and [`SmsClient`], chosen per community.
//!
//! Why "unknown" is its own outcome: neither provider's SendSms is idempotent. A timeout or a
//! dropped connection after the request left us may or may not have sent the message, so the
//! caller must settle it with the provider's status query ([`SmsClient::query_status`]) — by
//! our `OutId` / `SessionContext`, which carry the outbox id — and never by sending again.

pub mod aliyun;
pub mod tencent;

use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// Which SMS provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Aliyun,
    Tencent,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aliyun => "aliyun",
            ProviderKind::Tencent => "tencent",
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aliyun" => Ok(ProviderKind::Aliyun),
            "tencent" => Ok(ProviderKind::Tencent),
            other => Err(format!("unknown SMS provider {other:?} (expected aliyun or tencent)")),
        }
    }
}

/// One SMS to one number through an approved template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsMessage {
    /// A mainland mobile number, bare or with `+86` / `0086` / `86`.
    pub phone: String,
    /// The approved signature name (签名), added by the platform as 【…】.
    pub sign_name: String,
    /// The provider's template code (Alibaba `SMS_…`) or id (Tencent, digits).
    pub template_code: String,
    /// Variables in template order: Alibaba uses the names, Tencent only the order.
    pub params: Vec<(String, String)>,
    /// Our reference, echoed in status records (Alibaba `OutId`, Tencent `SessionContext`): the
    /// outbox id.
    pub out_id: String,
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Alibaba `BizId`, Tencent `SerialNo`.
    pub message_id: String,
    pub request_id: Option<String>,
}

/// How a send did not end in [`Accepted`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Refused, and a later retry may succeed (flow control, provider busy, 5xx).
    #[error("{provider} refused for now ({code}): {message}")]
    Transient {
        provider: &'static str,
        code: String,
        message: String,
    },
    /// Refused for good: invalid number, template or signature rejected, bad credentials.
    #[error("{provider} refused ({code}): {message}")]
    Permanent {
        provider: &'static str,
        code: String,
        message: String,
    },
    /// We cannot tell whether the provider took it (timeout or connection lost after sending).
    #[error("{provider}: outcome unknown: {reason}")]
    Unknown { provider: &'static str, reason: String },
}

impl SendError {
    pub fn code(&self) -> Option<&str> {
        match self {
            SendError::Transient { code, .. } | SendError::Permanent { code, .. } => Some(code),
            SendError::Unknown { .. } => None,
        }
    }
}

/// Whether a provider error code is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Transient,
    Permanent,
}

/// Delivery state as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DeliveryState {
    /// Accepted, no carrier receipt yet.
    Pending,
    Delivered,
    Failed {
        code: String,
    },
}

/// One status record the provider holds for a message of ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRecord {
    /// Known when the provider reports it (Tencent `SerialNo`; Alibaba only when we asked by
    /// `BizId`).
    pub message_id: Option<String>,
    pub state: DeliveryState,
    pub description: Option<String>,
}

/// What to look up: a message of ours to `phone`, sent around `sent_at`.
#[derive(Debug, Clone)]
pub struct StatusQuery<'a> {
    pub phone: &'a str,
    pub sent_at: DateTime<Utc>,
    pub message_id: Option<&'a str>,
    pub out_id: &'a str,
}

/// A transport or protocol failure of a status query (always worth retrying later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: querying delivery status: {reason}")]
pub struct QueryError {
    pub provider: &'static str,
    pub reason: String,
}

/// A mainland mobile number as 11 digits, from any of the forms the providers accept.
pub fn normalize_cn_mobile(phone: &str) -> Result<String, String> {
    let p = phone.trim().replace([' ', '-'], "");
    let digits = p
        .strip_prefix("+86")
        .or_else(|| p.strip_prefix("0086"))
        .or_else(|| if p.len() == 13 { p.strip_prefix("86") } else { None })
        .unwrap_or(&p);
    let ok = digits.len() == 11
        && digits.starts_with('1')
        && matches!(digits.as_bytes()[1], b'3'..=b'9')
        && digits.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(digits.to_string())
    } else {
        Err(format!(
            "{} is not a mainland mobile number",
            crate::telemetry::mask_phone(phone)
        ))
    }
}

/// The China Standard Time calendar date of an instant (Alibaba's `SendDate`).
pub fn china_date(at: DateTime<Utc>) -> NaiveDate {
    (at + chrono::Duration::hours(8)).date_naive()
}

/// A client-side token bucket shared by every clone of a client: we stay below the provider's
/// QPS ourselves instead of learning it from `Throttling` errors.
#[derive(Clone)]
pub struct Throttle(Arc<DefaultDirectRateLimiter>);

impl Throttle {
    pub fn per_second(n: u32) -> Throttle {
        let n = NonZeroU32::new(n.max(1)).expect("at least one");
        Throttle(Arc::new(RateLimiter::direct(Quota::per_second(n).allow_burst(n))))
    }
    pub async fn wait(&self) {
        self.0.until_ready().await;
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Throttle")
    }
}

/// Either provider's client.
#[derive(Debug, Clone)]
pub enum SmsClient {
    Aliyun(aliyun::AliyunClient),
    Tencent(tencent::TencentClient),
}

impl SmsClient {
    pub fn kind(&self) -> ProviderKind {
        match self {
            SmsClient::Aliyun(_) => ProviderKind::Aliyun,
            SmsClient::Tencent(_) => ProviderKind::Tencent,
        }
    }

    /// Send once (after waiting for the client-side rate limit). Never retries by itself.
    pub async fn send(&self, msg: &SmsMessage) -> Result<Accepted, SendError> {
        match self {
            SmsClient::Aliyun(c) => c.send(msg).await,
            SmsClient::Tencent(c) => c.send(msg).await,
        }
    }

    /// Find what the provider holds for our message (`Ok(None)`: no record of it).
    pub async fn query_status(&self, q: &StatusQuery<'_>) -> Result<Option<StatusRecord>, QueryError> {
        match self {
            SmsClient::Aliyun(c) => c.query_status(q).await,
            SmsClient::Tencent(c) => c.query_status(q).await,
        }
    }
}

/// Map a reqwest failure of a send to our outcome: nothing left our side (connect failed) is
/// transient; anything after the request may have reached the provider is unknown.
pub(crate) fn transport_error(provider: &'static str, e: &reqwest::Error) -> SendError {
    if e.is_connect() || e.is_builder() {
        SendError::Transient {
            provider,
            code: "connect".into(),
            message: e.to_string(),
        }
    } else {
        SendError::Unknown {
            provider,
            reason: if e.is_timeout() {
                "timed out waiting for the answer".into()
            } else {
                format!("connection lost: {e}")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_numbers_are_normalised_from_every_accepted_form() {
        for p in [
            "13800138000",
            "+8613800138000",
            "008613800138000",
            "8613800138000",
            "138 0013 8000",
        ] {
            assert_eq!(normalize_cn_mobile(p).unwrap(), "13800138000", "{p}");
        }
        for bad in ["1380013800", "12800138000", "+1 415 555 0100", "1380013800x", ""] {
            assert!(normalize_cn_mobile(bad).is_err(), "{bad}");
        }
        let err = normalize_cn_mobile("23800138000").unwrap_err();
        assert!(!err.contains("23800138000"), "the number is masked: {err}");
    }

    #[test]
    fn the_china_date_turns_at_sixteen_hundred_utc() {
        let t = DateTime::parse_from_rfc3339("2024-01-01T15:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(china_date(t).to_string(), "2024-01-01");
        assert_eq!(china_date(t + chrono::Duration::seconds(1)).to_string(), "2024-01-02");
    }
}
