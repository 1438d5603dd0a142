//! Paying from the resident page in headless Chromium, through the gateway sandbox's wallet: on
//! a 375-pixel phone with each channel (Alipay H5, WeChat Pay H5, UnionPay's mobile form), and
//! on a desktop with a WeChat Pay QR code whose status page follows the order to paid by itself.
//! Every page is checked for accessibility and saved as a screenshot.

use chrono::Duration;
use meterpay::payments::config::{MerchantConfig, MerchantKind};
use meterpay_gateways::gateway::Channel;
use meterpay_gateways::sandbox::Sandbox;

use crate::billing_helpers::{cst, readings};
use crate::browser::{Browser, DESKTOP};
use crate::helpers::{spawn_app_with, TestApp};
use crate::pages_browser_suite::assert_no_sideways_scroll;
use crate::pages_suite::{fixture, pay_token, Fixture};

const ALI: &str = "2021000000000001";
const WX: &str = "1900000109";
const UP: &str = "777290058110048";

fn merchant(channel: Channel, id: &str, base: &str) -> MerchantConfig {
    MerchantConfig {
        community: "PG".into(),
        channel: Some(channel),
        merchant_id: id.into(),
        fee_rate_ppm: 6000,
        kind: MerchantKind::Sandbox,
        gateway_url: base.into(),
        ..MerchantConfig::default()
    }
}

/// The sandbox of all three gateways, an app whose merchants for community PG point at it (and
/// whose public URL is its own address, so return URLs and callbacks come back), and the page
/// fixture.
async fn world() -> (TestApp, Sandbox, Fixture) {
    let sb = meterpay::tools::sandbox_with_all_gateways(10_000);
    sb.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    meterpay_gateways::sandbox::alipay::connect(&sb, ALI, 6000);
    meterpay_gateways::sandbox::wechatpay::connect(&sb, WX, 6000);
    meterpay_gateways::sandbox::unionpay::connect(&sb, UP, 6000);
    let base = sb.base_url();
    let merchants = vec![
        merchant(Channel::Alipay, ALI, &base),
        merchant(Channel::Wechatpay, WX, &base),
        merchant(Channel::Unionpay, UP, &base),
    ];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(move |c| {
        c.payments.merchants = merchants;
        c.http.listen = format!("127.0.0.1:{port}");
        c.http.public_base_url = format!("http://127.0.0.1:{port}");
    })
    .await;
    let f = fixture(&app.db).await;
    (app, sb, f)
}

/// On our status page: refresh (the no-JS link) until the order shows paid, bounded.
async fn until_paid(b: &Browser, app: &TestApp, token: &str) {
    if !b.path().await.starts_with("/pay/") {
        // A wallet without a way back: open the latest order's status as the resident would.
        b.goto(&format!("{}/pay/{token}/orders/latest", app.address)).await;
    }
    for _ in 0..40 {
        if b.has("#order-status[data-status='paid']").await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if b.has("#order-status[data-status='paid']").await {
            return;
        }
        b.click("main a[href*='/orders/']").await;
    }
    panic!("the order never showed paid: {}", b.text("main").await);
}

async fn pay_on_phone(b: &Browser, app: &TestApp, token: &str, channel: &str, tag: &str) {
    b.goto(&format!("{}/pay/{token}", app.address)).await;
    b.assert_accessible(&format!("the resident page before paying with {channel}"))
        .await;
    assert_no_sideways_scroll(b, "the resident page").await;
    if tag == "alipay" {
        b.screenshot("resident-pay-buttons-375").await;
    }
    b.click(&format!("form.paybutton button[data-channel='{channel}']"))
        .await;
    if b.path().await.starts_with("/pay/") {
        // A form to carry to the gateway (UnionPay): our status page says so.
        b.assert_accessible(&format!("the {channel} status page")).await;
        b.screenshot(&format!("resident-status-{tag}-375")).await;
        b.click("form.paybutton button").await;
    }
    assert!(
        b.path().await.starts_with("/sandbox/wallet/"),
        "{channel}: at the wallet, not {}",
        b.path().await
    );
    b.click("form[action$='/pay'] button").await;
    until_paid(b, app, token).await;
    b.assert_accessible(&format!("the {channel} status page, paid")).await;
    b.screenshot(&format!("resident-paid-{tag}-375")).await;
    b.click("main a.button[href*='/receipts/']").await;
    assert_eq!(b.text("h1").await, "收据");
    b.assert_accessible(&format!("the {channel} receipt")).await;
    assert_no_sideways_scroll(b, "the receipt").await;
    b.screenshot(&format!("resident-receipt-{tag}-375")).await;
}

