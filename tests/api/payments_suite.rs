//! Payments, black-box: orders over the API, callbacks from the sandbox (all three gateways,
//! real signatures), exactly-once application, active queries, refunds and receipts. Runs on
//! SQLite and, with `TEST_DATABASE_URL`, on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use meterpay::config::Config;
use meterpay::domain::ids::Utility;
use meterpay::domain::Fen;
use meterpay::ledger::{JournalEntry, LedgerAccount};
use meterpay::payments::config::{MerchantConfig, MerchantKind};
use meterpay::payments::Payments;
use meterpay::store::Store;
use meterpay_gateways::gateway::Channel;
use meterpay_gateways::sandbox::{Faults, Sandbox};
use serde_json::{json, Value};

use crate::billing_helpers::{account_id, community};
use crate::helpers::{spawn_app_with, TestApp};
use crate::staff::token;

const ALI: &str = "2021000000000001";
const ALI_OTHER: &str = "2021000000000002";
const WX: &str = "1900000109";
const UP: &str = "777290058110048";

const ACCOUNTS: &str =
    "code,name,building,unit,door_no,meters\nA1,One,1,1,101,E1:electricity:6\nA2,Two,1,1,102,E2:electricity:6\n";

pub struct World {
    pub app: TestApp,
    pub sb: Sandbox,
    pub account: i64,
    pub other_account: i64,
    pub token: String,
    pub finance: String,
    pub config: Config,
}

fn merchant(community: &str, channel: Channel, id: &str, base: &str) -> MerchantConfig {
    MerchantConfig {
        community: community.into(),
        channel: Some(channel),
        merchant_id: id.into(),
        fee_rate_ppm: 6000,
        kind: MerchantKind::Sandbox,
        gateway_url: base.into(),
        ..MerchantConfig::default()
    }
}

/// A sandbox serving all three gateways, an app whose merchants point at it, a community with
/// two accounts, and staff tokens.
pub async fn world() -> World {
    let sb = meterpay::tools::sandbox_with_all_gateways(10_000);
    sb.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    meterpay_gateways::sandbox::alipay::connect(&sb, ALI, 6000);
    meterpay_gateways::sandbox::alipay::connect(&sb, ALI_OTHER, 6000);
    meterpay_gateways::sandbox::wechatpay::connect(&sb, WX, 6000);
    meterpay_gateways::sandbox::unionpay::connect(&sb, UP, 6000);
    let base = sb.base_url();
    let merchants = vec![
        merchant("PAY", Channel::Alipay, ALI, &base),
        merchant("PAY", Channel::Wechatpay, WX, &base),
        merchant("PAY", Channel::Unionpay, UP, &base),
        merchant("OTHER", Channel::Alipay, ALI_OTHER, &base),
    ];
    let m2 = merchants.clone();
    let app = spawn_app_with(move |c| c.payments.merchants = m2).await;
    let c = community(&app.db, "PAY", ACCOUNTS, "").await;
    community(
        &app.db,
        "OTHER",
        "code,name,building,unit,door_no,meters\nB1,B,1,1,101,E9:electricity:6\n",
        "",
    )
    .await;
    let account = account_id(&app.db.store, &c, "A1").await;
    let other_account = account_id(&app.db.store, &c, "A2").await;
    let cashier = token(&app.db, "cashier", "operator").await;
    let finance = token(&app.db, "finance", "finance").await;
    let mut config = Config::default();
    config.payments.merchants = merchants;
    config.http.public_base_url = app.address.clone();
    World {
        app,
        sb,
        account,
        other_account,
        token: cashier,
        finance,
        config,
    }
}

/// Issue a bill of `fen` for `period` (and post its issue), returning its id.
pub async fn issue_bill(store: &Store, account: i64, period: &str, fen: i64) -> i64 {
    let community: i64 = {
        let row = store.payment_account(account).await.unwrap().unwrap();
        row.0
    };
    store
        .execute_raw_sql_in_tx_for_tests(&format!(
            "INSERT INTO bills (community_id, account_id, period, kind, status, total_fen, due_date, created_at, created_by) \
             VALUES ({community}, {account}, '{period}', 'regular', 'draft', {fen}, '2030-02-01', '2030-01-01T00:00:00+00:00', 't'); \
             INSERT INTO bill_lines (bill_id, line_no, kind, component, description, quantity_e4, unit_price_e6, amount_fen) \
             VALUES ((SELECT MAX(id) FROM bills), 1, 'usage', 'energy', 'x', 10000, {}, {fen}); \
             UPDATE bills SET status = 'issued', issued_at = '2030-01-01T00:00:00+00:00' WHERE id = (SELECT MAX(id) FROM bills)",
            fen * 10_000
        ))
        .await
        .unwrap();
    let id = store
        .open_bills(account)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.period == period)
        .unwrap()
        .bill_id;
    let e = JournalEntry::transfer(
        "bill.issue",
        format!("bill:{id}"),
        chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        "test",
        LedgerAccount::Receivable { account_id: account },
        LedgerAccount::Revenue {
            utility: Utility::Electricity,
        },
        Fen::new(fen),
    )
    .unwrap();
    store.post_entry(&e, Utc::now()).await.unwrap();
    id
}

