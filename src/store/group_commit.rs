//! Group commit for the callback writes: [`Store::apply_payment`], [`Store::apply_refund`] and
//! [`Store::record_payment_event`] hand their work to a committer task instead of opening a
//! transaction each, so one commit (one fsync) serves every callback that arrived meanwhile.
//!
//! A committer takes whatever writes are waiting (at most [`MAX_BATCH`]; when only one is
//! waiting it goes alone, there is no artificial wait), opens one transaction (`BEGIN IMMEDIATE`
//! on SQLite) and runs the writes in it, in arrival order:
//!
//! - first straight in the transaction, without savepoints (writes nearly always succeed; a
//!   savepoint per write cost two statements each, and a subtransaction on PostgreSQL); a batch
//!   of payments only has its plain ones applied set-wise first, each step one statement for all
//!   of them ([`super::payment_batch`]), and the rest one by one after them;
//! - if a write fails, that attempt is rolled back whole and the batch runs again, each write
//!   in its own savepoint: one that succeeds is `RELEASE`d, one that fails is `ROLLBACK TO` its
//!   savepoint, so it leaves nothing behind (on PostgreSQL the rollback also clears the aborted
//!   state an error puts a transaction in) and that write alone is answered with its error;
//! - the writes of one batch run one after another on one connection, so a later write sees the
//!   earlier ones: a second copy of a callback in the same batch finds the first one's event row
//!   and is a duplicate, exactly as if it had come a transaction later;
//! - the transaction commits once; only then is every caller answered (and so only then does a
//!   gateway hear `success`). If the commit — or a savepoint statement, or the `BEGIN` — fails,
//!   every write of the batch is answered [`StoreError::NotCommitted`]: nothing of the batch is
//!   half-written, and the gateway delivers each callback again;
//! - a batch of one write is not run again: its error rolls the transaction back, as a
//!   transaction of its own always did.
//!
//! Lanes: SQLite has one writer connection, so one committer. On PostgreSQL a single committer
//! would run every statement of every callback one after another on one connection (round trips,
//! not the disk, are then the limit), while a transaction per callback pays a commit each; a few
//! committers each batching ([`POSTGRES_LANES`], measured with `benches/payments.rs`) get both
//! the shared commit and some parallelism. A write goes to the lane its order number hashes to,
//! so every write about one order (copies of a callback, its refunds) meets in one committer
//! and never waits for another lane's lock on that order. Two lanes can still wait on each
//! other's account rows (two live orders of one account paid at the same moment); PostgreSQL
//! breaks such a deadlock by failing one statement: that attempt is rolled back and run again
//! one by one in savepoints, where a write that still fails alone gets the error and is
//! delivered again. (The set-wise step locks a batch's accounts with one statement.)
//!
//! Committers are spawned on first use, on the runtime of the caller, and end when the last
//! clone of the [`Store`] is dropped; one that stopped (its runtime shut down) is replaced by
//! the next write.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::payment_batch::{apply_payments_postgres, apply_payments_sqlite};
use super::payments::{
    apply_payment_postgres, apply_payment_sqlite, apply_refund_postgres, apply_refund_sqlite, record_event_postgres,
    record_event_sqlite, ApplyPayment, ApplyRefund, EventRecord, PaymentApplied, RefundApplied,
};
use super::{Backend, BackendKind, StoreError};

/// Most writes gathered into one transaction. PostgreSQL keeps the ids of up to 64
/// subtransactions (savepoints that wrote) per transaction in shared memory; past that every
/// other session's visibility checks take a slow path, so a batch stays within it.
pub const MAX_BATCH: usize = 64;

