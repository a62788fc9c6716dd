//! What a decision does must match what happened: state that counts for escalation only after
//! Stream confirmed it, nothing for shadow decisions, one app per event, replays and stale events
//! never acted on, slow clients cut off, a resolution that survives a crash, metrics behind a
//! token, retention.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use chatguard::store::{DecisionRow, Store};
use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::stream_standin::{Op, Scripted, StreamStandin};

const TOXIC: &str = "kys you worthless idiot";

async fn decided(store: &Store, webhook_id: &str) -> DecisionRow {
    let id = webhook_id.to_owned();
    eventually(Duration::from_secs(20), "the decision carried out", || {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let e = store.get_event_by_webhook_id(&id).await.ok()?;
            let d = store.decision_for_event(e.id).await.ok()??;
            (d.action_status != "pending").then_some(d)
        }
    })
    .await
}

async fn app_with(stream: &StreamStandin, db: &TestDb, extra: &[(&str, &str)]) -> TestApp {
    let base = stream.base_url();
    let mut env = vec![("STREAM_BASE_URL", base.as_str())];
    env.extend_from_slice(extra);
    TestApp::spawn(config(&db.url, &env)).await
}

/// Three blocks in a row: the third is the ban of the ladder.
async fn three_strikes(app: &TestApp, user: &str, prefix: &str) -> DecisionRow {
    let mut last = None;
    for i in 0..3 {
        let wid = format!("{prefix}-{i}");
        let r = app
            .post_webhook(&message_new(&format!("{prefix}-m{i}"), user, TOXIC), &wid)
            .await;
        assert_eq!(r.status(), 200);
        last = Some(decided(app.store(), &wid).await);
    }
    last.unwrap()
}

async fn a_refused_ban_leaves_no_ban_row(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let app = app_with(&stream, db, &[]).await;
    stream.push_scripted(Op::Ban, Scripted::stream_error(403, 17, "not allowed"), 1);
    let d = three_strikes(&app, "u-refused", "rb").await;
    assert_eq!(d.decision, "ban");
    assert_eq!(d.action_status, "failed", "{d:?}");
    let (_, bans) = app
        .store()
        .strikes_and_bans(Some(API_KEY), "u-refused", 10)
        .await
        .unwrap();
    assert!(bans.is_empty(), "no ban row without Stream's ban: {bans:?}");
    let standing = app
        .store()
        .user_standing(API_KEY, "u-refused", chrono::Utc::now())
        .await
        .unwrap();
    assert!(!standing.banned_now);
    // The failure is in front of the moderators.
    let filter = chatguard::store::ReviewFilter {
        user_id: Some("u-refused".into()),
        ..Default::default()
    };
    let (items, _) = app
        .store()
        .list_review_items(&filter, 10, None)
        .await
        .unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.decision_id == d.id && i.action_status == "failed"),
        "{items:?}"
    );
    // And a ban Stream confirms is recorded.
    let d = three_strikes(&app, "u-banned", "ok").await;
    assert_eq!(
        (d.decision.as_str(), d.action_status.as_str()),
        ("ban", "done")
    );
    let (_, bans) = app
        .store()
        .strikes_and_bans(Some(API_KEY), "u-banned", 10)
        .await
        .unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].decision_id, Some(d.id));
    assert!(bans[0].until.is_some(), "the ladder's first ban is timed");
    app.stop().await;
}
both_backends!(refused_ban, a_refused_ban_leaves_no_ban_row);

async fn shadow_decisions_leave_no_strikes_bans_or_calls(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&rules_dir(), dir.path());
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replacen("shadow = false", "shadow = true", 1)).unwrap();
    let rules = dir.path().display().to_string();
    let app = app_with(&stream, db, &[("CHATGUARD_RULES", rules.as_str())]).await;
    let mut last = None;
    for i in 0..4 {
        let wid = format!("sh-{i}");
        app.post_webhook(&message_new(&format!("sh-m{i}"), "u-shadow", TOXIC), &wid)
            .await;
        last = Some(decided(app.store(), &wid).await);
    }
    let d = last.unwrap();
    assert_eq!(d.action_status, "skipped");
    assert!(d.shadow);
    let would: serde_json::Value = serde_json::from_str(d.would_do.as_deref().unwrap()).unwrap();
    assert_eq!(would["because"], "shadow", "{would}");
    let (strikes, bans) = app
        .store()
        .strikes_and_bans(Some(API_KEY), "u-shadow", 10)
        .await
        .unwrap();
    assert!(
        strikes.is_empty() && bans.is_empty(),
        "{strikes:?} {bans:?}"
    );
    assert!(stream.calls().is_empty(), "{:?}", stream.calls());
    app.stop().await;
}
both_backends!(
    shadow_leaves_nothing,
    shadow_decisions_leave_no_strikes_bans_or_calls
);

