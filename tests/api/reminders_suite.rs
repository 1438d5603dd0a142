//! Reminders: the SMS clients against the sandbox provider (signatures, faults, rate limit), and
//! the outbox on the database (attempt recorded before the call, unknown outcomes settled by
//! status, a sender killed mid-batch sends nobody the same step twice). The outbox tests run on
//! SQLite and, with `TEST_DATABASE_URL`, on PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDate, Utc};
use meterpay::domain::ids::Utility;
use meterpay::domain::Fen;
use meterpay::dunning::outbox::{self, ComposeFacts, Composer, Deliverer, Delivery, Profile};
use meterpay::dunning::policy::{self, AccountFacts, Channel, Decision, Outcome, Planned, Reason, Step, Track};
use meterpay::dunning::sandbox::{Fault, SandboxOptions, SandboxServer, SmsSandbox};
use meterpay::dunning::sms::aliyun::{sign as acs, AliyunClient, AliyunConfig};
use meterpay::dunning::sms::tencent::{sign as tc3, TencentClient, TencentConfig};
use meterpay::dunning::sms::{DeliveryState, ProviderKind, SendError, SmsClient, SmsMessage, StatusQuery};
use meterpay::dunning::templates::{self, Language, MessageKind};
use meterpay::jobs::{Worker, WorkerOptions};
use meterpay::paylink::LinkSigner;
use meterpay::store::directory::NewAccount;
use meterpay::store::reminders::Enqueued;
use secrecy::SecretString;

use crate::helpers::TestDb;

const BASE: &str = "https://pay.example.cn";
const SIGN: &str = "阳光花园物业";

fn template_codes() -> HashMap<String, String> {
    MessageKind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str().to_string(), format!("SMS_1000000{i}")))
        .collect()
}

/// A sandbox that knows our approved templates (so it checks the variables) and signature.
async fn sandbox(provider: ProviderKind, rate: u32) -> SandboxServer {
    let mut templates = HashMap::new();
    for (i, k) in MessageKind::ALL.iter().enumerate() {
        templates.insert(
            format!("SMS_1000000{i}"),
            templates::sms_template_text(*k, Language::Zh, BASE, provider),
        );
    }
    SmsSandbox::new(SandboxOptions {
        rate_per_sec: rate,
        templates,
        sign_names: vec![SIGN.into()],
        timeout_hold: StdDuration::from_secs(60),
        ..Default::default()
    })
    .spawn()
    .await
    .expect("the sandbox binds")
}

fn client(s: &SandboxServer, provider: ProviderKind, secret: &str, timeout: StdDuration, rate: u32) -> SmsClient {
    let c = &s.sandbox.options().credentials;
    match provider {
        ProviderKind::Aliyun => SmsClient::Aliyun(
            AliyunClient::new(AliyunConfig {
                endpoint: s.aliyun_endpoint(),
                access_key_id: c.aliyun_access_key_id.clone(),
                access_key_secret: SecretString::from(secret.to_string()),
                timeout,
                rate_per_sec: rate,
            })
            .unwrap(),
        ),
        ProviderKind::Tencent => SmsClient::Tencent(
            TencentClient::new(TencentConfig {
                endpoint: s.tencent_endpoint(),
                secret_id: c.tencent_secret_id.clone(),
                secret_key: SecretString::from(secret.to_string()),
                region: "ap-guangzhou".into(),
                sms_sdk_app_id: c.tencent_sms_sdk_app_id.clone(),
                timeout,
                rate_per_sec: rate,
            })
            .unwrap(),
        ),
    }
}

fn good_client(s: &SandboxServer, provider: ProviderKind) -> SmsClient {
    let c = &s.sandbox.options().credentials;
    let secret = match provider {
        ProviderKind::Aliyun => c.aliyun_access_key_secret.clone(),
        ProviderKind::Tencent => c.tencent_secret_key.clone(),
    };
    client(s, provider, &secret, StdDuration::from_secs(30), 1000)
}

/// A filled overdue notice for one number.
fn message(phone: &str, out_id: &str) -> SmsMessage {
    let facts = templates::MessageFacts {
        kind: MessageKind::Overdue,
        language: Language::Zh,
        room: "3栋2单元501".into(),
        periods: vec![(2026, 6)],
        tracks: vec![Track::Utility(Utility::Electricity)],
        amount: Fen::new(16325),
        due: NaiveDate::from_ymd_opt(2026, 7, 15),
        days_left: None,
        service_tel: "4001234567".into(),
        pay_token: "AQEqAAAAAGl4Jc3bY2l1-sYp0pGx".into(),
        lines: vec![],
        community_name: SIGN.into(),
    };
    SmsMessage {
        phone: phone.into(),
        sign_name: SIGN.into(),
        template_code: template_codes()["overdue"].clone(),
        params: templates::sms(&facts, BASE).params,
        out_id: out_id.into(),
    }
}

