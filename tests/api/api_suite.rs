//! The HTTP surface of the foundation: health, readiness, metrics, request ids, errors, and
//! graceful shutdown.

use crate::helpers::{spawn_app, TestDb};

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
async fn the_demo_seed_is_idempotent() {
    let db = TestDb::new().await;
    let first = meterpay::demo::seed(&db.store).await.unwrap();
    let second = meterpay::demo::seed(&db.store).await.unwrap();
    assert!(first.created);
    assert!(!second.created, "the second run reuses the community");
    assert_eq!(first.accounts, second.accounts);
    let community = db.store.community_by_code("DEMO").await.unwrap().unwrap();
    let accounts = db.store.list_accounts(community.id).await.unwrap();
    assert_eq!(accounts.len(), first.accounts);
    let mut meters = 0;
    for a in &accounts {
        meters += db.store.meters_of_account(a.id).await.unwrap().len();
    }
    assert_eq!(meters, first.meters, "no meter was created twice");
}