async fn two_apps_never_cross(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start_apps(&[(API_KEY, SECRET), ("app-b", "secret-b")]).await;
    let app = app_with(&stream, db, &[("CHATGUARD_STREAM_APPS", "app-b=secret-b")]).await;
    // The same user id in both apps: three blocks in A ban there; two in B stay strikes in B.
    let d = three_strikes(&app, "u-both", "a").await;
    assert_eq!(d.decision, "ban");
    assert_eq!(d.app, API_KEY);
    for i in 0..2 {
        let body = message_new(&format!("b-m{i}"), "u-both", TOXIC);
        let wid = format!("b-{i}");
        let r = app
            .post_raw(&body, &body, Some("app-b"), Some("secret-b"), Some(&wid))
            .await;
        assert_eq!(r.status(), 200);
        let d = decided(app.store(), &wid).await;
        assert_eq!((d.app.as_str(), d.decision.as_str()), ("app-b", "block"));
        assert_eq!(d.action_status, "done");
    }
    let now = chrono::Utc::now();
    let a = app
        .store()
        .user_standing(API_KEY, "u-both", now)
        .await
        .unwrap();
    let b = app
        .store()
        .user_standing("app-b", "u-both", now)
        .await
        .unwrap();
    assert!(a.banned_now && !b.banned_now, "{a:?} {b:?}");
    assert_eq!(b.active_strikes, 2);
    // Every call went out with its own app's key.
    for call in stream.calls() {
        let key = call.query_param("api_key").unwrap_or_default();
        let want = if call.path.contains("/b-m") {
            "app-b"
        } else {
            API_KEY
        };
        assert_eq!(key, want, "{} {}", call.method, call.path);
    }
    assert_eq!(stream.calls_to("/messages/b-m").len(), 2);
    // The review API filters by app.
    app.stop().await;
}
both_backends!(apps, two_apps_never_cross);

async fn a_replay_under_a_new_webhook_id_is_not_acted_on_twice(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let app = app_with(&stream, db, &[]).await;
    let body = message_new("rp-m", "u-replay", TOXIC);
    let first = app.post_webhook(&body, "rp-1").await;
    assert_eq!(first.status(), 200);
    decided(app.store(), "rp-1").await;
    for wid in ["rp-2", "rp-3", "rp-4"] {
        let again = app.post_webhook(&body, wid).await;
        assert_eq!(again.status(), 200);
        let receipt: serde_json::Value = again.json().await.unwrap();
        assert_eq!(receipt["status"], "duplicate", "{receipt}");
    }
    wait_settled(app.store()).await;
    assert_eq!(app.store().count_decisions().await.unwrap(), 1);
    let deletes = stream
        .calls_to("/messages/rp-m")
        .into_iter()
        .filter(|c| c.method == Method::DELETE)
        .count();
    assert_eq!(deletes, 1);
    let standing = app
        .store()
        .user_standing(API_KEY, "u-replay", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(standing.active_strikes, 1, "one strike, not four");
    app.stop().await;
}
both_backends!(
    replay,
    a_replay_under_a_new_webhook_id_is_not_acted_on_twice
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_event_is_recorded_and_not_acted_on() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let app = app_with(
        &stream,
        &db,
        &[("CHATGUARD_SERVER__STALE_EVENT_SECS", "300")],
    )
    .await;
    // message_new is dated months ago.
    let r = app
        .post_webhook(&message_new("st-m", "u-stale", TOXIC), "st-1")
        .await;
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["status"], "stale", "{receipt}");
    let mut fresh: serde_json::Value =
        serde_json::from_slice(&message_new("st-n", "u-stale", TOXIC)).unwrap();
    fresh["created_at"] = json!(chrono::Utc::now().to_rfc3339());
    let r = app
        .post_webhook(&serde_json::to_vec(&fresh).unwrap(), "st-2")
        .await;
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["status"], "queued", "{receipt}");
    decided(app.store(), "st-2").await;
    let e = app.store().get_event_by_webhook_id("st-1").await.unwrap();
    assert_eq!(e.status, "stale");
    assert!(
        app.store()
            .decision_for_event(e.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(stream.calls_to("/messages/st-m").is_empty());
    app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_while_others_are_served() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(
        &db.url,
        &[("CHATGUARD_SERVER__HEADER_READ_TIMEOUT_MS", "500")],
    ))
    .await;
    let addr = app.url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /webhooks/stream HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Others are served while the slow one dawdles.
    for _ in 0..5 {
        let r = app.client.get(format!("{}/healthz", app.url)).send().await;
        assert!(r.unwrap().status().is_success());
    }
    // The slow one is closed after the header deadline.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let read = slow.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "closed by the server, not by our timeout: {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_when_one_is_set() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[("CHATGUARD_METRICS_TOKEN", "m3tr1cs")])).await;
    let url = format!("{}/metrics", app.url);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = app
        .client
        .get(&url)
        .bearer_auth("m3tr1cs")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("chatguard_"));
    app.stop().await;
    db.cleanup().await;
}

