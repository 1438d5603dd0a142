//! Black-box suites, run on SQLite always and on PostgreSQL when `TEST_DATABASE_URL` is set.

mod access_suite;
mod api_suite;
mod billing_api_suite;
mod billing_helpers;
mod billing_property_suite;
mod bills_suite;
mod browser;
mod browser_suite;
mod email_suite;
mod finance_browser_suite;
mod helpers;
mod jobs_suite;
mod ledger_suite;
mod openapi_suite;
mod pages_browser_suite;
mod pages_suite;
mod pay_browser_suite;
mod payments_crash_suite;
mod payments_suite;
mod readings_suite;
mod reconcile_suite;
mod reminders_plan_suite;
mod reminders_suite;
mod staff;
mod store_suite;
mod worked_examples_suite;
