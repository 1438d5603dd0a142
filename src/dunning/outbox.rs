//! Delivery through the outbox and the task queue.
//!
//! **The rule: nobody receives the same step twice.**
//!
//! 1. A policy decision becomes outbox rows ([`Composer::compose`] → [`Store::enqueue_reminder`])
//!    with a unique key per (account, track, step, channel, bill set) and the exact content;
//!    enqueueing the same step again adds nothing. Each row gets one `reminder.send` task.
//! 2. Before the provider is called, the attempt is **recorded** (`queued → sending`, an attempt
//!    row) and committed. Only a `queued` message can start an attempt.
//! 3. The provider's answer is recorded: accepted (message id kept; a `reminder.receipt` task
//!    later fetches the delivery status), refused for now (back to `queued`; the task retries
//!    with exponential back-off), refused for good (`failed`; no retry), or **unknown** (timeout,
//!    connection lost after sending).
//! 4. A message found `sending` or `unknown` — the sender died between steps 2 and 3, or could
//!    not tell — is **settled by the provider's status query** (Alibaba QuerySendDetails,
//!    Tencent PullSmsSendStatusByPhoneNumber), matched on our `OutId` / `SessionContext` (the
//!    outbox id). Found: it was sent, record it. Not found: keep waiting, and only when
//!    `sms.unknown_settle_minutes` have passed since the attempt with still no record is it
//!    taken as never arrived and attempted again. It is never simply sent again.
//!
//! E-mail has no status query: an unknown e-mail attempt is retried after the same window with
//! the **same Message-ID**, so a copy the server did take is recognisably the same message.
//! Letters (the written final notice) are staff work: `awaiting_staff` until marked served.
//!
//! Rate limits: each provider's client holds one token bucket (`sms.rate_per_sec`) shared by all
//! senders in the process; the sandbox enforces its own limit like the real providers do.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::jobs::queue::handler;
use crate::jobs::{Handler, TaskError};
use crate::paylink::{LinkPurpose, LinkSigner};
use crate::store::jobs::NewTask;
use crate::store::reminders::{AttemptOutcome, Enqueued, NewReminder, ReminderRow, SEND_TASK};
use crate::store::{Store, StoreError};
use crate::telemetry::mask_phone;

use super::email::{EmailError, EmailSender, OutgoingEmail, SmtpSettings};
use super::policy::{AccountFacts, Channel, Decision, Outcome, Planned};
use super::sms::aliyun::{AliyunClient, AliyunConfig};
use super::sms::tencent::{TencentClient, TencentConfig};
use super::sms::{DeliveryState, ProviderKind, SendError, SmsClient, SmsMessage, StatusQuery};
use super::templates::{self, Language, MessageFacts, MessageKind, SummaryLine};

/// The task that fetches the delivery receipt of a sent message.
pub const RECEIPT_TASK: &str = "reminder.receipt";

/// What an SMS row carries (its `content_json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SmsContent {
    pub sign_name: String,
    pub template_code: String,
    pub params: Vec<(String, String)>,
    /// The text the resident reads (evidence of the notice).
    pub text: String,
}

/// What an e-mail row carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub list_unsubscribe: String,
    pub message_id: String,
}

/// One community's sending settings (from `[reminders]` and `[reminders.communities.CODE]`).
#[derive(Debug, Clone)]
pub struct Profile {
    /// The community code (recorded on each row).
    pub code: String,
    pub community_id: i64,
    pub community_name: String,
    pub sms_provider: ProviderKind,
    pub sign_name: String,
    pub service_tel: String,
    pub language: Language,
    /// Template code per [`MessageKind::as_str`].
    pub templates: HashMap<String, String>,
}

