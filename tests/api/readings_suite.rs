//! Readings in: the signed push API, the review queue and file imports. Every bad input gets a
//! clear answer and leaves nothing half-written.

use chrono::{NaiveDate, Utc};
use meterpay::billing::push;
use meterpay::domain::ids::Utility;
use meterpay::domain::Quantity;
use meterpay::store::directory::{NewAccount, NewMeter};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, TestDb};

struct Device {
    key_id: String,
    secret: Vec<u8>,
}

async fn seed(db: &TestDb) -> Device {
    let now = Utc::now();
    let (c, _) = db.store.ensure_community("C1", "One", "test", now).await.unwrap();
    let a = db
        .store
        .create_account(
            c.id,
            &NewAccount {
                code: "A1".into(),
                name: "Test".into(),
                building: "1".into(),
                unit: "1".into(),
                door_no: "101".into(),
                phone: None,
                mobile: None,
                email: None,
                credit_rating: "normal".into(),
                payment_mode: "postpaid".into(),
            },
            "test",
            now,
        )
        .await
        .unwrap();
    for (no, utility, digits) in [("E1", Utility::Electricity, 6), ("W1", Utility::Water, 5)] {
        let m = NewMeter {
            meter_no: no.into(),
            utility,
            model: None,
            digit_count: digits,
            multiplier: Quantity::parse("1").unwrap(),
            installed_on: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        };
        db.store.install_meter(&a, &m, "test", now).await.unwrap();
    }
    let (key_id, secret) = push::new_device_credentials();
    db.store
        .add_device(c.id, "concentrator", &key_id, &secret, "test", now)
        .await
        .unwrap();
    Device {
        key_id,
        secret: hex::decode(secret).unwrap(),
    }
}

