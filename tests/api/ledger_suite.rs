//! The ledger's invariants, on each backend: entries balance, the journal is append-only (the
//! database itself refuses changes), balances are derived, and concurrent posting keeps it all.

use chrono::{NaiveDate, Utc};
use meterpay::domain::ids::{Channel, Utility};
use meterpay::domain::Fen;
use meterpay::ledger::{JournalEntry, LedgerAccount};
use meterpay::store::StoreError;

use crate::helpers::TestDb;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 7, 1).unwrap()
}

fn bill_issue(account_id: i64, reference: &str, fen: i64) -> JournalEntry {
    JournalEntry::transfer(
        "bill.issue",
        reference,
        day(),
        "test",
        LedgerAccount::Receivable { account_id },
        LedgerAccount::Revenue {
            utility: Utility::Electricity,
        },
        Fen::new(fen),
    )
    .unwrap()
}

#[tokio::test]
async fn balances_are_derived_from_posted_entries() {
    let db = TestDb::new().await;
    db.store
        .post_entry(&bill_issue(1, "bill-1", 12_449), Utc::now())
        .await
        .unwrap();
    db.store
        .post_entry(&bill_issue(1, "bill-2", 551), Utc::now())
        .await
        .unwrap();
    let clearing = LedgerAccount::GatewayClearing {
        channel: Channel::Alipay,
        merchant: "M1".into(),
    };
    let pay = JournalEntry::transfer(
        "payment.apply",
        "order-1",
        day(),
        "test",
        clearing.clone(),
        LedgerAccount::Receivable { account_id: 1 },
        Fen::new(10_000),
    )
    .unwrap();
    db.store.post_entry(&pay, Utc::now()).await.unwrap();

    let receivable = LedgerAccount::Receivable { account_id: 1 };
    assert_eq!(db.store.balance(&receivable).await.unwrap(), Fen::new(3_000));
    let revenue = LedgerAccount::Revenue {
        utility: Utility::Electricity,
    };
    assert_eq!(
        revenue.normal_balance(db.store.balance(&revenue).await.unwrap()),
        Fen::new(13_000)
    );
    assert_eq!(db.store.balance(&clearing).await.unwrap(), Fen::new(10_000));
    let total: i64 = db
        .store
        .trial_balance()
        .await
        .unwrap()
        .iter()
        .map(|r| r.balance_fen)
        .sum();
    assert_eq!(total, 0, "the trial balance sums to zero");
    let lines = db.store.entry_lines("payment.apply", "order-1").await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].account_code, "clearing:alipay:M1");
    assert_eq!(lines[1].amount_fen, -10_000);
}

#[tokio::test]
async fn the_same_event_cannot_be_posted_twice() {
    let db = TestDb::new().await;
    db.store
        .post_entry(&bill_issue(1, "bill-1", 100), Utc::now())
        .await
        .unwrap();
    let err = db
        .store
        .post_entry(&bill_issue(1, "bill-1", 100), Utc::now())
        .await
        .unwrap_err();
    assert!(err.is_duplicate(), "{err}");
    assert_eq!(
        db.store
            .balance(&LedgerAccount::Receivable { account_id: 1 })
            .await
            .unwrap(),
        Fen::new(100)
    );
    assert_eq!(db.store.entry_count().await.unwrap(), 1);
}

/// Lines written straight into the table, bypassing the code's check.
fn raw_lines_sql(entry_hex: &str, sqlite: bool, amounts: &[i64]) -> String {
    let id = if sqlite {
        format!("X'{entry_hex}'")
    } else {
        format!("'{entry_hex}'::uuid")
    };
    let mut sql = String::new();
    for (i, a) in amounts.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) VALUES ({id}, {}, (SELECT MIN(id) FROM ledger_accounts), {a});\n",
            i + 1
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO journal_entries (id, kind, reference, memo, accounting_date, posted_at, created_by) VALUES ({id}, 'raw', 'raw-{entry_hex}', '', '2026-07-01', '2026-07-01T00:00:00+00:00', 'sql');"
    ));
    sql
}

async fn in_transaction(db: &TestDb, sql: &str) -> Result<u64, StoreError> {
    db.store.execute_raw_sql_in_tx_for_tests(sql).await
}

