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
            let store = startup::open_store(&config).await?;
            let summary = meterpay::demo::seed(&store).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("meterpay demo");
                println!(
                    "  community  {} ({}) — {}",
                    summary.community_name,
                    summary.community_code,
                    if summary.created {
                        "created"
                    } else {
                        "already there, reused"
                    }
                );
                println!("  accounts   {}", summary.accounts);
                println!("  meters     {}", summary.meters);
                println!("  database   {}", meterpay::config::redact_url(config.database_url()));
            }
            if !json {
                println!("  staff sign-in (demo only; password {}):", summary.staff_password);
                for (name, role) in &summary.staff_users {
                    println!("             {name:<14} {role}");
                }
            }
            if no_serve {
                store.close().await;
                return Ok(());
            }
            let app = Application::build_with_store(config, store).await?;
            let base = format!("http://{}", app.addr());
            if !json {
                println!();
                println!("  serving    {base}");
                println!("  health     {base}/healthz   readiness {base}/readyz   metrics {base}/metrics");
                println!("  sign in    {base}/staff/sign-in");
                println!("  stop with Ctrl-C");
            }
            app.run_until(startup::shutdown_signal()).await
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
