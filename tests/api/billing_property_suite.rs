//! Property: for random reading sequences with register rollovers, a meter replacement and
//! estimated readings, a year of monthly bills bills exactly the true consumption (usage counted
//! for the tiers, and usage per meter on the bills), every bill's total equals the sum of its
//! lines, and the account's receivable equals its bills' outstanding amounts. Run through the
//! store on the database under test (fewer cases on PostgreSQL, where each case is a schema).

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use meterpay::billing::readings::IncomingReading;
use meterpay::domain::Quantity;
use meterpay::ledger::LedgerAccount;
use meterpay::store::accounts::Replacement;

use crate::billing_helpers::*;
use crate::helpers::TestDb;

#[derive(Debug, Clone)]
struct Scenario {
    digits: u32,
    multiplier: u32,
    start: u64,
    /// True register advance per month, months 1..=12.
    usage: Vec<u64>,
    /// Months (1..=11) whose closing reading is an estimate, with the estimate's advance.
    estimates: Vec<Option<u64>>,
    /// Month of a meter replacement (on the 15th), the new meter's initial value and digits, and
    /// the share of that month's usage before the swap (percent).
    replacement: Option<(usize, u64, u32, u64)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::sample::select(vec![4u32, 5]),
        prop::sample::select(vec![1u32, 2]),
        0u64..10_000,
        prop::collection::vec(200u64..400, 12),
        prop::collection::vec(prop::option::weighted(0.3, 100u64..500), 11),
        prop::option::weighted(
            0.6,
            (1usize..=12, 0u64..50, prop::sample::select(vec![4u32, 5]), 20u64..80),
        ),
    )
        .prop_map(|(digits, multiplier, start, usage, estimates, replacement)| Scenario {
            digits,
            multiplier,
            start: start % 10u64.pow(digits),
            usage,
            estimates,
            replacement,
        })
}

fn reading(meter: &str, at: DateTime<Utc>, value: u64, kind: &str) -> IncomingReading {
    IncomingReading {
        meter_no: meter.into(),
        utility: "electricity".into(),
        read_at: at.to_rfc3339(),
        value: serde_json::json!(value.to_string()),
        kind: Some(kind.into()),
        registers: None,
    }
}