impl World {
    pub fn store(&self) -> &Store {
        &self.app.db.store
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut r = self
            .app
            .client
            .post(format!("{}{path}", self.app.address))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.send().await.unwrap()
    }

    pub async fn order(&self, bills: &[i64], channel: &str, method: &str) -> Value {
        let key = uuid::Uuid::new_v4().to_string();
        let r = self
            .post(
                "/api/v1/payments",
                Some(&key),
                &json!({"account_id": self.account, "bill_ids": bills, "channel": channel, "method": method, "payer_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}),
            )
            .await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{status}: {v}");
        // The payer's browser submits a form or follows a redirect (browser flows).
        submit_browser_flow(&v["payer_action"]).await;
        v
    }

    pub async fn notify(
        &self,
        channel: &str,
        merchant: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let mut r = self
            .app
            .client
            .post(format!("{}/notify/{channel}/{merchant}", self.app.address))
            .body(body);
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("host") {
                continue;
            }
            r = r.header(k, v);
        }
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn status_of(&self, order_no: &str) -> String {
        self.store().payment_order(order_no).await.unwrap().unwrap().status
    }

    pub async fn wait_paid(&self, order_no: &str) {
        wait_for(&format!("order {order_no} paid"), || async {
            self.store().payment_order(order_no).await.unwrap().unwrap().status == "paid"
        })
        .await;
    }

    pub async fn receivable(&self) -> i64 {
        self.store()
            .balance(&LedgerAccount::Receivable {
                account_id: self.account,
            })
            .await
            .unwrap()
            .get()
    }

    pub async fn credit(&self) -> i64 {
        self.store()
            .balance(&LedgerAccount::CustomerCredit {
                account_id: self.account,
            })
            .await
            .unwrap()
            .get()
    }

    /// Every account's balance, to prove a bad callback changed none.
    pub async fn balances(&self) -> Vec<(String, i64)> {
        self.store()
            .trial_balance()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.code, r.balance_fen))
            .collect()
    }

    /// Another instance over the same database (its own pool and merchant clients).
    pub async fn other_instance(&self) -> Arc<Payments> {
        let store = self.app.db.another_instance().await;
        let p = Payments::from_config(store, &self.config).unwrap();
        p.set_notify_base_url(&self.app.address);
        Arc::new(p)
    }
}

/// What the payer's browser does with a form or redirect answer.
pub async fn submit_browser_flow(action: &Value) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    match action["kind"].as_str() {
        Some("form") => {
            let fields: Vec<(String, String)> = serde_json::from_value(action["fields"].clone()).unwrap();
            let r = client
                .post(action["action"].as_str().unwrap())
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert!(r.status().as_u16() < 400, "the form was refused: {}", r.status());
        }
        Some("redirect") => {
            client.get(action["url"].as_str().unwrap()).send().await.unwrap();
        }
        _ => {}
    }
}

pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not reached in 30 s");
}

pub async fn journal_balances(store: &Store) -> bool {
    store
        .trial_balance()
        .await
        .unwrap()
        .iter()
        .map(|r| r.balance_fen)
        .sum::<i64>()
        == 0
}

fn order_no(v: &Value) -> String {
    v["order_no"].as_str().unwrap().to_string()
}

// --- orders ------------------------------------------------------------------------------------

#[tokio::test]
async fn an_order_answers_what_the_payer_needs_on_every_channel_and_method() {
    let w = world().await;
    let mut bills = Vec::new();
    for (i, p) in ["2030-01", "2030-02", "2030-03", "2030-04"].iter().enumerate() {
        bills.push(issue_bill(w.store(), w.account, p, 1000 + i as i64).await);
    }
    let qr = w.order(&bills[0..1], "alipay", "qr").await;
    assert_eq!(qr["payer_action"]["kind"], "qr_code", "{qr}");
    assert_eq!(qr["amount_fen"], 1000);
    let no = order_no(&qr);
    assert!(meterpay_gateways::gateway::is_valid_order_no(&no), "{no}");
    let h5 = w.order(&bills[1..2], "alipay", "h5").await;
    assert_eq!(h5["payer_action"]["kind"], "redirect", "{h5}");
    let jsapi = w.order(&bills[2..3], "wechatpay", "jsapi").await;
    assert_eq!(jsapi["payer_action"]["kind"], "jsapi", "{jsapi}");
    let keys: Vec<&str> = jsapi["payer_action"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"paySign") && keys.contains(&"package"), "{keys:?}");
    let web = w.order(&bills[3..4], "unionpay", "web").await;
    assert_eq!(web["payer_action"]["kind"], "form", "{web}");
    assert_eq!(web["amount_fen"], 1003);
    // The sandbox has each order with its amount.
    let at_gateway = w.sb.order(Channel::Unionpay, UP, &order_no(&web)).unwrap();
    assert_eq!(at_gateway.amount_fen, 1003);
}

