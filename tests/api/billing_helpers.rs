//! Helpers for the billing suites: a community set up from CSV and TOML in the project's own
//! formats, readings stored through the same path the push API and file import use, and bill
//! runs at controlled times.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use meterpay::billing::accounts_import::{accounts_from_table, read_table};
use meterpay::billing::readings::{BatchReport, IncomingReading};
use meterpay::domain::Period;
use meterpay::store::bills::{BillDetail, RunOptions, RunReport};
use meterpay::store::directory::Community;
use meterpay::store::tariffs::TariffFile;
use meterpay::store::Store;

use crate::helpers::TestDb;

/// A China-time instant.
pub fn cst(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    chrono::FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

#[allow(dead_code)]
pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub fn period(p: &str) -> Period {
    Period::parse(p).unwrap()
}

/// A community with accounts (CSV in the accounts-import format) and tariffs (TOML in the
/// tariff-file format; `{C}` stands for the community code).
pub async fn community(db: &TestDb, code: &str, accounts_csv: &str, tariffs_toml: &str) -> Community {
    let store = &db.store;
    let now = cst(2020, 1, 1, 9);
    let (c, _) = store.ensure_community(code, code, "test", now).await.unwrap();
    let t = read_table("accounts.csv", accounts_csv.as_bytes()).unwrap();
    let rows = accounts_from_table("accounts.csv", &t).unwrap();
    let report = store.import_accounts(c.id, &rows, "test", None, now).await.unwrap();
    assert_eq!(report.refused, 0, "{report:?}");
    if !tariffs_toml.trim().is_empty() {
        let file = TariffFile::parse(&tariffs_toml.replace("{C}", code)).unwrap();
        store
            .add_tariff_versions(&file.tariff, "test", None, now)
            .await
            .unwrap();
    }
    c
}

/// Store readings `(meter, utility, read_at, value, kind)` as a file import would.
pub async fn readings(store: &Store, rows: &[(&str, &str, DateTime<Utc>, &str, &str)]) -> BatchReport {
    let incoming: Vec<IncomingReading> = rows
        .iter()
        .map(|(m, u, at, v, k)| IncomingReading {
            meter_no: m.to_string(),
            utility: u.to_string(),
            read_at: at.to_rfc3339(),
            value: serde_json::Value::String(v.to_string()),
            kind: Some(k.to_string()),
            registers: None,
        })
        .collect();
    let r = store
        .ingest_readings(None, &incoming, "import", "test", cst(2027, 1, 1, 9), &|_| {})
        .await
        .unwrap();
    assert_eq!(r.accepted, rows.len(), "{:?}", r.results);
    r
}

/// Run a period's bills at `now`, due on `due` if given.
pub async fn run(store: &Store, code: &str, p: &str, due: Option<NaiveDate>, now: DateTime<Utc>) -> RunReport {
    let mut o = RunOptions::new(period(p));
    o.community = Some(code.to_string());
    o.due_date = due;
    store.run_bills(&o, "test", None, now, &|_| {}).await.unwrap()
}

pub async fn account_id(store: &Store, c: &Community, code: &str) -> i64 {
    store.account_by_code(c.id, code).await.unwrap().unwrap().id
}

/// The regular bill of an account for a period.
pub async fn bill(store: &Store, c: &Community, account: &str, p: &str) -> BillDetail {
    let a = account_id(store, c, account).await;
    let id = store
        .bill_id_for(a, period(p))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {p} bill for {account}"));
    store.bill_detail(id).await.unwrap()
}

/// `(quantity, amount in fen)` of each line, quantities as plain decimals.
pub fn lines(b: &BillDetail) -> Vec<(String, i64)> {
    b.lines
        .iter()
        .map(|l| {
            (
                meterpay::domain::Quantity::from_scaled(l.quantity_e4).to_string(),
                l.amount_fen,
            )
        })
        .collect()
}

/// Every bill's total equals the sum of its lines.
pub fn assert_total_is_sum_of_lines(b: &BillDetail) {
    let sum: i64 = b.lines.iter().map(|l| l.amount_fen).sum();
    assert_eq!(b.total_fen, sum, "bill {} total vs lines", b.id);
}
