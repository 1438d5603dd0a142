//! Configuration: defaults, then a TOML file (`--config FILE` or `METERPAY_CONFIG`), then
//! environment variables `METERPAY_<SECTION>__<KEY>` (double underscore between section and
//! key, e.g. `METERPAY_HTTP__LISTEN`), then `DATABASE_URL`. Every setting is listed in the
//! README and in `deploy/meterpay.example.toml`.
//!
//! Secrets (database passwords inside URLs, keys) are held in [`secrecy::SecretString`] and never
//! printed; [`Config::redacted`] is what the service logs at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Everything meterpay reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `sqlite://PATH` (default `sqlite://data/meterpay.db`, created on first run) or `postgres://…`.
    #[serde(serialize_with = "ser_secret")]
    pub database_url: SecretString,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub jobs: JobsConfig,
    pub access: AccessConfig,
    pub reminders: RemindersConfig,
    pub sms: SmsConfig,
    pub smtp: SmtpConfig,
    pub paylink: PaylinkConfig,
    pub payments: crate::payments::config::PaymentsConfig,
    pub reconcile: ReconcileConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL pool size, or the SQLite read pool size.
    pub max_connections: u32,
    /// Seconds to wait for a connection or (SQLite) a write lock.
    pub acquire_timeout_secs: u64,
    /// SQLite: MiB of the database file the writer connection maps into memory (0: none).
    pub sqlite_mmap_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: String,
    /// The URL residents and gateways reach this service at (pay links, notify URLs).
    pub public_base_url: String,
    /// Seconds before a request is answered 408.
    pub request_timeout_secs: u64,
    /// Seconds to let in-flight requests (callbacks) finish on shutdown.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (structured, for production) or `pretty` (for a terminal).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `meterpay=debug,sqlx=warn`. `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run the clock and the task workers in this process (`serve` and `demo`).
    pub enabled: bool,
    /// Task workers in this process.
    pub workers: u32,
    /// Milliseconds between polls when the queue is empty.
    pub poll_interval_ms: u64,
    /// Seconds a claimed task is leased before another worker may take it over.
    pub lease_secs: i64,
    /// First retry delay in seconds; doubles per attempt.
    pub backoff_base_secs: i64,
    /// Longest retry delay in seconds.
    pub backoff_cap_secs: i64,
}

/// Staff sign-in: sessions, their cookie, and lock-out after repeated failures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Seconds a staff session lasts from sign-in (absolute, not sliding).
    pub session_lifetime_secs: i64,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Keep it on in production; the
    /// plain-http local `demo` turns it off unless configured.
    pub cookie_secure: bool,
    /// Failed sign-ins for one user name within the window that lock that name out.
    pub lockout_max_failures: u32,
    /// Failed sign-ins from one source address within the window that lock that address out.
    pub lockout_max_failures_per_source: u32,
    /// The lock-out window in seconds: failures older than this no longer count.
    pub lockout_window_secs: i64,
    /// Take the source address from the first `X-Forwarded-For` entry (only behind a proxy
    /// that sets it); otherwise the peer address is used.
    pub trust_forwarded_for: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            session_lifetime_secs: 8 * 3600,
            cookie_secure: true,
            lockout_max_failures: 5,
            lockout_max_failures_per_source: 20,
            lockout_window_secs: 900,
            trust_forwarded_for: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: SecretString::from("sqlite://data/meterpay.db"),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            jobs: JobsConfig::default(),
            access: AccessConfig::default(),
            reminders: RemindersConfig::default(),
            sms: SmsConfig::default(),
            smtp: SmtpConfig::default(),
            paylink: PaylinkConfig::default(),
            payments: crate::payments::config::PaymentsConfig::default(),
            reconcile: ReconcileConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            max_connections: 10,
            acquire_timeout_secs: 10,
            sqlite_mmap_mib: crate::store::DEFAULT_SQLITE_MMAP_MIB,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            public_base_url: "http://127.0.0.1:8080".into(),
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            enabled: true,
            workers: 2,
            poll_interval_ms: 500,
            lease_secs: 300,
            backoff_base_secs: 10,
            backoff_cap_secs: 3600,
        }
    }
}

