//! The clock and the task queue: each job fires once across instances, each task runs once
//! across workers, a dead worker's task runs again after its lease, failures back off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use meterpay::jobs::queue::handler;
use meterpay::jobs::{CronJob, Scheduler, TaskError, Worker, WorkerOptions};
use meterpay::store::jobs::NewTask;

use crate::helpers::{postgres_url_or_skip, TestDb};

fn task(kind: &str, n: i64) -> NewTask {
    NewTask {
        kind: kind.into(),
        payload: serde_json::json!({ "n": n }),
        dedupe_key: None,
        run_at: Utc::now() - Duration::seconds(1),
        max_attempts: 3,
    }
}

fn fast() -> WorkerOptions {
    WorkerOptions {
        lease: Duration::seconds(30),
        batch: 4,
        poll_interval: std::time::Duration::from_millis(10),
        backoff_base: Duration::seconds(10),
        backoff_cap: Duration::seconds(60),
    }
}

#[tokio::test]
async fn a_task_is_claimed_run_and_completed_once() {
    let db = TestDb::new().await;
    let id = db.store.enqueue_task(&task("t", 1), Utc::now()).await.unwrap().unwrap();
    let claimed = db
        .store
        .claim_tasks("w1", Duration::seconds(30), 10, Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].attempts, 1);
    assert!(
        db.store
            .claim_tasks("w2", Duration::seconds(30), 10, Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert!(db.store.complete_task(id, "w1", Utc::now()).await.unwrap());
    assert_eq!(db.store.task(id).await.unwrap().unwrap().status, "done");
}

#[tokio::test]
async fn a_dedupe_key_enqueues_once() {
    let db = TestDb::new().await;
    let mut t = task("t", 1);
    t.dedupe_key = Some("remind:42:2026-07".into());
    assert!(db.store.enqueue_task(&t, Utc::now()).await.unwrap().is_some());
    assert!(db.store.enqueue_task(&t, Utc::now()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_task_is_not_claimed_before_it_is_due() {
    let db = TestDb::new().await;
    let mut t = task("t", 1);
    t.run_at = Utc::now() + Duration::minutes(5);
    db.store.enqueue_task(&t, Utc::now()).await.unwrap();
    assert!(db
        .store
        .claim_tasks("w", Duration::seconds(30), 10, Utc::now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.store
            .claim_tasks("w", Duration::seconds(30), 10, Utc::now() + Duration::minutes(6))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_dead_workers_task_runs_again_after_its_lease_expires() {
    let db = TestDb::new().await;
    let id = db.store.enqueue_task(&task("t", 1), Utc::now()).await.unwrap().unwrap();
    let t0 = Utc::now();
    // Worker A claims and "dies" (never completes).
    assert_eq!(
        db.store
            .claim_tasks("A", Duration::seconds(30), 10, t0)
            .await
            .unwrap()
            .len(),
        1
    );
    // Before the lease ends nobody else gets it; after, worker B does.
    assert!(db
        .store
        .claim_tasks("B", Duration::seconds(30), 10, t0 + Duration::seconds(29))
        .await
        .unwrap()
        .is_empty());
    let again = db
        .store
        .claim_tasks("B", Duration::seconds(30), 10, t0 + Duration::seconds(31))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    // A comes back to life: its completion is fenced off; B's stands.
    assert!(!db.store.complete_task(id, "A", Utc::now()).await.unwrap());
    assert!(db.store.complete_task(id, "B", Utc::now()).await.unwrap());
}

#[tokio::test]
async fn failures_back_off_then_the_task_dies_after_its_last_attempt() {
    let db = TestDb::new().await;
    let id = db
        .store
        .enqueue_task(&task("flaky", 1), Utc::now())
        .await
        .unwrap()
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let mut handlers = HashMap::new();
    handlers.insert(
        "flaky".to_string(),
        handler(move |_t| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err(TaskError::Transient("gateway timed out".into()))
            }
        }),
    );
    let worker = Worker::new(db.store.clone(), "w", handlers, fast());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let row = db.store.task(id).await.unwrap().unwrap();
    assert_eq!(row.status, "queued");
    assert!(
        row.run_at > Utc::now() + Duration::seconds(5),
        "backed off by about 10 s"
    );
    assert!(row.last_error.unwrap().contains("gateway timed out"));
    // Not due yet: nothing runs.
    assert_eq!(worker.run_once().await.unwrap(), 0);
    // Drive the remaining attempts by claiming as if time had passed.
    for attempt in 2..=3 {
        let claimed = db
            .store
            .claim_tasks("w", Duration::seconds(30), 1, Utc::now() + Duration::hours(attempt))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        db.store
            .fail_task(id, "w", "still failing", Utc::now(), false, Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(db.store.task(id).await.unwrap().unwrap().status, "dead");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // An operator lists the dead task and revives it (`meterpay tasks revive ID`): it gets a
    // fresh set of attempts and runs again.
    let dead = db.store.list_tasks(Some("dead"), 10).await.unwrap();
    assert_eq!(dead.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id]);
    assert!(db.store.list_tasks(Some("queued"), 10).await.unwrap().is_empty());
    assert_eq!(db.store.list_tasks(None, 10).await.unwrap().len(), 1);
    assert!(db.store.revive_task(id, Utc::now()).await.unwrap());
    assert!(
        !db.store.revive_task(id, Utc::now()).await.unwrap(),
        "only a dead task revives"
    );
    let revived = db.store.task(id).await.unwrap().unwrap();
    assert_eq!((revived.status.as_str(), revived.attempts), ("queued", 0));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_permanent_failure_or_an_unknown_kind_is_not_retried() {
    let db = TestDb::new().await;
    let unknown = db
        .store
        .enqueue_task(&task("nobody-handles-this", 1), Utc::now())
        .await
        .unwrap()
        .unwrap();
    let perm = db
        .store
        .enqueue_task(&task("perm", 2), Utc::now())
        .await
        .unwrap()
        .unwrap();
    let mut handlers = HashMap::new();
    handlers.insert(
        "perm".to_string(),
        handler(|_t| async { Err(TaskError::Permanent("invalid number".into())) }),
    );
    let worker = Worker::new(db.store.clone(), "w", handlers, fast());
    assert_eq!(worker.run_once().await.unwrap(), 2);
    for id in [unknown, perm] {
        let row = db.store.task(id).await.unwrap().unwrap();
        assert_eq!(row.status, "dead", "task {id}");
        assert_eq!(row.attempts, 1);
    }
}

/// Two workers on two connection pools drain one queue; every task runs exactly once.
async fn two_workers_never_run_the_same_task(db: &TestDb) {
    let other = db.another_instance().await;
    let total = 120;
    for n in 0..total {
        db.store.enqueue_task(&task("count", n), Utc::now()).await.unwrap();
    }
    let seen: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let make = |store, name: &str| {
        let seen = seen.clone();
        let mut handlers = HashMap::new();
        handlers.insert(
            "count".to_string(),
            handler(move |t| {
                let seen = seen.clone();
                async move {
                    tokio::task::yield_now().await;
                    seen.lock().unwrap().push(t.id);
                    Ok(())
                }
            }),
        );
        Worker::new(store, name, handlers, fast())
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(make(db.store.clone(), "A").run(rx.clone()));
    let b = tokio::spawn(make(other.clone(), "B").run(rx));
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= total as usize {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tx.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let mut ids = seen.lock().unwrap().clone();
    assert_eq!(ids.len(), total as usize, "every task ran");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total as usize, "no task ran twice");
    let counts = db.store.task_counts().await.unwrap();
    assert_eq!(counts, vec![("done".to_string(), total)]);
}

#[tokio::test]
async fn two_workers_on_two_pools_never_run_the_same_task() {
    let db = TestDb::new().await;
    two_workers_never_run_the_same_task(&db).await;
}

#[tokio::test]
async fn two_workers_on_postgres_skip_locked_never_run_the_same_task() {
    // Named separately so the PostgreSQL pass always includes it, and the SQLite pass says
    // loudly that it was skipped.
    if postgres_url_or_skip("two_workers_on_postgres_skip_locked_never_run_the_same_task").is_none() {
        return;
    }
    let db = TestDb::new().await;
    assert_eq!(db.kind(), meterpay::store::BackendKind::Postgres);
    two_workers_never_run_the_same_task(&db).await;
}

#[tokio::test]
async fn a_cron_slot_fired_on_two_instances_runs_once() {
    let db = TestDb::new().await;
    let other = db.another_instance().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let job = CronJob::new("reconcile.alipay", "0 30 10 * * *", move |_store, _at| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
    .unwrap();
    let slot = Utc.with_ymd_and_hms(2026, 7, 2, 2, 30, 0).unwrap();
    let (a, b) = tokio::join!(
        job.fire(&db.store, "instance-a", slot),
        job.fire(&other, "instance-b", slot)
    );
    let ran = [a.unwrap(), b.unwrap()];
    assert_eq!(
        ran.iter().filter(|r| **r).count(),
        1,
        "exactly one instance ran the slot"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The next day's slot is a new slot.
    assert!(job.fire(&other, "instance-b", slot + Duration::days(1)).await.unwrap());
    assert_eq!(db.store.job_run_count("reconcile.alipay").await.unwrap(), 2);
}

#[tokio::test]
async fn two_running_clocks_run_each_tick_once() {
    let db = TestDb::new().await;
    let other = db.another_instance().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let make = || {
        let r = runs.clone();
        CronJob::new("every.second", "* * * * * *", move |_s, _at| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .unwrap()
    };
    let a = Scheduler::start(db.store.clone(), "a".into(), vec![make()])
        .await
        .unwrap();
    let b = Scheduler::start(other.clone(), "b".into(), vec![make()]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    a.shutdown().await;
    b.shutdown().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let slots = db.store.job_run_count("every.second").await.unwrap();
    assert!(slots >= 2, "the clocks fired ({slots} slots)");
    assert_eq!(
        runs.load(Ordering::SeqCst) as i64,
        slots,
        "one run per slot although two clocks fired each"
    );
}
