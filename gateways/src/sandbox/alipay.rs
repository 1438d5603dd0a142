//! The sandbox's Alipay: `gateway.do` as Alipay runs it, for the demo and the tests.
//!
//! Routes:
//! - `GET|POST /alipay/gateway.do`: every method. Requests are refused exactly as Alipay refuses
//!   them: missing app id / method / signature (`40001`), unknown app, wrong `sign_type`, bad
//!   timestamp, bad signature, certificate SNs that do not match (`40002`, unsigned). The
//!   `charset` is read from the URL query only; without it the request is decoded as GBK, as
//!   Alipay does (so a UTF-8 Chinese subject then fails its signature), and the order's
//!   notifications are sent in GBK. Business answers are signed with the sandbox's platform key
//!   over the exact node text sent (which writes `/` as `\/`, as Alipay's JSON often does), with
//!   `alipay_cert_sn` for merchants in certificate mode.
//! - `GET /alipay/qr/{app_id}/{order_no}`: what a precreate QR code points at. Scanning it is
//!   when Alipay creates the trade (before that, query and close answer `ACQ.TRADE_NOT_EXIST`);
//!   it leads to the wallet page.
//! - `GET /alipay/bill/download?token=…`: the short-lived bill link (a real-format zip).
//!
//! Browser methods (`alipay.trade.page.pay`, `alipay.trade.wap.pay`) create the trade when the
//! browser opens the signed URL and redirect to the wallet page
//! `/sandbox/wallet/alipay/{app_id}/{order_no}`. Refunds complete at once (Alipay refunds are
//! synchronous) and are notified as `trade_status_sync` with the refund fields. Notifications
//! retry on Alipay's schedule (4m, 10m, 10m, 1h, 2h, 6h, 15h) until answered `success`. A day's
//! bill is available once that day is over (sandbox clock, Beijing time); before that the bill
//! query answers `isp.bill_not_exist`. A planted status change ([`super::FilePlant::ChangeStatus`])
//! does not apply: Alipay's detail file has no status column.
//!
//! Merchant settings read from [`SimMerchant::extra`]: `pid` (the 2088… partner id; derived
//! from the app id when absent), `app_cert_sn` (certificate mode: the SN the merchant must send).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::wallet::esc;
use super::{
    cst, GatewaySim, OutgoingNotification, Sandbox, SimError, SimMerchant, SimOrder, SimOrderState, SimRefund,
    SimRefundState, SimTxn,
};
use crate::alipay::client::{
    METHOD_BILL_URL, METHOD_CLOSE, METHOD_PAGE_PAY, METHOD_PRECREATE, METHOD_QUERY, METHOD_REFUND, METHOD_REFUND_QUERY,
    METHOD_WAP_PAY,
};
use crate::alipay::settlement::{write_zip, BillRow};
use crate::alipay::signature::{form_decode, form_encode, response_node_key, verify_request, Charset, SIGN_TYPE};
use crate::alipay::transformers::{
    amount_from_wire, beijing_time, parse_beijing_time, BillUrlBiz, BillUrlResponse, BrowserPayBiz, CloseResponse,
    Common, PrecreateBiz, PrecreateResponse, QueryResponse, RefundBiz, RefundQueryBiz, RefundQueryResponse,
    RefundResponse, TradeRefBiz, MAX_FEN, MIN_FEN,
};
use crate::alipay::{cert, AlipayClient, AlipayConfig};
use crate::amount::fen_to_yuan;
use crate::crypto::{load_private_key, load_public_key, PrivateKey};
use crate::gateway::{Channel, PayMethod};
use crate::settlement::RowKind;

/// The sandbox's platform ("Alipay side") key pair and certificates, committed test-only keys.
pub const PLATFORM_PRIVATE_KEY: &[u8] = include_bytes!("../../../fixtures/sandbox/alipay/alipay_private_key.pem");
/// The platform public key as Alipay shows it to merchants: bare base64 of the SPKI.
pub const PLATFORM_PUBLIC_KEY: &[u8] = include_bytes!("../../../fixtures/sandbox/alipay/alipay_public_key.txt");
pub const PLATFORM_CERT: &[u8] = include_bytes!("../../../fixtures/sandbox/alipay/alipayCertPublicKey_RSA2.crt");
pub const ROOT_CERT: &[u8] = include_bytes!("../../../fixtures/sandbox/alipay/alipayRootCert.crt");

/// The project's own test merchant (fixtures/alipay/): its app key as Alipay's key tool hands it
/// out (bare base64, PKCS#8), its public key and its app certificate.
pub const MERCHANT_PRIVATE_KEY: &[u8] = include_bytes!("../../../fixtures/alipay/app_private_key_pkcs8.txt");
pub const MERCHANT_PUBLIC_KEY: &[u8] = include_bytes!("../../../fixtures/alipay/app_public_key.pem");
pub const MERCHANT_APP_CERT: &[u8] = include_bytes!("../../../fixtures/alipay/appCertPublicKey_2021000000000001.crt");

