//! Bill-run throughput: 100,000 accounts, each with an electricity and a water meter (target:
//! a run in ≤ 10 s). Prints its figures; asserts nothing but that every account was billed.
//!
//! `cargo bench --bench bills` runs on SQLite; with `BENCH_DATABASE_URL=postgres://…` on
//! PostgreSQL as well (in a fresh schema). `BENCH_ACCOUNTS` changes the number of accounts.
//!
//! Set-up (not timed in the figure): the accounts through `import_accounts`, tariffs (an annual
//! electricity ladder; water with three components, two of them pass-through), then readings
//! for three months. The first run (February) bills from each meter's first reading; the second
//! (March) is the steady state — meters' billing state, tier-year history and credit checks all
//! in play — and is the figure to compare with the target.

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use meterpay::billing::accounts_import::{AccountSpec, MeterSpec};
use meterpay::billing::readings::IncomingReading;
use meterpay::domain::ids::Utility;
use meterpay::domain::{Period, Quantity};
use meterpay::store::bills::RunOptions;
use meterpay::store::tariffs::TariffFile;
use meterpay::store::{Store, StoreOptions};

const TARIFFS: &str = r#"
[[tariff]]
community = "BENCH"
utility = "electricity"
name = "Annual ladder"
effective_from = 2026-01-01
tier_basis = "annual"
thresholds = ["2880", "4800"]
[[tariff.components]]
kind = "energy"
prices = ["0.4883", "0.5383", "0.7883"]

[[tariff]]
community = "BENCH"
utility = "water"
name = "Water"
effective_from = 2026-01-01
tier_basis = "annual"
thresholds = ["180", "260"]
[[tariff.components]]
kind = "water_fee"
prices = ["2.07", "4.07", "6.07"]
[[tariff.components]]
kind = "resource_fee"
prices = ["1.57"]
payable = "water_resource"
[[tariff.components]]
kind = "sewage_fee"
prices = ["1.36"]
payable = "sewage"
"#;

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

async fn bench(kind: &str, n: usize) {
    let (store, _dir) = fresh_store(kind).await;
    let now = Utc::now();
    let t0 = Instant::now();
    let (c, _) = store.ensure_community("BENCH", "Bench", "bench", now).await.unwrap();
    let one = Quantity::parse("1").unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|i| {
                (
                    i + 2,
                    Ok(AccountSpec {
                        code: format!("A{i:06}"),
                        name: "Bench".into(),
                        building: format!("{}", i / 1000),
                        unit: "1".into(),
                        door_no: format!("{i}"),
                        phone: None,
                        mobile: None,
                        email: None,
                        meters: vec![
                            MeterSpec {
                                meter_no: format!("E{i:06}"),
                                utility: Utility::Electricity,
                                digit_count: 6,
                                multiplier: one,
                            },
                            MeterSpec {
                                meter_no: format!("W{i:06}"),
                                utility: Utility::Water,
                                digit_count: 5,
                                multiplier: one,
                            },
                        ],
                        payment_mode: "postpaid".into(),
                        credit_rating: "normal".into(),
                        customer_class: "residential".into(),
                        area_m2_e2: None,
                        occupied: None,
                        opened_on: None,
                        low_balance_fen: None,
                    }),
                )
            })
            .collect();
        store.import_accounts(c.id, &rows, "bench", None, now).await.unwrap();
    }
    let tariffs = TariffFile::parse(TARIFFS).unwrap();
    store
        .add_tariff_versions(&tariffs.tariff, "bench", None, now)
        .await
        .unwrap();
    let setup_accounts = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let cst = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    for month in 1..=3u32 {
        let at = cst.with_ymd_and_hms(2026, month, 25, 8, 0, 0).unwrap().to_rfc3339();
        let all: Vec<IncomingReading> = (0..n)
            .flat_map(|i| {
                let e = 1000 + (month as usize) * (150 + i % 200);
                let w = 100 + (month as usize) * (8 + i % 12);
                [
                    IncomingReading {
                        meter_no: format!("E{i:06}"),
                        utility: "electricity".into(),
                        read_at: at.clone(),
                        value: serde_json::json!(e.to_string()),
                        kind: None,
                        registers: None,
                    },
                    IncomingReading {
                        meter_no: format!("W{i:06}"),
                        utility: "water".into(),
                        read_at: at.clone(),
                        value: serde_json::json!(w.to_string()),
                        kind: None,
                        registers: None,
                    },
                ]
            })
            .collect();
        for chunk in all.chunks(50_000) {
            let r = store
                .ingest_readings(None, chunk, "import", "bench", now, &|_| {})
                .await
                .unwrap();
            assert_eq!(r.accepted, chunk.len());
        }
    }
    store.refresh_statistics().await.unwrap();
    println!(
        "[{kind}] set-up: {n} accounts with 2 meters in {setup_accounts:.1} s, {} readings in {:.1} s",
        n * 6,
        t1.elapsed().as_secs_f64()
    );
    for (p, label) in [
        ("2026-02", "first run (from each meter's first reading)"),
        ("2026-03", "steady state"),
    ] {
        let mut o = RunOptions::new(Period::parse(p).unwrap());
        o.community = Some("BENCH".into());
        let start = Instant::now();
        let r = store
            .run_bills(&o, "bench", None, Utc::now() + Duration::days(120), &|_| {})
            .await
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let run = &r.communities[0];
        assert_eq!(
            run.bills_issued,
            n,
            "skipped: {:?}",
            &run.skipped[..run.skipped.len().min(3)]
        );
        println!(
            "[{kind}] bill run {p}, {label}: {n} accounts × 2 meters → {} bills (total {}) in {secs:.2} s = {:.0} bills/s (target ≤ 10 s for 100,000)",
            run.bills_issued,
            meterpay::domain::Fen::new(run.total_fen),
            run.bills_issued as f64 / secs
        );
    }
}

#[tokio::main]
async fn main() {
    // RUST_LOG=meterpay=debug shows each chunk's load / plan / write times.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let n: usize = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // BENCH_ONLY=postgres (or sqlite) runs one backend.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "postgres" {
        bench("sqlite", n).await;
    }
    if std::env::var("BENCH_DATABASE_URL").is_ok() && only != "sqlite" {
        bench("postgres", n).await;
    } else {
        println!("(set BENCH_DATABASE_URL=postgres://… to run the PostgreSQL figures too)");
    }
}
