//! The dunning policy: who is reminded, when, how — and why not. Pure logic: no database, no
//! clock (`now` comes in), so every rule has a plain test. The join with the database builds a
//! [`PolicyInput`] per account and turns each [`Decision`] into outbox rows.
//!
//! ## The default cadence (notifications.md §2.1), per community and configurable
//!
//! D is a bill's due date. Steps: **bill issued** (issue day), **pre-due** (D − 3), **overdue 1**
//! (D + 3), **overdue 2** (D + 10), **final reminder** (催告, D + 20: states a deadline of at least
//! 7 days and is also served as a **written notice** — letter or door posting — because the law
//! needs proof it was given). A step is due from its day on; a bill is reminded of the **latest**
//! step due (steps missed while the system was down are not sent late one after another). Each
//! step lists its channels; one channel goes per day, the next channel of the same step the
//! next day if that step is still the latest.
//!
//! Escalation: by **age** (the steps above); by **credit rating** — A: no pre-due notice, first
//! overdue step at D + 5; B: the table; C: the table plus a staff call at overdue 2; D: shorter
//! intervals (D + 1, D + 5, final at D + 15) within legal limits; by **amount** — at or above
//! `staff_call_from` a staff call is added at overdue 2, below `min_amount` nothing is sent.
//!
//! Supply: meterpay never cuts supply. For **utility** arrears that are at least
//! `supply_review_min_days` overdue and whose final reminder was served at least
//! `supply_review_after_final_days` ago, the decision carries a staff action "supply-action
//! review" (human approval, state procedure). **Property-fee** arrears are their own track and
//! are never tied to a supply action (Civil Code Art. 944): after the final reminder they are
//! handed to the owners' committee / legal process instead.
//!
//! Prepaid: a low-balance notice on falling to `warn_1` and again to `warn_2`, a zero-balance
//! notice at or below zero, each at most once between top-ups.
//!
//! ## Guards, checked before every send
//!
//! - a **payment** for the account — received, or still pending at the gateway — made on or after
//!   a bill's issue day (or naming the bill) stops reminders for that bill at once;
//! - a **disputed** bill is never reminded; payment plan and vacant premises stop everything;
//! - **opt-out** per channel (unsubscribe link, SMS reply 退订/TD/T/N, customer service); it never
//!   stops the legally required final reminder, which then goes by letter only;
//! - **quiet hours**: sends only inside the community's window in its own time zone (default
//!   08:00–21:00 Asia/Shanghai), never on its holidays; otherwise wait for the next window;
//! - **one message per household per calendar day** (local) across all its bills, tracks and
//!   channels, and at most `max_per_week` in any rolling 7 days; several bills make **one**
//!   combined message.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::Utility;
use crate::domain::Fen;

use super::templates::MessageKind;

/// A dunning track: utility arrears (per utility) or property fees, reminded separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    Utility(Utility),
    PropertyFee,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Utility(Utility::Electricity) => "electricity",
            Track::Utility(Utility::Water) => "water",
            Track::PropertyFee => "property_fee",
        }
    }
    pub fn parse(s: &str) -> Option<Track> {
        match s {
            "electricity" => Some(Track::Utility(Utility::Electricity)),
            "water" => Some(Track::Utility(Utility::Water)),
            "property_fee" => Some(Track::PropertyFee),
            _ => None,
        }
    }
}

/// A way to reach a household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
    /// A letter or door posting served by staff.
    Letter,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Letter => "letter",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "sms" => Some(Channel::Sms),
            "email" => Some(Channel::Email),
            "letter" => Some(Channel::Letter),
            _ => None,
        }
    }
}

/// Credit rating (信誉度), notifications.md §2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CreditRating {
    A,
    #[default]
    B,
    C,
    D,
}

impl CreditRating {
    /// From `accounts.credit_rating` (`A`–`D`; the foundation's default `normal` is B).
    pub fn from_db(s: &str) -> CreditRating {
        match s.trim().to_ascii_uppercase().as_str() {
            "A" | "GOOD" => CreditRating::A,
            "C" | "LATE" => CreditRating::C,
            "D" | "POOR" => CreditRating::D,
            _ => CreditRating::B,
        }
    }
}

/// A step of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    BillIssued,
    PreDue,
    /// The n-th overdue step, from 1.
    Overdue(u8),
    FinalReminder,
    /// Prepaid: crossed `warn_1` (1) or `warn_2` (2).
    LowBalance(u8),
    ZeroBalance,
}

impl Step {
    /// Stable text for storage and display: `bill_issued`, `pre_due`, `overdue_1`, …
    pub fn code(self) -> String {
        match self {
            Step::BillIssued => "bill_issued".into(),
            Step::PreDue => "pre_due".into(),
            Step::Overdue(n) => format!("overdue_{n}"),
            Step::FinalReminder => "final_reminder".into(),
            Step::LowBalance(n) => format!("low_balance_{n}"),
            Step::ZeroBalance => "zero_balance".into(),
        }
    }
    pub fn parse(s: &str) -> Option<Step> {
        Some(match s {
            "bill_issued" => Step::BillIssued,
            "pre_due" => Step::PreDue,
            "final_reminder" => Step::FinalReminder,
            "zero_balance" => Step::ZeroBalance,
            _ => {
                if let Some(n) = s.strip_prefix("overdue_") {
                    Step::Overdue(n.parse().ok()?)
                } else if let Some(n) = s.strip_prefix("low_balance_") {
                    Step::LowBalance(n.parse().ok()?)
                } else {
                    return None;
                }
            }
        })
    }
    /// How far along a track a step is (postpaid steps only compare among themselves).
    fn rank(self) -> u32 {
        match self {
            Step::BillIssued => 1,
            Step::PreDue => 2,
            Step::LowBalance(n) => 3 + u32::from(n),
            Step::Overdue(n) => 10 + u32::from(n),
            Step::ZeroBalance => 60,
            Step::FinalReminder => 100,
        }
    }
    fn is_notice(self) -> bool {
        matches!(self, Step::BillIssued | Step::PreDue)
    }
}

