//! Billing: readings in, usage out, bills issued.
//!
//! - [`readings`]: validation and classification of incoming readings (push API and file
//!   import share it): duplicates acknowledged, conflicts refused, implausible readings held.
//! - [`import`]: CSV and XLSX reading files.
//! - [`push`]: the meter concentrators' HMAC request signature.

pub mod import;
pub mod push;
pub mod readings;