// ---------------------------------------------------------------- the clients and the sandbox

#[tokio::test]
async fn the_sandbox_takes_a_signed_sms_from_each_provider_and_reports_it_delivered() {
    for provider in [ProviderKind::Aliyun, ProviderKind::Tencent] {
        let s = sandbox(provider, 100).await;
        let c = good_client(&s, provider);
        let accepted = c.send(&message("+8613800138001", "41")).await.expect("accepted");
        let m = s.sandbox.messages();
        assert_eq!(m.len(), 1, "{provider:?}");
        assert_eq!(m[0].phone, "13800138001");
        assert_eq!(m[0].message_id, accepted.message_id);
        assert_eq!(m[0].out_id, "41");
        assert_eq!(
            m[0].content,
            "【阳光花园物业】您好，3栋2单元501，2026年6月账单电费合计163.25元已过缴费截止日7月15日，请尽快缴纳。在线缴费：https://pay.example.cn/pay/AQEqAAAAAGl4Jc3bY2l1-sYp0pGx ，咨询电话4001234567。",
            "{provider:?}: the template filled as the resident reads it"
        );
        let status = c
            .query_status(&StatusQuery {
                phone: "13800138001",
                sent_at: Utc::now(),
                message_id: None,
                out_id: "41",
            })
            .await
            .unwrap()
            .expect("found by our id");
        assert_eq!(status.state, DeliveryState::Delivered);
        let none = c
            .query_status(&StatusQuery {
                phone: "13800138001",
                sent_at: Utc::now(),
                message_id: None,
                out_id: "42",
            })
            .await
            .unwrap();
        assert_eq!(none, None, "another message of ours is not there");
        s.stop();
    }
}

#[tokio::test]
async fn a_wrong_signature_is_refused_as_each_provider_refuses_it() {
    for (provider, code) in [
        (ProviderKind::Aliyun, "SignatureDoesNotMatch"),
        (ProviderKind::Tencent, "AuthFailure.SignatureFailure"),
    ] {
        let s = sandbox(provider, 100).await;
        let c = client(&s, provider, "not-the-secret", StdDuration::from_secs(5), 100);
        let err = c.send(&message("13800138001", "1")).await.unwrap_err();
        match &err {
            SendError::Permanent { code: got, .. } => assert_eq!(got, code, "{provider:?}"),
            other => panic!("{provider:?}: expected a permanent refusal, got {other:?}"),
        }
        assert!(s.sandbox.messages().is_empty(), "nothing was sent");
        assert_eq!(s.sandbox.refusals()[0].code, code);
        s.stop();
    }
}

#[tokio::test]
async fn the_aliyun_sandbox_answers_a_wrong_signature_with_http_400_and_alibabas_json() {
    let s = sandbox(ProviderKind::Aliyun, 100).await;
    let c = &s.sandbox.options().credentials;
    let date = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let query = vec![("PhoneNumbers".to_string(), "13800138001".to_string())];
    let url = url::Url::parse(&s.aliyun_endpoint()).unwrap();
    let host = format!("127.0.0.1:{}", url.port().unwrap());
    let req = acs::V3Request {
        method: "POST",
        uri: "/aliyun/",
        query: &query,
        host: &host,
        content_type: None,
        body: b"",
        action: "SendSms",
        version: "2017-05-25",
        date: &date,
        nonce: "n-1",
        security_token: None,
    };
    let signed = acs::v3_sign(&c.aliyun_access_key_id, "wrong", &req);
    let mut rb = reqwest::Client::new().post(format!("{}?{}", s.aliyun_endpoint(), acs::canonical_query(&query)));
    for (k, v) in &signed.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    assert!(body["RequestId"].is_string());
    // The same request signed right passes the signature check (and then fails on content).
    let signed = acs::v3_sign(
        &c.aliyun_access_key_id,
        &c.aliyun_access_key_secret,
        &acs::V3Request { nonce: "n-2", ..req },
    );
    let mut rb = reqwest::Client::new().post(format!("{}?{}", s.aliyun_endpoint(), acs::canonical_query(&query)));
    for (k, v) in &signed.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let body: serde_json::Value = rb.send().await.unwrap().json().await.unwrap();
    assert_eq!(
        body["Code"], "isv.SMS_SIGNATURE_ILLEGAL",
        "signed right, but without a SignName"
    );
    s.stop();
}

