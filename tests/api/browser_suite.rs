//! Staff pages in headless Chromium: sign in, home, sign out, lock-out; at a phone's width and
//! a desktop's, with screenshots and the accessibility check on every page shown.

use crate::browser::{Browser, DESKTOP, MOBILE};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::staff::{add_user, PASSWORD};

async fn sign_in(b: &Browser, app: &TestApp, name: &str, password: &str) {
    b.goto(&format!("{}/staff/sign-in", app.address)).await;
    b.fill("#name", name).await;
    b.fill("#password", password).await;
    b.click("form.stack button[type=submit]").await;
}

async fn signs_in_sees_home_and_signs_out(test: &str, size: (u32, u32), tag: &str) {
    let app = spawn_app().await;
    let Some(b) = Browser::start(test, size).await else {
        return;
    };
    assert_eq!(
        b.viewport().await.0,
        size.0 as i64,
        "the viewport is {} CSS pixels wide",
        size.0
    );
    add_user(&app.db, "wang.fang", "finance").await;

    // Anonymous: the home page sends the browser to sign in.
    b.goto(&format!("{}/staff", app.address)).await;
    assert_eq!(b.path().await, "/staff/sign-in");
    assert_eq!(b.text("h1").await, "员工登录");
    b.assert_accessible("the sign-in page").await;
    b.screenshot(&format!("sign-in-{tag}")).await;

    sign_in(&b, &app, "wang.fang", PASSWORD).await;
    assert_eq!(b.path().await, "/staff");
    assert_eq!(b.text("h1").await, "工作台");
    assert!(b.text("main").await.contains("wang.fang"));
    assert!(
        b.has("a[href='/staff/password']").await,
        "finance may change its password"
    );
    assert!(
        !b.has("a[href='/staff/audit']").await,
        "finance does not see the audit log"
    );
    b.assert_accessible("the home page").await;
    b.screenshot(&format!("home-{tag}")).await;
    let (width, _) = b.viewport().await;
    let scroll: i64 = b
        .client
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    assert!(scroll <= width, "nothing overflows sideways ({scroll} > {width})");

    // The language switch, and back.
    b.click("a.lang").await;
    assert_eq!(b.text("h1").await, "Dashboard");
    b.assert_accessible("the home page in English").await;
    b.click("a.lang").await;
    assert_eq!(b.text("h1").await, "工作台");

    b.goto(&format!("{}/staff/password", app.address)).await;
    b.assert_accessible("the password page").await;
    b.screenshot(&format!("password-{tag}")).await;

    b.click("form[action='/staff/sign-out'] button").await;
    assert_eq!(b.path().await, "/staff/sign-in");
    assert!(b.text("main").await.contains("您已退出登录"));
    b.goto(&format!("{}/staff", app.address)).await;
    assert_eq!(b.path().await, "/staff/sign-in", "signed out means signed out");
    b.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn staff_signs_in_at_a_375_pixel_viewport_sees_the_home_page_and_signs_out() {
    signs_in_sees_home_and_signs_out(
        "staff_signs_in_at_a_375_pixel_viewport_sees_the_home_page_and_signs_out",
        MOBILE,
        "375",
    )
    .await;
}

#[tokio::test]
async fn staff_signs_in_at_desktop_width_sees_the_home_page_and_signs_out() {
    signs_in_sees_home_and_signs_out(
        "staff_signs_in_at_desktop_width_sees_the_home_page_and_signs_out",
        DESKTOP,
        "desktop",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_password_locks_the_browser_out_after_three_tries() {
    let app = spawn_app_with(|c| c.access.lockout_max_failures = 3).await;
    let Some(b) = Browser::start("a_wrong_password_locks_the_browser_out_after_three_tries", MOBILE).await else {
        return;
    };
    add_user(&app.db, "admin1", "admin").await;
    for attempt in 1..=2 {
        sign_in(&b, &app, "admin1", "not my password").await;
        assert_eq!(b.path().await, "/staff/sign-in", "attempt {attempt} stays on the form");
        assert_eq!(b.text("[role=alert]").await, "用户名或密码错误。");
    }
    b.assert_accessible("the sign-in page with an error").await;
    sign_in(&b, &app, "admin1", "not my password").await;
    assert!(
        b.text("[role=alert]").await.contains("登录失败次数过多"),
        "the third failure locks"
    );
    sign_in(&b, &app, "admin1", PASSWORD).await;
    assert_eq!(
        b.path().await,
        "/staff/sign-in",
        "the right password no longer opens the door"
    );
    assert!(b.text("[role=alert]").await.contains("15 分钟"));
    b.screenshot("sign-in-locked-375").await;
    b.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_admin_sees_the_audit_log_of_their_own_sign_in_in_english() {
    let app = spawn_app().await;
    let Some(b) = Browser::start_with_language(
        "an_admin_sees_the_audit_log_of_their_own_sign_in_in_english",
        DESKTOP,
        "en-GB,en",
    )
    .await
    else {
        return;
    };
    add_user(&app.db, "admin1", "admin").await;
    sign_in(&b, &app, "admin1", PASSWORD).await;
    b.click("nav a[href='/staff/audit']").await;
    assert_eq!(b.path().await, "/staff/audit");
    assert_eq!(b.text("h1").await, "Audit log", "an English browser gets English pages");
    let table = b.text("table").await;
    assert!(
        table.contains("staff.sign_in") && table.contains("user:admin1"),
        "{table}"
    );
    b.assert_accessible("the audit log").await;
    b.screenshot("audit-desktop").await;
    b.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_accessibility_check_finds_a_missing_label_and_low_contrast() {
    let Some(b) = Browser::start("the_accessibility_check_finds_a_missing_label_and_low_contrast", MOBILE).await else {
        return;
    };
    // A page built to fail: no lang, no title, no main, an unlabelled input, grey on grey.
    let bad = "<!doctype html><body><p style='color:#999;background:#bbb'>faint</p>\
               <input name=q><label for=ok>ok</label><input id=ok><button></button></body>";
    let url: String = format!(
        "data:text/html;charset=utf-8,{}",
        url::form_urlencoded::byte_serialize(bad.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    );
    b.goto(&url).await;
    let problems = b.accessibility_problems().await;
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(
        has("<html> has no lang") && has("no <title>") && has("no <main>"),
        "{problems:?}"
    );
    assert!(has("a control without a label: <input name=\"q\">"), "{problems:?}");
    assert!(
        has("a control without a label: <button>"),
        "an empty button has no name: {problems:?}"
    );
    assert!(!has("id=\"ok\""), "the labelled input passes: {problems:?}");
    assert!(has("contrast 1.") && has("\"faint\""), "{problems:?}");
    b.close().await;
}
