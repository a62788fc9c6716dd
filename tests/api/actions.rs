//! End to end: webhooks in, decisions carried out on the Stream stand-in, the moderators channel
//! told, e-mail digests delivered to a real SMTP server on loopback.

use std::time::Duration;

use chatguard::store::DecisionRow;

use crate::both_backends;
use crate::helpers::*;
use crate::smtp_sink::SmtpSink;
use crate::stream_standin::{Op, Scripted, StreamStandin};

const MODS: &str = "team:moderation";

struct Stack {
    app: TestApp,
    stream: StreamStandin,
    smtp: SmtpSink,
}

async fn stack(db: &TestDb, extra: &[(&str, &str)]) -> Stack {
    let stream = StreamStandin::start(API_KEY, SECRET).await;
    let smtp = SmtpSink::start();
    let base = stream.base_url();
    let smtp_url = smtp.url();
    let mut env = vec![
        ("STREAM_BASE_URL", base.as_str()),
        ("CHATGUARD_STREAM__MAX_RETRIES", "3"),
        ("CHATGUARD_STREAM__RETRY_BASE_MS", "50"),
        ("CHATGUARD_STREAM__RETRY_MAX_MS", "2000"),
        ("CHATGUARD_MODERATION_CHANNEL", MODS),
        ("CHATGUARD_SMTP_URL", smtp_url.as_str()),
        ("CHATGUARD_ALERT_FROM", "chatguard <alerts@example.com>"),
        ("CHATGUARD_ALERT_TO", "mods@example.com,lead@example.com"),
        ("CHATGUARD_ALERTS__DIGEST_INTERVAL_MS", "300"),
    ];
    env.extend_from_slice(extra);
    let app = TestApp::spawn(config(&db.url, &env)).await;
    Stack { app, stream, smtp }
}

/// A message.new by a user with a role.
fn message_by(message_id: &str, user_id: &str, role: &str, text: &str) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&message_new(message_id, user_id, text)).expect("json");
    v["message"]["user"]["role"] = serde_json::json!(role);
    v["user"]["role"] = serde_json::json!(role);
    serde_json::to_vec(&v).expect("json")
}

impl Stack {
    async fn post(&self, id: &str, body: &[u8]) {
        let r = self.app.post_webhook(body, id).await;
        assert_eq!(r.status(), 200, "{id}");
    }

    /// The decision for a webhook once its action outcome is recorded.
    async fn acted(&self, webhook_id: &str) -> DecisionRow {
        let store = self.app.store().clone();
        let id = webhook_id.to_owned();
        eventually(Duration::from_secs(20), "the action outcome", move || {
            let store = store.clone();
            let id = id.clone();
            async move {
                let e = store.get_event_by_webhook_id(&id).await.ok()?;
                let d = store.decision_for_event(e.id).await.ok()??;
                (d.action_status != "pending").then_some(d)
            }
        })
        .await
    }

    fn calls(&self, path_part: &str) -> usize {
        self.stream.calls_to(path_part).len()
    }
}