/// Per-community policy. [`CommunityPolicy::default`] follows notifications.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommunityPolicy {
    /// IANA time zone of the community (quiet hours are local).
    pub timezone: String,
    /// Send window, local time: from `window_start` until `window_end`.
    pub window_start: NaiveTime,
    pub window_end: NaiveTime,
    /// Local dates without any sending (e.g. Spring Festival eve and day).
    pub holidays: Vec<NaiveDate>,
    /// Send the "bill issued" notice.
    pub bill_issued_notice: bool,
    /// Days before the due date for the pre-due notice (0 = none).
    pub pre_due_days: u32,
    /// Days after the due date for each overdue step (rating B and C).
    pub overdue_days: Vec<u32>,
    /// Days after the due date for the final reminder (催告).
    pub final_reminder_days: u32,
    /// The payment deadline the final reminder states, in days after it is sent (≥ 7).
    pub final_deadline_days: u32,
    /// Rating A: first overdue step (no pre-due notice).
    pub rating_a_first_overdue_days: u32,
    /// Rating D: overdue steps and final reminder.
    pub rating_d_overdue_days: Vec<u32>,
    pub rating_d_final_reminder_days: u32,
    /// Arrears at or above this add a staff call at the second overdue step.
    pub staff_call_from: Fen,
    /// Arrears below this are not reminded.
    pub min_amount: Fen,
    /// At most this many messages per household in any rolling 7 days.
    pub max_per_week: u32,
    /// Utility arrears: days overdue before a supply-action review may be proposed to staff.
    pub supply_review_min_days: u32,
    /// …and days since the final reminder was served.
    pub supply_review_after_final_days: u32,
    /// Channels per step, in order of preference (one per day).
    pub notice_channels: Vec<Channel>,
    pub overdue_channels: Vec<Channel>,
    pub final_channels: Vec<Channel>,
    pub balance_channels: Vec<Channel>,
    /// Put the contractual late-fee sentence into overdue SMS (review may refuse it).
    pub late_fee_clause_in_sms: bool,
    /// Prepaid thresholds (fen).
    pub warn_1: Fen,
    pub warn_2: Fen,
}

impl Default for CommunityPolicy {
    fn default() -> Self {
        CommunityPolicy {
            timezone: "Asia/Shanghai".into(),
            window_start: NaiveTime::from_hms_opt(8, 0, 0).expect("a time"),
            window_end: NaiveTime::from_hms_opt(21, 0, 0).expect("a time"),
            holidays: Vec::new(),
            bill_issued_notice: true,
            pre_due_days: 3,
            overdue_days: vec![3, 10],
            final_reminder_days: 20,
            final_deadline_days: 7,
            rating_a_first_overdue_days: 5,
            rating_d_overdue_days: vec![1, 5],
            rating_d_final_reminder_days: 15,
            staff_call_from: Fen::new(50_000),
            min_amount: Fen::new(100),
            max_per_week: 3,
            supply_review_min_days: 30,
            supply_review_after_final_days: 7,
            notice_channels: vec![Channel::Sms, Channel::Email],
            overdue_channels: vec![Channel::Sms, Channel::Email],
            final_channels: vec![Channel::Sms, Channel::Email],
            balance_channels: vec![Channel::Sms],
            late_fee_clause_in_sms: false,
            warn_1: Fen::new(5_000),
            warn_2: Fen::new(2_000),
        }
    }
}

impl CommunityPolicy {
    /// Refuse settings that would break the rules the defaults keep.
    pub fn validate(&self) -> Result<(), String> {
        self.tz()?;
        if self.window_start >= self.window_end {
            return Err("reminders: the send window must start before it ends".into());
        }
        if self.final_deadline_days < 7 {
            return Err("reminders: the final reminder must give at least 7 days to pay".into());
        }
        if self.overdue_days.windows(2).any(|w| w[0] >= w[1])
            || self.rating_d_overdue_days.windows(2).any(|w| w[0] >= w[1])
        {
            return Err("reminders: overdue steps must be in increasing order of days".into());
        }
        if self.overdue_days.last().is_some_and(|d| *d >= self.final_reminder_days) {
            return Err("reminders: the final reminder must come after the overdue steps".into());
        }
        Ok(())
    }

    fn tz(&self) -> Result<chrono_tz::Tz, String> {
        self.timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|e| format!("reminders: time zone {:?}: {e}", self.timezone))
    }

    /// The steps of a postpaid bill with their first day, for a rating.
    fn schedule(&self, bill: &OpenBill, rating: CreditRating, auto_debit: bool) -> Vec<(Step, NaiveDate)> {
        let day = |base: NaiveDate, d: i64| base + Duration::days(d);
        let mut s = Vec::new();
        if self.bill_issued_notice {
            s.push((Step::BillIssued, bill.issued_on));
        }
        if self.pre_due_days > 0 && rating != CreditRating::A && !auto_debit {
            s.push((Step::PreDue, day(bill.due_on, -i64::from(self.pre_due_days))));
        }
        let (overdue, final_days): (Vec<u32>, u32) = match rating {
            CreditRating::A => {
                let mut o = self.overdue_days.clone();
                if let Some(first) = o.first_mut() {
                    *first = (*first).max(self.rating_a_first_overdue_days);
                }
                o.dedup();
                (o, self.final_reminder_days)
            }
            CreditRating::B | CreditRating::C => (self.overdue_days.clone(), self.final_reminder_days),
            CreditRating::D => (self.rating_d_overdue_days.clone(), self.rating_d_final_reminder_days),
        };
        for (i, d) in overdue.iter().enumerate() {
            s.push((Step::Overdue(i as u8 + 1), day(bill.due_on, i64::from(*d))));
        }
        s.push((Step::FinalReminder, day(bill.due_on, i64::from(final_days))));
        s.sort_by_key(|(step, d)| (*d, step.rank()));
        s
    }

    fn channels(&self, step: Step) -> &[Channel] {
        match step {
            Step::BillIssued | Step::PreDue => &self.notice_channels,
            Step::Overdue(_) => &self.overdue_channels,
            Step::FinalReminder => &self.final_channels,
            Step::LowBalance(_) | Step::ZeroBalance => &self.balance_channels,
        }
    }
}

/// Postpaid or prepaid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentMode {
    #[default]
    Postpaid,
    Prepaid,
}

/// The account and how to reach it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountFacts {
    pub account_id: i64,
    /// The household the daily cap counts for (the premises; accounts sharing premises share it).
    pub household: String,
    pub payment_mode: PaymentMode,
    pub credit_rating: CreditRating,
    pub mobile: Option<String>,
    pub email: Option<String>,
    pub opted_out: Vec<Channel>,
    pub payment_plan: bool,
    pub vacant: bool,
    pub auto_debit: bool,
}

