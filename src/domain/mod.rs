//! Pure domain types and rules: money, quantities, and (added by each step) tariffs, bills,
//! payments, ledger postings, reconciliation classes. Nothing in here does I/O.

pub mod ids;
pub mod money;

pub use money::{Fen, MoneyError, Price, Quantity};
