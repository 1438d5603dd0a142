//! The bill engine: one account's bill for a period, computed from its meters' readings, its
//! tariffs and what earlier bills counted. Pure: the store loads the inputs and writes the plan.
//!
//! **Usage per meter** (domain.md §2.5). Each meter's bill starts where its previous bill stopped
//! (its last billed closing reading), or at its first valid reading if it was never billed, and
//! ends at its latest valid reading before the end of the period. Usage is the sum over the chain
//! of readings of `(current − previous)`, or `(10^digits − previous) + current` where the
//! register wrapped (a rollover the readings check accepted), times the meter's multiplier.
//! Estimated readings inside the chain are skipped when a real reading follows them.
//!
//! **Meter replacement**: the old meter's chain ends at its final reading and the new meter's
//! starts at its initial reading, each with its own multiplier and digit count; the account's
//! usage for the utility is the sum over its meters.
//!
//! **Estimated readings, re-rated** (§2.5): when a meter's last billed reading was an estimate
//! and an actual reading arrives, the whole span from the last actual reading is re-rated as
//! one: its true usage is pro-rated by days over the estimated periods and this one; each
//! estimated period gets an **adjustment bill** crediting its original usage lines and charging
//! its re-rated share (so tier splits and price changes come out right), and this period's bill
//! rates its own share. Usage counted for the tiers is corrected by the same amounts.
//!
//! **Alerts** (预警): a period's usage above the account's own average (up to 12 earlier
//! periods, at least 3) times the community's multiple, or no usage at all on an occupied
//! premises that used some before (a stopped meter).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::readings::ReadingKind;
use crate::domain::ids::Utility;
use crate::domain::period::{cst_date, Period};
use crate::domain::tariff::{
    charge_lines, rate, split_by_days, total_of, LineDraft, LineKind, RateRequest, TariffVersion, TierBasis, TouPeriod,
};
use crate::domain::{Fen, Price, Quantity};

/// A valid reading as the engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainReading {
    pub id: i64,
    pub read_at: DateTime<Utc>,
    pub value: Decimal,
    pub kind: ReadingKind,
    /// Time-of-use register values read with it, if any.
    pub registers: BTreeMap<TouPeriod, Decimal>,
}

impl ChainReading {
    fn estimated(&self) -> bool {
        self.kind == ReadingKind::Estimated
    }
    fn date(&self) -> NaiveDate {
        cst_date(self.read_at)
    }
}

/// Where billing stopped on a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterState {
    /// The last billed closing reading (may be an estimate).
    pub last: ChainReading,
    /// The last billed reading that was not an estimate (where a re-rating span starts).
    pub anchor: ChainReading,
    /// The period of the bill that closed on the anchor (`None`: the anchor opened the meter).
    pub anchor_period: Option<Period>,
}

/// A meter with its state and readings.
#[derive(Debug, Clone)]
pub struct MeterInput {
    pub id: i64,
    pub meter_no: String,
    pub utility: Utility,
    pub digit_count: i32,
    pub multiplier: Decimal,
    pub state: Option<MeterState>,
    /// Valid readings before the period's end, oldest first: every one after the state's anchor
    /// (the anchor included), or all of them if the meter was never billed.
    pub readings: Vec<ChainReading>,
}

/// An earlier regular bill to re-rate.
#[derive(Debug, Clone)]
pub struct EstimatedBill {
    pub bill_id: i64,
    pub period: Period,
    /// Its read span for the utility (CST dates of the first opening and last closing reading).
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Usage counted for its period and utility.
    pub usage: Decimal,
    /// Usage it billed per meter.
    pub meter_usage: BTreeMap<i64, Decimal>,
    /// Its usage lines for the utility (what the adjustment credits).
    pub lines: Vec<LineDraft>,
}

/// A community's tariff versions by utility and customer class.
#[derive(Debug, Clone, Default)]
pub struct TariffBook {
    pub versions: BTreeMap<(Utility, String), Vec<TariffVersion>>,
}

