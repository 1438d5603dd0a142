//! The pure part of a run: one day's file rows against one day's ledger entries, with no I/O.
//!
//! [`match_day`] pairs rows and entries on (kind, our order or refund number) and yields the
//! matched totals, the amount mismatches, the duplicates, the fee mismatches, and what is left on
//! each side (rows the day's ledger lacks, entries the file lacks). What is left is classified by
//! the engine ([`super::Reconciler`]), which can look further (other days, the gateway).
//!
//! Determinism: rows are taken in file order, the first row of a (kind, reference) is the one
//! matched, later ones are duplicates numbered 2, 3, …; entries are keyed by reference; results
//! are sorted by item key before they are stored.

use std::collections::HashMap;
use std::hash::BuildHasher;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use meterpay_gateways::settlement::{RowKind, SettlementRow};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// A discrepancy class (domain.md §6.3), plus the informational cross-day match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// 长款: the gateway has it, our ledger does not.
    Long,
    /// 短款: our ledger has it, the gateway does not (past the cross-day grace period).
    Short,
    /// 金额不符: both have it, the amounts differ.
    Amount,
    /// 状态不符: the gateway shows a refund done that our ledger does not show refunded.
    Status,
    /// 重复支付: the file lists the same payment (or refund) more than once.
    Duplicate,
    /// 手续费差异: the fee differs from the contracted rate × amount beyond the tolerance.
    Fee,
    /// 跨日待核: in our ledger near the midnight cut-off and not (yet) on the gateway: expected
    /// in the next day's file until the grace period ends, then counted as short.
    Expected,
    /// 跨日匹配: a row of this file matched an entry booked on the neighbouring day.
    CrossDay,
}

impl Class {
    pub const ALL: [Class; 8] = [
        Class::Long,
        Class::Short,
        Class::Amount,
        Class::Status,
        Class::Duplicate,
        Class::Fee,
        Class::Expected,
        Class::CrossDay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Long => "long",
            Class::Short => "short",
            Class::Amount => "amount",
            Class::Status => "status",
            Class::Duplicate => "duplicate",
            Class::Fee => "fee",
            Class::Expected => "expected",
            Class::CrossDay => "cross_day",
        }
    }

    /// The name finance reads in the report (Chinese, then English).
    pub fn label(self) -> &'static str {
        match self {
            Class::Long => "长款 (on the gateway, not in our ledger)",
            Class::Short => "短款 (in our ledger, not on the gateway)",
            Class::Amount => "金额不符 (amount mismatch)",
            Class::Status => "状态不符 (status mismatch)",
            Class::Duplicate => "重复支付 (duplicate)",
            Class::Fee => "手续费差异 (fee mismatch)",
            Class::Expected => "跨日待核 (expected across midnight)",
            Class::CrossDay => "跨日匹配 (matched across midnight)",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Payment or refund, as stored.
pub fn kind_str(k: RowKind) -> &'static str {
    match k {
        RowKind::Payment => "payment",
        RowKind::Refund => "refund",
    }
}

pub fn parse_kind(s: &str) -> Option<RowKind> {
    match s {
        "payment" => Some(RowKind::Payment),
        "refund" => Some(RowKind::Refund),
        _ => None,
    }
}

/// One gateway-clearing entry of the ledger: a confirmed payment (`payment.apply`, reference =
/// order number) or refund (`refund`, reference = refund number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerItem {
    pub kind: RowKind,
    pub reference: String,
    /// Positive: what the entry moved on the clearing account (debit for a payment, credit for
    /// a refund).
    pub amount_fen: i64,
    pub accounting_date: NaiveDate,
    pub posted_at: DateTime<Utc>,
}

/// What a run found that is not a plain match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stable within (channel, merchant, day): `class:kind:reference[:n]`.
    pub key: String,
    pub class: Class,
    /// `payment` or `refund`.
    pub kind: String,
    pub order_no: String,
    pub refund_no: Option<String>,
    pub gateway_txn_id: Option<String>,
    pub file_amount_fen: Option<i64>,
    pub ledger_amount_fen: Option<i64>,
    /// What the gateway holds beyond our ledger, in clearing terms (positive: the gateway has
    /// more). For fee items: the file's fee minus the contracted fee.
    pub difference_fen: i64,
    pub file_fee: Option<String>,
    pub expected_fee_fen: Option<i64>,
    pub file_time: Option<NaiveDateTime>,
    pub ledger_date: Option<NaiveDate>,
    pub expected_until: Option<DateTime<Utc>>,
    pub detail: String,
    /// The row as the gateway wrote it.
    pub original_line: Option<String>,
    /// The line of the file the row starts on (of the detail entry, for an Alipay zip).
    pub file_line: Option<u32>,
}

