//! One bill as a person reads it: the amounts, the readings it was computed from, the usage, the
//! lines with their tiers (the tier breakdown), and the late fee with its history. Staff and
//! residents see the same view; staff also see the line traces.

use maud::{html, Markup};

use super::{bill_status_name, cst, price, qty, utility_name, utility_unit, yuan};
use crate::http::pages::PageCtx;
use crate::store::bills::BillDetail;

/// The bill's sections. `staff` adds the tracing columns residents do not need.
pub fn bill_view(ctx: &PageCtx, b: &BillDetail, staff: bool) -> Markup {
    let late_fee_outstanding = b.late_fee_fen.max(0);
    html! {
        section.bill aria-labelledby={"bill-" (b.id) "-summary"} {
            h2 id={"bill-" (b.id) "-summary"} { (ctx.tf("bill.heading", &[("period", &b.period)])) }
            dl.facts {
                dt { (ctx.t("bill.total")) } dd.amount { (yuan(b.total_fen)) }
                dt { (ctx.t("bill.late_fee")) } dd { (yuan(late_fee_outstanding)) @if b.late_fee_waived { " (" (ctx.t("bill.waived")) ")" } }
                dt { (ctx.t("bill.paid")) } dd { (yuan(b.allocated_fen)) }
                dt { (ctx.t("bill.outstanding")) } dd.amount.due { (yuan(b.outstanding_fen)) }
                dt { (ctx.t("bill.due_date")) } dd { (b.due_date) }
                dt { (ctx.t("bill.status")) } dd { (bill_status_name(ctx, b.status.as_str())) @if b.disputed { " · " (ctx.t("bill.disputed")) } }
                @if let Some(at) = b.issued_at { dt { (ctx.t("bill.issued_at")) } dd { (cst(at)) } }
                @if b.kind == "adjustment" {
                    dt { (ctx.t("bill.kind")) } dd { (ctx.t("bill.kind.adjustment")) @if let Some(r) = &b.reason { ": " (r) } }
                }
            }
        }
        @if !b.readings.is_empty() {
            section aria-labelledby={"bill-" (b.id) "-readings"} {
                h3 id={"bill-" (b.id) "-readings"} { (ctx.t("bill.readings")) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (ctx.t("bill.meter")) }
                        th scope="col" { (ctx.t("bill.from_reading")) }
                        th scope="col" { (ctx.t("bill.to_reading")) }
                        th scope="col" { (ctx.t("bill.usage")) }
                    } }
                    tbody { @for r in &b.readings {
                        tr {
                            td { (utility_name(ctx, &r.utility)) " " (r.meter_no) }
                            td { (qty(r.from_value_e4)) br; span.small { (cst(r.from_at)) @if r.from_kind != "actual" { " · " (kind_name(ctx, &r.from_kind)) } } }
                            td { (qty(r.to_value_e4)) br; span.small { (cst(r.to_at)) @if r.to_kind != "actual" { " · " (kind_name(ctx, &r.to_kind)) } } }
                            td { (qty(r.usage_e4)) " " (utility_unit(&r.utility))
                                @if r.multiplier_e4 != 10_000 { br; span.small { "× " (qty(r.multiplier_e4)) } }
                                @if r.rollovers > 0 { br; span.small { (ctx.t("bill.rollover")) } } }
                        }
                    } }
                } }
            }
        }
        @if !b.usage.is_empty() {
            section aria-labelledby={"bill-" (b.id) "-usage"} {
                h3 id={"bill-" (b.id) "-usage"} { (ctx.t("bill.usage_heading")) }
                ul.plain { @for u in &b.usage {
                    li { (utility_name(ctx, &u.utility)) " " (u.usage_period) ": " strong { (qty(u.quantity_e4)) " " (utility_unit(&u.utility)) }
                        @if u.estimated { " (" (ctx.t("bill.estimated")) ")" } }
                } }
            }
        }
        section aria-labelledby={"bill-" (b.id) "-lines"} {
            h3 id={"bill-" (b.id) "-lines"} { (ctx.t("bill.lines")) }
            div.scroll { table.lines {
                thead { tr {
                    th scope="col" { (ctx.t("bill.item")) }
                    th scope="col" { (ctx.t("bill.tier")) }
                    th scope="col" { (ctx.t("bill.quantity")) }
                    th scope="col" { (ctx.t("bill.unit_price")) }
                    th scope="col" { (ctx.t("bill.amount")) }
                    @if staff { th scope="col" { (ctx.t("bill.trace")) } }
                } }
                tbody { @for l in &b.lines {
                    tr {
                        td { (l.description) }
                        td { @if let Some(t) = l.tier { (ctx.tf("bill.tier_n", &[("n", &t.to_string())])) } @if let Some(p) = &l.tou_period { " " (p) } }
                        td { (qty(l.quantity_e4)) }
                        td { (price(l.unit_price_e6)) }
                        td.num { (yuan(l.amount_fen)) }
                        @if staff { td.small { (l.trace.as_deref().unwrap_or("")) } }
                    }
                } }
                tfoot { tr { th scope="row" colspan="4" { (ctx.t("bill.total")) } td.num { strong { (yuan(b.total_fen)) } } @if staff { td {} } } }
            } }
        }
        @if !b.late_fees.is_empty() {
            section aria-labelledby={"bill-" (b.id) "-fees"} {
                h3 id={"bill-" (b.id) "-fees"} { (ctx.t("bill.late_fee_history")) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (ctx.t("bill.as_of")) }
                        th scope="col" { (ctx.t("bill.change")) }
                        th scope="col" { (ctx.t("bill.late_fee")) }
                    } }
                    tbody { @for f in &b.late_fees {
                        tr {
                            td { (f.as_of) }
                            td { @if f.kind == "waiver" { (ctx.t("bill.waived")) } @else { (yuan(f.delta_fen)) } }
                            td { (yuan(f.fee_to_date_fen)) }
                        }
                    } }
                } }
            }
        }
        @if !b.allocations.is_empty() {
            section aria-labelledby={"bill-" (b.id) "-paid"} {
                h3 id={"bill-" (b.id) "-paid"} { (ctx.t("bill.payments")) }
                ul.plain { @for a in &b.allocations {
                    li { (cst(a.allocated_at)) ": " (yuan(a.amount_fen)) " (" (a.source) ")" }
                } }
            }
        }
    }
}

/// The translated kind of a reading.
pub fn kind_name(ctx: &PageCtx, kind: &str) -> &'static str {
    match kind {
        "estimated" => ctx.t("reading.estimated"),
        "final" => ctx.t("reading.final"),
        "initial" => ctx.t("reading.initial"),
        _ => ctx.t("reading.actual"),
    }
}
