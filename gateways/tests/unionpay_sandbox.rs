//! Client ↔ sandbox round trips for UnionPay: every flow over real HTTP with real signatures.
#![cfg(feature = "sandbox")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use meterpay_gateways::gateway::{
    CloseOutcome, CreateOrder, GatewayError, IncomingNotification, NotificationEvent, NotifyError, OrderRef, PayMethod,
    PayerAction, PaymentGateway, RefundRef, RefundRequest,
};
use meterpay_gateways::outcome::{ErrorClass, PaymentState, RefundState, TransportError};
use meterpay_gateways::sandbox::unionpay::{connect, connect_config, UnionPaySim, MIDDLE_PEM, ROOT_PEM};
use meterpay_gateways::sandbox::{Faults, Sandbox, SandboxConfig, SimMerchant};
use meterpay_gateways::settlement::RowKind;
use meterpay_gateways::unionpay::transformers::{field, parse_form, write_form, TokenPayData};
use meterpay_gateways::unionpay::{inspect_notification, UnionPayClient};

const MER: &str = "777290058110048";

/// A merchant's notify endpoint: records every body; refuses the first `refuse` deliveries.
#[derive(Clone)]
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    hits: Arc<AtomicU32>,
}

async fn receiver(refuse: u32) -> Receiver {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(AtomicU32::new(0));
    let (b, h) = (bodies.clone(), hits.clone());
    let app = Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (b, h) = (b.clone(), h.clone());
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst);
                b.lock().unwrap().push(body.to_vec());
                if n < refuse {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Receiver { url, bodies, hits }
}

impl Receiver {
    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
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

async fn sandbox() -> (Sandbox, UnionPayClient) {
    let sb = Sandbox::new(SandboxConfig {
        time_scale: 100_000,
        refund_settle_delay: Duration::from_millis(20),
    })
    .with_sim(UnionPaySim::from_fixtures());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sb.serve(l);
    let client = connect(&sb, MER, 6000);
    (sb, client)
}

fn order(no: &str, amount: i64, method: PayMethod, notify: &str) -> CreateOrder {
    let now = Utc::now();
    CreateOrder {
        order_no: no.into(),
        amount_fen: amount,
        subject: "2026-12 water and electricity, 3-2-1201".into(),
        notify_url: notify.into(),
        return_url: Some("https://meterpay.example/pay/return".into()),
        expires_at: now + chrono::Duration::minutes(15),
        created_at: now,
        method,
        payer_openid: None,
        payer_ip: Some("203.0.113.7".into()),
    }
}

fn reference(o: &CreateOrder) -> OrderRef {
    OrderRef {
        order_no: o.order_no.clone(),
        created_at: o.created_at,
    }
}

/// What the payer's browser does with the form: POST it to the action. Returns the redirect.
async fn submit(action: &PayerAction) -> (u16, String) {
    let PayerAction::Form { action, fields } = action else {
        panic!("UnionPay answers with a form, got {action:?}")
    };
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(write_form(fields))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location)
}

fn verify(client: &UnionPayClient, body: &[u8], now: DateTime<Utc>) -> Result<NotificationEvent, NotifyError> {
    client
        .verify_notification(IncomingNotification { headers: &[], body }, now)
        .map(|v| {
            assert_eq!(v.merchant_id, MER);
            v.event
        })
}

async fn paid_order(
    sb: &Sandbox,
    client: &UnionPayClient,
    no: &str,
    amount: i64,
    notify: &str,
) -> (CreateOrder, String) {
    let o = order(no, amount, PayMethod::Web, notify);
    let form = client.create_order(&o).await.unwrap();
    assert_eq!(submit(&form).await.0, 303);
    sb.pay(meterpay_gateways::gateway::Channel::Unionpay, MER, no).unwrap();
    let q = client.query_order(&reference(&o)).await.unwrap();
    assert_eq!(q.state, PaymentState::Paid);
    (o, q.gateway_txn_id.unwrap())
}

