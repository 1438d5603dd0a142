//! WeChat Pay v3 client ↔ sandbox round trips: every flow, over real HTTP, with real signatures
//! both ways.
#![cfg(feature = "sandbox")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{Duration as ChronoDuration, Utc};
use meterpay_gateways::gateway::{
    CloseOutcome, CreateOrder, GatewayError, IncomingNotification, NotificationEvent, NotifyError, OrderRef, PayMethod,
    PayerAction, PaymentGateway, RefundRef, RefundRequest,
};
use meterpay_gateways::outcome::{ErrorClass, PaymentState, RefundState, TransportError};
use meterpay_gateways::sandbox::wechatpay::{connect, connect_with, KeyMode, WechatPaySim, MERCHANT_CERT_PEM};
use meterpay_gateways::sandbox::{cst, Faults, FilePlant, Sandbox, SandboxConfig};
use meterpay_gateways::settlement::RowKind;
use meterpay_gateways::wechatpay::notify::ack_refused;
use meterpay_gateways::wechatpay::settlement::{parse_with_type, BillType};
use meterpay_gateways::wechatpay::sign::jsapi_message;
use meterpay_gateways::wechatpay::verify::SignedHeaders;
use meterpay_gateways::wechatpay::WechatPayClient;

const MCH: &str = "1900000109";

struct World {
    sb: Sandbox,
    sim: WechatPaySim,
    client: Arc<WechatPayClient>,
    notify_url: String,
    events: Arc<Mutex<Vec<Result<NotificationEvent, NotifyError>>>>,
    nonces: Arc<Mutex<Vec<String>>>,
    refuse: Arc<Mutex<u32>>,
}

async fn world_with(mode: KeyMode) -> World {
    let sim = WechatPaySim::from_fixtures();
    let sb = Sandbox::new(SandboxConfig {
        time_scale: 100_000,
        refund_settle_delay: Duration::from_secs(5),
    })
    .with_sim(sim.clone());
    sb.serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let client = Arc::new(connect_with(&sb, MCH, 6000, mode));
    let events = Arc::new(Mutex::new(Vec::new()));
    let nonces = Arc::new(Mutex::new(Vec::new()));
    let refuse = Arc::new(Mutex::new(0u32));
    let (c, e, n, r) = (client.clone(), events.clone(), nonces.clone(), refuse.clone());
    // The merchant's notify endpoint: verify over the raw bytes, answer as WeChat Pay requires.
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (c, e, n, r) = (c.clone(), e.clone(), n.clone(), r.clone());
            async move {
                let hs: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                n.lock().unwrap().push(
                    headers
                        .get("wechatpay-nonce")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                );
                let verified = c
                    .verify_notification_refreshing(
                        IncomingNotification {
                            headers: &hs,
                            body: &body,
                        },
                        Utc::now(),
                    )
                    .await;
                let ack = match &verified {
                    Ok(_) => {
                        let mut left = r.lock().unwrap();
                        if *left > 0 {
                            *left -= 1;
                            c.ack(false)
                        } else {
                            c.ack(true)
                        }
                    }
                    Err(err) => ack_refused(err),
                };
                e.lock().unwrap().push(verified.map(|v| v.event));
                (StatusCode::from_u16(ack.status).unwrap(), ack.body).into_response()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/notify", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    World {
        sb,
        sim,
        client,
        notify_url,
        events,
        nonces,
        refuse,
    }
}

async fn world() -> World {
    world_with(KeyMode::Certificate).await
}

impl World {
    fn order(&self, no: &str, fen: i64, method: PayMethod) -> CreateOrder {
        let now = Utc::now();
        CreateOrder {
            order_no: no.into(),
            amount_fen: fen,
            subject: "2026-12 水电费, 3-2-1201".into(),
            notify_url: self.notify_url.clone(),
            return_url: Some("https://meterpay.example/paid?order=1".into()),
            expires_at: now + ChronoDuration::minutes(30),
            created_at: now,
            method,
            payer_openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            payer_ip: Some("203.0.113.7".into()),
        }
    }

    fn oref(no: &str) -> OrderRef {
        OrderRef {
            order_no: no.into(),
            created_at: Utc::now(),
        }
    }

