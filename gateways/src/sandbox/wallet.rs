//! The sandbox's wallet page, where a person presses Pay, and its JSON control API for tests and
//! the demo.
//!
//! Pages (plain HTML, no JavaScript):
//! - `GET  /sandbox/wallet`: the orders waiting for payment.
//! - `GET  /sandbox/wallet/{channel}/{merchant}/{order_no}`: one order, with Pay and Cancel. QR
//!   codes and redirects from the gateways' create calls lead here.
//! - `POST /sandbox/wallet/{channel}/{merchant}/{order_no}/pay` and `…/cancel`.
//!
//! Control API (JSON):
//! - `GET  /sandbox/api/orders`, `GET /sandbox/api/deliveries`
//! - `POST /sandbox/api/pay` `{"channel","merchant_id","order_no"}`
//! - `GET|PUT /sandbox/api/faults` (a [`Faults`] document)
//! - `POST /sandbox/api/notifications/release`
//! - `POST /sandbox/api/clock` `{"advance_secs": N}`
//! - `GET  /sandbox/api/settlement/{channel}/{merchant}/{YYYY-MM-DD}`: the file's bytes

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;

use super::{Faults, Sandbox, SimError, SimOrderState};
use crate::amount::fen_to_yuan;
use crate::gateway::Channel;

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/sandbox/wallet", get(list))
        .route("/sandbox/wallet/{channel}/{merchant}/{order_no}", get(show))
        .route("/sandbox/wallet/{channel}/{merchant}/{order_no}/pay", post(pay_page))
        .route(
            "/sandbox/wallet/{channel}/{merchant}/{order_no}/cancel",
            post(cancel_page),
        )
        .route("/sandbox/api/orders", get(api_orders))
        .route("/sandbox/api/deliveries", get(api_deliveries))
        .route("/sandbox/api/pay", post(api_pay))
        .route("/sandbox/api/faults", get(api_faults).put(api_set_faults))
        .route("/sandbox/api/notifications/release", post(api_release))
        .route("/sandbox/api/clock", post(api_clock))
        .route(
            "/sandbox/api/settlement/{channel}/{merchant}/{day}",
            get(api_settlement),
        )
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · sandbox wallet</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:1rem auto;padding:0 1rem;color:#1a1a1a}}\
         .amount{{font-size:2rem;font-weight:600}}button{{font-size:1.1rem;padding:.6rem 1.4rem;margin:.3rem 0;border-radius:.4rem;border:1px solid #0b5;background:#0a6b3d;color:#fff}}\
         button.secondary{{background:#fff;color:#0a6b3d}}table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ccc;padding:.3rem;text-align:left}}\
         .note{{color:#555;font-size:.9rem}}</style></head><body><main>\
         <p class=\"note\">meterpay gateway sandbox — no real money moves</p><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    ))
}

fn channel_of(s: &str) -> Result<Channel, (StatusCode, String)> {
    s.parse::<Channel>().map_err(|e| (StatusCode::NOT_FOUND, e))
}

fn sim_error(e: SimError) -> Response {
    let status = match e {
        SimError::UnknownMerchant(..) | SimError::NoSuchOrder(_) | SimError::NoSuchRefund(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    (status, Json(serde_json::json!({"error": e.to_string()}))).into_response()
}

async fn list(State(sb): State<Sandbox>) -> Html<String> {
    let mut rows = String::new();
    for o in sb.orders().into_iter().filter(|o| o.state == SimOrderState::Created) {
        rows.push_str(&format!(
            "<tr><td>{ch}</td><td><a href=\"/sandbox/wallet/{ch}/{m}/{no}\">{no}</a></td><td>{subj}</td><td>¥{amt}</td></tr>",
            ch = o.channel,
            m = esc(&o.merchant_id),
            no = esc(&o.order_no),
            subj = esc(&o.subject),
            amt = fen_to_yuan(o.amount_fen)
        ));
    }
    if rows.is_empty() {
        return page("待支付订单 Orders waiting", "<p>No orders are waiting for payment.</p>");
    }
    page(
        "待支付订单 Orders waiting",
        &format!("<table><thead><tr><th>channel</th><th>order</th><th>subject</th><th>amount</th></tr></thead><tbody>{rows}</tbody></table>"),
    )
}

async fn show(
    State(sb): State<Sandbox>,
    Path((channel, merchant, order_no)): Path<(String, String, String)>,
) -> Response {
    let channel = match channel_of(&channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(o) = sb.order(channel, &merchant, &order_no) else {
        return (
            StatusCode::NOT_FOUND,
            page("订单不存在 No such order", "<p>The sandbox has no such order.</p>"),
        )
            .into_response();
    };
    let base = format!("/sandbox/wallet/{}/{}/{}", channel, esc(&merchant), esc(&order_no));
    let state = match o.state {
        SimOrderState::Created => format!(
            "<form method=\"post\" action=\"{base}/pay\"><button type=\"submit\">确认支付 Pay ¥{amt}</button></form>\
             <form method=\"post\" action=\"{base}/cancel\"><button class=\"secondary\" type=\"submit\">取消 Cancel</button></form>",
            amt = fen_to_yuan(o.amount_fen)
        ),
        SimOrderState::Paid => "<p role=\"status\">已支付 Paid.</p>".to_string(),
        SimOrderState::Closed => "<p role=\"status\">已关闭 Closed.</p>".to_string(),
    };
    page(
        &format!("{} 收银台 checkout", channel),
        &format!(
            "<p>{subj}</p><p class=\"amount\">¥{amt}</p><p class=\"note\">merchant {m} · order {no}</p>{state}",
            subj = esc(&o.subject),
            amt = fen_to_yuan(o.amount_fen),
            m = esc(&merchant),
            no = esc(&order_no)
        ),
    )
    .into_response()
}

async fn pay_page(
    State(sb): State<Sandbox>,
    Path((channel, merchant, order_no)): Path<(String, String, String)>,
) -> Response {
    let channel = match channel_of(&channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match sb.pay(channel, &merchant, &order_no) {
        Ok(o) => match o.return_url {
            Some(url) => Redirect::to(&url).into_response(),
            None => page(
                "支付成功 Paid",
                "<p role=\"status\">支付成功 Payment complete. You can close this page.</p>",
            )
            .into_response(),
        },
        Err(e) => (
            StatusCode::CONFLICT,
            page(
                "无法支付 Cannot pay",
                &format!("<p role=\"alert\">{}</p>", esc(&e.to_string())),
            ),
        )
            .into_response(),
    }
}

async fn cancel_page(
    State(sb): State<Sandbox>,
    Path((channel, merchant, order_no)): Path<(String, String, String)>,
) -> Response {
    let channel = match channel_of(&channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match sb.order(channel, &merchant, &order_no) {
        Some(o) => match o.return_url {
            Some(url) => Redirect::to(&url).into_response(),
            None => page("已取消 Cancelled", "<p>The payment was not made.</p>").into_response(),
        },
        None => (StatusCode::NOT_FOUND, "no such order").into_response(),
    }
}

async fn api_orders(State(sb): State<Sandbox>) -> Response {
    Json(sb.orders()).into_response()
}

async fn api_deliveries(State(sb): State<Sandbox>) -> Response {
    Json(sb.deliveries()).into_response()
}

#[derive(Deserialize)]
struct PayBody {
    channel: Channel,
    merchant_id: String,
    order_no: String,
}

async fn api_pay(State(sb): State<Sandbox>, Json(b): Json<PayBody>) -> Response {
    match sb.pay(b.channel, &b.merchant_id, &b.order_no) {
        Ok(o) => Json(o).into_response(),
        Err(e) => sim_error(e),
    }
}

async fn api_faults(State(sb): State<Sandbox>) -> Response {
    Json(sb.faults()).into_response()
}

async fn api_set_faults(State(sb): State<Sandbox>, Json(f): Json<Faults>) -> Response {
    sb.set_faults(f);
    Json(sb.faults()).into_response()
}

async fn api_release(State(sb): State<Sandbox>) -> Response {
    Json(serde_json::json!({"released": sb.release_held_notifications()})).into_response()
}

#[derive(Deserialize)]
struct ClockBody {
    advance_secs: i64,
}

async fn api_clock(State(sb): State<Sandbox>, Json(b): Json<ClockBody>) -> Response {
    sb.advance_clock(chrono::Duration::seconds(b.advance_secs));
    Json(serde_json::json!({"now": sb.now()})).into_response()
}

async fn api_settlement(
    State(sb): State<Sandbox>,
    Path((channel, merchant, day)): Path<(String, String, String)>,
) -> Response {
    let channel = match channel_of(&channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Ok(day) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
        return (StatusCode::BAD_REQUEST, "day must be YYYY-MM-DD").into_response();
    };
    match sb.settlement_file(channel, &merchant, day) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => sim_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