#[tokio::test]
async fn a_web_payment_goes_form_to_wallet_to_notification_to_query() {
    let (_sb, client) = sandbox().await;
    let rx = receiver(0).await;
    let o = order("W20261201000001", 8880, PayMethod::Web, &rx.url);

    let action = client.create_order(&o).await.unwrap();
    let PayerAction::Form { action: url, fields } = &action else {
        panic!()
    };
    assert!(url.ends_with("/unionpay/gateway/api/frontTransReq.do"), "{url}");
    assert_eq!(field(fields, "channelType"), Some("07"));
    assert_eq!(field(fields, "txnAmt"), Some("8880"));

    // Before the browser submits the form UnionPay knows nothing of the order.
    assert_eq!(
        client.query_order(&reference(&o)).await.unwrap().state,
        PaymentState::NotFound
    );

    let (status, location) = submit(&action).await;
    assert_eq!(status, 303);
    assert!(
        location.ends_with(&format!("/sandbox/wallet/unionpay/{MER}/W20261201000001")),
        "{location}"
    );
    let pending = client.query_order(&reference(&o)).await.unwrap();
    assert_eq!(
        pending.state,
        PaymentState::Pending,
        "submitted, not yet paid: in progress (05)"
    );

    // The payer presses Pay on the wallet page.
    let page = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{location}/pay"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 303, "back to the merchant's return URL");

    wait_for("the back notification", || !rx.bodies().is_empty()).await;
    let body = rx.bodies().remove(0);
    let event = verify(&client, &body, Utc::now()).unwrap();
    let NotificationEvent::Payment {
        order_no,
        state,
        gateway_txn_id,
        amount_fen,
        paid_at,
    } = event
    else {
        panic!("a payment notification")
    };
    assert_eq!(
        (order_no.as_str(), state, amount_fen),
        ("W20261201000001", PaymentState::Paid, 8880)
    );
    assert_eq!(gateway_txn_id.len(), 21);
    assert!(paid_at.is_some_and(|t| (Utc::now() - t).num_seconds().abs() < 5));

    let q = client.query_order(&reference(&o)).await.unwrap();
    assert_eq!(q.state, PaymentState::Paid);
    assert_eq!(q.gateway_txn_id.as_deref(), Some(gateway_txn_id.as_str()));
    assert_eq!(q.amount_fen, Some(8880));
    assert_eq!(q.merchant_id.as_deref(), Some(MER));
    assert_eq!(
        client.close_order(&reference(&o)).await.unwrap(),
        CloseOutcome::AlreadyPaid
    );

    // inspect_notification, given only the sandbox's root and middle, says the same.
    let bundle = [ROOT_PEM, MIDDLE_PEM].concat();
    let inspected = inspect_notification(
        &bundle,
        None,
        IncomingNotification {
            headers: &[],
            body: &body,
        },
        Utc::now(),
    )
    .unwrap();
    assert_eq!(inspected.event_id, format!("{gateway_txn_id}:01:00"));
    assert_eq!(inspected.fields["orderId"], "W20261201000001");
    assert_eq!(client.ack(true).status, 200);
    assert_ne!(client.ack(false).status, 200);
}

