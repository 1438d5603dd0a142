//! Group commit of the callback writes (`src/store/group_commit.rs`), on the store directly:
//! writes handed over together share one transaction, each in its own savepoint; a write that
//! fails is answered with its own error and leaves nothing, the others commit; a batch whose
//! commit fails answers every write with the error and writes none of them; two copies of one
//! callback in one batch apply once.
//!
//! The writes of a test are started together with `join_all` on the test's current-thread
//! runtime: each hands its write to the committer before the committer task runs at all, so they
//! reach it as one batch (the stats say so, and the tests check them).

use chrono::{Duration, Utc};
use futures::future::join_all;
use meterpay::domain::ids::Channel;
use meterpay::domain::Fen;
use meterpay::ledger::{JournalEntry, LedgerAccount};
use meterpay::store::payments::{ApplyPayment, EventRecord, NewOrder, PaymentApplied};
use meterpay::store::{BackendKind, Store, StoreError, StoreOptions};

use crate::billing_helpers::{account_id, community};
use crate::helpers::TestDb;
use crate::payments_suite::{issue_bill, journal_balances};

const ALI: &str = "2021000000000001";
const HEADERS: &str = r#"[["content-type","application/x-www-form-urlencoded"]]"#;

/// The test's store with a single committer, so that every write of a test meets in one batch
/// (SQLite always has one; PostgreSQL gets a second pool to the test's schema, with one lane).
async fn one_lane(db: &TestDb) -> Store {
    match db.kind() {
        BackendKind::Sqlite => db.store.clone(),
        BackendKind::Postgres => Store::connect(
            &db.url,
            &StoreOptions {
                max_connections: 3,
                pg_schema: db.schema.clone(),
                group_commit_lanes: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    }
}

/// `n` accounts, each with one open bill of 10.00 and an Alipay order for it. Order numbers.
async fn orders(db: &TestDb, n: usize) -> Vec<String> {
    let mut csv = String::from("code,name,building,unit,door_no,meters\n");
    for i in 0..n {
        csv.push_str(&format!("G{i},R{i},1,1,{},GM{i}:electricity:6\n", 100 + i));
    }
    let c = community(db, "GC", &csv, "").await;
    let now = Utc::now();
    let mut out = Vec::new();
    for i in 0..n {
        let account = account_id(&db.store, &c, &format!("G{i}")).await;
        let bill = issue_bill(&db.store, account, "2030-01", 1000).await;
        let no = format!("GC{i:06}");
        db.store
            .create_payment_order(&NewOrder {
                order_no: &no,
                community_id: c.id,
                account_id: account,
                channel: "alipay",
                merchant_id: ALI,
                method: "qr",
                purpose: "bills",
                amount_fen: 1000,
                subject: "group commit",
                created_at: now,
                expires_at: now + Duration::hours(2),
                created_by: "test",
                bills: &[(bill, 1000)],
                next_query_at: now + Duration::hours(1),
            })
            .await
            .unwrap();
        out.push(no);
    }
    out
}

/// Apply a genuine payment of order `no` as notification `event_id` says.
async fn pay(store: &Store, no: &str, event_id: &str) -> Result<PaymentApplied, StoreError> {
    let body = format!("out_trade_no={no}&notify_id={event_id}").into_bytes();
    let fields = String::from_utf8_lossy(&body).into_owned();
    store
        .apply_payment(&ApplyPayment {
            channel: "alipay",
            merchant_id: ALI,
            reported_merchant_id: ALI,
            order_no: no,
            gateway_txn_id: &format!("T{no}"),
            amount_fen: 1000,
            paid_at: Utc::now(),
            event: Some(EventRecord {
                event_id,
                kind: "payment",
                headers: HEADERS,
                body: &body,
                fields: &fields,
            }),
            now: Utc::now(),
        })
        .await
}

/// Store a non-final event of order `no` (kind `payment` unless given).
async fn record(store: &Store, no: &str, event_id: &str, kind: &str) -> Result<bool, StoreError> {
    store
        .record_payment_event(
            "alipay",
            ALI,
            no,
            None,
            &EventRecord {
                event_id,
                kind,
                headers: HEADERS,
                body: b"trade_status=WAIT_BUYER_PAY",
                fields: "{}",
            },
            "not_paid:Pending",
            Utc::now(),
        )
        .await
}

async fn status(store: &Store, no: &str) -> String {
    store.payment_order_fresh(no).await.unwrap().unwrap().status
}

fn applied(r: &Result<PaymentApplied, StoreError>) -> bool {
    matches!(r, Ok(PaymentApplied::Applied { .. }))
}

#[tokio::test]
async fn a_failed_write_in_a_group_is_answered_alone_and_the_others_commit() {
    let db = TestDb::new().await;
    let store = one_lane(&db).await;
    let nos = orders(&db, 3).await;
    // Order 1's `payment.apply` entry exists already (posted by hand): its apply must fail on
    // the journal's unique (kind, reference), the last line of defence.
    let clearing = LedgerAccount::GatewayClearing {
        channel: Channel::Alipay,
        merchant: ALI.into(),
    };
    let manual = JournalEntry::transfer(
        "payment.apply",
        nos[1].clone(),
        chrono::NaiveDate::from_ymd_opt(2030, 1, 15).unwrap(),
        "test",
        clearing.clone(),
        LedgerAccount::Bank,
        Fen::new(1),
    )
    .unwrap();
    db.store.post_entry(&manual, Utc::now()).await.unwrap();
    let before = store.group_commit_stats();

    // `join!` polls them in this order: that is the order they reach the committer in.
    let (paid, copy, refused, bogus, other) = futures::join!(
        pay(&store, &nos[0], "N0"),
        pay(&store, &nos[0], "N0"),
        pay(&store, &nos[1], "N1"),
        record(&store, &nos[2], "W2", "bogus"),
        pay(&store, &nos[2], "N2")
    );

    let after = store.group_commit_stats();
    assert_eq!(
        (after.batches - before.batches, after.writes - before.writes),
        (1, 5),
        "the five writes shared one transaction"
    );
    assert_eq!(
        after.replayed_batches - before.replayed_batches,
        1,
        "the first attempt, without savepoints, met the refused write and the batch ran again in savepoints"
    );
    assert!(applied(&paid), "{paid:?}");
    assert_eq!(
        copy.unwrap(),
        PaymentApplied::DuplicateEvent,
        "the copy saw the first inside the same transaction"
    );
    assert!(
        matches!(&refused, Err(e) if e.is_duplicate()),
        "the order whose entry exists is refused: {refused:?}"
    );
    assert!(
        matches!(&bogus, Err(StoreError::Refused { .. })),
        "an event of no known kind is refused by the schema: {bogus:?}"
    );
    assert!(applied(&other), "the write after two failures still applies: {other:?}");

    assert_eq!(status(&db.store, &nos[0]).await, "paid");
    assert_eq!(
        status(&db.store, &nos[1]).await,
        "created",
        "the refused apply left nothing"
    );
    assert_eq!(status(&db.store, &nos[2]).await, "paid");
    let (applies, receipts, events) = db.store.payment_counts().await.unwrap();
    assert_eq!(
        (applies, receipts, events),
        (3, 2, 2),
        "entries: two applies and the hand-posted one; receipts and events of the two paid orders"
    );
    assert!(db.store.payment_events_for(&nos[1]).await.unwrap().is_empty());
    let o1 = db.store.payment_order(&nos[1]).await.unwrap().unwrap();
    let left: i64 = db
        .store
        .open_bills(o1.account_id)
        .await
        .unwrap()
        .iter()
        .map(|b| b.outstanding_fen)
        .sum();
    assert_eq!(
        left, 1000,
        "its bill is still open: no allocation survived the rollback"
    );
    assert!(journal_balances(&db.store).await);
}

/// A trigger that makes any transaction storing event `poison` fail at its commit (a journal
/// line without its entry: the deferred foreign key refuses it then).
async fn poison_commits(db: &TestDb) {
    let sql = match db.kind() {
        BackendKind::Sqlite => {
            "CREATE TRIGGER poison AFTER INSERT ON payment_events WHEN NEW.event_id = 'poison' BEGIN \
             INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) \
             VALUES (randomblob(16), 1, (SELECT MIN(id) FROM ledger_accounts), 1); END"
        }
        BackendKind::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) \
             VALUES (gen_random_uuid(), 1, (SELECT MIN(id) FROM ledger_accounts), 1); RETURN NEW; END $$; \
             CREATE TRIGGER poison AFTER INSERT ON payment_events FOR EACH ROW \
             WHEN (NEW.event_id = 'poison') EXECUTE FUNCTION poison()"
        }
    };
    db.store.execute_raw_sql_for_tests(sql).await.unwrap();
}

