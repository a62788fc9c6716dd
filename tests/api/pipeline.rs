//! The queue and worker: durability, retries with backoff, dead letters, wake-ups, pruning, and
//! the apalis 1.0 workarounds (rust-stack.md §1).

use std::process::Stdio;
use std::time::{Duration, Instant};

use chatguard::queue;
use chatguard::store::{Db, Store};

use crate::both_backends;
use crate::helpers::*;

/// Runs SQL on the test database outside the app (failure injection, inspection).
async fn exec(db: &TestDb, sql: &str) {
    let store = Store::connect(&db.url, 1).await.unwrap();
    for stmt in sql.split(";;").map(str::trim).filter(|s| !s.is_empty()) {
        let q = sqlx::AssertSqlSafe(stmt.to_owned());
        match store.db() {
            Db::Sqlite(p) => {
                sqlx::raw_sql(q).execute(p).await.unwrap();
            }
            Db::Postgres(p) => {
                sqlx::raw_sql(q).execute(p).await.unwrap();
            }
        }
    }
    store.close().await;
}

async fn scalar(db: &TestDb, sql: &'static str) -> i64 {
    let store = Store::connect(&db.url, 1).await.unwrap();
    let n = match store.db() {
        Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    };
    store.close().await;
    n
}

async fn a_stored_job_survives_a_restart_and_is_decided_after_it(db: &TestDb, _: Backend) {
    let ingest_only =
        TestApp::spawn(config(&db.url, &[("CHATGUARD_QUEUE__RUN_WORKER", "false")])).await;
    for i in 0..3 {
        let r = ingest_only
            .post_webhook(
                &message_new(&format!("m-r{i}"), "u", "kys"),
                &format!("r{i}"),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(ingest_only.services.queue.depth().await.unwrap(), 3);
    ingest_only.stop().await;
    assert_eq!(scalar(db, "select count(*) from decisions").await, 0);

    let app = TestApp::spawn(config(&db.url, &[])).await;
    wait_settled(app.store()).await;
    assert_eq!(app.store().count_decisions().await.unwrap(), 3);
    wait_queue_empty(&app).await;
    app.stop().await;
}
both_backends!(
    restart,
    a_stored_job_survives_a_restart_and_is_decided_after_it
);

fn fail_decisions_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "create trigger fail_decisions before insert on decisions begin select raise(abort, 'injected failure'); end"
        }
        Backend::Postgres => {
            "create function cg_fail() returns trigger as $$ begin raise exception 'injected failure'; end $$ language plpgsql;;
             create trigger fail_decisions before insert on decisions for each row execute function cg_fail()"
        }
    }
}

fn heal_decisions_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "drop trigger fail_decisions",
        Backend::Postgres => "drop trigger fail_decisions on decisions",
    }
}