    fn refund(&self, order: &str, no: &str, fen: i64, total: i64) -> RefundRequest {
        RefundRequest {
            order_no: order.into(),
            refund_no: no.into(),
            refund_fen: fen,
            order_total_fen: total,
            reason: "多缴退回".into(),
            notify_url: Some(self.notify_url.clone()),
            gateway_txn_id: None,
            requested_at: Utc::now(),
        }
    }

    fn events(&self) -> Vec<Result<NotificationEvent, NotifyError>> {
        self.events.lock().unwrap().clone()
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached in 10 s");
}

#[tokio::test]
async fn a_native_order_paid_in_the_wallet_is_notified_verified_and_queried_as_paid() {
    let w = world().await;
    let action = w
        .client
        .create_order(&w.order("W20261201000001", 8880, PayMethod::Qr))
        .await
        .unwrap();
    let PayerAction::QrCode { content } = action else {
        panic!("{action:?}")
    };
    assert_eq!(
        content,
        format!("{}/sandbox/wallet/wechatpay/{MCH}/W20261201000001", w.sb.base_url())
    );
    let q = w.client.query_order(&World::oref("W20261201000001")).await.unwrap();
    assert_eq!(
        (q.state, q.amount_fen, q.gateway_txn_id.clone()),
        (PaymentState::Pending, None, None)
    );

    w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000001")
        .unwrap();
    wait_for("the payment notification", || !w.events().is_empty()).await;
    let NotificationEvent::Payment {
        order_no,
        state,
        gateway_txn_id,
        amount_fen,
        paid_at,
    } = w.events()[0].clone().unwrap()
    else {
        panic!("{:?}", w.events())
    };
    assert_eq!(
        (order_no.as_str(), state, amount_fen),
        ("W20261201000001", PaymentState::Paid, 8880)
    );
    assert!(
        gateway_txn_id.starts_with("42") && gateway_txn_id.len() == 28,
        "{gateway_txn_id}"
    );
    assert!(paid_at.is_some());

    let q = w.client.query_order(&World::oref("W20261201000001")).await.unwrap();
    assert_eq!(q.state, PaymentState::Paid);
    assert_eq!(q.amount_fen, Some(8880));
    assert_eq!(q.gateway_txn_id.as_deref(), Some(gateway_txn_id.as_str()));
    assert_eq!(q.merchant_id.as_deref(), Some(MCH));
    assert_eq!(w.sb.deliveries().len(), 1, "acknowledged at the first attempt");
    assert!(w.sb.deliveries()[0].acknowledged);

    // Creating it again once paid: ORDERPAID, i.e. already done.
    let e = w
        .client
        .create_order(&w.order("W20261201000001", 8880, PayMethod::Qr))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, class: ErrorClass::AlreadyDone, .. } if code == "ORDERPAID"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_order_queries_as_not_found_and_a_reused_number_with_another_amount_is_refused() {
    let w = world().await;
    let q = w.client.query_order(&World::oref("W20261201009999")).await.unwrap();
    assert_eq!(q.state, PaymentState::NotFound);
    w.client
        .create_order(&w.order("W20261201000002", 100, PayMethod::Qr))
        .await
        .unwrap();
    let e = w
        .client
        .create_order(&w.order("W20261201000002", 101, PayMethod::Qr))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "OUT_TRADE_NO_USED"),
        "{e}"
    );
}