#[tokio::test]
async fn an_order_without_an_idempotency_key_or_for_a_bill_not_open_is_refused() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 1000).await;
    let other = issue_bill(w.store(), w.other_account, "2030-01", 700).await;
    let body = json!({"account_id": w.account, "bill_ids": [bill], "channel": "alipay", "method": "qr"});
    let r = w.post("/api/v1/payments", None, &body).await;
    assert_eq!(r.status(), 400, "no Idempotency-Key");
    let r = w
        .post(
            "/api/v1/payments",
            Some("k-other"),
            &json!({"account_id": w.account, "bill_ids": [other], "channel": "alipay", "method": "qr"}),
        )
        .await;
    assert_eq!(r.status(), 422, "another account's bill");
    let r = w
        .post(
            "/api/v1/payments",
            Some("k-js"),
            &json!({"account_id": w.account, "bill_ids": [bill], "channel": "alipay", "method": "jsapi"}),
        )
        .await;
    assert_eq!(r.status(), 400, "jsapi is WeChat's");
    let r = w
        .post(
            "/api/v1/payments",
            Some("k-nothing"),
            &json!({"account_id": w.account, "channel": "alipay", "method": "qr"}),
        )
        .await;
    assert_eq!(r.status(), 400, "neither bills nor a top-up");
    let r = w
        .app
        .client
        .post(format!("{}/api/v1/payments", w.app.address))
        .header("Idempotency-Key", "k-anon")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no credentials, no pay link");
    assert!(w.store().account_payment_orders(w.account).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_same_idempotency_key_replays_the_first_answer_and_another_body_is_refused() {
    let w = world().await;
    let b1 = issue_bill(w.store(), w.account, "2030-01", 1000).await;
    let b2 = issue_bill(w.store(), w.account, "2030-02", 2000).await;
    let body = json!({"account_id": w.account, "bill_ids": [b1], "channel": "alipay", "method": "qr"});
    let first: Value = w
        .post("/api/v1/payments", Some("same-key"), &body)
        .await
        .json()
        .await
        .unwrap();
    let again = w.post("/api/v1/payments", Some("same-key"), &body).await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    let other = json!({"account_id": w.account, "bill_ids": [b2], "channel": "alipay", "method": "qr"});
    let r = w.post("/api/v1/payments", Some("same-key"), &other).await;
    assert_eq!(r.status(), 422);
    assert_eq!(w.store().account_payment_orders(w.account).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_second_order_for_a_bill_reuses_the_live_one_or_supersedes_it_explicitly() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 1000).await;
    let first = w.order(&[bill], "alipay", "qr").await;
    let again = w.order(&[bill], "alipay", "qr").await;
    assert_eq!(again["reused"], true);
    assert_eq!(order_no(&again), order_no(&first));
    assert_eq!(again["payer_action"], first["payer_action"]);

    let r = w
        .post(
            "/api/v1/payments",
            Some("k-wx"),
            &json!({"account_id": w.account, "bill_ids": [bill], "channel": "wechatpay", "method": "qr"}),
        )
        .await;
    assert_eq!(
        r.status(),
        409,
        "another channel for a bill with a live order is refused"
    );
    let msg: Value = r.json().await.unwrap();
    assert!(msg.to_string().contains(&order_no(&first)), "{msg}");

    let r = w
        .post(
            "/api/v1/payments",
            Some("k-wx2"),
            &json!({"account_id": w.account, "bill_ids": [bill], "channel": "wechatpay", "method": "qr", "if_live": "supersede"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["superseded"], json!([order_no(&first)]));
    let old = w.store().payment_order(&order_no(&first)).await.unwrap().unwrap();
    assert_eq!(old.status, "closed");
    assert_eq!(old.superseded_by.as_deref(), Some(order_no(&second).as_str()));
    // The new order pays the bill.
    w.sb.pay(Channel::Wechatpay, WX, &order_no(&second)).unwrap();
    w.wait_paid(&order_no(&second)).await;
    assert_eq!(w.receivable().await, 0);
    // Alipay had never seen the superseded QR order (not scanned: nothing to close there). If the
    // payer still pays it, the money is applied and flagged, and the bill is not paid twice: it
    // goes to the account's credit.
    w.sb.pay(Channel::Alipay, ALI, &order_no(&first)).unwrap();
    w.wait_paid(&order_no(&first)).await;
    assert_eq!(w.receivable().await, 0);
    assert_eq!(
        w.credit().await,
        -1000,
        "the second payment is held as credit (a liability)"
    );
    let flags = w.store().payment_flags().await.unwrap();
    assert!(
        flags
            .iter()
            .any(|f| f.kind == "paid_after_close" && f.order_no.as_deref() == Some(order_no(&first).as_str())),
        "{flags:?}"
    );
    assert!(journal_balances(w.store()).await);
}

// --- callbacks ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_paid_notification_settles_the_bills_posts_the_journal_and_writes_a_receipt() {
    let w = world().await;
    let b1 = issue_bill(w.store(), w.account, "2030-01", 1000).await;
    let b2 = issue_bill(w.store(), w.account, "2030-02", 2500).await;
    let o = w.order(&[b1, b2], "unionpay", "web").await;
    let no = order_no(&o);
    w.sb.pay(Channel::Unionpay, UP, &no).unwrap();
    w.wait_paid(&no).await;
    assert_eq!(w.receivable().await, 0);
    let lines = w.store().entry_lines("payment.apply", &no).await.unwrap();
    assert_eq!(lines[0].account_code, format!("clearing:unionpay:{UP}"));
    assert_eq!(lines[0].amount_fen, 3500);
    assert!(journal_balances(w.store()).await);
    let r: Value = w
        .app
        .client
        .get(format!("{}/api/v1/receipts/RC{no}", w.app.address))
        .bearer_auth(&w.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["amount_fen"], 3500, "{r}");
    assert_eq!(r["account"], "A1");
    assert_eq!(r["channel"], "unionpay");
    assert_eq!(r["bills"].as_array().unwrap().len(), 2);
    assert!(!r["gateway_txn_id"].as_str().unwrap().is_empty());
    assert_eq!(w.sb.deliveries().iter().filter(|d| d.acknowledged).count(), 1);
}

#[tokio::test]
async fn a_hundred_concurrent_copies_of_one_callback_credit_the_bill_once() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 8880).await;
    let no = order_no(&w.order(&[bill], "wechatpay", "qr").await);
    w.sb.set_faults(Faults {
        duplicate_notifications: 99,
        ..Faults::default()
    });
    w.sb.pay(Channel::Wechatpay, WX, &no).unwrap();
    wait_for("100 deliveries acknowledged", || async {
        w.sb.deliveries().iter().filter(|d| d.acknowledged).count() == 100
    })
    .await;
    let (applies, receipts, _) = w.store().payment_counts().await.unwrap();
    assert_eq!((applies, receipts), (1, 1));
    assert_eq!(w.receivable().await, 0);
    assert_eq!(w.credit().await, 0, "nothing paid twice, nothing to credit");
    assert_eq!(
        w.store()
            .balance(&LedgerAccount::GatewayClearing {
                channel: meterpay::domain::ids::Channel::Wechatpay,
                merchant: WX.into()
            })
            .await
            .unwrap()
            .get(),
        8880
    );
    assert!(journal_balances(w.store()).await);
}

