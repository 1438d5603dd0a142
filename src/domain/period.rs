//! Billing periods (`YYYY-MM`) and business dates in China Standard Time.
//!
//! A bill for period `P` rates the usage up to the last valid reading taken before the end of
//! month `P` (China Standard Time), from where the previous bill of that meter stopped.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// China Standard Time (UTC+8, no daylight saving): every business date is read in it.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The business date of an instant.
pub fn cst_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&cst()).date_naive()
}

/// Midnight at the start of a business date, as an instant.
pub fn cst_midnight(d: NaiveDate) -> DateTime<Utc> {
    cst()
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .single()
        .expect("CST has no gaps")
        .with_timezone(&Utc)
}

/// A billing month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    pub fn new(year: i32, month: u32) -> Result<Period, String> {
        if !(1..=12).contains(&month) || !(2000..=2999).contains(&year) {
            return Err(format!(
                "period {year:04}-{month:02} is not a month YYYY-MM between 2000-01 and 2999-12"
            ));
        }
        Ok(Period { year, month })
    }

    /// `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Period, String> {
        let t = text.trim();
        let bad = || format!("period {t:?} is not YYYY-MM");
        let (y, m) = t.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        Period::new(year, month)
    }

    pub fn of_date(d: NaiveDate) -> Period {
        Period {
            year: d.year(),
            month: d.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }
    pub fn month(self) -> u32 {
        self.month
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("valid month")
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn prev(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// `self` plus `n` months (negative goes back).
    pub fn plus_months(self, n: i32) -> Period {
        let idx = self.year * 12 + self.month as i32 - 1 + n;
        Period {
            year: idx.div_euclid(12),
            month: (idx.rem_euclid(12) + 1) as u32,
        }
    }

    /// Whole months from `earlier` to `self`.
    pub fn months_since(self, earlier: Period) -> i32 {
        (self.year - earlier.year) * 12 + self.month as i32 - earlier.month as i32
    }

    /// The first instant after the period (midnight CST starting the next month).
    pub fn end_utc(self) -> DateTime<Utc> {
        cst_midnight(self.next().first_day())
    }

    /// The first day of the tier year (starting in `start_month`) that holds this period.
    pub fn tier_year_start(self, start_month: u32) -> NaiveDate {
        let year = if self.month >= start_month {
            self.year
        } else {
            self.year - 1
        };
        NaiveDate::from_ymd_opt(year, start_month.clamp(1, 12), 1).expect("valid month")
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s)
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_strictly_and_step_across_years() {
        let p = Period::parse("2026-12").unwrap();
        assert_eq!(p.next().to_string(), "2027-01");
        assert_eq!(Period::parse("2027-01").unwrap().prev(), p);
        assert_eq!(p.plus_months(-13).to_string(), "2025-11");
        assert_eq!(Period::parse("2027-03").unwrap().months_since(p), 3);
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
            assert!(Period::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_period_ends_at_midnight_china_time_and_tier_years_start_where_configured() {
        let p = Period::parse("2026-06").unwrap();
        assert_eq!(p.end_utc().to_rfc3339(), "2026-06-30T16:00:00+00:00");
        assert_eq!(p.tier_year_start(1), NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(p.tier_year_start(7), NaiveDate::from_ymd_opt(2025, 7, 1).unwrap());
        assert_eq!(p.tier_year_start(6), NaiveDate::from_ymd_opt(2026, 6, 1).unwrap());
    }
}