#[tokio::test]
async fn a_v2_signed_request_is_verified_and_a_tampered_one_refused() {
    let s = sandbox(ProviderKind::Aliyun, 100).await;
    let c = &s.sandbox.options().credentials;
    let m = message("13800138002", "7");
    let tp: serde_json::Map<String, serde_json::Value> = m
        .params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let params = |nonce: &str| -> Vec<(String, String)> {
        vec![
            ("AccessKeyId".into(), c.aliyun_access_key_id.clone()),
            ("Action".into(), "SendSms".into()),
            ("Format".into(), "JSON".into()),
            ("PhoneNumbers".into(), m.phone.clone()),
            ("RegionId".into(), "cn-hangzhou".into()),
            ("SignName".into(), SIGN.into()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureNonce".into(), nonce.into()),
            ("SignatureVersion".into(), "1.0".into()),
            ("TemplateCode".into(), m.template_code.clone()),
            (
                "TemplateParam".into(),
                serde_json::Value::Object(tp.clone()).to_string(),
            ),
            ("Timestamp".into(), Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("Version".into(), "2017-05-25".into()),
        ]
    };
    let p = params("v2-1");
    let sig = acs::v2_signature(&c.aliyun_access_key_secret, "GET", &p);
    let url = format!(
        "{}?Signature={}&{}",
        s.aliyun_endpoint(),
        acs::percent_encode(&sig),
        acs::canonical_query(&p)
    );
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(body["Code"], "OK", "{body}");
    // Change the number after signing.
    let p = params("v2-2");
    let sig = acs::v2_signature(&c.aliyun_access_key_secret, "GET", &p);
    let tampered = acs::canonical_query(&p).replace("13800138002", "13800138003");
    let resp = reqwest::get(format!(
        "{}?Signature={}&{tampered}",
        s.aliyun_endpoint(),
        acs::percent_encode(&sig)
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    // Replaying the first request's nonce is refused too.
    let resp = reqwest::get(&url).await.unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["Code"], "SignatureNonceUsed");
    assert_eq!(s.sandbox.messages().len(), 1);
    s.stop();
}

#[tokio::test]
async fn the_tencent_sandbox_refuses_a_content_type_other_than_the_signed_one() {
    let s = sandbox(ProviderKind::Tencent, 100).await;
    let c = &s.sandbox.options().credentials;
    let url = url::Url::parse(&s.tencent_endpoint()).unwrap();
    let host = format!("127.0.0.1:{}", url.port().unwrap());
    let body = br#"{"PhoneNumberSet":["+8613800138001"],"SmsSdkAppId":"1400000000","TemplateId":"SMS_10000002","SignName":"x","TemplateParamSet":[]}"#;
    let ts = Utc::now().timestamp();
    let send = |content_type: &'static str| {
        let signed = tc3::sign(
            &c.tencent_secret_id,
            &c.tencent_secret_key,
            &tc3::Tc3Request {
                method: "POST",
                host: &host,
                query: "",
                content_type: tc3::CONTENT_TYPE,
                action: "SendSms",
                sign_action: true,
                timestamp: ts,
                service: "sms",
                body,
            },
        );
        reqwest::Client::new()
            .post(s.tencent_endpoint())
            .header("authorization", signed.authorization)
            .header("content-type", content_type)
            .header("x-tc-action", "SendSms")
            .header("x-tc-timestamp", ts.to_string())
            .header("x-tc-version", "2021-01-11")
            .header("x-tc-region", "ap-guangzhou")
            .body(body.to_vec())
            .send()
    };
    let refused: serde_json::Value = send("application/json").await.unwrap().json().await.unwrap();
    assert_eq!(refused["Response"]["Error"]["Code"], "AuthFailure.SignatureFailure");
    let passed: serde_json::Value = send(tc3::CONTENT_TYPE).await.unwrap().json().await.unwrap();
    assert!(passed["Response"]["Error"].is_null(), "signed and sent alike: {passed}");
    assert_eq!(
        passed["Response"]["SendStatusSet"][0]["Code"], "FailedOperation.SignatureIncorrectOrUnapproved",
        "past the signature, the unapproved sign name is refused per number"
    );
    s.stop();
}

#[tokio::test]
async fn the_sandbox_enforces_its_rate_limit_and_a_client_under_the_limit_is_never_throttled() {
    for provider in [ProviderKind::Aliyun, ProviderKind::Tencent] {
        let s = sandbox(provider, 5).await;
        // A client allowing itself far more than the provider does gets throttled…
        let greedy = good_client(&s, provider);
        let results = futures::future::join_all((0..20).map(|i| {
            let c = greedy.clone();
            async move { c.send(&message(&format!("139{i:08}"), &i.to_string())).await }
        }))
        .await;
        let throttled = results
            .iter()
            .filter(|r| matches!(r, Err(SendError::Transient { code, .. }) if code == "Throttling.User" || code == "RequestLimitExceeded"))
            .count();
        assert!(throttled >= 10, "{provider:?}: {throttled} of 20 throttled");
        assert_eq!(
            s.sandbox.messages().len(),
            20 - throttled,
            "a throttled request sends nothing"
        );
        s.stop();
        // …and one that keeps to the limit never is.
        let s = sandbox(provider, 5).await;
        let c = &s.sandbox.options().credentials;
        let secret = match provider {
            ProviderKind::Aliyun => c.aliyun_access_key_secret.clone(),
            ProviderKind::Tencent => c.tencent_secret_key.clone(),
        };
        let polite = client(&s, provider, &secret, StdDuration::from_secs(10), 4);
        for i in 0..8 {
            polite
                .send(&message(&format!("137{i:08}"), &i.to_string()))
                .await
                .expect("within the limit");
        }
        assert!(s.sandbox.refusals().is_empty());
        s.stop();
    }
}

#[tokio::test]
async fn faults_become_transient_permanent_or_unknown_outcomes() {
    for provider in [ProviderKind::Aliyun, ProviderKind::Tencent] {
        let s = sandbox(provider, 100).await;
        let c = &s.sandbox.options().credentials;
        let secret = match provider {
            ProviderKind::Aliyun => c.aliyun_access_key_secret.clone(),
            ProviderKind::Tencent => c.tencent_secret_key.clone(),
        };
        let cl = client(&s, provider, &secret, StdDuration::from_millis(500), 100);
        s.sandbox.set_fault(provider, Some(Fault::ServerError));
        assert!(
            matches!(
                cl.send(&message("13800138001", "1")).await,
                Err(SendError::Transient { .. })
            ),
            "{provider:?} 5xx"
        );
        s.sandbox.set_fault(provider, Some(Fault::Timeout));
        assert!(
            matches!(
                cl.send(&message("13800138001", "2")).await,
                Err(SendError::Unknown { .. })
            ),
            "{provider:?} timeout"
        );
        assert!(s.sandbox.messages().is_empty(), "neither was taken");
        s.sandbox.set_fault(provider, Some(Fault::DropAfterAccept));
        assert!(
            matches!(
                cl.send(&message("13800138001", "3")).await,
                Err(SendError::Unknown { .. })
            ),
            "{provider:?} dropped"
        );
        assert_eq!(
            s.sandbox.messages().len(),
            1,
            "a dropped answer does not mean nothing was sent"
        );
        s.sandbox.set_fault(provider, None);
        s.sandbox.fail_number("13800138009");
        match cl.send(&message("13800138009", "4")).await {
            Err(SendError::Permanent { code, .. }) => {
                assert!(
                    code == "isv.MOBILE_NUMBER_ILLEGAL" || code == "InvalidParameterValue.IncorrectPhoneNumber",
                    "{code}"
                )
            }
            other => panic!("{provider:?}: {other:?}"),
        }
        assert!(
            matches!(cl.send(&message("12345", "5")).await, Err(SendError::Permanent { .. })),
            "refused before sending"
        );
        s.stop();
    }
}

// ---------------------------------------------------------------- the outbox on the database

struct World {
    db: TestDb,
    sandbox: SandboxServer,
    composer: Composer,
    profile: Profile,
    accounts: Vec<AccountFacts>,
}

impl World {
    async fn new(provider: ProviderKind, n: usize) -> World {
        let db = TestDb::new().await;
        let now = Utc::now();
        let (c, _) = db.store.ensure_community("C1", SIGN, "test", now).await.unwrap();
        let mut accounts = Vec::new();
        for i in 0..n {
            let mobile = format!("1380013{:04}", i + 1);
            let a = db
                .store
                .create_account(
                    c.id,
                    &NewAccount {
                        code: format!("A{i}"),
                        name: "张三".into(),
                        building: "3".into(),
                        unit: "2".into(),
                        door_no: format!("{}", 501 + i),
                        phone: None,
                        mobile: Some(mobile.clone()),
                        email: Some(format!("r{i}@example.cn")),
                        credit_rating: "normal".into(),
                        payment_mode: "postpaid".into(),
                    },
                    "test",
                    now,
                )
                .await
                .unwrap();
            accounts.push(AccountFacts {
                account_id: a.id,
                household: format!("premises:{}", a.premises_id.unwrap()),
                mobile: Some(mobile),
                email: a.email.clone(),
                ..Default::default()
            });
        }
        let links = LinkSigner::new(b"0123456789abcdef0123456789abcdef".to_vec(), BASE).unwrap();
        World {
            sandbox: sandbox(provider, 1000).await,
            composer: Composer {
                links,
                pay_link_ttl: Duration::days(30),
                unsubscribe_ttl: Duration::days(365),
                max_attempts: 20,
            },
            profile: Profile {
                code: "C1".into(),
                community_id: c.id,
                community_name: SIGN.into(),
                sms_provider: provider,
                sign_name: SIGN.into(),
                service_tel: "4001234567".into(),
                language: Language::Zh,
                templates: template_codes(),
            },
            accounts,
            db,
        }
    }

    fn deliverer(&self, settle: Duration) -> Deliverer {
        let provider = self.profile.sms_provider;
        Deliverer::new(
            self.db.store.clone(),
            vec![good_client(&self.sandbox, provider)],
            None,
            settle,
        )
    }

    /// The overdue step for account `i` by SMS, as the policy plans it.
    fn decision(&self, i: usize) -> Decision {
        let a = &self.accounts[i];
        Decision {
            account_id: a.account_id,
            outcome: Outcome::Send(Planned {
                step: Step::Overdue(1),
                track: Track::Utility(Utility::Electricity),
                channel: Channel::Sms,
                recipient: a.mobile.clone(),
                bills: vec![(1000 + i as i64, Step::Overdue(1))],
                amount: Fen::new(16325),
                periods: vec![(2026, 6)],
                due: NaiveDate::from_ymd_opt(2026, 7, 15),
                message: MessageKind::Overdue,
                days_left: None,
                legally_required: false,
            }),
            staff: vec![],
        }
    }

    async fn enqueue(&self, i: usize) -> Enqueued {
        let facts = ComposeFacts {
            room: "3栋2单元501".into(),
            lines: vec![],
        };
        let out = outbox::enqueue_decision(
            &self.db.store,
            &self.composer,
            &self.decision(i),
            &self.accounts[i],
            &self.profile,
            &facts,
            Utc::now(),
        )
        .await
        .expect("enqueued");
        assert_eq!(out.len(), 1);
        out[0]
    }

    /// Messages the sandbox took per phone number.
    fn received(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for msg in self.sandbox.sandbox.messages() {
            *m.entry(msg.phone).or_insert(0) += 1;
        }
        m
    }
}

#[tokio::test]
async fn enqueueing_the_same_step_twice_adds_it_once() {
    let w = World::new(ProviderKind::Aliyun, 1).await;
    let first = w.enqueue(0).await;
    assert!(matches!(first, Enqueued::New(_)));
    assert_eq!(w.enqueue(0).await, Enqueued::AlreadyThere(first.id()));
    let task_count: i64 = w.db.store.task_counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(task_count, 1, "one delivery task");
}

#[tokio::test]
async fn a_reminder_is_sent_once_with_its_message_id_and_its_receipt_recorded() {
    for provider in [ProviderKind::Aliyun, ProviderKind::Tencent] {
        let w = World::new(provider, 1).await;
        let id = w.enqueue(0).await.id();
        let d = w.deliverer(Duration::minutes(60));
        let now = Utc::now();
        assert_eq!(d.deliver(id, now).await.unwrap(), Delivery::Sent);
        let row = w.db.store.reminder(id).await.unwrap().unwrap();
        assert_eq!(row.status, "sent");
        let sandbox_msg = &w.sandbox.sandbox.messages()[0];
        assert_eq!(
            row.provider_message_id.as_deref(),
            Some(sandbox_msg.message_id.as_str())
        );
        assert_eq!(
            sandbox_msg.out_id,
            id.to_string(),
            "our outbox id travels as OutId / SessionContext"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&row.content_json).unwrap()["text"]
                .as_str()
                .unwrap()
                .starts_with("【阳光花园物业】您好，3栋2单元501")
        );
        // Delivering again (a duplicate task run) sends nothing more.
        assert_eq!(d.deliver(id, now).await.unwrap(), Delivery::Settled("sent".into()));
        assert_eq!(
            d.check_receipt(id, now).await.unwrap(),
            Delivery::Settled("delivered".into())
        );
        let row = w.db.store.reminder(id).await.unwrap().unwrap();
        assert_eq!(
            (row.status.as_str(), row.delivery_status.as_deref()),
            ("delivered", Some("delivered"))
        );
        assert_eq!(w.received().values().sum::<usize>(), 1);
        let attempts = w.db.store.reminder_attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, "accepted");
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_a_permanent_one_is_not() {
    let w = World::new(ProviderKind::Aliyun, 2).await;
    let d = w.deliverer(Duration::minutes(60));
    let now = Utc::now();
    let a = w.enqueue(0).await.id();
    w.sandbox
        .sandbox
        .set_fault(ProviderKind::Aliyun, Some(Fault::ServerError));
    assert!(matches!(d.deliver(a, now).await.unwrap(), Delivery::Later(_)));
    assert_eq!(w.db.store.reminder(a).await.unwrap().unwrap().status, "queued");
    w.sandbox.sandbox.set_fault(ProviderKind::Aliyun, None);
    assert_eq!(d.deliver(a, now + Duration::seconds(10)).await.unwrap(), Delivery::Sent);
    let outcomes: Vec<String> =
        w.db.store
            .reminder_attempts(a)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.outcome)
            .collect();
    assert_eq!(outcomes, ["transient", "accepted"]);

    let b = w.enqueue(1).await.id();
    w.sandbox.sandbox.fail_number(w.accounts[1].mobile.as_deref().unwrap());
    assert!(matches!(d.deliver(b, now).await.unwrap(), Delivery::Failed(m) if m.contains("MOBILE_NUMBER_ILLEGAL")));
    assert_eq!(
        d.deliver(b, now + Duration::hours(1)).await.unwrap(),
        Delivery::Settled("failed".into()),
        "never again"
    );
    assert_eq!(w.db.store.reminder_attempts(b).await.unwrap().len(), 1);
    assert_eq!(w.received().values().sum::<usize>(), 1);
}

#[tokio::test]
async fn an_unknown_outcome_is_settled_by_the_status_query_not_by_sending_again() {
    for provider in [ProviderKind::Aliyun, ProviderKind::Tencent] {
        let w = World::new(provider, 1).await;
        let id = w.enqueue(0).await.id();
        let d = Deliverer::new(
            w.db.store.clone(),
            vec![client(
                &w.sandbox,
                provider,
                &secret_of(&w.sandbox, provider),
                StdDuration::from_millis(500),
                100,
            )],
            None,
            Duration::minutes(60),
        );
        w.sandbox.sandbox.set_fault(provider, Some(Fault::DropAfterAccept));
        let now = Utc::now();
        assert!(matches!(d.deliver(id, now).await.unwrap(), Delivery::Later(m) if m.contains("unknown")));
        assert_eq!(w.db.store.reminder(id).await.unwrap().unwrap().status, "unknown");
        w.sandbox.sandbox.set_fault(provider, None);
        assert_eq!(
            d.deliver(id, now + Duration::minutes(1)).await.unwrap(),
            Delivery::Sent,
            "{provider:?}"
        );
        assert_eq!(
            w.received().values().sum::<usize>(),
            1,
            "{provider:?}: found by status, not sent again"
        );
        let attempts = w.db.store.reminder_attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, "accepted");
    }
}

