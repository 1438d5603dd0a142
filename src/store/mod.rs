//! Persistence: one [`Store`] in domain terms, on SQLite (the embedded default) or PostgreSQL.
//!
//! The same SQL text serves both backends wherever it is identical (both take `$1` placeholders);
//! the [`on_write!`], [`on_read!`] and [`in_tx!`] macros expand one body once per backend so each
//! arm type-checks against its own driver. Backend-specific concurrency stays where it belongs:
//! PostgreSQL row locks and `FOR UPDATE SKIP LOCKED`; on SQLite every write transaction starts
//! with `BEGIN IMMEDIATE` on the single writer connection (competing writers made p99 latency
//! jump, design.md §3), while reads use a pool of read-only connections. sqlx's `Any` driver is
//! deliberately not used.
//!
//! Invariants the schema enforces on both backends (so code cannot break them by accident):
//! a journal entry's lines sum to zero; the journal and audit log are append-only.
//!
//! Time is always passed in (`now`) rather than read from the database clock, so the same SQL
//! runs on both backends and tests control time.

pub mod access;
pub mod accounts;
pub mod arrears;
pub mod audit;
pub mod billing_settings;
pub mod bills;
pub(crate) mod bulk;
pub mod directory;
pub mod error;
pub mod group_commit;
pub mod idempotency;
pub mod jobs;
pub mod ledger;
pub(crate) mod packed;
pub mod pages;
mod payment_batch;
pub mod payments;
pub mod prepaid;
pub mod readings;
pub mod reconcile;
pub mod reminders;
pub mod tariffs;
pub mod users;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use error::StoreError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite { writer: SqlitePool, reader: SqlitePool },
    Postgres(PgPool),
}

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL pool size, or the SQLite read pool size.
    pub max_connections: u32,
    /// How long to wait for a connection (and, on SQLite, for a lock) before giving up.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the schema to use (tests give each test its own).
    pub pg_schema: Option<String>,
    /// PostgreSQL only: how many group committers take the callback writes (see
    /// [`group_commit`]); `None` is [`group_commit::POSTGRES_LANES`]. SQLite always has one.
    pub group_commit_lanes: Option<usize>,
    /// SQLite only: how much of the database file the writer connection maps into memory, in
    /// MiB (0: none). Mapped pages are read without a system call and a copy each; SQLite's own
    /// page cache is 2 MiB, and a `perf` profile of a push showed a third of SQLite's thread in
    /// the kernel, mostly reading pages back.
    pub sqlite_mmap_mib: u64,
}

/// The default of [`StoreOptions::sqlite_mmap_mib`].
pub const DEFAULT_SQLITE_MMAP_MIB: u64 = 1024;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            pg_schema: None,
            group_commit_lanes: None,
            sqlite_mmap_mib: DEFAULT_SQLITE_MMAP_MIB,
        }
    }
}

/// The storage interface. Cheap to clone (pools and committers are reference-counted).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    /// The committers of the callback writes, shared by every clone.
    pub(crate) group: Arc<group_commit::GroupCommit>,
}

