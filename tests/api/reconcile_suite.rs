//! Reconciliation, black-box over a real database: files written by the sandbox in each
//! gateway's real format (with planted differences) against ledger entries posted with the
//! payments conventions; every class found exactly once; a re-run identical; malformed files
//! refused with nothing imported; decisions posted balanced; settled days' clearing empty; the
//! morning report exported and e-mailed to a real SMTP server on loopback.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use meterpay::config::ReconcileConfig;
use meterpay::domain::Fen;
use meterpay::ledger::{JournalEntry, LedgerAccount};
use meterpay::payments::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
use meterpay::reconcile::matching::Class;
use meterpay::reconcile::{cst, day_end, Decision, ReconcileError, Reconciler, RunRequest, Via};
use meterpay::store::Store;
use meterpay_gateways::gateway::{Channel, PayMethod, PaymentGateway};
use meterpay_gateways::sandbox::{FilePlant, Sandbox, SimMerchant, SimOrder, SimOrderState};

use crate::helpers::TestDb;

const ALIPAY: &str = "2021000000000001";
const WECHAT: &str = "1900000109";
const UNIONPAY: &str = "777290058110048";
const RATE: u32 = 6000;

fn merchant_of(channel: Channel) -> &'static str {
    match channel {
        Channel::Alipay => ALIPAY,
        Channel::Wechatpay => WECHAT,
        Channel::Unionpay => UNIONPAY,
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

fn at_cst(d: NaiveDate, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    cst()
        .from_local_datetime(&d.and_hms_opt(h, m, s).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// A small PaymentsPort for these tests: the merchants, and an order query that applies a
/// payment the test says the gateway has (posting it with the payments conventions).
struct TestPort {
    store: Store,
    paid_at_gateway: Mutex<HashMap<String, (Channel, String, i64, NaiveDate)>>,
    queried: Mutex<Vec<String>>,
}

#[async_trait]
impl PaymentsPort for TestPort {
    async fn merchants(&self) -> anyhow::Result<Vec<MerchantRef>> {
        Ok(Channel::ALL
            .into_iter()
            .map(|c| MerchantRef {
                channel: c,
                merchant_id: merchant_of(c).into(),
                community_id: 1,
                fee_rate_ppm: RATE,
            })
            .collect())
    }
    async fn gateway(&self, channel: Channel, merchant_id: &str) -> anyhow::Result<Arc<dyn PaymentGateway>> {
        anyhow::bail!("no gateway client for {channel} {merchant_id} in this test")
    }
    async fn query_and_apply(&self, order_no: &str, now: DateTime<Utc>) -> anyhow::Result<QueryOutcome> {
        self.queried.lock().unwrap().push(order_no.to_string());
        let hit = self.paid_at_gateway.lock().unwrap().get(order_no).cloned();
        let Some((channel, merchant, amount, date)) = hit else {
            return Ok(QueryOutcome::UnknownOrder);
        };
        if self.store.entry_lines("payment.apply", order_no).await?.is_empty() {
            post_payment(&self.store, channel, &merchant, order_no, amount, date, now).await;
            Ok(QueryOutcome::AppliedNow {
                amount: Fen::new(amount),
                gateway_txn_id: format!("T{order_no}"),
            })
        } else {
            Ok(QueryOutcome::AlreadyApplied)
        }
    }
    async fn payment_activity(&self, _account_id: i64, _since: DateTime<Utc>) -> anyhow::Result<Vec<PaymentActivity>> {
        Ok(Vec::new())
    }
}

fn clearing(channel: Channel, merchant: &str) -> LedgerAccount {
    meterpay::reconcile::clearing_account(channel, merchant)
}

/// A confirmed payment as payments posts it: kind payment.apply, reference = order number,
/// debit clearing, accounting date = payment day.
async fn post_payment(
    store: &Store,
    channel: Channel,
    merchant: &str,
    order: &str,
    amount: i64,
    date: NaiveDate,
    posted_at: DateTime<Utc>,
) {
    let e = JournalEntry::transfer(
        "payment.apply",
        order,
        date,
        "test",
        clearing(channel, merchant),
        LedgerAccount::Receivable { account_id: 1 },
        Fen::new(amount),
    )
    .unwrap();
    store.post_entry(&e, posted_at).await.unwrap();
}

async fn post_refund(store: &Store, channel: Channel, merchant: &str, refund: &str, amount: i64, date: NaiveDate) {
    let e = JournalEntry::transfer(
        "refund",
        refund,
        date,
        "test",
        LedgerAccount::Receivable { account_id: 1 },
        clearing(channel, merchant),
        Fen::new(amount),
    )
    .unwrap();
    store.post_entry(&e, at_cst(date, 12, 0, 0)).await.unwrap();
}

fn sandbox() -> Sandbox {
    let sb = meterpay::tools::sandbox_with_all_gateways(1);
    let key = meterpay_gateways::crypto::load_public_key(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/sandbox/core-test-public.pem"
        ))
        .unwrap()
        .as_slice(),
    )
    .unwrap();
    for c in Channel::ALL {
        sb.register_merchant(SimMerchant {
            channel: c,
            merchant_id: merchant_of(c).into(),
            merchant_public_key: key.clone(),
            fee_rate_ppm: RATE,
            extra: HashMap::new(),
        });
    }
    sb.update_faults(|f| f.drop_notifications = true);
    sb
}

/// Set the sandbox clock to `t`.
fn clock_to(sb: &Sandbox, t: DateTime<Utc>) {
    sb.advance_clock(t - sb.now());
}

fn order(channel: Channel, no: &str, amount: i64, created: DateTime<Utc>) -> SimOrder {
    SimOrder {
        channel,
        merchant_id: merchant_of(channel).into(),
        order_no: no.into(),
        amount_fen: amount,
        subject: "水电费 3-2-1201".into(),
        notify_url: "http://127.0.0.1:9/notify".into(),
        return_url: None,
        method: PayMethod::Qr,
        created_at: created,
        expires_at: None,
        state: SimOrderState::Created,
        gateway_txn_id: None,
        paid_at: None,
        refunds: Vec::new(),
        extra: HashMap::new(),
    }
}

fn pay(sb: &Sandbox, channel: Channel, no: &str, amount: i64) {
    let now = sb.now();
    sb.create_order(order(channel, no, amount, now)).unwrap();
    sb.pay(channel, merchant_of(channel), no).unwrap();
}

fn config() -> ReconcileConfig {
    let mut c = ReconcileConfig::default();
    c.alipay_accounts.insert(
        ALIPAY.into(),
        format!("{}0156", meterpay_gateways::sandbox::alipay::pid_for(ALIPAY)),
    );
    c
}

struct World {
    db: TestDb,
    sb: Sandbox,
    port: Arc<TestPort>,
    rec: Reconciler,
}

async fn world() -> World {
    let db = TestDb::new().await;
    let port = Arc::new(TestPort {
        store: db.store.clone(),
        paid_at_gateway: Mutex::new(HashMap::new()),
        queried: Mutex::new(Vec::new()),
    });
    let rec = Reconciler::new(db.store.clone(), port.clone(), config());
    World {
        db,
        sb: sandbox(),
        port,
        rec,
    }
}

fn request(channel: Channel, date: NaiveDate, bytes: Vec<u8>) -> RunRequest {
    RunRequest {
        channel,
        merchant_id: merchant_of(channel).into(),
        bill_date: date,
        file: Some((bytes, "file:test".into())),
        via: Via::Cli,
        started_by: "test".into(),
    }
}

/// The day of `channel`: one example of every class (see the comments), its file from the
/// sandbox and its ledger entries. Returns the file.
async fn build_every_class_day(w: &World, channel: Channel) -> Vec<u8> {
    let m = merchant_of(channel);
    let d = day();
    let store = &w.db.store;
    let noon = at_cst(d, 12, 0, 0);
    clock_to(&w.sb, noon);
    // matched
    pay(&w.sb, channel, "ORDERMATCH1", 10_000);
    post_payment(store, channel, m, "ORDERMATCH1", 10_000, d, noon).await;
    // long, resolved automatically: the notification was lost, the gateway's query confirms it
    pay(&w.sb, channel, "ORDERLOST02", 5_000);
    w.port
        .paid_at_gateway
        .lock()
        .unwrap()
        .insert("ORDERLOST02".into(), (channel, m.into(), 5_000, d));
    // long, open: a payment we have no order for
    // short: in our ledger, not on the gateway
    post_payment(store, channel, m, "ORDERSHORT3", 3_000, d, noon).await;
    // amount mismatch: the gateway states 70.00, our ledger 80.00
    pay(&w.sb, channel, "ORDERAMOUNT4", 8_000);
    post_payment(store, channel, m, "ORDERAMOUNT4", 8_000, d, noon).await;
    // status mismatch: refunded at the gateway, not refunded in our ledger
    pay(&w.sb, channel, "ORDERREFUND5", 6_000);
    post_payment(store, channel, m, "ORDERREFUND5", 6_000, d, noon).await;
    w.sb.refund(channel, m, "ORDERREFUND5", "REFUND00005", 1_000, "test", None, true)
        .unwrap();
    // a refund in both: matched
    pay(&w.sb, channel, "ORDERREFUND9", 4_000);
    post_payment(store, channel, m, "ORDERREFUND9", 4_000, d, noon).await;
    w.sb.refund(channel, m, "ORDERREFUND9", "REFUND00009", 2_000, "test", None, true)
        .unwrap();
    post_refund(store, channel, m, "REFUND00009", 2_000, d).await;
    // duplicate: listed twice
    pay(&w.sb, channel, "ORDERDUP0006", 2_000);
    post_payment(store, channel, m, "ORDERDUP0006", 2_000, d, noon).await;
    // fee mismatch: 0.99 charged where the contract gives 0.60
    pay(&w.sb, channel, "ORDERFEE0007", 10_000);
    post_payment(store, channel, m, "ORDERFEE0007", 10_000, d, noon).await;
    // expected: recorded two seconds before the day's cut-off, not in this file
    let cutoff = day_end(channel, d);
    post_payment(
        store,
        channel,
        m,
        "ORDERLATE08",
        1_500,
        d,
        cutoff - Duration::seconds(2),
    )
    .await;
    w.sb.update_faults(|f| {
        f.file_plants = vec![
            FilePlant::ExtraPayment {
                order_no: "GHOSTPAY0001".into(),
                amount_fen: 1_234,
            },
            FilePlant::ChangeAmount {
                order_no: "ORDERAMOUNT4".into(),
                amount_fen: 7_000,
            },
            FilePlant::DuplicateOrder {
                order_no: "ORDERDUP0006".into(),
            },
            FilePlant::ChangeFee {
                order_no: "ORDERFEE0007".into(),
                fee_fen: 99,
            },
        ]
    });
    let file = w.sb.settlement_file(channel, m, d).unwrap();
    w.sb.update_faults(|f| f.file_plants.clear());
    file
}

async fn every_class_once_and_a_rerun_is_identical(channel: Channel) {
    let w = world().await;
    let file = build_every_class_day(&w, channel).await;
    let now = at_cst(day() + Duration::days(1), 10, 30, 0);

    let first = w.rec.run(request(channel, day(), file.clone()), now).await.unwrap();

    let classes: BTreeMap<String, Vec<String>> = first.items.iter().fold(BTreeMap::new(), |mut m, i| {
        m.entry(i.class.as_str().to_string())
            .or_default()
            .push(i.reference().to_string());
        m
    });
    let expected: BTreeMap<String, Vec<String>> = [
        ("amount", vec!["ORDERAMOUNT4"]),
        ("duplicate", vec!["ORDERDUP0006"]),
        ("expected", vec!["ORDERLATE08"]),
        ("fee", vec!["ORDERFEE0007"]),
        ("long", vec!["GHOSTPAY0001", "ORDERLOST02"]),
        ("short", vec!["ORDERSHORT3"]),
        ("status", vec!["REFUND00005"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(classes, expected, "{channel}: {:#?}", first.items);
    let s = &first.summary;
    // ORDERMATCH1, ORDERREFUND5, ORDERREFUND9, its refund, ORDERDUP0006 (first), ORDERFEE0007
    assert_eq!(s.matched.count, 6, "{channel}: {s:?}");
    assert_eq!(s.matched.amount_fen, 10_000 + 6_000 + 4_000 - 2_000 + 2_000 + 10_000);
    assert_eq!(s.outcome, "exceptions");
    assert_eq!(
        s.file.payments.count, 9,
        "{channel}: seven paid orders, one listed twice, and the ghost"
    );
    assert_eq!(
        s.gross_fen,
        10_000 + 5_000 + 7_000 + 6_000 + 4_000 + 2_000 * 2 + 10_000 + 1_234
    );
    assert_eq!(s.refunds_fen, 3_000);
    assert_eq!(s.net_fen, s.gross_fen - s.refunds_fen - s.fees_fen);

    // What could be proven was resolved: ORDERLOST02 was queried and applied as a callback would.
    let lost = w.db.store.entry_lines("payment.apply", "ORDERLOST02").await.unwrap();
    assert_eq!(lost.len(), 2, "the backfilled payment is in the ledger");
    let items = w.db.store.recon_run_items(first.run_id).await.unwrap();
    let by_key: HashMap<&str, &meterpay::store::reconcile::ItemRow> =
        items.iter().map(|i| (i.item_key.as_str(), i)).collect();
    // Each stored item about a file row names the row's line and holds the row as the gateway
    // wrote it (an Alipay detail is read without its rows' text and the reported ones are read
    // back by line): the same text the full parse keeps for that line.
    let full = match channel {
        Channel::Alipay => meterpay_gateways::alipay::settlement::parse(&file),
        Channel::Wechatpay => meterpay_gateways::wechatpay::settlement::parse(&file),
        Channel::Unionpay => meterpay_gateways::unionpay::settlement::parse(&file),
    }
    .unwrap();
    let row_text: HashMap<u32, &str> = full.rows.iter().map(|r| (r.line, r.original_line.as_str())).collect();
    let mut from_rows = 0;
    for it in &items {
        if it.file_amount_fen.is_some() {
            let line = it
                .file_line
                .unwrap_or_else(|| panic!("{channel}: {} names no line", it.item_key));
            let want = row_text[&(line as u32)];
            assert!(!want.is_empty());
            assert_eq!(it.original_line.as_deref(), Some(want), "{channel}: {}", it.item_key);
            from_rows += 1;
        } else {
            assert_eq!(it.file_line, None, "{channel}: {}", it.item_key);
        }
    }
    assert!(from_rows >= 5, "{channel}: {from_rows} items about file rows");
    assert_eq!(
        by_key["long:payment:ORDERLOST02"].decision.as_deref(),
        Some("auto_backfill")
    );
    assert_eq!(by_key["long:payment:GHOSTPAY0001"].decision, None);
    assert_eq!(
        meterpay::reconcile::item_state(by_key["expected:payment:ORDERLATE08"], now),
        meterpay::reconcile::ItemState::Expected
    );
    assert_eq!(
        meterpay::reconcile::item_state(by_key["expected:payment:ORDERLATE08"], now + Duration::days(3)),
        meterpay::reconcile::ItemState::Escalated,
        "past the grace period an expected entry counts as short"
    );

    // The same day again: identical results, and history kept.
    let second = w.rec.run(request(channel, day(), file), now).await.unwrap();
    assert_eq!(second.items, first.items, "{channel}");
    assert_eq!(second.summary, first.summary, "{channel}");
    assert_ne!(second.run_id, first.run_id);
    let runs =
        w.db.store
            .recon_runs(Some(channel), None, Some(day()), false)
            .await
            .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs.iter().filter(|r| r.is_current).count(), 1);
    assert_eq!(runs[0].id, second.run_id, "the newest run is the current one");
    assert_eq!(runs[0].results_sha256, runs[1].results_sha256);
    assert_eq!(runs[0].file_id, runs[1].file_id, "the same bytes are kept once");
    let kept = w.db.store.recon_file_bytes(runs[0].file_id).await.unwrap().unwrap();
    assert_eq!(
        meterpay_gateways::crypto::sha256_hex(&kept),
        runs[0].file_sha256,
        "the file's bytes are kept as received"
    );
}

#[tokio::test]
async fn alipay_every_class_is_found_once_and_a_rerun_is_identical() {
    every_class_once_and_a_rerun_is_identical(Channel::Alipay).await;
}

#[tokio::test]
async fn wechatpay_every_class_is_found_once_and_a_rerun_is_identical() {
    every_class_once_and_a_rerun_is_identical(Channel::Wechatpay).await;
}

#[tokio::test]
async fn unionpay_every_class_is_found_once_and_a_rerun_is_identical() {
    every_class_once_and_a_rerun_is_identical(Channel::Unionpay).await;
}

async fn trial_balance_sum(store: &Store) -> i64 {
    store.trial_balance().await.unwrap().iter().map(|r| r.balance_fen).sum()
}

#[tokio::test]
async fn a_payment_filed_after_midnight_is_expected_then_matched_and_the_days_settle_to_zero() {
    let w = world().await;
    let (c, m) = (Channel::Alipay, ALIPAY);
    let d = day();
    let store = &w.db.store;
    // Day D: one ordinary payment, and one we recorded at 23:59:58 that the gateway dates 00:00:01.
    clock_to(&w.sb, at_cst(d, 12, 0, 0));
    pay(&w.sb, c, "ORDERNOON01", 10_000);
    post_payment(store, c, m, "ORDERNOON01", 10_000, d, at_cst(d, 12, 0, 0)).await;
    post_payment(store, c, m, "ORDERLATE02", 2_500, d, at_cst(d, 23, 59, 58)).await;
    clock_to(&w.sb, at_cst(d + Duration::days(1), 0, 0, 1));
    pay(&w.sb, c, "ORDERLATE02", 2_500);
    let file_d = w.sb.settlement_file(c, m, d).unwrap();
    let file_d1 = w.sb.settlement_file(c, m, d + Duration::days(1)).unwrap();
    let now = at_cst(d + Duration::days(1), 10, 30, 0);

    let run_d = w.rec.run(request(c, d, file_d.clone()), now).await.unwrap();
    assert_eq!(run_d.items.len(), 1, "{:?}", run_d.items);
    assert_eq!(run_d.items[0].class, Class::Expected);
    assert_eq!(run_d.summary.outcome, "balanced_with_pending");
    assert!(!run_d.settled, "a day with an expected entry is not settled yet");

    let now1 = now + Duration::days(1);
    let run_d1 = w
        .rec
        .run(request(c, d + Duration::days(1), file_d1), now1)
        .await
        .unwrap();
    assert_eq!(run_d1.items.len(), 1);
    assert_eq!(run_d1.items[0].class, Class::CrossDay);
    assert_eq!(run_d1.summary.matched.count, 1);
    assert!(run_d1.settled, "nothing open on D+1: settled");
    // The expected entry of D is closed by D+1's run; D can be settled now.
    assert!(store.recon_open_items(None).await.unwrap().is_empty());
    let s = w.rec.settle_day(c, m, d, now1).await.unwrap();
    assert!(s.posted);
    assert_eq!(s.clearing_fen, 12_500);
    assert_eq!(s.fees_fen, 60, "the D file's fees");
    for date in [d, d + Duration::days(1)] {
        assert_eq!(
            store.recon_clearing_balance_on(c, m, date).await.unwrap().get(),
            0,
            "{date}"
        );
    }
    assert_eq!(trial_balance_sum(store).await, 0);
    assert_eq!(
        store.balance(&LedgerAccount::GatewayFees).await.unwrap().get(),
        60 + 15,
        "both days' fees"
    );
    // Settling again posts nothing more; re-running D gives the same items as before.
    assert!(!w.rec.settle_day(c, m, d, now1).await.unwrap().posted);
    let again = w.rec.run(request(c, d, file_d), now1).await.unwrap();
    assert_eq!(again.items, run_d.items);
}

#[tokio::test]
async fn finance_decisions_post_balanced_entries_and_the_settled_day_clears() {
    let w = world().await;
    let c = Channel::Wechatpay;
    let m = merchant_of(c);
    let file = build_every_class_day(&w, c).await;
    let now = at_cst(day() + Duration::days(1), 10, 30, 0);
    let run = w.rec.run(request(c, day(), file), now).await.unwrap();
    assert!(!run.settled);
    let store = &w.db.store;
    let later = now + Duration::days(3); // past the grace period: the expected entry is short now
    let open = store.recon_open_items(None).await.unwrap();
    assert_eq!(open.len(), 7, "{open:#?}");
    let entries_before = store.entry_count().await.unwrap();
    // A reason is required; a decision that does not fit the item is refused.
    let short = open.iter().find(|i| i.item_key == "short:payment:ORDERSHORT3").unwrap();
    let err = w
        .rec
        .resolve(short.id, Decision::WriteOff, "  ", "fin", later)
        .await
        .unwrap_err();
    assert!(matches!(err, ReconcileError::Invalid(_)), "{err}");
    let err = w
        .rec
        .resolve(short.id, Decision::PostPayment, "x", "fin", later)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no payment to post"), "{err}");
    assert_eq!(
        store.entry_count().await.unwrap(),
        entries_before,
        "a refused decision posts nothing"
    );
    // An expected entry cannot be decided within its grace period.
    let late = open.iter().find(|i| i.class == "expected").unwrap();
    let err = w
        .rec
        .resolve(late.id, Decision::WriteOff, "x", "fin", now)
        .await
        .unwrap_err();
    assert!(matches!(err, ReconcileError::Conflict(_)), "{err}");

    let decide: HashMap<&str, Decision> = [
        ("long:payment:GHOSTPAY0001", Decision::Refund),
        ("short:payment:ORDERSHORT3", Decision::WriteOff),
        ("expected:payment:ORDERLATE08", Decision::CarryOver),
        ("amount:payment:ORDERAMOUNT4", Decision::WriteOff),
        ("status:refund:REFUND00005", Decision::Refund),
        ("duplicate:payment:ORDERDUP0006:2", Decision::PostPayment),
        ("fee:payment:ORDERFEE0007", Decision::WriteOff),
    ]
    .into_iter()
    .collect();
    let mut last = None;
    for item in &open {
        let decision = decide[item.item_key.as_str()];
        let r = w
            .rec
            .resolve(
                item.id,
                decision,
                "checked with the gateway's statement",
                "fin.li",
                later,
            )
            .await
            .unwrap();
        let lines = store.entry_lines("recon.resolve", &r.journal_reference).await.unwrap();
        assert_eq!(lines.len(), 2, "{}", item.item_key);
        assert_eq!(lines.iter().map(|l| l.amount_fen).sum::<i64>(), 0, "balanced");
        last = Some(r);
    }
    // A second decision on the same item is refused.
    let err = w
        .rec
        .resolve(open[0].id, Decision::WriteOff, "again", "fin", later)
        .await
        .unwrap_err();
    assert!(matches!(err, ReconcileError::Conflict(_)), "{err}");
    assert!(last.unwrap().settled, "the last decision settles the day");
    assert!(store.recon_open_items(None).await.unwrap().is_empty());
    assert_eq!(store.recon_clearing_balance_on(c, m, day()).await.unwrap().get(), 0);
    assert_eq!(trial_balance_sum(store).await, 0);
    let resolutions = store.recon_resolutions(c, m, day()).await.unwrap();
    assert!(resolutions
        .iter()
        .filter(|r| r.decided_by == "fin.li")
        .all(|r| r.reason == "checked with the gateway's statement"));
    // Decisions are never edited.
    let err = store
        .execute_raw_sql_for_tests("UPDATE recon_resolutions SET reason = 'edited'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("recon_append_only"), "{err}");
    // Re-running after the decisions keeps them: nothing reopens.
    let again = w
        .rec
        .run(request(c, day(), w.sb_file_again(c).await), later)
        .await
        .unwrap();
    assert_eq!(
        again.items.len(),
        8,
        "the same seven items and the backfilled one, all decided"
    );
    assert!(store.recon_open_items(None).await.unwrap().is_empty());
}

impl World {
    /// The day's file again, with the same plants.
    async fn sb_file_again(&self, channel: Channel) -> Vec<u8> {
        self.sb.update_faults(|f| {
            f.file_plants = vec![
                FilePlant::ExtraPayment {
                    order_no: "GHOSTPAY0001".into(),
                    amount_fen: 1_234,
                },
                FilePlant::ChangeAmount {
                    order_no: "ORDERAMOUNT4".into(),
                    amount_fen: 7_000,
                },
                FilePlant::DuplicateOrder {
                    order_no: "ORDERDUP0006".into(),
                },
                FilePlant::ChangeFee {
                    order_no: "ORDERFEE0007".into(),
                    fee_fen: 99,
                },
            ]
        });
        let f = self.sb.settlement_file(channel, merchant_of(channel), day()).unwrap();
        self.sb.update_faults(|f| f.file_plants.clear());
        f
    }
}

/// A good file of the day for `channel` (two payments and a refund).
async fn good_file(w: &World, channel: Channel) -> Vec<u8> {
    clock_to(&w.sb, at_cst(day(), 12, 0, 0));
    pay(&w.sb, channel, "ORDERGOOD01", 10_000);
    pay(&w.sb, channel, "ORDERGOOD02", 20_000);
    w.sb.refund(
        channel,
        merchant_of(channel),
        "ORDERGOOD02",
        "REFUNDGOOD2",
        500,
        "t",
        None,
        true,
    )
    .unwrap();
    w.sb.settlement_file(channel, merchant_of(channel), day()).unwrap()
}

async fn refused(w: &World, channel: Channel, date: NaiveDate, bytes: Vec<u8>, merchant: &str) -> ReconcileError {
    let mut req = request(channel, date, bytes);
    req.merchant_id = merchant.into();
    let err = w.rec.run(req, Utc::now()).await.unwrap_err();
    assert!(
        w.db.store.recon_runs(None, None, None, false).await.unwrap().is_empty(),
        "nothing imported after: {err}"
    );
    // Rows a no-op UPDATE touches: the files kept.
    let files =
        w.db.store
            .execute_raw_sql_for_tests("UPDATE recon_files SET source = source")
            .await
            .unwrap();
    assert_eq!(files, 0, "no file kept after: {err}");
    err
}

#[tokio::test]
async fn malformed_alipay_files_are_refused_and_nothing_is_imported() {
    let w = world().await;
    let good = good_file(&w, Channel::Alipay).await;
    let c = Channel::Alipay;
    // Truncated download.
    let err = refused(&w, c, day(), good[..good.len() / 2].to_vec(), ALIPAY).await;
    assert!(matches!(err, ReconcileError::BadFile { .. }), "{err}");
    // A bare detail CSV that is neither UTF-8 nor GBK.
    let account = format!("{}0156", meterpay_gateways::sandbox::alipay::pid_for(ALIPAY));
    let mut bad_enc = format!(
        "#支付宝业务明细查询\r\n#账号：[{account}]\r\n#起始日期：[2026年11月20日 00:00:00]   终止日期：[2026年11月21日 00:00:00]\r\n"
    )
    .into_bytes();
    bad_enc.extend_from_slice(b"\xff\xff\xff\r\n");
    let err = refused(&w, c, day(), bad_enc, ALIPAY).await;
    assert!(err.to_string().contains("GBK"), "{err}");
    // Totals that disagree: the footer claims one more trade than the rows hold.
    let rows = vec![meterpay_gateways::alipay::settlement::BillRow {
        trade_no: "2026112022001400000000000001".into(),
        out_trade_no: "ORDERGOOD01".into(),
        kind: meterpay_gateways::settlement::RowKind::Payment,
        subject: "水费".into(),
        created: day().and_hms_opt(12, 0, 0).unwrap(),
        finished: day().and_hms_opt(12, 0, 5).unwrap(),
        store_id: String::new(),
        store_name: String::new(),
        operator: String::new(),
        terminal: String::new(),
        buyer: "*李(138****0000)".into(),
        order_amount_fen: 10_000,
        received_fen: 10_000,
        merchant_discount_fen: 0,
        refund_no: None,
        fee_fen: 60,
        remark: String::new(),
    }];
    let detail = meterpay_gateways::alipay::settlement::write_detail(
        &account,
        day(),
        &rows,
        day().and_hms_opt(23, 0, 0).unwrap(),
    )
    .replace("#交易合计：1笔", "#交易合计：2笔");
    let err = refused(&w, c, day(), encoding_rs::GBK.encode(&detail).0.into_owned(), ALIPAY).await;
    assert!(
        err.to_string().contains("summary") || err.to_string().contains("disagree"),
        "{err}"
    );
    // Another merchant's bill.
    let other = meterpay_gateways::alipay::settlement::write_zip(
        "20889999999999990156",
        day(),
        &rows,
        day().and_hms_opt(23, 0, 0).unwrap(),
    );
    let err = refused(&w, c, day(), other, ALIPAY).await;
    assert!(matches!(err, ReconcileError::WrongMerchant { .. }), "{err}");
    // Another day's bill.
    let err = refused(&w, c, day() + Duration::days(1), good, ALIPAY).await;
    assert!(matches!(err, ReconcileError::WrongDay { .. }), "{err}");
}

#[tokio::test]
async fn malformed_wechatpay_files_are_refused_and_nothing_is_imported() {
    let w = world().await;
    let c = Channel::Wechatpay;
    let good = good_file(&w, c).await;
    let text = String::from_utf8(good.clone()).unwrap();
    // Wrong encoding (a byte that is not UTF-8 in the middle).
    let mut bad = good.clone();
    let mid = text.find("ORDERGOOD01").unwrap();
    bad[mid] = 0xff;
    let err = refused(&w, c, day(), bad, WECHAT).await;
    assert!(err.to_string().contains("UTF-8"), "{err}");
    // Truncated: the summary line is cut off.
    let err = refused(&w, c, day(), good[..good.len() - 30].to_vec(), WECHAT).await;
    assert!(
        err.to_string().to_lowercase().contains("truncated") || err.to_string().contains("summary"),
        "{err}"
    );
    // Totals that disagree: the summary counts one more transaction.
    let last = text.trim_end().rsplit("\r\n").next().unwrap().to_string();
    let count: String = last.trim_start_matches('`').split(',').next().unwrap().to_string();
    let n: i64 = count.parse().unwrap();
    let forged = text.replace(&last, &last.replacen(&format!("`{count},"), &format!("`{},", n + 1), 1));
    let err = refused(&w, c, day(), forged.into_bytes(), WECHAT).await;
    assert!(
        err.to_string().contains("summary") || err.to_string().contains("总交易单数"),
        "{err}"
    );
    // Another merchant's bill, and another day's.
    let err = refused(&w, c, day(), good.clone(), "1900000999").await;
    assert!(
        matches!(
            err,
            ReconcileError::UnknownMerchant { .. } | ReconcileError::WrongMerchant { .. }
        ),
        "{err}"
    );
    let forged = text.replace(&format!("`{WECHAT},"), "`1900000999,");
    let err = refused(&w, c, day(), forged.into_bytes(), WECHAT).await;
    assert!(matches!(err, ReconcileError::WrongMerchant { .. }), "{err}");
    let err = refused(&w, c, day() - Duration::days(1), good, WECHAT).await;
    assert!(matches!(err, ReconcileError::WrongDay { .. }), "{err}");
}

#[tokio::test]
async fn malformed_unionpay_files_are_refused_and_nothing_is_imported() {
    let w = world().await;
    let c = Channel::Unionpay;
    let good = good_file(&w, c).await;
    // Not the file transfer's encoding (base64 of a zlib-deflated zip).
    let err = refused(&w, c, day(), "这不是银联的文件".as_bytes().to_vec(), UNIONPAY).await;
    assert!(matches!(err, ReconcileError::BadFile { .. }), "{err}");
    // Truncated.
    let err = refused(&w, c, day(), good[..good.len() / 2].to_vec(), UNIONPAY).await;
    assert!(matches!(err, ReconcileError::BadFile { .. }), "{err}");
    // UnionPay files carry no summary: a line whose fields do not add up to the layout is refused.
    let bad_line = meterpay_gateways::sandbox::unionpay::file_content(day(), UNIONPAY, "S22 too short\r\n", "");
    let err = refused(&w, c, day(), bad_line, UNIONPAY).await;
    assert!(matches!(err, ReconcileError::BadFile { .. }), "{err}");
    // Another merchant's file, another day's.
    let other = meterpay_gateways::sandbox::unionpay::file_content(day(), "777290058110999", "", "");
    let err = refused(&w, c, day(), other, UNIONPAY).await;
    assert!(matches!(err, ReconcileError::WrongMerchant { .. }), "{err}");
    let err = refused(&w, c, day() + Duration::days(1), good, UNIONPAY).await;
    assert!(matches!(err, ReconcileError::WrongDay { .. }), "{err}");
}

#[tokio::test]
async fn the_morning_report_exports_neutralised_csv_and_xlsx_and_is_emailed_over_smtp() {
    use calamine::Reader as _;
    let w = world().await;
    let c = Channel::Alipay;
    let file = build_every_class_day(&w, c).await;
    // A crafted order number from a hostile file must not become a formula.
    w.sb.update_faults(|f| {
        f.file_plants = vec![FilePlant::ExtraPayment {
            order_no: "=HYPERLINK(x)".into(),
            amount_fen: 1,
        }]
    });
    let _ = file;
    let file = w.sb.settlement_file(c, ALIPAY, day()).unwrap();
    let now = at_cst(day() + Duration::days(1), 10, 30, 0);
    w.rec.run(request(c, day(), file), now).await.unwrap();
    let report = meterpay::reconcile::report::morning_report(&w.db.store, day(), now)
        .await
        .unwrap();
    assert_eq!(report.status, "EXCEPTIONS");
    assert_eq!(report.merchants.len(), 1);
    let open: HashSet<&str> = report.open_items.iter().map(|o| o.class.as_str()).collect();
    assert!(open.contains("long") && open.contains("expected"), "{open:?}");
    let json = meterpay::reconcile::report::to_json(&report);
    assert_eq!(json["merchants"][0]["gross_fen"], report.merchants[0].gross_fen);
    let csv = String::from_utf8(meterpay::reconcile::report::to_csv(&report).unwrap()).unwrap();
    assert!(csv.contains("'=HYPERLINK(x)"), "{csv}");
    assert!(!csv.contains(",=HYPERLINK"), "{csv}");
    let xlsx = meterpay::reconcile::report::to_xlsx(&report).unwrap();
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(xlsx.clone())).unwrap();
    let sheet = wb.worksheet_range("Open items").unwrap();
    let cells: Vec<String> = sheet.rows().flat_map(|r| r.iter().map(|c| c.to_string())).collect();
    assert!(cells.iter().any(|c| c == "'=HYPERLINK(x)"), "{cells:?}");
    let summary = wb.worksheet_range("Summary").unwrap();
    assert!(summary.rows().any(|r| r.iter().any(|c| *c == "gross")));

    // E-mailed to a real SMTP server on loopback, read back.
    let (port, inbox) = smtp_server();
    let sender = meterpay::dunning::email::EmailSender::new(&meterpay::dunning::email::SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: meterpay::dunning::email::SmtpSecurity::None,
        username: None,
        password: None,
        from: "meterpay <recon@pay.example.cn>".into(),
        timeout: std::time::Duration::from_secs(10),
        tls_root_cert: None,
    })
    .unwrap();
    meterpay::reconcile::report::send_report(&sender, &["finance@example.cn".to_string()], &report)
        .await
        .unwrap();
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, vec!["finance@example.cn".to_string()]);
    let msg = mail_parser::MessageParser::default().parse(&got[0].data).unwrap();
    assert!(msg.subject().unwrap().contains("对账日报 2026-11-20"));
    let names: Vec<String> = msg
        .attachments()
        .filter_map(|a| mail_parser::MimeHeaders::attachment_name(a).map(String::from))
        .collect();
    assert_eq!(
        names,
        vec![
            "reconciliation_20261120.csv",
            "reconciliation_20261120.xlsx",
            "reconciliation_20261120.json"
        ]
    );
    let x = msg.attachments().nth(1).unwrap().contents().to_vec();
    assert_eq!(x, xlsx, "the spreadsheet arrives byte for byte");
    assert!(msg.body_text(0).unwrap().contains("ORDERSHORT3"));
}

/// One message as the server received it: recipients and DATA.
#[derive(Debug, Clone)]
struct Received {
    to: Vec<String>,
    data: Vec<u8>,
}

#[derive(Clone)]
struct Collector {
    inbox: Arc<Mutex<Vec<Received>>>,
    current: Option<Received>,
}

impl mailin_embedded::Handler for Collector {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> mailin_embedded::Response {
        self.current = Some(Received {
            to: to.to_vec(),
            data: Vec::new(),
        });
        mailin_embedded::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(c) = self.current.as_mut() {
            c.data.extend_from_slice(buf);
        }
        Ok(())
    }
    fn data_end(&mut self) -> mailin_embedded::Response {
        if let Some(c) = self.current.take() {
            self.inbox.lock().unwrap().push(c);
        }
        mailin_embedded::response::OK
    }
}

/// A real SMTP server (plain SMTP) on 127.0.0.1:0.
fn smtp_server() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = mailin_embedded::Server::new(Collector {
        inbox: inbox.clone(),
        current: None,
    });
    server
        .with_name("localhost")
        .with_num_threads(1)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (port, inbox)
}