#[tokio::test]
async fn a_resident_pays_on_a_375_pixel_phone_with_each_channel_and_sees_the_receipt() {
    let test = "a_resident_pays_on_a_375_pixel_phone_with_each_channel_and_sees_the_receipt";
    let (app, _sb, f) = world().await;
    let Some(b) = Browser::start_as_phone(test).await else {
        return;
    };
    assert_eq!(b.viewport().await.0, 375);
    let t1 = pay_token(&app, f.a1, Duration::days(30)).await;
    let t2 = pay_token(&app, f.a2, Duration::days(30)).await;

    pay_on_phone(&b, &app, &t1, "alipay", "alipay").await;
    assert!(app
        .db
        .store
        .open_bills(f.a1)
        .await
        .unwrap()
        .iter()
        .all(|o| o.outstanding_fen == 0));

    pay_on_phone(&b, &app, &t2, "wechatpay", "wechatpay").await;
    assert!(app
        .db
        .store
        .open_bills(f.a2)
        .await
        .unwrap()
        .iter()
        .all(|o| o.outstanding_fen == 0));

    // A new bill for A1, paid through UnionPay.
    readings(
        &app.db.store,
        &[("E1", "electricity", cst(2026, 4, 28, 8), "1600", "actual")],
    )
    .await;
    crate::billing_helpers::run(&app.db.store, "PG", "2026-04", None, cst(2026, 5, 1, 9)).await;
    assert!(app
        .db
        .store
        .open_bills(f.a1)
        .await
        .unwrap()
        .iter()
        .any(|o| o.outstanding_fen > 0));
    pay_on_phone(&b, &app, &t1, "unionpay", "unionpay").await;
    assert!(app
        .db
        .store
        .open_bills(f.a1)
        .await
        .unwrap()
        .iter()
        .all(|o| o.outstanding_fen == 0));

    // Nothing is owed any more, and the page says so.
    b.goto(&format!("{}/pay/{t1}", app.address)).await;
    assert!(b.text("main").await.contains("目前没有待缴账单"));
    b.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn on_a_desktop_the_qr_status_page_follows_the_order_to_paid_by_itself() {
    let test = "on_a_desktop_the_qr_status_page_follows_the_order_to_paid_by_itself";
    let (app, sb, f) = world().await;
    let Some(b) = Browser::start(test, DESKTOP).await else {
        return;
    };
    let token = pay_token(&app, f.a2, Duration::days(30)).await;
    b.goto(&format!("{}/pay/{token}", app.address)).await;
    assert!(b.has("form.paybutton button[data-channel='alipay']").await);
    b.click("form.paybutton button[data-channel='wechatpay']").await;
    assert!(b.has("figure.qr div[role=img] svg").await, "a QR code to scan");
    assert!(b.has("#order-status[data-status='created']").await);
    b.assert_accessible("the QR status page").await;
    b.screenshot("resident-qr-desktop").await;
    // The phone scans and pays; the page, left alone, notices.
    let order_no = b.text("main dl.facts dd").await;
    sb.pay(Channel::Wechatpay, WX, &order_no)
        .expect("the sandbox takes the payment");
    let mut paid = false;
    for _ in 0..60 {
        if b.has("#order-status[data-status='paid']").await {
            paid = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(paid, "the status page reloaded itself once the order was paid");
    b.assert_accessible("the paid status page").await;
    b.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn with_javascript_off_a_resident_still_pays_and_follows_the_order_with_the_refresh_link() {
    let test = "with_javascript_off_a_resident_still_pays_and_follows_the_order_with_the_refresh_link";
    let (app, sb, f) = world().await;
    let Some(b) = Browser::start_without_javascript(test, DESKTOP).await else {
        return;
    };
    let token = pay_token(&app, f.a2, Duration::days(30)).await;
    b.goto(&format!("{}/pay/{token}", app.address)).await;
    b.assert_accessible("the resident page without JavaScript").await;
    b.click("form.paybutton button[data-channel='wechatpay']").await;
    assert!(
        b.has("figure.qr div[role=img] svg").await,
        "the QR code is drawn on the server"
    );
    let order_no = b.text("main dl.facts dd").await;
    sb.pay(Channel::Wechatpay, WX, &order_no)
        .expect("the sandbox takes the payment");
    // With scripts off the page does not follow the order by itself (its poll runs every 2 s)…
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    assert!(
        b.has("#order-status[data-status='created']").await,
        "JavaScript is off: the page did not reload itself"
    );
    // …and the refresh link does the same job.
    b.click("main a[href*='/orders/']").await;
    assert!(
        b.has("#order-status[data-status='paid']").await,
        "{}",
        b.text("main").await
    );
    b.click("main a.button[href*='/receipts/']").await;
    assert_eq!(b.text("h1").await, "收据");
    b.assert_accessible("the receipt without JavaScript").await;
    b.screenshot("resident-receipt-no-js").await;
    assert!(app
        .db
        .store
        .open_bills(f.a2)
        .await
        .unwrap()
        .iter()
        .all(|o| o.outstanding_fen == 0));
    b.close().await;
    app.stop().await.unwrap();
}

async fn get_as(app: &TestApp, path: &str, ua: &str) -> reqwest::Response {
    crate::staff::no_redirects()
        .get(format!("{}{path}", app.address))
        .header("user-agent", ua)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_pay_buttons_fit_where_the_page_is_opened() {
    let (app, _sb, f) = world().await;
    let token = pay_token(&app, f.a1, Duration::days(30)).await;
    let path = format!("/pay/{token}");
    let wechat = get_as(&app, &path, "Mozilla/5.0 (iPhone) Mobile/15E148 MicroMessenger/8.0.40")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        wechat.contains("value=\"jsapi\"") && !wechat.contains("value=\"alipay\""),
        "inside WeChat: JSAPI, no Alipay"
    );
    let phone = get_as(&app, &path, crate::browser::PHONE_UA)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        phone.contains("value=\"h5\"") && !phone.contains("value=\"qr\""),
        "a phone: H5"
    );
    let desktop = get_as(&app, &path, "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        desktop.contains("value=\"qr\"") && desktop.contains("value=\"web\""),
        "a desktop: QR and web"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn inside_wechat_the_status_page_calls_jsapi_under_a_script_nonce() {
    let (app, _sb, f) = world().await;
    let token = pay_token(&app, f.a1, Duration::days(30)).await;
    let r = crate::staff::no_redirects()
        .post(format!("{}/pay/{token}/orders", app.address))
        .form(&[
            ("channel", "wechatpay"),
            ("method", "jsapi"),
            ("openid", "oSandboxPayer0001"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let r = app.get(&to).await;
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert!(html.contains("getBrandWCPayRequest"), "{html}");
    let nonce = csp.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap();
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the scripts carry the response's nonce"
    );
    assert!(
        csp.contains("object-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pay_routes_refuse_a_bad_link_and_another_accounts_order() {
    let (app, _sb, f) = world().await;
    let t1 = pay_token(&app, f.a1, Duration::days(30)).await;
    let t2 = pay_token(&app, f.a2, Duration::days(30)).await;
    let expired = pay_token(&app, f.a1, Duration::hours(-1)).await;
    let r = crate::staff::no_redirects()
        .post(format!("{}/pay/{t1}/orders", app.address))
        .form(&[("channel", "alipay"), ("method", "qr")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let status_path = r.headers()["location"].to_str().unwrap().to_string();
    let order_no = status_path.rsplit('/').next().unwrap().to_string();
    assert_eq!(app.get(&status_path).await.status(), 200);
    // Another account's link does not open this order, its status or a receipt of it.
    for path in [
        format!("/pay/{t2}/orders/{order_no}"),
        format!("/pay/{t2}/orders/{order_no}/status"),
        format!("/pay/{t2}/receipts/R{order_no}"),
    ] {
        assert_eq!(app.get(&path).await.status(), 404, "{path}");
    }
    // An expired or altered link opens nothing and creates nothing.
    let altered = format!("{}x", &t1[..t1.len() - 1]);
    for bad in [expired, altered] {
        for path in [
            format!("/pay/{bad}/orders/{order_no}"),
            format!("/pay/{bad}/orders/{order_no}/status"),
        ] {
            assert_eq!(app.get(&path).await.status(), 403, "{path}");
        }
        let r = crate::staff::no_redirects()
            .post(format!("{}/pay/{bad}/orders", app.address))
            .form(&[("channel", "alipay"), ("method", "qr")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    assert_eq!(app.db.store.account_payment_orders(f.a1).await.unwrap().len(), 1);
    app.stop().await.unwrap();
}