#[tokio::test]
async fn a_jsapi_order_returns_a_pay_sign_that_verifies_with_the_merchant_key() {
    let w = world().await;
    let action = w
        .client
        .create_order(&w.order("W20261201000003", 500, PayMethod::Jsapi))
        .await
        .unwrap();
    let PayerAction::Jsapi { params } = action else {
        panic!("{action:?}")
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("appId"), meterpay_gateways::sandbox::wechatpay::SANDBOX_APPID);
    assert!(get("package").starts_with("prepay_id=wx"));
    assert_eq!(get("signType"), "RSA");
    let key = meterpay_gateways::crypto::load_public_key(MERCHANT_CERT_PEM.as_bytes()).unwrap();
    let msg = jsapi_message(&get("appId"), &get("timeStamp"), &get("nonceStr"), &get("package"));
    key.verify_sha256_base64(&msg, &get("paySign")).unwrap();
    // Without an openid the order cannot be made.
    let mut no_openid = w.order("W20261201000004", 500, PayMethod::Jsapi);
    no_openid.payer_openid = None;
    assert!(matches!(
        w.client.create_order(&no_openid).await,
        Err(GatewayError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_h5_order_leads_the_browser_to_the_wallet_with_the_return_url() {
    let w = world().await;
    let action = w
        .client
        .create_order(&w.order("W20261201000005", 500, PayMethod::H5))
        .await
        .unwrap();
    let PayerAction::Redirect { url } = action else {
        panic!("{action:?}")
    };
    assert!(
        url.starts_with(&format!(
            "{}/sandbox/wallet/wechatpay/{MCH}/W20261201000005?prepay_id=wx",
            w.sb.base_url()
        )),
        "{url}"
    );
    assert!(
        url.ends_with("&redirect_url=https%3A%2F%2Fmeterpay.example%2Fpaid%3Forder%3D1"),
        "{url}"
    );
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("5.00"));
    let mut no_ip = w.order("W20261201000006", 500, PayMethod::H5);
    no_ip.payer_ip = None;
    assert!(matches!(
        w.client.create_order(&no_ip).await,
        Err(GatewayError::Invalid(_))
    ));
}

#[tokio::test]
async fn closing_an_unpaid_order_stops_payment_and_a_paid_one_cannot_be_closed() {
    let w = world().await;
    w.client
        .create_order(&w.order("W20261201000007", 300, PayMethod::Qr))
        .await
        .unwrap();
    assert_eq!(
        w.client.close_order(&World::oref("W20261201000007")).await.unwrap(),
        CloseOutcome::Closed
    );
    assert_eq!(
        w.client
            .query_order(&World::oref("W20261201000007"))
            .await
            .unwrap()
            .state,
        PaymentState::Closed
    );
    assert!(w
        .sb
        .pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000007")
        .is_err());
    assert_eq!(
        w.client.close_order(&World::oref("W20261201000007")).await.unwrap(),
        CloseOutcome::Closed,
        "closing twice is fine"
    );
    assert_eq!(
        w.client.close_order(&World::oref("W20261201008888")).await.unwrap(),
        CloseOutcome::NothingToClose
    );

    w.client
        .create_order(&w.order("W20261201000008", 300, PayMethod::Qr))
        .await
        .unwrap();
    w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000008")
        .unwrap();
    assert_eq!(
        w.client.close_order(&World::oref("W20261201000008")).await.unwrap(),
        CloseOutcome::AlreadyPaid
    );
}

#[tokio::test]
async fn a_refund_is_processing_then_succeeds_with_a_verified_notification() {
    let w = world().await;
    w.client
        .create_order(&w.order("W20261201000009", 1000, PayMethod::Qr))
        .await
        .unwrap();
    w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000009")
        .unwrap();
    wait_for("payment notification", || w.events().len() == 1).await;

    let r = w
        .client
        .refund(&w.refund("W20261201000009", "R20261201000001", 400, 1000))
        .await
        .unwrap();
    assert_eq!((r.state, r.amount_fen), (RefundState::Processing, Some(400)));
    let again = w
        .client
        .refund(&w.refund("W20261201000009", "R20261201000001", 400, 1000))
        .await
        .unwrap();
    assert_eq!(
        again.gateway_refund_id, r.gateway_refund_id,
        "a retried refund is the same refund"
    );

    wait_for("refund notification", || w.events().len() == 2).await;
    let NotificationEvent::Refund {
        order_no,
        refund_no,
        state,
        amount_fen,
        gateway_refund_id,
        refunded_at,
    } = w.events()[1].clone().unwrap()
    else {
        panic!("{:?}", w.events())
    };
    assert_eq!(
        (order_no.as_str(), refund_no.as_str()),
        ("W20261201000009", "R20261201000001")
    );
    assert_eq!((state, amount_fen), (RefundState::Succeeded, 400));
    assert_eq!(gateway_refund_id, r.gateway_refund_id);
    assert!(refunded_at.is_some());

    let q = w
        .client
        .query_refund(&RefundRef {
            order_no: "W20261201000009".into(),
            refund_no: "R20261201000001".into(),
            requested_at: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(q.state, RefundState::Succeeded);
    assert!(q.refunded_at.is_some());
    assert_eq!(
        w.client
            .query_order(&World::oref("W20261201000009"))
            .await
            .unwrap()
            .state,
        PaymentState::Refunded
    );

    let e = w
        .client
        .refund(&w.refund("W20261201000009", "R20261201000002", 601, 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, class: ErrorClass::Retry, .. } if code == "NOT_ENOUGH"),
        "{e}"
    );
    let e = w
        .client
        .refund(&w.refund("W20261201000009", "R20261201000003", 100, 999))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, .. } if code == "INVALID_REQUEST"),
        "{e}"
    );
    let e = w
        .client
        .refund(&w.refund("W20261201007777", "R20261201000004", 100, 1000))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "RESOURCE_NOT_EXISTS"),
        "{e}"
    );
    let e = w
        .client
        .query_refund(&RefundRef {
            order_no: "W20261201000009".into(),
            refund_no: "R20261201000099".into(),
            requested_at: Utc::now(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, .. } if code == "RESOURCE_NOT_EXISTS"),
        "{e}"
    );
}

