//! A group of payments applied set-wise: the group committer's first try at a batch of
//! [`Store::apply_payment`](super::Store::apply_payment) writes ([`super::group_commit`]).
//!
//! One payment applied alone ([`super::payments`]'s `apply_payment_*`) is eleven statements:
//! lock the order, release its bill locks, lock the account, read its bills, allocations, ledger
//! accounts, journal lines, the entry, the order's update, the receipt, the raw event. Sixty-four
//! of them in one transaction are seven hundred round trips, and those — not the commit — were
//! what bounded the callbacks per second (benches/payments.rs). Here each of those steps is one
//! statement for the whole group, about a dozen in all.
//!
//! Only the plain case is taken this way, and the plain case is decided from the locked rows,
//! exactly as the one-by-one apply decides it: the order exists, is neither paid nor closed, its
//! channel, merchants and amount match the notification, and this gateway event is not stored
//! yet. A payment is also left to the one-by-one apply when anything else in the group concerns
//! its order, its event or its account (copies of one callback, two orders of one account): then
//! the order in which they apply matters, and that path keeps arrival order. Everything left is
//! answered `None` and the committer runs it one by one afterwards, in the same transaction —
//! none of it shares an order, an event or an account with what was applied here, so running it
//! after gives what arrival order would have.
//!
//! Every write here is the same row the one-by-one apply writes: the decision uses its
//! mismatch check (`payments::payment_mismatch`), the allocation and journal entry come from the
//! same `bills::plan_payment`, posted at the payment time; same receipt, same event row. Any
//! error — a statement refused, an event already stored after all — is returned and the
//! committer rolls the whole attempt back and runs the batch one by one in savepoints, so this
//! path can only ever be faster, never different.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::billing_settings::BillingSettings;
use super::bills::{
    allocation_settings, plan_payment, post_entries_batch_in_tx, OpenRow, PaymentAllocation, OPEN_SQL_OF_ACCOUNTS,
};
use super::payments::{clearing_account, payment_mismatch, receipt_bills, receipt_no, ApplyPayment, PaymentApplied};
use super::StoreError;
use crate::domain::late_fee::{OpenItem, Share};
use crate::domain::period::cst_date;
use crate::domain::Fen;
use crate::ledger::JournalEntry;

/// The journal kind a payment posts (as the one-by-one apply does).
const KIND: &str = "payment.apply";

/// An order as locked: `(id, order_no, account_id, status, amount_fen, channel, merchant_id)`.
type OrderRow = (i64, String, i64, String, i64, String, String);

/// Which payments of the group are plain (see the module docs): `Some(order)` for those.
fn plain<'a>(
    ps: &[ApplyPayment<'_>],
    orders: &'a HashMap<String, OrderRow>,
    seen: &HashSet<(String, String, String)>,
) -> Vec<Option<&'a OrderRow>> {
    let mut order_uses: HashMap<&str, usize> = HashMap::new();
    let mut event_uses: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut account_uses: HashMap<i64, usize> = HashMap::new();
    for p in ps {
        *order_uses.entry(p.order_no).or_default() += 1;
        if let Some(ev) = &p.event {
            *event_uses.entry((p.channel, p.merchant_id, ev.event_id)).or_default() += 1;
        }
        if let Some(o) = orders.get(p.order_no) {
            *account_uses.entry(o.2).or_default() += 1;
        }
    }
    ps.iter()
        .map(|p| {
            let o = orders.get(p.order_no)?;
            let (_, _, account_id, status, amount_fen, channel, merchant_id) = o;
            let event_ok = match &p.event {
                None => true,
                Some(ev) => {
                    event_uses[&(p.channel, p.merchant_id, ev.event_id)] == 1
                        && !seen.contains(&(
                            p.channel.to_string(),
                            p.merchant_id.to_string(),
                            ev.event_id.to_string(),
                        ))
                }
            };
            let ok = event_ok
                && p.amount_fen > 0
                && order_uses[p.order_no] == 1
                && account_uses[account_id] == 1
                && status != "paid"
                && status != "closed"
                && payment_mismatch(p, channel, merchant_id, *amount_fen).is_none();
            ok.then_some(o)
        })
        .collect()
}

