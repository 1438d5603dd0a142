//! Incoming readings: parsed, checked against the meter and its history, then stored.
//!
//! Outcomes, per reading:
//! - **accepted**: stored as `valid`; usage can be derived from it.
//! - **held**: stored as `held` with a reason, for an operator to accept or reject: a register
//!   that went backwards without a plausible rollover, a jump far beyond the meter's history, a
//!   reading older than the meter's latest (out of order), a reading after the meter's final
//!   reading or removal, an initial reading on a meter that already has readings, and a
//!   register that has not moved for [`RolloverRule::zero_use_periods`] billing periods on an
//!   occupied premises (a stopped meter?).
//! - **duplicate**: the same meter, time, value and kind already stored: acknowledged, not stored.
//! - **refused**: not stored, with the reason: unknown meter, non-numeric or negative value,
//!   more than four decimals, a read time in the future, time-of-use registers that do not add
//!   up to the total, or a different value for a meter and time already stored (a conflicting
//!   duplicate).
//!
//! An actual reading after an estimate is compared with the last *actual* reading, not the
//! estimate: an over-estimate followed by a lower actual is the correction, not a register going
//! backwards (the bill run re-rates the span, domain.md §2.5).
//!
//! A reading may carry time-of-use register values (`"registers": {"peak": "…", "valley": "…"}`);
//! the reading's own value is the total register. They must add up to the total within one unit
//! per register (truncated drums, §2.2).
//!
//! Rollover (domain.md §2.5): a register with `n` digits wraps at `10^n`; when the value falls,
//! the candidate usage `(10^n − previous) + current` is accepted as a rollover only if it is
//! plausible: at most [`RolloverRule::history_multiple`] × the meter's average daily use over
//! its recent history (up to its last real reading) × the days elapsed, or, with too little
//! history, at most a tenth of the register's range per month elapsed (and never more than
//! half of it). Otherwise the reading is held.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::ids::Utility;
use crate::domain::period::{cst_date, Period};
use crate::domain::tariff::TouPeriod;
use crate::domain::Quantity;

/// Kind of reading (domain.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingKind {
    Actual,
    Estimated,
    Final,
    Initial,
}

impl ReadingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadingKind::Actual => "actual",
            ReadingKind::Estimated => "estimated",
            ReadingKind::Final => "final",
            ReadingKind::Initial => "initial",
        }
    }
}

impl std::str::FromStr for ReadingKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "actual" | "" => Ok(ReadingKind::Actual),
            "estimated" | "estimate" => Ok(ReadingKind::Estimated),
            "final" => Ok(ReadingKind::Final),
            "initial" => Ok(ReadingKind::Initial),
            other => Err(format!(
                "unknown reading kind {other:?} (expected actual, estimated, final or initial)"
            )),
        }
    }
}

/// A reading as it arrives (JSON push or a file row), not yet checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncomingReading {
    pub meter_no: String,
    pub utility: String,
    /// RFC 3339 with an offset, e.g. `2026-07-01T08:00:00+08:00`.
    pub read_at: String,
    /// Register value as a decimal string (never a float).
    pub value: serde_json::Value,
    #[serde(default)]
    pub kind: Option<String>,
    /// Time-of-use register values (`peak`, `valley`, `flat`, `sharp`), decimal strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registers: Option<BTreeMap<String, serde_json::Value>>,
}

/// A reading whose fields parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReading {
    pub meter_no: String,
    pub utility: Utility,
    pub read_at: DateTime<Utc>,
    pub value: Quantity,
    pub kind: ReadingKind,
    pub registers: BTreeMap<TouPeriod, Quantity>,
}

/// How far in the future a read time may be (clock skew) before it is refused.
pub const FUTURE_TOLERANCE_SECS: i64 = 300;

