//! Kill -9 in the middle of a callback storm: the built binary serves as a child process, the
//! sandbox pays a batch of orders and floods it with (duplicated) notifications, the child is
//! killed with SIGKILL mid-storm and started again. Every payment the sandbox confirmed must be in
//! the ledger exactly once, and the journal must balance.

use std::time::Duration;

use chrono::Utc;
use meterpay::ledger::LedgerAccount;
use meterpay::payments::config::{MerchantConfig, MerchantKind};
use meterpay_gateways::gateway::Channel;
use meterpay_gateways::sandbox::{Faults, SimOrderState};
use serde_json::{json, Value};

use crate::billing_helpers::{account_id, community};
use crate::helpers::TestDb;
use crate::payments_suite::{issue_bill, journal_balances, submit_browser_flow, wait_for};

const ALI: &str = "2021000000000001";
const WX: &str = "1900000109";
const UP: &str = "777290058110048";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Child {
    proc: tokio::process::Child,
}

async fn start(db_url: &str, config: &std::path::Path, base: &str) -> Child {
    let proc = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterpay"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("DATABASE_URL", db_url)
        .env("METERPAY_LOG__LEVEL", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the meterpay binary starts");
    let client = reqwest::Client::new();
    wait_for("the child serves", || {
        let c = client.clone();
        let url = format!("{base}/healthz");
        async move { c.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    Child { proc }
}

#[tokio::test]
async fn kill_9_in_a_callback_storm_loses_and_doubles_no_payment() {
    let db = TestDb::new().await;
    // The child reaches the same database: the SQLite file, or this test's PostgreSQL schema.
    let db_url = match &db.schema {
        Some(schema) => {
            let sep = if db.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}options=-c%20search_path%3D{schema}", db.url)
        }
        None => db.url.clone(),
    };
    let sb = meterpay::tools::sandbox_with_all_gateways(1_000);
    sb.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    meterpay_gateways::sandbox::alipay::connect(&sb, ALI, 6000);
    meterpay_gateways::sandbox::wechatpay::connect(&sb, WX, 6000);
    meterpay_gateways::sandbox::unionpay::connect(&sb, UP, 6000);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut config = meterpay::config::Config::default();
    config.http.listen = format!("127.0.0.1:{port}");
    config.http.public_base_url = base.clone();
    config.http.shutdown_grace_secs = 1;
    for (channel, id) in [
        (Channel::Alipay, ALI),
        (Channel::Wechatpay, WX),
        (Channel::Unionpay, UP),
    ] {
        config.payments.merchants.push(MerchantConfig {
            community: "CRASH".into(),
            channel: Some(channel),
            merchant_id: id.into(),
            fee_rate_ppm: 6000,
            kind: MerchantKind::Sandbox,
            gateway_url: sb.base_url(),
            ..MerchantConfig::default()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("meterpay.toml");
    let mut toml_value = toml::Value::try_from(&config).unwrap();
    toml_value.as_table_mut().unwrap().remove("database_url");
    std::fs::write(&config_path, toml::to_string(&toml_value).unwrap()).unwrap();

    let c = community(
        &db,
        "CRASH",
        "code,name,building,unit,door_no,meters\nA1,One,1,1,101,E1:electricity:6\n",
        "",
    )
    .await;
    let account = account_id(&db.store, &c, "A1").await;
    let token = db
        .store
        .create_api_token("storm", "operator", "test", Utc::now())
        .await
        .unwrap();
    let mut child = start(&db_url, &config_path, &base).await;

    // 45 orders, 15 per channel, each for its own bill.
    let client = reqwest::Client::new();
    let mut orders: Vec<(String, Channel, &str)> = Vec::new();
    for i in 0..45 {
        let (channel, method, id) = match i % 3 {
            0 => (Channel::Alipay, "qr", ALI),
            1 => (Channel::Wechatpay, "qr", WX),
            _ => (Channel::Unionpay, "web", UP),
        };
        let period = format!("{}-{:02}", 2040 + i / 12, i % 12 + 1);
        let bill = issue_bill(&db.store, account, &period, 1000 + i as i64).await;
        let r = client
            .post(format!("{base}/api/v1/payments"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("storm-{i}"))
            .json(&json!({"account_id": account, "bill_ids": [bill], "channel": channel.as_str(), "method": method}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        submit_browser_flow(&v["payer_action"]).await;
        orders.push((v["order_no"].as_str().unwrap().to_string(), channel, id));
    }

    // The storm: every order paid at once, each notification sent three times concurrently.
    sb.set_faults(Faults {
        duplicate_notifications: 2,
        ..Faults::default()
    });
    for (no, channel, id) in &orders {
        sb.pay(*channel, id, no).unwrap();
    }
    // Kill -9 while the callbacks are being applied.
    wait_for("some callbacks answered", || async { sb.deliveries().len() >= 20 }).await;
    child.proc.start_kill().unwrap();
    child.proc.wait().await.unwrap();
    let applied_at_kill = db.store.payment_counts().await.unwrap().0;
    assert!(applied_at_kill < 45, "killed mid-storm ({applied_at_kill} applied)");

    // Restart: the gateways deliver again on their schedules; the active query finds the rest.
    sb.set_faults(Faults::default());
    let mut child = start(&db_url, &config_path, &base).await;
    let other = {
        let store = db.another_instance().await;
        let p = meterpay::payments::Payments::from_config(store, &config).unwrap();
        std::sync::Arc::new(p)
    };
    wait_for("every confirmed payment applied", || {
        let other = other.clone();
        let store = db.store.clone();
        async move {
            meterpay::payments::compensation::sweep(other.store(), Utc::now() + chrono::Duration::minutes(1))
                .await
                .unwrap();
            let worker = meterpay::jobs::Worker::new(
                other.store().clone(),
                "storm-worker",
                other.task_handlers(),
                meterpay::jobs::WorkerOptions {
                    batch: 50,
                    ..meterpay::jobs::WorkerOptions::default()
                },
            );
            let _ = worker.run_once().await;
            store.payment_counts().await.unwrap().0 == 45
        }
    })
    .await;
    child.proc.start_kill().unwrap();
    let _ = child.proc.wait().await;

    for (no, channel, id) in &orders {
        assert_eq!(sb.order(*channel, id, no).unwrap().state, SimOrderState::Paid);
        let o = db.store.payment_order(no).await.unwrap().unwrap();
        assert_eq!(o.status, "paid", "{no}");
        let lines = db.store.entry_lines("payment.apply", no).await.unwrap();
        assert_eq!(
            lines[0].amount_fen, o.amount_fen,
            "{no} in the ledger once, for its amount"
        );
    }
    let (applies, receipts, _) = db.store.payment_counts().await.unwrap();
    assert_eq!((applies, receipts), (45, 45), "each payment exactly once");
    assert_eq!(
        db.store
            .balance(&LedgerAccount::Receivable { account_id: account })
            .await
            .unwrap()
            .get(),
        0
    );
    assert_eq!(
        db.store
            .balance(&LedgerAccount::CustomerCredit { account_id: account })
            .await
            .unwrap()
            .get(),
        0,
        "nothing paid twice"
    );
    assert!(journal_balances(&db.store).await);
    // Give the sandbox's retries a moment and check again: still exactly once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(db.store.payment_counts().await.unwrap().0, 45);
}