impl TariffBook {
    pub fn new(versions: Vec<TariffVersion>) -> TariffBook {
        let mut b = TariffBook::default();
        for v in versions {
            b.versions
                .entry((v.utility, v.customer_class.clone()))
                .or_default()
                .push(v);
        }
        b
    }

    /// The versions for an account of `class`: its class's own if it has any, else `all`.
    pub fn for_class(&self, utility: Utility, class: &str) -> &[TariffVersion] {
        self.versions
            .get(&(utility, class.to_string()))
            .or_else(|| self.versions.get(&(utility, "all".to_string())))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
}

/// Everything one account's bill needs.
#[derive(Debug, Clone)]
pub struct AccountInput<'a> {
    pub account_id: i64,
    pub customer_class: String,
    pub opened_on: Option<NaiveDate>,
    pub area_m2: Option<Decimal>,
    pub occupied: bool,
    pub meters: Vec<MeterInput>,
    pub tariffs: &'a TariffBook,
    /// Usage counted per utility and period by earlier bills (corrections included).
    pub history: BTreeMap<(Utility, Period), Decimal>,
    /// Per utility, the regular bills to re-rate (loaded when [`needs_rerate`] says so).
    pub estimated: BTreeMap<Utility, Vec<EstimatedBill>>,
    pub period: Period,
    /// Usage alert multiple (e.g. 3 = three times the account's average).
    pub alert_multiple: Decimal,
}

/// A meter's readings on a bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillReadingPlan {
    pub meter_id: i64,
    pub utility: Utility,
    pub from: ChainReading,
    pub to: ChainReading,
    pub multiplier: Decimal,
    pub usage: Decimal,
    pub rollovers: u32,
}

/// Usage counted by a bill for a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePlan {
    pub utility: Utility,
    pub usage_period: Period,
    pub tier_year_start: Option<NaiveDate>,
    pub quantity: Decimal,
    pub estimated: bool,
}

/// A bill to write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BillPlan {
    pub lines: Vec<LineDraft>,
    pub total: Fen,
    pub readings: Vec<BillReadingPlan>,
    pub usage: Vec<UsagePlan>,
}

/// An adjustment bill correcting an earlier bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdjustmentPlan {
    pub adjusts_bill_id: i64,
    pub period: Period,
    pub reason: String,
    pub bill: BillPlan,
}

/// A meter's new billing state.
#[derive(Debug, Clone, PartialEq)]
pub struct StatePlan {
    pub meter_id: i64,
    pub state: MeterState,
}

/// A usage alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPlan {
    pub utility: Utility,
    pub kind: &'static str,
    pub usage: Decimal,
    pub baseline: Decimal,
    pub detail: String,
}

/// What billing one account produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountPlan {
    pub regular: Option<BillPlan>,
    pub adjustments: Vec<AdjustmentPlan>,
    pub states: Vec<StatePlan>,
    pub alerts: Vec<AlertPlan>,
}

/// The register delta between two values of a `digits`-digit register: wraps once if it fell.
pub fn register_delta(prev: Decimal, cur: Decimal, digits: i32) -> (Decimal, bool) {
    if cur >= prev {
        (cur - prev, false)
    } else {
        let range = Decimal::from(10i64.pow(digits.clamp(1, 12) as u32));
        (range - prev + cur, true)
    }
}

/// Usage along a chain of readings (see the module documentation), × multiplier.
fn chain_usage(points: &[&ChainReading], digits: i32, multiplier: Decimal) -> (Decimal, u32) {
    let mut usage = Decimal::ZERO;
    let mut wraps = 0;
    for w in points.windows(2) {
        let (d, wrapped) = register_delta(w[0].value, w[1].value, digits);
        usage += d;
        wraps += wrapped as u32;
    }
    (usage * multiplier, wraps)
}

/// TOU register deltas between two readings (both must carry the registers).
fn register_shares(
    from: &ChainReading,
    to: &ChainReading,
    digits: i32,
    multiplier: Decimal,
) -> Option<BTreeMap<TouPeriod, Decimal>> {
    if from.registers.is_empty() || to.registers.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    for (p, v) in &to.registers {
        let prev = from.registers.get(p)?;
        out.insert(*p, register_delta(*prev, *v, digits).0 * multiplier);
    }
    Some(out)
}

