//! `POST /webhooks/stream/before-message-send` over loopback HTTP: block and allow round trips,
//! the deadline (fail-open) path, refused deliveries, and the decision reaching the store.

use std::io::Write;
use std::time::{Duration, Instant};

use chatguard::app::Services;
use chatguard::ingest::EventWriter;
use chatguard::ingest::before_send::{
    self, BeforeSendState, DEFAULT_BLOCK_TEXT, DEFAULT_DEADLINE, EVENT_TYPE, PATH,
};
use chatguard::ingest::signature;
use chatguard::store::{Store, StoreError};
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::both_backends;
use crate::helpers::*;

const TOXIC: &str = "kys you worthless idiot";
const CLEAN: &str = "see you all at the standup tomorrow, I'll bring the notes";

/// The hook's message object, shaped like Stream's (stream-api.md §3.2).
fn message(text: &str) -> Value {
    json!({
        "id": "",
        "text": text,
        "html": "",
        "type": "regular",
        "attachments": [],
        "latest_reactions": [],
        "own_reactions": [],
        "reaction_counts": null,
        "reaction_scores": null,
        "reply_count": 0,
        "mentioned_users": [],
        "silent": false,
        "custom_score": 1.5
    })
}

fn hook_body(message: &Value, user_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "message": message,
        "user": {"id": user_id, "role": "user", "banned": false, "online": false},
        "channel": {
            "cid": "messaging:fun-01",
            "id": "fun-01",
            "type": "messaging",
            "frozen": false,
            "config": {"name": "messaging", "max_message_length": 5000, "automod": "disabled"}
        },
        "request_info": {"type": "client", "ip": "86.84.2.2", "sdk": "stream-chat-react-10.11.0"}
    }))
    .unwrap()
}

/// Posts `sent` to the hook, signed over `signed` with `secret` (none: no signature header).
async fn post_hook(
    client: &reqwest::Client,
    base: &str,
    sent: &[u8],
    signed: &[u8],
    secret: Option<&str>,
    webhook_id: &str,
) -> reqwest::Response {
    let mut req = client
        .post(format!("{base}{PATH}"))
        .header("content-type", "application/json")
        .header("x-api-key", API_KEY)
        .header("x-webhook-id", webhook_id)
        .header("x-webhook-attempt", "1")
        .body(sent.to_vec());
    if let Some(s) = secret {
        req = req.header("x-signature", signature::sign(s.as_bytes(), signed));
    }
    req.send().await.unwrap()
}

async fn post_signed(app: &TestApp, body: &[u8], webhook_id: &str) -> reqwest::Response {
    post_hook(&app.client, &app.url, body, body, Some(SECRET), webhook_id).await
}

async fn logged_event(store: &Store, webhook_id: &str) -> chatguard::store::EventRow {
    eventually(
        Duration::from_secs(10),
        "the before-send event stored",
        || async { store.get_event_by_webhook_id(webhook_id).await.ok() },
    )
    .await
}

async fn block_round_trip(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let resp = post_signed(&app, &hook_body(&message(TOXIC), "u-tox"), "bs-block").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"message": {"type": "error", "text": DEFAULT_BLOCK_TEXT}})
    );

    let event = logged_event(app.store(), "bs-block").await;
    assert_eq!(event.event_type, EVENT_TYPE);
    assert_eq!(event.api_key, API_KEY);
    assert_eq!(event.user_id.as_deref(), Some("u-tox"));
    assert_eq!(event.cid.as_deref(), Some("messaging:fun-01"));
    assert_eq!(event.message_id, None, "an empty message id is not stored");
    let payload: Value = serde_json::from_str(&event.payload).unwrap();
    assert_eq!(payload["type"], EVENT_TYPE);
    assert_eq!(payload["message"]["text"], TOXIC);
    assert_eq!(payload["before_send"]["answer"], "block");
    assert!(
        matches!(
            payload["before_send"]["decision"].as_str(),
            Some("block" | "ban")
        ),
        "{payload}"
    );
    app.stop().await;
}
both_backends!(block_round_trip_and_logged, block_round_trip);

