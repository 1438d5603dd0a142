//! The pages people use: operators running communities, residents paying from a phone, and
//! (with reconciliation) finance's morning work. Server-rendered with maud templates compiled
//! into the binary; no JavaScript except the live order status's few lines; Chinese first.
//!
//! The page machinery (layout, [`PageCtx`](crate::http::pages::PageCtx), [`Page`], errors, the
//! message catalogue, SVG charts, the `StaffPage`/`CsrfForm` extractors) lives in
//! [`crate::http::pages`]; this module holds the pages themselves:
//!
//! - [`operator`]: `/staff/ops…` — communities, accounts, meters and their readings, tariffs,
//!   the held-reading review queue (accept/reject forms), bill runs with a dry-run preview, and
//!   reminder history. Reading is for `operator`, `finance` and `read_only`; changing (and the
//!   bill-run form) for `operator`; `admin` does everything.
//! - [`resident`]: `/pay/{token}` — what a pay link opens: the account's open bills, the latest
//!   bill with readings, usage, tier breakdown and late fee, and a usage chart; `/pay/lookup` finds
//!   an account by community, account code and the last four digits of the mobile on file.
//! - [`pay`]: paying from the resident page: buttons per channel and device, the order status
//!   page, receipts, top-ups.
//! - [`bill`]: the bill view both of them show.
//! - [`demo`]: the resident pay link `meterpay demo` prints.
//! - [`messages`]: these pages' words, chained into the catalogue of [`crate::http::pages::i18n`].
//!
//! Access rules held here: a staff page takes `StaffPage` (anonymous → sign-in) and checks the
//! role before reading anything; every state change is a `POST` form with the session's CSRF
//! token (the session middleware refuses one without it); a resident page verifies its signed
//! link first and then reads only the link's account — a bill of another account is "not found",
//! the same answer as a bill that does not exist.

pub mod bill;
pub mod demo;
pub mod messages;
pub mod operator;
pub mod pay;
pub mod resident;

use axum::Router;
use chrono::{DateTime, Utc};

use crate::domain::{Fen, Price, Quantity};
use crate::http::pages::PageCtx;
use crate::http::AppState;

pub use messages::MESSAGES;

/// Every page route of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(operator::router())
        .merge(resident::router())
        .merge(pay::router())
}

/// `¥12.34`.
pub fn yuan(fen: i64) -> String {
    format!("¥{}", Fen::new(fen))
}

/// A quantity stored ×10⁴, as written (`123.5`).
pub fn qty(e4: i64) -> String {
    Quantity::from_scaled(e4).to_string()
}

/// A price stored ×10⁶, as written (`0.4883`).
pub fn price(e6: i64) -> String {
    Price::from_scaled(e6).to_string()
}

/// A time in China Standard Time, to the minute.
pub fn cst(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// A phone number with all but the first three and last four digits hidden (`138****5678`).
pub fn mask_phone(phone: &str) -> String {
    let mut digits: Vec<char> = phone.chars().filter(|c| c.is_ascii_digit()).collect();
    // A mainland number stored as +86…: the country code is not part of what people read.
    if digits.len() == 13 && digits[0] == '8' && digits[1] == '6' {
        digits.drain(..2);
    }
    if digits.len() < 8 {
        return "****".into();
    }
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// The translated name of a utility.
pub fn utility_name(ctx: &PageCtx, utility: &str) -> &'static str {
    match utility {
        "electricity" => ctx.t("util.electricity"),
        "water" => ctx.t("util.water"),
        _ => ctx.t("util.other"),
    }
}

/// The unit a utility is measured in.
pub fn utility_unit(utility: &str) -> &'static str {
    match utility {
        "electricity" => "kWh",
        "water" => "m³",
        _ => "",
    }
}

/// The translated name of a bill status.
pub fn bill_status_name(ctx: &PageCtx, status: &str) -> &'static str {
    match status {
        "open" => ctx.t("bill.status.open"),
        "partially_paid" => ctx.t("bill.status.partially_paid"),
        "paid" => ctx.t("bill.status.paid"),
        "adjusted" => ctx.t("bill.status.adjusted"),
        _ => ctx.t("util.other"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked_to_their_first_three_and_last_four_digits() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+86 138-1234-5678"), "138****5678");
        assert_eq!(mask_phone("+8613812345678"), "138****5678");
        assert_eq!(mask_phone("12345"), "****");
    }

    #[test]
    fn amounts_and_quantities_are_shown_as_written() {
        assert_eq!(yuan(12345), "¥123.45");
        assert_eq!(yuan(-5), "¥-0.05");
        assert_eq!(qty(1_235_000), "123.5");
        assert_eq!(price(488_300), "0.4883");
    }
}