async fn check(sc: Scenario) -> Result<(), TestCaseError> {
    let db = TestDb::new().await;
    let c = community(
        &db,
        "PROP",
        &format!(
            "code,name,building,unit,door_no,meters\nA1,Prop,1,1,101,OLD:electricity:{}:{}\n",
            sc.digits, sc.multiplier
        ),
        r#"
[[tariff]]
community = "{C}"
utility = "electricity"
name = "Monthly tiers"
effective_from = 2020-01-01
thresholds = ["200", "400"]
[[tariff.components]]
kind = "energy"
prices = ["0.5", "0.55", "0.8"]
"#,
    )
    .await;
    let s = &db.store;
    let now = cst(2027, 6, 1, 9);
    let range = |d: u32| 10u64.pow(d);
    // Month 0 (December 2025) opens the old meter.
    // Every reading here is genuine: one the plausibility checks hold, an operator accepts.
    let ok = |r: meterpay::billing::readings::BatchReport| async move {
        prop_assert_eq!(r.refused + r.duplicates, 0, "{:?}", r.results);
        for o in &r.results {
            if let meterpay::billing::readings::RowOutcome::Held { reading_id, .. } = o {
                s.review_reading(*reading_id, true, "token:op", "genuine (property test)", None, now)
                    .await
                    .unwrap();
            }
        }
        Ok::<(), TestCaseError>(())
    };
    ok(s.ingest_readings(
        None,
        &[reading("OLD", cst(2025, 12, 25, 8), sc.start, "actual")],
        "import",
        "t",
        now,
        &|_| {},
    )
    .await
    .unwrap())
    .await?;
    let mut true_total: u64 = 0;
    // The value the active meter last showed (an estimate may have run ahead of the truth).
    let mut shown = sc.start;
    let mut old_true = sc.start;
    let mut new_true = 0u64;
    let mut on_new = false;
    let mut new_digits = sc.digits;
    let mut old_mult = sc.multiplier as u64;
    for m in 1..=12usize {
        let (y, mo) = if m == 12 { (2026, 12) } else { (2026, m as u32) };
        let u = sc.usage[m - 1];
        true_total += u * old_mult;
        if let Some((rm, initial, nd, pct)) = sc.replacement {
            if rm == m && !on_new {
                let before = u * pct / 100;
                let after = u - before;
                old_true = (old_true + before) % range(sc.digits);
                let old = s.meter_by_number("electricity", "OLD").await.unwrap().unwrap();
                let rep: Replacement = serde_json::from_value(serde_json::json!({
                    "new_meter_no": "NEW", "digit_count": nd, "multiplier": "1",
                    "replaced_on": format!("{y}-{mo:02}-15"), "final_value": old_true.to_string(),
                    "initial_value": initial.to_string(), "reason": "property test"
                }))
                .unwrap();
                s.replace_meter(old.id, &rep, "t", None, now).await.unwrap();
                // The new meter has multiplier 1: count its part of this month at that rate.
                true_total -= after * old_mult;
                true_total += after;
                old_mult = 1;
                on_new = true;
                new_digits = nd;
                new_true = (initial + after) % range(nd);
                let est = if m <= 11 { sc.estimates[m - 1] } else { None };
                let (v, kind) = match est {
                    Some(e) => ((initial + e) % range(nd), "estimated"),
                    None => (new_true, "actual"),
                };
                shown = v;
                ok(s.ingest_readings(
                    None,
                    &[reading("NEW", cst(y, mo, 25, 8), v, kind)],
                    "import",
                    "t",
                    now,
                    &|_| {},
                )
                .await
                .unwrap())
                .await?;
                run(s, "PROP", &format!("{y}-{mo:02}"), None, cst(y, mo, 26, 9)).await;
                continue;
            }
        }
        let (meter, digits) = if on_new {
            ("NEW", new_digits)
        } else {
            ("OLD", sc.digits)
        };
        let prev_true = if on_new { new_true } else { old_true };
        let next_true = (prev_true + u) % range(digits);
        if on_new {
            new_true = next_true;
        } else {
            old_true = next_true;
        }
        let est = if m <= 11 { sc.estimates[m - 1] } else { None };
        let (v, kind) = match est {
            // An estimate advances from the last value the meter showed (true or estimated).
            Some(e) => ((shown + e) % range(digits), "estimated"),
            None => (next_true, "actual"),
        };
        shown = v;
        ok(s.ingest_readings(
            None,
            &[reading(meter, cst(y, mo, 25, 8), v, kind)],
            "import",
            "t",
            now,
            &|_| {},
        )
        .await
        .unwrap())
        .await?;
        run(s, "PROP", &format!("{y}-{mo:02}"), None, cst(y, mo, 26, 9)).await;
    }
    let a = account_id(s, &c, "A1").await;
    let bills = s.account_bills(a).await.unwrap();
    let mut counted: i64 = 0;
    let mut per_meter: i64 = 0;
    for b in &bills {
        let d = s.bill_detail(b.bill_id).await.unwrap();
        let sum: i64 = d.lines.iter().map(|l| l.amount_fen).sum();
        prop_assert_eq!(d.total_fen, sum, "bill {} total vs lines", d.id);
        for l in &d.lines {
            let exact = Quantity::from_scaled(l.quantity_e4).get()
                * meterpay::domain::Price::from_scaled(l.unit_price_e6).get();
            prop_assert_eq!(
                meterpay::domain::money::round_half_up_to_fen(exact).unwrap().get(),
                l.amount_fen,
                "line amount is quantity × price rounded half-up"
            );
        }
        counted += d.usage.iter().map(|u| u.quantity_e4).sum::<i64>();
        per_meter += d.readings.iter().map(|r| r.usage_e4).sum::<i64>();
    }
    let expected = true_total as i64 * 10_000;
    prop_assert_eq!(counted, expected, "usage counted over the year vs true consumption");
    prop_assert_eq!(per_meter, expected, "usage per meter on the bills vs true consumption");
    let outstanding: i64 = bills.iter().map(|b| b.outstanding_fen).sum();
    let receivable = s
        .balance(&LedgerAccount::Receivable { account_id: a })
        .await
        .unwrap()
        .get();
    prop_assert_eq!(receivable, outstanding);
    let regular = bills.iter().filter(|b| b.kind == "regular").count();
    prop_assert_eq!(regular, 12, "one bill per month");
    Ok(())
}

fn cases() -> u32 {
    let default = if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        8
    } else {
        24
    };
    std::env::var("BILLING_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_year_of_bills_charges_exactly_the_true_consumption_and_every_total_is_its_lines(sc in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(sc))?;
    }
}