async fn allow_round_trip(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let sent = message(CLEAN);
    let resp = post_signed(&app, &hook_body(&sent, "u-ok"), "bs-allow").await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({ "message": sent }));

    let event = logged_event(app.store(), "bs-allow").await;
    assert_eq!(event.event_type, EVENT_TYPE);
    let payload: Value = serde_json::from_str(&event.payload).unwrap();
    assert_eq!(payload["before_send"]["answer"], "allow");
    assert_eq!(payload["before_send"]["decision"], "allow");
    app.stop().await;
}
both_backends!(allow_round_trip_echoes_the_message, allow_round_trip);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_echoes_the_message_bytes_unchanged() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[])).await;
    // Spacing, key order and number spelling that a re-serialisation would change.
    let raw_message =
        r#"{ "text" : "hello there",  "id":"m-1", "type":"regular", "n": 1.50, "z":{} }"#;
    let body = format!(r#"{{"user":{{"id":"u-raw"}},"message":{raw_message}}}"#);
    let resp = post_signed(&app, body.as_bytes(), "bs-raw").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        format!(r#"{{"message":{raw_message}}}"#)
    );
    let event = logged_event(app.store(), "bs-raw").await;
    assert_eq!(event.message_id.as_deref(), Some("m-1"));
    assert_eq!(event.cid, None, "no channel in the body");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_body_is_decided_like_a_plain_one() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let body = hook_body(&message(TOXIC), "u-gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&body).unwrap();
    let gz = gz.finish().unwrap();
    let resp = post_hook(&app.client, &app.url, &gz, &body, Some(SECRET), "bs-gz").await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["message"]["type"], "error");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_is_401_and_nothing_is_stored() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let body = hook_body(&message(TOXIC), "u-sig");
    let wrong = post_hook(
        &app.client,
        &app.url,
        &body,
        &body,
        Some("not-the-secret"),
        "bs-wrong",
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.text().await.unwrap(), "");
    let missing = post_hook(&app.client, &app.url, &body, &body, None, "bs-missing").await;
    assert_eq!(missing.status(), 401);
    let tampered = post_hook(
        &app.client,
        &app.url,
        &body,
        &hook_body(&message(CLEAN), "u-sig"),
        Some(SECRET),
        "bs-tampered",
    )
    .await;
    assert_eq!(tampered.status(), 401);

    // A good delivery afterwards is stored; the refused ones never are.
    assert_eq!(post_signed(&app, &body, "bs-good").await.status(), 200);
    logged_event(app.store(), "bs-good").await;
    for id in ["bs-wrong", "bs-missing", "bs-tampered"] {
        assert!(
            matches!(
                app.store().get_event_by_webhook_id(id).await,
                Err(StoreError::NotFound)
            ),
            "{id} was stored"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let cases: [&[u8]; 5] = [
        b"{\"message\": {\"text\": \"unterminated",
        br#"{"user":{"id":"u"},"channel":{"cid":"messaging:x"}}"#,
        br#"{"message":null}"#,
        br#"{"message":["text"]}"#,
        br#"{"message":{"text":42}}"#,
    ];
    for (i, body) in cases.iter().enumerate() {
        let resp = post_signed(&app, body, &format!("bs-bad-{i}")).await;
        assert_eq!(
            resp.status(),
            400,
            "case {i}: {}",
            String::from_utf8_lossy(body)
        );
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "bad_request", "case {i}");
    }
    app.stop().await;
}

async fn hook_state(services: &Services, deadline: Duration, block_text: &str) -> BeforeSendState {
    BeforeSendState {
        secrets: std::sync::Arc::new(services.webhook_secrets().await.unwrap()),
        rules: services.rules.clone(),
        writer: EventWriter::spawn(services.store.clone(), services.queue.clone()),
        max_body_bytes: services.config.server.max_body_bytes,
        max_decompressed_bytes: services.config.server.max_decompressed_bytes,
        deadline,
        block_text: block_text.into(),
    }
}

/// The hook router alone, served on a loopback port with the given deadline and block text.
struct HookServer {
    url: String,
    services: Services,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HookServer {
    async fn spawn(db: &TestDb, deadline: Duration, block_text: &str) -> Self {
        let services = Services::start(config(&db.url, &[])).await.unwrap();
        let state = hook_state(&services, deadline, block_text).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, before_send::router(state))
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            url,
            services,
            stop,
            task,
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.services.store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_the_message_is_let_through() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = HookServer::spawn(&db, Duration::ZERO, DEFAULT_BLOCK_TEXT).await;
    let client = reqwest::Client::new();
    let sent = message(TOXIC);
    let body = hook_body(&sent, "u-late");
    let resp = post_hook(&client, &server.url, &body, &body, Some(SECRET), "bs-late").await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({ "message": sent }), "fails open, unchanged");

    // Still logged, with what was answered and what would have been decided.
    let event = logged_event(&server.services.store, "bs-late").await;
    assert_eq!(event.status, "received", "queued for the worker");
    let payload: Value = serde_json::from_str(&event.payload).unwrap();
    assert_eq!(payload["before_send"]["answer"], "fail_open");
    assert_ne!(payload["before_send"]["decision"], "allow");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_text_is_configurable() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let text = "Nope: that message breaks the house rules.";
    let server = HookServer::spawn(&db, DEFAULT_DEADLINE, text).await;
    let client = reqwest::Client::new();
    let body = hook_body(&message(TOXIC), "u-cfg");
    let resp = post_hook(&client, &server.url, &body, &body, Some(SECRET), "bs-cfg").await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer, json!({"message": {"type": "error", "text": text}}));
    server.shutdown().await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latency of the hook: 2,000 sequential requests over loopback, 2,000 at concurrency 8, the
/// handler's own elapsed time (stored with each event), and 2,000 requests in process (no TCP).
/// `cargo test --test api before_send::latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints p50/p99"]
async fn latency() {
    const N: usize = 2_000;
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = HookServer::spawn(&db, DEFAULT_DEADLINE, DEFAULT_BLOCK_TEXT).await;
    let client = reqwest::Client::new();
    let texts = [
        CLEAN,
        TOXIC,
        "FREE robux at bit.ly/x claim before it expires!!",
        "gg that last round was wild lol",
    ];
    let bodies: Vec<Vec<u8>> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| hook_body(&message(t), &format!("u{i}")))
        .collect();
    let signatures: Vec<String> = bodies
        .iter()
        .map(|b| signature::sign(SECRET.as_bytes(), b))
        .collect();
    let send = |i: usize| {
        let req = client
            .post(format!("{}{PATH}", server.url))
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
            .header("x-signature", signatures[i % bodies.len()].as_str())
            .header("x-webhook-id", format!("lat-{i}"))
            .body(bodies[i % bodies.len()].clone());
        async move {
            let t = Instant::now();
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
            t.elapsed()
        }
    };
    for i in 0..100 {
        send(N * 2 + i).await;
    }
    let mut seq = Vec::with_capacity(N);
    for i in 0..N {
        seq.push(send(i).await);
    }
    seq.sort();
    let started = Instant::now();
    let mut conc: Vec<Duration> = futures::stream::iter((N..2 * N).map(send))
        .buffer_unordered(8)
        .collect()
        .await;
    let wall = started.elapsed();
    conc.sort();
    println!(
        "before-send sequential: n={N} p50={:?} p99={:?} max={:?}",
        percentile(&seq, 0.5),
        percentile(&seq, 0.99),
        seq[N - 1]
    );
    println!(
        "before-send concurrency 8: n={N} p50={:?} p99={:?} max={:?} ({:.0} req/s)",
        percentile(&conc, 0.5),
        percentile(&conc, 0.99),
        conc[N - 1],
        N as f64 / wall.as_secs_f64()
    );

    // The handler's own view: from its start to the decision, as logged with each event.
    let store = &server.services.store;
    let mut handler = eventually(Duration::from_secs(30), "every request logged", || async {
        let rows = store.list_received_events(0, 10_000).await.ok()?;
        (rows.len() >= 2 * N + 100).then_some(rows)
    })
    .await
    .iter()
    .map(|row| {
        let v: Value = serde_json::from_str(&row.payload).unwrap();
        Duration::from_micros(v["before_send"]["elapsed_us"].as_u64().unwrap())
    })
    .collect::<Vec<_>>();
    handler.sort();
    println!(
        "before-send handler (verify+parse+score+decide): n={} p50={:?} p99={:?}",
        handler.len(),
        percentile(&handler, 0.5),
        percentile(&handler, 0.99)
    );

    // In process: the whole router (body, signature, scoring, response) without TCP or a client.
    let router = before_send::router(
        hook_state(&server.services, DEFAULT_DEADLINE, DEFAULT_BLOCK_TEXT).await,
    );
    let mut local = Vec::with_capacity(N);
    for i in 0..N {
        let req = axum::http::Request::post(PATH)
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
            .header("x-signature", signatures[i % bodies.len()].as_str())
            .header("x-webhook-id", format!("local-{i}"))
            .body(axum::body::Body::from(bodies[i % bodies.len()].clone()))
            .unwrap();
        let t = Instant::now();
        let resp = tower::ServiceExt::oneshot(router.clone(), req)
            .await
            .unwrap();
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        local.push(t.elapsed());
    }
    local.sort();
    println!(
        "before-send in process: n={N} p50={:?} p99={:?}",
        percentile(&local, 0.5),
        percentile(&local, 0.99)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_block_text_comes_from_the_configuration() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(
        &db.url,
        &[("CHATGUARD_BEFORE_SEND__BLOCK_TEXT", "Not here, friend.")],
    ))
    .await;
    assert_eq!(
        app.services.config.before_send.block_text,
        "Not here, friend."
    );
    let resp = post_signed(&app, &hook_body(&message(TOXIC), "u-cfg"), "bs-cfg").await;
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"message": {"type": "error", "text": "Not here, friend."}})
    );
    app.stop().await;
    db.cleanup().await;
}
