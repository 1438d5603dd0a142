//! The demo's reconciliation step: after the day's payments, the sandbox writes each gateway's
//! settlement file of that day in its real format with a few planted differences (a payment the
//! gateway lacks, one it has and we do not, a fee off the contract), and each is reconciled and
//! summarised.
//!
//! Until payments' demo flow pays through the sandbox, [`demo_step`] makes its own day: it pays a
//! handful of orders at the sandbox and posts each confirmed payment to the ledger exactly by the
//! payments conventions (`payment.apply`, reference = order number, debit
//! `clearing:{channel}:{merchant}`, accounting date = payment day). Idempotent: entries already
//! posted are not posted again, and a second run of the day is a new run with the same results.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use meterpay_gateways::gateway::{Channel, PayMethod, PaymentGateway};
use meterpay_gateways::sandbox::{FilePlant, Sandbox, SimMerchant, SimOrder, SimOrderState};
use serde::Serialize;

use super::{clearing_account, cst, Reconciler, RunRequest, RunSummary, Via};
use crate::config::ReconcileConfig;
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};
use crate::payments::{MerchantRef, PaymentActivity, PaymentsPort, QueryOutcome};
use crate::store::Store;

/// The demo's merchants: (channel, merchant id).
pub const DEMO_MERCHANTS: [(Channel, &str); 3] = [
    (Channel::Alipay, "2021000000009001"),
    (Channel::Wechatpay, "1900009001"),
    (Channel::Unionpay, "777290058119001"),
];
const RATE_PPM: u32 = 6000;

/// What the demo reconciled.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReconciliation {
    pub bill_date: Option<NaiveDate>,
    pub runs: Vec<(i64, RunSummary)>,
}

impl DemoReconciliation {
    pub fn text(&self) -> String {
        let Some(day) = self.bill_date else {
            return String::new();
        };
        let y = |f: i64| format!("{}{}.{:02}", if f < 0 { "-" } else { "" }, f.abs() / 100, f.abs() % 100);
        let mut out = format!("  reconciliation of {day} (sandbox files with planted differences):\n");
        for (id, s) in &self.runs {
            let classes: Vec<String> = s.classes.iter().map(|(k, t)| format!("{k} {}", t.count)).collect();
            out.push_str(&format!(
                "             {:<9} {:<16} run {id}: {} rows, matched {}; {}; net {} yuan ({})\n",
                s.channel.as_str(),
                s.merchant_id,
                s.file.payments.count + s.file.refunds.count,
                s.matched.count,
                if classes.is_empty() {
                    "no differences".into()
                } else {
                    classes.join(", ")
                },
                y(s.net_fen),
                s.outcome
            ));
        }
        out
    }
}

/// The demo's stand-in for payments: its merchants; no order is known to its gateway query.
struct DemoPort;

#[async_trait::async_trait]
impl PaymentsPort for DemoPort {
    async fn merchants(&self) -> anyhow::Result<Vec<MerchantRef>> {
        Ok(DEMO_MERCHANTS
            .iter()
            .map(|(c, m)| MerchantRef {
                channel: *c,
                merchant_id: m.to_string(),
                community_id: 1,
                fee_rate_ppm: RATE_PPM,
            })
            .collect())
    }
    async fn gateway(&self, channel: Channel, merchant_id: &str) -> anyhow::Result<Arc<dyn PaymentGateway>> {
        anyhow::bail!("the demo hands {channel} {merchant_id}'s file over directly")
    }
    async fn query_and_apply(&self, _order_no: &str, _now: DateTime<Utc>) -> anyhow::Result<QueryOutcome> {
        Ok(QueryOutcome::UnknownOrder)
    }
    async fn payment_activity(&self, _a: i64, _s: DateTime<Utc>) -> anyhow::Result<Vec<PaymentActivity>> {
        Ok(Vec::new())
    }
}

