//! Bills: the bill run, adjustment bills, allocations of money to bills, and reading bills back.
//!
//! **The run** (`Store::run_bills`) takes a community's active accounts in chunks of
//! [`RunOptions::chunk`] accounts; each chunk is one transaction that loads what the engine needs
//! ([`crate::billing::engine`]), plans every account's bill, and writes the bills (draft → lines →
//! issued, so the database checks each total against its lines), the readings and usage they
//! used, the meters' billing state, usage alerts, and the ledger posting of their issue, all
//! together: one entry per chunk, kind `bills.issue`, reference `run:{run}:after:{account id}`,
//! debiting each account's `receivable:{account}` by its new bills and crediting
//! `revenue:{utility}` (or a line's `payable:{name}`) by their lines. A bill issued on its own
//! (an operator's adjustment) posts `bill.issue` / `bill:{id}` the same way. A chunk that fails leaves nothing; accounts already billed for the period are
//! skipped, so re-running a period never duplicates a bill and completes an interrupted run.
//! SQLite runs the chunks one after another; PostgreSQL runs `PG_BILL_RUN_LANES` at a time,
//! each over its own range of account ids fixed before the first starts, while the run holds an
//! advisory lock on the community so two runs of it take turns.
//!
//! **Money applied to bills** is recorded in `bill_allocations` and mirrored in the ledger:
//! a payment ([`allocate_payment_in_tx!`]), the account's credit (new bills are settled from
//! `credit:{account}` as they are issued), or a credit note (a negative adjustment bill, applied
//! first to the bill it corrects, then to the account's other open bills, the rest to credit).
//!
//! **A bill's status** is derived, never stored: `outstanding = total + late fees − allocations`;
//! `open` (outstanding, nothing paid), `partially_paid`, `paid` (nothing outstanding), `adjusted`
//! (nothing outstanding and corrected by an adjustment bill, or an applied credit note). The sum
//! of an account's outstanding amounts equals the balance of `receivable:{account}`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::audit::{insert_audit, AuditRecord};
use super::billing_settings::billing_settings_in_tx;
use futures::StreamExt as _;

use super::packed::{self, fetch_rows};
use super::{in_tx, on_read, Backend, Store, StoreError};
use crate::billing::engine::{
    needs_rerate, plan_account, AccountInput, AccountPlan, BillPlan, ChainReading, EstimatedBill, MeterInput,
    MeterState, TariffBook,
};
use crate::billing::readings::ReadingKind;
use crate::domain::ids::Utility;
use crate::domain::late_fee::{order_items, plan as plan_allocation, AllocationOrder, OpenItem, Share};
use crate::domain::period::{cst_date, Period};
use crate::domain::tariff::{LineDraft, LineKind, TouPeriod};
use crate::domain::{Fen, Price, Quantity};
use crate::ledger::{JournalEntry, LedgerAccount};

/// Rows per multi-row INSERT (well under both backends' bind-parameter limits).
pub(crate) const ROWS: usize = 1000;
/// Bill-run chunks in flight at once on PostgreSQL (one per core of the 2-core machine the
/// figures in the README come from).
pub(crate) const PG_BILL_RUN_LANES: usize = 2;
/// The advisory-lock class of a community's bill run (`pg_advisory_xact_lock(class << 32 | id)`).
const BILL_RUN_LOCK_CLASS: i64 = 0x6d70_6272; // "mpbr"

/// Options of a bill run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    pub period: Period,
    /// One community (by code), or every community.
    #[serde(default)]
    pub community: Option<String>,
    /// Compute and report, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Due date for every bill of the run (default: the community's setting).
    #[serde(default)]
    pub due_date: Option<NaiveDate>,
    /// Accounts per transaction.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
}

fn default_chunk() -> usize {
    5000
}

impl RunOptions {
    pub fn new(period: Period) -> RunOptions {
        RunOptions {
            period,
            community: None,
            dry_run: false,
            due_date: None,
            chunk: default_chunk(),
        }
    }
}

/// An account left out of a run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub account_code: String,
    pub reason: String,
}

/// What a run did in one community.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommunityRun {
    pub community: String,
    pub run_id: Option<i64>,
    pub accounts: usize,
    pub bills_issued: usize,
    pub adjustment_bills: usize,
    pub already_billed: usize,
    pub without_new_readings: usize,
    pub skipped: Vec<Skipped>,
    pub total_fen: i64,
    pub adjustments_fen: i64,
    pub settled_from_credit_fen: i64,
    pub alerts: usize,
}

