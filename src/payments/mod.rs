//! Payments: orders for bills, signed callbacks applied exactly once, active queries, expiry,
//! refunds, receipts (issue 5). The step between `bill` and `ledger` on the data path.
//!
//! - [`config`]: `[payments]` and `[[payments.merchants]]` (keys by file or environment).
//! - [`merchants`]: the registry of merchants and their `Arc<dyn PaymentGateway>` clients.
//! - [`service`]: [`Payments`] — orders, callbacks, queries, closing, refunds; implements
//!   [`PaymentsPort`].
//! - [`compensation`]: the sweep through the task queue (active queries on the gateways' retry
//!   curves, expiry, refunds in flight).
//! - [`demo`]: the demo's payments through the in-process sandbox.
//! - persistence is `crate::store::payments`; HTTP is `crate::http::payments`.
//!
//! Build it from the store and the configuration with [`Payments::from_config`].

pub mod compensation;
pub mod config;
pub mod demo;

pub mod merchants;
pub mod port;
pub mod service;

pub use port::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
pub use service::{IfLive, NotifyOutcome, OrderCreated, OrderRequest, PaymentError, Payments, RefundRequestBody};