fn secret_of(s: &SandboxServer, provider: ProviderKind) -> String {
    let c = &s.sandbox.options().credentials;
    match provider {
        ProviderKind::Aliyun => c.aliyun_access_key_secret.clone(),
        ProviderKind::Tencent => c.tencent_secret_key.clone(),
    }
}

#[tokio::test]
async fn an_attempt_the_provider_never_got_is_attempted_again_only_after_the_settle_window() {
    let w = World::new(ProviderKind::Tencent, 1).await;
    let id = w.enqueue(0).await.id();
    let d = Deliverer::new(
        w.db.store.clone(),
        vec![client(
            &w.sandbox,
            ProviderKind::Tencent,
            &secret_of(&w.sandbox, ProviderKind::Tencent),
            StdDuration::from_millis(300),
            100,
        )],
        None,
        Duration::minutes(60),
    );
    w.sandbox.sandbox.set_fault(ProviderKind::Tencent, Some(Fault::Timeout));
    let t0 = Utc::now();
    assert!(matches!(d.deliver(id, t0).await.unwrap(), Delivery::Later(_)));
    w.sandbox.sandbox.set_fault(ProviderKind::Tencent, None);
    // Ten minutes on, the provider has no record: still unknown, nothing is sent.
    assert!(
        matches!(d.deliver(id, t0 + Duration::minutes(10)).await.unwrap(), Delivery::Later(m) if m.contains("waiting"))
    );
    assert!(w.sandbox.sandbox.messages().is_empty());
    assert_eq!(w.db.store.reminder(id).await.unwrap().unwrap().status, "unknown");
    // Past the window with still no record: it never arrived, so it is attempted (once) again.
    assert_eq!(d.deliver(id, t0 + Duration::minutes(61)).await.unwrap(), Delivery::Sent);
    let outcomes: Vec<String> =
        w.db.store
            .reminder_attempts(id)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.outcome)
            .collect();
    assert_eq!(outcomes, ["not_sent", "accepted"]);
    assert_eq!(w.received().values().sum::<usize>(), 1);
}

