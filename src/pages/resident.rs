//! Resident pages: what a pay link opens, on a phone, in Chinese first.
//!
//! | route | what |
//! |---|---|
//! | `GET /pay/{token}` | the account: what is owed, open bills, the latest bill in full (readings, usage, tier breakdown, late fee), a usage chart (SVG drawn here) |
//! | `GET /pay/{token}/bills/{id}` | one bill of the link's account |
//! | `GET /pay/lookup` | the look-up form: community, account code, last four digits of the mobile on file |
//! | `POST /pay/lookup` | on a match, `303` to a fresh pay link valid for [`LOOKUP_LINK_MINUTES`] |
//!
//! **Access.** The token is a signed link ([`crate::paylink`], purpose `Pay`) naming one account
//! and an expiry; an altered, foreign-signed or expired token gets `403` and shows nothing of any
//! account. Everything a page reads is keyed by the link's account: a bill of another account
//! answers `404`, exactly like a bill that does not exist, so ids cannot be probed. The token
//! itself is the capability, so resident forms need no session; it never reaches logs (the
//! request span shows `/pay/…`) and `Referrer-Policy: same-origin` keeps it from the gateways.
//!
//! **Look-up.** Four digits are guessable, so failures are counted (table `resident_lookups`)
//! per community/account as typed and per source address, with the staff sign-in's lock-out
//! settings (`access.lockout_*`); past the limit the look-up answers `429` even for the right
//! digits until the window passes. The form is protected against cross-site posting by a
//! double-submit cookie like the staff sign-in form. The answer never says which part was wrong.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{Duration, Utc};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::bill::bill_view;
use super::{utility_name, utility_unit, yuan};
use crate::access::{constant_time_eq, random_token, LockoutPolicy};
use crate::domain::Quantity;
use crate::http::auth::{cookie_value, SourceAddr, CSRF_FIELD};
use crate::http::pages::chart::{bar_chart, Point};
use crate::http::pages::{layout, AnyPage, Page, PageCtx, PageError, STYLESHEET_PATH};
use crate::http::AppState;
use crate::paylink::{LinkClaims, LinkError, LinkPurpose};
use crate::store::directory::Account;

/// How long the pay link a successful look-up hands out stays valid.
pub const LOOKUP_LINK_MINUTES: i64 = 30;
/// Periods of usage the chart shows.
const CHART_PERIODS: usize = 12;
const LOOKUP_COOKIE: &str = "meterpay_lookup";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pay/lookup", get(lookup_form).post(lookup))
        .route("/pay/{token}", get(overview))
        .route("/pay/{token}/bills/{id}", get(bill_page))
}

