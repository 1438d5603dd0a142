//! The morning report (对账日报, domain.md §6.8): per channel and merchant, the day's counts and
//! amounts per class, gross, refunds, fees and net; every open exception with its age; as JSON,
//! CSV and XLSX, and e-mailed to finance over SMTP.
//!
//! Amounts are integer fen everywhere (also in the spreadsheet, where a fen count is exact), with
//! a yuan text column beside them for reading. Exports neutralise spreadsheet formulas: a text
//! field that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is written with a
//! leading `'`, so a crafted order number or remark cannot become a formula in finance's
//! spreadsheet.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::matching::{Class, Tally};
use super::{item_state, ItemState, RunSummary, SETTLEMENT_KIND};
use crate::dunning::email::{Attachment, EmailSender, OutgoingEmail, SentEmail, SmtpSettings};
use crate::store::Store;

/// One channel and merchant on the report's day.
#[derive(Debug, Clone, Serialize)]
pub struct MerchantDay {
    pub channel: String,
    pub merchant_id: String,
    pub run_id: i64,
    pub run_at: DateTime<Utc>,
    pub file_sha256: String,
    pub file_rows: u64,
    pub matched: Tally,
    /// Items by class, as found (counts and summed differences).
    pub classes: BTreeMap<String, Tally>,
    pub gross_fen: i64,
    pub refunds_fen: i64,
    pub fees_fen: i64,
    pub net_fen: i64,
    /// Items of this day without a decision (expected ones included).
    pub open_items: u64,
    pub settled: bool,
    /// `BALANCED`, `BALANCED WITH PENDING` or `EXCEPTIONS`, now.
    pub status: String,
}

/// An exception not yet decided, of the report's day or earlier.
#[derive(Debug, Clone, Serialize)]
pub struct OpenItem {
    pub item_id: i64,
    pub channel: String,
    pub merchant_id: String,
    pub bill_date: NaiveDate,
    pub class: String,
    pub state: ItemState,
    pub order_no: String,
    pub refund_no: Option<String>,
    pub difference_fen: i64,
    pub detail: String,
    pub age_days: i64,
    pub expected_until: Option<DateTime<Utc>>,
}

/// The morning report: what the finance page shows and the e-mail carries.
#[derive(Debug, Clone, Serialize)]
pub struct MorningReport {
    pub bill_date: NaiveDate,
    pub generated_at: DateTime<Utc>,
    pub status: String,
    pub merchants: Vec<MerchantDay>,
    pub open_items: Vec<OpenItem>,
    /// Open items by age in days: `0-1`, `2-3`, `4-7`, `>7`.
    pub ageing: BTreeMap<String, Tally>,
    /// What each class means (长款/短款 at transaction level, as this report uses them).
    pub legend: Vec<(String, String)>,
}

fn status_of(open: &[&OpenItem]) -> &'static str {
    if open.iter().any(|i| !matches!(i.state, ItemState::Expected)) {
        "EXCEPTIONS"
    } else if open.is_empty() {
        "BALANCED"
    } else {
        "BALANCED WITH PENDING"
    }
}

fn age_bucket(days: i64) -> &'static str {
    match days {
        ..=1 => "0-1",
        2..=3 => "2-3",
        4..=7 => "4-7",
        _ => ">7",
    }
}

