//! [`AlipayClient`]: one Alipay app as a [`PaymentGateway`].
//!
//! Every call is built the same way: `biz_content` serialised once; the common parameters
//! (with `charset` — always in the URL query, see the module docs) plus `biz_content` signed;
//! the common parameters and `sign` sent in the URL query, `biz_content` in the form body. Every
//! answer is cut out of the raw bytes and verified before anything in it is believed.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::gateway::{
    is_valid_order_no, Ack, Channel, CloseOutcome, CreateOrder, GatewayError, GatewayOrder, GatewayRefund,
    IncomingNotification, NotifyError, OrderRef, PayMethod, PayerAction, PaymentGateway, RefundRef, RefundRequest,
    VerifiedNotification,
};
use crate::outcome::{ErrorClass, PaymentState, RefundState, TransportError};
use crate::settlement::{SettlementError, SettlementFile};

use super::signature::{form_encode, sign_request, split_response, verify_response, RawResponse, SIGN_TYPE};
use super::transformers::{
    amount_from_wire, amount_to_wire, beijing_time, classify, parse_beijing_time, BillUrlBiz, BillUrlResponse,
    BrowserPayBiz, CloseResponse, Code, Common, PrecreateBiz, PrecreateResponse, QueryResponse, RefundBiz,
    RefundQueryBiz, RefundQueryResponse, RefundResponse, RefundStatus, SubCode, TradeRefBiz, TradeStatus, CODE_SUCCESS,
    PRODUCT_PAGE, PRODUCT_WAP,
};
use super::{notify, settlement, AlipayConfig, AlipayKey};

pub const METHOD_PRECREATE: &str = "alipay.trade.precreate";
pub const METHOD_PAGE_PAY: &str = "alipay.trade.page.pay";
pub const METHOD_WAP_PAY: &str = "alipay.trade.wap.pay";
pub const METHOD_QUERY: &str = "alipay.trade.query";
pub const METHOD_CLOSE: &str = "alipay.trade.close";
pub const METHOD_REFUND: &str = "alipay.trade.refund";
pub const METHOD_REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
pub const METHOD_BILL_URL: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// The parameters that travel in the URL query (everything but `biz_content`).
const QUERY_PARAMS: [&str; 13] = [
    "app_id",
    "method",
    "format",
    "charset",
    "sign_type",
    "sign",
    "timestamp",
    "version",
    "notify_url",
    "return_url",
    "app_auth_token",
    "app_cert_sn",
    "alipay_root_cert_sn",
];

/// One Alipay app. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlipayClient {
    config: Arc<AlipayConfig>,
    http: reqwest::Client,
}

/// A refusal from Alipay, with whether its answer was signed.
#[derive(Debug)]
struct Refusal {
    common: Common,
    code: Code,
    sub: Option<SubCode>,
    /// Unsigned refusals inform retry decisions only; nothing is concluded from them.
    signed: bool,
}

impl Refusal {
    fn is(&self, sub: &SubCode) -> bool {
        self.signed && self.sub.as_ref() == Some(sub)
    }

    fn into_error(self, doing: &str) -> GatewayError {
        let class = classify(&self.code, self.sub.as_ref());
        let code = match &self.sub {
            Some(s) => s.as_str().to_string(),
            None => self.common.code.clone(),
        };
        let mut message = format!("{doing}: {} {}", self.common.code, self.common.msg);
        if let Some(m) = &self.common.sub_msg {
            message.push_str(&format!(" ({m})"));
        }
        if !self.signed {
            message.push_str(" [unsigned answer]");
        }
        GatewayError::Refused { code, message, class }
    }
}

enum Answer<T> {
    Ok(T),
    Refused(Refusal),
}

