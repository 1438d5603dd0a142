//! Tariffs and rating: how usage becomes bill lines (domain.md §2).
//!
//! A tariff is a series of effective-dated **versions** per community, utility and customer
//! class. A version holds:
//!
//! - `thresholds`: the upper bounds (inclusive, in kWh or m³) of every tier but the last, counted
//!   per billing period (`tier_basis = "period"`) or cumulatively over a tier year starting on the
//!   first of `tier_year_start_month` (`"annual"`, the annual ladder). Annual thresholds are
//!   pro-rated for an account opened inside the tier year (`part_year`: `started_month` counts
//!   the opening month as a full month, `whole_months` counts only full months, `none` does not
//!   pro-rate).
//! - `components`: what a unit costs, each with a price per tier (or one price for all tiers),
//!   optionally per time-of-use period, and a quantity factor (sewage billed on 90 % of volume).
//!   A component's revenue goes to `revenue:{utility}` unless it names a `payable` (a
//!   pass-through charge, credited to `payable:{name}`).
//! - `fixed` charges (yuan per period) and `per_area` charges (yuan per m² of the premises per
//!   period), charged once per bill for each utility billed.
//!
//! Rating rules:
//! - **Tiers** (§2.1): `tier_k = max(0, min(c + u, T_k) − max(c, T_{k−1}))` where `c` is the usage
//!   already counted (in the tier year, or 0 for period tiers) and `u` this usage; a threshold
//!   kWh belongs to the lower tier.
//! - **Time of use** (§2.2): the tier split is decided on total usage; each tier's part is divided
//!   between the TOU periods in proportion to the registers' shares, in whole units by the
//!   largest-remainder method.
//! - **Price change inside a period** (§2.4): usage is split by days at each version boundary,
//!   rounded to whole units with the remainder going to the later segment; the tier counter
//!   continues across the segments.
//! - **Lines** (§1.1, §2.3): one line per component, tier and TOU period, each
//!   `round_half_up(quantity × unit_price)` to the fen; a component with one price for all tiers
//!   gets one line on the whole quantity.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use rust_decimal::prelude::*;
use serde::{Deserialize, Serialize};

use super::ids::Utility;
use super::money::{line_amount, Fen, MoneyError, Price, Quantity};
use super::period::Period;

/// How tier thresholds are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierBasis {
    /// Thresholds apply to each billing period's usage.
    Period,
    /// Thresholds apply to usage accumulated over the tier year (the annual ladder).
    Annual,
}

impl TierBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            TierBasis::Period => "period",
            TierBasis::Annual => "annual",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "period" => Ok(TierBasis::Period),
            "annual" => Ok(TierBasis::Annual),
            o => Err(format!("tier_basis {o:?} is not period or annual")),
        }
    }
}

/// How annual thresholds are pro-rated for an account opened inside the tier year (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartYear {
    /// Any started month counts as a full month (opened 10 April → 9 of 12 months).
    StartedMonth,
    /// Only full months count (opened 10 April → 8 of 12 months).
    WholeMonths,
    /// No pro-rating.
    None,
}

impl PartYear {
    pub fn as_str(self) -> &'static str {
        match self {
            PartYear::StartedMonth => "started_month",
            PartYear::WholeMonths => "whole_months",
            PartYear::None => "none",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "started_month" => Ok(PartYear::StartedMonth),
            "whole_months" => Ok(PartYear::WholeMonths),
            "none" => Ok(PartYear::None),
            o => Err(format!("part_year {o:?} is not started_month, whole_months or none")),
        }
    }

    /// The months of the tier year starting `year_start` an account opened on `opened` is billed
    /// for (12 when it was open before the year started).
    pub fn months(self, year_start: NaiveDate, opened: Option<NaiveDate>) -> i64 {
        let Some(opened) = opened else { return 12 };
        if opened <= year_start || self == PartYear::None {
            return 12;
        }
        let before = Period::of_date(opened).months_since(Period::of_date(year_start)) as i64;
        if before >= 12 {
            return 12;
        }
        let mut months = 12 - before;
        if self == PartYear::WholeMonths && opened.day() > 1 {
            months -= 1;
        }
        months.max(0)
    }

    /// A threshold pro-rated by [`PartYear::months`], rounded half-up to whole units.
    pub fn prorate(self, threshold: Decimal, year_start: NaiveDate, opened: Option<NaiveDate>) -> Decimal {
        match self.months(year_start, opened) {
            12 => threshold,
            m => round_units(threshold * Decimal::from(m) / Decimal::from(12)),
        }
    }
}

/// A time-of-use register and its price period (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouPeriod {
    Sharp,
    Peak,
    Flat,
    Valley,
}

impl TouPeriod {
    pub const ALL: [TouPeriod; 4] = [TouPeriod::Sharp, TouPeriod::Peak, TouPeriod::Flat, TouPeriod::Valley];
    pub fn as_str(self) -> &'static str {
        match self {
            TouPeriod::Sharp => "sharp",
            TouPeriod::Peak => "peak",
            TouPeriod::Flat => "flat",
            TouPeriod::Valley => "valley",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sharp" | "尖" => Ok(TouPeriod::Sharp),
            "peak" | "峰" => Ok(TouPeriod::Peak),
            "flat" | "平" => Ok(TouPeriod::Flat),
            "valley" | "谷" => Ok(TouPeriod::Valley),
            o => Err(format!("register {o:?} is not sharp, peak, flat or valley")),
        }
    }
}