/// Run `$body` with `$pool` bound to the pool that takes writes on this backend.
macro_rules! on_write {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { writer, .. } => {
                let $pool = writer;
                $body
            }
            $crate::store::Backend::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

/// Run `$body` with `$pool` bound to a pool for reads on this backend.
macro_rules! on_read {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { reader, .. } => {
                let $pool = reader;
                $body
            }
            $crate::store::Backend::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

/// Run `$body` inside a write transaction (`BEGIN IMMEDIATE` on SQLite) bound to `$tx`, and
/// commit if it returns `Ok`. The transaction is an sqlx `Transaction`, so a dropped future rolls
/// it back instead of leaving a hand-written `BEGIN` open on the connection.
macro_rules! in_tx {
    ($store:expr, $what:expr, |$tx:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite { writer, .. } => {
                let mut $tx = writer
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| $crate::store::StoreError::db($what, e))?;
                let out = $body;
                match out {
                    Ok(v) => {
                        $tx.commit()
                            .await
                            .map_err(|e| $crate::store::StoreError::db($what, e))?;
                        Ok(v)
                    }
                    Err(e) => Err(e),
                }
            }
            $crate::store::Backend::Postgres(pg) => {
                let mut $tx = pg.begin().await.map_err(|e| $crate::store::StoreError::db($what, e))?;
                let out = $body;
                match out {
                    Ok(v) => {
                        $tx.commit()
                            .await
                            .map_err(|e| $crate::store::StoreError::db($what, e))?;
                        Ok(v)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    };
}

pub(crate) use {in_tx, on_read, on_write};

impl Store {
    /// Connect to `url` (`sqlite://PATH` or `postgres://…`). A SQLite file and its directory are
    /// created if missing. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, opts).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Self::connect_postgres(url, opts).await
        } else {
            Err(StoreError::Config(format!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got {:?})",
                url.split(':').next().unwrap_or("")
            )))
        }
    }

    async fn connect_sqlite(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("reading the SQLite URL: {e}")))?;
        if let Some(parent) = Path::new(base.get_filename()).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Config(format!("creating the database directory {}: {e}", parent.display()))
                })?;
            }
        }
        let base = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: once we answer a gateway "success" it stops retrying, so an acknowledged
            // callback must survive a power cut.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(opts.acquire_timeout);
        // The writer maps the file (reads of pages it does not cache cost no system call); the
        // read pool keeps SQLite's default, so a large report's pages are not charged to this
        // process's resident memory.
        let writer_opts = base
            .clone()
            .pragma("mmap_size", (opts.sqlite_mmap_mib * 1024 * 1024).to_string());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(writer_opts)
            .await
            .map_err(|e| StoreError::db("opening the SQLite writer connection", e))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| StoreError::db("opening the SQLite read pool", e))?;
        Ok(Store {
            backend: Backend::Sqlite { writer, reader },
            group: Arc::new(group_commit::GroupCommit::new(BackendKind::Sqlite, None)),
        })
    }

    async fn connect_postgres(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let mut conn = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("reading the PostgreSQL URL: {e}")))?;
        if let Some(schema) = &opts.pg_schema {
            conn = conn.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(conn)
            .await
            .map_err(|e| StoreError::db("connecting to PostgreSQL", e))?;
        Ok(Store {
            backend: Backend::Postgres(pool),
            group: Arc::new(group_commit::GroupCommit::new(
                BackendKind::Postgres,
                opts.group_commit_lanes,
            )),
        })
    }

    /// What the group committers of the callback writes have done so far.
    pub fn group_commit_stats(&self) -> group_commit::GroupCommitStats {
        self.group.stats()
    }

    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Apply pending migrations (PostgreSQL: under sqlx's advisory lock, so several instances
    /// starting at once migrate once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => SQLITE_MIGRATIONS
                .run(writer)
                .await
                .map_err(|e| StoreError::Migration(e.to_string())),
            Backend::Postgres(pg) => POSTGRES_MIGRATIONS
                .run(pg)
                .await
                .map_err(|e| StoreError::Migration(e.to_string())),
        }
    }

    /// Number of migrations applied, for `migrate` to report.
    pub async fn applied_migrations(&self) -> Result<i64, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
                .map_err(|e| StoreError::db("counting applied migrations", e))
        })
    }

    /// Readiness: the database answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_write!(self, |pool| {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::db("pinging the database", e))
        })
    }

    /// Refresh the planner's statistics for the tables bulk work touches. PostgreSQL plans (and
    /// caches, per session, the plans of its foreign-key checks) from these; on a freshly loaded
    /// table without them it picks sequential scans and a large import slows by an order of
    /// magnitude. Cheap: ANALYZE samples.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        let sql = match self.backend {
            Backend::Sqlite { .. } => "PRAGMA optimize",
            Backend::Postgres(_) => {
                "ANALYZE meters; ANALYZE readings; ANALYZE accounts; ANALYZE bills; ANALYZE bill_usage; ANALYZE meter_bill_state"
            }
        };
        on_write!(self, |pool| {
            sqlx::raw_sql(sql)
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(|e| StoreError::db("refreshing statistics", e))
        })
    }

    /// Close every connection (graceful shutdown).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(pg) => pg.close().await,
        }
    }

    /// Raw access for tests that must prove the database itself refuses something (for example
    /// an UPDATE of a posted journal line issued directly in SQL). Not for application code.
    #[doc(hidden)]
    pub async fn execute_raw_sql_for_tests(&self, sql: &str) -> Result<u64, StoreError> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        on_write!(self, |pool| {
            sqlx::raw_sql(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| StoreError::db("running raw SQL", e))
        })
    }

    /// Like [`Store::execute_raw_sql_for_tests`], inside one write transaction that commits on
    /// success and rolls back on failure (deferred constraints are checked at the commit).
    #[doc(hidden)]
    pub async fn execute_raw_sql_in_tx_for_tests(&self, sql: &str) -> Result<u64, StoreError> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        in_tx!(self, "running raw SQL in a transaction", |tx| {
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| StoreError::db("running raw SQL", e))
        })
    }
}