impl IncomingReading {
    /// Parse the fields; the error says which field and why.
    pub fn parse(&self, now: DateTime<Utc>) -> Result<ParsedReading, String> {
        let meter_no = self.meter_no.trim();
        if meter_no.is_empty() {
            return Err("meter_no is empty".into());
        }
        let utility: Utility = self.utility.trim().parse()?;
        let read_at = DateTime::parse_from_rfc3339(self.read_at.trim())
            .map_err(|e| format!("read_at {:?} is not an RFC 3339 time with an offset: {e}", self.read_at))?
            .with_timezone(&Utc);
        // Whole microseconds: what both backends store exactly.
        let read_at = chrono::DurationRound::duration_trunc(read_at, chrono::Duration::microseconds(1))
            .map_err(|e| format!("read_at {:?}: {e}", self.read_at))?;
        if read_at > now + chrono::Duration::seconds(FUTURE_TOLERANCE_SECS) {
            return Err(format!("read_at {} is in the future", self.read_at));
        }
        let value = parse_register("value", &self.value)?;
        let kind = match &self.kind {
            Some(k) => k.parse()?,
            None => ReadingKind::Actual,
        };
        let mut registers = BTreeMap::new();
        if let Some(regs) = &self.registers {
            for (name, v) in regs {
                let p = TouPeriod::parse(name)?;
                registers.insert(p, parse_register(&format!("register {name}"), v)?);
            }
            if !registers.is_empty() {
                let sum: Decimal = registers.values().map(|q| q.get()).sum();
                let tolerance = Decimal::from(registers.len());
                if (sum - value.get()).abs() > tolerance {
                    return Err(format!(
                        "registers add up to {sum}, not the total {value} (at most {tolerance} apart)"
                    ));
                }
            }
        }
        Ok(ParsedReading {
            meter_no: meter_no.to_string(),
            utility,
            read_at,
            value,
            kind,
            registers,
        })
    }
}

/// A register value: a decimal string or a JSON number taken by its literal text (never a float).
fn parse_register(field: &str, v: &serde_json::Value) -> Result<Quantity, String> {
    let text = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(format!("{field} {other} is not a number")),
    };
    let dec = Decimal::from_str_exact(&text).map_err(|_| format!("{field} {text:?} is not a decimal number"))?;
    if dec.is_sign_negative() && !dec.is_zero() {
        return Err(format!("{field} {text} is negative; registers only count up"));
    }
    Quantity::new(dec).map_err(|e| format!("{field} {text}: {e}"))
}

/// What is known of a meter when checking a reading.
#[derive(Debug, Clone)]
pub struct MeterFacts {
    pub id: i64,
    pub digit_count: i32,
    pub removed_on: Option<chrono::NaiveDate>,
    /// The premises is occupied (zero use there is suspicious).
    pub occupied: bool,
}

/// A stored reading, as history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastReading {
    pub read_at: DateTime<Utc>,
    pub value: Quantity,
    pub kind: ReadingKind,
    pub rollover: bool,
}

/// Plausibility limits.
#[derive(Debug, Clone)]
pub struct RolloverRule {
    /// A rollover (or a forward jump) is plausible up to this multiple of the meter's average
    /// daily use × days elapsed.
    pub history_multiple: Decimal,
    /// A forward jump beyond `jump_multiple` × average daily use × days is held.
    pub jump_multiple: Decimal,
    /// Readings of history needed before the averages are trusted.
    pub min_history: usize,
    /// An actual reading showing no use for this many billing periods on an occupied premises
    /// is held.
    pub zero_use_periods: i32,
}

impl Default for RolloverRule {
    fn default() -> Self {
        RolloverRule {
            history_multiple: Decimal::from(3),
            jump_multiple: Decimal::from(10),
            min_history: 3,
            zero_use_periods: 3,
        }
    }
}

/// The verdict on one parsed reading against its meter's history (newest last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept { rollover: bool },
    Hold(String),
}

/// What the checks need of a meter's history: its latest valid reading, and the start of a
/// window of up to [`HISTORY_WINDOW`] valid readings ending there (for the average daily use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterHistory {
    pub last: Option<PastReading>,
    /// The oldest reading of the window (the 13th newest, or the first if there are fewer).
    pub window_start: Option<PastReading>,
    /// Valid readings in the window, at most [`HISTORY_WINDOW`].
    pub count: usize,
    /// The latest valid reading that is not an estimate.
    pub last_actual: Option<PastReading>,
    /// When the run of equal values ending at `last` began (`None`: it began at `last`).
    pub steady_since: Option<DateTime<Utc>>,
}

