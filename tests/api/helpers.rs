//! The test harness: a fresh database per test and a spawned application on port 0.
//!
//! Backend choice: SQLite (a file in a temporary directory) unless `TEST_DATABASE_URL` names a
//! PostgreSQL database, in which case each test gets its own schema in it. `.ci/run` runs the
//! whole suite once each way. Tests that only make sense on PostgreSQL call
//! [`postgres_url_or_skip`], which says so loudly when skipping — and fails instead when
//! `METERPAY_REQUIRE_POSTGRES=1` (as in CI), so CI can never pass with them silently skipped.

use std::sync::Arc;

use meterpay::config::Config;
use meterpay::startup::Application;
use meterpay::store::{BackendKind, Store, StoreOptions};

/// A fresh, migrated database for one test. Keep it alive for the test's duration.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub schema: Option<String>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            Some(base) => {
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let admin = Store::connect(
                    &base,
                    &StoreOptions {
                        max_connections: 1,
                        ..Default::default()
                    },
                )
                .await
                .expect("TEST_DATABASE_URL must reach PostgreSQL");
                admin
                    .execute_raw_sql_for_tests(&format!("CREATE SCHEMA \"{schema}\""))
                    .await
                    .expect("create a schema for the test");
                admin.close().await;
                let store = open(&base, Some(&schema)).await;
                store.migrate().await.expect("migrations apply on PostgreSQL");
                TestDb {
                    store,
                    url: base,
                    schema: Some(schema),
                    _dir: None,
                }
            }
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.db", dir.path().display());
                let store = open(&url, None).await;
                store.migrate().await.expect("migrations apply on SQLite");
                TestDb {
                    store,
                    url,
                    schema: None,
                    _dir: Some(Arc::new(dir)),
                }
            }
        }
    }

    /// A second, independent connection pool to the same database: another "instance".
    pub async fn another_instance(&self) -> Store {
        open(&self.url, self.schema.as_deref()).await
    }

    pub fn kind(&self) -> BackendKind {
        self.store.kind()
    }
}

async fn open(url: &str, schema: Option<&str>) -> Store {
    let opts = StoreOptions {
        max_connections: 5,
        pg_schema: schema.map(str::to_string),
        ..Default::default()
    };
    Store::connect(url, &opts).await.expect("connect to the test database")
}

/// The PostgreSQL URL for a PostgreSQL-only test, or `None` after a loud skip message.
pub fn postgres_url_or_skip(test: &str) -> Option<String> {
    match std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
        Some(u) => Some(u),
        None => {
            if std::env::var("METERPAY_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{test} needs PostgreSQL: METERPAY_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set");
            }
            // Written straight to stderr (not eprintln!, which the test harness captures) so the
            // skip shows in the test output.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED {test}: it needs PostgreSQL. Set TEST_DATABASE_URL=postgres://… to run it (CI does).\n"
            );
            None
        }
    }
}

/// A running application for black-box tests.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .expect("request sent")
    }

    /// Ask the application to shut down and wait for it to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("running").await.expect("app task joined")
    }
}

/// Spawn the application on port 0 over a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::new().await;
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".into();
    config.jobs.poll_interval_ms = 50;
    configure(&mut config);
    let app = Application::build_with_store(config, db.store.clone())
        .await
        .expect("application builds");
    let address = format!("http://{}", app.addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        db,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}
