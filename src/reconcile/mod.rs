//! Reconciliation (对账): each morning, per channel, merchant and day, the gateway's settlement
//! file against our ledger's gateway-clearing entries (issue 6, domain.md §6, design.md §3).
//!
//! One run ([`Reconciler::run`]):
//! 1. takes the day's file — downloaded through the merchant's gateway client, or given by hand —
//!    and keeps its bytes and SHA-256 ([`crate::store::reconcile`]);
//! 2. parses it with the gateway's parser (columns by name; truncated files, bad encodings and
//!    totals that disagree are refused) and checks that it is this merchant's file of this day;
//!    a refused file leaves nothing behind;
//! 3. matches rows on our order number (payments) or refund number (refunds) against the day's
//!    `payment.apply` / `refund` entries on `clearing:{channel}:{merchant}` ([`matching`]);
//! 4. classifies what is left: rows found booked on the neighbouring day are cross-day matches;
//!    refund rows whose payment we know are status mismatches; other rows are long (长款), and a
//!    long payment is queried at the gateway and, when it is confirmed paid, applied exactly as
//!    its callback would have been ([`crate::payments::PaymentsPort::query_and_apply`]) — resolved
//!    automatically; ledger entries the file lacks are *expected* when they were recorded within
//!    `cross_day_window_minutes` of the day's cut-off (midnight, or 23:00 for UnionPay's clearing
//!    day) until `grace_hours` after it, and short (短款) otherwise;
//! 5. saves the run, its items and its automatic decisions in one transaction; a re-run of the
//!    day becomes the current run, earlier runs stay as history. Decisions are keyed by the
//!    item's stable key within its day, so a re-run finds the same items with the same
//!    decisions: the same inputs give the same results ([`RunSummary::results_sha256`]);
//! 6. settles the day when nothing is left open ([`Reconciler::settle_day`]): clearing → bank and
//!    fee expense, so the day's clearing balance is zero.
//!
//! What is not resolved automatically is resolved by finance ([`Reconciler::resolve`]) with a
//! decision, a reason and a person; each decision posts one balanced journal entry (kind
//! `recon.resolve`), nothing is edited. [`report`] builds the morning summary (JSON, CSV, XLSX)
//! and e-mails it.
//!
//! Public entry points others call: [`Reconciler::run`] (a run), [`Reconciler::resolve`],
//! [`Reconciler::settle_day`], [`report::morning_report`] and [`report::MorningReport`] (the
//! finance page's data), [`report::send_report`], [`cron_jobs`], [`demo::demo_step`].

pub mod cli;
pub mod demo;
pub mod matching;
pub mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use meterpay_gateways::alipay::settlement::DetailEncoding;
use meterpay_gateways::gateway::Channel;
use meterpay_gateways::settlement::{RowKind, SettlementError, SettlementFile, SettlementRow};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ReconcileConfig;
use crate::domain::Fen;
use crate::ledger::{JournalEntry, LedgerAccount};
use crate::payments::{PaymentsPort, QueryOutcome};
use crate::store::reconcile::{NewResolution, NewRun, PAYMENT_KIND};
use crate::store::{Store, StoreError};
use matching::{kind_str, match_day, reference_of, signed, Class, Item, LedgerItem, Tally};

/// Journal kind of a finance decision's entry.
pub const RESOLVE_KIND: &str = "recon.resolve";
/// Journal kind of a day's settlement entry.
pub const SETTLEMENT_KIND: &str = "settlement";

/// Why a run, a decision or a settlement did not happen. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{channel} merchant {merchant} is not configured")]
    UnknownMerchant { channel: Channel, merchant: String },
    #[error("downloading the {channel} settlement file of {day} for {merchant}: {detail}")]
    Download {
        channel: Channel,
        merchant: String,
        day: NaiveDate,
        detail: String,
    },
    #[error("the {channel} settlement file is refused ({detail}); nothing was imported")]
    BadFile { channel: Channel, detail: String },
    #[error("the file is {found}'s, not {expected}'s; nothing was imported")]
    WrongMerchant { expected: String, found: String },
    #[error("the file is for {found}, not {expected}; nothing was imported")]
    WrongDay { expected: NaiveDate, found: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:#}")]
    Port(anyhow::Error),
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Schedule,
    Cli,
    Api,
    Demo,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Schedule => "schedule",
            Via::Cli => "cli",
            Via::Api => "api",
            Via::Demo => "demo",
        }
    }
}

/// Start a run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub channel: Channel,
    pub merchant_id: String,
    pub bill_date: NaiveDate,
    /// The file's bytes and where they came from (`file:<name>`, `upload`); `None` downloads it.
    pub file: Option<(Vec<u8>, String)>,
    pub via: Via,
    pub started_by: String,
}

/// The file's own totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTotals {
    pub sha256: String,
    pub size_bytes: u64,
    pub payments: Tally,
    pub refunds: Tally,
    /// Σ fees, half-up to the fen once over the exact sum.
    pub fees_fen: i64,
}

/// One run's summary: what the file and the ledger hold, and what matching found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub channel: Channel,
    pub merchant_id: String,
    pub bill_date: NaiveDate,
    pub file: FileTotals,
    pub ledger_payments: Tally,
    pub ledger_refunds: Tally,
    /// Rows matched by reference and amount (signed amount: refunds negative).
    pub matched: Tally,
    /// Entries of this day the neighbouring days' files held (cross-day, matched there).
    pub matched_elsewhere: Tally,
    /// Items by class (`long`, `short`, …), with their differences summed.
    pub classes: BTreeMap<String, Tally>,
    /// From the file: payments, refunds, fees and net settlement (gross − refunds − fees).
    pub gross_fen: i64,
    pub refunds_fen: i64,
    pub fees_fen: i64,
    pub net_fen: i64,
    /// `balanced`, `balanced_with_pending` or `exceptions`, when the run finished.
    pub outcome: String,
    /// SHA-256 over the summary's figures and the items: equal inputs give equal values.
    pub results_sha256: String,
}