async fn a_toxic_message_is_deleted_noticed_and_mailed(db: &TestDb, _: Backend) {
    let s = stack(db, &[]).await;
    s.post(
        "w1",
        &message_new("m-tox", "u-tox", "kys you worthless idiot"),
    )
    .await;
    let d = s.acted("w1").await;
    assert_eq!(d.decision, "block", "{d:?}");
    assert_eq!(d.action_status, "done", "{d:?}");
    let deletes = s.stream.calls_to("/messages/m-tox");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(
        deletes[0]
            .query
            .iter()
            .any(|(k, v)| k == "hard" && v == "true"),
        "{deletes:?}"
    );
    // The moderators channel got one notice naming the decision.
    let notices = s.stream.messages_in(MODS);
    assert_eq!(notices.len(), 1, "{notices:?}");
    let notice = serde_json::to_string(&notices[0].attachments).unwrap();
    assert!(
        notice.contains("m-tox") && notice.contains(&d.id.to_string()),
        "{notice}"
    );
    // One digest e-mail to both recipients.
    let mails = s.smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to.len(), 2, "{:?}", mails[0].to);
    let body = mails[0].text_part().unwrap_or_default();
    assert!(body.contains("m-tox"), "{body}");
    let store = s.app.store().clone();
    let id = d.id;
    eventually(Duration::from_secs(10), "the digest outcome", move || {
        let store = store.clone();
        async move {
            let d = store.recent_decisions(10).await.ok()?;
            let d = d.into_iter().find(|d| d.id == id)?;
            (d.to_json()["alert_status"] == "sent").then_some(())
        }
    })
    .await;
    s.app.stop().await;
}
both_backends!(
    toxic_end_to_end,
    a_toxic_message_is_deleted_noticed_and_mailed
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borderline_message_is_flagged_only() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    s.post("w1", &message_new("m-bl", "u-bl", "what an idiot"))
        .await;
    let d = s.acted("w1").await;
    assert_eq!(d.decision, "flag", "{d:?}");
    assert_eq!(d.action_status, "done");
    assert_eq!(s.stream.flags().len(), 1);
    assert_eq!(s.calls("/messages/m-bl"), 0);
    assert!(s.stream.messages_in(MODS).is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(s.smtp.messages().is_empty(), "flags are not mailed");
    // The flag opened a review item for moderators.
    let (items, _) = s
        .app
        .store()
        .list_review_items(&chatguard::store::ReviewFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].message_id, "m-bl");
    assert_eq!(items[0].decision_id, d.id);
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_strike_bans_with_the_configured_timeout() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    for i in 0..3 {
        s.post(
            &format!("s{i}"),
            &message_new(&format!("m-s{i}"), "u-repeat", "kys you worthless idiot"),
        )
        .await;
        s.acted(&format!("s{i}")).await;
    }
    let third = s.acted("s2").await;
    assert_eq!(third.decision, "ban", "{third:?}");
    let ban = s.stream.ban("u-repeat", None).expect("banned on Stream");
    assert_eq!(ban.timeout_minutes, Some(60), "{ban:?}");
    assert!(
        ban.reason
            .as_deref()
            .is_some_and(|r| r.contains(&third.id.to_string())),
        "{ban:?}"
    );
    assert!(third.reasons.contains("strike"), "{}", third.reasons);
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_message_is_never_actioned() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    s.post(
        "w1",
        &message_by("m-mod", "u-mod", "moderator", "kys you worthless idiot"),
    )
    .await;
    let d = s.acted("w1").await;
    assert_eq!(d.decision, "block", "decided and logged: {d:?}");
    assert_eq!(d.action_status, "skipped");
    assert!(s.stream.calls().is_empty(), "{:?}", s.stream.calls());
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_calls_nothing() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let rules = tempfile::tempdir().unwrap();
    copy_dir(&rules_dir(), rules.path());
    let policy = rules.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let shadowed = text.replacen("shadow = false", "shadow = true", 1);
    assert_ne!(text, shadowed, "policy.toml has a `shadow = false` line");
    std::fs::write(&policy, shadowed).unwrap();
    let dir = rules.path().display().to_string();
    let s = stack(&db, &[("CHATGUARD_RULES", dir.as_str())]).await;
    s.post(
        "w1",
        &message_new("m-sh", "u-sh", "kys you worthless idiot"),
    )
    .await;
    let d = s.acted("w1").await;
    assert_eq!(d.decision, "block");
    assert_eq!(d.action_status, "skipped");
    assert!(s.stream.calls().is_empty(), "{:?}", s.stream.calls());
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_then_success_ends_in_one_delete() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    let reset = chrono::Utc::now().timestamp() as u64 + 1;
    s.stream
        .push_scripted(Op::DeleteMessage, Scripted::rate_limited(reset), 1);
    s.post(
        "w1",
        &message_new("m-rl", "u-rl", "kys you worthless idiot"),
    )
    .await;
    let d = s.acted("w1").await;
    assert_eq!(d.action_status, "done", "{d:?}");
    assert_eq!(s.calls("/messages/m-rl"), 2, "a 429, then the delete");
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_webhook_makes_one_delete() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    let body = message_new("m-dup", "u-dup", "kys you worthless idiot");
    s.post("w-dup", &body).await;
    s.post("w-dup", &body).await;
    s.acted("w-dup").await;
    wait_settled(s.app.store()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.calls("/messages/m-dup"), 1);
    assert_eq!(s.stream.messages_in(MODS).len(), 1);
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_down_is_retried_then_recorded_as_failed_past_the_horizon() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[("CHATGUARD_ACTIONS__RETRY_HORIZON_SECS", "1")]).await;
    s.stream.push_scripted(
        "*",
        Scripted::stream_error(503, -1, "service unavailable"),
        100,
    );
    s.post(
        "w1",
        &message_new("m-down", "u-down", "kys you worthless idiot"),
    )
    .await;
    let d = s.acted("w1").await;
    assert_eq!(d.decision, "block");
    assert_eq!(d.action_status, "failed", "{d:?}");
    // Each try makes 1 + 3 client retries; the runner tries again until the 1 s horizon.
    let tries = s.calls("/messages/m-down");
    assert!(
        (8..=40).contains(&tries),
        "retried with backoff within the horizon: {tries}"
    );
    let result = d.to_json()["action_result"].to_string();
    assert!(
        result.contains("503") || result.contains("unavailable"),
        "{result}"
    );
    s.app.stop().await;
    db.cleanup().await;
}