/// `[reminders]`: arrears reminders (see the README section "Reminders").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemindersConfig {
    /// Run the reminder delivery tasks (outbox → SMS / e-mail) in this process's workers.
    pub enabled: bool,
    /// Days a pay link in a reminder stays valid.
    pub pay_link_ttl_days: i64,
    /// Unsubscribe links in e-mails stay valid this many days.
    pub unsubscribe_link_ttl_days: i64,
    /// Task attempts per message (each retry, and each status check of an unknown outcome).
    pub max_attempts: i32,
    /// SMS provider for communities without their own: `aliyun` or `tencent`.
    pub sms_provider: crate::dunning::sms::ProviderKind,
    /// Approved signature (签名) for communities without their own.
    pub sign_name: String,
    /// Customer service number printed in messages (fixed line, 400 or 95 number).
    pub service_tel: String,
    /// `zh` (default) or `en`.
    pub language: crate::dunning::templates::Language,
    /// Approved template code per message kind (`bill_issued`, `pre_due`, `overdue`,
    /// `overdue_late_fee`, `final_reminder`, `low_balance`, `zero_balance`).
    pub templates: std::collections::BTreeMap<String, String>,
    /// Per community (by code): provider, signature, templates, number, language and policy.
    pub communities: std::collections::BTreeMap<String, CommunityRemindersConfig>,
    /// Secret the providers' SMS-reply (uplink) push must carry as `?token=` on
    /// `POST /api/v1/reminders/sms-replies/{provider}`; empty disables that endpoint.
    #[serde(serialize_with = "ser_secret")]
    pub sms_reply_token: SecretString,
}

/// `[reminders.communities.CODE]`: what differs for one community. Unset fields fall back to
/// `[reminders]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommunityRemindersConfig {
    pub sms_provider: Option<crate::dunning::sms::ProviderKind>,
    pub sign_name: Option<String>,
    pub service_tel: Option<String>,
    pub language: Option<crate::dunning::templates::Language>,
    pub templates: std::collections::BTreeMap<String, String>,
    /// The community's policy; every field defaults to notifications.md's cadence.
    pub policy: crate::dunning::policy::CommunityPolicy,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        RemindersConfig {
            enabled: true,
            pay_link_ttl_days: 30,
            unsubscribe_link_ttl_days: 365,
            max_attempts: 20,
            sms_provider: crate::dunning::sms::ProviderKind::Aliyun,
            sign_name: String::new(),
            service_tel: String::new(),
            language: crate::dunning::templates::Language::Zh,
            templates: Default::default(),
            communities: Default::default(),
            sms_reply_token: SecretString::from(""),
        }
    }
}

/// `[sms]`: the providers' accounts. Secrets never print.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Client timeout per request, milliseconds (the providers recommend at least 1 s).
    pub timeout_ms: u64,
    /// Our own rate limit per provider, requests per second (well below the providers' QPS).
    pub rate_per_sec: u32,
    /// Minutes after an attempt with an unknown outcome before "the provider has no record of
    /// it" is taken to mean it never arrived (and the message may be attempted again).
    pub unknown_settle_minutes: i64,
    pub aliyun: AliyunSmsConfig,
    pub tencent: TencentSmsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AliyunSmsConfig {
    pub endpoint: String,
    pub access_key_id: String,
    #[serde(serialize_with = "ser_secret")]
    pub access_key_secret: SecretString,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TencentSmsConfig {
    pub endpoint: String,
    pub secret_id: String,
    #[serde(serialize_with = "ser_secret")]
    pub secret_key: SecretString,
    pub region: String,
    pub sms_sdk_app_id: String,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            timeout_ms: 5000,
            rate_per_sec: 100,
            unknown_settle_minutes: 60,
            aliyun: AliyunSmsConfig::default(),
            tencent: TencentSmsConfig::default(),
        }
    }
}

impl Default for AliyunSmsConfig {
    fn default() -> Self {
        AliyunSmsConfig {
            endpoint: crate::dunning::sms::aliyun::DEFAULT_ENDPOINT.into(),
            access_key_id: String::new(),
            access_key_secret: SecretString::from(""),
        }
    }
}

impl Default for TencentSmsConfig {
    fn default() -> Self {
        TencentSmsConfig {
            endpoint: crate::dunning::sms::tencent::DEFAULT_ENDPOINT.into(),
            secret_id: String::new(),
            secret_key: SecretString::from(""),
            region: "ap-guangzhou".into(),
            sms_sdk_app_id: String::new(),
        }
    }
}

