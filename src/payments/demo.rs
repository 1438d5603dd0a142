//! The demo's payments: an in-process sandbox of all three gateways, its merchants configured
//! for the demo community, and some bills paid through it — one with a duplicated notification,
//! one whose notification is dropped and found by the active query, one paid and then refunded —
//! while other accounts are left unpaid. Reports whether the journal balances.
//!
//! `meterpay demo` calls [`attach`] with the running application's [`Payments`] and then
//! [`run`] (from `crate::demo`). A second demo run over the same database pays nothing more.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use meterpay_gateways::gateway::{Channel, PayMethod};
use meterpay_gateways::sandbox::Faults;
use serde::Serialize;

use super::service::{IfLive, OrderRequest, Payments, RefundRequestBody};
use super::PaymentsPort as _;
use crate::domain::Fen;
use crate::store::Store;

const COMMUNITY: &str = "DEMO";
const ACTOR: &str = "demo";
const ALIPAY_APP: &str = "2021000000000001";
const WECHAT_MCH: &str = "1900000109";
const UNIONPAY_MER: &str = "777290058110048";

static ATTACHED: OnceLock<Arc<Payments>> = OnceLock::new();

/// Hand the demo the running application's payments (its notify URLs point at `base_url`).
pub fn attach(payments: Arc<Payments>, base_url: &str) {
    payments.set_notify_base_url(base_url);
    let _ = ATTACHED.set(payments);
}

/// One demo payment.
#[derive(Debug, Clone, Serialize)]
pub struct DemoPayment {
    pub account: String,
    pub channel: String,
    pub order_no: String,
    pub amount: String,
    /// What happened, in words.
    pub story: String,
    /// The order's final status here (`paid`, …) and what was refunded.
    pub status: String,
    pub refunded: String,
}

/// What the demo's payments did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoPayments {
    /// False when a previous run had already paid (nothing more is paid).
    pub ran: bool,
    pub sandbox_wallet: String,
    pub payments: Vec<DemoPayment>,
    pub accounts_left_unpaid: usize,
    pub collected: String,
    pub refunded: String,
    /// The journal's lines sum to zero.
    pub balanced: bool,
}

/// Do what the payer's browser does with a payer action: submit a form (UnionPay's front
/// consume) or follow a redirect (Alipay page/wap pay), so the gateway sees the order. A QR code
/// or JSAPI needs nothing (the wallet reads them).
pub async fn open_in_browser(action: &meterpay_gateways::gateway::PayerAction) -> anyhow::Result<()> {
    use meterpay_gateways::gateway::PayerAction;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    match action {
        PayerAction::Form { action, fields } => {
            client.post(action).form(fields).send().await?;
        }
        PayerAction::Redirect { url } => {
            client.get(url).send().await?;
        }
        PayerAction::QrCode { .. } | PayerAction::Jsapi { .. } => {}
    }
    Ok(())
}

async fn wait_until<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn balanced(store: &Store) -> anyhow::Result<bool> {
    Ok(store.trial_balance().await?.iter().map(|r| r.balance_fen).sum::<i64>() == 0)
}

