//! Reminders planned from the database (`dunning::planner`): real bills from a real bill run,
//! the guards (quiet hours, the daily cap per household, opt-out, stop on payment — including
//! an order still pending at the gateway —, disputes) and escalation, with time controlled by
//! the `now` handed in, never slept. Then the CLI's twin over HTTP, the per-account history,
//! the written notice served, and opt-out by SMS reply. SQLite always; PostgreSQL with
//! `TEST_DATABASE_URL`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use meterpay::config::Config;
use meterpay::domain::Fen;
use meterpay::dunning::planner::{AccountPlan, PlanOptions, PlanReport, Planner};
use meterpay::dunning::policy::{Reason, StaffAction};
use meterpay::dunning::templates::MessageKind;
use meterpay::ledger::LedgerAccount;
use meterpay::payments::port::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
use meterpay::store::directory::Community;
use secrecy::SecretString;

use crate::billing_helpers::*;
use crate::helpers::{spawn_app_with, TestDb};

const FLAT: &str = r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Flat"
effective_from = 2020-01-01
[[tariff.components]]
kind = "energy"
prices = ["0.50"]
"#;

/// A1 and A2 live at the same premises (one household); A3 and A4 each at their own.
const ACCOUNTS: &str = "code,name,building,unit,door_no,mobile,email,credit_rating,meters\n\
A1,One,1,1,101,+8613800000101,a1@example.cn,B,E1:electricity:6\n\
A2,Two,1,1,101,+8613800000102,a2@example.cn,B,E2:electricity:6\n\
A3,Three,1,1,102,+8613800000103,a3@example.cn,C,E3:electricity:6\n\
A4,Four,1,1,103,+8613800000104,a4@example.cn,A,E4:electricity:6\n";

/// The February bills are due on 15 March 2026 (China time).
fn due_plus(days: i64, hour: u32) -> DateTime<Utc> {
    cst(2026, 3, 15, hour) + chrono::Duration::days(days)
}

fn config() -> Config {
    let mut c = Config::default();
    c.http.public_base_url = "https://pay.example.cn".into();
    c.reminders.sign_name = "阳光花园物业".into();
    c.reminders.service_tel = "4001234567".into();
    c.reminders.templates = MessageKind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str().to_string(), format!("SMS_1000000{i}")))
        .collect();
    c
}

/// Orders still pending at the gateway, per account (what payments would report).
#[derive(Default)]
struct PendingOrders {
    pending: Mutex<HashMap<i64, Vec<PaymentActivity>>>,
    asked: Mutex<Vec<i64>>,
}

#[async_trait]
impl PaymentsPort for PendingOrders {
    async fn merchants(&self) -> anyhow::Result<Vec<MerchantRef>> {
        Ok(Vec::new())
    }
    async fn gateway(
        &self,
        _channel: meterpay_gateways::gateway::Channel,
        _merchant_id: &str,
    ) -> anyhow::Result<Arc<dyn meterpay_gateways::gateway::PaymentGateway>> {
        anyhow::bail!("no gateways in this test")
    }
    async fn query_and_apply(&self, _order_no: &str, _now: DateTime<Utc>) -> anyhow::Result<QueryOutcome> {
        Ok(QueryOutcome::UnknownOrder)
    }
    async fn payment_activity(&self, account_id: i64, since: DateTime<Utc>) -> anyhow::Result<Vec<PaymentActivity>> {
        self.asked.lock().unwrap().push(account_id);
        Ok(self
            .pending
            .lock()
            .unwrap()
            .get(&account_id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.at >= since)
            .collect())
    }
}

struct World {
    db: TestDb,
    community: Community,
    ids: HashMap<String, i64>,
    port: Arc<PendingOrders>,
}

