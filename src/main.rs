//! The `meterpay` command: parses the command line and wires the library together.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use meterpay::config::{Config, LogFormat};
use meterpay::startup::{self, Application};

#[derive(Parser, Debug)]
#[command(
    name = "meterpay",
    version,
    about = "Bills residents for water and electricity and gets them paid."
)]
struct Cli {
    /// Configuration file (TOML). Settings can also come from METERPAY_* environment variables.
    #[arg(long, global = true, env = "METERPAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP service, the clock and the task workers.
    Serve {
        /// Address to listen on (overrides http.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Meter readings.
    Readings {
        #[command(subcommand)]
        command: ReadingsCommand,
    },
    /// Meter concentrators that push readings.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Bill runs and bills.
    Bills {
        #[command(subcommand)]
        command: BillsCommand,
    },
    /// Tariffs (effective-dated versions per community and utility).
    Tariffs {
        #[command(subcommand)]
        command: TariffsCommand,
    },
    /// Customer accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Arrears and late fees.
    Arrears {
        #[command(subcommand)]
        command: ArrearsCommand,
    },
    /// Usage alerts (预警): usage far above an account's history, stopped meters.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// The task queue: list tasks, revive a dead one.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Staff API tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Staff users who sign in to the pages.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Gateway notifications: verify a captured one (for a disputed callback).
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Gateway settlement files: parse one (for a disputed file).
    Settlement {
        #[command(subcommand)]
        command: SettlementCommand,
    },
    /// Serve the gateway sandbox (Alipay, WeChat Pay v3, UnionPay server side) on its own.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Divide the gateways' notification retry delays by this.
        #[arg(long, default_value_t = 1)]
        time_scale: u32,
    },
    /// Arrears reminders (SMS, e-mail, written notices).
    Remind {
        #[command(subcommand)]
        command: meterpay::dunning::planner::RemindCommand,
    },
    /// Reconcile one channel, merchant and day against the ledger (the file given, or downloaded
    /// from the gateway) and print the summary.
    Reconcile {
        #[arg(long)]
        channel: meterpay_gateways::gateway::Channel,
        #[arg(long)]
        merchant: String,
        /// The bill date, YYYY-MM-DD.
        #[arg(long)]
        date: chrono::NaiveDate,
        /// The settlement file as the gateway delivers it (otherwise it is downloaded).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set up the demo community in the embedded database (idempotently) and serve it.
    Demo {
        /// Address to listen on (overrides http.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Set up the demo and exit without serving.
        #[arg(long)]
        no_serve: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NotifyCommand {
    /// Verify a captured notification with the gateway's key; print its verified fields as JSON
    /// (exit 0), or exactly why it does not verify (exit 1).
    Verify {
        #[arg(long)]
        channel: meterpay_gateways::gateway::Channel,
        /// The gateway's public key or certificate, in any form it hands out (PEM or not, PKCS#1,
        /// SPKI, X.509). Repeat for UnionPay's root and middle certificates.
        #[arg(long = "gateway-key", required = true)]
        gateway_key: Vec<PathBuf>,
        /// WeChat Pay: a file holding the merchant's APIv3 key (decrypts the resource).
        #[arg(long)]
        apiv3_key: Option<PathBuf>,
        /// Captured headers, one `Name: value` per line (WeChat Pay signs with headers).
        #[arg(long)]
        headers: Option<PathBuf>,
        /// The exact body bytes received.
        #[arg(long)]
        body: PathBuf,
        /// Verify as of this time (RFC 3339), e.g. when the notification was received; default now.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Subcommand, Debug)]
enum SettlementCommand {
    /// Parse a settlement file; print its rows and totals (exit 0) or exactly why it is refused (exit 1).
    Parse {
        #[arg(long)]
        channel: meterpay_gateways::gateway::Channel,
        file: PathBuf,
        /// Print one JSON document {"rows": [...], "totals": {...}, "file_sha256": "..."}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ReadingsCommand {
    /// Import readings from a CSV or XLSX file (columns: meter_no, utility, read_at, value[, kind]).
    /// Prints a report per row: accepted, held for review, duplicate, or refused with the reason.
    Import {
        file: PathBuf,
        /// Write the per-row report as CSV to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BillsCommand {
    /// Bill a period: one bill per account (re-running never duplicates), adjustment bills for
    /// re-rated estimates, posted to the ledger as issued.
    Run {
        /// The billing month, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Only this community (by code); default: every community.
        #[arg(long)]
        community: Option<String>,
        /// Compute and report; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Due date of every bill of this run (default: the community's setting).
        #[arg(long)]
        due: Option<chrono::NaiveDate>,
        #[arg(long)]
        json: bool,
    },
    /// Show a bill with its lines, readings, tier breakdown, late fees and payments.
    Show {
        /// The bill id; or give --community, --account and --period.
        id: Option<i64>,
        #[arg(long)]
        community: Option<String>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TariffsCommand {
    /// Add the versions in a TOML tariff file (format: see README); all or none.
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List a community's tariff versions.
    List {
        #[arg(long)]
        community: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AccountsCommand {
    /// Import accounts from CSV or XLSX (code, name, building, unit, door_no, phone, mobile,
    /// email, meters, …); a report per row.
    Import {
        file: PathBuf,
        #[arg(long)]
        community: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ArrearsCommand {
    /// Accounts with overdue bills: amount, late fee, days overdue, credit rating.
    List {
        #[arg(long)]
        community: String,
        /// Default: today (China time).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        #[arg(long)]
        json: bool,
    },
    /// Accrue late fees through a day now (the nightly job does this at 00:30 for yesterday).
    Accrue {
        /// Default: yesterday (China time).
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// List usage alerts of a community.
    List {
        #[arg(long)]
        community: String,
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TasksCommand {
    /// List tasks, newest first.
    List {
        /// Only tasks in this state: queued, running, done, dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Give a dead task (one that ran out of attempts) a fresh set of attempts, to run now.
    Revive { id: i64 },
}

#[derive(Subcommand, Debug)]
enum DevicesCommand {
    /// Register a concentrator for a community; prints its key id and secret (shown once).
    Add {
        #[arg(long)]
        community: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokensCommand {
    /// Create an API token with a role (admin, operator, finance, read_only); printed once.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "finance", "read_only"])]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// Create a staff user (the first admin this way). The password is asked for at a prompt,
    /// or read from the first line of standard input with --password-stdin.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "finance", "read_only"])]
        role: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List staff users and their roles.
    List,
    /// Change a user's role.
    SetRole {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "finance", "read_only"])]
        role: String,
    },
    /// Set a new password for a user (ends their sessions).
    Password {
        #[arg(long)]
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

/// A new password from the first line of stdin, or typed twice at a prompt (not echoed).
fn read_new_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("New password: ")
        .context("reading the password at the prompt (use --password-stdin when there is no terminal)")?;
    let second = rpassword::prompt_password("Repeat it: ").context("reading the password at the prompt")?;
    anyhow::ensure!(first == second, "the two passwords differ; nothing was changed");
    Ok(first)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref()).context("loading the configuration")?;
    match cli.command {
        Command::Serve { listen } => {
            if let Some(addr) = listen {
                config.http.listen = addr.to_string();
            }
            meterpay::telemetry::init(&config.log);
            tracing::info!(config = %config.redacted(), "starting");
            let app = Application::build(config).await?;
            tracing::info!(addr = %app.addr(), "listening");
            app.run_until(startup::shutdown_signal()).await
        }
        Command::Migrate => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let n = store.applied_migrations().await?;
            println!(
                "database {} is migrated ({n} migrations applied)",
                meterpay::config::redact_url(config.database_url())
            );
            store.close().await;
            Ok(())
        }
        Command::Readings {
            command: ReadingsCommand::Import { file, report, json },
        } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let outcome = meterpay::billing::import::import_file(&store, &file, report.as_deref(), !json).await;
            store.close().await;
            let summary = outcome?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("{}", summary.text());
            }
            Ok(())
        }
        Command::Devices {
            command: DevicesCommand::Add { community, name },
        } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let c = store
                .community_by_code(&community)
                .await?
                .with_context(|| format!("no community with code {community:?}"))?;
            let (key_id, secret) = meterpay::billing::push::new_device_credentials();
            store
                .add_device(c.id, &name, &key_id, &secret, "cli", chrono::Utc::now())
                .await?;
            store.close().await;
            println!("key id: {key_id}\nsecret: {secret}\n(store the secret in the device now; it is not shown again)");
            Ok(())
        }
        Command::Bills { command } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = bills_command(&store, command).await;
            store.close().await;
            out
        }
        Command::Tariffs { command } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = tariffs_command(&store, command).await;
            store.close().await;
            out
        }
        Command::Accounts {
            command: AccountsCommand::Import { file, community, json },
        } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = async {
                let c = store
                    .community_by_code(&community)
                    .await?
                    .with_context(|| format!("no community with code {community:?}"))?;
                let rows = meterpay::billing::accounts_import::read_accounts_file(&file)?;
                let actor = format!("cli:accounts import {}", file.display());
                let r = store
                    .import_accounts(c.id, &rows, &actor, None, chrono::Utc::now())
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!("{}", r.text(&file.display().to_string()));
                }
                anyhow::Ok(())
            }
            .await;
            store.close().await;
            out
        }
        Command::Remind { command } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = meterpay::dunning::planner::remind_command(&store, config, command).await;
            store.close().await;
            out
        }
        Command::Arrears { command } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = arrears_command(&store, command).await;
            store.close().await;
            out
        }
        Command::Tasks { command } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = async {
                match command {
                    TasksCommand::List { status, limit, json } => {
                        if let Some(s) = status.as_deref() {
                            anyhow::ensure!(
                                ["queued", "running", "done", "dead"].contains(&s),
                                "unknown task status {s:?}: use queued, running, done or dead"
                            );
                        }
                        let rows = store.list_tasks(status.as_deref(), limit).await?;
                        if json {
                            println!("{}", serde_json::to_string_pretty(&rows)?);
                        } else {
                            println!(
                                "{:>8}  {:<24} {:<8} {:>8}  {:<25} last error",
                                "id", "kind", "status", "attempts", "run at"
                            );
                            for t in &rows {
                                println!(
                                    "{:>8}  {:<24} {:<8} {:>4}/{:<3}  {:<25} {}",
                                    t.id,
                                    t.kind,
                                    t.status,
                                    t.attempts,
                                    t.max_attempts,
                                    t.run_at.to_rfc3339(),
                                    t.last_error.as_deref().unwrap_or("")
                                );
                            }
                        }
                    }
                    TasksCommand::Revive { id } => {
                        let revived = store.revive_task(id, chrono::Utc::now()).await?;
                        anyhow::ensure!(revived, "task {id} is not dead (or does not exist); nothing changed");
                        println!("task {id} queued to run now with a fresh set of attempts");
                    }
                }
                anyhow::Ok(())
            }
            .await;
            store.close().await;
            out
        }
        Command::Alerts {
            command:
                AlertsCommand::List {
                    community,
                    period,
                    json,
                },
        } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let out = async {
                let c = store
                    .community_by_code(&community)
                    .await?
                    .with_context(|| format!("no community with code {community:?}"))?;
                let period = period
                    .as_deref()
                    .map(meterpay::domain::Period::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let rows = store.usage_alerts(c.id, period).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print!("{}", meterpay::billing::text::alerts_text(&rows));
                }
                anyhow::Ok(())
            }
            .await;
            store.close().await;
            out
        }
        Command::Tokens {
            command: TokensCommand::Add { name, role },
        } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let token = store.create_api_token(&name, &role, "cli", chrono::Utc::now()).await?;
            store.close().await;
            println!("{token}\n(role {role}; send as Authorization: Bearer <token>; it is not shown again)");
            Ok(())
        }
        Command::Users { command } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let outcome = users_command(&store, command).await;
            store.close().await;
            outcome
        }
        Command::Notify {
            command:
                NotifyCommand::Verify {
                    channel,
                    gateway_key,
                    apiv3_key,
                    headers,
                    body,
                    at,
                },
        } => {
            let out = meterpay::tools::notify_verify(&meterpay::tools::NotifyVerifyArgs {
                channel,
                gateway_keys: gateway_key,
                apiv3_key,
                headers,
                body,
                at,
            })?;
            println!("{out}");
            Ok(())
        }
        Command::Settlement {
            command: SettlementCommand::Parse { channel, file, json },
        } => {
            let parsed = meterpay::tools::settlement_parse(channel, &file)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&meterpay::tools::settlement_json(&parsed))?
                );
            } else {
                print!("{}", meterpay::tools::settlement_text(&parsed));
            }
            Ok(())
        }
        Command::Sandbox { listen, time_scale } => {
            meterpay::telemetry::init(&config.log);
            let sandbox = meterpay::tools::sandbox_with_all_gateways(time_scale);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the sandbox to {listen}"))?;
            let handle = sandbox.serve(listener);
            println!(
                "gateway sandbox serving on {} (wallet: {}/sandbox/wallet); stop with Ctrl-C",
                sandbox.base_url(),
                sandbox.base_url()
            );
            startup::shutdown_signal().await;
            handle.abort();
            Ok(())
        }
        Command::Reconcile {
            channel,
            merchant,
            date,
            file,
            json,
        } => {
            meterpay::telemetry::init(&config.log);
            let store = startup::open_store(&config).await?;
            let port = meterpay::reconcile::default_port(&store, &config)?;
            let args = meterpay::reconcile::cli::ReconcileArgs {
                channel,
                merchant,
                date,
                file,
                json,
                started_by: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            };
            let out = meterpay::reconcile::cli::run(store.clone(), port, &config, args).await;
            store.close().await;
            println!("{}", out?);
            Ok(())
        }
        Command::Demo { listen, no_serve, json } => {
            if let Some(addr) = listen {
                config.http.listen = addr.to_string();
            }
            // A person runs the demo in a terminal: readable logs unless configured otherwise.
            if std::env::var_os("METERPAY_LOG__FORMAT").is_none() && cli.config.is_none() {
                config.log.format = LogFormat::Pretty;
                config.log.level = "warn".into();
            }
            // The demo is served over plain http on this machine: a Secure cookie would not come
            // back, so sessions use a plain one unless configured otherwise.
            if std::env::var_os("METERPAY_ACCESS__COOKIE_SECURE").is_none() && cli.config.is_none() {
                config.access.cookie_secure = false;
            }
            meterpay::telemetry::init(&config.log);
            if no_serve {
                // Nothing is served afterwards: any free port will do for the demo's own pushes.
                config.http.listen = "127.0.0.1:0".into();
            }
            let store = startup::open_store(&config).await?;
            let database = meterpay::config::redact_url(config.database_url());
            let link_config = config.clone();
            let app = Application::build_with_store(config, store.clone()).await?;
            let base = format!("http://{}", app.addr());
            meterpay::payments::demo::attach(app.state().payments.clone(), &base);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(app.run_until(async move {
                let _ = stop_rx.await;
            }));
            let summary = match meterpay::demo::run(&store, &base).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = stop_tx.send(());
                    let _ = server.await;
                    return Err(e);
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.text(&database));
            }
            if !json {
                println!("  staff sign-in (demo only; password {}):", summary.staff_password);
                for (name, role) in &summary.staff_users {
                    println!("             {name:<14} {role}");
                }
                if let Some((account, url)) =
                    meterpay::pages::demo::resident_pay_link(&store, &link_config, &base, &summary.community_code)
                        .await?
                {
                    println!("  pay link   {url}");
                    println!("             (resident page of account {account}; open it on a phone-sized window)");
                }
            }
            if no_serve {
                let _ = stop_tx.send(());
                return server.await.context("the demo server task")?;
            }
            if !json {
                println!();
                println!("  serving    {base}");
                println!("  health     {base}/healthz   readiness {base}/readyz   metrics {base}/metrics");
                println!("  sign in    {base}/staff/sign-in");
                println!("  bills      {base}/api/v1/bills?community=DEMO (Authorization: Bearer <token from `meterpay tokens add`>)");
                println!("  stop with Ctrl-C");
            }
            startup::shutdown_signal().await;
            let _ = stop_tx.send(());
            server.await.context("the demo server task")?
        }
    }
}

