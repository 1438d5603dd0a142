//! E-mail through SMTP with lettre: plain SMTP, STARTTLS or implicit TLS, with authentication.
//!
//! [`EmailSender`] is generic — to, subject, text, HTML, attachments, optional
//! `List-Unsubscribe` — so the reconciliation report can reuse it. A message always carries a
//! plain-text part; with HTML it is `multipart/alternative`, with attachments that goes inside
//! `multipart/mixed`.
//!
//! The `Message-ID` is ours ([`OutgoingEmail::message_id`], the outbox makes it from the message
//! id), so a retry after a lost connection re-sends the *same* message: SMTP has no status query,
//! and a server that took the first copy and a mail client that sees both can tell they are one.
//! SMTP replies classify failures: 5xx permanent (no retry), 4xx and network trouble transient.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as LettreAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on localhost only).
    None,
    /// Upgrade with STARTTLS (port 587); refuses to go on without TLS.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `Name <address>` or an address.
    pub from: String,
    pub timeout: Duration,
    /// A PEM file of an extra CA to trust (a private relay's); the web PKI roots are always trusted.
    pub tls_root_cert: Option<PathBuf>,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// e.g. `application/pdf`, `text/csv; charset=utf-8`.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct OutgoingEmail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// An `https://` unsubscribe URL: sent as `List-Unsubscribe` with one-click (RFC 8058).
    pub list_unsubscribe: Option<String>,
    /// `<id@domain>`; made up when absent.
    pub message_id: Option<String>,
}

/// How a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// The message itself is wrong (bad address, bad attachment type): fix the data.
    #[error("building the e-mail: {0}")]
    Invalid(String),
    /// The server refused for good (5xx).
    #[error("the SMTP server refused the e-mail: {0}")]
    Permanent(String),
    /// Try again later (4xx, connection or TLS trouble, timeout).
    #[error("sending the e-mail failed for now: {0}")]
    Transient(String),
}

/// What the server took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub message_id: String,
    /// The server's reply to the end of DATA (often carries its queue id).
    pub reply: String,
}

/// Sends e-mail through one SMTP server. Cheap to clone (the transport pools connections).
#[derive(Clone)]
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// A bound on the whole conversation: lettre's own timeout covers each command, but not a
    /// server that never sends its greeting.
    overall: Duration,
}

impl std::fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSender")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    pub fn new(s: &SmtpSettings) -> Result<EmailSender, String> {
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| format!("smtp.from {:?} is not a mailbox: {e}", s.from))?;
        let tls = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(s.host.clone());
            if let Some(path) = &s.tls_root_cert {
                let pem =
                    std::fs::read(path).map_err(|e| format!("reading smtp.tls_root_cert {}: {e}", path.display()))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("smtp.tls_root_cert {}: {e}", path.display()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| format!("setting up TLS for SMTP: {e}"))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .timeout(Some(s.timeout));
        builder = match s.security {
            SmtpSecurity::None => builder.tls(Tls::None),
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        };
        if let (Some(user), Some(pass)) = (&s.username, &s.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.expose_secret().to_string()));
        }
        Ok(EmailSender {
            transport: builder.build(),
            from,
            overall: s.timeout * 3,
        })
    }

    fn domain(&self) -> String {
        self.from.email.domain().to_string()
    }

    /// Build the MIME message (exposed so tests and previews can look at it).
    pub fn build(&self, mail: &OutgoingEmail) -> Result<(Message, String), EmailError> {
        let message_id = mail
            .message_id
            .clone()
            .unwrap_or_else(|| format!("<{}@{}>", uuid::Uuid::new_v4().simple(), self.domain()));
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .message_id(Some(message_id.clone()));
        if mail.to.is_empty() {
            return Err(EmailError::Invalid("no recipient".into()));
        }
        for to in &mail.to {
            let mb: Mailbox = to
                .parse()
                .map_err(|e| EmailError::Invalid(format!("recipient is not an address: {e}")))?;
            b = b.to(mb);
        }
        if let Some(url) = &mail.list_unsubscribe {
            b = b
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_string(),
                ));
        }
        let text = SinglePart::plain(mail.text.clone());
        let alternative = mail.html.as_ref().map(|html| {
            MultiPart::alternative()
                .singlepart(text.clone())
                .singlepart(SinglePart::html(html.clone()))
        });
        let built = if mail.attachments.is_empty() {
            match alternative {
                Some(alt) => b.multipart(alt),
                None => b.singlepart(text),
            }
        } else {
            let mut mixed = match alternative {
                Some(alt) => MultiPart::mixed().multipart(alt),
                None => MultiPart::mixed().singlepart(text),
            };
            for a in &mail.attachments {
                let ct = ContentType::parse(&a.content_type)
                    .map_err(|e| EmailError::Invalid(format!("attachment {}: content type: {e}", a.filename)))?;
                mixed = mixed.singlepart(LettreAttachment::new(a.filename.clone()).body(a.bytes.clone(), ct));
            }
            b.multipart(mixed)
        };
        let msg = built.map_err(|e| EmailError::Invalid(e.to_string()))?;
        Ok((msg, message_id))
    }

    /// Send once.
    pub async fn send(&self, mail: &OutgoingEmail) -> Result<SentEmail, EmailError> {
        let (msg, message_id) = self.build(mail)?;
        let sent = tokio::time::timeout(self.overall, self.transport.send(msg)).await;
        let Ok(sent) = sent else {
            return Err(EmailError::Transient(format!(
                "the SMTP conversation did not finish within {} s",
                self.overall.as_secs()
            )));
        };
        match sent {
            Ok(resp) => Ok(SentEmail {
                message_id,
                reply: resp.message().collect::<Vec<_>>().join(" "),
            }),
            Err(e) if e.is_permanent() => Err(EmailError::Permanent(e.to_string())),
            Err(e) => Err(EmailError::Transient(e.to_string())),
        }
    }
}