impl World {
    async fn new(code: &str) -> World {
        let db = TestDb::new().await;
        let community = community(&db, code, ACCOUNTS, FLAT).await;
        let mut rows = Vec::new();
        for m in ["E1", "E2", "E3", "E4"] {
            rows.push((m, "electricity", cst(2026, 1, 25, 8), "1000", "actual"));
            rows.push((m, "electricity", cst(2026, 2, 25, 8), "1100", "actual"));
        }
        readings(&db.store, &rows).await;
        let r = run(&db.store, code, "2026-02", Some(date(2026, 3, 15)), cst(2026, 3, 1, 9)).await;
        assert_eq!(r.communities[0].bills_issued, 4);
        let mut ids = HashMap::new();
        for a in ["A1", "A2", "A3", "A4"] {
            ids.insert(a.to_string(), account_id(&db.store, &community, a).await);
        }
        World {
            db,
            community,
            ids,
            port: Arc::new(PendingOrders::default()),
        }
    }

    fn planner(&self) -> Planner {
        Planner::new(self.db.store.clone(), Arc::new(config()), Some(self.port.clone()))
    }

    async fn plan(&self, now: DateTime<Utc>, dry_run: bool) -> PlanReport {
        self.planner()
            .run(
                &PlanOptions {
                    community: Some(self.community.code.clone()),
                    dry_run,
                },
                now,
            )
            .await
            .unwrap()
    }
}

fn of<'a>(r: &'a PlanReport, code: &str) -> &'a AccountPlan {
    r.communities[0]
        .plans
        .iter()
        .find(|p| p.account_code == code)
        .unwrap_or_else(|| panic!("no plan for {code}: {:?}", r.communities[0].plans))
}

