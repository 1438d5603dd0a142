//! Tencent Cloud SMS (API 3.0, version 2021-01-11): SendSms and the delivery-status query
//! PullSmsSendStatusByPhoneNumber, signed with TC3-HMAC-SHA256.
//!
//! Request-level failures come back as `Response.Error` (HTTP 200); per-number results are in
//! `Response.SendStatusSet[]`, each with its own `Code` (`"Ok"` on success) — both are checked.
//! The body is serialised once and those exact bytes are signed and sent, with the
//! `Content-Type` set by us to the signed value.
//!
//! Status: PullSmsSendStatusByPhoneNumber returns delivery reports for one number in a time
//! window; ours are recognised by `SessionContext` (the outbox id). A message the platform took
//! but whose report has not arrived is not listed yet: the caller keeps the attempt open until
//! its settle window passes (see `dunning::outbox`).

pub mod sign;
pub mod transformers;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use self::transformers::{Envelope, ErrorCode, PullByPhoneRequest, SendSmsRequest};
use super::{
    normalize_cn_mobile, transport_error, Accepted, DeliveryState, QueryError, Retry, SendError, SmsMessage,
    StatusQuery, StatusRecord, Throttle,
};

const PROVIDER: &str = "tencent";
pub const API_VERSION: &str = "2021-01-11";
pub const SERVICE: &str = "sms";
pub const DEFAULT_ENDPOINT: &str = "https://sms.tencentcloudapi.com/";

#[derive(Debug, Clone)]
pub struct TencentConfig {
    /// `https://sms.tencentcloudapi.com/`, or the sandbox's `http://127.0.0.1:PORT/tencent/`.
    pub endpoint: String,
    pub secret_id: String,
    pub secret_key: SecretString,
    /// e.g. `ap-guangzhou`.
    pub region: String,
    /// The SMS application id from the console, e.g. `1400006666`.
    pub sms_sdk_app_id: String,
    pub timeout: Duration,
    pub rate_per_sec: u32,
}

#[derive(Debug, Clone)]
pub struct TencentClient {
    http: reqwest::Client,
    cfg: Arc<TencentConfig>,
    throttle: Throttle,
}

