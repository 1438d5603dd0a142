//! What the benchmarks share: a fresh store per backend, CPU-time probes (this process, and the
//! PostgreSQL backends serving the benchmark's database), the machine's load, and the closing
//! table of figures against the targets.
//!
//! CPU time is read from `/proc` (Linux): `utime + stime` of this process (every thread), and of
//! each PostgreSQL backend process connected to the benchmark's database (found through
//! `pg_stat_activity`; the server runs on this machine in the benchmarks). Ticks are taken as
//! 1/100 s (`CLK_TCK` on Linux), so the figures are good to about 10 ms.

#![allow(dead_code)]

use std::time::Instant;

use meterpay::store::{Store, StoreOptions};

/// A fresh store: a SQLite file in a temporary directory, or a new schema in the PostgreSQL
/// database of `BENCH_DATABASE_URL`.
pub async fn fresh_store(kind: &str) -> (Store, Option<tempfile::TempDir>) {
    match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::connect(
                &format!("sqlite://{}/bench.db", dir.path().display()),
                &StoreOptions::default(),
            )
            .await
            .unwrap();
            store.migrate().await.unwrap();
            (store, Some(dir))
        }
        _ => {
            let url = std::env::var("BENCH_DATABASE_URL").unwrap();
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Store::connect(&url, &StoreOptions::default()).await.unwrap();
            admin
                .execute_raw_sql_for_tests(&format!("CREATE SCHEMA {schema}"))
                .await
                .unwrap();
            admin.close().await;
            let store = Store::connect(
                &url,
                &StoreOptions {
                    pg_schema: Some(schema),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            store.migrate().await.unwrap();
            (store, None)
        }
    }
}

/// Which backends to run: SQLite always (unless `BENCH_ONLY=postgres`), PostgreSQL when
/// `BENCH_DATABASE_URL` is set (unless `BENCH_ONLY=sqlite`).
pub fn backends() -> Vec<&'static str> {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut out = Vec::new();
    if only != "postgres" {
        out.push("sqlite");
    }
    if std::env::var("BENCH_DATABASE_URL").is_ok() && only != "sqlite" {
        out.push("postgres");
    } else if only != "sqlite" {
        println!("(set BENCH_DATABASE_URL=postgres://… to run the PostgreSQL figures too)");
    }
    out
}

fn ticks_of(stat: &str) -> Option<u64> {
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ticks_of(&stat)? as f64 / 100.0)
}

/// CPU seconds this process has used so far (all threads).
pub fn own_cpu() -> f64 {
    cpu_of("self").unwrap_or(0.0)
}

/// The 1-minute load average, as `uptime` shows it.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// CPU-time probe of the PostgreSQL backends serving the benchmark's database.
pub struct PgCpu {
    pool: sqlx::PgPool,
}

impl PgCpu {
    pub async fn new() -> Option<PgCpu> {
        let url = std::env::var("BENCH_DATABASE_URL").ok()?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .ok()?;
        Some(PgCpu { pool })
    }

    /// Per backend pid, CPU seconds used so far.
    pub async fn sample(&self) -> std::collections::HashMap<String, f64> {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        pids.into_iter()
            .filter_map(|p| cpu_of(&p.to_string()).map(|c| (p.to_string(), c)))
            .collect()
    }