#[tokio::test]
async fn a_group_whose_commit_fails_answers_every_write_with_the_error_and_writes_none() {
    let db = TestDb::new().await;
    let store = one_lane(&db).await;
    let nos = orders(&db, 2).await;
    poison_commits(&db).await;
    let entries_before = db.store.entry_count().await.unwrap();
    let before = store.group_commit_stats();

    let (a, poisoned, b) = futures::join!(
        pay(&store, &nos[0], "N0"),
        record(&store, &nos[1], "poison", "payment"),
        pay(&store, &nos[1], "N1")
    );

    let after = store.group_commit_stats();
    assert_eq!((after.batches - before.batches, after.writes - before.writes), (1, 3));
    assert_eq!(after.failed_batches - before.failed_batches, 1);
    for (name, failed) in [
        ("the first payment", a.as_ref().err()),
        ("the poisoned event", poisoned.as_ref().err()),
        ("the second payment", b.as_ref().err()),
    ] {
        assert!(
            matches!(failed, Some(StoreError::NotCommitted { .. })),
            "{name} is answered with the commit's failure"
        );
    }
    assert_eq!(status(&db.store, &nos[0]).await, "created");
    assert_eq!(status(&db.store, &nos[1]).await, "created");
    assert_eq!(
        db.store.payment_counts().await.unwrap(),
        (0, 0, 0),
        "nothing half-written"
    );
    assert_eq!(db.store.entry_count().await.unwrap(), entries_before);
    assert!(journal_balances(&db.store).await);

    // A lone write whose commit fails is answered the same way.
    let alone = record(&store, &nos[1], "poison", "payment").await;
    assert!(matches!(alone, Err(StoreError::NotCommitted { .. })), "{alone:?}");

    // The gateway delivers them again, without the poison: each applies once.
    let (a, b) = futures::join!(pay(&store, &nos[0], "N0"), pay(&store, &nos[1], "N1"));
    assert!(applied(&a) && applied(&b), "{a:?} {b:?}");
    assert_eq!(db.store.payment_counts().await.unwrap(), (2, 2, 2));
    assert!(journal_balances(&db.store).await);
}

