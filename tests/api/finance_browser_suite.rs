//! The finance pages in headless Chromium: a finance user signs in, opens the morning
//! reconciliation of a day whose settlement files carry planted differences (the demo's
//! reconciliation step: a payment the gateway has and we lack, one we have and it lacks, a fee
//! off the contract), resolves one with a reason, and sees it leave the open list — with the
//! decision, who made it and its balanced journal entry in the store. Every page shown passes
//! the accessibility check and is saved as a screenshot artefact. The desktop browser runs with
//! the pages' JavaScript switched off: signing in, reading and deciding need none.

use chrono::NaiveDate;

use crate::browser::{Browser, DESKTOP, MOBILE};
use crate::helpers::spawn_app;
use crate::pages_browser_suite::{assert_no_sideways_scroll, sign_in};
use crate::pages_suite::fixture;
use crate::staff::add_user;

#[tokio::test]
async fn finance_signs_in_and_resolves_a_planted_discrepancy_in_the_browser() {
    let test = "finance_signs_in_and_resolves_a_planted_discrepancy_in_the_browser";
    let app = spawn_app().await;
    let _f = fixture(&app.db).await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let planted = meterpay::reconcile::demo::demo_step(&app.db.store, day)
        .await
        .expect("the day's files reconciled");
    assert_eq!(planted.runs.len(), 3, "one run per channel");
    let open = app.db.store.recon_open_items(Some(day)).await.unwrap();
    // The Alipay file's extra payment: on the gateway, not in our ledger (长款).
    let long = open
        .iter()
        .find(|i| i.channel == "alipay" && i.class == "long")
        .unwrap_or_else(|| panic!("a planted long item among {open:?}"))
        .clone();
    assert!(long.decision.is_none());
    let open_before = open.len();

    add_user(&app.db, "fin1", "finance").await;
    // Finance's pages need no JavaScript at all: this browser runs none of the pages' scripts.
    let Some(b) = Browser::start_without_javascript(test, DESKTOP).await else {
        return;
    };
    sign_in(&b, &app, "fin1").await;
    b.click("nav a[href='/staff/finance']").await;
    b.goto(&format!("{}/staff/finance?date={day}", app.address)).await;
    let main = b.text("main").await;
    let heading = format!("长款 (on the gateway, not in our ledger) · {}", long.order_no);
    assert!(
        main.contains(&heading),
        "the planted item is listed by its class: {main}"
    );
    for (_, summary) in &planted.runs {
        assert!(main.contains(&summary.merchant_id), "each merchant's day is shown");
    }
    b.assert_accessible("the morning reconciliation").await;
    b.screenshot("finance-morning").await;

    // Decide without a reason: the form's own check keeps it from going, and nothing changes.
    let id = long.id;
    let submit = format!("form[action='/staff/finance/discrepancies/{id}/resolve'] button.primary");
    b.click_in_page(&format!("#decision-{id} option[value='post_payment']"))
        .await;
    b.click_in_page(&submit).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(b.path().await, "/staff/finance");
    let still = app.db.store.recon_item(id).await.unwrap().unwrap();
    assert!(still.decision.is_none(), "no decision without a reason");
    b.fill(&format!("#reason-{id}"), "到账核实：支付宝流水与银行回单一致")
        .await;
    b.click(&submit).await;
    assert_eq!(b.path().await, "/staff/finance");
    assert_eq!(
        b.text("[role=status]").await,
        "差异已处理。",
        "a notice says the item was resolved"
    );
    let main = b.text("main").await;
    assert!(
        !main.contains(&heading) && !b.has(&format!("#item-{id}")).await,
        "the resolved item left the open list"
    );
    b.assert_accessible("the morning reconciliation after a decision").await;
    b.screenshot("finance-resolved").await;

    // The store holds the decision, who made it and why, and its balanced entry.
    let item = app.db.store.recon_item(id).await.unwrap().unwrap();
    assert_eq!(item.decision.as_deref(), Some("post_payment"));
    assert_eq!(item.decided_by.as_deref(), Some("user:fin1"));
    assert!(item.decision_reason.unwrap().contains("银行回单"));
    let open_after = app.db.store.recon_open_items(Some(day)).await.unwrap();
    assert_eq!(open_after.len(), open_before - 1, "exactly one item resolved");
    let reference = format!(
        "{}:{}:{}:{}",
        item.channel, item.merchant_id, item.bill_date, item.item_key
    );
    let lines = app.db.store.entry_lines("recon.resolve", &reference).await.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines.iter().map(|l| l.amount_fen).sum::<i64>(), 0);
    assert_eq!(
        lines.iter().map(|l| l.amount_fen.abs()).max(),
        Some(long.difference_fen.abs())
    );

    // The arrears page and its export link, as finance reads them.
    b.goto(&format!("{}/staff/finance/arrears?community=PG", app.address))
        .await;
    b.assert_accessible("the arrears").await;
    b.screenshot("finance-arrears").await;
    b.close().await;

    // The same morning page on a phone: readable, nothing wider than the screen.
    let Some(b) = Browser::start(test, MOBILE).await else {
        return;
    };
    sign_in(&b, &app, "fin1").await;
    b.goto(&format!("{}/staff/finance?date={day}", app.address)).await;
    b.assert_accessible("the morning reconciliation on a phone").await;
    assert_no_sideways_scroll(&b, "the morning reconciliation on a phone").await;
    b.screenshot("finance-morning-375").await;
    b.close().await;
    app.stop().await.unwrap();
}
