//! The billing API over HTTP: roles, idempotency keys, audit with the caller and request id,
//! and a clear answer for each bad input.

use chrono::Utc;
use serde_json::{json, Value};

use crate::billing_helpers::*;
use crate::helpers::{spawn_app, TestApp};

const TARIFF: &str = r#"
[[tariff]]
community = "API"
utility = "electricity"
name = "Flat"
effective_from = 2020-01-01
[[tariff.components]]
kind = "energy"
prices = ["0.50"]
"#;

struct Tokens {
    operator: String,
    reader: String,
    finance: String,
}

async fn setup(app: &TestApp) -> Tokens {
    let s = &app.db.store;
    s.ensure_community("API", "API", "test", Utc::now()).await.unwrap();
    let now = Utc::now();
    Tokens {
        operator: s.create_api_token("op", "operator", "test", now).await.unwrap(),
        reader: s.create_api_token("viewer", "read_only", "test", now).await.unwrap(),
        finance: s.create_api_token("fin", "finance", "test", now).await.unwrap(),
    }
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value, key: Option<&str>) -> reqwest::Response {
    let mut r = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("x-request-id", "req-test")
        .json(&body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    r.send().await.unwrap()
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Accounts, tariff and two readings through the API (and the store for readings).
async fn billed(app: &TestApp, t: &Tokens) -> i64 {
    let r = app
        .client
        .post(format!("{}/api/v1/communities/API/accounts/import", app.address))
        .bearer_auth(&t.operator)
        .header("content-type", "text/csv")
        .body("code,name,building,unit,door_no,mobile,meters\nA1,Wang Fang,1,1,101,13800000101,E1:electricity:6\nA2,Li Na,1,1,102,not-a-phone,E2:electricity:6\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rep: Value = r.json().await.unwrap();
    assert_eq!(
        (rep["created"].as_u64(), rep["refused"].as_u64()),
        (Some(1), Some(1)),
        "{rep}"
    );
    let r = app
        .client
        .post(format!("{}/api/v1/tariffs/import", app.address))
        .bearer_auth(&t.operator)
        .header("content-type", "application/toml")
        .body(TARIFF)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    readings(
        &app.db.store,
        &[
            ("E1", "electricity", cst(2026, 1, 25, 8), "100", "actual"),
            ("E1", "electricity", cst(2026, 2, 25, 8), "300", "actual"),
        ],
    )
    .await;
    let r = post(
        app,
        &t.operator,
        "/api/v1/bills/run",
        json!({"period": "2026-02", "community": "API"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let rep: Value = r.json().await.unwrap();
    assert_eq!(rep["communities"][0]["bills_issued"], 1, "{rep}");
    let list: Value = get(app, &t.reader, "/api/v1/bills?community=API&period=2026-02")
        .await
        .json()
        .await
        .unwrap();
    list[0]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_bill_is_read_with_its_lines_and_readings_and_only_operators_run_bills() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let id = billed(&app, &t).await;
    let r = app
        .client
        .get(format!("{}/api/v1/bills/{id}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = get(&app, &t.reader, &format!("/api/v1/bills/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b["total_fen"], 10000);
    assert_eq!(b["total"], "100.00");
    assert_eq!(b["status"], "open");
    assert_eq!(b["lines"][0]["quantity_e4"], 200 * 10_000);
    assert_eq!(b["readings"][0]["meter_no"], "E1");
    assert_eq!(b["readings"][0]["from_value_e4"], 100 * 10_000);
    let r = post(&app, &t.reader, "/api/v1/bills/run", json!({"period": "2026-02"}), None).await;
    assert_eq!(r.status(), 403);
    let r = post(
        &app,
        &t.operator,
        "/api/v1/bills/run",
        json!({"period": "2026-13"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("YYYY-MM"));
    let r = post(
        &app,
        &t.operator,
        "/api/v1/bills/run",
        json!({"period": "2026-02", "community": "NOPE"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(get(&app, &t.reader, "/api/v1/bills/999999").await.status(), 404);
    let audit = app.db.store.audit_for("bill_run", "1").await.unwrap();
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].request_id.as_deref()),
        ("token:op", Some("req-test"))
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_a_different_request() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    billed(&app, &t).await;
    let body = json!({"period": "2026-03", "community": "API", "dry_run": true});
    let first = post(
        &app,
        &t.operator,
        "/api/v1/bills/run",
        body.clone(),
        Some("run-2026-03"),
    )
    .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = post(&app, &t.operator, "/api/v1/bills/run", body, Some("run-2026-03")).await;
    assert_eq!(
        again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = post(
        &app,
        &t.operator,
        "/api/v1/bills/run",
        json!({"period": "2026-04"}),
        Some("run-2026-03"),
    )
    .await;
    assert_eq!(other.status(), 422);
    // A refusal is the answer too: replayed, not redone.
    let a = app.db.store.community_by_code("API").await.unwrap().unwrap();
    let acct = app.db.store.account_by_code(a.id, "A1").await.unwrap().unwrap();
    let path = format!("/api/v1/accounts/{}/topups", acct.id);
    let r = post(
        &app,
        &t.finance,
        &path,
        json!({"amount": "12.345", "reference": "R1"}),
        Some("t1"),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(
        &app,
        &t.finance,
        &path,
        json!({"amount": "12.345", "reference": "R1"}),
        Some("t1"),
    )
    .await;
    assert_eq!(r.status(), 400);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn disputes_top_ups_waivers_and_thresholds_go_through_the_api_with_roles_and_audit() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let id = billed(&app, &t).await;
    let s = &app.db.store;
    let path = format!("/api/v1/bills/{id}/dispute");
    assert_eq!(
        post(&app, &t.reader, &path, json!({"reason": "x"}), None)
            .await
            .status(),
        403
    );
    assert_eq!(
        post(&app, &t.operator, &path, json!({"reason": " "}), None)
            .await
            .status(),
        400
    );
    assert_eq!(
        post(&app, &t.operator, &path, json!({"reason": "double read"}), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&app, &t.operator, &path, json!({"reason": "double read"}), None)
            .await
            .status(),
        422
    );
    let b: Value = get(&app, &t.reader, &format!("/api/v1/bills/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (b["disputed"].as_bool(), b["dispute_reason"].as_str()),
        (Some(true), Some("double read"))
    );
    let audit = s.audit_for("bill", &id.to_string()).await.unwrap();
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].request_id.as_deref()),
        ("token:op", Some("req-test"))
    );
    let r = post(
        &app,
        &t.operator,
        &format!("/api/v1/bills/{id}/undispute"),
        json!({"reason": "checked"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);

    let acct = b["account_id"].as_i64().unwrap();
    let topups = format!("/api/v1/accounts/{acct}/topups");
    assert_eq!(
        post(
            &app,
            &t.reader,
            &topups,
            json!({"amount": "50.00", "reference": "R1"}),
            None
        )
        .await
        .status(),
        403
    );
    let r = post(
        &app,
        &t.finance,
        &topups,
        json!({"amount": "50.00", "reference": "R1"}),
        Some("topup-R1"),
    )
    .await;
    assert_eq!(r.status(), 201);
    let top: Value = r.json().await.unwrap();
    assert_eq!(top["settled_fen"], 5000);
    // The same key again is a replay, not a second top-up.
    let r = post(
        &app,
        &t.finance,
        &topups,
        json!({"amount": "50.00", "reference": "R1"}),
        Some("topup-R1"),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = post(
        &app,
        &t.finance,
        &topups,
        json!({"amount": "50.00", "reference": "R1"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 409, "the receipt number is unique");
    let bal: Value = get(&app, &t.reader, &format!("/api/v1/accounts/{acct}/balance"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (bal["receivable_fen"].as_i64(), bal["credit_fen"].as_i64()),
        (Some(5000), Some(0))
    );
    let open: Value = get(&app, &t.reader, &format!("/api/v1/accounts/{acct}/bills/open"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (open[0]["outstanding_fen"].as_i64(), open[0]["status"].as_str()),
        (Some(5000), Some("partially_paid"))
    );

    let r = app
        .client
        .put(format!("{}/api/v1/accounts/{acct}/low-balance", app.address))
        .bearer_auth(&t.operator)
        .json(&json!({"threshold": "20.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let low: Value = get(&app, &t.reader, "/api/v1/prepaid/low-balance?community=API")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(low[0]["low_balance_fen"], 2000);

    // Late fees: accrue, list arrears, waive by API.
    let c = s.community_by_code("API").await.unwrap().unwrap();
    let due = s.bill_detail(id).await.unwrap().due_date;
    s.accrue_late_fees(due + chrono::Duration::days(10), Some(c.id), "job", Utc::now())
        .await
        .unwrap();
    let arrears: Value = get(
        &app,
        &t.reader,
        &format!(
            "/api/v1/arrears?community=API&as_of={}",
            due + chrono::Duration::days(10)
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(arrears["accounts"][0]["account_code"], "A1");
    assert_eq!(arrears["accounts"][0]["days_overdue"], 10);
    assert_eq!(
        arrears["accounts"][0]["late_fee_fen"], 100,
        "1‰ × 50.00 × 10 days = 0.50 → the 1.00 minimum"
    );
    let r = post(
        &app,
        &t.operator,
        &format!("/api/v1/bills/{id}/waive-late-fee"),
        json!({"reason": "goodwill"}),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["waived_fen"], 100);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn tariffs_settings_and_meter_replacement_by_api_refuse_bad_input_clearly() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    billed(&app, &t).await;
    let r = app
        .client
        .post(format!("{}/api/v1/tariffs/import", app.address))
        .bearer_auth(&t.operator)
        .body("[[tariff]]\ncommunity = \"API\"\nutility = \"gas\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("gas"));
    let r = post(
        &app,
        &t.operator,
        "/api/v1/tariffs",
        json!({"community": "API", "utility": "water", "name": "Water", "effective_from": "2026-01-01",
               "thresholds": ["180", "260"], "components": [{"kind": "water_fee", "prices": ["2.07", "4.07"]}]}),
        None,
    )
    .await;
    assert_eq!(r.status(), 422, "two prices for three tiers");
    let list: Value = get(&app, &t.reader, "/api/v1/tariffs?community=API")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = app
        .client
        .put(format!("{}/api/v1/communities/API/billing-settings", app.address))
        .bearer_auth(&t.operator)
        .json(&json!({"due_day_of_month": 31}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .put(format!("{}/api/v1/communities/API/billing-settings", app.address))
        .bearer_auth(&t.operator)
        .json(&json!({"due_day_of_month": 20, "late_fee_grace_days": 5, "allocation_order": "newest_first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = get(&app, &t.reader, "/api/v1/communities/API/billing-settings")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (s["due_day_of_month"].as_i64(), s["allocation_order"].as_str()),
        (Some(20), Some("newest_first"))
    );

    let m = app
        .db
        .store
        .meter_by_number("electricity", "E1")
        .await
        .unwrap()
        .unwrap();
    let path = format!("/api/v1/meters/{}/replace", m.id);
    let body = json!({"new_meter_no": "E1-B", "digit_count": 6, "replaced_on": "2026-03-05",
                      "final_value": "250", "initial_value": "2", "reason": "fault"});
    let r = post(&app, &t.operator, &path, body.clone(), None).await;
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("register went back from 300 to 250") && text.contains("not plausible"),
        "{text}"
    );
    let mut ok = body.clone();
    ok["final_value"] = json!("320");
    let r = post(&app, &t.operator, &path, ok.clone(), None).await;
    assert_eq!(r.status(), 201);
    let r = post(&app, &t.operator, &path, ok, None).await;
    assert_eq!(r.status(), 422, "already replaced");
    let readings: Value = get(&app, &t.reader, &format!("/api/v1/meters/{}/readings", m.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(readings.as_array().unwrap().last().unwrap()["kind"], "final");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn accounts_are_created_by_json_and_a_file_without_a_required_column_is_refused() {
    let app = spawn_app().await;
    let t = setup(&app).await;
    let r = post(
        &app,
        &t.operator,
        "/api/v1/communities/API/accounts",
        json!([{"code": "J1", "name": "Zhang Wei", "building": "2", "unit": "1", "door_no": "301",
                "mobile": "+86 138 0000 0301", "meters": [{"meter_no": "EJ1", "utility": "electricity", "digit_count": 6, "multiplier": "1"}]}]),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let rep: Value = r.json().await.unwrap();
    assert_eq!(rep["created"], 1, "{rep}");
    let c = app.db.store.community_by_code("API").await.unwrap().unwrap();
    let a = app.db.store.account_by_code(c.id, "J1").await.unwrap().unwrap();
    assert_eq!(a.mobile.as_deref(), Some("+8613800000301"));
    let r = app
        .client
        .post(format!("{}/api/v1/communities/API/accounts/import", app.address))
        .bearer_auth(&t.operator)
        .header("content-type", "text/csv")
        .body("code,name,building\nX,Y,1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unit"));
    assert_eq!(
        app.db.store.list_accounts(c.id).await.unwrap().len(),
        1,
        "nothing half-imported"
    );
    app.stop().await.unwrap();
}
