//! The sandbox's UnionPay 5.1.0: front and back transactions, query, refund, file transfer.
//!
//! Routes (the client's `gateway_url` is `{base}/unionpay`, its `file_url`
//! `{base}/unionpay/filedownload/`):
//! - `POST /unionpay/gateway/api/frontTransReq.do`: the browser posts the signed front consume;
//!   the order is recorded and the browser is sent (303) to the wallet page.
//! - `POST /unionpay/gateway/api/backTransReq.do`: back consume with `tokenPayData` (paid at
//!   once), refund (txnType 04, completed asynchronously with a notification). Undo (31) is not
//!   offered (answered 32, no permission).
//! - `POST /unionpay/gateway/api/queryTrans.do`: by orderId + txnTime, for consumes and refunds.
//! - `POST /unionpay/filedownload/`: file transfer (txnType 76, fileType 00) of a finished
//!   clearing day.
//!
//! Every request is checked as the gateway does: form syntax (`10`), version and signMethod
//! (`10`), a registered `merId` (`31`), `certId` naming the merchant's registered certificate and
//! the signature verifying with its key (`11`). Every answer (and notification) is signed with the
//! sandbox's signing certificate (fixtures/sandbox/unionpay/sign.pem), embedded as
//! `signPubKeyCert`; it chains to the sandbox's own root and middle, which [`connect`] makes the
//! client trust. Unpaid orders: a query answers `origRespCode` 05 until `payTimeout`, then 01.
//!
//! Notifications are retried on UnionPay's schedule: 5 deliveries, 1, 2, 4 and 5 minutes apart
//! (gateways.md §3.5), until an HTTP 200. Refunds complete after the sandbox's refund delay.
//!
//! Merchant `extra` keys: `certId` (the merchant certificate's decimal serial). Order `extra`
//! keys written here: `txnTime`, `bizType`, `reqReserved`, `traceTime` (of the payment), and per
//! refund `refund:<no>:txnTime`, `refund:<no>:reqReserved`.
//!
//! The settlement file is the file transfer's `fileContent`: base64 of the zlib-deflated zip
//! holding `INN<YYMMDD>88ZM_<merId>` (GBK, fixed width, fees at the merchant's rate) and an empty
//! `INN<YYMMDD>88ZME_<merId>`. Days are clearing days (23:00 → 23:00 Beijing time).
//! [`FilePlant::ChangeStatus`](super::FilePlant) has no UnionPay column and changes nothing.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::{
    cst, GatewaySim, OutgoingNotification, Sandbox, SimError, SimMerchant, SimOrder, SimOrderState, SimRefund,
    SimRefundState, SimTxn,
};
use crate::gateway::{Channel, PayMethod};
use crate::settlement::RowKind;
use crate::unionpay::settlement::ZM_WIDTHS;
use crate::unionpay::sign::{sign_string, SigningIdentity};
use crate::unionpay::transformers::{
    clearing_day, field, mmdd, parse_form, parse_wire_time, txn_amt_to_fen, wire_time, write_answer, write_form, Fields,
};
use crate::unionpay::{UnionPayClient, UnionPayConfig, UnionPayEnvironment, UnionPaySigningKey};

/// The sandbox's root certificate (what the client trusts as UnionPay's root).
pub const ROOT_PEM: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/root.pem");
/// The sandbox's middle certificate.
pub const MIDDLE_PEM: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/middle.pem");
const SIGN_PEM: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/sign.pem");
const SIGN_KEY: &[u8] = include_bytes!("../../../fixtures/sandbox/unionpay/sign.key");
/// The project's test merchant: its PKCS#12 signing certificate and password.
pub const MERCHANT_PFX: &[u8] = include_bytes!("../../../fixtures/unionpay/merchant_sign.p12");
pub const MERCHANT_PFX_PASSWORD: &str = "000000";

/// Delays between UnionPay's notification deliveries (5 deliveries in all).
pub const NOTIFY_SCHEDULE_SECS: [u64; 4] = [60, 120, 240, 300];

/// UnionPay's server side.
#[derive(Clone)]
pub struct UnionPaySim {
    identity: SigningIdentity,
}

impl UnionPaySim {
    /// With the sandbox's committed signing certificate (fixtures/sandbox/unionpay/).
    pub fn from_fixtures() -> UnionPaySim {
        UnionPaySim {
            identity: SigningIdentity::from_pem(SIGN_KEY, SIGN_PEM)
                .expect("the sandbox's UnionPay signing fixture loads"),
        }
    }

    /// The certificate that signs the sandbox's answers.
    pub fn signing_identity(&self) -> &SigningIdentity {
        &self.identity
    }

