//! `meterpay reconcile --channel C --merchant M --date YYYY-MM-DD [--file PATH] [--json]`: run one
//! day by hand and print its summary (exit status non-zero when the file is refused).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use meterpay_gateways::gateway::Channel;

use super::{Reconciler, RunOutcome, RunRequest, Via};
use crate::payments::PaymentsPort;
use crate::store::Store;

/// The command's arguments.
#[derive(Debug, Clone)]
pub struct ReconcileArgs {
    pub channel: Channel,
    pub merchant: String,
    pub date: NaiveDate,
    /// Take this file instead of downloading it.
    pub file: Option<PathBuf>,
    pub json: bool,
    /// Who runs it (the OS user, for the run's record).
    pub started_by: String,
}

/// Run the command; returns what to print.
pub async fn run(
    store: Store,
    port: Arc<dyn PaymentsPort>,
    config: &crate::config::Config,
    args: ReconcileArgs,
) -> anyhow::Result<String> {
    let file = match &args.file {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading the settlement file {}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some((bytes, format!("file:{name}")))
        }
        None => None,
    };
    let r = Reconciler::new(store, port, config.reconcile.clone());
    let out = r
        .run(
            RunRequest {
                channel: args.channel,
                merchant_id: args.merchant.clone(),
                bill_date: args.date,
                file,
                via: Via::Cli,
                started_by: args.started_by.clone(),
            },
            Utc::now(),
        )
        .await
        .with_context(|| format!("reconciling {} {} on {}", args.channel, args.merchant, args.date))?;
    Ok(if args.json {
        serde_json::to_string_pretty(&out)?
    } else {
        text(&out)
    })
}

/// A run's outcome for a terminal.
pub fn text(out: &RunOutcome) -> String {
    let s = &out.summary;
    let y = |f: i64| format!("{}{}.{:02}", if f < 0 { "-" } else { "" }, f.abs() / 100, f.abs() % 100);
    let mut t = format!(
        "reconciliation run {} — {} {} {}: {}\n  file      sha256 {} ({} bytes), {} payments {} yuan, {} refunds {} yuan, fees {} yuan\n  ledger    {} payments {} yuan, {} refunds {} yuan\n  matched   {} ({} yuan){}\n",
        out.run_id,
        s.channel,
        s.merchant_id,
        s.bill_date,
        s.outcome,
        s.file.sha256,
        s.file.size_bytes,
        s.file.payments.count,
        y(s.file.payments.amount_fen),
        s.file.refunds.count,
        y(s.file.refunds.amount_fen),
        y(s.file.fees_fen),
        s.ledger_payments.count,
        y(s.ledger_payments.amount_fen),
        s.ledger_refunds.count,
        y(s.ledger_refunds.amount_fen),
        s.matched.count,
        y(s.matched.amount_fen),
        if s.matched_elsewhere.count > 0 {
            format!(", {} matched in the neighbouring day's file", s.matched_elsewhere.count)
        } else {
            String::new()
        }
    );
    t.push_str(&format!(
        "  net       gross {} − refunds {} − fees {} = {} yuan{}\n",
        y(s.gross_fen),
        y(s.refunds_fen),
        y(s.fees_fen),
        y(s.net_fen),
        if out.settled { " (settled)" } else { "" }
    ));
    for it in &out.items {
        t.push_str(&format!(
            "  {:<10} {:<8} {:<32} {:>10} yuan  {}\n",
            it.class.as_str(),
            it.kind,
            it.reference(),
            y(it.difference_fen),
            it.detail
        ));
    }
    t
}