impl AlipayClient {
    pub fn new(config: AlipayConfig) -> Result<AlipayClient, GatewayError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| GatewayError::Invalid(format!("building the HTTP client for Alipay: {e}")))?;
        Ok(AlipayClient {
            config: Arc::new(config),
            http,
        })
    }

    pub fn config(&self) -> &AlipayConfig {
        &self.config
    }

    /// Every parameter of a call, signed: the common parameters, `biz_content` (exactly the
    /// string given) and `sign`. `now` becomes `timestamp` (Beijing time).
    pub fn signed_params(
        &self,
        method: &str,
        biz_content: &str,
        notify_url: Option<&str>,
        return_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = vec![
            ("app_id".into(), self.config.app_id.clone()),
            ("method".into(), method.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), SIGN_TYPE.into()),
            ("timestamp".into(), beijing_time(now)),
            ("version".into(), "1.0".into()),
        ];
        if let Some(u) = notify_url {
            p.push(("notify_url".into(), u.into()));
        }
        if let Some(u) = return_url {
            p.push(("return_url".into(), u.into()));
        }
        if let AlipayKey::Certificate(c) = &self.config.alipay_key {
            p.push(("app_cert_sn".into(), c.app_cert_sn.clone()));
            p.push(("alipay_root_cert_sn".into(), c.alipay_root_cert_sn.clone()));
        }
        p.push(("biz_content".into(), biz_content.into()));
        let sign = sign_request(&p, &self.config.app_private_key);
        p.push(("sign".into(), sign));
        p
    }

    fn url_with(&self, params: &[(String, String)], only_query_params: bool) -> String {
        let query: Vec<String> = params
            .iter()
            .filter(|(k, _)| !only_query_params || QUERY_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| format!("{}={}", form_encode(k.as_bytes()), form_encode(v.as_bytes())))
            .collect();
        let sep = if self.config.gateway_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{}{}", self.config.gateway_url, sep, query.join("&"))
    }

    /// The signed URL a browser opens for `alipay.trade.page.pay` / `alipay.trade.wap.pay`
    /// (every parameter in the query; no server call).
    pub fn browser_url(
        &self,
        method: &str,
        biz_content: &str,
        notify_url: Option<&str>,
        return_url: Option<&str>,
        now: DateTime<Utc>,
    ) -> String {
        let params = self.signed_params(method, biz_content, notify_url, return_url, now);
        self.url_with(&params, false)
    }

    /// POST one call and read its verified answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        biz: &impl Serialize,
        notify_url: Option<&str>,
    ) -> Result<Answer<T>, GatewayError> {
        let biz_content = serde_json::to_string(biz)
            .map_err(|e| GatewayError::Invalid(format!("serialising biz_content for {method}: {e}")))?;
        let params = self.signed_params(method, &biz_content, notify_url, None, Utc::now());
        let url = self.url_with(&params, true);
        let body = format!("biz_content={}", form_encode(biz_content.as_bytes()));
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded;charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&self.config.gateway_url, method, e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport(&self.config.gateway_url, method, e))?;
        tracing::debug!(method, status, elapsed_ms = started.elapsed().as_millis() as u64, app_id = %self.config.app_id, "alipay call");
        if status >= 500 {
            return Err(GatewayError::Transport(TransportError::Status {
                url: self.config.gateway_url.clone(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            }));
        }
        if !(200..300).contains(&status) {
            return Err(GatewayError::Protocol(format!(
                "{method}: Alipay answered HTTP {status}"
            )));
        }
        self.read_answer(method, &bytes)
    }

    /// Verify and read an answer's bytes (exposed for tests through [`Self::read_answer_value`]).
    fn read_answer<T: DeserializeOwned>(&self, method: &str, bytes: &[u8]) -> Result<Answer<T>, GatewayError> {
        let raw = split_response(bytes, method)
            .map_err(|e| GatewayError::Protocol(format!("{method}: the answer could not be read: {e}")))?;
        let signed = self.check_signature(method, &raw)?;
        let common: Common = serde_json::from_slice(raw.node).map_err(|e| {
            GatewayError::Protocol(format!("{method}: the answer's {} is not readable: {e}", raw.node_key))
        })?;
        if common.code == CODE_SUCCESS {
            if !signed {
                return Err(GatewayError::Unverified(format!(
                    "{method}: a success answer without a signature is not trusted"
                )));
            }
            let value: T = serde_json::from_slice(raw.node)
                .map_err(|e| GatewayError::Protocol(format!("{method}: the answer's fields are not readable: {e}")))?;
            return Ok(Answer::Ok(value));
        }
        Ok(Answer::Refused(Refusal {
            code: Code::parse(&common.code),
            sub: common.sub_code.as_deref().map(SubCode::parse),
            common,
            signed,
        }))
    }

    /// Verify an answer as this client would, returning the node's fields as JSON (or the
    /// refusal as an error). For tests and operator tools holding a captured answer.
    pub fn read_answer_value(&self, method: &str, bytes: &[u8]) -> Result<serde_json::Value, GatewayError> {
        match self.read_answer::<serde_json::Value>(method, bytes)? {
            Answer::Ok(v) => Ok(v),
            Answer::Refused(r) => Err(r.into_error(method)),
        }
    }

    /// `Ok(true)` when signed and verified, `Ok(false)` when unsigned.
    fn check_signature(&self, method: &str, raw: &RawResponse<'_>) -> Result<bool, GatewayError> {
        if raw.sign.is_none() {
            return Ok(false);
        }
        if let (AlipayKey::Certificate(c), Some(sn)) = (&self.config.alipay_key, raw.alipay_cert_sn.as_deref()) {
            if sn != c.alipay_cert_sn {
                return Err(GatewayError::Unverified(format!(
                    "{method}: the answer is signed with Alipay certificate {sn}, but we hold {}; download the new alipayCertPublicKey_RSA2.crt before trusting it",
                    c.alipay_cert_sn
                )));
            }
        }
        verify_response(raw, self.config.alipay_public_key())
            .map_err(|e| GatewayError::Unverified(format!("{method}: {e} (over the raw {} text)", raw.node_key)))?;
        Ok(true)
    }

    fn check_order_no(no: &str, what: &str) -> Result<(), GatewayError> {
        if is_valid_order_no(no) {
            Ok(())
        } else {
            Err(GatewayError::Invalid(format!(
                "{what} {no:?} is not 8 to 32 letters and digits"
            )))
        }
    }

    fn check_subject(subject: &str) -> Result<(), GatewayError> {
        if subject.trim().is_empty() || subject.chars().count() > 256 {
            return Err(GatewayError::Invalid("the subject must be 1 to 256 characters".into()));
        }
        if subject.contains(['/', '=', '&']) {
            return Err(GatewayError::Invalid(format!(
                "the subject {subject:?} contains one of / = &, which Alipay refuses in subjects"
            )));
        }
        Ok(())
    }
}