/// What a run gives back.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: i64,
    pub summary: RunSummary,
    pub items: Vec<Item>,
    /// Whether the day was settled after the run.
    pub settled: bool,
}

/// A finance decision (domain.md §6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Book the money the gateway holds (into suspense, 挂账, until it is placed).
    PostPayment,
    /// The money goes back to the payer (owed as `payable:refunds`), or a refund the gateway
    /// made is recorded.
    Refund,
    /// Accept the difference (write-off expense or income).
    WriteOff,
    /// Carry the difference over in suspense to a later day.
    CarryOver,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::PostPayment => "post_payment",
            Decision::Refund => "refund",
            Decision::WriteOff => "write_off",
            Decision::CarryOver => "carry_over",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "post_payment" => Ok(Decision::PostPayment),
            "refund" => Ok(Decision::Refund),
            "write_off" => Ok(Decision::WriteOff),
            "carry_over" => Ok(Decision::CarryOver),
            other => Err(format!(
                "unknown decision {other:?} (expected post_payment, refund, write_off or carry_over)"
            )),
        }
    }
}

/// The state of an item as finance sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Open,
    /// Expected in the next day's file, within the grace period.
    Expected,
    /// Was expected; the grace period is over: counts as short.
    Escalated,
    AutoResolved,
    Resolved,
}

/// The state of a stored item at `now`.
pub fn item_state(item: &crate::store::reconcile::ItemRow, now: DateTime<Utc>) -> ItemState {
    match item.decision.as_deref() {
        Some(d) if d.starts_with("auto_") => return ItemState::AutoResolved,
        Some(_) => return ItemState::Resolved,
        None => {}
    }
    if item.class.as_str() == Class::CrossDay.as_str() {
        return ItemState::AutoResolved;
    }
    if item.class.as_str() == Class::Expected.as_str() {
        return match item.expected_until {
            Some(t) if now < t => ItemState::Expected,
            _ => ItemState::Escalated,
        };
    }
    ItemState::Open
}

/// China Standard Time.
pub fn cst() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}

/// The instant a bill day ends at the gateway: midnight Beijing time, or 23:00 for UnionPay,
/// whose clearing day runs 23:00 → 23:00.
pub fn day_end(channel: Channel, day: NaiveDate) -> DateTime<Utc> {
    let local = match channel {
        Channel::Unionpay => day.and_time(NaiveTime::from_hms_opt(23, 0, 0).expect("23:00")),
        Channel::Alipay | Channel::Wechatpay => day.succ_opt().unwrap_or(day).and_time(NaiveTime::MIN),
    };
    cst()
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// The ledger's gateway-clearing account of a merchant (`clearing:{channel}:{merchant}`).
pub fn clearing_account(channel: Channel, merchant: &str) -> LedgerAccount {
    use crate::domain::ids::Channel as LedgerChannel;
    LedgerAccount::GatewayClearing {
        channel: match channel {
            Channel::Alipay => LedgerChannel::Alipay,
            Channel::Wechatpay => LedgerChannel::Wechatpay,
            Channel::Unionpay => LedgerChannel::Unionpay,
        },
        merchant: merchant.to_string(),
    }
}

/// Runs reconciliations, records finance's decisions and settles days.
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    port: Arc<dyn PaymentsPort>,
    config: ReconcileConfig,
}

