//! Crash-safety by crashing: signed webhooks over loopback into a real `chatguard serve`
//! process that is killed with SIGKILL twice and restarted, while the Stream stand-in answers
//! 503 for a stretch in the middle. Afterwards every acknowledged event is decided exactly once,
//! no decision is left pending, and every delete, flag and ban reached Stream exactly once.

use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatguard::ingest::signature;
use chatguard::store::Store;
use reqwest::Method;
use tokio::sync::Mutex;

use crate::both_backends;
use crate::helpers::*;
use crate::stream_standin::StreamStandin;

const EVENTS: usize = 1000;
const OUTAGE: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn_server(db_url: &str, port: u16, stream: &str) -> Child {
    bin()
        .arg("serve")
        .env("CHATGUARD_DATABASE_URL", db_url)
        .env("CHATGUARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("STREAM_API_KEY", API_KEY)
        .env("STREAM_API_SECRET", SECRET)
        .env("STREAM_BASE_URL", stream)
        .env("CHATGUARD_STREAM__TIMEOUT_MS", "2000")
        .env("CHATGUARD_QUEUE__HEARTBEAT_SECS", "1")
        .env("CHATGUARD_QUEUE__RETRY_BASE_SECS", "1")
        .env("CHATGUARD_QUEUE__RETRY_MAX_SECS", "2")
        .env("CHATGUARD_QUEUE__STRANDED_AFTER_SECS", "10")
        .env("CHATGUARD_QUEUE__SWEEP_INTERVAL_SECS", "2")
        .env("CHATGUARD_ACTIONS__RETRY_BASE_MS", "250")
        .env("CHATGUARD_ACTIONS__RETRY_MAX_MS", "2000")
        .env("CHATGUARD_ACTIONS__LEASE_SECS", "3")
        .env("CHATGUARD_ACTIONS__POLL_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chatguard serve starts")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    eventually(Duration::from_secs(30), "the server to answer", || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await
}

/// The i-th message: a third toxic (blocked), some borderline (flagged), the rest clean; a few
/// users post several toxic lines, so the ladder bans them.
fn message(i: usize) -> (String, String, &'static str) {
    let id = format!("chaos-m-{i}");
    let user = if i.is_multiple_of(50) {
        format!("chaos-repeat-{}", i % 3)
    } else {
        format!("chaos-u-{i}")
    };
    let text = match i % 3 {
        0 => "kys you worthless idiot",
        1 => "have a nice day everyone",
        _ => "this game is fun",
    };
    (id, user, text)
}

async fn chaos(db: &TestDb, _: Backend) {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let server = Arc::new(Mutex::new(spawn_server(&db.url, port, &stream.base_url())));
    wait_healthy(&client, &base).await;

    for i in 0..EVENTS {
        let (id, user, text) = message(i);
        stream.add_message("messaging:general", &id, &user, text);
    }
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (client, base, acked, next) =
            (client.clone(), base.clone(), acked.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= EVENTS {
                    return;
                }
                let (id, user, text) = message(i);
                let body = message_new(&id, &user, text);
                let sig = signature::sign(SECRET.as_bytes(), &body);
                // Like Stream: retry until acknowledged (the server may be down for a moment).
                for _ in 0..200 {
                    let sent = client
                        .post(format!("{base}/webhooks/stream"))
                        .header("content-type", "application/json")
                        .header("x-api-key", API_KEY)
                        .header("x-signature", &sig)
                        .header("x-webhook-id", format!("wh-{id}"))
                        .body(body.clone())
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        acked.lock().await.insert(id.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // About 100 webhooks a second in all, so the kills and the outage fall mid-flow.
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
        }));
    }

    // Kill twice while webhooks flow, Stream down in between.
    let mut kills = 0;
    let mut outage = None;
    while next.load(Ordering::SeqCst) < EVENTS {
        let done = next.load(Ordering::SeqCst);
        let kill_now = (kills == 0 && done >= EVENTS / 4) || (kills == 1 && done >= EVENTS * 3 / 5);
        if kill_now {
            let mut s = server.lock().await;
            s.kill().expect("SIGKILL");
            let _ = s.wait();
            kills += 1;
            *s = spawn_server(&db.url, port, &stream.base_url());
            drop(s);
            wait_healthy(&client, &base).await;
        }
        if outage.is_none() && done >= EVENTS / 3 {
            stream.set_down(true);
            outage = Some(Instant::now());
        }
        if let Some(t) = outage
            && t.elapsed() >= OUTAGE
        {
            stream.set_down(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in senders {
        s.await.unwrap();
    }
    if let Some(t) = outage {
        let left = OUTAGE.saturating_sub(t.elapsed());
        tokio::time::sleep(left).await;
    }
    stream.set_down(false);
    let outage_secs = outage
        .map(|t| t.elapsed().min(OUTAGE).as_secs())
        .unwrap_or(0);
    assert_eq!(kills, 2, "the server was killed twice");
    assert!(outage_secs >= OUTAGE.as_secs(), "a {outage_secs} s outage");

    // Everything settles: every event decided, no action pending.
    let store = Store::connect(&db.url, 2).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let events = store.count_events_by_status().await.unwrap();
        let actions = store.count_actions_by_status().await.unwrap();
        let waiting = |rows: &[(String, i64)], states: &[&str]| {
            rows.iter()
                .filter(|(s, _)| states.contains(&s.as_str()))
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        if waiting(&events, &["received", "retrying"]) == 0 && waiting(&actions, &["pending"]) == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: events {events:?}, actions {actions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked = acked.lock().await.clone();
    assert_eq!(
        acked.len(),
        EVENTS,
        "every webhook was acknowledged in the end"
    );

    let decisions = store.recent_decisions(10 * EVENTS as i64).await.unwrap();
    let mut per_message: BTreeMap<String, usize> = BTreeMap::new();
    for d in &decisions {
        *per_message
            .entry(d.message_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for id in &acked {
        assert_eq!(per_message.get(id), Some(&1), "{id} decided exactly once");
    }
    assert!(
        decisions.iter().all(|d| d.action_status != "pending"),
        "no decision pending"
    );
    let failed: Vec<_> = decisions
        .iter()
        .filter(|d| d.action_status == "failed")
        .collect();
    assert!(failed.is_empty(), "nothing failed: {failed:#?}");

    // What Stream saw: each decided call carried out exactly once.
    let calls = stream.calls();
    let ok = |method: Method, path: &str| {
        calls
            .iter()
            .filter(|c| c.method == method && c.path == path && c.status.is_some_and(|s| s < 300))
            .count()
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &decisions {
        let m = d.message_id.clone().unwrap_or_default();
        *counts.entry(d.decision.as_str()).or_default() += 1;
        let deletes = ok(Method::DELETE, &format!("/messages/{m}"));
        match d.decision.as_str() {
            "block" | "ban" => assert_eq!(deletes, 1, "{m}: one delete"),
            _ => assert_eq!(deletes, 0, "{m}: no delete"),
        }
    }
    let flags: Vec<_> = stream.flags();
    let flagged = decisions.iter().filter(|d| d.decision == "flag").count();
    assert_eq!(flags.len(), flagged, "one flag per flag decision");
    let bans = decisions.iter().filter(|d| d.decision == "ban").count();
    let ban_calls = calls
        .iter()
        .filter(|c| c.path == "/moderation/ban" && c.status.is_some_and(|s| s < 300))
        .count();
    assert_eq!(ban_calls, bans, "one ban call per ban decision");
    let refused = calls.iter().filter(|c| c.status == Some(503)).count();
    assert!(refused > 0, "the outage refused calls");
    eprintln!(
        "chaos: {EVENTS} events, {kills} kills, {outage_secs} s outage, {} s in all; decided {} \
         ({counts:?}); {refused} calls refused during the outage; pending 0, failed 0, duplicates 0",
        started.elapsed().as_secs(),
        decisions.len()
    );
    let mut s = server.lock().await;
    let _ = s.kill();
    let _ = s.wait();
    store.close().await;
}
both_backends!(chaos_kill_and_outage, chaos);
