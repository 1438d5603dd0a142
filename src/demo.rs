//! `meterpay demo`: a community a new user can look at with no set-up. In the configured database
//! (the embedded SQLite file by default) it creates the demo community, its accounts, meters and
//! tariffs from `fixtures/demo/` (compiled into the binary), registers a meter concentrator,
//! then pushes several months of readings **through the signed push API** of the running
//! service — including a register rollover (E1002, 4 digits), a meter replacement (W1003 →
//! W1003B, final and initial readings) and an estimated reading re-rated when the next actual
//! arrives (E2001) — tops up the prepaid account, runs the bills month by month, accrues late
//! fees and reports what happened.
//!
//! It is idempotent: a second run finds everything by code, the same readings are acknowledged
//! as duplicates, bill runs skip what is already billed and the top-up is not repeated.

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billing::push;
use crate::domain::ids::Utility;
use crate::domain::period::{cst_date, cst_midnight};
use crate::domain::{Fen, Period, Quantity};
use crate::ledger::LedgerAccount;
use crate::store::accounts::Replacement;
use crate::store::bills::RunOptions;
use crate::store::directory::{NewAccount, NewMeter};
use crate::store::tariffs::TariffFile;
use crate::store::Store;

const DEMO_DATA: &str = include_str!("../fixtures/demo/community.toml");
const DEMO_TARIFFS: &str = include_str!("../fixtures/demo/tariffs.toml");
const ACTOR: &str = "demo";
const DEVICE_KEY_ID: &str = "dev_demo_concentrator";

#[derive(Debug, Deserialize)]
struct DemoFile {
    community: DemoCommunity,
    accounts: Vec<DemoAccount>,
    readings: DemoReadings,
    replacement: DemoReplacement,
    topup: DemoTopUp,
}

#[derive(Debug, Deserialize)]
struct DemoCommunity {
    code: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct DemoAccount {
    #[serde(flatten)]
    account: NewAccount,
    meters: Vec<DemoMeter>,
}

#[derive(Debug, Deserialize)]
struct DemoMeter {
    meter_no: String,
    utility: Utility,
    digit_count: i32,
    multiplier: Quantity,
    model: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DemoReadings {
    first_month: String,
    months: i32,
    meters: Vec<DemoSeries>,
}

#[derive(Debug, Deserialize)]
struct DemoSeries {
    meter_no: String,
    start: Quantity,
    monthly: Quantity,
    #[serde(default)]
    estimated_month: Option<String>,
    #[serde(default)]
    estimate: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
struct DemoReplacement {
    old: String,
    new: String,
    utility: Utility,
    on: NaiveDate,
    digit_count: i32,
    initial: Quantity,
    reason: String,
    work_order_ref: String,
}

#[derive(Debug, Deserialize)]
struct DemoTopUp {
    account: String,
    amount: String,
    reference: String,
}

/// One line of the sample bill in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SampleLine {
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}

/// A bill shown in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct SampleBill {
    pub id: i64,
    pub account: String,
    pub period: String,
    pub lines: Vec<SampleLine>,
    pub total: String,
}

/// What the demo set up and did, for the summary it prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoSummary {
    pub community_code: String,
    pub community_name: String,
    /// False when a previous run had already created it.
    pub created: bool,
    pub accounts: usize,
    pub meters: usize,
    pub database: String,
    /// The demo's staff users `(name, role)`, all with [`DEMO_STAFF_PASSWORD`].
    pub staff_users: Vec<(String, String)>,
    /// The demo staff password (demo only: `serve` never creates users).
    pub staff_password: String,
    pub tariff_versions: usize,
    pub readings_pushed: usize,
    pub readings_accepted: usize,
    pub readings_duplicates: usize,
    pub readings_held: usize,
    pub readings_refused: usize,
    pub periods: Vec<String>,
    pub bills_issued: usize,
    pub adjustment_bills: usize,
    pub billed: String,
    pub adjustments: String,
    pub settled_from_credit: String,
    pub late_fees_accrued: String,
    pub receivables: String,
    pub accounts_in_arrears: usize,
    pub usage_alerts: usize,
    pub rollover: String,
    pub replacement: String,
    pub estimate: String,
    pub sample_bill: Option<SampleBill>,
    /// Bills paid through the gateway sandbox (when the demo serves payments).
    pub payments: Option<crate::payments::demo::DemoPayments>,
    /// Whether the journal balances after the payments (None when none were made).
    pub balanced: Option<bool>,
    /// The reminders sent after the bill run (clock moved past the due date).
    pub reminders: crate::dunning::demo::DemoReminders,
    /// Yesterday's settlement files reconciled (sandbox files with planted differences).
    pub reconciliation: crate::reconcile::demo::DemoReconciliation,
}