#[tokio::test]
async fn wap_and_qr_orders_are_forms_with_their_channel_type_and_jsapi_is_refused() {
    let (_sb, client) = sandbox().await;
    let h5 = client
        .create_order(&order("W20261201000002", 100, PayMethod::H5, "http://127.0.0.1:9/n"))
        .await
        .unwrap();
    let PayerAction::Form { fields, .. } = &h5 else {
        panic!()
    };
    assert_eq!(field(fields, "channelType"), Some("08"));
    assert_eq!(submit(&h5).await.0, 303, "the sandbox accepts the WAP form");
    let qr = client
        .create_order(&order("W20261201000003", 100, PayMethod::Qr, "http://127.0.0.1:9/n"))
        .await
        .unwrap();
    let PayerAction::Form { fields, .. } = &qr else {
        panic!()
    };
    assert_eq!(field(fields, "channelType"), Some("07"));
    let err = client
        .create_order(&order("W20261201000004", 100, PayMethod::Jsapi, "http://127.0.0.1:9/n"))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Invalid(_)));
    let mut no_return = order("W20261201000005", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    no_return.return_url = None;
    assert!(matches!(
        client.create_order(&no_return).await,
        Err(GatewayError::Invalid(_))
    ));
    let bad_no = order("W2026-1201", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    assert!(matches!(
        client.create_order(&bad_no).await,
        Err(GatewayError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_back_consume_with_a_token_is_paid_and_notified() {
    let (_sb, client) = sandbox().await;
    let rx = receiver(0).await;
    let o = order("W20261201000010", 4321, PayMethod::Web, &rx.url);
    let token = TokenPayData {
        token: "6235240000020757577".into(),
        tr_id: "62000000001".into(),
    };
    let accepted = client.back_consume(&o, &token).await.unwrap();
    assert_eq!(accepted.order_no, "W20261201000010");
    wait_for("the notification", || !rx.bodies().is_empty()).await;
    let NotificationEvent::Payment {
        state,
        amount_fen,
        gateway_txn_id,
        ..
    } = verify(&client, &rx.bodies()[0], Utc::now()).unwrap()
    else {
        panic!()
    };
    assert_eq!((state, amount_fen), (PaymentState::Paid, 4321));
    assert_eq!(accepted.gateway_txn_id.as_deref(), Some(gateway_txn_id.as_str()));
    assert_eq!(
        client.query_order(&reference(&o)).await.unwrap().state,
        PaymentState::Paid
    );
    let again = client.back_consume(&o, &token).await.unwrap_err();
    assert!(
        matches!(&again, GatewayError::Refused { code, class: ErrorClass::AlreadyDone, .. } if code == "12"),
        "{again:?}"
    );
}

#[tokio::test]
async fn closing_queries_instead_nothing_pending_or_failed() {
    let (sb, client) = sandbox().await;
    let never = order("W20261201000020", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    assert_eq!(
        client.close_order(&reference(&never)).await.unwrap(),
        CloseOutcome::NothingToClose
    );

    let open = order("W20261201000021", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    submit(&client.create_order(&open).await.unwrap()).await;
    let err = client.close_order(&reference(&open)).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Retry, .. } if code == "05"),
        "{err:?}"
    );

    // Past its payTimeout the unpaid order has failed: closed, nothing can land on it.
    sb.advance_clock(chrono::Duration::minutes(16));
    assert_eq!(
        client.query_order(&reference(&open)).await.unwrap().state,
        PaymentState::Failed
    );
    assert_eq!(
        client.close_order(&reference(&open)).await.unwrap(),
        CloseOutcome::Closed
    );
    assert!(sb
        .pay(meterpay_gateways::gateway::Channel::Unionpay, MER, "W20261201000021")
        .is_err());

    // A query with another txnTime is another order to UnionPay.
    let mut wrong_time = reference(&open);
    wrong_time.created_at += chrono::Duration::seconds(1);
    assert_eq!(
        client.query_order(&wrong_time).await.unwrap().state,
        PaymentState::NotFound
    );
}

#[tokio::test]
async fn a_refund_is_accepted_then_notified_and_queried_as_succeeded() {
    let (sb, client) = sandbox().await;
    let rx = receiver(0).await;
    sb.set_faults(Faults {
        drop_for_orders: ["W20261201000030".to_string()].into(),
        ..Faults::default()
    });
    let (o, txn_id) = paid_order(&sb, &client, "W20261201000030", 10_000, &rx.url).await;
    sb.set_faults(Faults::default());
    let req = RefundRequest {
        order_no: o.order_no.clone(),
        refund_no: "R20261201000031".into(),
        refund_fen: 2_500,
        order_total_fen: 10_000,
        reason: "meter misread".into(),
        notify_url: Some(rx.url.clone()),
        gateway_txn_id: Some(txn_id.clone()),
        requested_at: Utc::now(),
    };
    let r = client.refund(&req).await.unwrap();
    assert_eq!(r.state, RefundState::Processing, "UnionPay refunds asynchronously");
    let refund_id = r.gateway_refund_id.clone().unwrap();

    wait_for("the refund notification", || !rx.bodies().is_empty()).await;
    let NotificationEvent::Refund {
        order_no,
        refund_no,
        state,
        gateway_refund_id,
        amount_fen,
        refunded_at,
    } = verify(&client, &rx.bodies()[0], Utc::now()).unwrap()
    else {
        panic!("a refund notification")
    };
    assert_eq!(order_no, "W20261201000030", "our order number came back in reqReserved");
    assert_eq!(refund_no, "R20261201000031");
    assert_eq!((state, amount_fen), (RefundState::Succeeded, 2_500));
    assert_eq!(gateway_refund_id.as_deref(), Some(refund_id.as_str()));
    assert!(refunded_at.is_some());

    let q = client
        .query_refund(&RefundRef {
            order_no: o.order_no.clone(),
            refund_no: "R20261201000031".into(),
            requested_at: req.requested_at,
        })
        .await
        .unwrap();
    assert_eq!(q.state, RefundState::Succeeded);
    assert_eq!(q.amount_fen, Some(2_500));

    let again = client.refund(&req).await.unwrap_err();
    assert!(matches!(&again, GatewayError::Refused { code, class: ErrorClass::AlreadyDone, .. } if code == "12"));
    let too_much = RefundRequest {
        refund_no: "R20261201000032".into(),
        refund_fen: 7_501,
        ..req.clone()
    };
    let err = client.refund(&too_much).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "36"),
        "{err:?}"
    );
    let unknown = RefundRequest {
        refund_no: "R20261201000033".into(),
        gateway_txn_id: Some("999999999999999999999".into()),
        ..req.clone()
    };
    let err = client.refund(&unknown).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, .. } if code == "35"),
        "{err:?}"
    );
    let missing = client
        .query_refund(&RefundRef {
            order_no: o.order_no.clone(),
            refund_no: "R20261201000039".into(),
            requested_at: Utc::now(),
        })
        .await
        .unwrap_err();
    assert!(matches!(&missing, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "34"));
}

