//! Alibaba Cloud SMS (Dysmsapi 2017-05-25): SendSms and QuerySendDetails, signed with V3
//! (`ACS3-HMAC-SHA256`). API parameters travel in the query string with an empty body, as in
//! the worked SendSms example (notifications.md §3.3), so the body hash is the empty hash.
//!
//! Errors: any `Code` other than `OK` is a failure even with HTTP 200; codes are classed in
//! [`transformers::ErrorCode::retry`]. A timeout or a connection lost after sending is
//! [`SendError::Unknown`]: the API is not idempotent, so the caller settles it with
//! [`AliyunClient::query_status`] (by `OutId`, which carries the outbox id).

pub mod sign;
pub mod transformers;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use self::transformers::{ApiAnswer, ErrorCode};
use super::{
    china_date, normalize_cn_mobile, transport_error, Accepted, DeliveryState, QueryError, Retry, SendError,
    SmsMessage, StatusQuery, StatusRecord, Throttle,
};

const PROVIDER: &str = "aliyun";
pub const API_VERSION: &str = "2017-05-25";
pub const DEFAULT_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com/";

/// What the client needs. The secret never prints (`SecretString`).
#[derive(Debug, Clone)]
pub struct AliyunConfig {
    /// `https://dysmsapi.aliyuncs.com/`, or the sandbox's `http://127.0.0.1:PORT/aliyun/`.
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: SecretString,
    /// Client timeout per request (the provider recommends at least 1 s).
    pub timeout: Duration,
    /// Client-side rate limit, requests per second.
    pub rate_per_sec: u32,
}

#[derive(Debug, Clone)]
pub struct AliyunClient {
    http: reqwest::Client,
    cfg: Arc<AliyunConfig>,
    throttle: Throttle,
}

impl AliyunClient {
    pub fn new(cfg: AliyunConfig) -> Result<AliyunClient, String> {
        url::Url::parse(&cfg.endpoint).map_err(|e| format!("sms aliyun endpoint {:?}: {e}", cfg.endpoint))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("building the Alibaba Cloud HTTP client: {e}"))?;
        Ok(AliyunClient {
            http,
            throttle: Throttle::per_second(cfg.rate_per_sec),
            cfg: Arc::new(cfg),
        })
    }

    /// One signed RPC call: `(HTTP status, parsed answer)`; the answer is `None` when the body
    /// is not Dysmsapi JSON.
    async fn call(
        &self,
        action: &str,
        params: Vec<(String, String)>,
    ) -> Result<(u16, Option<ApiAnswer>), reqwest::Error> {
        let url = url::Url::parse(&self.cfg.endpoint).expect("checked in new");
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let date = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let req = sign::V3Request {
            method: "POST",
            uri: url.path(),
            query: &params,
            host: &host,
            content_type: None,
            body: b"",
            action,
            version: API_VERSION,
            date: &date,
            nonce: &nonce,
            security_token: None,
        };
        let signed = sign::v3_sign(
            &self.cfg.access_key_id,
            self.cfg.access_key_secret.expose_secret(),
            &req,
        );
        let mut full = url.clone();
        full.set_query(Some(&sign::canonical_query(&params)));
        let mut rb = self.http.post(full.as_str()).body(Vec::<u8>::new());
        for (k, v) in &signed.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        Ok((status, serde_json::from_slice::<ApiAnswer>(&body).ok()))
    }

    /// SendSms, once.
    pub async fn send(&self, msg: &SmsMessage) -> Result<Accepted, SendError> {
        let phone = normalize_cn_mobile(&msg.phone).map_err(|e| SendError::Permanent {
            provider: PROVIDER,
            code: "isv.MOBILE_NUMBER_ILLEGAL".into(),
            message: e,
        })?;
        let mut vars = serde_json::Map::new();
        for (k, v) in &msg.params {
            vars.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let params = vec![
            ("PhoneNumbers".to_string(), phone),
            ("SignName".to_string(), msg.sign_name.clone()),
            ("TemplateCode".to_string(), msg.template_code.clone()),
            ("TemplateParam".to_string(), serde_json::Value::Object(vars).to_string()),
            ("OutId".to_string(), msg.out_id.clone()),
        ];
        self.throttle.wait().await;
        let (status, answer) = self
            .call("SendSms", params)
            .await
            .map_err(|e| transport_error(PROVIDER, &e))?;
        match answer {
            Some(a) if a.code == "OK" => match a.biz_id {
                Some(biz_id) if !biz_id.is_empty() => Ok(Accepted {
                    message_id: biz_id,
                    request_id: a.request_id,
                }),
                _ => Err(SendError::Unknown {
                    provider: PROVIDER,
                    reason: "answer OK without a BizId".into(),
                }),
            },
            Some(a) => {
                let class = ErrorCode::parse(&a.code);
                if let ErrorCode::Other(code) = &class {
                    tracing::warn!(provider = PROVIDER, code = %code, "unlisted SMS error code; classed by prefix");
                }
                let err = match class.retry() {
                    Retry::Transient => SendError::Transient {
                        provider: PROVIDER,
                        code: a.code,
                        message: a.message,
                    },
                    Retry::Permanent => SendError::Permanent {
                        provider: PROVIDER,
                        code: a.code,
                        message: a.message,
                    },
                };
                Err(err)
            }
            None if status >= 500 => Err(SendError::Transient {
                provider: PROVIDER,
                code: format!("http.{status}"),
                message: "the provider answered with a server error".into(),
            }),
            None => Err(SendError::Unknown {
                provider: PROVIDER,
                reason: format!("HTTP {status} with a body that is not Dysmsapi JSON"),
            }),
        }
    }

    /// QuerySendDetails for the number on the (China) date of the attempt, matched on our
    /// `OutId` (and `BizId` when we have it).
    pub async fn query_status(&self, q: &StatusQuery<'_>) -> Result<Option<StatusRecord>, QueryError> {
        let err = |reason: String| QueryError {
            provider: PROVIDER,
            reason,
        };
        let phone = normalize_cn_mobile(q.phone).map_err(err)?;
        let mut params = vec![
            ("PhoneNumber".to_string(), phone),
            (
                "SendDate".to_string(),
                china_date(q.sent_at).format("%Y%m%d").to_string(),
            ),
            ("PageSize".to_string(), "50".to_string()),
            ("CurrentPage".to_string(), "1".to_string()),
        ];
        if let Some(id) = q.message_id {
            params.push(("BizId".to_string(), id.to_string()));
        }
        let (status, answer) = self
            .call("QuerySendDetails", params)
            .await
            .map_err(|e| err(e.to_string()))?;
        let a = answer.ok_or_else(|| err(format!("HTTP {status} with a body that is not Dysmsapi JSON")))?;
        if a.code != "OK" {
            return Err(err(format!("{}: {}", a.code, a.message)));
        }
        let items = a.details.map(|d| d.items).unwrap_or_default();
        let found = items.into_iter().find(|d| d.out_id == q.out_id);
        Ok(found.map(|d| StatusRecord {
            message_id: q.message_id.map(str::to_string),
            state: match d.send_status {
                3 => DeliveryState::Delivered,
                2 => DeliveryState::Failed {
                    code: if d.err_code.is_empty() {
                        "FAILED".into()
                    } else {
                        d.err_code.clone()
                    },
                },
                _ => DeliveryState::Pending,
            },
            description: Some(d.err_code).filter(|s| !s.is_empty()),
        }))
    }
}