/// Build the report for `bill_date` from the current runs and the open items up to that day.
pub async fn morning_report(store: &Store, bill_date: NaiveDate, now: DateTime<Utc>) -> anyhow::Result<MorningReport> {
    let runs = store.recon_runs(None, None, Some(bill_date), true).await?;
    let mut open_items: Vec<OpenItem> = store
        .recon_open_items(Some(bill_date))
        .await?
        .into_iter()
        .map(|i| {
            let state = item_state(&i, now);
            let class = if state == ItemState::Escalated {
                Class::Short.as_str().to_string()
            } else {
                i.class.clone()
            };
            OpenItem {
                item_id: i.id,
                channel: i.channel.clone(),
                merchant_id: i.merchant_id.clone(),
                bill_date: i.bill_date,
                class,
                state,
                order_no: i.order_no.clone(),
                refund_no: i.refund_no.clone(),
                difference_fen: i.difference_fen,
                detail: i.detail.clone(),
                age_days: (bill_date - i.bill_date).num_days() + 1,
                expected_until: i.expected_until,
            }
        })
        .collect();
    open_items.sort_by(|a, b| {
        (a.bill_date, &a.channel, &a.merchant_id, a.item_id).cmp(&(b.bill_date, &b.channel, &b.merchant_id, b.item_id))
    });
    let mut merchants = Vec::new();
    let mut sorted = runs;
    sorted.sort_by(|a, b| (&a.channel, &a.merchant_id).cmp(&(&b.channel, &b.merchant_id)));
    for r in sorted {
        let s: RunSummary = serde_json::from_str(&r.summary_json)?;
        let mine: Vec<&OpenItem> = open_items
            .iter()
            .filter(|o| o.channel == r.channel && o.merchant_id == r.merchant_id && o.bill_date == bill_date)
            .collect();
        let settled = store
            .recon_entry_exists(
                SETTLEMENT_KIND,
                &format!("{}:{}:{}", r.channel, r.merchant_id, bill_date),
            )
            .await?;
        merchants.push(MerchantDay {
            channel: r.channel.clone(),
            merchant_id: r.merchant_id.clone(),
            run_id: r.id,
            run_at: r.finished_at,
            file_sha256: r.file_sha256.clone(),
            file_rows: s.file.payments.count + s.file.refunds.count,
            matched: s.matched,
            classes: s.classes.clone(),
            gross_fen: s.gross_fen,
            refunds_fen: s.refunds_fen,
            fees_fen: s.fees_fen,
            net_fen: s.net_fen,
            open_items: mine.len() as u64,
            settled,
            status: status_of(&mine).to_string(),
        });
    }
    let mut ageing: BTreeMap<String, Tally> = ["0-1", "2-3", "4-7", ">7"]
        .into_iter()
        .map(|b| (b.to_string(), Tally::default()))
        .collect();
    for o in &open_items {
        ageing
            .entry(age_bucket(o.age_days).to_string())
            .or_default()
            .add(o.difference_fen);
    }
    let all: Vec<&OpenItem> = open_items.iter().collect();
    Ok(MorningReport {
        bill_date,
        generated_at: now,
        status: status_of(&all).to_string(),
        merchants,
        open_items,
        ageing,
        legend: Class::ALL
            .into_iter()
            .map(|c| (c.as_str().to_string(), c.label().to_string()))
            .collect(),
    })
}

/// A text field made safe for spreadsheets (see the module docs).
pub fn neutralise(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.unsigned_abs() / 100, fen.unsigned_abs() % 100)
}

/// The report's rows: one table for CSV and for the XLSX sheets.
fn summary_rows(r: &MorningReport) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for m in &r.merchants {
        let mut line = |what: &str, count: Option<u64>, fen: i64| {
            rows.push(vec![
                Cell::Text(m.channel.clone()),
                Cell::Text(m.merchant_id.clone()),
                Cell::Text(r.bill_date.to_string()),
                Cell::Text(what.to_string()),
                count.map_or(Cell::Empty, |c| Cell::Int(c as i64)),
                Cell::Int(fen),
                Cell::Text(yuan(fen)),
                Cell::Text(m.status.clone()),
            ]);
        };
        line("matched", Some(m.matched.count), m.matched.amount_fen);
        for c in Class::ALL {
            let t = m.classes.get(c.as_str()).copied().unwrap_or_default();
            line(c.as_str(), Some(t.count), t.amount_fen);
        }
        line("gross", None, m.gross_fen);
        line("refunds", None, m.refunds_fen);
        line("fees", None, m.fees_fen);
        line("net", None, m.net_fen);
    }
    rows
}