fn transport(url: &str, method: &str, e: reqwest::Error) -> GatewayError {
    if e.is_timeout() {
        GatewayError::Transport(TransportError::Timeout { url: url.to_string() })
    } else {
        GatewayError::Transport(TransportError::Network {
            url: url.to_string(),
            detail: format!("{method}: {e}"),
        })
    }
}

fn wire_amount(field: &str, text: Option<&str>) -> Result<i64, GatewayError> {
    let text = text.ok_or_else(|| GatewayError::Protocol(format!("the answer has no {field}")))?;
    amount_from_wire(text).map_err(|e| GatewayError::Protocol(format!("{field}: {e}")))
}

fn wire_time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, GatewayError> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => parse_beijing_time(t.split_once('.').map_or(t, |(w, _)| w))
            .map(Some)
            .ok_or_else(|| GatewayError::Protocol(format!("{field} {t:?} is not yyyy-MM-dd HH:mm:ss"))),
    }
}

fn same_order(asked: &str, answered: Option<&str>) -> Result<(), GatewayError> {
    match answered {
        Some(a) if a != asked => Err(GatewayError::Protocol(format!(
            "asked about order {asked} but the answer is about {a}"
        ))),
        _ => Ok(()),
    }
}

#[async_trait]
impl PaymentGateway for AlipayClient {
    fn channel(&self) -> Channel {
        Channel::Alipay
    }

    fn merchant_id(&self) -> &str {
        &self.config.app_id
    }

    async fn create_order(&self, req: &CreateOrder) -> Result<PayerAction, GatewayError> {
        Self::check_order_no(&req.order_no, "order number")?;
        Self::check_subject(&req.subject)?;
        let total_amount = amount_to_wire(req.amount_fen).map_err(GatewayError::Invalid)?;
        let time_expire = Some(beijing_time(req.expires_at));
        match req.method {
            PayMethod::Qr => {
                let biz = PrecreateBiz {
                    out_trade_no: req.order_no.clone(),
                    total_amount,
                    subject: req.subject.clone(),
                    time_expire,
                };
                match self
                    .call::<PrecreateResponse>(METHOD_PRECREATE, &biz, Some(&req.notify_url))
                    .await?
                {
                    Answer::Ok(r) => {
                        same_order(&req.order_no, r.out_trade_no.as_deref())?;
                        let content = r
                            .qr_code
                            .filter(|q| !q.is_empty())
                            .ok_or_else(|| GatewayError::Protocol("precreate answered without a qr_code".into()))?;
                        Ok(PayerAction::QrCode { content })
                    }
                    Answer::Refused(r) => Err(r.into_error("creating the QR payment")),
                }
            }
            PayMethod::H5 | PayMethod::Web => {
                let (method, product_code) = match req.method {
                    PayMethod::H5 => (METHOD_WAP_PAY, PRODUCT_WAP),
                    _ => (METHOD_PAGE_PAY, PRODUCT_PAGE),
                };
                let biz = BrowserPayBiz {
                    out_trade_no: req.order_no.clone(),
                    total_amount,
                    subject: req.subject.clone(),
                    product_code: product_code.into(),
                    time_expire,
                    quit_url: (req.method == PayMethod::H5).then(|| req.return_url.clone()).flatten(),
                };
                let biz_content = serde_json::to_string(&biz)
                    .map_err(|e| GatewayError::Invalid(format!("serialising biz_content: {e}")))?;
                let url = self.browser_url(
                    method,
                    &biz_content,
                    Some(&req.notify_url),
                    req.return_url.as_deref(),
                    Utc::now(),
                );
                Ok(PayerAction::Redirect { url })
            }
            PayMethod::Jsapi => Err(GatewayError::Invalid(
                "Alipay has no JSAPI payment; use the QR, H5 or web method".into(),
            )),
        }
    }