/// Committers on PostgreSQL (each holds one pooled connection while it runs a batch). Why two:
/// measured with `benches/payments.rs` (`BENCH_PG_LANES`, 3,000 callbacks, 32 at a time, quiet
/// 2-core machine, 2026-12-03, with the set-wise apply and sqlx 0.9.1's `TCP_NODELAY`), raw
/// apply limit / end to end: 1 lane 1,199 / 1,085 per second (one connection's round trips in
/// series bound it), **2 lanes 1,745–1,767 / 1,508–1,554**, 4 lanes 1,645 / 1,425, 8 lanes
/// 1,121 / 994 (batches of 2.5, less set-wise). Before the set-wise apply, with a statement per
/// step of every payment, four were best.
pub const POSTGRES_LANES: usize = 2;

/// Writes waiting for a committer, per lane, before callers wait to hand theirs over.
const QUEUE: usize = 1024;

/// What the committers have done since the store was opened (for the bench and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions run (committed or not).
    pub batches: u64,
    /// Writes those transactions carried.
    pub writes: u64,
    /// The largest batch.
    pub largest_batch: u64,
    /// Batches whose transaction did not commit (each of their writes answered with the error).
    pub failed_batches: u64,
    /// Batches run a second time, each write in a savepoint, because one write failed.
    pub replayed_batches: u64,
    /// Payments applied set-wise, with their group (`super::payment_batch`), in batches that
    /// committed.
    pub set_wise_writes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
    largest: AtomicU64,
    failed: AtomicU64,
    replayed: AtomicU64,
    set_wise: AtomicU64,
}

/// The committers of one [`Store`] (shared by its clones).
pub(crate) struct GroupCommit {
    lanes: Vec<Mutex<Option<mpsc::Sender<Job>>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("lanes", &self.lanes.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl GroupCommit {
    pub(crate) fn new(kind: BackendKind, lanes: Option<usize>) -> GroupCommit {
        let n = match kind {
            // One writer connection: more committers would only queue for it.
            BackendKind::Sqlite => 1,
            BackendKind::Postgres => lanes.unwrap_or(POSTGRES_LANES).max(1),
        };
        GroupCommit {
            lanes: (0..n).map(|_| Mutex::new(None)).collect(),
            counters: Arc::new(Counters::default()),
        }
    }

    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            largest_batch: self.counters.largest.load(Ordering::Relaxed),
            failed_batches: self.counters.failed.load(Ordering::Relaxed),
            replayed_batches: self.counters.replayed.load(Ordering::Relaxed),
            set_wise_writes: self.counters.set_wise.load(Ordering::Relaxed),
        }
    }

    /// Hand a write to the committer of `key`'s lane and wait for its answer, which comes only
    /// after the transaction it ran in committed (or with the error that stopped it).
    pub(crate) async fn submit<T>(
        &self,
        backend: &Backend,
        key: &str,
        what: &'static str,
        job: impl FnOnce(Pending<T>) -> Job,
    ) -> Result<T, StoreError> {
        let sender = self.sender(backend, key);
        let (reply, answer) = oneshot::channel();
        sender
            .send(job(Pending { reply, done: None }))
            .await
            .map_err(|_| StoreError::NotCommitted {
                what,
                reason: "the committer had stopped; nothing was written".into(),
            })?;
        answer.await.map_err(|_| StoreError::NotCommitted {
            what,
            reason: "the committer stopped before answering (the process is shutting down); \
                     a redelivery will find out whether it was written"
                .into(),
        })?
    }

    fn sender(&self, backend: &Backend, key: &str) -> mpsc::Sender<Job> {
        let lane = if self.lanes.len() == 1 {
            0
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() % self.lanes.len() as u64) as usize
        };
        let mut slot = self.lanes[lane].lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(s) if !s.is_closed() => s.clone(),
            _ => {
                let (s, r) = mpsc::channel(QUEUE);
                tokio::spawn(committer(backend.clone(), r, self.counters.clone()));
                *slot = Some(s.clone());
                s
            }
        }
    }
}