impl Profile {
    /// The profile for a community from the configuration.
    pub fn from_config(config: &Config, community_id: i64, code: &str, name: &str) -> Profile {
        let r = &config.reminders;
        let c = r.communities.get(code);
        let mut templates: HashMap<String, String> = r.templates.clone().into_iter().collect();
        if let Some(c) = c {
            templates.extend(c.templates.clone());
        }
        Profile {
            code: code.to_string(),
            community_id,
            community_name: name.to_string(),
            sms_provider: c.and_then(|c| c.sms_provider).unwrap_or(r.sms_provider),
            sign_name: c
                .and_then(|c| c.sign_name.clone())
                .unwrap_or_else(|| r.sign_name.clone()),
            service_tel: c
                .and_then(|c| c.service_tel.clone())
                .unwrap_or_else(|| r.service_tel.clone()),
            language: c.and_then(|c| c.language).unwrap_or(r.language),
            templates,
        }
    }
}

/// What the message states besides the policy's plan (the join reads these from the bills).
#[derive(Debug, Clone, Default)]
pub struct ComposeFacts {
    /// Building/unit/room, e.g. "3栋2单元501".
    pub room: String,
    pub lines: Vec<SummaryLine>,
}

/// Why a decision could not become messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("community {community}: no approved SMS template configured for {kind}")]
    NoTemplate { community: String, kind: &'static str },
    #[error("community {community}: no SMS signature (sign_name) configured")]
    NoSignName { community: String },
    #[error("the message would be refused: {0}")]
    Content(#[from] templates::ContentError),
}

/// Turns a policy decision into outbox rows.
#[derive(Debug, Clone)]
pub struct Composer {
    pub links: LinkSigner,
    pub pay_link_ttl: Duration,
    pub unsubscribe_ttl: Duration,
    pub max_attempts: i32,
}

impl Composer {
    pub fn from_config(config: &Config, links: LinkSigner) -> Composer {
        Composer {
            links,
            pay_link_ttl: Duration::days(config.reminders.pay_link_ttl_days.max(1)),
            unsubscribe_ttl: Duration::days(config.reminders.unsubscribe_link_ttl_days.max(1)),
            max_attempts: config.reminders.max_attempts.max(1),
        }
    }

    /// The rows for a decision: one for its channel, plus a letter row when the final reminder
    /// must also be served in writing. Nothing for a decision that sends nothing.
    pub fn compose(
        &self,
        decision: &Decision,
        account: &AccountFacts,
        profile: &Profile,
        facts: &ComposeFacts,
        now: DateTime<Utc>,
    ) -> Result<Vec<NewReminder>, ComposeError> {
        let Outcome::Send(p) = &decision.outcome else {
            return Ok(Vec::new());
        };
        let mut out = vec![self.row(p, p.channel, account, profile, facts, now)?];
        if p.legally_required && p.channel != Channel::Letter {
            out.push(self.row(p, Channel::Letter, account, profile, facts, now)?);
        }
        Ok(out)
    }

    fn row(
        &self,
        p: &Planned,
        channel: Channel,
        account: &AccountFacts,
        profile: &Profile,
        facts: &ComposeFacts,
        now: DateTime<Utc>,
    ) -> Result<NewReminder, ComposeError> {
        let expires = now + self.pay_link_ttl;
        let token = self.links.token(account.account_id, LinkPurpose::Pay, expires);
        let kind = match (p.message, channel) {
            // The late-fee variant is an SMS template choice; e-mail always states the clause.
            (MessageKind::OverdueLateFee, Channel::Email | Channel::Letter) => MessageKind::Overdue,
            (k, _) => k,
        };
        let mf = MessageFacts {
            kind,
            language: profile.language,
            room: facts.room.clone(),
            periods: p.periods.clone(),
            tracks: vec![p.track],
            amount: p.amount,
            due: p.due,
            days_left: p.days_left,
            service_tel: profile.service_tel.clone(),
            pay_token: token.clone(),
            lines: facts.lines.clone(),
            community_name: profile.community_name.clone(),
        };
        let (provider, recipient, content) = match channel {
            Channel::Sms => {
                if profile.sign_name.is_empty() {
                    return Err(ComposeError::NoSignName {
                        community: profile.code.clone(),
                    });
                }
                let code = profile
                    .templates
                    .get(kind.as_str())
                    .cloned()
                    .ok_or(ComposeError::NoTemplate {
                        community: profile.code.clone(),
                        kind: kind.as_str(),
                    })?;
                let sms = templates::sms(&mf, self.links.base_url());
                templates::check_sms(
                    &templates::template_text(kind, profile.language, self.links.base_url()),
                    &sms,
                    &profile.sign_name,
                )?;
                let content = SmsContent {
                    sign_name: profile.sign_name.clone(),
                    template_code: code,
                    params: sms.params,
                    text: format!("【{}】{}", profile.sign_name, sms.text),
                };
                (
                    profile.sms_provider.as_str().to_string(),
                    p.recipient.clone().unwrap_or_default(),
                    serde_json::to_value(content).expect("serialising SMS content"),
                )
            }
            Channel::Email => {
                let pay_url = format!("{}/pay/{token}", self.links.base_url());
                let unsub = self.links.url(
                    account.account_id,
                    LinkPurpose::UnsubscribeEmail,
                    now + self.unsubscribe_ttl,
                );
                let e = templates::email(&mf, &pay_url, &unsub);
                let domain = url::Url::parse(self.links.base_url())
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| "meterpay.local".into());
                let content = EmailContent {
                    subject: e.subject,
                    text: e.text,
                    html: e.html,
                    list_unsubscribe: unsub,
                    message_id: format!(
                        "<reminder.{}.{}@{domain}>",
                        account.account_id,
                        uuid::Uuid::new_v4().simple()
                    ),
                };
                (
                    "smtp".to_string(),
                    p.recipient.clone().unwrap_or_default(),
                    serde_json::to_value(content).expect("serialising e-mail content"),
                )
            }
            Channel::Letter => {
                let e = templates::email(&mf, &format!("{}/pay/{token}", self.links.base_url()), "");
                (
                    "letter".to_string(),
                    String::new(),
                    serde_json::json!({ "subject": e.subject, "text": e.text }),
                )
            }
        };
        let steps: Vec<(i64, String)> = p.bills.iter().map(|(id, s)| (*id, s.code())).collect();
        Ok(NewReminder {
            account_id: account.account_id,
            community_id: profile.community_id,
            household: account.household.clone(),
            track: p.track.as_str().to_string(),
            step: p.step.code(),
            channel: channel.as_str().to_string(),
            bill_ids: p.bills.iter().map(|(id, _)| *id).collect(),
            bill_steps: steps,
            provider,
            profile: profile.code.clone(),
            recipient,
            message_kind: kind.as_str().to_string(),
            content,
            legally_required: p.legally_required,
            not_before: now,
            max_attempts: self.max_attempts,
        })
    }
}

