//! The join of the policy with the database: who is reminded now, by which channel, and why —
//! or why not. `meterpay remind run`, `POST /api/v1/reminders/run` and the hourly job
//! (`reminders.plan`) all come here.
//!
//! For each community (in bulk, a handful of set queries however many accounts):
//!
//! 1. read its active accounts and premises, its bills with something outstanding (each split
//!    into its **tracks**: electricity, water, property fees — so property-fee arrears never
//!    reach a supply action), opt-outs, the outbox history of its households, and confirmed
//!    payments from the journal (`payment.apply`, and the billing building block's
//!    `payment.allocate`);
//! 2. decide every account with [`policy::decide`];
//! 3. for every account that would be reminded, ask payments ([`PaymentsPort::payment_activity_many`], in bulk)
//!    for confirmed payments **and orders still pending at the gateway**, and decide again: any
//!    payment stops the reminder at once;
//! 4. in one pass per household (several accounts can share premises), each message planned
//!    counts against the household's daily cap for the accounts after it;
//! 5. unless it is a dry run, compose each decision into outbox rows and enqueue them (one
//!    transaction per chunk); the outbox's unique key makes a re-run add nothing.
//!
//! Nothing here sends: delivery is the outbox's (`reminder.send` tasks). A dry run reads only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use tracing::Instrument as _;

use crate::config::Config;
use crate::domain::ids::Utility;
use crate::domain::Fen;
use crate::payments::port::PaymentsPort;
use crate::store::directory::Community;
use crate::store::reminders::{Enqueued, NewReminder, PlanAccountRow, ReminderRow};
use crate::store::Store;

use super::outbox::{self, mask_recipient, ComposeFacts, Composer, Profile};
use super::policy::{
    self, AccountFacts, Channel, CommunityPolicy, CreditRating, Decision, OpenBill, Outcome, PaymentFact, PaymentMode,
    PolicyInput, PrepaidFacts, Reason, SentStep, StaffAction, Track,
};
use super::templates::SummaryLine;

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// One community by code, or all.
    pub community: Option<String>,
    /// Decide and show, write nothing.
    pub dry_run: bool,
}

/// One account's decision, as shown to an operator (recipients masked).
#[derive(Debug, Clone, Serialize)]
pub struct AccountPlan {
    pub account_id: i64,
    pub account_code: String,
    pub room: String,
    /// `send`, `wait` or `nothing`.
    pub outcome: &'static str,
    pub step: Option<String>,
    pub track: Option<String>,
    pub channel: Option<String>,
    /// Masked (`138****5678`, `w***@example.com`).
    pub recipient: Option<String>,
    pub bills: Vec<i64>,
    pub amount_fen: Option<i64>,
    /// Why it waits, or why nothing is sent.
    pub reason: Option<Reason>,
    /// When a waiting message may go (the next send window, the day after the cap).
    pub until: Option<DateTime<Utc>>,
    pub legally_required: bool,
    /// Staff work: calls, the written notice, a supply-action review, a property-fee handover.
    pub staff: Vec<StaffAction>,
    /// Outbox rows this run created.
    pub enqueued: Vec<i64>,
    /// Outbox rows that were already there (the same step, person and channel).
    pub already_enqueued: Vec<i64>,
    /// The decision could not become a message (e.g. no approved template configured).
    pub error: Option<String>,
}

/// One community's run.
#[derive(Debug, Clone, Serialize)]
pub struct CommunityPlan {
    pub code: String,
    pub name: String,
    pub accounts: usize,
    pub send: usize,
    pub wait: usize,
    pub nothing: usize,
    pub enqueued: usize,
    pub errors: usize,
    /// How many accounts wait or get nothing, by reason.
    pub reasons: BTreeMap<String, usize>,
    /// Every account with something to say (accounts with nothing due are only counted).
    pub plans: Vec<AccountPlan>,
    /// Set when the community could not be planned at all (invalid policy).
    pub error: Option<String>,
}

/// What a run decided.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    pub communities: Vec<CommunityPlan>,
}