/// Readings of history the averages look back over (a year of monthly readings and one).
pub const HISTORY_WINDOW: usize = 13;

impl MeterHistory {
    /// From readings oldest first (tests and in-batch updates).
    pub fn from_readings(readings: &[PastReading]) -> Self {
        let window = &readings[readings.len().saturating_sub(HISTORY_WINDOW)..];
        let mut steady_since = None;
        for w in readings.windows(2) {
            steady_since = (w[1].value == w[0].value).then(|| steady_since.unwrap_or(w[0].read_at));
        }
        MeterHistory {
            last: window.last().cloned(),
            window_start: window.first().cloned(),
            count: window.len(),
            last_actual: readings
                .iter()
                .rev()
                .find(|r| r.kind != ReadingKind::Estimated)
                .cloned(),
            steady_since,
        }
    }

    /// The `steady_since` a new reading of `value` would have.
    pub fn steady_since_for(&self, value: Quantity) -> Option<DateTime<Utc>> {
        match &self.last {
            Some(last) if last.value == value => Some(self.steady_since.unwrap_or(last.read_at)),
            _ => None,
        }
    }

    /// Add a newly accepted reading.
    pub fn push(&mut self, r: PastReading) {
        if self.window_start.is_none() {
            self.window_start = Some(r.clone());
        }
        // The window start stays put within a batch; the average it gives only gets more conservative.
        self.steady_since = self.steady_since_for(r.value);
        if r.kind != ReadingKind::Estimated {
            self.last_actual = Some(r.clone());
        }
        self.last = Some(r);
        self.count = (self.count + 1).min(HISTORY_WINDOW);
    }

    /// Average daily register advance over the window, when there is enough history and the
    /// register did not wrap inside it.
    fn average_daily(&self, rule: &RolloverRule) -> Option<Decimal> {
        if self.count < rule.min_history {
            return None;
        }
        // Estimates are not measurements: average up to the last real reading.
        let first = self.window_start.as_ref()?;
        let last = match (&self.last_actual, &self.last) {
            (Some(a), _) if a.read_at > first.read_at => a,
            (_, l) => l.as_ref()?,
        };
        let secs = (last.read_at - first.read_at).num_seconds();
        if secs <= 0 || last.value < first.value || last.rollover {
            return None;
        }
        let days = Decimal::from(secs) / Decimal::from(86_400);
        Some((last.value.get() - first.value.get()) / days)
    }
}

/// Check a reading against the meter and its history (`history` newest last, all before it).
pub fn check(meter: &MeterFacts, history: &MeterHistory, reading: &ParsedReading, rule: &RolloverRule) -> Verdict {
    if let Some(removed) = meter.removed_on {
        if cst_date(reading.read_at) > removed {
            return Verdict::Hold(format!("reading after the meter was removed on {removed}"));
        }
    }
    let Some(last) = history.last.as_ref() else {
        return Verdict::Accept { rollover: false };
    };
    // A real reading after an estimate is measured from the last real reading.
    let prev = match (&history.last_actual, last.kind, reading.kind) {
        (Some(actual), ReadingKind::Estimated, k) if k != ReadingKind::Estimated => actual,
        _ => last,
    };
    if prev.kind == ReadingKind::Final {
        return Verdict::Hold("reading after the meter's final reading".into());
    }
    if reading.kind == ReadingKind::Initial {
        return Verdict::Hold("initial reading on a meter that already has readings".into());
    }
    let days = Decimal::from((reading.read_at - prev.read_at).num_seconds().max(1)) / Decimal::from(86_400);
    let avg = history.average_daily(rule);
    if reading.value == last.value && reading.kind == ReadingKind::Actual && meter.occupied {
        let since = history.steady_since.unwrap_or(last.read_at);
        let periods = Period::of_date(cst_date(reading.read_at)).months_since(Period::of_date(cst_date(since)));
        if periods >= rule.zero_use_periods {
            return Verdict::Hold(format!(
                "no use since {} ({periods} billing periods) on an occupied premises: the meter may have stopped",
                cst_date(since)
            ));
        }
    }
    if reading.value >= prev.value {
        let delta = reading.value.get() - prev.value.get();
        if let Some(avg) = avg {
            let limit = avg * rule.jump_multiple * days;
            if avg > Decimal::ZERO && delta > limit {
                return Verdict::Hold(format!(
                    "usage {delta} since the previous reading is over {} times the meter's average for {:.1} days",
                    rule.jump_multiple, days
                ));
            }
        }
        return Verdict::Accept { rollover: false };
    }
    // The register fell: a rollover or an error.
    let range = Decimal::from(10i64.pow(meter.digit_count.clamp(1, 12) as u32));
    let candidate = range - prev.value.get() + reading.value.get();
    let limit = match avg {
        Some(avg) if avg > Decimal::ZERO => avg * rule.history_multiple * days,
        // Without a usable average: a tenth of the register per month elapsed, at most half.
        _ => {
            let months = (days / Decimal::from(31)).ceil().max(Decimal::ONE);
            (range / Decimal::from(10) * months).min(range / Decimal::from(2))
        }
    };
    if candidate <= limit {
        Verdict::Accept { rollover: true }
    } else {
        Verdict::Hold(format!(
            "register went back from {} to {} and a rollover of {candidate} is not plausible (limit {})",
            prev.value,
            reading.value,
            limit.round_dp(4)
        ))
    }
}