    /// Sign a message the sandbox sends: adds `signPubKeyCert` and `signature`.
    pub fn sign(&self, fields: &mut Fields) {
        fields.retain(|(k, _)| k != "signature" && k != "signPubKeyCert");
        fields.push(("signPubKeyCert".into(), self.identity.certificate_pem()));
        let sig = self.identity.signature(fields, false);
        fields.push(("signature".into(), sig));
    }

    fn answer(&self, mut fields: Fields) -> Response {
        self.sign(&mut fields);
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
            write_answer(&fields),
        )
            .into_response()
    }

    /// A refusal answer: the request's identifying fields echoed, respCode and respMsg.
    fn refuse(&self, req: &Fields, code: &str, msg: &str) -> Response {
        let mut f: Fields = Vec::new();
        for k in [
            "version",
            "encoding",
            "signMethod",
            "txnType",
            "txnSubType",
            "bizType",
            "accessType",
            "merId",
            "orderId",
            "txnTime",
        ] {
            if let Some(v) = field(req, k) {
                f.push((k.into(), v.into()));
            }
        }
        if field(&f, "version").is_none() {
            f.push(("version".into(), "5.1.0".into()));
            f.push(("signMethod".into(), "01".into()));
        }
        f.push(("respCode".into(), code.into()));
        f.push(("respMsg".into(), msg.into()));
        self.answer(f)
    }

    /// Parse and authenticate a merchant's request as the gateway does.
    fn authenticate(&self, sb: &Sandbox, body: &[u8]) -> Result<(Fields, SimMerchant), (Fields, &'static str, String)> {
        let req = parse_form(body).map_err(|e| (Vec::new(), "10", format!("报文格式错误: {e}")))?;
        if field(&req, "version") != Some("5.1.0") || field(&req, "signMethod") != Some("01") {
            return Err((
                req,
                "10",
                "报文格式错误: version must be 5.1.0 and signMethod 01".into(),
            ));
        }
        let mer_id = field(&req, "merId").unwrap_or("").to_string();
        let merchant = match sb.merchant(Channel::Unionpay, &mer_id) {
            Ok(m) => m,
            Err(_) => return Err((req, "31", format!("商户状态不正确: merId {mer_id} is not registered"))),
        };
        let want_cert = merchant.extra.get("certId").cloned().unwrap_or_default();
        if field(&req, "certId") != Some(want_cert.as_str()) {
            return Err((
                req,
                "11",
                format!("验证签名失败: certId is not the merchant's certificate {want_cert}"),
            ));
        }
        let sig = field(&req, "signature").unwrap_or("");
        let digest = crate::crypto::sha256_hex(sign_string(&req, true).as_bytes());
        if merchant
            .merchant_public_key
            .verify_sha256_base64(digest.as_bytes(), sig)
            .is_err()
        {
            return Err((req, "11", "验证签名失败".into()));
        }
        Ok((req, merchant))
    }

    fn routes_inner(&self) -> Router<Sandbox> {
        let (a, b, c, d, e) = (self.clone(), self.clone(), self.clone(), self.clone(), self.clone());
        Router::new()
            .route(
                "/unionpay/gateway/api/frontTransReq.do",
                post(move |State(sb): State<Sandbox>, body: Bytes| {
                    let me = a.clone();
                    async move { me.front(&sb, &body).await }
                }),
            )
            .route(
                "/unionpay/gateway/api/backTransReq.do",
                post(move |State(sb): State<Sandbox>, body: Bytes| {
                    let me = b.clone();
                    async move { me.back(&sb, &body).await }
                }),
            )
            .route(
                "/unionpay/gateway/api/queryTrans.do",
                post(move |State(sb): State<Sandbox>, body: Bytes| {
                    let me = c.clone();
                    async move { me.query(&sb, &body).await }
                }),
            )
            .route(
                "/unionpay/filedownload/",
                post(move |State(sb): State<Sandbox>, body: Bytes| {
                    let me = d.clone();
                    async move { me.file_transfer(&sb, &body).await }
                }),
            )
            .route(
                "/unionpay/filedownload",
                post(move |State(sb): State<Sandbox>, body: Bytes| {
                    let me = e.clone();
                    async move { me.file_transfer(&sb, &body).await }
                }),
            )
    }

    // --- front consume ---------------------------------------------------------------------

    async fn front(&self, sb: &Sandbox, body: &[u8]) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        let page = |status: StatusCode, code: &str, msg: &str| {
            (
                status,
                Html(format!(
                    "<!doctype html><html lang=\"zh-CN\"><meta charset=\"utf-8\"><title>UnionPay</title>\
                     <p role=\"alert\">respCode={} {}</p></html>",
                    super::wallet::esc(code),
                    super::wallet::esc(msg)
                )),
            )
                .into_response()
        };
        let (req, merchant) = match self.authenticate(sb, body) {
            Ok(x) => x,
            Err((_, code, msg)) => return page(StatusCode::BAD_REQUEST, code, &msg),
        };
        if field(&req, "txnType") != Some("01") || field(&req, "bizType") != Some("000201") {
            return page(
                StatusCode::BAD_REQUEST,
                "10",
                "报文格式错误: the front gateway takes the consume (01, 000201)",
            );
        }
        let order = match self.consume_order(&req, &merchant, true) {
            Ok(o) => o,
            Err((code, msg)) => return page(StatusCode::BAD_REQUEST, code, &msg),
        };
        let existing = sb.order(Channel::Unionpay, &merchant.merchant_id, &order.order_no);
        if let Some(e) = &existing {
            if e.extra.get("txnTime") != order.extra.get("txnTime") {
                return page(
                    StatusCode::BAD_REQUEST,
                    "12",
                    "重复交易: this orderId was used with another txnTime",
                );
            }
        }
        match sb.create_order(order.clone()) {
            Ok(_) => Redirect::to(&format!(
                "{}/sandbox/wallet/unionpay/{}/{}",
                sb.base_url(),
                merchant.merchant_id,
                order.order_no
            ))
            .into_response(),
            Err(SimError::AlreadyPaid(_)) => page(StatusCode::BAD_REQUEST, "12", "重复交易: the order is already paid"),
            Err(e) => page(StatusCode::BAD_REQUEST, "12", &format!("重复交易: {e}")),
        }
    }

    /// A consume request as a sandbox order (front: payTimeout and frontUrl; back: token).
    fn consume_order(
        &self,
        req: &Fields,
        merchant: &SimMerchant,
        front: bool,
    ) -> Result<SimOrder, (&'static str, String)> {
        let need = |k: &str| {
            field(req, k)
                .filter(|v| !v.is_empty())
                .ok_or(("13", format!("报文交易要素缺失: {k}")))
        };
        let order_no = need("orderId")?.to_string();
        if !(8..=40).contains(&order_no.len()) || !order_no.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(("10", "报文格式错误: orderId".into()));
        }
        let txn_time_text = need("txnTime")?;
        let created_at = parse_wire_time(txn_time_text).ok_or(("10", "报文格式错误: txnTime".to_string()))?;
        let amount_fen = txn_amt_to_fen(need("txnAmt")?).map_err(|e| ("10", format!("报文格式错误: txnAmt {e}")))?;
        if amount_fen <= 0 {
            return Err(("10", "报文格式错误: txnAmt".into()));
        }
        if need("currencyCode")? != "156" {
            return Err(("10", "报文格式错误: currencyCode".into()));
        }
        let back_url = need("backUrl")?.to_string();
        let (return_url, expires_at, method) = if front {
            let timeout = match field(req, "payTimeout").filter(|v| !v.is_empty()) {
                Some(t) => Some(parse_wire_time(t).ok_or(("10", "报文格式错误: payTimeout".to_string()))?),
                None => None,
            };
            let method = if field(req, "channelType") == Some("08") {
                PayMethod::H5
            } else {
                PayMethod::Web
            };
            (Some(need("frontUrl")?.to_string()), timeout, method)
        } else {
            (None, None, PayMethod::Web)
        };
        let mut extra = HashMap::new();
        extra.insert("txnTime".to_string(), txn_time_text.to_string());
        extra.insert(
            "bizType".to_string(),
            field(req, "bizType").unwrap_or("000201").to_string(),
        );
        if let Some(r) = field(req, "reqReserved").filter(|v| !v.is_empty()) {
            extra.insert("reqReserved".to_string(), r.to_string());
        }
        Ok(SimOrder {
            channel: Channel::Unionpay,
            merchant_id: merchant.merchant_id.clone(),
            order_no: order_no.clone(),
            amount_fen,
            subject: format!("UnionPay order {order_no}"),
            notify_url: back_url,
            return_url,
            method,
            created_at,
            expires_at,
            state: SimOrderState::Created,
            gateway_txn_id: None,
            paid_at: None,
            refunds: vec![],
            extra,
        })
    }

    // --- back transactions -----------------------------------------------------------------

    async fn back(&self, sb: &Sandbox, body: &[u8]) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        let (req, merchant) = match self.authenticate(sb, body) {
            Ok(x) => x,
            Err((req, code, msg)) => return self.refuse(&req, code, &msg),
        };
        match field(&req, "txnType") {
            Some("01") => self.back_consume(sb, &req, &merchant),
            Some("04") => self.refund(sb, &req, &merchant),
            Some("31") => self.refuse(
                &req,
                "32",
                "无此交易权限: the sandbox offers no consume undo; refund instead",
            ),
            _ => self.refuse(&req, "10", "报文格式错误: txnType"),
        }
    }

    fn back_consume(&self, sb: &Sandbox, req: &Fields, merchant: &SimMerchant) -> Response {
        if field(req, "bizType") != Some("000902") {
            return self.refuse(
                req,
                "32",
                "无此交易权限: back consume is offered as token payment (000902) only",
            );
        }
        let token = field(req, "tokenPayData").unwrap_or("");
        let inner = token.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or("");
        let has = |k: &str| {
            inner
                .split('&')
                .any(|kv| kv.strip_prefix(k).is_some_and(|v| v.len() > 1 && v.starts_with('=')))
        };
        if !has("token") || !has("trId") {
            return self.refuse(req, "13", "报文交易要素缺失: tokenPayData {trId=…&token=…}");
        }
        let order = match self.consume_order(req, merchant, false) {
            Ok(o) => o,
            Err((code, msg)) => return self.refuse(req, code, &msg),
        };
        if let Err(e) = sb.create_order(order.clone()) {
            return self.refuse(req, "12", &format!("重复交易: {e}"));
        }
        match sb.pay(Channel::Unionpay, &merchant.merchant_id, &order.order_no) {
            Ok(paid) => {
                let mut f = echo(req);
                f.push(("respCode".into(), "00".into()));
                f.push(("respMsg".into(), "成功[0000000]".into()));
                f.push(("queryId".into(), paid.gateway_txn_id.unwrap_or_default()));
                self.answer(f)
            }
            Err(e) => self.refuse(req, "12", &format!("重复交易: {e}")),
        }
    }

    fn refund(&self, sb: &Sandbox, req: &Fields, merchant: &SimMerchant) -> Response {
        let need = |k: &str| field(req, k).filter(|v| !v.is_empty());
        let (Some(refund_no), Some(orig), Some(txn_time), Some(amt), Some(back_url)) = (
            need("orderId"),
            need("origQryId"),
            need("txnTime"),
            need("txnAmt"),
            need("backUrl"),
        ) else {
            return self.refuse(
                req,
                "13",
                "报文交易要素缺失: orderId, origQryId, txnTime, txnAmt and backUrl",
            );
        };
        if parse_wire_time(txn_time).is_none() {
            return self.refuse(req, "10", "报文格式错误: txnTime");
        }
        let Ok(amount) = txn_amt_to_fen(amt) else {
            return self.refuse(req, "10", "报文格式错误: txnAmt");
        };
        let Some(order) = sb.orders().into_iter().find(|o| {
            o.channel == Channel::Unionpay
                && o.merchant_id == merchant.merchant_id
                && o.gateway_txn_id.as_deref() == Some(orig)
        }) else {
            return self.refuse(req, "35", "原交易不存在或状态不正确");
        };
        if order.refunds.iter().any(|r| r.refund_no == refund_no) {
            return self.refuse(req, "12", "重复交易");
        }
        if sb.order(Channel::Unionpay, &merchant.merchant_id, refund_no).is_some() {
            return self.refuse(req, "12", "重复交易: the orderId is a consume's");
        }
        let reserved = field(req, "reqReserved").unwrap_or("").to_string();
        let _ = sb.update_order_extra(Channel::Unionpay, &merchant.merchant_id, &order.order_no, |x| {
            x.insert(format!("refund:{refund_no}:txnTime"), txn_time.to_string());
            x.insert(format!("refund:{refund_no}:reqReserved"), reserved);
        });
        match sb.refund(
            Channel::Unionpay,
            &merchant.merchant_id,
            &order.order_no,
            refund_no,
            amount,
            "",
            Some(back_url.to_string()),
            false,
        ) {
            Ok(r) => {
                let mut f = echo(req);
                f.push(("origQryId".into(), orig.to_string()));
                f.push(("txnAmt".into(), amount.to_string()));
                f.push(("respCode".into(), "00".into()));
                f.push(("respMsg".into(), "成功[0000000]".into()));
                f.push(("queryId".into(), r.gateway_refund_id));
                self.answer(f)
            }
            Err(SimError::NotPaid(_)) => self.refuse(req, "35", "原交易不存在或状态不正确"),
            Err(SimError::RefundTooLarge { .. }) => {
                self.refuse(req, "36", "与原交易信息不符: refund exceeds what is left")
            }
            Err(e) => self.refuse(req, "12", &format!("重复交易: {e}")),
        }
    }

    // --- query -----------------------------------------------------------------------------

    async fn query(&self, sb: &Sandbox, body: &[u8]) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        let (req, merchant) = match self.authenticate(sb, body) {
            Ok(x) => x,
            Err((req, code, msg)) => return self.refuse(&req, code, &msg),
        };
        if field(&req, "txnType") != Some("00") {
            return self.refuse(&req, "10", "报文格式错误: txnType must be 00");
        }
        let (Some(order_id), Some(txn_time)) = (field(&req, "orderId"), field(&req, "txnTime")) else {
            return self.refuse(&req, "13", "报文交易要素缺失: orderId and txnTime");
        };
        let now = sb.now();
        let mut f = echo(&req);
        f.push(("respCode".into(), "00".into()));
        f.push(("respMsg".into(), "成功[0000000]".into()));
        let orders: Vec<SimOrder> = sb
            .orders()
            .into_iter()
            .filter(|o| o.channel == Channel::Unionpay && o.merchant_id == merchant.merchant_id)
            .collect();
        if let Some(o) = orders.iter().find(|o| o.order_no == order_id) {
            if o.extra.get("txnTime").map(String::as_str) != Some(txn_time) {
                return self.refuse(&req, "34", "查无此交易");
            }
            f.push(("txnAmt".into(), o.amount_fen.to_string()));
            f.push(("currencyCode".into(), "156".into()));
            match (o.state, o.paid_at) {
                (SimOrderState::Paid, Some(paid_at)) => {
                    let qid = o.gateway_txn_id.clone().unwrap_or_default();
                    push_settled(&mut f, &qid, paid_at, o.amount_fen);
                    f.push(("queryId".into(), qid));
                    f.push(("origRespCode".into(), "00".into()));
                    f.push(("origRespMsg".into(), "成功[0000000]".into()));
                }
                (SimOrderState::Created, _) if o.expires_at.is_none_or(|e| e >= now) => {
                    f.push(("origRespCode".into(), "05".into()));
                    f.push(("origRespMsg".into(), "交易已受理，请稍后查询交易结果".into()));
                }
                _ => {
                    f.push(("origRespCode".into(), "01".into()));
                    f.push(("origRespMsg".into(), "交易失败: not paid before payTimeout".into()));
                }
            }
            if let Some(r) = o.extra.get("reqReserved") {
                f.push(("reqReserved".into(), r.clone()));
            }
            return self.answer(f);
        }
        for o in &orders {
            let Some(r) = o.refunds.iter().find(|r| r.refund_no == order_id) else {
                continue;
            };
            if o.extra
                .get(&format!("refund:{}:txnTime", r.refund_no))
                .map(String::as_str)
                != Some(txn_time)
            {
                return self.refuse(&req, "34", "查无此交易");
            }
            f.push(("txnAmt".into(), r.amount_fen.to_string()));
            f.push(("currencyCode".into(), "156".into()));
            f.push(("queryId".into(), r.gateway_refund_id.clone()));
            f.push(("origQryId".into(), o.gateway_txn_id.clone().unwrap_or_default()));
            match (r.state, r.refunded_at) {
                (SimRefundState::Succeeded, Some(at)) => {
                    push_settled(&mut f, &r.gateway_refund_id, at, r.amount_fen);
                    f.push(("origRespCode".into(), "00".into()));
                    f.push(("origRespMsg".into(), "成功[0000000]".into()));
                }
                _ => {
                    f.push(("origRespCode".into(), "05".into()));
                    f.push(("origRespMsg".into(), "交易已受理，请稍后查询交易结果".into()));
                }
            }
            if let Some(v) = o
                .extra
                .get(&format!("refund:{}:reqReserved", r.refund_no))
                .filter(|v| !v.is_empty())
            {
                f.push(("reqReserved".into(), v.clone()));
            }
            return self.answer(f);
        }
        self.refuse(&req, "34", "查无此交易")
    }

    // --- file transfer ---------------------------------------------------------------------

    async fn file_transfer(&self, sb: &Sandbox, body: &[u8]) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        let (req, merchant) = match self.authenticate(sb, body) {
            Ok(x) => x,
            Err((req, code, msg)) => return self.refuse(&req, code, &msg),
        };
        if field(&req, "txnType") != Some("76") || field(&req, "fileType") != Some("00") {
            return self.refuse(&req, "10", "报文格式错误: txnType 76 with fileType 00");
        }
        let settle = field(&req, "settleDate").unwrap_or("");
        let today = clearing_day(sb.now());
        let Some(day) = day_of_mmdd(settle, today) else {
            return self.refuse(&req, "10", "报文格式错误: settleDate must be MMDD");
        };
        if day >= today {
            return self.refuse(&req, "98", "文件不存在: the clearing day is not finished");
        }
        let content = match sb.settlement_file(Channel::Unionpay, &merchant.merchant_id, day) {
            Ok(c) => c,
            Err(e) => return self.refuse(&req, "98", &format!("文件不存在: {e}")),
        };
        let mut f = echo(&req);
        f.push(("settleDate".into(), settle.to_string()));
        f.push(("fileType".into(), "00".into()));
        f.push(("respCode".into(), "00".into()));
        f.push(("respMsg".into(), "成功[0000000]".into()));
        f.push((
            "fileName".into(),
            format!("{}.zip", entry_name(day, "ZM", &merchant.merchant_id)),
        ));
        f.push(("fileContent".into(), String::from_utf8(content).unwrap_or_default()));
        self.answer(f)
    }

    fn notification(
        &self,
        url: String,
        order_no: &str,
        refund_no: Option<&str>,
        mut fields: Fields,
    ) -> OutgoingNotification {
        self.sign(&mut fields);
        OutgoingNotification {
            channel: Channel::Unionpay,
            order_no: order_no.to_string(),
            refund_no: refund_no.map(str::to_string),
            url,
            content_type: "application/x-www-form-urlencoded;charset=UTF-8".into(),
            headers: vec![],
            body: write_form(&fields).into_bytes(),
            schedule: NOTIFY_SCHEDULE_SECS.iter().map(|s| Duration::from_secs(*s)).collect(),
            acknowledged: |status, _body| status == 200,
        }
    }
}

