//! Pure domain types and rules: money, quantities, and (added by each step) tariffs, bills,
//! payments, ledger postings, reconciliation classes. Nothing in here does I/O.

pub mod ids;
pub mod late_fee;
pub mod money;
pub mod period;
pub mod tariff;

pub use money::{Fen, MoneyError, Price, Quantity};
pub use period::Period;
