//! Operator and resident pages over HTTP: who may open what, the forms' CSRF and audit trail,
//! the held-reading review, bill-run previews, pay links (own account only; expired or altered
//! links refused) and the account look-up with its lock-out. Run on both backends.

use chrono::{Duration, Utc};
use meterpay::config::Config;
use meterpay::paylink::LinkPurpose;
use meterpay::store::directory::Community;
use meterpay::store::Store;

use crate::billing_helpers::{account_id, community, cst, readings};
use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestDb};
use crate::staff::{add_user, no_redirects, sign_in, StaffSession, PASSWORD};

/// A tiered electricity tariff: 0.50 up to 150 kWh a month, 0.80 above.
pub const TIERED: &str = r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Residential electricity"
effective_from = 2020-01-01
thresholds = ["150"]
[[tariff.components]]
kind = "energy"
name = "Electricity"
prices = ["0.50", "0.80"]
[[tariff.fixed]]
name = "Meter service"
amount = "2.00"
"#;

pub const ACCOUNTS: &str = "code,name,building,unit,door_no,mobile,meters\n\
    A1,张三,1,2,301,13812345678,E1:electricity:6\n\
    A2,李四,1,2,302,13900001111,E2:electricity:6\n";

/// What the page tests work on: a community with two accounts billed for February and March
/// 2026 (A1 uses 200 kWh a month: both tiers), and one held reading on A1's meter.
pub struct Fixture {
    pub community: Community,
    pub a1: i64,
    pub a2: i64,
    pub held_reading: i64,
}

pub async fn fixture(db: &TestDb) -> Fixture {
    let c = community(db, "PG", ACCOUNTS, TIERED).await;
    let s = &db.store;
    readings(
        s,
        &[
            ("E1", "electricity", cst(2026, 1, 25, 8), "1000", "actual"),
            ("E1", "electricity", cst(2026, 2, 25, 8), "1200", "actual"),
            ("E1", "electricity", cst(2026, 3, 25, 8), "1400", "actual"),
            ("E2", "electricity", cst(2026, 1, 25, 8), "500", "actual"),
            ("E2", "electricity", cst(2026, 2, 25, 8), "600", "actual"),
            ("E2", "electricity", cst(2026, 3, 25, 8), "700", "actual"),
        ],
    )
    .await;
    for p in ["2026-02", "2026-03"] {
        crate::billing_helpers::run(s, "PG", p, None, cst(2026, 4, 1, 9)).await;
    }
    let held_reading = hold_a_reading(s).await;
    Fixture {
        a1: account_id(s, &c, "A1").await,
        a2: account_id(s, &c, "A2").await,
        community: c,
        held_reading,
    }
}

/// A reading that went backwards (not a plausible rollover): held for review.
async fn hold_a_reading(s: &Store) -> i64 {
    let r = s
        .ingest_readings(
            None,
            &[meterpay::billing::readings::IncomingReading {
                meter_no: "E1".into(),
                utility: "electricity".into(),
                read_at: cst(2026, 4, 25, 8).to_rfc3339(),
                value: serde_json::Value::String("700".into()),
                kind: Some("actual".into()),
                registers: None,
            }],
            "import",
            "test",
            cst(2026, 4, 26, 9),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(r.held, 1, "{:?}", r.results);
    s.held_readings(None).await.unwrap()[0].id
}

/// A pay link token for an account, valid for `ttl` from now (negative: already expired).
pub async fn pay_token(app: &TestApp, account: i64, ttl: Duration) -> String {
    let signer = meterpay::dunning::outbox::link_signer(&app.db.store, &Config::default(), Utc::now())
        .await
        .unwrap();
    signer.token(account, LinkPurpose::Pay, Utc::now() + ttl)
}

/// Every operator page route: `(method, path with ids filled in by the test, read-only?)`.
fn operator_routes(f: &Fixture) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/staff/ops".into()),
        ("GET", "/staff/ops/communities/PG".into()),
        ("GET", "/staff/ops/communities/PG/meters".into()),
        ("GET", "/staff/ops/communities/PG/tariffs".into()),
        ("GET", format!("/staff/ops/accounts/{}", f.a1)),
        ("GET", "/staff/ops/meters/1".into()),
        ("GET", "/staff/ops/bills/1".into()),
        ("GET", "/staff/ops/readings".into()),
        ("POST", format!("/staff/ops/readings/{}/accept", f.held_reading)),
        ("POST", format!("/staff/ops/readings/{}/reject", f.held_reading)),
        ("GET", "/staff/ops/bill-runs".into()),
        ("POST", "/staff/ops/bill-runs/preview".into()),
        ("POST", "/staff/ops/bill-runs".into()),
        ("GET", "/staff/ops/reminders?community=PG".into()),
    ]
}