/// What a meter contributes this period.
struct MeterUse<'m> {
    meter: &'m MeterInput,
    start: &'m ChainReading,
    closing: &'m ChainReading,
    /// Points of the chain from `start` to `closing`.
    points: Vec<&'m ChainReading>,
    rerate: bool,
}

impl<'m> MeterUse<'m> {
    fn of(meter: &'m MeterInput) -> Option<MeterUse<'m>> {
        let (start, after): (&ChainReading, Vec<&ChainReading>) = match &meter.state {
            Some(st) => {
                let rerate_candidate = st.last.estimated();
                let after: Vec<&ChainReading> = meter.readings.iter().filter(|r| r.read_at > st.last.read_at).collect();
                let closing = *after.last()?;
                if rerate_candidate && !closing.estimated() {
                    // Re-rate from the anchor through every real reading since.
                    let pts: Vec<&ChainReading> = meter
                        .readings
                        .iter()
                        .filter(|r| r.read_at > st.anchor.read_at && (!r.estimated() || r.id == closing.id))
                        .collect();
                    let mut points = vec![&st.anchor];
                    points.extend(pts);
                    return Some(MeterUse {
                        meter,
                        start: &st.last,
                        closing,
                        points,
                        rerate: true,
                    });
                }
                (&st.last, after)
            }
            None => {
                let first = meter.readings.first()?;
                let after: Vec<&ChainReading> = meter.readings.iter().skip(1).collect();
                (first, after)
            }
        };
        let closing = *after.last()?;
        let mut points = vec![start];
        if start.estimated() {
            // Consecutive estimates: the next estimate continues from the last one.
            points.push(closing);
        } else {
            points.extend(after.iter().filter(|r| !r.estimated() || r.id == closing.id));
        }
        Some(MeterUse {
            meter,
            start,
            closing,
            points,
            rerate: false,
        })
    }

    fn usage(&self) -> (Decimal, u32) {
        chain_usage(&self.points, self.meter.digit_count, self.meter.multiplier)
    }

    fn new_state(&self, period: Period) -> MeterState {
        if self.closing.estimated() {
            let (anchor, anchor_period) = match &self.meter.state {
                Some(st) => (st.anchor.clone(), st.anchor_period),
                None => (self.start.clone(), None),
            };
            MeterState {
                last: self.closing.clone(),
                anchor,
                anchor_period,
            }
        } else {
            MeterState {
                last: self.closing.clone(),
                anchor: self.closing.clone(),
                anchor_period: Some(period),
            }
        }
    }
}

/// Whether a meter's bill this period re-rates earlier estimated bills (the store then loads
/// them into [`AccountInput::estimated`]). Returns the anchor period bills must be after.
pub fn needs_rerate(meter: &MeterInput) -> Option<Option<Period>> {
    let u = MeterUse::of(meter)?;
    u.rerate.then(|| meter.state.as_ref().and_then(|s| s.anchor_period))
}

/// The tier-year start for a utility's versions at a date (annual tariffs), else `None`.
fn tier_year_of(versions: &[TariffVersion], period: Period, at: NaiveDate) -> Option<NaiveDate> {
    let v = versions
        .iter()
        .filter(|v| v.effective_from <= at)
        .max_by_key(|v| v.effective_from)
        .or_else(|| versions.iter().min_by_key(|v| v.effective_from))?;
    (v.tier_basis == TierBasis::Annual).then(|| period.tier_year_start(v.tier_year_start_month))
}

/// Usage counted in `year_start`'s tier year before `period`, with this run's corrections.
fn cum_before(
    history: &BTreeMap<(Utility, Period), Decimal>,
    corrections: &BTreeMap<Period, Decimal>,
    utility: Utility,
    year_start: Option<NaiveDate>,
    period: Period,
) -> Decimal {
    let Some(ys) = year_start else { return Decimal::ZERO };
    let first = Period::of_date(ys);
    let from_history: Decimal = history
        .range((utility, first)..(utility, period))
        .map(|(_, q)| *q)
        .sum();
    let corrected: Decimal = corrections.range(first..period).map(|(_, q)| *q).sum();
    from_history + corrected
}

fn zero_line(utility: Utility, versions: &[TariffVersion], period: Period) -> Result<LineDraft, String> {
    let (component, price) = versions
        .last()
        .and_then(|v| {
            v.definition
                .components
                .first()
                .map(|c| (c.kind.clone(), c.prices.first().copied()))
        })
        .unwrap_or_else(|| ("usage".into(), None));
    let mut l = LineDraft::new(
        Some(utility),
        LineKind::Usage,
        &component,
        format!("{utility}: no usage this period"),
        Quantity::zero(),
        price.unwrap_or_else(Price::zero),
    )
    .map_err(|e| e.to_string())?;
    l.usage_period = Some(period);
    Ok(l)
}

/// Plan one account's bill (and any adjustment bills) for `input.period`. An error is a reason
/// to skip the account this run (reported, nothing written for it).
pub fn plan_account(input: &AccountInput<'_>) -> Result<AccountPlan, String> {
    let period = input.period;
    let mut plan = AccountPlan::default();
    let mut lines: Vec<LineDraft> = Vec::new();
    let mut readings: Vec<BillReadingPlan> = Vec::new();
    let mut usage_rows: Vec<UsagePlan> = Vec::new();
    let mut utilities: Vec<Utility> = input.meters.iter().map(|m| m.utility).collect();
    utilities.sort();
    utilities.dedup();
    for utility in utilities {
        let uses: Vec<MeterUse> = input
            .meters
            .iter()
            .filter(|m| m.utility == utility)
            .filter_map(MeterUse::of)
            .collect();
        if uses.is_empty() {
            continue;
        }
        let versions = input.tariffs.for_class(utility, &input.customer_class);
        if versions.is_empty() {
            return Err(format!(
                "no {utility} tariff for customer class {} in this community",
                input.customer_class
            ));
        }
        let to = uses.iter().map(|u| u.closing.date()).max().expect("non-empty");
        let mut from = uses.iter().map(|u| u.start.date()).min().expect("non-empty");
        let rerating = uses.iter().any(|u| u.rerate);
        let chain: &[EstimatedBill] = if rerating {
            input.estimated.get(&utility).map(|v| v.as_slice()).unwrap_or(&[])
        } else {
            &[]
        };
        // This period's usage (and, when re-rating, the span's).
        let mut current_total = Decimal::ZERO;
        let mut span_total: Decimal = chain.iter().map(|b| b.usage).sum();
        let mut shares_acc: BTreeMap<TouPeriod, Decimal> = BTreeMap::new();
        let mut shares_ok = true;
        for u in &uses {
            let (usage, wraps) = u.usage();
            let meter_usage = if u.rerate {
                // Its earlier estimated bills billed part of this; they are credited below.
                let anchor_period = u.meter.state.as_ref().and_then(|s| s.anchor_period);
                let billed: Decimal = chain
                    .iter()
                    .filter(|b| anchor_period.is_none_or(|a| b.period > a))
                    .filter_map(|b| b.meter_usage.get(&u.meter.id))
                    .sum();
                span_total += usage - billed;
                usage - billed
            } else {
                span_total += usage;
                usage
            };
            current_total += meter_usage;
            let share_from = if u.rerate {
                *u.points.first().expect("anchor")
            } else {
                u.start
            };
            match register_shares(share_from, u.closing, u.meter.digit_count, u.meter.multiplier) {
                Some(s) => {
                    for (p, v) in s {
                        *shares_acc.entry(p).or_default() += v;
                    }
                }
                None => shares_ok = false,
            }
            readings.push(BillReadingPlan {
                meter_id: u.meter.id,
                utility,
                from: u.start.clone(),
                to: u.closing.clone(),
                multiplier: u.meter.multiplier,
                usage: meter_usage,
                rollovers: wraps,
            });
            plan.states.push(StatePlan {
                meter_id: u.meter.id,
                state: u.new_state(period),
            });
        }
        let tou_shares = (shares_ok && !shares_acc.is_empty()).then_some(shares_acc);
        let estimated_now = uses.iter().any(|u| u.closing.estimated());
        let mut corrections: BTreeMap<Period, Decimal> = BTreeMap::new();
        let this_usage = if !chain.is_empty() {
            // Pro-rate the span by days over the estimated periods and this one.
            let last_to = chain.last().expect("non-empty").to;
            from = last_to;
            let mut days: Vec<i64> = chain.iter().map(|b| (b.to - b.from).num_days().max(0)).collect();
            days.push((to - last_to).num_days().max(0));
            let shares = split_by_days(span_total, &days);
            for (b, share) in chain.iter().zip(&shares) {
                let ys = tier_year_of(versions, b.period, b.from);
                let cum = cum_before(&input.history, &corrections, utility, ys, b.period);
                let rated = rate(&RateRequest {
                    utility,
                    usage_period: b.period,
                    versions,
                    from: b.from,
                    to: b.to,
                    usage: *share,
                    cum_before: cum,
                    opened_on: input.opened_on,
                    tou_shares: tou_shares.clone(),
                    kind: LineKind::Adjustment,
                    label: format!("re-rated {}: ", b.period),
                })
                .map_err(|e| e.to_string())?;
                let mut adj_lines = Vec::new();
                for l in &b.lines {
                    adj_lines.push(
                        l.credit(format!("credit of estimated {}: {}", b.period, l.description))
                            .map_err(|e| e.to_string())?,
                    );
                }
                adj_lines.extend(rated.lines);
                if adj_lines.is_empty() {
                    adj_lines.push(zero_line(utility, versions, b.period)?);
                }
                let total = total_of(&adj_lines).map_err(|e| e.to_string())?;
                let correction = *share - b.usage;
                *corrections.entry(b.period).or_default() += correction;
                plan.adjustments.push(AdjustmentPlan {
                    adjusts_bill_id: b.bill_id,
                    period: b.period,
                    reason: format!(
                        "{utility} {} was billed on an estimate of {}; the actual reading of {to} re-rates it at {}",
                        b.period,
                        b.usage.normalize(),
                        share.normalize()
                    ),
                    bill: BillPlan {
                        lines: adj_lines,
                        total,
                        readings: Vec::new(),
                        usage: vec![UsagePlan {
                            utility,
                            usage_period: b.period,
                            tier_year_start: ys,
                            quantity: correction,
                            estimated: false,
                        }],
                    },
                });
            }
            *shares.last().expect("this period's share")
        } else {
            current_total
        };
        let ys = tier_year_of(versions, period, from);
        let cum = cum_before(&input.history, &corrections, utility, ys, period);
        let rated = rate(&RateRequest {
            utility,
            usage_period: period,
            versions,
            from,
            to,
            usage: this_usage,
            cum_before: cum,
            opened_on: input.opened_on,
            tou_shares,
            kind: LineKind::Usage,
            label: String::new(),
        })
        .map_err(|e| e.to_string())?;
        let mut ulines = rated.lines;
        if let Some(last) = rated
            .last_version_id
            .and_then(|id| versions.iter().find(|v| v.id == id))
        {
            ulines.extend(charge_lines(last, period, input.area_m2).map_err(|e| e.to_string())?);
        }
        if ulines.is_empty() {
            ulines.push(zero_line(utility, versions, period)?);
        }
        lines.extend(ulines);
        usage_rows.push(UsagePlan {
            utility,
            usage_period: period,
            tier_year_start: ys,
            quantity: this_usage,
            estimated: estimated_now,
        });
        // Alerts against the account's own history.
        let past: Vec<Decimal> = (1..=12)
            .filter_map(|k| {
                let p = period.plus_months(-k);
                input
                    .history
                    .get(&(utility, p))
                    .map(|q| *q + corrections.get(&p).copied().unwrap_or_default())
            })
            .collect();
        if past.len() >= 3 {
            let baseline = past.iter().copied().sum::<Decimal>() / Decimal::from(past.len());
            if baseline > Decimal::ZERO && this_usage > baseline * input.alert_multiple {
                plan.alerts.push(AlertPlan {
                    utility,
                    kind: "high_usage",
                    usage: this_usage,
                    baseline: baseline.round_dp(4),
                    detail: format!(
                        "{utility} usage {} in {period} is over {} times the account's average of {} over {} periods",
                        this_usage.normalize(),
                        input.alert_multiple.normalize(),
                        baseline.round_dp(2).normalize(),
                        past.len()
                    ),
                });
            } else if baseline > Decimal::ZERO && this_usage.is_zero() && input.occupied {
                plan.alerts.push(AlertPlan {
                    utility,
                    kind: "stopped_meter",
                    usage: this_usage,
                    baseline: baseline.round_dp(4),
                    detail: format!(
                        "no {utility} usage in {period} on an occupied premises that averaged {}: the meter may have stopped",
                        baseline.round_dp(2).normalize()
                    ),
                });
            }
        }
    }
    if !lines.is_empty() {
        let total = total_of(&lines).map_err(|e| e.to_string())?;
        plan.regular = Some(BillPlan {
            lines,
            total,
            readings,
            usage: usage_rows,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tariff::{Component, PartYear, TariffDefinition};

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        // 08:00 China time on that day.
        crate::domain::period::cst_midnight(NaiveDate::from_ymd_opt(y, m, d).unwrap()) + chrono::Duration::hours(8)
    }
    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }
    fn r(id: i64, at: DateTime<Utc>, v: &str, kind: ReadingKind) -> ChainReading {
        ChainReading {
            id,
            read_at: at,
            value: dec(v),
            kind,
            registers: BTreeMap::new(),
        }
    }
    fn book(thresholds: &[&str], prices: &[&str]) -> TariffBook {
        TariffBook::new(vec![TariffVersion {
            id: 1,
            community_id: 1,
            utility: Utility::Electricity,
            customer_class: "all".into(),
            name: "monthly".into(),
            effective_from: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
            effective_to: None,
            tier_basis: TierBasis::Period,
            tier_year_start_month: 1,
            part_year: PartYear::None,
            definition: TariffDefinition {
                thresholds: thresholds.iter().map(|x| Quantity::parse(x).unwrap()).collect(),
                components: vec![Component {
                    kind: "energy".into(),
                    name: "Electricity".into(),
                    prices: prices.iter().map(|x| Price::parse(x).unwrap()).collect(),
                    tou: None,
                    quantity_factor: Quantity::parse("1").unwrap(),
                    payable: None,
                }],
                fixed: vec![],
                per_area: vec![],
            },
            source_document: None,
        }])
    }
    fn meter(id: i64, digits: i32, mult: &str, state: Option<MeterState>, readings: Vec<ChainReading>) -> MeterInput {
        MeterInput {
            id,
            meter_no: format!("M{id}"),
            utility: Utility::Electricity,
            digit_count: digits,
            multiplier: dec(mult),
            state,
            readings,
        }
    }
    fn input<'a>(b: &'a TariffBook, period: &str, meters: Vec<MeterInput>) -> AccountInput<'a> {
        AccountInput {
            account_id: 1,
            customer_class: "residential".into(),
            opened_on: None,
            area_m2: None,
            occupied: true,
            meters,
            tariffs: b,
            history: BTreeMap::new(),
            estimated: BTreeMap::new(),
            period: Period::parse(period).unwrap(),
            alert_multiple: dec("3"),
        }
    }