async fn push_raw(app: &TestApp, d: &Device, body: &[u8], ts: i64, sig: Option<String>) -> reqwest::Response {
    let sig = sig.unwrap_or_else(|| push::sign(&d.secret, "POST", "/api/v1/readings", ts, body));
    app.client
        .post(format!("{}/api/v1/readings", app.address))
        .header(push::HEADER_KEY_ID, &d.key_id)
        .header(push::HEADER_TIMESTAMP, ts.to_string())
        .header(push::HEADER_SIGNATURE, sig)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// A distinct timestamp per push: two identical bodies signed in the same second carry the same
/// signature, and the replay guard rightly refuses the second.
fn fresh_ts() -> i64 {
    static N: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    Utc::now().timestamp() - 100 + N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 200
}

async fn push_ok(app: &TestApp, d: &Device, readings: Value) -> Value {
    let body = serde_json::to_vec(&json!({ "readings": readings })).unwrap();
    let r = push_raw(app, d, &body, fresh_ts(), None).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// E1 at 1,000, 1,100 and 1,200 on the first of January, February and March 2026.
async fn push_three_months(app: &TestApp, d: &Device) {
    push_ok(
        app,
        d,
        json!([
            r("E1", "electricity", "2026-01-01T00:00:00+08:00", "1000"),
            r("E1", "electricity", "2026-02-01T00:00:00+08:00", "1100"),
            r("E1", "electricity", "2026-03-01T00:00:00+08:00", "1200"),
        ]),
    )
    .await;
}

fn r(meter: &str, utility: &str, at: &str, value: &str) -> Value {
    json!({"meter_no": meter, "utility": utility, "read_at": at, "value": value})
}

#[tokio::test]
async fn a_signed_push_is_stored_and_the_same_push_again_is_acknowledged_not_doubled() {
    let app = spawn_app().await;
    let d = seed(&app.db).await;
    let batch = json!([
        r("E1", "electricity", "2026-01-01T00:00:00+08:00", "100"),
        r("W1", "water", "2026-01-01T00:00:00+08:00", "99987")
    ]);
    let out = push_ok(&app, &d, batch.clone()).await;
    assert_eq!(
        (out["accepted"].as_u64(), out["refused"].as_u64()),
        (Some(2), Some(0)),
        "{out}"
    );
    let again = push_ok(&app, &d, batch).await;
    assert_eq!(again["duplicates"], 2, "{again}");
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(app.db.store.reading_count().await.unwrap(), 2);
    // A water register rolling over from 99,987 to 15 is accepted as a rollover.
    let out = push_ok(&app, &d, json!([r("W1", "water", "2026-02-01T00:00:00+08:00", "15")])).await;
    assert_eq!(out["results"][0]["status"], "accepted", "{out}");
    assert_eq!(out["results"][0]["rollover"], true);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn bad_readings_are_refused_one_by_one_with_reasons_and_the_good_ones_stored() {
    let app = spawn_app().await;
    let d = seed(&app.db).await;
    push_ok(
        &app,
        &d,
        json!([r("E1", "electricity", "2026-01-01T00:00:00+08:00", "100")]),
    )
    .await;
    let out = push_ok(
        &app,
        &d,
        json!([
            r("NOPE", "electricity", "2026-02-01T00:00:00+08:00", "1"),
            r("E1", "electricity", "2026-02-01T00:00:00+08:00", "abc"),
            r("E1", "electricity", "2026-02-01T00:00:00+08:00", "-5"),
            r("E1", "electricity", "2099-01-01T00:00:00+08:00", "500"),
            r("E1", "electricity", "2026-01-01T00:00:00+08:00", "101"),
            r("E1", "electricity", "2026-02-01T00:00:00+08:00", "180"),
        ]),
    )
    .await;
    let reasons: Vec<String> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons[0].contains("unknown electricity meter"), "{reasons:?}");
    assert!(reasons[1].contains("not a decimal"), "{reasons:?}");
    assert!(reasons[2].contains("negative"), "{reasons:?}");
    assert!(reasons[3].contains("future"), "{reasons:?}");
    assert!(reasons[4].contains("conflicting duplicate"), "{reasons:?}");
    assert_eq!(out["results"][5]["status"], "accepted");
    assert_eq!((out["refused"].as_u64(), out["accepted"].as_u64()), (Some(5), Some(1)));
    assert_eq!(
        app.db.store.reading_count().await.unwrap(),
        2,
        "only the good reading was added"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn unsigned_badly_signed_stale_and_replayed_pushes_are_refused() {
    let app = spawn_app().await;
    let d = seed(&app.db).await;
    let body =
        serde_json::to_vec(&json!({"readings": [r("E1", "electricity", "2026-01-01T00:00:00+08:00", "1")]})).unwrap();
    let now = Utc::now().timestamp();
    // Unsigned.
    let resp = app
        .client
        .post(format!("{}/api/v1/readings", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let msg: Value = resp.json().await.unwrap();
    assert!(
        msg["error"]["message"].as_str().unwrap().contains("missing header"),
        "{msg}"
    );
    // Wrong signature.
    let resp = push_raw(&app, &d, &body, now, Some("00".repeat(32))).await;
    assert_eq!(resp.status(), 401);
    // Stale timestamp (signed correctly for that time).
    let resp = push_raw(&app, &d, &body, now - 3600, None).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("from the server's clock"));
    // Replay: the first use works, the second is refused.
    assert_eq!(push_raw(&app, &d, &body, now, None).await.status(), 200);
    let resp = push_raw(&app, &d, &body, now, None).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("already used"));
    // Unknown device.
    let stranger = Device {
        key_id: "dev_unknown".into(),
        secret: d.secret.clone(),
    };
    assert_eq!(push_raw(&app, &stranger, &body, now + 1, None).await.status(), 401);
    assert_eq!(app.db.store.reading_count().await.unwrap(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_implausible_reading_is_held_and_an_operator_accepts_it() {
    let app = spawn_app().await;
    let d = seed(&app.db).await;
    push_three_months(&app, &d).await;
    // Backwards by 700 on a 6-digit register: not a plausible rollover.
    let out = push_ok(
        &app,
        &d,
        json!([r("E1", "electricity", "2026-04-01T00:00:00+08:00", "500")]),
    )
    .await;
    assert_eq!(out["results"][0]["status"], "held", "{out}");
    let id = out["results"][0]["reading_id"].as_i64().unwrap();

    let url = format!("{}/api/v1/readings/held", app.address);
    assert_eq!(
        app.client.get(&url).send().await.unwrap().status(),
        401,
        "needs a token"
    );
    let reader = app
        .db
        .store
        .create_api_token("viewer", "read_only", "test", Utc::now())
        .await
        .unwrap();
    let operator = app
        .db
        .store
        .create_api_token("op", "operator", "test", Utc::now())
        .await
        .unwrap();
    let held: Value = app
        .client
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1);
    assert!(held[0]["hold_reason"].as_str().unwrap().contains("not plausible"));

    let accept = format!("{}/api/v1/readings/{id}/accept", app.address);
    let resp = app
        .client
        .post(&accept)
        .bearer_auth(&reader)
        .json(&json!({"note": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "read-only may not decide");
    let resp = app
        .client
        .post(&accept)
        .bearer_auth(&operator)
        .json(&json!({"note": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a reason is required");
    let resp = app
        .client
        .post(&accept)
        .bearer_auth(&operator)
        .json(&json!({"note": "meter replaced, see WO-17"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .post(&accept)
        .bearer_auth(&operator)
        .json(&json!({"note": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "no longer held");
    let audit = app.db.store.audit_for("reading", &id.to_string()).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "token:op");
    assert_eq!(audit[0].reason.as_deref(), Some("meter replaced, see WO-17"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_with_broken_rows_imports_the_good_rows_and_reports_each_bad_one() {
    let db = TestDb::new().await;
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readings.csv");
    std::fs::write(
        &file,
        "meter_no,utility,read_at,value,kind\n\
         E1,electricity,2026-01-01 08:00,100,actual\n\
         E1,electricity,2026-02-01 08:00,250.5,\n\
         E1,electricity,not a time,300,\n\
         X9,water,2026-02-01,3,\n\
         W1,water,2026-02-01,7,guess\n\
         W1,water,2026-02-01,7,\n",
    )
    .unwrap();
    let report = dir.path().join("report.csv");
    let summary = meterpay::billing::import::import_file(&db.store, &file, Some(&report), false)
        .await
        .unwrap();
    assert_eq!(
        (summary.rows, summary.accepted, summary.refused),
        (6, 3, 3),
        "{summary:?}"
    );
    let lines: Vec<usize> = summary.exceptions.iter().map(|e| e.0).collect();
    assert_eq!(lines, vec![4, 5, 6], "line numbers count the header as line 1");
    let text = std::fs::read_to_string(&report).unwrap();
    assert_eq!(text.lines().count(), 7, "one report line per row plus the header");
    assert!(text.contains("unknown water meter"));
    // Importing the same file again stores nothing new.
    let again = meterpay::billing::import::import_file(&db.store, &file, None, false)
        .await
        .unwrap();
    assert_eq!(again.duplicates, 3);
    assert_eq!(db.store.reading_count().await.unwrap(), 3);
}

#[tokio::test]
async fn a_file_missing_a_column_stores_nothing() {
    let db = TestDb::new().await;
    seed(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readings.csv");
    std::fs::write(&file, "meter_no,utility,value\nE1,electricity,100\n").unwrap();
    let err = meterpay::billing::import::import_file(&db.store, &file, None, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read_at"), "{err}");
    assert_eq!(db.store.reading_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_real_reading_after_more_than_a_window_of_estimates_is_measured_from_the_last_real_one() {
    let app = spawn_app().await;
    let d = seed(&app.db).await;
    // One actual reading, then 14 monthly estimates that run well ahead of the meter: the
    // newest 13 readings (the history window) hold no actual one.
    let mut batch = vec![r("E1", "electricity", "2025-01-01T00:00:00+08:00", "1000")];
    for i in 1..=14u32 {
        let (y, m) = (2025 + (i / 12), i % 12 + 1);
        batch.push(json!({"meter_no": "E1", "utility": "electricity",
            "read_at": format!("{y}-{m:02}-01T00:00:00+08:00"), "value": (1000 + 100 * i).to_string(), "kind": "estimated"}));
    }
    let out = push_ok(&app, &d, Value::Array(batch)).await;
    assert_eq!(out["accepted"], 15, "{out}");
    // The meter really shows 1,900: below the last estimate (2,400), above the last real
    // reading (1,000). Measured from the real one it is ordinary use, not a fall.
    let out = push_ok(
        &app,
        &d,
        json!([r("E1", "electricity", "2026-04-01T00:00:00+08:00", "1900")]),
    )
    .await;
    assert_eq!(out["results"][0]["status"], "accepted", "{out}");
    assert_eq!(out["results"][0]["rollover"], false, "{out}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn history_stored_in_another_time_form_is_still_read_whole() {
    let app = spawn_app().await;
    let d = seed(&app.db).await;
    push_three_months(&app, &d).await;
    if app.db.store.kind() == meterpay::store::BackendKind::Sqlite {
        // A time written by another tool ("YYYY-MM-DD HH:MM:SS", which SQLite and sqlx both
        // read as UTC): SQLite's one-column history no longer parses, and the meter's rows are
        // read one by one instead.
        let n = app
            .db
            .store
            .execute_raw_sql_for_tests(
                "UPDATE readings SET read_at = replace(replace(read_at, 'T', ' '), '+00:00', '')",
            )
            .await
            .unwrap();
        assert_eq!(n, 3);
    }
    // Backwards by 700 on a 6-digit register: held against the history, which it only is if
    // the history was read.
    let out = push_ok(
        &app,
        &d,
        json!([r("E1", "electricity", "2026-04-01T00:00:00+08:00", "500")]),
    )
    .await;
    assert_eq!(out["results"][0]["status"], "held", "{out}");
    let reason = out["results"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("went back from 1200 to 500"), "{reason}");
    app.stop().await.unwrap();
}