#[tokio::test]
async fn a_refund_still_processing_is_queried_as_processing() {
    let sb = Sandbox::new(SandboxConfig {
        time_scale: 1,
        refund_settle_delay: Duration::from_secs(3600),
    })
    .with_sim(UnionPaySim::from_fixtures());
    sb.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let client = connect(&sb, MER, 6000);
    sb.set_faults(Faults {
        drop_notifications: true,
        ..Faults::default()
    });
    let (o, txn_id) = paid_order(&sb, &client, "W20261201000040", 500, "http://127.0.0.1:9/n").await;
    let at = Utc::now();
    client
        .refund(&RefundRequest {
            order_no: o.order_no.clone(),
            refund_no: "R20261201000041".into(),
            refund_fen: 500,
            order_total_fen: 500,
            reason: "r".into(),
            notify_url: Some("http://127.0.0.1:9/n".into()),
            gateway_txn_id: Some(txn_id),
            requested_at: at,
        })
        .await
        .unwrap();
    let q = client
        .query_refund(&RefundRef {
            order_no: o.order_no.clone(),
            refund_no: "R20261201000041".into(),
            requested_at: at,
        })
        .await
        .unwrap();
    assert_eq!(q.state, RefundState::Processing);
}

/// kind, order, refund, amount, fee.
type RowSummary<'a> = (RowKind, &'a str, Option<&'a str>, i64, Option<i64>);

#[tokio::test]
async fn the_days_file_downloads_and_parses_back_with_fees_after_the_clearing_day() {
    let (sb, client) = sandbox().await;
    sb.set_faults(Faults {
        drop_notifications: true,
        ..Faults::default()
    });
    let (a, txn_a) = paid_order(&sb, &client, "W20261201000050", 10_000, "http://127.0.0.1:9/n").await;
    paid_order(&sb, &client, "W20261201000051", 250, "http://127.0.0.1:9/n").await;
    client
        .refund(&RefundRequest {
            order_no: a.order_no.clone(),
            refund_no: "R20261201000052".into(),
            refund_fen: 5_000,
            order_total_fen: 10_000,
            reason: "r".into(),
            notify_url: Some("http://127.0.0.1:9/n".into()),
            gateway_txn_id: Some(txn_a.clone()),
            requested_at: Utc::now(),
        })
        .await
        .unwrap();
    wait_for("the refund to complete", || {
        sb.order(meterpay_gateways::gateway::Channel::Unionpay, MER, "W20261201000050")
            .unwrap()
            .refunds
            .iter()
            .all(|r| r.state == meterpay_gateways::sandbox::SimRefundState::Succeeded)
    })
    .await;
    let day = meterpay_gateways::unionpay::transformers::clearing_day(sb.now());

    // The clearing day is not over yet: no file (98, retry later).
    let err = client.download_settlement(day).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Retry, .. } if code == "98"),
        "{err:?}"
    );

    sb.advance_clock(chrono::Duration::days(1));
    let bytes = client.download_settlement(day).await.unwrap();
    assert!(
        bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)),
        "fileContent is base64"
    );
    let file = client.parse_settlement(&bytes).unwrap();
    let rows: Vec<RowSummary> = file
        .rows
        .iter()
        .map(|r| {
            (
                r.kind,
                r.order_no.as_str(),
                r.refund_no.as_deref(),
                r.amount_fen,
                r.fee_fen,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (RowKind::Payment, "W20261201000050", None, 10_000, Some(60)),
            (RowKind::Payment, "W20261201000051", None, 250, Some(2)),
            (
                RowKind::Refund,
                "W20261201000050",
                Some("R20261201000052"),
                5_000,
                Some(-30)
            ),
        ]
    );
    assert_eq!(
        file.rows[2].gateway_txn_id, txn_a,
        "a refund row names the payment's queryId"
    );
    assert_eq!(file.totals.fee_fen, 32);
    let detail = meterpay_gateways::unionpay::settlement::parse_file(&bytes).unwrap();
    assert_eq!(detail.settle_date, day);
    assert_eq!(detail.records[0].net_fen, 9_940);
    assert_eq!(detail.records[2].net_fen, -4_970);

    // The control API serves the same bytes, and another day's file holds none of these.
    let other = sb
        .settlement_file(
            meterpay_gateways::gateway::Channel::Unionpay,
            MER,
            day.pred_opt().unwrap(),
        )
        .unwrap();
    assert!(client.parse_settlement(&other).unwrap().rows.is_empty());
}

