//! Payments: orders for bills, signed callbacks applied exactly once, active queries, expiry,
//! refunds, receipts (issue 5). The step between `bill` and `ledger` on the data path.

pub mod port;

pub use port::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
