//! # meterpay
//!
//! Bills residents for water and electricity and gets them paid. The data walks one path, and
//! each module owns one step of it (see `../shared/design.md` §1):
//!
//! ```text
//! reading → usage → bill → order → callback → ledger → settlement → report
//! ```
//!
//! - [`domain`]: pure types and rules (money, quantities, tariffs, …); no I/O.
//! - [`store`]: persistence behind one [`store::Store`], on SQLite or PostgreSQL.
//! - [`ledger`]: the double-entry journal; balances are derived from it.
//! - [`jobs`]: the clock (cron slots claimed once) and the task queue (leases, retries).
//! - [`http`]: the API, health, metrics.
//! - [`pages`]: the operator, resident and finance pages.
//! - [`config`], [`startup`], [`telemetry`]: wiring.

/// The process's allocator, for every binary built on this crate (the service, its tests and
/// its benchmarks): mimalloc. A reconciliation builds millions of small strings on several
/// threads and frees them in bulk; glibc's allocator kept ~150 MiB of that freed memory mapped
/// (its mmap threshold grows after large frees), mimalloc gives it back and packs small
/// strings tighter (24-byte classes, not 32).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod billing;
pub mod config;
pub mod demo;
pub mod domain;
pub mod dunning;
pub mod http;
pub mod jobs;
pub mod ledger;
pub mod pages;
pub mod paylink;
pub mod payments;
pub mod reconcile;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tools;