impl CommunityRun {
    /// Add what one chunk did.
    fn absorb(&mut self, counts: CommunityRun) {
        self.accounts += counts.accounts;
        self.bills_issued += counts.bills_issued;
        self.adjustment_bills += counts.adjustment_bills;
        self.already_billed += counts.already_billed;
        self.without_new_readings += counts.without_new_readings;
        self.skipped.extend(counts.skipped);
        self.total_fen += counts.total_fen;
        self.adjustments_fen += counts.adjustments_fen;
        self.settled_from_credit_fen += counts.settled_from_credit_fen;
        self.alerts += counts.alerts;
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub period: Period,
    pub dry_run: bool,
    pub communities: Vec<CommunityRun>,
}

impl RunReport {
    pub fn text(&self) -> String {
        let mut out = format!(
            "bill run {}{}",
            self.period,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
        for c in &self.communities {
            out.push_str(&format!(
                "\n  {}: {} accounts — {} bills issued ({}), {} adjustment bills ({}), {} already billed, {} without new readings, {} skipped, {} settled from credit, {} usage alerts",
                c.community,
                c.accounts,
                c.bills_issued,
                Fen::new(c.total_fen),
                c.adjustment_bills,
                Fen::new(c.adjustments_fen),
                c.already_billed,
                c.without_new_readings,
                c.skipped.len(),
                Fen::new(c.settled_from_credit_fen),
                c.alerts
            ));
            for s in c.skipped.iter().take(50) {
                out.push_str(&format!("\n    skipped {}: {}", s.account_code, s.reason));
            }
        }
        out
    }
}

#[derive(sqlx::FromRow, Deserialize)]
struct AccountRow {
    id: i64,
    code: String,
    customer_class: String,
    opened_on: Option<NaiveDate>,
    area_m2_e2: Option<i64>,
    #[serde(deserialize_with = "packed::opt_bool")]
    occupied: Option<bool>,
}

#[derive(sqlx::FromRow, Deserialize)]
struct MeterRow {
    id: i64,
    account_id: i64,
    meter_no: String,
    utility: String,
    digit_count: i32,
    multiplier_e4: i64,
}

#[derive(sqlx::FromRow, Deserialize)]
struct StateRow {
    meter_id: i64,
    reading_id: i64,
    #[serde(deserialize_with = "packed::time")]
    read_at: DateTime<Utc>,
    value_e4: i64,
    kind: String,
    anchor_reading_id: i64,
    #[serde(deserialize_with = "packed::time")]
    anchor_at: DateTime<Utc>,
    anchor_value_e4: i64,
    anchor_period: Option<String>,
}

#[derive(sqlx::FromRow, Deserialize)]
struct ReadingLite {
    id: i64,
    meter_id: i64,
    #[serde(deserialize_with = "packed::time")]
    read_at: DateTime<Utc>,
    value_e4: i64,
    kind: String,
}

#[derive(sqlx::FromRow)]
struct RegisterRow {
    reading_id: i64,
    register: String,
    value_e4: i64,
}

#[derive(sqlx::FromRow, Deserialize)]
struct HistRow {
    account_id: i64,
    utility: String,
    usage_period: String,
    quantity_e4: i64,
}

/// A stored bill line.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LineRow {
    pub line_no: i32,
    pub utility: Option<String>,
    pub kind: String,
    pub component: String,
    pub description: String,
    pub tier: Option<i32>,
    pub tou_period: Option<String>,
    pub quantity_e4: i64,
    pub unit_price_e6: i64,
    pub amount_fen: i64,
    pub tariff_version_id: Option<i64>,
    pub usage_period: Option<String>,
    pub date_from: Option<NaiveDate>,
    pub date_to: Option<NaiveDate>,
    pub trace: Option<String>,
    pub ledger_code: Option<String>,
}

const LINE_COLS: &str =
    "line_no, utility, kind, component, description, tier, tou_period, quantity_e4, unit_price_e6, \
     amount_fen, tariff_version_id, usage_period, date_from, date_to, trace, ledger_code";

impl LineRow {
    fn into_draft(self) -> Result<LineDraft, StoreError> {
        let bad = |reason: String| StoreError::Refused {
            what: "reading a bill line",
            reason,
        };
        Ok(LineDraft {
            utility: self.utility.as_deref().map(str::parse).transpose().map_err(bad)?,
            kind: LineKind::parse(&self.kind).map_err(bad)?,
            component: self.component,
            description: self.description,
            tier: self.tier.map(|t| t as u32),
            tou_period: self
                .tou_period
                .as_deref()
                .map(TouPeriod::parse)
                .transpose()
                .map_err(bad)?,
            quantity: Quantity::from_scaled(self.quantity_e4),
            unit_price: Price::from_scaled(self.unit_price_e6),
            amount: Fen::new(self.amount_fen),
            tariff_version_id: self.tariff_version_id,
            usage_period: self
                .usage_period
                .as_deref()
                .map(Period::parse)
                .transpose()
                .map_err(bad)?,
            date_from: self.date_from,
            date_to: self.date_to,
            trace: self
                .trace
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default(),
            ledger_code: self.ledger_code,
        })
    }
}

fn kind_of(s: &str) -> ReadingKind {
    s.parse().unwrap_or(ReadingKind::Actual)
}

fn dec4(v: i64) -> Decimal {
    Decimal::new(v, 4)
}

/// Decimal quantities to the stored scale (the engine keeps at most 4 decimals).
fn e4(q: Decimal) -> i64 {
    let mut v = q.round_dp(4);
    v.rescale(4);
    v.mantissa() as i64
}

/// Everything one chunk of accounts needs, read inside the chunk's transaction.
#[derive(Default)]
struct ChunkData {
    accounts: Vec<AccountRow>,
    meters: HashMap<i64, Vec<MeterRow>>,
    states: HashMap<i64, StateRow>,
    readings: HashMap<i64, Vec<ReadingLite>>,
    registers: HashMap<i64, BTreeMap<TouPeriod, Decimal>>,
    history: HashMap<i64, BTreeMap<(Utility, Period), Decimal>>,
    billed: BTreeSet<i64>,
    credit: HashMap<i64, i64>,
}

/// Load a chunk: at most `$limit` active accounts of the community with `$after < id <= $upto`.
macro_rules! load_chunk {
    ($tx:expr, $community_id:expr, $after:expr, $upto:expr, $limit:expr, $period:expr) => {{
        let what = "loading accounts for a bill run";
        let period: Period = $period;
        let end = period.end_utc();
        let mut data = ChunkData::default();
        // Row by row on PostgreSQL, one packed value on SQLite (see `store::packed`), which
        // does not promise an order: what needs one is sorted here.
        data.accounts = fetch_rows!(
            $tx,
            what,
            AccountRow,
            &["a.id", "a.code", "a.customer_class", "a.opened_on", "p.area_m2_e2", "p.occupied"],
            "FROM accounts a LEFT JOIN premises p ON p.id = a.premises_id \
             WHERE a.community_id = $1 AND a.status = 'active' AND a.id > $2 AND a.id <= $4 ORDER BY a.id LIMIT $3",
            [$community_id, $after, $limit, $upto]
        );
        data.accounts.sort_unstable_by_key(|a| a.id);
        if let (Some(first), Some(last)) = (data.accounts.first(), data.accounts.last()) {
            let (lo, hi) = (first.id, last.id);
            let mut meters: Vec<MeterRow> = fetch_rows!(
                $tx,
                what,
                MeterRow,
                &["id", "account_id", "meter_no", "utility", "digit_count", "multiplier_e4"],
                "FROM meters WHERE community_id = $1 AND account_id BETWEEN $2 AND $3",
                [$community_id, lo, hi]
            );
            meters.sort_unstable_by(|a, b| (a.account_id, &a.utility, a.id).cmp(&(b.account_id, &b.utility, b.id)));
            for m in meters {
                data.meters.entry(m.account_id).or_default().push(m);
            }
            let states: Vec<StateRow> = fetch_rows!(
                $tx,
                what,
                StateRow,
                &[
                    "meter_id",
                    "reading_id",
                    "read_at",
                    "value_e4",
                    "kind",
                    "anchor_reading_id",
                    "anchor_at",
                    "anchor_value_e4",
                    "anchor_period"
                ],
                "FROM meter_bill_state WHERE account_id BETWEEN $1 AND $2",
                [lo, hi]
            );
            for s in states {
                data.states.insert(s.meter_id, s);
            }
            // Driven by the chunk's meters (an index seek per meter on (meter_id, read_at)).
            const READ_FILTER: &str = "FROM readings r LEFT JOIN meter_bill_state s ON s.meter_id = r.meter_id \
                 WHERE r.meter_id IN (SELECT m.id FROM meters m WHERE m.account_id BETWEEN $2 AND $3 AND m.community_id = $1) \
                 AND r.status = 'valid' AND r.read_at < $4 AND (s.meter_id IS NULL OR r.read_at >= s.anchor_at)";
            let mut readings: Vec<ReadingLite> = fetch_rows!(
                $tx,
                what,
                ReadingLite,
                &["r.id", "r.meter_id", "r.read_at", "r.value_e4", "r.kind"],
                READ_FILTER,
                [$community_id, lo, hi, end]
            );
            // A meter's readings in time order (one meter never has two at one time).
            readings.sort_unstable_by_key(|r| (r.meter_id, r.read_at));
            for r in readings {
                data.readings.entry(r.meter_id).or_default().push(r);
            }
            let any_registers: Option<i64> = sqlx::query_scalar("SELECT reading_id FROM reading_registers LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            if any_registers.is_some() {
                for g in sqlx::query_as::<_, RegisterRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT g.reading_id, g.register, g.value_e4 FROM reading_registers g WHERE g.reading_id IN \
                     (SELECT r.id {READ_FILTER} UNION SELECT s2.reading_id FROM meter_bill_state s2 WHERE s2.account_id BETWEEN $2 AND $3 \
                      UNION SELECT s3.anchor_reading_id FROM meter_bill_state s3 WHERE s3.account_id BETWEEN $2 AND $3)"
                )))
                .bind($community_id)
                .bind(lo)
                .bind(hi)
                .bind(end)
                .fetch_all(&mut *$tx)
                .await
                .map_err(|e| StoreError::db(what, e))?
                {
                    if let Ok(p) = TouPeriod::parse(&g.register) {
                        data.registers.entry(g.reading_id).or_default().insert(p, dec4(g.value_e4));
                    }
                }
            }
            let history: Vec<HistRow> = fetch_rows!(
                $tx,
                what,
                HistRow,
                &["account_id", "utility", "usage_period", "CAST(SUM(quantity_e4) AS BIGINT) AS quantity_e4"],
                "FROM bill_usage WHERE account_id BETWEEN $1 AND $2 AND usage_period >= $3 AND usage_period < $4 \
                 GROUP BY account_id, utility, usage_period",
                [lo, hi, period.plus_months(-24).to_string(), period.to_string()]
            );
            for h in history {
                if let (Ok(u), Ok(p)) = (h.utility.parse::<Utility>(), Period::parse(&h.usage_period)) {
                    data.history.entry(h.account_id).or_default().insert((u, p), dec4(h.quantity_e4));
                }
            }
            let billed: Vec<i64> = sqlx::query_scalar(
                "SELECT account_id FROM bills WHERE account_id BETWEEN $1 AND $2 AND period = $3 AND kind = 'regular'",
            )
            .bind(lo)
            .bind(hi)
            .bind(period.to_string())
            .fetch_all(&mut *$tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            data.billed = billed.into_iter().collect();
            let codes: Vec<String> = data.accounts.iter().map(|a| format!("credit:{}", a.id)).collect();
            for chunk in codes.chunks(500) {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT a.code, CAST(COALESCE(SUM(l.amount_fen), 0) AS BIGINT) FROM ledger_accounts a \
                     JOIN journal_lines l ON l.ledger_account_id = a.id WHERE a.code IN (",
                );
                let mut sep = qb.separated(", ");
                for c in chunk {
                    sep.push_bind(c.clone());
                }
                qb.push(") GROUP BY a.code");
                let rows: Vec<(String, i64)> = qb
                    .build_query_as()
                    .fetch_all(&mut *$tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
                for (code, bal) in rows {
                    // A liability: money held for the customer is a credit (negative) balance.
                    if let Some(id) = code.strip_prefix("credit:").and_then(|s| s.parse::<i64>().ok()) {
                        if bal < 0 {
                            data.credit.insert(id, -bal);
                        }
                    }
                }
            }
        }
        data
    }};
}

/// The regular bills a re-rating meter's span covers, with what they billed.
macro_rules! load_estimated {
    ($tx:expr, $account_id:expr, $utility:expr, $meters:expr) => {{
        let what = "loading estimated bills to re-rate";
        let utility: Utility = $utility;
        let mut bills: BTreeMap<i64, String> = BTreeMap::new();
        for (meter_id, anchor_period) in $meters {
            let anchor_period: Option<Period> = *anchor_period;
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT b.id, b.period FROM bills b JOIN bill_readings br ON br.bill_id = b.id \
                 WHERE b.account_id = $1 AND b.kind = 'regular' AND br.meter_id = $2 AND ($3 IS NULL OR b.period > $3)",
            )
            .bind($account_id)
            .bind(*meter_id)
            .bind(anchor_period.map(|p| p.to_string()))
            .fetch_all(&mut *$tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            bills.extend(rows);
        }
        let mut out: Vec<EstimatedBill> = Vec::new();
        for (bill_id, period) in bills {
            let period = Period::parse(&period).map_err(|reason| StoreError::Refused { what, reason })?;
            let lines: Vec<LineRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {LINE_COLS} FROM bill_lines WHERE bill_id = $1 AND utility = $2 AND kind = 'usage' ORDER BY line_no"
            )))
            .bind(bill_id)
            .bind(utility.as_str())
            .fetch_all(&mut *$tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let usage: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(quantity_e4), 0) AS BIGINT) FROM bill_usage WHERE account_id = $1 AND utility = $2 AND usage_period = $3",
            )
            .bind($account_id)
            .bind(utility.as_str())
            .bind(period.to_string())
            .fetch_one(&mut *$tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let reads: Vec<(i64, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
                "SELECT meter_id, usage_e4, from_at, to_at FROM bill_readings WHERE bill_id = $1 AND utility = $2",
            )
            .bind(bill_id)
            .bind(utility.as_str())
            .fetch_all(&mut *$tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let from = reads.iter().map(|r| cst_date(r.2)).min();
            let to = reads.iter().map(|r| cst_date(r.3)).max();
            let (Some(from), Some(to)) = (from, to) else { continue };
            out.push(EstimatedBill {
                bill_id,
                period,
                from,
                to,
                usage: dec4(usage),
                meter_usage: reads.iter().map(|r| (r.0, dec4(r.1))).collect(),
                lines: lines.into_iter().map(LineRow::into_draft).collect::<Result<_, _>>()?,
            });
        }
        out.sort_by_key(|b| b.period);
        out
    }};
}

fn chain_reading(r: &ReadingLite, registers: &HashMap<i64, BTreeMap<TouPeriod, Decimal>>) -> ChainReading {
    ChainReading {
        id: r.id,
        read_at: r.read_at,
        value: dec4(r.value_e4),
        kind: kind_of(&r.kind),
        registers: registers.get(&r.id).cloned().unwrap_or_default(),
    }
}

fn meter_inputs(data: &ChunkData, account_id: i64) -> Result<Vec<MeterInput>, String> {
    let mut out = Vec::new();
    for m in data.meters.get(&account_id).map(|v| v.as_slice()).unwrap_or(&[]) {
        let utility: Utility = m.utility.parse()?;
        let state = data.states.get(&m.id).map(|s| MeterState {
            last: ChainReading {
                id: s.reading_id,
                read_at: s.read_at,
                value: dec4(s.value_e4),
                kind: kind_of(&s.kind),
                registers: data.registers.get(&s.reading_id).cloned().unwrap_or_default(),
            },
            anchor: ChainReading {
                id: s.anchor_reading_id,
                read_at: s.anchor_at,
                value: dec4(s.anchor_value_e4),
                kind: ReadingKind::Actual,
                registers: data.registers.get(&s.anchor_reading_id).cloned().unwrap_or_default(),
            },
            anchor_period: s.anchor_period.as_deref().and_then(|p| Period::parse(p).ok()),
        });
        let readings = data
            .readings
            .get(&m.id)
            .map(|rs| rs.iter().map(|r| chain_reading(r, &data.registers)).collect())
            .unwrap_or_default();
        out.push(MeterInput {
            id: m.id,
            meter_no: m.meter_no.clone(),
            utility,
            digit_count: m.digit_count,
            multiplier: dec4(m.multiplier_e4),
            state,
            readings,
        });
    }
    Ok(out)
}