/// An open (unpaid or partly paid) bill of the account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenBill {
    pub bill_id: i64,
    pub track: Track,
    /// What is still owed on it.
    pub amount_due: Fen,
    /// Billing period (year, month).
    pub period: (i32, u32),
    pub issued_on: NaiveDate,
    pub due_on: NaiveDate,
    pub disputed: bool,
}

/// A payment, or an order still pending at the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentFact {
    pub at: DateTime<Utc>,
    pub pending: bool,
    /// The bills it pays; empty for a payment to the account as a whole.
    pub bill_ids: Vec<i64>,
}

/// A message already sent (or attempted) to this household.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentStep {
    pub account_id: i64,
    pub step: Step,
    pub track: Option<Track>,
    pub bill_ids: Vec<i64>,
    pub channel: Channel,
    pub at: DateTime<Utc>,
}

/// Prepaid balance facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepaidFacts {
    pub track: Track,
    pub balance: Fen,
    pub last_top_up_at: Option<DateTime<Utc>>,
    /// Average daily charge over the last 14 days, for the "days left" estimate.
    pub daily_charge: Option<Fen>,
}

/// Everything the policy looks at for one account.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    pub now: DateTime<Utc>,
    pub policy: &'a CommunityPolicy,
    pub account: &'a AccountFacts,
    pub bills: &'a [OpenBill],
    pub payments: &'a [PaymentFact],
    /// Every message to the household (all its accounts), any channel.
    pub history: &'a [SentStep],
    pub prepaid: Option<&'a PrepaidFacts>,
}

/// Why nothing is sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NothingDue,
    AlreadySent,
    PaymentReceived,
    PaymentPending,
    Disputed,
    PaymentPlan,
    Vacant,
    OptedOut,
    NoContact,
    BelowMinimum,
    QuietHours,
    Holiday,
    DailyCap,
    WeeklyCap,
}

/// Work for staff that goes with a decision (never automated end-to-end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum StaffAction {
    /// Call the household (ratings C/D or a large amount, at the second overdue step).
    Call { track: Track },
    /// Serve the final reminder as a letter or door posting and record it (proof of notice).
    ServeWrittenNotice { track: Track },
    /// Utility arrears may now be considered for a supply action, under state procedure and
    /// with human approval. meterpay never cuts supply.
    SupplyActionReview { track: Track, days_overdue: i64 },
    /// Property fees after the final reminder: owners' committee / legal process.
    PropertyFeeHandover { days_overdue: i64 },
}

/// A message to send now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub step: Step,
    pub track: Track,
    pub channel: Channel,
    /// Phone or e-mail address (`None` for a letter).
    pub recipient: Option<String>,
    /// The bills the message covers, each with the step it records for that bill.
    pub bills: Vec<(i64, Step)>,
    pub amount: Fen,
    pub periods: Vec<(i32, u32)>,
    /// Due date stated (the earliest of the bills), or the final reminder's deadline.
    pub due: Option<NaiveDate>,
    pub message: MessageKind,
    /// Estimated days left (prepaid).
    pub days_left: Option<u32>,
    /// The final reminder: legally required, also served in writing, not stopped by opt-out.
    pub legally_required: bool,
}

/// What the policy decided for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Send(Planned),
    /// Something is due but must wait (quiet hours, caps) until `until`.
    Wait {
        step: Step,
        until: DateTime<Utc>,
        reason: Reason,
    },
    /// Nothing to send, and why.
    Nothing {
        reason: Reason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub account_id: i64,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub staff: Vec<StaffAction>,
}

/// A candidate message before the time guards.
struct Candidate {
    planned: Planned,
}