#[tokio::test]
async fn requests_the_sandbox_cannot_verify_are_refused_as_unionpay_does() {
    let (sb, client) = sandbox().await;
    let o = order("W20261201000060", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    // The merchant re-registered with another certificate: our signatures no longer verify.
    let rogue =
        meterpay_gateways::crypto::load_public_key(include_bytes!("../../fixtures/unionpay/rogue_sign.pem")).unwrap();
    let mut m: SimMerchant = sb.merchant(meterpay_gateways::gateway::Channel::Unionpay, MER).unwrap();
    m.merchant_public_key = rogue;
    sb.register_merchant(m.clone());
    let err = client.query_order(&reference(&o)).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "11"),
        "{err:?}"
    );
    // A different certId is refused as well.
    m.extra.insert("certId".into(), "1".into());
    sb.register_merchant(m);
    let err = client.query_order(&reference(&o)).await.unwrap_err();
    assert!(matches!(&err, GatewayError::Refused { code, message, .. } if code == "11" && message.contains("certId")));
    // A browser form with a changed amount is refused at the front gateway.
    let (sb2, client2) = sandbox().await;
    let PayerAction::Form { action, mut fields } = client2.create_order(&o).await.unwrap() else {
        panic!()
    };
    for (k, v) in fields.iter_mut() {
        if k == "txnAmt" {
            *v = "1".into();
        }
    }
    let (status, _) = submit(&PayerAction::Form { action, fields }).await;
    assert_eq!(status, 400);
    assert!(sb2
        .order(meterpay_gateways::gateway::Channel::Unionpay, MER, "W20261201000060")
        .is_none());
}

#[tokio::test]
async fn an_unknown_merchant_is_refused() {
    let (sb, _client) = sandbox().await;
    let mut config = connect_config(&sb, MER, 6000);
    config.merchant_id = "898000000000001".into();
    let stranger = UnionPayClient::new(config).unwrap();
    let err = stranger
        .query_order(&reference(&order("W20261201000070", 1, PayMethod::Web, "http://x/n")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Refused { code, .. } if code == "31"),
        "{err:?}"
    );
}

#[tokio::test]
async fn timeouts_and_5xx_are_transport_errors() {
    let (sb, _) = sandbox().await;
    let mut config = connect_config(&sb, MER, 6000);
    config.timeout = Duration::from_millis(300);
    let client = UnionPayClient::new(config).unwrap();
    let o = order("W20261201000080", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    sb.set_faults(Faults {
        api_5xx: true,
        ..Faults::default()
    });
    let err = client.query_order(&reference(&o)).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Transport(TransportError::Status { status: 503, .. })),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Retry);
    sb.set_faults(Faults {
        api_timeout: true,
        ..Faults::default()
    });
    let err = client.query_order(&reference(&o)).await.unwrap_err();
    assert!(
        matches!(err, GatewayError::Transport(TransportError::Timeout { .. })),
        "{err:?}"
    );
}