/// One function per backend from one body (both take the batch's own transaction).
macro_rules! set_wise {
    ($name:ident, $db:ty) => {
        /// Apply the plain payments of `ps` set-wise in `tx`; `Some` answer for each applied
        /// here, `None` for each left to the one-by-one apply. On `Err` the caller rolls back.
        pub(crate) async fn $name(
            tx: &mut sqlx::Transaction<'_, $db>,
            ps: &[ApplyPayment<'_>],
        ) -> Result<Vec<Option<PaymentApplied>>, StoreError> {
            let what = "applying a group of payments";
            if ps.is_empty() {
                return Ok(Vec::new());
            }
            // 1. Lock every order of the group (copies of one callback then wait here, as in the
            //    one-by-one apply) and read what the decision needs.
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "UPDATE payment_orders SET query_attempts = query_attempts WHERE order_no IN (",
            );
            let mut sep = qb.separated(", ");
            let mut distinct: HashSet<&str> = HashSet::new();
            for p in ps {
                if distinct.insert(p.order_no) {
                    sep.push_bind(p.order_no);
                }
            }
            qb.push(") RETURNING id, order_no, account_id, status, amount_fen, channel, merchant_id");
            let rows: Vec<OrderRow> = qb
                .build_query_as()
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| StoreError::db("locking the orders of a group of payments", e))?;
            let orders: HashMap<String, OrderRow> = rows.into_iter().map(|o| (o.1.clone(), o)).collect();
            // 2. Which of their events are stored already: the keys as a `VALUES` list joined to
            //    the unique index, one probe each. (An `OR` of the keys, or `event_id IN (…)`
            //    per merchant, let PostgreSQL's planner scan the merchant's every event while the
            //    table's statistics were young.)
            let mut seen: HashSet<(String, String, String)> = HashSet::new();
            let keys: Vec<(&str, &str, &str)> = ps
                .iter()
                .filter_map(|p| p.event.as_ref().map(|ev| (p.channel, p.merchant_id, ev.event_id)))
                .collect();
            if !keys.is_empty() {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT e.channel, e.merchant_id, e.event_id FROM (");
                qb.push_values(&keys, |mut b, (channel, merchant_id, event_id)| {
                    b.push_bind(*channel).push_bind(*merchant_id).push_bind(*event_id);
                });
                qb.push(
                    ") AS v JOIN payment_events e \
                     ON e.channel = v.column1 AND e.merchant_id = v.column2 AND e.event_id = v.column3",
                );
                let rows: Vec<(String, String, String)> = qb
                    .build_query_as()
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(|e| StoreError::db("looking up the events of a group of payments", e))?;
                seen.extend(rows);
            }
            let chosen = plain(ps, &orders, &seen);
            let mut out: Vec<Option<PaymentApplied>> = vec![None; ps.len()];
            let fast: Vec<(usize, &OrderRow)> =
                chosen.iter().enumerate().filter_map(|(i, o)| o.map(|o| (i, o))).collect();
            if fast.is_empty() {
                return Ok(out);
            }
            // 3. Lock their accounts with the settings allocation needs.
            let mut accounts: Vec<i64> = fast.iter().map(|(_, o)| o.2).collect();
            accounts.sort_unstable();
            let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE accounts SET status = status WHERE id IN (");
            let mut sep = qb.separated(", ");
            for a in &accounts {
                sep.push_bind(*a);
            }
            qb.push(
                ") RETURNING id, \
                 (SELECT s.allocation_order FROM billing_settings s WHERE s.community_id = accounts.community_id), \
                 (SELECT s.penalty_first FROM billing_settings s WHERE s.community_id = accounts.community_id)",
            );
            let rows: Vec<(i64, Option<String>, Option<bool>)> = qb
                .build_query_as()
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| StoreError::db(what, e))?;
            let settings: HashMap<i64, BillingSettings> = rows
                .into_iter()
                .map(|(id, order, penalty_first)| (id, allocation_settings(order, penalty_first)))
                .collect();
            // 4. The orders' bills are theirs no more.
            let mut qb = sqlx::QueryBuilder::<$db>::new("DELETE FROM payment_bill_locks WHERE order_id IN (");
            let mut sep = qb.separated(", ");
            for (_, o) in &fast {
                sep.push_bind(o.0);
            }
            qb.push(")");
            qb.build()
                .execute(&mut **tx)
                .await
                .map_err(|e| StoreError::db("releasing paid orders' bills", e))?;
            // 5. The accounts' issued bills with their amounts.
            let mut qb = sqlx::QueryBuilder::<$db>::new(OPEN_SQL_OF_ACCOUNTS);
            let mut sep = qb.separated(", ");
            for a in &accounts {
                sep.push_bind(*a);
            }
            qb.push(")");
            let rows: Vec<OpenRow> = qb
                .build_query_as()
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| StoreError::db("reading the bills of a group of payments", e))?;
            let mut open: HashMap<i64, Vec<OpenItem>> = HashMap::new();
            for r in rows {
                let account = r.account_id();
                let b = r.into_bill();
                if b.outstanding_fen > 0 {
                    open.entry(account).or_default().push(b.to_item());
                }
            }
            // 6. Allocate each (in Rust, by the one rule) and build its entry.
            let mut planned: Vec<(usize, i64, PaymentAllocation)> = Vec::with_capacity(fast.len());
            let mut entries: Vec<JournalEntry> = Vec::with_capacity(fast.len());
            let mut posted: Vec<DateTime<Utc>> = Vec::with_capacity(fast.len());
            for (i, o) in &fast {
                let p = &ps[*i];
                let account_id = o.2;
                let s = settings
                    .get(&account_id)
                    .ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))?;
                let bills = open.get(&account_id).map(Vec::as_slice).unwrap_or(&[]);
                let clearing = clearing_account(p.channel, p.merchant_id)?;
                let (allocation, entry) = plan_payment(
                    KIND,
                    account_id,
                    Fen::new(p.amount_fen),
                    p.order_no,
                    &clearing,
                    s,
                    bills,
                    p.paid_at,
                )?;
                planned.push((*i, o.0, allocation));
                entries.push(entry);
                posted.push(p.paid_at);
            }
            let latest = ps.iter().map(|p| p.now).max().unwrap_or_else(Utc::now);
            // 7. Every bill's share, one insert.
            let shares: Vec<(usize, &Share, i64)> = planned
                .iter()
                .flat_map(|(i, _, a)| a.bills.iter().map(move |s| (*i, s, a.account_id)))
                .collect();
            if !shares.is_empty() {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO bill_allocations (bill_id, account_id, amount_fen, principal_fen, late_fee_fen, source, \
                     source_ref, allocated_at, accounting_date) ",
                );
                qb.push_values(&shares, |mut b, (i, s, account_id)| {
                    let p = &ps[*i];
                    b.push_bind(s.bill_id)
                        .push_bind(*account_id)
                        .push_bind(s.total().get())
                        .push_bind(s.principal.get())
                        .push_bind(s.late_fee.get())
                        .push_bind("payment")
                        .push_bind(p.order_no)
                        .push_bind(p.paid_at)
                        .push_bind(cst_date(p.paid_at));
                });
                qb.build()
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| StoreError::db("recording allocations", e))?;
            }
            // 8. The journal: accounts, lines, entries (checked by the database as always).
            post_entries_batch_in_tx!((*tx), &entries, latest, posted = &posted);
            // 9. The orders move to paid.
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "UPDATE payment_orders SET status = 'paid', gateway_txn_id = v.column2, paid_amount_fen = v.column3, \
                 paid_at = v.column4, to_credit_fen = v.column5, next_query_at = NULL, updated_at = v.column6 FROM (",
            );
            qb.push_values(&planned, |mut b, (i, order_id, a)| {
                let p = &ps[*i];
                b.push_bind(*order_id)
                    .push_bind(p.gateway_txn_id)
                    .push_bind(p.amount_fen)
                    .push_bind(p.paid_at)
                    .push_bind(a.to_credit_fen)
                    .push_bind(p.now);
            });
            qb.push(") AS v WHERE payment_orders.id = v.column1");
            let done = qb
                .build()
                .execute(&mut **tx)
                .await
                .map_err(|e| StoreError::db("marking orders paid", e))?
                .rows_affected();
            if done != planned.len() as u64 {
                return Err(StoreError::Refused {
                    what,
                    reason: format!("{done} of {} orders were marked paid", planned.len()),
                });
            }
            // 10. The receipts.
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO payment_receipts (receipt_no, order_id, account_id, amount_fen, channel, gateway_txn_id, bills, \
                 to_credit_fen, paid_at, issued_at) ",
            );
            qb.push_values(&planned, |mut b, (i, order_id, a)| {
                let p = &ps[*i];
                b.push_bind(receipt_no(p.order_no))
                    .push_bind(*order_id)
                    .push_bind(a.account_id)
                    .push_bind(p.amount_fen)
                    .push_bind(p.channel)
                    .push_bind(p.gateway_txn_id)
                    .push_bind(receipt_bills(&a.bills))
                    .push_bind(a.to_credit_fen)
                    .push_bind(p.paid_at)
                    .push_bind(p.now);
            });
            qb.build()
                .execute(&mut **tx)
                .await
                .map_err(|e| StoreError::db("writing receipts", e))?;
            // 11. The raw events, once each: one found stored after all sends the batch back.
            let events: Vec<usize> = planned.iter().map(|(i, _, _)| *i).filter(|i| ps[*i].event.is_some()).collect();
            if !events.is_empty() {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO payment_events (channel, merchant_id, event_id, kind, order_no, refund_no, headers, body, \
                     fields, outcome, received_at) ",
                );
                qb.push_values(&events, |mut b, i| {
                    let p = &ps[*i];
                    let ev = p.event.as_ref().expect("filtered to payments with an event");
                    b.push_bind(p.channel)
                        .push_bind(p.merchant_id)
                        .push_bind(ev.event_id)
                        .push_bind(ev.kind)
                        .push_bind(p.order_no)
                        .push_bind(None::<&str>)
                        .push_bind(ev.headers)
                        .push_bind(ev.body)
                        .push_bind(ev.fields)
                        .push_bind("applied")
                        .push_bind(p.now);
                });
                qb.push(" ON CONFLICT (channel, merchant_id, event_id) DO NOTHING");
                let stored = qb
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| StoreError::db("storing gateway events", e))?
                    .rows_affected();
                if stored != events.len() as u64 {
                    return Err(StoreError::Refused {
                        what,
                        reason: format!("{} of {} events were stored before", events.len() as u64 - stored, events.len()),
                    });
                }
            }
            for (i, _, allocation) in planned {
                out[i] = Some(PaymentApplied::Applied {
                    allocation,
                    after_close: false,
                });
            }
            Ok(out)
        }
    };
}

set_wise!(apply_payments_sqlite, sqlx::Sqlite);
set_wise!(apply_payments_postgres, sqlx::Postgres);