#[tokio::test]
async fn abnormal_and_closed_refund_notifications_verify_and_map_to_failed_and_closed() {
    let w = world().await;
    let merchant =
        w.sb.merchant(meterpay_gateways::gateway::Channel::Wechatpay, MCH)
            .unwrap();
    for (event, status, expected) in [
        ("REFUND.ABNORMAL", "ABNORMAL", RefundState::Failed),
        ("REFUND.CLOSED", "CLOSED", RefundState::Closed),
    ] {
        let plain = format!(
            r#"{{"mchid":"{MCH}","out_trade_no":"W20261201000010","transaction_id":"4200000000202612010000000010","out_refund_no":"R20261201000010","refund_id":"50300000000000000000000010","refund_status":"{status}","user_received_account":"招商银行信用卡0403","amount":{{"total":1000,"refund":1000,"payer_total":1000,"payer_refund":1000}}}}"#
        );
        let n = w
            .sim
            .notification(
                &w.sb,
                &merchant,
                "http://unused",
                "W20261201000010",
                None,
                event,
                "退款异常",
                "refund",
                plain.as_bytes(),
            )
            .unwrap();
        let v = w
            .client
            .verify_notification(
                IncomingNotification {
                    headers: &n.headers,
                    body: &n.body,
                },
                Utc::now(),
            )
            .unwrap();
        assert!(
            matches!(v.event, NotificationEvent::Refund { state, amount_fen: 1000, .. } if state == expected),
            "{event}"
        );
        // An event whose status contradicts its type is refused.
        let wrong = plain.replace(status, "SUCCESS");
        let n = w
            .sim
            .notification(
                &w.sb,
                &merchant,
                "http://unused",
                "W20261201000010",
                None,
                event,
                "退款异常",
                "refund",
                wrong.as_bytes(),
            )
            .unwrap();
        assert!(matches!(
            w.client.verify_notification(
                IncomingNotification {
                    headers: &n.headers,
                    body: &n.body
                },
                Utc::now()
            ),
            Err(NotifyError::Malformed(_))
        ));
    }
}