/// Compose and enqueue a decision's messages: the one call the nightly run makes per account.
pub async fn enqueue_decision(
    store: &Store,
    composer: &Composer,
    decision: &Decision,
    account: &AccountFacts,
    profile: &Profile,
    facts: &ComposeFacts,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Enqueued>> {
    let rows = composer.compose(decision, account, profile, facts, now)?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(store.enqueue_reminder(r, now).await?);
    }
    Ok(out)
}

/// How one delivery run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The provider took it (now, or as the status query proved).
    Sent,
    /// Nothing to do: already settled (`status`).
    Settled(String),
    /// Try again later: refused for now, or the outcome is still unknown.
    Later(String),
    /// Refused for good.
    Failed(String),
}

/// A hook run after an attempt is recorded and before the provider is called (tests use it to
/// kill a sender at exactly that point).
pub type BeforeCall = Arc<dyn Fn(i64) -> BoxFuture<'static, ()> + Send + Sync>;

/// Sends outbox messages.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    sms: HashMap<ProviderKind, SmsClient>,
    email: Option<EmailSender>,
    settle_after: Duration,
    before_call: Option<BeforeCall>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("sms", &self.sms.keys().collect::<Vec<_>>())
            .field("email", &self.email.is_some())
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(store: Store, sms: Vec<SmsClient>, email: Option<EmailSender>, settle_after: Duration) -> Deliverer {
        Deliverer {
            store,
            sms: sms.into_iter().map(|c| (c.kind(), c)).collect(),
            email,
            settle_after,
            before_call: None,
        }
    }

    /// Clients from `[sms]` (a provider without credentials is left out) and `[smtp]` (an empty
    /// host disables e-mail).
    pub fn from_config(store: Store, config: &Config) -> anyhow::Result<Deliverer> {
        use secrecy::ExposeSecret as _;
        let timeout = std::time::Duration::from_millis(config.sms.timeout_ms.max(1));
        let mut sms = Vec::new();
        let a = &config.sms.aliyun;
        if !a.access_key_id.is_empty() {
            sms.push(SmsClient::Aliyun(
                AliyunClient::new(AliyunConfig {
                    endpoint: a.endpoint.clone(),
                    access_key_id: a.access_key_id.clone(),
                    access_key_secret: a.access_key_secret.clone(),
                    timeout,
                    rate_per_sec: config.sms.rate_per_sec,
                })
                .map_err(anyhow::Error::msg)?,
            ));
        }
        let t = &config.sms.tencent;
        if !t.secret_id.is_empty() {
            sms.push(SmsClient::Tencent(
                TencentClient::new(TencentConfig {
                    endpoint: t.endpoint.clone(),
                    secret_id: t.secret_id.clone(),
                    secret_key: t.secret_key.clone(),
                    region: t.region.clone(),
                    sms_sdk_app_id: t.sms_sdk_app_id.clone(),
                    timeout,
                    rate_per_sec: config.sms.rate_per_sec,
                })
                .map_err(anyhow::Error::msg)?,
            ));
        }
        let s = &config.smtp;
        let email = if s.host.is_empty() {
            None
        } else {
            Some(
                EmailSender::new(&SmtpSettings {
                    host: s.host.clone(),
                    port: s.port,
                    security: s.security,
                    username: Some(s.username.clone()).filter(|u| !u.is_empty()),
                    password: Some(s.password.clone()).filter(|p| !p.expose_secret().is_empty()),
                    from: s.from.clone(),
                    timeout: std::time::Duration::from_secs(s.timeout_secs.max(1)),
                    tls_root_cert: Some(s.tls_root_cert.clone()).filter(|p| !p.is_empty()).map(Into::into),
                })
                .map_err(anyhow::Error::msg)?,
            )
        };
        Ok(Deliverer::new(
            store,
            sms,
            email,
            Duration::minutes(config.sms.unknown_settle_minutes.max(1)),
        ))
    }

    #[doc(hidden)]
    pub fn with_before_call(mut self, hook: BeforeCall) -> Deliverer {
        self.before_call = Some(hook);
        self
    }

    /// Deliver outbox message `id` as of `now`: start an attempt, or settle an open one.
    pub async fn deliver(&self, id: i64, now: DateTime<Utc>) -> Result<Delivery, StoreError> {
        let Some(row) = self.store.reminder(id).await? else {
            return Ok(Delivery::Failed(format!("reminder {id} does not exist")));
        };
        match row.status.as_str() {
            "queued" => self.attempt(&row, now).await,
            "sending" | "unknown" => self.settle(&row, now).await,
            other => Ok(Delivery::Settled(other.to_string())),
        }
    }

    async fn settle(&self, row: &ReminderRow, now: DateTime<Utc>) -> Result<Delivery, StoreError> {
        let attempt = row.attempts;
        let since = row.last_attempt_at.unwrap_or(row.created_at);
        let window_passed = now - since >= self.settle_after;
        let found = match row.channel.as_str() {
            "sms" => {
                let Some(client) = row.provider.parse::<ProviderKind>().ok().and_then(|k| self.sms.get(&k)) else {
                    return Ok(Delivery::Later(format!(
                        "no {} client configured to settle the attempt",
                        row.provider
                    )));
                };
                let out_id = row.id.to_string();
                let q = StatusQuery {
                    phone: &row.recipient,
                    sent_at: since,
                    message_id: row.provider_message_id.as_deref(),
                    out_id: &out_id,
                };
                match client.query_status(&q).await {
                    Ok(r) => r,
                    Err(e) => return Ok(Delivery::Later(e.to_string())),
                }
            }
            // SMTP has no status query: only the window decides.
            _ => None,
        };
        if let Some(rec) = found {
            let delivery = delivery_text(&rec.state);
            self.store
                .finish_reminder_attempt(
                    row.id,
                    attempt,
                    &AttemptOutcome::Accepted {
                        message_id: rec.message_id,
                        delivery: Some(delivery),
                    },
                    now,
                )
                .await?;
            tracing::info!(
                reminder = row.id,
                "an attempt with an unknown outcome was found at the provider: sent once"
            );
            return Ok(Delivery::Sent);
        }
        if !window_passed {
            if row.status == "sending" {
                self.store
                    .finish_reminder_attempt(
                        row.id,
                        attempt,
                        &AttemptOutcome::Unknown {
                            reason: "the sender stopped before recording the provider's answer".into(),
                        },
                        now,
                    )
                    .await?;
            }
            return Ok(Delivery::Later(
                "outcome unknown; waiting for the provider's status".into(),
            ));
        }
        // The provider has no record of it long after the attempt: it never arrived.
        self.store
            .finish_reminder_attempt(row.id, attempt, &AttemptOutcome::NotSent, now)
            .await?;
        match self.store.reminder(row.id).await? {
            Some(fresh) if fresh.status == "queued" => self.attempt(&fresh, now).await,
            Some(fresh) => Ok(Delivery::Settled(fresh.status)),
            None => Ok(Delivery::Failed(format!("reminder {} disappeared", row.id))),
        }
    }

    async fn attempt(&self, row: &ReminderRow, now: DateTime<Utc>) -> Result<Delivery, StoreError> {
        let Some(attempt) = self.store.begin_reminder_attempt(row.id, now).await? else {
            return Ok(Delivery::Later("another sender holds this message".into()));
        };
        if let Some(hook) = &self.before_call {
            hook(row.id).await;
        }
        let outcome = match row.channel.as_str() {
            "sms" => self.send_sms(row).await,
            "email" => self.send_email(row).await,
            other => AttemptOutcome::Permanent {
                code: "channel".into(),
                message: format!("channel {other} is not sent by the outbox"),
            },
        };
        let result = match &outcome {
            AttemptOutcome::Accepted { .. } => Delivery::Sent,
            AttemptOutcome::Transient { code, message } => Delivery::Later(format!("{code}: {message}")),
            AttemptOutcome::Permanent { code, message } => Delivery::Failed(format!("{code}: {message}")),
            AttemptOutcome::Unknown { reason } => Delivery::Later(format!("outcome unknown: {reason}")),
            AttemptOutcome::NotSent => Delivery::Later("not sent".into()),
        };
        tracing::info!(
            reminder = row.id,
            attempt,
            channel = %row.channel,
            recipient = %mask_recipient(&row.recipient),
            outcome = ?result,
            "reminder attempt"
        );
        let recorded = self
            .store
            .finish_reminder_attempt(row.id, attempt, &outcome, now)
            .await?;
        if !recorded {
            tracing::warn!(
                reminder = row.id,
                attempt,
                "the attempt was taken over before its outcome was recorded"
            );
        }
        if matches!(result, Delivery::Sent) && row.channel == "sms" {
            let task = NewTask {
                kind: RECEIPT_TASK.into(),
                payload: serde_json::json!({ "outbox_id": row.id }),
                dedupe_key: Some(format!("{RECEIPT_TASK}:{}", row.id)),
                run_at: now + Duration::minutes(5),
                max_attempts: 12,
            };
            self.store.enqueue_task(&task, now).await?;
        }
        Ok(result)
    }

    async fn send_sms(&self, row: &ReminderRow) -> AttemptOutcome {
        let content: SmsContent = match serde_json::from_str(&row.content_json) {
            Ok(c) => c,
            Err(e) => {
                return AttemptOutcome::Permanent {
                    code: "content".into(),
                    message: format!("reading the stored SMS content: {e}"),
                }
            }
        };
        let Some(client) = row.provider.parse::<ProviderKind>().ok().and_then(|k| self.sms.get(&k)) else {
            return AttemptOutcome::Permanent {
                code: "config".into(),
                message: format!("no {} SMS client is configured", row.provider),
            };
        };
        let msg = SmsMessage {
            phone: row.recipient.clone(),
            sign_name: content.sign_name,
            template_code: content.template_code,
            params: content.params,
            out_id: row.id.to_string(),
        };
        match client.send(&msg).await {
            Ok(a) => AttemptOutcome::Accepted {
                message_id: Some(a.message_id),
                delivery: None,
            },
            Err(SendError::Transient { code, message, .. }) => AttemptOutcome::Transient { code, message },
            Err(SendError::Permanent { code, message, .. }) => AttemptOutcome::Permanent { code, message },
            Err(SendError::Unknown { reason, .. }) => AttemptOutcome::Unknown { reason },
        }
    }

    async fn send_email(&self, row: &ReminderRow) -> AttemptOutcome {
        let content: EmailContent = match serde_json::from_str(&row.content_json) {
            Ok(c) => c,
            Err(e) => {
                return AttemptOutcome::Permanent {
                    code: "content".into(),
                    message: format!("reading the stored e-mail content: {e}"),
                }
            }
        };
        let Some(sender) = &self.email else {
            return AttemptOutcome::Permanent {
                code: "config".into(),
                message: "no SMTP server is configured (smtp.host)".into(),
            };
        };
        let mail = OutgoingEmail {
            to: vec![row.recipient.clone()],
            subject: content.subject,
            text: content.text,
            html: Some(content.html),
            attachments: Vec::new(),
            list_unsubscribe: Some(content.list_unsubscribe).filter(|u| !u.is_empty()),
            message_id: Some(content.message_id),
        };
        match sender.send(&mail).await {
            Ok(sent) => AttemptOutcome::Accepted {
                message_id: Some(sent.message_id),
                delivery: Some("accepted_by_smtp".into()),
            },
            Err(EmailError::Transient(m)) => AttemptOutcome::Unknown { reason: m },
            Err(EmailError::Permanent(m)) => AttemptOutcome::Permanent {
                code: "smtp".into(),
                message: m,
            },
            Err(EmailError::Invalid(m)) => AttemptOutcome::Permanent {
                code: "invalid".into(),
                message: m,
            },
        }
    }

    /// Fetch the delivery receipt of a sent SMS; `Later` while the provider has none yet.
    pub async fn check_receipt(&self, id: i64, now: DateTime<Utc>) -> Result<Delivery, StoreError> {
        let Some(row) = self.store.reminder(id).await? else {
            return Ok(Delivery::Failed(format!("reminder {id} does not exist")));
        };
        if row.status != "sent" || row.channel != "sms" {
            return Ok(Delivery::Settled(row.status));
        }
        let sent_at = row.sent_at.unwrap_or(row.created_at);
        let Some(client) = row.provider.parse::<ProviderKind>().ok().and_then(|k| self.sms.get(&k)) else {
            return Ok(Delivery::Settled(row.status));
        };
        let out_id = row.id.to_string();
        let q = StatusQuery {
            phone: &row.recipient,
            sent_at,
            message_id: row.provider_message_id.as_deref(),
            out_id: &out_id,
        };
        match client.query_status(&q).await {
            Ok(Some(rec)) if rec.state != DeliveryState::Pending => {
                self.store
                    .record_reminder_delivery(id, &delivery_text(&rec.state), now)
                    .await?;
                Ok(Delivery::Settled(delivery_text(&rec.state)))
            }
            Ok(_) if now - sent_at > Duration::hours(72) => {
                // notifications.md §2.5: unknown after 72 h is a state of its own.
                self.store
                    .record_reminder_delivery(id, "unknown_after_72h", now)
                    .await?;
                Ok(Delivery::Settled("unknown_after_72h".into()))
            }
            Ok(_) => Ok(Delivery::Later("no delivery receipt yet".into())),
            Err(e) => Ok(Delivery::Later(e.to_string())),
        }
    }
}

