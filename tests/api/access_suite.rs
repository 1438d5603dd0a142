//! Access: anonymous callers, roles, CSRF, sessions, lock-out and the audit trail of every change.

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestDb};
use crate::staff::{
    add_user, cookie_pair, no_redirects, set_cookies, sign_in, token, try_sign_in, try_sign_in_from, StaffSession,
    PASSWORD,
};

/// What an anonymous caller of a protected route must get.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `401` with a JSON error.
    Api,
    /// `303` to the sign-in page, coming back here.
    Page,
}

/// Every protected route. Add yours here, one line each.
const PROTECTED: &[(&str, &str, Refusal)] = &[
    ("GET", "/api/v1/readings/held", Refusal::Api),
    ("POST", "/api/v1/readings/1/accept", Refusal::Api),
    ("POST", "/api/v1/readings/1/reject", Refusal::Api),
    ("GET", "/api/v1/tokens", Refusal::Api),
    ("POST", "/api/v1/tokens", Refusal::Api),
    ("DELETE", "/api/v1/tokens/1", Refusal::Api),
    ("GET", "/api/v1/users", Refusal::Api),
    ("POST", "/api/v1/users", Refusal::Api),
    ("PUT", "/api/v1/users/someone/role", Refusal::Api),
    ("PUT", "/api/v1/users/someone/password", Refusal::Api),
    ("PUT", "/api/v1/users/someone/disabled", Refusal::Api),
    ("GET", "/staff", Refusal::Page),
    ("GET", "/staff/audit", Refusal::Page),
    ("GET", "/staff/users", Refusal::Page),
    ("GET", "/staff/password", Refusal::Page),
    ("POST", "/staff/password", Refusal::Page),
    ("POST", "/staff/sign-out", Refusal::Page),
    ("GET", "/staff/ops", Refusal::Page),
    ("GET", "/staff/ops/communities/X", Refusal::Page),
    ("GET", "/staff/ops/communities/X/meters", Refusal::Page),
    ("GET", "/staff/ops/communities/X/tariffs", Refusal::Page),
    ("GET", "/staff/ops/accounts/1", Refusal::Page),
    ("GET", "/staff/ops/meters/1", Refusal::Page),
    ("GET", "/staff/ops/bills/1", Refusal::Page),
    ("GET", "/staff/ops/readings", Refusal::Page),
    ("POST", "/staff/ops/readings/1/accept", Refusal::Page),
    ("POST", "/staff/ops/readings/1/reject", Refusal::Page),
    ("GET", "/staff/ops/bill-runs", Refusal::Page),
    ("POST", "/staff/ops/bill-runs", Refusal::Page),
    ("POST", "/staff/ops/bill-runs/preview", Refusal::Page),
    ("GET", "/staff/ops/reminders", Refusal::Page),
    ("GET", "/staff/finance", Refusal::Page),
    ("POST", "/staff/finance/discrepancies/1/resolve", Refusal::Page),
    ("GET", "/staff/finance/report?date=2026-11-20&format=csv", Refusal::Page),
    ("GET", "/staff/finance/arrears", Refusal::Page),
    ("GET", "/staff/finance/arrears/export?format=csv", Refusal::Page),
];

async fn call(app: &TestApp, method: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = no_redirects().request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", app.address),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method != "GET" && method != "DELETE" {
        req = req.header("content-type", "application/json").body("{}");
    }
    req.send().await.unwrap()
}

async fn assert_refused(app: &TestApp, method: &str, path: &str, expect: Refusal, headers: &[(&str, &str)], who: &str) {
    let r = call(app, method, path, headers).await;
    match expect {
        Refusal::Api => {
            assert_eq!(r.status(), 401, "{who}: {method} {path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{who}: {method} {path}");
        }
        Refusal::Page => {
            assert_eq!(r.status(), 303, "{who}: {method} {path}");
            let to = r.headers()["location"].to_str().unwrap();
            assert!(to.starts_with("/staff/sign-in?next="), "{who}: {method} {path} → {to}");
        }
    }
}