/// The request's identifying fields, echoed in an answer.
fn echo(req: &Fields) -> Fields {
    let mut f = Fields::new();
    for k in [
        "version",
        "encoding",
        "signMethod",
        "txnType",
        "txnSubType",
        "bizType",
        "accessType",
        "merId",
        "orderId",
        "txnTime",
    ] {
        if let Some(v) = field(req, k) {
            f.push((k.into(), v.into()));
        }
    }
    f
}

/// traceNo, traceTime, settleDate and settleAmt of a completed transaction.
fn push_settled(f: &mut Fields, query_id: &str, at: DateTime<Utc>, amount_fen: i64) {
    f.push(("traceNo".into(), trace_no(query_id)));
    f.push(("traceTime".into(), trace_time(at)));
    f.push(("settleDate".into(), mmdd(clearing_day(at))));
    f.push(("settleAmt".into(), amount_fen.to_string()));
    f.push(("settleCurrencyCode".into(), "156".into()));
}

fn trace_no(query_id: &str) -> String {
    let digits: String = query_id.chars().filter(char::is_ascii_digit).collect();
    let tail = &digits[digits.len().saturating_sub(6)..];
    format!("{tail:0>6}")
}

fn trace_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&cst()).format("%m%d%H%M%S").to_string()
}

/// The day of a settleDate (MMDD): the latest such day not after `today`'s year end, nearest to
/// `today` (so `1231` asked on 1 January is the day before).
fn day_of_mmdd(mmdd_text: &str, today: NaiveDate) -> Option<NaiveDate> {
    if mmdd_text.len() != 4 || !mmdd_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (m, d) = (mmdd_text[..2].parse().ok()?, mmdd_text[2..].parse().ok()?);
    [today.year() - 1, today.year(), today.year() + 1]
        .into_iter()
        .filter_map(|y| NaiveDate::from_ymd_opt(y, m, d))
        .min_by_key(|day| (*day - today).num_days().abs())
}