fn worker(w: &World, d: Deliverer, id: &str, lease: Duration) -> Worker {
    Worker::new(
        w.db.store.clone(),
        id,
        outbox::task_handlers(Arc::new(d)),
        WorkerOptions {
            lease,
            batch: 16,
            poll_interval: StdDuration::from_millis(10),
            backoff_base: Duration::seconds(0),
            backoff_cap: Duration::seconds(0),
        },
    )
}

async fn drain(worker: &Worker) {
    while worker.run_once().await.unwrap() > 0 {}
}

#[tokio::test]
async fn a_sender_killed_after_the_provider_took_a_message_sends_nobody_the_step_twice() {
    let w = World::new(ProviderKind::Aliyun, 6).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(w.enqueue(i).await.id());
    }
    let third = ids[2];
    let sb = w.sandbox.sandbox.clone();
    // The first sender's provider call for the third message is taken, then never answered.
    let hook: outbox::BeforeCall = Arc::new(move |id| {
        let sb = sb.clone();
        Box::pin(async move {
            if id == third {
                sb.set_fault(ProviderKind::Aliyun, Some(Fault::HangAfterAccept));
            }
        })
    });
    // Lease zero: once this sender is gone, another may take its tasks over at once.
    let first = worker(
        &w,
        w.deliverer(Duration::minutes(60)).with_before_call(hook),
        "first",
        Duration::zero(),
    );
    let killed = tokio::spawn(async move { first.run_once().await });
    w.sandbox.sandbox.wait_for_messages(3).await;
    killed.abort();
    let _ = killed.await;
    assert_eq!(
        w.db.store.reminder(third).await.unwrap().unwrap().status,
        "sending",
        "recorded, outcome never written"
    );
    w.sandbox.sandbox.set_fault(ProviderKind::Aliyun, None);

    let second = worker(&w, w.deliverer(Duration::minutes(60)), "second", Duration::minutes(5));
    drain(&second).await;

    for id in &ids {
        let status = w.db.store.reminder(*id).await.unwrap().unwrap().status;
        // The third was settled by the status query, which already reports it delivered.
        assert!(
            status == "sent" || (*id == third && status == "delivered"),
            "message {id}: {status}"
        );
    }
    let received = w.received();
    assert_eq!(received.len(), 6, "everyone got the step");
    assert!(received.values().all(|n| *n == 1), "nobody twice: {received:?}");
    let attempts = w.db.store.reminder_attempts(third).await.unwrap();
    assert_eq!(attempts.len(), 1, "settled by the status query, not attempted again");
}