fn delivery_text(s: &DeliveryState) -> String {
    match s {
        DeliveryState::Pending => "pending".into(),
        DeliveryState::Delivered => "delivered".into(),
        DeliveryState::Failed { code } => format!("failed:{code}"),
    }
}

/// Phone numbers as `138****5678`, e-mail addresses as `r***@example.cn`.
pub fn mask_recipient(r: &str) -> String {
    match r.split_once('@') {
        Some((user, domain)) => format!("{}***@{domain}", user.chars().next().unwrap_or('*')),
        None => mask_phone(r),
    }
}

#[derive(Deserialize)]
struct Payload {
    outbox_id: i64,
}

fn to_task_result(r: Result<Delivery, StoreError>) -> Result<(), TaskError> {
    match r {
        Ok(Delivery::Sent | Delivery::Settled(_)) => Ok(()),
        Ok(Delivery::Later(why)) => Err(TaskError::Transient(why)),
        Ok(Delivery::Failed(why)) => Err(TaskError::Permanent(why)),
        Err(e) => Err(TaskError::Transient(e.to_string())),
    }
}

/// The task handlers of the outbox: `reminder.send` and `reminder.receipt`.
pub fn task_handlers(deliverer: Arc<Deliverer>) -> HashMap<String, Handler> {
    let mut m = HashMap::new();
    let d = deliverer.clone();
    m.insert(
        SEND_TASK.to_string(),
        handler(move |task| {
            let d = d.clone();
            async move {
                let p: Payload = serde_json::from_str(&task.payload)
                    .map_err(|e| TaskError::Permanent(format!("reminder task payload: {e}")))?;
                to_task_result(d.deliver(p.outbox_id, Utc::now()).await)
            }
        }),
    );
    let d = deliverer;
    m.insert(
        RECEIPT_TASK.to_string(),
        handler(move |task| {
            let d = d.clone();
            async move {
                let p: Payload = serde_json::from_str(&task.payload)
                    .map_err(|e| TaskError::Permanent(format!("receipt task payload: {e}")))?;
                to_task_result(d.check_receipt(p.outbox_id, Utc::now()).await)
            }
        }),
    );
    m
}