impl Item {
    pub(crate) fn key_for(class: Class, kind: RowKind, reference: &str) -> String {
        format!("{}:{}:{reference}", class.as_str(), kind_str(kind))
    }

    /// An item about a file row.
    pub(crate) fn from_row(class: Class, row: &SettlementRow, detail: String) -> Item {
        let reference = reference_of(row);
        Item {
            key: Item::key_for(class, row.kind, reference),
            class,
            kind: kind_str(row.kind).to_string(),
            order_no: row.order_no.clone(),
            refund_no: row.refund_no.clone(),
            gateway_txn_id: Some(row.gateway_txn_id.clone()),
            file_amount_fen: Some(row.amount_fen),
            ledger_amount_fen: None,
            difference_fen: signed(row.kind, row.amount_fen),
            file_fee: Some(row.fee.clone()),
            expected_fee_fen: None,
            file_time: Some(row.time),
            ledger_date: None,
            expected_until: None,
            detail,
            // Empty when the file was read lean: the run reads the line back by number.
            original_line: Some(row.original_line.clone()).filter(|l| !l.is_empty()),
            file_line: Some(row.line),
        }
    }

    /// An item about a ledger entry the file lacks.
    pub(crate) fn from_ledger(class: Class, e: &LedgerItem, detail: String) -> Item {
        let (order_no, refund_no) = match e.kind {
            RowKind::Payment => (e.reference.clone(), None),
            // The refund's order is not in the journal's reference; the item names the refund.
            RowKind::Refund => (String::new(), Some(e.reference.clone())),
        };
        Item {
            key: Item::key_for(class, e.kind, &e.reference),
            class,
            kind: kind_str(e.kind).to_string(),
            order_no,
            refund_no,
            gateway_txn_id: None,
            file_amount_fen: None,
            ledger_amount_fen: Some(e.amount_fen),
            difference_fen: -signed(e.kind, e.amount_fen),
            file_fee: None,
            expected_fee_fen: None,
            file_time: None,
            ledger_date: Some(e.accounting_date),
            expected_until: None,
            detail,
            original_line: None,
            file_line: None,
        }
    }

    /// The order or refund number the item is about.
    pub fn reference(&self) -> &str {
        match &self.refund_no {
            Some(r) if self.kind == "refund" => r,
            _ => &self.order_no,
        }
    }
}

/// What a row is matched on: the order number for payments, the refund number for refunds.
pub fn reference_of(row: &SettlementRow) -> &str {
    match row.kind {
        RowKind::Payment => &row.order_no,
        RowKind::Refund => row.refund_no.as_deref().unwrap_or(&row.order_no),
    }
}

/// Money into clearing is positive: a payment's amount, a refund's negated.
pub fn signed(kind: RowKind, amount: i64) -> i64 {
    match kind {
        RowKind::Payment => amount,
        RowKind::Refund => -amount,
    }
}

/// The contracted fee on an amount, half-up to the fen; returned (negative) on refunds.
pub fn contracted_fee(kind: RowKind, amount_fen: i64, fee_rate_ppm: u32) -> i64 {
    let fee = ((amount_fen as i128 * fee_rate_ppm as i128 + 500_000) / 1_000_000) as i64;
    signed(kind, fee)
}

/// A file's fee text (yuan, any decimals) in fen, half-up (away from zero), as it is posted.
pub fn fee_text_fen(text: &str) -> Option<i64> {
    let d: Decimal = text.trim().parse().ok()?;
    (d * Decimal::from(100))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
}

/// A count and an amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub amount_fen: i64,
}

impl Tally {
    pub fn add(&mut self, amount: i64) {
        self.count += 1;
        self.amount_fen += amount;
    }
}