impl PlanReport {
    /// A table for a terminal.
    pub fn text(&self) -> String {
        let mut out = format!(
            "reminders {} at {}\n",
            if self.dry_run { "plan (dry run)" } else { "run" },
            self.now.to_rfc3339()
        );
        for c in &self.communities {
            out.push_str(&format!(
                "community {} ({}): {} accounts — {} to send, {} waiting, {} nothing; {} enqueued{}\n",
                c.code,
                c.name,
                c.accounts,
                c.send,
                c.wait,
                c.nothing,
                c.enqueued,
                if c.errors > 0 {
                    format!(", {} errors", c.errors)
                } else {
                    String::new()
                }
            ));
            if let Some(e) = &c.error {
                out.push_str(&format!("  not planned: {e}\n"));
            }
            for p in &c.plans {
                let what = match p.outcome {
                    "send" => format!(
                        "send {} by {} to {} ({} fen, bills {:?})",
                        p.step.as_deref().unwrap_or("-"),
                        p.channel.as_deref().unwrap_or("-"),
                        p.recipient.as_deref().unwrap_or("-"),
                        p.amount_fen.unwrap_or(0),
                        p.bills
                    ),
                    "wait" => format!(
                        "wait {}: {} until {}",
                        p.step.as_deref().unwrap_or("-"),
                        reason_text(p.reason),
                        p.until.map(|u| u.to_rfc3339()).unwrap_or_default()
                    ),
                    _ => format!("nothing: {}", reason_text(p.reason)),
                };
                out.push_str(&format!("  {:<14} {:<12} {}", p.account_code, p.room, what));
                if !p.staff.is_empty() {
                    let staff: Vec<String> = p.staff.iter().map(staff_text).collect();
                    out.push_str(&format!("; staff: {}", staff.join(", ")));
                }
                if let Some(e) = &p.error {
                    out.push_str(&format!("; NOT ENQUEUED: {e}"));
                }
                out.push('\n');
            }
        }
        out
    }
}