impl Reconciler {
    pub fn new(store: Store, port: Arc<dyn PaymentsPort>, config: ReconcileConfig) -> Reconciler {
        Reconciler { store, port, config }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &ReconcileConfig {
        &self.config
    }

    /// Run one (channel, merchant, day). See the module docs for the steps.
    #[tracing::instrument(skip_all, fields(channel = %req.channel, merchant = %req.merchant_id, day = %req.bill_date))]
    pub async fn run(&self, req: RunRequest, now: DateTime<Utc>) -> Result<RunOutcome, ReconcileError> {
        let merchant = self
            .port
            .merchants()
            .await
            .map_err(ReconcileError::Port)?
            .into_iter()
            .find(|m| m.channel == req.channel && m.merchant_id == req.merchant_id)
            .ok_or_else(|| ReconcileError::UnknownMerchant {
                channel: req.channel,
                merchant: req.merchant_id.clone(),
            })?;
        let (bytes, source) = match req.file {
            Some(f) => f,
            None => (self.download(&req).await?, "download".to_string()),
        };
        // The file is parsed first, on a blocking thread (it is CPU work and uses every core),
        // then the day's clearing entries are read. Reading both at once was tried: faster by
        // about a second, but both halves' memory live at once went over 600 MiB.
        let bytes = Arc::new(bytes);
        let parse = {
            let (bytes, merchant) = (bytes.clone(), req.merchant_id.clone());
            let account = self.config.alipay_accounts.get(&req.merchant_id).cloned();
            let (channel, day) = (req.channel, req.bill_date);
            tokio::task::spawn_blocking(move || parse_checked(channel, &merchant, day, &bytes, account.as_deref()))
        };
        let parsed = parse.await.map_err(|e| ReconcileError::BadFile {
            channel: req.channel,
            detail: format!("the parse stopped: {e}"),
        })?;
        let (file, lean) = parsed?;
        let ledger = self
            .store
            .recon_clearing_day(req.channel, &req.merchant_id, req.bill_date)
            .await?;
        let day = DayInput {
            channel: req.channel,
            merchant: &req.merchant_id,
            bill_date: req.bill_date,
            fee_rate_ppm: merchant.fee_rate_ppm,
        };
        let (mut items, mut matched, mut elsewhere, resolutions) = self.classify(&day, &file, &ledger, now).await?;
        let backfilled = self
            .carry_prior_decisions(&day, &mut items, &mut matched, &mut elsewhere)
            .await?;
        if let Some(encoding) = lean {
            read_back_lines(req.channel, &bytes, encoding, &mut items)?;
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        let summary = summarise(
            &day,
            &file,
            bytes.len(),
            &ledger,
            &backfilled,
            matched,
            elsewhere,
            &items,
        );
        let run_id = self
            .store
            .recon_save_run(
                &NewRun {
                    channel: req.channel,
                    merchant_id: &req.merchant_id,
                    bill_date: req.bill_date,
                    file_bytes: &bytes,
                    file_sha256: &file.file_sha256,
                    file_source: &source,
                    started_via: req.via.as_str(),
                    started_by: &req.started_by,
                    started_at: now,
                    outcome: &summary.outcome,
                    summary_json: serde_json::to_string(&summary).unwrap_or_default(),
                    results_sha256: summary.results_sha256.clone(),
                    items: &items,
                    resolutions: &resolutions,
                },
                now,
            )
            .await?;
        tracing::info!(
            run_id,
            rows = file.rows.len(),
            items = items.len(),
            outcome = %summary.outcome,
            "reconciliation run saved"
        );
        let settled = if self.config.auto_settle {
            self.settle_if_clear(req.channel, &req.merchant_id, req.bill_date, now)
                .await?
        } else {
            false
        };
        Ok(RunOutcome {
            run_id,
            summary,
            items,
            settled,
        })
    }

    async fn download(&self, req: &RunRequest) -> Result<Vec<u8>, ReconcileError> {
        let err = |detail: String| ReconcileError::Download {
            channel: req.channel,
            merchant: req.merchant_id.clone(),
            day: req.bill_date,
            detail,
        };
        let gw = self
            .port
            .gateway(req.channel, &req.merchant_id)
            .await
            .map_err(|e| err(format!("{e:#}")))?;
        gw.download_settlement(req.bill_date)
            .await
            .map_err(|e| err(e.to_string()))
    }

    /// Everything after the pure match: rows the day lacks, entries the file lacks.
    async fn classify(
        &self,
        day: &DayInput<'_>,
        file: &SettlementFile,
        ledger: &[LedgerItem],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Item>, Tally, Tally, Vec<NewResolution>), ReconcileError> {
        let m = match_day(&file.rows, ledger, day.fee_rate_ppm, self.config.fee_tolerance_fen);
        let mut items = m.items;
        let mut matched = m.matched;
        let mut resolutions = Vec::new();

        // Rows our ledger does not hold on this day.
        let refs: Vec<(RowKind, String)> = m
            .file_only
            .iter()
            .map(|r| (r.kind, reference_of(r).to_string()))
            .collect();
        let elsewhere: HashMap<(RowKind, String), LedgerItem> = self
            .store
            .recon_clearing_by_refs(day.channel, day.merchant, &refs)
            .await?
            .into_iter()
            .map(|e| ((e.kind, e.reference.clone()), e))
            .collect();
        let refund_orders: Vec<String> = m
            .file_only
            .iter()
            .filter(|r| r.kind == RowKind::Refund && !r.order_no.is_empty())
            .map(|r| r.order_no.clone())
            .collect();
        let paid_orders = self.store.recon_paid_orders(&refund_orders).await?;
        let mut neighbour_runs: HashMap<NaiveDate, Option<Vec<crate::store::reconcile::ItemRow>>> = HashMap::new();
        for row in &m.file_only {
            let reference = reference_of(row).to_string();
            if let Some(e) = elsewhere.get(&(row.kind, reference.clone())) {
                let gap = (e.accounting_date - day.bill_date).num_days().abs();
                if gap <= 1 {
                    if e.amount_fen != row.amount_fen {
                        items.push(matching::amount_item(row, e));
                    } else {
                        let mut it = Item::from_row(
                            Class::CrossDay,
                            row,
                            format!(
                                "booked on {} in our ledger; the gateway filed it on {}",
                                e.accounting_date, day.bill_date
                            ),
                        );
                        it.ledger_amount_fen = Some(e.amount_fen);
                        it.ledger_date = Some(e.accounting_date);
                        it.difference_fen = 0;
                        items.push(it);
                        matched.add(signed(row.kind, row.amount_fen));
                    }
                    // Close the neighbouring day's expected or short item, if it has one.
                    let runs = match neighbour_runs.get(&e.accounting_date) {
                        Some(v) => v.clone(),
                        None => {
                            let v = self.current_items(day, e.accounting_date).await?;
                            neighbour_runs.insert(e.accounting_date, v.clone());
                            v
                        }
                    };
                    for class in [Class::Expected, Class::Short] {
                        let key = Item::key_for(class, row.kind, &reference);
                        if runs.iter().flatten().any(|i| i.item_key == key && i.decision.is_none()) {
                            resolutions.push(NewResolution {
                                channel: day.channel,
                                merchant_id: day.merchant.to_string(),
                                bill_date: e.accounting_date,
                                item_key: key,
                                decision: "auto_cross_day".into(),
                                reason: format!("the gateway filed it on {}", day.bill_date),
                                decided_by: "system".into(),
                                journal: None,
                                evidence: serde_json::json!({
                                    "rule": "R2 cross-day: found in the neighbouring day's file",
                                    "file_day": day.bill_date,
                                    "gateway_txn_id": row.gateway_txn_id,
                                    "amount_fen": row.amount_fen,
                                }),
                            });
                        }
                    }
                } else {
                    let mut it = Item::from_row(
                        Class::Long,
                        row,
                        format!(
                            "our ledger booked it on {}, more than a day from the file's day",
                            e.accounting_date
                        ),
                    );
                    it.ledger_amount_fen = Some(e.amount_fen);
                    it.ledger_date = Some(e.accounting_date);
                    items.push(it);
                }
                continue;
            }
            match row.kind {
                RowKind::Refund if paid_orders.contains(&row.order_no) => items.push(Item::from_row(
                    Class::Status,
                    row,
                    format!(
                        "the gateway refunded order {} but our ledger shows no refund {}",
                        row.order_no, reference
                    ),
                )),
                RowKind::Refund => items.push(Item::from_row(
                    Class::Long,
                    row,
                    "a refund of an order our ledger does not show paid".into(),
                )),
                RowKind::Payment => {
                    let (item, resolution) = self.long_payment(day, row, now).await;
                    items.push(item);
                    resolutions.extend(resolution);
                }
            }
        }

        // Entries the file does not hold.
        let claims = self
            .store
            .recon_claims_on(day.channel, day.merchant, day.bill_date)
            .await?;
        let mut claimed = Tally::default();
        let end = day_end(day.channel, day.bill_date);
        let start = end - Duration::days(1);
        let window = Duration::minutes(self.config.cross_day_window_minutes);
        for &i in &m.ledger_only {
            let e = &ledger[i];
            if claims.contains(&(kind_str(e.kind).to_string(), e.reference.clone())) {
                claimed.add(signed(e.kind, e.amount_fen));
                continue;
            }
            let near = (e.posted_at - end).abs() <= window || (e.posted_at - start).abs() <= window;
            if near {
                let mut it = Item::from_ledger(
                    Class::Expected,
                    e,
                    format!(
                        "recorded at {} (Beijing), within {} minutes of the cut-off: expected in the neighbouring day's file",
                        e.posted_at.with_timezone(&cst()).format("%Y-%m-%d %H:%M:%S"),
                        self.config.cross_day_window_minutes
                    ),
                );
                it.expected_until = Some(end + Duration::hours(self.config.grace_hours));
                items.push(it);
            } else {
                items.push(Item::from_ledger(
                    Class::Short,
                    e,
                    "in our ledger, not in the gateway's file".into(),
                ));
            }
        }
        Ok((items, matched, claimed, resolutions))
    }

    async fn current_items(
        &self,
        day: &DayInput<'_>,
        date: NaiveDate,
    ) -> Result<Option<Vec<crate::store::reconcile::ItemRow>>, ReconcileError> {
        let runs = self
            .store
            .recon_runs(Some(day.channel), Some(day.merchant), Some(date), true)
            .await?;
        match runs.first() {
            Some(r) => Ok(Some(self.store.recon_run_items(r.id).await?)),
            None => Ok(None),
        }
    }

    /// A payment the gateway has and our ledger does not: ask the gateway, and apply it when
    /// the gateway confirms it paid (rule R1).
    async fn long_payment(
        &self,
        day: &DayInput<'_>,
        row: &SettlementRow,
        now: DateTime<Utc>,
    ) -> (Item, Option<NewResolution>) {
        match self.port.query_and_apply(&row.order_no, now).await {
            Ok(QueryOutcome::AppliedNow { amount, gateway_txn_id }) => {
                let item = Item::from_row(
                    Class::Long,
                    row,
                    "paid at the gateway, not in our ledger: the gateway's query confirmed it and it was applied".into(),
                );
                let res = NewResolution {
                    channel: day.channel,
                    merchant_id: day.merchant.to_string(),
                    bill_date: day.bill_date,
                    item_key: item.key.clone(),
                    decision: "auto_backfill".into(),
                    reason: "补单: the gateway's order query confirmed the payment; applied as its callback would have been"
                        .into(),
                    decided_by: "system".into(),
                    journal: Some((PAYMENT_KIND.into(), row.order_no.clone())),
                    evidence: serde_json::json!({
                        "rule": "R1 long: order query confirms paid",
                        "file_amount_fen": row.amount_fen,
                        "applied_amount_fen": amount.get(),
                        "gateway_txn_id": gateway_txn_id,
                    }),
                };
                (item, Some(res))
            }
            Ok(QueryOutcome::AlreadyApplied) => (
                Item::from_row(
                    Class::Long,
                    row,
                    "the gateway's query says paid and payments already applied it, but not to this merchant's clearing on this day".into(),
                ),
                None,
            ),
            Ok(QueryOutcome::NotPaid { state }) => (
                Item::from_row(
                    Class::Long,
                    row,
                    format!("the file shows it paid; the gateway's order query answers {state}"),
                ),
                None,
            ),
            Ok(QueryOutcome::UnknownOrder) => (
                Item::from_row(
                    Class::Long,
                    row,
                    "no order of ours has this number: hold in suspense and contact the payer".into(),
                ),
                None,
            ),
            Err(e) => (
                Item::from_row(
                    Class::Long,
                    row,
                    format!("paid at the gateway, not in our ledger; the gateway could not be asked: {e:#}"),
                ),
                None,
            ),
        }
    }

    /// Items of the day's previous run that a decision closed and whose difference the decision
    /// removed (a backfilled payment now matches; an expected entry was matched by the next
    /// day's run) are carried into the new run, so a re-run gives the same results. Returns the
    /// references whose ledger entries those decisions posted (the summary's ledger figures are
    /// the ledger as the day's first run found it).
    async fn carry_prior_decisions(
        &self,
        day: &DayInput<'_>,
        items: &mut Vec<Item>,
        matched: &mut Tally,
        elsewhere: &mut Tally,
    ) -> Result<HashSet<(RowKind, String)>, ReconcileError> {
        let mut posted = HashSet::new();
        let Some(prior) = self.current_items(day, day.bill_date).await? else {
            return Ok(posted);
        };
        let keys: HashSet<String> = items.iter().map(|i| i.key.clone()).collect();
        for p in prior {
            if p.decision.is_none() || keys.contains(&p.item_key) {
                continue;
            }
            let item = p.to_item();
            let kind = matching::parse_kind(&item.kind).unwrap_or(RowKind::Payment);
            match item.class {
                Class::Long | Class::Status => {
                    let amount = signed(kind, item.file_amount_fen.unwrap_or(0));
                    matched.count = matched.count.saturating_sub(1);
                    matched.amount_fen -= amount;
                    posted.insert((kind, item.reference().to_string()));
                }
                Class::Expected | Class::Short => {
                    let amount = signed(kind, item.ledger_amount_fen.unwrap_or(0));
                    elsewhere.count = elsewhere.count.saturating_sub(1);
                    elsewhere.amount_fen -= amount;
                }
                Class::Amount | Class::Duplicate | Class::Fee | Class::CrossDay => {}
            }
            items.push(item);
        }
        Ok(posted)
    }

    async fn settle_if_clear(
        &self,
        channel: Channel,
        merchant: &str,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<bool, ReconcileError> {
        match self.settle_day(channel, merchant, day, now).await {
            Ok(s) => Ok(s.posted),
            Err(ReconcileError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Post the day's settlement: clearing → bank and fee expense, so that the day's clearing is
    /// empty. Refused (Conflict) while the day's current run has items without a decision.
    pub async fn settle_day(
        &self,
        channel: Channel,
        merchant: &str,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Settlement, ReconcileError> {
        let run = self
            .store
            .recon_runs(Some(channel), Some(merchant), Some(day), true)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ReconcileError::NotFound(format!("a reconciliation run of {channel} {merchant} on {day}"))
            })?;
        let open = self
            .store
            .recon_run_items(run.id)
            .await?
            .into_iter()
            .filter(|i| i.decision.is_none() && i.class != Class::CrossDay.as_str())
            .count();
        if open > 0 {
            return Err(ReconcileError::Conflict(format!(
                "{channel} {merchant} {day} has {open} item(s) without a decision: it cannot be settled yet"
            )));
        }
        let reference = format!("{channel}:{merchant}:{day}");
        if self.store.recon_entry_exists(SETTLEMENT_KIND, &reference).await? {
            return Ok(Settlement {
                reference,
                posted: false,
                clearing_fen: 0,
                fees_fen: 0,
                bank_fen: 0,
            });
        }
        let summary: RunSummary = serde_json::from_str(&run.summary_json)
            .map_err(|e| ReconcileError::Invalid(format!("the run's stored summary cannot be read: {e}")))?;
        let clearing = self
            .store
            .recon_clearing_balance_on(channel, merchant, day)
            .await?
            .get();
        let fees = summary.fees_fen;
        let bank = clearing - fees;
        let lines: Vec<(LedgerAccount, Fen)> = [
            (clearing_account(channel, merchant), -clearing),
            (LedgerAccount::GatewayFees, fees),
            (LedgerAccount::Bank, bank),
        ]
        .into_iter()
        .filter(|(_, a)| *a != 0)
        .map(|(acct, a)| (acct, Fen::new(a)))
        .collect();
        let posted = if lines.len() >= 2 {
            let entry = JournalEntry::new(SETTLEMENT_KIND, &reference, day, "reconcile", lines)
                .map_err(|e| ReconcileError::Invalid(format!("building the settlement entry: {e}")))?
                .with_memo(format!(
                    "settlement of {channel} {merchant} {day}: gross {} refunds {} fees {} net {}",
                    summary.gross_fen, summary.refunds_fen, summary.fees_fen, summary.net_fen
                ));
            match self.store.post_entry(&entry, now).await {
                Ok(()) => true,
                Err(e) if e.is_duplicate() => false,
                Err(e) => return Err(e.into()),
            }
        } else {
            false
        };
        Ok(Settlement {
            reference,
            posted,
            clearing_fen: clearing,
            fees_fen: fees,
            bank_fen: bank,
        })
    }

    /// Finance's decision on an item: recorded with its reason and person, and posted as one
    /// balanced entry (kind `recon.resolve`, accounting date = the item's bill date).
    pub async fn resolve(
        &self,
        item_id: i64,
        decision: Decision,
        reason: &str,
        person: &str,
        now: DateTime<Utc>,
    ) -> Result<Resolved, ReconcileError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ReconcileError::Invalid("a decision needs a reason".into()));
        }
        let item = self
            .store
            .recon_item(item_id)
            .await?
            .ok_or_else(|| ReconcileError::NotFound(format!("reconciliation item {item_id}")))?;
        let run = self
            .store
            .recon_run(item.run_id)
            .await?
            .ok_or_else(|| ReconcileError::NotFound(format!("reconciliation run {}", item.run_id)))?;
        if !run.is_current {
            return Err(ReconcileError::Conflict(format!(
                "item {item_id} belongs to run {} which a later run of the day replaced; resolve the current run's item",
                run.id
            )));
        }
        if item.decision.is_some() {
            return Err(ReconcileError::Conflict(format!(
                "item {item_id} already has a decision"
            )));
        }
        match item_state(&item, now) {
            ItemState::Expected => {
                return Err(ReconcileError::Conflict(format!(
                    "item {item_id} is expected in the next day's file until {}; decide after that",
                    item.expected_until.map(|t| t.to_rfc3339()).unwrap_or_default()
                )))
            }
            ItemState::AutoResolved | ItemState::Resolved => {
                return Err(ReconcileError::Conflict(format!("item {item_id} is already resolved")))
            }
            ItemState::Open | ItemState::Escalated => {}
        }
        let channel: Channel = item.channel.parse().map_err(|e: String| ReconcileError::Invalid(e))?;
        let class = item
            .class()
            .ok_or_else(|| ReconcileError::Invalid(format!("unknown class {}", item.class)))?;
        let clearing = clearing_account(channel, &item.merchant_id);
        let d = item.difference_fen;
        let (debit, credit) = decision_accounts(class, decision, d, clearing)?;
        let reference = format!(
            "{}:{}:{}:{}",
            item.channel, item.merchant_id, item.bill_date, item.item_key
        );
        let entry = JournalEntry::transfer(
            RESOLVE_KIND,
            &reference,
            item.bill_date,
            person,
            debit,
            credit,
            Fen::new(d.abs()),
        )
        .map_err(|e| ReconcileError::Invalid(format!("building the decision's entry: {e}")))?
        .with_memo(format!("{} of {}: {reason}", decision.as_str(), item.item_key));
        let resolution = NewResolution {
            channel,
            merchant_id: item.merchant_id.clone(),
            bill_date: item.bill_date,
            item_key: item.item_key.clone(),
            decision: decision.as_str().into(),
            reason: reason.to_string(),
            decided_by: person.to_string(),
            journal: Some((RESOLVE_KIND.into(), reference.clone())),
            evidence: serde_json::json!({ "item_id": item_id, "class": item.class, "difference_fen": d }),
        };
        match self.store.recon_resolve(&resolution, Some(&entry), now).await {
            Ok(()) => {}
            Err(e) if e.is_duplicate() => {
                return Err(ReconcileError::Conflict(format!(
                    "item {item_id} already has a decision"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            item_id,
            decision = decision.as_str(),
            person,
            "reconciliation decision recorded"
        );
        let settled = if self.config.auto_settle {
            self.settle_if_clear(channel, &item.merchant_id, item.bill_date, now)
                .await?
        } else {
            false
        };
        Ok(Resolved {
            item_id,
            decision,
            journal_reference: reference,
            amount_fen: d.abs(),
            settled,
        })
    }
}

/// The day a run is about.
struct DayInput<'a> {
    channel: Channel,
    merchant: &'a str,
    bill_date: NaiveDate,
    fee_rate_ppm: u32,
}

/// What settling a day posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settlement {
    pub reference: String,
    /// False when the day was settled before, or had nothing to settle.
    pub posted: bool,
    pub clearing_fen: i64,
    pub fees_fen: i64,
    pub bank_fen: i64,
}

/// What a decision did.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub item_id: i64,
    pub decision: Decision,
    pub journal_reference: String,
    pub amount_fen: i64,
    pub settled: bool,
}

/// Which accounts a decision moves money between (debit, credit), for an item whose
/// difference is `d` (what the gateway holds beyond our ledger; for fee items, the fee charged
/// beyond the contract).
fn decision_accounts(
    class: Class,
    decision: Decision,
    d: i64,
    clearing: LedgerAccount,
) -> Result<(LedgerAccount, LedgerAccount), ReconcileError> {
    let refunds = LedgerAccount::Payable { name: "refunds".into() };
    if d == 0 {
        return Err(ReconcileError::Invalid(
            "the item has no difference to post; nothing to decide".into(),
        ));
    }
    let bad = |why: &str| {
        Err(ReconcileError::Invalid(format!(
            "{} does not apply to a {} item: {why}",
            decision.as_str(),
            class.as_str()
        )))
    };
    if class == Class::Fee {
        // Fees are booked from the file at settlement; a decision reclassifies the difference.
        return match (decision, d > 0) {
            (Decision::WriteOff, true) => Ok((LedgerAccount::WriteOff, LedgerAccount::GatewayFees)),
            (Decision::WriteOff, false) => Ok((LedgerAccount::GatewayFees, LedgerAccount::WriteOff)),
            (Decision::CarryOver, true) => Ok((LedgerAccount::Suspense, LedgerAccount::GatewayFees)),
            (Decision::CarryOver, false) => Ok((LedgerAccount::GatewayFees, LedgerAccount::Suspense)),
            (Decision::PostPayment | Decision::Refund, _) => bad("a fee difference is written off or carried over"),
        };
    }
    match (decision, d > 0) {
        (Decision::PostPayment, true) => Ok((clearing, LedgerAccount::Suspense)),
        (Decision::PostPayment, false) => bad("the gateway holds less than our ledger; there is no payment to post"),
        (Decision::Refund, true) => Ok((clearing, refunds)),
        (Decision::Refund, false) => Ok((LedgerAccount::Suspense, clearing)),
        (Decision::WriteOff, true) => Ok((clearing, LedgerAccount::WriteOff)),
        (Decision::WriteOff, false) => Ok((LedgerAccount::WriteOff, clearing)),
        (Decision::CarryOver, true) => Ok((clearing, LedgerAccount::Suspense)),
        (Decision::CarryOver, false) => Ok((LedgerAccount::Suspense, clearing)),
    }
}

/// The text of the rows behind `items` that a lean parse left out, read back from the file by
/// line number (only these lines are decoded).
fn read_back_lines(
    channel: Channel,
    bytes: &[u8],
    encoding: DetailEncoding,
    items: &mut [Item],
) -> Result<(), ReconcileError> {
    let lines: Vec<u32> = items
        .iter()
        .filter(|i| i.original_line.is_none())
        .filter_map(|i| i.file_line)
        .collect();
    if lines.is_empty() {
        return Ok(());
    }
    let text = meterpay_gateways::alipay::settlement::original_lines(bytes, encoding, &lines).map_err(|e| {
        ReconcileError::BadFile {
            channel,
            detail: format!("reading back the rows the run reports: {e}"),
        }
    })?;
    for it in items.iter_mut().filter(|i| i.original_line.is_none()) {
        if let Some(line) = it.file_line {
            // Several items may be about one row (an amount and a fee difference).
            it.original_line = text.get(&line).cloned();
        }
    }
    Ok(())
}

/// Parse a settlement file of `channel` and check it is `merchant`'s file of `day`. An Alipay
/// detail is read lean (rows without their text, see
/// [`meterpay_gateways::alipay::settlement::parse_lean`]); its encoding is returned for reading
/// the reported rows back.
pub fn parse_checked(
    channel: Channel,
    merchant: &str,
    day: NaiveDate,
    bytes: &[u8],
    alipay_account: Option<&str>,
) -> Result<(SettlementFile, Option<DetailEncoding>), ReconcileError> {
    let bad = |e: SettlementError| ReconcileError::BadFile {
        channel,
        detail: e.to_string(),
    };
    match channel {
        Channel::Alipay => {
            let id = meterpay_gateways::alipay::settlement::identity(bytes).map_err(bad)?;
            if id.day != day {
                return Err(ReconcileError::WrongDay {
                    expected: day,
                    found: id.day.to_string(),
                });
            }
            if let Some(acct) = alipay_account {
                if id.account != acct {
                    return Err(ReconcileError::WrongMerchant {
                        expected: acct.to_string(),
                        found: id.account,
                    });
                }
            }
            let (file, encoding) = meterpay_gateways::alipay::settlement::parse_lean(bytes).map_err(bad)?;
            Ok((file, Some(encoding)))
        }
        Channel::Wechatpay => {
            let file = meterpay_gateways::wechatpay::settlement::parse(bytes).map_err(bad)?;
            check_wechat_identity(&file, merchant, day)?;
            Ok((file, None))
        }
        Channel::Unionpay => {
            let f = meterpay_gateways::unionpay::settlement::parse_file(bytes).map_err(bad)?;
            if f.mer_id != merchant {
                return Err(ReconcileError::WrongMerchant {
                    expected: merchant.to_string(),
                    found: f.mer_id,
                });
            }
            if f.settle_date != day {
                return Err(ReconcileError::WrongDay {
                    expected: day,
                    found: f.settle_date.to_string(),
                });
            }
            Ok((f.settlement, None))
        }
    }
}

/// A WeChat trade bill names the merchant (`商户号`) on every row and holds one Beijing day.
fn check_wechat_identity(file: &SettlementFile, merchant: &str, day: NaiveDate) -> Result<(), ReconcileError> {
    for row in &file.rows {
        // Field 3 (`商户号`) of the current layouts; the line keeps its back-ticks.
        let fields: Vec<&str> = row.original_line.split(",`").collect();
        if let Some(m) = fields.get(2) {
            let m = m.trim_start_matches('`');
            if m != merchant {
                return Err(ReconcileError::WrongMerchant {
                    expected: merchant.to_string(),
                    found: m.to_string(),
                });
            }
        }
        if row.time.date() != day {
            return Err(ReconcileError::WrongDay {
                expected: day,
                found: format!("rows of {}", row.time.date()),
            });
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    day: &DayInput<'_>,
    file: &SettlementFile,
    size: usize,
    ledger: &[LedgerItem],
    backfilled: &HashSet<(RowKind, String)>,
    matched: Tally,
    elsewhere: Tally,
    items: &[Item],
) -> RunSummary {
    let mut fees = Decimal::ZERO;
    let (mut payments, mut refunds) = (Tally::default(), Tally::default());
    for r in &file.rows {
        match r.kind {
            RowKind::Payment => payments.add(r.amount_fen),
            RowKind::Refund => refunds.add(r.amount_fen),
        }
        fees += r.fee.trim().parse::<Decimal>().unwrap_or(Decimal::ZERO);
    }
    let fees_fen = matching::fee_text_fen(&fees.to_string()).unwrap_or(0);
    let (mut lp, mut lr) = (Tally::default(), Tally::default());
    for e in ledger {
        if !backfilled.is_empty() && backfilled.contains(&(e.kind, e.reference.clone())) {
            continue;
        }
        match e.kind {
            RowKind::Payment => lp.add(e.amount_fen),
            RowKind::Refund => lr.add(e.amount_fen),
        }
    }
    let mut classes: BTreeMap<String, Tally> = BTreeMap::new();
    for it in items {
        classes
            .entry(it.class.as_str().to_string())
            .or_default()
            .add(it.difference_fen);
    }
    let open_exceptions = items
        .iter()
        .any(|i| !matches!(i.class, Class::Expected | Class::CrossDay));
    let pending = items.iter().any(|i| i.class == Class::Expected);
    let outcome = if open_exceptions {
        "exceptions"
    } else if pending {
        "balanced_with_pending"
    } else {
        "balanced"
    };
    let mut s = RunSummary {
        channel: day.channel,
        merchant_id: day.merchant.to_string(),
        bill_date: day.bill_date,
        file: FileTotals {
            sha256: file.file_sha256.clone(),
            size_bytes: size as u64,
            payments,
            refunds,
            fees_fen,
        },
        ledger_payments: lp,
        ledger_refunds: lr,
        matched,
        matched_elsewhere: elsewhere,
        classes,
        gross_fen: payments.amount_fen,
        refunds_fen: refunds.amount_fen,
        fees_fen,
        net_fen: payments.amount_fen - refunds.amount_fen - fees_fen,
        outcome: outcome.to_string(),
        results_sha256: String::new(),
    };
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&s).unwrap_or_default());
    for it in items {
        h.update(serde_json::to_vec(it).unwrap_or_default());
        h.update(b"\n");
    }
    s.results_sha256 = hex::encode(h.finalize());
    s
}

/// The cron jobs: one per channel at its configured time (Beijing), reconciling the previous day
/// for every configured merchant of the channel, then the morning report to finance.
pub fn cron_jobs(config: Arc<crate::config::Config>) -> anyhow::Result<Vec<crate::jobs::CronJob>> {
    let rc = config.reconcile.clone();
    if !rc.enabled {
        return Ok(Vec::new());
    }
    let mut jobs = Vec::new();
    for (channel, at) in [
        (Channel::Alipay, rc.alipay_at.clone()),
        (Channel::Wechatpay, rc.wechatpay_at.clone()),
        (Channel::Unionpay, rc.unionpay_at.clone()),
    ] {
        let schedule = cron_at(&at).map_err(|e| anyhow::anyhow!("reconcile.{channel}_at: {e}"))?;
        let config = config.clone();
        jobs.push(crate::jobs::CronJob::new(
            &format!("reconcile.{channel}"),
            &schedule,
            move |store, at| {
                let config = config.clone();
                async move {
                    let day = at.with_timezone(&cst()).date_naive() - Duration::days(1);
                    let port = default_port(&store, &config)?;
                    let r = Reconciler::new(store, port.clone(), config.reconcile.clone());
                    for m in port.merchants().await?.into_iter().filter(|m| m.channel == channel) {
                        let req = RunRequest {
                            channel,
                            merchant_id: m.merchant_id.clone(),
                            bill_date: day,
                            file: None,
                            via: Via::Schedule,
                            started_by: "schedule".into(),
                        };
                        if let Err(e) = r.run(req, Utc::now()).await {
                            // One merchant's missing file must not stop the others.
                            tracing::error!(%channel, merchant = %m.merchant_id, %day, error = %e, "scheduled reconciliation failed");
                        }
                    }
                    Ok(())
                }
            },
        )?);
    }
    let schedule = cron_at(&rc.report_at).map_err(|e| anyhow::anyhow!("reconcile.report_at: {e}"))?;
    jobs.push(crate::jobs::CronJob::new(
        "reconcile.report",
        &schedule,
        move |store, at| {
            let config = config.clone();
            async move {
                let day = at.with_timezone(&cst()).date_naive() - Duration::days(1);
                let rep = report::morning_report(&store, day, Utc::now()).await?;
                if config.reconcile.finance_recipients.is_empty() {
                    tracing::warn!(%day, "no reconcile.finance_recipients: the morning report is not e-mailed");
                    return Ok(());
                }
                let sender = report::sender_from_config(&config.smtp)?;
                report::send_report(&sender, &config.reconcile.finance_recipients, &rep).await?;
                Ok(())
            }
        },
    )?);
    Ok(jobs)
}

/// The payments port the service reconciles through: payments' implementation over the store
/// and the configured merchants.
pub fn default_port(store: &Store, config: &crate::config::Config) -> anyhow::Result<Arc<dyn PaymentsPort>> {
    let p = crate::payments::Payments::from_config(store.clone(), config)
        .map_err(|e| anyhow::anyhow!("reconciling: building the payments port: {e:#}"))?;
    Ok(Arc::new(p))
}

/// The payments port of a running application.
pub fn port_for(state: &crate::http::AppState) -> Arc<dyn PaymentsPort> {
    state.payments.clone()
}

/// `HH:MM` (Beijing) as a six-field cron expression.
fn cron_at(at: &str) -> Result<String, String> {
    let t = NaiveTime::parse_from_str(at.trim(), "%H:%M").map_err(|_| format!("{at:?} is not HH:MM"))?;
    use chrono::Timelike;
    Ok(format!("0 {} {} * * *", t.minute(), t.hour()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_end_at_midnight_except_unionpays_clearing_day() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(day_end(Channel::Alipay, d).to_rfc3339(), "2026-12-01T16:00:00+00:00");
        assert_eq!(day_end(Channel::Unionpay, d).to_rfc3339(), "2026-12-01T15:00:00+00:00");
    }

    #[test]
    fn report_times_become_cron_expressions() {
        assert_eq!(cron_at("10:30").unwrap(), "0 30 10 * * *");
        assert!(cron_at("half past ten").is_err());
    }

    #[test]
    fn decisions_move_money_the_right_way() {
        let c = || clearing_account(Channel::Alipay, "M");
        assert_eq!(
            decision_accounts(Class::Long, Decision::PostPayment, 100, c()).unwrap(),
            (c(), LedgerAccount::Suspense)
        );
        assert_eq!(
            decision_accounts(Class::Short, Decision::WriteOff, -100, c()).unwrap(),
            (LedgerAccount::WriteOff, c())
        );
        assert!(decision_accounts(Class::Short, Decision::PostPayment, -100, c()).is_err());
        assert!(decision_accounts(Class::Fee, Decision::Refund, 5, c()).is_err());
        assert!(decision_accounts(Class::Amount, Decision::WriteOff, 0, c()).is_err());
    }
}