/// The day's clearing entries come back whole on both backends: on SQLite they are read in
/// blocks of joined text, and a day holding a reference that text cannot carry (a line break) is read
/// again row by row, that reference exact.
#[tokio::test]
async fn the_days_clearing_entries_are_read_whole_even_when_a_reference_holds_a_line_break() {
    let db = TestDb::new().await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let clearing = meterpay::reconcile::clearing_account(Channel::Alipay, "2021000000000001");
    let refs = ["W1", "W2", "W3\nX"];
    let entries: Vec<_> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                "payment.apply".to_string(),
                r.to_string(),
                day,
                clearing.clone(),
                LedgerAccount::Receivable { account_id: 1 },
                100 + i as i64,
            )
        })
        .collect();
    let now = Utc::now();
    db.store.recon_bulk_post_for_bench(&entries[..2], now).await.unwrap();
    let mut got: Vec<(String, i64)> = db
        .store
        .recon_clearing_day(Channel::Alipay, "2021000000000001", day)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.reference, e.amount_fen))
        .collect();
    got.sort();
    assert_eq!(got, vec![("W1".to_string(), 100), ("W2".to_string(), 101)]);
    db.store.recon_bulk_post_for_bench(&entries[2..], now).await.unwrap();
    let mut got: Vec<(String, i64)> = db
        .store
        .recon_clearing_day(Channel::Alipay, "2021000000000001", day)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.reference, e.amount_fen))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("W1".to_string(), 100),
            ("W2".to_string(), 101),
            ("W3\nX".to_string(), 102)
        ]
    );
}
