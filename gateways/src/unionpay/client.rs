//! The UnionPay client: one merchant (`merId`) at the online gateway, as a [`PaymentGateway`].

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tracing::Instrument;

use super::codes::RespCode;
use super::sign::{SigningIdentity, SigningKeyError};
use super::transformers::{self as wire, field, Fields, TokenPayData};
use super::verify::{verify_fields, TrustError, TrustStore, UnionPayEnvironment};
use crate::gateway::{
    Ack, Channel, CloseOutcome, CreateOrder, GatewayError, GatewayOrder, GatewayRefund, IncomingNotification,
    NotifyError, OrderRef, PayerAction, PaymentGateway, RefundRef, RefundRequest, VerifiedNotification,
};
use crate::outcome::{ErrorClass, PaymentState, RefundState, TransportError};
use crate::settlement::{SettlementError, SettlementFile};

/// The production online gateway (front, back and query endpoints live under `/gateway/api/`).
pub const PRODUCTION_GATEWAY_URL: &str = "https://gateway.95516.com";
/// The test environment's online gateway.
pub const TEST_GATEWAY_URL: &str = "https://gateway.test.95516.com";
/// The production file-transfer host.
pub const PRODUCTION_FILE_URL: &str = "https://filedownload.95516.com/";
/// The test environment's file-transfer host.
pub const TEST_FILE_URL: &str = "https://filedownload.test.95516.com/";

/// Our signing key, in the forms UnionPay hands it out or merchants convert it to.
#[derive(Clone)]
pub enum UnionPaySigningKey {
    /// The `.pfx` from UnionPay's certificate tool (DER bytes) and its password.
    Pkcs12 { pfx: Vec<u8>, password: String },
    /// A private key (PEM PKCS#1/PKCS#8, or DER/bare base64) and the certificate it belongs to
    /// (PEM or DER; a bundle is fine, the matching certificate is picked).
    Pem { private_key: Vec<u8>, certificate: Vec<u8> },
}

impl std::fmt::Debug for UnionPaySigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnionPaySigningKey::Pkcs12 { pfx, .. } => {
                write!(f, "Pkcs12 {{ pfx: <{} bytes>, password: <redacted> }}", pfx.len())
            }
            UnionPaySigningKey::Pem { .. } => f.write_str("Pem { private_key: <redacted>, certificate: .. }"),
        }
    }
}

