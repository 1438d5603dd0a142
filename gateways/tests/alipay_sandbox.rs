//! Client ↔ sandbox round trips for every Alipay flow, over real HTTP on port 0: the client
//! signs, the sandbox verifies with the merchant's public key and answers signed with its
//! platform key, notifications arrive at a merchant endpoint that verifies them with the client.
#![cfg(feature = "sandbox")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::Router;
use chrono::{Duration as ChronoDuration, Utc};
use meterpay_gateways::alipay::client::METHOD_QUERY;
use meterpay_gateways::alipay::signature::{
    form_encode, parse_notification, split_response, verify_request, verify_response,
};
use meterpay_gateways::alipay::{AlipayClient, AlipayKey};
use meterpay_gateways::gateway::{
    CloseOutcome, CreateOrder, GatewayError, IncomingNotification, NotificationEvent, NotifyError, OrderRef, PayMethod,
    PayerAction, PaymentGateway, RefundRef, RefundRequest, VerifiedNotification,
};
use meterpay_gateways::outcome::{ErrorClass, PaymentState, RefundState, TransportError};
use meterpay_gateways::sandbox::alipay::{connect, connect_cert_mode, AlipaySim, NOTIFY_SCHEDULE_SECS};
use meterpay_gateways::sandbox::{cst, Faults, FilePlant, Sandbox, SandboxConfig};
use meterpay_gateways::settlement::RowKind;

const APP_ID: &str = "2021000000000001";

type Received = Arc<Mutex<Vec<Result<VerifiedNotification, NotifyError>>>>;

struct World {
    sb: Sandbox,
    client: AlipayClient,
    notify_url: String,
    received: Received,
    http: reqwest::Client,
}

/// A sandbox on port 0 (retry delays divided by 100,000), a merchant connected to it, and the
/// merchant's notification endpoint, which verifies with the client and answers with its ack.
async fn world_with(cert_mode: bool) -> World {
    let sb = Sandbox::new(SandboxConfig {
        time_scale: 100_000,
        refund_settle_delay: Duration::from_millis(10),
    })
    .with_sim(AlipaySim::from_fixtures());
    sb.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let client = if cert_mode {
        connect_cert_mode(&sb, APP_ID, 6000)
    } else {
        connect(&sb, APP_ID, 6000)
    };
    let received: Received = Arc::default();
    let (c, r) = (client.clone(), received.clone());
    let app = Router::new().route(
        "/notify/alipay",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (c, r) = (c.clone(), r.clone());
            async move {
                let headers: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let v = c.verify_notification(
                    IncomingNotification {
                        headers: &headers,
                        body: &body,
                    },
                    Utc::now(),
                );
                let ack = c.ack(v.is_ok());
                r.lock().unwrap().push(v);
                (axum::http::StatusCode::from_u16(ack.status).unwrap(), ack.body)
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/notify/alipay", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    World {
        sb,
        client,
        notify_url,
        received,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

async fn world() -> World {
    world_with(false).await
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached in 5 s");
}

impl World {
    fn order(&self, no: &str, fen: i64, method: PayMethod) -> CreateOrder {
        CreateOrder {
            order_no: no.into(),
            amount_fen: fen,
            subject: "水费2024-01 3栋1201".into(),
            notify_url: self.notify_url.clone(),
            return_url: Some("https://meterpay.example/paid".into()),
            expires_at: Utc::now() + ChronoDuration::minutes(30),
            created_at: Utc::now(),
            method,
            payer_openid: None,
            payer_ip: None,
        }
    }

    fn events(&self) -> Vec<NotificationEvent> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|v| v.event.clone()))
            .collect()
    }

    async fn wait_events(&self, n: usize) -> Vec<NotificationEvent> {
        wait_for("notifications", || self.events().len() >= n).await;
        self.events()
    }

    async fn pay_qr(&self, no: &str, fen: i64) {
        let action = self
            .client
            .create_order(&self.order(no, fen, PayMethod::Qr))
            .await
            .unwrap();
        let PayerAction::QrCode { content } = action else {
            panic!("{action:?}")
        };
        self.http.get(&content).send().await.unwrap();
        self.sb
            .pay(meterpay_gateways::gateway::Channel::Alipay, APP_ID, no)
            .unwrap();
    }
}