fn one() -> Quantity {
    Quantity::parse("1").expect("1 is a quantity")
}
fn is_one(q: &Quantity) -> bool {
    *q == one()
}

/// One priced component of a tariff (the whole price for electricity; water fee, resource fee,
/// sewage fee for water).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// A short code: `energy`, `water_fee`, `resource_fee`, `sewage_fee`, …
    pub kind: String,
    /// How lines are labelled (defaults to the kind).
    #[serde(default)]
    pub name: String,
    /// Yuan per unit, one per tier or a single price for all tiers (decimal strings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<Price>,
    /// Time-of-use prices: per register, one per tier or a single price. Replaces `prices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tou: Option<BTreeMap<TouPeriod, Vec<Price>>>,
    /// The billed quantity is the usage × this factor (e.g. sewage on 90 % of volume: "0.9").
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub quantity_factor: Quantity,
    /// Credit this component to `payable:{name}` (a pass-through charge) instead of revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payable: Option<String>,
}

impl Component {
    fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.kind
        } else {
            &self.name
        }
    }
}

/// Serialise a `Fen` as a yuan string (`"2.00"`), parsed exactly.
pub mod yuan {
    use super::Fen;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Fen, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fen, D::Error> {
        let s = String::deserialize(d)?;
        Fen::parse_yuan(&s).map_err(serde::de::Error::custom)
    }
}

/// A charge per bill, independent of usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedCharge {
    pub name: String,
    /// Yuan per period, e.g. `"2.00"`.
    #[serde(with = "yuan")]
    pub amount: Fen,
}

/// A charge per m² of the premises' floor area per bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaCharge {
    pub name: String,
    /// Yuan per m² per period.
    pub price: Price,
}

/// What a version charges: stored whole as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffDefinition {
    #[serde(default)]
    pub thresholds: Vec<Quantity>,
    pub components: Vec<Component>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixed: Vec<FixedCharge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_area: Vec<AreaCharge>,
}

impl TariffDefinition {
    pub fn tiers(&self) -> usize {
        self.thresholds.len() + 1
    }
    pub fn uses_tou(&self) -> bool {
        self.components.iter().any(|c| c.tou.is_some())
    }
}

/// A stored tariff version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TariffVersion {
    pub id: i64,
    pub community_id: i64,
    pub utility: Utility,
    pub customer_class: String,
    pub name: String,
    pub effective_from: NaiveDate,
    /// First day no longer in effect; `None`: until the next version.
    pub effective_to: Option<NaiveDate>,
    pub tier_basis: TierBasis,
    pub tier_year_start_month: u32,
    pub part_year: PartYear,
    pub definition: TariffDefinition,
    pub source_document: Option<String>,
}

/// A version as written in a tariff file or sent to the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffSpec {
    /// The community's code.
    pub community: String,
    pub utility: Utility,
    /// `all` (default), `residential` or `non_residential`.
    #[serde(default = "all_classes")]
    pub customer_class: String,
    pub name: String,
    #[serde(deserialize_with = "de_date")]
    pub effective_from: NaiveDate,
    #[serde(default, deserialize_with = "de_opt_date")]
    pub effective_to: Option<NaiveDate>,
    #[serde(default = "period_basis")]
    pub tier_basis: TierBasis,
    #[serde(default = "january")]
    pub tier_year_start_month: u32,
    #[serde(default = "started_month")]
    pub part_year: PartYear,
    #[serde(default)]
    pub source_document: Option<String>,
    #[serde(default)]
    pub thresholds: Vec<Quantity>,
    pub components: Vec<Component>,
    #[serde(default)]
    pub fixed: Vec<FixedCharge>,
    #[serde(default)]
    pub per_area: Vec<AreaCharge>,
}

fn all_classes() -> String {
    "all".into()
}
fn period_basis() -> TierBasis {
    TierBasis::Period
}
fn january() -> u32 {
    1
}
fn started_month() -> PartYear {
    PartYear::StartedMonth
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DateInput {
    Text(String),
    Toml(toml::value::Datetime),
}

fn date_from_input(d: DateInput) -> Result<NaiveDate, String> {
    let text = match d {
        DateInput::Text(s) => s,
        DateInput::Toml(t) => t.to_string(),
    };
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| format!("{text:?} is not a date YYYY-MM-DD"))
}

fn de_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    date_from_input(DateInput::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    match Option::<DateInput>::deserialize(d)? {
        None => Ok(None),
        Some(v) => date_from_input(v).map(Some).map_err(serde::de::Error::custom),
    }
}

impl TariffSpec {
    pub fn definition(&self) -> TariffDefinition {
        TariffDefinition {
            thresholds: self.thresholds.clone(),
            components: self.components.clone(),
            fixed: self.fixed.clone(),
            per_area: self.per_area.clone(),
        }
    }