/// A caller waiting for its write: the answer is kept here until the batch has committed.
pub(crate) struct Pending<T> {
    reply: oneshot::Sender<Result<T, StoreError>>,
    done: Option<Result<T, StoreError>>,
}

impl<T> Pending<T> {
    fn keep(&mut self, r: Result<T, StoreError>) -> bool {
        let ok = r.is_ok();
        self.done = Some(r);
        ok
    }

    fn answer(self) {
        if let Some(r) = self.done {
            // A caller that went away (its request was dropped) needs no answer.
            let _ = self.reply.send(r);
        }
    }

    fn fail(self, what: &'static str, reason: &str) {
        let _ = self.reply.send(Err(StoreError::NotCommitted {
            what,
            reason: format!("the transaction it was gathered into did not commit: {reason}"),
        }));
    }
}

/// A gateway event to store, owned (it crosses to the committer task).
#[derive(Debug, Clone)]
pub(crate) struct OwnedEvent {
    event_id: String,
    kind: String,
    headers: String,
    body: Vec<u8>,
    fields: String,
}

impl OwnedEvent {
    fn of(ev: &EventRecord<'_>) -> OwnedEvent {
        OwnedEvent {
            event_id: ev.event_id.to_string(),
            kind: ev.kind.to_string(),
            headers: ev.headers.to_string(),
            body: ev.body.to_vec(),
            fields: ev.fields.to_string(),
        }
    }