    #[test]
    fn the_worked_ct_rollover_bills_8100_kwh() {
        // §2.5: 6 digits, CT 150/5 (× 30), 999,850 → 000,120: 270 × 30.
        let b = book(&[], &["1"]);
        let m = meter(
            1,
            6,
            "30",
            None,
            vec![
                r(1, t(2026, 1, 1), "999850", ReadingKind::Actual),
                r(2, t(2026, 2, 1), "120", ReadingKind::Actual),
            ],
        );
        let plan = plan_account(&input(&b, "2026-02", vec![m])).unwrap();
        let bill = plan.regular.unwrap();
        assert_eq!(bill.usage[0].quantity, dec("8100"));
        assert_eq!(bill.readings[0].rollovers, 1);
    }

    #[test]
    fn a_meter_replacement_sums_both_meters() {
        // §2.5: old 4,512 → final 4,600 (88), new initial 3 → 152 (149): 237.
        let b = book(&[], &["1"]);
        let old_state = MeterState {
            last: r(1, t(2026, 1, 1), "4512", ReadingKind::Actual),
            anchor: r(1, t(2026, 1, 1), "4512", ReadingKind::Actual),
            anchor_period: Some(Period::parse("2026-01").unwrap()),
        };
        let old = meter(
            1,
            5,
            "1",
            Some(old_state.clone()),
            vec![old_state.last.clone(), r(2, t(2026, 1, 15), "4600", ReadingKind::Final)],
        );
        let new = meter(
            2,
            5,
            "1",
            None,
            vec![
                r(3, t(2026, 1, 15), "3", ReadingKind::Initial),
                r(4, t(2026, 2, 1), "152", ReadingKind::Actual),
            ],
        );
        let plan = plan_account(&input(&b, "2026-02", vec![old, new])).unwrap();
        let bill = plan.regular.unwrap();
        assert_eq!(bill.usage[0].quantity, dec("237"));
        assert_eq!(
            bill.readings.iter().map(|x| x.usage).collect::<Vec<_>>(),
            vec![dec("88"), dec("149")]
        );
    }