/// Decide for one account.
pub fn decide(input: &PolicyInput<'_>) -> Decision {
    let account = input.account;
    let nothing = |reason| Decision {
        account_id: account.account_id,
        outcome: Outcome::Nothing { reason },
        staff: Vec::new(),
    };
    let policy = input.policy;
    let Ok(tz) = policy.tz() else {
        // A policy is validated when loaded; an invalid zone here means China Standard Time.
        return decide(&PolicyInput {
            policy: &CommunityPolicy {
                timezone: "Asia/Shanghai".into(),
                ..policy.clone()
            },
            ..input.clone()
        });
    };
    if account.vacant {
        return nothing(Reason::Vacant);
    }
    if account.payment_plan {
        return nothing(Reason::PaymentPlan);
    }
    let local_now = input.now.with_timezone(&tz);
    let today = local_now.date_naive();
    let local_date = |t: DateTime<Utc>| t.with_timezone(&tz).date_naive();

    let mut staff = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut blocked: Vec<Reason> = Vec::new();

    // ---- postpaid bills, per track ----
    let mut tracks: Vec<Track> = input.bills.iter().map(|b| b.track).collect();
    tracks.sort();
    tracks.dedup();
    for track in tracks {
        let mut live: Vec<&OpenBill> = Vec::new();
        for b in input.bills.iter().filter(|b| b.track == track) {
            if b.disputed {
                blocked.push(Reason::Disputed);
                continue;
            }
            let covering = input.payments.iter().find(|p| {
                p.bill_ids.contains(&b.bill_id) || (p.bill_ids.is_empty() && local_date(p.at) >= b.issued_on)
            });
            if let Some(p) = covering {
                blocked.push(if p.pending {
                    Reason::PaymentPending
                } else {
                    Reason::PaymentReceived
                });
                continue;
            }
            if b.amount_due.is_positive() {
                live.push(b);
            }
        }
        if live.is_empty() {
            continue;
        }
        let total: i64 = live.iter().map(|b| b.amount_due.get()).sum();
        if total < policy.min_amount.get() {
            blocked.push(Reason::BelowMinimum);
            continue;
        }
        // Staff work that follows from age alone.
        let oldest_overdue = live.iter().map(|b| (today - b.due_on).num_days()).max().unwrap_or(0);
        let final_sent = input
            .history
            .iter()
            .filter(|h| h.account_id == account.account_id && h.step == Step::FinalReminder && h.track == Some(track))
            .map(|h| h.at)
            .min();
        if let Some(at) = final_sent {
            let since_final = (today - local_date(at)).num_days();
            match track {
                Track::Utility(_) => {
                    if oldest_overdue >= i64::from(policy.supply_review_min_days)
                        && since_final >= i64::from(policy.supply_review_after_final_days)
                    {
                        staff.push(StaffAction::SupplyActionReview {
                            track,
                            days_overdue: oldest_overdue,
                        });
                    }
                }
                Track::PropertyFee => {
                    if since_final >= i64::from(policy.final_deadline_days) {
                        staff.push(StaffAction::PropertyFeeHandover {
                            days_overdue: oldest_overdue,
                        });
                    }
                }
            }
        }
        // The latest step due for each bill, unless that step (or a later one) went already.
        let mut pending: Vec<(&OpenBill, Step)> = Vec::new();
        for b in &live {
            // The furthest step reached by now — by rank, not by date: a bill issued late (after
            // its own overdue days, e.g. a back-billed period) is at its overdue step, not at
            // "bill issued".
            let Some((step, _)) = policy
                .schedule(b, account.credit_rating, account.auto_debit)
                .into_iter()
                .filter(|(_, d)| *d <= today)
                .max_by_key(|(s, _)| s.rank())
            else {
                continue;
            };
            pending.push((b, step));
        }
        let Some(top) = pending.iter().map(|(_, s)| *s).max_by_key(|s| s.rank()) else {
            continue;
        };
        let included: Vec<(&OpenBill, Step)> = pending
            .into_iter()
            .filter(|(_, s)| s.is_notice() == top.is_notice())
            .collect();
        let sent_on = |bill: i64, step: Step, ch: Option<Channel>| {
            input.history.iter().any(|h| {
                h.account_id == account.account_id
                    && h.bill_ids.contains(&bill)
                    && h.track.is_none_or(|t| t == track)
                    && ((h.step == step && ch.is_none_or(|c| h.channel == c)) || h.step.rank() > step.rank())
            })
        };
        // Channels of the top step not yet used for every included bill.
        let legally_required = top == Step::FinalReminder;
        let mut chosen = None;
        let mut saw_opt_out = false;
        let mut open_channel = false;
        for ch in policy.channels(top) {
            if included.iter().all(|(b, s)| sent_on(b.bill_id, *s, Some(*ch))) {
                continue;
            }
            open_channel = true;
            let recipient = match ch {
                Channel::Sms => account.mobile.clone(),
                Channel::Email => account.email.clone(),
                Channel::Letter => Some(String::new()),
            };
            if account.opted_out.contains(ch) {
                saw_opt_out = true;
                continue;
            }
            if let Some(r) = recipient {
                chosen = Some((*ch, Some(r).filter(|r| !r.is_empty())));
                break;
            }
        }
        if !open_channel {
            blocked.push(Reason::AlreadySent);
            continue;
        }
        let chosen = match chosen {
            Some(c) => Some(c),
            // The final reminder is served whatever the electronic channels say.
            None if legally_required
                && !included
                    .iter()
                    .all(|(b, s)| sent_on(b.bill_id, *s, Some(Channel::Letter))) =>
            {
                Some((Channel::Letter, None))
            }
            None => None,
        };
        let Some((channel, recipient)) = chosen else {
            blocked.push(if saw_opt_out {
                Reason::OptedOut
            } else {
                Reason::NoContact
            });
            continue;
        };
        if legally_required {
            staff.push(StaffAction::ServeWrittenNotice { track });
        }
        let amount = Fen::new(included.iter().map(|(b, _)| b.amount_due.get()).sum());
        if matches!(top, Step::Overdue(n) if n >= 2)
            && (matches!(account.credit_rating, CreditRating::C | CreditRating::D) || amount >= policy.staff_call_from)
        {
            staff.push(StaffAction::Call { track });
        }
        let mut periods: Vec<(i32, u32)> = included.iter().map(|(b, _)| b.period).collect();
        periods.sort();
        periods.dedup();
        let due = if legally_required {
            Some(today + Duration::days(i64::from(policy.final_deadline_days)))
        } else {
            included.iter().map(|(b, _)| b.due_on).min()
        };
        let message = match top {
            Step::BillIssued => MessageKind::BillIssued,
            Step::PreDue => MessageKind::PreDue,
            Step::Overdue(_) if policy.late_fee_clause_in_sms && channel == Channel::Sms => MessageKind::OverdueLateFee,
            Step::Overdue(_) => MessageKind::Overdue,
            Step::FinalReminder => MessageKind::FinalReminder,
            Step::LowBalance(_) => MessageKind::LowBalance,
            Step::ZeroBalance => MessageKind::ZeroBalance,
        };
        let mut bills: Vec<(i64, Step)> = included.iter().map(|(b, s)| (b.bill_id, *s)).collect();
        bills.sort_by_key(|(id, _)| *id);
        candidates.push(Candidate {
            planned: Planned {
                step: top,
                track,
                channel,
                recipient,
                bills,
                amount,
                periods,
                due,
                message,
                days_left: None,
                legally_required,
            },
        });
    }

    // ---- prepaid balance ----
    if let (PaymentMode::Prepaid, Some(p)) = (account.payment_mode, input.prepaid) {
        let level = if p.balance.get() <= 0 {
            Some(Step::ZeroBalance)
        } else if p.balance <= policy.warn_2 {
            Some(Step::LowBalance(2))
        } else if p.balance <= policy.warn_1 {
            Some(Step::LowBalance(1))
        } else {
            None
        };
        if let Some(step) = level {
            let already = input.history.iter().any(|h| {
                h.account_id == account.account_id
                    && matches!(h.step, Step::LowBalance(_) | Step::ZeroBalance)
                    && h.step.rank() >= step.rank()
                    && p.last_top_up_at.is_none_or(|t| h.at > t)
            });
            let ch = policy.channels(step).iter().copied().find(|c| {
                !account.opted_out.contains(c)
                    && match c {
                        Channel::Sms => account.mobile.is_some(),
                        Channel::Email => account.email.is_some(),
                        Channel::Letter => true,
                    }
            });
            if already {
                blocked.push(Reason::AlreadySent);
            } else if let Some(channel) = ch {
                let days_left = p
                    .daily_charge
                    .filter(|d| d.is_positive())
                    .map(|d| (p.balance.get().max(0) / d.get()) as u32);
                candidates.push(Candidate {
                    planned: Planned {
                        step,
                        track: p.track,
                        channel,
                        recipient: match channel {
                            Channel::Sms => account.mobile.clone(),
                            Channel::Email => account.email.clone(),
                            Channel::Letter => None,
                        },
                        bills: Vec::new(),
                        amount: p.balance,
                        periods: Vec::new(),
                        due: None,
                        message: if step == Step::ZeroBalance {
                            MessageKind::ZeroBalance
                        } else {
                            MessageKind::LowBalance
                        },
                        days_left,
                        legally_required: false,
                    },
                });
            } else {
                blocked.push(if policy.channels(step).iter().any(|c| account.opted_out.contains(c)) {
                    Reason::OptedOut
                } else {
                    Reason::NoContact
                });
            }
        }
    }

    // The most urgent candidate goes; the rest wait for another day (one message a day).
    candidates.sort_by_key(|c| (std::cmp::Reverse(c.planned.step.rank()), c.planned.track));
    let Some(best) = candidates.into_iter().next() else {
        // The most telling reason: a payment beats a dispute beats the rest.
        let order = [
            Reason::PaymentPending,
            Reason::PaymentReceived,
            Reason::Disputed,
            Reason::OptedOut,
            Reason::NoContact,
            Reason::BelowMinimum,
            Reason::AlreadySent,
        ];
        let reason = order
            .into_iter()
            .find(|r| blocked.contains(r))
            .unwrap_or(Reason::NothingDue);
        return Decision {
            account_id: account.account_id,
            outcome: Outcome::Nothing { reason },
            staff,
        };
    };
    let planned = best.planned;

    // Letters are staff work: no quiet hours or daily cap for them.
    if planned.channel != Channel::Letter {
        let next_window = next_window_start(policy, &tz, input.now);
        if policy.holidays.contains(&today) {
            return wait(account.account_id, planned.step, next_window, Reason::Holiday, staff);
        }
        let t = local_now.time();
        if t < policy.window_start || t >= policy.window_end {
            return wait(account.account_id, planned.step, next_window, Reason::QuietHours, staff);
        }
        let electronic = |h: &&SentStep| h.channel != Channel::Letter;
        if input
            .history
            .iter()
            .filter(electronic)
            .any(|h| local_date(h.at) == today)
        {
            let tomorrow = tz
                .from_local_datetime(&(today + Duration::days(1)).and_time(NaiveTime::MIN))
                .earliest()
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or(input.now + Duration::days(1));
            return wait(
                account.account_id,
                planned.step,
                next_window_start(policy, &tz, tomorrow),
                Reason::DailyCap,
                staff,
            );
        }
        // Messages, not history entries: a combined message records one entry per bill.
        let mut week: Vec<(i64, Channel, DateTime<Utc>)> = input
            .history
            .iter()
            .filter(electronic)
            .filter(|h| h.at > input.now - Duration::days(7))
            .map(|h| (h.account_id, h.channel, h.at))
            .collect();
        week.sort();
        week.dedup();
        let week: Vec<DateTime<Utc>> = week.into_iter().map(|(_, _, at)| at).collect();
        if week.len() as u32 >= policy.max_per_week {
            let oldest = week.iter().min().copied().unwrap_or(input.now);
            return wait(
                account.account_id,
                planned.step,
                next_window_start(policy, &tz, oldest + Duration::days(7)),
                Reason::WeeklyCap,
                staff,
            );
        }
    }
    Decision {
        account_id: account.account_id,
        outcome: Outcome::Send(planned),
        staff,
    }
}