fn sends(r: &PlanReport) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = r.communities[0]
        .plans
        .iter()
        .filter(|p| p.outcome == "send")
        .map(|p| {
            (
                p.account_code.clone(),
                p.step.clone().unwrap_or_default(),
                p.channel.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn quiet_hours_hold_a_due_reminder_until_the_morning_window_in_local_time() {
    let w = World::new("QH").await;
    let night = w.plan(due_plus(3, 22), true).await;
    let a3 = of(&night, "A3");
    assert_eq!((a3.outcome, a3.reason), ("wait", Some(Reason::QuietHours)));
    assert_eq!(a3.until, Some(due_plus(4, 8)), "08:00 the next morning, China time");
    let early = w.plan(due_plus(4, 7), true).await;
    assert_eq!(of(&early, "A3").reason, Some(Reason::QuietHours));
    let open = w.plan(due_plus(4, 8), true).await;
    assert_eq!(of(&open, "A3").outcome, "send");
    assert_eq!(night.communities[0].enqueued, 0, "a dry run writes nothing");
    assert!(w.db.store.reminders_for_account(w.ids["A3"]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_household_gets_one_message_a_day_across_its_accounts_and_a_rerun_adds_nothing() {
    let w = World::new("CAP").await;
    let first = w.plan(due_plus(3, 10), false).await;
    assert_eq!(of(&first, "A1").outcome, "send");
    let a2 = of(&first, "A2");
    assert_eq!(
        (a2.outcome, a2.reason),
        ("wait", Some(Reason::DailyCap)),
        "A2 shares A1's premises"
    );
    assert_eq!(a2.until, Some(due_plus(4, 8)));
    assert_eq!(of(&first, "A3").outcome, "send", "another household");
    let enqueued = first.communities[0].enqueued;
    assert!(enqueued >= 2, "{first:?}");
    // Later the same day: the cap holds for everyone who was reminded, and nothing is added.
    let again = w.plan(due_plus(3, 15), false).await;
    assert!(sends(&again).is_empty(), "{:?}", sends(&again));
    assert_eq!(again.communities[0].enqueued, 0);
    assert_eq!(of(&again, "A1").reason, Some(Reason::DailyCap));
    // The next day exactly one message goes to the household again.
    let next = w.plan(due_plus(4, 10), false).await;
    let household: Vec<_> = sends(&next)
        .into_iter()
        .filter(|(a, _, _)| a == "A1" || a == "A2")
        .collect();
    assert_eq!(household.len(), 1, "{household:?}");
    // Every message is in the outbox once.
    let a1 = w.db.store.reminders_for_account(w.ids["A1"]).await.unwrap();
    let mut keys: Vec<(String, String)> = a1.iter().map(|r| (r.step.clone(), r.channel.clone())).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), a1.len());
}

#[tokio::test]
async fn an_opted_out_channel_is_skipped_and_opting_out_of_both_stops_reminders() {
    let w = World::new("OPT").await;
    let s = &w.db.store;
    s.add_opt_out(w.ids["A3"], "sms", "sms_reply", Utc::now())
        .await
        .unwrap();
    let r = w.plan(due_plus(3, 10), true).await;
    let a3 = of(&r, "A3");
    assert_eq!(
        (a3.outcome, a3.channel.as_deref()),
        ("send", Some("email")),
        "e-mail instead of the opted-out SMS"
    );
    s.add_opt_out(w.ids["A3"], "email", "link", Utc::now()).await.unwrap();
    let r = w.plan(due_plus(3, 10), true).await;
    assert_eq!(of(&r, "A3").reason, Some(Reason::OptedOut));
    assert_eq!(of(&r, "A1").channel.as_deref(), Some("sms"), "others keep SMS");
}

#[tokio::test]
async fn any_payment_stops_reminders_at_once_even_an_order_still_pending_at_the_gateway() {
    let w = World::new("PAY").await;
    let s = &w.db.store;
    let now = due_plus(3, 10);
    // A3 paid part of the bill (the journal has the payment).
    s.allocate_payment(
        w.ids["A3"],
        Fen::new(100),
        "ORDERPAY0001",
        &LedgerAccount::Bank,
        cst(2026, 3, 17, 9),
    )
    .await
    .unwrap();
    // A1 has an order the gateway has not confirmed yet.
    w.port.pending.lock().unwrap().insert(
        w.ids["A1"],
        vec![PaymentActivity {
            order_no: "ORDERPEND0001".into(),
            state: "pending".into(),
            amount: Fen::new(5000),
            at: now - chrono::Duration::minutes(10),
        }],
    );
    let r = w.plan(now, false).await;
    assert_eq!(
        (of(&r, "A3").outcome, of(&r, "A3").reason),
        ("nothing", Some(Reason::PaymentReceived))
    );
    assert_eq!(
        (of(&r, "A1").outcome, of(&r, "A1").reason),
        ("nothing", Some(Reason::PaymentPending))
    );
    assert!(s.reminders_for_account(w.ids["A1"]).await.unwrap().is_empty());
    assert!(s.reminders_for_account(w.ids["A3"]).await.unwrap().is_empty());
    // A2 (same premises as A1, nothing paid) is reminded: A1's pending order is A1's.
    assert_eq!(of(&r, "A2").outcome, "send");
    // Payments were asked only about accounts that would have been reminded (A3's payment was
    // already in the journal).
    let asked = w.port.asked.lock().unwrap().clone();
    assert!(!asked.contains(&w.ids["A3"]), "{asked:?}");
    assert!(asked.contains(&w.ids["A1"]));
}

#[tokio::test]
async fn a_disputed_bill_is_not_reminded() {
    let w = World::new("DIS").await;
    let s = &w.db.store;
    let bill = bill(s, &w.community, "A3", "2026-02").await;
    s.set_bill_dispute(
        bill.id,
        true,
        "meter reading contested",
        "test",
        None,
        cst(2026, 3, 16, 9),
    )
    .await
    .unwrap();
    let r = w.plan(due_plus(3, 10), false).await;
    assert_eq!(of(&r, "A3").reason, Some(Reason::Disputed));
    assert!(s.reminders_for_account(w.ids["A3"]).await.unwrap().is_empty());
    // Cleared: reminded again.
    s.set_bill_dispute(bill.id, false, "reading confirmed", "test", None, cst(2026, 3, 19, 9))
        .await
        .unwrap();
    let r = w.plan(due_plus(4, 10), true).await;
    assert_eq!(of(&r, "A3").outcome, "send");
}

#[tokio::test]
async fn escalation_follows_age_and_rating_up_to_the_written_notice_and_a_supply_review() {
    let w = World::new("ESC").await;
    let s = &w.db.store;
    // Rating A starts later (D+5); rating C gets a staff call at the second overdue step.
    let d3 = w.plan(due_plus(3, 10), false).await;
    assert_eq!(of(&d3, "A3").step.as_deref(), Some("overdue_1"));
    assert_eq!(
        of(&d3, "A4").step.as_deref(),
        Some("bill_issued"),
        "rating A: no overdue step before D+5, only the bill notice"
    );
    let d5 = w.plan(due_plus(5, 10), true).await;
    assert_eq!(of(&d5, "A4").step.as_deref(), Some("overdue_1"));
    let d10 = w.plan(due_plus(10, 10), false).await;
    let a3 = of(&d10, "A3");
    assert_eq!(a3.step.as_deref(), Some("overdue_2"));
    assert!(a3.staff.iter().any(|s| matches!(s, StaffAction::Call { .. })), "{a3:?}");
    // The final reminder (催告): SMS, plus a written notice for staff to serve.
    let d20 = w.plan(due_plus(20, 10), false).await;
    let a3 = of(&d20, "A3");
    assert_eq!(a3.step.as_deref(), Some("final_reminder"));
    assert!(a3.legally_required);
    assert_eq!(a3.enqueued.len(), 2, "the SMS and the letter");
    let rows = s.reminders_for_account(w.ids["A3"]).await.unwrap();
    let letter = rows.iter().find(|r| r.channel == "letter").expect("a letter row");
    assert_eq!(letter.status, "awaiting_staff");
    // No supply action is ever proposed before 30 days overdue and 7 days after the notice…
    let d25 = w.plan(due_plus(25, 10), true).await;
    assert!(!of(&d25, "A3")
        .staff
        .iter()
        .any(|s| matches!(s, StaffAction::SupplyActionReview { .. })));
    // …and then only as a review for staff: meterpay never acts on supply itself.
    let d31 = w.plan(due_plus(31, 10), true).await;
    let review = of(&d31, "A3")
        .staff
        .iter()
        .find_map(|s| match s {
            StaffAction::SupplyActionReview { days_overdue, .. } => Some(*days_overdue),
            _ => None,
        })
        .expect("a supply-action review");
    assert_eq!(review, 31);
    // Each account got each step at most once per channel.
    for a in ["A1", "A2", "A3", "A4"] {
        let rows = s.reminders_for_account(w.ids[a]).await.unwrap();
        let mut keys: Vec<_> = rows.iter().map(|r| (r.step.clone(), r.channel.clone())).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{a}: {keys:?}");
    }
}

#[tokio::test]
async fn the_api_plans_shows_the_history_records_the_served_notice_and_takes_sms_replies() {
    let app = spawn_app_with(|c| {
        *c = Config {
            http: c.http.clone(),
            jobs: c.jobs.clone(),
            ..config()
        };
        c.jobs.enabled = false;
        c.reminders.sms_reply_token = SecretString::from("reply-token-123");
    })
    .await;
    let db = &app.db;
    let c = community(db, "API", ACCOUNTS, FLAT).await;
    let mut rows = Vec::new();
    for m in ["E1", "E2", "E3", "E4"] {
        rows.push((m, "electricity", cst(2026, 1, 25, 8), "1000", "actual"));
        rows.push((m, "electricity", cst(2026, 2, 25, 8), "1100", "actual"));
    }
    readings(&db.store, &rows).await;
    run(&db.store, "API", "2026-02", Some(date(2026, 3, 15)), cst(2026, 3, 1, 9)).await;
    let a3 = account_id(&db.store, &c, "A3").await;
    let reader = crate::staff::token(db, "ro", "read_only").await;
    let operator = crate::staff::token(db, "op", "operator").await;
    let post = |token: &str, path: &str, body: serde_json::Value| {
        app.client
            .post(format!("{}{path}", app.address))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    // A dry run as of a given instant: any staff role may look.
    let r = post(
        &reader,
        "/api/v1/reminders/run",
        serde_json::json!({"community": "API", "dry_run": true, "at": due_plus(20, 10)}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let plans = v["communities"][0]["plans"].as_array().unwrap();
    let p3 = plans.iter().find(|p| p["account_code"] == "A3").unwrap();
    assert_eq!(p3["step"], "final_reminder");
    assert_eq!(p3["recipient"], "+86****0103", "masked: {p3}");
    // A real run needs an operator, and is "now" (the bills are long overdue by now).
    let r = post(
        &reader,
        "/api/v1/reminders/run",
        serde_json::json!({"community": "API"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(
        &operator,
        "/api/v1/reminders/run",
        serde_json::json!({"community": "API", "at": due_plus(20, 10)}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "no clock games on a real run");
    let r = post(
        &operator,
        "/api/v1/reminders/run",
        serde_json::json!({"community": "NOPE"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    // Plan as of D+20 directly (the service's clock cannot be moved over HTTP).
    let planner = Planner::new(db.store.clone(), Arc::new(config()), None);
    planner
        .run(
            &PlanOptions {
                community: Some("API".into()),
                dry_run: false,
            },
            due_plus(20, 10),
        )
        .await
        .unwrap();
    // The history, with the masked recipient and the text the resident read.
    let h: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/accounts/{a3}/reminders", app.address))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msgs = h["reminders"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{h}");
    let sms = msgs.iter().find(|m| m["channel"] == "sms").unwrap();
    assert_eq!(sms["step"], "final_reminder");
    assert!(sms["summary"].as_str().unwrap().contains("/pay/"), "{sms}");
    assert!(!h.to_string().contains("13800000103"), "no full number: {h}");
    let letter = msgs.iter().find(|m| m["channel"] == "letter").unwrap();
    let letter_id = letter["id"].as_i64().unwrap();
    // Serving the written notice needs evidence; then it is recorded once.
    let path = format!("/api/v1/reminders/{letter_id}/served");
    let r = post(&operator, &path, serde_json::json!({"evidence": " "}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(
        &operator,
        &path,
        serde_json::json!({"evidence": "door posting 2026-04-05 10:20, photo P-118"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(&operator, &path, serde_json::json!({"evidence": "again"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let sms_id = sms["id"].as_i64().unwrap();
    let r = post(
        &operator,
        &format!("/api/v1/reminders/{sms_id}/served"),
        serde_json::json!({"evidence": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422, "an SMS is not a written notice");
    let row = db.store.reminder(letter_id).await.unwrap().unwrap();
    assert_eq!(row.status, "served");
    // An SMS reply "TD" from A3's phone opts A3 out of reminder SMS; a wrong token changes nothing.
    let reply = serde_json::json!([{"phone_number": "13800000103", "content": "TD", "sign_name": "阳光花园物业"}]);
    let r = app
        .client
        .post(format!(
            "{}/api/v1/reminders/sms-replies/aliyun?token=wrong",
            app.address
        ))
        .json(&reply)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(db.store.opt_outs(a3).await.unwrap().is_empty());
    let r = app
        .client
        .post(format!(
            "{}/api/v1/reminders/sms-replies/aliyun?token=reply-token-123",
            app.address
        ))
        .json(&reply)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(db.store.opt_outs(a3).await.unwrap(), vec!["sms".to_string()]);
    // Tencent's shape; a reply that is not an opt-out changes nothing.
    let a2 = account_id(&db.store, &c, "A2").await;
    let r = app
        .client
        .post(format!(
            "{}/api/v1/reminders/sms-replies/tencent?token=reply-token-123",
            app.address
        ))
        .json(&serde_json::json!({"mobile": "13800000102", "nationcode": "86", "text": "已缴费，谢谢"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(db.store.opt_outs(a2).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_services_payments_view_stops_reminders_for_an_order_still_open_at_the_gateway() {
    let w = World::new("PORT").await;
    let s = &w.db.store;
    let now = due_plus(3, 10);
    // A3 opened a pay link and started paying: the order exists, the gateway has not confirmed.
    s.create_payment_order(&meterpay::store::payments::NewOrder {
        order_no: "P20260318OPEN00001",
        community_id: w.community.id,
        account_id: w.ids["A3"],
        channel: "alipay",
        merchant_id: "2021000000000001",
        method: "qr",
        purpose: "bills",
        amount_fen: 5000,
        subject: "bill 2026-02",
        created_at: now - chrono::Duration::minutes(3),
        expires_at: now + chrono::Duration::minutes(27),
        created_by: "resident",
        bills: &[],
        next_query_at: now,
    })
    .await
    .unwrap();
    let config = Arc::new(config());
    let port = meterpay::dunning::planner::default_port(s, &config).unwrap();
    assert!(port.is_some(), "the service plans with payments' view");
    let r = Planner::new(s.clone(), config, port)
        .run(
            &PlanOptions {
                community: Some("PORT".into()),
                dry_run: false,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        (of(&r, "A3").outcome, of(&r, "A3").reason),
        ("nothing", Some(Reason::PaymentPending))
    );
    assert!(s.reminders_for_account(w.ids["A3"]).await.unwrap().is_empty());
    assert_eq!(of(&r, "A1").outcome, "send", "others are still reminded");
}

#[tokio::test]
async fn payments_answers_many_accounts_at_once_each_within_its_own_window() {
    let w = World::new("BULK").await;
    let s = &w.db.store;
    let now = due_plus(3, 10);
    let order = |no: &'static str, account: &str, age_days: i64| meterpay::store::payments::NewOrder {
        order_no: no,
        community_id: w.community.id,
        account_id: w.ids[account],
        channel: "alipay",
        merchant_id: "2021000000000001",
        method: "qr",
        purpose: "bills",
        amount_fen: 5000,
        subject: "bill",
        created_at: now - chrono::Duration::days(age_days),
        expires_at: now + chrono::Duration::minutes(30),
        created_by: "resident",
        bills: &[],
        next_query_at: now,
    };
    for o in [
        order("P20260318BULK00001", "A1", 10),
        order("P20260318BULK00002", "A1", 3),
        order("P20260318BULK00003", "A2", 5),
    ] {
        s.create_payment_order(&o).await.unwrap();
    }
    // A1 asks from four days back: its ten-day-old order is outside its own window, though
    // inside A2's (the bulk query reads from the earliest window and must filter per account).
    let asks = vec![
        (w.ids["A1"], now - chrono::Duration::days(4)),
        (w.ids["A2"], now - chrono::Duration::days(30)),
        (w.ids["A3"], now - chrono::Duration::days(30)),
    ];
    let config = Arc::new(config());
    let port = meterpay::dunning::planner::default_port(s, &config).unwrap().unwrap();
    let many = port.payment_activity_many(&asks).await.unwrap();
    let orders = |v: &[PaymentActivity]| v.iter().map(|a| a.order_no.clone()).collect::<Vec<_>>();
    assert_eq!(orders(&many[&w.ids["A1"]]), ["P20260318BULK00002"], "A1's own window");
    assert_eq!(orders(&many[&w.ids["A2"]]), ["P20260318BULK00003"]);
    // Asked alone with a wider window, A1 gets both of its orders, newest first.
    let a1_alone = port
        .payment_activity(w.ids["A1"], now - chrono::Duration::days(30))
        .await
        .unwrap();
    assert_eq!(orders(&a1_alone), ["P20260318BULK00002", "P20260318BULK00001"]);
    assert!(many.get(&w.ids["A3"]).is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn enqueueing_many_reminders_writes_each_key_once_with_one_send_task() {
    use meterpay::store::reminders::{Enqueued, NewReminder};
    let w = World::new("ENQ").await;
    let s = &w.db.store;
    let now = due_plus(3, 10);
    let msg = |account: &str, channel: &str| NewReminder {
        account_id: w.ids[account],
        community_id: w.community.id,
        household: format!("h-{account}"),
        track: "electricity".into(),
        step: "overdue_1".into(),
        channel: channel.into(),
        bill_ids: vec![7, 3],
        bill_steps: vec![(3, "overdue_1".into()), (7, "overdue_1".into())],
        provider: if channel == "letter" { "letter" } else { "aliyun" }.into(),
        profile: "ENQ".into(),
        recipient: "13800000101".into(),
        message_kind: "overdue".into(),
        content: serde_json::json!({ "text": "x" }),
        legally_required: channel == "letter",
        not_before: now,
        max_attempts: 5,
    };
    let batch = vec![
        msg("A1", "sms"),
        msg("A1", "sms"),
        msg("A2", "sms"),
        msg("A2", "letter"),
    ];
    let first = s.enqueue_reminders(&batch, now).await.unwrap();
    let Enqueued::New(a1) = first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(
        first[1],
        Enqueued::AlreadyThere(a1),
        "a repeat within the batch finds the first"
    );
    assert!(matches!(first[2], Enqueued::New(b) if b != a1));
    assert!(matches!(first[3], Enqueued::New(_)));
    // Again: nothing new, the same ids, in the order given.
    let again = s.enqueue_reminders(&batch, now).await.unwrap();
    let ids = |v: &[Enqueued]| {
        v.iter()
            .map(|e| match e {
                Enqueued::New(i) | Enqueued::AlreadyThere(i) => *i,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&first));
    assert!(again.iter().all(|e| matches!(e, Enqueued::AlreadyThere(_))));
    // One send task per queued message; the letter waits for staff and has none.
    let tasks = s.list_tasks(None, 100).await.unwrap();
    let mut sends: Vec<String> = tasks
        .iter()
        .filter(|t| t.kind == "reminder.send")
        .map(|t| t.payload.clone())
        .collect();
    sends.sort();
    let mut want = vec![
        serde_json::json!({ "outbox_id": ids(&first)[0] }).to_string(),
        serde_json::json!({ "outbox_id": ids(&first)[2] }).to_string(),
    ];
    want.sort();
    assert_eq!(sends, want);
    let letter = s.reminder(ids(&first)[3]).await.unwrap().unwrap();
    assert_eq!(letter.status, "awaiting_staff");
}

#[tokio::test]
async fn a_prepaid_account_below_its_own_threshold_is_warned_and_one_well_in_credit_is_not() {
    let db = TestDb::new().await;
    let csv = "code,name,building,unit,door_no,mobile,email,credit_rating,meters,payment_mode,low_balance\n\
A1,One,1,1,101,+8613800000101,a1@example.cn,B,E1:electricity:6,prepaid,50.00\n\
A2,Two,1,1,102,+8613800000102,a2@example.cn,B,E2:electricity:6,prepaid,50.00\n";
    let c = community(&db, "PPD", csv, FLAT).await;
    let s = &db.store;
    let mut rows = Vec::new();
    for m in ["E1", "E2"] {
        rows.push((m, "electricity", cst(2026, 1, 25, 8), "1000", "actual"));
        rows.push((m, "electricity", cst(2026, 2, 25, 8), "1100", "actual"));
    }
    readings(s, &rows).await;
    run(s, "PPD", "2026-02", Some(date(2026, 3, 15)), cst(2026, 3, 1, 9)).await;
    let (a1, a2) = (account_id(s, &c, "A1").await, account_id(s, &c, "A2").await);
    // Both bills are settled from a top-up; A1 is left with ¥30 (its threshold is ¥50), A2 with ¥500.
    let owed = |a: i64| async move { s.account_balance(a).await.unwrap().receivable_fen };
    let (o1, o2) = (owed(a1).await, owed(a2).await);
    s.top_up(
        a1,
        Fen::new(o1 + 3000),
        "RCPT-P1",
        None,
        "token:op",
        None,
        due_plus(-5, 9),
    )
    .await
    .unwrap();
    s.top_up(
        a2,
        Fen::new(o2 + 50000),
        "RCPT-P2",
        None,
        "token:op",
        None,
        due_plus(-5, 9),
    )
    .await
    .unwrap();
    let r = Planner::new(s.clone(), Arc::new(config()), None)
        .run(
            &PlanOptions {
                community: Some("PPD".into()),
                dry_run: true,
            },
            due_plus(3, 10),
        )
        .await
        .unwrap();
    let p1 = of(&r, "A1");
    assert_eq!(p1.outcome, "send", "{p1:?}");
    assert!(p1.step.as_deref().unwrap_or("").starts_with("low_balance"), "{p1:?}");
    assert!(
        r.communities[0]
            .plans
            .iter()
            .all(|p| p.account_code != "A2" || p.outcome != "send"),
        "A2 is well in credit: {r:?}"
    );
}