async fn bills_command(store: &meterpay::store::Store, command: BillsCommand) -> anyhow::Result<()> {
    match command {
        BillsCommand::Run {
            period,
            community,
            dry_run,
            due,
            json,
        } => {
            let period = meterpay::domain::Period::parse(&period).map_err(anyhow::Error::msg)?;
            let mut opts = meterpay::store::bills::RunOptions::new(period);
            opts.community = community;
            opts.dry_run = dry_run;
            opts.due_date = due;
            let bar = indicatif::ProgressBar::new_spinner();
            if json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            } else {
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} billing {pos} accounts ({per_sec})")
                        .expect("valid template"),
                );
            }
            let report = store
                .run_bills(&opts, "cli:bills run", None, chrono::Utc::now(), &|n| {
                    bar.set_position(n as u64)
                })
                .await?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.text());
            }
            Ok(())
        }
        BillsCommand::Show {
            id,
            community,
            account,
            period,
            json,
        } => {
            let id = match (id, community, account, period) {
                (Some(id), _, _, _) => id,
                (None, Some(c), Some(a), Some(p)) => {
                    let c = store
                        .community_by_code(&c)
                        .await?
                        .with_context(|| format!("no community with code {c:?}"))?;
                    let acct = store
                        .account_by_code(c.id, &a)
                        .await?
                        .with_context(|| format!("no account {a:?} in {}", c.code))?;
                    let p = meterpay::domain::Period::parse(&p).map_err(anyhow::Error::msg)?;
                    store
                        .bill_id_for(acct.id, p)
                        .await?
                        .with_context(|| format!("account {a} has no bill for {p}"))?
                }
                _ => anyhow::bail!("give a bill id, or --community, --account and --period"),
            };
            let b = store.bill_detail(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                print!("{}", meterpay::billing::text::bill_text(&b));
            }
            Ok(())
        }
    }
}

