//! `POST /webhooks/stream` over loopback HTTP, on both backends.

use std::io::Write;
use std::time::Duration;

use chatguard::cli::replay;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::both_backends;
use crate::helpers::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn event_count(app: &TestApp) -> i64 {
    app.store()
        .count_events_by_status()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

async fn every_fixture_is_decided_as_expected(db: &TestDb, _: Backend) {
    let stream = crate::stream_standin::StreamStandin::start(API_KEY, SECRET).await;
    let base = stream.base_url();
    let app = TestApp::spawn(config(
        &db.url,
        &[
            ("STREAM_BASE_URL", base.as_str()),
            ("CHATGUARD_STREAM__MAX_RETRIES", "2"),
        ],
    ))
    .await;
    let files = replay::collect_files(&[fixtures_dir()]).unwrap();
    assert!(files.len() >= 13, "fixtures: {files:?}");
    let url = format!("{}/webhooks/stream", app.url);
    let results = replay::replay(&files, &url, API_KEY, SECRET, Some("fx-"))
        .await
        .unwrap();
    let status_of = |name: &str| {
        let r = results
            .iter()
            .find(|r| r.path.file_name().unwrap().to_str().unwrap() == name)
            .unwrap_or_else(|| panic!("{name} not replayed"));
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status_of("unknown_type.json"), "ignored");
    assert_eq!(status_of("message_new_from_bot.json"), "own");
    assert_eq!(status_of("message_new_gzip.json.gz"), "queued");
    assert_eq!(status_of("user_banned.json"), "queued");
    wait_settled(app.store()).await;

    let expected = [
        ("message_new_clean.json", "allow", None),
        ("message_new_gzip.json.gz", "allow", None),
        (
            "message_new_toxic.json",
            "block",
            Some("toxicity.self_harm_incitement"),
        ),
        ("message_new_spam.json", "block", Some("spam.free_currency")),
        (
            "message_new_explicit.json",
            "block",
            Some("explicit.solicit_nudes"),
        ),
        ("message_updated.json", "block", Some("spam.buy_engagement")),
        ("message_flagged.json", "flag", Some("spam.pharma")),
    ];
    for (file, decision, rule) in expected {
        let event = app
            .store()
            .get_event_by_webhook_id(&format!("fx-{file}"))
            .await
            .unwrap();
        assert_eq!(event.status, "decided", "{file}");
        let d = app
            .store()
            .decision_for_event(event.id)
            .await
            .unwrap()
            .expect(file);
        assert_eq!(d.decision, decision, "{file}: {}", d.reasons);
        assert!(!d.dry_run);
        assert!(
            d.message_id.is_some() && d.cid.is_some() && d.user_id.is_some(),
            "{file}: {d:?}"
        );
        assert!(d.decided_at >= d.received_at);
        match rule {
            Some(rule) => {
                assert!(
                    d.matched_rules.contains(rule),
                    "{file}: {}",
                    d.matched_rules
                );
                // The reasons name what matched, with offsets into the message text.
                let reasons: Vec<serde_json::Value> =
                    serde_json::from_str(&d.matched_rules).unwrap();
                for r in &reasons {
                    if let (Some(s), Some(e)) = (r["start"].as_u64(), r["end"].as_u64()) {
                        assert!(s < e && e as usize <= d.text.len(), "{file}: {r}");
                    }
                }
                // Carried out on the Stream stand-in: a delete for a block, a flag for a flag.
                let store = app.store().clone();
                let id = d.id;
                let event_id = event.id;
                let status = eventually(Duration::from_secs(10), "the action outcome", || {
                    let store = store.clone();
                    async move {
                        let d = store.decision_for_event(event_id).await.ok()??;
                        (d.action_status != "pending").then_some(d.action_status)
                    }
                })
                .await;
                assert_eq!(status, "done", "{file} (decision {id})");
                let message_id = d.message_id.clone().unwrap();
                let op = if decision == "flag" {
                    "flag"
                } else {
                    &message_id
                };
                assert!(
                    stream.calls().iter().any(|c| c.path.contains(op)),
                    "{file}: {:?}",
                    stream.calls().iter().map(|c| &c.path).collect::<Vec<_>>()
                );
            }
            None => {
                assert_eq!(d.matched_rules, "[]", "{file}");
                assert_eq!(d.action_status, "none");
            }
        }
    }
    for file in [
        "message_deleted.json",
        "user_banned.json",
        "user_unbanned.json",
        "user_flagged.json",
    ] {
        let event = app
            .store()
            .get_event_by_webhook_id(&format!("fx-{file}"))
            .await
            .unwrap();
        assert_eq!(event.status, "processed", "{file}");
        assert!(
            app.store()
                .decision_for_event(event.id)
                .await
                .unwrap()
                .is_none()
        );
    }
    for (file, status) in [
        ("unknown_type.json", "ignored"),
        ("message_new_from_bot.json", "own"),
    ] {
        let event = app
            .store()
            .get_event_by_webhook_id(&format!("fx-{file}"))
            .await
            .unwrap();
        assert_eq!(event.status, status, "{file}");
    }
    assert_eq!(app.store().count_decisions().await.unwrap(), 7);
    wait_queue_empty(&app).await;
    app.stop().await;
}
both_backends!(every_fixture, every_fixture_is_decided_as_expected);

async fn bad_deliveries_are_refused_and_not_stored(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let body = message_new("m-neg", "u1", "hello");
    let status = |r: reqwest::Response| r.status().as_u16();

    // Signature: wrong secret, missing, malformed, over other bytes; unknown and missing api key.
    assert_eq!(
        status(
            app.post_raw(&body, &body, Some(API_KEY), Some("wrong"), Some("n1"))
                .await
        ),
        401
    );
    assert_eq!(
        status(
            app.post_raw(&body, &body, Some(API_KEY), None, Some("n2"))
                .await
        ),
        401
    );
    assert_eq!(
        status(
            app.post_raw(&body, b"other", Some(API_KEY), Some(SECRET), Some("n3"))
                .await
        ),
        401
    );
    assert_eq!(
        status(
            app.post_raw(&body, &body, Some("unknown-app"), Some(SECRET), Some("n4"))
                .await
        ),
        401
    );
    assert_eq!(
        status(
            app.post_raw(&body, &body, None, Some(SECRET), Some("n5"))
                .await
        ),
        401
    );
    let malformed = app
        .client
        .post(format!("{}/webhooks/stream", app.url))
        .header("x-api-key", API_KEY)
        .header("x-signature", "not-hex")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 401);
    // A signature over the gzip bytes rather than the JSON is wrong (stream-api.md §1.4).
    let gz = gzip(&body);
    assert_eq!(
        status(
            app.post_raw(&gz, &gz, Some(API_KEY), Some(SECRET), Some("n6"))
                .await
        ),
        401
    );

    // Well signed but not an event.
    for (bad, what) in [
        (&b"{not json"[..], "malformed"),
        (b"{\"text\":\"no type\"}", "no type"),
        (b"[]", "array"),
    ] {
        let r = app
            .post_raw(bad, bad, Some(API_KEY), Some(SECRET), Some("n7"))
            .await;
        assert_eq!(r.status(), 400, "{what}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert_eq!(err["error"]["code"], "bad_request", "{what}");
    }
    let broken_gzip = &gz[..gz.len() / 2];
    assert_eq!(
        status(
            app.post_raw(broken_gzip, &body, Some(API_KEY), Some(SECRET), Some("n8"))
                .await
        ),
        400
    );

    // Too large as sent (default cap 256 KiB), and a gzip bomb.
    let big = message_new("m-big", "u1", &"a".repeat(300 * 1024));
    assert_eq!(
        status(
            app.post_raw(&big, &big, Some(API_KEY), Some(SECRET), Some("n9"))
                .await
        ),
        413
    );
    let bomb_json = message_new("m-bomb", "u1", &"a".repeat(8 * 1024 * 1024));
    let bomb = gzip(&bomb_json);
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(
        status(
            app.post_raw(&bomb, &bomb_json, Some(API_KEY), Some(SECRET), Some("n10"))
                .await
        ),
        413
    );

    assert_eq!(event_count(&app).await, 0, "nothing refused may be stored");
    assert_eq!(app.services.queue.depth().await.unwrap(), 0);

    // The same body, correctly signed and gzip-compressed, is accepted.
    let ok = app
        .post_raw(&gz, &body, Some(API_KEY), Some(SECRET), Some("n11"))
        .await;
    assert_eq!(ok.status(), 200);
    app.stop().await;
}
both_backends!(bad_deliveries, bad_deliveries_are_refused_and_not_stored);

async fn unknown_types_are_recorded_as_ignored_not_queued(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[("CHATGUARD_QUEUE__RUN_WORKER", "false")])).await;
    let body = br#"{"type":"channel.truncated","cid":"messaging:general","created_at":1778198400000000000}"#;
    let r = app.post_webhook(body, "unknown-1").await;
    assert_eq!(r.status(), 200);
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["status"], "ignored");
    let event = app
        .store()
        .get_event_by_webhook_id("unknown-1")
        .await
        .unwrap();
    assert_eq!(event.status, "ignored");
    assert_eq!(event.event_type, "channel.truncated");
    assert_eq!(app.services.queue.depth().await.unwrap(), 0);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("chatguard_webhooks_total{outcome=\"ignored\"}"),
        "{metrics}"
    );
    app.stop().await;
}
both_backends!(
    unknown_types,
    unknown_types_are_recorded_as_ignored_not_queued
);

