//! The HTTP surface of the foundation: health, readiness, metrics, request ids, errors, and
//! graceful shutdown.

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_200_with_the_backend() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], app.db.kind().as_str());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_answers_503_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.db.store.close().await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    let id = r
        .headers()
        .get("x-request-id")
        .expect("generated")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let r = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "caller-chose-this")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "caller-chose-this");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_route_in_prometheus_text() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    app.get("/healthz").await;
    app.get("/no/such/thing/123").await;
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"meterpay_http_requests_total{method="GET",route="/healthz",status="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="unmatched",status="404""#),
        "raw paths never become labels: {text}"
    );
    assert!(!text.contains("/no/such/thing/123"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_route_gets_a_json_error() {
    let app = spawn_app().await;
    let r = app.get("/api/v1/nothing-here").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let app = spawn_app().await;
    let address = app.address.clone();
    let client = app.client.clone();
    app.stop().await.expect("clean shutdown");
    assert!(
        client.get(format!("{address}/healthz")).send().await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn the_demo_pushes_signed_readings_bills_them_and_a_second_run_changes_nothing() {
    let app = crate::helpers::spawn_app().await;
    let first = meterpay::demo::run(&app.db.store, &app.address).await.unwrap();
    assert!(first.created);
    assert_eq!(
        (first.readings_pushed, first.readings_accepted, first.readings_held),
        (65, 65, 0)
    );
    assert_eq!((first.bills_issued, first.adjustment_bills), (30, 1), "{first:?}");
    assert_ne!(
        first.settled_from_credit, "0.00",
        "the prepaid account's bills are settled from its top-up"
    );
    let community = app.db.store.community_by_code("DEMO").await.unwrap().unwrap();
    // The 4-digit register rolled over, and the replaced meter's period bills both meters.
    let e1002 = app
        .db
        .store
        .meter_by_number("electricity", "E1002")
        .await
        .unwrap()
        .unwrap();
    let wrapped = app.db.store.readings_of_meter(e1002.id).await.unwrap();
    assert_eq!(wrapped.iter().filter(|r| r.rollover).count(), 1);
    let a = app
        .db
        .store
        .account_by_code(community.id, "D-1-2-201")
        .await
        .unwrap()
        .unwrap();
    let sep = app
        .db
        .store
        .bill_id_for(a.id, meterpay::domain::Period::parse("2026-09").unwrap())
        .await
        .unwrap()
        .unwrap();
    let sep = app.db.store.bill_detail(sep).await.unwrap();
    let water: Vec<&str> = sep
        .readings
        .iter()
        .filter(|r| r.utility == "water")
        .map(|r| r.meter_no.as_str())
        .collect();
    assert_eq!(water, vec!["W1003", "W1003B"]);
    let second = meterpay::demo::run(&app.db.store, &app.address).await.unwrap();
    assert!(!second.created, "the second run reuses the community");
    assert_eq!((second.readings_duplicates, second.readings_accepted), (65, 0));
    assert_eq!((second.bills_issued, second.adjustment_bills), (0, 0));
    assert_eq!(second.receivables, first.receivables);
    let accounts = app.db.store.list_accounts(community.id).await.unwrap();
    assert_eq!(accounts.len(), first.accounts);
    app.stop().await.unwrap();
}