fn entry_name(day: NaiveDate, kind: &str, mer_id: &str) -> String {
    format!("INN{}88{kind}_{mer_id}", day.format("%y%m%d"))
}

/// Lay out one ZM line from its 41 field values (left-aligned, space padded, cut to width).
pub fn zm_line(values: &[String; 41]) -> String {
    let mut out = String::with_capacity(620);
    for (i, (v, w)) in values.iter().zip(ZM_WIDTHS).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut n = 0;
        for c in v.chars().take(w) {
            out.push(c);
            n += 1;
        }
        for _ in n..w {
            out.push(' ');
        }
    }
    out
}

fn money(indicator_positive: char, indicator_negative: char, signed: i64) -> String {
    let c = if signed >= 0 {
        indicator_positive
    } else {
        indicator_negative
    };
    format!("{c}{:012}", signed.unsigned_abs())
}

/// A query id that fits the 21-character field (planted ids may be longer: keep their tail).
fn fit21(id: &str) -> String {
    id.chars()
        .rev()
        .take(21)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn zm_values(t: &SimTxn) -> [String; 41] {
    let s = |v: &str| v.to_string();
    let blank = String::new;
    let at = t.at;
    let fee = t.fee_fen(); // positive: charged to the merchant
    let (settle_signed, own_id, order_field, orig_qid, orig_trace_no, orig_trace_time, reserved, ttype, sub) =
        match t.kind {
            RowKind::Payment => (
                t.amount_fen,
                fit21(&t.gateway_txn_id),
                t.order_no.clone(),
                blank(),
                blank(),
                blank(),
                t.extra.get("reqReserved").cloned().unwrap_or_default(),
                "01",
                "01",
            ),
            RowKind::Refund => {
                let no = t.refund_no.clone().unwrap_or_default();
                (
                    -t.amount_fen,
                    fit21(t.gateway_refund_id.as_deref().unwrap_or("")),
                    no.clone(),
                    fit21(&t.gateway_txn_id),
                    trace_no(&t.gateway_txn_id),
                    t.extra.get("traceTime").cloned().unwrap_or_default(),
                    t.extra
                        .get(&format!("refund:{no}:reqReserved"))
                        .cloned()
                        .unwrap_or_else(|| t.order_no.clone()),
                    "04",
                    "00",
                )
            }
        };
    let net = settle_signed - fee;
    [
        s(if t.kind == RowKind::Payment { "S22" } else { "S30" }),
        s("00049992"),
        s("00049992"),
        trace_no(&own_id),
        trace_time(at),
        s("6216***********0018"),
        format!("{:012}", t.amount_fen),
        s("4900"),
        s("07"),
        own_id,
        s("00"),
        order_field,
        s("01"),
        orig_trace_no,
        orig_trace_time,
        money('D', 'C', fee),
        money('C', 'D', settle_signed),
        s("0001"),
        blank(),
        s(ttype),
        s(sub),
        t.extra.get("bizType").cloned().unwrap_or_else(|| s("000201")),
        s("01"),
        blank(),
        blank(),
        s("0"),
        orig_qid,
        t.merchant_id.clone(),
        s("0"),
        blank(),
        blank(),
        blank(),
        money('C', 'D', net),
        blank(),
        reserved,
        blank(),
        blank(),
        blank(),
        blank(),
        s("0"),
        blank(),
    ]
}

/// The file-transfer payload: base64(zlib(zip{ZM, ZME})), ZM and ZME GBK-encoded.
pub fn file_content(day: NaiveDate, mer_id: &str, zm_text: &str, zme_text: &str) -> Vec<u8> {
    let mut zip_bytes = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (kind, text) in [("ZM", zm_text), ("ZME", zme_text)] {
            let (gbk, _, _) = encoding_rs::GBK.encode(text);
            zip.start_file(entry_name(day, kind, mer_id), opts)
                .expect("a zip entry starts in memory");
            zip.write_all(&gbk).expect("writing to memory");
        }
        zip.finish().expect("the zip finishes in memory");
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&zip_bytes).expect("writing to memory");
    let deflated = z.finish().expect("zlib finishes in memory");
    crate::crypto::b64(&deflated).into_bytes()
}