#[tokio::test]
async fn many_callbacks_at_once_each_apply_exactly_once_across_the_committers() {
    let db = TestDb::new().await;
    // The default store: on PostgreSQL several committers, the orders spread over them.
    let store = db.store.clone();
    let nos = orders(&db, 40).await;
    let before = store.group_commit_stats();
    // Every order paid by two copies of its notification and once more by an active query.
    let ids: Vec<(String, String)> = nos.iter().map(|no| (format!("N{no}"), format!("query:{no}"))).collect();
    let mut calls = Vec::new();
    for (no, (notified, queried)) in nos.iter().zip(&ids) {
        calls.push(pay(&store, no, notified));
        calls.push(pay(&store, no, notified));
        calls.push(pay(&store, no, queried));
    }
    let results = join_all(calls).await;
    let after = store.group_commit_stats();
    assert_eq!(after.writes - before.writes, 120);
    assert_eq!(
        after.replayed_batches - before.replayed_batches,
        0,
        "duplicates are answers, not failures: no batch needed its savepoints"
    );
    assert!(
        after.batches - before.batches < 120,
        "writes handed over together were gathered ({} batches)",
        after.batches - before.batches
    );
    for (no, r) in nos.iter().zip(results.chunks(3)) {
        // Whichever of the three came first applied it; the copy of that notification (or of the
        // other one) found it done.
        let mut outcomes: Vec<&'static str> = r
            .iter()
            .map(|x| match x.as_ref().unwrap() {
                PaymentApplied::Applied { .. } => "applied",
                PaymentApplied::AlreadyApplied => "already applied",
                PaymentApplied::DuplicateEvent => "duplicate event",
                other => panic!("{no}: {other:?}"),
            })
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, ["already applied", "applied", "duplicate event"], "{no}");
    }
    let (applies, receipts, events) = db.store.payment_counts().await.unwrap();
    assert_eq!((applies, receipts, events), (40, 40, 80));
    for no in &nos {
        assert_eq!(status(&db.store, no).await, "paid");
    }
    assert!(journal_balances(&db.store).await);
}

