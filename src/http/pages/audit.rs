//! Admin pages: `GET /staff/audit` (the latest audit records) and `GET /staff/users` (staff
//! users and their roles). Read-only views; changes go through the API or the CLI.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::html;

use super::{layout, Page, PageError};
use crate::http::auth::StaffPage;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/audit", get(audit_log))
        .route("/staff/users", get(users))
}

/// How many records the audit page shows.
const AUDIT_ROWS: i64 = 100;

async fn audit_log(State(state): State<AppState>, page: StaffPage) -> Result<Page, PageError> {
    page.require(&["admin"])?;
    let ctx = &page.ctx;
    let rows = state.store.recent_audit(AUDIT_ROWS).await?;
    let body = html! {
        div.scroll {
            table {
                caption { (ctx.tf("audit.caption", &[("n", &rows.len().to_string())])) }
                thead { tr {
                    th scope="col" { (ctx.t("audit.at")) }
                    th scope="col" { (ctx.t("audit.actor")) }
                    th scope="col" { (ctx.t("audit.action")) }
                    th scope="col" { (ctx.t("audit.subject")) }
                    th scope="col" { (ctx.t("audit.change")) }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            // Staff read times in China Standard Time, like the job schedules.
                            td { time datetime=(r.at.to_rfc3339()) { (r.at.with_timezone(&chrono_tz::Asia::Shanghai).format("%Y-%m-%d %H:%M:%S")) } }
                            td { (r.actor) }
                            td { code { (r.action) } }
                            td { (r.subject_type) " " (r.subject_id) }
                            td.small {
                                @if let Some(b) = &r.before_json { (b) " → " }
                                @if let Some(a) = &r.after_json { (a) }
                                @if let Some(reason) = &r.reason { " (" (reason) ")" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("audit.title"), body)))
}

async fn users(State(state): State<AppState>, page: StaffPage) -> Result<Page, PageError> {
    page.require(&["admin"])?;
    let ctx = &page.ctx;
    let users = state.store.list_staff_users().await?;
    let body = html! {
        div.scroll {
            table {
                thead { tr {
                    th scope="col" { (ctx.t("users.name")) }
                    th scope="col" { (ctx.t("users.role")) }
                    th scope="col" { (ctx.t("users.state")) }
                } }
                tbody {
                    @for u in &users {
                        tr {
                            td { (u.name) }
                            td { (ctx.role_name(&u.role)) }
                            td { @if u.disabled_at.is_some() { (ctx.t("users.disabled")) } @else { (ctx.t("users.active")) } }
                        }
                    }
                }
            }
        }
    };
    Ok(Page::new(ctx, layout::page(ctx, ctx.t("users.title"), body)))
}