/// One bill to write.
struct ToWrite {
    account_id: i64,
    kind: &'static str,
    adjusts: Option<i64>,
    period: Period,
    reason: Option<String>,
    plan: BillPlan,
}

/// The ledger entry of a bill's issue (none for a bill whose lines net to zero everywhere).
fn issue_entry(bill_id: i64, account_id: i64, plan: &BillPlan, date: NaiveDate, actor: &str) -> Option<JournalEntry> {
    let mut credits: BTreeMap<String, i64> = BTreeMap::new();
    credits_of(plan, &mut credits);
    let mut lines = vec![(LedgerAccount::Receivable { account_id }, plan.total)];
    for (code, amount) in credits {
        lines.push((account_for_code(&code), Fen::new(-amount)));
    }
    lines.retain(|(_, a)| !a.is_zero());
    JournalEntry::new("bill.issue", format!("bill:{bill_id}"), date, actor, lines).ok()
}

/// The credit side of a bill's lines: per ledger account code, the amount (positive).
fn credits_of(plan: &BillPlan, credits: &mut BTreeMap<String, i64>) {
    for l in &plan.lines {
        let code = match (&l.ledger_code, l.utility) {
            (Some(c), _) => c.clone(),
            (None, Some(u)) => LedgerAccount::Revenue { utility: u }.code(),
            (None, None) => "revenue:other".into(),
        };
        *credits.entry(code).or_default() += l.amount.get();
    }
}

fn account_for_code(code: &str) -> LedgerAccount {
    if let Some(u) = code.strip_prefix("revenue:").and_then(|u| u.parse::<Utility>().ok()) {
        LedgerAccount::Revenue { utility: u }
    } else if let Some(name) = code.strip_prefix("payable:") {
        LedgerAccount::Payable { name: name.to_string() }
    } else {
        LedgerAccount::Suspense
    }
}

/// The issue of a bill run chunk as one entry, kind `bills.issue`, reference
/// `run:{run}:after:{account}`: debit each account's receivable by its new bills, credit each
/// revenue or payable account by its lines.
fn issue_batch_entry<'a>(
    run_id: i64,
    after_account: i64,
    period: Period,
    bills: impl Iterator<Item = (i64, i64, &'a BillPlan)>,
    date: NaiveDate,
    actor: &str,
) -> Option<JournalEntry> {
    let mut debits: BTreeMap<i64, i64> = BTreeMap::new();
    let mut credits: BTreeMap<String, i64> = BTreeMap::new();
    let (mut first, mut last, mut n) = (i64::MAX, 0i64, 0usize);
    for (id, account, plan) in bills {
        *debits.entry(account).or_default() += plan.total.get();
        credits_of(plan, &mut credits);
        first = first.min(id);
        last = last.max(id);
        n += 1;
    }
    let mut lines: Vec<(LedgerAccount, Fen)> = debits
        .into_iter()
        .map(|(a, v)| (LedgerAccount::Receivable { account_id: a }, Fen::new(v)))
        .collect();
    lines.extend(credits.into_iter().map(|(c, v)| (account_for_code(&c), Fen::new(-v))));
    lines.retain(|(_, a)| !a.is_zero());
    JournalEntry::new(
        "bills.issue",
        format!("run:{run_id}:after:{after_account}"),
        date,
        actor,
        lines,
    )
    .ok()
    .map(|e| {
        e.with_memo(format!(
            "bill run {run_id} for {period}: {n} bills, ids {first} to {last}"
        ))
    })
}

/// Post many balanced entries inside an open transaction: ledger accounts first, then every
/// line, then every entry (whose insert trigger checks its lines), many rows per statement.
///
/// `post_entries_batch_in_tx!(tx, &entries, now)` posts them all at `now`, or with
/// `posted = &times` each entry at its own time (`times[i]` for `entries[i]`; ledger accounts
/// created meanwhile are dated `now`).
macro_rules! post_entries_batch_in_tx {
    ($tx:expr, $entries:expr, $now:expr) => {{
        let entries: &[$crate::ledger::JournalEntry] = $entries;
        let times = vec![$now; entries.len()];
        $crate::store::bills::post_entries_batch_in_tx!($tx, entries, $now, posted = &times)
    }};
    ($tx:expr, $entries:expr, $now:expr, posted = $posted:expr) => {{
        let entries: &[$crate::ledger::JournalEntry] = $entries;
        let posted: &[chrono::DateTime<chrono::Utc>] = $posted;
        if posted.len() != entries.len() {
            return Err($crate::store::StoreError::Refused {
                what: "posting journal entries",
                reason: format!("{} posting times for {} entries", posted.len(), entries.len()),
            });
        }
        let what = "posting journal entries";
        let mut accounts: std::collections::BTreeMap<String, (&'static str, String)> =
            std::collections::BTreeMap::new();
        for e in entries {
            for (a, _) in &e.lines {
                accounts
                    .entry(a.code())
                    .or_insert_with(|| (a.kind().as_str(), a.name()));
            }
        }
        let list: Vec<(String, (&'static str, String))> = accounts.into_iter().collect();
        let mut ids: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        // Known accounts are looked up; only the missing ones are inserted, then looked up.
        for round in 0..2 {
            let missing: Vec<&(String, (&'static str, String))> =
                list.iter().filter(|(code, _)| !ids.contains_key(code)).collect();
            if missing.is_empty() {
                break;
            }
            if round == 1 {
                for chunk in missing.chunks($crate::store::bills::ROWS) {
                    let mut qb = sqlx::QueryBuilder::new("INSERT INTO ledger_accounts (code, kind, name, created_at) ");
                    qb.push_values(chunk, |mut b, (code, (kind, name))| {
                        b.push_bind(code.clone())
                            .push_bind(*kind)
                            .push_bind(name.clone())
                            .push_bind($now);
                    });
                    qb.push(" ON CONFLICT (code) DO NOTHING");
                    qb.build()
                        .execute(&mut *$tx)
                        .await
                        .map_err(|e| $crate::store::StoreError::db(what, e))?;
                }
            }
            for chunk in missing.chunks($crate::store::bills::ROWS) {
                let mut qb = sqlx::QueryBuilder::new("SELECT id, code FROM ledger_accounts WHERE code IN (");
                let mut sep = qb.separated(", ");
                for (code, _) in chunk {
                    sep.push_bind(code.clone());
                }
                qb.push(")");
                let rows: Vec<(i64, String)> = qb
                    .build_query_as()
                    .fetch_all(&mut *$tx)
                    .await
                    .map_err(|e| $crate::store::StoreError::db(what, e))?;
                for (id, code) in rows {
                    ids.insert(code, id);
                }
            }
        }
        let mut lines = $crate::store::bulk::JournalLineCols::default();
        let mut heads = $crate::store::bulk::JournalEntryCols::default();
        for e in entries {
            for (i, (a, amount)) in e.lines.iter().enumerate() {
                let id = *ids
                    .get(&a.code())
                    .ok_or_else(|| $crate::store::StoreError::NotFound(format!("ledger account {}", a.code())))?;
                lines.entry_id.push(e.id);
                lines.line_no.push(i as i32 + 1);
                lines.ledger_account_id.push(id);
                lines.amount_fen.push(amount.get());
            }
            heads.id.push(e.id);
            heads.kind.push(e.kind.clone());
            heads.reference.push(e.reference.clone());
            heads.memo.push(e.memo.clone());
            heads.accounting_date.push(e.accounting_date);
            heads.created_by.push(e.created_by.clone());
        }
        heads.posted_at.extend_from_slice(posted);
        // Lines first, then the entries (whose insert checks their lines).
        $crate::store::bulk::Bulk::insert_journal_lines(&mut $tx, &lines)
            .await
            .map_err(|e| $crate::store::StoreError::db(what, e))?;
        $crate::store::bulk::Bulk::insert_journal_entries(&mut $tx, &heads)
            .await
            .map_err(|e| $crate::store::StoreError::db(what, e))?;
    }};
}

/// Insert bills as drafts with their lines, readings and usage, then issue them (the database
/// checks each total against its lines). Returns the new ids in input order.
macro_rules! write_bills_in_tx {
    ($tx:expr, $community_id:expr, $bills:expr, $due:expr, $run_id:expr, $actor:expr, $now:expr) => {{
        use $crate::store::bulk::Bulk as _;
        let what = "writing bills";
        let bills: &[ToWrite] = $bills;
        let mut head = $crate::store::bulk::BillCols::default();
        for w in bills {
            head.account_id.push(w.account_id);
            head.period.push(w.period.to_string());
            head.kind.push(w.kind);
            head.adjusts.push(w.adjusts);
            head.reason.push(w.reason.clone());
            head.total_fen.push(w.plan.total.get());
        }
        let common = $crate::store::bulk::BillCommon {
            community_id: $community_id,
            due_date: $due,
            run_id: $run_id,
            now: $now,
            actor: $actor,
        };
        let rows = $tx
            .insert_bills(&head, &common)
            .await
            .map_err(|e| StoreError::db(what, e))?;
        let by_key: HashMap<(i64, String, Option<i64>), i64> =
            rows.into_iter().map(|(id, a, k, adj)| ((a, k, adj), id)).collect();
        let mut ids: Vec<i64> = Vec::with_capacity(bills.len());
        for w in bills {
            ids.push(
                *by_key
                    .get(&(w.account_id, w.kind.to_string(), w.adjusts))
                    .ok_or_else(|| StoreError::NotFound("a bill just inserted".into()))?,
            );
        }
        let t_phase = std::time::Instant::now();
        let mut lines = $crate::store::bulk::LineCols::default();
        let mut reads = $crate::store::bulk::BillReadingCols::default();
        let mut usage = $crate::store::bulk::UsageCols::default();
        for (w, id) in bills.iter().zip(&ids) {
            for (i, l) in w.plan.lines.iter().enumerate() {
                lines.bill_id.push(*id);
                lines.line_no.push(i as i32 + 1);
                lines.utility.push(l.utility.map(|u| u.as_str()));
                lines.kind.push(l.kind.as_str());
                lines.component.push(l.component.clone());
                lines.description.push(l.description.clone());
                lines.tier.push(l.tier.map(|t| t as i32));
                lines.tou_period.push(l.tou_period.map(|p| p.as_str()));
                lines.quantity_e4.push(l.quantity.to_scaled());
                lines.unit_price_e6.push(l.unit_price.to_scaled());
                lines.amount_fen.push(l.amount.get());
                lines.tariff_version_id.push(l.tariff_version_id);
                lines.usage_period.push(l.usage_period.map(|p| p.to_string()));
                lines.date_from.push(l.date_from);
                lines.date_to.push(l.date_to);
                lines.trace.push(if l.trace.is_null() {
                    None
                } else {
                    Some(l.trace.to_string())
                });
                lines.ledger_code.push(l.ledger_code.clone());
            }
            for r in &w.plan.readings {
                reads.bill_id.push(*id);
                reads.meter_id.push(r.meter_id);
                reads.utility.push(r.utility.as_str());
                reads.from_reading_id.push(r.from.id);
                reads.to_reading_id.push(r.to.id);
                reads.from_value_e4.push(e4(r.from.value));
                reads.to_value_e4.push(e4(r.to.value));
                reads.from_at.push(r.from.read_at);
                reads.to_at.push(r.to.read_at);
                reads.from_kind.push(r.from.kind.as_str());
                reads.to_kind.push(r.to.kind.as_str());
                reads.multiplier_e4.push(e4(r.multiplier));
                reads.usage_e4.push(e4(r.usage));
                reads.rollovers.push(r.rollovers as i32);
            }
            for u in &w.plan.usage {
                usage.bill_id.push(*id);
                usage.account_id.push(w.account_id);
                usage.utility.push(u.utility.as_str());
                usage.usage_period.push(u.usage_period.to_string());
                usage.tier_year_start.push(u.tier_year_start);
                usage.quantity_e4.push(e4(u.quantity));
                usage.estimated.push(u.estimated);
            }
        }
        $tx.insert_bill_lines(&lines)
            .await
            .map_err(|e| StoreError::db(what, e))?;
        let lines_ms = t_phase.elapsed().as_millis();
        $tx.insert_bill_readings(&reads)
            .await
            .map_err(|e| StoreError::db(what, e))?;
        let reads_ms = t_phase.elapsed().as_millis() - lines_ms;
        $tx.insert_bill_usage(&usage, $community_id)
            .await
            .map_err(|e| StoreError::db(what, e))?;
        let usage_ms = t_phase.elapsed().as_millis() - lines_ms - reads_ms;
        $tx.issue_bills(&ids, $now).await.map_err(|e| StoreError::db(what, e))?;
        tracing::trace!(
            lines_ms,
            reads_ms,
            usage_ms,
            issue_ms = t_phase.elapsed().as_millis() - lines_ms - reads_ms - usage_ms,
            "bill writes"
        );
        ids
    }};
}

#[derive(sqlx::FromRow)]
#[doc(hidden)]
pub struct OpenRow {
    id: i64,
    account_id: i64,
    kind: String,
    period: String,
    due_date: NaiveDate,
    total_fen: i64,
    disputed: bool,
    principal_paid: i64,
    fee_paid: i64,
    fee: i64,
    paid_by_money: i64,
    adjusted: i64,
}

/// The columns of [`OpenRow`], from `bills b`; each user adds its own `WHERE`.
macro_rules! open_select {
    () => {
        "SELECT b.id, b.account_id, b.kind, b.period, b.due_date, b.total_fen, b.disputed, \
         CAST(COALESCE((SELECT SUM(x.principal_fen) FROM bill_allocations x WHERE x.bill_id = b.id), 0) AS BIGINT) AS principal_paid, \
         CAST(COALESCE((SELECT SUM(x.late_fee_fen) FROM bill_allocations x WHERE x.bill_id = b.id), 0) AS BIGINT) AS fee_paid, \
         CAST(COALESCE((SELECT SUM(f.delta_fen) FROM late_fee_postings f WHERE f.bill_id = b.id), 0) AS BIGINT) AS fee, \
         CAST(COALESCE((SELECT SUM(x.amount_fen) FROM bill_allocations x WHERE x.bill_id = b.id AND x.source <> 'adjustment'), 0) AS BIGINT) AS paid_by_money, \
         CAST((SELECT COUNT(*) FROM bills c WHERE c.adjusts_bill_id = b.id AND c.status = 'issued') AS BIGINT) AS adjusted \
         FROM bills b "
    };
}

/// One account's issued bills with their amounts.
pub(crate) const OPEN_SQL: &str = concat!(open_select!(), "WHERE b.account_id = $1 AND b.status = 'issued'");

/// The issued bills of several accounts: append the ids, then `)`.
pub(crate) const OPEN_SQL_OF_ACCOUNTS: &str =
    concat!(open_select!(), "WHERE b.status = 'issued' AND b.account_id IN (");

/// A bill with its amounts as they stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenBill {
    pub bill_id: i64,
    pub period: String,
    pub kind: String,
    pub due_date: NaiveDate,
    pub total_fen: i64,
    pub late_fee_fen: i64,
    /// Everything allocated to it (payments, credit, credit notes).
    pub allocated_fen: i64,
    pub outstanding_fen: i64,
    pub principal_outstanding_fen: i64,
    pub late_fee_outstanding_fen: i64,
    pub status: BillStatus,
    pub disputed: bool,
}

/// A bill's status, derived from its amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillStatus {
    Open,
    PartiallyPaid,
    Paid,
    Adjusted,
}

impl BillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BillStatus::Open => "open",
            BillStatus::PartiallyPaid => "partially_paid",
            BillStatus::Paid => "paid",
            BillStatus::Adjusted => "adjusted",
        }
    }
}