#[tokio::test]
async fn every_protected_route_refuses_an_anonymous_caller() {
    let app = spawn_app().await;
    for (method, path, expect) in PROTECTED {
        assert_refused(&app, method, path, *expect, &[], "anonymous").await;
        // Made-up credentials are no better than none.
        assert_refused(
            &app,
            method,
            path,
            *expect,
            &[("cookie", "__Host-meterpay_session=0123abcd")],
            "a forged session cookie",
        )
        .await;
    }
    // A made-up bearer token is refused on the API.
    for (method, path, expect) in PROTECTED {
        if matches!(expect, Refusal::Api) {
            assert_refused(
                &app,
                method,
                path,
                *expect,
                &[("authorization", "Bearer mp_nonsense")],
                "a forged token",
            )
            .await;
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_page_redirect_brings_the_person_back_after_sign_in() {
    let app = spawn_app().await;
    add_user(&app.db, "admin1", "admin").await;
    let r = call(&app, "GET", "/staff/audit?x=1", &[]).await;
    assert_eq!(r.headers()["location"], "/staff/sign-in?next=%2Fstaff%2Faudit%3Fx%3D1");
    let (cookie, token) = crate::staff::sign_in_form(&app).await;
    let r = no_redirects()
        .post(format!("{}/staff/sign-in", app.address))
        .header("cookie", cookie)
        .form(&[
            ("name", "admin1"),
            ("password", PASSWORD),
            ("csrf_token", &token),
            ("next", "/staff/audit?x=1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/staff/audit?x=1");
    // Another site is never a destination.
    let (cookie, token) = crate::staff::sign_in_form(&app).await;
    let r = no_redirects()
        .post(format!("{}/staff/sign-in", app.address))
        .header("cookie", cookie)
        .form(&[
            ("name", "admin1"),
            ("password", PASSWORD),
            ("csrf_token", &token),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/staff");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn sign_in_sets_a_secure_http_only_same_site_cookie_with_a_new_value_each_time() {
    let app = spawn_app().await;
    add_user(&app.db, "op1", "operator").await;
    let r = try_sign_in(&app, "op1", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-meterpay_session="))
        .expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let second = cookie_pair(&try_sign_in(&app, "op1", PASSWORD).await, "__Host-meterpay_session").unwrap();
    assert_ne!(
        cookie.split(';').next().unwrap(),
        second,
        "every sign-in gets a new session"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_cookie_is_plain_when_configured_for_a_local_http_demo() {
    let app = spawn_app_with(|c| c.access.cookie_secure = false).await;
    add_user(&app.db, "op1", "operator").await;
    let r = try_sign_in(&app, "op1", PASSWORD).await;
    let cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("meterpay_session="))
        .expect("plain session cookie");
    assert!(!cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
    let s = sign_in(&app, "op1", PASSWORD).await;
    assert_eq!(s.get(&app, "/staff").await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_role_without_the_right_is_refused() {
    let app = spawn_app().await;
    add_user(&app.db, "op1", "operator").await;
    let op = sign_in(&app, "op1", PASSWORD).await;
    // A page: an HTML 403.
    let r = op.get(&app, "/staff/audit").await;
    assert_eq!(r.status(), 403);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    // The API through the session: a JSON 403.
    let r = op.get(&app, "/api/v1/users").await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    // The API through a token of a lesser role.
    let t = token(&app.db, "ro-bot", "read_only").await;
    let r = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .bearer_auth(&t)
        .json(&json!({"name": "x", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        app.db.store.list_api_tokens().await.unwrap().len() == 1,
        "no token was created"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_home_page_shows_only_what_the_role_may_use() {
    let app = spawn_app().await;
    add_user(&app.db, "admin1", "admin").await;
    add_user(&app.db, "fin1", "finance").await;
    let admin = sign_in(&app, "admin1", PASSWORD).await;
    let html = admin.get(&app, "/staff").await.text().await.unwrap();
    assert!(html.contains("href=\"/staff/audit\"") && html.contains("href=\"/staff/users\""));
    let fin = sign_in(&app, "fin1", PASSWORD).await;
    let html = fin.get(&app, "/staff").await.text().await.unwrap();
    assert!(
        !html.contains("href=\"/staff/audit\"") && !html.contains("href=\"/staff/users\""),
        "{html}"
    );
    assert!(html.contains("href=\"/staff/password\""));
    assert!(html.contains("fin1"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_form_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    add_user(&app.db, "op1", "operator").await;
    let s = sign_in(&app, "op1", PASSWORD).await;
    let fields = [
        ("current", PASSWORD),
        ("new", "a brand new secret"),
        ("confirm", "a brand new secret"),
    ];
    let r = s.post_form_raw(&app, "/staff/password", &fields).await;
    assert_eq!(r.status(), 403, "no token");
    let mut wrong = fields.to_vec();
    wrong.push(("csrf_token", "0000"));
    let r = s.post_form_raw(&app, "/staff/password", &wrong).await;
    assert_eq!(r.status(), 403, "wrong token");
    assert!(r.text().await.unwrap().contains("security token"));
    // Another session's token is wrong too.
    let other = sign_in(&app, "op1", PASSWORD).await;
    let mut theirs = fields.to_vec();
    theirs.push(("csrf_token", &other.csrf));
    assert_eq!(s.post_form_raw(&app, "/staff/password", &theirs).await.status(), 403);
    // Nothing changed: the old password still works.
    assert_eq!(try_sign_in(&app, "op1", PASSWORD).await.status(), 303);
    // With the token the same form works.
    let r = s.post_form(&app, "/staff/password", &fields).await;
    assert_eq!(r.status(), 303);
    assert_eq!(try_sign_in(&app, "op1", "a brand new secret").await.status(), 303);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_cookie_authenticated_api_call_needs_the_csrf_header_but_a_token_call_does_not() {
    let app = spawn_app().await;
    add_user(&app.db, "admin1", "admin").await;
    let s = sign_in(&app, "admin1", PASSWORD).await;
    let body = json!({"name": "ci", "role": "read_only"});
    let r = s.json(&app, Method::POST, "/api/v1/tokens", &body, false).await;
    assert_eq!(r.status(), 403);
    assert!(app.db.store.list_api_tokens().await.unwrap().is_empty());
    let r = s.json(&app, Method::POST, "/api/v1/tokens", &body, true).await;
    assert_eq!(r.status(), 201);
    // Reads need no token.
    assert_eq!(s.get(&app, "/api/v1/tokens").await.status(), 200);
    // A bearer token is not ambient authority: no CSRF token needed.
    let t = token(&app.db, "admin-bot", "admin").await;
    let r = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .bearer_auth(&t)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_sign_in_form_refuses_a_post_without_its_own_token() {
    let app = spawn_app().await;
    add_user(&app.db, "op1", "operator").await;
    let r = no_redirects()
        .post(format!("{}/staff/sign-in", app.address))
        .form(&[("name", "op1"), ("password", PASSWORD), ("csrf_token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        cookie_pair(&r, "__Host-meterpay_session").is_none(),
        "no session was started"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_session_after_sign_out_is_refused() {
    let app = spawn_app().await;
    add_user(&app.db, "fin1", "finance").await;
    let s = sign_in(&app, "fin1", PASSWORD).await;
    assert_eq!(
        s.get(&app, "/api/v1/readings/held").await.status(),
        200,
        "the session works on the API"
    );
    let r = s.sign_out(&app).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/staff/sign-in?signed_out=1");
    let cleared = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-meterpay_session="))
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie, replayed, no longer opens anything.
    let r = s.get(&app, "/staff").await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.get(&app, "/api/v1/readings/held").await.status(), 401);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let app = spawn_app_with(|c| c.access.session_lifetime_secs = 1).await;
    add_user(&app.db, "fin1", "finance").await;
    let s = sign_in(&app, "fin1", PASSWORD).await;
    // Time is not slept: ask the store as of a moment after the expiry.
    let token = s.cookie.split_once('=').unwrap().1;
    let later = Utc::now() + chrono::Duration::seconds(5);
    assert!(app
        .db
        .store
        .session_by_token(token, Utc::now())
        .await
        .unwrap()
        .is_some());
    assert!(app.db.store.session_by_token(token, later).await.unwrap().is_none());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_locks_the_user_out_after_the_configured_count() {
    let app = spawn_app_with(|c| c.access.lockout_max_failures = 3).await;
    add_user(&app.db, "op1", "operator").await;
    add_user(&app.db, "op2", "operator").await;
    assert_eq!(try_sign_in(&app, "op1", "wrong one").await.status(), 401);
    assert_eq!(try_sign_in(&app, "op1", "wrong two").await.status(), 401);
    let r = try_sign_in(&app, "op1", "wrong three").await;
    assert_eq!(r.status(), 429, "the third failure locks the name");
    // Now even the right password is refused, and says why.
    let r = try_sign_in(&app, "op1", PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("15 分钟"), "it says when to try again");
    // Another user from the same address is not affected.
    assert_eq!(try_sign_in(&app, "op2", PASSWORD).await.status(), 303);
    let actions: Vec<String> = app
        .db
        .store
        .audit_for("staff_user", "op1")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        [
            "staff_user.create",
            "staff.sign_in_failed",
            "staff.sign_in_failed",
            "staff.sign_in_failed",
            "staff.locked_out",
            "staff.sign_in_refused_locked",
        ]
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn too_many_failures_from_one_address_lock_that_address_out() {
    let app = spawn_app_with(|c| {
        c.access.lockout_max_failures_per_source = 3;
        c.access.trust_forwarded_for = true;
    })
    .await;
    add_user(&app.db, "op1", "operator").await;
    for guess in ["root", "admin", "test"] {
        try_sign_in_from(&app, guess, "123456", Some("203.0.113.9")).await;
    }
    let r = try_sign_in_from(&app, "op1", PASSWORD, Some("203.0.113.9")).await;
    assert_eq!(r.status(), 429, "the address is locked out, whatever the name");
    let r = try_sign_in_from(&app, "op1", PASSWORD, Some("198.51.100.4")).await;
    assert_eq!(r.status(), 303, "another address is not");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn failures_leave_the_lockout_window_and_a_success_resets_the_count() {
    let db = TestDb::new().await;
    let t0 = Utc::now();
    for i in 0..3 {
        db.store
            .record_sign_in_failure(
                "op1",
                "10.0.0.1",
                "wrong password",
                None,
                t0 + chrono::Duration::seconds(i),
            )
            .await
            .unwrap();
    }
    let window = chrono::Duration::minutes(15);
    let at = t0 + chrono::Duration::minutes(1);
    assert_eq!(
        db.store
            .recent_sign_in_failures("op1", "10.0.0.1", at - window)
            .await
            .unwrap(),
        (3, 3)
    );
    let later = t0 + chrono::Duration::minutes(16);
    assert_eq!(
        db.store
            .recent_sign_in_failures("op1", "10.0.0.1", later - window)
            .await
            .unwrap(),
        (0, 0),
        "failures older than the window no longer count"
    );
    let u = crate::staff::add_user(&db, "op1", "operator").await;
    db.store
        .start_session(
            u.id,
            "op1",
            &meterpay::store::users::NewSession {
                token: "t",
                csrf_token: "c",
                source: "10.0.0.1",
                expires_at: at + window,
            },
            t0 + chrono::Duration::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(
        db.store
            .recent_sign_in_failures("op1", "10.0.0.1", at - window)
            .await
            .unwrap(),
        (0, 0),
        "a successful sign-in starts the count again"
    );
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_and_their_sessions_end() {
    let app = spawn_app().await;
    add_user(&app.db, "op1", "operator").await;
    let s = sign_in(&app, "op1", PASSWORD).await;
    let admin = token(&app.db, "admin-bot", "admin").await;
    let r = app
        .client
        .put(format!("{}/api/v1/users/op1/disabled", app.address))
        .bearer_auth(&admin)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get(&app, "/staff").await.status(), 303);
    assert_eq!(try_sign_in(&app, "op1", PASSWORD).await.status(), 401);
    app.stop().await.unwrap();
}

async fn admin_call(app: &TestApp, t: &str, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(t);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn api_tokens_are_created_listed_and_revoked_by_admins() {
    let app = spawn_app().await;
    let admin = token(&app.db, "admin-bot", "admin").await;
    let r = admin_call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "meter-sync", "role": "operator"})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let new_token = created["token"].as_str().unwrap().to_string();
    assert!(new_token.starts_with("mp_"));
    let id = created["id"].as_i64().unwrap();
    // The new token works with its role.
    let r = app
        .client
        .get(format!("{}/api/v1/readings/held", app.address))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = admin_call(&app, &admin, Method::GET, "/api/v1/tokens", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&new_token), "the list never shows a token");
    let r = admin_call(&app, &admin, Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(r.status(), 200);
    let revoked: Value = r.json().await.unwrap();
    assert_eq!(revoked["revoked_by"], "token:admin-bot");
    let r = app
        .client
        .get(format!("{}/api/v1/readings/held", app.address))
        .bearer_auth(&new_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a revoked token is refused");
    // Revoking again changes nothing; an unknown id is 404; a bad role is 400.
    assert_eq!(
        admin_call(&app, &admin, Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        admin_call(&app, &admin, Method::DELETE, "/api/v1/tokens/999", None)
            .await
            .status(),
        404
    );
    let r = admin_call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "x", "role": "root"})),
    )
    .await;
    assert_eq!(r.status(), 400);
    let audit = app.db.store.audit_for("api_token", &id.to_string()).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        ["api_token.create", "api_token.revoke"],
        "revoked once, audited once"
    );
    assert!(audit.iter().all(|a| a.actor == "token:admin-bot"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_audit_log_records_each_change_with_who_what_and_before_after() {
    let app = spawn_app().await;
    let admin = token(&app.db, "admin-bot", "admin").await;
    let r = admin_call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "li.na", "role": "read_only", "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = admin_call(
        &app,
        &admin,
        Method::PUT,
        "/api/v1/users/li.na/role",
        Some(json!({"role": "finance"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(try_sign_in(&app, "li.na", "not the password").await.status(), 401);
    let s: StaffSession = sign_in(&app, "li.na", PASSWORD).await;
    let r = s
        .post_form(
            &app,
            "/staff/password",
            &[
                ("current", PASSWORD),
                ("new", "another fine secret"),
                ("confirm", "another fine secret"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.sign_out(&app).await.status(), 303);

    let audit = app.db.store.audit_for("staff_user", "li.na").await.unwrap();
    let summary: Vec<(&str, &str)> = audit.iter().map(|a| (a.actor.as_str(), a.action.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("token:admin-bot", "staff_user.create"),
            ("token:admin-bot", "staff_user.role_change"),
            ("anonymous@127.0.0.1", "staff.sign_in_failed"),
            ("user:li.na", "staff.sign_in"),
            ("user:li.na", "staff_user.password_change"),
            ("user:li.na", "staff.sign_out"),
        ]
    );
    let role_change = &audit[1];
    assert_eq!(role_change.before_json.as_deref(), Some(r#"{"role":"read_only"}"#));
    assert_eq!(role_change.after_json.as_deref(), Some(r#"{"role":"finance"}"#));
    assert_eq!(audit[2].reason.as_deref(), Some("wrong password"));
    for a in &audit {
        let text = format!("{:?}{:?}", a.before_json, a.after_json);
        assert!(
            !text.contains("argon2") && !text.contains(PASSWORD),
            "no secret in the audit log: {text}"
        );
        assert!(a.at <= Utc::now());
    }
    // The audit page shows it to admins.
    crate::staff::add_user(&app.db, "boss", "admin").await;
    let boss = sign_in(&app, "boss", PASSWORD).await;
    let html = boss.get(&app, "/staff/audit").await.text().await.unwrap();
    assert!(html.contains("staff_user.role_change") && html.contains("token:admin-bot"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_but_keeps_this_one() {
    let app = spawn_app().await;
    add_user(&app.db, "op1", "operator").await;
    let here = sign_in(&app, "op1", PASSWORD).await;
    let elsewhere = sign_in(&app, "op1", PASSWORD).await;
    let r = here
        .post_form(
            &app,
            "/staff/password",
            &[("current", PASSWORD), ("new", "short"), ("confirm", "short")],
        )
        .await;
    assert_eq!(r.status(), 422, "a too-short password is refused");
    let r = here
        .post_form(
            &app,
            "/staff/password",
            &[
                ("current", "wrong"),
                ("new", "long enough now"),
                ("confirm", "long enough now"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422, "the current password is checked");
    assert_eq!(elsewhere.get(&app, "/staff").await.status(), 200, "nothing changed yet");
    let r = here
        .post_form(
            &app,
            "/staff/password",
            &[
                ("current", PASSWORD),
                ("new", "long enough now"),
                ("confirm", "long enough now"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(here.get(&app, "/staff").await.status(), 200);
    assert_eq!(elsewhere.get(&app, "/staff").await.status(), 303);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pages_speak_chinese_first_and_english_on_request() {
    let app = spawn_app().await;
    let get = |lang: Option<&'static str>, cookie: Option<&'static str>| {
        let mut req = no_redirects().get(format!("{}/staff/sign-in", app.address));
        if let Some(l) = lang {
            req = req.header("accept-language", l);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let html = get(None, None).await.unwrap().text().await.unwrap();
    assert!(html.contains("<html lang=\"zh-CN\">") && html.contains("员工登录"));
    let r = get(Some("en-GB,en;q=0.9"), None).await.unwrap();
    assert_eq!(r.headers()["content-language"], "en");
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains("Staff sign-in"));
    let html = get(Some("en"), Some("meterpay_lang=zh"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("员工登录"), "the chosen language beats the browser's");
    // The switch sets the cookie and goes back.
    let r = no_redirects()
        .get(format!("{}/lang/en?next=%2Fstaff%2Fsign-in", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/staff/sign-in");
    assert_eq!(cookie_pair(&r, "meterpay_lang").as_deref(), Some("meterpay_lang=en"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy_and_are_not_cached() {
    let app = spawn_app().await;
    let r = app.get("/staff/sign-in").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let css = app.get("/assets/meterpay.css").await;
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn serve_creates_no_staff_user_but_the_demo_creates_one_per_role_with_the_demo_password() {
    let app = spawn_app().await;
    assert!(
        app.db.store.list_staff_users().await.unwrap().is_empty(),
        "serve starts with no user"
    );
    let summary = meterpay::demo::run(&app.db.store, &app.address).await.unwrap();
    let again = meterpay::demo::run(&app.db.store, &app.address).await.unwrap();
    assert_eq!(summary.staff_users, again.staff_users);
    let roles: Vec<&str> = summary.staff_users.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(roles, ["admin", "finance", "operator"]);
    assert_eq!(
        app.db.store.list_staff_users().await.unwrap().len(),
        3,
        "the second run created no one"
    );
    for (name, _) in &summary.staff_users {
        sign_in(&app, name, &summary.staff_password).await;
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn users_add_creates_the_first_admin_from_a_password_on_stdin() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/cli.db", dir.path().display());
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meterpay"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("METERPAY_LOG__LEVEL", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &["users", "add", "--name", "chief", "--role", "admin", "--password-stdin"],
        "a long admin secret\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(
        &["users", "add", "--name", "chief", "--role", "admin", "--password-stdin"],
        "a long admin secret\n",
    );
    assert!(!out.status.success(), "the same name twice is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a staff user named chief already exists"));
    let out = run(
        &[
            "users",
            "add",
            "--name",
            "weak",
            "--role",
            "operator",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!out.status.success(), "a short password is refused");
    let out = run(&["users", "list"], "");
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains("chief") && listed.contains("admin") && !listed.contains("weak"),
        "{listed}"
    );
    // The user signs in with that password.
    let store = meterpay::store::Store::connect(&url, &Default::default())
        .await
        .unwrap();
    let creds = store.staff_credentials("chief").await.unwrap().unwrap();
    assert!(meterpay::access::verify_password(
        "a long admin secret",
        &creds.password_hash
    ));
    let audit = store.audit_for("staff_user", "chief").await.unwrap();
    assert_eq!(audit[0].actor, "cli");
    assert_eq!(audit[0].action, "staff_user.create");
    store.close().await;
}