/// `[smtp]`: the mail server reminders and reports go through. An empty host disables e-mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `starttls` (port 587), `tls` (implicit TLS, port 465) or `none` (a local relay only).
    pub security: crate::dunning::email::SmtpSecurity,
    pub username: String,
    #[serde(serialize_with = "ser_secret")]
    pub password: SecretString,
    pub from: String,
    pub timeout_secs: u64,
    /// PEM file of an extra CA to trust for the server's certificate (empty: web PKI only).
    pub tls_root_cert: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: 587,
            security: crate::dunning::email::SmtpSecurity::Starttls,
            username: String::new(),
            password: SecretString::from(""),
            from: "meterpay <noreply@localhost>".into(),
            timeout_secs: 30,
            tls_root_cert: String::new(),
        }
    }
}

/// `[paylink]`: the secret signing pay and unsubscribe links.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaylinkConfig {
    /// At least 16 bytes. Empty: a random secret is generated once and kept in the database
    /// (`app_secrets`), so every instance and every restart agree.
    #[serde(serialize_with = "ser_secret")]
    pub secret: SecretString,
}

impl Default for PaylinkConfig {
    fn default() -> Self {
        PaylinkConfig {
            secret: SecretString::from(""),
        }
    }
}

/// Daily reconciliation of the gateways' settlement files (README "Reconciliation").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Reconcile on the clock each morning (the jobs below); runs by hand work either way.
    pub enabled: bool,
    /// When (HH:MM, Beijing time) to reconcile the previous day's Alipay bill (available T+1,
    /// after about 10:00).
    pub alipay_at: String,
    /// WeChat Pay's trade bill is generated after 10:00 the next day.
    pub wechatpay_at: String,
    /// UnionPay's clearing files (clearing day 23:00 → 23:00) are ready in the morning.
    pub unionpay_at: String,
    /// When to e-mail the morning report to `finance_recipients`.
    pub report_at: String,
    /// A ledger entry recorded this close to the day's cut-off and missing from the file is
    /// expected in the neighbouring day's file, not short.
    pub cross_day_window_minutes: i64,
    /// How long after the day's cut-off an expected entry may stay missing before it counts as
    /// short (escalates). Covers the next day's file, published the morning after.
    pub grace_hours: i64,
    /// A fee within this many fen of the contracted rate × amount is not a fee mismatch.
    pub fee_tolerance_fen: i64,
    /// Post the day's settlement (clearing → bank and fee expense) as soon as it has nothing open.
    pub auto_settle: bool,
    /// Who receives the morning report (e-mail addresses).
    pub finance_recipients: Vec<String>,
    /// Alipay app id → the account its bills are issued for (`<2088 partner id>0156`), so that
    /// another merchant's bill is refused. Unlisted app ids are checked by day only.
    pub alipay_accounts: std::collections::BTreeMap<String, String>,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            enabled: true,
            alipay_at: "10:15".into(),
            wechatpay_at: "10:30".into(),
            unionpay_at: "09:30".into(),
            report_at: "11:00".into(),
            cross_day_window_minutes: 10,
            grace_hours: 36,
            fee_tolerance_fen: 0,
            auto_settle: true,
            finance_recipients: Vec::new(),
            alipay_accounts: Default::default(),
        }
    }
}

fn ser_secret<S: serde::Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.expose_secret())
}

impl Config {
    /// Load from defaults, the file (if given), and the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        Self::load_from(
            file,
            // Only `METERPAY_<SECTION>__<KEY>` and `METERPAY_DATABASE_URL` are settings; other
            // `METERPAY_*` variables (`METERPAY_CONFIG`, the test harness's
            // `METERPAY_REQUIRE_POSTGRES`) are not, and must not be refused as unknown settings.
            Env::prefixed("METERPAY_")
                .filter(|k| k.as_str().contains("__") || k == "DATABASE_URL")
                .split("__"),
            Env::raw().only(&["DATABASE_URL"]),
        )
    }

    fn load_from(file: Option<&Path>, env: Env, db_env: Env) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    path.display()
                ))));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig.merge(env)
            .merge(db_env.map(|_| "database_url".into()))
            .extract()
            .map_err(Box::new)
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.http.listen.parse().map_err(|e| {
            anyhow::anyhow!(
                "http.listen {:?} is not an address such as 127.0.0.1:8080: {e}",
                self.http.listen
            )
        })
    }

    /// The configuration as JSON with the database password masked, for the start-up log.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["database_url"] = serde_json::Value::String(redact_url(self.database_url()));
        for path in [
            &["sms", "aliyun", "access_key_secret"][..],
            &["sms", "tencent", "secret_key"],
            &["smtp", "password"],
            &["paylink", "secret"],
        ] {
            let mut cur = &mut v;
            for part in &path[..path.len() - 1] {
                cur = &mut cur[*part];
            }
            let last = path[path.len() - 1];
            if cur[last].as_str().is_some_and(|s| !s.is_empty()) {
                cur[last] = serde_json::Value::String("****".into());
            }
        }
        v
    }

    /// Where a relative SQLite path lives (for messages).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database_url()
            .strip_prefix("sqlite://")
            .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)))
    }
}

