//! Arrears reminders (dunning): who is reminded, when, how — and the machinery that makes sure
//! a reminder is sent once, politely, within the law (notifications.md; README "Reminders").
//!
//! The path through this module:
//!
//! ```text
//! PolicyInput (account, open bills, payments, history, opt-outs, now)
//!   └─ policy::decide ─► Decision (step, channel, bills) or the reason nothing is sent
//!        └─ outbox::Composer ─► templates (SMS variables / e-mail parts) + paylink
//!             └─ Store::enqueue_reminder ─► reminder_outbox row + `reminder.send` task
//!                  └─ outbox::Deliverer ─► sms::{aliyun, tencent} or email (SMTP)
//!                       attempt recorded first; unknown outcomes settled by status query
//! ```
//!
//! - [`policy`]: pure rules — cadence, escalation, guards (quiet hours, caps, opt-out, payments,
//!   disputes). No I/O, so every rule is a plain test.
//! - [`templates`]: the wording, Chinese first, checked against the providers' template rules.
//! - [`sms`]: one folder per provider (signature, wire structs, client, error classes).
//! - [`sandbox`]: both providers' server side, for tests, the benchmark and the demo.
//! - [`email`]: SMTP through lettre, generic enough for the finance reports.
//! - [`outbox`]: composing decisions into stored messages and delivering them through the task
//!   queue; the rule "nobody receives the same step twice" lives there.
//!
//! - [`planner`]: the join with the database — a community's accounts, open bills (split into
//!   tracks), history, opt-outs and payments read in bulk, decided, composed and enqueued; the
//!   per-account history; the hourly `reminders.plan` job. `meterpay remind run`,
//!   `POST /api/v1/reminders/run` and the demo call it.
//! - [`demo`]: the demo's reminders through the sandbox SMS provider and a loopback SMTP server.

pub mod demo;
pub mod email;
pub mod outbox;
pub mod planner;
pub mod policy;
pub mod sandbox;
pub mod sms;
pub mod templates;