fn wait(account_id: i64, step: Step, until: DateTime<Utc>, reason: Reason, staff: Vec<StaffAction>) -> Decision {
    Decision {
        account_id,
        outcome: Outcome::Wait { step, until, reason },
        staff,
    }
}

/// The first instant at or after `from` inside the send window on a non-holiday.
pub fn next_window_start(policy: &CommunityPolicy, tz: &chrono_tz::Tz, from: DateTime<Utc>) -> DateTime<Utc> {
    let local = from.with_timezone(tz);
    let mut day = local.date_naive();
    for _ in 0..400 {
        if !policy.holidays.contains(&day) {
            let start = tz.from_local_datetime(&day.and_time(policy.window_start)).earliest();
            let end = tz.from_local_datetime(&day.and_time(policy.window_end)).earliest();
            if let (Some(s), Some(e)) = (start, end) {
                let (s, e) = (s.with_timezone(&Utc), e.with_timezone(&Utc));
                if from < s {
                    return s;
                }
                if from < e {
                    return from;
                }
            }
        }
        day += Duration::days(1);
    }
    from
}

/// Whether an SMS reply asks to stop reminder SMS (the reply convention: 退订, TD, T, N, R…).
pub fn parse_sms_reply(text: &str) -> bool {
    let t: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    matches!(
        t.as_str(),
        "TD" | "T" | "N" | "R" | "退订" | "回T退订" | "退" | "拒收" | "STOP" | "UNSUBSCRIBE"
    ) || t.starts_with("退订")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beijing time → UTC.
    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        tz.with_ymd_and_hms(y, m, d, h, min, 0).unwrap().with_timezone(&Utc)
    }
    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn account() -> AccountFacts {
        AccountFacts {
            account_id: 7,
            household: "premises:3".into(),
            mobile: Some("13800138000".into()),
            email: Some("resident@example.cn".into()),
            ..Default::default()
        }
    }

    fn bill(id: i64, track: Track, fen: i64, due: NaiveDate) -> OpenBill {
        OpenBill {
            bill_id: id,
            track,
            amount_due: Fen::new(fen),
            period: (2026, 6),
            issued_on: due - Duration::days(15),
            due_on: due,
            disputed: false,
        }
    }

    const ELEC: Track = Track::Utility(Utility::Electricity);
    const WATER: Track = Track::Utility(Utility::Water);

    struct Case {
        policy: CommunityPolicy,
        account: AccountFacts,
        bills: Vec<OpenBill>,
        payments: Vec<PaymentFact>,
        history: Vec<SentStep>,
        prepaid: Option<PrepaidFacts>,
    }

    impl Case {
        fn new(bills: Vec<OpenBill>) -> Case {
            Case {
                policy: CommunityPolicy::default(),
                account: account(),
                bills,
                payments: vec![],
                history: vec![],
                prepaid: None,
            }
        }
        fn at(&self, now: DateTime<Utc>) -> Decision {
            decide(&PolicyInput {
                now,
                policy: &self.policy,
                account: &self.account,
                bills: &self.bills,
                payments: &self.payments,
                history: &self.history,
                prepaid: self.prepaid.as_ref(),
            })
        }
        /// Record what a decision sent, as the outbox would.
        fn sent(&mut self, d: &Decision, now: DateTime<Utc>) {
            if let Outcome::Send(p) = &d.outcome {
                for (bill, step) in &p.bills {
                    self.history.push(SentStep {
                        account_id: d.account_id,
                        step: *step,
                        track: Some(p.track),
                        bill_ids: vec![*bill],
                        channel: p.channel,
                        at: now,
                    });
                }
                if p.bills.is_empty() {
                    self.history.push(SentStep {
                        account_id: d.account_id,
                        step: p.step,
                        track: Some(p.track),
                        bill_ids: vec![],
                        channel: p.channel,
                        at: now,
                    });
                }
            }
        }
    }

    fn planned(d: &Decision) -> &Planned {
        match &d.outcome {
            Outcome::Send(p) => p,
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn the_default_policy_is_valid_and_refuses_a_short_final_deadline() {
        CommunityPolicy::default().validate().unwrap();
        let p = CommunityPolicy {
            final_deadline_days: 3,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = CommunityPolicy {
            timezone: "Mars/Olympus".into(),
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn a_bill_walks_the_default_cadence_issue_pre_due_overdue_and_final() {
        let due = date(2026, 7, 15);
        let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
        let mut seen = Vec::new();
        for day in 0..40 {
            let now = at(2026, 6, 30, 10, 0) + Duration::days(day);
            let d = c.at(now);
            if let Outcome::Send(p) = &d.outcome {
                seen.push((
                    p.step,
                    p.channel,
                    (now.with_timezone(&chrono_tz::Asia::Shanghai).date_naive() - due).num_days(),
                ));
            }
            c.sent(&d, now);
        }
        assert_eq!(
            seen,
            vec![
                (Step::BillIssued, Channel::Sms, -15),
                (Step::BillIssued, Channel::Email, -14),
                (Step::PreDue, Channel::Sms, -3),
                (Step::PreDue, Channel::Email, -2),
                (Step::Overdue(1), Channel::Sms, 3),
                (Step::Overdue(1), Channel::Email, 4),
                (Step::Overdue(2), Channel::Sms, 10),
                (Step::Overdue(2), Channel::Email, 11),
                (Step::FinalReminder, Channel::Sms, 20),
                (Step::FinalReminder, Channel::Email, 21),
            ]
        );
    }

    #[test]
    fn nothing_is_sent_in_quiet_hours_and_the_wait_ends_at_eight_local_time() {
        let c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        let late = at(2026, 7, 18, 21, 0);
        let d = c.at(late);
        assert_eq!(
            d.outcome,
            Outcome::Wait {
                step: Step::Overdue(1),
                until: at(2026, 7, 19, 8, 0),
                reason: Reason::QuietHours
            }
        );
        let early = at(2026, 7, 19, 7, 59);
        assert!(matches!(
            c.at(early).outcome,
            Outcome::Wait {
                reason: Reason::QuietHours,
                ..
            }
        ));
        assert!(matches!(c.at(at(2026, 7, 19, 8, 0)).outcome, Outcome::Send(_)));
        assert!(matches!(c.at(at(2026, 7, 19, 20, 59)).outcome, Outcome::Send(_)));
    }

    #[test]
    fn quiet_hours_follow_the_community_time_zone() {
        let mut c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        c.policy.timezone = "Asia/Urumqi".into(); // UTC+6
                                                  // 09:00 in Beijing is 07:00 in Urumqi: still quiet there.
        assert!(matches!(
            c.at(at(2026, 7, 19, 9, 0)).outcome,
            Outcome::Wait {
                reason: Reason::QuietHours,
                ..
            }
        ));
        assert!(matches!(c.at(at(2026, 7, 19, 10, 0)).outcome, Outcome::Send(_)));
    }

    #[test]
    fn holidays_wait_for_the_next_working_window() {
        let mut c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        c.policy.holidays = vec![date(2026, 7, 19), date(2026, 7, 20)];
        let d = c.at(at(2026, 7, 19, 10, 0));
        assert_eq!(
            d.outcome,
            Outcome::Wait {
                step: Step::Overdue(1),
                until: at(2026, 7, 21, 8, 0),
                reason: Reason::Holiday
            }
        );
    }

    #[test]
    fn one_message_per_household_per_day_across_bills_tracks_and_channels() {
        let due = date(2026, 7, 15);
        let mut c = Case::new(vec![bill(1, ELEC, 10000, due), bill(2, WATER, 3000, due)]);
        let morning = at(2026, 7, 18, 9, 0);
        let first = c.at(morning);
        let p = planned(&first).clone();
        assert_eq!(p.track, ELEC, "electricity first on a tie");
        c.sent(&first, morning);
        let d = c.at(morning + Duration::hours(3));
        assert_eq!(
            d.outcome,
            Outcome::Wait {
                step: Step::Overdue(1),
                until: at(2026, 7, 19, 8, 0),
                reason: Reason::DailyCap
            }
        );
        // Another account of the same household sent today counts too.
        let mut other = Case::new(vec![bill(9, WATER, 3000, due)]);
        other.history.push(SentStep {
            account_id: 99,
            step: Step::BillIssued,
            track: Some(WATER),
            bill_ids: vec![50],
            channel: Channel::Email,
            at: morning,
        });
        assert!(matches!(
            other.at(morning + Duration::hours(1)).outcome,
            Outcome::Wait {
                reason: Reason::DailyCap,
                ..
            }
        ));
        // The next day the water bill gets its turn.
        let next = c.at(at(2026, 7, 19, 9, 0));
        assert!(
            matches!(&next.outcome, Outcome::Send(p) if p.track == ELEC && p.channel == Channel::Email || p.track == WATER)
        );
    }

    #[test]
    fn at_most_three_messages_in_seven_days() {
        let mut c = Case::new(vec![bill(1, ELEC, 10000, date(2026, 7, 15))]);
        for d in [1, 2, 3] {
            c.history.push(SentStep {
                account_id: 7,
                step: Step::BillIssued,
                track: Some(WATER),
                bill_ids: vec![100 + d],
                channel: Channel::Sms,
                at: at(2026, 7, 14 + d as u32, 9, 0),
            });
        }
        let d = c.at(at(2026, 7, 18, 10, 0));
        assert_eq!(
            d.outcome,
            Outcome::Wait {
                step: Step::Overdue(1),
                until: at(2026, 7, 22, 9, 0),
                reason: Reason::WeeklyCap
            }
        );
    }

    #[test]
    fn a_combined_message_counts_once_against_the_weekly_cap() {
        let mut c = Case::new(vec![bill(1, ELEC, 10000, date(2026, 7, 15))]);
        for b in [101, 102, 103, 104] {
            c.history.push(SentStep {
                account_id: 7,
                step: Step::Overdue(1),
                track: Some(WATER),
                bill_ids: vec![b],
                channel: Channel::Sms,
                at: at(2026, 7, 16, 9, 0),
            });
        }
        assert!(matches!(c.at(at(2026, 7, 18, 10, 0)).outcome, Outcome::Send(_)));
    }

    #[test]
    fn several_overdue_bills_of_a_track_make_one_combined_message() {
        let mut c = Case::new(vec![
            bill(1, ELEC, 10000, date(2026, 6, 15)),
            bill(2, ELEC, 6325, date(2026, 7, 15)),
        ]);
        c.bills[0].period = (2026, 5);
        let p = planned(&c.at(at(2026, 7, 18, 10, 0))).clone();
        assert_eq!(p.step, Step::FinalReminder, "the older bill is 33 days overdue");
        assert_eq!(p.bills, vec![(1, Step::FinalReminder), (2, Step::Overdue(1))]);
        assert_eq!(p.amount, Fen::new(16325));
        assert_eq!(p.periods, vec![(2026, 5), (2026, 6)]);
        assert_eq!(
            p.due,
            Some(date(2026, 7, 25)),
            "the final reminder states a deadline 7 days out"
        );
    }

    #[test]
    fn any_payment_even_a_pending_order_stops_reminders_at_once() {
        let due = date(2026, 7, 15);
        let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
        let now = at(2026, 7, 18, 10, 0);
        assert!(matches!(c.at(now).outcome, Outcome::Send(_)));
        c.payments.push(PaymentFact {
            at: now - Duration::minutes(5),
            pending: true,
            bill_ids: vec![],
        });
        assert_eq!(
            c.at(now).outcome,
            Outcome::Nothing {
                reason: Reason::PaymentPending
            }
        );
        c.payments[0].pending = false;
        assert_eq!(
            c.at(now).outcome,
            Outcome::Nothing {
                reason: Reason::PaymentReceived
            }
        );
        // A payment from before the bill was issued does not cover it.
        c.payments[0].at = at(2026, 6, 1, 10, 0);
        assert!(matches!(c.at(now).outcome, Outcome::Send(_)));
        // A payment naming the bill covers it whenever it was made.
        c.payments[0].bill_ids = vec![1];
        assert_eq!(
            c.at(now).outcome,
            Outcome::Nothing {
                reason: Reason::PaymentReceived
            }
        );
    }

    #[test]
    fn a_disputed_bill_is_not_reminded_but_the_others_are() {
        let due = date(2026, 7, 15);
        let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
        c.bills[0].disputed = true;
        let now = at(2026, 7, 18, 10, 0);
        assert_eq!(
            c.at(now).outcome,
            Outcome::Nothing {
                reason: Reason::Disputed
            }
        );
        c.bills.push(bill(2, WATER, 3000, due));
        let p = planned(&c.at(now)).clone();
        assert_eq!(p.bills, vec![(2, Step::Overdue(1))]);
    }

    #[test]
    fn opt_out_skips_a_channel_and_stops_reminders_but_never_the_final_notice() {
        let due = date(2026, 7, 15);
        let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
        c.account.opted_out = vec![Channel::Sms];
        let p = planned(&c.at(at(2026, 7, 18, 10, 0))).clone();
        assert_eq!(p.channel, Channel::Email);
        c.account.opted_out = vec![Channel::Sms, Channel::Email];
        assert_eq!(
            c.at(at(2026, 7, 18, 10, 0)).outcome,
            Outcome::Nothing {
                reason: Reason::OptedOut
            }
        );
        let d = c.at(at(2026, 8, 4, 22, 30));
        let p = planned(&d).clone();
        assert_eq!(
            (p.step, p.channel),
            (Step::FinalReminder, Channel::Letter),
            "by letter, even at night (staff work)"
        );
        assert!(p.legally_required);
        assert!(d.staff.contains(&StaffAction::ServeWrittenNotice { track: ELEC }));
    }

    #[test]
    fn no_contact_is_its_own_reason() {
        let mut c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        c.account.mobile = None;
        c.account.email = None;
        assert_eq!(
            c.at(at(2026, 7, 18, 10, 0)).outcome,
            Outcome::Nothing {
                reason: Reason::NoContact
            }
        );
    }

    #[test]
    fn credit_rating_escalates_the_cadence() {
        let due = date(2026, 7, 15);
        let first_overdue = |rating| {
            let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
            c.account.credit_rating = rating;
            (0..30)
                .map(|d| at(2026, 7, 15, 10, 0) + Duration::days(d))
                .find(|now| matches!(&c.at(*now).outcome, Outcome::Send(p) if matches!(p.step, Step::Overdue(_))))
                .map(|now| (now.date_naive() - due).num_days())
        };
        assert_eq!(first_overdue(CreditRating::A), Some(5));
        assert_eq!(first_overdue(CreditRating::B), Some(3));
        assert_eq!(first_overdue(CreditRating::D), Some(1));
        // Rating A: no pre-due notice.
        let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
        c.account.credit_rating = CreditRating::A;
        c.policy.bill_issued_notice = false;
        assert_eq!(
            c.at(at(2026, 7, 12, 10, 0)).outcome,
            Outcome::Nothing {
                reason: Reason::NothingDue
            }
        );
        c.account.credit_rating = CreditRating::B;
        assert_eq!(planned(&c.at(at(2026, 7, 12, 10, 0))).step, Step::PreDue);
        // Rating D reaches the final reminder at D + 15.
        c.account.credit_rating = CreditRating::D;
        assert_eq!(planned(&c.at(at(2026, 7, 30, 10, 0))).step, Step::FinalReminder);
    }

    #[test]
    fn rating_c_or_a_large_amount_adds_a_staff_call_at_the_second_overdue_step() {
        let due = date(2026, 7, 15);
        let now = at(2026, 7, 26, 10, 0);
        let mut c = Case::new(vec![bill(1, ELEC, 16325, due)]);
        assert_eq!(planned(&c.at(now)).step, Step::Overdue(2));
        assert!(c.at(now).staff.is_empty());
        c.account.credit_rating = CreditRating::C;
        assert_eq!(c.at(now).staff, vec![StaffAction::Call { track: ELEC }]);
        c.account.credit_rating = CreditRating::B;
        c.bills[0].amount_due = Fen::new(60_000);
        assert_eq!(c.at(now).staff, vec![StaffAction::Call { track: ELEC }]);
    }

    #[test]
    fn an_amount_below_the_minimum_is_not_reminded() {
        let c = Case::new(vec![bill(1, ELEC, 99, date(2026, 7, 15))]);
        assert_eq!(
            c.at(at(2026, 7, 18, 10, 0)).outcome,
            Outcome::Nothing {
                reason: Reason::BelowMinimum
            }
        );
    }

    #[test]
    fn utility_arrears_reach_a_supply_review_only_after_the_final_notice_and_property_fees_never_do() {
        let due = date(2026, 6, 1);
        for track in [ELEC, Track::PropertyFee] {
            let mut c = Case::new(vec![bill(1, track, 16325, due)]);
            let before = c.at(at(2026, 7, 20, 10, 0));
            assert!(
                !before
                    .staff
                    .iter()
                    .any(|s| matches!(s, StaffAction::SupplyActionReview { .. })),
                "no final notice yet"
            );
            for (channel, day) in [(Channel::Sms, 21), (Channel::Email, 22)] {
                c.history.push(SentStep {
                    account_id: 7,
                    step: Step::FinalReminder,
                    track: Some(track),
                    bill_ids: vec![1],
                    channel,
                    at: at(2026, 6, day, 10, 0),
                });
            }
            let later = c.at(at(2026, 7, 20, 10, 0));
            let review = later
                .staff
                .iter()
                .any(|s| matches!(s, StaffAction::SupplyActionReview { .. }));
            match track {
                Track::Utility(_) => assert!(review, "49 days overdue, final notice 29 days ago"),
                Track::PropertyFee => {
                    assert!(!review, "property fees are never tied to supply");
                    assert!(later
                        .staff
                        .iter()
                        .any(|s| matches!(s, StaffAction::PropertyFeeHandover { .. })));
                }
            }
            // Nothing more is sent automatically after the final reminder.
            assert!(!matches!(later.outcome, Outcome::Send(_)));
        }
    }

    #[test]
    fn a_bill_issued_after_its_due_date_is_at_its_overdue_step_not_at_bill_issued() {
        let mut c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        c.bills[0].issued_on = date(2026, 8, 1);
        let p = planned(&c.at(at(2026, 8, 2, 10, 0))).clone();
        assert_eq!(p.step, Step::Overdue(2));
    }

    #[test]
    fn a_late_start_sends_the_latest_step_only() {
        let c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        let p = planned(&c.at(at(2026, 7, 27, 10, 0))).clone();
        assert_eq!(p.step, Step::Overdue(2), "not bill issued, pre-due and overdue 1 first");
    }

    #[test]
    fn prepaid_balance_notices_fire_once_per_level_between_top_ups() {
        let mut c = Case::new(vec![]);
        c.account.payment_mode = PaymentMode::Prepaid;
        c.prepaid = Some(PrepaidFacts {
            track: ELEC,
            balance: Fen::new(4_500),
            last_top_up_at: Some(at(2026, 7, 1, 10, 0)),
            daily_charge: Some(Fen::new(1_500)),
        });
        let now = at(2026, 7, 10, 10, 0);
        let d = c.at(now);
        let p = planned(&d).clone();
        assert_eq!(
            (p.step, p.message, p.days_left),
            (Step::LowBalance(1), MessageKind::LowBalance, Some(3))
        );
        c.sent(&d, now);
        let tomorrow = now + Duration::days(1);
        assert_eq!(
            c.at(tomorrow).outcome,
            Outcome::Nothing {
                reason: Reason::AlreadySent
            }
        );
        c.prepaid.as_mut().unwrap().balance = Fen::new(1_500);
        assert_eq!(planned(&c.at(tomorrow)).step, Step::LowBalance(2));
        c.prepaid.as_mut().unwrap().balance = Fen::new(-20);
        assert_eq!(planned(&c.at(tomorrow)).step, Step::ZeroBalance);
        // After a top-up the account is re-armed.
        c.prepaid.as_mut().unwrap().balance = Fen::new(4_000);
        c.prepaid.as_mut().unwrap().last_top_up_at = Some(tomorrow);
        assert_eq!(planned(&c.at(tomorrow + Duration::days(1))).step, Step::LowBalance(1));
    }

    #[test]
    fn vacant_premises_and_payment_plans_stop_everything() {
        let mut c = Case::new(vec![bill(1, ELEC, 16325, date(2026, 7, 15))]);
        c.account.vacant = true;
        assert_eq!(
            c.at(at(2026, 7, 18, 10, 0)).outcome,
            Outcome::Nothing { reason: Reason::Vacant }
        );
        c.account.vacant = false;
        c.account.payment_plan = true;
        assert_eq!(
            c.at(at(2026, 7, 18, 10, 0)).outcome,
            Outcome::Nothing {
                reason: Reason::PaymentPlan
            }
        );
    }

    #[test]
    fn sms_replies_that_ask_to_stop_are_recognised() {
        for yes in ["TD", "td", " T ", "退订", "回T退订", "N", "退订谢谢"] {
            assert!(parse_sms_reply(yes), "{yes}");
        }
        for no in ["好的", "已缴", "TDX", "谢谢"] {
            assert!(!parse_sms_reply(no), "{no}");
        }
    }

    #[test]
    fn steps_round_trip_through_their_codes() {
        for s in [
            Step::BillIssued,
            Step::PreDue,
            Step::Overdue(3),
            Step::FinalReminder,
            Step::LowBalance(2),
            Step::ZeroBalance,
        ] {
            assert_eq!(Step::parse(&s.code()), Some(s));
        }
        assert_eq!(Step::parse("overdue_x"), None);
    }
}