/// Alipay's notification retry schedule: up to 8 deliveries within about 25 hours.
pub const NOTIFY_SCHEDULE_SECS: [u64; 7] = [4 * 60, 10 * 60, 10 * 60, 3600, 2 * 3600, 6 * 3600, 15 * 3600];

/// How far a request's `timestamp` may be from the wall clock.
const TIMESTAMP_TOLERANCE_SECS: i64 = 15 * 60;
/// How long a bill link works (wall clock).
const BILL_LINK_SECS: i64 = 300;

/// A bill link: (app id, bill day, when it was handed out).
type BillLink = (String, NaiveDate, DateTime<Utc>);

/// The sandbox's Alipay. Cheap to clone.
#[derive(Clone)]
pub struct AlipaySim {
    inner: Arc<SimInner>,
}

struct SimInner {
    platform_key: PrivateKey,
    platform_cert_sn: String,
    root_cert_sn: String,
    bill_links: Mutex<HashMap<String, BillLink>>,
}

impl AlipaySim {
    /// The sim with the committed platform keys of `fixtures/sandbox/alipay/`.
    pub fn from_fixtures() -> AlipaySim {
        AlipaySim {
            inner: Arc::new(SimInner {
                platform_key: load_private_key(PLATFORM_PRIVATE_KEY).expect("the sandbox's Alipay platform key loads"),
                platform_cert_sn: cert::cert_sn(PLATFORM_CERT).expect("the sandbox's Alipay certificate has an SN"),
                root_cert_sn: cert::root_cert_sn(ROOT_CERT).expect("the sandbox's root bundle has an SN"),
                bill_links: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// SN of the platform certificate (`alipay_cert_sn` in certificate-mode answers).
    pub fn platform_cert_sn(&self) -> &str {
        &self.inner.platform_cert_sn
    }
}

/// Register a merchant at the sandbox with the project's test merchant keys and return a client
/// (public-key mode) that talks to the sandbox (`sandbox.base_url()`, so serve the sandbox
/// first) and trusts its platform key. `merchant_id` is the Alipay app id.
pub fn connect(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32) -> AlipayClient {
    register(sandbox, merchant_id, fee_rate_ppm, None);
    let config = AlipayConfig::public_key_mode(merchant_id, MERCHANT_PRIVATE_KEY, PLATFORM_PUBLIC_KEY)
        .expect("the test merchant's and the sandbox's Alipay keys load");
    client_for(sandbox, config)
}

/// As [`connect`], in certificate mode: the client sends `app_cert_sn` / `alipay_root_cert_sn`
/// and checks `alipay_cert_sn`, and the sandbox refuses requests whose SNs do not match.
pub fn connect_cert_mode(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32) -> AlipayClient {
    let sn = cert::cert_sn(MERCHANT_APP_CERT).expect("the test merchant's app certificate has an SN");
    register(sandbox, merchant_id, fee_rate_ppm, Some(sn));
    let config = AlipayConfig::certificate_mode(
        merchant_id,
        MERCHANT_PRIVATE_KEY,
        MERCHANT_APP_CERT,
        PLATFORM_CERT,
        ROOT_CERT,
    )
    .expect("the test merchant's certificates load");
    client_for(sandbox, config)
}

fn register(sandbox: &Sandbox, merchant_id: &str, fee_rate_ppm: u32, app_cert_sn: Option<String>) {
    let mut extra = HashMap::new();
    extra.insert("pid".to_string(), pid_for(merchant_id));
    if let Some(sn) = app_cert_sn {
        extra.insert("app_cert_sn".to_string(), sn);
    }
    sandbox.register_merchant(SimMerchant {
        channel: Channel::Alipay,
        merchant_id: merchant_id.to_string(),
        merchant_public_key: load_public_key(MERCHANT_PUBLIC_KEY).expect("the test merchant's public key loads"),
        fee_rate_ppm,
        extra,
    });
}

fn client_for(sandbox: &Sandbox, config: AlipayConfig) -> AlipayClient {
    let config = config
        .with_gateway_url(format!("{}/alipay/gateway.do", sandbox.base_url()))
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(2));
    AlipayClient::new(config).expect("an HTTP client for the sandbox builds")
}

/// A partner id (`2088` + 12 digits) for an app id, when none is configured.
/// The partner id the sandbox gives an app id that was registered without one (`2088` and the
/// app id's last twelve digits); its bills are for `<pid>0156`.
pub fn pid_for(app_id: &str) -> String {
    let digits: String = app_id.chars().filter(char::is_ascii_digit).collect();
    let tail = if digits.len() >= 12 {
        &digits[digits.len() - 12..]
    } else {
        &digits
    };
    format!("2088{tail:0>12}")
}

fn merchant_pid(m: &SimMerchant) -> String {
    m.extra.get("pid").cloned().unwrap_or_else(|| pid_for(&m.merchant_id))
}

// --- answers ---------------------------------------------------------------------------------

/// An answer to one call.
enum Reply {
    /// A signed `…_response` node.
    Node(String),
    /// A gateway-level refusal, unsigned.
    Unsigned(String),
    /// A browser flow: where to send the browser.
    Browser(Box<Response>),
}

fn common(code: &str, sub_code: Option<&str>, sub_msg: Option<&str>) -> Common {
    let msg = match code {
        "10000" => "Success",
        "20000" => "Service Currently Unavailable",
        "40001" => "Missing Required Arguments",
        "40002" => "Invalid Arguments",
        "40004" => "Business Failed",
        _ => "Error",
    };
    Common {
        code: code.into(),
        msg: msg.into(),
        sub_code: sub_code.map(str::to_string),
        sub_msg: sub_msg.map(str::to_string),
    }
}

fn ok() -> Common {
    common("10000", None, None)
}

/// Alipay's JSON writes `/` as `\/`; the node is signed exactly as sent.
fn node_text(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".into())
        .replace('/', "\\/")
}

fn business(sub_code: &str, sub_msg: &str) -> Reply {
    Reply::Node(node_text(&common("40004", Some(sub_code), Some(sub_msg))))
}

fn refusal(code: &str, sub_code: &str, sub_msg: &str) -> Reply {
    Reply::Unsigned(node_text(&common(code, Some(sub_code), Some(sub_msg))))
}

impl AlipaySim {
    fn answer(&self, method: Option<&str>, merchant: Option<&SimMerchant>, reply: Reply) -> Response {
        let key = method.map(response_node_key).unwrap_or_else(|| "error_response".into());
        let body = match reply {
            Reply::Browser(r) => return *r,
            Reply::Unsigned(node) => format!("{{\"{key}\":{node}}}"),
            Reply::Node(node) => {
                let sign = self.inner.platform_key.sign_sha256_base64(node.as_bytes());
                let cert_sn = match merchant.and_then(|m| m.extra.get("app_cert_sn")) {
                    Some(_) => format!(",\"alipay_cert_sn\":\"{}\"", self.inner.platform_cert_sn),
                    None => String::new(),
                };
                format!("{{\"{key}\":{node},\"sign\":\"{sign}\"{cert_sn}}}")
            }
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html;charset=utf-8")],
            body,
        )
            .into_response()
    }

    /// One `gateway.do` request.
    async fn gateway(&self, sb: Sandbox, query: Option<String>, body: Bytes) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        // Parameters: the URL query, then the form body. The charset comes from the query only.
        let query = query.unwrap_or_default();
        let raw_query = split_form(query.as_bytes());
        let raw_body = split_form(&body);
        let charset = raw_query
            .iter()
            .find(|(k, _)| k == "charset")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .and_then(Charset::from_label)
            .unwrap_or(Charset::Gbk);
        let mut params: Vec<(String, String)> = Vec::new();
        for (k, v) in raw_query.into_iter().chain(raw_body) {
            let value = match charset {
                Charset::Utf8 => String::from_utf8_lossy(&v).into_owned(),
                Charset::Gbk => encoding_rs::GB18030.decode_without_bom_handling(&v).0.into_owned(),
            };
            if params.iter().any(|(name, _)| *name == k) {
                return self.answer(
                    None,
                    None,
                    refusal("40002", "isv.invalid-parameter", &format!("参数{k}重复")),
                );
            }
            params.push((k, value));
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let Some(method) = get("method").map(str::to_string) else {
            return self.answer(None, None, refusal("40001", "isv.missing-method", "缺少方法名参数"));
        };
        let m = Some(method.as_str());
        let known = [
            METHOD_PRECREATE,
            METHOD_PAGE_PAY,
            METHOD_WAP_PAY,
            METHOD_QUERY,
            METHOD_CLOSE,
            METHOD_REFUND,
            METHOD_REFUND_QUERY,
            METHOD_BILL_URL,
        ];
        if !known.contains(&method.as_str()) {
            return self.answer(None, None, refusal("40002", "isv.invalid-method", "不存在的方法名"));
        }
        let Some(app_id) = get("app_id").map(str::to_string) else {
            return self.answer(m, None, refusal("40001", "isv.missing-app-id", "缺少AppID参数"));
        };
        let Ok(merchant) = sb.merchant(Channel::Alipay, &app_id) else {
            return self.answer(m, None, refusal("40002", "isv.invalid-app-id", "无效的AppID参数"));
        };
        let mm = Some(&merchant);
        if get("sign").is_none() {
            return self.answer(m, mm, refusal("40001", "isv.missing-signature", "缺少签名参数"));
        }
        match get("sign_type") {
            Some(SIGN_TYPE) => {}
            None => {
                return self.answer(
                    m,
                    mm,
                    refusal("40001", "isv.missing-signature-type", "缺少签名类型参数"),
                )
            }
            Some(_) => {
                return self.answer(
                    m,
                    mm,
                    refusal("40002", "isv.invalid-signature-type", "无效的签名类型参数"),
                )
            }
        }
        let fresh = get("timestamp")
            .and_then(parse_beijing_time)
            .is_some_and(|t| (t - Utc::now()).num_seconds().abs() <= TIMESTAMP_TOLERANCE_SECS);
        if !fresh {
            return self.answer(m, mm, refusal("40002", "isv.invalid-timestamp", "非法的时间戳参数"));
        }
        if verify_request(&params, &merchant.merchant_public_key).is_err() {
            return self.answer(
                m,
                mm,
                refusal(
                    "40002",
                    "isv.invalid-signature",
                    "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配",
                ),
            );
        }
        if let Some(sn) = merchant.extra.get("app_cert_sn") {
            if get("app_cert_sn") != Some(sn.as_str()) {
                return self.answer(
                    m,
                    mm,
                    refusal("40002", "isv.app-cert-sn-mismatch", "应用公钥证书序列号不匹配"),
                );
            }
            if get("alipay_root_cert_sn") != Some(self.inner.root_cert_sn.as_str()) {
                return self.answer(
                    m,
                    mm,
                    refusal("40002", "isv.alipay-root-cert-sn-mismatch", "支付宝根证书序列号不匹配"),
                );
            }
        }
        let biz: serde_json::Value = match get("biz_content").map(serde_json::from_str) {
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                return self.answer(
                    m,
                    mm,
                    refusal("40002", "isv.invalid-biz-content", "biz_content不是合法的JSON"),
                )
            }
            None => {
                return self.answer(
                    m,
                    mm,
                    refusal("40001", "isv.missing-biz-content", "缺少biz_content参数"),
                )
            }
        };
        let ctx = Call {
            sb: &sb,
            merchant: &merchant,
            charset,
            notify_url: get("notify_url").map(str::to_string),
            return_url: get("return_url").map(str::to_string),
        };
        let reply = match method.as_str() {
            METHOD_PRECREATE => parse_biz(biz).map_or_else(|r| r, |b| self.precreate(&ctx, b)),
            METHOD_PAGE_PAY | METHOD_WAP_PAY => {
                parse_biz(biz).map_or_else(|r| r, |b| self.browser_pay(&ctx, &method, b))
            }
            METHOD_QUERY => parse_biz(biz).map_or_else(|r| r, |b| self.query(&ctx, b)),
            METHOD_CLOSE => parse_biz(biz).map_or_else(|r| r, |b| self.close(&ctx, b)),
            METHOD_REFUND => parse_biz(biz).map_or_else(|r| r, |b| self.refund(&ctx, b)),
            METHOD_REFUND_QUERY => parse_biz(biz).map_or_else(|r| r, |b| self.refund_query(&ctx, b)),
            _ => parse_biz(biz).map_or_else(|r| r, |b| self.bill_url(&ctx, b)),
        };
        self.answer(m, mm, reply)
    }
}

fn split_form(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    bytes
        .split(|&b| b == b'&')
        .filter(|s| !s.is_empty())
        .map(|seg| {
            let (k, v) = match seg.iter().position(|&b| b == b'=') {
                Some(p) => (&seg[..p], &seg[p + 1..]),
                None => (seg, &b""[..]),
            };
            (String::from_utf8_lossy(&form_decode(k)).into_owned(), form_decode(v))
        })
        .collect()
}

fn parse_biz<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Reply> {
    serde_json::from_value(v).map_err(|e| business("ACQ.INVALID_PARAMETER", &format!("参数有误: {e}")))
}

struct Call<'a> {
    sb: &'a Sandbox,
    merchant: &'a SimMerchant,
    charset: Charset,
    notify_url: Option<String>,
    return_url: Option<String>,
}

fn masked_buyer() -> String {
    "san***@sandbox.example".into()
}

impl AlipaySim {
    #[allow(clippy::too_many_arguments)]
    fn new_order(
        &self,
        ctx: &Call<'_>,
        out_trade_no: &str,
        total_amount: &str,
        subject: &str,
        time_expire: Option<&str>,
        method: PayMethod,
        scanned: bool,
    ) -> Result<SimOrder, Reply> {
        if out_trade_no.is_empty() || out_trade_no.len() > 64 {
            return Err(business("ACQ.INVALID_PARAMETER", "out_trade_no无效"));
        }
        let amount_fen = match amount_from_wire(total_amount) {
            Ok(f) if (MIN_FEN..=MAX_FEN).contains(&f) => f,
            _ => return Err(business("ACQ.INVALID_PARAMETER", "total_amount无效")),
        };
        let expires_at = match time_expire {
            None => None,
            Some(t) => {
                Some(parse_beijing_time(t).ok_or_else(|| business("ACQ.INVALID_PARAMETER", "time_expire格式错误"))?)
            }
        };
        let mut extra = HashMap::new();
        extra.insert("scanned".to_string(), scanned.to_string());
        extra.insert("charset".to_string(), ctx.charset.label().to_string());
        let order = SimOrder {
            channel: Channel::Alipay,
            merchant_id: ctx.merchant.merchant_id.clone(),
            order_no: out_trade_no.to_string(),
            amount_fen,
            subject: subject.to_string(),
            notify_url: ctx.notify_url.clone().unwrap_or_default(),
            return_url: ctx.return_url.clone(),
            method,
            created_at: ctx.sb.now(),
            expires_at,
            state: SimOrderState::Created,
            gateway_txn_id: None,
            paid_at: None,
            refunds: vec![],
            extra,
        };
        match ctx.sb.create_order(order) {
            Ok(o) => {
                if scanned {
                    let _ = ctx
                        .sb
                        .update_order_extra(Channel::Alipay, &o.merchant_id, &o.order_no, |e| {
                            e.insert("scanned".into(), "true".into());
                        });
                }
                Ok(o)
            }
            Err(SimError::DuplicateOrder(_)) => Err(business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")),
            Err(SimError::AlreadyPaid(_)) => Err(business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")),
            Err(SimError::Closed(_)) => Err(business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")),
            Err(e) => Err(business("ACQ.SYSTEM_ERROR", &e.to_string())),
        }
    }

    fn precreate(&self, ctx: &Call<'_>, b: PrecreateBiz) -> Reply {
        match self.new_order(
            ctx,
            &b.out_trade_no,
            &b.total_amount,
            &b.subject,
            b.time_expire.as_deref(),
            PayMethod::Qr,
            false,
        ) {
            Ok(o) => Reply::Node(node_text(&PrecreateResponse {
                common: ok(),
                out_trade_no: Some(o.order_no.clone()),
                qr_code: Some(format!(
                    "{}/alipay/qr/{}/{}",
                    ctx.sb.base_url(),
                    o.merchant_id,
                    o.order_no
                )),
            })),
            Err(r) => r,
        }
    }

    fn browser_pay(&self, ctx: &Call<'_>, method: &str, b: BrowserPayBiz) -> Reply {
        let (want, pay_method) = if method == METHOD_WAP_PAY {
            ("QUICK_WAP_WAY", PayMethod::H5)
        } else {
            ("FAST_INSTANT_TRADE_PAY", PayMethod::Web)
        };
        let result = if b.product_code != want {
            Err(business("ACQ.INVALID_PARAMETER", "product_code无效"))
        } else {
            self.new_order(
                ctx,
                &b.out_trade_no,
                &b.total_amount,
                &b.subject,
                b.time_expire.as_deref(),
                pay_method,
                true,
            )
        };
        Reply::Browser(Box::new(match result {
            Ok(o) => Redirect::to(&format!(
                "{}/sandbox/wallet/alipay/{}/{}",
                ctx.sb.base_url(),
                o.merchant_id,
                o.order_no
            ))
            .into_response(),
            Err(Reply::Node(node)) | Err(Reply::Unsigned(node)) => (
                StatusCode::BAD_REQUEST,
                Html(format!(
                    "<!doctype html><meta charset=\"utf-8\"><title>支付宝 - 错误</title><h1>抱歉，无法付款</h1><pre>{}</pre>",
                    esc(&node)
                )),
            )
                .into_response(),
            Err(Reply::Browser(r)) => *r,
        }))
    }

    fn order_of(&self, ctx: &Call<'_>, out_trade_no: &str) -> Option<SimOrder> {
        ctx.sb.order(Channel::Alipay, &ctx.merchant.merchant_id, out_trade_no)
    }

    fn query(&self, ctx: &Call<'_>, b: TradeRefBiz) -> Reply {
        let Some(o) = self.order_of(ctx, &b.out_trade_no) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let scanned = o.extra.get("scanned").map(String::as_str) == Some("true");
        let expired = o.expires_at.is_some_and(|e| e < ctx.sb.now());
        let status = match o.state {
            SimOrderState::Created if !scanned => return business("ACQ.TRADE_NOT_EXIST", "交易不存在"),
            SimOrderState::Created if expired => "TRADE_CLOSED",
            SimOrderState::Created => "WAIT_BUYER_PAY",
            SimOrderState::Paid if succeeded_refunds(&o) >= o.amount_fen => "TRADE_CLOSED",
            SimOrderState::Paid => "TRADE_SUCCESS",
            SimOrderState::Closed => "TRADE_CLOSED",
        };
        let paid = o.state == SimOrderState::Paid;
        let total = fen_to_yuan(o.amount_fen);
        Reply::Node(node_text(&QueryResponse {
            common: ok(),
            trade_no: o.gateway_txn_id.clone(),
            out_trade_no: Some(o.order_no.clone()),
            buyer_logon_id: paid.then(masked_buyer),
            trade_status: Some(status.into()),
            total_amount: Some(total.clone()),
            receipt_amount: paid.then(|| total.clone()),
            buyer_pay_amount: paid.then(|| total.clone()),
            send_pay_date: o.paid_at.map(beijing_time),
        }))
    }

    fn close(&self, ctx: &Call<'_>, b: TradeRefBiz) -> Reply {
        let Some(o) = self.order_of(ctx, &b.out_trade_no) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let scanned = o.extra.get("scanned").map(String::as_str) == Some("true");
        match o.state {
            // Alipay has no trade yet: nothing is closed, and the QR code stays payable until
            // its time_expire.
            SimOrderState::Created if !scanned => business("ACQ.TRADE_NOT_EXIST", "交易不存在"),
            SimOrderState::Created => match ctx.sb.close(Channel::Alipay, &o.merchant_id, &o.order_no) {
                Ok(c) => Reply::Node(node_text(&CloseResponse {
                    common: ok(),
                    trade_no: c.gateway_txn_id,
                    out_trade_no: Some(c.order_no),
                })),
                Err(_) => business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
            },
            SimOrderState::Paid | SimOrderState::Closed => business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
        }
    }

    fn refund(&self, ctx: &Call<'_>, b: RefundBiz) -> Reply {
        let Some(o) = self.order_of(ctx, &b.out_trade_no) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let Ok(amount_fen) = amount_from_wire(&b.refund_amount) else {
            return business("ACQ.INVALID_PARAMETER", "refund_amount无效");
        };
        let refund_no = b
            .out_request_no
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| o.order_no.clone());
        let answer = |o: &SimOrder, fund_change: &str, at: Option<DateTime<Utc>>| {
            Reply::Node(node_text(&RefundResponse {
                common: ok(),
                trade_no: o.gateway_txn_id.clone(),
                out_trade_no: Some(o.order_no.clone()),
                buyer_logon_id: Some(masked_buyer()),
                fund_change: Some(fund_change.into()),
                refund_fee: Some(fen_to_yuan(succeeded_refunds(o))),
                gmt_refund_pay: at.map(beijing_time),
            }))
        };
        if let Some(existing) = o.refunds.iter().find(|r| r.refund_no == refund_no) {
            return if existing.amount_fen == amount_fen {
                answer(&o, "N", existing.refunded_at)
            } else {
                business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额与原退款请求不一致")
            };
        }
        let reason = b.refund_reason.clone().unwrap_or_default();
        match ctx.sb.refund(
            Channel::Alipay,
            &o.merchant_id,
            &o.order_no,
            &refund_no,
            amount_fen,
            &reason,
            None,
            true,
        ) {
            Ok(r) => {
                let after = self.order_of(ctx, &o.order_no).unwrap_or(o);
                answer(&after, "Y", r.refunded_at)
            }
            Err(SimError::NotPaid(_)) => business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
            Err(SimError::RefundTooLarge { .. }) | Err(SimError::RefundConflict(_)) => {
                business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            }
            Err(SimError::NoSuchOrder(_)) => business("ACQ.TRADE_NOT_EXIST", "交易不存在"),
            Err(e) => business("ACQ.SYSTEM_ERROR", &e.to_string()),
        }
    }

    fn refund_query(&self, ctx: &Call<'_>, b: RefundQueryBiz) -> Reply {
        let Some(o) = self.order_of(ctx, &b.out_trade_no) else {
            return business("ACQ.TRADE_NOT_EXIST", "交易不存在");
        };
        let found = o
            .refunds
            .iter()
            .find(|r| r.refund_no == b.out_request_no && r.state == SimRefundState::Succeeded);
        let with_time = b.query_options.iter().any(|q| q == "gmt_refund_pay");
        Reply::Node(node_text(&match found {
            // Absent refund: success with no refund_status, as Alipay answers.
            None => RefundQueryResponse {
                common: ok(),
                trade_no: o.gateway_txn_id.clone(),
                out_trade_no: Some(o.order_no.clone()),
                ..RefundQueryResponse::default()
            },
            Some(r) => RefundQueryResponse {
                common: ok(),
                trade_no: o.gateway_txn_id.clone(),
                out_trade_no: Some(o.order_no.clone()),
                out_request_no: Some(r.refund_no.clone()),
                total_amount: Some(fen_to_yuan(o.amount_fen)),
                refund_amount: Some(fen_to_yuan(r.amount_fen)),
                refund_status: Some("REFUND_SUCCESS".into()),
                gmt_refund_pay: if with_time {
                    r.refunded_at.map(beijing_time)
                } else {
                    None
                },
            },
        }))
    }

    fn bill_url(&self, ctx: &Call<'_>, b: BillUrlBiz) -> Reply {
        if b.bill_type != "trade" {
            return business("ACQ.INVALID_PARAMETER", "bill_type仅支持trade");
        }
        let Ok(day) = NaiveDate::parse_from_str(&b.bill_date, "%Y-%m-%d") else {
            return business("ACQ.INVALID_PARAMETER", "bill_date格式错误，应为yyyy-MM-dd");
        };
        let today = ctx.sb.now().with_timezone(&cst()).date_naive();
        if day >= today {
            return business("isp.bill_not_exist", "账单不存在");
        }
        let token = hex::encode(rand::random::<[u8; 16]>());
        if let Ok(mut links) = self.inner.bill_links.lock() {
            links.retain(|_, (_, _, at)| (Utc::now() - *at).num_seconds() <= BILL_LINK_SECS);
            links.insert(token.clone(), (ctx.merchant.merchant_id.clone(), day, Utc::now()));
        }
        Reply::Node(node_text(&BillUrlResponse {
            common: ok(),
            bill_download_url: Some(format!(
                "{}/alipay/bill/download?token={token}&fileType=csv.zip&bizDates={}",
                ctx.sb.base_url(),
                day.format("%Y%m%d")
            )),
        }))
    }

    async fn bill_download(&self, sb: Sandbox, token: Option<String>) -> Response {
        if let Some(r) = sb.injected_api_fault().await {
            return r;
        }
        let link = token.and_then(|t| self.inner.bill_links.lock().ok().and_then(|l| l.get(&t).cloned()));
        let Some((merchant_id, day, at)) = link.filter(|(_, _, at)| (Utc::now() - *at).num_seconds() <= BILL_LINK_SECS)
        else {
            return (StatusCode::NOT_FOUND, "the bill link is unknown or has expired").into_response();
        };
        let _ = at;
        match sb.settlement_file(Channel::Alipay, &merchant_id, day) {
            Ok(bytes) => (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/oct-stream".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!(
                            "attachment; filename=\"{}_{}.csv.zip\"",
                            merchant_id,
                            day.format("%Y%m%d")
                        ),
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        }
    }
}

fn succeeded_refunds(o: &SimOrder) -> i64 {
    o.refunds
        .iter()
        .filter(|r| r.state == SimRefundState::Succeeded)
        .map(|r| r.amount_fen)
        .sum()
}

// --- notifications ---------------------------------------------------------------------------

impl AlipaySim {
    /// A signed `trade_status_sync` notification: the parameters as Alipay sends them, signed
    /// over the sorted parameters without `sign` and `sign_type` in the order's charset.
    fn notification(
        &self,
        sb: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
        trade_status: &str,
        refund: Option<&SimRefund>,
    ) -> Option<OutgoingNotification> {
        let url = refund
            .and_then(|r| r.notify_url.clone())
            .unwrap_or_else(|| order.notify_url.clone());
        if url.is_empty() {
            return None;
        }
        let charset = order
            .extra
            .get("charset")
            .and_then(|c| Charset::from_label(c))
            .unwrap_or(Charset::Utf8);
        let now = sb.now();
        let total = fen_to_yuan(order.amount_fen);
        let pid = merchant_pid(merchant);
        let notify_id = format!(
            "{}0022{:024}",
            now.with_timezone(&cst()).format("%Y%m%d"),
            sb.next_seq()
        );
        let mut p: Vec<(&str, String)> = vec![
            ("gmt_create", beijing_time(order.created_at)),
            ("charset", charset.label().to_string()),
            ("seller_email", "sandbox-seller@meterpay.example".into()),
            ("subject", order.subject.clone()),
            ("buyer_id", "2088102000000001".into()),
            ("invoice_amount", total.clone()),
            ("notify_id", notify_id),
            (
                "fund_bill_list",
                format!("[{{\"amount\":\"{total}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"),
            ),
            ("notify_type", "trade_status_sync".into()),
            ("trade_status", trade_status.into()),
            ("receipt_amount", total.clone()),
            ("buyer_pay_amount", total.clone()),
            ("sign_type", SIGN_TYPE.into()),
            ("app_id", merchant.merchant_id.clone()),
            ("seller_id", pid),
            ("notify_time", beijing_time(now)),
            ("version", "1.0".into()),
            ("out_trade_no", order.order_no.clone()),
            ("total_amount", total),
            ("trade_no", order.gateway_txn_id.clone().unwrap_or_default()),
            ("auth_app_id", merchant.merchant_id.clone()),
            ("buyer_logon_id", masked_buyer()),
            ("point_amount", "0.00".into()),
        ];
        if let Some(paid_at) = order.paid_at {
            p.push(("gmt_payment", beijing_time(paid_at)));
        }
        if let Some(pb) = order.extra.get("passback_params") {
            p.push(("passback_params", pb.clone()));
        }
        if let Some(r) = refund {
            p.push(("out_biz_no", r.refund_no.clone()));
            p.push(("refund_fee", fen_to_yuan(succeeded_refunds(order))));
            let at = r.refunded_at.unwrap_or(now);
            p.push((
                "gmt_refund",
                format!("{}.{:03}", beijing_time(at), at.timestamp_subsec_millis()),
            ));
            if trade_status == "TRADE_CLOSED" {
                p.push(("gmt_close", beijing_time(at)));
            }
        }
        // Values as bytes in the charset (GBK when the request's charset was not in the URL).
        let encoded: Vec<(&str, Vec<u8>)> = p
            .into_iter()
            .map(|(k, v)| {
                let bytes = charset.encode(&v).unwrap_or_else(|| v.into_bytes());
                (k, bytes)
            })
            .collect();
        let mut sorted: Vec<&(&str, Vec<u8>)> = encoded.iter().filter(|(k, _)| *k != "sign_type").collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut content = Vec::new();
        for (i, (k, v)) in sorted.into_iter().enumerate() {
            if i > 0 {
                content.push(b'&');
            }
            content.extend_from_slice(k.as_bytes());
            content.push(b'=');
            content.extend_from_slice(v);
        }
        let sign = self.inner.platform_key.sign_sha256_base64(&content);
        let mut body: Vec<String> = encoded.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
        body.push(format!("sign={}", form_encode(sign.as_bytes())));
        Some(OutgoingNotification {
            channel: Channel::Alipay,
            order_no: order.order_no.clone(),
            refund_no: refund.map(|r| r.refund_no.clone()),
            url,
            content_type: format!("application/x-www-form-urlencoded; charset={}", charset.label()),
            headers: vec![],
            body: body.join("&").into_bytes(),
            schedule: NOTIFY_SCHEDULE_SECS.iter().map(|s| Duration::from_secs(*s)).collect(),
            acknowledged: |status, body| status == 200 && body == b"success",
        })
    }
}

impl GatewaySim for AlipaySim {
    fn channel(&self) -> Channel {
        Channel::Alipay
    }

    fn routes(&self) -> Router<Sandbox> {
        let gw = self.clone();
        let bill = self.clone();
        Router::new()
            .route(
                "/alipay/gateway.do",
                any(move |State(sb): State<Sandbox>, RawQuery(q): RawQuery, body: Bytes| {
                    let gw = gw.clone();
                    async move { gw.gateway(sb, q, body).await }
                }),
            )
            .route("/alipay/qr/{merchant}/{order_no}", get(scan))
            .route(
                "/alipay/bill/download",
                get(
                    move |State(sb): State<Sandbox>, Query(q): Query<HashMap<String, String>>| {
                        let bill = bill.clone();
                        async move { bill.bill_download(sb, q.get("token").cloned()).await }
                    },
                ),
            )
    }

    fn new_txn_id(&self, sandbox: &Sandbox, _order: &SimOrder) -> String {
        // 28 digits: yyyyMMdd, "22", 18 digits.
        format!(
            "{}22{:018}",
            sandbox.now().with_timezone(&cst()).format("%Y%m%d"),
            sandbox.next_seq()
        )
    }

    fn new_refund_id(&self, sandbox: &Sandbox, _order: &SimOrder) -> String {
        // Alipay names refunds by the merchant's out_request_no; this id stays inside the sandbox.
        format!(
            "R{}{:018}",
            sandbox.now().with_timezone(&cst()).format("%Y%m%d"),
            sandbox.next_seq()
        )
    }

    fn payment_notification(
        &self,
        sandbox: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
    ) -> Option<OutgoingNotification> {
        self.notification(sandbox, merchant, order, "TRADE_SUCCESS", None)
    }

    fn refund_notification(
        &self,
        sandbox: &Sandbox,
        merchant: &SimMerchant,
        order: &SimOrder,
        refund: &SimRefund,
    ) -> Option<OutgoingNotification> {
        let status = if succeeded_refunds(order) >= order.amount_fen {
            "TRADE_CLOSED"
        } else {
            "TRADE_SUCCESS"
        };
        self.notification(sandbox, merchant, order, status, Some(refund))
    }

    fn tamper(&self, notification: &mut OutgoingNotification) {
        // Change one character of the signature (still valid base64, no longer Alipay's).
        let body = String::from_utf8_lossy(&notification.body).into_owned();
        let tampered: Vec<String> = body
            .split('&')
            .map(|pair| match pair.strip_prefix("sign=") {
                Some(sig) => {
                    let mut chars: Vec<char> = sig.chars().collect();
                    if let Some(c) = chars.first_mut() {
                        *c = if *c == 'A' { 'B' } else { 'A' };
                    }
                    format!("sign={}", chars.into_iter().collect::<String>())
                }
                None => pair.to_string(),
            })
            .collect();
        notification.body = tampered.join("&").into_bytes();
    }

    fn settlement_file(&self, sandbox: &Sandbox, merchant: &SimMerchant, day: NaiveDate, txns: &[SimTxn]) -> Vec<u8> {
        let local = |t: DateTime<Utc>| t.with_timezone(&cst()).naive_local();
        let rows: Vec<BillRow> = txns
            .iter()
            .map(|t| {
                let created = sandbox
                    .order(Channel::Alipay, &t.merchant_id, &t.order_no)
                    .map(|o| o.created_at)
                    .unwrap_or(t.at);
                let sign = match t.kind {
                    RowKind::Payment => 1,
                    RowKind::Refund => -1,
                };
                BillRow {
                    trade_no: t.gateway_txn_id.clone(),
                    out_trade_no: t.order_no.clone(),
                    kind: t.kind,
                    subject: t.subject.clone(),
                    created: local(created),
                    finished: local(t.at),
                    store_id: String::new(),
                    store_name: String::new(),
                    operator: String::new(),
                    terminal: String::new(),
                    buyer: "*沙箱(san***@sandbox.example)".into(),
                    order_amount_fen: sign * t.amount_fen,
                    received_fen: sign * t.amount_fen,
                    merchant_discount_fen: 0,
                    refund_no: t.refund_no.clone(),
                    fee_fen: t.fee_fen(),
                    remark: String::new(),
                }
            })
            .collect();
        let exported = day.succ_opt().unwrap_or(day).and_hms_opt(5, 46, 49).unwrap_or_default();
        write_zip(&format!("{}0156", merchant_pid(merchant)), day, &rows, exported)
    }
}

/// The payer scans a precreate QR code: Alipay creates the trade, and the payer sees the
/// cashier (the wallet page).
async fn scan(State(sb): State<Sandbox>, Path((merchant, order_no)): Path<(String, String)>) -> Response {
    match sb.update_order_extra(Channel::Alipay, &merchant, &order_no, |e| {
        e.insert("scanned".into(), "true".into());
    }) {
        Ok(()) => Redirect::to(&format!("/sandbox/wallet/alipay/{merchant}/{order_no}")).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}