const SUMMARY_HEADER: [&str; 8] = [
    "channel",
    "merchant",
    "bill_date",
    "line",
    "count",
    "amount_fen",
    "amount_yuan",
    "status",
];
const OPEN_HEADER: [&str; 11] = [
    "item_id",
    "channel",
    "merchant",
    "bill_date",
    "class",
    "state",
    "order_no",
    "refund_no",
    "difference_fen",
    "age_days",
    "detail",
];

fn open_rows(r: &MorningReport) -> Vec<Vec<Cell>> {
    r.open_items
        .iter()
        .map(|o| {
            vec![
                Cell::Int(o.item_id),
                Cell::Text(o.channel.clone()),
                Cell::Text(o.merchant_id.clone()),
                Cell::Text(o.bill_date.to_string()),
                Cell::Text(o.class.clone()),
                Cell::Text(
                    serde_json::to_value(o.state)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                ),
                Cell::Text(o.order_no.clone()),
                Cell::Text(o.refund_no.clone().unwrap_or_default()),
                Cell::Int(o.difference_fen),
                Cell::Int(o.age_days),
                Cell::Text(o.detail.clone()),
            ]
        })
        .collect()
}

enum Cell {
    Text(String),
    Int(i64),
    Empty,
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => neutralise(s),
            Cell::Int(i) => i.to_string(),
            Cell::Empty => String::new(),
        }
    }
}

/// The report as JSON.
pub fn to_json(r: &MorningReport) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// The report as CSV (UTF-8 with a BOM, so spreadsheet tools read the Chinese right): the
/// summary table, a blank line, then the open items.
pub fn to_csv(r: &MorningReport) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
    w.write_record(SUMMARY_HEADER)?;
    for row in summary_rows(r) {
        w.write_record(row.iter().map(Cell::csv))?;
    }
    w.write_record([""])?;
    w.write_record(OPEN_HEADER)?;
    for row in open_rows(r) {
        w.write_record(row.iter().map(Cell::csv))?;
    }
    let mut out = b"\xEF\xBB\xBF".to_vec();
    out.extend(
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("writing the CSV report: {e}"))?,
    );
    Ok(out)
}

/// The report as an XLSX workbook: sheets `Summary` and `Open items`.
pub fn to_xlsx(r: &MorningReport) -> anyhow::Result<Vec<u8>> {
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook};
    let mut wb = Workbook::new();
    // The workbook's creation time is the report's, not the clock's: the same report gives the
    // same bytes however often (and in whichever second) it is exported or e-mailed.
    let created = ExcelDateTime::from_timestamp(r.generated_at.timestamp())?;
    wb.set_properties(&DocProperties::new().set_creation_datetime(&created));
    for (name, header, rows) in [
        ("Summary", &SUMMARY_HEADER[..], summary_rows(r)),
        ("Open items", &OPEN_HEADER[..], open_rows(r)),
    ] {
        let ws = wb.add_worksheet();
        ws.set_name(name)?;
        for (c, h) in header.iter().enumerate() {
            ws.write_string(0, c as u16, *h)?;
        }
        for (i, row) in rows.iter().enumerate() {
            let rr = i as u32 + 1;
            for (c, cell) in row.iter().enumerate() {
                match cell {
                    // Written as strings (never formulas), and neutralised as in the CSV.
                    Cell::Text(s) => {
                        ws.write_string(rr, c as u16, neutralise(s))?;
                    }
                    // Fen counts are integers: exact as spreadsheet numbers.
                    Cell::Int(v) => {
                        ws.write_number(rr, c as u16, *v as f64)?;
                    }
                    Cell::Empty => {}
                }
            }
        }
    }
    Ok(wb.save_to_buffer()?)
}