#[tokio::test]
async fn a_sender_killed_before_calling_the_provider_sends_nobody_the_step_twice() {
    let w = World::new(ProviderKind::Tencent, 6).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(w.enqueue(i).await.id());
    }
    let third = ids[2];
    let reached = Arc::new(tokio::sync::Notify::new());
    let r = reached.clone();
    // The first sender dies after recording the third attempt, before the provider hears of it.
    let hook: outbox::BeforeCall = Arc::new(move |id| {
        let r = r.clone();
        Box::pin(async move {
            if id == third {
                r.notify_one();
                std::future::pending::<()>().await;
            }
        })
    });
    let first = worker(
        &w,
        w.deliverer(Duration::minutes(60)).with_before_call(hook),
        "first",
        Duration::zero(),
    );
    let killed = tokio::spawn(async move { first.run_once().await });
    reached.notified().await;
    killed.abort();
    let _ = killed.await;
    assert_eq!(w.received().len(), 2);

    // The next sender finds the attempt open; the provider has no record of it and (window zero
    // for the test) it is taken as never arrived and sent, once.
    let second = worker(&w, w.deliverer(Duration::zero()), "second", Duration::minutes(5));
    drain(&second).await;
    for id in &ids {
        assert_eq!(
            w.db.store.reminder(*id).await.unwrap().unwrap().status,
            "sent",
            "message {id}"
        );
    }
    let received = w.received();
    assert_eq!(received.len(), 6);
    assert!(received.values().all(|n| *n == 1), "nobody twice: {received:?}");
    let outcomes: Vec<String> =
        w.db.store
            .reminder_attempts(third)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.outcome)
            .collect();
    assert_eq!(outcomes, ["not_sent", "accepted"]);
}

