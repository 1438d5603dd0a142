//! Reminders: planning 100,000 overdue accounts with the policy (target ≤ 10 s), and sending
//! 10,000 SMS through the sandbox provider within its rate limit — straight through the client,
//! and the whole way through the outbox and task workers on the database. Prints its figures;
//! asserts nothing.
//!
//! Planning is measured twice: the pure policy over prepared inputs, and the whole planner over
//! the database (`dunning::planner`: accounts, open bills split into tracks, history, opt-outs
//! and payments read in bulk, then decided, composed — and, in the second figure, enqueued) for
//! `BENCH_PLAN_ACCOUNTS` (default 100,000) accounts with an overdue bill from a real bill run.
//!
//! `cargo bench --bench reminders` runs on SQLite; with `BENCH_DATABASE_URL=postgres://…` the
//! database parts run on PostgreSQL as well (`BENCH_ONLY=sqlite|postgres` picks one). `BENCH_SMS_RATE` is the sandbox's limit per second
//! (default 2,000); our client keeps to 95 % of it. `BENCH_SMS` changes the message count.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use meterpay::domain::ids::Utility;
use meterpay::domain::Fen;
use meterpay::dunning::outbox::{self, ComposeFacts, Composer, Deliverer, Profile};
use meterpay::dunning::policy::{
    self, AccountFacts, Channel, CreditRating, Decision, OpenBill, Outcome, Planned, Step, Track,
};
use meterpay::dunning::sandbox::{SandboxOptions, SandboxServer, SmsSandbox};
use meterpay::dunning::sms::aliyun::{AliyunClient, AliyunConfig};
use meterpay::dunning::sms::{ProviderKind, SendError, SmsClient, SmsMessage};
use meterpay::dunning::templates::{Language, MessageKind};
use meterpay::jobs::{Worker, WorkerOptions};
use meterpay::paylink::LinkSigner;
use meterpay::store::directory::NewAccount;
use meterpay::store::{Store, StoreOptions};
use secrecy::SecretString;

fn say(s: String) {
    let _ = writeln!(std::io::stdout(), "{s}");
}

