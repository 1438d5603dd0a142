//! Billing: readings in, usage out, bills issued.
//!
//! - [`readings`]: validation and classification of incoming readings (push API and file
//!   import share it): duplicates acknowledged, conflicts refused, implausible readings held.
//! - [`import`]: CSV and XLSX reading files.
//! - [`accounts_import`]: account files (CSV/XLSX) from the seeds' systems.
//! - [`engine`]: one account's bill for a period from its readings and tariffs (pure).
//! - [`push`]: the meter concentrators' HMAC request signature.

pub mod accounts_import;
pub mod engine;
pub mod import;
pub mod push;
pub mod readings;
pub mod text;