#[tokio::test]
async fn the_policy_reads_the_daily_cap_and_opt_outs_from_the_database() {
    let w = World::new(ProviderKind::Aliyun, 1).await;
    let a = w.accounts[0].clone();
    let id = w.enqueue(0).await.id();
    w.deliverer(Duration::minutes(60))
        .deliver(id, Utc::now())
        .await
        .unwrap();
    // Noon in Beijing today, inside the send window.
    let tz = chrono_tz::Asia::Shanghai;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let noon = today
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_local_timezone(tz)
        .unwrap()
        .with_timezone(&Utc);
    // The message above was attempted "now"; re-date the check to its day.
    let rows =
        w.db.store
            .reminders_for_household(&a.household, noon - Duration::days(7))
            .await
            .unwrap();
    let mut history = outbox::history_from_rows(&rows);
    for h in &mut history {
        h.at = noon - Duration::hours(1);
    }
    let bills = vec![policy::OpenBill {
        bill_id: 2000,
        track: Track::Utility(Utility::Water),
        amount_due: Fen::new(3000),
        period: (2026, 6),
        issued_on: today - Duration::days(20),
        due_on: today - Duration::days(4),
        disputed: false,
    }];
    let p = policy::CommunityPolicy::default();
    let input = |account: &AccountFacts, history: &[policy::SentStep]| {
        policy::decide(&policy::PolicyInput {
            now: noon,
            policy: &p,
            account,
            bills: &bills,
            payments: &[],
            history,
            prepaid: None,
        })
    };
    assert!(matches!(
        input(&a, &history).outcome,
        Outcome::Wait {
            reason: Reason::DailyCap,
            ..
        }
    ));
    assert!(matches!(input(&a, &[]).outcome, Outcome::Send(_)));
    // Opt-outs recorded in the database.
    w.db.store
        .add_opt_out(a.account_id, "sms", "sms_reply", Utc::now())
        .await
        .unwrap();
    w.db.store
        .add_opt_out(a.account_id, "email", "link", Utc::now())
        .await
        .unwrap();
    assert!(
        !w.db
            .store
            .add_opt_out(a.account_id, "email", "link", Utc::now())
            .await
            .unwrap(),
        "once"
    );
    let opted: Vec<Channel> =
        w.db.store
            .opt_outs(a.account_id)
            .await
            .unwrap()
            .iter()
            .filter_map(|c| Channel::parse(c))
            .collect();
    let a2 = AccountFacts {
        opted_out: opted,
        ..a.clone()
    };
    assert_eq!(
        input(&a2, &[]).outcome,
        Outcome::Nothing {
            reason: Reason::OptedOut
        }
    );
    // The per-account history lists the message.
    let mine = w.db.store.reminders_for_account(a.account_id).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].step, "overdue_1");
    let ids: HashSet<i64> = mine.iter().map(|r| r.id).collect();
    assert!(ids.contains(&id));
}

#[tokio::test]
async fn the_pay_link_secret_is_generated_once_and_kept_in_the_database() {
    let db = TestDb::new().await;
    let config = meterpay::config::Config::default();
    let now = Utc::now();
    let a = outbox::link_signer(&db.store, &config, now).await.unwrap();
    let token = a.token(42, meterpay::paylink::LinkPurpose::Pay, now + Duration::days(1));
    // Another instance on the same database accepts it.
    let other = db.another_instance().await;
    let b = outbox::link_signer(&other, &config, now).await.unwrap();
    assert_eq!(
        b.verify(&token, meterpay::paylink::LinkPurpose::Pay, now)
            .unwrap()
            .account_id,
        42
    );
    // A configured secret replaces the stored one.
    let mut configured = meterpay::config::Config::default();
    configured.paylink.secret = SecretString::from("a-configured-secret-of-some-length");
    let c = outbox::link_signer(&db.store, &configured, now).await.unwrap();
    assert!(c.verify(&token, meterpay::paylink::LinkPurpose::Pay, now).is_err());
}