/// An order of `amount` fen for `bills` (bill id, fen) of `account`.
async fn order_of(db: &TestDb, community_id: i64, account: i64, no: &str, amount: i64, bills: &[(i64, i64)]) {
    let now = Utc::now();
    db.store
        .create_payment_order(&NewOrder {
            order_no: no,
            community_id,
            account_id: account,
            channel: "alipay",
            merchant_id: ALI,
            method: "qr",
            purpose: "bills",
            amount_fen: amount,
            subject: "group commit",
            created_at: now,
            expires_at: now + Duration::hours(2),
            created_by: "test",
            bills,
            next_query_at: now + Duration::hours(1),
        })
        .await
        .unwrap();
}

/// Apply a payment of `amount` for order `no`, paid at `paid_at`; by notification `event_id`, or
/// (`None`) as an active query finds it, with no event.
async fn pay_as(
    store: &Store,
    no: &str,
    event_id: Option<&str>,
    amount: i64,
    paid_at: chrono::DateTime<Utc>,
) -> Result<PaymentApplied, StoreError> {
    let body = format!("out_trade_no={no}&total_amount={amount}").into_bytes();
    let fields = String::from_utf8_lossy(&body).into_owned();
    store
        .apply_payment(&ApplyPayment {
            channel: "alipay",
            merchant_id: ALI,
            reported_merchant_id: ALI,
            order_no: no,
            gateway_txn_id: &format!("T{no}"),
            amount_fen: amount,
            paid_at,
            event: event_id.map(|event_id| EventRecord {
                event_id,
                kind: "payment",
                headers: HEADERS,
                body: &body,
                fields: &fields,
            }),
            now: Utc::now(),
        })
        .await
}