async fn tariffs_command(store: &meterpay::store::Store, command: TariffsCommand) -> anyhow::Result<()> {
    match command {
        TariffsCommand::Import { file, json } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let parsed = meterpay::store::tariffs::TariffFile::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let actor = format!("cli:tariffs import {}", file.display());
            let r = store
                .add_tariff_versions(&parsed.tariff, &actor, None, chrono::Utc::now())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: {} versions added, {} already there",
                    file.display(),
                    r.added.len(),
                    r.unchanged
                );
                for v in &r.added {
                    println!(
                        "  {} {} {} from {} ({})",
                        v.id, v.utility, v.customer_class, v.effective_from, v.name
                    );
                }
            }
            Ok(())
        }
        TariffsCommand::List { community, json } => {
            let c = store
                .community_by_code(&community)
                .await?
                .with_context(|| format!("no community with code {community:?}"))?;
            let vs = store.tariff_versions(c.id, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vs)?);
            } else {
                for v in &vs {
                    println!(
                        "{:>4} {:<12} {:<16} {} → {}  {} tiers {} ({})",
                        v.id,
                        v.utility,
                        v.customer_class,
                        v.effective_from,
                        v.effective_to.map(|d| d.to_string()).unwrap_or_else(|| "…".into()),
                        v.tier_basis.as_str(),
                        v.definition.tiers(),
                        v.name
                    );
                }
            }
            Ok(())
        }
    }
}

