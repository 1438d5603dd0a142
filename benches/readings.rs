//! Readings throughput: `readings import` of 1,000,000 readings (target ≥ 100,000/s) and the
//! signed push API in batches (target ≥ 20,000/s). Prints its figures; asserts nothing.
//!
//! `cargo bench --bench readings` runs on SQLite; with `BENCH_DATABASE_URL=postgres://…` it runs
//! on PostgreSQL as well (in a fresh schema). `BENCH_READINGS` changes the import size.

use std::io::Write;
use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use meterpay::billing::push;
use meterpay::config::Config;
use meterpay::domain::ids::Utility;
use meterpay::domain::Quantity;
use meterpay::startup::Application;
use meterpay::store::directory::{NewAccount, NewMeter};
use meterpay::store::{Store, StoreOptions};

async fn fresh_store(kind: &str) -> (Store, Option<tempfile::TempDir>) {
    match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::connect(
                &format!("sqlite://{}/bench.db", dir.path().display()),
                &StoreOptions::default(),
            )
            .await
            .unwrap();
            store.migrate().await.unwrap();
            (store, Some(dir))
        }
        _ => {
            let url = std::env::var("BENCH_DATABASE_URL").unwrap();
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Store::connect(&url, &StoreOptions::default()).await.unwrap();
            admin
                .execute_raw_sql_for_tests(&format!("CREATE SCHEMA {schema}"))
                .await
                .unwrap();
            admin.close().await;
            let store = Store::connect(
                &url,
                &StoreOptions {
                    pg_schema: Some(schema),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            store.migrate().await.unwrap();
            (store, None)
        }
    }
}

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

async fn bench(kind: &str, total: usize) {
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
    let start = Instant::now();
    let summary = meterpay::billing::import::import_file(&store, &path, None, false)
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
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
                serde_json::json!({"meter_no": format!("M{m:06}"), "utility": "electricity", "read_at": at, "value": format!("{}", 90_000 + b)})
            })
            .collect();
        bodies.push(serde_json::to_vec(&serde_json::json!({ "readings": readings })).unwrap());
    }
    let start = Instant::now();
    let mut stored = 0u64;
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
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "[{kind}] push API: {} readings in {batches} signed batches of {batch} in {:.2} s = {:.0} readings/s (target ≥ 20,000/s)",
        stored,
        secs,
        stored as f64 / secs
    );
    let _ = tx.send(());
    let _ = handle.await;
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    bench("sqlite", total).await;
    if std::env::var("BENCH_DATABASE_URL").is_ok() {
        bench("postgres", total).await;
    } else {
        println!("(set BENCH_DATABASE_URL=postgres://… to run the PostgreSQL figures too)");
    }
}