/// Everything one applied order left behind, with its own ids taken out so that two orders
/// applied the same way compare equal.
async fn footprint(store: &Store, no: &str) -> Vec<String> {
    let o = store.payment_order_fresh(no).await.unwrap().unwrap();
    let own = format!(":{}", o.account_id);
    // An account code of this account (`receivable:{id}`, `credit:{id}`) without its id.
    let code = |c: &str| match c.strip_suffix(own.as_str()) {
        Some(head) => format!("{head}:ACCOUNT"),
        None => c.to_string(),
    };
    let plain = |s: String| s.replace(no, "ORDER");
    let mut out = vec![format!(
        "order {} paid {:?} at {:?} to credit {} txn {:?} next query {:?}",
        o.status,
        o.paid_amount_fen,
        o.paid_at,
        o.to_credit_fen,
        o.gateway_txn_id.map(plain),
        o.next_query_at
    )];
    let r = store
        .receipt(&meterpay::store::payments::receipt_no(no))
        .await
        .unwrap()
        .unwrap();
    let shares: Vec<serde_json::Value> = serde_json::from_str(&r.bills).unwrap();
    let bills = store.account_bills(o.account_id).await.unwrap();
    // Bills by their place among the account's bills (oldest first), not by id.
    let place = |id: i64| bills.iter().position(|b| b.bill_id == id);
    out.push(format!(
        "receipt {} to credit {} paid {:?} shares {:?}",
        r.amount_fen,
        r.to_credit_fen,
        r.paid_at,
        shares
            .iter()
            .map(|s| (
                place(s["bill_id"].as_i64().unwrap()),
                s["principal_fen"].clone(),
                s["late_fee_fen"].clone()
            ))
            .collect::<Vec<_>>()
    ));
    for b in &bills {
        out.push(format!(
            "bill {} outstanding {} {:?}",
            b.period, b.outstanding_fen, b.status
        ));
    }
    for l in store.entry_lines("payment.apply", no).await.unwrap() {
        out.push(plain(format!(
            "line {} {} {}",
            l.line_no,
            code(&l.account_code),
            l.amount_fen
        )));
    }
    let mut posted: Vec<String> = store
        .plan_payments(Utc::now() - Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.reference == no)
        .map(|p| plain(format!("posted {} at {:?}", code(&p.code), p.posted_at)))
        .collect();
    posted.sort();
    out.extend(posted);
    for (kind, outcome) in store.payment_events_for(no).await.unwrap() {
        out.push(format!("event {kind} {outcome}"));
    }
    out
}

/// A payment's shape: the bills of its account (period, fen), the order's amount, and whether it
/// arrives by notification (or is found by an active query).
type Shape = (&'static [(&'static str, i64)], i64, bool);

