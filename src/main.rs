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
        Command::Demo { listen, no_serve, json } => {
            if let Some(addr) = listen {
                config.http.listen = addr.to_string();
            }
            // A person runs the demo in a terminal: readable logs unless configured otherwise.
            if std::env::var_os("METERPAY_LOG__FORMAT").is_none() && cli.config.is_none() {
                config.log.format = LogFormat::Pretty;
                config.log.level = "warn".into();
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
                println!("  stop with Ctrl-C");
            }
            app.run_until(startup::shutdown_signal()).await
        }
    }
}