#[tokio::test]
async fn the_same_callback_replayed_a_day_later_changes_nothing() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 1234).await;
    let no = order_no(&w.order(&[bill], "alipay", "qr").await);
    w.sb.pay(Channel::Alipay, ALI, &no).unwrap();
    w.wait_paid(&no).await;
    let before = w.balances().await;
    let counts = w.store().payment_counts().await.unwrap();
    let (headers, body) = w.store().payment_event_raw(&no, "payment").await.unwrap().unwrap();
    let headers: Vec<(String, String)> = serde_json::from_str(&headers).unwrap();
    // A day later the sandbox's clock (and the notification's times) have moved on; the bytes
    // are the same event.
    w.sb.advance_clock(chrono::Duration::days(1));
    let (status, text) = w.notify("alipay", ALI, &headers, body).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "success"),
        "acknowledged, so the gateway stops"
    );
    assert_eq!(w.balances().await, before);
    assert_eq!(w.store().payment_counts().await.unwrap(), counts);
}

#[tokio::test]
async fn a_refund_notification_arriving_before_its_payments_ends_in_the_right_state() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 1000).await;
    let no = order_no(&w.order(&[bill], "alipay", "qr").await);
    w.sb.set_faults(Faults {
        hold_notifications: true,
        ..Faults::default()
    });
    w.sb.pay(Channel::Alipay, ALI, &no).unwrap();
    let notify_url = format!("{}/notify/alipay/{ALI}", w.app.address);
    w.sb.refund(
        Channel::Alipay,
        ALI,
        &no,
        "RFDGW0000001",
        400,
        "refund at the console",
        Some(notify_url),
        true,
    )
    .unwrap();
    w.sb.set_faults(Faults::default());
    assert_eq!(
        w.sb.release_held_notifications(),
        2,
        "payment and refund, sent refund first"
    );
    wait_for("the refund applied", || async {
        w.store().payment_order(&no).await.unwrap().unwrap().refunded_fen == 400
    })
    .await;
    wait_for("both acknowledged", || async {
        w.sb.deliveries().iter().filter(|d| d.acknowledged).count() == 2
    })
    .await;
    let o = w.store().payment_order(&no).await.unwrap().unwrap();
    assert_eq!(
        (o.status.as_str(), o.paid_amount_fen, o.refunded_fen),
        ("paid", Some(1000), 400)
    );
    assert_eq!(w.receivable().await, 400, "the refund reopened 4.00 of the bill");
    let (applies, receipts, _) = w.store().payment_counts().await.unwrap();
    assert_eq!((applies, receipts), (1, 1));
    assert_eq!(w.store().entry_lines("refund", "RFDGW0000001").await.unwrap().len(), 2);
    assert!(journal_balances(w.store()).await);
    let flags = w.store().payment_flags().await.unwrap();
    assert!(flags.iter().any(|f| f.kind == "unknown_refund"), "{flags:?}");
}