fn reason_text(r: Option<Reason>) -> String {
    r.and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

fn staff_text(s: &StaffAction) -> String {
    match s {
        StaffAction::Call { track } => format!("call ({})", track.as_str()),
        StaffAction::ServeWrittenNotice { track } => format!("serve the written notice ({})", track.as_str()),
        StaffAction::SupplyActionReview { track, days_overdue } => {
            format!("supply-action review ({}, {days_overdue} days overdue)", track.as_str())
        }
        StaffAction::PropertyFeeHandover { days_overdue } => {
            format!("property-fee handover ({days_overdue} days overdue)")
        }
    }
}

/// The planner: the store, the configuration, and payments' view of pending orders.
#[derive(Clone)]
pub struct Planner {
    store: Store,
    config: Arc<Config>,
    payments: Option<Arc<dyn PaymentsPort>>,
}

/// The payments port for "stop on payment": the configured merchants over the store (pending
/// orders and confirmed payments are read from the store, so this works in every process).
pub fn default_port(store: &Store, config: &Config) -> anyhow::Result<Option<Arc<dyn PaymentsPort>>> {
    let payments = crate::payments::Payments::from_config(store.clone(), config)
        .context("planning reminders: building the payments view for stop-on-payment")?;
    Ok(Some(Arc::new(payments)))
}

/// Everything read about one account.
struct Facts {
    row: PlanAccountRow,
    account: AccountFacts,
    room: String,
    bills: Vec<OpenBill>,
    payments: Vec<PaymentFact>,
    prepaid: Option<PrepaidFacts>,
}

impl Planner {
    pub fn new(store: Store, config: Arc<Config>, payments: Option<Arc<dyn PaymentsPort>>) -> Planner {
        Planner {
            store,
            config,
            payments,
        }
    }

    /// Plan (and unless `dry_run`, enqueue) as of `now`.
    pub async fn run(&self, opts: &PlanOptions, now: DateTime<Utc>) -> anyhow::Result<PlanReport> {
        let communities: Vec<Community> = match &opts.community {
            Some(code) => vec![self
                .store
                .community_by_code(code)
                .await?
                .ok_or_else(|| anyhow::anyhow!("planning reminders: no community with code {code:?}"))?],
            None => self.store.list_communities().await?,
        };
        let links = outbox::link_signer(&self.store, &self.config, now).await?;
        let composer = Composer::from_config(&self.config, links);
        let mut report = PlanReport {
            now,
            dry_run: opts.dry_run,
            communities: Vec::new(),
        };
        for c in communities {
            let span = tracing::info_span!("reminders_plan", community = %c.code, dry_run = opts.dry_run);
            let plan = self
                .community(&c, &composer, opts.dry_run, now)
                .instrument(span)
                .await?;
            tracing::info!(
                accounts = plan.accounts,
                send = plan.send,
                wait = plan.wait,
                enqueued = plan.enqueued,
                "reminders planned"
            );
            report.communities.push(plan);
        }
        Ok(report)
    }

    /// The community's policy: `[reminders.communities.CODE.policy]`, else the defaults in the
    /// community's own time zone.
    pub fn policy_for(&self, c: &Community) -> CommunityPolicy {
        match self.config.reminders.communities.get(&c.code) {
            Some(cfg) => cfg.policy.clone(),
            None => CommunityPolicy {
                timezone: c.timezone.clone(),
                ..CommunityPolicy::default()
            },
        }
    }

    async fn community(
        &self,
        c: &Community,
        composer: &Composer,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<CommunityPlan> {
        let mut plan = CommunityPlan {
            code: c.code.clone(),
            name: c.name.clone(),
            accounts: 0,
            send: 0,
            wait: 0,
            nothing: 0,
            enqueued: 0,
            errors: 0,
            reasons: BTreeMap::new(),
            plans: Vec::new(),
            error: None,
        };
        let policy = self.policy_for(c);
        if let Err(e) = policy.validate() {
            plan.error = Some(format!("community {}: {e}", c.code));
            return Ok(plan);
        }
        let tz: chrono_tz::Tz = policy.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
        let profile = Profile::from_config(&self.config, c.id, &c.code, &c.name);
        let mut facts = self.read_community(c, &tz, now).await?;
        plan.accounts = facts.len();

        // History by household; `since` covers every open bill and the 7-day cap.
        let oldest = facts
            .iter()
            .flat_map(|f| f.bills.iter().map(|b| b.issued_on))
            .min()
            .map(|d| start_of_day(d, &tz) - Duration::days(1))
            .unwrap_or(now)
            .min(now - Duration::days(8));
        let rows = self.store.plan_history(c.id, oldest).await?;
        let mut history: HashMap<String, Vec<SentStep>> = HashMap::new();
        {
            let mut by_household: HashMap<&str, Vec<ReminderRow>> = HashMap::new();
            for r in &rows {
                by_household.entry(r.household.as_str()).or_default().push(r.clone());
            }
            for (h, rs) in by_household {
                history.insert(h.to_string(), outbox::history_from_rows(&rs));
            }
        }

        // First pass: who would be reminded at all. Only they need payments' word on pending
        // orders (asked in bulk, and not about the accounts with nothing due).
        if let Some(port) = &self.payments {
            let due: Vec<usize> = facts
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    let h = history.get(&f.account.household).map(Vec::as_slice).unwrap_or(&[]);
                    !matches!(decide(&policy, f, h, now).outcome, Outcome::Nothing { .. })
                })
                .map(|(i, _)| i)
                .collect();
            let asks: Vec<(i64, DateTime<Utc>)> = due
                .iter()
                .map(|i| {
                    let f = &facts[*i];
                    let since = f
                        .bills
                        .iter()
                        .map(|b| b.issued_on)
                        .min()
                        .map(|d| start_of_day(d, &tz))
                        .unwrap_or(now - Duration::days(62));
                    (f.account.account_id, since)
                })
                .collect();
            let mut answers = port.payment_activity_many(&asks).await.map_err(|e| {
                anyhow::anyhow!("planning reminders: asking payments about the accounts due a reminder: {e:#}")
            })?;
            for i in &due {
                let f = &mut facts[*i];
                for a in answers.remove(&f.account.account_id).unwrap_or_default() {
                    f.payments.push(PaymentFact {
                        at: a.at,
                        pending: a.state != "paid",
                        bill_ids: Vec::new(),
                    });
                }
            }
        }

        // Second pass, household by household in account order.
        let mut to_enqueue: Vec<(usize, Vec<NewReminder>)> = Vec::new();
        for f in &facts {
            let h = history.entry(f.account.household.clone()).or_default();
            let d = decide(&policy, f, h, now);
            let mut p = account_plan(f, &d);
            match &d.outcome {
                Outcome::Send(planned) => {
                    plan.send += 1;
                    for (bill, step) in &planned.bills {
                        h.push(SentStep {
                            account_id: f.account.account_id,
                            step: *step,
                            track: Some(planned.track),
                            bill_ids: vec![*bill],
                            channel: planned.channel,
                            at: now,
                        });
                    }
                    if planned.bills.is_empty() {
                        h.push(SentStep {
                            account_id: f.account.account_id,
                            step: planned.step,
                            track: Some(planned.track),
                            bill_ids: Vec::new(),
                            channel: planned.channel,
                            at: now,
                        });
                    }
                    let cf = compose_facts(f, planned);
                    match composer.compose(&d, &f.account, &profile, &cf, now) {
                        Ok(rows) => {
                            if !dry_run {
                                to_enqueue.push((plan.plans.len(), rows));
                            }
                        }
                        Err(e) => {
                            plan.errors += 1;
                            p.error = Some(e.to_string());
                        }
                    }
                }
                Outcome::Wait { reason, .. } => {
                    plan.wait += 1;
                    *plan.reasons.entry(reason_text(Some(*reason))).or_default() += 1;
                }
                Outcome::Nothing { reason } => {
                    plan.nothing += 1;
                    *plan.reasons.entry(reason_text(Some(*reason))).or_default() += 1;
                    if *reason == Reason::NothingDue && d.staff.is_empty() {
                        continue;
                    }
                }
            }
            plan.plans.push(p);
        }

        if !to_enqueue.is_empty() {
            let all: Vec<NewReminder> = to_enqueue.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
            let results = self.store.enqueue_reminders(&all, now).await?;
            let mut it = results.into_iter();
            for (idx, rows) in &to_enqueue {
                for _ in rows {
                    match it.next() {
                        Some(Enqueued::New(id)) => {
                            plan.enqueued += 1;
                            plan.plans[*idx].enqueued.push(id);
                        }
                        Some(Enqueued::AlreadyThere(id)) => plan.plans[*idx].already_enqueued.push(id),
                        None => {}
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Read the community's accounts with their bills, payments and opt-outs.
    async fn read_community(
        &self,
        c: &Community,
        tz: &chrono_tz::Tz,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<Facts>> {
        let accounts = self.store.plan_accounts(c.id).await?;
        let (bills, lines) = self.store.plan_open_bills(c.id).await?;
        let opt_outs = self.store.plan_opt_outs(c.id).await?;
        let mut opted: HashMap<i64, Vec<Channel>> = HashMap::new();
        for (a, ch) in opt_outs {
            if let Some(ch) = Channel::parse(&ch) {
                opted.entry(a).or_default().push(ch);
            }
        }
        // Lines per bill and track.
        let mut parts: HashMap<i64, Vec<(Track, i64)>> = HashMap::new();
        for l in &lines {
            let track = if l.property {
                Some(Track::PropertyFee)
            } else {
                l.utility.as_deref().and_then(Track::parse)
            };
            let v = parts.entry(l.bill_id).or_default();
            match track {
                Some(t) => match v.iter_mut().find(|(x, _)| *x == t) {
                    Some((_, a)) => *a += l.amount_fen,
                    None => v.push((t, l.amount_fen)),
                },
                // A line without a utility goes with the bill's main track (below).
                None => v.push((Track::Utility(Utility::Electricity), 0)),
            }
        }
        let oldest_issue = bills
            .iter()
            .map(|b| b.issued_at.unwrap_or(now))
            .min()
            .unwrap_or(now)
            .min(now - Duration::days(62));
        let mut paid: HashMap<i64, Vec<PaymentFact>> = HashMap::new();
        let mut seen: HashSet<(i64, String)> = HashSet::new();
        for p in self.store.plan_payments(oldest_issue - Duration::days(1)).await? {
            let id = p
                .code
                .strip_prefix("receivable:")
                .or_else(|| p.code.strip_prefix("credit:"))
                .and_then(|s| s.parse::<i64>().ok());
            if let Some(id) = id {
                if seen.insert((id, p.reference.clone())) {
                    paid.entry(id).or_default().push(PaymentFact {
                        at: p.posted_at,
                        pending: false,
                        bill_ids: Vec::new(),
                    });
                }
            }
        }
        let mut by_account: HashMap<i64, Vec<OpenBill>> = HashMap::new();
        for b in &bills {
            let issued_on = b
                .issued_at
                .map(|t| t.with_timezone(tz).date_naive())
                .unwrap_or(b.due_date);
            let period = parse_period(&b.period);
            for (track, amount) in split_by_track(b.outstanding_fen, parts.get(&b.id).map(Vec::as_slice)) {
                by_account.entry(b.account_id).or_default().push(OpenBill {
                    bill_id: b.id,
                    track,
                    amount_due: Fen::new(amount),
                    period,
                    issued_on,
                    due_on: b.due_date,
                    disputed: b.disputed,
                });
            }
        }
        // Prepaid accounts' balances and last top-ups, read in bulk (not five queries each).
        let prepaid_ids: Vec<i64> = accounts
            .iter()
            .filter(|r| r.payment_mode == "prepaid")
            .map(|r| r.id)
            .collect();
        let mut prepaid_facts = self.store.plan_prepaid(&prepaid_ids).await?;
        let mut out = Vec::with_capacity(accounts.len());
        for row in accounts {
            let household = match row.premises_id {
                Some(p) => format!("premises:{p}"),
                None => format!("account:{}", row.id),
            };
            let room = match (&row.building, &row.unit, &row.door_no) {
                (Some(b), Some(u), Some(d)) => format!("{b}栋{u}单元{d}"),
                _ => row.code.clone(),
            };
            let mode = if row.payment_mode == "prepaid" {
                PaymentMode::Prepaid
            } else {
                PaymentMode::Postpaid
            };
            let account = AccountFacts {
                account_id: row.id,
                household,
                payment_mode: mode,
                credit_rating: CreditRating::from_db(&row.credit_rating),
                mobile: row.mobile.clone().filter(|m| !m.trim().is_empty()),
                email: row.email.clone().filter(|m| !m.trim().is_empty()),
                opted_out: opted.remove(&row.id).unwrap_or_default(),
                payment_plan: false,
                vacant: row.occupied == Some(false),
                auto_debit: false,
            };
            let prepaid = if mode == PaymentMode::Prepaid {
                let (balance_fen, last_top_up_at) = prepaid_facts.remove(&row.id).unwrap_or_default();
                Some(PrepaidFacts {
                    track: Track::Utility(Utility::Electricity),
                    balance: Fen::new(balance_fen),
                    last_top_up_at,
                    daily_charge: None,
                })
            } else {
                None
            };
            out.push(Facts {
                bills: by_account.remove(&row.id).unwrap_or_default(),
                payments: paid.remove(&row.id).unwrap_or_default(),
                account,
                room,
                prepaid,
                row,
            });
        }
        // Households together (the cap is per household), then by account.
        out.sort_by(|a, b| {
            (a.account.household.as_str(), a.account.account_id)
                .cmp(&(b.account.household.as_str(), b.account.account_id))
        });
        Ok(out)
    }
}

fn decide(policy: &CommunityPolicy, f: &Facts, history: &[SentStep], now: DateTime<Utc>) -> Decision {
    // A prepaid account's own threshold replaces the first warning level.
    let own;
    let policy = match (f.prepaid.as_ref(), f.row.low_balance_fen) {
        (Some(_), Some(t)) if t > 0 => {
            own = CommunityPolicy {
                warn_1: Fen::new(t),
                warn_2: Fen::new(policy.warn_2.get().min(t)),
                ..policy.clone()
            };
            &own
        }
        _ => policy,
    };
    policy::decide(&PolicyInput {
        now,
        policy,
        account: &f.account,
        bills: &f.bills,
        payments: &f.payments,
        history,
        prepaid: f.prepaid.as_ref(),
    })
}

fn start_of_day(d: NaiveDate, tz: &chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::TimeZone as _;
    tz.from_local_datetime(&d.and_time(chrono::NaiveTime::MIN))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| d.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn parse_period(p: &str) -> (i32, u32) {
    let mut it = p.split('-');
    let y = it.next().and_then(|s| s.parse().ok()).unwrap_or(1970);
    let m = it.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    (y, m)
}

/// A bill's outstanding amount split over its tracks in proportion to their lines; the
/// remainder (rounding) goes to the largest. A line without a utility adds nothing of its own.
fn split_by_track(outstanding: i64, parts: Option<&[(Track, i64)]>) -> Vec<(Track, i64)> {
    let mut parts: Vec<(Track, i64)> = parts.unwrap_or(&[]).iter().copied().filter(|(_, a)| *a > 0).collect();
    if parts.len() <= 1 {
        let t = parts
            .first()
            .map(|(t, _)| *t)
            .unwrap_or(Track::Utility(Utility::Electricity));
        return vec![(t, outstanding)];
    }
    parts.sort();
    let total: i64 = parts.iter().map(|(_, a)| a).sum();
    let mut out: Vec<(Track, i64)> = parts
        .iter()
        .map(|(t, a)| {
            (
                *t,
                (i128::from(outstanding) * i128::from(*a) / i128::from(total)) as i64,
            )
        })
        .collect();
    let given: i64 = out.iter().map(|(_, a)| a).sum();
    let largest = parts
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, a))| *a)
        .map(|(i, _)| i)
        .unwrap_or(0);
    out[largest].1 += outstanding - given;
    out.retain(|(_, a)| *a > 0);
    out
}

fn compose_facts(f: &Facts, p: &policy::Planned) -> ComposeFacts {
    let lines = p
        .bills
        .iter()
        .filter_map(|(id, _)| f.bills.iter().find(|b| b.bill_id == *id && b.track == p.track))
        .map(|b| SummaryLine {
            label: format!("{}年{}月 {}", b.period.0, b.period.1, track_label(b.track)),
            previous: None,
            current: None,
            usage: None,
            amount: b.amount_due,
        })
        .collect();
    ComposeFacts {
        room: f.room.clone(),
        lines,
    }
}

fn track_label(t: Track) -> &'static str {
    match t {
        Track::Utility(Utility::Electricity) => "电费 / electricity",
        Track::Utility(Utility::Water) => "水费 / water",
        Track::PropertyFee => "物业费 / property fee",
    }
}

fn account_plan(f: &Facts, d: &Decision) -> AccountPlan {
    let mut p = AccountPlan {
        account_id: f.account.account_id,
        account_code: f.row.code.clone(),
        room: f.room.clone(),
        outcome: "nothing",
        step: None,
        track: None,
        channel: None,
        recipient: None,
        bills: Vec::new(),
        amount_fen: None,
        reason: None,
        until: None,
        legally_required: false,
        staff: d.staff.clone(),
        enqueued: Vec::new(),
        already_enqueued: Vec::new(),
        error: None,
    };
    match &d.outcome {
        Outcome::Send(s) => {
            p.outcome = "send";
            p.step = Some(s.step.code());
            p.track = Some(s.track.as_str().to_string());
            p.channel = Some(s.channel.as_str().to_string());
            p.recipient = s.recipient.as_deref().map(mask_recipient);
            p.bills = s.bills.iter().map(|(b, _)| *b).collect();
            p.amount_fen = Some(s.amount.get());
            p.legally_required = s.legally_required;
        }
        Outcome::Wait { step, until, reason } => {
            p.outcome = "wait";
            p.step = Some(step.code());
            p.reason = Some(*reason);
            p.until = Some(*until);
        }
        Outcome::Nothing { reason } => p.reason = Some(*reason),
    }
    p
}

/// The per-account reminder history for the operator page and the API: every message (newest
/// first) with its attempts. Recipients are masked; the content is the evidence of the notice.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub track: String,
    pub step: String,
    pub channel: String,
    pub provider: String,
    /// Masked.
    pub recipient: String,
    pub message_kind: String,
    pub legally_required: bool,
    pub status: String,
    pub provider_message_id: Option<String>,
    pub delivery_status: Option<String>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub bill_ids: Vec<i64>,
    /// The text the resident read (SMS) or the subject (e-mail).
    pub summary: String,
    pub attempts: Vec<crate::store::reminders::AttemptRow>,
}

/// An account's reminders, newest first, with their attempts.
pub async fn account_history(store: &Store, account_id: i64) -> anyhow::Result<Vec<HistoryEntry>> {
    let rows = store.reminders_for_account(account_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let content: serde_json::Value = serde_json::from_str(&r.content_json).unwrap_or_default();
        let summary = content["text"]
            .as_str()
            .filter(|_| r.channel != "email")
            .or_else(|| content["subject"].as_str())
            .unwrap_or_default()
            .to_string();
        out.push(HistoryEntry {
            attempts: store.reminder_attempts(r.id).await?,
            id: r.id,
            created_at: r.created_at,
            track: r.track,
            step: r.step,
            channel: r.channel,
            provider: r.provider,
            recipient: mask_recipient(&r.recipient),
            message_kind: r.message_kind,
            legally_required: r.legally_required,
            status: r.status,
            provider_message_id: r.provider_message_id,
            delivery_status: r.delivery_status,
            last_error: r.last_error,
            sent_at: r.sent_at,
            delivered_at: r.delivered_at,
            bill_ids: serde_json::from_str(&r.bill_ids).unwrap_or_default(),
            summary,
        });
    }
    Ok(out)
}

/// `meterpay remind …`.
#[derive(Debug, clap::Subcommand)]
pub enum RemindCommand {
    /// Plan reminders and (unless --dry-run) enqueue them: who is reminded, by which channel
    /// and why — or why not (quiet hours, cap, opt-out, paid, disputed, …).
    Run {
        /// One community by code (default: all).
        #[arg(long)]
        community: Option<String>,
        /// Show what would happen; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: plan as of this instant (RFC 3339), e.g. to see the next window.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        #[arg(long)]
        json: bool,
    },
    /// An account's reminder history (by community code and account code).
    History {
        #[arg(long)]
        community: String,
        #[arg(long)]
        account: String,
        #[arg(long)]
        json: bool,
    },
}

/// Run a `meterpay remind` command.
pub async fn remind_command(store: &Store, config: Config, command: RemindCommand) -> anyhow::Result<()> {
    match command {
        RemindCommand::Run {
            community,
            dry_run,
            at,
            json,
        } => {
            anyhow::ensure!(
                at.is_none() || dry_run,
                "--at is only for --dry-run: a real run plans as of now"
            );
            let config = Arc::new(config);
            let port = default_port(store, &config)?;
            let planner = Planner::new(store.clone(), config, port);
            let r = planner
                .run(&PlanOptions { community, dry_run }, at.unwrap_or_else(Utc::now))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.text());
            }
            Ok(())
        }
        RemindCommand::History {
            community,
            account,
            json,
        } => {
            let c = store
                .community_by_code(&community)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no community with code {community:?}"))?;
            let a = store
                .account_by_code(c.id, &account)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no account {account:?} in community {community}"))?;
            let h = account_history(store, a.id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                println!("reminders of {} ({} messages)", a.code, h.len());
                for e in &h {
                    println!(
                        "  {} {:<14} {:<8} {:<6} {:<14} {:<10} {}",
                        e.created_at.to_rfc3339(),
                        e.step,
                        e.track,
                        e.channel,
                        e.recipient,
                        e.status,
                        e.delivery_status.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
    }
}

/// The hourly slot inside the default send window (China time): plan and enqueue.
pub const PLAN_SCHEDULE: &str = "0 5 8-20 * * *";

/// The `reminders.plan` cron job: every community, as of the firing.
pub fn cron_job(config: Arc<Config>) -> anyhow::Result<crate::jobs::CronJob> {
    crate::jobs::CronJob::new("reminders.plan", PLAN_SCHEDULE, move |store, _at| {
        let config = config.clone();
        async move {
            if !config.reminders.enabled {
                return Ok(());
            }
            let port = default_port(&store, &config)?;
            let planner = Planner::new(store, config, port);
            let r = planner.run(&PlanOptions::default(), Utc::now()).await?;
            let enqueued: usize = r.communities.iter().map(|c| c.enqueued).sum();
            tracing::info!(enqueued, "reminders planned and enqueued");
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Track = Track::Utility(Utility::Electricity);
    const W: Track = Track::Utility(Utility::Water);

    #[test]
    fn a_bill_is_split_over_its_tracks_in_proportion_and_the_remainder_goes_to_the_largest() {
        assert_eq!(split_by_track(1000, None), vec![(E, 1000)]);
        assert_eq!(split_by_track(1000, Some(&[(W, 400)])), vec![(W, 1000)]);
        let s = split_by_track(1001, Some(&[(E, 600), (W, 300), (Track::PropertyFee, 100)]));
        assert_eq!(s, vec![(E, 601), (W, 300), (Track::PropertyFee, 100)]);
        assert_eq!(s.iter().map(|(_, a)| a).sum::<i64>(), 1001);
        // Partly paid: the outstanding share is proportional.
        assert_eq!(
            split_by_track(500, Some(&[(E, 600), (W, 400)])),
            vec![(E, 300), (W, 200)]
        );
    }

    #[test]
    fn periods_parse_from_their_stored_form() {
        assert_eq!(parse_period("2026-07"), (2026, 7));
    }
}