/// A whole resident page: the resident's own header (no staff navigation), the language switch,
/// `<main>` with the title.
pub fn resident_page(ctx: &PageCtx, title: &str, content: Markup) -> Markup {
    let app = ctx.t("app.name");
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (app) }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body.resident {
                a.skip href="#main" { (ctx.t("layout.skip")) }
                header.top {
                    div.bar {
                        span.brand { (app) }
                        a.lang href=(ctx.lang_switch_href()) lang=(ctx.lang.other().code())
                            aria-label=(ctx.t("layout.switch_lang_label")) {
                            (ctx.t("layout.switch_lang"))
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

/// A resident's error page (a bad link, a bill not on this account) with a way on.
pub(crate) fn resident_error(ctx: &PageCtx, status: StatusCode, message: &str) -> Response {
    let body = resident_page(
        ctx,
        ctx.t("res.error_title"),
        html! {
            (layout::notice("error", message))
            p { a href="/pay/lookup" { (ctx.t("res.lookup_instead")) } }
        },
    );
    Page::new(ctx, body).with_status(status).into_response()
}

/// Verify a pay link, or the refusal page.
pub(crate) async fn verify(state: &AppState, ctx: &PageCtx, token: &str) -> Result<LinkClaims, Response> {
    let now = Utc::now();
    let signer = crate::dunning::outbox::link_signer(&state.store, &state.config, now)
        .await
        .map_err(|e| PageError::Unexpected(e.context("loading the pay-link secret")).into_response())?;
    signer.verify(token, LinkPurpose::Pay, now).map_err(|e| {
        let msg = match &e {
            LinkError::Expired(at) => ctx.tf("res.link_expired", &[("at", &super::cst(*at))]),
            LinkError::Malformed | LinkError::BadSignature | LinkError::WrongPurpose => {
                ctx.t("res.link_invalid").to_string()
            }
        };
        tracing::info!(reason = %e, "a pay link was refused");
        resident_error(ctx, StatusCode::FORBIDDEN, &msg)
    })
}

pub(crate) async fn account_of(state: &AppState, claims: &LinkClaims) -> Result<Account, PageError> {
    state
        .store
        .account_by_id(claims.account_id)
        .await?
        .ok_or_else(|| PageError::NotFound("this account no longer exists".into()))
}

/// The account holder's name with all but the first character hidden (the link may have been
/// forwarded in a group chat).
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => {
            let rest = chars.count().max(1);
            format!("{first}{}", "*".repeat(rest.min(3)))
        }
        None => String::new(),
    }
}

fn chart_points(history: &[crate::store::pages::UsagePoint], utility: &str) -> Vec<Point> {
    let mut v: Vec<Point> = history
        .iter()
        .filter(|p| p.utility == utility)
        .map(|p| Point::new(short_period(&p.period), Quantity::from_scaled(p.quantity_e4).get()))
        .collect();
    let skip = v.len().saturating_sub(CHART_PERIODS);
    v.drain(..skip);
    v
}

fn usage_charts(ctx: &PageCtx, history: &[crate::store::pages::UsagePoint]) -> Markup {
    let mut utilities: Vec<&str> = history.iter().map(|p| p.utility.as_str()).collect();
    utilities.sort();
    utilities.dedup();
    html! {
        @for u in utilities {
            @let title = ctx.tf("res.usage_chart", &[("utility", utility_name(ctx, u))]);
            (bar_chart(ctx.lang, &title, utility_unit(u), &chart_points(history, u)))
        }
    }
}

/// `2026-11` → `26-11`, short enough for twelve bars on a phone.
fn short_period(p: &str) -> String {
    p.get(2..).unwrap_or(p).to_string()
}

async fn overview(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let claims = match verify(&state, &ctx, &token).await {
        Ok(c) => c,
        Err(refusal) => return Ok(refusal),
    };
    let account = account_of(&state, &claims).await?;
    let balance = state.store.account_balance(account.id).await?;
    let open = &balance.open_bills;
    let owed: i64 = open.iter().map(|b| b.outstanding_fen).sum();
    let bills = state.store.account_bills(account.id).await?;
    let latest = bills
        .iter()
        .filter(|b| b.kind == "regular")
        .max_by(|a, b| a.period.cmp(&b.period).then(a.bill_id.cmp(&b.bill_id)));
    let latest = match latest {
        Some(b) => Some(state.store.bill_detail(b.bill_id).await?),
        None => None,
    };
    let history = state
        .store
        .usage_history(account.id, (CHART_PERIODS * 2) as i64)
        .await?;
    let prepaid = account.payment_mode == "prepaid";
    let pay = super::pay::pay_section(&state, &ctx, &headers, &token, account.community_id, owed, prepaid).await;
    let address = match account.premises_id {
        Some(p) => state.store.premises_address(p).await?,
        None => None,
    };
    let body = html! {
        p.lead {
            (mask_name(&account.name)) " · " (account.code)
            @if let Some((b, u, d)) = &address { br; span.small { (ctx.tf("res.address", &[("building", b), ("unit", u), ("door", d)])) } }
        }
        section.owed aria-labelledby="owed" {
            h2 #owed { (ctx.t("res.owed")) }
            p.big { (yuan(owed)) }
            @if account.payment_mode == "prepaid" || balance.credit_fen > 0 {
                p { (ctx.t("res.credit")) ": " (yuan(balance.credit_fen)) }
            }
        }
        (pay)
        @if !open.is_empty() {
            section aria-labelledby="open-bills" {
                h2 #open-bills { (ctx.t("res.open_bills")) }
                ul.plain.bills { @for b in open {
                    li { a href={"/pay/" (token) "/bills/" (b.bill_id)} { (b.period) @if b.kind == "adjustment" { " " (ctx.t("bill.kind.adjustment")) } }
                        ": " strong { (yuan(b.outstanding_fen)) } " · " (ctx.tf("res.due", &[("date", &b.due_date.to_string())]))
                        @if b.late_fee_fen > 0 { " · " (ctx.t("bill.late_fee")) " " (yuan(b.late_fee_fen)) } }
                } }
            }
        } @else {
            (layout::notice("ok", ctx.t("res.nothing_owed")))
        }
        @if !history.is_empty() {
            section aria-labelledby="history" {
                h2 #history { (ctx.t("res.history")) }
                (usage_charts(&ctx, &history))
            }
        }
        @if let Some(b) = &latest {
            (bill_view(&ctx, b, false))
        }
        @if bills.len() > 1 {
            section aria-labelledby="all-bills" {
                h2 #all-bills { (ctx.t("res.all_bills")) }
                ul.plain { @for b in bills.iter().rev() {
                    li { a href={"/pay/" (token) "/bills/" (b.bill_id)} { (b.period) @if b.kind == "adjustment" { " " (ctx.t("bill.kind.adjustment")) } }
                        " · " (yuan(b.total_fen)) " · " (super::bill_status_name(&ctx, b.status.as_str())) }
                } }
            }
        }
        p.small { (ctx.tf("res.link_valid_until", &[("at", &super::cst(claims.expires_at))])) }
    };
    Ok(Page::new(&ctx, resident_page(&ctx, ctx.t("res.title"), body)).into_response())
}

async fn bill_page(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    Path((token, id)): Path<(String, i64)>,
) -> Result<Response, PageError> {
    let claims = match verify(&state, &ctx, &token).await {
        Ok(c) => c,
        Err(refusal) => return Ok(refusal),
    };
    let not_here = || resident_error(&ctx, StatusCode::NOT_FOUND, ctx.t("res.no_such_bill"));
    let bill = match state.store.bill_detail(id).await {
        Ok(b) if b.account_id == claims.account_id => b,
        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => return Ok(not_here()),
        Err(e) => return Err(e.into()),
    };
    let body = html! {
        p { a href={"/pay/" (token)} { (ctx.t("res.back")) } }
        (bill_view(&ctx, &bill, false))
    };
    let title = ctx.tf("res.bill_title", &[("period", &bill.period)]);
    Ok(Page::new(&ctx, resident_page(&ctx, &title, body)).into_response())
}

fn lookup_cookie(state: &AppState, value: String, max_age: time::Duration) -> Cookie<'static> {
    Cookie::build((LOOKUP_COOKIE, value))
        .path("/pay/lookup")
        .http_only(true)
        .secure(state.config.access.cookie_secure)
        .same_site(SameSite::Strict)
        .max_age(max_age)
        .build()
}

fn set_cookie(resp: &mut Response, c: Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Deserialize, Default)]
struct Lookup {
    #[serde(default)]
    community: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    mobile_last4: String,
    #[serde(default)]
    csrf_token: String,
}