// --- bad callbacks -----------------------------------------------------------------------------

/// An Alipay notification body with these fields, signed (RSA2, V1 content) with `key`.
fn signed_alipay(pairs: &[(String, String)], key: &meterpay_gateways::crypto::PrivateKey) -> Vec<u8> {
    let mut sorted: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "sign" && k != "sign_type").collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let content = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let sign = key.sign_sha256_base64(content.as_bytes());
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "sign") {
        ser.append_pair(k, v);
    }
    ser.append_pair("sign", &sign);
    ser.finish().into_bytes()
}

fn with(pairs: &[(String, String)], changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut p = pairs.to_vec();
    for (k, v) in changes {
        match p.iter_mut().find(|(n, _)| n == k) {
            Some(x) => x.1 = v.to_string(),
            None => p.push((k.to_string(), v.to_string())),
        }
    }
    p
}

fn platform_key() -> meterpay_gateways::crypto::PrivateKey {
    meterpay_gateways::crypto::load_private_key(meterpay_gateways::sandbox::alipay::PLATFORM_PRIVATE_KEY).unwrap()
}

/// A genuine, signed Alipay notification for an order of `fen` that we have not applied: the
/// sandbox drops its delivery and we read the bytes it would have sent from a paid twin order.
async fn genuine_alipay(w: &World, fen: i64, period: &str) -> (String, Vec<(String, String)>) {
    let bill = issue_bill(w.store(), w.account, period, fen).await;
    let no = order_no(&w.order(&[bill], "alipay", "qr").await);
    w.sb.update_faults(|f| {
        f.drop_for_orders.insert(no.clone());
    });
    w.sb.pay(Channel::Alipay, ALI, &no).unwrap();
    let o = w.sb.order(Channel::Alipay, ALI, &no).unwrap();
    let pairs = vec![
        ("notify_id".to_string(), format!("forge{no}")),
        ("notify_type".into(), "trade_status_sync".into()),
        ("notify_time".into(), "2030-01-15 10:00:00".into()),
        ("charset".into(), "utf-8".into()),
        ("version".into(), "1.0".into()),
        ("sign_type".into(), "RSA2".into()),
        ("app_id".into(), ALI.into()),
        ("auth_app_id".into(), ALI.into()),
        ("out_trade_no".into(), no.clone()),
        ("trade_no".into(), o.gateway_txn_id.clone().unwrap()),
        ("trade_status".into(), "TRADE_SUCCESS".into()),
        ("total_amount".into(), yuan(fen)),
        ("gmt_payment".into(), "2030-01-15 09:59:00".into()),
    ];
    (no, pairs)
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

#[tokio::test]
async fn forged_tampered_wrong_merchant_wrong_amount_replayed_with_changes_and_malformed_callbacks_change_no_balance() {
    let w = world().await;
    let (no, pairs) = genuine_alipay(&w, 5000, "2030-01").await;
    let form = vec![(
        "content-type".to_string(),
        "application/x-www-form-urlencoded; charset=utf-8".to_string(),
    )];
    let before = w.balances().await;

    // Forged: well-formed and signed, but with a key that is not Alipay's.
    let merchant_key =
        meterpay_gateways::crypto::load_private_key(meterpay_gateways::sandbox::alipay::MERCHANT_PRIVATE_KEY).unwrap();
    let (status, text) = w
        .notify("alipay", ALI, &form, signed_alipay(&pairs, &merchant_key))
        .await;
    assert_ne!(text, "success", "forged: {status}");
    // Tampered: Alipay's signature, then the amount changed.
    let genuine = signed_alipay(&pairs, &platform_key());
    let tampered = String::from_utf8(genuine.clone())
        .unwrap()
        .replace(&format!("total_amount={}", yuan(5000)), "total_amount=0.01");
    let (_, text) = w.notify("alipay", ALI, &form, tampered.into_bytes()).await;
    assert_ne!(text, "success", "tampered");
    // Replayed with changes: a genuine body pointed at another order number.
    let replayed = String::from_utf8(genuine.clone())
        .unwrap()
        .replace(&format!("out_trade_no={no}"), "out_trade_no=P20300101AAAAAAAAAAAAAAAA");
    let (_, text) = w.notify("alipay", ALI, &form, replayed.into_bytes()).await;
    assert_ne!(text, "success", "replayed with changes");
    // Malformed: not a form, empty, not UTF-8, no signature.
    for (what, body) in [
        ("garbage", b"{\"this\": \"is not a form\"}".to_vec()),
        ("empty", Vec::new()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x80]),
        ("unsigned", b"out_trade_no=P1234567890&total_amount=50.00".to_vec()),
    ] {
        let (_, text) = w.notify("alipay", ALI, &form, body).await;
        assert_ne!(text, "success", "malformed: {what}");
    }
    let logged = w.store().rejected_callbacks().await.unwrap();
    assert_eq!(logged.len(), 7, "{logged:?}");
    assert!(
        logged.iter().all(|r| r.reason.starts_with("unverifiable")),
        "{logged:?}"
    );
    assert_eq!(w.balances().await, before, "nothing unverified changes a balance");

    // Wrong merchant: genuinely signed (the sandbox signs every app with one platform key), naming
    // our app, but delivered to another community's merchant URL.
    let (status, text) = w.notify("alipay", ALI_OTHER, &form, genuine.clone()).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "success"),
        "stored and flagged, so acknowledged"
    );
    // Wrong amount: genuinely signed, for more than the order.
    let wrong_amount = signed_alipay(
        &with(&pairs, &[("total_amount", "50.01"), ("notify_id", "forge-amount")]),
        &platform_key(),
    );
    let (_, text) = w.notify("alipay", ALI, &form, wrong_amount).await;
    assert_eq!(text, "success");
    // Unknown merchant in the URL.
    let (status, _) = w.notify("alipay", "2021999999999999", &form, genuine.clone()).await;
    assert_eq!(status, 404);
    assert_eq!(w.balances().await, before, "mismatches are not applied");
    assert_eq!(w.status_of(&no).await, "created");
    let flags = w.store().payment_flags().await.unwrap();
    let kinds: Vec<&str> = flags.iter().map(|f| f.kind.as_str()).collect();
    assert!(
        kinds.contains(&"merchant_mismatch") && kinds.contains(&"amount_mismatch"),
        "{flags:?}"
    );
    let flagged: Value = w
        .app
        .client
        .get(format!("{}/api/v1/payments/flags", w.app.address))
        .bearer_auth(&w.finance)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flagged["rejected_callbacks"].as_array().unwrap().len(), 8, "{flagged}");

    // And the genuine one, at the right merchant, is applied.
    let (_, text) = w.notify("alipay", ALI, &form, genuine).await;
    assert_eq!(text, "success");
    assert_eq!(w.status_of(&no).await, "paid");
    assert_eq!(w.receivable().await, 0);
}