#[tokio::test]
async fn the_days_trade_bill_downloads_with_its_hash_checked_and_parses_back_with_exact_fees() {
    let w = world().await;
    w.sb.set_faults(Faults {
        drop_notifications: true,
        ..Faults::default()
    });
    for (no, fen) in [("W20261201000011", 8880), ("W20261201000012", 10_000)] {
        w.client.create_order(&w.order(no, fen, PayMethod::Qr)).await.unwrap();
        w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, no)
            .unwrap();
    }
    w.client
        .refund(&w.refund("W20261201000012", "R20261201000012", 2500, 10_000))
        .await
        .unwrap();
    wait_for("the refund settles", || {
        w.sb.order(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000012")
            .unwrap()
            .refunds[0]
            .state
            == meterpay_gateways::sandbox::SimRefundState::Succeeded
    })
    .await;
    let today = w.sb.now().with_timezone(&cst()).date_naive();
    let csv = w.client.download_settlement(today).await.unwrap();
    assert!(
        csv.starts_with(b"\xEF\xBB\xBF"),
        "UTF-8 with a BOM, as WeChat Pay writes it"
    );
    assert_eq!(
        csv,
        w.sb.settlement_file(meterpay_gateways::gateway::Channel::Wechatpay, MCH, today)
            .unwrap()
    );
    let f = w.client.parse_settlement(&csv).unwrap();
    assert_eq!(f.rows.len(), 3);
    let fees: Vec<(RowKind, i64, &str, Option<i64>)> = f
        .rows
        .iter()
        .map(|r| (r.kind, r.amount_fen, r.fee.as_str(), r.fee_fen))
        .collect();
    assert_eq!(
        fees,
        [
            (RowKind::Payment, 8880, "0.53280", None),
            (RowKind::Payment, 10_000, "0.60000", Some(60)),
            (RowKind::Refund, 2500, "-0.15000", Some(-15)),
        ]
    );
    assert_eq!(f.rows[2].refund_no.as_deref(), Some("R20261201000012"));
    assert_eq!((f.totals.payment_fen, f.totals.refund_fen), (18_880, 2500));

    // The SUCCESS and REFUND layouts the sim writes parse back as such.
    let merchant =
        w.sb.merchant(meterpay_gateways::gateway::Channel::Wechatpay, MCH)
            .unwrap();
    let txns =
        w.sb.day_transactions(meterpay_gateways::gateway::Channel::Wechatpay, MCH, today);
    let (s, t) = parse_with_type(&w.sim.bill(&w.sb, &merchant, &txns, BillType::Success)).unwrap();
    assert_eq!((t, s.rows.len()), (BillType::Success, 2));
    let (r, t) = parse_with_type(&w.sim.bill(&w.sb, &merchant, &txns, BillType::Refund)).unwrap();
    assert_eq!((t, r.rows.len(), r.rows[0].amount_fen), (BillType::Refund, 1, 2500));

    // A planted fee and a dropped order show in the file, which still parses.
    w.sb.update_faults(|f| {
        f.file_plants = vec![
            FilePlant::ChangeFee {
                order_no: "W20261201000011".into(),
                fee_fen: 7,
            },
            FilePlant::DropOrder {
                order_no: "W20261201000012".into(),
            },
        ]
    });
    let planted = w
        .client
        .parse_settlement(&w.client.download_settlement(today).await.unwrap())
        .unwrap();
    assert_eq!(planted.rows.iter().filter(|r| r.kind == RowKind::Payment).count(), 1);
    assert_eq!(planted.rows[0].fee, "0.07000");

    let e = w
        .client
        .download_settlement(today.succ_opt().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, class: ErrorClass::Retry, .. } if code == "NO_STATEMENT_EXIST"),
        "{e}"
    );
}