    /// Check the version makes sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let who = format!("tariff {:?} ({} from {})", self.name, self.utility, self.effective_from);
        if self.name.trim().is_empty() {
            return Err("a tariff needs a name".into());
        }
        if !["all", "residential", "non_residential"].contains(&self.customer_class.as_str()) {
            return Err(format!(
                "{who}: customer_class {:?} is not all, residential or non_residential",
                self.customer_class
            ));
        }
        if !(1..=12).contains(&self.tier_year_start_month) {
            return Err(format!("{who}: tier_year_start_month must be 1 to 12"));
        }
        if let Some(to) = self.effective_to {
            if to <= self.effective_from {
                return Err(format!("{who}: effective_to must be after effective_from"));
            }
        }
        let mut prev = Decimal::ZERO;
        for t in &self.thresholds {
            if t.get() <= prev {
                return Err(format!(
                    "{who}: thresholds must be positive and increasing (got {t} after {prev})"
                ));
            }
            prev = t.get();
        }
        let tiers = self.thresholds.len() + 1;
        if self.components.is_empty() {
            return Err(format!("{who}: at least one component (a price) is needed"));
        }
        let mut kinds = std::collections::HashSet::new();
        for c in &self.components {
            let ok_kind = !c.kind.is_empty() && c.kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            if !ok_kind {
                return Err(format!(
                    "{who}: component kind {:?} must be lowercase letters and _",
                    c.kind
                ));
            }
            if !kinds.insert(c.kind.clone()) {
                return Err(format!("{who}: component {:?} appears twice", c.kind));
            }
            let check_prices = |what: &str, ps: &[Price]| -> Result<(), String> {
                if ps.len() != 1 && ps.len() != tiers {
                    return Err(format!(
                        "{who}: component {} {what} has {} prices; give one, or one per tier ({tiers})",
                        c.kind,
                        ps.len()
                    ));
                }
                if ps.iter().any(|p| p.get().is_sign_negative()) {
                    return Err(format!("{who}: component {} has a negative price", c.kind));
                }
                Ok(())
            };
            match (&c.tou, c.prices.is_empty()) {
                (Some(_), false) => {
                    return Err(format!("{who}: component {} gives both prices and tou prices", c.kind))
                }
                (None, true) => return Err(format!("{who}: component {} has no prices", c.kind)),
                (Some(tou), true) => {
                    if tou.is_empty() {
                        return Err(format!("{who}: component {} has empty tou prices", c.kind));
                    }
                    for (p, ps) in tou {
                        check_prices(p.as_str(), ps)?;
                    }
                }
                (None, false) => check_prices("prices", &c.prices)?,
            }
            let f = c.quantity_factor.get();
            if f <= Decimal::ZERO || f > Decimal::from(10) {
                return Err(format!(
                    "{who}: component {} quantity_factor must be in (0, 10]",
                    c.kind
                ));
            }
            if let Some(p) = &c.payable {
                if p.trim().is_empty() || p.contains(':') {
                    return Err(format!("{who}: component {} payable must be a plain name", c.kind));
                }
            }
        }
        for f in &self.fixed {
            if f.name.trim().is_empty() || !f.amount.is_positive() {
                return Err(format!("{who}: fixed charges need a name and a positive amount"));
            }
        }
        for a in &self.per_area {
            if a.name.trim().is_empty() || a.price.get() <= Decimal::ZERO {
                return Err(format!("{who}: per-area charges need a name and a positive price"));
            }
        }
        Ok(())
    }
}

/// The kind of a bill line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Usage,
    Fixed,
    PerArea,
    Adjustment,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Usage => "usage",
            LineKind::Fixed => "fixed",
            LineKind::PerArea => "per_area",
            LineKind::Adjustment => "adjustment",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "usage" => Ok(LineKind::Usage),
            "fixed" => Ok(LineKind::Fixed),
            "per_area" => Ok(LineKind::PerArea),
            "adjustment" => Ok(LineKind::Adjustment),
            o => Err(format!("unknown line kind {o:?}")),
        }
    }
}

/// A bill line before it is stored. Its amount is always `round_half_up(quantity × unit_price)`:
/// the only constructor computes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineDraft {
    pub utility: Option<Utility>,
    pub kind: LineKind,
    pub component: String,
    pub description: String,
    pub tier: Option<u32>,
    pub tou_period: Option<TouPeriod>,
    pub quantity: Quantity,
    pub unit_price: Price,
    pub amount: Fen,
    pub tariff_version_id: Option<i64>,
    pub usage_period: Option<Period>,
    pub date_from: Option<NaiveDate>,
    pub date_to: Option<NaiveDate>,
    pub trace: serde_json::Value,
    /// Ledger account credited instead of `revenue:{utility}` (e.g. `payable:sewage`).
    pub ledger_code: Option<String>,
}

impl LineDraft {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        utility: Option<Utility>,
        kind: LineKind,
        component: &str,
        description: String,
        quantity: Quantity,
        unit_price: Price,
    ) -> Result<LineDraft, MoneyError> {
        Ok(LineDraft {
            utility,
            kind,
            component: component.to_string(),
            description,
            tier: None,
            tou_period: None,
            quantity,
            unit_price,
            amount: line_amount(quantity, unit_price)?,
            tariff_version_id: None,
            usage_period: None,
            date_from: None,
            date_to: None,
            trace: serde_json::Value::Null,
            ledger_code: None,
        })
    }

    /// The line that cancels this one: the same price, the quantity and amount negated (an
    /// adjustment crediting what was billed).
    pub fn credit(&self, description: String) -> Result<LineDraft, MoneyError> {
        let neg = Quantity::new(-self.quantity.get())?;
        let mut l = self.clone();
        l.kind = LineKind::Adjustment;
        l.description = description;
        l.quantity = neg;
        l.amount = line_amount(neg, self.unit_price)?;
        Ok(l)
    }
}