#[tokio::test]
async fn an_unverifiable_callback_is_answered_as_a_failure_and_the_order_is_queried_instead() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 777).await;
    let no = order_no(&w.order(&[bill], "alipay", "qr").await);
    w.sb.set_faults(Faults {
        bad_signature: true,
        ..Faults::default()
    });
    w.sb.pay(Channel::Alipay, ALI, &no).unwrap();
    wait_for("a refused delivery", || async { !w.sb.deliveries().is_empty() }).await;
    assert!(!w.sb.deliveries()[0].acknowledged);
    assert_eq!(w.status_of(&no).await, "created", "a tampered body is never trusted");
    // The order's query was brought forward; the sweep and a worker (another instance) find it paid.
    let other = w.other_instance().await;
    wait_for("the query brought forward", || async {
        w.store()
            .payment_order(&no)
            .await
            .unwrap()
            .unwrap()
            .next_query_at
            .is_some_and(|t| t <= Utc::now())
    })
    .await;
    meterpay::payments::compensation::sweep(other.store(), Utc::now())
        .await
        .unwrap();
    let worker = meterpay::jobs::Worker::new(
        other.store().clone(),
        "test-worker",
        other.task_handlers(),
        meterpay::jobs::WorkerOptions::default(),
    );
    worker.run_once().await.unwrap();
    w.wait_paid(&no).await;
    assert_eq!(w.receivable().await, 0);
    let events = w.store().payment_events_for(&no).await.unwrap();
    assert_eq!(events, vec![("query".to_string(), "applied".to_string())]);
}

// --- compensation ------------------------------------------------------------------------------

