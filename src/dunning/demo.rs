//! The demo's reminders: after its bill run, the demo moves its clock past the due date of its
//! latest bills, plans reminders for the overdue accounts with the real planner, and delivers
//! them through the outbox to the **sandbox SMS provider** (Alibaba Cloud's protocol, signed and
//! verified) and a **real SMTP server on loopback** (mailin-embedded), on two consecutive days
//! (one message per household per day: SMS the first day, e-mail the next). Then it reports what
//! was sent.
//!
//! The demo's clock is only the `now` handed to the planner and the deliverer; nothing sleeps.
//! It is at least a day ahead of the wall clock, so the `reminder.send` tasks it enqueues are
//! not yet due for the service's own workers: the demo delivers them itself, once. A second
//! demo run finds every step already in the outbox and sends nothing again.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveTime, TimeZone as _, Utc};
use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server, SslConfig};
use secrecy::SecretString;
use serde::Serialize;

use crate::config::Config;
use crate::store::Store;

use super::email::SmtpSecurity;
use super::outbox::{mask_recipient, Deliverer, Delivery};
use super::planner::{PlanOptions, Planner};
use super::sandbox::{SandboxOptions, SmsSandbox};
use super::sms::ProviderKind;
use super::templates::{self, Language, MessageKind};

const SIGN_NAME: &str = "湖畔花园物业";
const SERVICE_TEL: &str = "4001234567";

/// One message the demo sent.
#[derive(Debug, Clone, Serialize)]
pub struct DemoMessage {
    pub day: String,
    pub account: String,
    pub step: String,
    pub track: String,
    pub channel: String,
    /// Masked.
    pub recipient: String,
    pub status: String,
    pub provider_message_id: Option<String>,
    /// The SMS text, or the e-mail subject.
    pub summary: String,
}

/// What the demo's reminders did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReminders {
    /// The demo clock of the first day.
    pub as_of: Option<DateTime<Utc>>,
    pub sent: Vec<DemoMessage>,
    /// Written notices (final reminders) waiting for staff to serve them.
    pub letters: usize,
    /// Steps already sent by an earlier demo run.
    pub already_sent: usize,
    /// Accounts not reminded, by reason, on the first day.
    pub not_reminded: Vec<(String, String)>,
    pub sms_received_by_sandbox: usize,
    pub emails_received_by_smtp: usize,
}

impl DemoReminders {
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(at) = self.as_of {
            out.push_str(&format!(
                "  reminders  clock moved to {} (past the due date); sandbox SMS took {}, loopback SMTP took {}\n",
                at.with_timezone(&chrono_tz::Asia::Shanghai)
                    .format("%Y-%m-%d %H:%M CST"),
                self.sms_received_by_sandbox,
                self.emails_received_by_smtp
            ));
        }
        for m in &self.sent {
            out.push_str(&format!(
                "             {} {:<10} {:<14} {:<8} {:<5} {:<18} {:<9} {}\n",
                m.day,
                m.account,
                m.step,
                m.track,
                m.channel,
                m.recipient,
                m.status,
                m.summary.chars().take(60).collect::<String>()
            ));
        }
        if self.letters > 0 {
            out.push_str(&format!(
                "             {} written notices (final reminders) await staff (POST /api/v1/reminders/{{id}}/served)\n",
                self.letters
            ));
        }
        if self.already_sent > 0 {
            out.push_str(&format!(
                "             {} steps were already sent by an earlier demo run (nobody gets a step twice)\n",
                self.already_sent
            ));
        }
        for (a, why) in &self.not_reminded {
            out.push_str(&format!("             {a:<10} not reminded: {why}\n"));
        }
        out
    }
}

#[derive(Clone)]
struct Inbox {
    count: Arc<Mutex<usize>>,
}

impl Handler for Inbox {
    fn data_end(&mut self) -> Response {
        *self.count.lock().expect("inbox lock") += 1;
        OK
    }
}

/// A plain SMTP server on 127.0.0.1 (loopback only, no TLS needed there), counting messages.
fn loopback_smtp() -> anyhow::Result<(u16, Arc<Mutex<usize>>)> {
    let count = Arc::new(Mutex::new(0));
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| anyhow::anyhow!("binding the demo SMTP server: {e}"))?;
    let port = listener.local_addr()?.port();
    let mut server = Server::new(Inbox { count: count.clone() });
    server
        .with_name("localhost")
        .with_ssl(SslConfig::None)
        .map_err(|e| anyhow::anyhow!("the demo SMTP server: {e}"))?
        .with_num_threads(1)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    Ok((port, count))
}

fn template_code(kind: MessageKind) -> String {
    format!("SMS_DEMO_{}", kind.as_str().to_uppercase())
}