/// The password of the demo's staff users. Printed in the demo summary; only the demo uses it.
pub const DEMO_STAFF_PASSWORD: &str = "meterpay-demo";

/// The demo's staff users: one per role a new user will want to try.
pub const DEMO_STAFF: &[(&str, crate::access::Role)] = &[
    ("demo-admin", crate::access::Role::Admin),
    ("demo-finance", crate::access::Role::Finance),
    ("demo-operator", crate::access::Role::Operator),
];

/// Create the demo staff users that are missing (an existing one is left as it is).
async fn seed_staff(store: &Store, now: chrono::DateTime<Utc>) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, role) in DEMO_STAFF {
        if store.staff_user(name).await?.is_none() {
            let hash = crate::access::hash_password_blocking(DEMO_STAFF_PASSWORD.to_string()).await?;
            let user = crate::access::UserName::parse(name).map_err(anyhow::Error::msg)?;
            store.create_staff_user(&user, *role, &hash, ACTOR, now).await?;
        }
        out.push((name.to_string(), role.as_str().to_string()));
    }
    Ok(out)
}

fn wrap(v: Decimal, digits: i32) -> Decimal {
    let range = Decimal::from(10i64.pow(digits as u32));
    v % range
}

/// Set up the demo community (idempotently), push its readings through the service at
/// `base_url`, run its bills and summarise.
pub async fn run(store: &Store, base_url: &str) -> anyhow::Result<DemoSummary> {
    let file: DemoFile = toml::from_str(DEMO_DATA).map_err(|e| anyhow::anyhow!("reading the demo data: {e}"))?;
    let now = Utc::now();
    let (community, created) = store
        .ensure_community(&file.community.code, &file.community.name, ACTOR, now)
        .await?;
    let installed_on = NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date");
    let mut meters = 0;
    let mut digits = std::collections::HashMap::new();
    for a in &file.accounts {
        let account = match store.account_by_code(community.id, &a.account.code).await? {
            Some(existing) => existing,
            None => store.create_account(community.id, &a.account, ACTOR, now).await?,
        };
        for m in &a.meters {
            digits.insert(m.meter_no.clone(), (m.utility, m.digit_count));
            if store.meter_by_number(m.utility.as_str(), &m.meter_no).await?.is_none() {
                let new = NewMeter {
                    meter_no: m.meter_no.clone(),
                    utility: m.utility,
                    model: m.model.clone(),
                    digit_count: m.digit_count,
                    multiplier: m.multiplier,
                    installed_on,
                };
                store.install_meter(&account, &new, ACTOR, now).await?;
            }
            meters += 1;
        }
    }
    let staff_users = seed_staff(store, now).await?;
    // Tariffs and settings.
    let tariffs = TariffFile::parse(DEMO_TARIFFS).map_err(|e| anyhow::anyhow!("the demo tariffs: {e}"))?;
    store.add_tariff_versions(&tariffs.tariff, ACTOR, None, now).await?;
    let mut settings = store.billing_settings(community.id).await?;
    if settings.due_day_of_month != Some(25) {
        settings.due_day_of_month = Some(25);
        store
            .set_billing_settings(community.id, &settings, ACTOR, None, now)
            .await?;
    }
    // The replacement: W1003 comes off on the 10th of September, W1003B goes on.
    let r = &file.replacement;
    if store.meter_by_number(r.utility.as_str(), &r.new).await?.is_none() {
        let old = store
            .meter_by_number(r.utility.as_str(), &r.old)
            .await?
            .ok_or_else(|| anyhow::anyhow!("demo meter {} is missing", r.old))?;
        let rep = Replacement {
            new_meter_no: r.new.clone(),
            digit_count: r.digit_count,
            multiplier: Quantity::parse("1")?,
            model: Some("LXS-15".into()),
            replaced_on: r.on,
            read_at: None,
            final_value: None,
            initial_value: None,
            reason: r.reason.clone(),
            work_order_ref: Some(r.work_order_ref.clone()),
            read_by: Some("demo meter reader".into()),
            photo_ref: None,
        };
        store.replace_meter(old.id, &rep, ACTOR, None, now).await?;
    }
    digits.insert(r.new.clone(), (r.utility, r.digit_count));
    // The concentrator and its key.
    let device = match store.device_by_key_id(DEVICE_KEY_ID).await? {
        Some(d) => d,
        None => {
            let (_, secret) = push::new_device_credentials();
            store
                .add_device(community.id, "demo concentrator", DEVICE_KEY_ID, &secret, ACTOR, now)
                .await?
        }
    };
    let secret = hex::decode(&device.secret_hex)?;
    // Readings, month by month, through the signed push API.
    let first = Period::parse(&file.readings.first_month).map_err(anyhow::Error::msg)?;
    let at = |p: Period, day: u32| {
        cst_midnight(NaiveDate::from_ymd_opt(p.year(), p.month(), day).expect("day")) + chrono::Duration::hours(8)
    };
    let repl_at = cst_midnight(r.on) + chrono::Duration::hours(12);
    let mut summary = DemoSummary {
        community_code: community.code.clone(),
        community_name: community.name.clone(),
        created,
        accounts: file.accounts.len(),
        meters,
        database: store.kind().as_str().to_string(),
        staff_users,
        staff_password: DEMO_STAFF_PASSWORD.to_string(),
        tariff_versions: store.tariff_versions(community.id, None).await?.len(),
        rollover: "E1002 (4-digit register) rolls over from 9750 to 0 in 2026-09".into(),
        replacement: format!("{} replaced by {} on {} ({})", r.old, r.new, r.on, r.work_order_ref),
        estimate: "E2001's 2026-10 reading is an estimate, re-rated by an adjustment bill in 2026-11".into(),
        ..Default::default()
    };
    let client = reqwest::Client::new();
    for k in 0..file.readings.months {
        let p = first.plus_months(k);
        let mut batch = Vec::new();
        for s in &file.readings.meters {
            let (utility, digit_count) = digits[&s.meter_no];
            let true_value = s.start.get() + s.monthly.get() * Decimal::from(k);
            let mut kind = "actual";
            let mut value = true_value;
            if s.estimated_month.as_deref() == Some(&p.to_string()) {
                kind = "estimated";
                value = s.start.get()
                    + s.monthly.get() * Decimal::from(k - 1)
                    + s.estimate.map(|e| e.get()).unwrap_or_default();
            }
            let read_at = at(p, 25);
            if s.meter_no == r.old && read_at > repl_at {
                // The old meter is gone; the replacement reads from its initial value.
                let repl_month = Period::of_date(r.on);
                if p == repl_month {
                    let old_final = true_value - s.monthly.get() + s.monthly.get() / Decimal::from(2);
                    batch.push(
                        serde_json::json!({"meter_no": r.old, "utility": utility, "read_at": repl_at.to_rfc3339(),
                        "value": wrap(old_final.round_dp(0), digit_count).to_string(), "kind": "final"}),
                    );
                    batch.push(
                        serde_json::json!({"meter_no": r.new, "utility": utility, "read_at": repl_at.to_rfc3339(),
                        "value": r.initial.to_string(), "kind": "initial"}),
                    );
                }
                let since = p.months_since(repl_month);
                let new_value =
                    r.initial.get() + s.monthly.get() / Decimal::from(2) + s.monthly.get() * Decimal::from(since);
                batch.push(
                    serde_json::json!({"meter_no": r.new, "utility": utility, "read_at": read_at.to_rfc3339(),
                    "value": new_value.round_dp(0).to_string(), "kind": "actual"}),
                );
                continue;
            }
            batch.push(
                serde_json::json!({"meter_no": s.meter_no, "utility": utility, "read_at": read_at.to_rfc3339(),
                "value": wrap(value, digit_count).normalize().to_string(), "kind": kind}),
            );
        }
        let body = serde_json::to_vec(&serde_json::json!({ "readings": batch }))?;
        // Identical batches signed in the same second would carry the same signature, which the
        // replay guard rightly refuses; step back a second per push (well inside the window).
        static PUSHES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let ts = Utc::now().timestamp() - PUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 240;
        let sig = push::sign(&secret, "POST", "/api/v1/readings", ts, &body);
        let resp = client
            .post(format!("{base_url}/api/v1/readings"))
            .header(push::HEADER_KEY_ID, DEVICE_KEY_ID)
            .header(push::HEADER_TIMESTAMP, ts.to_string())
            .header(push::HEADER_SIGNATURE, sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("pushing the demo readings for {p}: {e}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            anyhow::bail!("the push API refused the demo readings for {p}: {v}");
        }
        summary.readings_pushed += batch.len();
        summary.readings_accepted += v["accepted"].as_u64().unwrap_or(0) as usize;
        summary.readings_duplicates += v["duplicates"].as_u64().unwrap_or(0) as usize;
        summary.readings_held += v["held"].as_u64().unwrap_or(0) as usize;
        summary.readings_refused += v["refused"].as_u64().unwrap_or(0) as usize;
    }
    // The prepaid account's top-up (once).
    if let Some(a) = store.account_by_code(community.id, &file.topup.account).await? {
        match store
            .top_up(
                a.id,
                Fen::parse_yuan(&file.topup.amount)?,
                &file.topup.reference,
                Some("demo top-up"),
                ACTOR,
                None,
                now,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_duplicate() => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Bills, month by month (the first month only opens the meters).
    let (mut billed, mut adjusted, mut from_credit) = (0i64, 0i64, 0i64);
    for k in 1..file.readings.months {
        let p = first.plus_months(k);
        let mut o = RunOptions::new(p);
        o.community = Some(community.code.clone());
        let report = store.run_bills(&o, ACTOR, None, now, &|_| {}).await?;
        summary.periods.push(p.to_string());
        for c in report.communities {
            summary.bills_issued += c.bills_issued;
            summary.adjustment_bills += c.adjustment_bills;
            billed += c.total_fen;
            adjusted += c.adjustments_fen;
            from_credit += c.settled_from_credit_fen;
        }
    }
    let yesterday = cst_date(now) - chrono::Duration::days(1);
    let fees = store
        .accrue_late_fees(yesterday, Some(community.id), ACTOR, now)
        .await?;
    summary.billed = Fen::new(billed).to_string();
    summary.adjustments = Fen::new(adjusted).to_string();
    summary.settled_from_credit = Fen::new(from_credit).to_string();
    summary.late_fees_accrued = Fen::new(fees.accrued_fen - fees.reversed_fen).to_string();
    // Pay some bills through the gateway sandbox before anyone is reminded: a paid account is
    // never reminded.
    if let Some(p) = crate::payments::demo::run(store).await? {
        summary.balanced = Some(p.balanced);
        summary.payments = Some(p);
    }
    let mut receivables = 0i64;
    for a in store.list_accounts(community.id).await? {
        receivables += store
            .balance(&LedgerAccount::Receivable { account_id: a.id })
            .await?
            .get();
    }
    summary.receivables = Fen::new(receivables).to_string();
    summary.accounts_in_arrears = store.arrears(community.id, cst_date(now)).await?.len();
    summary.reminders = crate::dunning::demo::remind(store, &community.code, base_url).await?;
    summary.reconciliation =
        crate::reconcile::demo::demo_step(store, cst_date(now) - chrono::Duration::days(1)).await?;
    summary.usage_alerts = store.usage_alerts(community.id, None).await?.len();
    let last = first.plus_months(file.readings.months - 1);
    if let Some(a) = store.account_by_code(community.id, "D-1-1-101").await? {
        if let Some(id) = store.bill_id_for(a.id, last).await? {
            let b = store.bill_detail(id).await?;
            summary.sample_bill = Some(SampleBill {
                id: b.id,
                account: b.account_code.clone(),
                period: b.period.clone(),
                lines: b
                    .lines
                    .iter()
                    .map(|l| SampleLine {
                        description: l.description.clone(),
                        quantity: Quantity::from_scaled(l.quantity_e4).to_string(),
                        unit_price: crate::domain::Price::from_scaled(l.unit_price_e6).to_string(),
                        amount: Fen::new(l.amount_fen).to_string(),
                    })
                    .collect(),
                total: Fen::new(b.total_fen).to_string(),
            });
        }
    }
    Ok(summary)
}

impl DemoSummary {
    /// The summary for a person at a terminal.
    pub fn text(&self, database: &str) -> String {
        let mut out = String::from("meterpay demo\n");
        out.push_str(&format!(
            "  community  {} ({}) — {}\n",
            self.community_name,
            self.community_code,
            if self.created {
                "created"
            } else {
                "already there, reused"
            }
        ));
        out.push_str(&format!(
            "  accounts   {}   meters {}   tariff versions {}\n",
            self.accounts, self.meters, self.tariff_versions
        ));
        out.push_str(&format!(
            "  readings   {} pushed through the signed push API: {} accepted, {} duplicates, {} held, {} refused\n",
            self.readings_pushed,
            self.readings_accepted,
            self.readings_duplicates,
            self.readings_held,
            self.readings_refused
        ));
        out.push_str(&format!(
            "             {}\n             {}\n             {}\n",
            self.rollover, self.replacement, self.estimate
        ));
        out.push_str(&format!(
            "  bills      {} issued for {} ({}), {} adjustment bills ({}), {} settled from prepaid credit\n",
            self.bills_issued,
            self.periods.join(", "),
            self.billed,
            self.adjustment_bills,
            self.adjustments,
            self.settled_from_credit
        ));
        out.push_str(&format!(
            "  arrears    {} accounts overdue; late fees accrued {}; receivables {}\n",
            self.accounts_in_arrears, self.late_fees_accrued, self.receivables
        ));
        out.push_str(&format!("  alerts     {} usage alerts\n", self.usage_alerts));
        if let Some(b) = &self.sample_bill {
            out.push_str(&format!("  sample     bill {} for {} {}:\n", b.id, b.account, b.period));
            for l in &b.lines {
                out.push_str(&format!(
                    "               {:<40} {:>8} × {:<8} = {:>8}\n",
                    l.description, l.quantity, l.unit_price, l.amount
                ));
            }
            out.push_str(&format!("               {:<40} {:>30}\n", "total", b.total));
        }
        if let Some(p) = &self.payments {
            out.push_str(&p.text());
        }
        out.push_str(&self.reminders.text());
        out.push_str(&self.reconciliation.text());
        out.push_str(&format!("  database   {database}\n"));
        out
    }
}