async fn still_held(db: &TestDb, id: i64) -> bool {
    db.store.held_readings(None).await.unwrap().iter().any(|r| r.id == id)
}

#[tokio::test]
async fn every_operator_page_refuses_an_anonymous_caller_and_a_forged_session() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    for (method, path) in operator_routes(&f) {
        for cookie in [
            None,
            Some("meterpay_session=0123abcd; __Host-meterpay_session=0123abcd"),
        ] {
            let mut req = no_redirects().request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.address),
            );
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            if method == "POST" {
                req = req.form(&[("note", "x"), ("period", "2026-04")]);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 303, "{method} {path} with {cookie:?}");
            let to = r.headers()["location"].to_str().unwrap().to_string();
            assert!(to.starts_with("/staff/sign-in?next="), "{method} {path} → {to}");
        }
    }
    assert!(still_held(&app.db, f.held_reading).await, "nothing changed");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_operator_page_opens_for_the_roles_that_may_read_it() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    for role in ["operator", "finance", "read_only", "admin"] {
        add_user(&app.db, &format!("u-{role}"), role).await;
        let s = sign_in(&app, &format!("u-{role}"), PASSWORD).await;
        for (method, path) in operator_routes(&f) {
            if method != "GET" || path == "/staff/ops/bill-runs" {
                continue;
            }
            let r = s.get(&app, &path).await;
            assert_eq!(r.status(), 200, "{role}: GET {path}");
            let html = r.text().await.unwrap();
            assert!(html.contains("<h1>"), "{role}: GET {path}");
            assert!(
                !html.contains("13812345678"),
                "{role}: {path} shows a full mobile number"
            );
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_role_without_the_right_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    for role in ["finance", "read_only"] {
        add_user(&app.db, &format!("u-{role}"), role).await;
        let s = sign_in(&app, &format!("u-{role}"), PASSWORD).await;
        let accept = format!("/staff/ops/readings/{}/accept", f.held_reading);
        let r = s.post_form(&app, &accept, &[("note", "looks fine")]).await;
        assert_eq!(r.status(), 403, "{role} may not accept readings");
        let r = s
            .post_form(&app, "/staff/ops/bill-runs", &[("period", "2026-04")])
            .await;
        assert_eq!(r.status(), 403, "{role} may not run bills");
        let r = s
            .post_form(&app, "/staff/ops/bill-runs/preview", &[("period", "2026-04")])
            .await;
        assert_eq!(r.status(), 403, "{role} may not preview bill runs");
        assert_eq!(s.get(&app, "/staff/ops/bill-runs").await.status(), 403, "{role}");
        let held = s.get(&app, "/staff/ops/readings").await.text().await.unwrap();
        assert!(!held.contains("/accept\""), "{role} is not offered the decision forms");
    }
    assert!(still_held(&app.db, f.held_reading).await);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    add_user(&app.db, "op1", "operator").await;
    let s = sign_in(&app, "op1", PASSWORD).await;
    let accept = format!("/staff/ops/readings/{}/accept", f.held_reading);
    let r = s.post_form_raw(&app, &accept, &[("note", "fine")]).await;
    assert_eq!(r.status(), 403);
    let wrong = StaffSession {
        cookie: s.cookie.clone(),
        csrf: "0".repeat(64),
    };
    assert_eq!(wrong.post_form(&app, &accept, &[("note", "fine")]).await.status(), 403);
    let r = s
        .post_form_raw(&app, "/staff/ops/bill-runs", &[("period", "2026-04")])
        .await;
    assert_eq!(r.status(), 403);
    assert!(still_held(&app.db, f.held_reading).await);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_operator_accepts_a_held_reading_and_the_audit_log_records_who_and_why() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    add_user(&app.db, "op1", "operator").await;
    let s = sign_in(&app, "op1", PASSWORD).await;
    let page = s
        .get(&app, "/staff/ops/readings?community=PG")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("/staff/ops/readings/{}/accept", f.held_reading)));
    assert!(page.contains("E1"));

    // Without a note nothing happens.
    let accept = format!("/staff/ops/readings/{}/accept", f.held_reading);
    assert_eq!(s.post_form(&app, &accept, &[("note", "  ")]).await.status(), 400);
    assert!(still_held(&app.db, f.held_reading).await);

    let r = s
        .post_form(
            &app,
            &accept,
            &[("note", "meter replaced, confirmed on site"), ("community", "PG")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/staff/ops/readings?done=accepted&community=PG"
    );
    assert!(!still_held(&app.db, f.held_reading).await);
    let audit = app
        .db
        .store
        .audit_for("reading", &f.held_reading.to_string())
        .await
        .unwrap();
    let rec = audit.iter().find(|a| a.action == "reading.accept").expect("audited");
    assert_eq!(rec.actor, "user:op1");
    assert_eq!(rec.reason.as_deref(), Some("meter replaced, confirmed on site"));
    assert!(rec.before_json.as_deref().unwrap().contains("held"));
    assert!(rec.after_json.as_deref().unwrap().contains("valid"));
    // A second decision on the same reading is refused: it is no longer held.
    assert_eq!(s.post_form(&app, &accept, &[("note", "again")]).await.status(), 404);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_operator_rejects_a_held_reading() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    add_user(&app.db, "op1", "operator").await;
    let s = sign_in(&app, "op1", PASSWORD).await;
    let reject = format!("/staff/ops/readings/{}/reject", f.held_reading);
    let r = s.post_form(&app, &reject, &[("note", "misread")]).await;
    assert_eq!(r.status(), 303);
    let readings = app.db.store.readings_of_meter(1).await.unwrap();
    let r = readings.iter().find(|r| r.id == f.held_reading).unwrap();
    assert_eq!(r.status, "rejected");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_bill_run_preview_writes_nothing_and_the_run_issues_the_bills() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    readings(
        &app.db.store,
        &[("E2", "electricity", cst(2026, 4, 25, 8), "800", "actual")],
    )
    .await;
    add_user(&app.db, "op1", "operator").await;
    let s = sign_in(&app, "op1", PASSWORD).await;
    let form = s.get(&app, "/staff/ops/bill-runs").await.text().await.unwrap();
    assert!(form.contains("action=\"/staff/ops/bill-runs/preview\""));

    let fields = [("period", "2026-04"), ("community", "PG"), ("due_date", "2026-05-25")];
    let r = s.post_form(&app, "/staff/ops/bill-runs/preview", &fields).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("action=\"/staff/ops/bill-runs\""),
        "the preview offers the real run"
    );
    assert!(html.contains("2026-05-25"), "the confirm form keeps the due date");
    let april = meterpay::domain::Period::parse("2026-04").unwrap();
    assert_eq!(
        app.db.store.bill_id_for(f.a2, april).await.unwrap(),
        None,
        "a preview writes nothing"
    );

    let r = s.post_form(&app, "/staff/ops/bill-runs", &fields).await;
    assert_eq!(r.status(), 200);
    let id = app.db.store.bill_id_for(f.a2, april).await.unwrap().expect("issued");
    let bill = app.db.store.bill_detail(id).await.unwrap();
    assert_eq!(bill.due_date.to_string(), "2026-05-25");

    // A bad period is a clear error, not a run.
    let r = s
        .post_form(&app, "/staff/ops/bill-runs/preview", &[("period", "April")])
        .await;
    assert_eq!(r.status(), 400);
    let _ = f.community;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_pay_link_shows_its_account_with_readings_tiers_late_fee_and_a_usage_chart() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    let token = pay_token(&app, f.a1, Duration::days(30)).await;
    let r = app.get(&format!("/pay/{token}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-language"], "zh-CN");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("A1"), "the account code");
    assert!(html.contains("张*"), "the name, masked");
    assert!(!html.contains("张三"), "not the full name");
    assert!(html.contains("2026-03 账单"), "the latest bill");
    assert!(html.contains("第1档") && html.contains("第2档"), "the tier breakdown");
    assert!(html.contains("滞纳金"), "the late fee line");
    assert!(html.contains("1200") && html.contains("1400"), "the readings");
    assert!(
        html.contains("<svg") && html.contains("role=\"img\""),
        "the usage chart"
    );
    // 200 kWh: 150 × 0.50 + 50 × 0.80 + 2.00 = 117.00 per month, two months owed.
    assert!(html.contains("¥117.00"), "{html}");
    assert!(html.contains("¥234.00"), "the amount owed");
    assert!(!html.contains("李"), "nothing of another account");
    assert!(!html.contains("<script"), "no JavaScript");

    // English on request.
    let r = app
        .client
        .get(format!("{}/pay/{token}", app.address))
        .header("cookie", "meterpay_lang=en")
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(html.contains("Bill for 2026-03") && html.contains("Tier 2"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_pay_link_never_shows_another_accounts_bill() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    let token = pay_token(&app, f.a1, Duration::days(30)).await;
    let own = app.db.store.account_bills(f.a1).await.unwrap()[0].bill_id;
    let theirs = app.db.store.account_bills(f.a2).await.unwrap()[0].bill_id;
    let r = app.get(&format!("/pay/{token}/bills/{own}")).await;
    assert_eq!(r.status(), 200);
    let r = app.get(&format!("/pay/{token}/bills/{theirs}")).await;
    assert_eq!(r.status(), 404);
    let main = |html: String| html.split("<main").nth(1).unwrap_or_default().to_string();
    let foreign = main(r.text().await.unwrap());
    let r = app.get(&format!("/pay/{token}/bills/999999")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        main(r.text().await.unwrap()),
        foreign,
        "another account's bill looks like no bill at all"
    );
    assert!(!foreign.contains("李"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_or_altered_pay_link_is_refused_and_shows_nothing() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    let expired = pay_token(&app, f.a1, Duration::hours(-1)).await;
    let good = pay_token(&app, f.a1, Duration::days(1)).await;
    let mut altered: Vec<char> = good.chars().collect();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    let foreign = meterpay::paylink::LinkSigner::new(b"some-other-secret-32-bytes-long!".to_vec(), "http://x")
        .unwrap()
        .token(f.a1, LinkPurpose::Pay, Utc::now() + Duration::days(1));
    let unsubscribe = meterpay::dunning::outbox::link_signer(&app.db.store, &Config::default(), Utc::now())
        .await
        .unwrap()
        .token(f.a1, LinkPurpose::UnsubscribeEmail, Utc::now() + Duration::days(1));
    for (what, token) in [
        ("expired", expired),
        ("altered", altered),
        ("signed elsewhere", foreign),
        ("for something else", unsubscribe),
        ("garbage", "nonsense".to_string()),
    ] {
        for path in [format!("/pay/{token}"), format!("/pay/{token}/bills/1")] {
            let r = app.get(&path).await;
            assert_eq!(r.status(), 403, "{what}: {path}");
            let html = r.text().await.unwrap();
            assert!(
                !html.contains("张") && !html.contains("¥"),
                "{what}: shows nothing of the account"
            );
            assert!(html.contains("/pay/lookup"), "{what}: offers the look-up");
            if what == "expired" {
                assert!(html.contains("过期"), "says it expired");
            }
        }
    }
    app.stop().await.unwrap();
}

async fn lookup_form(app: &TestApp) -> (String, String) {
    let r = no_redirects()
        .get(format!("{}/pay/lookup", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = crate::staff::cookie_pair(&r, "meterpay_lookup").expect("the form sets its cookie");
    let html = r.text().await.unwrap();
    let token = crate::staff::input_value(&html, "csrf_token").unwrap();
    (cookie, token)
}

async fn try_lookup(app: &TestApp, community: &str, account: &str, last4: &str) -> reqwest::Response {
    let (cookie, token) = lookup_form(app).await;
    no_redirects()
        .post(format!("{}/pay/lookup", app.address))
        .header("cookie", cookie)
        .form(&[
            ("community", community),
            ("account", account),
            ("mobile_last4", last4),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn looking_up_an_account_with_the_last_four_digits_opens_its_pay_page() {
    let app = spawn_app().await;
    let f = fixture(&app.db).await;
    let r = try_lookup(&app, "PG", "A1", "5678").await;
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("/pay/"), "{to}");
    let page = app.get(&to).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("A1"));
    let _ = f;

    for (community, account, last4) in [
        ("PG", "A1", "1111"),
        ("PG", "A2", "5678"),
        ("PG", "A9", "5678"),
        ("XX", "A1", "5678"),
    ] {
        let r = try_lookup(&app, community, account, last4).await;
        assert_eq!(r.status(), 401, "{community}/{account}/{last4}");
        assert!(r.text().await.unwrap().contains("没有找到匹配的账户"));
    }
    // Without the form's own token nothing is looked up.
    let r = no_redirects()
        .post(format!("{}/pay/lookup", app.address))
        .form(&[("community", "PG"), ("account", "A1"), ("mobile_last4", "5678")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_wrong_digits_lock_the_look_up_even_for_the_right_digits() {
    let app = spawn_app_with(|c| c.access.lockout_max_failures = 3).await;
    let _f = fixture(&app.db).await;
    for i in 1..=2 {
        assert_eq!(try_lookup(&app, "PG", "A1", "0000").await.status(), 401, "try {i}");
    }
    let r = try_lookup(&app, "PG", "A1", "0001").await;
    assert_eq!(r.status(), 429, "the third failure locks");
    let r = try_lookup(&app, "PG", "A1", "5678").await;
    assert_eq!(r.status(), 429, "locked even with the right digits");
    assert!(r.text().await.unwrap().contains("尝试次数过多"));
    // Another account is not locked by this one's failures.
    assert_eq!(try_lookup(&app, "PG", "A2", "1111").await.status(), 303);
    let audit = app.db.store.audit_for("account", "PG/A1").await.unwrap();
    assert_eq!(
        audit.iter().filter(|a| a.action == "resident.lookup_failed").count(),
        3,
        "each failure is audited"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_pay_token_never_reaches_the_logged_path() {
    // The request span records `loggable_path`; see its unit test for the rule.
    assert_eq!(
        meterpay::pages::resident::loggable_path("/pay/abcdef/bills/3"),
        "/pay/…/bills/3"
    );
}

#[allow(dead_code)]
pub async fn operator_session(app: &TestApp) -> StaffSession {
    add_user(&app.db, "op1", "operator").await;
    sign_in(app, "op1", PASSWORD).await
}

#[tokio::test]
async fn finance_pages_open_for_finance_and_read_only_and_export_csv_and_xlsx() {
    let app = spawn_app().await;
    let _f = fixture(&app.db).await;
    for role in ["finance", "read_only", "operator"] {
        add_user(&app.db, &format!("u-{role}"), role).await;
        let s = sign_in(&app, &format!("u-{role}"), PASSWORD).await;
        for path in [
            "/staff/finance?date=2026-11-20",
            "/staff/finance/arrears?community=PG",
            "/staff/finance/report?date=2026-11-20&format=csv",
            "/staff/finance/arrears/export?community=PG&format=csv",
            "/staff/finance/arrears/export?community=PG&format=xlsx",
        ] {
            let r = s.get(&app, path).await;
            if role == "operator" {
                assert_eq!(r.status(), 403, "{role}: {path}");
                continue;
            }
            assert_eq!(r.status(), 200, "{role}: {path}");
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            if path.contains("format=xlsx") {
                assert!(ct.contains("spreadsheetml"), "{ct}");
                let bytes = r.bytes().await.unwrap();
                assert!(bytes.starts_with(b"PK"), "an XLSX is a zip");
            } else if path.contains("format=csv") {
                assert!(ct.starts_with("text/csv"), "{ct}");
                let text = r.text().await.unwrap();
                if path.contains("arrears") {
                    assert!(text.starts_with("account_code,overdue_fen"), "{text}");
                    assert!(!text.contains("张三") && !text.contains("138"), "no names or phones");
                }
            } else {
                let html = r.text().await.unwrap();
                assert!(html.contains("<h1>"), "{path}");
            }
        }
    }
    // Deciding needs finance and the form's token.
    add_user(&app.db, "ro2", "read_only").await;
    let ro = sign_in(&app, "ro2", PASSWORD).await;
    let r = ro
        .post_form(
            &app,
            "/staff/finance/discrepancies/1/resolve",
            &[("decision", "write_off"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 403);
    let fin = sign_in(&app, "u-finance", PASSWORD).await;
    let r = fin
        .post_form_raw(
            &app,
            "/staff/finance/discrepancies/1/resolve",
            &[("decision", "write_off"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = fin
        .post_form(
            &app,
            "/staff/finance/discrepancies/1/resolve",
            &[("decision", "write_off"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 404, "no such item");
    let r = fin
        .post_form(
            &app,
            "/staff/finance/discrepancies/1/resolve",
            &[("decision", "guess"), ("reason", "x")],
        )
        .await;
    assert_eq!(r.status(), 400, "an unknown decision");
    app.stop().await.unwrap();
}
