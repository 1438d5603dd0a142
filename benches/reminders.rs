//! Reminders: planning 100,000 overdue accounts with the policy (target ≤ 10 s), and sending
//! 10,000 SMS through the sandbox provider within its rate limit — straight through the client,
//! and the whole way through the outbox and task workers on the database. Prints its figures;
//! asserts nothing.
//!
//! `cargo bench --bench reminders` runs on SQLite; with `BENCH_DATABASE_URL=postgres://…` the
//! outbox part runs on PostgreSQL as well. `BENCH_SMS_RATE` is the sandbox's limit per second
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
    rt.block_on(async {
        send_direct(n, rate).await;
        send_through_outbox("sqlite", n, rate).await;
        if std::env::var("BENCH_DATABASE_URL").is_ok() {
            send_through_outbox("postgres", n, rate).await;
        }
    });
}