/// Why usage could not be rated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("no {utility} tariff is in effect on {date}")]
    NoTariff { utility: Utility, date: NaiveDate },
    #[error("the {utility} tariff {tariff:?} is time-of-use and the readings carry no register values")]
    NeedsRegisters { utility: Utility, tariff: String },
    #[error("{0}")]
    Money(#[from] MoneyError),
}

/// Round to whole units, half up.
pub fn round_units(q: Decimal) -> Decimal {
    q.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
}

/// A quantity rounded half-up to the 4 decimals a stored quantity keeps.
pub fn quantity_of(q: Decimal) -> Result<Quantity, MoneyError> {
    Quantity::new(q.round_dp_with_strategy(Quantity::SCALE, RoundingStrategy::MidpointAwayFromZero))
}

/// Split `usage` between the tiers given the usage counted before it.
pub fn tier_split(cum_before: Decimal, usage: Decimal, thresholds: &[Decimal]) -> Vec<Decimal> {
    let mut out = Vec::with_capacity(thresholds.len() + 1);
    let end = cum_before + usage;
    let mut lower = Decimal::ZERO;
    for (i, upper) in thresholds.iter().chain(std::iter::once(&Decimal::MAX)).enumerate() {
        let upper = if i == thresholds.len() { Decimal::MAX } else { *upper };
        let part = (end.min(upper) - cum_before.max(lower)).max(Decimal::ZERO);
        out.push(part);
        lower = upper;
    }
    out
}

/// Divide `total` between `shares` in proportion, in whole units, by the largest-remainder method
/// (ties to the earlier share); a fractional part of `total` goes with the largest remainder.
/// The parts always add up to `total` exactly.
pub fn largest_remainder<K: Copy>(total: Decimal, shares: &[(K, Decimal)]) -> Vec<(K, Decimal)> {
    let sum: Decimal = shares.iter().map(|(_, s)| *s).sum();
    if shares.is_empty() {
        return Vec::new();
    }
    if sum <= Decimal::ZERO {
        let mut out: Vec<(K, Decimal)> = shares.iter().map(|(k, _)| (*k, Decimal::ZERO)).collect();
        out[0].1 = total;
        return out;
    }
    let raw: Vec<Decimal> = shares.iter().map(|(_, s)| total * *s / sum).collect();
    let mut parts: Vec<Decimal> = raw.iter().map(|r| r.floor()).collect();
    let mut left = total - parts.iter().copied().sum::<Decimal>();
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| {
        (raw[b] - raw[b].floor())
            .cmp(&(raw[a] - raw[a].floor()))
            .then(a.cmp(&b))
    });
    let mut i = 0;
    while left >= Decimal::ONE {
        parts[order[i % order.len()]] += Decimal::ONE;
        left -= Decimal::ONE;
        i += 1;
    }
    if left > Decimal::ZERO {
        parts[order[i % order.len()]] += left;
    }
    shares.iter().zip(parts).map(|((k, _), p)| (*k, p)).collect()
}

/// Split `total` over consecutive day ranges in proportion to their days: each cumulative share
/// is rounded to whole units and the remainder goes to the later range (§2.4). Ranges of zero
/// days get nothing unless every range is empty (then the last takes it all).
pub fn split_by_days(total: Decimal, days: &[i64]) -> Vec<Decimal> {
    let all: i64 = days.iter().sum();
    if days.is_empty() {
        return Vec::new();
    }
    if all <= 0 {
        let mut out = vec![Decimal::ZERO; days.len()];
        *out.last_mut().expect("non-empty") = total;
        return out;
    }
    let mut out = Vec::with_capacity(days.len());
    let mut cum_days = 0i64;
    let mut given = Decimal::ZERO;
    for (i, d) in days.iter().enumerate() {
        cum_days += d;
        let cum = if i + 1 == days.len() {
            total
        } else {
            round_units(total * Decimal::from(cum_days) / Decimal::from(all))
        };
        out.push(cum - given);
        given = cum;
    }
    out
}

