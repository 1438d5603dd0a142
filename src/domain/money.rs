//! Money, quantities and prices.
//!
//! - [`Fen`]: an amount of money as an integer number of fen (0.01 CNY). Every amount in storage,
//!   arithmetic and the API is `Fen`; arithmetic is checked (an overflow is an error, never a wrap).
//! - [`Quantity`]: kWh or m³ as a `rust_decimal::Decimal`, stored as an integer of
//!   1/10,000 units ([`Quantity::SCALE`] = 4) so SQL can sum and compare it on both backends.
//! - [`Price`]: yuan per unit as a `Decimal`, stored as an integer of 1/1,000,000 yuan
//!   ([`Price::SCALE`] = 6; published prices carry four decimals at most).
//!
//! A money value is computed from a quantity and a price exactly and rounded **once, half-up
//! (四舍五入, away from zero at the midpoint), per bill line** ([`line_amount`]). Binary floats are
//! never used: `45 × 0.307` is 13.815 exactly and must bill as 13.82.

use rust_decimal::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a money value, quantity or price was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not an amount in yuan (digits with at most two decimals, e.g. 12.30)")]
    NotYuan(String),
    #[error("{0:?} has more than two decimals; amounts are never rounded on input")]
    TooPrecise(String),
    #[error("amount overflow while {0}")]
    Overflow(&'static str),
    #[error("{what} {value} has more than {scale} decimal places")]
    Scale {
        what: &'static str,
        value: String,
        scale: u32,
    },
    #[error("{what} {value} is out of range")]
    Range { what: &'static str, value: String },
}

/// An amount of money in fen. Positive or negative (credits, reversals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fen(i64);

impl Fen {
    pub const ZERO: Fen = Fen(0);

    pub const fn new(fen: i64) -> Self {
        Fen(fen)
    }
    pub const fn get(self) -> i64 {
        self.0
    }
    pub fn checked_add(self, other: Fen) -> Result<Fen, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Fen)
            .ok_or(MoneyError::Overflow("adding amounts"))
    }
    pub fn checked_sub(self, other: Fen) -> Result<Fen, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Fen)
            .ok_or(MoneyError::Overflow("subtracting amounts"))
    }
    pub fn checked_mul(self, n: i64) -> Result<Fen, MoneyError> {
        self.0
            .checked_mul(n)
            .map(Fen)
            .ok_or(MoneyError::Overflow("multiplying an amount"))
    }
    pub fn checked_neg(self) -> Result<Fen, MoneyError> {
        self.0
            .checked_neg()
            .map(Fen)
            .ok_or(MoneyError::Overflow("negating an amount"))
    }
    /// Sum of many amounts, checked.
    pub fn sum<I: IntoIterator<Item = Fen>>(items: I) -> Result<Fen, MoneyError> {
        items.into_iter().try_fold(Fen::ZERO, |acc, x| acc.checked_add(x))
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
    pub fn abs(self) -> Fen {
        Fen(self.0.abs())
    }
    pub fn min(self, other: Fen) -> Fen {
        Fen(self.0.min(other.0))
    }
    pub fn max(self, other: Fen) -> Fen {
        Fen(self.0.max(other.0))
    }

    /// Parse a yuan string exactly: `"12.30"`, `"12.3"`, `"12"`, `"-0.05"`. More than two decimals,
    /// exponents, thousands separators or anything else is refused.
    pub fn parse_yuan(text: &str) -> Result<Fen, MoneyError> {
        let t = text.trim();
        let (neg, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_ok(whole) || !digits_ok(frac) || (body.contains('.') && frac.is_empty()) {
            return Err(MoneyError::NotYuan(text.to_string()));
        }
        if frac.len() > 2 {
            return Err(MoneyError::TooPrecise(text.to_string()));
        }
        let whole: i64 = whole.parse().map_err(|_| MoneyError::Overflow("parsing yuan"))?;
        let frac: i64 = format!("{frac:0<2}")
            .parse()
            .map_err(|_| MoneyError::NotYuan(text.to_string()))?;
        let fen = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .ok_or(MoneyError::Overflow("parsing yuan"))?;
        Ok(Fen(if neg { -fen } else { fen }))
    }

    /// The amount as a yuan decimal (exact).
    pub fn to_yuan_decimal(self) -> Decimal {
        Decimal::new(self.0, 2)
    }
}

/// Displays as yuan with two decimals: `Fen(1230)` → `12.30`, `Fen(-5)` → `-0.05`.
impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl std::str::FromStr for Fen {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fen::parse_yuan(s)
    }
}