fn sandbox() -> anyhow::Result<Sandbox> {
    let sb = crate::tools::sandbox_with_all_gateways(1);
    let key = meterpay_gateways::crypto::load_public_key(
        include_str!("../../fixtures/sandbox/core-test-public.pem").as_bytes(),
    )
    .map_err(|e| anyhow::anyhow!("the sandbox's test key: {e}"))?;
    for (c, m) in DEMO_MERCHANTS {
        sb.register_merchant(SimMerchant {
            channel: c,
            merchant_id: m.into(),
            merchant_public_key: key.clone(),
            fee_rate_ppm: RATE_PPM,
            extra: HashMap::new(),
        });
    }
    // Nobody listens for the sandbox's notifications here: the ledger entries are posted below.
    sb.update_faults(|f| f.drop_notifications = true);
    Ok(sb)
}

/// Pay the day's demo orders at the sandbox, post them by the payments conventions, plant a few
/// differences, reconcile each channel's file and return the summaries.
pub async fn demo_step(store: &Store, bill_date: NaiveDate) -> anyhow::Result<DemoReconciliation> {
    let sb = sandbox()?;
    let noon = cst()
        .from_local_datetime(&bill_date.and_hms_opt(12, 0, 0).unwrap_or_default())
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    sb.advance_clock(noon - sb.now());
    let mut config = ReconcileConfig::default();
    config.alipay_accounts.insert(
        DEMO_MERCHANTS[0].1.into(),
        format!(
            "{}0156",
            meterpay_gateways::sandbox::alipay::pid_for(DEMO_MERCHANTS[0].1)
        ),
    );
    let rec = Reconciler::new(store.clone(), Arc::new(DemoPort), config);
    let mut out = DemoReconciliation {
        bill_date: Some(bill_date),
        runs: Vec::new(),
    };
    let tag = bill_date.format("%Y%m%d");
    for (i, (channel, merchant)) in DEMO_MERCHANTS.iter().enumerate() {
        let orders: Vec<(String, i64)> = (1..=6)
            .map(|k| (format!("D{tag}C{i}N{k:03}"), 5_000 + 1_234 * k as i64))
            .collect();
        for (no, amount) in &orders {
            sb.advance_clock(Duration::minutes(7));
            let now = sb.now();
            sb.create_order(SimOrder {
                channel: *channel,
                merchant_id: merchant.to_string(),
                order_no: no.clone(),
                amount_fen: *amount,
                subject: "水电费 demo".into(),
                notify_url: "http://127.0.0.1:9/notify".into(),
                return_url: None,
                method: PayMethod::Qr,
                created_at: now,
                expires_at: None,
                state: SimOrderState::Created,
                gateway_txn_id: None,
                paid_at: None,
                refunds: Vec::new(),
                extra: HashMap::new(),
            })
            .map_err(|e| anyhow::anyhow!("demo order {no}: {e}"))?;
            sb.pay(*channel, merchant, no)
                .map_err(|e| anyhow::anyhow!("paying demo order {no}: {e}"))?;
            // Posted once: a second demo run finds the entries there. The last order's payment is
            // in our ledger but (planted below) not on the gateway.
            if store.entry_lines("payment.apply", no).await?.is_empty() {
                let e = JournalEntry::transfer(
                    "payment.apply",
                    no,
                    bill_date,
                    "demo",
                    clearing_account(*channel, merchant),
                    LedgerAccount::Suspense,
                    Fen::new(*amount),
                )
                .map_err(|e| anyhow::anyhow!("the demo payment {no}: {e}"))?;
                store.post_entry(&e, now).await?;
            }
        }
        sb.update_faults(|f| {
            f.file_plants = vec![
                FilePlant::DropOrder {
                    order_no: orders[5].0.clone(),
                },
                FilePlant::ExtraPayment {
                    order_no: format!("X{tag}C{i}UNKNOWN"),
                    amount_fen: 8_800,
                },
                FilePlant::ChangeFee {
                    order_no: orders[2].0.clone(),
                    fee_fen: 99,
                },
            ]
        });
        let file = sb
            .settlement_file(*channel, merchant, bill_date)
            .map_err(|e| anyhow::anyhow!("the sandbox's {channel} file: {e}"))?;
        sb.update_faults(|f| f.file_plants.clear());
        let run = rec
            .run(
                RunRequest {
                    channel: *channel,
                    merchant_id: merchant.to_string(),
                    bill_date,
                    file: Some((file, "demo".into())),
                    via: Via::Demo,
                    started_by: "demo".into(),
                },
                Utc::now(),
            )
            .await?;
        out.runs.push((run.run_id, run.summary));
    }
    Ok(out)
}
