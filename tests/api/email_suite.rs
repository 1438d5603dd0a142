//! E-mail through a real SMTP server on loopback (mailin-embedded: a real SMTP conversation over
//! TCP, STARTTLS with a test CA, AUTH PLAIN), read back and parsed: headers, both parts, the
//! links. Then the unsubscribe link, followed to the running application, records the opt-out.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDate, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};
use meterpay::domain::ids::Utility;
use meterpay::domain::Fen;
use meterpay::dunning::email::{Attachment, EmailError, EmailSender, OutgoingEmail, SmtpSecurity, SmtpSettings};
use meterpay::dunning::outbox::{self, ComposeFacts, Composer, Deliverer, Delivery, Profile};
use meterpay::dunning::policy::{AccountFacts, Channel, Decision, Outcome, Planned, Step, Track};
use meterpay::dunning::templates::{Language, MessageKind, SummaryLine};
use meterpay::store::directory::NewAccount;
use secrecy::SecretString;

use crate::helpers::spawn_app_with;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dunning/smtp")
        .join(name)
}

/// One received message: the envelope and the raw bytes of DATA.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

#[derive(Clone)]
struct Collector {
    inbox: Arc<Mutex<Vec<Received>>>,
    current: Option<Received>,
}

impl Handler for Collector {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Received {
            from: from.to_string(),
            to: to.to_vec(),
            data: Vec::new(),
        });
        OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(c) = self.current.as_mut() {
            c.data.extend_from_slice(buf);
        }
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        if let Some(c) = self.current.take() {
            self.inbox.lock().unwrap().push(c);
        }
        OK
    }
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        if user == "meterpay" && password == "smtp-pass" {
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }
}

/// A real SMTP server on 127.0.0.1:0 offering STARTTLS (our test certificate for `localhost`)
/// and AUTH PLAIN (only after STARTTLS, as mailin requires).
fn smtp_server() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = Server::new(Collector {
        inbox: inbox.clone(),
        current: None,
    });
    server
        .with_name("localhost")
        .with_ssl(SslConfig::SelfSigned {
            cert_path: fixture("localhost.crt").display().to_string(),
            key_path: fixture("localhost.key").display().to_string(),
        })
        .expect("the test certificate loads")
        .with_auth(AuthMechanism::Plain)
        .with_num_threads(2)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (port, inbox)
}