/// The report's e-mail text.
pub fn to_text(r: &MorningReport) -> String {
    let mut out = format!("对账日报 / Reconciliation report {} — {}\n\n", r.bill_date, r.status);
    for m in &r.merchants {
        out.push_str(&format!(
            "{} {}: {} rows, matched {} ({} yuan); gross {} refunds {} fees {} net {} yuan; open {}; {}{}\n",
            m.channel,
            m.merchant_id,
            m.file_rows,
            m.matched.count,
            yuan(m.matched.amount_fen),
            yuan(m.gross_fen),
            yuan(m.refunds_fen),
            yuan(m.fees_fen),
            yuan(m.net_fen),
            m.open_items,
            m.status,
            if m.settled { ", settled" } else { "" }
        ));
        for (class, t) in &m.classes {
            out.push_str(&format!(
                "    {class:<10} {:>5}  {:>12} yuan\n",
                t.count,
                yuan(t.amount_fen)
            ));
        }
    }
    out.push_str(&format!("\nOpen exceptions: {}\n", r.open_items.len()));
    for (bucket, t) in &r.ageing {
        out.push_str(&format!("    {bucket:<4} days: {}\n", t.count));
    }
    for o in r.open_items.iter().take(50) {
        out.push_str(&format!(
            "  #{} {} {} {} {} {} {} yuan, {} day(s): {}\n",
            o.item_id,
            o.bill_date,
            o.channel,
            o.merchant_id,
            o.class,
            if o.refund_no.is_some() {
                o.refund_no.as_deref().unwrap_or("")
            } else {
                &o.order_no
            },
            yuan(o.difference_fen),
            o.age_days,
            o.detail
        ));
    }
    out.push_str("\nLegend:\n");
    for (k, v) in &r.legend {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    out
}

/// An e-mail sender from the `[smtp]` settings.
pub fn sender_from_config(s: &crate::config::SmtpConfig) -> anyhow::Result<EmailSender> {
    use secrecy::ExposeSecret;
    if s.host.is_empty() {
        anyhow::bail!("smtp.host is not set: the report cannot be e-mailed");
    }
    EmailSender::new(&SmtpSettings {
        host: s.host.clone(),
        port: s.port,
        security: s.security,
        username: Some(s.username.clone()).filter(|u| !u.is_empty()),
        password: Some(s.password.clone()).filter(|p| !p.expose_secret().is_empty()),
        from: s.from.clone(),
        timeout: std::time::Duration::from_secs(s.timeout_secs.max(1)),
        tls_root_cert: Some(s.tls_root_cert.clone()).filter(|p| !p.is_empty()).map(Into::into),
    })
    .map_err(anyhow::Error::msg)
}

/// E-mail the report to finance: the text summary, with the CSV, XLSX and JSON attached.
pub async fn send_report(sender: &EmailSender, to: &[String], r: &MorningReport) -> anyhow::Result<SentEmail> {
    let day = r.bill_date.format("%Y%m%d");
    let mail = OutgoingEmail {
        to: to.to_vec(),
        subject: format!("对账日报 {} {}", r.bill_date, r.status),
        text: to_text(r),
        html: None,
        attachments: vec![
            Attachment {
                filename: format!("reconciliation_{day}.csv"),
                content_type: "text/csv; charset=utf-8".into(),
                bytes: to_csv(r)?,
            },
            Attachment {
                filename: format!("reconciliation_{day}.xlsx"),
                content_type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".into(),
                bytes: to_xlsx(r)?,
            },
            Attachment {
                filename: format!("reconciliation_{day}.json"),
                content_type: "application/json".into(),
                bytes: serde_json::to_vec_pretty(&to_json(r))?,
            },
        ],
        list_unsubscribe: None,
        message_id: None,
    };
    sender
        .send(&mail)
        .await
        .map_err(|e| anyhow::anyhow!("e-mailing the reconciliation report of {}: {e}", r.bill_date))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_in_text_fields_are_neutralised() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("+1"), "'+1");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("W2026120100001"), "W2026120100001");
    }

    #[test]
    fn yuan_text_keeps_the_sign_and_two_decimals() {
        assert_eq!(yuan(-6), "-0.06");
        assert_eq!(yuan(12_345), "123.45");
    }
}