impl GatewaySim for UnionPaySim {
    fn channel(&self) -> Channel {
        Channel::Unionpay
    }

    fn routes(&self) -> Router<Sandbox> {
        self.routes_inner()
    }

    /// 21 digits: yyMMddHHmmss (Beijing) and a 9-digit sequence.
    fn new_txn_id(&self, sandbox: &Sandbox, _order: &SimOrder) -> String {
        format!(
            "{}{:09}",
            sandbox.now().with_timezone(&cst()).format("%y%m%d%H%M%S"),
            sandbox.next_seq() % 1_000_000_000
        )
    }

    fn new_refund_id(&self, sandbox: &Sandbox, order: &SimOrder) -> String {
        self.new_txn_id(sandbox, order)
    }

    fn payment_notification(
        &self,
        sandbox: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
    ) -> Option<OutgoingNotification> {
        let paid_at = order.paid_at?;
        let qid = order.gateway_txn_id.clone()?;
        // Remember the payment's trace time: the refund lines of the ZM file name it.
        let _ = sandbox.update_order_extra(Channel::Unionpay, &merchant.merchant_id, &order.order_no, |x| {
            x.insert("traceTime".into(), trace_time(paid_at));
        });
        let mut f: Fields = vec![
            ("version".into(), "5.1.0".into()),
            ("encoding".into(), "UTF-8".into()),
            ("signMethod".into(), "01".into()),
            ("txnType".into(), "01".into()),
            ("txnSubType".into(), "01".into()),
            (
                "bizType".into(),
                order.extra.get("bizType").cloned().unwrap_or_else(|| "000201".into()),
            ),
            ("accessType".into(), "0".into()),
            ("merId".into(), merchant.merchant_id.clone()),
            ("orderId".into(), order.order_no.clone()),
            (
                "txnTime".into(),
                order
                    .extra
                    .get("txnTime")
                    .cloned()
                    .unwrap_or_else(|| wire_time(order.created_at)),
            ),
            ("txnAmt".into(), order.amount_fen.to_string()),
            ("currencyCode".into(), "156".into()),
            ("queryId".into(), qid.clone()),
            ("respCode".into(), "00".into()),
            ("respMsg".into(), "成功[0000000]".into()),
            ("accNo".into(), "6216***********0018".into()),
            ("payCardType".into(), "01".into()),
            ("payType".into(), "0001".into()),
        ];
        push_settled(&mut f, &qid, paid_at, order.amount_fen);
        if let Some(r) = order.extra.get("reqReserved") {
            f.push(("reqReserved".into(), r.clone()));
        }
        Some(self.notification(order.notify_url.clone(), &order.order_no, None, f))
    }