/// Pay some demo bills through the sandbox (see the module docs). None when no payments were
/// attached (the demo's library callers that do not serve).
pub async fn run(store: &Store) -> anyhow::Result<Option<DemoPayments>> {
    let Some(payments) = ATTACHED.get().cloned() else {
        return Ok(None);
    };
    let sb = crate::tools::sandbox_with_all_gateways(10_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| anyhow::anyhow!("binding the demo's gateway sandbox: {e}"))?;
    sb.serve(listener);
    let wallet = format!("{}/sandbox/wallet", sb.base_url());
    let ali = meterpay_gateways::sandbox::alipay::connect(&sb, ALIPAY_APP, 6000);
    let wx = meterpay_gateways::sandbox::wechatpay::connect(&sb, WECHAT_MCH, 6000);
    let up = meterpay_gateways::sandbox::unionpay::connect(&sb, UNIONPAY_MER, 6000);
    for gw in [
        Arc::new(ali) as Arc<dyn meterpay_gateways::gateway::PaymentGateway>,
        Arc::new(wx),
        Arc::new(up),
    ] {
        if payments.registry().get(gw.channel(), gw.merchant_id()).is_none() {
            payments.add_merchant(COMMUNITY, 6000, gw)?;
        }
    }
    payments.sync_merchants(Utc::now()).await?;

    let community = store
        .community_by_code(COMMUNITY)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo community is missing"))?;
    let accounts = store.list_accounts(community.id).await?;
    let mut with_open = Vec::new();
    let mut already = false;
    for a in &accounts {
        if store
            .account_payment_orders(a.id)
            .await?
            .iter()
            .any(|o| o.created_by == ACTOR)
        {
            already = true;
        }
        let open = store.open_bills(a.id).await?;
        if !open.is_empty() {
            with_open.push((a.clone(), open));
        }
    }
    let mut out = Vec::new();
    if !already {
        // (channel, method, story) for the first accounts with open bills; the rest stay unpaid.
        let plan = [
            (Channel::Alipay, PayMethod::Qr, "duplicated"),
            (Channel::Wechatpay, PayMethod::Qr, "dropped"),
            (Channel::Unionpay, PayMethod::Web, "refunded"),
        ];
        for ((account, open), (channel, method, story)) in with_open.iter().zip(plan) {
            let req = OrderRequest {
                account_id: account.id,
                bill_ids: open.iter().map(|b| b.bill_id).collect(),
                top_up: None,
                channel,
                method,
                payer_openid: None,
                payer_ip: Some("127.0.0.1".into()),
                return_url: None,
                if_live: IfLive::Supersede,
            };
            let created = payments
                .create_order(&req, ACTOR, Utc::now())
                .await
                .map_err(|e| anyhow::anyhow!("the demo's {channel} order for {}: {e}", account.code))?;
            if let Some(a) = &created.payer_action {
                open_in_browser(a).await?;
            }
            let no = created.order_no.clone();
            let merchant = created.merchant_id.clone();
            let words = match story {
                "duplicated" => {
                    sb.set_faults(Faults {
                        duplicate_notifications: 1,
                        ..Faults::default()
                    });
                    sb.pay(channel, &merchant, &no)?;
                    wait_until(|| async {
                        sb.deliveries()
                            .iter()
                            .filter(|d| d.order_no == no && d.acknowledged)
                            .count()
                            >= 2
                    })
                    .await;
                    sb.set_faults(Faults::default());
                    "paid; the gateway notified twice, applied once".to_string()
                }
                "dropped" => {
                    sb.set_faults(Faults {
                        drop_notifications: true,
                        ..Faults::default()
                    });
                    sb.pay(channel, &merchant, &no)?;
                    sb.set_faults(Faults::default());
                    let q = payments.query_and_apply(&no, Utc::now()).await?;
                    match q {
                        super::QueryOutcome::AppliedNow { .. } => {
                            "paid; the notification was dropped, the active query found it".to_string()
                        }
                        other => format!("paid; the notification was dropped; the query said {other:?}"),
                    }
                }
                _ => {
                    sb.pay(channel, &merchant, &no)?;
                    let paid = wait_until(|| async {
                        store
                            .payment_order_fresh(&no)
                            .await
                            .ok()
                            .flatten()
                            .is_some_and(|o| o.status == "paid")
                    })
                    .await;
                    if !paid {
                        payments.query_and_apply(&no, Utc::now()).await?;
                    }
                    let r = payments
                        .request_refund(
                            &no,
                            &RefundRequestBody {
                                amount: None,
                                reason: "demo: paid twice by mistake".into(),
                            },
                            "demo-finance",
                            Utc::now(),
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("the demo's refund: {e}"))?;
                    let done = wait_until(|| async {
                        store
                            .refund(&r.refund_no)
                            .await
                            .ok()
                            .flatten()
                            .is_some_and(|x| x.status == "succeeded")
                    })
                    .await;
                    if !done {
                        payments.settle_refund(&r.refund_no, Utc::now()).await?;
                    }
                    format!("paid, then refunded in full ({})", r.refund_no)
                }
            };
            wait_until(|| async {
                store
                    .payment_order_fresh(&no)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|o| o.status == "paid")
            })
            .await;
            let o = store
                .payment_order_fresh(&no)
                .await?
                .ok_or_else(|| anyhow::anyhow!("order {no} vanished"))?;
            out.push(DemoPayment {
                account: account.code.clone(),
                channel: channel.to_string(),
                order_no: no,
                amount: Fen::new(o.amount_fen).to_string(),
                story: words,
                status: o.status,
                refunded: Fen::new(o.refunded_fen).to_string(),
            });
        }
    }
    let mut unpaid = 0;
    let (mut collected, mut refunded) = (0i64, 0i64);
    for a in &accounts {
        if !store.open_bills(a.id).await?.is_empty() {
            unpaid += 1;
        }
        for o in store.account_payment_orders(a.id).await? {
            if o.status == "paid" {
                collected += o.paid_amount_fen.unwrap_or(0);
                refunded += o.refunded_fen;
            }
        }
    }
    Ok(Some(DemoPayments {
        ran: !already,
        sandbox_wallet: wallet,
        payments: out,
        accounts_left_unpaid: unpaid,
        collected: Fen::new(collected).to_string(),
        refunded: Fen::new(refunded).to_string(),
        balanced: balanced(store).await?,
    }))
}

impl DemoPayments {
    /// Lines for the demo's text summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.ran {
            s.push_str(&format!(
                "  payments   {} paid through the gateway sandbox ({}):\n",
                self.payments.len(),
                self.sandbox_wallet
            ));
        } else {
            s.push_str("  payments   already paid by an earlier demo run; nothing more paid\n");
        }
        for p in &self.payments {
            s.push_str(&format!(
                "             {:<10} {:<9} {} {:>10}  {}\n",
                p.account, p.channel, p.order_no, p.amount, p.story
            ));
        }
        s.push_str(&format!(
            "             collected {}, refunded {}; {} accounts left unpaid; journal {}\n",
            self.collected,
            self.refunded,
            self.accounts_left_unpaid,
            if self.balanced { "balances" } else { "DOES NOT BALANCE" }
        ));
        s
    }
}