#[tokio::test]
async fn a_certificate_rotation_is_followed_with_one_download_and_both_certificates_trusted() {
    let w = world().await;
    let [old, new]: [String; 2] = w.sim.certificate_serials().try_into().unwrap();
    assert_eq!(w.client.trusted_certificate_serials(), vec![old.clone()]);
    w.sim.sign_with_new_certificate();
    // The answer is signed with a serial the client has never seen: it downloads once.
    // (Error answers are not verified, so a successful call is what exercises it.)
    w.client
        .create_order(&w.order("W20261201000013", 100, PayMethod::Qr))
        .await
        .unwrap();
    let mut trusted = w.client.trusted_certificate_serials();
    trusted.sort();
    let mut both = vec![old.clone(), new.clone()];
    both.sort();
    assert_eq!(trusted, both);
    // During the overlap either certificate verifies.
    w.sim.sign_with_old_certificate();
    w.client.query_order(&World::oref("W20261201000013")).await.unwrap();

    // A client that only knows the old certificate receives a notification signed by the new
    // one: UnknownKey, then one download and it verifies.
    w.sim.sign_with_new_certificate();
    let fresh = connect(&w.sb, "1900000110", 6000);
    w.client
        .create_order(&w.order("W20261201000014", 100, PayMethod::Qr))
        .await
        .unwrap();
    let merchant =
        w.sb.merchant(meterpay_gateways::gateway::Channel::Wechatpay, "1900000110")
            .unwrap();
    let mut order =
        w.sb.order(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000014")
            .unwrap();
    order.gateway_txn_id = Some("4200000000202612010000000014".into());
    order.paid_at = Some(Utc::now());
    let n = meterpay_gateways::sandbox::GatewaySim::payment_notification(&w.sim, &w.sb, &merchant, &order).unwrap();
    let inc = IncomingNotification {
        headers: &n.headers,
        body: &n.body,
    };
    assert!(matches!(fresh.verify_notification(inc, Utc::now()), Err(NotifyError::UnknownKey(m)) if m.contains(&new)));
    let v = fresh.verify_notification_refreshing(inc, Utc::now()).await;
    assert!(v.is_ok(), "{v:?}");
}

#[tokio::test]
async fn public_key_mode_signs_answers_and_notifications_with_the_pub_key_id() {
    let w = world_with(KeyMode::PublicKey).await;
    w.client
        .create_order(&w.order("W20261201000015", 700, PayMethod::Qr))
        .await
        .unwrap();
    w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000015")
        .unwrap();
    wait_for("payment notification", || !w.events().is_empty()).await;
    assert!(
        matches!(w.events()[0], Ok(NotificationEvent::Payment { amount_fen: 700, .. })),
        "{:?}",
        w.events()
    );
    assert_eq!(
        w.client
            .query_order(&World::oref("W20261201000015"))
            .await
            .unwrap()
            .state,
        PaymentState::Paid
    );
    assert!(
        w.client.trusted_certificate_serials().is_empty(),
        "no certificate needed"
    );
}

#[tokio::test]
async fn a_refused_notification_is_retried_on_the_schedule_and_signed_afresh_each_time() {
    let w = world().await;
    *w.refuse.lock().unwrap() = 3;
    w.client
        .create_order(&w.order("W20261201000016", 100, PayMethod::Qr))
        .await
        .unwrap();
    w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000016")
        .unwrap();
    wait_for("acknowledged", || w.sb.deliveries().iter().any(|d| d.acknowledged)).await;
    let d = w.sb.deliveries();
    assert_eq!(
        d.iter()
            .map(|d| (d.attempt, d.status, d.acknowledged))
            .collect::<Vec<_>>(),
        [
            (1, Some(500), false),
            (2, Some(500), false),
            (3, Some(500), false),
            (4, Some(200), true)
        ]
    );
    let nonces = w.nonces.lock().unwrap().clone();
    assert_eq!(nonces.len(), 4);
    assert!(
        nonces.windows(2).all(|p| p[0] != p[1]),
        "each attempt carries a fresh nonce and signature"
    );
}

#[tokio::test]
async fn a_tampered_notification_is_refused_with_401_and_never_acknowledged() {
    let w = world().await;
    w.sb.set_faults(Faults {
        bad_signature: true,
        ..Faults::default()
    });
    w.client
        .create_order(&w.order("W20261201000017", 100, PayMethod::Qr))
        .await
        .unwrap();
    w.sb.pay(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000017")
        .unwrap();
    wait_for("the whole schedule", || w.sb.deliveries().len() == 16).await;
    assert!(w
        .sb
        .deliveries()
        .iter()
        .all(|d| d.status == Some(401) && !d.acknowledged && d.tampered));
    assert!(w
        .events()
        .iter()
        .all(|e| matches!(e, Err(NotifyError::BadSignature(_)))));
}

#[tokio::test]
async fn a_changed_byte_anywhere_in_a_signed_notification_fails_verification() {
    let w = world().await;
    w.client
        .create_order(&w.order("W20261201000018", 100, PayMethod::Qr))
        .await
        .unwrap();
    let merchant =
        w.sb.merchant(meterpay_gateways::gateway::Channel::Wechatpay, MCH)
            .unwrap();
    let mut order =
        w.sb.order(meterpay_gateways::gateway::Channel::Wechatpay, MCH, "W20261201000018")
            .unwrap();
    order.gateway_txn_id = Some("4200000000202612010000000018".into());
    order.paid_at = Some(Utc::now());
    let n = meterpay_gateways::sandbox::GatewaySim::payment_notification(&w.sim, &w.sb, &merchant, &order).unwrap();
    let now = Utc::now();
    assert!(w
        .client
        .verify_notification(
            IncomingNotification {
                headers: &n.headers,
                body: &n.body
            },
            now
        )
        .is_ok());
    for i in 0..n.body.len() {
        let mut body = n.body.clone();
        body[i] ^= 0x01;
        assert!(
            w.client
                .verify_notification(
                    IncomingNotification {
                        headers: &n.headers,
                        body: &body
                    },
                    now
                )
                .is_err(),
            "body byte {i} changed and still verified"
        );
    }
    for name in ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature"] {
        let (idx, value) = n
            .headers
            .iter()
            .enumerate()
            .find(|(_, (k, _))| k == name)
            .map(|(i, (_, v))| (i, v.clone()))
            .unwrap();
        for pos in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
            let mut headers = n.headers.clone();
            headers[idx].1 = String::from_utf8(bytes).unwrap();
            assert!(
                w.client
                    .verify_notification(
                        IncomingNotification {
                            headers: &headers,
                            body: &n.body
                        },
                        now
                    )
                    .is_err(),
                "{name} byte {pos} changed and still verified"
            );
        }
    }
    // A signed answer, likewise.
    let keys = w.client.keys();
    let body = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=abc"}"#.to_vec();
    let h = w.sim.signed_headers(Some(&merchant), &body);
    let lookup = |hs: &[(String, String)], b: &[u8]| {
        let sh = SignedHeaders::from_lookup(|k| {
            hs.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        })
        .unwrap();
        keys.verify(&sh, b, now)
    };
    assert!(lookup(&h, &body).is_ok());
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0x20;
        assert!(lookup(&h, &b).is_err(), "answer byte {i}");
    }
}