    fn refund_notification(
        &self,
        _sandbox: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
        refund: &SimRefund,
    ) -> Option<OutgoingNotification> {
        let at = refund.refunded_at?;
        let no = &refund.refund_no;
        let mut f: Fields = vec![
            ("version".into(), "5.1.0".into()),
            ("encoding".into(), "UTF-8".into()),
            ("signMethod".into(), "01".into()),
            ("txnType".into(), "04".into()),
            ("txnSubType".into(), "00".into()),
            ("bizType".into(), "000201".into()),
            ("accessType".into(), "0".into()),
            ("merId".into(), merchant.merchant_id.clone()),
            ("orderId".into(), no.clone()),
            ("origQryId".into(), order.gateway_txn_id.clone().unwrap_or_default()),
            (
                "txnTime".into(),
                order
                    .extra
                    .get(&format!("refund:{no}:txnTime"))
                    .cloned()
                    .unwrap_or_else(|| wire_time(refund.requested_at)),
            ),
            ("txnAmt".into(), refund.amount_fen.to_string()),
            ("currencyCode".into(), "156".into()),
            ("queryId".into(), refund.gateway_refund_id.clone()),
            ("respCode".into(), "00".into()),
            ("respMsg".into(), "成功[0000000]".into()),
        ];
        push_settled(&mut f, &refund.gateway_refund_id, at, refund.amount_fen);
        if let Some(r) = order
            .extra
            .get(&format!("refund:{no}:reqReserved"))
            .filter(|r| !r.is_empty())
        {
            f.push(("reqReserved".into(), r.clone()));
        }
        let url = refund.notify_url.clone().unwrap_or_else(|| order.notify_url.clone());
        Some(self.notification(url, &order.order_no, Some(no), f))
    }