/// The versions in effect over `[from, to)`, as (version, from, to) pieces. `versions` are one
/// community's for one utility and class. A span of no days is rated at the version in effect
/// on `to`.
pub fn versions_for_span(
    versions: &[TariffVersion],
    utility: Utility,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<(&TariffVersion, NaiveDate, NaiveDate)>, RatingError> {
    let at = |d: NaiveDate| -> Result<&TariffVersion, RatingError> {
        versions
            .iter()
            .filter(|v| v.effective_from <= d && v.effective_to.is_none_or(|t| d < t))
            .max_by_key(|v| v.effective_from)
            .ok_or(RatingError::NoTariff { utility, date: d })
    };
    if to <= from {
        return Ok(vec![(at(to)?, from, to)]);
    }
    let mut cuts: Vec<NaiveDate> = versions
        .iter()
        .flat_map(|v| [Some(v.effective_from), v.effective_to])
        .flatten()
        .filter(|d| *d > from && *d < to)
        .collect();
    cuts.sort();
    cuts.dedup();
    let mut out: Vec<(&TariffVersion, NaiveDate, NaiveDate)> = Vec::new();
    let mut start = from;
    for end in cuts.into_iter().chain(std::iter::once(to)) {
        let v = at(start)?;
        match out.last_mut() {
            Some(last) if last.0.id == v.id => last.2 = end,
            _ => out.push((v, start, end)),
        }
        start = end;
    }
    Ok(out)
}

/// What to rate: one utility's usage over a span, possibly crossing version boundaries.
#[derive(Debug, Clone)]
pub struct RateRequest<'a> {
    pub utility: Utility,
    /// The period this usage belongs to (labels the lines and picks the tier year).
    pub usage_period: Period,
    /// The versions for the account's utility and class.
    pub versions: &'a [TariffVersion],
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub usage: Decimal,
    /// Usage already counted in the tier year before this (annual tiers; ignored for period tiers).
    pub cum_before: Decimal,
    /// When the account was opened (part-year pro-rating of annual thresholds).
    pub opened_on: Option<NaiveDate>,
    /// Register shares for time-of-use tariffs.
    pub tou_shares: Option<BTreeMap<TouPeriod, Decimal>>,
    /// Usage lines, or adjustment lines (re-rating).
    pub kind: LineKind,
    /// Prefix for line descriptions (e.g. "re-rated 2026-01: ").
    pub label: String,
}

/// The result of rating: lines, and the usage counted towards the tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Rated {
    pub lines: Vec<LineDraft>,
    /// The last version used (fixed charges come from it).
    pub last_version_id: Option<i64>,
}

fn tier_label(tier: usize, tiers: usize) -> String {
    if tiers > 1 {
        format!(" tier {}", tier + 1)
    } else {
        String::new()
    }
}

/// Rate usage into lines (see the module documentation for the rules).
pub fn rate(req: &RateRequest<'_>) -> Result<Rated, RatingError> {
    let pieces = versions_for_span(req.versions, req.utility, req.from, req.to)?;
    let days: Vec<i64> = pieces.iter().map(|(_, f, t)| (*t - *f).num_days().max(0)).collect();
    let parts = split_by_days(req.usage, &days);
    let mut lines = Vec::new();
    let mut counted = Decimal::ZERO; // usage rated so far in this request
    let mut last_version_id = None;
    for ((version, from, to), part) in pieces.iter().zip(parts) {
        last_version_id = Some(version.id);
        let first_line_of_segment = lines.len();
        let def = &version.definition;
        let (cum, months, year_start) = match version.tier_basis {
            TierBasis::Annual => {
                let ys = req.usage_period.tier_year_start(version.tier_year_start_month);
                (
                    req.cum_before + counted,
                    version.part_year.months(ys, req.opened_on),
                    Some(ys),
                )
            }
            TierBasis::Period => (counted, 12, None),
        };
        let thresholds: Vec<Decimal> = def
            .thresholds
            .iter()
            .map(|t| match year_start {
                Some(ys) => version.part_year.prorate(t.get(), ys, req.opened_on),
                None => t.get(),
            })
            .collect();
        let per_tier = tier_split(cum, part, &thresholds);
        counted += part;
        let tiers = def.tiers();
        if def.uses_tou() && req.tou_shares.as_ref().is_none_or(|s| s.is_empty()) && !part.is_zero() {
            return Err(RatingError::NeedsRegisters {
                utility: req.utility,
                tariff: version.name.clone(),
            });
        }
        let trace = serde_json::json!({
            "tariff": version.name,
            "tier_basis": version.tier_basis.as_str(),
            "tier_year_start": year_start,
            "months_in_tier_year": months,
            "thresholds": thresholds.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "cumulative_before": cum.to_string(),
            "usage": part.to_string(),
            "days": (*to - *from).num_days(),
            "span": [from, to],
        });
        for comp in &def.components {
            let base_line = |quantity: Decimal,
                             price: Price,
                             tier: Option<usize>,
                             tou: Option<TouPeriod>|
             -> Result<LineDraft, RatingError> {
                let q = quantity_of(quantity * comp.quantity_factor.get())?;
                let mut desc = format!("{}{}", req.label, comp.label());
                if let Some(t) = tier {
                    desc.push_str(&tier_label(t, tiers));
                }
                if let Some(p) = tou {
                    desc.push_str(&format!(" ({})", p.as_str()));
                }
                if !is_one(&comp.quantity_factor) {
                    desc.push_str(&format!(" on {} × {}", quantity.normalize(), comp.quantity_factor));
                }
                if pieces.len() > 1 {
                    desc.push_str(&format!(" {from}–{}", *to - chrono::Duration::days(1)));
                }
                let mut l = LineDraft::new(Some(req.utility), req.kind, &comp.kind, desc, q, price)?;
                l.tier = tier.map(|t| t as u32 + 1);
                l.tou_period = tou;
                l.tariff_version_id = Some(version.id);
                l.usage_period = Some(req.usage_period);
                l.date_from = Some(*from);
                l.date_to = Some(*to);
                l.trace = trace.clone();
                l.ledger_code = comp.payable.as_ref().map(|p| format!("payable:{p}"));
                Ok(l)
            };
            match &comp.tou {
                Some(tou_prices) => {
                    let shares: Vec<(TouPeriod, Decimal)> = req
                        .tou_shares
                        .as_ref()
                        .map(|s| {
                            s.iter()
                                .filter(|(p, _)| tou_prices.contains_key(p))
                                .map(|(p, v)| (*p, *v))
                                .collect()
                        })
                        .unwrap_or_default();
                    let single = tou_prices.values().all(|ps| ps.len() == 1);
                    let groups: Vec<(Option<usize>, Decimal)> = if single {
                        vec![(None, part)]
                    } else {
                        per_tier.iter().enumerate().map(|(i, q)| (Some(i), *q)).collect()
                    };
                    for (tier, q) in groups {
                        if q.is_zero() {
                            continue;
                        }
                        let split = if shares.is_empty() {
                            vec![(*tou_prices.keys().next().expect("validated non-empty"), q)]
                        } else {
                            largest_remainder(q, &shares)
                        };
                        for (p, qp) in split {
                            if qp.is_zero() {
                                continue;
                            }
                            let ps = &tou_prices[&p];
                            let price = if ps.len() == 1 { ps[0] } else { ps[tier.unwrap_or(0)] };
                            lines.push(base_line(qp, price, tier, Some(p))?);
                        }
                    }
                }
                None if comp.prices.len() == 1 => {
                    if !part.is_zero() {
                        lines.push(base_line(part, comp.prices[0], None, None)?);
                    }
                }
                None => {
                    for (i, q) in per_tier.iter().enumerate() {
                        if !q.is_zero() {
                            lines.push(base_line(*q, comp.prices[i], Some(i), None)?);
                        }
                    }
                }
            }
        }
        // The segment's trace is kept once, on its first line.
        for l in lines.iter_mut().skip(first_line_of_segment + 1) {
            l.trace = serde_json::Value::Null;
        }
    }
    Ok(Rated { lines, last_version_id })
}