fn oref(no: &str) -> OrderRef {
    OrderRef {
        order_no: no.into(),
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn a_qr_order_is_unknown_until_scanned_then_pending_then_paid_and_notified() {
    let w = world().await;
    let action = w
        .client
        .create_order(&w.order("QR00000001", 8880, PayMethod::Qr))
        .await
        .unwrap();
    let PayerAction::QrCode { content } = action else {
        panic!("{action:?}")
    };
    assert!(
        content.starts_with(&format!("{}/alipay/qr/{APP_ID}/QR00000001", w.sb.base_url())),
        "{content}"
    );

    let q = w.client.query_order(&oref("QR00000001")).await.unwrap();
    assert_eq!(q.state, PaymentState::NotFound, "before the scan Alipay has no trade");

    // Scanning leads to the wallet page.
    let scan = w.http.get(&content).send().await.unwrap();
    assert!(scan.status().is_redirection());
    assert_eq!(
        scan.headers()["location"],
        format!("/sandbox/wallet/alipay/{APP_ID}/QR00000001")
    );
    assert_eq!(
        w.client.query_order(&oref("QR00000001")).await.unwrap().state,
        PaymentState::Pending
    );

    w.sb.pay(meterpay_gateways::gateway::Channel::Alipay, APP_ID, "QR00000001")
        .unwrap();
    let events = w.wait_events(1).await;
    let NotificationEvent::Payment {
        order_no,
        state,
        gateway_txn_id,
        amount_fen,
        paid_at,
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (order_no.as_str(), *state, *amount_fen),
        ("QR00000001", PaymentState::Paid, 8880)
    );
    assert_eq!(gateway_txn_id.len(), 28);
    assert!(paid_at.is_some());
    let verified = w.received.lock().unwrap()[0].clone().unwrap();
    assert_eq!(verified.merchant_id, APP_ID);
    assert_eq!(verified.fields["subject"], "水费2024-01 3栋1201");

    let q = w.client.query_order(&oref("QR00000001")).await.unwrap();
    assert_eq!(q.state, PaymentState::Paid);
    assert_eq!(q.amount_fen, Some(8880));
    assert_eq!(q.gateway_txn_id.as_deref(), Some(gateway_txn_id.as_str()));
    // Acknowledged with `success` on the first delivery: no retries.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let d = w.sb.deliveries();
    assert_eq!(d.len(), 1);
    assert!(d[0].acknowledged);
}

#[tokio::test]
async fn browser_flows_build_a_signed_url_that_leads_to_the_wallet_and_pay() {
    let w = world().await;
    for (no, method, product) in [
        ("WEB0000001", PayMethod::Web, "FAST_INSTANT_TRADE_PAY"),
        ("WAP0000001", PayMethod::H5, "QUICK_WAP_WAY"),
    ] {
        let action = w.client.create_order(&w.order(no, 1230, method)).await.unwrap();
        let PayerAction::Redirect { url } = action else {
            panic!("{action:?}")
        };
        assert!(url.starts_with(&format!("{}/alipay/gateway.do?", w.sb.base_url())));
        assert!(url.contains("charset=utf-8"), "charset travels in the URL query");
        assert!(url.contains(product));
        assert!(
            url.contains("timestamp=20") && url.contains("+"),
            "the timestamp's space is encoded"
        );
        assert_eq!(
            w.client.query_order(&oref(no)).await.unwrap().state,
            PaymentState::NotFound,
            "no server call was made: the browser has not opened it yet"
        );
        // The browser opens the URL: Alipay creates the trade and shows the cashier.
        let opened = w.http.get(&url).send().await.unwrap();
        assert!(opened.status().is_redirection(), "{}", opened.status());
        let wallet = opened.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(
            wallet,
            format!("{}/sandbox/wallet/alipay/{APP_ID}/{no}", w.sb.base_url())
        );
        let page = w.http.get(&wallet).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("12.30"), "{page}");
        assert_eq!(
            w.client.query_order(&oref(no)).await.unwrap().state,
            PaymentState::Pending
        );
        let paid = w.http.post(format!("{wallet}/pay")).send().await.unwrap();
        assert_eq!(
            paid.headers()["location"],
            "https://meterpay.example/paid",
            "back to return_url"
        );
    }
    let events = w.wait_events(2).await;
    let mut paid: Vec<String> = events
        .iter()
        .map(|e| match e {
            NotificationEvent::Payment {
                order_no,
                state: PaymentState::Paid,
                amount_fen: 1230,
                ..
            } => order_no.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    paid.sort();
    assert_eq!(paid, vec!["WAP0000001", "WEB0000001"]);
}

#[tokio::test]
async fn a_tampered_browser_url_is_refused_by_the_gateway() {
    let w = world().await;
    let PayerAction::Redirect { url } = w
        .client
        .create_order(&w.order("WEB0000002", 1230, PayMethod::Web))
        .await
        .unwrap()
    else {
        panic!()
    };
    let forged = url.replace("12.30", "0.01");
    let r = w.http.get(&forged).send().await.unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains("isv.invalid-signature"), "{body}");
    assert!(w
        .sb
        .order(meterpay_gateways::gateway::Channel::Alipay, APP_ID, "WEB0000002")
        .is_none());
}

#[tokio::test]
async fn closing_before_the_scan_is_nothing_to_close_after_it_closes_and_after_payment_is_already_paid() {
    let w = world().await;
    w.client
        .create_order(&w.order("CLOSE00001", 500, PayMethod::Qr))
        .await
        .unwrap();
    assert_eq!(
        w.client.close_order(&oref("CLOSE00001")).await.unwrap(),
        CloseOutcome::NothingToClose
    );
    assert_eq!(
        w.client.close_order(&oref("NEVERMADE1")).await.unwrap(),
        CloseOutcome::NothingToClose
    );

    let PayerAction::QrCode { content } = w
        .client
        .create_order(&w.order("CLOSE00002", 500, PayMethod::Qr))
        .await
        .unwrap()
    else {
        panic!()
    };
    w.http.get(&content).send().await.unwrap();
    assert_eq!(
        w.client.close_order(&oref("CLOSE00002")).await.unwrap(),
        CloseOutcome::Closed
    );
    assert_eq!(
        w.client.query_order(&oref("CLOSE00002")).await.unwrap().state,
        PaymentState::Closed
    );
    assert!(
        w.sb.pay(meterpay_gateways::gateway::Channel::Alipay, APP_ID, "CLOSE00002")
            .is_err(),
        "no payment lands on a closed order"
    );
    assert_eq!(
        w.client.close_order(&oref("CLOSE00002")).await.unwrap(),
        CloseOutcome::Closed,
        "closing again: ACQ.TRADE_STATUS_ERROR, and the query says it is closed"
    );

    w.pay_qr("CLOSE00003", 500).await;
    assert_eq!(
        w.client.close_order(&oref("CLOSE00003")).await.unwrap(),
        CloseOutcome::AlreadyPaid
    );
}

#[tokio::test]
async fn creating_again_is_refused_as_the_gateway_refuses_it() {
    let w = world().await;
    w.client
        .create_order(&w.order("DUP0000001", 500, PayMethod::Qr))
        .await
        .unwrap();
    // Same order, same amount: the same trade.
    w.client
        .create_order(&w.order("DUP0000001", 500, PayMethod::Qr))
        .await
        .unwrap();
    let err = w
        .client
        .create_order(&w.order("DUP0000001", 600, PayMethod::Qr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "ACQ.CONTEXT_INCONSISTENT"),
        "{err:?}"
    );
    w.sb.pay(meterpay_gateways::gateway::Channel::Alipay, APP_ID, "DUP0000001")
        .unwrap();
    let err = w
        .client
        .create_order(&w.order("DUP0000001", 500, PayMethod::Qr))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::AlreadyDone, .. } if code == "ACQ.TRADE_HAS_SUCCESS"),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_sent() {
    let w = world().await;
    for (order, why) in [
        (
            CreateOrder {
                order_no: "short".into(),
                ..w.order("X", 1, PayMethod::Qr)
            },
            "order number",
        ),
        (w.order("AMOUNT0001", 0, PayMethod::Qr), "range"),
        (
            CreateOrder {
                subject: "a/b".into(),
                ..w.order("SUBJ000001", 1, PayMethod::Qr)
            },
            "subject",
        ),
        (w.order("JSAPI00001", 1, PayMethod::Jsapi), "JSAPI"),
    ] {
        let err = w.client.create_order(&order).await.unwrap_err();
        assert!(
            matches!(&err, GatewayError::Invalid(m) if m.contains(why)),
            "{why}: {err:?}"
        );
    }
    assert!(w.sb.orders().is_empty());
}

#[tokio::test]
async fn refunds_succeed_at_once_are_notified_and_queried_and_a_replay_moves_no_money() {
    let w = world().await;
    w.pay_qr("REFUND0001", 10_000).await;
    w.wait_events(1).await;
    let req = |no: &str, fen: i64| RefundRequest {
        order_no: "REFUND0001".into(),
        refund_no: no.into(),
        refund_fen: fen,
        order_total_fen: 10_000,
        reason: "抄表错误".into(),
        notify_url: None,
        gateway_txn_id: None,
        requested_at: Utc::now(),
    };
    let r = w.client.refund(&req("RF00000001", 3000)).await.unwrap();
    assert_eq!(r.state, RefundState::Succeeded);
    assert_eq!(r.amount_fen, Some(3000));
    assert!(r.refunded_at.is_some());

    let events = w.wait_events(2).await;
    let NotificationEvent::Refund {
        order_no,
        refund_no,
        state,
        amount_fen,
        refunded_at,
        ..
    } = &events[1]
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (order_no.as_str(), refund_no.as_str(), *state),
        ("REFUND0001", "RF00000001", RefundState::Succeeded)
    );
    assert_eq!(*amount_fen, 3000, "cumulative refunded so far");
    assert!(refunded_at.is_some());

    // The same refund again: Alipay answers fund_change=N, and the refund query confirms it.
    let again = w.client.refund(&req("RF00000001", 3000)).await.unwrap();
    assert_eq!((again.state, again.amount_fen), (RefundState::Succeeded, Some(3000)));
    let err = w.client.refund(&req("RF00000001", 3100)).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"),
        "{err:?}"
    );

    let q = w
        .client
        .query_refund(&RefundRef {
            order_no: "REFUND0001".into(),
            refund_no: "RF00000001".into(),
            requested_at: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!((q.state, q.amount_fen), (RefundState::Succeeded, Some(3000)));
    assert!(q.refunded_at.is_some(), "asked with query_options gmt_refund_pay");
    let unknown = w
        .client
        .query_refund(&RefundRef {
            order_no: "REFUND0001".into(),
            refund_no: "RF00000009".into(),
            requested_at: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(
        unknown.state,
        RefundState::Processing,
        "no refund_status: not (yet) refunded"
    );

    // The rest: the trade is fully refunded, closed, and notified as TRADE_CLOSED.
    w.client.refund(&req("RF00000002", 7000)).await.unwrap();
    let events = w.wait_events(3).await;
    assert!(
        matches!(&events[2], NotificationEvent::Refund { refund_no, amount_fen: 10_000, .. } if refund_no == "RF00000002")
    );
    assert!(w.received.lock().unwrap()[2]
        .as_ref()
        .unwrap()
        .event_id
        .contains("/TRADE_CLOSED/"));
    assert_eq!(
        w.client.query_order(&oref("REFUND0001")).await.unwrap().state,
        PaymentState::Refunded
    );
    let err = w.client.refund(&req("RF00000003", 1)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            GatewayError::Refused {
                class: ErrorClass::Failure,
                ..
            }
        ),
        "{err:?}"
    );
    let err = w
        .client
        .refund(&RefundRequest {
            order_no: "NOSUCHORD1".into(),
            ..req("RF00000004", 1)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, .. } if code == "ACQ.TRADE_NOT_EXIST"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_days_bill_is_downloaded_the_next_day_and_parses_with_fees() {
    let w = world().await;
    w.pay_qr("BILL000001", 10_000).await;
    w.pay_qr("BILL000002", 250).await;
    w.client
        .refund(&RefundRequest {
            order_no: "BILL000001".into(),
            refund_no: "RFBILL0001".into(),
            refund_fen: 5000,
            order_total_fen: 10_000,
            reason: String::new(),
            notify_url: None,
            gateway_txn_id: None,
            requested_at: Utc::now(),
        })
        .await
        .unwrap();
    let today = w.sb.now().with_timezone(&cst()).date_naive();
    let err = w.client.download_settlement(today).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Retry, .. } if code == "isp.bill_not_exist"),
        "{err:?}"
    );

    w.sb.advance_clock(ChronoDuration::days(1));
    let bytes = w.client.download_settlement(today).await.unwrap();
    assert!(bytes.starts_with(b"PK\x03\x04"), "a zip");
    let f = w.client.parse_settlement(&bytes).unwrap();
    let summary: Vec<(String, RowKind, i64, Option<i64>, String)> = f
        .rows
        .iter()
        .map(|r| (r.order_no.clone(), r.kind, r.amount_fen, r.fee_fen, r.fee.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("BILL000001".into(), RowKind::Payment, 10_000, Some(60), "0.60".into()),
            ("BILL000002".into(), RowKind::Payment, 250, Some(2), "0.02".into()),
            ("BILL000001".into(), RowKind::Refund, 5000, Some(-30), "-0.30".into()),
        ]
    );
    assert_eq!(f.rows[2].refund_no.as_deref(), Some("RFBILL0001"));
    let paid =
        w.sb.order(meterpay_gateways::gateway::Channel::Alipay, APP_ID, "BILL000001")
            .unwrap();
    assert_eq!(Some(f.rows[0].gateway_txn_id.clone()), paid.gateway_txn_id);
    assert_eq!(f.totals.fee_fen, 32);

    // A planted discrepancy shows in the file, which stays internally consistent.
    w.sb.update_faults(|f| {
        f.file_plants = vec![
            FilePlant::ChangeAmount {
                order_no: "BILL000002".into(),
                amount_fen: 249,
            },
            FilePlant::ExtraPayment {
                order_no: "GHOST00001".into(),
                amount_fen: 100,
            },
        ]
    });
    let f = w
        .client
        .parse_settlement(&w.client.download_settlement(today).await.unwrap())
        .unwrap();
    assert!(f.rows.iter().any(|r| r.order_no == "BILL000002" && r.amount_fen == 249));
    assert!(f.rows.iter().any(|r| r.order_no == "GHOST00001" && r.amount_fen == 100));
}

#[tokio::test]
async fn faults_make_calls_fail_the_way_a_network_does() {
    let w = world().await;
    w.sb.update_faults(|f| f.api_5xx = true);
    let err = w.client.query_order(&oref("FAULT00001")).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Transport(TransportError::Status { status: 503, .. })),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retry);

    w.sb.set_faults(Faults {
        api_timeout: true,
        ..Faults::default()
    });
    let impatient = AlipayClient::new(
        w.client
            .config()
            .clone()
            .with_timeouts(Duration::from_millis(300), Duration::from_millis(300)),
    )
    .unwrap();
    let err = impatient.query_order(&oref("FAULT00001")).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Transport(TransportError::Timeout { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_notification_with_a_bad_signature_is_refused_and_redelivered_on_alipays_schedule() {
    let w = world().await;
    w.sb.update_faults(|f| f.bad_signature = true);
    w.pay_qr("TAMPER0001", 100).await;
    wait_for("all deliveries", || {
        w.sb.deliveries().len() == 1 + NOTIFY_SCHEDULE_SECS.len()
    })
    .await;
    let d = w.sb.deliveries();
    assert!(d.iter().all(|d| d.tampered && !d.acknowledged && d.status == Some(500)));
    assert_eq!(
        d.iter().map(|d| d.attempt).max(),
        Some(8),
        "the first delivery and 7 retries"
    );
    let results = w.received.lock().unwrap().clone();
    assert!(
        results.iter().all(|r| matches!(r, Err(NotifyError::BadSignature(_)))),
        "{results:?}"
    );
    assert_eq!(NOTIFY_SCHEDULE_SECS, [240, 600, 600, 3600, 7200, 21600, 54000]);
}

#[tokio::test]
async fn a_client_signing_with_the_wrong_key_is_refused_with_an_unsigned_invalid_signature() {
    let w = world().await;
    let other_key = meterpay_gateways::sandbox::alipay::PLATFORM_PRIVATE_KEY;
    let mut cfg = w.client.config().clone();
    cfg.app_private_key = meterpay_gateways::crypto::load_private_key(other_key).unwrap();
    let wrong = AlipayClient::new(cfg).unwrap();
    let err = wrong.query_order(&oref("WRONGKEY01")).await.unwrap_err();
    match err {
        GatewayError::Refused { code, message, class } => {
            assert_eq!(code, "isv.invalid-signature");
            assert_eq!(class, ErrorClass::Failure);
            assert!(message.contains("unsigned"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn without_charset_in_the_url_query_a_chinese_subject_fails_as_at_alipay() {
    let w = world().await;
    let biz = r#"{"out_trade_no":"CHARSET001","total_amount":"1.00","subject":"水费"}"#;
    let params = w
        .client
        .signed_params("alipay.trade.precreate", biz, Some(&w.notify_url), None, Utc::now());
    // Everything in the body: the gateway decodes it as GBK.
    let body: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v.as_bytes())))
        .collect();
    let resp = w
        .http
        .post(w.client.config().gateway_url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(resp.contains("isv.invalid-signature"), "{resp}");
    // With charset in the query (as the client sends it) the same request works.
    w.client
        .create_order(&CreateOrder {
            subject: "水费".into(),
            ..w.order("CHARSET001", 100, PayMethod::Qr)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_ascii_request_without_charset_in_the_url_gets_gbk_notifications_that_still_verify() {
    let w = world().await;
    let biz = r#"{"out_trade_no":"GBKNOTIFY1","total_amount":"1.00","subject":"water 2024-01"}"#;
    let params = w
        .client
        .signed_params("alipay.trade.precreate", biz, Some(&w.notify_url), None, Utc::now());
    let body: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v.as_bytes())))
        .collect();
    w.http
        .post(w.client.config().gateway_url.clone())
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    w.sb.pay(meterpay_gateways::gateway::Channel::Alipay, APP_ID, "GBKNOTIFY1")
        .unwrap();
    w.wait_events(1).await;
    let v = w.received.lock().unwrap()[0].clone().unwrap();
    assert_eq!(v.fields["charset"], "GBK");
}

#[tokio::test]
async fn certificate_mode_sends_and_checks_the_serial_numbers() {
    let w = world_with(true).await;
    w.client
        .create_order(&w.order("CERT000001", 100, PayMethod::Qr))
        .await
        .unwrap();
    assert_eq!(
        w.client.query_order(&oref("CERT000001")).await.unwrap().state,
        PaymentState::NotFound
    );

    // An answer signed by a certificate we do not hold is not trusted.
    let mut cfg = w.client.config().clone();
    if let AlipayKey::Certificate(c) = &mut cfg.alipay_key {
        c.alipay_cert_sn = "0000000000000000000000000000000".into();
    }
    let err = AlipayClient::new(cfg)
        .unwrap()
        .query_order(&oref("CERT000001"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Unverified(m) if m.contains("download the new")),
        "{err:?}"
    );

    // A request naming another app certificate is refused by the gateway.
    let mut cfg = w.client.config().clone();
    if let AlipayKey::Certificate(c) = &mut cfg.alipay_key {
        c.app_cert_sn = "ffffffffffffffffffffffffffffffff".into();
    }
    let err = AlipayClient::new(cfg)
        .unwrap()
        .query_order(&oref("CERT000001"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, .. } if code == "isv.app-cert-sn-mismatch"),
        "{err:?}"
    );

    w.pay_qr("CERT000002", 100).await;
    assert!(matches!(
        &w.wait_events(1).await[0],
        NotificationEvent::Payment {
            state: PaymentState::Paid,
            ..
        }
    ));
}

/// Every byte of a signed message matters: a change at any position of the signed content
/// (every parameter name and value of a notification, every byte of an answer's node, every
/// byte of a request's parameters) fails verification.
#[tokio::test]
async fn a_changed_byte_anywhere_in_a_signed_message_fails_verification() {
    let w = world().await;
    w.pay_qr("BYTES00001", 4321).await;
    w.wait_events(1).await;

    // 1. The notification, as delivered, re-sent with one byte of one name or value changed.
    let n = w.received.lock().unwrap()[0].clone().unwrap();
    let body: Vec<u8> = n
        .fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                form_encode(k.as_bytes()),
                form_encode(v.as_str().unwrap().as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes();
    let params = parse_notification(&body).unwrap();
    let verify = |p: &[(String, Vec<u8>)]| {
        let body: Vec<u8> = p
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k.as_bytes()), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes();
        w.client.verify_notification(
            IncomingNotification {
                headers: &[],
                body: &body,
            },
            Utc::now(),
        )
    };
    assert!(verify(&params.pairs).is_ok(), "unchanged, it verifies");
    let mut checked = 0;
    for i in 0..params.pairs.len() {
        for in_name in [true, false] {
            let len = if in_name {
                params.pairs[i].0.len()
            } else {
                params.pairs[i].1.len()
            };
            for j in 0..len {
                let mut p = params.pairs.clone();
                if in_name {
                    let mut b = p[i].0.clone().into_bytes();
                    if !b[j].is_ascii() {
                        continue;
                    }
                    b[j] = if b[j] == b'x' { b'y' } else { b'x' };
                    p[i].0 = String::from_utf8(b).unwrap();
                } else {
                    let b = &mut p[i].1;
                    if !b[j].is_ascii() {
                        // Swap the whole multi-byte character for another.
                        let s = String::from_utf8(b.clone()).unwrap();
                        let Some((at, c)) = s.char_indices().find(|(at, c)| *at <= j && j < at + c.len_utf8()) else {
                            continue;
                        };
                        if at != j {
                            continue;
                        }
                        let swapped = format!(
                            "{}{}{}",
                            &s[..at],
                            if c == '水' { '电' } else { '水' },
                            &s[at + c.len_utf8()..]
                        );
                        *b = swapped.into_bytes();
                    } else {
                        b[j] = if b[j] == b'1' { b'2' } else { b'1' };
                    }
                }
                assert!(
                    verify(&p).is_err(),
                    "changing byte {j} of {} {:?} still verified",
                    if in_name { "name" } else { "value" },
                    params.pairs[i].0
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked}");

    // 2. A synchronous answer: every byte of the node.
    let params = w
        .client
        .signed_params(METHOD_QUERY, r#"{"out_trade_no":"BYTES00001"}"#, None, None, Utc::now());
    let (query, biz): (Vec<_>, Vec<_>) = params.iter().partition(|(k, _)| k != "biz_content");
    let url = format!(
        "{}?{}",
        w.client.config().gateway_url,
        query
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v.as_bytes())))
            .collect::<Vec<_>>()
            .join("&")
    );
    let answer = w
        .http
        .post(url)
        .body(format!("biz_content={}", form_encode(biz[0].1.as_bytes())))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let key = w.client.config().alipay_public_key().clone();
    let raw = split_response(&answer, METHOD_QUERY).unwrap();
    verify_response(&raw, &key).unwrap();
    assert!(raw.node.windows(2).any(|p| p == b"\\/") || !raw.node.contains(&b'/'));
    let node_start = raw.node.as_ptr() as usize - answer.as_ptr() as usize;
    for j in 0..raw.node.len() {
        let mut changed = answer.clone();
        changed[node_start + j] ^= 0x01;
        let ok = match split_response(&changed, METHOD_QUERY) {
            Ok(r) => verify_response(&r, &key).is_ok(),
            Err(_) => false,
        };
        assert!(!ok, "changing byte {j} of the answer node still verified");
    }

    // 3. A request: every byte of every parameter the merchant signed.
    let merchant_key =
        meterpay_gateways::crypto::load_public_key(meterpay_gateways::sandbox::alipay::MERCHANT_PUBLIC_KEY).unwrap();
    assert!(verify_request(&params, &merchant_key).is_ok());
    for i in 0..params.len() {
        if params[i].0 == "sign" {
            continue;
        }
        for j in 0..params[i].1.len() {
            let mut p = params.clone();
            let mut b = p[i].1.clone().into_bytes();
            if !b[j].is_ascii() {
                continue;
            }
            b[j] = if b[j] == b'1' { b'2' } else { b'1' };
            p[i].1 = String::from_utf8(b).unwrap();
            assert!(
                verify_request(&p, &merchant_key).is_err(),
                "changing byte {j} of {} still verified",
                params[i].0
            );
        }
    }
}