/// Round a yuan amount half-up (away from zero at the midpoint) to the fen.
pub fn round_half_up_to_fen(yuan: Decimal) -> Result<Fen, MoneyError> {
    let rounded = yuan.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let fen = rounded
        .checked_mul(Decimal::ONE_HUNDRED)
        .ok_or(MoneyError::Overflow("rounding to the fen"))?;
    fen.to_i64().map(Fen).ok_or(MoneyError::Overflow("rounding to the fen"))
}

/// The amount of one bill line: `round_half_up(quantity × unit_price)`, computed exactly.
pub fn line_amount(quantity: Quantity, price: Price) -> Result<Fen, MoneyError> {
    let exact = quantity
        .0
        .checked_mul(price.0)
        .ok_or(MoneyError::Overflow("multiplying quantity by price"))?;
    round_half_up_to_fen(exact)
}

macro_rules! scaled_decimal {
    ($name:ident, $scale:expr, $what:expr) => {
        impl $name {
            /// Decimal places kept in storage.
            pub const SCALE: u32 = $scale;

            /// A value with at most [`Self::SCALE`] decimals; more precision is refused, not rounded.
            pub fn new(value: Decimal) -> Result<Self, MoneyError> {
                let normalized = value.normalize();
                if normalized.scale() > Self::SCALE {
                    return Err(MoneyError::Scale {
                        what: $what,
                        value: value.to_string(),
                        scale: Self::SCALE,
                    });
                }
                // Check it fits the scaled integer column.
                Self::to_scaled_checked(normalized)?;
                Ok($name(normalized))
            }
            pub fn parse(text: &str) -> Result<Self, MoneyError> {
                let d = Decimal::from_str_exact(text.trim()).map_err(|_| MoneyError::Range {
                    what: $what,
                    value: text.to_string(),
                })?;
                Self::new(d)
            }
            pub fn zero() -> Self {
                $name(Decimal::ZERO)
            }
            pub fn get(self) -> Decimal {
                self.0
            }
            fn to_scaled_checked(d: Decimal) -> Result<i64, MoneyError> {
                let mut v = d;
                v.rescale(Self::SCALE);
                v.mantissa().try_into().map_err(|_| MoneyError::Range {
                    what: $what,
                    value: d.to_string(),
                })
            }
            /// The stored form: the value × 10^SCALE as an integer.
            pub fn to_scaled(self) -> i64 {
                Self::to_scaled_checked(self.0).expect("checked on construction")
            }
            /// From the stored form.
            pub fn from_scaled(v: i64) -> Self {
                $name(Decimal::new(v, Self::SCALE).normalize())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A quantity of kWh or m³ (or a register value), at most 4 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(Decimal);
scaled_decimal!(Quantity, 4, "quantity");

/// A unit price in yuan, at most 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(Decimal);
scaled_decimal!(Price, 6, "price");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn yuan_strings_parse_exactly() {
        assert_eq!(Fen::parse_yuan("12.30"), Ok(Fen(1230)));
        assert_eq!(Fen::parse_yuan("12.3"), Ok(Fen(1230)));
        assert_eq!(Fen::parse_yuan("12"), Ok(Fen(1200)));
        assert_eq!(Fen::parse_yuan("0.01"), Ok(Fen(1)));
        assert_eq!(Fen::parse_yuan("-0.05"), Ok(Fen(-5)));
        assert_eq!(Fen::parse_yuan("1.005"), Err(MoneyError::TooPrecise("1.005".into())));
        for bad in ["", ".5", "5.", "1,000.00", "1e3", "abc", "--1", "1.2.3", " - 1"] {
            assert!(Fen::parse_yuan(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn fen_displays_as_yuan() {
        assert_eq!(Fen(1230).to_string(), "12.30");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Fen(-5).to_string(), "-0.05");
        assert_eq!(Fen(0).to_string(), "0.00");
    }

    #[test]
    fn arithmetic_is_checked() {
        assert!(Fen(i64::MAX).checked_add(Fen(1)).is_err());
        assert!(Fen(i64::MIN).checked_sub(Fen(1)).is_err());
        assert!(Fen(i64::MAX).checked_mul(2).is_err());
        assert_eq!(Fen::sum([Fen(1), Fen(2), Fen(-3)]), Ok(Fen(0)));
    }

    #[test]
    fn half_up_where_floats_get_it_wrong() {
        // 45 × 0.307 = 13.815 exactly; IEEE-754 gives 13.814999… and rounds to 13.81.
        let amount = line_amount(Quantity::parse("45").unwrap(), Price::parse("0.307").unwrap()).unwrap();
        assert_eq!(amount, Fen(1382));
        // Half-up, not half-even: 0.125 → 0.13 (half-even would give 0.12).
        assert_eq!(round_half_up_to_fen(Decimal::new(125, 3)), Ok(Fen(13)));
        assert_eq!(round_half_up_to_fen(Decimal::new(-125, 3)), Ok(Fen(-13)));
        assert_eq!(round_half_up_to_fen(Decimal::new(12449, 4)), Ok(Fen(124)));
    }

    #[test]
    fn scaled_values_refuse_extra_precision() {
        assert!(Quantity::parse("1.23456").is_err());
        assert!(Price::parse("0.1234567").is_err());
        assert_eq!(Quantity::parse("236.8").unwrap().to_scaled(), 2_368_000);
        assert_eq!(Price::parse("0.4883").unwrap().to_scaled(), 488_300);
        assert_eq!(Quantity::parse("1.5000").unwrap(), Quantity::parse("1.5").unwrap());
    }

    proptest! {
        #[test]
        fn fen_round_trips_through_its_yuan_string(f in -1_000_000_000_000i64..1_000_000_000_000i64) {
            prop_assert_eq!(Fen::parse_yuan(&Fen(f).to_string()), Ok(Fen(f)));
        }

        #[test]
        fn quantity_round_trips_through_storage(v in -10_000_000_000i64..10_000_000_000i64) {
            let q = Quantity::from_scaled(v);
            prop_assert_eq!(q.to_scaled(), v);
            prop_assert_eq!(Quantity::parse(&q.to_string()).unwrap(), q);
        }

        #[test]
        fn line_amount_is_within_half_a_fen_of_the_exact_product(q in 0i64..100_000_000, p in 0i64..10_000_000) {
            let quantity = Quantity::from_scaled(q);
            let price = Price::from_scaled(p);
            let exact = quantity.get() * price.get() * Decimal::ONE_HUNDRED;
            let billed = Decimal::from(line_amount(quantity, price).unwrap().get());
            prop_assert!((billed - exact).abs() <= Decimal::new(5, 1));
            // Exactly at the midpoint it goes up.
            if (exact - exact.trunc()) == Decimal::new(5, 1) {
                prop_assert_eq!(billed, exact.trunc() + Decimal::ONE);
            }
        }

        #[test]
        fn addition_is_associative_when_it_does_not_overflow(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000, c in -1_000_000_000i64..1_000_000_000) {
            let left = Fen(a).checked_add(Fen(b)).unwrap().checked_add(Fen(c)).unwrap();
            let right = Fen(a).checked_add(Fen(b).checked_add(Fen(c)).unwrap()).unwrap();
            prop_assert_eq!(left, right);
        }
    }
}