fn ban_event(kind: &str, user_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": kind,
        "user": {"id": user_id, "role": "user"},
        "created_by": {"id": "mod_jen", "role": "admin"},
        "reason": "spamming",
        "created_at": chrono::Utc::now().to_rfc3339(),
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_from_stream_keep_the_users_state_right() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    let user = "u-banned";
    // Two strikes, then a moderator bans the user on Stream (permanent: no expiration).
    for i in 0..2 {
        let id = format!("b{i}");
        s.post(
            &id,
            &message_new(&format!("m-b{i}"), user, "kys you worthless idiot"),
        )
        .await;
        s.acted(&id).await;
    }
    s.post("ban", &ban_event("user.banned", user)).await;
    wait_settled(s.app.store()).await;
    let banned = s
        .app
        .store()
        .user_standing(API_KEY, user, chrono::Utc::now())
        .await
        .unwrap()
        .banned_now;
    assert!(banned);
    // A third strike while banned: blocked, no second ban.
    s.post("b2", &message_new("m-b2", user, "kys you worthless idiot"))
        .await;
    let third = s.acted("b2").await;
    assert_eq!(third.decision, "block", "{third:?}");
    assert!(s.stream.calls_to("/moderation/ban").is_empty());
    // Unbanned on Stream: the next strike bans again (chatguard's first ban: 60 min).
    s.post("unban", &ban_event("user.unbanned", user)).await;
    wait_settled(s.app.store()).await;
    s.post("b3", &message_new("m-b3", user, "kys you worthless idiot"))
        .await;
    let fourth = s.acted("b3").await;
    assert_eq!(fourth.decision, "ban", "{fourth:?}");
    assert_eq!(
        s.stream.ban(user, None).and_then(|b| b.timeout_minutes),
        Some(60)
    );
    s.app.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_deletes_and_bot_messages_are_left_alone() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    let deleted = serde_json::to_vec(&serde_json::json!({
        "type": "message.deleted",
        "cid": "messaging:general",
        "message": {"id": "m-x", "text": "kys", "user": {"id": "someone"}},
        "user": {"id": "chatguard-bot", "role": "admin"},
        "hard_delete": true,
    }))
    .unwrap();
    let r = s.app.post_webhook(&deleted, "own-1").await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "own"
    );
    let bot = message_by("m-bot", "chatguard-bot", "admin", "kys you worthless idiot");
    let r = s.app.post_webhook(&bot, "own-2").await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "own"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.stream.calls().is_empty(), "{:?}", s.stream.calls());
    assert_eq!(s.app.store().count_decisions().await.unwrap(), 0);
    s.app.stop().await;
    db.cleanup().await;
}

/// Latency from the webhook's arrival to the Stream call it causes, at a steady rate.
/// `cargo test --release --test api actions::action_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn action_latency_at_a_steady_rate() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = stack(&db, &[]).await;
    let (rate, seconds) = (100u64, 10u64);
    let mut sent = Vec::new();
    let start = std::time::Instant::now();
    for i in 0..rate * seconds {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("lat-{i}");
        let body = message_new(
            &format!("m-lat-{i}"),
            &format!("u-lat-{i}"),
            "kys you worthless idiot",
        );
        let t = std::time::Instant::now();
        s.post(&id, &body).await;
        sent.push((format!("/messages/m-lat-{i}"), t));
    }
    wait_settled(s.app.store()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = s.stream.calls();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(path, t)| {
            calls
                .iter()
                .find(|c| &c.path == path)
                .map(|c| c.instant.duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    assert_eq!(lat.len(), sent.len(), "every message was deleted");
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    eprintln!(
        "webhook → Stream delete at {rate}/s for {seconds} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    s.app.stop().await;
    db.cleanup().await;
}
