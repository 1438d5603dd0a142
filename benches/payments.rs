//! Payments: verified callbacks per second end to end over HTTP, next to the raw database limit
//! for the same writes, measured in the same run. Prints its figures; asserts nothing.
//!
//! For each backend: `BENCH_CALLBACKS` (default 3,000) orders, each for one open bill of its own
//! account, get a genuine Alipay notification signed with the sandbox's platform key (RSA2).
//! - **raw limit**: `Store::apply_payment` called directly (no HTTP, no signature check) for
//!   another set of orders with the same event rows — the database work of a callback alone;
//! - **end to end**: the notifications are POSTed to `/notify/alipay/{app}` of the running
//!   application (verification over the raw bytes, the one apply transaction, the `success`
//!   answer), `BENCH_CONCURRENCY` (default 32) at a time, with p50/p99 latency.
//!
//! Both go through the group commit (`src/store/group_commit.rs`), which lives inside
//! `Store::apply_payment`: concurrent applies share a transaction (the plain payments of a group
//! applied set-wise, `src/store/payment_batch.rs`) and are answered after its one commit. The raw limit is still "the same writes, straight to the
//! store" — group commit included, HTTP and verification excluded. After each phase the bench
//! prints how many transactions carried how many writes (mean and largest batch).
//!
//! Targets: PostgreSQL ≥ 2,000/s, SQLite (synchronous=FULL) ≥ 1,000/s, and end to end ≥ 70 % of
//! the raw limit. `cargo bench --bench payments` runs on SQLite; with
//! `BENCH_DATABASE_URL=postgres://…` on PostgreSQL too (`BENCH_ONLY=sqlite|postgres` picks one).
//! `BENCH_PG_LANES=n` sets the number of PostgreSQL committers (default
//! `group_commit::POSTGRES_LANES`; as many as `BENCH_CONCURRENCY` is in effect a transaction
//! per callback, for comparison).

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use futures::StreamExt;
use meterpay::config::Config;
use meterpay::payments::config::{MerchantConfig, MerchantKind};
use meterpay::startup::Application;
use meterpay::store::group_commit::GroupCommitStats;
use meterpay::store::payments::{ApplyPayment, EventRecord, NewOrder};
use meterpay::store::{Store, StoreOptions};
use meterpay_gateways::gateway::Channel;

const APP: &str = "2021000000000001";

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
                    max_connections: 20,
                    group_commit_lanes: std::env::var("BENCH_PG_LANES").ok().and_then(|v| v.parse().ok()),
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

/// `n` accounts with one open bill of 10.00 each, and an order per bill. Returns the order numbers.
async fn setup(store: &Store, tag: &str, n: usize) -> Vec<String> {
    let now = Utc::now();
    let (c, _) = store.ensure_community(tag, tag, "bench", now).await.unwrap();
    let mut csv = String::from("code,name,building,unit,door_no,meters\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{tag}{i},R{i},{},1,{},{tag}M{i}:electricity:6\n",
            i / 1000,
            i % 1000
        ));
    }
    let t = meterpay::billing::accounts_import::read_table("a.csv", csv.as_bytes()).unwrap();
    let rows = meterpay::billing::accounts_import::accounts_from_table("a.csv", &t).unwrap();
    store.import_accounts(c.id, &rows, "bench", None, now).await.unwrap();
    store
        .execute_raw_sql_in_tx_for_tests(&format!(
            "INSERT INTO bills (community_id, account_id, period, kind, status, total_fen, due_date, created_at, created_by) \
             SELECT community_id, id, '2030-01', 'regular', 'draft', 1000, '2030-02-01', '2030-01-01T00:00:00+00:00', 'bench' \
             FROM accounts WHERE community_id = {id}; \
             INSERT INTO bill_lines (bill_id, line_no, kind, component, description, quantity_e4, unit_price_e6, amount_fen) \
             SELECT id, 1, 'usage', 'energy', 'x', 10000, 10000000, 1000 FROM bills WHERE community_id = {id}; \
             UPDATE bills SET status = 'issued' WHERE community_id = {id}",
            id = c.id
        ))
        .await
        .unwrap();
    let bills: Vec<(i64, i64)> = {
        let mut v = Vec::new();
        for a in store.list_accounts(c.id).await.unwrap() {
            for b in store.open_bills(a.id).await.unwrap() {
                v.push((a.id, b.bill_id));
            }
        }
        v
    };
    let mut orders = Vec::new();
    for (i, (account, bill)) in bills.iter().enumerate() {
        let no = format!("B{tag}{i:010}");
        store
            .create_payment_order(&NewOrder {
                order_no: &no,
                community_id: c.id,
                account_id: *account,
                channel: "alipay",
                merchant_id: APP,
                method: "qr",
                purpose: "bills",
                amount_fen: 1000,
                subject: "bench",
                created_at: now,
                expires_at: now + Duration::hours(2),
                created_by: "bench",
                bills: &[(*bill, 1000)],
                next_query_at: now + Duration::hours(1),
            })
            .await
            .unwrap();
        orders.push(no);
    }
    orders
}

