//! Late fees (违约金, `late_fee` in code) and payment allocation order (domain.md §3.2, §3.5, §3.6).
//!
//! The fee is recomputed from the due date every night with what is known by then, so partial
//! payments, credit notes and waivers are always respected, and the change since the last night
//! is what gets posted:
//!
//! ```text
//! for each day d from due_date + 1 to min(as_of, last day with principal unpaid):
//!     principal_d = base − principal paid up to the end of day d − 1
//!     rate_d      = residential ? residential rate
//!                   : (year(d) > year(bill period) ? cross-year rate : current-year rate)
//!     accrued    += principal_d × rate_d                 (exact, no rounding)
//! fee = round_half_up(accrued); if 0 < fee < minimum: fee = minimum; fee = min(fee, cap)
//! ```
//!
//! Nothing accrues if the principal was paid by the end of `due_date + grace_days`; once it is
//! unpaid after the grace days, the fee counts from the day after the due date (§3.6). The base is
//! the principal of the utilities that bear late fees (electricity by default), never a penalty.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::{round_half_up_to_fen, Fen, MoneyError};

/// A community's late-fee rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateFeePolicy {
    pub grace_days: i64,
    /// Daily rates, parts per million (1‰ = 1000).
    pub residential_ppm: i64,
    pub current_year_ppm: i64,
    pub cross_year_ppm: i64,
    pub minimum: Fen,
    /// Cap in basis points of the base; `None`: no cap.
    pub cap_bp: Option<i64>,
}

impl Default for LateFeePolicy {
    fn default() -> Self {
        LateFeePolicy {
            grace_days: 0,
            residential_ppm: 1000,
            current_year_ppm: 2000,
            cross_year_ppm: 3000,
            minimum: Fen::new(100),
            cap_bp: None,
        }
    }
}

/// One bill's facts for the computation.
#[derive(Debug, Clone)]
pub struct LateFeeInput {
    /// The late-fee-bearing principal (after credit notes that corrected the bill).
    pub base: Fen,
    pub due_date: NaiveDate,
    /// The calendar year of the bill's period (cross-year rule).
    pub bill_year: i32,
    pub residential: bool,
    /// Principal paid towards the base, by accounting date.
    pub payments: Vec<(NaiveDate, Fen)>,
    /// Accrue up to and including this day.
    pub as_of: NaiveDate,
}

/// A run of days with the same principal and rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceRun {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: i64,
    pub principal_fen: i64,
    pub rate_ppm: i64,
    /// Exact yuan accrued over the run.
    pub accrued: String,
}

/// The fee to date and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateFee {
    /// Exact yuan before rounding and the minimum.
    pub accrued: Decimal,
    pub fee: Fen,
    pub days: i64,
    pub runs: Vec<TraceRun>,
}

impl LateFee {
    pub fn none() -> LateFee {
        LateFee {
            accrued: Decimal::ZERO,
            fee: Fen::ZERO,
            days: 0,
            runs: Vec::new(),
        }
    }
}

/// Compute a bill's late fee as of a day.
pub fn compute(policy: &LateFeePolicy, input: &LateFeeInput) -> Result<LateFee, MoneyError> {
    if !input.base.is_positive() || input.as_of <= input.due_date {
        return Ok(LateFee::none());
    }
    let paid_by = |day: NaiveDate| -> Fen {
        Fen::new(
            input
                .payments
                .iter()
                .filter(|(d, _)| *d <= day)
                .map(|(_, a)| a.get())
                .sum(),
        )
    };
    let grace_end = input.due_date + chrono::Duration::days(policy.grace_days.max(0));
    if paid_by(grace_end.min(input.as_of)) >= input.base {
        return Ok(LateFee::none());
    }
    if input.as_of <= grace_end {
        // Still inside the grace days: nothing is due yet.
        return Ok(LateFee::none());
    }
    let mut runs: Vec<TraceRun> = Vec::new();
    let mut accrued = Decimal::ZERO;
    let mut days = 0i64;
    let mut d = input.due_date + chrono::Duration::days(1);
    while d <= input.as_of {
        let principal = input.base.get() - paid_by(d - chrono::Duration::days(1)).get();
        if principal <= 0 {
            break;
        }
        let rate = if input.residential {
            policy.residential_ppm
        } else if d.year() > input.bill_year {
            policy.cross_year_ppm
        } else {
            policy.current_year_ppm
        };
        let today = Decimal::new(principal, 2) * Decimal::new(rate, 6);
        accrued += today;
        days += 1;
        match runs.last_mut() {
            Some(r) if r.principal_fen == principal && r.rate_ppm == rate && r.to + chrono::Duration::days(1) == d => {
                r.to = d;
                r.days += 1;
                let sum: Decimal = r.accrued.parse::<Decimal>().unwrap_or_default() + today;
                r.accrued = sum.normalize().to_string();
            }
            _ => runs.push(TraceRun {
                from: d,
                to: d,
                days: 1,
                principal_fen: principal,
                rate_ppm: rate,
                accrued: today.normalize().to_string(),
            }),
        }
        d += chrono::Duration::days(1);
    }
    let mut fee = round_half_up_to_fen(accrued)?;
    if fee.is_positive() && fee < policy.minimum {
        fee = policy.minimum;
    }
    if let Some(bp) = policy.cap_bp {
        let cap = round_half_up_to_fen(input.base.to_yuan_decimal() * Decimal::new(bp, 4))?;
        fee = fee.min(cap);
    }
    Ok(LateFee {
        accrued: accrued.normalize(),
        fee,
        days,
        runs,
    })
}

