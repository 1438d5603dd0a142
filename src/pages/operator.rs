//! Operator pages, under `/staff/ops`:
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /staff/ops` | read | communities with their accounts, meters and held readings |
//! | `GET /staff/ops/communities/{code}` | read | a community's accounts |
//! | `GET /staff/ops/communities/{code}/meters` | read | its meters |
//! | `GET /staff/ops/communities/{code}/tariffs` | read | its tariff versions with tiers and prices |
//! | `GET /staff/ops/accounts/{id}` | read | an account: meters, balance, bills, reminders |
//! | `GET /staff/ops/meters/{id}` | read | a meter's readings with their status |
//! | `GET /staff/ops/bills/{id}` | read | one bill (with line traces) |
//! | `GET /staff/ops/readings[?community=C]` | read | the held readings, each with accept/reject forms for operators |
//! | `POST /staff/ops/readings/{id}/accept`, `…/reject` | operator | decide, with a note (audited as `user:NAME`) |
//! | `GET /staff/ops/bill-runs` | operator | the bill-run form |
//! | `POST /staff/ops/bill-runs/preview` | operator | a dry run: what would be issued, nothing written |
//! | `POST /staff/ops/bill-runs` | operator | the run itself (audited by the bill run) |
//! | `GET /staff/ops/reminders?community=C[&account=ID]` | read | reminder history |
//!
//! "read" is `operator`, `finance`, `read_only` (and `admin`). Mobile numbers are masked.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{NaiveDate, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::bill::{bill_view, kind_name};
use super::{cst, mask_phone, qty, utility_name, utility_unit, yuan};
use crate::domain::period::cst_date;
use crate::domain::Period;
use crate::http::auth::{CsrfForm, StaffPage};
use crate::http::pages::{layout, Page, PageCtx, PageError};
use crate::http::AppState;
use crate::store::bills::{BillFilter, RunOptions, RunReport};
use crate::store::directory::Community;

/// Roles that may read the operator pages.
pub const READ: &[&str] = &["operator", "finance", "read_only"];
/// Roles that may change things from them.
pub const WRITE: &[&str] = &["operator"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/ops", get(communities))
        .route("/staff/ops/communities/{code}", get(community))
        .route("/staff/ops/communities/{code}/meters", get(community_meters))
        .route("/staff/ops/communities/{code}/tariffs", get(tariffs))
        .route("/staff/ops/accounts/{id}", get(account))
        .route("/staff/ops/meters/{id}", get(meter))
        .route("/staff/ops/bills/{id}", get(bill))
        .route("/staff/ops/readings", get(held_readings))
        .route("/staff/ops/readings/{id}/accept", post(accept_reading))
        .route("/staff/ops/readings/{id}/reject", post(reject_reading))
        .route("/staff/ops/bill-runs", get(bill_run_form).post(bill_run))
        .route("/staff/ops/bill-runs/preview", post(bill_run_preview))
        .route("/staff/ops/reminders", get(reminders))
}

async fn find_community(state: &AppState, code: &str) -> Result<Community, PageError> {
    state
        .store
        .community_by_code(code)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("no community {code:?}")))
}

fn community_nav(ctx: &PageCtx, c: &Community) -> Markup {
    let base = format!("/staff/ops/communities/{}", c.code);
    html! {
        nav.subnav aria-label=(ctx.t("ops.community_sections")) { ul {
            li { a href=(base) { (ctx.t("ops.accounts")) } }
            li { a href={(base) "/meters"} { (ctx.t("ops.meters")) } }
            li { a href={(base) "/tariffs"} { (ctx.t("ops.tariffs")) } }
            li { a href={"/staff/ops/readings?community=" (c.code)} { (ctx.t("ops.held")) } }
            li { a href={"/staff/ops/reminders?community=" (c.code)} { (ctx.t("ops.reminders")) } }
        } }
    }
}

async fn communities(State(state): State<AppState>, page: StaffPage) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let rows = state.store.community_counts().await?;
    let body = html! {
        @if rows.is_empty() { p { (ctx.t("ops.no_communities")) } }
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.community")) }
                th scope="col" { (ctx.t("ops.accounts")) }
                th scope="col" { (ctx.t("ops.meters")) }
                th scope="col" { (ctx.t("ops.held")) }
            } }
            tbody { @for c in &rows {
                tr {
                    td { a href={"/staff/ops/communities/" (c.code)} { (c.name) } " " span.small { (c.code) } }
                    td { (c.accounts) }
                    td { a href={"/staff/ops/communities/" (c.code) "/meters"} { (c.meters) } }
                    td { a href={"/staff/ops/readings?community=" (c.code)} { (c.held_readings) } }
                }
            } }
        } }
        p { a href="/staff/ops/readings" { (ctx.t("ops.all_held")) } }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("ops.title"), body)))
}

async fn community(
    State(state): State<AppState>,
    page: StaffPage,
    Path(code): Path<String>,
) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let c = find_community(&state, &code).await?;
    let accounts = state.store.list_accounts(c.id).await?;
    let arrears = state.store.arrears(c.id, cst_date(Utc::now())).await?;
    let body = html! {
        (community_nav(ctx, &c))
        p { (ctx.tf("ops.accounts_count", &[("n", &accounts.len().to_string()), ("overdue", &arrears.len().to_string())])) }
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.account_code")) }
                th scope="col" { (ctx.t("ops.account_name")) }
                th scope="col" { (ctx.t("ops.mobile")) }
                th scope="col" { (ctx.t("ops.payment_mode")) }
                th scope="col" { (ctx.t("ops.status")) }
            } }
            tbody { @for a in &accounts {
                tr {
                    td { a href={"/staff/ops/accounts/" (a.id)} { (a.code) } }
                    td { (a.name) }
                    td { (a.mobile.as_deref().map(mask_phone).unwrap_or_default()) }
                    td { (a.payment_mode) }
                    td { (a.status) }
                }
            } }
        } }
    };
    let title = format!("{} · {}", c.name, ctx.t("ops.accounts"));
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

async fn community_meters(
    State(state): State<AppState>,
    page: StaffPage,
    Path(code): Path<String>,
) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let c = find_community(&state, &code).await?;
    let meters = state.store.meters_of_community(c.id).await?;
    let body = html! {
        (community_nav(ctx, &c))
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.meter_no")) }
                th scope="col" { (ctx.t("ops.utility")) }
                th scope="col" { (ctx.t("ops.digits")) }
                th scope="col" { (ctx.t("ops.multiplier")) }
                th scope="col" { (ctx.t("ops.installed")) }
                th scope="col" { (ctx.t("ops.account")) }
            } }
            tbody { @for m in &meters {
                tr {
                    td { a href={"/staff/ops/meters/" (m.id)} { (m.meter_no) } }
                    td { (utility_name(ctx, &m.utility)) }
                    td { (m.digit_count) }
                    td { (qty(m.multiplier_e4)) }
                    td { (m.installed_on) @if let Some(r) = m.removed_on { " – " (r) } }
                    td { @if let Some(id) = m.account_id { a href={"/staff/ops/accounts/" (id)} { "#" (id) } } }
                }
            } }
        } }
    };
    let title = format!("{} · {}", c.name, ctx.t("ops.meters"));
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

async fn tariffs(State(state): State<AppState>, page: StaffPage, Path(code): Path<String>) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let c = find_community(&state, &code).await?;
    let versions = state.store.tariff_versions(c.id, None).await?;
    let body = html! {
        (community_nav(ctx, &c))
        @if versions.is_empty() { p { (ctx.t("ops.no_tariffs")) } }
        @for v in &versions {
            section.card aria-labelledby={"tariff-" (v.id)} {
                h2 id={"tariff-" (v.id)} { (v.name) }
                dl.facts {
                    dt { (ctx.t("ops.utility")) } dd { (utility_name(ctx, v.utility.as_str())) }
                    dt { (ctx.t("ops.customer_class")) } dd { (v.customer_class) }
                    dt { (ctx.t("ops.effective")) } dd { (v.effective_from) " – " @if let Some(t) = v.effective_to { (t) } }
                    dt { (ctx.t("ops.tier_basis")) } dd { (v.tier_basis.as_str()) }
                    @if !v.definition.thresholds.is_empty() {
                        dt { (ctx.t("ops.thresholds")) }
                        dd { @for (i, t) in v.definition.thresholds.iter().enumerate() { @if i > 0 { ", " } (t) " " (utility_unit(v.utility.as_str())) } }
                    }
                    @if let Some(s) = &v.source_document { dt { (ctx.t("ops.source_document")) } dd { (s) } }
                }
                div.scroll { table {
                    caption { (ctx.t("ops.prices")) }
                    thead { tr {
                        th scope="col" { (ctx.t("ops.component")) }
                        @for i in 0..v.definition.tiers() { th scope="col" { (ctx.tf("bill.tier_n", &[("n", &(i + 1).to_string())])) } }
                    } }
                    tbody { @for comp in &v.definition.components {
                        tr {
                            td { (if comp.name.is_empty() { comp.kind.as_str() } else { comp.name.as_str() }) }
                            @for i in 0..v.definition.tiers() {
                                td { @if let Some(p) = comp.prices.get(i).or(comp.prices.first()) { (p) } @else { "—" } }
                            }
                        }
                    } }
                } }
                @if !v.definition.fixed.is_empty() {
                    p.small { (ctx.t("ops.fixed_charges")) ": "
                        @for (i, f) in v.definition.fixed.iter().enumerate() { @if i > 0 { ", " } (format!("{} {}", f.name, f.amount)) } }
                }
            }
        }
    };
    let title = format!("{} · {}", c.name, ctx.t("ops.tariffs"));
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

async fn account(State(state): State<AppState>, page: StaffPage, Path(id): Path<i64>) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let a = state
        .store
        .account_by_id(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("no account {id}")))?;
    let meters = state.store.meters_of_account(a.id).await?;
    let balance = state.store.account_balance(a.id).await?;
    let bills = state
        .store
        .list_bills(&BillFilter {
            account_id: Some(a.id),
            limit: Some(24),
            ..Default::default()
        })
        .await?;
    let reminders = state.store.reminder_history(a.community_id, Some(a.id), 20).await?;
    let body = html! {
        dl.facts {
            dt { (ctx.t("ops.account_name")) } dd { (a.name) }
            dt { (ctx.t("ops.mobile")) } dd { (a.mobile.as_deref().map(mask_phone).unwrap_or_default()) }
            dt { (ctx.t("ops.payment_mode")) } dd { (a.payment_mode) }
            dt { (ctx.t("ops.receivable")) } dd { (yuan(balance.receivable_fen)) }
            dt { (ctx.t("ops.credit")) } dd { (yuan(balance.credit_fen)) }
        }
        h2 { (ctx.t("ops.meters")) }
        ul.plain { @for m in &meters {
            li { a href={"/staff/ops/meters/" (m.id)} { (utility_name(ctx, &m.utility)) " " (m.meter_no) } @if let Some(r) = m.removed_on { " (" (ctx.t("ops.removed")) " " (r) ")" } }
        } }
        h2 { (ctx.t("ops.bills")) }
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.period")) }
                th scope="col" { (ctx.t("bill.total")) }
                th scope="col" { (ctx.t("bill.outstanding")) }
                th scope="col" { (ctx.t("bill.due_date")) }
                th scope="col" { (ctx.t("bill.status")) }
            } }
            tbody { @for b in &bills {
                tr {
                    td { a href={"/staff/ops/bills/" (b.id)} { (b.period) @if b.kind == "adjustment" { " " (ctx.t("bill.kind.adjustment")) } } }
                    td.num { (yuan(b.total_fen)) }
                    td.num { (yuan(b.outstanding_fen)) }
                    td { (b.due_date) }
                    td { (super::bill_status_name(ctx, b.status.as_str())) }
                }
            } }
        } }
        h2 { (ctx.t("ops.reminders")) }
        (reminder_table(ctx, &reminders))
    };
    let title = format!("{} {}", ctx.t("ops.account"), a.code);
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

async fn meter(State(state): State<AppState>, page: StaffPage, Path(id): Path<i64>) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let m = state
        .store
        .meter_by_id(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("no meter {id}")))?;
    let mut readings = state.store.readings_of_meter(m.id).await?;
    readings.reverse();
    let body = html! {
        p { (utility_name(ctx, &m.utility)) " · " (ctx.t("ops.digits")) " " (m.digit_count) " · " (ctx.t("ops.multiplier")) " " (qty(m.multiplier_e4))
            @if let Some(id) = m.account_id { " · " a href={"/staff/ops/accounts/" (id)} { (ctx.t("ops.account")) } } }
        div.scroll { table {
            thead { tr {
                th scope="col" { (ctx.t("ops.read_at")) }
                th scope="col" { (ctx.t("ops.value")) }
                th scope="col" { (ctx.t("ops.kind")) }
                th scope="col" { (ctx.t("ops.status")) }
                th scope="col" { (ctx.t("ops.hold_reason")) }
            } }
            tbody { @for r in &readings {
                tr {
                    td { (cst(r.read_at)) }
                    td { (qty(r.value_e4)) }
                    td { (kind_name(ctx, &r.kind)) }
                    td { (reading_status(ctx, &r.status)) @if r.rollover { " · " (ctx.t("bill.rollover")) } }
                    td.small { (r.hold_reason.as_deref().unwrap_or("")) }
                }
            } }
        } }
    };
    let title = format!("{} {}", ctx.t("ops.meter"), m.meter_no);
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

fn reading_status(ctx: &PageCtx, s: &str) -> &'static str {
    match s {
        "valid" => ctx.t("reading.valid"),
        "held" => ctx.t("reading.held"),
        "rejected" => ctx.t("reading.rejected"),
        _ => ctx.t("util.other"),
    }
}

async fn bill(State(state): State<AppState>, page: StaffPage, Path(id): Path<i64>) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let b = state.store.bill_detail(id).await?;
    let body = html! {
        p { a href={"/staff/ops/accounts/" (b.account_id)} { (ctx.t("ops.account")) " " (b.account_code) } }
        (bill_view(ctx, &b, true))
    };
    let title = format!("{} {} · {}", ctx.t("ops.bill"), b.account_code, b.period);
    Ok(Page::new(ctx, layout::page(ctx, &title, body)))
}

#[derive(Deserialize)]
struct CommunityFilter {
    community: Option<String>,
    account: Option<i64>,
    done: Option<String>,
}

async fn held_readings(
    State(state): State<AppState>,
    page: StaffPage,
    Query(q): Query<CommunityFilter>,
) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let community = match q.community.as_deref().filter(|c| !c.is_empty()) {
        Some(code) => Some(find_community(&state, code).await?),
        None => None,
    };
    let held = state.store.held_readings(community.as_ref().map(|c| c.id)).await?;
    let may_decide = page.staff.may(WRITE);
    let body = html! {
        @match q.done.as_deref() {
            Some("accepted") => { (layout::notice("ok", ctx.t("ops.accepted"))) },
            Some("rejected") => { (layout::notice("ok", ctx.t("ops.rejected"))) },
            _ => {},
        }
        @if let Some(c) = &community { (community_nav(ctx, c)) }
        @if held.is_empty() { p { (ctx.t("ops.no_held")) } }
        @for r in &held {
            section.card aria-labelledby={"held-" (r.id)} {
                h2 id={"held-" (r.id)} { (utility_name(ctx, &r.utility)) " " a href={"/staff/ops/meters/" (r.meter_id)} { (r.meter_no) } }
                dl.facts {
                    dt { (ctx.t("ops.read_at")) } dd { (cst(r.read_at)) }
                    dt { (ctx.t("ops.value")) } dd { (qty(r.value_e4)) " " (utility_unit(&r.utility)) }
                    dt { (ctx.t("ops.kind")) } dd { (kind_name(ctx, &r.kind)) }
                    dt { (ctx.t("ops.hold_reason")) } dd { (r.hold_reason.as_deref().unwrap_or("")) }
                }
                @if may_decide {
                    form.stack method="post" action={"/staff/ops/readings/" (r.id) "/accept"} {
                        (layout::csrf_field(ctx))
                        @if let Some(c) = &community { input type="hidden" name="community" value=(c.code); }
                        label for={"note-" (r.id)} { (ctx.t("ops.note")) }
                        input id={"note-" (r.id)} name="note" type="text" required maxlength="500";
                        div.actions {
                            button.primary type="submit" { (ctx.t("ops.accept")) }
                            button.secondary type="submit" formaction={"/staff/ops/readings/" (r.id) "/reject"} { (ctx.t("ops.reject")) }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("ops.held_title"), body)))
}

#[derive(Deserialize)]
struct Decision {
    note: String,
    #[serde(default)]
    community: Option<String>,
}

async fn decide(state: AppState, post: CsrfForm<Decision>, id: i64, accept: bool) -> Result<Response, PageError> {
    post.page.require(WRITE)?;
    let note = post.form.note.trim();
    if note.is_empty() {
        return Err(PageError::BadRequest(
            "a note is required to accept or reject a reading".into(),
        ));
    }
    let note: String = note.chars().take(500).collect();
    state
        .store
        .review_reading(id, accept, &post.page.staff.actor(), &note, None, Utc::now())
        .await?;
    let mut to = format!(
        "/staff/ops/readings?done={}",
        if accept { "accepted" } else { "rejected" }
    );
    if let Some(c) = post
        .form
        .community
        .as_deref()
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'))
    {
        to.push_str("&community=");
        to.push_str(c);
    }
    Ok(Redirect::to(&to).into_response())
}

async fn accept_reading(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    post: CsrfForm<Decision>,
) -> Result<Response, PageError> {
    decide(state, post, id, true).await
}

async fn reject_reading(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    post: CsrfForm<Decision>,
) -> Result<Response, PageError> {
    decide(state, post, id, false).await
}

fn bill_run_fields(ctx: &PageCtx, communities: &[Community], run: Option<&RunForm>) -> Markup {
    let default_period = Period::of_date(cst_date(Utc::now())).plus_months(-1).to_string();
    html! {
        label for="period" { (ctx.t("ops.period")) }
        input #period name="period" type="text" inputmode="numeric" pattern="[0-9]{4}-[0-9]{2}" placeholder="2026-11"
            value=(run.map(|r| r.period.clone()).unwrap_or(default_period)) required aria-describedby="period-hint";
        span #period-hint .hint { (ctx.t("ops.period_hint")) }
        label for="community" { (ctx.t("ops.community")) }
        select #community name="community" {
            option value="" { (ctx.t("ops.every_community")) }
            @for c in communities {
                option value=(c.code) selected[run.is_some_and(|r| r.community == c.code)] { (c.name) " (" (c.code) ")" }
            }
        }
        label for="due_date" { (ctx.t("ops.due_date")) }
        input #due_date name="due_date" type="date" value=(run.map(|r| r.due_date.clone()).unwrap_or_default()) aria-describedby="due-hint";
        span #due-hint .hint { (ctx.t("ops.due_hint")) }
    }
}

async fn bill_run_form(State(state): State<AppState>, page: StaffPage) -> Result<Page, PageError> {
    page.require(WRITE)?;
    let ctx = &page.ctx;
    let communities = state.store.list_communities().await?;
    let body = html! {
        p { (ctx.t("ops.run_intro")) }
        form.stack method="post" action="/staff/ops/bill-runs/preview" {
            (layout::csrf_field(ctx))
            (bill_run_fields(ctx, &communities, None))
            button.primary type="submit" { (ctx.t("ops.preview")) }
        }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("ops.runs_title"), body)))
}

#[derive(Deserialize)]
struct RunForm {
    period: String,
    #[serde(default)]
    community: String,
    #[serde(default)]
    due_date: String,
}

impl RunForm {
    fn options(&self, dry_run: bool) -> Result<RunOptions, PageError> {
        let period = Period::parse(self.period.trim()).map_err(PageError::BadRequest)?;
        let mut o = RunOptions::new(period);
        o.dry_run = dry_run;
        o.community = Some(self.community.trim().to_string()).filter(|c| !c.is_empty());
        o.due_date = match self.due_date.trim() {
            "" => None,
            d => Some(
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|_| PageError::BadRequest(format!("the due date {d:?} is not a date (YYYY-MM-DD)")))?,
            ),
        };
        Ok(o)
    }
}

fn run_report(ctx: &PageCtx, r: &RunReport) -> Markup {
    html! {
        div.scroll { table {
            caption { (r.period) @if r.dry_run { " · " (ctx.t("ops.dry_run")) } }
            thead { tr {
                th scope="col" { (ctx.t("ops.community")) }
                th scope="col" { (ctx.t("ops.accounts")) }
                th scope="col" { (ctx.t("ops.bills_issued")) }
                th scope="col" { (ctx.t("ops.amount")) }
                th scope="col" { (ctx.t("ops.adjustments")) }
                th scope="col" { (ctx.t("ops.already_billed")) }
                th scope="col" { (ctx.t("ops.no_readings")) }
                th scope="col" { (ctx.t("ops.skipped")) }
            } }
            tbody { @for c in &r.communities {
                tr {
                    td { (c.community) }
                    td { (c.accounts) }
                    td { (c.bills_issued) }
                    td.num { (yuan(c.total_fen)) }
                    td { (c.adjustment_bills) " (" (yuan(c.adjustments_fen)) ")" }
                    td { (c.already_billed) }
                    td { (c.without_new_readings) }
                    td { (c.skipped.len()) }
                }
            } }
        } }
        @for c in r.communities.iter().filter(|c| !c.skipped.is_empty()) {
            h3 { (ctx.t("ops.skipped")) " · " (c.community) }
            ul.plain { @for s in &c.skipped { li { (s.account_code) ": " (s.reason) } } }
        }
    }
}

async fn bill_run_preview(State(state): State<AppState>, post: CsrfForm<RunForm>) -> Result<Page, PageError> {
    post.page.require(WRITE)?;
    let ctx = &post.page.ctx;
    let opts = post.form.options(true)?;
    let report = state
        .store
        .run_bills(&opts, &post.page.staff.actor(), None, Utc::now(), &|_| {})
        .await?;
    let communities = state.store.list_communities().await?;
    let body = html! {
        (layout::notice("ok", ctx.t("ops.preview_notice")))
        (run_report(ctx, &report))
        h2 { (ctx.t("ops.run_now")) }
        form.stack method="post" action="/staff/ops/bill-runs" {
            (layout::csrf_field(ctx))
            (bill_run_fields(ctx, &communities, Some(&post.form)))
            button.primary type="submit" { (ctx.t("ops.run")) }
        }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("ops.preview_title"), body)))
}

async fn bill_run(State(state): State<AppState>, post: CsrfForm<RunForm>) -> Result<Page, PageError> {
    post.page.require(WRITE)?;
    let ctx = &post.page.ctx;
    let opts = post.form.options(false)?;
    let report = state
        .store
        .run_bills(&opts, &post.page.staff.actor(), None, Utc::now(), &|_| {})
        .await?;
    let body = html! {
        (layout::notice("ok", ctx.t("ops.run_done")))
        (run_report(ctx, &report))
        p { a href="/staff/ops/bill-runs" { (ctx.t("ops.another_run")) } }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("ops.run_title"), body)))
}

fn reminder_table(ctx: &PageCtx, rows: &[crate::store::pages::ReminderListRow]) -> Markup {
    html! {
        @if rows.is_empty() { p { (ctx.t("ops.no_reminders")) } } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { (ctx.t("ops.created")) }
                    th scope="col" { (ctx.t("ops.account")) }
                    th scope="col" { (ctx.t("ops.step")) }
                    th scope="col" { (ctx.t("ops.channel")) }
                    th scope="col" { (ctx.t("ops.status")) }
                    th scope="col" { (ctx.t("ops.attempts")) }
                } }
                tbody { @for r in rows {
                    tr {
                        td { (cst(r.created_at)) }
                        td { a href={"/staff/ops/accounts/" (r.account_id)} { (r.account_code) } }
                        td { (r.track) " · " (r.step) }
                        td { (r.channel) " (" (r.provider) ")" }
                        td { (r.status) @if let Some(at) = r.delivered_at.or(r.sent_at) { br; span.small { (cst(at)) } } }
                        td { (r.attempts) @if let Some(e) = &r.last_error { br; span.small { (e) } } }
                    }
                } }
            } }
        }
    }
}

async fn reminders(
    State(state): State<AppState>,
    page: StaffPage,
    Query(q): Query<CommunityFilter>,
) -> Result<Page, PageError> {
    page.require(READ)?;
    let ctx = &page.ctx;
    let communities = state.store.list_communities().await?;
    let chosen = match q.community.as_deref().filter(|c| !c.is_empty()) {
        Some(code) => Some(find_community(&state, code).await?),
        None => communities.first().cloned(),
    };
    let rows = match &chosen {
        Some(c) => state.store.reminder_history(c.id, q.account, 200).await?,
        None => Vec::new(),
    };
    let body = html! {
        form.inline method="get" action="/staff/ops/reminders" {
            label for="community" { (ctx.t("ops.community")) }
            select #community name="community" {
                @for c in &communities {
                    option value=(c.code) selected[chosen.as_ref().is_some_and(|x| x.id == c.id)] { (c.name) }
                }
            }
            button.secondary type="submit" { (ctx.t("ops.show")) }
        }
        @if let Some(c) = &chosen { (community_nav(ctx, c)) }
        (reminder_table(ctx, &rows))
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("ops.reminders_title"), body)))
}