    async fn query_order(&self, order: &OrderRef) -> Result<GatewayOrder, GatewayError> {
        let biz = TradeRefBiz {
            out_trade_no: order.order_no.clone(),
        };
        match self.call::<QueryResponse>(METHOD_QUERY, &biz, None).await? {
            Answer::Ok(r) => {
                same_order(&order.order_no, r.out_trade_no.as_deref())?;
                let status_text = r.trade_status.as_deref().unwrap_or_default();
                let status = TradeStatus::parse(status_text)
                    .ok_or_else(|| GatewayError::Protocol(format!("unknown trade_status {status_text:?}")))?;
                let paid_at = wire_time("send_pay_date", r.send_pay_date.as_deref())?;
                let state = status.payment_state(paid_at.is_some());
                let amount_fen = match state {
                    PaymentState::Paid | PaymentState::Refunded => {
                        Some(wire_amount("total_amount", r.total_amount.as_deref())?)
                    }
                    _ => None,
                };
                Ok(GatewayOrder {
                    order_no: order.order_no.clone(),
                    state,
                    gateway_txn_id: r.trade_no.filter(|t| !t.is_empty()),
                    amount_fen,
                    paid_at,
                    merchant_id: None,
                })
            }
            // Before the payer scans (or opens the cashier) Alipay has no trade.
            Answer::Refused(r) if r.is(&SubCode::TradeNotExist) => Ok(GatewayOrder {
                order_no: order.order_no.clone(),
                state: PaymentState::NotFound,
                gateway_txn_id: None,
                amount_fen: None,
                paid_at: None,
                merchant_id: None,
            }),
            Answer::Refused(r) => Err(r.into_error("querying the order")),
        }
    }