    fn record(&self) -> EventRecord<'_> {
        EventRecord {
            event_id: &self.event_id,
            kind: &self.kind,
            headers: &self.headers,
            body: &self.body,
            fields: &self.fields,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PaymentWrite {
    channel: String,
    merchant_id: String,
    reported_merchant_id: String,
    order_no: String,
    gateway_txn_id: String,
    amount_fen: i64,
    paid_at: DateTime<Utc>,
    event: Option<OwnedEvent>,
    now: DateTime<Utc>,
}

impl PaymentWrite {
    pub(crate) fn of(p: &ApplyPayment<'_>) -> PaymentWrite {
        PaymentWrite {
            channel: p.channel.to_string(),
            merchant_id: p.merchant_id.to_string(),
            reported_merchant_id: p.reported_merchant_id.to_string(),
            order_no: p.order_no.to_string(),
            gateway_txn_id: p.gateway_txn_id.to_string(),
            amount_fen: p.amount_fen,
            paid_at: p.paid_at,
            event: p.event.as_ref().map(OwnedEvent::of),
            now: p.now,
        }
    }

    fn apply(&self) -> ApplyPayment<'_> {
        ApplyPayment {
            channel: &self.channel,
            merchant_id: &self.merchant_id,
            reported_merchant_id: &self.reported_merchant_id,
            order_no: &self.order_no,
            gateway_txn_id: &self.gateway_txn_id,
            amount_fen: self.amount_fen,
            paid_at: self.paid_at,
            event: self.event.as_ref().map(OwnedEvent::record),
            now: self.now,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RefundWrite {
    channel: String,
    merchant_id: String,
    order_no: String,
    refund_no: String,
    amount_fen: i64,
    gateway_refund_id: Option<String>,
    refunded_at: DateTime<Utc>,
    event: Option<OwnedEvent>,
    now: DateTime<Utc>,
}

impl RefundWrite {
    pub(crate) fn of(r: &ApplyRefund<'_>) -> RefundWrite {
        RefundWrite {
            channel: r.channel.to_string(),
            merchant_id: r.merchant_id.to_string(),
            order_no: r.order_no.to_string(),
            refund_no: r.refund_no.to_string(),
            amount_fen: r.amount_fen,
            gateway_refund_id: r.gateway_refund_id.map(str::to_string),
            refunded_at: r.refunded_at,
            event: r.event.as_ref().map(OwnedEvent::of),
            now: r.now,
        }
    }

    fn apply(&self) -> ApplyRefund<'_> {
        ApplyRefund {
            channel: &self.channel,
            merchant_id: &self.merchant_id,
            order_no: &self.order_no,
            refund_no: &self.refund_no,
            amount_fen: self.amount_fen,
            gateway_refund_id: self.gateway_refund_id.as_deref(),
            refunded_at: self.refunded_at,
            event: self.event.as_ref().map(OwnedEvent::record),
            now: self.now,
        }
    }
}

/// [`Store::record_payment_event`]'s arguments, owned.
#[derive(Debug, Clone)]
pub(crate) struct EventWrite {
    pub(crate) channel: String,
    pub(crate) merchant_id: String,
    pub(crate) order_no: String,
    pub(crate) refund_no: Option<String>,
    pub(crate) event: OwnedEvent,
    pub(crate) outcome: String,
    pub(crate) now: DateTime<Utc>,
}

impl EventWrite {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn of(
        channel: &str,
        merchant_id: &str,
        order_no: &str,
        refund_no: Option<&str>,
        ev: &EventRecord<'_>,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> EventWrite {
        EventWrite {
            channel: channel.to_string(),
            merchant_id: merchant_id.to_string(),
            order_no: order_no.to_string(),
            refund_no: refund_no.map(str::to_string),
            event: OwnedEvent::of(ev),
            outcome: outcome.to_string(),
            now,
        }
    }

    pub(crate) fn record(&self) -> EventRecord<'_> {
        self.event.record()
    }
}

/// One write and its waiting caller.
pub(crate) enum Job {
    Payment(PaymentWrite, Pending<PaymentApplied>),
    Refund(RefundWrite, Pending<RefundApplied>),
    Event(EventWrite, Pending<bool>),
}

impl Job {
    fn what(&self) -> &'static str {
        match self {
            Job::Payment(..) => "applying a payment",
            Job::Refund(..) => "applying a refund",
            Job::Event(..) => "storing a gateway event",
        }
    }

    fn answer(self) {
        match self {
            Job::Payment(_, p) => p.answer(),
            Job::Refund(_, p) => p.answer(),
            Job::Event(_, p) => p.answer(),
        }
    }

    fn fail(self, reason: &str) {
        let what = self.what();
        match self {
            Job::Payment(_, p) => p.fail(what, reason),
            Job::Refund(_, p) => p.fail(what, reason),
            Job::Event(_, p) => p.fail(what, reason),
        }
    }
}

/// Run one job on `$conn` with this backend's functions; keeps its answer, says whether it
/// succeeded.
macro_rules! run_job {
    ($conn:expr, $job:expr, $payment:ident, $refund:ident, $event:ident) => {
        match $job {
            Job::Payment(w, p) => {
                let r = $payment($conn, &w.apply()).await;
                p.keep(r)
            }
            Job::Refund(w, p) => {
                let r = $refund($conn, &w.apply()).await;
                p.keep(r)
            }
            Job::Event(w, p) => {
                let r = $event($conn, w).await;
                p.keep(r)
            }
        }
    };
}

/// Run `$jobs` in one transaction begun by `$begin` and commit once. First every write runs
/// straight in the transaction: they nearly always succeed, and a savepoint per write would cost
/// two more statements each (and a subtransaction on PostgreSQL). If one fails, that attempt is
/// rolled back whole — the answers it kept are overwritten — and the batch runs again, each write
/// in its own savepoint, so the failing one alone is answered with its error. A lone job needs no
/// second attempt: its error rolls its transaction back, as a transaction of its own always did.
/// `Err` when the batch as a whole did not commit.
macro_rules! run_batch {
    ($begin:expr, $jobs:expr, $counters:expr, $set_wise:ident, $payment:ident, $refund:ident, $event:ident) => {{
        let jobs: &mut [Job] = $jobs;
        let what = "committing a group of payment writes";
        let mut tx = $begin.await.map_err(|e| StoreError::db(what, e))?;
        let mut all_ok = true;
        // A group of payments: the plain ones set-wise, a statement per step for all of them.
        let mut done = vec![false; jobs.len()];
        if jobs.len() > 1 && jobs.iter().all(|j| matches!(j, Job::Payment(..))) {
            let ps: Vec<ApplyPayment<'_>> = jobs
                .iter()
                .filter_map(|j| match j {
                    Job::Payment(w, _) => Some(w.apply()),
                    _ => None,
                })
                .collect();
            let answers = $set_wise(&mut tx, &ps).await;
            drop(ps);
            match answers {
                Ok(answers) => {
                    for ((job, answer), done) in jobs.iter_mut().zip(answers).zip(done.iter_mut()) {
                        if let (Job::Payment(_, p), Some(a)) = (job, answer) {
                            p.keep(Ok(a));
                            *done = true;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(writes = jobs.len(), error = %e, "a group of payments did not apply set-wise; running it one by one");
                    all_ok = false;
                }
            }
        }
        if all_ok {
            for (job, _) in jobs.iter_mut().zip(&done).filter(|(_, d)| !**d) {
                if !run_job!(&mut *tx, job, $payment, $refund, $event) {
                    all_ok = false;
                    break;
                }
            }
        }
        if all_ok {
            tx.commit().await.map_err(|e| StoreError::db(what, e))?;
            let n = done.iter().filter(|d| **d).count() as u64;
            $counters.set_wise.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        }
        let _ = tx.rollback().await;
        if jobs.len() == 1 {
            return Ok(());
        }
        $counters.replayed.fetch_add(1, Ordering::Relaxed);
        let mut tx = $begin.await.map_err(|e| StoreError::db(what, e))?;
        for job in jobs.iter_mut() {
            let mut sp = sqlx::Connection::begin(&mut *tx)
                .await
                .map_err(|e| StoreError::db("opening a savepoint for one write of a group", e))?;
            if run_job!(&mut *sp, job, $payment, $refund, $event) {
                sp.commit()
                    .await
                    .map_err(|e| StoreError::db("releasing the savepoint of one write of a group", e))?;
            } else {
                sp.rollback()
                    .await
                    .map_err(|e| StoreError::db("rolling back one failed write of a group", e))?;
            }
        }
        tx.commit().await.map_err(|e| StoreError::db(what, e))?;
        Ok(())
    }};
}

async fn run_sqlite(writer: &sqlx::SqlitePool, jobs: &mut [Job], counters: &Counters) -> Result<(), StoreError> {
    run_batch!(
        writer.begin_with("BEGIN IMMEDIATE"),
        jobs,
        counters,
        apply_payments_sqlite,
        apply_payment_sqlite,
        apply_refund_sqlite,
        record_event_sqlite
    )
}

async fn run_postgres(pg: &sqlx::PgPool, jobs: &mut [Job], counters: &Counters) -> Result<(), StoreError> {
    run_batch!(
        pg.begin(),
        jobs,
        counters,
        apply_payments_postgres,
        apply_payment_postgres,
        apply_refund_postgres,
        record_event_postgres
    )
}

/// One lane's committer: batch, run, answer, until every sender is gone.
async fn committer(backend: Backend, mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let n = jobs.len() as u64;
        let result = match &backend {
            Backend::Sqlite { writer, .. } => run_sqlite(writer, &mut jobs, &counters).await,
            Backend::Postgres(pg) => run_postgres(pg, &mut jobs, &counters).await,
        };
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.writes.fetch_add(n, Ordering::Relaxed);
        counters.largest.fetch_max(n, Ordering::Relaxed);
        match result {
            Ok(()) => jobs.drain(..).for_each(Job::answer),
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(writes = n, error = %e, "a group of callback writes did not commit; each is answered with the error and will be delivered again");
                let reason = e.to_string();
                jobs.drain(..).for_each(|j| j.fail(&reason));
            }
        }
    }
}