async fn render_lookup(
    state: &AppState,
    ctx: &PageCtx,
    form: &Lookup,
    message: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let communities = state.store.list_communities().await?;
    let token = random_token();
    let body = resident_page(
        ctx,
        ctx.t("res.lookup_title"),
        html! {
            @if let Some(m) = &message { (layout::notice("error", m)) }
            p { (ctx.t("res.lookup_intro")) }
            form.stack method="post" action="/pay/lookup" {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                label for="community" { (ctx.t("res.community")) }
                select #community name="community" required {
                    @for c in &communities {
                        option value=(c.code) selected[form.community == c.code] { (c.name) }
                    }
                }
                label for="account" { (ctx.t("res.account_code")) }
                input #account name="account" type="text" value=(form.account) autocomplete="off" autocapitalize="characters" spellcheck="false" required maxlength="64";
                label for="mobile_last4" { (ctx.t("res.mobile_last4")) }
                input #mobile_last4 name="mobile_last4" type="text" inputmode="numeric" pattern="[0-9]{4}" maxlength="4" autocomplete="off" required aria-describedby="last4-hint";
                span #last4-hint .hint { (ctx.t("res.mobile_last4_hint")) }
                button.primary type="submit" { (ctx.t("res.lookup_submit")) }
            }
        },
    );
    let mut resp = Page::new(ctx, body).with_status(status).into_response();
    set_cookie(&mut resp, lookup_cookie(state, token, time::Duration::hours(1)));
    Ok(resp)
}

async fn lookup_form(State(state): State<AppState>, AnyPage(ctx): AnyPage) -> Result<Response, PageError> {
    render_lookup(&state, &ctx, &Lookup::default(), None, StatusCode::OK).await
}

fn last4(phone: &str) -> Option<String> {
    let digits: Vec<char> = phone.chars().filter(|c| c.is_ascii_digit()).collect();
    (digits.len() >= 4).then(|| digits[digits.len() - 4..].iter().collect())
}