    async fn close_order(&self, order: &OrderRef) -> Result<CloseOutcome, GatewayError> {
        let biz = TradeRefBiz {
            out_trade_no: order.order_no.clone(),
        };
        match self.call::<CloseResponse>(METHOD_CLOSE, &biz, None).await? {
            Answer::Ok(r) => {
                same_order(&order.order_no, r.out_trade_no.as_deref())?;
                Ok(CloseOutcome::Closed)
            }
            Answer::Refused(r) if r.is(&SubCode::TradeNotExist) => Ok(CloseOutcome::NothingToClose),
            // No longer closable: follow the real state.
            Answer::Refused(r) if r.is(&SubCode::TradeStatusError) => {
                let now = self.query_order(order).await?;
                match now.state {
                    PaymentState::Paid | PaymentState::Refunded => Ok(CloseOutcome::AlreadyPaid),
                    PaymentState::Closed => Ok(CloseOutcome::Closed),
                    PaymentState::NotFound => Ok(CloseOutcome::NothingToClose),
                    PaymentState::Pending | PaymentState::Failed => Err(r.into_error("closing the order")),
                }
            }
            Answer::Refused(r) => Err(r.into_error("closing the order")),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<GatewayRefund, GatewayError> {
        Self::check_order_no(&req.order_no, "order number")?;
        Self::check_order_no(&req.refund_no, "refund number")?;
        let refund_amount = amount_to_wire(req.refund_fen).map_err(GatewayError::Invalid)?;
        let reason = req.reason.trim();
        let biz = RefundBiz {
            out_trade_no: req.order_no.clone(),
            refund_amount,
            out_request_no: Some(req.refund_no.clone()),
            refund_reason: (!reason.is_empty()).then(|| reason.to_string()),
        };
        match self.call::<RefundResponse>(METHOD_REFUND, &biz, None).await? {
            Answer::Ok(r) => {
                same_order(&req.order_no, r.out_trade_no.as_deref())?;
                if r.fund_change.as_deref() == Some("Y") {
                    return Ok(GatewayRefund {
                        order_no: req.order_no.clone(),
                        refund_no: req.refund_no.clone(),
                        state: RefundState::Succeeded,
                        gateway_refund_id: None,
                        // `refund_fee` is cumulative; this refund moved what we asked for.
                        amount_fen: Some(req.refund_fen),
                        refunded_at: wire_time("gmt_refund_pay", r.gmt_refund_pay.as_deref())?,
                    });
                }
                // No money moved in this call (e.g. a replay): the refund query says what is so.
                self.query_refund(&RefundRef {
                    order_no: req.order_no.clone(),
                    refund_no: req.refund_no.clone(),
                    requested_at: req.requested_at,
                })
                .await
            }
            Answer::Refused(r) => Err(r.into_error("refunding")),
        }
    }

    async fn query_refund(&self, refund: &RefundRef) -> Result<GatewayRefund, GatewayError> {
        let biz = RefundQueryBiz {
            out_trade_no: refund.order_no.clone(),
            out_request_no: refund.refund_no.clone(),
            query_options: vec!["gmt_refund_pay".into()],
        };
        match self
            .call::<RefundQueryResponse>(METHOD_REFUND_QUERY, &biz, None)
            .await?
        {
            Answer::Ok(r) => {
                same_order(&refund.order_no, r.out_trade_no.as_deref())?;
                let status = match r.refund_status.as_deref().filter(|s| !s.is_empty()) {
                    None => None,
                    Some(s) => Some(
                        RefundStatus::parse(s)
                            .ok_or_else(|| GatewayError::Protocol(format!("unknown refund_status {s:?}")))?,
                    ),
                };
                let state = RefundStatus::refund_state(status);
                let (amount_fen, refunded_at) = if state == RefundState::Succeeded {
                    if let Some(no) = r.out_request_no.as_deref() {
                        if no != refund.refund_no {
                            return Err(GatewayError::Protocol(format!(
                                "asked about refund {} but the answer is about {no}",
                                refund.refund_no
                            )));
                        }
                    }
                    (
                        Some(wire_amount("refund_amount", r.refund_amount.as_deref())?),
                        wire_time("gmt_refund_pay", r.gmt_refund_pay.as_deref())?,
                    )
                } else {
                    (None, None)
                };
                Ok(GatewayRefund {
                    order_no: refund.order_no.clone(),
                    refund_no: refund.refund_no.clone(),
                    state,
                    gateway_refund_id: None,
                    amount_fen,
                    refunded_at,
                })
            }
            Answer::Refused(r) => Err(r.into_error("querying the refund")),
        }
    }

    fn verify_notification(
        &self,
        notification: IncomingNotification<'_>,
        _now: DateTime<Utc>,
    ) -> Result<VerifiedNotification, NotifyError> {
        notify::verify_with_key(self.config.alipay_public_key(), notification)
    }

    fn ack(&self, accepted: bool) -> Ack {
        if accepted {
            Ack {
                status: 200,
                content_type: Some("text/plain"),
                body: b"success".to_vec(),
            }
        } else {
            // Anything but `success` makes Alipay deliver again.
            Ack {
                status: 500,
                content_type: Some("text/plain"),
                body: b"fail".to_vec(),
            }
        }
    }

    async fn download_settlement(&self, day: NaiveDate) -> Result<Vec<u8>, GatewayError> {
        let biz = BillUrlBiz {
            bill_type: "trade".into(),
            bill_date: day.format("%Y-%m-%d").to_string(),
        };
        let url = match self.call::<BillUrlResponse>(METHOD_BILL_URL, &biz, None).await? {
            Answer::Ok(r) => r
                .bill_download_url
                .filter(|u| !u.is_empty())
                .ok_or_else(|| GatewayError::Protocol("the bill answer has no bill_download_url".into()))?,
            Answer::Refused(r) => return Err(r.into_error(&format!("asking for the {day} bill"))),
        };
        // The link is short-lived and the file unsigned: fetch it at once.
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| transport(&url, "bill download", e))?;
        let status = resp.status().as_u16();
        if status >= 500 {
            return Err(GatewayError::Transport(TransportError::Status {
                url,
                status,
                body: String::new(),
            }));
        }
        if status != 200 {
            return Err(GatewayError::Refused {
                code: format!("HTTP {status}"),
                message: format!("downloading the {day} bill answered HTTP {status}"),
                class: ErrorClass::Retry,
            });
        }
        let bytes = resp.bytes().await.map_err(|e| transport(&url, "bill download", e))?;
        Ok(bytes.to_vec())
    }

    fn parse_settlement(&self, bytes: &[u8]) -> Result<SettlementFile, SettlementError> {
        settlement::parse(bytes)
    }
}
