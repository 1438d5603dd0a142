//! Bills through the store: re-runs, dry runs, what the database refuses, allocation order,
//! the payment building block, prepaid credit, credit notes, disputes, alerts, accounts and
//! tariff imports. Run on both backends.

use meterpay::domain::Fen;
use meterpay::ledger::LedgerAccount;
use meterpay::store::accounts::AccountOutcome;
use meterpay::store::bills::{BillStatus, ManualLine, RunOptions};
use meterpay::store::Store;

use crate::billing_helpers::*;
use crate::helpers::TestDb;

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

const TWO: &str =
    "code,name,building,unit,door_no,meters\nA1,One,1,1,101,E1:electricity:6\nA2,Two,1,1,102,E2:electricity:6\n";

/// Monthly readings for E1 (and E2) from January: 1000 + 100 × month.
async fn monthly(s: &Store, months: u32) {
    let mut rows = Vec::new();
    for m in 1..=months {
        let v = (1000 + 100 * (m - 1)).to_string();
        rows.push(("E1", "electricity", cst(2026, m, 25, 8), v.clone(), "actual"));
        rows.push(("E2", "electricity", cst(2026, m, 25, 8), v, "actual"));
    }
    let rows: Vec<(&str, &str, chrono::DateTime<chrono::Utc>, &str, &str)> = rows
        .iter()
        .map(|(a, b, c, d, e)| (*a, *b, *c, d.as_str(), *e))
        .collect();
    readings(s, &rows).await;
}

/// Σ outstanding of an account's bills equals its receivable balance.
async fn assert_receivable_matches_bills(s: &Store, account: i64) {
    let bills = s.account_bills(account).await.unwrap();
    let outstanding: i64 = bills.iter().map(|b| b.outstanding_fen).sum();
    let receivable = s
        .balance(&LedgerAccount::Receivable { account_id: account })
        .await
        .unwrap();
    assert_eq!(receivable.get(), outstanding, "receivable vs bills: {bills:?}");
}

#[tokio::test]
async fn rerunning_a_period_never_duplicates_and_a_dry_run_writes_nothing() {
    let db = TestDb::new().await;
    let c = community(&db, "RR", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 2).await;
    let mut dry = RunOptions::new(period("2026-02"));
    dry.community = Some("RR".into());
    dry.dry_run = true;
    let r = s
        .run_bills(&dry, "test", None, cst(2026, 3, 1, 9), &|_| {})
        .await
        .unwrap();
    assert_eq!((r.communities[0].bills_issued, r.communities[0].total_fen), (2, 10000));
    assert!(
        s.list_bills(&Default::default()).await.unwrap().is_empty(),
        "a dry run writes nothing"
    );
    assert_eq!(s.entry_count().await.unwrap(), 0);
    let first = run(s, "RR", "2026-02", None, cst(2026, 3, 1, 9)).await;
    assert_eq!(first.communities[0].bills_issued, 2);
    let entries = s.entry_count().await.unwrap();
    let again = run(s, "RR", "2026-02", None, cst(2026, 3, 2, 9)).await;
    assert_eq!(
        (again.communities[0].bills_issued, again.communities[0].already_billed),
        (0, 2)
    );
    assert_eq!(s.list_bills(&Default::default()).await.unwrap().len(), 2);
    assert_eq!(s.entry_count().await.unwrap(), entries, "no second posting");
    let b = bill(s, &c, "A1", "2026-02").await;
    let run_id = first.communities[0].run_id.unwrap();
    let issue = s
        .entry_lines("bills.issue", &format!("run:{run_id}:after:0"))
        .await
        .unwrap();
    let a2 = account_id(s, &c, "A2").await;
    assert_eq!(
        issue
            .iter()
            .map(|l| (l.account_code.clone(), l.amount_fen))
            .collect::<Vec<_>>(),
        vec![
            (format!("receivable:{}", b.account_id), 5000),
            (format!("receivable:{a2}"), 5000),
            ("revenue:electricity".into(), -10000)
        ]
    );
}

