//! The operator and resident pages in headless Chromium: an operator accepts a held reading and
//! previews a bill run; a resident opens a pay link on a 375-pixel-wide phone, reads the bill,
//! switches language and looks an account up. Every page shown passes the accessibility check
//! (labels, contrast ≥ 4.5:1 computed in the page) and is saved as a screenshot artefact.

use chrono::Duration;

use crate::browser::{Browser, DESKTOP, MOBILE};
use crate::helpers::{spawn_app, TestApp};
use crate::pages_suite::{fixture, pay_token};
use crate::staff::{add_user, PASSWORD};

pub async fn sign_in(b: &Browser, app: &TestApp, name: &str) {
    b.goto(&format!("{}/staff/sign-in", app.address)).await;
    b.fill("#name", name).await;
    b.fill("#password", PASSWORD).await;
    b.click("form.stack button[type=submit]").await;
    assert_eq!(b.path().await, "/staff");
}

/// Nothing on the page is wider than the viewport.
pub async fn assert_no_sideways_scroll(b: &Browser, page: &str) {
    let (width, _) = b.viewport().await;
    let scroll = b
        .client
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(
        scroll <= width,
        "{page}: content overflows sideways ({scroll} > {width})"
    );
}

#[tokio::test]
async fn an_operator_accepts_a_held_reading_in_the_browser() {
    let test = "an_operator_accepts_a_held_reading_in_the_browser";
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    add_user(&app.db, "op1", "operator").await;
    let Some(b) = Browser::start(test, DESKTOP).await else {
        return;
    };
    sign_in(&b, &app, "op1").await;
    b.click("nav a[href='/staff/ops']").await;
    b.assert_accessible("the communities page").await;
    b.screenshot("ops-communities").await;
    b.click("a[href='/staff/ops/communities/PG']").await;
    b.assert_accessible("a community's accounts").await;
    b.screenshot("ops-accounts").await;
    b.goto(&format!("{}/staff/ops/accounts/{}", app.address, f.a1)).await;
    b.assert_accessible("an account").await;
    b.goto(&format!("{}/staff/ops/communities/PG/tariffs", app.address))
        .await;
    b.assert_accessible("the tariffs").await;
    b.screenshot("ops-tariffs").await;
    b.goto(&format!("{}/staff/ops/communities/PG/meters", app.address))
        .await;
    b.assert_accessible("the meters").await;

    b.goto(&format!("{}/staff/ops/readings", app.address)).await;
    b.assert_accessible("the held readings").await;
    b.screenshot("ops-held-readings").await;
    b.fill(&format!("#note-{}", f.held_reading), "checked on site").await;
    b.click(&format!(
        "form[action='/staff/ops/readings/{}/accept'] button.primary",
        f.held_reading
    ))
    .await;
    assert!(b.text("[role=status]").await.contains("读数已接受"));
    assert!(b.text("main").await.contains("没有待审读数"));
    b.assert_accessible("the held readings after a decision").await;
    let held = app.db.store.held_readings(None).await.unwrap();
    assert!(held.is_empty(), "accepted: {held:?}");
    let audit = app
        .db
        .store
        .audit_for("reading", &f.held_reading.to_string())
        .await
        .unwrap();
    assert!(audit
        .iter()
        .any(|a| a.action == "reading.accept" && a.actor == "user:op1"));

    // The bill-run preview, and its report.
    b.goto(&format!("{}/staff/ops/bill-runs", app.address)).await;
    b.assert_accessible("the bill-run form").await;
    b.fill("#period", "2026-04").await;
    b.click("form[action='/staff/ops/bill-runs/preview'] button").await;
    assert!(b.text("[role=status]").await.contains("预览"));
    b.assert_accessible("the bill-run preview").await;
    b.screenshot("ops-bill-run-preview").await;
    b.goto(&format!("{}/staff/ops/reminders?community=PG", app.address))
        .await;
    b.assert_accessible("the reminder history").await;
    b.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_resident_opens_a_pay_link_on_a_375_pixel_phone_and_reads_the_bill() {
    let test = "a_resident_opens_a_pay_link_on_a_375_pixel_phone_and_reads_the_bill";
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    let token = pay_token(&app, f.a1, Duration::days(30)).await;
    let Some(b) = Browser::start(test, MOBILE).await else {
        return;
    };
    assert_eq!(b.viewport().await.0, 375);
    b.goto(&format!("{}/pay/{token}", app.address)).await;
    assert_eq!(b.text("h1").await, "我的账单");
    assert!(b.text("section.owed").await.contains("¥234.00"));
    assert!(b.has("figure.chart svg[role=img]").await, "the usage chart");
    assert!(b.text("table.lines").await.contains("第2档"));
    b.assert_accessible("the resident page").await;
    assert_no_sideways_scroll(&b, "the resident page").await;
    b.screenshot("resident-pay-375").await;

    b.click("a.lang").await;
    assert_eq!(b.text("h1").await, "My bills");
    b.assert_accessible("the resident page in English").await;
    b.screenshot("resident-pay-375-en").await;
    b.click("a.lang").await;

    b.click("#open-bills ~ ul a").await;
    assert!(b.text("h1").await.contains("账单"));
    b.assert_accessible("a resident's bill").await;
    assert_no_sideways_scroll(&b, "a resident's bill").await;
    b.screenshot("resident-bill-375").await;

    // A link that expired: a clear refusal with the way on.
    let expired = pay_token(&app, f.a1, Duration::hours(-1)).await;
    b.goto(&format!("{}/pay/{expired}", app.address)).await;
    assert!(b.text("[role=alert]").await.contains("过期"));
    b.assert_accessible("an expired link").await;
    b.click("main a[href='/pay/lookup']").await;

    b.assert_accessible("the look-up form").await;
    assert_no_sideways_scroll(&b, "the look-up form").await;
    b.screenshot("resident-lookup-375").await;
    b.fill("#account", "A1").await;
    b.fill("#mobile_last4", "5678").await;
    b.click("form[action='/pay/lookup'] button").await;
    assert!(b.path().await.starts_with("/pay/"), "{}", b.path().await);
    assert_eq!(b.text("h1").await, "我的账单");
    b.close().await;
    app.stop().await.unwrap();
}