impl OpenRow {
    /// The account the bill is for.
    pub fn account_id(&self) -> i64 {
        self.account_id
    }

    pub fn into_bill(self) -> OpenBill {
        let allocated = self.principal_paid + self.fee_paid;
        let outstanding = self.total_fen + self.fee - allocated;
        let status = if outstanding > 0 {
            if self.paid_by_money > 0 {
                BillStatus::PartiallyPaid
            } else {
                BillStatus::Open
            }
        } else if self.adjusted > 0 || (self.kind == "adjustment" && self.total_fen < 0) {
            BillStatus::Adjusted
        } else {
            BillStatus::Paid
        };
        OpenBill {
            bill_id: self.id,
            period: self.period,
            kind: self.kind,
            due_date: self.due_date,
            total_fen: self.total_fen,
            late_fee_fen: self.fee,
            allocated_fen: allocated,
            outstanding_fen: outstanding,
            principal_outstanding_fen: self.total_fen - self.principal_paid,
            late_fee_outstanding_fen: self.fee - self.fee_paid,
            status,
            disputed: self.disputed,
        }
    }
}

impl OpenBill {
    fn item(&self) -> OpenItem {
        OpenItem {
            bill_id: self.bill_id,
            due_date: self.due_date,
            period: self.period.clone(),
            principal_outstanding: Fen::new(self.principal_outstanding_fen.max(0)),
            late_fee_outstanding: Fen::new(self.late_fee_outstanding_fen.max(0)),
        }
    }
}

/// An account's issued bills with their amounts (inside an open transaction).
macro_rules! account_bills_in_tx {
    ($tx:expr, $account_id:expr) => {{
        let rows: Vec<$crate::store::bills::OpenRow> = sqlx::query_as($crate::store::bills::OPEN_SQL)
            .bind($account_id)
            .fetch_all(&mut *$tx)
            .await
            .map_err(|e| $crate::store::StoreError::db("reading an account's bills", e))?;
        rows.into_iter()
            .map($crate::store::bills::OpenRow::into_bill)
            .collect::<Vec<$crate::store::bills::OpenBill>>()
    }};
}

/// Insert allocation rows.
macro_rules! insert_allocations_in_tx {
    ($tx:expr, $account_id:expr, $rows:expr, $source:expr, $source_ref:expr, $now:expr) => {{
        let rows: &[$crate::domain::late_fee::Share] = $rows;
        let date = $crate::domain::period::cst_date($now);
        for chunk in rows.chunks($crate::store::bills::ROWS) {
            if chunk.is_empty() {
                continue;
            }
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO bill_allocations (bill_id, account_id, amount_fen, principal_fen, late_fee_fen, source, source_ref, allocated_at, accounting_date) ",
            );
            qb.push_values(chunk, |mut b, s| {
                b.push_bind(s.bill_id)
                    .push_bind($account_id)
                    .push_bind(s.total().get())
                    .push_bind(s.principal.get())
                    .push_bind(s.late_fee.get())
                    .push_bind($source)
                    .push_bind($source_ref)
                    .push_bind($now)
                    .push_bind(date);
            });
            qb.build()
                .execute(&mut *$tx)
                .await
                .map_err(|e| $crate::store::StoreError::db("recording allocations", e))?;
        }
    }};
}

/// Apply a credit note (negative adjustment bill `$note_id` of `$amount` fen, positive) inside
/// an open transaction: first to the bill it corrects, then the account's other open bills in
/// the community's order, and the rest to `credit:{account}`. Returns the fen moved to credit.
macro_rules! apply_credit_note_in_tx {
    ($tx:expr, $account_id:expr, $note_id:expr, $amount:expr, $target_id:expr, $order:expr, $penalty_first:expr, $actor:expr, $now:expr) => {{
        let amount: Fen = $amount;
        let bills = account_bills_in_tx!($tx, $account_id);
        let mut items: Vec<OpenItem> = bills
            .iter()
            .filter(|b| b.outstanding_fen > 0 && b.bill_id != $note_id)
            .map(|b| b.item())
            .collect();
        order_items(&mut items, $order);
        // The corrected bill first.
        if let Some(pos) = items.iter().position(|i| i.bill_id == $target_id) {
            let t = items.remove(pos);
            items.insert(0, t);
        }
        let mut shares: Vec<Share> = Vec::new();
        let mut left = amount;
        for it in &items {
            let (s, rest) = plan_allocation(
                std::slice::from_ref(it),
                left,
                AllocationOrder::OldestFirst,
                $penalty_first,
            );
            shares.extend(s);
            left = rest;
            if left.is_zero() {
                break;
            }
        }
        let note_ref = format!("bill:{}", $note_id);
        insert_allocations_in_tx!($tx, $account_id, &shares, "adjustment", note_ref.clone(), $now);
        // The note's own side: everything it gave away, to bills and to credit.
        let given = Fen::new(amount.get());
        let own = [Share {
            bill_id: $note_id,
            principal: Fen::new(-given.get()),
            late_fee: Fen::ZERO,
        }];
        let dest = if left.is_positive() {
            "applied to bills and credit"
        } else {
            "applied to bills"
        };
        insert_allocations_in_tx!($tx, $account_id, &own, "adjustment", dest.to_string(), $now);
        if left.is_positive() {
            let e = JournalEntry::transfer(
                "bill.credit_note",
                note_ref,
                cst_date($now),
                $actor,
                LedgerAccount::Receivable {
                    account_id: $account_id,
                },
                LedgerAccount::CustomerCredit {
                    account_id: $account_id,
                },
                left,
            )
            .map_err(|e| StoreError::Refused {
                what: "crediting a credit note",
                reason: e.to_string(),
            })?;
            $crate::store::ledger::post_entry_in_tx!($tx, &e, $now);
        }
        left
    }};
}