#[tokio::test]
async fn an_issued_bill_cannot_be_edited_in_the_database() {
    let db = TestDb::new().await;
    let c = community(&db, "IMM", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 2).await;
    run(s, "IMM", "2026-02", None, cst(2026, 3, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-02").await;
    for sql in [
        format!("UPDATE bills SET total_fen = 1 WHERE id = {}", b.id),
        format!("UPDATE bill_lines SET amount_fen = 1 WHERE bill_id = {}", b.id),
        format!("DELETE FROM bill_lines WHERE bill_id = {}", b.id),
        format!("DELETE FROM bills WHERE id = {}", b.id),
        format!(
            "INSERT INTO bill_lines (bill_id, line_no, kind, component, description, quantity_e4, unit_price_e6, amount_fen) \
             VALUES ({}, 99, 'adjustment', 'x', 'x', 10000, 1000000, 100)",
            b.id
        ),
    ] {
        let err = s.execute_raw_sql_for_tests(&sql).await.unwrap_err();
        assert!(
            err.to_string().contains("bill_immutable") || err.to_string().contains("bill_sealed"),
            "{sql}: {err}"
        );
    }
    // A draft whose lines do not add up cannot be issued.
    let err = s
        .execute_raw_sql_in_tx_for_tests(&format!(
            "INSERT INTO bills (community_id, account_id, period, kind, status, total_fen, due_date, created_at, created_by) \
             VALUES ({}, {}, '2030-01', 'regular', 'draft', 500, '2030-02-01', '2030-01-01T00:00:00+00:00', 't'); \
             INSERT INTO bill_lines (bill_id, line_no, kind, component, description, quantity_e4, unit_price_e6, amount_fen) \
             VALUES ((SELECT MAX(id) FROM bills), 1, 'usage', 'energy', 'x', 10000, 4990000, 499); \
             UPDATE bills SET status = 'issued' WHERE id = (SELECT MAX(id) FROM bills)",
            c.id, b.account_id
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bill_unbalanced"), "{err}");
    assert_eq!(s.bill_detail(b.id).await.unwrap().total_fen, 5000);
}

/// What a bill's rows refer to must exist and cannot be deleted from under them: each write
/// below is refused by a foreign key on both backends, and the bill is unchanged afterwards.
#[tokio::test]
async fn bill_rows_must_refer_to_rows_that_exist_and_those_rows_are_kept() {
    let db = TestDb::new().await;
    let c = community(&db, "REF", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 2).await;
    run(s, "REF", "2026-02", None, cst(2026, 3, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-02").await;
    let before = s.bill_detail(b.id).await.unwrap();
    assert_eq!(before.readings.len(), 1);
    let missing = 987_654_321i64;
    let line = |bill: &str, tariff: &str| {
        format!(
            "INSERT INTO bill_lines (bill_id, line_no, kind, component, description, quantity_e4, unit_price_e6, amount_fen, tariff_version_id) \
             VALUES ({bill}, 1, 'usage', 'energy', 'x', 10000, 500000, 50, {tariff})"
        )
    };
    let draft = |account: String, run: &str, adjusts: &str| {
        format!(
            "INSERT INTO bills (community_id, account_id, period, kind, adjusts_bill_id, status, total_fen, due_date, run_id, created_at, created_by) \
             VALUES ({}, {account}, '2031-01', {}, {adjusts}, 'draft', 50, '2031-02-01', {run}, '2031-01-01T00:00:00+00:00', 't')",
            c.id,
            if adjusts == "NULL" { "'regular'" } else { "'adjustment'" }
        )
    };
    let refused_writes = [
        ("a bill for a missing account", draft(missing.to_string(), "NULL", "NULL")),
        ("a bill in a missing run", draft(b.account_id.to_string(), &missing.to_string(), "NULL")),
        ("an adjustment of a missing bill", draft(b.account_id.to_string(), "NULL", &missing.to_string())),
        ("a line of a missing bill", line(&missing.to_string(), "NULL")),
        (
            "a line priced by a missing tariff version",
            format!(
                "{}; {}",
                draft(b.account_id.to_string(), "NULL", "NULL"),
                line("(SELECT MAX(id) FROM bills)", &missing.to_string())
            ),
        ),
        (
            "readings of a missing bill",
            format!(
                "INSERT INTO bill_readings (bill_id, meter_id, utility, from_reading_id, to_reading_id, from_value_e4, to_value_e4, \
                 from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4) \
                 SELECT {missing}, meter_id, utility, from_reading_id, to_reading_id, from_value_e4, to_value_e4, from_at, to_at, \
                 from_kind, to_kind, multiplier_e4, usage_e4 FROM bill_readings WHERE bill_id = {}",
                b.id
            ),
        ),
        (
            "a missing closing reading",
            format!(
                "INSERT INTO bill_readings (bill_id, meter_id, utility, from_reading_id, to_reading_id, from_value_e4, to_value_e4, \
                 from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4) \
                 SELECT (SELECT id FROM bills WHERE account_id <> {a} AND period = '2026-02'), meter_id, utility, from_reading_id, \
                 {missing}, from_value_e4, to_value_e4, from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4 \
                 FROM bill_readings WHERE bill_id = {b}",
                a = b.account_id,
                b = b.id
            ),
        ),
        (
            "readings of a missing meter",
            format!(
                "INSERT INTO bill_readings (bill_id, meter_id, utility, from_reading_id, to_reading_id, from_value_e4, to_value_e4, \
                 from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4) \
                 SELECT (SELECT id FROM bills WHERE account_id <> {a} AND period = '2026-02'), {missing}, utility, from_reading_id, \
                 to_reading_id, from_value_e4, to_value_e4, from_at, to_at, from_kind, to_kind, multiplier_e4, usage_e4 \
                 FROM bill_readings WHERE bill_id = {b}",
                a = b.account_id,
                b = b.id
            ),
        ),
        (
            "a reading of a missing meter",
            format!(
                "INSERT INTO readings (meter_id, read_at, value_e4, kind, source, status, created_at) \
                 VALUES ({missing}, '2031-01-01T00:00:00+00:00', 10000, 'actual', 'test', 'valid', '2031-01-01T00:00:00+00:00')"
            ),
        ),
        (
            "billing state of a missing meter",
            format!(
                "INSERT INTO meter_bill_state (meter_id, account_id, reading_id, read_at, value_e4, kind, anchor_reading_id, \
                 anchor_at, anchor_value_e4, bill_id, updated_at) \
                 SELECT {missing}, account_id, reading_id, read_at, value_e4, kind, anchor_reading_id, anchor_at, \
                 anchor_value_e4, bill_id, updated_at FROM meter_bill_state WHERE bill_id = {b} LIMIT 1",
                b = b.id
            ),
        ),
        (
            "a bill's closing reading changed to a missing one",
            format!("UPDATE bill_readings SET to_reading_id = {missing} WHERE bill_id = {}", b.id),
        ),
        (
            "a draft moved to a missing account",
            format!(
                "{}; UPDATE bills SET account_id = {missing} WHERE id = (SELECT MAX(id) FROM bills)",
                draft(b.account_id.to_string(), "NULL", "NULL")
            ),
        ),
        (
            "usage of a missing bill",
            format!(
                "INSERT INTO bill_usage (bill_id, community_id, account_id, utility, usage_period, quantity_e4) \
                 VALUES ({missing}, {}, {}, 'electricity', '2031-01', 10000)",
                c.id, b.account_id
            ),
        ),
    ];
    for (what, sql) in &refused_writes {
        let err = s.execute_raw_sql_in_tx_for_tests(sql).await.unwrap_err();
        assert!(err.to_string().to_lowercase().contains("foreign key"), "{what}: {err}");
    }
    for (what, sql) in [
        (
            "the closing reading",
            format!(
                "DELETE FROM readings WHERE id IN (SELECT to_reading_id FROM bill_readings WHERE bill_id = {})",
                b.id
            ),
        ),
        (
            "the meter",
            format!(
                "DELETE FROM meters WHERE id IN (SELECT meter_id FROM bill_readings WHERE bill_id = {})",
                b.id
            ),
        ),
        (
            "the account",
            format!("DELETE FROM accounts WHERE id = {}", b.account_id),
        ),
        (
            "the tariff version",
            format!(
                "DELETE FROM tariff_versions WHERE id IN (SELECT tariff_version_id FROM bill_lines WHERE bill_id = {})",
                b.id
            ),
        ),
        (
            "the bill run",
            format!(
                "DELETE FROM bill_runs WHERE id IN (SELECT run_id FROM bills WHERE id = {})",
                b.id
            ),
        ),
    ] {
        let err = s.execute_raw_sql_for_tests(&sql).await.unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("foreign key"),
            "deleting {what}: {err}"
        );
    }
    let after = s.bill_detail(b.id).await.unwrap();
    assert_eq!(
        (
            after.lines.len(),
            after.readings.len(),
            after.usage.len(),
            after.total_fen
        ),
        (
            before.lines.len(),
            before.readings.len(),
            before.usage.len(),
            before.total_fen
        )
    );
    assert_eq!(after.readings[0].to_reading_id, before.readings[0].to_reading_id);
    assert_eq!(
        s.list_bills(&Default::default()).await.unwrap().len(),
        2,
        "no bill was added"
    );
}

#[tokio::test]
async fn a_payment_settles_the_oldest_bill_first_and_puts_the_overpayment_to_credit() {
    let db = TestDb::new().await;
    let c = community(&db, "ALLOC", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 4).await;
    for p in ["2026-02", "2026-03", "2026-04"] {
        run(s, "ALLOC", p, None, cst(2026, 4, 28, 9)).await;
    }
    let a = account_id(s, &c, "A1").await;
    let open = s.open_bills(a).await.unwrap();
    assert_eq!(
        open.iter().map(|b| b.period.as_str()).collect::<Vec<_>>(),
        vec!["2026-02", "2026-03", "2026-04"]
    );
    let clearing = LedgerAccount::GatewayClearing {
        channel: meterpay::domain::ids::Channel::Alipay,
        merchant: "M1".into(),
    };
    let paid = s
        .allocate_payment(a, Fen::new(7000), "ORDER1", &clearing, cst(2026, 5, 1, 9))
        .await
        .unwrap();
    assert_eq!(
        paid.bills
            .iter()
            .map(|x| (x.bill_id, x.principal.get()))
            .collect::<Vec<_>>(),
        vec![(open[0].bill_id, 5000), (open[1].bill_id, 2000)]
    );
    assert_eq!(paid.to_credit_fen, 0);
    let statuses: Vec<BillStatus> = s.account_bills(a).await.unwrap().iter().map(|b| b.status).collect();
    assert_eq!(
        statuses,
        vec![BillStatus::Paid, BillStatus::PartiallyPaid, BillStatus::Open]
    );
    let entry = s.entry_lines("payment.allocate", "ORDER1").await.unwrap();
    assert_eq!(
        entry
            .iter()
            .map(|l| (l.account_code.clone(), l.amount_fen))
            .collect::<Vec<_>>(),
        vec![("clearing:alipay:M1".into(), 7000), (format!("receivable:{a}"), -7000)]
    );
    // The same payment twice is refused: the journal's (kind, reference) is unique.
    assert!(s
        .allocate_payment(a, Fen::new(7000), "ORDER1", &clearing, cst(2026, 5, 1, 10))
        .await
        .unwrap_err()
        .is_duplicate());
    // An overpayment goes to credit, and the next bill is settled from it.
    let over = s
        .allocate_payment(a, Fen::new(10_000), "ORDER2", &clearing, cst(2026, 5, 2, 9))
        .await
        .unwrap();
    assert_eq!(over.to_credit_fen, 2000);
    assert!(s.open_bills(a).await.unwrap().is_empty());
    assert_eq!(
        s.balance(&LedgerAccount::CustomerCredit { account_id: a })
            .await
            .unwrap(),
        Fen::new(-2000)
    );
    readings(s, &[("E1", "electricity", cst(2026, 5, 25, 8), "1500", "actual")]).await;
    let r = run(s, "ALLOC", "2026-05", None, cst(2026, 5, 28, 9)).await;
    assert_eq!(r.communities[0].settled_from_credit_fen, 2000);
    let may = bill(s, &c, "A1", "2026-05").await;
    assert_eq!(
        (may.total_fen, may.outstanding_fen, may.status),
        (10_000, 8000, BillStatus::PartiallyPaid)
    );
    assert_eq!(
        s.balance(&LedgerAccount::CustomerCredit { account_id: a })
            .await
            .unwrap(),
        Fen::ZERO
    );
    assert_receivable_matches_bills(s, a).await;
    // Refused: nothing, or an unknown account.
    assert!(s
        .allocate_payment(a, Fen::ZERO, "ORDER3", &clearing, cst(2026, 5, 2, 9))
        .await
        .is_err());
    assert!(matches!(
        s.allocate_payment(999_999, Fen::new(1), "ORDER4", &clearing, cst(2026, 5, 2, 9))
            .await,
        Err(meterpay::store::StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_community_can_settle_the_newest_bill_first() {
    let db = TestDb::new().await;
    let c = community(&db, "NEW", TWO, FLAT).await;
    let s = &db.store;
    let mut st = s.billing_settings(c.id).await.unwrap();
    st.allocation_order = meterpay::domain::late_fee::AllocationOrder::NewestFirst;
    s.set_billing_settings(c.id, &st, "token:op", None, cst(2026, 1, 1, 9))
        .await
        .unwrap();
    monthly(s, 3).await;
    for p in ["2026-02", "2026-03"] {
        run(s, "NEW", p, None, cst(2026, 3, 28, 9)).await;
    }
    let a = account_id(s, &c, "A1").await;
    let open = s.open_bills(a).await.unwrap();
    assert_eq!(open[0].period, "2026-03");
    let paid = s
        .allocate_payment(a, Fen::new(5000), "P1", &LedgerAccount::Bank, cst(2026, 4, 1, 9))
        .await
        .unwrap();
    assert_eq!(paid.bills[0].bill_id, open[0].bill_id);
    let audit = s.audit_for("community", &c.id.to_string()).await.unwrap();
    assert!(audit
        .iter()
        .any(|r| r.action == "billing_settings.update" && r.actor == "token:op"));
}

#[tokio::test]
async fn a_top_up_settles_open_bills_and_a_low_balance_is_listed() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "PRE",
        "code,name,building,unit,door_no,meters,payment_mode,low_balance\nA1,One,1,1,101,E1:electricity:6,prepaid,50.00\nA2,Two,1,1,102,E2:electricity:6,prepaid,\n",
        FLAT,
    )
    .await;
    let s = &db.store;
    monthly(s, 2).await;
    run(s, "PRE", "2026-02", None, cst(2026, 3, 1, 9)).await;
    let a = account_id(s, &c, "A1").await;
    let t = s
        .top_up(
            a,
            Fen::new(8000),
            "RCPT-1",
            Some("cash at the office"),
            "token:op",
            None,
            cst(2026, 3, 2, 9),
        )
        .await
        .unwrap();
    assert_eq!((t.settled_fen, t.credit_balance_fen), (5000, 3000));
    assert_eq!(bill(s, &c, "A1", "2026-02").await.status, BillStatus::Paid);
    let low = s.low_balance_accounts(c.id).await.unwrap();
    assert_eq!(
        low.iter()
            .map(|l| (l.account_code.as_str(), l.credit_fen))
            .collect::<Vec<_>>(),
        vec![("A1", 3000)]
    );
    assert!(s
        .top_up(a, Fen::new(8000), "RCPT-1", None, "token:op", None, cst(2026, 3, 2, 10))
        .await
        .unwrap_err()
        .is_duplicate());
    assert!(s
        .top_up(a, Fen::new(-1), "RCPT-2", None, "token:op", None, cst(2026, 3, 2, 10))
        .await
        .is_err());
    let bal = s.account_balance(a).await.unwrap();
    assert_eq!(
        (bal.credit_fen, bal.receivable_fen, bal.below_threshold),
        (3000, 0, true)
    );
    assert_eq!(s.balance(&LedgerAccount::Bank).await.unwrap(), Fen::new(8000));
}

#[tokio::test]
async fn reminders_read_prepaid_balances_and_last_top_ups_in_bulk() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "PRB",
        "code,name,building,unit,door_no,meters,payment_mode,low_balance\nA1,One,1,1,101,E1:electricity:6,prepaid,50.00\nA2,Two,1,1,102,E2:electricity:6,prepaid,\nA3,Three,1,1,103,E3:electricity:6,prepaid,\n",
        FLAT,
    )
    .await;
    let s = &db.store;
    monthly(s, 2).await;
    run(s, "PRB", "2026-02", None, cst(2026, 3, 1, 9)).await;
    let (a1, a2, a3) = (
        account_id(s, &c, "A1").await,
        account_id(s, &c, "A2").await,
        account_id(s, &c, "A3").await,
    );
    // A1 tops up twice (credit beyond its bill), A2 owes its bill, A3 tops up less than it owes.
    s.top_up(
        a1,
        Fen::new(8000),
        "RCPT-B1",
        None,
        "token:op",
        None,
        cst(2026, 3, 2, 9),
    )
    .await
    .unwrap();
    s.top_up(
        a1,
        Fen::new(1000),
        "RCPT-B2",
        None,
        "token:op",
        None,
        cst(2026, 3, 5, 9),
    )
    .await
    .unwrap();
    s.top_up(
        a3,
        Fen::new(1000),
        "RCPT-B3",
        None,
        "token:op",
        None,
        cst(2026, 3, 3, 9),
    )
    .await
    .unwrap();
    let bulk = s.plan_prepaid(&[a1, a2, a3]).await.unwrap();
    for a in [a1, a2, a3] {
        let b = s.account_balance(a).await.unwrap();
        assert_eq!(bulk[&a].0, b.credit_fen - b.receivable_fen, "account {a}'s balance");
    }
    let last: Vec<_> = [a1, a2, a3].iter().map(|a| bulk[a].1).collect();
    assert_eq!(
        last,
        [Some(cst(2026, 3, 5, 9)), None, Some(cst(2026, 3, 3, 9))],
        "each account's latest top-up"
    );
    assert!(bulk[&a1].0 > 0 && bulk[&a2].0 < 0);
    assert!(s.plan_prepaid(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_manual_credit_note_is_an_adjustment_bill_applied_to_the_bill_it_corrects() {
    let db = TestDb::new().await;
    let c = community(&db, "ADJ", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 2).await;
    run(s, "ADJ", "2026-02", None, cst(2026, 3, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-02").await;
    let lines = vec![ManualLine {
        utility: meterpay::domain::ids::Utility::Electricity,
        description: "meter over-registered (退补), 20 kWh".into(),
        quantity: meterpay::domain::Quantity::parse("-20").unwrap(),
        unit_price: meterpay::domain::Price::parse("0.50").unwrap(),
    }];
    assert!(s
        .issue_adjustment(b.id, &lines, " ", "token:op", None, cst(2026, 3, 2, 9))
        .await
        .is_err());
    let adj = s
        .issue_adjustment(
            b.id,
            &lines,
            "meter test found 2 % fast",
            "token:op",
            None,
            cst(2026, 3, 2, 9),
        )
        .await
        .unwrap();
    assert_eq!(
        (adj.kind.as_str(), adj.total_fen, adj.adjusts_bill_id),
        ("adjustment", -1000, Some(b.id))
    );
    let b = s.bill_detail(b.id).await.unwrap();
    assert_eq!(b.outstanding_fen, 4000);
    assert_eq!(b.total_fen, 5000, "the original bill is never edited");
    assert_eq!(adj.status, BillStatus::Adjusted);
    let a = account_id(s, &c, "A1").await;
    assert_receivable_matches_bills(s, a).await;
}

#[tokio::test]
async fn a_dispute_is_set_and_cleared_with_a_reason_and_audited() {
    let db = TestDb::new().await;
    let c = community(&db, "DSP", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 2).await;
    run(s, "DSP", "2026-02", None, cst(2026, 3, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-02").await;
    assert!(s
        .set_bill_dispute(b.id, true, "", "token:op", None, cst(2026, 3, 2, 9))
        .await
        .is_err());
    s.set_bill_dispute(
        b.id,
        true,
        "resident says the meter was read twice",
        "token:op",
        Some("req-1"),
        cst(2026, 3, 2, 9),
    )
    .await
    .unwrap();
    assert!(s.bill_detail(b.id).await.unwrap().disputed);
    assert!(s
        .set_bill_dispute(b.id, true, "again", "token:op", None, cst(2026, 3, 2, 9))
        .await
        .is_err());
    s.set_bill_dispute(
        b.id,
        false,
        "photo of the meter checked",
        "token:op",
        None,
        cst(2026, 3, 3, 9),
    )
    .await
    .unwrap();
    let audit = s.audit_for("bill", &b.id.to_string()).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|r| (r.action.as_str(), r.request_id.as_deref()))
            .collect::<Vec<_>>(),
        vec![("bill.dispute", Some("req-1")), ("bill.undispute", None)]
    );
    assert!(!s.bill_detail(b.id).await.unwrap().disputed);
}

#[tokio::test]
async fn usage_far_above_the_accounts_history_and_a_stopped_meter_raise_alerts() {
    let db = TestDb::new().await;
    let c = community(&db, "ALR", TWO, FLAT).await;
    let s = &db.store;
    monthly(s, 5).await;
    for p in ["2026-02", "2026-03", "2026-04", "2026-05"] {
        run(s, "ALR", p, None, cst(2026, 5, 28, 9)).await;
    }
    // June: A1 uses 1,000 (10× its 100 a month); A2's register does not move.
    readings(
        s,
        &[
            ("E1", "electricity", cst(2026, 6, 25, 8), "2400", "actual"),
            ("E2", "electricity", cst(2026, 6, 25, 8), "1400", "actual"),
        ],
    )
    .await;
    let r = run(s, "ALR", "2026-06", None, cst(2026, 6, 28, 9)).await;
    assert_eq!(r.communities[0].alerts, 2);
    let alerts = s.usage_alerts(c.id, Some(period("2026-06"))).await.unwrap();
    let kinds: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a.account_code.as_str(), a.kind.as_str()))
        .collect();
    assert_eq!(kinds, vec![("A1", "high_usage"), ("A2", "stopped_meter")]);
    assert!(alerts[0].detail.contains("over 3 times"), "{}", alerts[0].detail);
}

#[tokio::test]
async fn no_use_for_several_periods_on_an_occupied_premises_is_held_for_review() {
    let db = TestDb::new().await;
    community(&db, "ZERO", TWO, FLAT).await;
    let s = &db.store;
    readings(
        s,
        &[
            ("E1", "electricity", cst(2026, 1, 25, 8), "500", "actual"),
            ("E1", "electricity", cst(2026, 2, 25, 8), "500", "actual"),
            ("E1", "electricity", cst(2026, 3, 25, 8), "500", "actual"),
        ],
    )
    .await;
    let r = s
        .ingest_readings(
            None,
            &[meterpay::billing::readings::IncomingReading {
                meter_no: "E1".into(),
                utility: "electricity".into(),
                read_at: cst(2026, 4, 25, 8).to_rfc3339(),
                value: serde_json::json!("500"),
                kind: None,
                registers: None,
            }],
            "push",
            "test",
            cst(2026, 4, 26, 8),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(r.held, 1);
    let held = s.held_readings(None).await.unwrap();
    assert!(held[0].hold_reason.as_deref().unwrap().contains("stopped"), "{held:?}");
}

#[tokio::test]
async fn an_accounts_file_creates_accounts_with_meters_and_reports_each_bad_row() {
    let db = TestDb::new().await;
    let s = &db.store;
    let (c, _) = s
        .ensure_community("IMP", "Import", "test", cst(2026, 1, 1, 9))
        .await
        .unwrap();
    let csv = "客户编号,姓名,楼号,单元,门牌号,电话,手机,邮箱,表号,面积\n\
               A-1,张伟,1,1,101,,13800138000,zw@example.com,E100:电:6;W100:水:5,88.5\n\
               A-2,李娜,1,1,102,,,,E100:electricity:6,\n\
               A-3,王芳,1,1,103,,12345,,,\n\
               A-1,重复,1,1,104,,,,,\n\
               A-4,陈静,1,1,104,021-5555,,,E104:electricity:6:40,\n";
    let t = meterpay::billing::accounts_import::read_table("a.csv", csv.as_bytes()).unwrap();
    let rows = meterpay::billing::accounts_import::accounts_from_table("a.csv", &t).unwrap();
    let r = s
        .import_accounts(c.id, &rows, "cli:test", None, cst(2026, 1, 1, 9))
        .await
        .unwrap();
    assert_eq!((r.rows, r.created, r.refused, r.meters), (5, 2, 3, 3), "{r:?}");
    let reasons: Vec<String> = r
        .results
        .iter()
        .filter_map(|(line, o)| match o {
            AccountOutcome::Refused { reason } => Some(format!("{line}: {reason}")),
            _ => None,
        })
        .collect();
    assert!(
        reasons[0].starts_with("3:") && reasons[0].contains("already installed"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("4:") && reasons[1].contains("mobile"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("5:") && reasons[2].contains("twice"),
        "{reasons:?}"
    );
    let a1 = s.account_by_code(c.id, "A-1").await.unwrap().unwrap();
    assert_eq!(a1.mobile.as_deref(), Some("+8613800138000"));
    assert_eq!(s.meters_of_account(a1.id).await.unwrap().len(), 2);
    let e104 = s.meter_by_number("electricity", "E104").await.unwrap().unwrap();
    assert_eq!(e104.multiplier_e4, 400_000);
    // Importing the same file again changes nothing.
    let again = s
        .import_accounts(c.id, &rows, "cli:test", None, cst(2026, 1, 2, 9))
        .await
        .unwrap();
    assert_eq!((again.created, again.existing), (0, 2));
    assert_eq!(s.list_accounts(c.id).await.unwrap().len(), 2);
    assert_eq!(
        s.audit_for("account", &a1.id.to_string()).await.unwrap()[0].action,
        "account.import"
    );
}

#[tokio::test]
async fn a_tariff_file_imported_twice_adds_nothing_and_a_changed_version_is_refused() {
    let db = TestDb::new().await;
    let s = &db.store;
    s.ensure_community("TAR", "Tariffs", "test", cst(2026, 1, 1, 9))
        .await
        .unwrap();
    let file = meterpay::store::tariffs::TariffFile::parse(&FLAT.replace("{C}", "TAR")).unwrap();
    let r = s
        .add_tariff_versions(&file.tariff, "cli", None, cst(2026, 1, 1, 9))
        .await
        .unwrap();
    assert_eq!((r.added.len(), r.unchanged), (1, 0));
    let r = s
        .add_tariff_versions(&file.tariff, "cli", None, cst(2026, 1, 1, 9))
        .await
        .unwrap();
    assert_eq!((r.added.len(), r.unchanged), (0, 1));
    let changed =
        meterpay::store::tariffs::TariffFile::parse(&FLAT.replace("{C}", "TAR").replace("0.50", "0.55")).unwrap();
    let err = s
        .add_tariff_versions(&changed.tariff, "cli", None, cst(2026, 1, 1, 9))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("never edited"), "{err}");
    assert!(meterpay::store::tariffs::TariffFile::parse("[[tariff]]\ncommunity = 1").is_err());
    let unknown = FLAT.replace("{C}", "NOPE");
    let err = s
        .add_tariff_versions(
            &meterpay::store::tariffs::TariffFile::parse(&unknown).unwrap().tariff,
            "cli",
            None,
            cst(2026, 1, 1, 9),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOPE"), "{err}");
}

#[tokio::test]
async fn an_account_without_a_tariff_is_skipped_with_the_reason_and_the_others_are_billed() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "SKIP",
        "code,name,building,unit,door_no,meters\nA1,One,1,1,101,E1:electricity:6\nA2,Two,1,1,102,W2:water:5\n",
        FLAT,
    )
    .await;
    let s = &db.store;
    readings(
        s,
        &[
            ("E1", "electricity", cst(2026, 1, 25, 8), "100", "actual"),
            ("E1", "electricity", cst(2026, 2, 25, 8), "200", "actual"),
            ("W2", "water", cst(2026, 1, 25, 8), "10", "actual"),
            ("W2", "water", cst(2026, 2, 25, 8), "20", "actual"),
        ],
    )
    .await;
    let r = run(s, "SKIP", "2026-02", None, cst(2026, 3, 1, 9)).await;
    assert_eq!(r.communities[0].bills_issued, 1);
    assert_eq!(r.communities[0].skipped.len(), 1);
    assert!(
        r.communities[0].skipped[0].reason.contains("no water tariff"),
        "{:?}",
        r.communities[0].skipped
    );
    assert!(s
        .bill_id_for(account_id(s, &c, "A2").await, period("2026-02"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_run_in_small_chunks_bills_every_account_once_and_posts_one_entry_per_chunk() {
    // Seven accounts in chunks of two: four chunks (on PostgreSQL two at a time, each over its
    // own range of accounts).
    let db = TestDb::new().await;
    let mut csv = String::from("code,name,building,unit,door_no,meters\n");
    for i in 1..=7 {
        csv.push_str(&format!("K{i},Resident {i},1,1,10{i},KE{i}:electricity:6\n"));
    }
    let c = community(&db, "CH", &csv, FLAT).await;
    let s = &db.store;
    let meters: Vec<String> = (1..=7).map(|i| format!("KE{i}")).collect();
    // Account i uses 10 × i kWh in February.
    let february: Vec<String> = (1..=7).map(|i| (1000 + 10 * i).to_string()).collect();
    let mut rows = Vec::new();
    for (m, v) in meters.iter().zip(&february) {
        rows.push((m.as_str(), "electricity", cst(2026, 1, 25, 8), "1000", "actual"));
        rows.push((m.as_str(), "electricity", cst(2026, 2, 25, 8), v.as_str(), "actual"));
    }
    readings(s, &rows).await;
    let mut opts = RunOptions::new(period("2026-02"));
    opts.community = Some("CH".into());
    opts.chunk = 2;
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let r = s
        .run_bills(&opts, "test", None, cst(2026, 3, 1, 9), &|n| {
            seen.store(n, std::sync::atomic::Ordering::SeqCst)
        })
        .await
        .unwrap();
    let cr = &r.communities[0];
    assert_eq!((cr.accounts, cr.bills_issued, cr.already_billed), (7, 7, 0));
    // 0.50 yuan × 10 × (1 + … + 7) kWh = 140 yuan.
    assert_eq!(cr.total_fen, 14_000);
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        7,
        "progress reaches every account"
    );
    for i in 1..=7 {
        let b = bill(s, &c, &format!("K{i}"), "2026-02").await;
        assert_eq!(b.total_fen, 500 * i, "K{i}");
        assert_total_is_sum_of_lines(&b);
    }
    assert_eq!(s.list_bills(&Default::default()).await.unwrap().len(), 7);
    // One issue entry per chunk, named by the account id each chunk started after.
    let run_id = cr.run_id.unwrap();
    let first = s
        .entry_lines("bills.issue", &format!("run:{run_id}:after:0"))
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "two receivables and the revenue: {first:?}");
    assert_eq!(s.entry_count().await.unwrap(), 4);
    // Again, in other chunks: nothing new.
    opts.chunk = 3;
    let again = s
        .run_bills(&opts, "test", None, cst(2026, 3, 2, 9), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.communities[0].bills_issued, again.communities[0].already_billed),
        (0, 7)
    );
    assert_eq!(s.entry_count().await.unwrap(), 4);
}