fn plan(n: usize) {
    let p = policy::CommunityPolicy::default();
    let tz = chrono_tz::Asia::Shanghai;
    let now = tz.with_ymd_and_hms(2026, 8, 3, 10, 0, 0).unwrap().with_timezone(&Utc);
    let ratings = [CreditRating::A, CreditRating::B, CreditRating::C, CreditRating::D];
    let accounts: Vec<(AccountFacts, Vec<OpenBill>, Vec<policy::SentStep>)> = (0..n)
        .map(|i| {
            let a = AccountFacts {
                account_id: i as i64,
                household: format!("premises:{i}"),
                credit_rating: ratings[i % 4],
                mobile: Some(format!("138{:08}", i)),
                email: (i % 3 == 0).then(|| format!("r{i}@example.cn")),
                opted_out: if i % 17 == 0 { vec![Channel::Sms] } else { vec![] },
                ..Default::default()
            };
            let due = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap() + Duration::days((i % 40) as i64);
            let mut bills = vec![OpenBill {
                bill_id: (i * 2) as i64,
                track: Track::Utility(Utility::Electricity),
                amount_due: Fen::new(5_000 + (i % 900) as i64 * 10),
                period: (2026, 6),
                issued_on: due - Duration::days(15),
                due_on: due,
                disputed: i % 53 == 0,
            }];
            if i % 2 == 0 {
                bills.push(OpenBill {
                    bill_id: (i * 2 + 1) as i64,
                    track: Track::Utility(Utility::Water),
                    amount_due: Fen::new(2_500),
                    period: (2026, 6),
                    issued_on: due - Duration::days(15),
                    due_on: due,
                    disputed: false,
                });
            }
            let history = if i % 5 == 0 {
                vec![policy::SentStep {
                    account_id: i as i64,
                    step: Step::Overdue(1),
                    track: Some(Track::Utility(Utility::Electricity)),
                    bill_ids: vec![(i * 2) as i64],
                    channel: Channel::Sms,
                    at: now - Duration::days(3),
                }]
            } else {
                vec![]
            };
            (a, bills, history)
        })
        .collect();
    let started = Instant::now();
    let mut sends = 0usize;
    let mut waits = 0usize;
    for (a, bills, history) in &accounts {
        let d = policy::decide(&policy::PolicyInput {
            now,
            policy: &p,
            account: a,
            bills,
            payments: &[],
            history,
            prepaid: None,
        });
        match d.outcome {
            Outcome::Send(_) => sends += 1,
            Outcome::Wait { .. } => waits += 1,
            Outcome::Nothing { .. } => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    say(format!(
        "plan: {n} overdue accounts in {secs:.3} s = {:.0} accounts/s (target ≤ 10 s); {sends} send, {waits} wait, {} nothing",
        n as f64 / secs,
        n - sends - waits
    ));
}

async fn sandbox(rate: u32) -> SandboxServer {
    SmsSandbox::new(SandboxOptions {
        rate_per_sec: rate,
        ..Default::default()
    })
    .spawn()
    .await
    .unwrap()
}

fn client(s: &SandboxServer, rate: u32) -> SmsClient {
    let c = &s.sandbox.options().credentials;
    SmsClient::Aliyun(
        AliyunClient::new(AliyunConfig {
            endpoint: s.aliyun_endpoint(),
            access_key_id: c.aliyun_access_key_id.clone(),
            access_key_secret: SecretString::from(c.aliyun_access_key_secret.clone()),
            timeout: StdDuration::from_secs(10),
            rate_per_sec: rate,
        })
        .unwrap(),
    )
}

async fn send_direct(n: usize, rate: u32) {
    let s = sandbox(rate).await;
    let c = client(&s, rate * 95 / 100);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = c.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut throttled = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return throttled;
                }
                let m = SmsMessage {
                    phone: format!("139{i:08}"),
                    sign_name: "阳光花园物业".into(),
                    template_code: "SMS_1".into(),
                    params: vec![("amount".into(), "163.25".into())],
                    out_id: i.to_string(),
                };
                if let Err(SendError::Transient { .. }) = c.send(&m).await {
                    throttled += 1;
                }
            }
        }));
    }
    let mut throttled = 0;
    for t in tasks {
        throttled += t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    say(format!(
        "sms (client → sandbox, limit {rate}/s): {n} sent in {secs:.2} s = {:.0}/s; throttled by the sandbox: {throttled}; taken: {}",
        n as f64 / secs,
        s.sandbox.messages().len()
    ));
    s.stop();
}

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