    #[test]
    fn an_estimate_followed_by_an_actual_re_rates_the_span() {
        // §2.5: monthly tier 180, +0.05; 5,000 → 5,250 (est.) → 5,380: 190 + 190, not 250 + 130.
        let b = book(&["180"], &["0.50", "0.55"]);
        let p1 = plan_account(&input(
            &b,
            "2026-01",
            vec![meter(
                1,
                6,
                "1",
                None,
                vec![
                    r(1, t(2025, 12, 2), "5000", ReadingKind::Actual),
                    r(2, t(2026, 1, 1), "5250", ReadingKind::Estimated),
                ],
            )],
        ))
        .unwrap();
        let b1 = p1.regular.clone().unwrap();
        assert_eq!(b1.total, Fen::new(12850), "180 × 0.50 + 70 × 0.55");
        let st = p1.states[0].state.clone();
        assert_eq!(st.anchor.id, 1);
        let m = meter(
            1,
            6,
            "1",
            Some(st.clone()),
            vec![
                st.anchor.clone(),
                st.last.clone(),
                r(3, t(2026, 1, 31), "5380", ReadingKind::Actual),
            ],
        );
        let mut i = input(&b, "2026-02", vec![m.clone()]);
        assert_eq!(needs_rerate(&m), Some(None));
        i.estimated.insert(
            Utility::Electricity,
            vec![EstimatedBill {
                bill_id: 10,
                period: Period::parse("2026-01").unwrap(),
                from: NaiveDate::from_ymd_opt(2025, 12, 2).unwrap(),
                to: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                usage: dec("250"),
                meter_usage: BTreeMap::from([(1, dec("250"))]),
                lines: b1.lines.clone(),
            }],
        );
        i.history
            .insert((Utility::Electricity, Period::parse("2026-01").unwrap()), dec("250"));
        let p2 = plan_account(&i).unwrap();
        let adj = &p2.adjustments[0];
        assert_eq!(adj.adjusts_bill_id, 10);
        assert_eq!(adj.bill.total, Fen::new(-3300), "re-rated 95.50 − billed 128.50");
        let regular = p2.regular.unwrap();
        assert_eq!(regular.total, Fen::new(9550));
        let all = b1.total.get() + adj.bill.total.get() + regular.total.get();
        let naive = 12850 + 13000 * 50 / 100;
        assert_eq!(naive - all, 250, "the naive method over-charges 50 kWh × 0.05 = 2.50");
        assert_eq!(
            regular.usage[0].quantity + adj.bill.usage[0].quantity + dec("250"),
            dec("380")
        );
        assert_eq!(p2.states[0].state.anchor.id, 3);
    }
}
