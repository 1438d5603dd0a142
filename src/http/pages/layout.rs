//! The base layout every page is drawn in: `<html lang>`, a header with the app name, the
//! language switch and (signed in) the role-filtered navigation and the sign-out button, a
//! `<main>` landmark with the page's content, and the embedded stylesheet.

use maud::{html, Markup, DOCTYPE};

use super::{PageCtx, NAV};
use crate::http::auth::CSRF_FIELD;

/// A whole page: `title` (already translated) and `content` inside the layout.
pub fn page(ctx: &PageCtx, title: &str, content: Markup) -> Markup {
    let app = ctx.t("app.name");
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (app) }
                link rel="stylesheet" href=(super::STYLESHEET_PATH);
            }
            body {
                a.skip href="#main" { (ctx.t("layout.skip")) }
                header.top {
                    div.bar {
                        a.brand href="/staff" { (app) }
                        a.lang href=(ctx.lang_switch_href()) lang=(ctx.lang.other().code())
                            aria-label=(ctx.t("layout.switch_lang_label")) {
                            (ctx.t("layout.switch_lang"))
                        }
                    }
                    @if let Some(staff) = &ctx.staff {
                        nav aria-label=(ctx.t("layout.nav")) {
                            ul {
                                @for item in NAV.iter().filter(|i| staff.may(i.roles)) {
                                    li {
                                        a href=(item.path) aria-current=[(ctx.path == item.path).then_some("page")] {
                                            (ctx.t(item.label))
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span { (ctx.tf("layout.signed_in_as", &[("name", &staff.name), ("role", ctx.role_name(&staff.role))])) }
                            form method="post" action="/staff/sign-out" {
                                (csrf_field(ctx))
                                button.link type="submit" { (ctx.t("layout.sign_out")) }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The hidden CSRF field every `<form method="post">` of a signed-in page must contain.
pub fn csrf_field(ctx: &PageCtx) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(ctx.csrf_token.as_deref().unwrap_or("")); }
}

/// A message box: `kind` is `error` (announced at once) or `ok`.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! {
        @if kind == "error" {
            p.notice.error role="alert" { (text) }
        } @else {
            p.notice.ok role="status" { (text) }
        }
    }
}