/// What a payment settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentAllocation {
    pub payment_ref: String,
    pub account_id: i64,
    pub amount_fen: i64,
    /// Per bill: principal and late fee settled.
    pub bills: Vec<Share>,
    /// The overpayment put to `credit:{account}`.
    pub to_credit_fen: i64,
    pub entry_id: uuid::Uuid,
}

/// The allocation settings of a community as the payment's account lock reads them
/// (`billing_settings.allocation_order`, `penalty_first`; no row: the defaults, as
/// `billing_settings_in_tx!` gives).
pub(crate) fn allocation_settings(
    allocation_order: Option<String>,
    penalty_first: Option<bool>,
) -> super::billing_settings::BillingSettings {
    match allocation_order {
        Some(order) => super::billing_settings::BillingSettings {
            allocation_order: AllocationOrder::parse(&order).unwrap_or(AllocationOrder::OldestFirst),
            penalty_first: penalty_first.unwrap_or(false),
            ..Default::default()
        },
        None => super::billing_settings::BillingSettings::default(),
    }
}

/// Spread a payment of `amount` over `items` (the account's bills with something outstanding)
/// by the community's rule, and build its balanced entry of `kind` / `payment_ref`, dated `at`:
/// debit `clearing` by `amount`, credit `receivable:{account}` by what the bills took and
/// `credit:{account}` by the overpayment. Shared by the one-by-one apply
/// ([`allocate_payment_in_tx!`]) and the set-wise one (`super::payment_batch`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_payment(
    kind: &str,
    account_id: i64,
    amount: Fen,
    payment_ref: &str,
    clearing: &LedgerAccount,
    settings: &super::billing_settings::BillingSettings,
    items: &[OpenItem],
    at: DateTime<Utc>,
) -> Result<(PaymentAllocation, JournalEntry), StoreError> {
    let (shares, left) = plan_allocation(items, amount, settings.allocation_order, settings.penalty_first);
    let to_bills: i64 = shares.iter().map(|s| s.total().get()).sum();
    let mut lines = vec![(clearing.clone(), amount)];
    if to_bills > 0 {
        lines.push((LedgerAccount::Receivable { account_id }, Fen::new(-to_bills)));
    }
    if left.is_positive() {
        lines.push((LedgerAccount::CustomerCredit { account_id }, Fen::new(-left.get())));
    }
    let entry =
        JournalEntry::new(kind, payment_ref, cst_date(at), format!("payment:{payment_ref}"), lines).map_err(|e| {
            StoreError::Refused {
                what: "allocating a payment",
                reason: e.to_string(),
            }
        })?;
    let allocation = PaymentAllocation {
        payment_ref: payment_ref.to_string(),
        account_id,
        amount_fen: amount.get(),
        bills: shares,
        to_credit_fen: left.get(),
        entry_id: entry.id,
    };
    Ok((allocation, entry))
}

/// Settle an account's open bills with a payment, inside a transaction the caller opened.
///
/// `allocate_payment_in_tx!($tx, account_id: i64, amount: Fen, payment_ref: &str,
/// clearing: &LedgerAccount, now: DateTime<Utc>)` → `Result<PaymentAllocation, StoreError>`
/// (evaluates to the allocation; on an error it returns early from the enclosing function, as
/// `?` would, so the caller's transaction is dropped and rolls back):
///
/// 1. locks the account row (so two payments of one account apply one after the other);
/// 2. spreads `amount` over the account's bills with something outstanding, in the community's
///    allocation order (default oldest due first), principal before late fee unless the
///    community's `penalty_first` says otherwise — disputed bills included (a payment is the
///    payer's decision);
/// 3. records each bill's share in `bill_allocations` (source `payment`, `source_ref` =
///    `payment_ref`, accounting date = the CST date of `now`);
/// 4. posts one balanced entry, kind `payment.allocate`, reference `payment_ref`: debit
///    `clearing` by `amount`, credit `receivable:{account}` by what the bills took and
///    `credit:{account}` by the overpayment.
///
/// Refused: a non-positive amount (`Refused`), an unknown account (`NotFound`), and the same
/// `payment_ref` twice (`Duplicate`, from the journal's unique `(kind, reference)`).
macro_rules! allocate_payment_in_tx {
    // With the journal entry's kind given (the payments step posts `payment.apply`).
    (kind = $kind:expr, $tx:expr, $account_id:expr, $amount:expr, $payment_ref:expr, $clearing:expr, $now:expr) => {{
        let account_id: i64 = $account_id;
        let amount: $crate::domain::Fen = $amount;
        let payment_ref: &str = $payment_ref;
        let clearing: &$crate::ledger::LedgerAccount = $clearing;
        let now: chrono::DateTime<chrono::Utc> = $now;
        let what = "allocating a payment";
        if !amount.is_positive() {
            return Err($crate::store::StoreError::Refused {
                what,
                reason: format!("a payment must be positive (got {amount})"),
            });
        }
        // Locks the account row and reads the two settings allocation needs in one statement.
        let locked: Option<(i64, Option<String>, Option<bool>)> = sqlx::query_as(
            "UPDATE accounts SET status = status WHERE id = $1 RETURNING community_id, \
             (SELECT s.allocation_order FROM billing_settings s WHERE s.community_id = accounts.community_id), \
             (SELECT s.penalty_first FROM billing_settings s WHERE s.community_id = accounts.community_id)",
        )
        .bind(account_id)
        .fetch_optional(&mut *$tx)
        .await
        .map_err(|e| $crate::store::StoreError::db(what, e))?;
        let (_community_id, allocation_order, penalty_first) =
            locked.ok_or_else(|| $crate::store::StoreError::NotFound(format!("account {account_id}")))?;
        let settings = $crate::store::bills::allocation_settings(allocation_order, penalty_first);
        let bills = $crate::store::bills::account_bills_in_tx!($tx, account_id);
        let items: Vec<$crate::domain::late_fee::OpenItem> = bills
            .iter()
            .filter(|b| b.outstanding_fen > 0)
            .map(|b| b.to_item())
            .collect();
        let (allocation, entry) = $crate::store::bills::plan_payment(
            $kind,
            account_id,
            amount,
            payment_ref,
            clearing,
            &settings,
            &items,
            now,
        )?;
        $crate::store::bills::insert_allocations_in_tx!(
            $tx,
            account_id,
            &allocation.bills,
            "payment",
            payment_ref.to_string(),
            now
        );
        $crate::store::ledger::post_entry_in_tx!($tx, &entry, now);
        allocation
    }};
    ($tx:expr, $account_id:expr, $amount:expr, $payment_ref:expr, $clearing:expr, $now:expr) => {
        $crate::store::bills::allocate_payment_in_tx!(
            kind = "payment.allocate",
            $tx,
            $account_id,
            $amount,
            $payment_ref,
            $clearing,
            $now
        )
    };
}
#[allow(unused_imports)] // allocate_payment_in_tx is for the payments step, inside its own transactions
pub(crate) use {
    account_bills_in_tx, allocate_payment_in_tx, apply_credit_note_in_tx, insert_allocations_in_tx,
    post_entries_batch_in_tx,
};

impl OpenBill {
    /// As allocation sees it.
    pub fn to_item(&self) -> OpenItem {
        self.item()
    }
}

/// A manual adjustment line (an operator's correction).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualLine {
    pub utility: Utility,
    pub description: String,
    /// May be negative (a credit).
    pub quantity: Quantity,
    pub unit_price: Price,
}