fn settings(port: u16, password: &str) -> SmtpSettings {
    SmtpSettings {
        host: "localhost".into(),
        port,
        security: SmtpSecurity::Starttls,
        username: Some("meterpay".into()),
        password: Some(SecretString::from(password.to_string())),
        from: "阳光花园物业 <billing@pay.example.cn>".into(),
        timeout: StdDuration::from_secs(10),
        tls_root_cert: Some(fixture("ca.crt")),
    }
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn the_sender_speaks_starttls_and_auth_and_the_message_reads_back_whole() {
    install_crypto();
    let (port, inbox) = smtp_server();
    let sender = EmailSender::new(&settings(port, "smtp-pass")).unwrap();
    let sent = sender
        .send(&OutgoingEmail {
            to: vec!["resident@example.cn".into()],
            subject: "【阳光花园物业】3栋2单元501 2026年6月电费账单（应缴163.25元）".into(),
            text: "合计163.25元\n在线缴费: https://pay.example.cn/pay/T1".into(),
            html: Some("<p>合计<b>163.25</b>元</p><a href=\"https://pay.example.cn/pay/T1\">缴费</a>".into()),
            attachments: vec![Attachment {
                filename: "report.csv".into(),
                content_type: "text/csv; charset=utf-8".into(),
                bytes: "day,gross\n2026-07-01,163.25\n".as_bytes().to_vec(),
            }],
            list_unsubscribe: Some("https://pay.example.cn/unsubscribe/U1".into()),
            message_id: Some("<fixed.1@pay.example.cn>".into()),
        })
        .await
        .expect("sent");
    assert_eq!(sent.message_id, "<fixed.1@pay.example.cn>");
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].from, "billing@pay.example.cn");
    assert_eq!(got[0].to, vec!["resident@example.cn".to_string()]);
    let msg = MessageParser::default().parse(&got[0].data).expect("a MIME message");
    assert_eq!(
        msg.subject(),
        Some("【阳光花园物业】3栋2单元501 2026年6月电费账单（应缴163.25元）")
    );
    assert_eq!(msg.message_id(), Some("fixed.1@pay.example.cn"));
    let unsub = msg.header_raw("List-Unsubscribe").expect("List-Unsubscribe");
    assert_eq!(unsub.trim(), "<https://pay.example.cn/unsubscribe/U1>");
    assert_eq!(
        msg.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(msg.body_text(0).unwrap().contains("https://pay.example.cn/pay/T1"));
    assert!(msg.body_html(0).unwrap().contains("<b>163.25</b>"));
    let att = msg.attachment(0).expect("the attachment");
    assert_eq!(att.attachment_name(), Some("report.csv"));
    assert_eq!(att.contents(), "day,gross\n2026-07-01,163.25\n".as_bytes());
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_failure_and_an_untrusted_certificate_is_refused() {
    install_crypto();
    let (port, inbox) = smtp_server();
    let mail = OutgoingEmail {
        to: vec!["resident@example.cn".into()],
        subject: "s".into(),
        text: "t".into(),
        ..Default::default()
    };
    let err = EmailSender::new(&settings(port, "wrong"))
        .unwrap()
        .send(&mail)
        .await
        .unwrap_err();
    assert!(matches!(err, EmailError::Permanent(_)), "{err:?}");
    // Without our test CA the server's certificate is not trusted: nothing is sent in clear.
    let mut untrusted = settings(port, "smtp-pass");
    untrusted.tls_root_cert = None;
    let err = EmailSender::new(&untrusted).unwrap().send(&mail).await.unwrap_err();
    assert!(matches!(err, EmailError::Transient(_)), "{err:?}");
    assert!(inbox.lock().unwrap().is_empty());
    let bad = OutgoingEmail {
        to: vec!["not an address".into()],
        ..mail
    };
    assert!(matches!(
        EmailSender::new(&settings(port, "smtp-pass")).unwrap().send(&bad).await,
        Err(EmailError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_email_reminder_reaches_the_server_with_the_summary_and_links_and_its_unsubscribe_link_works() {
    install_crypto();
    let (port, inbox) = smtp_server();
    // The test delivers the message itself, so the app's task workers must not race it to the
    // queued task (they have no SMTP server configured and would fail it permanently first).
    let app = spawn_app_with(|c| c.jobs.enabled = false).await;
    let store = app.db.store.clone();
    let now = Utc::now();
    let (c, _) = store.ensure_community("C1", "阳光花园物业", "test", now).await.unwrap();
    let acct = store
        .create_account(
            c.id,
            &NewAccount {
                code: "A1".into(),
                name: "张三".into(),
                building: "3".into(),
                unit: "2".into(),
                door_no: "501".into(),
                phone: None,
                mobile: None,
                email: Some("resident@example.cn".into()),
                credit_rating: "normal".into(),
                payment_mode: "postpaid".into(),
            },
            "test",
            now,
        )
        .await
        .unwrap();
    // The app's own link secret (generated and kept in its database), and its public URL.
    let mut config = meterpay::config::Config::default();
    config.http.public_base_url = app.address.clone();
    let links = outbox::link_signer(&store, &config, now).await.unwrap();
    let composer = Composer {
        links,
        pay_link_ttl: Duration::days(30),
        unsubscribe_ttl: Duration::days(365),
        max_attempts: 10,
    };
    let profile = Profile {
        code: "C1".into(),
        community_id: c.id,
        community_name: "阳光花园物业".into(),
        sms_provider: meterpay::dunning::sms::ProviderKind::Aliyun,
        sign_name: "阳光花园物业".into(),
        service_tel: "4001234567".into(),
        language: Language::Zh,
        templates: Default::default(),
    };
    let account = AccountFacts {
        account_id: acct.id,
        household: "premises:1".into(),
        email: acct.email.clone(),
        ..Default::default()
    };
    let decision = Decision {
        account_id: acct.id,
        outcome: Outcome::Send(Planned {
            step: Step::Overdue(1),
            track: Track::Utility(Utility::Electricity),
            channel: Channel::Email,
            recipient: acct.email.clone(),
            bills: vec![(77, Step::Overdue(1))],
            amount: Fen::new(16325),
            periods: vec![(2026, 6)],
            due: NaiveDate::from_ymd_opt(2026, 7, 15),
            message: MessageKind::Overdue,
            days_left: None,
            legally_required: false,
        }),
        staff: vec![],
    };
    let facts = ComposeFacts {
        room: "3栋2单元501".into(),
        lines: vec![SummaryLine {
            label: "电费".into(),
            previous: Some("1200.0".into()),
            current: Some("1534.3".into()),
            usage: Some("334.3 kWh".into()),
            amount: Fen::new(16325),
        }],
    };
    let queued = outbox::enqueue_decision(&store, &composer, &decision, &account, &profile, &facts, now)
        .await
        .unwrap();
    let id = queued[0].id();
    let deliverer = Deliverer::new(
        store.clone(),
        vec![],
        Some(EmailSender::new(&settings(port, "smtp-pass")).unwrap()),
        Duration::minutes(60),
    );
    assert_eq!(deliverer.deliver(id, now).await.unwrap(), Delivery::Sent);
    let row = store.reminder(id).await.unwrap().unwrap();
    assert_eq!(row.status, "sent");

    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let msg = MessageParser::default().parse(&got[0].data).unwrap();
    assert_eq!(
        msg.subject(),
        Some("【阳光花园物业】3栋2单元501 2026年6月电费缴费提醒（应缴163.25元）")
    );
    assert_eq!(
        row.provider_message_id.as_deref().map(|m| m.trim_matches(['<', '>'])),
        msg.message_id(),
        "the Message-ID we chose is the one recorded"
    );
    let text = msg.body_text(0).unwrap().to_string();
    let html = msg.body_html(0).unwrap().to_string();
    let pay_prefix = format!("{}/pay/", app.address);
    let unsub_prefix = format!("{}/unsubscribe/", app.address);
    for part in [&text, &html] {
        assert!(part.contains(&pay_prefix), "pay link in {part}");
        assert!(part.contains(&unsub_prefix), "unsubscribe link in {part}");
        assert!(
            part.contains("334.3 kWh") && part.contains("163.25"),
            "the bill summary"
        );
        assert!(part.contains("4001234567"));
    }
    // The pay link verifies to the account.
    let token: String = text[text.find(&pay_prefix).unwrap() + pay_prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let claims = composer
        .links
        .verify(&token, meterpay::paylink::LinkPurpose::Pay, now)
        .unwrap();
    assert_eq!(claims.account_id, acct.id);
    // List-Unsubscribe carries the same link; one-click POST records the opt-out.
    let header = msg
        .header_raw("List-Unsubscribe")
        .unwrap()
        .trim()
        .trim_matches(['<', '>'])
        .to_string();
    assert!(header.starts_with(&unsub_prefix));
    assert!(text.contains(&header));
    let page = app.client.get(&header).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(store.opt_outs(acct.id).await.unwrap().is_empty(), "GET changes nothing");
    let done = app
        .client
        .post(&header)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(store.opt_outs(acct.id).await.unwrap(), vec!["email".to_string()]);
    // An altered link is refused.
    let mut bad = header.clone();
    bad.pop();
    bad.push(if header.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.client.post(&bad).send().await.unwrap().status(), 400);
    app.stop().await.unwrap();
}

/// An implicit-TLS front (as on port 465) for a plain mailin server: TLS from the first byte,
/// terminated with our test certificate, the SMTP conversation relayed as it is.
async fn implicit_tls_front(plain_port: u16) -> u16 {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_pem = std::fs::read(fixture("localhost.crt")).unwrap();
    let key_pem = std::fs::read(fixture("localhost.key")).unwrap();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..]).unwrap().unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", plain_port)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn implicit_tls_is_spoken_from_the_first_byte() {
    install_crypto();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = listener.local_addr().unwrap().port();
    let mut server = Server::new(Collector {
        inbox: inbox.clone(),
        current: None,
    });
    server
        .with_name("localhost")
        .with_num_threads(2)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    let port = implicit_tls_front(plain_port).await;
    let mut s = settings(port, "unused");
    s.security = SmtpSecurity::Tls;
    s.username = None;
    s.password = None;
    let mail = OutgoingEmail {
        to: vec!["resident@example.cn".into()],
        subject: "implicit TLS".into(),
        text: "hello".into(),
        ..Default::default()
    };
    EmailSender::new(&s)
        .unwrap()
        .send(&mail)
        .await
        .expect("sent over implicit TLS");
    let got = inbox.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        MessageParser::default().parse(&got[0].data).unwrap().subject(),
        Some("implicit TLS")
    );
    // Plain SMTP to the TLS port gets no greeting (the server waits for a TLS hello): it fails
    // or stalls until the overall timeout, and nothing goes out in clear.
    s.security = SmtpSecurity::None;
    s.timeout = StdDuration::from_millis(500);
    let plain = EmailSender::new(&s).unwrap().send(&mail).await;
    assert!(matches!(plain, Err(EmailError::Transient(_))), "{plain:?}");
    assert_eq!(inbox.lock().unwrap().len(), 1);
}