/// A genuine Alipay trade notification for an order (signed with the sandbox platform key).
fn notification(key: &meterpay_gateways::crypto::PrivateKey, order_no: &str, i: usize) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = vec![
        ("notify_id".into(), format!("bench{order_no}")),
        ("notify_type".into(), "trade_status_sync".into()),
        ("notify_time".into(), "2030-01-15 10:00:00".into()),
        ("charset".into(), "utf-8".into()),
        ("version".into(), "1.0".into()),
        ("app_id".into(), APP.into()),
        ("auth_app_id".into(), APP.into()),
        ("out_trade_no".into(), order_no.into()),
        ("trade_no".into(), format!("2030011522001{i:015}")),
        ("trade_status".into(), "TRADE_SUCCESS".into()),
        ("total_amount".into(), "10.00".into()),
        ("receipt_amount".into(), "10.00".into()),
        ("gmt_payment".into(), "2030-01-15 09:59:00".into()),
        ("subject".into(), "水电费 bench".into()),
    ];
    pairs.sort();
    let content = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let sign = key.sign_sha256_base64(content.as_bytes());
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        ser.append_pair(k, v);
    }
    ser.append_pair("sign_type", "RSA2");
    ser.append_pair("sign", &sign);
    ser.finish().into_bytes()
}

async fn sign_all(orders: &[String], offset: usize) -> Vec<Vec<u8>> {
    let key = Arc::new(
        meterpay_gateways::crypto::load_private_key(meterpay_gateways::sandbox::alipay::PLATFORM_PRIVATE_KEY).unwrap(),
    );
    let halves: Vec<Vec<(usize, String)>> = {
        let all: Vec<(usize, String)> = orders.iter().cloned().enumerate().collect();
        let mid = all.len() / 2;
        vec![all[..mid].to_vec(), all[mid..].to_vec()]
    };
    let mut out = Vec::new();
    let handles: Vec<_> = halves
        .into_iter()
        .map(|part| {
            let key = key.clone();
            tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|(i, no)| notification(&key, &no, offset + i))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        out.extend(h.await.unwrap());
    }
    out
}

/// How the writes of a phase were grouped: transactions, writes, mean and largest batch.
fn grouping(kind: &str, before: GroupCommitStats, after: GroupCommitStats) {
    let batches = after.batches - before.batches;
    let writes = after.writes - before.writes;
    println!(
        "{kind}:   group commit: {writes} writes in {batches} transactions (mean {:.1} a transaction, largest {}, {} failed, {} run again in savepoints; {} applied set-wise)",
        writes as f64 / batches.max(1) as f64,
        after.largest_batch,
        after.failed_batches - before.failed_batches,
        after.replayed_batches - before.replayed_batches,
        after.set_wise_writes - before.set_wise_writes
    );
}