#[tokio::test]
async fn a_group_of_plain_payments_is_applied_set_wise_and_writes_what_one_at_a_time_would() {
    let db = TestDb::new().await;
    let store = one_lane(&db).await;
    let mut csv = String::from("code,name,building,unit,door_no,meters\n");
    for (i, code) in ["S0", "S1", "S2", "S3", "G0", "G1", "G2", "G3", "GX", "GD", "GA"]
        .iter()
        .enumerate()
    {
        csv.push_str(&format!("{code},R{i},1,1,{},M{code}:electricity:6\n", 100 + i));
    }
    let c = community(&db, "SW", &csv, "").await;
    let base = Utc::now() - Duration::minutes(30);
    let paid_at = |i: i64| base + Duration::minutes(i);
    // The four plain shapes, each made twice: "S" applied one write at a time, "G" in one group.
    // (bills of the account, order amount, by notification or by active query)
    let shapes: [Shape; 4] = [
        (&[("2030-01", 1000)], 1000, true),
        (&[("2030-01", 500), ("2030-02", 1000)], 1000, true),
        (&[("2030-01", 1000)], 1500, true),
        (&[("2030-01", 1000)], 1000, false),
    ];
    for set in ["S", "G"] {
        for (i, (bills, amount, _)) in shapes.iter().enumerate() {
            let account = account_id(&db.store, &c, &format!("{set}{i}")).await;
            let mut ids = Vec::new();
            for (period, fen) in bills.iter() {
                ids.push((issue_bill(&db.store, account, period, *fen).await, *fen));
            }
            order_of(&db, c.id, account, &format!("{set}{i}-1"), *amount, &ids).await;
        }
    }
    // Beside them in the group: a wrong amount, an unknown order, two copies of one notification,
    // and two orders of one account (the older bill first: arrival order decides).
    for code in ["GX", "GD"] {
        let account = account_id(&db.store, &c, code).await;
        let bill = issue_bill(&db.store, account, "2030-01", 1000).await;
        order_of(&db, c.id, account, &format!("{code}-1"), 1000, &[(bill, 1000)]).await;
    }
    let ga = account_id(&db.store, &c, "GA").await;
    let older = issue_bill(&db.store, ga, "2030-01", 1000).await;
    let newer = issue_bill(&db.store, ga, "2030-02", 1000).await;
    order_of(&db, c.id, ga, "GA-2", 1000, &[(newer, 1000)]).await;
    order_of(&db, c.id, ga, "GA-1", 1000, &[(older, 1000)]).await;

    for (i, (_, amount, notified)) in shapes.iter().enumerate() {
        let no = format!("S{i}-1");
        let event = format!("N{no}");
        let r = pay_as(
            &store,
            &no,
            notified.then_some(event.as_str()),
            *amount,
            paid_at(i as i64),
        )
        .await;
        assert!(applied(&r), "{no}: {r:?}");
    }
    let before = store.group_commit_stats();
    let events: Vec<String> = (0..4).map(|i| format!("NG{i}-1")).collect();
    let mut calls = Vec::new();
    for (i, (_, amount, notified)) in shapes.iter().enumerate() {
        let event = notified.then_some(events[i].as_str());
        calls.push(pay_as(
            &store,
            ["G0-1", "G1-1", "G2-1", "G3-1"][i],
            event,
            *amount,
            paid_at(i as i64),
        ));
    }
    calls.push(pay_as(&store, "GX-1", Some("NGX"), 900, paid_at(0)));
    calls.push(pay_as(&store, "NOPE-1", Some("NNOPE"), 1000, paid_at(0)));
    calls.push(pay_as(&store, "GD-1", Some("NGD"), 1000, paid_at(0)));
    calls.push(pay_as(&store, "GD-1", Some("NGD"), 1000, paid_at(0)));
    calls.push(pay_as(&store, "GA-2", Some("NGA2"), 1000, paid_at(0)));
    calls.push(pay_as(&store, "GA-1", Some("NGA1"), 1000, paid_at(0)));
    let results = join_all(calls).await;
    let after = store.group_commit_stats();
    assert_eq!(
        (after.batches - before.batches, after.writes - before.writes),
        (1, 10),
        "the ten writes shared one transaction"
    );
    assert_eq!(
        after.set_wise_writes - before.set_wise_writes,
        4,
        "the four plain payments were applied set-wise, the rest one by one"
    );
    assert_eq!(after.replayed_batches - before.replayed_batches, 0);

    for (i, r) in results.iter().take(4).enumerate() {
        assert!(applied(r), "G{i}: {r:?}");
        let (g, s) = (
            footprint(&db.store, &format!("G{i}-1")).await,
            footprint(&db.store, &format!("S{i}-1")).await,
        );
        assert_eq!(
            g, s,
            "shape {i}: the set-wise apply wrote what the one-at-a-time apply wrote"
        );
    }
    // What the shapes wrote, so the comparison above compares something.
    let g1 = footprint(&db.store, "G1-1").await;
    assert!(g1.contains(&"bill 2030-01 outstanding 0 Paid".to_string()), "{g1:?}");
    assert!(
        g1.contains(&"bill 2030-02 outstanding 500 PartiallyPaid".to_string()),
        "{g1:?}"
    );
    let g2 = footprint(&db.store, "G2-1").await;
    assert!(
        g2.contains(&"line 3 credit:ACCOUNT -500".to_string()),
        "overpayment to credit: {g2:?}"
    );
    let g3 = footprint(&db.store, "G3-1").await;
    assert!(
        !g3.iter().any(|l| l.starts_with("event")),
        "an active query's payment stores no event: {g3:?}"
    );
    assert!(
        footprint(&db.store, "G0-1")
            .await
            .iter()
            .any(|l| l == "event payment applied"),
        "the notification is stored"
    );

    assert!(
        matches!(&results[4], Ok(PaymentApplied::Mismatch { .. })),
        "{:?}",
        results[4]
    );
    assert_eq!(status(&db.store, "GX-1").await, "created");
    assert_eq!(results[5].as_ref().unwrap(), &PaymentApplied::UnknownOrder);
    assert!(applied(&results[6]), "{:?}", results[6]);
    assert_eq!(results[7].as_ref().unwrap(), &PaymentApplied::DuplicateEvent);
    assert!(
        applied(&results[8]) && applied(&results[9]),
        "{:?} {:?}",
        results[8],
        results[9]
    );
    let first = db
        .store
        .receipt(&meterpay::store::payments::receipt_no("GA-2"))
        .await
        .unwrap()
        .unwrap();
    let shares: Vec<serde_json::Value> = serde_json::from_str(&first.bills).unwrap();
    assert_eq!(
        shares[0]["bill_id"].as_i64(),
        Some(older),
        "the account's first payment to arrive settled its older bill"
    );
    assert!(journal_balances(&db.store).await);
}

