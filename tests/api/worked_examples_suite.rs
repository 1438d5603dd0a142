//! Every worked example of domain.md §2.4–§2.6 and §3, reproduced through the store on the
//! database under test (SQLite, or PostgreSQL with `TEST_DATABASE_URL`): readings in, bill run,
//! lines and totals out; late fees through the nightly accrual; payments through allocation.

use meterpay::domain::Fen;
use meterpay::ledger::LedgerAccount;

use crate::billing_helpers::*;
use crate::helpers::TestDb;

const ONE_ACCOUNT: &str = "code,name,building,unit,door_no,meters\nA1,Test,1,1,101,E1:electricity:6\n";

const BEIJING_ANNUAL: &str = r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Beijing-like residential"
effective_from = 2026-01-01
tier_basis = "annual"
thresholds = ["2880", "4800"]
[[tariff.components]]
kind = "energy"
name = "Electricity"
prices = ["0.4883", "0.5383", "0.7883"]
"#;

#[tokio::test]
async fn e1_annual_tiers_crossing_a_threshold_bill_163_25() {
    let db = TestDb::new().await;
    let c = community(&db, "E1", ONE_ACCOUNT, BEIJING_ANNUAL).await;
    let s = &db.store;
    readings(
        s,
        &[
            ("E1", "electricity", cst(2026, 1, 1, 8), "10000", "actual"),
            ("E1", "electricity", cst(2026, 8, 31, 8), "12700", "actual"),
            ("E1", "electricity", cst(2026, 9, 30, 8), "13020", "actual"),
        ],
    )
    .await;
    run(s, "E1", "2026-08", None, cst(2026, 9, 1, 9)).await;
    let r = run(s, "E1", "2026-09", None, cst(2026, 10, 1, 9)).await;
    assert_eq!(r.communities[0].bills_issued, 1);
    let b = bill(s, &c, "A1", "2026-09").await;
    assert_eq!(lines(&b), vec![("180".into(), 8789), ("140".into(), 7536)]);
    assert_eq!(b.total_fen, 16325, "163.25: rounded per line, not 163.26");
    assert_total_is_sum_of_lines(&b);
}

#[tokio::test]
async fn e2_time_of_use_within_annual_tiers_bill_126_05_half_up() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "E2",
        ONE_ACCOUNT,
        r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Shanghai-like TOU"