    /// Flip one character of the base64 signature (a signature that no longer verifies).
    fn tamper(&self, n: &mut OutgoingNotification) {
        let Ok(mut fields) = parse_form(&n.body) else { return };
        for (k, v) in fields.iter_mut() {
            if k == "signature" && !v.is_empty() {
                let first = v.remove(0);
                v.insert(0, if first == 'A' { 'B' } else { 'A' });
            }
        }
        n.body = write_form(&fields).into_bytes();
    }

    fn settlement_file(&self, _sandbox: &Sandbox, merchant: &SimMerchant, day: NaiveDate, txns: &[SimTxn]) -> Vec<u8> {
        let mut zm = String::new();
        for t in txns {
            zm.push_str(&zm_line(&zm_values(t)));
            zm.push_str("\r\n");
        }
        file_content(day, &merchant.merchant_id, &zm, "")
    }

    /// The clearing day: 23:00 (previous day) → 23:00 Beijing time.
    fn settlement_day(&self, at: DateTime<Utc>) -> NaiveDate {
        clearing_day(at)
    }
}

/// The client configuration [`connect`] uses (tests may change timeouts before building it).
/// Registers the project's test merchant (fixtures/unionpay/merchant_sign.p12) at the sandbox as
/// `merchant_id`, charging `fee_rate_ppm`. Call it once the sandbox serves (its base URL is set).
pub fn connect_config(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32) -> UnionPayConfig {
    let identity = SigningIdentity::from_pkcs12(MERCHANT_PFX, MERCHANT_PFX_PASSWORD)
        .expect("the project's UnionPay test merchant fixture loads");
    let mut extra = HashMap::new();
    extra.insert("certId".to_string(), identity.cert_id().to_string());
    sandbox.register_merchant(SimMerchant {
        channel: Channel::Unionpay,
        merchant_id: merchant_id.to_string(),
        merchant_public_key: identity.public_key(),
        fee_rate_ppm,
        extra,
    });
    let base = sandbox.base_url();
    UnionPayConfig {
        merchant_id: merchant_id.to_string(),
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
    }
}