#[tokio::test]
async fn a_group_applied_set_wise_that_meets_a_stored_event_runs_again_one_by_one() {
    let db = TestDb::new().await;
    let store = one_lane(&db).await;
    let nos = orders(&db, 3).await;
    // A trigger stores a second order's event as soon as the first one's is stored: the
    // set-wise insert of the events then finds one already there and must not answer "applied"
    // for a write it did not make.
    let sql = match db.kind() {
        BackendKind::Sqlite => format!(
            "CREATE TRIGGER sneak BEFORE INSERT ON payment_events WHEN NEW.event_id = 'N0' BEGIN \
             INSERT OR IGNORE INTO payment_events (channel, merchant_id, event_id, kind, order_no, headers, body, fields, outcome, received_at) \
             VALUES ('alipay', '{ALI}', 'N1', 'payment', '{}', '[]', x'', '{{}}', 'sneaked', '2030-01-01T00:00:00+00:00'); END",
            nos[1]
        ),
        BackendKind::Postgres => format!(
            "CREATE FUNCTION sneak() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO payment_events (channel, merchant_id, event_id, kind, order_no, headers, body, fields, outcome, received_at) \
             VALUES ('alipay', '{ALI}', 'N1', 'payment', '{}', '[]', '', '{{}}', 'sneaked', now()) ON CONFLICT DO NOTHING; RETURN NEW; END $$; \
             CREATE TRIGGER sneak BEFORE INSERT ON payment_events FOR EACH ROW WHEN (NEW.event_id = 'N0') EXECUTE FUNCTION sneak()",
            nos[1]
        ),
    };
    db.store.execute_raw_sql_for_tests(&sql).await.unwrap();
    let before = store.group_commit_stats();
    let (a, b, c) = futures::join!(
        pay(&store, &nos[0], "N0"),
        pay(&store, &nos[1], "N1"),
        pay(&store, &nos[2], "N2")
    );
    let after = store.group_commit_stats();
    assert_eq!((after.batches - before.batches, after.writes - before.writes), (1, 3));
    assert_eq!(
        after.set_wise_writes - before.set_wise_writes,
        0,
        "the set-wise attempt was rolled back"
    );
    assert_eq!(
        after.replayed_batches - before.replayed_batches,
        1,
        "and the batch ran again one by one"
    );
    assert!(applied(&a) && applied(&c), "{a:?} {c:?}");
    // One by one, the second order's event is found stored when its turn comes.
    assert_eq!(b.unwrap(), PaymentApplied::DuplicateEvent);
    assert_eq!(status(&db.store, &nos[1]).await, "created", "nothing applied for it");
    assert_eq!(status(&db.store, &nos[0]).await, "paid");
    assert_eq!(status(&db.store, &nos[2]).await, "paid");
    assert_eq!(db.store.payment_counts().await.unwrap().1, 2, "two receipts");
    assert!(journal_balances(&db.store).await);
}
