//! Finance pages, under `/staff/finance`:
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /staff/finance[?date=D]` | read | the morning reconciliation of a bill day (default: yesterday, China time) per channel, merchant and day, and the open discrepancies (that day's and older) with a resolution form each |
//! | `POST /staff/finance/discrepancies/{id}/resolve` | finance | `decision` (post_payment, refund, write_off, carry_over) and `reason`: recorded with the person and posted as one balanced entry (`crate::reconcile::Reconciler::resolve`) |
//! | `GET /staff/finance/report?date=D&format=csv\|xlsx` | read | the morning report as a file |
//! | `GET /staff/finance/arrears[?community=C]` | read | collections per period (billed, collected, outstanding) and the arrears list |
//! | `GET /staff/finance/arrears/export?community=C&format=csv\|xlsx` | read | the arrears list as a file |
//!
//! "read" is `finance` and `read_only` (and `admin`). Exported text cells are neutralised
//! against spreadsheet formula injection ([`report::neutralise`]); names and phone numbers are not
//! exported (account codes only).

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{Duration, NaiveDate, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::yuan;
use crate::domain::period::cst_date;
use crate::http::auth::{CsrfForm, StaffPage};
use crate::http::pages::{layout, Page, PageCtx, PageError};
use crate::http::AppState;
use crate::reconcile::{report, Decision, Reconciler};
use crate::store::bills::BillFilter;

/// Roles that may read the finance pages.
pub const READ: &[&str] = &["finance", "read_only"];
/// Roles that may decide discrepancies.
pub const DECIDE: &[&str] = &["finance"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/finance", get(morning))
        .route("/staff/finance/discrepancies/{id}/resolve", post(resolve))
        .route("/staff/finance/report", get(report_file))
        .route("/staff/finance/arrears", get(arrears))
        .route("/staff/finance/arrears/export", get(arrears_file))
}

fn reconciler(state: &AppState) -> Reconciler {
    Reconciler::new(
        state.store.clone(),
        crate::reconcile::port_for(state),
        state.config.reconcile.clone(),
    )
}

#[derive(Deserialize)]
struct DayQuery {
    date: Option<NaiveDate>,
    done: Option<String>,
    format: Option<String>,
}

fn default_day() -> NaiveDate {
    cst_date(Utc::now()) - Duration::days(1)
}

const DECISIONS: &[(&str, &str)] = &[
    ("post_payment", "fin.decision.post_payment"),
    ("refund", "fin.decision.refund"),
    ("write_off", "fin.decision.write_off"),
    ("carry_over", "fin.decision.carry_over"),
];

/// A class as finance reads it (长款 …); an unknown one (say, `escalated`) as stored.
fn class_label(class: &str) -> &str {
    crate::reconcile::matching::Class::parse(class).map_or(class, |c| c.label())
}

fn status_class(s: &str) -> &'static str {
    match s {
        "BALANCED" => "ok",
        "BALANCED WITH PENDING" => "pending",
        _ => "exceptions",
    }
}

async fn morning(State(state): State<AppState>, page: StaffPage, Query(q): Query<DayQuery>) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let day = q.date.unwrap_or_else(default_day);
    let r = report::morning_report(&state.store, day, Utc::now())
        .await
        .map_err(|e| PageError::Unexpected(e.context("building the morning report")))?;
    let may_decide = page.staff.may(DECIDE);
    let body = html! {
        @if q.done.is_some() { (layout::notice("ok", ctx.t("fin.resolved"))) }
        form.inline method="get" action="/staff/finance" {
            label for="date" { (ctx.t("fin.day")) }
            input #date name="date" type="date" value=(day);
            button.secondary type="submit" { (ctx.t("ops.show")) }
        }
        p { (ctx.t("fin.status")) ": " strong class={"status-" (status_class(&r.status))} { (r.status) } }
        p {
            a href={"/staff/finance/report?date=" (day) "&format=csv"} { (ctx.t("fin.export_csv")) } " · "
            a href={"/staff/finance/report?date=" (day) "&format=xlsx"} { (ctx.t("fin.export_xlsx")) }
        }
        h2 { (ctx.t("fin.by_merchant")) }
        @if r.merchants.is_empty() { p { (ctx.t("fin.no_runs")) } } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { (ctx.t("pay.channel")) }
                    th scope="col" { (ctx.t("pay.merchant")) }
                    th scope="col" { (ctx.t("fin.rows")) }
                    th scope="col" { (ctx.t("fin.gross")) }
                    th scope="col" { (ctx.t("fin.refunds")) }
                    th scope="col" { (ctx.t("fin.fees")) }
                    th scope="col" { (ctx.t("fin.net")) }
                    th scope="col" { (ctx.t("fin.open")) }
                    th scope="col" { (ctx.t("fin.status")) }
                } }
                tbody { @for m in &r.merchants {
                    tr {
                        td { (m.channel) }
                        td { (m.merchant_id) }
                        td { (m.file_rows) }
                        td.num { (yuan(m.gross_fen)) }
                        td.num { (yuan(m.refunds_fen)) }
                        td.num { (yuan(m.fees_fen)) }
                        td.num { (yuan(m.net_fen)) }
                        td { (m.open_items) }
                        td { (m.status) @if m.settled { " · " (ctx.t("fin.settled")) } }
                    }
                } }
            } }
        }
        h2 { (ctx.t("fin.discrepancies")) }
        @if r.open_items.is_empty() { p { (ctx.t("fin.none_open")) } }
        @for i in &r.open_items {
            section.card aria-labelledby={"item-" (i.item_id)} {
                h3 id={"item-" (i.item_id)} { (class_label(&i.class)) " · " (i.order_no) }
                dl.facts {
                    dt { (ctx.t("pay.channel")) } dd { (i.channel) " " (i.merchant_id) }
                    dt { (ctx.t("fin.day")) } dd { (i.bill_date) " (" (ctx.tf("fin.age", &[("n", &i.age_days.to_string())])) ")" }
                    dt { (ctx.t("fin.difference")) } dd { (yuan(i.difference_fen)) }
                    dt { (ctx.t("fin.detail")) } dd { (i.detail) }
                    dt { (ctx.t("fin.state")) } dd { (format!("{:?}", i.state).to_lowercase()) }
                }
                @if may_decide {
                    form.stack method="post" action={"/staff/finance/discrepancies/" (i.item_id) "/resolve"} {
                        (layout::csrf_field(ctx))
                        input type="hidden" name="date" value=(day);
                        label for={"decision-" (i.item_id)} { (ctx.t("fin.decision")) }
                        select id={"decision-" (i.item_id)} name="decision" required {
                            @for (v, k) in DECISIONS { option value=(v) { (ctx.t(k)) } }
                        }
                        label for={"reason-" (i.item_id)} { (ctx.t("fin.reason")) }
                        input id={"reason-" (i.item_id)} name="reason" type="text" required maxlength="500";
                        button.primary type="submit" { (ctx.t("fin.resolve")) }
                    }
                }
            }
        }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("fin.title"), body)))
}

#[derive(Deserialize)]
struct ResolveForm {
    decision: String,
    reason: String,
    #[serde(default)]
    date: Option<NaiveDate>,
}

async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    post: CsrfForm<ResolveForm>,
) -> Result<Response, PageError> {
    post.page.require(DECIDE)?;
    let decision: Decision = post.form.decision.parse().map_err(PageError::BadRequest)?;
    let reason = post.form.reason.trim();
    if reason.is_empty() {
        return Err(PageError::BadRequest("a decision needs a reason".into()));
    }
    reconciler(&state)
        .resolve(id, decision, reason, &post.page.staff.actor(), Utc::now())
        .await
        .map_err(|e| match e {
            crate::reconcile::ReconcileError::NotFound(m) => PageError::NotFound(m),
            crate::reconcile::ReconcileError::Invalid(m) => PageError::BadRequest(m),
            other => PageError::BadRequest(other.to_string()),
        })?;
    let day = post.form.date.unwrap_or_else(default_day);
    Ok(Redirect::to(&format!("/staff/finance?date={day}&done=1")).into_response())
}

fn file(bytes: Vec<u8>, name: &str, xlsx: bool) -> Response {
    let ct = if xlsx {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    } else {
        "text/csv; charset=utf-8"
    };
    (
        [
            (header::CONTENT_TYPE, ct.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response()
}

async fn report_file(
    State(state): State<AppState>,
    page: StaffPage,
    Query(q): Query<DayQuery>,
) -> Result<Response, PageError> {
    page.require(READ)?;
    let day = q.date.unwrap_or_else(default_day);
    let r = report::morning_report(&state.store, day, Utc::now())
        .await
        .map_err(|e| PageError::Unexpected(e.context("building the morning report")))?;
    let stem = format!("reconciliation_{}", day.format("%Y%m%d"));
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok(file(
            report::to_csv(&r).map_err(PageError::Unexpected)?,
            &format!("{stem}.csv"),
            false,
        )),
        "xlsx" => Ok(file(
            report::to_xlsx(&r).map_err(PageError::Unexpected)?,
            &format!("{stem}.xlsx"),
            true,
        )),
        f => Err(PageError::BadRequest(format!("no export format {f:?} (csv or xlsx)"))),
    }
}

#[derive(Deserialize)]
struct ArrearsQuery {
    community: Option<String>,
    format: Option<String>,
}

async fn community_or_first(
    state: &AppState,
    code: Option<&str>,
) -> Result<Option<crate::store::directory::Community>, PageError> {
    match code.filter(|c| !c.is_empty()) {
        Some(c) => Ok(Some(
            state
                .store
                .community_by_code(c)
                .await?
                .ok_or_else(|| PageError::NotFound(format!("no community {c:?}")))?,
        )),
        None => Ok(state.store.list_communities().await?.into_iter().next()),
    }
}

/// Billed, collected and outstanding per period.
fn collections(bills: &[crate::store::bills::BillSummary]) -> Vec<(String, i64, i64, i64)> {
    let mut by: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for b in bills {
        let e = by.entry(b.period.clone()).or_default();
        e.0 += b.total_fen;
        e.1 += b.outstanding_fen;
    }
    by.into_iter()
        .rev()
        .map(|(p, (billed, out))| (p, billed, billed - out, out))
        .collect()
}

async fn arrears(
    State(state): State<AppState>,
    page: StaffPage,
    Query(q): Query<ArrearsQuery>,
) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let communities = state.store.list_communities().await?;
    let Some(c) = community_or_first(&state, q.community.as_deref()).await? else {
        return Ok(Page::new(
            ctx,
            layout::page(
                ctx,
                ctx.t("fin.arrears_title"),
                html! { p { (ctx.t("ops.no_communities")) } },
            ),
        ));
    };
    let today = cst_date(Utc::now());
    let rows = state.store.arrears(c.id, today).await?;
    let bills = state
        .store
        .list_bills(&BillFilter {
            community_id: Some(c.id),
            limit: Some(100_000),
            ..Default::default()
        })
        .await?;
    let coll = collections(&bills);
    let overdue: i64 = rows.iter().map(|r| r.overdue_fen).sum();
    let body = html! {
        form.inline method="get" action="/staff/finance/arrears" {
            label for="community" { (ctx.t("ops.community")) }
            select #community name="community" {
                @for x in &communities { option value=(x.code) selected[x.id == c.id] { (x.name) } }
            }
            button.secondary type="submit" { (ctx.t("ops.show")) }
        }
        p {
            a href={"/staff/finance/arrears/export?community=" (c.code) "&format=csv"} { (ctx.t("fin.export_csv")) } " · "
            a href={"/staff/finance/arrears/export?community=" (c.code) "&format=xlsx"} { (ctx.t("fin.export_xlsx")) }
        }
        h2 { (ctx.t("fin.collections")) }
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.period")) }
                th scope="col" { (ctx.t("fin.billed")) }
                th scope="col" { (ctx.t("fin.collected")) }
                th scope="col" { (ctx.t("bill.outstanding")) }
                th scope="col" { (ctx.t("fin.rate")) }
            } }
            tbody { @for (p, billed, got, out) in &coll {
                tr {
                    td { (p) }
                    td.num { (yuan(*billed)) }
                    td.num { (yuan(*got)) }
                    td.num { (yuan(*out)) }
                    td.num { @if *billed > 0 { (format!("{}%", got * 100 / billed)) } }
                }
            } }
        } }
        h2 { (ctx.tf("fin.arrears_heading", &[("n", &rows.len().to_string()), ("amount", &yuan(overdue))])) }
        (arrears_table(ctx, &rows))
    };
    let title = format!("{} · {}", ctx.t("fin.arrears_title"), c.name);
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

fn arrears_table(ctx: &PageCtx, rows: &[crate::store::arrears::ArrearsRow]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.account_code")) }
                th scope="col" { (ctx.t("fin.overdue")) }
                th scope="col" { (ctx.t("bill.late_fee")) }
                th scope="col" { (ctx.t("ops.bills")) }
                th scope="col" { (ctx.t("fin.days_overdue")) }
                th scope="col" { (ctx.t("fin.credit_rating")) }
            } }
            tbody { @for r in rows {
                tr {
                    td { a href={"/staff/ops/accounts/" (r.account_id)} { (r.account_code) } @if r.disputed { " · " (ctx.t("bill.disputed")) } }
                    td.num { (yuan(r.overdue_fen)) }
                    td.num { (yuan(r.late_fee_fen)) }
                    td { (r.bills) }
                    td { (r.days_overdue) }
                    td { (r.credit_rating) }
                }
            } }
        } }
    }
}

const ARREARS_HEADER: [&str; 7] = [
    "account_code",
    "overdue_fen",
    "late_fee_fen",
    "bills",
    "oldest_due_date",
    "days_overdue",
    "disputed",
];

fn arrears_cells(r: &crate::store::arrears::ArrearsRow) -> [String; 7] {
    [
        report::neutralise(&r.account_code),
        r.overdue_fen.to_string(),
        r.late_fee_fen.to_string(),
        r.bills.to_string(),
        r.oldest_due_date.to_string(),
        r.days_overdue.to_string(),
        r.disputed.to_string(),
    ]
}

/// The arrears list as CSV.
pub fn arrears_csv(rows: &[crate::store::arrears::ArrearsRow]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(ARREARS_HEADER)?;
    for r in rows {
        w.write_record(arrears_cells(r))?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing the arrears CSV: {e}"))
}

/// The arrears list as XLSX (amounts and counts as numbers, text as text, never formulas).
pub fn arrears_xlsx(rows: &[crate::store::arrears::ArrearsRow]) -> anyhow::Result<Vec<u8>> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Arrears")?;
    for (c, h) in ARREARS_HEADER.iter().enumerate() {
        ws.write_string(0, c as u16, *h)?;
    }
    for (i, r) in rows.iter().enumerate() {
        let row = i as u32 + 1;
        ws.write_string(row, 0, report::neutralise(&r.account_code))?;
        ws.write_number(row, 1, r.overdue_fen as f64)?;
        ws.write_number(row, 2, r.late_fee_fen as f64)?;
        ws.write_number(row, 3, r.bills as f64)?;
        ws.write_string(row, 4, r.oldest_due_date.to_string())?;
        ws.write_number(row, 5, r.days_overdue as f64)?;
        ws.write_boolean(row, 6, r.disputed)?;
    }
    Ok(wb.save_to_buffer()?)
}

async fn arrears_file(
    State(state): State<AppState>,
    page: StaffPage,
    Query(q): Query<ArrearsQuery>,
) -> Result<Response, PageError> {
    page.require(READ)?;
    let Some(c) = community_or_first(&state, q.community.as_deref()).await? else {
        return Err(PageError::NotFound("no community".into()));
    };
    let today = cst_date(Utc::now());
    let rows = state.store.arrears(c.id, today).await?;
    let stem = format!("arrears_{}_{}", c.code, today.format("%Y%m%d"));
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => Ok(file(
            arrears_csv(&rows).map_err(PageError::Unexpected)?,
            &format!("{stem}.csv"),
            false,
        )),
        "xlsx" => Ok(file(
            arrears_xlsx(&rows).map_err(PageError::Unexpected)?,
            &format!("{stem}.xlsx"),
            true,
        )),
        f => Err(PageError::BadRequest(format!("no export format {f:?} (csv or xlsx)"))),
    }
}