async fn arrears_command(store: &meterpay::store::Store, command: ArrearsCommand) -> anyhow::Result<()> {
    let today = meterpay::domain::period::cst_date(chrono::Utc::now());
    match command {
        ArrearsCommand::List { community, as_of, json } => {
            let c = store
                .community_by_code(&community)
                .await?
                .with_context(|| format!("no community with code {community:?}"))?;
            let rows = store.arrears(c.id, as_of.unwrap_or(today)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", meterpay::billing::text::arrears_text(&rows));
            }
            Ok(())
        }
        ArrearsCommand::Accrue { as_of, json } => {
            let as_of = as_of.unwrap_or(today - chrono::Duration::days(1));
            let r = store
                .accrue_late_fees(as_of, None, "cli:arrears accrue", chrono::Utc::now())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "late fees through {as_of}: {} bills checked, {} postings, {} accrued, {} reversed",
                    r.bills_checked,
                    r.postings,
                    meterpay::domain::Fen::new(r.accrued_fen),
                    meterpay::domain::Fen::new(r.reversed_fen)
                );
            }
            Ok(())
        }
    }
}

async fn users_command(store: &meterpay::store::Store, command: UsersCommand) -> anyhow::Result<()> {
    use meterpay::access::{self, Role, UserName};
    let now = chrono::Utc::now();
    match command {
        UsersCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            let name = UserName::parse(&name).map_err(anyhow::Error::msg)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let password = read_new_password(password_stdin)?;
            access::check_new_password(&name, &password).map_err(anyhow::Error::msg)?;
            let hash = access::hash_password_blocking(password).await?;
            match store.create_staff_user(&name, role, &hash, "cli", now).await {
                Ok(_) => {}
                Err(e) if e.is_duplicate() => {
                    anyhow::bail!("a staff user named {name} already exists; nothing was changed")
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("creating staff user {name}"))),
            }
            println!("staff user {name} created with role {role}; sign in at /staff/sign-in");
        }
        UsersCommand::List => {
            for u in store.list_staff_users().await? {
                let state = if u.disabled_at.is_some() { "disabled" } else { "active" };
                println!("{:<24} {:<10} {state}", u.name, u.role);
            }
        }
        UsersCommand::SetRole { name, role } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            store.set_staff_role(&name, role, "cli", now).await?;
            println!("staff user {name} now has role {role}");
        }
        UsersCommand::Password { name, password_stdin } => {
            let user = UserName::parse(&name).map_err(anyhow::Error::msg)?;
            let password = read_new_password(password_stdin)?;
            access::check_new_password(&user, &password).map_err(anyhow::Error::msg)?;
            let hash = access::hash_password_blocking(password).await?;
            store.set_staff_password(&name, &hash, None, "cli", now).await?;
            println!("password of {name} changed; their sessions were ended");
        }
    }
    Ok(())
}