fn pct(sorted: &[StdDuration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn bench(kind: &str, n: usize, concurrency: usize) {
    let (store, _dir) = fresh_store(kind).await;
    let t = Instant::now();
    let raw_orders = setup(&store, "R", n).await;
    let http_orders = setup(&store, "H", n).await;
    let raw_bodies = sign_all(&raw_orders, 0).await;
    let http_bodies = sign_all(&http_orders, n).await;
    println!(
        "{kind}: set up {} orders and signed their notifications in {:.1} s",
        2 * n,
        t.elapsed().as_secs_f64()
    );

    // Raw database limit: the same apply transaction with the same event rows, no HTTP.
    let headers = r#"[["content-type","application/x-www-form-urlencoded; charset=utf-8"]]"#.to_string();
    let stats = store.group_commit_stats();
    let t = Instant::now();
    let mut lat = Vec::with_capacity(n);
    let results: Vec<StdDuration> = futures::stream::iter(raw_orders.iter().zip(raw_bodies.iter()).enumerate())
        .map(|(i, (no, body))| {
            let store = store.clone();
            let headers = headers.clone();
            let no = no.clone();
            let body = body.clone();
            async move {
                let t = Instant::now();
                let fields = String::from_utf8_lossy(&body).into_owned();
                let event_id = format!("bench{no}/TRADE_SUCCESS");
                let txn = format!("2030011522001{i:015}");
                let r = store
                    .apply_payment(&ApplyPayment {
                        channel: "alipay",
                        merchant_id: APP,
                        reported_merchant_id: APP,
                        order_no: &no,
                        gateway_txn_id: &txn,
                        amount_fen: 1000,
                        paid_at: Utc::now(),
                        event: Some(EventRecord {
                            event_id: &event_id,
                            kind: "payment",
                            headers: &headers,
                            body: &body,
                            fields: &fields,
                        }),
                        now: Utc::now(),
                    })
                    .await
                    .unwrap();
                assert!(matches!(r, meterpay::store::payments::PaymentApplied::Applied { .. }));
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let raw_secs = t.elapsed().as_secs_f64();
    lat.extend(results);
    lat.sort();
    let raw_rate = n as f64 / raw_secs;
    println!(
        "{kind}: raw database limit (apply transaction, {concurrency} at a time): {raw_rate:.0}/s  p50 {:.1} ms  p99 {:.1} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    grouping(kind, stats, store.group_commit_stats());

    // End to end over HTTP.
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".into();
    config.jobs.enabled = false;
    config.log.level = "error".into();
    config.payments.merchants.push(MerchantConfig {
        community: "H".into(),
        channel: Some(Channel::Alipay),
        merchant_id: APP.into(),
        fee_rate_ppm: 6000,
        kind: MerchantKind::Sandbox,
        gateway_url: "http://127.0.0.1:9".into(),
        ..MerchantConfig::default()
    });
    let app = Application::build_with_store(config, store.clone()).await.unwrap();
    let url = format!("http://{}/notify/alipay/{APP}", app.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let stats = store.group_commit_stats();
    let t = Instant::now();
    let mut lat: Vec<StdDuration> = futures::stream::iter(http_bodies)
        .map(|body| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let ok = r.status().is_success() && r.text().await.unwrap() == "success";
                assert!(ok, "a callback was not acknowledged");
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let http_secs = t.elapsed().as_secs_f64();
    lat.sort();
    let http_rate = n as f64 / http_secs;
    let (applies, _, _) = store.payment_counts().await.unwrap();
    println!(
        "{kind}: verified callbacks end to end over HTTP ({concurrency} at a time): {http_rate:.0}/s  p50 {:.1} ms  p99 {:.1} ms  = {:.0} % of the raw limit  ({applies} payments applied in all)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        100.0 * http_rate / raw_rate
    );
    grouping(kind, stats, store.group_commit_stats());
    let _ = tx.send(());
    let _ = server.await;
}

fn main() {
    let n: usize = std::env::var("BENCH_CALLBACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if only != "postgres" {
            bench("sqlite", n, concurrency).await;
        }
        if std::env::var("BENCH_DATABASE_URL").is_ok() && only != "sqlite" {
            bench("postgres", n, concurrency).await;
        } else if only != "sqlite" {
            println!("(set BENCH_DATABASE_URL=postgres://… to run the PostgreSQL figures too)");
        }
    });
}