/// Register the project's test merchant at the sandbox and return a client that talks to the
/// sandbox and trusts its root and middle certificates. `merchant_id` must be 1-15 letters or
/// digits (real merIds have 15).
pub fn connect(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32) -> UnionPayClient {
    UnionPayClient::new(connect_config(sandbox, merchant_id, fee_rate_ppm))
        .expect("the sandbox's UnionPay client configuration is valid (merchant_id: 1-15 letters or digits)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zm_lines_have_the_spec_width_whatever_the_values() {
        let mut v: [String; 41] = std::array::from_fn(|_| String::new());
        v[30] = "水电费收缴中心".into();
        v[11] = "X".repeat(40);
        let line = zm_line(&v);
        assert_eq!(line.chars().count(), 607);
        assert_eq!(&line.chars().skip(112).take(32).collect::<String>(), &"X".repeat(32));
    }

    #[test]
    fn settle_dates_take_the_year_nearest_today() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(day_of_mmdd("1231", d(2027, 1, 1)), Some(d(2026, 12, 31)));
        assert_eq!(day_of_mmdd("0115", d(2026, 1, 16)), Some(d(2026, 1, 15)));
        assert_eq!(day_of_mmdd("1301", d(2026, 1, 16)), None);
        assert_eq!(day_of_mmdd("115", d(2026, 1, 16)), None);
    }
}