async fn lookup(
    State(state): State<AppState>,
    AnyPage(ctx): AnyPage,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    Form(f): Form<Lookup>,
) -> Result<Response, PageError> {
    let expected = cookie_value(&headers, LOOKUP_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(&expected, &f.csrf_token) {
        let msg = ctx.t("res.lookup_expired").to_string();
        return render_lookup(&state, &ctx, &f, Some(msg), StatusCode::FORBIDDEN).await;
    }
    let community: String = f.community.trim().chars().take(64).collect();
    let code: String = f.account.trim().chars().take(64).collect();
    let key = format!("{community}/{code}");
    let policy = LockoutPolicy::from_config(&state.config.access);
    let now = Utc::now();
    let (by_key, by_source) = state
        .store
        .recent_lookup_failures(&key, &source, now - policy.window)
        .await?;
    let minutes = (policy.window.num_seconds() + 59) / 60;
    if policy.lock(by_key, by_source).is_some() {
        tracing::warn!(source = %source, "account look-up refused: locked out");
        let msg = ctx.tf("res.lookup_locked", &[("minutes", &minutes.to_string())]);
        return render_lookup(&state, &ctx, &f, Some(msg), StatusCode::TOO_MANY_REQUESTS).await;
    }
    let account = match state.store.community_by_code(&community).await? {
        Some(c) => state.store.account_by_code(c.id, &code).await?,
        None => None,
    };
    let typed = f.mobile_last4.trim();
    let matched = account.filter(|a| {
        let on_file = a.mobile.as_deref().or(a.phone.as_deref()).and_then(last4);
        // Compare even when nothing is on file, so a miss takes the same path.
        let on_file = on_file.unwrap_or_else(|| "\u{0}\u{0}\u{0}\u{0}".into());
        typed.len() == 4 && constant_time_eq(typed, &on_file)
    });
    let Some(account) = matched else {
        state.store.record_lookup(&key, &source, false, now).await?;
        let locked = policy.lock(by_key + 1, by_source + 1).is_some();
        let (msg, status) = if locked {
            (
                ctx.tf("res.lookup_locked", &[("minutes", &minutes.to_string())]),
                StatusCode::TOO_MANY_REQUESTS,
            )
        } else {
            (ctx.t("res.lookup_failed").to_string(), StatusCode::UNAUTHORIZED)
        };
        return render_lookup(&state, &ctx, &f, Some(msg), status).await;
    };
    state.store.record_lookup(&key, &source, true, now).await?;
    let signer = crate::dunning::outbox::link_signer(&state.store, &state.config, now)
        .await
        .map_err(|e| PageError::Unexpected(e.context("loading the pay-link secret")))?;
    let token = signer.token(
        account.id,
        LinkPurpose::Pay,
        now + Duration::minutes(LOOKUP_LINK_MINUTES),
    );
    let mut resp = Redirect::to(&format!("/pay/{token}")).into_response();
    set_cookie(&mut resp, lookup_cookie(&state, String::new(), time::Duration::ZERO));
    Ok(resp)
}

/// The path of a request as logs may show it: a resident or unsubscribe link's token replaced by
/// `…` (a token is a capability; it must not sit in log files).
pub fn loggable_path(path: &str) -> String {
    for prefix in ["/pay/", "/unsubscribe/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.starts_with("lookup") {
                return path.to_string();
            }
            let tail = rest.split_once('/').map(|(_, t)| t).unwrap_or("");
            return if tail.is_empty() {
                format!("{prefix}…")
            } else {
                format!("{prefix}…/{tail}")
            };
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_masked_but_for_their_first_character() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("Li"), "L*");
        assert_eq!(mask_name(""), "");
    }

    #[test]
    fn the_last_four_digits_ignore_spaces_and_signs() {
        assert_eq!(last4("+86 138 1234 5678").as_deref(), Some("5678"));
        assert_eq!(last4("123"), None);
    }

    #[test]
    fn tokens_never_reach_the_logged_path() {
        assert_eq!(loggable_path("/pay/AbC123xyz"), "/pay/…");
        assert_eq!(loggable_path("/pay/AbC123xyz/bills/7"), "/pay/…/bills/7");
        assert_eq!(loggable_path("/unsubscribe/AbC"), "/unsubscribe/…");
        assert_eq!(loggable_path("/pay/lookup"), "/pay/lookup");
        assert_eq!(loggable_path("/staff/ops"), "/staff/ops");
    }
}