/// What matching one day's rows against one day's entries gives.
#[derive(Debug, Default)]
pub struct DayMatch<'a> {
    /// Pairs with equal amounts.
    pub matched: Tally,
    /// Amount mismatches, duplicates and fee mismatches (final).
    pub items: Vec<Item>,
    /// Rows the day's ledger lacks (first occurrence of each reference).
    pub file_only: Vec<&'a SettlementRow>,
    /// Entries the file lacks, by index into the day's entries.
    pub ledger_only: Vec<usize>,
}

/// Match the rows of a file against the day's entries (see the module docs).
pub fn match_day<'a>(
    rows: &'a [SettlementRow],
    ledger: &[LedgerItem],
    fee_rate_ppm: u32,
    fee_tolerance_fen: i64,
) -> DayMatch<'a> {
    // The day's entries by (kind, reference), as positions into `ledger`: a million entries
    // index in ~10 MB this way (a map of keys took ~70 MB), and the rows' own occurrence counts
    // live beside it (`count`), so only references the ledger lacks need a map of their own.
    let hasher = std::collections::hash_map::RandomState::new();
    let hash = |kind: RowKind, reference: &str| hasher.hash_one((kind, reference));
    let mut by_ref: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(ledger.len());
    for (i, e) in ledger.iter().enumerate() {
        let h = hash(e.kind, &e.reference);
        let same = |&j: &u32| ledger[j as usize].kind == e.kind && ledger[j as usize].reference == e.reference;
        match by_ref.find_mut(h, same) {
            // A reference twice in the ledger: the later entry is the one matched (the earlier
            // is left over, as the ledger's own duplicate).
            Some(j) => *j = i as u32,
            None => {
                by_ref.insert_unique(h, i as u32, |&j| {
                    hash(ledger[j as usize].kind, &ledger[j as usize].reference)
                });
            }
        }
    }
    let find = |kind: RowKind, reference: &str| {
        by_ref
            .find(hash(kind, reference), |&j| {
                ledger[j as usize].kind == kind && ledger[j as usize].reference == reference
            })
            .map(|&j| j as usize)
    };
    // How often each entry's reference has been seen in the file; and the same for references
    // the ledger lacks.
    let mut count = vec![0u32; ledger.len()];
    let mut elsewhere: HashMap<(RowKind, &str), u32> = HashMap::new();
    let mut out = DayMatch::default();
    for row in rows {
        let reference = reference_of(row);
        let hit = find(row.kind, reference);
        let n = match hit {
            Some(i) => &mut count[i],
            None => elsewhere.entry((row.kind, reference)).or_insert(0),
        };
        *n += 1;
        let n = *n;
        if n > 1 {
            let mut item = Item::from_row(
                Class::Duplicate,
                row,
                format!("the file lists this {} a {} time", kind_str(row.kind), ordinal(n)),
            );
            item.key = format!("{}:{n}", item.key);
            out.items.push(item);
            continue;
        }
        if let Some(item) = fee_item(row, fee_rate_ppm, fee_tolerance_fen) {
            out.items.push(item);
        }
        match hit {
            Some(i) => {
                let e = &ledger[i];
                if e.amount_fen == row.amount_fen {
                    out.matched.add(signed(row.kind, row.amount_fen));
                } else {
                    out.items.push(amount_item(row, e));
                }
            }
            None => out.file_only.push(row),
        }
    }
    out.ledger_only = count
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| i)
        .collect();
    out
}

pub(crate) fn amount_item(row: &SettlementRow, e: &LedgerItem) -> Item {
    let mut item = Item::from_row(
        Class::Amount,
        row,
        format!(
            "the gateway states {} fen, our ledger {} fen (booked on {})",
            row.amount_fen, e.amount_fen, e.accounting_date
        ),
    );
    item.ledger_amount_fen = Some(e.amount_fen);
    item.ledger_date = Some(e.accounting_date);
    item.difference_fen = signed(row.kind, row.amount_fen) - signed(e.kind, e.amount_fen);
    item
}