#[tokio::test]
async fn requests_the_gateway_cannot_verify_are_refused_with_sign_error() {
    let w = world().await;
    // Another merchant key under the registered serial: the sandbox refuses it as WeChat Pay does.
    let forged = meterpay_gateways::wechatpay::WechatPayConfig::new(
        MCH,
        meterpay_gateways::sandbox::wechatpay::SANDBOX_APPID,
        &w.client.config().merchant_serial_no,
        include_bytes!("../../fixtures/sandbox/wechatpay/pubkey_mode_key.pem"),
        meterpay_gateways::sandbox::wechatpay::MERCHANT_APIV3_KEY.as_bytes(),
    )
    .unwrap()
    .with_base_url(w.client.config().base_url.clone())
    .with_platform_certificates(WechatPaySim::old_certificate_pem().as_bytes())
    .unwrap();
    let forged = WechatPayClient::new(forged).unwrap();
    let e = forged.query_order(&World::oref("W20261201000019")).await.unwrap_err();
    assert!(
        matches!(&e, GatewayError::Refused { code, class: ErrorClass::Failure, .. } if code == "SIGN_ERROR"),
        "{e}"
    );

    // No Authorization at all.
    let r = reqwest::get(format!(
        "{}/v3/pay/transactions/out-trade-no/W20261201000019?mchid={MCH}",
        w.client.config().base_url
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("SIGN_ERROR"));
}

#[tokio::test]
async fn injected_5xx_and_timeouts_are_transport_errors() {
    let w = world().await;
    w.sb.set_faults(Faults {
        api_5xx: true,
        ..Faults::default()
    });
    let e = w.client.query_order(&World::oref("W20261201000020")).await.unwrap_err();
    assert!(
        matches!(e, GatewayError::Transport(TransportError::Status { status: 503, .. })),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Retry);
    w.sb.set_faults(Faults {
        api_timeout: true,
        ..Faults::default()
    });
    let e = w.client.close_order(&World::oref("W20261201000020")).await.unwrap_err();
    assert!(
        matches!(e, GatewayError::Transport(TransportError::Timeout { .. })),
        "{e}"
    );
}