/// Hide the password in a database URL.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_sqlite_on_localhost() {
        let c = Config::default();
        assert_eq!(c.database_url(), "sqlite://data/meterpay.db");
        assert_eq!(c.http.listen, "127.0.0.1:8080");
    }

    #[test]
    fn file_then_environment_then_database_url() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "m.toml",
                "database_url = \"sqlite://x.db\"\n[http]\nlisten = \"0.0.0.0:9000\"\n[jobs]\nworkers = 5\n",
            )?;
            jail.set_env("METERPAY_JOBS__WORKERS", "7");
            // Not settings: the config file variable and the test harness's switch.
            jail.set_env("METERPAY_REQUIRE_POSTGRES", "1");
            jail.set_env("METERPAY_CONFIG", "m.toml");
            let c = Config::load(Some(Path::new("m.toml"))).expect("loads");
            assert_eq!(c.http.listen, "0.0.0.0:9000");
            assert_eq!(c.jobs.workers, 7, "environment overrides the file");
            assert_eq!(c.database_url(), "sqlite://x.db");
            jail.set_env("DATABASE_URL", "postgres://u:secret@h/db");
            let c = Config::load(Some(Path::new("m.toml"))).expect("loads");
            assert_eq!(c.database_url(), "postgres://u:secret@h/db");
            // (key names such as `secret_key` contain the word: look for the value in the URL)
            assert!(!c.redacted().to_string().contains(":secret@"), "password is masked");
            Ok(())
        });
    }

    #[test]
    fn the_example_file_in_deploy_lists_every_setting_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/meterpay.example.toml");
        let text = std::fs::read_to_string(&path).expect("deploy/meterpay.example.toml exists");
        let from_file: Config = toml::from_str(&text).expect("the example parses");
        let defaults = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            defaults,
            "example and defaults agree"
        );
        // Every key of the defaults appears in the file (no undocumented setting).
        fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
            if let Some(map) = v.as_object() {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if v.is_object() {
                        keys(v, &name, out)
                    } else {
                        out.push(name)
                    }
                }
            }
        }
        let mut all = Vec::new();
        keys(&defaults, "", &mut all);
        let file_value: toml::Value = toml::from_str(&text).unwrap();
        for k in all {
            let mut cur = Some(&file_value);
            for part in k.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            assert!(
                cur.is_some(),
                "setting {k} is missing from deploy/meterpay.example.toml"
            );
        }
    }

    #[test]
    fn sms_smtp_and_pay_link_secrets_never_print() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("METERPAY_SMS__ALIYUN__ACCESS_KEY_SECRET", "ali-s3cr3t");
            jail.set_env("METERPAY_SMS__TENCENT__SECRET_KEY", "tc-s3cr3t");
            jail.set_env("METERPAY_SMTP__PASSWORD", "smtp-s3cr3t");
            jail.set_env("METERPAY_PAYLINK__SECRET", "link-s3cr3t-0123456789");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.smtp.password.expose_secret(), "smtp-s3cr3t");
            let shown = format!("{} {:?}", c.redacted(), c);
            for s in ["ali-s3cr3t", "tc-s3cr3t", "smtp-s3cr3t", "link-s3cr3t"] {
                assert!(!shown.contains(s), "{s} leaked");
            }
            assert_eq!(c.redacted()["smtp"]["password"], "****");
            Ok(())
        });
    }

    #[test]
    fn unknown_settings_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[http]\nlistn = \"x\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(err.contains("listn"), "{err}");
            assert!(Config::load(Some(Path::new("nope.toml"))).is_err());
            jail.set_env("METERPAY_HTTP__LISTN", "x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("listn"),
                "an unknown key in a known section is refused: {err}"
            );
            Ok(())
        });
    }
}