effective_from = 2026-01-01
tier_basis = "annual"
thresholds = ["3120", "4800"]
[[tariff.components]]
kind = "energy"
name = "Electricity"
tou = { peak = ["0.617", "0.677", "0.977"], valley = ["0.307", "0.337", "0.487"] }
"#,
    )
    .await;
    let s = &db.store;
    let tou = |at, total: &str, peak: &str, valley: &str| meterpay::billing::readings::IncomingReading {
        meter_no: "E1".into(),
        utility: "electricity".into(),
        read_at: cst(2026, at, if at == 1 { 1 } else { 28 }, 8).to_rfc3339(),
        value: serde_json::json!(total),
        kind: None,
        registers: Some(
            [
                ("peak".to_string(), serde_json::json!(peak)),
                ("valley".to_string(), serde_json::json!(valley)),
            ]
            .into_iter()
            .collect(),
        ),
    };
    let batch = [
        tou(1, "1000", "600", "400"),
        tou(8, "4000", "2600", "1400"),
        tou(9, "4240", "2750", "1490"),
    ];
    let r = s
        .ingest_readings(None, &batch, "push", "test", cst(2026, 11, 1, 9), &|_| {})
        .await
        .unwrap();
    assert_eq!(r.accepted, 3, "{:?}", r.results);
    run(s, "E2", "2026-08", None, cst(2026, 9, 1, 9)).await;
    run(s, "E2", "2026-09", None, cst(2026, 10, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-09").await;
    // 3,000 before; 240 = 120 tier 1 + 120 tier 2; peak share 150/240.
    assert_eq!(
        lines(&b),
        vec![
            ("75".into(), 4628),
            ("45".into(), 1382),
            ("75".into(), 5078),
            ("45".into(), 1517)
        ]
    );
    assert_eq!(b.total_fen, 12605, "126.05 (half-even would give 126.04)");
    let periods: Vec<_> = b.lines.iter().map(|l| (l.tier, l.tou_period.clone())).collect();
    assert_eq!(periods[1], (Some(1), Some("valley".into())));
    assert_total_is_sum_of_lines(&b);
}

const BEIJING_WATER: &str = r#"
[[tariff]]
community = "{C}"
utility = "water"
name = "Beijing-like water"
effective_from = 2026-01-01
tier_basis = "annual"
thresholds = ["180", "260"]
[[tariff.components]]
kind = "water_fee"
name = "Water fee"
prices = ["2.07", "4.07", "6.07"]
[[tariff.components]]
kind = "resource_fee"
name = "Water resource fee"
prices = ["1.57"]
payable = "water_resource"
[[tariff.components]]
kind = "sewage_fee"
name = "Sewage treatment fee"
prices = ["1.36"]
payable = "sewage"
"#;

#[tokio::test]
async fn e3_water_components_bill_190_00_and_post_pass_through_charges_to_payables() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "E3",
        "code,name,building,unit,door_no,meters\nA1,Test,1,1,101,W1:water:5\n",
        BEIJING_WATER,
    )
    .await;
    let s = &db.store;
    readings(
        s,
        &[
            ("W1", "water", cst(2026, 1, 1, 8), "100", "actual"),
            ("W1", "water", cst(2026, 8, 31, 8), "270", "actual"),
            ("W1", "water", cst(2026, 9, 30, 8), "300", "actual"),
        ],
    )
    .await;
    run(s, "E3", "2026-08", None, cst(2026, 9, 1, 9)).await;
    run(s, "E3", "2026-09", None, cst(2026, 10, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-09").await;
    assert_eq!(
        lines(&b),
        vec![
            ("10".into(), 2070),
            ("20".into(), 8140),
            ("30".into(), 4710),
            ("30".into(), 4080)
        ]
    );
    assert_eq!(b.total_fen, 19000, "190.00 = 10 × 5 + 20 × 7");
    // The run's issue entry: receivable debited, the supplier's part to revenue, the government's
    // parts to their payables.
    let r = run(s, "E3", "2026-10", None, cst(2026, 11, 1, 9)).await;
    assert_eq!(r.communities[0].bills_issued, 0);
    let a = account_id(s, &c, "A1").await;
    let bal = |acct: LedgerAccount| async move { s.balance(&acct).await.unwrap().get() };
    // Both bills: August (170 m³, all tier 1) and September.
    let aug = 170 * 207 + 170 * 157 + 170 * 136;
    assert_eq!(bal(LedgerAccount::Receivable { account_id: a }).await, aug + 19000);
    assert_eq!(
        bal(LedgerAccount::Revenue {
            utility: meterpay::domain::ids::Utility::Water
        })
        .await,
        -(170 * 207 + 10210)
    );
    assert_eq!(
        bal(LedgerAccount::Payable {
            name: "water_resource".into()
        })
        .await,
        -(170 * 157 + 4710)
    );
    assert_eq!(
        bal(LedgerAccount::Payable { name: "sewage".into() }).await,
        -(170 * 136 + 4080)
    );
}

#[tokio::test]
async fn e4_sewage_on_ninety_percent_of_volume_bills_69_00() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "E4",
        "code,name,building,unit,door_no,meters\nA1,Test,1,1,101,W1:water:5\n",
        r#"
[[tariff]]
community = "{C}"
utility = "water"
name = "Sewage on 90 %"
effective_from = 2026-01-01
tier_basis = "annual"
thresholds = ["220", "300"]
[[tariff.components]]
kind = "water_fee"
name = "Tap water"
prices = ["1.92", "2.88", "3.84"]
[[tariff.components]]
kind = "sewage_fee"
name = "Drainage"
prices = ["1.70"]
quantity_factor = "0.9"
"#,
    )
    .await;
    let s = &db.store;
    readings(
        s,
        &[
            ("W1", "water", cst(2026, 1, 1, 8), "500", "actual"),
            ("W1", "water", cst(2026, 1, 31, 8), "520", "actual"),
        ],
    )
    .await;
    run(s, "E4", "2026-01", None, cst(2026, 2, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-01").await;
    assert_eq!(lines(&b), vec![("20".into(), 3840), ("18".into(), 3060)]);
    assert_eq!(b.total_fen, 6900, "= 20 × 3.45");
}

#[tokio::test]
async fn a_price_change_inside_the_period_splits_by_days_and_bills_149_50() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "P24",
        ONE_ACCOUNT,
        r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Old price"
effective_from = 2025-01-01
[[tariff.components]]
kind = "energy"
prices = ["0.4883"]

[[tariff]]
community = "{C}"
utility = "electricity"
name = "New price"
effective_from = 2026-07-01
[[tariff.components]]
kind = "energy"
prices = ["0.5083"]
"#,
    )
    .await;
    let s = &db.store;
    // Read 16 Jun and 16 Jul: the period 16 Jun – 15 Jul, 30 days, 300 kWh.
    readings(
        s,
        &[
            ("E1", "electricity", cst(2026, 6, 16, 8), "1000", "actual"),
            ("E1", "electricity", cst(2026, 7, 16, 8), "1300", "actual"),
        ],
    )
    .await;
    run(s, "P24", "2026-07", None, cst(2026, 8, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-07").await;
    assert_eq!(lines(&b), vec![("150".into(), 7325), ("150".into(), 7625)]);
    assert_eq!(b.total_fen, 14950);
    assert_ne!(b.lines[0].tariff_version_id, b.lines[1].tariff_version_id);
}

const FLAT: &str = r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Flat"
effective_from = 2020-01-01
[[tariff.components]]
kind = "energy"
prices = ["0.50"]

[[tariff]]
community = "{C}"
utility = "water"
name = "Flat water"
effective_from = 2020-01-01
[[tariff.components]]
kind = "water_fee"
prices = ["1.00"]
"#;

#[tokio::test]
async fn a_ct_meter_rollover_bills_8100_kwh_and_a_water_rollover_28_m3() {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "ROLL",
        "code,name,building,unit,door_no,meters\nA1,Sub-meter,1,1,101,E9:electricity:6:30;W9:water:5\n",
        FLAT,
    )
    .await;
    let s = &db.store;
    readings(
        s,
        &[
            ("E9", "electricity", cst(2026, 1, 1, 8), "999850", "actual"),
            ("W9", "water", cst(2026, 1, 1, 8), "99987", "actual"),
        ],
    )
    .await;
    let r = readings(
        s,
        &[
            ("E9", "electricity", cst(2026, 1, 31, 8), "120", "actual"),
            ("W9", "water", cst(2026, 1, 31, 8), "15", "actual"),
        ],
    )
    .await;
    assert!(r.results.iter().all(|o| matches!(
        o,
        meterpay::billing::readings::RowOutcome::Accepted { rollover: true, .. }
    )));
    run(s, "ROLL", "2026-01", None, cst(2026, 2, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-01").await;
    let usage: Vec<(String, i64, i32)> = b
        .readings
        .iter()
        .map(|r| (r.utility.clone(), r.usage_e4, r.rollovers))
        .collect();
    assert_eq!(
        usage,
        vec![
            ("electricity".into(), 8100 * 10_000, 1),
            ("water".into(), 28 * 10_000, 1)
        ]
    );
    assert_eq!(lines(&b), vec![("8100".into(), 405_000), ("28".into(), 2800)]);
}

#[tokio::test]
async fn a_meter_replaced_inside_the_period_bills_both_meters_237_kwh() {
    let db = TestDb::new().await;
    let c = community(&db, "SWAP", ONE_ACCOUNT, FLAT).await;
    let s = &db.store;
    readings(s, &[("E1", "electricity", cst(2026, 8, 1, 8), "4512", "actual")]).await;
    let old = s.meter_by_number("electricity", "E1").await.unwrap().unwrap();
    let new = s
        .replace_meter(
            old.id,
            &serde_json::from_value(serde_json::json!({
                "new_meter_no": "E1-B", "digit_count": 6, "replaced_on": "2026-08-10",
                "final_value": "4600", "initial_value": "3", "reason": "fault: display dead",
                "work_order_ref": "WO-88", "read_by": "Li Gong"
            }))
            .unwrap(),
            "token:op",
            None,
            cst(2026, 8, 10, 15),
        )
        .await
        .unwrap();
    readings(s, &[("E1-B", "electricity", cst(2026, 8, 31, 8), "152", "actual")]).await;
    // A reading for the removed meter after its removal is held, not billed.
    let late = s
        .ingest_readings(
            None,
            &[meterpay::billing::readings::IncomingReading {
                meter_no: "E1".into(),
                utility: "electricity".into(),
                read_at: cst(2026, 8, 20, 8).to_rfc3339(),
                value: serde_json::json!("4700"),
                kind: None,
                registers: None,
            }],
            "push",
            "test",
            cst(2026, 9, 1, 8),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(late.held, 1, "{:?}", late.results);
    run(s, "SWAP", "2026-08", None, cst(2026, 9, 1, 9)).await;
    let b = bill(s, &c, "A1", "2026-08").await;
    let per_meter: Vec<(i64, i64)> = b.readings.iter().map(|r| (r.meter_id, r.usage_e4 / 10_000)).collect();
    assert_eq!(per_meter, vec![(old.id, 88), (new.id, 149)]);
    assert_eq!(lines(&b), vec![("237".into(), 11850)]);
    let audit = s.audit_for("meter", &old.id.to_string()).await.unwrap();
    assert!(audit
        .iter()
        .any(|a| a.action == "meter.replace" && a.reason.as_deref() == Some("fault: display dead")));
}

#[tokio::test]
async fn an_actual_reading_after_an_estimate_re_rates_the_span_and_saves_the_2_50_over_charge() {
    // §2.5: monthly tier 1 to 180 kWh, tier 2 +0.05. Period 1 estimated 5,000 → 5,250; period 2
    // actual 5,380. Naive: 250 (70 in tier 2) then 130. Re-rated: 190 + 190 (20 in tier 2).
    let db = TestDb::new().await;
    let c = community(
        &db,
        "EST",
        ONE_ACCOUNT,
        r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Monthly tiers"
effective_from = 2020-01-01
thresholds = ["180"]
[[tariff.components]]
kind = "energy"
prices = ["0.50", "0.55"]
"#,
    )
    .await;
    let s = &db.store;
    readings(
        s,
        &[
            ("E1", "electricity", cst(2025, 12, 2, 8), "5000", "actual"),
            ("E1", "electricity", cst(2026, 1, 1, 8), "5250", "estimated"),
        ],
    )
    .await;
    run(s, "EST", "2026-01", None, cst(2026, 1, 2, 9)).await;
    let p1 = bill(s, &c, "A1", "2026-01").await;
    assert_eq!(lines(&p1), vec![("180".into(), 9000), ("70".into(), 3850)]);
    readings(s, &[("E1", "electricity", cst(2026, 1, 31, 8), "5380", "actual")]).await;
    let r = run(s, "EST", "2026-02", None, cst(2026, 2, 1, 9)).await;
    assert_eq!(
        (r.communities[0].bills_issued, r.communities[0].adjustment_bills),
        (1, 1)
    );
    let p2 = bill(s, &c, "A1", "2026-02").await;
    assert_eq!(lines(&p2), vec![("180".into(), 9000), ("10".into(), 550)]);
    let p1 = s.bill_detail(p1.id).await.unwrap();
    assert_eq!(p1.adjusted_by.len(), 1);
    let adj = s.bill_detail(p1.adjusted_by[0]).await.unwrap();
    assert_eq!(adj.kind, "adjustment");
    assert_eq!(
        lines(&adj),
        vec![
            ("-180".into(), -9000),
            ("-70".into(), -3850),
            ("180".into(), 9000),
            ("10".into(), 550)
        ]
    );
    assert_eq!(adj.total_fen, -3300);
    let billed = p1.total_fen + adj.total_fen + p2.total_fen;
    assert_eq!(billed, 19100);
    assert_eq!(12850 + 6500 - billed, 250, "the naive method over-charges 2.50");
    // The credit note settled the estimated bill: it owes its re-rated amount, 95.50.
    assert_eq!(p1.outstanding_fen, 9550);
    let a = account_id(s, &c, "A1").await;
    let receivable = s.balance(&LedgerAccount::Receivable { account_id: a }).await.unwrap();
    assert_eq!(receivable, Fen::new(19100));
    // Usage counted for the tiers: 190 in each period.
    let usage: i64 = [&p1, &adj, &p2]
        .iter()
        .flat_map(|b| b.usage.iter())
        .map(|u| u.quantity_e4)
        .sum();
    assert_eq!(usage, 380 * 10_000);
}

/// Accrue every night from `from` to `to` (inclusive), paying `pay` (date, fen) on its day
/// before that night's accrual, as the nightly job and the payments step would.
async fn nights(
    s: &meterpay::store::Store,
    c: &meterpay::store::directory::Community,
    account: i64,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    pay: &[(chrono::NaiveDate, i64)],
) {
    let mut d = from;
    let mut n = 0;
    while d <= to {
        for (day, amount) in pay {
            if *day == d {
                n += 1;
                let at = meterpay::domain::period::cst_midnight(d) + chrono::Duration::hours(11);
                s.allocate_payment(
                    account,
                    Fen::new(*amount),
                    &format!("PAY{n}{d}"),
                    &LedgerAccount::Bank,
                    at,
                )
                .await
                .unwrap();
            }
        }
        let night =
            meterpay::domain::period::cst_midnight(d + chrono::Duration::days(1)) + chrono::Duration::minutes(30);
        s.accrue_late_fees(d, Some(c.id), "job:billing.late_fees", night)
            .await
            .unwrap();
        d += chrono::Duration::days(1);
    }
}

/// A bill of exactly `kwh` × 0.50 for `p`, due on `due`.
async fn bill_of(
    db: &TestDb,
    code: &str,
    class: &str,
    kwh: i64,
    p: &str,
    due: chrono::NaiveDate,
) -> (
    meterpay::store::directory::Community,
    i64,
    meterpay::store::bills::BillDetail,
) {
    let c = community(
        db,
        code,
        &format!("code,name,building,unit,door_no,meters,customer_class\nA1,Test,1,1,101,E1:electricity:6,{class}\n"),
        FLAT,
    )
    .await;
    let s = &db.store;
    let pp = period(p);
    let start = meterpay::domain::period::cst_midnight(pp.first_day()) + chrono::Duration::hours(8);
    let end = start + chrono::Duration::days(19);
    readings(
        s,
        &[
            ("E1", "electricity", start, "1000", "actual"),
            ("E1", "electricity", end, &(1000 + kwh).to_string(), "actual"),
        ],
    )
    .await;
    run(s, code, p, Some(due), end + chrono::Duration::hours(4)).await;
    let a = account_id(s, &c, "A1").await;
    let b = bill(s, &c, "A1", p).await;
    assert_eq!(b.total_fen, kwh * 50);
    (c, a, b)
}

async fn late_fee_of(s: &meterpay::store::Store, bill: i64) -> i64 {
    s.bill_detail(bill).await.unwrap().late_fee_fen
}

#[tokio::test]
async fn late_fee_example_1_fifteen_days_at_one_per_mille_is_4_50() {
    let db = TestDb::new().await;
    let (c, a, b) = bill_of(&db, "LF1", "residential", 600, "2026-02", date(2026, 3, 25)).await;
    let s = &db.store;
    nights(
        s,
        &c,
        a,
        date(2026, 3, 20),
        date(2026, 4, 15),
        &[(date(2026, 4, 9), 30000)],
    )
    .await;
    let d = s.bill_detail(b.id).await.unwrap();
    assert_eq!(d.late_fee_fen, 450);
    // Posted night by night: the minimum 1.00 first, then the increments; the sum is the fee.
    assert_eq!(
        d.late_fees.first().map(|f| (f.as_of, f.delta_fen)),
        Some((date(2026, 3, 26), 100))
    );
    assert_eq!(d.late_fees.iter().map(|f| f.delta_fen).sum::<i64>(), 450);
    let trace: serde_json::Value = serde_json::from_str(&d.late_fees.last().unwrap().trace).unwrap();
    assert_eq!(trace["days"], 15);
    assert_eq!(trace["runs"][0]["rate_ppm"], 1000);
    assert_eq!(s.balance(&LedgerAccount::LateFeeIncome).await.unwrap(), Fen::new(-450));
    // The principal is paid; the fee is what the account still owes.
    assert_eq!(d.outstanding_fen, 450);
    assert_eq!(
        s.balance(&LedgerAccount::Receivable { account_id: a }).await.unwrap(),
        Fen::new(450)
    );
}

#[tokio::test]
async fn late_fee_example_2_a_fee_under_one_yuan_is_charged_1_00() {
    let db = TestDb::new().await;
    let (c, a, b) = bill_of(&db, "LF2", "residential", 100, "2026-02", date(2026, 3, 1)).await;
    // Computed on the fifth day late (a first run that night): 5 × 1‰ × 50.00 = 0.25 → 1.00.
    nights(&db.store, &c, a, date(2026, 3, 6), date(2026, 3, 6), &[]).await;
    let d = db.store.bill_detail(b.id).await.unwrap();
    assert_eq!(d.late_fees.last().unwrap().accrued_exact, "0.25");
    assert_eq!(d.late_fee_fen, 100);
    // Night by night it is the same: 1.00 from the first day, then nothing more.
    nights(&db.store, &c, a, date(2026, 3, 7), date(2026, 3, 7), &[]).await;
    assert_eq!(late_fee_of(&db.store, b.id).await, 100);
}

#[tokio::test]
async fn late_fee_example_3_non_residential_cross_year_days_at_three_per_mille_is_42_00() {
    let db = TestDb::new().await;
    let (c, a, b) = bill_of(&db, "LF3", "non_residential", 2000, "2023-12", date(2023, 12, 25)).await;
    nights(
        &db.store,
        &c,
        a,
        date(2023, 12, 26),
        date(2024, 1, 20),
        &[(date(2024, 1, 10), 100_000)],
    )
    .await;
    let d = db.store.bill_detail(b.id).await.unwrap();
    assert_eq!(d.late_fee_fen, 4200, "6 days × 2‰ = 12.00 + 10 days × 3‰ = 30.00");
    let trace: serde_json::Value = serde_json::from_str(&d.late_fees.last().unwrap().trace).unwrap();
    assert_eq!(trace["runs"][0]["days"], 6);
    assert_eq!(trace["runs"][1]["rate_ppm"], 3000);
}

#[tokio::test]
async fn late_fee_example_4_a_partial_payment_is_respected_6_00() {
    let db = TestDb::new().await;
    let (c, a, b) = bill_of(&db, "LF4", "residential", 800, "2026-01", date(2026, 3, 1)).await;
    nights(
        &db.store,
        &c,
        a,
        date(2026, 3, 2),
        date(2026, 3, 31),
        &[(date(2026, 3, 11), 20000), (date(2026, 3, 21), 20000)],
    )
    .await;
    assert_eq!(late_fee_of(&db.store, b.id).await, 600);
    let alloc = db.store.bill_detail(b.id).await.unwrap().allocations;
    assert_eq!(alloc.len(), 2, "principal first: both payments went to the principal");
    assert!(alloc.iter().all(|x| x.late_fee_fen == 0));
}

#[tokio::test]
async fn a_second_accrual_for_the_same_night_posts_nothing_and_a_waiver_reverses_the_fee() {
    let db = TestDb::new().await;
    let (c, a, b) = bill_of(&db, "LFW", "residential", 600, "2026-02", date(2026, 3, 25)).await;
    let s = &db.store;
    nights(s, &c, a, date(2026, 3, 26), date(2026, 4, 9), &[]).await;
    let again = s
        .accrue_late_fees(date(2026, 4, 9), Some(c.id), "job", cst(2026, 4, 10, 9))
        .await
        .unwrap();
    assert_eq!(again.postings, 0);
    assert_eq!(late_fee_of(s, b.id).await, 450);
    let waived = s
        .waive_late_fee(
            b.id,
            "first late payment, goodwill",
            "token:op",
            None,
            cst(2026, 4, 10, 10),
        )
        .await
        .unwrap();
    assert_eq!(waived, 450);
    nights(s, &c, a, date(2026, 4, 10), date(2026, 4, 20), &[]).await;
    let d = s.bill_detail(b.id).await.unwrap();
    assert_eq!(d.late_fee_fen, 0, "no fee accrues after a waiver");
    assert!(d.late_fee_waived);
    assert_eq!(s.balance(&LedgerAccount::LateFeeIncome).await.unwrap(), Fen::ZERO);
    let audit = s.audit_for("bill", &b.id.to_string()).await.unwrap();
    assert_eq!(
        audit.last().unwrap().reason.as_deref(),
        Some("first late payment, goodwill")
    );
    assert!(s
        .waive_late_fee(b.id, "again", "token:op", None, cst(2026, 4, 21, 10))
        .await
        .is_err());
}