/// A fake gateway answering every request with `body`.
async fn fake_gateway(body: String) -> String {
    let app = Router::new().fallback(move || {
        let b = body.clone();
        async move { b }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

#[tokio::test]
async fn an_answer_not_signed_by_unionpay_is_never_trusted() {
    let (sb, _) = sandbox().await;
    let o = order("W20261201000085", 100, PayMethod::Web, "http://127.0.0.1:9/n");
    let answer = |signer: Option<&meterpay_gateways::unionpay::SigningIdentity>| {
        let mut f: Vec<(String, String)> = [
            ("version", "5.1.0"),
            ("encoding", "UTF-8"),
            ("signMethod", "01"),
            ("txnType", "00"),
            ("merId", MER),
            ("orderId", "W20261201000085"),
            ("respCode", "34"),
            ("respMsg", "查无此交易"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(id) = signer {
            f.push(("signPubKeyCert".into(), id.certificate_pem()));
            let sig = id.signature(&f, false);
            f.push(("signature".into(), sig));
        }
        meterpay_gateways::unionpay::transformers::write_answer(&f)
    };
    let rogue = meterpay_gateways::unionpay::SigningIdentity::from_pem(
        include_bytes!("../../fixtures/unionpay/rogue_sign.key"),
        include_bytes!("../../fixtures/unionpay/rogue_sign.pem"),
    )
    .unwrap();
    for (what, body) in [
        ("unsigned", answer(None)),
        ("signed by a look-alike", answer(Some(&rogue))),
    ] {
        let mut config = connect_config(&sb, MER, 6000);
        config.gateway_url = fake_gateway(body).await;
        let client = UnionPayClient::new(config).unwrap();
        // A forged "no such order" must never become NotFound (which would let us close a paid order).
        let err = client.query_order(&reference(&o)).await.unwrap_err();
        assert!(matches!(err, GatewayError::Unverified(_)), "{what}: {err:?}");
        assert_eq!(err.class(), ErrorClass::Retry);
        assert!(client.close_order(&reference(&o)).await.is_err(), "{what}");
    }
    // A middle that is not issued by the root is refused when the client is built.
    let mut config = connect_config(&sb, MER, 6000);
    config.middle_cert = include_bytes!("../../fixtures/unionpay/rogue_sign.pem").to_vec();
    assert!(UnionPayClient::new(config).is_err());
}

#[tokio::test]
async fn notifications_are_retried_on_unionpays_schedule_until_a_200() {
    let (sb, client) = sandbox().await;
    let rx = receiver(2).await;
    paid_order(&sb, &client, "W20261201000090", 100, &rx.url).await;
    wait_for("an acknowledged delivery", || {
        sb.deliveries().iter().any(|d| d.acknowledged)
    })
    .await;
    let d = sb.deliveries();
    assert_eq!(d.iter().map(|d| d.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        d.iter().map(|d| d.status).collect::<Vec<_>>(),
        vec![Some(500), Some(500), Some(200)]
    );

    // Never acknowledged: 5 deliveries in all, then UnionPay gives up.
    let never = receiver(u32::MAX).await;
    paid_order(&sb, &client, "W20261201000091", 100, &never.url).await;
    wait_for("five deliveries", || never.hits.load(Ordering::SeqCst) == 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(never.hits.load(Ordering::SeqCst), 5);
    let bodies = never.bodies();
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every delivery is the same signed notification"
    );
}

#[tokio::test]
async fn a_tampered_or_foreign_notification_fails_verification() {
    let (sb, client) = sandbox().await;
    let rx = receiver(0).await;
    sb.set_faults(Faults {
        bad_signature: true,
        ..Faults::default()
    });
    paid_order(&sb, &client, "W20261201000100", 100, &rx.url).await;
    wait_for("the notification", || !rx.bodies().is_empty()).await;
    let err = verify(&client, &rx.bodies()[0], Utc::now()).unwrap_err();
    assert!(matches!(err, NotifyError::BadSignature(_)), "{err:?}");

    // A notification signed by the merchant's own certificate (which chains to the same middle)
    // is refused by the CN check.
    let merchant = meterpay_gateways::unionpay::SigningIdentity::from_pkcs12(
        meterpay_gateways::sandbox::unionpay::MERCHANT_PFX,
        meterpay_gateways::sandbox::unionpay::MERCHANT_PFX_PASSWORD,
    )
    .unwrap();
    let mut fields = parse_form(&rx.bodies()[0]).unwrap();
    fields.retain(|(k, _)| k != "signature" && k != "signPubKeyCert");
    fields.push(("signPubKeyCert".into(), merchant.certificate_pem()));
    let sig = merchant.signature(&fields, false);
    fields.push(("signature".into(), sig));
    let err = verify(&client, write_form(&fields).as_bytes(), Utc::now()).unwrap_err();
    assert!(
        matches!(&err, NotifyError::UnknownKey(m) if m.contains("does not name UnionPay")),
        "{err:?}"
    );

    // A certificate with the sandbox signer's very names, issued by someone else.
    let rogue = meterpay_gateways::unionpay::SigningIdentity::from_pem(
        include_bytes!("../../fixtures/unionpay/rogue_sign.key"),
        include_bytes!("../../fixtures/unionpay/rogue_sign.pem"),
    )
    .unwrap();
    fields.retain(|(k, _)| k != "signature" && k != "signPubKeyCert");
    fields.push(("signPubKeyCert".into(), rogue.certificate_pem()));
    let sig = rogue.signature(&fields, false);
    fields.push(("signature".into(), sig));
    let err = verify(&client, write_form(&fields).as_bytes(), Utc::now()).unwrap_err();
    assert!(
        matches!(&err, NotifyError::UnknownKey(m) if m.contains("not signed by it")),
        "{err:?}"
    );

    // Outside the certificates' validity.
    let later: DateTime<Utc> = "2051-01-01T00:00:00Z".parse().unwrap();
    sb.set_faults(Faults::default());
    let rx2 = receiver(0).await;
    paid_order(&sb, &client, "W20261201000101", 100, &rx2.url).await;
    wait_for("the notification", || !rx2.bodies().is_empty()).await;
    assert!(verify(&client, &rx2.bodies()[0], Utc::now()).is_ok());
    assert!(matches!(
        verify(&client, &rx2.bodies()[0], later),
        Err(NotifyError::UnknownKey(_))
    ));
}

#[tokio::test]
async fn a_changed_byte_anywhere_in_a_signed_notification_fails_verification() {
    let (sb, client) = sandbox().await;
    let rx = receiver(0).await;
    paid_order(&sb, &client, "W20261201000110", 123_456, &rx.url).await;
    wait_for("the notification", || !rx.bodies().is_empty()).await;
    let body = rx.bodies().remove(0);
    let original = parse_form(&body).unwrap();
    let now = Utc::now();
    assert!(verify(&client, &body, now).is_ok());
    let mut checked = 0;
    for i in 0..body.len() {
        for replacement in [b'A', b'7'] {
            if body[i] == replacement {
                continue;
            }
            let mut changed = body.clone();
            changed[i] = replacement;
            // Changes that decode to the very same fields (e.g. the case of a %-escape) are the
            // same message; everything else must fail.
            if parse_form(&changed).is_ok_and(|f| f == original) {
                continue;
            }
            checked += 1;
            assert!(
                verify(&client, &changed, now).is_err(),
                "byte {i} changed to {replacement} still verified"
            );
        }
    }
    assert!(
        checked > body.len(),
        "{checked} variants checked over {} bytes",
        body.len()
    );
}

#[test]
fn a_changed_byte_anywhere_in_a_signed_answer_fails_verification() {
    use meterpay_gateways::unionpay::transformers::{parse_answer, write_answer};
    use meterpay_gateways::unionpay::verify::verify_fields;
    let sim = UnionPaySim::from_fixtures();
    let mut fields: Vec<(String, String)> = [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("txnType", "00"),
        ("merId", MER),
        ("orderId", "W20261201000120"),
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("origRespCode", "00"),
        ("txnAmt", "8880"),
        ("queryId", "261201103000000000001"),
        ("reqReserved", "{a=1&b=2}"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    sim.sign(&mut fields);
    let text = write_answer(&fields);
    let trust = meterpay_gateways::unionpay::TrustStore::new(
        ROOT_PEM,
        MIDDLE_PEM,
        meterpay_gateways::unionpay::UnionPayEnvironment::Test,
    )
    .unwrap();
    let now = Utc::now();
    let original = parse_answer(&text).unwrap();
    assert!(verify_fields(&trust, &original, now).is_ok());
    let bytes = text.as_bytes();
    let mut checked = 0;
    for i in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        let Ok(t) = std::str::from_utf8(&changed) else {
            continue; // inside a multi-byte character: not text the client would accept either
        };
        match parse_answer(t) {
            Err(_) => checked += 1,
            Ok(f) if f == original => {}
            Ok(f) => {
                checked += 1;
                assert!(
                    verify_fields(&trust, &f, now).is_err(),
                    "byte {i} changed and the answer still verified"
                );
            }
        }
    }
    assert!(
        checked * 10 > bytes.len() * 9,
        "{checked} of {} positions checked",
        bytes.len()
    );
}