/// Everything one UnionPay merchant needs.
#[derive(Debug, Clone)]
pub struct UnionPayConfig {
    /// `merId` (15 characters at the real gateway).
    pub merchant_id: String,
    pub signing_key: UnionPaySigningKey,
    /// UnionPay's root certificate (`acp_prod_root.cer` / `acp_test_root.cer`), DER or PEM.
    pub root_cert: Vec<u8>,
    /// UnionPay's middle certificate (`acp_prod_middle.cer` / `acp_test_middle.cer`), DER or PEM.
    pub middle_cert: Vec<u8>,
    /// Which signer CN is accepted (see [`UnionPayEnvironment`]).
    pub environment: UnionPayEnvironment,
    /// Base of the online gateway, without the `/gateway/api/…` path.
    pub gateway_url: String,
    /// The file-transfer URL (posted to as is).
    pub file_url: String,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl UnionPayConfig {
    /// Production defaults: UnionPay's production hosts, 30 s timeout, 10 s to connect.
    pub fn new(
        merchant_id: impl Into<String>,
        signing_key: UnionPaySigningKey,
        root_cert: Vec<u8>,
        middle_cert: Vec<u8>,
    ) -> Self {
        UnionPayConfig {
            merchant_id: merchant_id.into(),
            signing_key,
            root_cert,
            middle_cert,
            environment: UnionPayEnvironment::Production,
            gateway_url: PRODUCTION_GATEWAY_URL.into(),
            file_url: PRODUCTION_FILE_URL.into(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The same, pointed at UnionPay's test environment (`gateway.test.95516.com`).
    pub fn test_environment(self) -> Self {
        UnionPayConfig {
            environment: UnionPayEnvironment::Test,
            gateway_url: TEST_GATEWAY_URL.into(),
            file_url: TEST_FILE_URL.into(),
            ..self
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UnionPayConfigError {
    #[error("UnionPay merId {0:?} must be 1-15 letters or digits")]
    MerchantId(String),
    #[error("UnionPay signing key: {0}")]
    SigningKey(#[from] SigningKeyError),
    #[error("UnionPay root/middle certificates: {0}")]
    Trust(#[from] TrustError),
    #[error("UnionPay {which} URL {url:?} is not an http(s) URL")]
    Url { which: &'static str, url: String },
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
}

/// One merchant at UnionPay's online gateway 5.1.0.
#[derive(Debug, Clone)]
pub struct UnionPayClient {
    merchant_id: String,
    identity: SigningIdentity,
    trust: TrustStore,
    gateway_url: String,
    file_url: String,
    http: reqwest::Client,
}

/// What a back consume's answer said (respCode 00: accepted; the result comes by notification or
/// query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackConsumeAccepted {
    pub order_no: String,
    /// UnionPay's queryId, when the answer carries one already.
    pub gateway_txn_id: Option<String>,
}

impl UnionPayClient {
    pub fn new(config: UnionPayConfig) -> Result<Self, UnionPayConfigError> {
        let m = &config.merchant_id;
        if m.is_empty() || m.len() > 15 || !m.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(UnionPayConfigError::MerchantId(m.clone()));
        }
        for (which, url) in [("gateway", &config.gateway_url), ("file", &config.file_url)] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(UnionPayConfigError::Url {
                    which,
                    url: url.clone(),
                });
            }
        }
        let identity = match &config.signing_key {
            UnionPaySigningKey::Pkcs12 { pfx, password } => SigningIdentity::from_pkcs12(pfx, password)?,
            UnionPaySigningKey::Pem {
                private_key,
                certificate,
            } => SigningIdentity::from_pem(private_key, certificate)?,
        };
        let trust = TrustStore::new(&config.root_cert, &config.middle_cert, config.environment)?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| UnionPayConfigError::Http(e.to_string()))?;
        Ok(UnionPayClient {
            merchant_id: config.merchant_id,
            identity,
            trust,
            gateway_url: config.gateway_url.trim_end_matches('/').to_string(),
            file_url: config.file_url,
            http,
        })
    }

    /// Our `certId` (the signing certificate's decimal serial).
    pub fn cert_id(&self) -> &str {
        self.identity.cert_id()
    }

    /// The trust anchors answers and notifications are verified against.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{}/gateway/api/{endpoint}", self.gateway_url)
    }

    /// The signed front consume as the auto-submitting form the payer's browser posts to
    /// `frontTransReq.do` (no request leaves the service).
    pub fn front_consume_form(&self, req: &CreateOrder) -> Result<PayerAction, GatewayError> {
        let mut fields = wire::front_consume(&self.merchant_id, req)?;
        self.identity.sign_request(&mut fields);
        Ok(PayerAction::Form {
            action: self.url("frontTransReq.do"),
            fields,
        })
    }

    /// The back consume with a token the payer opened earlier (bizType 000902). respCode 00 means
    /// accepted: the result comes by notification, or by [`PaymentGateway::query_order`].
    pub async fn back_consume(
        &self,
        req: &CreateOrder,
        token: &TokenPayData,
    ) -> Result<BackConsumeAccepted, GatewayError> {
        let fields = wire::back_consume(&self.merchant_id, req, token)?;
        let answer = self.call(&self.url("backTransReq.do"), fields, "back consume").await?;
        let code = RespCode::parse(field(&answer, "respCode").unwrap_or(""));
        match code {
            RespCode::Success => {}
            // In progress or unknown: the same as accepted, the query tells.
            RespCode::Timeout | RespCode::StatusUnknown | RespCode::InProgress => {}
            other => return Err(refused(&answer, other)),
        }
        self.check_echo(&answer, "orderId", &req.order_no)?;
        Ok(BackConsumeAccepted {
            order_no: req.order_no.clone(),
            gateway_txn_id: field(&answer, "queryId").filter(|s| !s.is_empty()).map(str::to_string),
        })
    }

    /// Sign `fields`, POST them, and return the answer's fields once its signature and
    /// `signPubKeyCert` chain verify. An unsigned or badly signed answer is never acted on.
    async fn call(&self, url: &str, mut fields: Fields, what: &str) -> Result<Fields, GatewayError> {
        self.identity.sign_request(&mut fields);
        let body = wire::write_form(&fields);
        let order = field(&fields, "orderId").unwrap_or("-").to_string();
        let span = tracing::info_span!("unionpay", operation = what, order_no = %order, mer_id = %self.merchant_id);
        self.exchange(url, body, what).instrument(span).await
    }

    async fn exchange(&self, url: &str, body: String, what: &str) -> Result<Fields, GatewayError> {
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded;charset=UTF-8")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    TransportError::Timeout { url: url.to_string() }
                } else {
                    TransportError::Network {
                        url: url.to_string(),
                        detail: e.to_string(),
                    }
                }
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| TransportError::Network {
            url: url.to_string(),
            detail: format!("reading the answer: {e}"),
        })?;
        if status != 200 {
            let body: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            tracing::warn!(status, "UnionPay answered {what} with HTTP {status}");
            return Err(TransportError::Status {
                url: url.to_string(),
                status,
                body,
            }
            .into());
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| GatewayError::Protocol(format!("the {what} answer is not UTF-8")))?;
        let answer = wire::parse_answer(text.trim_end_matches(['\r', '\n']))
            .map_err(|e| GatewayError::Protocol(format!("the {what} answer is not key=value&…: {e}")))?;
        verify_fields(&self.trust, &answer, Utc::now()).map_err(|e| {
            let code = field(&answer, "respCode").unwrap_or("?");
            tracing::warn!(error = %e, resp_code = code, "UnionPay {what} answer did not verify");
            GatewayError::Unverified(format!("{what} answer (respCode {code}): {e}"))
        })?;
        if let Some(m) = field(&answer, "merId").filter(|m| !m.is_empty()) {
            if m != self.merchant_id {
                return Err(GatewayError::Protocol(format!(
                    "the {what} answer is for merId {m}, not {}",
                    self.merchant_id
                )));
            }
        }
        Ok(answer)
    }

    fn check_echo(&self, answer: &[(String, String)], name: &str, expected: &str) -> Result<(), GatewayError> {
        match field(answer, name) {
            Some(v) if !v.is_empty() && v != expected => Err(GatewayError::Protocol(format!(
                "the answer's {name} is {v:?}, but we asked about {expected:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// Query a transaction by orderId + txnTime: `Ok(None)` when UnionPay has none (respCode 34).
    async fn query(&self, order_id: &str, txn_time: DateTime<Utc>) -> Result<Option<wire::QueriedTxn>, GatewayError> {
        let fields = wire::query(&self.merchant_id, order_id, txn_time)?;
        let answer = self.call(&self.url("queryTrans.do"), fields, "query").await?;
        match RespCode::parse(field(&answer, "respCode").unwrap_or("")) {
            RespCode::Success => {}
            RespCode::NoSuchTransaction => return Ok(None),
            other => return Err(refused(&answer, other)),
        }
        self.check_echo(&answer, "orderId", order_id)?;
        let txn = wire::queried_txn(&answer).map_err(GatewayError::Protocol)?;
        Ok(Some(txn))
    }

    /// Verify a back notification with a given trust store (what
    /// [`super::inspect_notification`] and [`PaymentGateway::verify_notification`] share).
    pub fn verify_with(
        trust: &TrustStore,
        notification: IncomingNotification<'_>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedNotification, NotifyError> {
        let fields = wire::parse_form(notification.body)
            .map_err(|e| NotifyError::Malformed(format!("the body is not a form: {e}")))?;
        verify_fields(trust, &fields, now)?;
        let (event, merchant_id, event_id) = wire::notification_event(&fields)?;
        Ok(VerifiedNotification {
            event,
            merchant_id,
            event_id,
            fields: wire::fields_json(&fields),
        })
    }
}

/// A refusal, with the answer's respCode and respMsg and the code's class.
fn refused(answer: &[(String, String)], code: RespCode) -> GatewayError {
    GatewayError::Refused {
        message: field(answer, "respMsg").unwrap_or("").to_string(),
        class: code.class(),
        code: code.as_str().to_string(),
    }
}

#[async_trait::async_trait]
impl PaymentGateway for UnionPayClient {
    fn channel(&self) -> Channel {
        Channel::Unionpay
    }

    fn merchant_id(&self) -> &str {
        &self.merchant_id
    }

    /// Web, H5 (WAP) and QR all become the front consume form (`channelType` 07, or 08 for H5):
    /// this gateway has no QR code of its own. JSAPI is refused. The order's subject is not sent
    /// (gateway payment has no required description field).
    async fn create_order(&self, req: &CreateOrder) -> Result<PayerAction, GatewayError> {
        self.front_consume_form(req)
    }

    async fn query_order(&self, order: &OrderRef) -> Result<GatewayOrder, GatewayError> {
        let Some(txn) = self.query(&order.order_no, order.created_at).await? else {
            return Ok(GatewayOrder {
                order_no: order.order_no.clone(),
                state: PaymentState::NotFound,
                gateway_txn_id: None,
                amount_fen: None,
                paid_at: None,
                merchant_id: None,
            });
        };
        let state = txn.orig_resp_code.payment_state();
        if txn.orig_resp_code == RespCode::SuccessWithDefect {
            tracing::warn!(order_no = %order.order_no, "UnionPay reports the payment successful with a defect (A6)");
        }
        let paid = state == PaymentState::Paid;
        Ok(GatewayOrder {
            order_no: order.order_no.clone(),
            state,
            gateway_txn_id: txn.query_id,
            amount_fen: if paid { txn.amount_fen } else { None },
            paid_at: if paid { txn.completed_at } else { None },
            merchant_id: txn.mer_id,
        })
    }

    /// UnionPay has no close for unpaid orders: an unpaid consume simply stops being payable at
    /// its `payTimeout` (which we set to the order's `expires_at`). So this queries and answers
    /// from that; call it once the order has expired:
    ///
    /// - no such transaction (34): `NothingToClose` — the payer never submitted the form;
    /// - paid (`00`, `A6`): `AlreadyPaid`;
    /// - still in progress (`03`/`04`/`05`…): a `Refused` error of class `Retry` — ask again
    ///   later, the gateway has not decided;
    /// - failed (any other code): `Closed` — nothing can land on it any more.
    async fn close_order(&self, order: &OrderRef) -> Result<CloseOutcome, GatewayError> {
        let Some(txn) = self.query(&order.order_no, order.created_at).await? else {
            return Ok(CloseOutcome::NothingToClose);
        };
        match txn.orig_resp_code.payment_state() {
            PaymentState::Paid => Ok(CloseOutcome::AlreadyPaid),
            PaymentState::Pending => Err(GatewayError::Refused {
                code: txn.orig_resp_code.as_str().to_string(),
                message: format!(
                    "UnionPay has no close; the order is still in progress there ({}): query again later",
                    txn.orig_resp_msg
                ),
                class: ErrorClass::Retry,
            }),
            PaymentState::Failed | PaymentState::Closed | PaymentState::Refunded | PaymentState::NotFound => {
                Ok(CloseOutcome::Closed)
            }
        }
    }

    /// Refund (txnType 04) with its own orderId (the refund number) and txnTime (`requested_at`).
    /// UnionPay answers "accepted"; the result arrives by notification (or `query_refund`), so a
    /// successful call returns `Processing`. A repeat of the same refund number is refused with
    /// `12` (class `AlreadyDone`): query it.
    async fn refund(&self, req: &RefundRequest) -> Result<GatewayRefund, GatewayError> {
        let fields = wire::refund(&self.merchant_id, req)?;
        let answer = self.call(&self.url("backTransReq.do"), fields, "refund").await?;
        match RespCode::parse(field(&answer, "respCode").unwrap_or("")) {
            RespCode::Success | RespCode::Timeout | RespCode::StatusUnknown | RespCode::InProgress => {}
            other => return Err(refused(&answer, other)),
        }
        self.check_echo(&answer, "orderId", &req.refund_no)?;
        Ok(GatewayRefund {
            order_no: req.order_no.clone(),
            refund_no: req.refund_no.clone(),
            state: RefundState::Processing,
            gateway_refund_id: field(&answer, "queryId").filter(|s| !s.is_empty()).map(str::to_string),
            amount_fen: Some(req.refund_fen),
            refunded_at: None,
        })
    }

    /// Query the refund as the transaction it is (its orderId + txnTime). UnionPay not knowing it
    /// is `Refused` 34 (class `Failure`): the refund request never arrived.
    async fn query_refund(&self, refund: &RefundRef) -> Result<GatewayRefund, GatewayError> {
        let Some(txn) = self.query(&refund.refund_no, refund.requested_at).await? else {
            return Err(GatewayError::Refused {
                code: "34".into(),
                message: format!("UnionPay has no refund {}", refund.refund_no),
                class: ErrorClass::Failure,
            });
        };
        let state = txn.orig_resp_code.refund_state();
        Ok(GatewayRefund {
            order_no: refund.order_no.clone(),
            refund_no: refund.refund_no.clone(),
            state,
            gateway_refund_id: txn.query_id,
            amount_fen: txn.amount_fen,
            refunded_at: if state == RefundState::Succeeded {
                txn.completed_at
            } else {
                None
            },
        })
    }

    /// UnionPay notifications carry no timestamp to bound: `now` is the moment the signer's
    /// certificate chain must be valid at.
    fn verify_notification(
        &self,
        notification: IncomingNotification<'_>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedNotification, NotifyError> {
        Self::verify_with(&self.trust, notification, now)
    }

    /// Any HTTP 200 tells UnionPay the notification arrived; anything else makes it deliver
    /// again.
    fn ack(&self, accepted: bool) -> Ack {
        if accepted {
            Ack {
                status: 200,
                content_type: Some("text/plain"),
                body: b"ok".to_vec(),
            }
        } else {
            Ack {
                status: 500,
                content_type: Some("text/plain"),
                body: b"not stored; deliver again".to_vec(),
            }
        }
    }

    /// The file transfer (txnType 76, fileType 00) of the clearing day `day` (settleDate = its
    /// MMDD). Returns `fileContent` exactly as delivered (base64 of the zlib-deflated zip), which
    /// [`super::settlement::parse`] takes. `98` (file not there yet) is `Refused` with class
    /// `Retry`.
    async fn download_settlement(&self, day: NaiveDate) -> Result<Vec<u8>, GatewayError> {
        let fields = wire::file_transfer(&self.merchant_id, day, Utc::now());
        let answer = self.call(&self.file_url, fields, "file transfer").await?;
        match RespCode::parse(field(&answer, "respCode").unwrap_or("")) {
            RespCode::Success => {}
            RespCode::FileNotFound => {
                return Err(GatewayError::Refused {
                    code: "98".into(),
                    message: format!(
                        "{} (the file for {day} is not there yet: retry later)",
                        field(&answer, "respMsg").unwrap_or("")
                    ),
                    class: ErrorClass::Retry,
                })
            }
            other => return Err(refused(&answer, other)),
        }
        let content = field(&answer, "fileContent")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GatewayError::Protocol("the file transfer answer has no fileContent".into()))?;
        Ok(content.as_bytes().to_vec())
    }

    fn parse_settlement(&self, bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
        super::settlement::parse(bytes)
    }
}