/// Kill -9 after the resolution is committed but before Stream confirmed it: the restarted
/// worker carries it out, once.
async fn a_resolution_survives_a_crash(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    // Ingest and decide in this process, then hand the database to a child process.
    let app = app_with(
        &stream,
        db,
        &[("CHATGUARD_REVIEW__INCLUDE_BLOCKS", "false")],
    )
    .await;
    app.post_webhook(&message_new("cr-m", "u-crash", "what an idiot"), "cr-1")
        .await;
    let d = decided(app.store(), "cr-1").await;
    app.stop().await;
    let store = Store::connect(&db.url, 2).await.unwrap();
    let item = eventually(Duration::from_secs(10), "a review item", || async {
        let (rows, _) = store
            .list_review_items(&Default::default(), 10, None)
            .await
            .ok()?;
        rows.into_iter().find(|r| r.decision_id == d.id)
    })
    .await;
    let token = {
        let (_, secret) = store
            .create_token("mo", chatguard::store::Role::Moderator, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        secret
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawn = || {
        bin()
            .arg("serve")
            .env("CHATGUARD_DATABASE_URL", &db.url)
            .env("CHATGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("STREAM_API_KEY", API_KEY)
            .env("STREAM_API_SECRET", SECRET)
            .env("STREAM_BASE_URL", stream.base_url())
            .env("CHATGUARD_ACTIONS__RETRY_BASE_MS", "200")
            .env("CHATGUARD_ACTIONS__RETRY_MAX_MS", "500")
            .env("CHATGUARD_ACTIONS__LEASE_SECS", "2")
            .env("CHATGUARD_REVIEW__RESOLVE_WAIT_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the server up", || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    // Stream is down: the resolution is committed and waits.
    stream.set_down(true);
    let r = client
        .post(format!("{base}/api/v1/review-items/{}/resolve", item.id))
        .bearer_auth(&token)
        .json(&json!({"resolution": "remove"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["item"]["status"], "resolving", "{body}");
    child.kill().unwrap();
    let _ = child.wait();
    stream.set_down(false);
    let mut child = spawn();
    let resolved = eventually(Duration::from_secs(30), "the item resolved", || async {
        let row = store.get_review_item(item.id).await.ok()?;
        (row.status == "resolved").then_some(row)
    })
    .await;
    assert_eq!(resolved.resolution.as_deref(), Some("remove"));
    let deletes: Vec<_> = stream
        .calls_to("/messages/cr-m")
        .into_iter()
        .filter(|c| c.method == Method::DELETE && c.status.is_some_and(|s| s < 300))
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let audit = store.list_audit(20, None).await.unwrap();
    let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(
        actions.contains(&"review_item.resolve_requested"),
        "{actions:?}"
    );
    assert!(actions.contains(&"review_item.resolve"), "{actions:?}");
    child.kill().unwrap();
    let _ = child.wait();
    store.close().await;
}
both_backends!(resolve_crash, a_resolution_survives_a_crash);

async fn retention_prunes_old_records(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let app = app_with(&stream, db, &[]).await;
    app.post_webhook(&message_new("rt-m", "u-ret", TOXIC), "rt-1")
        .await;
    let d = decided(app.store(), "rt-1").await;
    app.stop().await;
    let store = Store::connect(&db.url, 2).await.unwrap();
    let cfg = chatguard::config::Config::load_from(None, Vec::new())
        .unwrap()
        .retention;
    // Nothing is old yet.
    let now = chrono::Utc::now();
    assert_eq!(store.prune(&cfg, now).await.unwrap().total(), 0);
    // A week and a day on, the payload goes; 91 days on, the decision and its event.
    let r = store
        .prune(&cfg, now + chrono::Duration::days(8))
        .await
        .unwrap();
    assert_eq!(r.payloads_blanked, 1, "{r:?}");
    let e = store.get_event_by_webhook_id("rt-1").await.unwrap();
    assert!(e.payload.is_empty());
    let r = store
        .prune(&cfg, now + chrono::Duration::days(91))
        .await
        .unwrap();
    assert_eq!(r.decisions, 1, "{r:?}");
    assert!(store.decision_by_id(d.id).await.unwrap().is_none());
    assert!(store.get_event_by_webhook_id("rt-1").await.is_err());
    store.close().await;
}
both_backends!(retention, retention_prunes_old_records);