/// The result for one incoming reading, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RowOutcome {
    Accepted { reading_id: i64, rollover: bool },
    Held { reading_id: i64, reason: String },
    Duplicate { reading_id: i64 },
    Refused { reason: String },
}

/// Outcomes of a batch, with counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchReport {
    pub accepted: usize,
    pub held: usize,
    pub duplicates: usize,
    pub refused: usize,
    pub results: Vec<RowOutcome>,
}

impl BatchReport {
    pub fn from_results(results: Vec<RowOutcome>) -> Self {
        let mut r = BatchReport::default();
        for o in &results {
            match o {
                RowOutcome::Accepted { .. } => r.accepted += 1,
                RowOutcome::Held { .. } => r.held += 1,
                RowOutcome::Duplicate { .. } => r.duplicates += 1,
                RowOutcome::Refused { .. } => r.refused += 1,
            }
        }
        r.results = results;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(day as i64)
    }
    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }
    fn past(day: u32, v: &str) -> PastReading {
        PastReading {
            read_at: t(day),
            value: q(v),
            kind: ReadingKind::Actual,
            rollover: false,
        }
    }
    fn reading(day: u32, v: &str) -> ParsedReading {
        ParsedReading {
            meter_no: "M".into(),
            utility: Utility::Water,
            read_at: t(day),
            value: q(v),
            kind: ReadingKind::Actual,
            registers: BTreeMap::new(),
        }
    }
    fn meter(digits: i32) -> MeterFacts {
        MeterFacts {
            id: 1,
            digit_count: digits,
            removed_on: None,
            occupied: true,
        }
    }

    #[test]
    fn the_worked_water_rollover_is_accepted() {
        // domain.md §2.5: 5-digit water meter, 99,987 → 00,015 is 28 m³.
        let v = check(
            &meter(5),
            &MeterHistory::from_readings(&[past(0, "99987")]),
            &reading(30, "15"),
            &RolloverRule::default(),
        );
        assert_eq!(v, Verdict::Accept { rollover: true });
    }

    #[test]
    fn a_register_going_far_back_is_held() {
        let history = [past(0, "1000"), past(30, "1100"), past(60, "1200")];
        let v = check(
            &meter(5),
            &MeterHistory::from_readings(&history),
            &reading(90, "900"),
            &RolloverRule::default(),
        );
        assert!(
            matches!(v, Verdict::Hold(ref r) if r.contains("not plausible")),
            "{v:?}"
        );
    }

    #[test]
    fn a_jump_far_beyond_history_is_held_and_normal_use_is_not() {
        let history = [past(0, "1000"), past(30, "1100"), past(60, "1200")];
        assert_eq!(
            check(
                &meter(6),
                &MeterHistory::from_readings(&history),
                &reading(90, "1310"),
                &RolloverRule::default()
            ),
            Verdict::Accept { rollover: false }
        );
        let v = check(
            &meter(6),
            &MeterHistory::from_readings(&history),
            &reading(90, "5000"),
            &RolloverRule::default(),
        );
        assert!(matches!(v, Verdict::Hold(ref r) if r.contains("average")), "{v:?}");
    }

    #[test]
    fn readings_after_a_final_or_a_second_initial_are_held() {
        let mut fin = past(30, "1100");
        fin.kind = ReadingKind::Final;
        assert!(matches!(
            check(
                &meter(6),
                &MeterHistory::from_readings(&[past(0, "1000"), fin]),
                &reading(60, "1200"),
                &RolloverRule::default()
            ),
            Verdict::Hold(_)
        ));
        let mut init = reading(60, "3");
        init.kind = ReadingKind::Initial;
        assert!(matches!(
            check(
                &meter(6),
                &MeterHistory::from_readings(&[past(0, "1000")]),
                &init,
                &RolloverRule::default()
            ),
            Verdict::Hold(_)
        ));
    }

    #[test]
    fn incoming_fields_are_parsed_exactly_or_refused_with_the_field() {
        let now = t(100);
        let ok = IncomingReading {
            meter_no: "E1".into(),
            utility: "electricity".into(),
            read_at: "2026-03-01T08:00:00+08:00".into(),
            value: serde_json::json!("236.8"),
            kind: None,
            registers: None,
        };
        let p = ok.parse(now).unwrap();
        assert_eq!(p.value, q("236.8"));
        assert_eq!(p.read_at, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        let mut bad = ok.clone();
        bad.value = serde_json::json!("12a");
        assert!(bad.parse(now).unwrap_err().contains("not a decimal"));
        bad.value = serde_json::json!("-1");
        assert!(bad.parse(now).unwrap_err().contains("negative"));
        bad.value = serde_json::json!("1.23456");
        assert!(bad.parse(now).is_err());
        let mut future = ok.clone();
        future.read_at = "2027-01-01T00:00:00Z".into();
        assert!(future.parse(now).unwrap_err().contains("future"));
        let mut kind = ok.clone();
        kind.kind = Some("guess".into());
        assert!(kind.parse(now).unwrap_err().contains("unknown reading kind"));
        let mut tou = ok.clone();
        tou.registers = Some(BTreeMap::from([
            ("peak".to_string(), serde_json::json!("150")),
            ("valley".to_string(), serde_json::json!("86.8")),
        ]));
        assert_eq!(tou.parse(now).unwrap().registers[&TouPeriod::Valley], q("86.8"));
        tou.registers = Some(BTreeMap::from([("peak".to_string(), serde_json::json!("100"))]));
        assert!(tou.parse(now).unwrap_err().contains("add up"), "100 is far from 236.8");
    }

    #[test]
    fn a_lower_actual_after_an_over_estimate_is_accepted_not_held() {
        let mut est = past(30, "5250");
        est.kind = ReadingKind::Estimated;
        let h = MeterHistory::from_readings(&[past(0, "5000"), est]);
        assert_eq!(
            check(&meter(6), &h, &reading(60, "5200"), &RolloverRule::default()),
            Verdict::Accept { rollover: false }
        );
    }

    #[test]
    fn no_use_for_three_periods_on_an_occupied_premises_is_held() {
        let history = [past(0, "100"), past(31, "100"), past(59, "100")];
        let h = MeterHistory::from_readings(&history);
        let v = check(&meter(6), &h, &reading(90, "100"), &RolloverRule::default());
        assert!(matches!(v, Verdict::Hold(ref r) if r.contains("stopped")), "{v:?}");
        let mut vacant = meter(6);
        vacant.occupied = false;
        assert_eq!(
            check(&vacant, &h, &reading(90, "100"), &RolloverRule::default()),
            Verdict::Accept { rollover: false }
        );
        let two = MeterHistory::from_readings(&history[..2]);
        assert_eq!(
            check(&meter(6), &two, &reading(59, "100"), &RolloverRule::default()),
            Verdict::Accept { rollover: false },
            "two periods is not yet several"
        );
    }
}