/// Remind the demo community's overdue accounts (see the module documentation). `base_url` is
/// the running demo service: the pay and unsubscribe links point there.
pub async fn remind(store: &Store, community_code: &str, base_url: &str) -> anyhow::Result<DemoReminders> {
    let mut templates_by_code = HashMap::new();
    for k in MessageKind::ALL {
        templates_by_code.insert(
            template_code(k),
            templates::sms_template_text(k, Language::Zh, base_url, ProviderKind::Aliyun),
        );
    }
    let sandbox = SmsSandbox::new(SandboxOptions {
        templates: templates_by_code,
        sign_names: vec![SIGN_NAME.into()],
        ..Default::default()
    })
    .spawn()
    .await
    .map_err(|e| anyhow::anyhow!("starting the sandbox SMS provider: {e}"))?;
    let (smtp_port, inbox) = loopback_smtp()?;

    let mut config = Config::default();
    config.http.public_base_url = base_url.to_string();
    let r = &mut config.reminders;
    r.sms_provider = ProviderKind::Aliyun;
    r.sign_name = SIGN_NAME.into();
    r.service_tel = SERVICE_TEL.into();
    r.templates = MessageKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), template_code(*k)))
        .collect();
    let creds = &sandbox.sandbox.options().credentials;
    config.sms.aliyun.endpoint = sandbox.aliyun_endpoint();
    config.sms.aliyun.access_key_id = creds.aliyun_access_key_id.clone();
    config.sms.aliyun.access_key_secret = SecretString::from(creds.aliyun_access_key_secret.clone());
    config.smtp.host = "127.0.0.1".into();
    config.smtp.port = smtp_port;
    config.smtp.security = SmtpSecurity::None;
    config.smtp.from = "湖畔花园物业 <billing@localhost>".into();
    config.smtp.timeout_secs = 10;
    let config = Arc::new(config);

    let community = store
        .community_by_code(community_code)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo community {community_code} is missing"))?;
    let tz: chrono_tz::Tz = community.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    // Past the latest due date (3 days: the first overdue step), and ahead of the wall clock.
    let (bills, _) = store.plan_open_bills(community.id).await?;
    let Some(last_due) = bills.iter().map(|b| b.due_date).max() else {
        return Ok(DemoReminders::default());
    };
    let mut day = last_due + Duration::days(3);
    let today = Utc::now().with_timezone(&tz).date_naive();
    if day <= today {
        day = today + Duration::days(1);
    }
    let at = |d: chrono::NaiveDate| {
        tz.from_local_datetime(&d.and_time(NaiveTime::from_hms_opt(10, 0, 0).expect("a time")))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now)
    };

    let port = super::planner::default_port(store, &config)?;
    let planner = Planner::new(store.clone(), config.clone(), port);
    let deliverer = Deliverer::from_config(store.clone(), &config)?;
    let mut out = DemoReminders {
        as_of: Some(at(day)),
        ..Default::default()
    };
    for k in 0..2 {
        let now = at(day + Duration::days(k));
        let label = (day + Duration::days(k)).format("%m-%d").to_string();
        let report = planner
            .run(
                &PlanOptions {
                    community: Some(community_code.to_string()),
                    dry_run: false,
                },
                now,
            )
            .await?;
        for c in &report.communities {
            for p in &c.plans {
                if k == 0 {
                    out.already_sent += p.already_enqueued.len();
                }
                if k == 0 && p.outcome != "send" {
                    let why = serde_json::to_value(p.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    out.not_reminded.push((p.account_code.clone(), why));
                }
                if let Some(e) = &p.error {
                    anyhow::bail!("the demo reminder for {} could not be composed: {e}", p.account_code);
                }
                for id in &p.enqueued {
                    let delivery = deliverer.deliver(*id, now).await?;
                    let row = store
                        .reminder(*id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("reminder {id} vanished"))?;
                    if row.channel == "letter" {
                        out.letters += 1;
                        continue;
                    }
                    if let Delivery::Failed(why) | Delivery::Later(why) = &delivery {
                        anyhow::bail!("the demo reminder {id} to {} was not sent: {why}", p.account_code);
                    }
                    let content: serde_json::Value = serde_json::from_str(&row.content_json).unwrap_or_default();
                    let summary = if row.channel == "email" {
                        content["subject"].as_str().unwrap_or_default().to_string()
                    } else {
                        content["text"].as_str().unwrap_or_default().to_string()
                    };
                    out.sent.push(DemoMessage {
                        day: label.clone(),
                        account: p.account_code.clone(),
                        step: row.step.clone(),
                        track: row.track.clone(),
                        channel: row.channel.clone(),
                        recipient: mask_recipient(&row.recipient),
                        status: row.status.clone(),
                        provider_message_id: row.provider_message_id.clone(),
                        summary,
                    });
                }
            }
        }
    }
    out.sms_received_by_sandbox = sandbox.sandbox.messages().len();
    out.emails_received_by_smtp = *inbox.lock().expect("inbox lock");
    sandbox.stop();
    Ok(out)
}