async fn send_through_outbox(kind: &str, n: usize, rate: u32) {
    let (store, _dir) = fresh_store(kind).await;
    let s = sandbox(rate).await;
    let now = Utc::now();
    let (c, _) = store.ensure_community("BENCH", "Bench", "bench", now).await.unwrap();
    // 100 accounts, each with n/100 bills reminded separately: n distinct outbox messages.
    let per = n.div_ceil(100);
    let mut accounts = Vec::new();
    for i in 0..100 {
        let a = store
            .create_account(
                c.id,
                &NewAccount {
                    code: format!("A{i}"),
                    name: "Bench".into(),
                    building: "1".into(),
                    unit: "1".into(),
                    door_no: format!("{i}"),
                    phone: None,
                    mobile: Some(format!("136{i:08}")),
                    email: None,
                    credit_rating: "normal".into(),
                    payment_mode: "postpaid".into(),
                },
                "bench",
                now,
            )
            .await
            .unwrap();
        accounts.push(a);
    }
    let composer = Composer {
        links: LinkSigner::new(b"0123456789abcdef0123456789abcdef".to_vec(), "https://pay.example.cn").unwrap(),
        pay_link_ttl: Duration::days(30),
        unsubscribe_ttl: Duration::days(365),
        max_attempts: 20,
    };
    let profile = Profile {
        code: "BENCH".into(),
        community_id: c.id,
        community_name: "Bench".into(),
        sms_provider: ProviderKind::Aliyun,
        sign_name: "阳光花园物业".into(),
        service_tel: "4001234567".into(),
        language: Language::Zh,
        templates: MessageKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), "SMS_1".to_string()))
            .collect(),
    };
    let started = Instant::now();
    let mut count = 0;
    'outer: for a in &accounts {
        for b in 0..per {
            if count >= n {
                break 'outer;
            }
            count += 1;
            let facts = AccountFacts {
                account_id: a.id,
                household: format!("premises:{}", a.id),
                // a distinct number per message so duplicates would show
                mobile: Some(format!("135{count:08}")),
                ..Default::default()
            };
            let d = Decision {
                account_id: a.id,
                outcome: Outcome::Send(Planned {
                    step: Step::Overdue(1),
                    track: Track::Utility(Utility::Electricity),
                    channel: Channel::Sms,
                    recipient: facts.mobile.clone(),
                    bills: vec![(b as i64, Step::Overdue(1))],
                    amount: Fen::new(16325),
                    periods: vec![(2026, 6)],
                    due: NaiveDate::from_ymd_opt(2026, 7, 15),
                    message: MessageKind::Overdue,
                    days_left: None,
                    legally_required: false,
                }),
                staff: vec![],
            };
            outbox::enqueue_decision(
                &store,
                &composer,
                &d,
                &facts,
                &profile,
                &ComposeFacts {
                    room: "1栋1单元101".into(),
                    lines: vec![],
                },
                now,
            )
            .await
            .unwrap();
        }
    }
    let enq = started.elapsed().as_secs_f64();
    let deliverer = Arc::new(Deliverer::new(
        store.clone(),
        vec![client(&s, rate * 95 / 100)],
        None,
        Duration::minutes(60),
    ));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..16 {
        let worker = Worker::new(
            store.clone(),
            format!("bench-{w}"),
            outbox::task_handlers(deliverer.clone()),
            WorkerOptions {
                batch: 16,
                ..Default::default()
            },
        );
        workers.push(tokio::spawn(
            async move { while worker.run_once().await.unwrap() > 0 {} },
        ));
    }
    for w in workers {
        w.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let taken = s.sandbox.messages();
    let distinct: HashSet<&str> = taken.iter().map(|m| m.phone.as_str()).collect();
    say(format!(
        "sms (outbox → workers → sandbox, {kind}, limit {rate}/s): {count} enqueued in {enq:.2} s ({:.0}/s); delivered in {secs:.2} s = {:.0}/s; taken {}, distinct numbers {}, refused by the rate limit {}",
        count as f64 / enq,
        taken.len() as f64 / secs,
        taken.len(),
        distinct.len(),
        s.sandbox.refusals().len()
    ));
    s.stop();
    store.close().await;
}