/// The fixed and per-area lines of a version for one bill.
pub fn charge_lines(
    version: &TariffVersion,
    period: Period,
    area_m2: Option<Decimal>,
) -> Result<Vec<LineDraft>, MoneyError> {
    let mut out = Vec::new();
    for f in &version.definition.fixed {
        let price = Price::new(f.amount.to_yuan_decimal())?;
        let mut l = LineDraft::new(
            Some(version.utility),
            LineKind::Fixed,
            "fixed",
            f.name.clone(),
            Quantity::parse("1")?,
            price,
        )?;
        l.tariff_version_id = Some(version.id);
        l.usage_period = Some(period);
        out.push(l);
    }
    if let Some(area) = area_m2 {
        for a in &version.definition.per_area {
            let mut l = LineDraft::new(
                Some(version.utility),
                LineKind::PerArea,
                "per_area",
                format!("{} ({} m²)", a.name, area.normalize()),
                quantity_of(area)?,
                a.price,
            )?;
            l.tariff_version_id = Some(version.id);
            l.usage_period = Some(period);
            out.push(l);
        }
    }
    Ok(out)
}

/// The sum of lines, checked.
pub fn total_of(lines: &[LineDraft]) -> Result<Fen, MoneyError> {
    Fen::sum(lines.iter().map(|l| l.amount))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }
    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }
    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn version(
        id: i64,
        from: NaiveDate,
        basis: TierBasis,
        thresholds: &[&str],
        comps: Vec<Component>,
    ) -> TariffVersion {
        TariffVersion {
            id,
            community_id: 1,
            utility: Utility::Electricity,
            customer_class: "all".into(),
            name: format!("v{id}"),
            effective_from: from,
            effective_to: None,
            tier_basis: basis,
            tier_year_start_month: 1,
            part_year: PartYear::StartedMonth,
            definition: TariffDefinition {
                thresholds: thresholds.iter().map(|t| q(t)).collect(),
                components: comps,
                fixed: vec![],
                per_area: vec![],
            },
            source_document: None,
        }
    }

    fn comp(kind: &str, prices: &[&str]) -> Component {
        Component {
            kind: kind.into(),
            name: String::new(),
            prices: prices.iter().map(|x| p(x)).collect(),
            tou: None,
            quantity_factor: one(),
            payable: None,
        }
    }

    fn req<'a>(
        vs: &'a [TariffVersion],
        period: &str,
        from: NaiveDate,
        to: NaiveDate,
        usage: &str,
        cum: &str,
    ) -> RateRequest<'a> {
        RateRequest {
            utility: vs[0].utility,
            usage_period: Period::parse(period).unwrap(),
            versions: vs,
            from,
            to,
            usage: dec(usage),
            cum_before: dec(cum),
            opened_on: None,
            tou_shares: None,
            kind: LineKind::Usage,
            label: String::new(),
        }
    }

    fn amounts(r: &Rated) -> Vec<(String, i64)> {
        r.lines
            .iter()
            .map(|l| (l.quantity.to_string(), l.amount.get()))
            .collect()
    }

    #[test]
    fn e1_annual_tiers_crossing_a_threshold_round_per_line() {
        // domain.md §2.6 E1: 2,700 before, 320 now → 180 @ 0.4883 = 87.89, 140 @ 0.5383 = 75.36.
        let vs = [version(
            1,
            d(2026, 1, 1),
            TierBasis::Annual,
            &["2880", "4800"],
            vec![comp("energy", &["0.4883", "0.5383", "0.7883"])],
        )];
        let r = rate(&req(&vs, "2026-10", d(2026, 9, 1), d(2026, 10, 1), "320", "2700")).unwrap();
        assert_eq!(amounts(&r), vec![("180".into(), 8789), ("140".into(), 7536)]);
        assert_eq!(total_of(&r.lines).unwrap(), Fen::new(16325), "163.25, not 163.26");
    }

    #[test]
    fn e2_time_of_use_within_annual_tiers_by_register_shares() {
        // §2.6 E2: 3,000 before; peak 150, valley 90 → tier 1: 75/45, tier 2: 75/45; total 126.05.
        let mut tou = BTreeMap::new();
        tou.insert(TouPeriod::Peak, vec![p("0.617"), p("0.677"), p("0.977")]);
        tou.insert(TouPeriod::Valley, vec![p("0.307"), p("0.337"), p("0.487")]);
        let c = Component {
            tou: Some(tou),
            prices: vec![],
            ..comp("energy", &[])
        };
        let vs = [version(1, d(2026, 1, 1), TierBasis::Annual, &["3120", "4800"], vec![c])];
        let mut r = req(&vs, "2026-08", d(2026, 7, 1), d(2026, 8, 1), "240", "3000");
        r.tou_shares = Some(BTreeMap::from([
            (TouPeriod::Peak, dec("150")),
            (TouPeriod::Valley, dec("90")),
        ]));
        let rated = rate(&r).unwrap();
        assert_eq!(
            amounts(&rated),
            vec![
                ("75".into(), 4628),
                ("45".into(), 1382),
                ("75".into(), 5078),
                ("45".into(), 1517)
            ]
        );
        assert_eq!(total_of(&rated.lines).unwrap(), Fen::new(12605));
        // Without register values a TOU tariff cannot be rated.
        r.tou_shares = None;
        assert!(matches!(rate(&r), Err(RatingError::NeedsRegisters { .. })));
    }

    #[test]
    fn e3_water_components_one_line_per_component_and_tier() {
        // §2.6 E3: 170 before, 30 now → water fee 10 @ 2.07 + 20 @ 4.07, resource 30 @ 1.57, sewage 30 @ 1.36.
        let mut v = version(
            1,
            d(2026, 1, 1),
            TierBasis::Annual,
            &["180", "260"],
            vec![
                comp("water_fee", &["2.07", "4.07", "6.07"]),
                comp("resource_fee", &["1.57"]),
                comp("sewage_fee", &["1.36"]),
            ],
        );
        v.utility = Utility::Water;
        let vs = [v];
        let rated = rate(&req(&vs, "2026-09", d(2026, 8, 1), d(2026, 9, 1), "30", "170")).unwrap();
        assert_eq!(
            amounts(&rated),
            vec![
                ("10".into(), 2070),
                ("20".into(), 8140),
                ("30".into(), 4710),
                ("30".into(), 4080)
            ]
        );
        assert_eq!(total_of(&rated.lines).unwrap(), Fen::new(19000));
    }

    #[test]
    fn e4_sewage_billed_on_ninety_percent_of_volume() {
        let mut sewage = comp("sewage_fee", &["1.70"]);
        sewage.quantity_factor = q("0.9");
        let mut v = version(
            1,
            d(2026, 1, 1),
            TierBasis::Annual,
            &["220", "300"],
            vec![comp("water_fee", &["1.92", "2.88", "3.84"]), sewage],
        );
        v.utility = Utility::Water;
        let vs = [v];
        let rated = rate(&req(&vs, "2026-02", d(2026, 1, 1), d(2026, 2, 1), "20", "0")).unwrap();
        assert_eq!(amounts(&rated), vec![("20".into(), 3840), ("18".into(), 3060)]);
        assert_eq!(total_of(&rated.lines).unwrap(), Fen::new(6900), "= 20 × 3.45");
    }

    #[test]
    fn a_price_change_inside_the_period_splits_usage_by_days() {
        // §2.4: 16 Jun – 15 Jul, 300 kWh, 0.4883 → 0.5083 from 1 Jul: 150 + 150 → 73.25 + 76.25.
        let vs = [
            version(
                1,
                d(2025, 1, 1),
                TierBasis::Period,
                &[],
                vec![comp("energy", &["0.4883"])],
            ),
            version(
                2,
                d(2026, 7, 1),
                TierBasis::Period,
                &[],
                vec![comp("energy", &["0.5083"])],
            ),
        ];
        let rated = rate(&req(&vs, "2026-07", d(2026, 6, 16), d(2026, 7, 16), "300", "0")).unwrap();
        assert_eq!(amounts(&rated), vec![("150".into(), 7325), ("150".into(), 7625)]);
        assert_eq!(total_of(&rated.lines).unwrap(), Fen::new(14950));
        assert_eq!(rated.lines[0].tariff_version_id, Some(1));
        assert_eq!(rated.lines[1].tariff_version_id, Some(2));
    }

    #[test]
    fn days_split_rounds_to_whole_units_with_the_remainder_later() {
        assert_eq!(split_by_days(dec("100"), &[10, 20]), vec![dec("33"), dec("67")]);
        assert_eq!(split_by_days(dec("7"), &[1, 1, 1]), vec![dec("2"), dec("3"), dec("2")]);
        assert_eq!(split_by_days(dec("5"), &[0, 0]), vec![dec("0"), dec("5")]);
        let parts = split_by_days(dec("1234.5"), &[3, 11, 17]);
        assert_eq!(parts.iter().copied().sum::<Decimal>(), dec("1234.5"));
    }

    #[test]
    fn largest_remainder_parts_add_up_and_favour_the_largest_fraction() {
        let parts = largest_remainder(dec("10"), &[(1, dec("1")), (2, dec("1")), (3, dec("1"))]);
        assert_eq!(
            parts.iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![dec("4"), dec("3"), dec("3")]
        );
        let parts = largest_remainder(dec("7"), &[(1, dec("2")), (2, dec("5"))]);
        assert_eq!(parts, vec![(1, dec("2")), (2, dec("5"))]);
        let parts = largest_remainder(dec("3.5"), &[(1, dec("1")), (2, dec("3"))]);
        assert_eq!(parts.iter().map(|x| x.1).sum::<Decimal>(), dec("3.5"));
    }

    #[test]
    fn thresholds_belong_to_the_lower_tier_and_part_years_pro_rate() {
        let t = [dec("2880"), dec("4800")];
        assert_eq!(
            tier_split(dec("0"), dec("2880"), &t),
            vec![dec("2880"), dec("0"), dec("0")]
        );
        assert_eq!(
            tier_split(dec("2880"), dec("1"), &t),
            vec![dec("0"), dec("1"), dec("0")]
        );
        assert_eq!(
            tier_split(dec("4000"), dec("1000"), &t),
            vec![dec("0"), dec("800"), dec("200")]
        );
        // Opened 10 April: 9 months with started months counted, 8 with whole months only.
        let ys = d(2026, 1, 1);
        assert_eq!(
            PartYear::StartedMonth.prorate(dec("2880"), ys, Some(d(2026, 4, 10))),
            dec("2160")
        );
        assert_eq!(
            PartYear::WholeMonths.prorate(dec("2880"), ys, Some(d(2026, 4, 10))),
            dec("1920")
        );
        assert_eq!(PartYear::StartedMonth.months(ys, Some(d(2025, 4, 10))), 12);
        assert_eq!(PartYear::None.months(ys, Some(d(2026, 4, 10))), 12);
        assert_eq!(
            PartYear::StartedMonth.prorate(dec("220"), ys, Some(d(2026, 8, 1))),
            dec("92"),
            "220 × 5/12 = 91.67"
        );
    }

    #[test]
    fn a_part_year_account_reaches_tier_two_sooner() {
        let vs = [version(
            1,
            d(2026, 1, 1),
            TierBasis::Annual,
            &["2880", "4800"],
            vec![comp("energy", &["0.4883", "0.5383", "0.7883"])],
        )];
        let mut r = req(&vs, "2026-12", d(2026, 11, 1), d(2026, 12, 1), "300", "2000");
        r.opened_on = Some(d(2026, 4, 10));
        let rated = rate(&r).unwrap();
        // 2,160 threshold: 160 in tier 1, 140 in tier 2.
        assert_eq!(
            rated.lines.iter().map(|l| l.quantity.to_string()).collect::<Vec<_>>(),
            vec!["160", "140"]
        );
    }

    #[test]
    fn a_credit_line_cancels_its_line_exactly() {
        let l = LineDraft::new(None, LineKind::Usage, "energy", "x".into(), q("45"), p("0.307")).unwrap();
        let c = l.credit("credit".into()).unwrap();
        assert_eq!(l.amount, Fen::new(1382));
        assert_eq!(c.amount, Fen::new(-1382));
        assert_eq!(total_of(&[l, c]).unwrap(), Fen::ZERO);
    }

    #[test]
    fn specs_with_inconsistent_prices_are_refused_with_the_field() {
        let toml_text = r#"
            community = "C"
            utility = "electricity"
            name = "t"
            effective_from = 2026-01-01
            thresholds = ["200", "100"]
            [[components]]
            kind = "energy"
            prices = ["0.5", "0.55", "0.8"]
        "#;
        let spec: TariffSpec = toml::from_str(toml_text).unwrap();
        assert!(spec.validate().unwrap_err().contains("increasing"));
        let mut good = spec.clone();
        good.thresholds = vec![q("100"), q("200")];
        assert!(good.validate().is_ok());
        good.components[0].prices.pop();
        assert!(good.validate().unwrap_err().contains("one per tier"));
        let float = toml_text.replace("\"0.5\"", "0.5");
        assert!(
            toml::from_str::<TariffSpec>(&float).is_err(),
            "prices must be strings, never floats"
        );
    }
}