/// The pay-link signer from `[paylink]`, or the secret kept in the database.
pub async fn link_signer(store: &Store, config: &Config, now: DateTime<Utc>) -> anyhow::Result<LinkSigner> {
    use secrecy::ExposeSecret as _;
    let configured = config.paylink.secret.expose_secret();
    let secret = if configured.is_empty() {
        store
            .ensure_app_secret("paylink", crate::paylink::generate_secret, now)
            .await?
            .into_bytes()
    } else {
        configured.as_bytes().to_vec()
    };
    LinkSigner::new(secret, &config.http.public_base_url).map_err(anyhow::Error::msg)
}

/// The policy's history from stored outbox rows (a household's): one [`super::policy::SentStep`]
/// per bill and step a row recorded. Failed rows count too (the step was attempted: the policy
/// moves on to the next channel rather than trying the same one again); cancelled rows do not.
pub fn history_from_rows(rows: &[ReminderRow]) -> Vec<super::policy::SentStep> {
    use super::policy::{SentStep, Step, Track};
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.status != "cancelled") {
        let (Some(channel), Some(step)) = (Channel::parse(&r.channel), Step::parse(&r.step)) else {
            continue;
        };
        let track = Track::parse(&r.track);
        let at = r.last_attempt_at.unwrap_or(r.created_at);
        let steps: Vec<(i64, String)> = serde_json::from_str(&r.bill_steps).unwrap_or_default();
        if steps.is_empty() {
            out.push(SentStep {
                account_id: r.account_id,
                step,
                track,
                bill_ids: Vec::new(),
                channel,
                at,
            });
        }
        for (bill, s) in steps {
            out.push(SentStep {
                account_id: r.account_id,
                step: Step::parse(&s).unwrap_or(step),
                track,
                bill_ids: vec![bill],
                channel,
                at,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_masked_in_logs() {
        assert_eq!(mask_recipient("13812345678"), "138****5678");
        assert_eq!(mask_recipient("resident@example.cn"), "r***@example.cn");
    }
}
