//! The store contract: the seed records, the audit trail and idempotency keys.

use chrono::{NaiveDate, Utc};
use meterpay::domain::ids::Utility;
use meterpay::domain::Quantity;
use meterpay::store::directory::{NewAccount, NewMeter};
use meterpay::store::idempotency::IdempotencyStart;
use meterpay::store::StoreError;

use crate::helpers::TestDb;

fn account(code: &str, door: &str) -> NewAccount {
    NewAccount {
        code: code.into(),
        name: "Test Person".into(),
        building: "1".into(),
        unit: "1".into(),
        door_no: door.into(),
        phone: None,
        mobile: Some("+8613800000000".into()),
        email: None,
        credit_rating: "normal".into(),
        payment_mode: "postpaid".into(),
    }
}

#[tokio::test]
async fn creating_a_community_twice_returns_the_first() {
    let db = TestDb::new().await;
    let (a, created_a) = db
        .store
        .ensure_community("C1", "One", "test", Utc::now())
        .await
        .unwrap();
    let (b, created_b) = db
        .store
        .ensure_community("C1", "Other name", "test", Utc::now())
        .await
        .unwrap();
    assert!(created_a);
    assert!(!created_b);
    assert_eq!(a, b);
    assert_eq!(b.name, "One");
    assert_eq!(db.store.list_communities().await.unwrap().len(), 1);
    let audit = db.store.audit_for("community", &a.id.to_string()).await.unwrap();
    assert_eq!(audit.len(), 1, "one creation, one audit record");
    assert_eq!(audit[0].action, "community.create");
}

#[tokio::test]
async fn an_account_code_is_unique_within_its_community() {
    let db = TestDb::new().await;
    let (c, _) = db
        .store
        .ensure_community("C1", "One", "test", Utc::now())
        .await
        .unwrap();
    let (c2, _) = db
        .store
        .ensure_community("C2", "Two", "test", Utc::now())
        .await
        .unwrap();
    db.store
        .create_account(c.id, &account("A1", "101"), "test", Utc::now())
        .await
        .unwrap();
    let err = db
        .store
        .create_account(c.id, &account("A1", "102"), "test", Utc::now())
        .await
        .unwrap_err();
    assert!(err.is_duplicate(), "expected a duplicate, got {err}");
    // Nothing half-written: the premises of the refused account was rolled back with it.
    let accounts = db.store.list_accounts(c.id).await.unwrap();
    assert_eq!(accounts.len(), 1);
    // The same code in another community is fine.
    db.store
        .create_account(c2.id, &account("A1", "101"), "test", Utc::now())
        .await
        .unwrap();
}

#[tokio::test]
async fn two_accounts_at_one_address_share_the_premises() {
    let db = TestDb::new().await;
    let (c, _) = db
        .store
        .ensure_community("C1", "One", "test", Utc::now())
        .await
        .unwrap();
    let a = db
        .store
        .create_account(c.id, &account("A1", "101"), "test", Utc::now())
        .await
        .unwrap();
    let b = db
        .store
        .create_account(c.id, &account("A2", "101"), "test", Utc::now())
        .await
        .unwrap();
    assert_eq!(a.premises_id, b.premises_id);
    assert!(a.premises_id.is_some());
}

#[tokio::test]
async fn a_meter_number_is_unique_per_utility_and_keeps_its_multiplier() {
    let db = TestDb::new().await;
    let (c, _) = db
        .store
        .ensure_community("C1", "One", "test", Utc::now())
        .await
        .unwrap();
    let a = db
        .store
        .create_account(c.id, &account("A1", "101"), "test", Utc::now())
        .await
        .unwrap();
    let meter = |no: &str, utility| NewMeter {
        meter_no: no.into(),
        utility,
        model: None,
        digit_count: 6,
        multiplier: Quantity::parse("40").unwrap(),
        installed_on: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
    };
    let m = db
        .store
        .install_meter(&a, &meter("M1", Utility::Electricity), "test", Utc::now())
        .await
        .unwrap();
    assert_eq!(Quantity::from_scaled(m.multiplier_e4), Quantity::parse("40").unwrap());
    let err = db
        .store
        .install_meter(&a, &meter("M1", Utility::Electricity), "test", Utc::now())
        .await
        .unwrap_err();
    assert!(err.is_duplicate(), "{err}");
    // The same number on a water meter is another meter.
    db.store
        .install_meter(&a, &meter("M1", Utility::Water), "test", Utc::now())
        .await
        .unwrap();
    assert_eq!(db.store.meters_of_account(a.id).await.unwrap().len(), 2);
    let found = db.store.meter_by_number("electricity", "M1").await.unwrap().unwrap();
    assert_eq!(found.id, m.id);
    assert_eq!(found.installed_on, NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
}

#[tokio::test]
async fn a_check_constraint_violation_is_refused_not_unexpected() {
    let db = TestDb::new().await;
    let (c, _) = db
        .store
        .ensure_community("C1", "One", "test", Utc::now())
        .await
        .unwrap();
    let mut bad = account("A1", "101");
    bad.payment_mode = "barter".into();
    let err = db
        .store
        .create_account(c.id, &bad, "test", Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_response_and_refuse_a_different_body() {
    let db = TestDb::new().await;
    let now = Utc::now();
    assert_eq!(
        db.store
            .idempotency_start("payments", "k1", "hash-a", now)
            .await
            .unwrap(),
        IdempotencyStart::Proceed
    );
    // A concurrent duplicate sees the first in flight.
    assert_eq!(
        db.store
            .idempotency_start("payments", "k1", "hash-a", now)
            .await
            .unwrap(),
        IdempotencyStart::InFlight
    );
    db.store
        .idempotency_complete("payments", "k1", 201, b"{\"id\":1}", now)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .idempotency_start("payments", "k1", "hash-a", now)
            .await
            .unwrap(),
        IdempotencyStart::Replay {
            status: 201,
            body: b"{\"id\":1}".to_vec()
        }
    );
    assert_eq!(
        db.store
            .idempotency_start("payments", "k1", "hash-b", now)
            .await
            .unwrap(),
        IdempotencyStart::Mismatch
    );
    // Keys are scoped.
    assert_eq!(
        db.store
            .idempotency_start("refunds", "k1", "hash-b", now)
            .await
            .unwrap(),
        IdempotencyStart::Proceed
    );
    // An abandoned (failed) request frees its key; a completed one is kept.
    db.store.idempotency_abandon("refunds", "k1").await.unwrap();
    db.store.idempotency_abandon("payments", "k1").await.unwrap();
    assert_eq!(db.store.idempotency_key_count().await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_first_uses_of_a_key_let_exactly_one_proceed() {
    let db = TestDb::new().await;
    let other = db.another_instance().await;
    let now = Utc::now();
    let mut handles = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { db.store.clone() } else { other.clone() };
        handles.push(tokio::spawn(async move {
            store.idempotency_start("payments", "same", "h", now).await.unwrap()
        }));
    }
    let mut proceeds = 0;
    for h in handles {
        if h.await.unwrap() == IdempotencyStart::Proceed {
            proceeds += 1;
        }
    }
    assert_eq!(proceeds, 1);
}

#[tokio::test]
async fn the_audit_log_cannot_be_rewritten() {
    let db = TestDb::new().await;
    db.store
        .ensure_community("C1", "One", "test", Utc::now())
        .await
        .unwrap();
    let err = db
        .store
        .execute_raw_sql_for_tests("UPDATE audit_log SET actor = 'someone else'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit_append_only"), "{err}");
    let err = db
        .store
        .execute_raw_sql_for_tests("DELETE FROM audit_log")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit_append_only"), "{err}");
}