async fn three_deliveries_of_one_id_make_one_job_and_one_decision(db: &TestDb, _: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let body = message_new("m-dup", "u-dup", "you are a worthless idiot");
    // One delivery, then two retries at once.
    assert_eq!(app.post_webhook(&body, "dup-1").await.status(), 200);
    let (a, b) = tokio::join!(
        app.post_webhook(&body, "dup-1"),
        app.post_webhook(&body, "dup-1")
    );
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
    wait_settled(app.store()).await;
    // A late redelivery after the decision is still a duplicate.
    let late: serde_json::Value = app.post_webhook(&body, "dup-1").await.json().await.unwrap();
    assert_eq!(late["status"], "duplicate");

    let event = app.store().get_event_by_webhook_id("dup-1").await.unwrap();
    assert_eq!(event.deliveries, 4);
    assert_eq!(event.attempts, 1, "scored once");
    assert_eq!(app.store().count_decisions().await.unwrap(), 1);
    assert!(
        app.store()
            .attempt_times(event.id)
            .await
            .unwrap()
            .is_empty(),
        "no failed attempt"
    );
    app.stop().await;
}
both_backends!(
    dedupe,
    three_deliveries_of_one_id_make_one_job_and_one_decision
);

async fn health_readiness_and_metrics_answer(db: &TestDb, backend: Backend) {
    let app = TestApp::spawn(config(&db.url, &[])).await;
    let get = |p: &str| app.client.get(format!("{}{p}", app.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready: serde_json::Value = get("/readyz").await.unwrap().json().await.unwrap();
    let name = if backend == Backend::Sqlite {
        "sqlite"
    } else {
        "postgres"
    };
    assert_eq!(ready["database"], name);
    assert_eq!(
        app.post_webhook(&message_new("m-h", "u", "hi"), "h-1")
            .await
            .status(),
        200
    );
    wait_settled(app.store()).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "chatguard_webhooks_total{outcome=\"queued\"}",
        "chatguard_queue_depth",
        "chatguard_job_seconds_bucket",
        "chatguard_decisions_total{decision=\"allow\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let store = app.store().clone();
    app.stop().await;
    // With the database gone, readiness fails.
    assert!(store.ping().await.is_err());
}
both_backends!(ops_endpoints, health_readiness_and_metrics_answer);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_signs_with_a_kept_development_secret_and_records_would_do() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let mut cfg = config(&db.url, &[]);
    cfg.stream.api_key = None;
    cfg.stream.api_secret = None;
    assert!(!cfg.dry_run());
    assert!(matches!(
        chatguard::app::App::serve(cfg.clone()).await.err(),
        Some(chatguard::app::StartError::NoCredentials)
    ));
    cfg.stream.dry_run = true;
    let app = TestApp::spawn(cfg.clone()).await;
    let (secret, fresh) = app.services.dev_secret().await.unwrap();
    assert!(!fresh, "made at start, kept since");
    assert_eq!(secret.len(), 64);
    let body = message_new("m-dry", "u-dry", "kys loser");
    let key = chatguard::config::DEV_API_KEY;
    assert_eq!(
        app.post_raw(&body, &body, Some(key), Some(SECRET), Some("d0"))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_raw(&body, &body, Some(key), Some(&secret), Some("d1"))
            .await
            .status(),
        200
    );
    wait_settled(app.store()).await;
    let d = app.store().recent_decisions(1).await.unwrap().remove(0);
    assert_eq!(d.decision, "block");
    assert!(d.dry_run);
    assert_eq!(d.action_status, "would_do");
    assert!(d.action.contains("\"call\":\"delete\""), "{}", d.action);
    let would: serde_json::Value = serde_json::from_str(d.would_do.as_deref().unwrap()).unwrap();
    assert_eq!(would["because"], "dry_run");
    assert_eq!(would["strike"], true, "{would}");
    // Nothing that never happened counts: no strike, no ban, no work.
    let standing = app
        .store()
        .user_standing(key, "u-dry", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(standing.active_strikes, 0);
    assert!(!standing.banned_now);
    app.stop().await;
    // The secret survives a restart.
    let again = TestApp::spawn(cfg).await;
    assert_eq!(again.services.dev_secret().await.unwrap(), (secret, false));
    again.stop().await;
}
