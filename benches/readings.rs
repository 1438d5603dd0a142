//! Readings throughput: `readings import` of 1,000,000 readings (target ≥ 100,000/s) and the
//! signed push API in batches (target ≥ 20,000/s). Prints its figures; asserts nothing.
//!
//! `cargo bench --bench readings` runs on SQLite; with `BENCH_DATABASE_URL=postgres://…` it runs
//! on PostgreSQL as well (in a fresh schema); `BENCH_ONLY=sqlite|postgres` runs one.
//! `BENCH_READINGS` changes the import size.
//!
//! The import is 2,000 meters × 500 readings, 6 hours apart (`BENCH_READINGS` / 2,000 each);
//! the pushes continue every meter's series at its usual rate, so they are accepted as a
//! concentrator's would be. Each figure comes with this process's CPU time, the PostgreSQL
//! backends' CPU time and the machine's load (the machine is shared); a reference row gives the
//! floor: the same number of rows of the readings' shape inserted with no checks at all.

use std::io::Write;

mod common;
use common::{fresh_store, Probe, Row, Target};

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use meterpay::billing::push;
use meterpay::config::Config;
use meterpay::domain::ids::Utility;
use meterpay::domain::Quantity;
use meterpay::startup::Application;
use meterpay::store::directory::{NewAccount, NewMeter};
use meterpay::store::Store;

async fn meters(store: &Store, n: usize) -> i64 {
    let now = Utc::now();
    let (c, _) = store.ensure_community("BENCH", "Bench", "bench", now).await.unwrap();
    for i in 0..n {
        let a = store
            .create_account(
                c.id,
                &NewAccount {
                    code: format!("A{i}"),
                    name: "Bench".into(),
                    building: format!("{}", i / 1000),
                    unit: "1".into(),
                    door_no: format!("{i}"),
                    phone: None,
                    mobile: None,
                    email: None,
                    credit_rating: "normal".into(),
                    payment_mode: "postpaid".into(),
                },
                "bench",
                now,
            )
            .await
            .unwrap();
        let m = NewMeter {
            meter_no: format!("M{i:06}"),
            utility: Utility::Electricity,
            model: None,
            digit_count: 8,
            multiplier: Quantity::parse("1").unwrap(),
            installed_on: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
        };
        store.install_meter(&a, &m, "bench", now).await.unwrap();
    }
    c.id
}

async fn bench(kind: &'static str, total: usize, rows: &mut Vec<Row>) {
    let n_meters = 2_000;
    let per_meter = total / n_meters;
    let (store, _dir) = fresh_store(kind).await;
    let community = meters(&store, n_meters).await;
    // File import.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "meter_no,utility,read_at,value").unwrap();
    let t0 = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
    for d in 0..per_meter {
        let at = (t0 + Duration::hours(6 * d as i64)).to_rfc3339();
        for m in 0..n_meters {
            writeln!(f, "M{m:06},electricity,{at},{}.{}", 1000 + d * 3 + m % 3, m % 10).unwrap();
        }
    }
    f.flush().unwrap();
    drop(f);
    let probe = Probe::start(kind).await;
    let summary = meterpay::billing::import::import_file(&store, &path, None, false)
        .await
        .unwrap();
    let m = probe.stop().await;
    let secs = m.secs;
    assert_eq!(
        summary.accepted,
        per_meter * n_meters,
        "{:?}",
        &summary.exceptions[..summary.exceptions.len().min(3)]
    );
    println!(
        "[{kind}] readings import: {} readings in {:.2} s = {:.0} readings/s (target ≥ 100,000/s)",
        summary.rows,
        secs,
        summary.rows as f64 / secs
    );
    rows.push(Row {
        backend: kind,
        what: "readings import (CSV file, one transaction)".into(),
        items: summary.rows,
        unit: "readings",
        m,
        target: Target::Rate(100_000.0),
    });

    // Push API, batches of 1,000 from one device, sequential requests over one connection.
    let (key_id, secret) = push::new_device_credentials();
    store
        .add_device(community, "bench", &key_id, &secret, "bench", Utc::now())
        .await
        .unwrap();
    let secret = hex::decode(secret).unwrap();
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".into();
    config.jobs.enabled = false;
    let app = Application::build_with_store(config, store.clone()).await.unwrap();
    let base = format!("http://{}", app.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let batches = 100;
    let batch = 1_000;
    let t1 = t0 + Duration::days(400);
    let mut bodies = Vec::new();
    for b in 0..batches {
        let at = (t1 + Duration::hours(b as i64)).to_rfc3339();
        let readings: Vec<_> = (0..batch)
            .map(|i| {
                let m = (b * batch + i) % n_meters;
                // The import left meter m near 1000 + 12 × days (3 every 6 hours): carry on.
                let days = 400.0 + b as f64 / 24.0;
                let v = 1000 + (12.0 * days) as usize + m % 3;
                serde_json::json!({"meter_no": format!("M{m:06}"), "utility": "electricity", "read_at": at, "value": format!("{v}.{}", m % 10)})
            })
            .collect();
        bodies.push(serde_json::to_vec(&serde_json::json!({ "readings": readings })).unwrap());
    }
    let probe = Probe::start(kind).await;
    let mut stored = 0u64;
    let mut accepted = 0u64;
    for (i, body) in bodies.iter().enumerate() {
        let ts = Utc::now().timestamp() + i as i64 % 100;
        let sig = push::sign(&secret, "POST", "/api/v1/readings", ts, body);
        let r = client
            .post(format!("{base}/api/v1/readings"))
            .header(push::HEADER_KEY_ID, &key_id)
            .header(push::HEADER_TIMESTAMP, ts.to_string())
            .header(push::HEADER_SIGNATURE, sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        stored += v["accepted"].as_u64().unwrap() + v["held"].as_u64().unwrap();
        accepted += v["accepted"].as_u64().unwrap();
    }
    let m = probe.stop().await;
    let secs = m.secs;
    println!(
        "[{kind}] push API: {} readings ({accepted} accepted) in {batches} signed batches of {batch} in {:.2} s = {:.0} readings/s (target ≥ 20,000/s)",
        stored,
        secs,
        stored as f64 / secs
    );
    rows.push(Row {
        backend: kind,
        what: format!("push API, {batches} signed batches of {batch}, one after another"),
        items: stored as usize,
        unit: "readings",
        m,
        target: Target::Rate(20_000.0),
    });
    let _ = tx.send(());
    let _ = handle.await;
    store.close().await;
    let m = common::raw_insert_floor(kind, total).await;
    rows.push(Row {
        backend: kind,
        what: "reference: raw INSERT of as many rows, no checks".into(),
        items: total,
        unit: "rows",
        m,
        target: Target::None,
    });
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut rows = Vec::new();
    for kind in common::backends() {
        bench(kind, total, &mut rows).await;
    }
    common::print_table("readings", &rows);
}