/// Run the sweep as of `at` and the queue once from another instance.
async fn sweep_and_work(other: &Arc<Payments>, at: chrono::DateTime<Utc>) {
    meterpay::payments::compensation::sweep(other.store(), at)
        .await
        .unwrap();
    let worker = meterpay::jobs::Worker::new(
        other.store().clone(),
        "test-worker",
        other.task_handlers(),
        meterpay::jobs::WorkerOptions {
            batch: 50,
            ..meterpay::jobs::WorkerOptions::default()
        },
    );
    while worker.run_once().await.unwrap() > 0 {}
}

#[tokio::test]
async fn with_every_notification_dropped_each_order_is_found_paid_by_the_active_query() {
    let w = world().await;
    w.sb.set_faults(Faults {
        drop_notifications: true,
        ..Faults::default()
    });
    let mut orders = Vec::new();
    for (i, (channel, method, merchant, ch)) in [
        ("alipay", "qr", ALI, Channel::Alipay),
        ("wechatpay", "qr", WX, Channel::Wechatpay),
        ("unionpay", "web", UP, Channel::Unionpay),
        ("alipay", "qr", ALI, Channel::Alipay),
        ("wechatpay", "qr", WX, Channel::Wechatpay),
        ("unionpay", "web", UP, Channel::Unionpay),
    ]
    .into_iter()
    .enumerate()
    {
        let bill = issue_bill(
            w.store(),
            w.account,
            &format!("2031-{:02}", i + 1),
            100 * (i as i64 + 1),
        )
        .await;
        let no = order_no(&w.order(&[bill], channel, method).await);
        w.sb.pay(ch, merchant, &no).unwrap();
        orders.push(no);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(w.sb.deliveries().is_empty(), "every notification dropped");
    for no in &orders {
        assert_eq!(w.status_of(no).await, "created");
    }
    let other = w.other_instance().await;
    sweep_and_work(&other, Utc::now() + chrono::Duration::minutes(1)).await;
    for no in &orders {
        w.wait_paid(no).await;
        assert_eq!(
            w.store().payment_events_for(no).await.unwrap(),
            vec![("query".into(), "applied".into())]
        );
    }
    assert_eq!(w.receivable().await, 0);
    assert_eq!(w.store().payment_counts().await.unwrap().0, 6);
    assert!(journal_balances(w.store()).await);
}

#[tokio::test]
async fn an_unpaid_order_is_queried_on_the_curve_and_closed_at_the_gateway_once_expired() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 500).await;
    let no = order_no(&w.order(&[bill], "wechatpay", "qr").await);
    let other = w.other_instance().await;
    sweep_and_work(&other, Utc::now() + chrono::Duration::minutes(1)).await;
    // (The app's own workers share the queue: whichever instance took the task, it ran once.)
    wait_for("the first query", || async {
        w.store().payment_order(&no).await.unwrap().unwrap().query_attempts == 1
    })
    .await;
    let o = w.store().payment_order(&no).await.unwrap().unwrap();
    assert_eq!(o.status, "created");
    let next = o.next_query_at.unwrap();
    assert!(
        next > Utc::now() && next <= Utc::now() + chrono::Duration::seconds(16),
        "WeChat's 15 s: {next}"
    );
    // Past its expiry: closed at the gateway first, then here; the bill is free again.
    sweep_and_work(&other, Utc::now() + chrono::Duration::hours(2)).await;
    wait_for("the expired order closed", || async {
        w.status_of(&no).await == "closed"
    })
    .await;
    let o = w.store().payment_order(&no).await.unwrap().unwrap();
    assert_eq!(o.status, "closed");
    assert_eq!(o.close_reason.as_deref(), Some("expired"));
    assert_eq!(
        w.sb.order(Channel::Wechatpay, WX, &no).unwrap().state,
        meterpay_gateways::sandbox::SimOrderState::Closed
    );
    assert!(
        w.sb.pay(Channel::Wechatpay, WX, &no).is_err(),
        "no payment can land on it"
    );
    let again = w.order(&[bill], "alipay", "qr").await;
    assert_eq!(again["reused"], false);
}

// --- refunds and receipts ----------------------------------------------------------------------

