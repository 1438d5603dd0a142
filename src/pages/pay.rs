//! Paying from the resident page: the pay buttons, the order status page, receipts, top-ups.
//!
//! | route | what |
//! |---|---|
//! | `POST /pay/{token}/orders` | `channel`, `method`, optional `top_up` (yuan): an order for every open bill of the link's account (or a top-up), then on to the gateway (`303` to its page) or to the status page (QR code, UnionPay form, WeChat JSAPI) |
//! | `GET /pay/{token}/orders/{order_no}` | the status page: what to do next while the order waits (the QR code, the form, the JSAPI call), paid with the receipt link, or closed |
//! | `GET /pay/{token}/orders/latest` | the account's latest order's status page (the gateways' return URL) |
//! | `GET /pay/{token}/orders/{order_no}/status` | `{"status"}` as JSON, for the status page's few lines of script |
//! | `GET /pay/{token}/receipts/{receipt_no}` | a receipt |
//!
//! **Which buttons** ([`buttons_for`]): inside WeChat (`MicroMessenger` in the User-Agent) WeChat
//! Pay JSAPI (Alipay does not open inside WeChat) and UnionPay's mobile page; in another mobile
//! browser Alipay H5, WeChat Pay H5 and UnionPay's mobile page; on a desktop Alipay and WeChat Pay
//! QR codes to scan with a phone and UnionPay's web payment. Only channels with a merchant
//! configured for the account's community are offered.
//!
//! **Following the order.** The status page asks the gateway (an active query, which applies a
//! payment whose callback has not arrived) each time it is opened while the order waits. With
//! JavaScript it polls the JSON status every two seconds and reloads once the order moves; without
//! JavaScript the "refresh" link does the same. That script, and the JSAPI call inside WeChat, are
//! the only scripts of any page: they run under a per-response CSP nonce.
//!
//! **Access.** As every resident page: the signed link first, then only the link's account —
//! another account's order or receipt answers `404` like one that does not exist. The link is
//! the capability, so these forms need no session or CSRF cookie: a forged cross-site post would
//! need the token it is posted to.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::Utc;
use maud::{html, Markup, PreEscaped};
use meterpay_gateways::gateway::{Channel, PayMethod};
use serde::Deserialize;

use super::resident::{account_of, resident_error, resident_page, verify};
use super::{cst, yuan};
use crate::http::auth::SourceAddr;
use crate::http::pages::{layout, AnyPage, Page, PageCtx, PageError};
use crate::http::AppState;
use crate::payments::{IfLive, OrderRequest, PaymentsPort};
use crate::store::payments::OrderRow;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pay/{token}/orders", post(create_order))
        .route("/pay/{token}/orders/{order_no}", get(status_page))
        .route("/pay/{token}/orders/{order_no}/status", get(status_json))
        .route("/pay/{token}/receipts/{receipt_no}", get(receipt_page))
}

/// Where the resident page is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Inside the WeChat app.
    WeChat,
    /// Another mobile browser.
    Mobile,
    /// A desktop browser.
    Desktop,
}

/// Where a request comes from, by its User-Agent.
pub fn opened_in(headers: &HeaderMap) -> Opened {
    let ua = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ua.contains("MicroMessenger") {
        Opened::WeChat
    } else if ["Mobile", "Android", "iPhone", "iPad", "HarmonyOS"]
        .iter()
        .any(|m| ua.contains(m))
    {
        Opened::Mobile
    } else {
        Opened::Desktop
    }
}

/// The pay buttons for where the page is opened, in order.
pub fn buttons_for(opened: Opened) -> &'static [(Channel, PayMethod)] {
    match opened {
        Opened::WeChat => &[
            (Channel::Wechatpay, PayMethod::Jsapi),
            (Channel::Unionpay, PayMethod::H5),
        ],
        Opened::Mobile => &[
            (Channel::Alipay, PayMethod::H5),
            (Channel::Wechatpay, PayMethod::H5),
            (Channel::Unionpay, PayMethod::H5),
        ],
        Opened::Desktop => &[
            (Channel::Alipay, PayMethod::Qr),
            (Channel::Wechatpay, PayMethod::Qr),
            (Channel::Unionpay, PayMethod::Web),
        ],
    }
}

