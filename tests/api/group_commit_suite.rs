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
