//! Reconciliation end to end: a 1,000,000-row Alipay detail file (the real zip: GBK detail and
//! summary, footer totals, fees) against 1,000,000 ledger payments, from the file's bytes to the
//! stored results (parse, identity checks, the day's clearing entries read, matching, the run,
//! its items and the file's bytes saved), on SQLite and — when `BENCH_DATABASE_URL` names one —
//! PostgreSQL. Target: ≤ 5 s and ≤ 600 MiB peak memory.
//!
//! The set-up (writing the file, posting the ledger payments) runs in this process; each timed
//! reconciliation runs in a child process of this binary, so its peak resident memory (VmHWM) is
//! the reconciliation's own and not the set-up's. Prints its figures; asserts nothing.
//! `BENCH_RECON_ROWS` changes the size.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use meterpay::config::ReconcileConfig;
use meterpay::ledger::LedgerAccount;
use meterpay::payments::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
use meterpay::reconcile::{Reconciler, RunRequest, Via};
use meterpay::store::{Store, StoreOptions};
use meterpay_gateways::alipay::settlement::{write_zip, BillRow};
use meterpay_gateways::gateway::{Channel, PaymentGateway};
use meterpay_gateways::settlement::RowKind;

const APP_ID: &str = "2021000000000001";
const ACCOUNT: &str = "20880000000000010156";

struct BenchPort;

