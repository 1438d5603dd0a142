//! Amounts at the gateways' edges. Inside meterpay money is integer fen; each gateway has its own
//! unit on the wire (Alipay: a yuan string with at most two decimals; WeChat Pay: integer fen;
//! UnionPay: a fen string). Conversion happens only here, and a wire amount with more than two
//! decimals is refused, never rounded.

/// Why a wire amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount {0:?} is not a decimal number of yuan")]
    NotANumber(String),
    #[error("amount {0:?} has more than two decimal places; gateway amounts are never rounded")]
    TooPrecise(String),
    #[error("amount {0:?} is negative")]
    Negative(String),
    #[error("amount {0:?} is out of range")]
    OutOfRange(String),
}

/// Parse a yuan string such as `"12.30"`, `"12.3"`, `"12"` or `"0.01"` into fen, exactly.
/// A leading `-` is accepted only when `allow_negative` (settlement files write refunds negative).
pub fn yuan_to_fen(text: &str, allow_negative: bool) -> Result<i64, AmountError> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if neg && !allow_negative {
        return Err(AmountError::Negative(text.to_string()));
    }
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (whole.is_empty() && !digits.starts_with('.'))
    {
        return Err(AmountError::NotANumber(text.to_string()));
    }
    // Trailing zeros beyond two places ("1.000") carry no precision, so they are fine.
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > 2 {
        return Err(AmountError::TooPrecise(text.to_string()));
    }
    let mut frac2 = frac_trimmed.to_string();
    while frac2.len() < 2 {
        frac2.push('0');
    }
    let whole_v: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| AmountError::OutOfRange(text.to_string()))?
    };
    let frac_v: i64 = frac2.parse().map_err(|_| AmountError::NotANumber(text.to_string()))?;
    let fen = whole_v
        .checked_mul(100)
        .and_then(|v| v.checked_add(frac_v))
        .ok_or_else(|| AmountError::OutOfRange(text.to_string()))?;
    Ok(if neg { -fen } else { fen })
}

/// Format fen as the yuan string Alipay expects: always two decimals (`1230` → `"12.30"`).
pub fn fen_to_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parse a UnionPay fen string (digits only, e.g. `"000000001230"` or `"1230"`).
pub fn fen_string_to_fen(text: &str) -> Result<i64, AmountError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotANumber(text.to_string()));
    }
    t.parse().map_err(|_| AmountError::OutOfRange(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_convert_exactly_and_round_trip() {
        for (s, f) in [
            ("0.01", 1),
            ("12.3", 1230),
            ("12.30", 1230),
            ("12", 1200),
            ("1.000", 100),
            ("99999999.99", 9_999_999_999),
        ] {
            assert_eq!(yuan_to_fen(s, false), Ok(f), "{s}");
        }
        for f in [0i64, 1, 9, 10, 99, 100, 101, 123_456_789] {
            assert_eq!(yuan_to_fen(&fen_to_yuan(f), false), Ok(f));
        }
        assert_eq!(yuan_to_fen("-3.50", true), Ok(-350));
        assert_eq!(fen_to_yuan(-350), "-3.50");
    }

    #[test]
    fn too_precise_or_malformed_amounts_are_refused_not_rounded() {
        assert_eq!(
            yuan_to_fen("1.005", false),
            Err(AmountError::TooPrecise("1.005".into()))
        );
        assert!(matches!(yuan_to_fen("abc", false), Err(AmountError::NotANumber(_))));
        assert!(matches!(yuan_to_fen("", false), Err(AmountError::NotANumber(_))));
        assert!(matches!(yuan_to_fen("1e3", false), Err(AmountError::NotANumber(_))));
        assert!(matches!(yuan_to_fen("-1.00", false), Err(AmountError::Negative(_))));
        assert!(matches!(yuan_to_fen("1.2.3", false), Err(AmountError::NotANumber(_))));
    }

    #[test]
    fn unionpay_fen_strings() {
        assert_eq!(fen_string_to_fen("000000001230"), Ok(1230));
        assert!(fen_string_to_fen("12.30").is_err());
    }
}