async fn refund_req(w: &World, token: &str, no: &str, key: &str, body: Value) -> reqwest::Response {
    w.app
        .client
        .post(format!("{}/api/v1/payments/{no}/refunds", w.app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn partial_and_full_refunds_record_reason_and_operator_and_reverse_the_ledger_with_new_entries() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 1000).await;
    let no = order_no(&w.order(&[bill], "wechatpay", "qr").await);
    w.sb.pay(Channel::Wechatpay, WX, &no).unwrap();
    w.wait_paid(&no).await;
    let entries_before = w.store().entry_count().await.unwrap();

    let r = refund_req(
        &w,
        &w.token,
        &no,
        "r0",
        json!({"amount": "3.00", "reason": "meter misread"}),
    )
    .await;
    assert_eq!(r.status(), 403, "an operator may not refund");
    let r = refund_req(&w, &w.finance, &no, "r1", json!({"amount": "3.00", "reason": " "})).await;
    assert_eq!(r.status(), 400, "a refund needs a reason");
    let r = refund_req(
        &w,
        &w.finance,
        &no,
        "r2",
        json!({"amount": "10.01", "reason": "too much"}),
    )
    .await;
    assert_eq!(r.status(), 422, "more than was paid");

    let r = refund_req(
        &w,
        &w.finance,
        &no,
        "r3",
        json!({"amount": "3.00", "reason": "meter misread"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let partial: Value = r.json().await.unwrap();
    assert_eq!(partial["requested_by"], "token:finance");
    assert_eq!(partial["reason"], "meter misread");
    assert_eq!(
        partial["status"], "processing",
        "WeChat Pay refunds settle later: {partial}"
    );
    let refund_no = partial["refund_no"].as_str().unwrap().to_string();
    // WeChat Pay confirms by notification.
    wait_for("the refund notification", || async {
        w.store().refund(&refund_no).await.unwrap().unwrap().status == "succeeded"
    })
    .await;
    let shown: Value = w
        .app
        .client
        .get(format!("{}/api/v1/refunds/{refund_no}", w.app.address))
        .bearer_auth(&w.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(w.receivable().await, 300, "the bill is open again by the refund");
    let lines = w.store().entry_lines("refund", &refund_no).await.unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.account_code.clone(), l.amount_fen))
            .collect::<Vec<_>>(),
        vec![
            (format!("clearing:wechatpay:{WX}"), -300),
            (format!("receivable:{}", w.account), 300)
        ]
    );
    // The rest, with the same key twice: one refund.
    let full = refund_req(&w, &w.finance, &no, "r4", json!({"reason": "moved out"})).await;
    assert_eq!(full.status(), 201);
    let full: Value = full.json().await.unwrap();
    let again: Value = refund_req(&w, &w.finance, &no, "r4", json!({"reason": "moved out"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["refund_no"], again["refund_no"]);
    assert_eq!(full["amount_fen"], 700);
    let full_no = full["refund_no"].as_str().unwrap().to_string();
    wait_for("the full refund", || async {
        w.store().refund(&full_no).await.unwrap().unwrap().status == "succeeded"
    })
    .await;
    let o = w.store().payment_order(&no).await.unwrap().unwrap();
    assert_eq!((o.status.as_str(), o.refunded_fen), ("paid", 1000));
    assert_eq!(w.receivable().await, 1000);
    assert_eq!(
        w.store().entry_count().await.unwrap(),
        entries_before + 2,
        "new entries, nothing edited"
    );
    let r = refund_req(&w, &w.finance, &no, "r5", json!({"reason": "again"})).await;
    assert_eq!(r.status(), 422, "nothing left to refund");
    assert!(journal_balances(w.store()).await);
}

#[tokio::test]
async fn a_resident_pays_with_the_pay_link_and_reads_only_their_own_receipts() {
    let w = world().await;
    let bill = issue_bill(w.store(), w.account, "2030-01", 4321).await;
    let signer = meterpay::dunning::outbox::link_signer(w.store(), &w.config, Utc::now())
        .await
        .unwrap();
    let link = signer.token(
        w.account,
        meterpay::paylink::LinkPurpose::Pay,
        Utc::now() + chrono::Duration::days(1),
    );
    let other_link = signer.token(
        w.other_account,
        meterpay::paylink::LinkPurpose::Pay,
        Utc::now() + chrono::Duration::days(1),
    );
    let body = json!({"account_id": w.account, "bill_ids": [bill], "channel": "alipay", "method": "h5"});
    let r = w
        .app
        .client
        .post(format!("{}/api/v1/payments", w.app.address))
        .header("X-Pay-Link", &other_link)
        .header("Idempotency-Key", "res-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another account's link");
    let r = w
        .app
        .client
        .post(format!("{}/api/v1/payments", w.app.address))
        .header("X-Pay-Link", &link)
        .header("Idempotency-Key", "res-2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    submit_browser_flow(&v["payer_action"]).await;
    let no = order_no(&v);
    w.sb.pay(Channel::Alipay, ALI, &no).unwrap();
    w.wait_paid(&no).await;
    let mine: Value = w
        .app
        .client
        .get(format!("{}/api/v1/accounts/{}/receipts", w.app.address, w.account))
        .header("X-Pay-Link", &link)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receipts = mine["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["amount_fen"], 4321);
    assert_eq!(receipts[0]["order_no"], no.as_str());
    let r = w
        .app
        .client
        .get(format!("{}/api/v1/receipts/RC{no}", w.app.address))
        .header("X-Pay-Link", &other_link)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another account's receipt is not shown");
    let activity = meterpay::payments::PaymentsPort::payment_activity(
        &*w.other_instance().await,
        w.account,
        Utc::now() - chrono::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].state, "paid");
}