    /// CPU seconds the backends used between two samples (a backend that appeared in between
    /// counts from zero).
    pub fn used(
        before: &std::collections::HashMap<String, f64>,
        after: &std::collections::HashMap<String, f64>,
    ) -> f64 {
        after
            .iter()
            .map(|(pid, c)| c - before.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// Times one measured step: wall clock, this process's CPU, the database backends' CPU.
pub struct Probe {
    start: Instant,
    cpu: f64,
    pg: Option<(PgCpu, std::collections::HashMap<String, f64>)>,
    load: String,
}

/// What a probe measured.
pub struct Measured {
    pub secs: f64,
    pub cpu: f64,
    pub db_cpu: Option<f64>,
    pub load_before: String,
    pub load_after: String,
}

impl Probe {
    pub async fn start(kind: &str) -> Probe {
        let pg = if kind == "postgres" {
            match PgCpu::new().await {
                Some(p) => {
                    let s = p.sample().await;
                    Some((p, s))
                }
                None => None,
            }
        } else {
            None
        };
        Probe {
            start: Instant::now(),
            cpu: own_cpu(),
            pg,
            load: load(),
        }
    }

    pub async fn stop(self) -> Measured {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = own_cpu() - self.cpu;
        let db_cpu = match &self.pg {
            Some((p, before)) => Some(PgCpu::used(before, &p.sample().await)),
            None => None,
        };
        Measured {
            secs,
            cpu,
            db_cpu,
            load_before: self.load,
            load_after: load(),
        }
    }
}

/// A row of the closing table.
pub struct Row {
    pub backend: &'static str,
    pub what: String,
    pub items: usize,
    pub unit: &'static str,
    pub m: Measured,
    pub target: Target,
}

/// An issue target.
#[derive(Clone, Copy)]
pub enum Target {
    /// At least this many items per second.
    Rate(f64),
    /// At most this many seconds (for the benchmark's full size).
    Seconds(f64),
    /// A reference figure, no target.
    None,
}

impl Row {
    fn met(&self) -> &'static str {
        match self.target {
            Target::Rate(r) if self.m.secs > 0.0 => {
                if self.items as f64 / self.m.secs >= r {
                    "yes"
                } else {
                    "no"
                }
            }
            Target::Seconds(s) => {
                if self.m.secs <= s {
                    "yes"
                } else {
                    "no"
                }
            }
            _ => "—",
        }
    }
}

fn group(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Print the closing table (Markdown, so it can go into the README as it is).
pub fn print_table(title: &str, rows: &[Row]) {
    println!();
    println!("{title} (release build; load = 1-minute load average before → after on this 2-core machine)");
    println!();
    println!("| backend | what | items | seconds | items/s | target | met | bench CPU s | DB CPU s | load |");
    println!("|---|---|---:|---:|---:|---|---|---:|---:|---|");
    for r in rows {
        let rate = if r.m.secs > 0.0 { r.items as f64 / r.m.secs } else { 0.0 };
        let target = match r.target {
            Target::Rate(v) => format!("≥ {} {}/s", group(v), r.unit),
            Target::Seconds(v) => format!("≤ {v:.0} s"),
            Target::None => "—".into(),
        };
        println!(
            "| {} | {} | {} {} | {:.2} | {} | {} | {} | {:.2} | {} | {} → {} |",
            r.backend,
            r.what,
            group(r.items as f64),
            r.unit,
            r.m.secs,
            group(rate),
            target,
            r.met(),
            r.m.cpu,
            r.m.db_cpu
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "(in-process)".into()),
            r.m.load_before,
            r.m.load_after
        );
    }
}

/// The floor under a readings import: `n` rows of the readings' shape (id, meter, time, value,
/// kind, source, status, …; unique on meter and time) inserted in one transaction the way the
/// store inserts them (SQLite: 400-row `VALUES` statements into a file in WAL mode with
/// `synchronous=FULL`; PostgreSQL: 20,000-row `UNNEST` statements), with no checks, no foreign
/// key and no history lookup. Returns the seconds taken.
pub async fn raw_insert_floor(kind: &str, n: usize) -> Measured {
    use chrono::{Duration, TimeZone, Utc};
    let t0 = Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap();
    let meters = 2_000usize;
    let meter_id: Vec<i64> = (0..n).map(|i| (i % meters) as i64 + 1).collect();
    let read_at: Vec<chrono::DateTime<Utc>> = (0..n).map(|i| t0 + Duration::hours(6 * (i / meters) as i64)).collect();
    let value: Vec<i64> = (0..n).map(|i| 10_000_000 + i as i64).collect();
    const DDL: &str =
        "(id INTEGER PRIMARY KEY, meter_id BIGINT NOT NULL, read_at TIMESTAMPTZ NOT NULL, value_e4 BIGINT NOT NULL, \
        kind TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL, hold_reason TEXT, rollover BOOLEAN NOT NULL, \
        steady_since TIMESTAMPTZ, created_at TIMESTAMPTZ NOT NULL, UNIQUE (meter_id, read_at))";
    if kind == "sqlite" {
        use std::str::FromStr;
        let dir = tempfile::tempdir().unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}/floor.db", dir.path().display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        // SQLite: the readings table's own column types (timestamps are RFC 3339 text).
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE floor {}",
            DDL.replace("BIGINT", "INTEGER")
                .replace("TIMESTAMPTZ", "TEXT")
                .replace("BOOLEAN", "INTEGER")
        )))
        .execute(&pool)
        .await
        .unwrap();
        let p = Probe::start(kind).await;
        let mut tx = pool.begin().await.unwrap();
        let now = Utc::now();
        for start in (0..n).step_by(400) {
            let end = (start + 400).min(n);
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO floor (meter_id, read_at, value_e4, kind, source, status, hold_reason, rollover, steady_since, created_at) ",
            );
            qb.push_values(start..end, |mut b, i| {
                b.push_bind(meter_id[i])
                    .push_bind(read_at[i])
                    .push_bind(value[i])
                    .push_bind("actual")
                    .push_bind("import")
                    .push_bind("valid")
                    .push_bind(None::<String>)
                    .push_bind(false)
                    .push_bind(None::<chrono::DateTime<Utc>>)
                    .push_bind(now);
            });
            qb.push(" RETURNING id");
            let _: Vec<(i64,)> = qb.build_query_as().fetch_all(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        p.stop().await
    } else {
        let url = std::env::var("BENCH_DATABASE_URL").unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let table = format!("bench_floor_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} {}",
            DDL.replace(
                "id INTEGER PRIMARY KEY",
                "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
            )
        )))
        .execute(&pool)
        .await
        .unwrap();
        let p = Probe::start(kind).await;
        let mut tx = pool.begin().await.unwrap();
        let now = Utc::now();
        for start in (0..n).step_by(20_000) {
            let r = start..(start + 20_000).min(n);
            let _: Vec<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (meter_id, read_at, value_e4, kind, source, status, hold_reason, rollover, steady_since, created_at) \
                 SELECT u.m, u.t, u.v, 'actual', 'import', 'valid', NULL, FALSE, NULL, $4 \
                 FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[]) AS u(m, t, v) RETURNING id"
            )))
            .bind(&meter_id[r.clone()])
            .bind(&read_at[r.clone()])
            .bind(&value[r])
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let m = p.stop().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&pool)
            .await
            .unwrap();
        m
    }
}