impl TencentClient {
    pub fn new(cfg: TencentConfig) -> Result<TencentClient, String> {
        url::Url::parse(&cfg.endpoint).map_err(|e| format!("sms tencent endpoint {:?}: {e}", cfg.endpoint))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("building the Tencent Cloud HTTP client: {e}"))?;
        Ok(TencentClient {
            http,
            throttle: Throttle::per_second(cfg.rate_per_sec),
            cfg: Arc::new(cfg),
        })
    }

    async fn call(&self, action: &str, body: Vec<u8>) -> Result<(u16, Option<Envelope>), reqwest::Error> {
        let url = url::Url::parse(&self.cfg.endpoint).expect("checked in new");
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let timestamp = Utc::now().timestamp();
        let req = sign::Tc3Request {
            method: "POST",
            host: &host,
            query: "",
            content_type: sign::CONTENT_TYPE,
            action,
            sign_action: true,
            timestamp,
            service: SERVICE,
            body: &body,
        };
        let signed = sign::sign(&self.cfg.secret_id, self.cfg.secret_key.expose_secret(), &req);
        let resp = self
            .http
            .post(url.as_str())
            .header("authorization", signed.authorization)
            .header("content-type", sign::CONTENT_TYPE)
            .header("host", host.as_str())
            .header("x-tc-action", action)
            .header("x-tc-timestamp", timestamp.to_string())
            .header("x-tc-version", API_VERSION)
            .header("x-tc-region", self.cfg.region.as_str())
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice::<Envelope>(&bytes).ok()))
    }

    fn classify(code: String, message: String) -> SendError {
        let class = ErrorCode::parse(&code);
        if let ErrorCode::Other(c) = &class {
            tracing::warn!(provider = PROVIDER, code = %c, "unlisted SMS error code; classed by family");
        }
        match class.retry() {
            Retry::Transient => SendError::Transient {
                provider: PROVIDER,
                code,
                message,
            },
            Retry::Permanent => SendError::Permanent {
                provider: PROVIDER,
                code,
                message,
            },
        }
    }

    /// SendSms to one number, once.
    pub async fn send(&self, msg: &SmsMessage) -> Result<Accepted, SendError> {
        let phone = normalize_cn_mobile(&msg.phone).map_err(|e| SendError::Permanent {
            provider: PROVIDER,
            code: "InvalidParameterValue.IncorrectPhoneNumber".into(),
            message: e,
        })?;
        let body = SendSmsRequest {
            phone_number_set: vec![format!("+86{phone}")],
            sms_sdk_app_id: self.cfg.sms_sdk_app_id.clone(),
            template_id: msg.template_code.clone(),
            sign_name: msg.sign_name.clone(),
            template_param_set: msg.params.iter().map(|(_, v)| v.clone()).collect(),
            session_context: Some(msg.out_id.clone()),
        };
        let bytes = serde_json::to_vec(&body).expect("serialising a SendSms body");
        self.throttle.wait().await;
        let (status, env) = self
            .call("SendSms", bytes)
            .await
            .map_err(|e| transport_error(PROVIDER, &e))?;
        let Some(env) = env else {
            return Err(if status >= 500 {
                SendError::Transient {
                    provider: PROVIDER,
                    code: format!("http.{status}"),
                    message: "the provider answered with a server error".into(),
                }
            } else {
                SendError::Unknown {
                    provider: PROVIDER,
                    reason: format!("HTTP {status} with a body that is not an API 3.0 answer"),
                }
            });
        };
        let r = env.response;
        if let Some(e) = r.error {
            return Err(Self::classify(e.code, e.message));
        }
        let Some(item) = r.send_status_set.and_then(|s| s.into_iter().next()) else {
            return Err(SendError::Unknown {
                provider: PROVIDER,
                reason: "answer without a SendStatusSet entry".into(),
            });
        };
        if item.code == "Ok" {
            Ok(Accepted {
                message_id: item.serial_no,
                request_id: Some(r.request_id),
            })
        } else {
            Err(Self::classify(item.code, item.message))
        }
    }

    /// Delivery reports for the number from shortly before the attempt until now, matched on
    /// `SessionContext` (or `SerialNo` when known).
    pub async fn query_status(&self, q: &StatusQuery<'_>) -> Result<Option<StatusRecord>, QueryError> {
        let err = |reason: String| QueryError {
            provider: PROVIDER,
            reason,
        };
        let phone = normalize_cn_mobile(q.phone).map_err(err)?;
        let body = PullByPhoneRequest {
            begin_time: q.sent_at.timestamp() - 300,
            offset: 0,
            limit: 100,
            phone_number: format!("+86{phone}"),
            sms_sdk_app_id: self.cfg.sms_sdk_app_id.clone(),
            end_time: Some(Utc::now().timestamp().max(q.sent_at.timestamp()) + 300),
        };
        let bytes = serde_json::to_vec(&body).expect("serialising a status query");
        let (status, env) = self
            .call("PullSmsSendStatusByPhoneNumber", bytes)
            .await
            .map_err(|e| err(e.to_string()))?;
        let env = env.ok_or_else(|| err(format!("HTTP {status} with a body that is not an API 3.0 answer")))?;
        if let Some(e) = env.response.error {
            return Err(err(format!("{}: {}", e.code, e.message)));
        }
        let found = env
            .response
            .pull_status_set
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.session_context == q.out_id || q.message_id.is_some_and(|id| id == s.serial_no));
        Ok(found.map(|s| StatusRecord {
            message_id: Some(s.serial_no),
            state: if s.report_status == "SUCCESS" {
                DeliveryState::Delivered
            } else {
                DeliveryState::Failed {
                    code: s.description.clone(),
                }
            },
            description: Some(s.description),
        }))
    }
}