fn fee_item(row: &SettlementRow, fee_rate_ppm: u32, tolerance: i64) -> Option<Item> {
    let expected = contracted_fee(row.kind, row.amount_fen, fee_rate_ppm);
    let charged = row.fee_fen.or_else(|| fee_text_fen(&row.fee))?;
    if (charged - expected).abs() <= tolerance {
        return None;
    }
    let mut item = Item::from_row(
        Class::Fee,
        row,
        format!(
            "fee {} yuan charged; the contracted rate of {} ppm gives {} fen",
            row.fee, fee_rate_ppm, expected
        ),
    );
    item.expected_fee_fen = Some(expected);
    item.difference_fen = charged - expected;
    Some(item)
}

fn ordinal(n: u32) -> String {
    match n {
        2 => "second".into(),
        3 => "third".into(),
        n => format!("{n}th"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind, order: &str, refund: Option<&str>, amount: i64, fee: &str) -> SettlementRow {
        SettlementRow {
            order_no: order.into(),
            refund_no: refund.map(str::to_string),
            gateway_txn_id: format!("T{order}"),
            kind,
            amount_fen: amount,
            fee: fee.into(),
            fee_fen: fee_text_fen(fee).filter(|_| fee.split('.').nth(1).is_none_or(|d| d.len() <= 2)),
            time: NaiveDate::from_ymd_opt(2026, 12, 1)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
            line: 1,
            original_line: format!("{order},{amount}"),
        }
    }

    fn entry(kind: RowKind, reference: &str, amount: i64) -> LedgerItem {
        LedgerItem {
            kind,
            reference: reference.into(),
            amount_fen: amount,
            accounting_date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            posted_at: Utc::now(),
        }
    }

    #[test]
    fn contracted_fees_round_half_up_and_are_returned_on_refunds() {
        assert_eq!(contracted_fee(RowKind::Payment, 10_000, 6000), 60);
        assert_eq!(contracted_fee(RowKind::Payment, 250, 6000), 2);
        assert_eq!(contracted_fee(RowKind::Refund, 250, 6000), -2);
        assert_eq!(fee_text_fen("0.53280"), Some(53));
        assert_eq!(fee_text_fen("-0.06000"), Some(-6));
        assert_eq!(fee_text_fen("0.005"), Some(1));
        assert_eq!(fee_text_fen("x"), None);
    }

    #[test]
    fn every_class_the_pure_matcher_sees_is_found_once() {
        let rows = vec![
            row(RowKind::Payment, "ORDER0001", None, 10_000, "0.60"),
            row(RowKind::Payment, "ORDER0002", None, 9_000, "0.54"), // ledger says 10_000
            row(RowKind::Payment, "ORDER0003", None, 5_000, "0.30"),
            row(RowKind::Payment, "ORDER0003", None, 5_000, "0.30"), // duplicate
            row(RowKind::Payment, "ORDER0004", None, 10_000, "0.99"), // fee
            row(RowKind::Payment, "ORDER0005", None, 10_000, "0.60"), // not in the ledger
            row(RowKind::Refund, "ORDER0001", Some("REFUND001"), 1_000, "-0.06"),
        ];
        let ledger = vec![
            entry(RowKind::Payment, "ORDER0001", 10_000),
            entry(RowKind::Payment, "ORDER0002", 10_000),
            entry(RowKind::Payment, "ORDER0003", 5_000),
            entry(RowKind::Payment, "ORDER0004", 10_000),
            entry(RowKind::Payment, "ORDER0009", 7_000), // not in the file
            entry(RowKind::Refund, "REFUND001", 1_000),
        ];
        let m = match_day(&rows, &ledger, 6000, 0);
        assert_eq!(m.matched.count, 4, "0001, 0003, 0004 and the refund");
        assert_eq!(m.matched.amount_fen, 10_000 + 5_000 + 10_000 - 1_000);
        let classes: Vec<(Class, &str)> = m.items.iter().map(|i| (i.class, i.key.as_str())).collect();
        assert_eq!(
            classes,
            vec![
                (Class::Amount, "amount:payment:ORDER0002"),
                (Class::Duplicate, "duplicate:payment:ORDER0003:2"),
                (Class::Fee, "fee:payment:ORDER0004"),
            ]
        );
        assert_eq!(m.items[0].difference_fen, -1_000);
        assert_eq!(m.items[2].difference_fen, 99 - 60);
        assert_eq!(m.file_only.len(), 1);
        assert_eq!(m.file_only[0].order_no, "ORDER0005");
        assert_eq!(m.ledger_only, vec![4]);
    }
}
