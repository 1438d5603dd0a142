//! Plain-text renderings for the command line (`bills show`, `arrears list`, `alerts list`).

use crate::domain::{Fen, Price, Quantity};
use crate::store::arrears::ArrearsRow;
use crate::store::bills::{BillDetail, UsageAlert};

fn q(e4: i64) -> String {
    Quantity::from_scaled(e4).to_string()
}

/// A bill as a statement: lines (quantity × unit price = amount), readings, usage counted,
/// late fees with their trace, and what was paid.
pub fn bill_text(b: &BillDetail) -> String {
    let mut out = format!(
        "bill {} — account {} — period {} — {}{}\n",
        b.id,
        b.account_code,
        b.period,
        b.kind,
        b.adjusts_bill_id.map(|a| format!(" of bill {a}")).unwrap_or_default()
    );
    if let Some(r) = &b.reason {
        out.push_str(&format!("  reason: {r}\n"));
    }
    out.push_str(&format!(
        "  due {}  status {}{}\n\n",
        b.due_date,
        b.status.as_str(),
        if b.disputed {
            format!("  DISPUTED: {}", b.dispute_reason.clone().unwrap_or_default())
        } else {
            String::new()
        }
    ));
    out.push_str(&format!(
        "  {:<48} {:>12} {:>10} {:>12}\n",
        "line", "quantity", "price", "amount"
    ));
    for l in &b.lines {
        out.push_str(&format!(
            "  {:<48} {:>12} {:>10} {:>12}\n",
            l.description.chars().take(48).collect::<String>(),
            q(l.quantity_e4),
            Price::from_scaled(l.unit_price_e6).to_string(),
            Fen::new(l.amount_fen).to_string()
        ));
    }
    out.push_str(&format!(
        "  {:<48} {:>12} {:>10} {:>12}\n",
        "total",
        "",
        "",
        Fen::new(b.total_fen).to_string()
    ));
    if !b.readings.is_empty() {
        out.push_str("\n  readings\n");
        for r in &b.readings {
            out.push_str(&format!(
                "  {:<10} {:<12} {} ({}) {} → {} ({}) {}  × {}  = {}{}\n",
                r.meter_no,
                r.utility,
                crate::domain::period::cst_date(r.from_at),
                r.from_kind,
                q(r.from_value_e4),
                crate::domain::period::cst_date(r.to_at),
                r.to_kind,
                q(r.to_value_e4),
                q(r.multiplier_e4),
                q(r.usage_e4),
                if r.rollovers > 0 {
                    "  (register rolled over)"
                } else {
                    ""
                }
            ));
        }
    }
    if !b.late_fees.is_empty() {
        out.push_str(&format!("\n  late fee {}\n", Fen::new(b.late_fee_fen)));
        for f in &b.late_fees {
            out.push_str(&format!(
                "  {} {:<8} {:>10} (to date {})\n",
                f.as_of,
                f.kind,
                Fen::new(f.delta_fen).to_string(),
                Fen::new(f.fee_to_date_fen)
            ));
        }
    }
    for a in &b.allocations {
        out.push_str(&format!(
            "  {} {:<10} {:<24} {:>10}\n",
            a.accounting_date,
            a.source,
            a.source_ref,
            Fen::new(a.amount_fen).to_string()
        ));
    }
    out.push_str(&format!("\n  outstanding {}\n", Fen::new(b.outstanding_fen)));
    out
}

pub fn arrears_text(rows: &[ArrearsRow]) -> String {
    let mut out = format!(
        "{:<16} {:>12} {:>10} {:>6} {:>8} {:<8} {}\n",
        "account", "overdue", "late fee", "bills", "days", "rating", ""
    );
    for r in rows {
        out.push_str(&format!(
            "{:<16} {:>12} {:>10} {:>6} {:>8} {:<8} {}\n",
            r.account_code,
            Fen::new(r.overdue_fen).to_string(),
            Fen::new(r.late_fee_fen).to_string(),
            r.bills,
            r.days_overdue,
            r.credit_rating,
            if r.disputed { "disputed" } else { "" }
        ));
    }
    out
}

pub fn alerts_text(rows: &[UsageAlert]) -> String {
    let mut out = String::new();
    for a in rows {
        out.push_str(&format!(
            "{} {:<14} {:<12} {}\n",
            a.period, a.account_code, a.kind, a.detail
        ));
    }
    if out.is_empty() {
        out.push_str("no usage alerts\n");
    }
    out
}
