//! Arrears reminders (dunning). See the README section "Reminders" for the rules.
//!
//! - [`sms`]: the two SMS providers' clients and signatures.
//! - [`sandbox`]: the sandbox SMS provider (both providers' server side).
pub mod email;
pub mod outbox;
pub mod policy;
pub mod sandbox;
pub mod sms;
pub mod templates;