fn method_str(m: PayMethod) -> &'static str {
    match m {
        PayMethod::Qr => "qr",
        PayMethod::H5 => "h5",
        PayMethod::Jsapi => "jsapi",
        PayMethod::Web => "web",
    }
}

fn method_of(s: &str) -> Option<PayMethod> {
    match s {
        "qr" => Some(PayMethod::Qr),
        "h5" => Some(PayMethod::H5),
        "jsapi" => Some(PayMethod::Jsapi),
        "web" => Some(PayMethod::Web),
        _ => None,
    }
}

fn channel_name(ctx: &PageCtx, c: &str) -> &'static str {
    match c {
        "alipay" => ctx.t("pay.alipay"),
        "wechatpay" => ctx.t("pay.wechatpay"),
        "unionpay" => ctx.t("pay.unionpay"),
        _ => ctx.t("util.other"),
    }
}

/// The channels with a merchant for a community.
async fn channels_of(state: &AppState, community_id: i64) -> Vec<Channel> {
    match state.payments.merchants().await {
        Ok(ms) => ms
            .into_iter()
            .filter(|m| m.community_id == community_id)
            .map(|m| m.channel)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "listing merchants for the pay buttons failed");
            Vec::new()
        }
    }
}

/// The pay section of the resident page: a button per channel that fits where it is opened, and
/// (prepaid accounts) the top-up form.
pub async fn pay_section(
    state: &AppState,
    ctx: &PageCtx,
    headers: &HeaderMap,
    token: &str,
    community_id: i64,
    owed: i64,
    prepaid: bool,
) -> Markup {
    let available = channels_of(state, community_id).await;
    let buttons: Vec<(Channel, PayMethod)> = buttons_for(opened_in(headers))
        .iter()
        .copied()
        .filter(|(c, _)| available.contains(c))
        .collect();
    let action = format!("/pay/{token}/orders");
    html! {
        @if buttons.is_empty() {
            @if owed > 0 || prepaid { p { (ctx.t("pay.unavailable")) } }
        } @else {
            @if owed > 0 {
                section.pay aria-labelledby="pay" {
                    h2 #pay { (ctx.tf("pay.heading", &[("amount", &yuan(owed))])) }
                    @for (c, m) in &buttons {
                        form.paybutton method="post" action=(action) {
                            input type="hidden" name="channel" value=(c.as_str());
                            input type="hidden" name="method" value=(method_str(*m));
                            button.primary type="submit" data-channel=(c.as_str()) { (channel_name(ctx, c.as_str())) }
                        }
                    }
                }
            }
            @if prepaid {
                section.pay aria-labelledby="topup" {
                    h2 #topup { (ctx.t("pay.topup")) }
                    @for (i, (c, m)) in buttons.iter().enumerate() {
                        form.stack method="post" action=(action) {
                            input type="hidden" name="channel" value=(c.as_str());
                            input type="hidden" name="method" value=(method_str(*m));
                            label for={"topup-" (i)} { (ctx.tf("pay.topup_amount", &[("channel", channel_name(ctx, c.as_str()))])) }
                            input id={"topup-" (i)} name="top_up" type="text" inputmode="decimal" pattern="[0-9]+(\\.[0-9]{1,2})?" placeholder="100.00" required;
                            button.secondary type="submit" data-channel=(c.as_str()) { (ctx.t("pay.topup_submit")) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct PayForm {
    channel: String,
    method: String,
    #[serde(default)]
    top_up: Option<String>,
    #[serde(default)]
    openid: Option<String>,
}

async fn create_order(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    SourceAddr(source): SourceAddr,
    Path(token): Path<String>,
    Form(f): Form<PayForm>,
) -> Result<Response, PageError> {
    let claims = match verify(&state, &ctx, &token).await {
        Ok(c) => c,
        Err(refusal) => return Ok(refusal),
    };
    let account = account_of(&state, &claims).await?;
    let channel: Channel = f
        .channel
        .parse()
        .map_err(|_| PageError::BadRequest(format!("no payment channel {:?}", f.channel)))?;
    let method = method_of(&f.method).ok_or_else(|| PageError::BadRequest(format!("no pay method {:?}", f.method)))?;
    let top_up = f
        .top_up
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let bill_ids: Vec<i64> = if top_up.is_some() {
        Vec::new()
    } else {
        state
            .store
            .open_bills(account.id)
            .await?
            .iter()
            .filter(|b| b.outstanding_fen > 0)
            .map(|b| b.bill_id)
            .collect()
    };
    if top_up.is_none() && bill_ids.is_empty() {
        return Ok(resident_error(&ctx, StatusCode::BAD_REQUEST, ctx.t("res.nothing_owed")));
    }
    let base = state.config.http.public_base_url.trim_end_matches('/').to_string();
    let req = OrderRequest {
        account_id: account.id,
        bill_ids,
        top_up,
        channel,
        method,
        payer_openid: f.openid.filter(|o| !o.is_empty()),
        payer_ip: Some(source),
        return_url: Some(format!("{base}/pay/{token}/orders/latest")),
        // A resident who changes their mind (Alipay, then WeChat) gets the new order; the old
        // one is closed at its gateway first, so it cannot be paid as well.
        if_live: IfLive::Supersede,
    };
    let created = match state.payments.create_order(&req, "resident", Utc::now()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "a resident's order was refused");
            let msg = ctx.tf("pay.refused", &[("why", &e.to_string())]);
            return Ok(resident_error(&ctx, StatusCode::UNPROCESSABLE_ENTITY, &msg));
        }
    };
    // Straight on to the gateway's page when it has one; otherwise the status page shows what
    // to do (the QR code, the UnionPay form, the WeChat JSAPI call).
    if let Some(meterpay_gateways::gateway::PayerAction::Redirect { url }) = &created.payer_action {
        return Ok(Redirect::to(url).into_response());
    }
    Ok(Redirect::to(&format!("/pay/{token}/orders/{}", created.order_no)).into_response())
}

/// The link's account's order `order_no` (`latest`: its newest), or `None`.
async fn order_of(state: &AppState, account_id: i64, order_no: &str) -> Result<Option<OrderRow>, PageError> {
    if order_no == "latest" {
        let mut orders = state.store.account_payment_orders(account_id).await?;
        orders.sort_by_key(|o| (o.created_at, o.id));
        return Ok(orders.pop());
    }
    Ok(state
        .store
        .payment_order(order_no)
        .await?
        .filter(|o| o.account_id == account_id))
}

fn status_name(ctx: &PageCtx, s: &str) -> &'static str {
    match s {
        "created" => ctx.t("pay.status.created"),
        "paid" => ctx.t("pay.status.paid"),
        "closed" => ctx.t("pay.status.closed"),
        "refunded" | "partially_refunded" => ctx.t("pay.status.refunded"),
        _ => ctx.t("util.other"),
    }
}

/// A QR code of `content` as inline SVG (dark modules on white: 21:1).
fn qr_svg(content: &str) -> Option<String> {
    let code = qrcode::QrCode::new(content.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    // Inline in HTML: drop the XML declaration.
    Some(svg.split_once("?>").map(|(_, s)| s.to_string()).unwrap_or(svg))
}

fn action_markup(ctx: &PageCtx, o: &OrderRow, nonce: &str) -> Markup {
    let action: serde_json::Value = o
        .payer_action
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or(serde_json::Value::Null);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    match action["kind"].as_str() {
        Some("qr_code") => {
            let content = s(&action["content"]);
            html! {
                figure.qr data-content=(content) {
                    @if let Some(svg) = qr_svg(&content) {
                        div role="img" aria-label=(ctx.t("pay.qr_label")) { (PreEscaped(svg)) }
                    }
                    figcaption { (ctx.tf("pay.scan", &[("channel", channel_name(ctx, &o.channel))])) }
                }
            }
        }
        Some("redirect") => html! {
            p { a.button href=(s(&action["url"])) { (ctx.tf("pay.continue", &[("channel", channel_name(ctx, &o.channel))])) } }
        },
        Some("form") => {
            let fields: Vec<(String, String)> = serde_json::from_value(action["fields"].clone()).unwrap_or_default();
            html! {
                form.paybutton method="post" action=(s(&action["action"])) {
                    @for (k, v) in &fields { input type="hidden" name=(k) value=(v); }
                    button.primary type="submit" { (ctx.tf("pay.continue", &[("channel", channel_name(ctx, &o.channel))])) }
                }
            }
        }
        Some("jsapi") => {
            let params: Vec<(String, String)> = serde_json::from_value(action["params"].clone()).unwrap_or_default();
            let obj: serde_json::Map<String, serde_json::Value> = params
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            // JSON inside a script: escape `<` so no value can close the element.
            let json = serde_json::Value::Object(obj).to_string().replace('<', "\\u003c");
            html! {
                p { (ctx.t("pay.jsapi")) }
                script nonce=(nonce) {
                    (PreEscaped(format!(
                        "(function(){{var p={json};function go(){{WeixinJSBridge.invoke('getBrandWCPayRequest',p,function(){{location.reload();}});}}\
                         if(typeof WeixinJSBridge==='undefined'){{document.addEventListener('WeixinJSBridgeReady',go,false);}}else{{go();}}}})();"
                    )))
                }
            }
        }
        _ => html! {},
    }
}

async fn status_page(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    Path((token, order_no)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let claims = match verify(&state, &ctx, &token).await {
        Ok(c) => c,
        Err(refusal) => return Ok(refusal),
    };
    let Some(mut order) = order_of(&state, claims.account_id, &order_no).await? else {
        return Ok(resident_error(&ctx, StatusCode::NOT_FOUND, ctx.t("pay.no_such_order")));
    };
    if order.status == "created" {
        // Ask the gateway: a payment whose callback is late is applied now.
        match state.payments.query_and_apply(&order.order_no, Utc::now()).await {
            Ok(_) => {
                if let Some(fresh) = state.store.payment_order(&order.order_no).await? {
                    order = fresh;
                }
            }
            Err(e) => tracing::info!(error = %format!("{e:#}"), "querying an order for its status page failed"),
        }
    }
    let nonce = crate::access::random_token();
    let here = format!("/pay/{token}/orders/{}", order.order_no);
    let waiting = order.status == "created";
    let body = html! {
        dl.facts {
            dt { (ctx.t("pay.order_no")) } dd { (order.order_no) }
            dt { (ctx.t("pay.amount")) } dd.amount { (yuan(order.amount_fen)) }
            dt { (ctx.t("pay.channel")) } dd { (channel_name(&ctx, &order.channel)) }
            dt { (ctx.t("pay.status")) } dd #order-status data-status=(order.status) { (status_name(&ctx, &order.status)) }
        }
        @if waiting {
            (action_markup(&ctx, &order, &nonce))
            p.small { (ctx.tf("pay.expires", &[("at", &cst(order.expires_at))])) }
            p { a href=(here) { (ctx.t("pay.refresh")) } }
            script nonce=(nonce) {
                (PreEscaped(format!(
                    "(function(){{var u={};setInterval(function(){{fetch(u,{{cache:'no-store'}}).then(function(r){{return r.json();}})\
                     .then(function(j){{if(j.status!=='created'){{location.reload();}}}}).catch(function(){{}});}},2000);}})();",
                    serde_json::Value::String(format!("{here}/status"))
                )))
            }
        } @else if order.status == "paid" || order.status.contains("refunded") {
            (layout::notice("ok", ctx.t("pay.paid_notice")))
            p { a.button href={"/pay/" (token) "/receipts/" (crate::store::payments::receipt_no(&order.order_no))} { (ctx.t("pay.receipt")) } }
        } @else {
            (layout::notice("error", ctx.t("pay.closed_notice")))
        }
        p { a href={"/pay/" (token)} { (ctx.t("res.back")) } }
    };
    let page = Page::new(&ctx, resident_page(&ctx, ctx.t("pay.status_title"), body));
    Ok(if waiting { page.with_script_nonce(nonce) } else { page }.into_response())
}

async fn status_json(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    Path((token, order_no)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let claims = match verify(&state, &ctx, &token).await {
        Ok(c) => c,
        Err(refusal) => return Ok(refusal),
    };
    match order_of(&state, claims.account_id, &order_no).await? {
        Some(o) => Ok((
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({"status": o.status})),
        )
            .into_response()),
        None => Ok(resident_error(&ctx, StatusCode::NOT_FOUND, ctx.t("pay.no_such_order"))),
    }
}

async fn receipt_page(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    Path((token, receipt_no)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let claims = match verify(&state, &ctx, &token).await {
        Ok(c) => c,
        Err(refusal) => return Ok(refusal),
    };
    let Some(r) = state
        .store
        .receipt(&receipt_no)
        .await?
        .filter(|r| r.account_id == claims.account_id)
    else {
        return Ok(resident_error(
            &ctx,
            StatusCode::NOT_FOUND,
            ctx.t("pay.no_such_receipt"),
        ));
    };
    let bills: Vec<serde_json::Value> = serde_json::from_str(&r.bills).unwrap_or_default();
    let body = html! {
        dl.facts.receipt {
            dt { (ctx.t("pay.receipt_no")) } dd { (r.receipt_no) }
            dt { (ctx.t("ops.account_code")) } dd { (r.account_code) }
            dt { (ctx.t("pay.amount")) } dd.amount { (yuan(r.amount_fen)) }
            dt { (ctx.t("pay.channel")) } dd { (channel_name(&ctx, &r.channel)) }
            dt { (ctx.t("pay.merchant")) } dd { (r.merchant_id) }
            dt { (ctx.t("pay.txn")) } dd { (r.gateway_txn_id) }
            dt { (ctx.t("pay.order_no")) } dd { (r.order_no) }
            dt { (ctx.t("pay.paid_at")) } dd { (cst(r.paid_at)) }
            @if r.to_credit_fen > 0 { dt { (ctx.t("res.credit")) } dd { (yuan(r.to_credit_fen)) } }
            @if r.refunded_fen > 0 { dt { (ctx.t("pay.status.refunded")) } dd { (yuan(r.refunded_fen)) } }
        }
        @if !bills.is_empty() {
            h2 { (ctx.t("pay.bills_paid")) }
            ul.plain { @for b in &bills {
                li { a href={"/pay/" (token) "/bills/" (b["bill_id"])} { "#" (b["bill_id"]) } ": "
                    (yuan(b["principal_fen"].as_i64().unwrap_or(0) + b["late_fee_fen"].as_i64().unwrap_or(0))) }
            } }
        }
        p { a href={"/pay/" (token)} { (ctx.t("res.back")) } }
    };
    Ok(Page::new(&ctx, resident_page(&ctx, ctx.t("pay.receipt_title"), body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("user-agent", s.parse().unwrap());
        h
    }

    #[test]
    fn the_buttons_fit_where_the_page_is_opened() {
        let wechat = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 MicroMessenger/8.0.40";
        let phone = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36";
        let desktop = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
        assert_eq!(opened_in(&ua(wechat)), Opened::WeChat);
        assert_eq!(opened_in(&ua(phone)), Opened::Mobile);
        assert_eq!(opened_in(&ua(desktop)), Opened::Desktop);
        assert_eq!(opened_in(&HeaderMap::new()), Opened::Desktop);
        assert_eq!(buttons_for(Opened::WeChat)[0], (Channel::Wechatpay, PayMethod::Jsapi));
        assert!(buttons_for(Opened::WeChat).iter().all(|(c, _)| *c != Channel::Alipay));
        assert!(buttons_for(Opened::Mobile).iter().all(|(_, m)| *m == PayMethod::H5));
        assert_eq!(
            buttons_for(Opened::Desktop),
            &[
                (Channel::Alipay, PayMethod::Qr),
                (Channel::Wechatpay, PayMethod::Qr),
                (Channel::Unionpay, PayMethod::Web)
            ]
        );
    }

    #[test]
    fn a_qr_code_is_inline_svg() {
        let svg = qr_svg("https://example.cn/pay/abc").unwrap();
        assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..40]);
    }
}