/// A bill with everything a statement shows.
#[derive(Debug, Clone, Serialize)]
pub struct BillDetail {
    pub id: i64,
    pub community_id: i64,
    pub account_id: i64,
    pub account_code: String,
    pub period: String,
    pub kind: String,
    pub adjusts_bill_id: Option<i64>,
    pub adjusted_by: Vec<i64>,
    pub reason: Option<String>,
    pub issued_at: Option<DateTime<Utc>>,
    pub due_date: NaiveDate,
    pub total_fen: i64,
    pub total: String,
    pub late_fee_fen: i64,
    pub allocated_fen: i64,
    pub outstanding_fen: i64,
    pub status: BillStatus,
    pub disputed: bool,
    pub dispute_reason: Option<String>,
    pub late_fee_waived: bool,
    pub lines: Vec<LineRow>,
    pub readings: Vec<BillReadingRow>,
    pub usage: Vec<UsageRow>,
    pub allocations: Vec<AllocationRow>,
    pub late_fees: Vec<LateFeeRow>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BillReadingRow {
    pub meter_id: i64,
    pub meter_no: String,
    pub utility: String,
    pub from_reading_id: i64,
    pub to_reading_id: i64,
    pub from_value_e4: i64,
    pub to_value_e4: i64,
    pub from_at: DateTime<Utc>,
    pub to_at: DateTime<Utc>,
    pub from_kind: String,
    pub to_kind: String,
    pub multiplier_e4: i64,
    pub usage_e4: i64,
    pub rollovers: i32,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UsageRow {
    pub utility: String,
    pub usage_period: String,
    pub tier_year_start: Option<NaiveDate>,
    pub quantity_e4: i64,
    pub estimated: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AllocationRow {
    pub amount_fen: i64,
    pub principal_fen: i64,
    pub late_fee_fen: i64,
    pub source: String,
    pub source_ref: String,
    pub allocated_at: DateTime<Utc>,
    pub accounting_date: NaiveDate,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LateFeeRow {
    pub as_of: NaiveDate,
    pub kind: String,
    pub fee_to_date_fen: i64,
    pub delta_fen: i64,
    pub accrued_exact: String,
    pub trace: String,
    pub actor: String,
    pub reason: Option<String>,
}

/// A bill in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct BillSummary {
    pub id: i64,
    pub account_id: i64,
    pub account_code: String,
    pub period: String,
    pub kind: String,
    pub due_date: NaiveDate,
    pub total_fen: i64,
    pub outstanding_fen: i64,
    pub status: BillStatus,
    pub disputed: bool,
}

/// Filters for listing bills.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BillFilter {
    pub community_id: Option<i64>,
    pub account_id: Option<i64>,
    pub period: Option<String>,
    pub limit: Option<i64>,
}

/// A usage alert (预警) for the operator.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UsageAlert {
    pub id: i64,
    pub account_id: i64,
    pub account_code: String,
    pub utility: String,
    pub period: String,
    pub kind: String,
    pub usage_e4: i64,
    pub baseline_e4: i64,
    pub detail: String,
}

impl Store {
    /// Usage alerts of a community, optionally for one period, newest first.
    pub async fn usage_alerts(&self, community_id: i64, period: Option<Period>) -> Result<Vec<UsageAlert>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_as::<_, UsageAlert>(
                "SELECT u.id, u.account_id, a.code AS account_code, u.utility, u.period, u.kind, u.usage_e4, u.baseline_e4, u.detail \
                 FROM usage_alerts u JOIN accounts a ON a.id = u.account_id WHERE u.community_id = $1 AND ($2 IS NULL OR u.period = $2) \
                 ORDER BY u.period DESC, a.code, u.utility",
            )
            .bind(community_id)
            .bind(period.map(|p| p.to_string()))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing usage alerts", e))
        })
    }

    /// Run the bills of a period (see the module documentation).
    pub async fn run_bills(
        &self,
        opts: &RunOptions,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<RunReport, StoreError> {
        let communities = match &opts.community {
            Some(code) => vec![self
                .community_by_code(code)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("community {code:?}")))?],
            None => self.list_communities().await?,
        };
        let mut report = RunReport {
            period: opts.period,
            dry_run: opts.dry_run,
            communities: Vec::new(),
        };
        let mut done = 0usize;
        for c in communities {
            let tariffs = TariffBook::new(self.tariff_versions(c.id, None).await?);
            let settings = self.billing_settings(c.id).await?;
            let due = opts
                .due_date
                .unwrap_or_else(|| settings.due_date(opts.period, cst_date(now)));
            let mut run = CommunityRun {
                community: c.code.clone(),
                ..Default::default()
            };
            let run_id: Option<i64> = if opts.dry_run {
                None
            } else {
                let id = in_tx!(self, "starting a bill run", |tx| {
                    sqlx::query_scalar::<_, i64>(
                        "INSERT INTO bill_runs (community_id, period, actor, started_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    )
                    .bind(c.id)
                    .bind(opts.period.to_string())
                    .bind(actor)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("starting a bill run", e))
                })?;
                Some(id)
            };
            run.run_id = run_id;
            let chunk = opts.chunk.max(1);
            // What every chunk reads, borrowed by the chunk body below (on PostgreSQL two chunks
            // run at once and share them).
            let (c, tariffs, settings) = (&c, &tariffs, &settings);
            // One chunk in the transaction `$tx`: the active accounts with `$after < id <= $upto`,
            // at most `$limit` of them — load, plan, write. Its value: the last account id it
            // saw (`None`: no accounts) and what it did.
            macro_rules! bill_chunk {
                ($tx:ident, $after:expr, $upto:expr, $limit:expr) => {{
                    let after: i64 = $after;
                    let upto: i64 = $upto;
                    let limit: i64 = $limit;
                    'chunk: {
                        let t_load = std::time::Instant::now();
                        let data = load_chunk!($tx, c.id, after, upto, limit, opts.period);
                        let load_ms = t_load.elapsed().as_millis();
                        let t_plan = std::time::Instant::now();
                        let Some(last) = data.accounts.last().map(|a| a.id) else {
                            break 'chunk Ok::<_, StoreError>((None, CommunityRun::default()));
                        };
                        let mut counts = CommunityRun::default();
                        let mut to_write: Vec<ToWrite> = Vec::new();
                        let mut states: Vec<(i64, i64, MeterState)> = Vec::new();
                        let mut alerts: Vec<(i64, crate::billing::engine::AlertPlan)> = Vec::new();
                        for a in &data.accounts {
                            counts.accounts += 1;
                            if data.billed.contains(&a.id) {
                                counts.already_billed += 1;
                                continue;
                            }
                            let meters = match meter_inputs(&data, a.id) {
                                Ok(m) => m,
                                Err(reason) => {
                                    counts.skipped.push(Skipped {
                                        account_code: a.code.clone(),
                                        reason,
                                    });
                                    continue;
                                }
                            };
                            let mut estimated: BTreeMap<Utility, Vec<EstimatedBill>> = BTreeMap::new();
                            let mut rerate: BTreeMap<Utility, Vec<(i64, Option<Period>)>> = BTreeMap::new();
                            for m in &meters {
                                if let Some(anchor_period) = needs_rerate(m) {
                                    rerate.entry(m.utility).or_default().push((m.id, anchor_period));
                                }
                            }
                            for (u, ms) in &rerate {
                                let bills = load_estimated!($tx, a.id, *u, ms.iter());
                                estimated.insert(*u, bills);
                            }
                            let input = AccountInput {
                                account_id: a.id,
                                customer_class: a.customer_class.clone(),
                                opened_on: a.opened_on,
                                area_m2: a.area_m2_e2.map(|v| Decimal::new(v, 2)),
                                occupied: a.occupied.unwrap_or(true),
                                meters,
                                tariffs: &tariffs,
                                history: data.history.get(&a.id).cloned().unwrap_or_default(),
                                estimated,
                                period: opts.period,
                                alert_multiple: settings.alert_multiple(),
                            };
                            let plan: AccountPlan = match plan_account(&input) {
                                Ok(p) => p,
                                Err(reason) => {
                                    counts.skipped.push(Skipped {
                                        account_code: a.code.clone(),
                                        reason,
                                    });
                                    continue;
                                }
                            };
                            let Some(regular) = plan.regular else {
                                counts.without_new_readings += 1;
                                continue;
                            };
                            counts.bills_issued += 1;
                            counts.total_fen += regular.total.get();
                            for adj in plan.adjustments {
                                counts.adjustment_bills += 1;
                                counts.adjustments_fen += adj.bill.total.get();
                                to_write.push(ToWrite {
                                    account_id: a.id,
                                    kind: "adjustment",
                                    adjusts: Some(adj.adjusts_bill_id),
                                    period: adj.period,
                                    reason: Some(adj.reason),
                                    plan: adj.bill,
                                });
                            }
                            to_write.push(ToWrite {
                                account_id: a.id,
                                kind: "regular",
                                adjusts: None,
                                period: opts.period,
                                reason: None,
                                plan: regular,
                            });
                            for s in plan.states {
                                states.push((s.meter_id, a.id, s.state));
                            }
                            for al in plan.alerts {
                                counts.alerts += 1;
                                alerts.push((a.id, al));
                            }
                        }
                        let plan_ms = t_plan.elapsed().as_millis();
                        if opts.dry_run || to_write.is_empty() {
                            break 'chunk Ok((Some(last), counts));
                        }
                        let t_write = std::time::Instant::now();
                        let ids = write_bills_in_tx!($tx, c.id, &to_write, due, run_id, actor, now);
                        let bills_ms = t_write.elapsed().as_millis();
                        // Meters' billing state, pointing at each account's regular bill.
                        let regular_of: HashMap<i64, i64> = to_write
                            .iter()
                            .zip(&ids)
                            .filter(|(w, _)| w.kind == "regular")
                            .map(|(w, id)| (w.account_id, *id))
                            .collect();
                        let mut st = crate::store::bulk::StateCols::default();
                        for (meter, account, state) in &states {
                            st.meter_id.push(*meter);
                            st.account_id.push(*account);
                            st.reading_id.push(state.last.id);
                            st.read_at.push(state.last.read_at);
                            st.value_e4.push(e4(state.last.value));
                            st.kind.push(state.last.kind.as_str());
                            st.anchor_reading_id.push(state.anchor.id);
                            st.anchor_at.push(state.anchor.read_at);
                            st.anchor_value_e4.push(e4(state.anchor.value));
                            st.anchor_period.push(state.anchor_period.map(|p| p.to_string()));
                            st.bill_id.push(regular_of.get(account).copied().unwrap_or_default());
                        }
                        crate::store::bulk::Bulk::upsert_meter_states(&mut $tx, &st, now)
                            .await
                            .map_err(|e| StoreError::db("saving meters' billing state", e))?;
                        for chunk in alerts.chunks(ROWS) {
                            let mut qb = sqlx::QueryBuilder::new(
                                "INSERT INTO usage_alerts (community_id, account_id, utility, period, kind, usage_e4, baseline_e4, detail, created_at) ",
                            );
                            qb.push_values(chunk, |mut b, (account, al)| {
                                b.push_bind(c.id)
                                    .push_bind(*account)
                                    .push_bind(al.utility.as_str())
                                    .push_bind(opts.period.to_string())
                                    .push_bind(al.kind)
                                    .push_bind(e4(al.usage))
                                    .push_bind(e4(al.baseline))
                                    .push_bind(al.detail.clone())
                                    .push_bind(now);
                            });
                            qb.push(" ON CONFLICT (account_id, utility, period, kind) DO NOTHING");
                            qb.build()
                                .execute(&mut *$tx)
                                .await
                                .map_err(|e| StoreError::db("recording usage alerts", e))?;
                        }
                        let state_ms = t_write.elapsed().as_millis() - bills_ms;
                        // The ledger: each bill's issue.
                        let date = cst_date(now);
                        // One entry for the chunk's bills: a debit per account, a credit per revenue
                        // or payable account (per bill, it would be six journal rows for each).
                        let entries: Vec<JournalEntry> = issue_batch_entry(
                            run_id.unwrap_or_default(),
                            after,
                            opts.period,
                            to_write.iter().zip(&ids).map(|(w, id)| (*id, w.account_id, &w.plan)),
                            date,
                            actor,
                        )
                        .into_iter()
                        .collect();
                        post_entries_batch_in_tx!($tx, &entries, now);
                        let ledger_ms = t_write.elapsed().as_millis() - bills_ms - state_ms;
                        tracing::trace!(state_ms, ledger_ms, "bill run writes");
                        // Credit notes from re-rating, then credit held for the customer settles new bills.
                        let mut noted: BTreeSet<i64> = BTreeSet::new();
                        for (w, id) in to_write.iter().zip(&ids) {
                            if w.plan.total.is_negative() {
                                noted.insert(w.account_id);
                                if let Some(target) = w.adjusts {
                                    apply_credit_note_in_tx!(
                                        $tx,
                                        w.account_id,
                                        *id,
                                        Fen::new(-w.plan.total.get()),
                                        target,
                                        settings.allocation_order,
                                        settings.penalty_first,
                                        actor,
                                        now
                                    );
                                }
                            }
                        }
                        let mut credit_entries = Vec::new();
                        let mut by_account: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
                        for (w, id) in to_write.iter().zip(&ids) {
                            if w.plan.total.is_positive() && data.credit.contains_key(&w.account_id) {
                                by_account
                                    .entry(w.account_id)
                                    .or_default()
                                    .push((*id, w.plan.total.get()));
                            }
                        }
                        let mut credit_shares: Vec<(i64, Share)> = Vec::new();
                        for (account, mut bills) in by_account {
                            if noted.contains(&account) {
                                // A credit note may already have settled part of the new bills.
                                let now_owed: HashMap<i64, i64> = account_bills_in_tx!($tx, account)
                                    .into_iter()
                                    .map(|b| (b.bill_id, b.outstanding_fen))
                                    .collect();
                                for (bill, total) in bills.iter_mut() {
                                    *total = now_owed.get(bill).copied().unwrap_or_default();
                                }
                            }
                            let mut left = data.credit.get(&account).copied().unwrap_or_default();
                            let mut used = 0i64;
                            for (bill, total) in bills {
                                let take = total.min(left);
                                if take <= 0 {
                                    break;
                                }
                                left -= take;
                                used += take;
                                credit_shares.push((
                                    account,
                                    Share {
                                        bill_id: bill,
                                        principal: Fen::new(take),
                                        late_fee: Fen::ZERO,
                                    },
                                ));
                            }
                            if used > 0 {
                                counts.settled_from_credit_fen += used;
                                let reference = format!("run:{}:account:{account}", run_id.unwrap_or_default());
                                credit_entries.push(
                                    JournalEntry::transfer(
                                        "bill.settle_from_credit",
                                        reference,
                                        date,
                                        actor,
                                        LedgerAccount::CustomerCredit { account_id: account },
                                        LedgerAccount::Receivable { account_id: account },
                                        Fen::new(used),
                                    )
                                    .map_err(|e| StoreError::Refused {
                                        what: "settling bills from credit",
                                        reason: e.to_string(),
                                    })?,
                                );
                            }
                        }
                        for (account, share) in &credit_shares {
                            insert_allocations_in_tx!(
                                $tx,
                                *account,
                                std::slice::from_ref(share),
                                "credit",
                                "credit".to_string(),
                                now
                            );
                        }
                        post_entries_batch_in_tx!($tx, &credit_entries, now);
                        tracing::debug!(
                            accounts = counts.accounts,
                            load_ms,
                            plan_ms,
                            bills_ms,
                            rest_ms = t_write.elapsed().as_millis() - bills_ms,
                            "bill run chunk"
                        );
                        Ok((Some(last), counts))
                    }
                }};
            }
            let what = "running bills";
            match &self.backend {
                // One writer: chunks one after another, each `chunk` accounts after the last.
                Backend::Sqlite { writer, .. } => {
                    let mut after = 0i64;
                    loop {
                        let mut tx = writer
                            .begin_with("BEGIN IMMEDIATE")
                            .await
                            .map_err(|e| StoreError::db(what, e))?;
                        let (last, counts) = bill_chunk!(tx, after, i64::MAX, chunk as i64)?;
                        tx.commit().await.map_err(|e| StoreError::db(what, e))?;
                        let Some(last) = last else { break };
                        after = last;
                        done += counts.accounts;
                        progress(done);
                        run.absorb(counts);
                    }
                }
                // The server's CPU bounds a chunk (its writes), so chunks run
                // [`PG_BILL_RUN_LANES`] at a time, each in its own transaction over its own range
                // of accounts, fixed before the first starts so no two can meet. Runs of one
                // community still take turns: a transaction of the run's own holds an advisory
                // lock on the community until the run ends (or its connection drops).
                Backend::Postgres(pg) => {
                    let mut turn = pg.begin().await.map_err(|e| StoreError::db(what, e))?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(BILL_RUN_LOCK_CLASS << 32 | (c.id & 0xffff_ffff))
                        .execute(&mut *turn)
                        .await
                        .map_err(|e| StoreError::db("waiting for the community's other bill run", e))?;
                    // Every `chunk`-th active account id: the ranges' upper ends.
                    let ends: Vec<i64> = sqlx::query_scalar(
                        "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM accounts \
                         WHERE community_id = $1 AND status = 'active') t WHERE n % $2 = 0 ORDER BY id",
                    )
                    .bind(c.id)
                    .bind(chunk as i64)
                    .fetch_all(&mut *turn)
                    .await
                    .map_err(|e| StoreError::db("dividing a bill run into chunks", e))?;
                    let starts = std::iter::once(0i64).chain(ends.iter().copied());
                    let ranges: Vec<(i64, i64)> = starts.zip(ends.iter().copied().chain([i64::MAX])).collect();
                    // No limit within a range: an account opened since the ranges were drawn is
                    // billed with its neighbours.
                    let mut chunks = futures::stream::iter(ranges)
                        .map(|(after, upto)| async move {
                            let mut tx = pg.begin().await.map_err(|e| StoreError::db(what, e))?;
                            let out = bill_chunk!(tx, after, upto, i64::MAX)?;
                            tx.commit().await.map_err(|e| StoreError::db(what, e))?;
                            Ok::<_, StoreError>(out)
                        })
                        .buffered(PG_BILL_RUN_LANES);
                    while let Some(result) = futures::StreamExt::next(&mut chunks).await {
                        let (_, counts) = result?;
                        done += counts.accounts;
                        progress(done);
                        run.absorb(counts);
                    }
                    drop(chunks);
                    turn.commit().await.map_err(|e| StoreError::db(what, e))?;
                }
            }
            if let Some(id) = run_id {
                let summary = serde_json::to_value(&run).unwrap_or_default();
                in_tx!(self, "finishing a bill run", |tx| {
                    sqlx::query(
                        "UPDATE bill_runs SET finished_at = $1, bills_issued = $2, adjustments = $3, skipped = $4, total_fen = $5 WHERE id = $6",
                    )
                    .bind(now)
                    .bind(run.bills_issued as i64)
                    .bind(run.adjustment_bills as i64)
                    .bind(run.skipped.len() as i64)
                    .bind(run.total_fen)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db("finishing a bill run", e))?;
                    let rec = AuditRecord {
                        actor: actor.into(),
                        action: "bills.run".into(),
                        subject_type: "bill_run".into(),
                        subject_id: id.to_string(),
                        before: None,
                        after: Some(summary.clone()),
                        reason: None,
                        request_id: request_id.map(str::to_string),
                    };
                    insert_audit!(&mut *tx, &rec, now)?;
                    Ok::<(), StoreError>(())
                })?;
            }
            report.communities.push(run);
        }
        Ok(report)
    }

    /// An account's bills that still have something outstanding, in the order a payment would
    /// settle them (the community's allocation order).
    pub async fn open_bills(&self, account_id: i64) -> Result<Vec<OpenBill>, StoreError> {
        let community_id: Option<i64> = on_read!(self, |pool| {
            sqlx::query_scalar("SELECT community_id FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(pool)
                .await
                .map_err(|e| StoreError::db("finding an account", e))
        })?;
        let community_id = community_id.ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
        let settings = self.billing_settings(community_id).await?;
        let mut bills: Vec<OpenBill> = self
            .account_bills(account_id)
            .await?
            .into_iter()
            .filter(|b| b.outstanding_fen > 0)
            .collect();
        let mut items: Vec<OpenItem> = bills.iter().map(|b| b.item()).collect();
        order_items(&mut items, settings.allocation_order);
        let pos: HashMap<i64, usize> = items.iter().enumerate().map(|(i, it)| (it.bill_id, i)).collect();
        bills.sort_by_key(|b| pos.get(&b.bill_id).copied().unwrap_or(usize::MAX));
        Ok(bills)
    }

    /// Every issued bill of an account with its amounts and derived status.
    pub async fn account_bills(&self, account_id: i64) -> Result<Vec<OpenBill>, StoreError> {
        let rows: Vec<OpenRow> = on_read!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{OPEN_SQL} ORDER BY b.period, b.id")))
                .bind(account_id)
                .fetch_all(pool)
                .await
                .map_err(|e| StoreError::db("reading an account's bills", e))
        })?;
        Ok(rows.into_iter().map(OpenRow::into_bill).collect())
    }

    /// Settle an account's open bills with a payment in its own transaction (see
    /// [`allocate_payment_in_tx!`], which the payments step calls inside its own).
    pub async fn allocate_payment(
        &self,
        account_id: i64,
        amount: Fen,
        payment_ref: &str,
        clearing: &LedgerAccount,
        now: DateTime<Utc>,
    ) -> Result<PaymentAllocation, StoreError> {
        in_tx!(self, "allocating a payment", |tx| {
            let a = allocate_payment_in_tx!(tx, account_id, amount, payment_ref, clearing, now);
            Ok::<_, StoreError>(a)
        })
    }

    /// A bill with its lines, readings, usage, allocations and late fees.
    pub async fn bill_detail(&self, bill_id: i64) -> Result<BillDetail, StoreError> {
        let what = "reading a bill";
        #[derive(sqlx::FromRow)]
        struct Head {
            id: i64,
            community_id: i64,
            account_id: i64,
            account_code: String,
            period: String,
            kind: String,
            adjusts_bill_id: Option<i64>,
            reason: Option<String>,
            issued_at: Option<DateTime<Utc>>,
            dispute_reason: Option<String>,
            late_fee_waived: bool,
        }
        let head: Head = on_read!(self, |pool| {
            sqlx::query_as(
                "SELECT b.id, b.community_id, b.account_id, a.code AS account_code, b.period, b.kind, b.adjusts_bill_id, b.reason, \
                 b.issued_at, b.dispute_reason, b.late_fee_waived FROM bills b JOIN accounts a ON a.id = b.account_id \
                 WHERE b.id = $1 AND b.status = 'issued'",
            )
            .bind(bill_id)
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db(what, e))
        })?
        .ok_or_else(|| StoreError::NotFound(format!("bill {bill_id}")))?;
        let amounts = self
            .account_bills(head.account_id)
            .await?
            .into_iter()
            .find(|b| b.bill_id == bill_id)
            .ok_or_else(|| StoreError::NotFound(format!("bill {bill_id}")))?;
        let (lines, readings, usage, allocations, late_fees, adjusted_by) = on_read!(self, |pool| {
            let lines: Vec<LineRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {LINE_COLS} FROM bill_lines WHERE bill_id = $1 ORDER BY line_no"
            )))
            .bind(bill_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let readings: Vec<BillReadingRow> = sqlx::query_as(
                "SELECT br.meter_id, m.meter_no, br.utility, br.from_reading_id, br.to_reading_id, br.from_value_e4, br.to_value_e4, \
                 br.from_at, br.to_at, br.from_kind, br.to_kind, br.multiplier_e4, br.usage_e4, br.rollovers \
                 FROM bill_readings br JOIN meters m ON m.id = br.meter_id WHERE br.bill_id = $1 ORDER BY br.utility, br.from_at",
            )
            .bind(bill_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let usage: Vec<UsageRow> = sqlx::query_as(
                "SELECT utility, usage_period, tier_year_start, quantity_e4, estimated FROM bill_usage WHERE bill_id = $1 ORDER BY utility, usage_period",
            )
            .bind(bill_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let allocations: Vec<AllocationRow> = sqlx::query_as(
                "SELECT amount_fen, principal_fen, late_fee_fen, source, source_ref, allocated_at, accounting_date \
                 FROM bill_allocations WHERE bill_id = $1 ORDER BY id",
            )
            .bind(bill_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let late_fees: Vec<LateFeeRow> = sqlx::query_as(
                "SELECT as_of, kind, fee_to_date_fen, delta_fen, accrued_exact, trace, actor, reason FROM late_fee_postings \
                 WHERE bill_id = $1 ORDER BY as_of, id",
            )
            .bind(bill_id)
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let adjusted_by: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM bills WHERE adjusts_bill_id = $1 AND status = 'issued' ORDER BY id")
                    .bind(bill_id)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
            Ok::<_, StoreError>((lines, readings, usage, allocations, late_fees, adjusted_by))
        })?;
        Ok(BillDetail {
            id: head.id,
            community_id: head.community_id,
            account_id: head.account_id,
            account_code: head.account_code,
            period: head.period,
            kind: head.kind,
            adjusts_bill_id: head.adjusts_bill_id,
            adjusted_by,
            reason: head.reason,
            issued_at: head.issued_at,
            due_date: amounts.due_date,
            total_fen: amounts.total_fen,
            total: Fen::new(amounts.total_fen).to_string(),
            late_fee_fen: amounts.late_fee_fen,
            allocated_fen: amounts.allocated_fen,
            outstanding_fen: amounts.outstanding_fen,
            status: amounts.status,
            disputed: amounts.disputed,
            dispute_reason: head.dispute_reason,
            late_fee_waived: head.late_fee_waived,
            lines,
            readings,
            usage,
            allocations,
            late_fees,
        })
    }

    /// The regular bill of an account for a period.
    pub async fn bill_id_for(&self, account_id: i64, period: Period) -> Result<Option<i64>, StoreError> {
        on_read!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM bills WHERE account_id = $1 AND period = $2 AND kind = 'regular' AND status = 'issued'",
            )
            .bind(account_id)
            .bind(period.to_string())
            .fetch_optional(pool)
            .await
            .map_err(|e| StoreError::db("finding a bill", e))
        })
    }

    /// Bills by community, account and/or period, newest first.
    pub async fn list_bills(&self, f: &BillFilter) -> Result<Vec<BillSummary>, StoreError> {
        let ids: Vec<(i64, i64, String)> = on_read!(self, |pool| {
            sqlx::query_as(
                "SELECT b.id, b.account_id, a.code FROM bills b JOIN accounts a ON a.id = b.account_id WHERE b.status = 'issued' \
                 AND ($1 IS NULL OR b.community_id = $1) AND ($2 IS NULL OR b.account_id = $2) AND ($3 IS NULL OR b.period = $3) \
                 ORDER BY b.period DESC, b.id DESC LIMIT $4",
            )
            .bind(f.community_id)
            .bind(f.account_id)
            .bind(f.period.clone())
            .bind(f.limit.unwrap_or(500).clamp(1, 10_000))
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db("listing bills", e))
        })?;
        let mut by_account: BTreeMap<i64, Vec<OpenBill>> = BTreeMap::new();
        let mut out = Vec::new();
        for (id, account_id, code) in ids {
            if let std::collections::btree_map::Entry::Vacant(e) = by_account.entry(account_id) {
                e.insert(self.account_bills(account_id).await?);
            }
            if let Some(b) = by_account[&account_id].iter().find(|b| b.bill_id == id) {
                out.push(BillSummary {
                    id,
                    account_id,
                    account_code: code,
                    period: b.period.clone(),
                    kind: b.kind.clone(),
                    due_date: b.due_date,
                    total_fen: b.total_fen,
                    outstanding_fen: b.outstanding_fen,
                    status: b.status,
                    disputed: b.disputed,
                });
            }
        }
        Ok(out)
    }

    /// Mark a bill disputed, or clear the mark, with a reason (audited). Reminders skip
    /// disputed bills; amounts and late fees are unaffected.
    pub async fn set_bill_dispute(
        &self,
        bill_id: i64,
        disputed: bool,
        reason: &str,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let what = if disputed {
            "disputing a bill"
        } else {
            "clearing a bill's dispute"
        };
        if reason.trim().is_empty() {
            return Err(StoreError::Refused {
                what,
                reason: "a reason is required".into(),
            });
        }
        in_tx!(self, what, |tx| {
            let before: Option<(bool, Option<String>)> =
                sqlx::query_as("SELECT disputed, dispute_reason FROM bills WHERE id = $1 AND status = 'issued'")
                    .bind(bill_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| StoreError::db(what, e))?;
            let (was, old_reason) = before.ok_or_else(|| StoreError::NotFound(format!("bill {bill_id}")))?;
            if was == disputed {
                return Err(StoreError::Refused {
                    what,
                    reason: format!(
                        "bill {bill_id} is {} disputed",
                        if disputed { "already" } else { "not" }
                    ),
                });
            }
            sqlx::query(
                "UPDATE bills SET disputed = $1, dispute_reason = $2, disputed_at = $3, disputed_by = $4 WHERE id = $5",
            )
            .bind(disputed)
            .bind(if disputed { Some(reason.trim()) } else { None })
            .bind(if disputed { Some(now) } else { None })
            .bind(if disputed { Some(actor) } else { None })
            .bind(bill_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let rec = AuditRecord {
                actor: actor.into(),
                action: if disputed {
                    "bill.dispute".into()
                } else {
                    "bill.undispute".into()
                },
                subject_type: "bill".into(),
                subject_id: bill_id.to_string(),
                before: Some(serde_json::json!({"disputed": was, "dispute_reason": old_reason})),
                after: Some(serde_json::json!({"disputed": disputed})),
                reason: Some(reason.trim().to_string()),
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok(())
        })
    }

    /// Issue an adjustment bill correcting `bill_id` with an operator's lines (never an edit of
    /// the bill). A negative total is a credit note, applied at once.
    pub async fn issue_adjustment(
        &self,
        bill_id: i64,
        lines: &[ManualLine],
        reason: &str,
        actor: &str,
        request_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<BillDetail, StoreError> {
        let what = "issuing an adjustment bill";
        if reason.trim().is_empty() {
            return Err(StoreError::Refused {
                what,
                reason: "a reason is required".into(),
            });
        }
        if lines.is_empty() {
            return Err(StoreError::Refused {
                what,
                reason: "an adjustment needs at least one line".into(),
            });
        }
        let mut drafts = Vec::new();
        for l in lines {
            if l.description.trim().is_empty() || l.quantity.get().is_zero() {
                return Err(StoreError::Refused {
                    what,
                    reason: "each line needs a description and a non-zero quantity".into(),
                });
            }
            let d = LineDraft::new(
                Some(l.utility),
                LineKind::Adjustment,
                "adjustment",
                l.description.trim().to_string(),
                l.quantity,
                l.unit_price,
            )
            .map_err(|e| StoreError::Refused {
                what,
                reason: e.to_string(),
            })?;
            drafts.push(d);
        }
        let total = crate::domain::tariff::total_of(&drafts).map_err(|e| StoreError::Refused {
            what,
            reason: e.to_string(),
        })?;
        let new_id = in_tx!(self, what, |tx| {
            let target: Option<(i64, i64, String)> = sqlx::query_as(
                "SELECT community_id, account_id, period FROM bills WHERE id = $1 AND status = 'issued'",
            )
            .bind(bill_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::db(what, e))?;
            let (community_id, account_id, period) =
                target.ok_or_else(|| StoreError::NotFound(format!("bill {bill_id}")))?;
            let period = Period::parse(&period).map_err(|reason| StoreError::Refused { what, reason })?;
            let settings = billing_settings_in_tx!(tx, community_id);
            let due = settings.due_date(period, cst_date(now));
            let w = [ToWrite {
                account_id,
                kind: "adjustment",
                adjusts: Some(bill_id),
                period,
                reason: Some(reason.trim().to_string()),
                plan: BillPlan {
                    lines: drafts.clone(),
                    total,
                    readings: Vec::new(),
                    usage: Vec::new(),
                },
            }];
            let ids = write_bills_in_tx!(tx, community_id, &w, due, None::<i64>, actor, now);
            let id = ids[0];
            if let Some(e) = issue_entry(id, account_id, &w[0].plan, cst_date(now), actor) {
                crate::store::ledger::post_entry_in_tx!(tx, &e, now);
            }
            if total.is_negative() {
                apply_credit_note_in_tx!(
                    tx,
                    account_id,
                    id,
                    Fen::new(-total.get()),
                    bill_id,
                    settings.allocation_order,
                    settings.penalty_first,
                    actor,
                    now
                );
            }
            let rec = AuditRecord {
                actor: actor.into(),
                action: "bill.adjust".into(),
                subject_type: "bill".into(),
                subject_id: bill_id.to_string(),
                before: None,
                after: Some(serde_json::json!({"adjustment_bill_id": id, "total_fen": total.get()})),
                reason: Some(reason.trim().to_string()),
                request_id: request_id.map(str::to_string),
            };
            insert_audit!(&mut *tx, &rec, now)?;
            Ok::<i64, StoreError>(id)
        })?;
        self.bill_detail(new_id).await
    }
}