#[async_trait]
impl PaymentsPort for BenchPort {
    async fn merchants(&self) -> anyhow::Result<Vec<MerchantRef>> {
        Ok(vec![MerchantRef {
            channel: Channel::Alipay,
            merchant_id: APP_ID.into(),
            community_id: 1,
            fee_rate_ppm: 6000,
        }])
    }
    async fn gateway(&self, _c: Channel, _m: &str) -> anyhow::Result<Arc<dyn PaymentGateway>> {
        anyhow::bail!("the benchmark gives the file")
    }
    async fn query_and_apply(&self, _o: &str, _now: DateTime<Utc>) -> anyhow::Result<QueryOutcome> {
        Ok(QueryOutcome::UnknownOrder)
    }
    async fn payment_activity(&self, _a: i64, _s: DateTime<Utc>) -> anyhow::Result<Vec<PaymentActivity>> {
        Ok(Vec::new())
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

fn amount(i: usize) -> i64 {
    1_000 + (i as i64 * 7_919) % 50_000
}

fn order_no(i: usize) -> String {
    format!("W20261120{i:012}")
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn open(url: &str, schema: Option<&str>) -> Store {
    let store = Store::connect(
        url,
        &StoreOptions {
            max_connections: 4,
            pg_schema: schema.map(str::to_string),
            ..Default::default()
        },
    )
    .await
    .expect("the benchmark database opens");
    store.migrate().await.expect("migrations apply");
    store
}

/// The child: one timed reconciliation.
async fn child(url: String, schema: Option<String>, file: String, label: String) {
    let store = open(&url, schema.as_deref()).await;
    let mut config = ReconcileConfig {
        auto_settle: false,
        ..Default::default()
    };
    config.alipay_accounts.insert(APP_ID.into(), ACCOUNT.into());
    let rec = Reconciler::new(store, Arc::new(BenchPort), config);
    let started = Instant::now();
    let bytes = std::fs::read(&file).expect("the bill file");
    let out = rec
        .run(
            RunRequest {
                channel: Channel::Alipay,
                merchant_id: APP_ID.into(),
                bill_date: day(),
                file: Some((bytes, "file:bench".into())),
                via: Via::Cli,
                started_by: "bench".into(),
            },
            Utc::now(),
        )
        .await
        .expect("the run succeeds");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "reconcile {label}: {} file rows vs {} ledger payments -> {} matched, {} items stored, in {secs:.3} s wall; peak RSS {} (targets: <= 5 s, <= 600 MiB)",
        out.summary.file.payments.count + out.summary.file.refunds.count,
        out.summary.ledger_payments.count,
        out.summary.matched.count,
        out.items.len(),
        peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB")),
    );
}

#[tokio::main]
async fn main() {
    if let Ok(args) = std::env::var("RECON_BENCH_CHILD") {
        let a: Vec<String> = args.split('\u{1f}').map(str::to_string).collect();
        let schema = Some(a[1].clone()).filter(|s| !s.is_empty());
        child(a[0].clone(), schema, a[2].clone(), a[3].clone()).await;
        return;
    }
    let n: usize = std::env::var("BENCH_RECON_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let start = day().and_hms_opt(0, 0, 0).unwrap();
    // Five rows differ from the ledger, so the run stores some items.
    let rows: Vec<BillRow> = (0..n)
        .map(|i| {
            let a = if i % 200_000 == 7 { amount(i) + 1 } else { amount(i) };
            BillRow {
                trade_no: format!("20261120220014{i:014}"),
                out_trade_no: order_no(i),
                kind: RowKind::Payment,
                subject: format!("水电费2026-10 {}栋{}", i % 30 + 1, 1000 + i % 900),
                created: start + Duration::seconds((i % 86_000) as i64),
                finished: start + Duration::seconds((i % 86_000) as i64 + 10),
                store_id: "MP001".into(),
                store_name: "3栋收费点".into(),
                operator: "meterpay".into(),
                terminal: String::new(),
                buyer: "*李明(138****1201)".into(),
                order_amount_fen: a,
                received_fen: a,
                merchant_discount_fen: 0,
                refund_no: None,
                fee_fen: (a * 6 + 500) / 1000,
                remark: format!("户号{}", 10_000 + i % 5000),
            }
        })
        .collect();
    let zip = write_zip(ACCOUNT, day(), &rows, start + Duration::hours(30));
    drop(rows);
    let file = dir.path().join("bill.zip");
    std::fs::write(&file, &zip).expect("writing the bill");
    println!("alipay bill: {n} detail rows, zip {:.1} MB", zip.len() as f64 / 1e6);
    drop(zip);

    let clearing = meterpay::reconcile::clearing_account(Channel::Alipay, APP_ID);
    let entries: Vec<(String, String, NaiveDate, LedgerAccount, LedgerAccount, i64)> = (0..n)
        .map(|i| {
            (
                "payment.apply".to_string(),
                order_no(i),
                day(),
                clearing.clone(),
                LedgerAccount::Receivable {
                    account_id: (i % 5000) as i64 + 1,
                },
                amount(i),
            )
        })
        .collect();

    let mut targets: Vec<(String, String, Option<String>)> = vec![(
        "sqlite".into(),
        format!("sqlite://{}/bench.db", dir.path().display()),
        None,
    )];
    if let Ok(pg) = std::env::var("BENCH_DATABASE_URL") {
        if !pg.is_empty() {
            let schema = format!("bench_recon_{}", uuid::Uuid::new_v4().simple());
            let admin = Store::connect(&pg, &StoreOptions::default())
                .await
                .expect("BENCH_DATABASE_URL");
            admin
                .execute_raw_sql_for_tests(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .expect("a schema for the benchmark");
            admin.close().await;
            targets.push(("postgres".into(), pg, Some(schema)));
        } else {
            println!("postgres: skipped (BENCH_DATABASE_URL is empty)");
        }
    } else {
        println!("postgres: skipped (set BENCH_DATABASE_URL=postgres://… to measure it)");
    }
    let exe = std::env::current_exe().expect("this benchmark's path");
    for (label, url, schema) in &targets {
        let store = open(url, schema.as_deref()).await;
        let seeded = Instant::now();
        store
            .recon_bulk_post_for_bench(&entries, Utc::now())
            .await
            .expect("posting the ledger payments");
        store.refresh_statistics().await.ok();
        if label == "postgres" {
            let _ = store
                .execute_raw_sql_for_tests("ANALYZE journal_entries; ANALYZE journal_lines; ANALYZE ledger_accounts")
                .await;
        }
        println!(
            "{label}: {n} ledger payments posted in {:.1} s (set-up, not timed)",
            seeded.elapsed().as_secs_f64()
        );
        store.close().await;
        for run in 1..=2 {
            let status = std::process::Command::new(&exe)
                .env(
                    "RECON_BENCH_CHILD",
                    [
                        url.as_str(),
                        schema.as_deref().unwrap_or(""),
                        &file.display().to_string(),
                        &format!("{label} run {run}"),
                    ]
                    .join("\u{1f}"),
                )
                .status()
                .expect("the timed child runs");
            if !status.success() {
                println!("{label} run {run}: the child failed ({status})");
            }
        }
        if let Some(s) = schema {
            let admin = Store::connect(url, &StoreOptions::default())
                .await
                .expect("BENCH_DATABASE_URL");
            let _ = admin
                .execute_raw_sql_for_tests(&format!("DROP SCHEMA \"{s}\" CASCADE"))
                .await;
            admin.close().await;
        }
    }
}