/// The order in which a payment settles an account's open bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationOrder {
    OldestFirst,
    NewestFirst,
}

impl AllocationOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationOrder::OldestFirst => "oldest_first",
            AllocationOrder::NewestFirst => "newest_first",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "oldest_first" => Ok(AllocationOrder::OldestFirst),
            "newest_first" => Ok(AllocationOrder::NewestFirst),
            o => Err(format!("allocation order {o:?} is not oldest_first or newest_first")),
        }
    }
}

/// An open bill as allocation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenItem {
    pub bill_id: i64,
    pub due_date: NaiveDate,
    pub period: String,
    pub principal_outstanding: Fen,
    pub late_fee_outstanding: Fen,
}

/// What one bill receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Share {
    pub bill_id: i64,
    pub principal: Fen,
    pub late_fee: Fen,
}

impl Share {
    pub fn total(&self) -> Fen {
        Fen::new(self.principal.get() + self.late_fee.get())
    }
}

/// Sort open items into the order a payment settles them: by due date (oldest or newest
/// first), then period, then bill id.
pub fn order_items(items: &mut [OpenItem], order: AllocationOrder) {
    items.sort_by(|a, b| {
        let k = (a.due_date, &a.period, a.bill_id).cmp(&(b.due_date, &b.period, b.bill_id));
        match order {
            AllocationOrder::OldestFirst => k,
            AllocationOrder::NewestFirst => k.reverse(),
        }
    });
}

