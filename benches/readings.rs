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

    // Push API, batches of 1,000. First one concentrator, its requests one after another; then
    // two concentrators at once (each its own device key and its own half of the meters, each
    // still one request after another), as a community's concentrators push in practice.
    let mut devices = Vec::new();
    for d in 0..2 {
        let (key_id, secret) = push::new_device_credentials();
        store
            .add_device(community, &format!("bench-{d}"), &key_id, &secret, "bench", Utc::now())
            .await
            .unwrap();
        devices.push((key_id, hex::decode(secret).unwrap()));
    }
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
    // Batch b carries meters [0, 1000) when b is even and [1000, 2000) when odd, one hour after b − 1.
    let body_of = |b: usize| {
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
        serde_json::to_vec(&serde_json::json!({ "readings": readings })).unwrap()
    };
    let send = |client: reqwest::Client, base: String, device: (String, Vec<u8>), bodies: Vec<Vec<u8>>| async move {
        let (mut stored, mut accepted) = (0u64, 0u64);
        for (i, body) in bodies.into_iter().enumerate() {
            let ts = Utc::now().timestamp() + i as i64 % 100;
            let sig = push::sign(&device.1, "POST", "/api/v1/readings", ts, &body);
            let r = client
                .post(format!("{base}/api/v1/readings"))
                .header(push::HEADER_KEY_ID, &device.0)
                .header(push::HEADER_TIMESTAMP, ts.to_string())
                .header(push::HEADER_SIGNATURE, sig)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            stored += v["accepted"].as_u64().unwrap() + v["held"].as_u64().unwrap();
            accepted += v["accepted"].as_u64().unwrap();
        }
        (stored, accepted)
    };
    for concentrators in [1usize, 2] {
        let round = if concentrators == 1 {
            0..batches
        } else {
            batches..2 * batches
        };
        let mut per_device: Vec<Vec<Vec<u8>>> = vec![Vec::new(); concentrators];
        for b in round {
            per_device[b % concentrators].push(body_of(b));
        }
        let probe = Probe::start(kind).await;
        let tasks: Vec<_> = per_device
            .into_iter()
            .enumerate()
            .map(|(d, bodies)| tokio::spawn(send(client.clone(), base.clone(), devices[d].clone(), bodies)))
            .collect();
        let (mut stored, mut accepted) = (0u64, 0u64);
        for t in tasks {
            let (s, a) = t.await.unwrap();
            stored += s;
            accepted += a;
        }
        let m = probe.stop().await;
        let secs = m.secs;
        let who = if concentrators == 1 {
            "one concentrator, one request after another".to_string()
        } else {
            format!("{concentrators} concentrators at once, each its own meters")
        };
        println!(
            "[{kind}] push API, {who}: {stored} readings ({accepted} accepted) in {batches} signed batches of {batch} in {secs:.2} s = {:.0} readings/s (target ≥ 20,000/s)",
            stored as f64 / secs
        );
        rows.push(Row {
            backend: kind,
            what: format!("push API, {batches} signed batches of {batch}, {who}"),
            items: stored as usize,
            unit: "readings",
            m,
            target: Target::Rate(20_000.0),
        });
    }
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
    // RUST_LOG=meterpay=debug shows each batch's phases (meters, history, checks, insert).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
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