#[tokio::test]
async fn the_database_refuses_an_unbalanced_entry_written_directly_in_sql() {
    let db = TestDb::new().await;
    db.store
        .post_entry(&bill_issue(1, "seed", 1), Utc::now())
        .await
        .unwrap();
    let sqlite = db.kind() == meterpay::store::BackendKind::Sqlite;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let err = in_transaction(&db, &raw_lines_sql(&id, sqlite, &[500, -499]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("journal_entry_unbalanced"), "{err}");
    // A single line is refused too, even when it is "balanced" against nothing.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let err = in_transaction(&db, &raw_lines_sql(&id, sqlite, &[0x1]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("journal_entry_unbalanced"), "{err}");
    // And a balanced one written the same way is accepted: the refusal is about balance.
    let id = uuid::Uuid::new_v4().simple().to_string();
    in_transaction(&db, &raw_lines_sql(&id, sqlite, &[500, -500]))
        .await
        .unwrap();
    assert_eq!(db.store.entry_count().await.unwrap(), 2);
}

#[tokio::test]
async fn lines_without_an_entry_do_not_survive_the_commit() {
    let db = TestDb::new().await;
    db.store
        .post_entry(&bill_issue(1, "seed", 1), Utc::now())
        .await
        .unwrap();
    let sqlite = db.kind() == meterpay::store::BackendKind::Sqlite;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let only_lines: String = raw_lines_sql(&id, sqlite, &[700]).lines().next().unwrap().to_string();
    let err = in_transaction(&db, &only_lines).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("foreign key"), "{err}");
}

#[tokio::test]
async fn posted_lines_and_entries_cannot_be_updated_deleted_or_extended_in_sql() {
    let db = TestDb::new().await;
    db.store
        .post_entry(&bill_issue(1, "bill-1", 100), Utc::now())
        .await
        .unwrap();
    for sql in [
        "UPDATE journal_lines SET amount_fen = amount_fen * 2",
        "DELETE FROM journal_lines",
        "UPDATE journal_entries SET memo = 'edited'",
        "DELETE FROM journal_entries",
    ] {
        let err = db.store.execute_raw_sql_for_tests(sql).await.unwrap_err();
        assert!(err.to_string().contains("journal_append_only"), "{sql}: {err}");
    }
    // Adding a line to a posted entry.
    let sealed = "INSERT INTO journal_lines (entry_id, line_no, ledger_account_id, amount_fen) \
                  SELECT entry_id, 99, ledger_account_id, 5 FROM journal_lines LIMIT 1";
    let err = db.store.execute_raw_sql_for_tests(sealed).await.unwrap_err();
    assert!(err.to_string().contains("journal_entry_sealed"), "{err}");
    if db.kind() == meterpay::store::BackendKind::Postgres {
        let err = db
            .store
            .execute_raw_sql_for_tests("TRUNCATE journal_lines, journal_entries")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("journal_append_only"), "{err}");
    }
    assert_eq!(
        db.store
            .balance(&LedgerAccount::Receivable { account_id: 1 })
            .await
            .unwrap(),
        Fen::new(100)
    );
}

#[tokio::test]
async fn concurrent_posting_from_two_instances_keeps_the_journal_balanced() {
    let db = TestDb::new().await;
    let other = db.another_instance().await;
    let mut handles = Vec::new();
    for i in 0..60i64 {
        let store = if i % 2 == 0 { db.store.clone() } else { other.clone() };
        handles.push(tokio::spawn(async move {
            // Every entry touches the same shared accounts, so the postings contend.
            let e = JournalEntry::new(
                "payment.apply",
                format!("order-{i}"),
                day(),
                "test",
                vec![
                    (
                        LedgerAccount::GatewayClearing {
                            channel: Channel::Wechatpay,
                            merchant: "M".into(),
                        },
                        Fen::new(100 + i),
                    ),
                    (LedgerAccount::Receivable { account_id: i % 3 }, Fen::new(-(100 + i))),
                ],
            )
            .unwrap();
            store.post_entry(&e, Utc::now()).await
        }));
    }
    for h in handles {
        h.await.unwrap().expect("every concurrent posting succeeds");
    }
    assert_eq!(db.store.entry_count().await.unwrap(), 60);
    let expected: i64 = (0..60).map(|i| 100 + i).sum();
    let clearing = LedgerAccount::GatewayClearing {
        channel: Channel::Wechatpay,
        merchant: "M".into(),
    };
    assert_eq!(db.store.balance(&clearing).await.unwrap(), Fen::new(expected));
    let total: i64 = db
        .store
        .trial_balance()
        .await
        .unwrap()
        .iter()
        .map(|r| r.balance_fen)
        .sum();
    assert_eq!(total, 0);
}