/// Spread `amount` over the items in order; within a bill the principal first (stops further
/// accrual, §3.5) unless `penalty_first`. Returns the shares and what is left over.
pub fn plan(items: &[OpenItem], amount: Fen, order: AllocationOrder, penalty_first: bool) -> (Vec<Share>, Fen) {
    let mut items = items.to_vec();
    order_items(&mut items, order);
    let mut left = amount.get().max(0);
    let mut out = Vec::new();
    for it in &items {
        if left == 0 {
            break;
        }
        let p_due = it.principal_outstanding.get().max(0);
        let f_due = it.late_fee_outstanding.get().max(0);
        let (first, second) = if penalty_first { (f_due, p_due) } else { (p_due, f_due) };
        let a = first.min(left);
        left -= a;
        let b = second.min(left);
        left -= b;
        let (principal, fee) = if penalty_first { (b, a) } else { (a, b) };
        if principal + fee > 0 {
            out.push(Share {
                bill_id: it.bill_id,
                principal: Fen::new(principal),
                late_fee: Fen::new(fee),
            });
        }
    }
    (out, Fen::new(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }
    fn input(base: i64, due: NaiveDate, as_of: NaiveDate, payments: Vec<(NaiveDate, i64)>) -> LateFeeInput {
        LateFeeInput {
            base: Fen::new(base),
            due_date: due,
            bill_year: due.year(),
            residential: true,
            payments: payments.into_iter().map(|(d, a)| (d, Fen::new(a))).collect(),
            as_of,
        }
    }

    #[test]
    fn example_1_fifteen_days_at_one_per_mille_on_300() {
        let f = compute(
            &LateFeePolicy::default(),
            &input(30000, d(2026, 3, 25), d(2026, 4, 9), vec![(d(2026, 4, 9), 30000)]),
        )
        .unwrap();
        assert_eq!((f.days, f.fee), (15, Fen::new(450)));
        // Later nights change nothing once it is paid.
        let later = compute(
            &LateFeePolicy::default(),
            &input(30000, d(2026, 3, 25), d(2026, 5, 1), vec![(d(2026, 4, 9), 30000)]),
        )
        .unwrap();
        assert_eq!(later.fee, Fen::new(450));
    }

    #[test]
    fn example_2_a_small_fee_is_charged_the_minimum() {
        let f = compute(
            &LateFeePolicy::default(),
            &input(5000, d(2026, 3, 1), d(2026, 3, 6), vec![]),
        )
        .unwrap();
        assert_eq!(f.accrued, Decimal::new(25, 2));
        assert_eq!(f.fee, Fen::new(100));
    }

    #[test]
    fn example_3_cross_year_days_at_three_per_mille() {
        let mut i = input(
            100_000,
            d(2023, 12, 25),
            d(2024, 1, 10),
            vec![(d(2024, 1, 10), 100_000)],
        );
        i.residential = false;
        i.bill_year = 2023;
        let f = compute(&LateFeePolicy::default(), &i).unwrap();
        assert_eq!(f.fee, Fen::new(4200));
        assert_eq!(f.runs.len(), 2);
        assert_eq!(
            (f.runs[0].days, f.runs[0].rate_ppm, f.runs[0].accrued.as_str()),
            (6, 2000, "12")
        );
        assert_eq!(
            (f.runs[1].days, f.runs[1].rate_ppm, f.runs[1].accrued.as_str()),
            (10, 3000, "30")
        );
    }

    #[test]
    fn example_4_partial_payment_reduces_the_principal_from_the_next_day() {
        let f = compute(
            &LateFeePolicy::default(),
            &input(
                40000,
                d(2026, 3, 1),
                d(2026, 3, 31),
                vec![(d(2026, 3, 11), 20000), (d(2026, 3, 21), 20000)],
            ),
        )
        .unwrap();
        assert_eq!(f.fee, Fen::new(600));
        assert_eq!(f.days, 20);
    }

    #[test]
    fn grace_days_forgive_an_early_payment_but_not_a_late_one() {
        let policy = LateFeePolicy {
            grace_days: 5,
            ..Default::default()
        };
        let paid_in_grace = compute(
            &policy,
            &input(30000, d(2026, 3, 25), d(2026, 4, 30), vec![(d(2026, 3, 29), 30000)]),
        )
        .unwrap();
        assert_eq!(paid_in_grace.fee, Fen::ZERO);
        let late = compute(
            &policy,
            &input(30000, d(2026, 3, 25), d(2026, 4, 9), vec![(d(2026, 4, 9), 30000)]),
        )
        .unwrap();
        assert_eq!(late.fee, Fen::new(450), "counted from the day after the due date");
        let inside = compute(&policy, &input(30000, d(2026, 3, 25), d(2026, 3, 28), vec![])).unwrap();
        assert_eq!(inside.fee, Fen::ZERO);
    }

    #[test]
    fn a_cap_limits_the_fee() {
        let policy = LateFeePolicy {
            cap_bp: Some(100),
            ..Default::default()
        };
        let f = compute(&policy, &input(30000, d(2026, 1, 1), d(2026, 12, 31), vec![])).unwrap();
        assert_eq!(f.fee, Fen::new(300), "1 % of 300.00");
    }

    #[test]
    fn allocation_settles_the_oldest_bill_first_principal_before_penalty() {
        let items = vec![
            OpenItem {
                bill_id: 2,
                due_date: d(2026, 4, 25),
                period: "2026-04".into(),
                principal_outstanding: Fen::new(5000),
                late_fee_outstanding: Fen::ZERO,
            },
            OpenItem {
                bill_id: 1,
                due_date: d(2026, 3, 25),
                period: "2026-03".into(),
                principal_outstanding: Fen::new(3000),
                late_fee_outstanding: Fen::new(100),
            },
        ];
        let (shares, left) = plan(&items, Fen::new(3500), AllocationOrder::OldestFirst, false);
        assert_eq!(
            shares,
            vec![
                Share {
                    bill_id: 1,
                    principal: Fen::new(3000),
                    late_fee: Fen::new(100)
                },
                Share {
                    bill_id: 2,
                    principal: Fen::new(400),
                    late_fee: Fen::ZERO
                }
            ]
        );
        assert_eq!(left, Fen::ZERO);
        let (shares, _) = plan(&items, Fen::new(50), AllocationOrder::OldestFirst, true);
        assert_eq!(
            shares[0].late_fee,
            Fen::new(50),
            "penalty first when the contract says so"
        );
        let (shares, left) = plan(&items, Fen::new(10_000), AllocationOrder::NewestFirst, false);
        assert_eq!(shares[0].bill_id, 2);
        assert_eq!(left, Fen::new(1900), "the overpayment is left for credit");
    }
}
