//! `GET /staff`: the staff home page: who is signed in and the sections their role may use.

use axum::routing::get;
use axum::Router;
use maud::html;

use super::{layout, Page, NAV};
use crate::http::auth::StaffPage;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/staff", get(home))
}

async fn home(page: StaffPage) -> Page {
    let ctx = &page.ctx;
    let staff = &page.staff;
    let body = html! {
        p.lead { (ctx.tf("home.greeting", &[("name", &staff.name)])) }
        p { (ctx.tf("home.your_role", &[("role", ctx.role_name(&staff.role))])) }
        section aria-labelledby="sections" {
            h2 #sections { (ctx.t("home.sections")) }
            ul.cards {
                @for item in NAV.iter().filter(|i| i.path != "/staff" && staff.may(i.roles)) {
                    li { a.card href=(item.path) { (ctx.t(item.label)) } }
                }
            }
        }
    };
    Page::new(ctx, layout::page(ctx, ctx.t("home.title"), body))
}