/// The planner over the database: `n` accounts, each with an overdue electricity bill.
async fn plan_from_db(kind: &str, n: usize) {
    use meterpay::billing::accounts_import::{AccountSpec, MeterSpec};
    use meterpay::billing::readings::IncomingReading;
    use meterpay::dunning::planner::{PlanOptions, Planner};
    use meterpay::store::bills::RunOptions;
    let (store, _dir) = fresh_store(kind).await;
    let now = Utc::now();
    let t0 = Instant::now();
    let (c, _) = store.ensure_community("PLAN", "Plan", "bench", now).await.unwrap();
    let one = meterpay::domain::Quantity::parse("1").unwrap();
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
                        mobile: Some(format!("+86139{i:08}")),
                        email: Some(format!("a{i}@example.cn")),
                        meters: vec![MeterSpec {
                            meter_no: format!("E{i:06}"),
                            utility: Utility::Electricity,
                            digit_count: 6,
                            multiplier: one,
                        }],
                        payment_mode: "postpaid".into(),
                        credit_rating: ["A", "B", "C", "D"][i % 4].into(),
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
    let tariffs = meterpay::store::tariffs::TariffFile::parse(
        "[[tariff]]\ncommunity = \"PLAN\"\nutility = \"electricity\"\nname = \"Flat\"\neffective_from = 2020-01-01\n\
         [[tariff.components]]\nkind = \"energy\"\nprices = [\"0.50\"]\n",
    )
    .unwrap();
    store
        .add_tariff_versions(&tariffs.tariff, "bench", None, now)
        .await
        .unwrap();
    let cst = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    for month in 1..=2u32 {
        let at = cst.with_ymd_and_hms(2026, month, 25, 8, 0, 0).unwrap().to_rfc3339();
        let all: Vec<IncomingReading> = (0..n)
            .map(|i| IncomingReading {
                meter_no: format!("E{i:06}"),
                utility: "electricity".into(),
                read_at: at.clone(),
                value: serde_json::json!((1000 + month as usize * (100 + i % 300)).to_string()),
                kind: None,
                registers: None,
            })
            .collect();
        for chunk in all.chunks(50_000) {
            store
                .ingest_readings(None, chunk, "import", "bench", now, &|_| {})
                .await
                .unwrap();
        }
    }
    let mut o = RunOptions::new(meterpay::domain::Period::parse("2026-02").unwrap());
    o.community = Some("PLAN".into());
    o.due_date = NaiveDate::from_ymd_opt(2026, 3, 15);
    let run = store
        .run_bills(
            &o,
            "bench",
            None,
            cst.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap().with_timezone(&Utc),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(run.communities[0].bills_issued, n);
    store.refresh_statistics().await.unwrap();
    say(format!(
        "[{kind}] planner set-up: {n} accounts, {} bills due 2026-03-15, in {:.1} s",
        n,
        t0.elapsed().as_secs_f64()
    ));
    let mut config = meterpay::config::Config::default();
    config.reminders.sign_name = "阳光花园物业".into();
    config.reminders.templates = MessageKind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str().to_string(), format!("SMS_1000000{i}")))
        .collect();
    config.reminders.service_tel = "0571-88886666".into();
    // As `reminders plan` runs it: payments is asked about every account about to be reminded.
    let port = meterpay::dunning::planner::default_port(&store, &config).unwrap();
    let planner = Planner::new(store.clone(), Arc::new(config), port);
    let at = cst.with_ymd_and_hms(2026, 3, 26, 10, 0, 0).unwrap().with_timezone(&Utc);
    for dry_run in [true, false] {
        let start = Instant::now();
        let r = planner
            .run(
                &PlanOptions {
                    community: Some("PLAN".into()),
                    dry_run,
                },
                at,
            )
            .await
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let p = &r.communities[0];
        say(format!(
            "[{kind}] planner over the database, {}: {} overdue accounts → {} to send, {} waiting, {} nothing, {} enqueued, {} errors in {secs:.2} s (target ≤ 10 s for 100,000)",
            if dry_run { "dry run (read, decide, compose)" } else { "real run (… and enqueue)" },
            p.accounts,
            p.send,
            p.wait,
            p.nothing,
            p.enqueued,
            p.errors
        ));
        if let Some(e) = p.plans.iter().find_map(|a| a.error.as_deref()) {
            say(format!("[{kind}] the first error: {e}"));
        }
    }
    store.close().await;
}

fn main() {
    let n: usize = std::env::var("BENCH_SMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rate: u32 = std::env::var("BENCH_SMS_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    plan(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan_n: usize = std::env::var("BENCH_PLAN_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        if only != "postgres" {
            plan_from_db("sqlite", plan_n).await;
        }
        if std::env::var("BENCH_DATABASE_URL").is_ok() && only != "sqlite" {
            plan_from_db("postgres", plan_n).await;
        }
        if std::env::var("BENCH_PLAN_ONLY").is_ok() {
            return;
        }
        send_direct(n, rate).await;
        send_through_outbox("sqlite", n, rate).await;
        if std::env::var("BENCH_DATABASE_URL").is_ok() {
            send_through_outbox("postgres", n, rate).await;
        }
    });
}