async fn a_failing_job_backs_off_then_is_a_dead_letter_that_can_be_retried(
    db: &TestDb,
    backend: Backend,
) {
    let cfg = config(
        &db.url,
        &[
            ("CHATGUARD_QUEUE__MAX_ATTEMPTS", "3"),
            ("CHATGUARD_QUEUE__RETRY_BASE_SECS", "2"),
        ],
    );
    let app = TestApp::spawn(cfg).await;
    exec(db, fail_decisions_sql(backend)).await;

    assert_eq!(
        app.post_webhook(&message_new("m-dead", "u-dead", "kys"), "dead-1")
            .await
            .status(),
        200
    );
    let event = eventually(Duration::from_secs(40), "the event to die", || async {
        let e = app.store().get_event_by_webhook_id("dead-1").await.ok()?;
        (e.status == "dead").then_some(e)
    })
    .await;
    let times = app.store().attempt_times(event.id).await.unwrap();
    assert_eq!(times.len(), 3, "three attempts: {times:?}");
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_seconds_f64())
        .collect();
    assert!(gaps[0] >= 2.0, "first backoff ≥ 2 s: {gaps:?}");
    assert!(gaps[1] >= 4.0, "second backoff ≥ 4 s: {gaps:?}");
    let dead = app.store().list_dead_letters(false).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].last_error.contains("injected failure"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(app.store().count_decisions().await.unwrap(), 0);

    // The operator lists and re-runs it from the CLI once the cause is fixed.
    let listed = bin()
        .args(["dead-letters", "list", "--json"])
        .env("CHATGUARD_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let row: serde_json::Value =
        serde_json::from_slice(listed.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(row["webhook_id"], "dead-1");
    exec(db, heal_decisions_sql(backend)).await;
    let retried = bin()
        .args(["dead-letters", "retry"])
        .env("CHATGUARD_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    assert!(String::from_utf8_lossy(&retried.stdout).contains("1 queued"));
    let decision = eventually(Duration::from_secs(20), "the retried decision", || async {
        app.store()
            .decision_for_event(event.id)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(decision.decision, "block");
    assert!(
        app.store()
            .list_dead_letters(false)
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}
both_backends!(
    dead_letters,
    a_failing_job_backs_off_then_is_a_dead_letter_that_can_be_retried
);

async fn an_idle_worker_is_woken_by_the_insert_not_the_heartbeat(db: &TestDb, _: Backend) {
    // With a 30 s heartbeat, only the update hook / LISTEN-NOTIFY can make pick-up fast.
    let app = TestApp::spawn(config(
        &db.url,
        &[("CHATGUARD_QUEUE__HEARTBEAT_SECS", "30")],
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let sent = Instant::now();
        let id = format!("idle-{i}");
        assert_eq!(
            app.post_webhook(&message_new(&id, "u", "hello"), &id)
                .await
                .status(),
            200
        );
        eventually(Duration::from_secs(10), "pick-up", || async {
            let e = app.store().get_event_by_webhook_id(&id).await.ok()?;
            (e.status == "decided").then_some(())
        })
        .await;
        let waited = sent.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "idle pick-up took {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    app.stop().await;
}
both_backends!(
    idle_wakeup,
    an_idle_worker_is_woken_by_the_insert_not_the_heartbeat
);

async fn finished_jobs_are_pruned(db: &TestDb, backend: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    for i in 0..5 {
        let id = format!("p{i}");
        assert_eq!(
            app.post_webhook(&message_new(&id, "u", "hi"), &id)
                .await
                .status(),
            200
        );
    }
    wait_settled(app.store()).await;
    let count_sql = match backend {
        Backend::Sqlite => "select count(*) from Jobs",
        Backend::Postgres => "select count(*) from apalis.jobs",
    };
    assert!(scalar(db, count_sql).await >= 5);
    // Acks are written in batches, so wait until all five rows are finished and pruned.
    let pruned = std::sync::atomic::AtomicU64::new(0);
    eventually(Duration::from_secs(10), "finished rows pruned", || async {
        let n = app
            .services
            .queue
            .prune_finished(Duration::ZERO)
            .await
            .unwrap();
        (pruned.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n >= 5).then_some(())
    })
    .await;
    assert_eq!(scalar(db, count_sql).await, 0);
    // Nothing waiting is pruned.
    let app2_cfg = config(&db.url, &[("CHATGUARD_QUEUE__RUN_WORKER", "false")]);
    app.stop().await;
    let ingest_only = TestApp::spawn(app2_cfg).await;
    assert_eq!(
        ingest_only
            .post_webhook(&message_new("w", "u", "hi"), "waiting")
            .await
            .status(),
        200
    );
    assert_eq!(
        ingest_only
            .services
            .queue
            .prune_finished(Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(ingest_only.services.queue.depth().await.unwrap(), 1);
    ingest_only.stop().await;
}
both_backends!(prune, finished_jobs_are_pruned);

#[tokio::test]
async fn every_sqlite_connection_gets_wal_normal_sync_and_busy_timeout() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let store = Store::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    queue::migrate(&store).await.unwrap();
    let (Db::Sqlite(writer), Db::Sqlite(reader), Db::Sqlite(queue_pool)) =
        (store.db(), store.read_db(), store.queue_db())
    else {
        unreachable!()
    };
    let mut conns = vec![
        writer.acquire().await.unwrap(),
        queue_pool.acquire().await.unwrap(),
    ];
    for _ in 0..3 {
        conns.push(reader.acquire().await.unwrap());
    }
    for conn in &mut conns {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(
            (mode.as_str(), sync, busy, fk),
            ("wal", 1, 10_000, 1),
            "synchronous 1 = NORMAL"
        );
    }
}

/// apalis-sqlite's ack statement (queries/task/ack.sql in apalis-sqlite 1.0.0).
const APALIS_ACK: &str = "EXPLAIN QUERY PLAN WITH j AS (SELECT value ->> 'task_id' AS task_id, value ->> 'attempt' AS attempt,
    value ->> 'result' AS result, value ->> 'status' AS status FROM json_each(?1))
    UPDATE Jobs SET status = j.status, attempts = j.attempt, last_result = j.result, done_at = strftime('%s', 'now')
    FROM j WHERE Jobs.id = j.task_id AND Jobs.lock_by = ?2";

#[tokio::test]
async fn sqlite_acks_use_the_primary_key_not_the_lock_by_index() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let store = Store::connect(&db.url, 1).await.unwrap();
    store.migrate().await.unwrap();
    queue::migrate(&store).await.unwrap();
    // A fresh connection each time: EXPLAIN is planned with the connection's cached schema.
    let plan = || async {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(APALIS_ACK)
            .bind("[]")
            .bind("w")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let has_index: i64 = sqlx::query_scalar(
            "select count(*) from sqlite_master where type = 'index' and name = 'LIdx'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (
            rows.into_iter()
                .map(|r| r.3)
                .collect::<Vec<_>>()
                .join(" | "),
            has_index,
        )
    };
    let (fixed, n) = plan().await;
    assert!(!fixed.contains("LIdx"), "{fixed}");
    assert_eq!(n, 0);
    // The check can fail: with apalis's index back, the planner walks it.
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE INDEX LIdx ON Jobs(lock_by)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (broken, n) = plan().await;
    assert!(broken.contains("LIdx"), "{broken}");
    assert_eq!(n, 1);
    // Migrating again (every start does) removes it.
    queue::migrate(&store).await.unwrap();
    let (fixed, n) = plan().await;
    assert!(!fixed.contains("LIdx"), "{fixed}");
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_on_one_postgres_decide_each_event_exactly_once() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    // Ingest only in this process; migrating here also means the workers find the tables ready.
    let app = TestApp::spawn(config(&db.url, &[("CHATGUARD_QUEUE__RUN_WORKER", "false")])).await;
    let spawn_worker = || {
        bin()
            .arg("worker")
            .env("CHATGUARD_DATABASE_URL", &db.url)
            .env("STREAM_API_KEY", API_KEY)
            .env("STREAM_API_SECRET", SECRET)
            .env("CHATGUARD_QUEUE__HEARTBEAT_SECS", "1")
            .env("CHATGUARD_QUEUE__CONCURRENCY", "4")
            .env("CHATGUARD_QUEUE__BATCH_SIZE", "4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut workers = [spawn_worker(), spawn_worker()];
    tokio::time::sleep(Duration::from_millis(1500)).await;

    const N: usize = 200;
    let texts = [
        "hello there",
        "kys",
        "FREE robux at bit.ly/x",
        "send nudes",
        "gg",
    ];
    for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
        let sends = chunk.iter().map(|i| {
            let id = format!("w2-{i}");
            let body = message_new(&id, &format!("u{}", i % 7), texts[i % texts.len()]);
            let app = &app;
            async move { app.post_webhook(&body, &id).await.status().as_u16() }
        });
        assert!(
            futures::future::join_all(sends)
                .await
                .iter()
                .all(|s| *s == 200)
        );
    }
    eventually(Duration::from_secs(60), "all decided", || async {
        (app.store().count_decisions().await.ok()? == N as i64).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(
        scalar(&db, "select count(*) from decisions").await,
        N as i64
    );
    assert_eq!(
        scalar(&db, "select count(distinct event_id) from decisions").await,
        N as i64
    );
    assert_eq!(
        scalar(&db, "select count(*) from events where attempts = 1").await,
        N as i64,
        "no event ran twice"
    );
    assert_eq!(
        scalar(&db, "select count(distinct worker) from decisions").await,
        2,
        "both workers took jobs"
    );
    app.stop().await;
    db.cleanup().await;
}

async fn pushing_a_queued_key_again_is_a_no_op(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[("CHATGUARD_QUEUE__RUN_WORKER", "false")])).await;
    let q = &app.services.queue;
    let job = |event_id: i64, key: &str| {
        (
            queue::ScoreJob {
                event_id,
                webhook_id: key.to_owned(),
                attempt: 1,
            },
            queue::EnqueueOptions {
                idempotency_key: Some(queue::idempotency_key(key, 1)),
                delay: None,
            },
        )
    };
    q.enqueue_many(vec![job(1, "k1")]).await.unwrap();
    q.enqueue_many(vec![job(1, "k1")]).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 1);
    // A batch holding a queued key and new ones keeps the new ones (apalis-postgres alone would
    // reject the whole batch).
    q.enqueue_many(vec![job(2, "k2"), job(1, "k1"), job(3, "k3")])
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 3);
    app.stop().await;
}
both_backends!(idempotent_enqueue, pushing_a_queued_key_again_is_a_no_op);

/// A message.new in a given channel.
fn message_in(channel: &str, message_id: &str, user_id: &str, text: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&message_new(message_id, user_id, text))
        .expect("message_new is JSON");
    v["cid"] = serde_json::json!(format!("messaging:{channel}"));
    v["channel_id"] = serde_json::json!(channel);
    serde_json::to_vec(&v).expect("json")
}

async fn the_same_text_across_channels_is_counted_from_the_decision_log(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let text = "anyone want to trade a spare sword for a shield?";
    // One at a time, as a spammer's posts arrive: each is decided before the next comes.
    for (i, channel) in ["general", "lfg", "trading", "general"].iter().enumerate() {
        let id = format!("x-{i}");
        let r = app
            .post_webhook(&message_in(channel, &id, "spammer", text), &id)
            .await;
        assert_eq!(r.status(), 200);
        wait_settled(app.store()).await;
    }
    // Another user saying the same once is not affected.
    let r = app
        .post_webhook(&message_in("general", "y-0", "bystander", text), "y-0")
        .await;
    assert_eq!(r.status(), 200);
    wait_settled(app.store()).await;

    let decision = |id: &'static str| {
        let store = app.store().clone();
        async move {
            let e = store.get_event_by_webhook_id(id).await.unwrap();
            store.decision_for_event(e.id).await.unwrap().unwrap()
        }
    };
    let first = decision("x-0").await;
    assert!(
        !first.matched_rules.contains("cross-posting"),
        "{}",
        first.matched_rules
    );
    let third = decision("x-2").await;
    assert!(
        third.matched_rules.contains("repeated text"),
        "{}",
        third.matched_rules
    );
    assert!(
        third.matched_rules.contains("cross-posting"),
        "{}",
        third.matched_rules
    );
    assert!(third.spam >= 0.9 && third.decision == "block", "{third:?}");
    let bystander = decision("y-0").await;
    assert!(
        !bystander.matched_rules.contains("repeated"),
        "{}",
        bystander.matched_rules
    );
    assert!(
        bystander.spam < 0.7 && first.spam < 0.7,
        "{bystander:?} {first:?}"
    );
    app.stop().await;
}
both_backends!(
    repeats_across_channels,
    the_same_text_across_channels_is_counted_from_the_decision_log
);
