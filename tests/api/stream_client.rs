//! The Stream REST client against the local Stream stand-in: exact requests, auth, retries,
//! rate limits, timeouts and idempotent sends.

use std::time::{Duration, UNIX_EPOCH};

use chatguard::actions::stream::{
    Attachment, AttachmentField, BanRequest, OutgoingMessage, StreamClient, StreamClientConfig,
    StreamError,
};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{API_KEY, SECRET};
use crate::stream_standin::{Call, Op, Scripted, StreamStandin};

const CID: &str = "messaging:general";

fn fast_config(standin: &StreamStandin) -> StreamClientConfig {
    StreamClientConfig {
        base_url: standin.base_url(),
        timeout_ms: 2_000,
        max_retries: 4,
        retry_base_ms: 5,
        retry_max_ms: 5_000,
    }
}

fn client_with(cfg: StreamClientConfig) -> StreamClient {
    StreamClient::new(API_KEY, &SecretString::from(SECRET), &cfg).unwrap()
}

fn client(standin: &StreamStandin) -> StreamClient {
    client_with(fast_config(standin))
}

/// What §4.1 requires on every request, checked independently of the stand-in's own checks.
fn assert_server_auth(call: &Call) {
    assert_eq!(call.query_param("api_key"), Some(API_KEY), "{call:?}");
    let token = call.header("authorization").expect("Authorization sent");
    assert!(!token.starts_with("Bearer"), "bare token expected: {token}");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("token signed with the app secret")
    .claims;
    assert_eq!(claims, json!({"server": true}));
    assert_eq!(call.header("stream-auth-type"), Some("jwt"));
    assert_eq!(
        call.header("x-stream-client"),
        Some(format!("chatguard-{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    if call.body.is_some() {
        assert_eq!(call.header("content-type"), Some("application/json"));
    }
}

/// The query without `api_key`.
fn params(call: &Call) -> Vec<(&str, &str)> {
    call.query
        .iter()
        .filter(|(k, _)| k != "api_key")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn only_call(standin: &StreamStandin) -> Call {
    let calls = standin.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    calls.into_iter().next().unwrap()
}

#[tokio::test]
async fn flag_and_unflag_send_the_documented_requests() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.set_strict(true);
    standin.add_message(CID, "msg-1", "alice", "hello");
    let client = client(&standin);

    client
        .flag_message("msg-1", "chatguard-bot", Some("toxicity 0.93"))
        .await
        .unwrap();
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/moderation/flag")
    );
    assert_eq!(params(&call), []);
    assert_eq!(
        call.body,
        Some(
            json!({"target_message_id": "msg-1", "user_id": "chatguard-bot", "reason": "toxicity 0.93"})
        )
    );
    assert_eq!(call.status, Some(201));
    assert_eq!(standin.flags().len(), 1);

    standin.clear_calls();
    client
        .unflag_message("msg-1", "chatguard-bot")
        .await
        .unwrap();
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/moderation/unflag")
    );
    assert_eq!(
        call.body,
        Some(json!({"target_message_id": "msg-1", "user_id": "chatguard-bot"}))
    );
    assert!(standin.flags().is_empty());

    // Without a reason the field is left out.
    standin.clear_calls();
    client
        .flag_message("msg-1", "chatguard-bot", None)
        .await
        .unwrap();
    assert_eq!(
        only_call(&standin).body,
        Some(json!({"target_message_id": "msg-1", "user_id": "chatguard-bot"}))
    );
}

#[tokio::test]
async fn delete_sends_hard_and_deleted_by_as_query_and_repeats_succeed() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.set_strict(true);
    standin.add_message(CID, "msg/1 ü", "alice", "bad words");
    standin.add_message(CID, "msg-2", "alice", "worse words");
    let client = client(&standin);

    client.delete_message("msg-2", false, None).await.unwrap();
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("DELETE", "/messages/msg-2")
    );
    assert_eq!(params(&call), []);
    assert_eq!(call.body, None);
    assert_eq!(standin.message("msg-2").unwrap().deleted, Some(false));

    // An id with a slash, a space and a non-ASCII letter is one percent-encoded segment.
    standin.clear_calls();
    client
        .delete_message("msg/1 ü", true, Some("chatguard-bot"))
        .await
        .unwrap();
    let call = only_call(&standin);
    assert_eq!(call.path, "/messages/msg%2F1%20%C3%BC");
    assert_eq!(
        params(&call),
        [("hard", "true"), ("deleted_by", "chatguard-bot")]
    );
    let stored = standin.message("msg/1 ü").unwrap();
    assert_eq!(
        (stored.deleted, stored.deleted_by.as_deref()),
        (Some(true), Some("chatguard-bot"))
    );

    // The stand-in answers 404 (code 16) for a hard-deleted message; deleting again succeeds.
    standin.clear_calls();
    client.delete_message("msg/1 ü", true, None).await.unwrap();
    assert_eq!(only_call(&standin).status, Some(404));
}

#[tokio::test]
async fn ban_and_unban_send_the_documented_requests_and_repeats_succeed() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let client = client(&standin);
    let ban = BanRequest {
        target_user_id: "mallory".into(),
        banned_by_id: "chatguard-bot".into(),
        channel_cid: Some(CID.into()),
        timeout_minutes: Some(60),
        reason: Some("spam".into()),
        shadow: true,
    };

    client.ban_user(&ban).await.unwrap();
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/moderation/ban")
    );
    assert_eq!(
        call.body,
        Some(json!({
            "target_user_id": "mallory", "banned_by_id": "chatguard-bot", "channel_cid": CID,
            "timeout": 60, "reason": "spam", "shadow": true
        }))
    );
    let stored = standin
        .ban("mallory", Some(CID))
        .expect("channel ban stored");
    assert_eq!((stored.timeout_minutes, stored.shadow), (Some(60), true));

    // Banning again updates the ban and succeeds.
    client.ban_user(&ban).await.unwrap();
    assert_eq!(standin.calls_to("/moderation/ban").len(), 2);

    // An app-wide permanent ban sends only the required fields.
    standin.clear_calls();
    let app_wide = BanRequest {
        channel_cid: None,
        timeout_minutes: None,
        reason: None,
        shadow: false,
        ..ban.clone()
    };
    client.ban_user(&app_wide).await.unwrap();
    assert_eq!(
        only_call(&standin).body,
        Some(json!({"target_user_id": "mallory", "banned_by_id": "chatguard-bot"}))
    );
    assert!(standin.ban("mallory", None).is_some());

    standin.clear_calls();
    client.unban_user("mallory", Some(CID)).await.unwrap();
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("DELETE", "/moderation/ban")
    );
    assert_eq!(
        params(&call),
        [("target_user_id", "mallory"), ("channel_cid", CID)]
    );
    assert_eq!(call.body, None);
    assert!(standin.ban("mallory", Some(CID)).is_none());
    assert!(
        standin.ban("mallory", None).is_some(),
        "the app-wide ban stays"
    );

    client.unban_user("mallory", None).await.unwrap();
    assert!(standin.ban("mallory", None).is_none());
}

#[tokio::test]
async fn get_or_create_and_send_message_send_the_documented_requests() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let client = client(&standin);

    client
        .get_or_create_channel("messaging:mods", "chatguard-bot")
        .await
        .unwrap();
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/channels/messaging/mods/query")
    );
    assert_eq!(
        call.body,
        Some(
            json!({"data": {"created_by_id": "chatguard-bot"}, "state": true, "watch": false, "presence": false})
        )
    );
    assert_eq!(
        standin.channel_created_by("messaging:mods").as_deref(),
        Some("chatguard-bot")
    );

    standin.clear_calls();
    let message = OutgoingMessage {
        text: "Flagged: message msg-1 by alice".into(),
        attachments: vec![Attachment {
            title: Some("toxicity".into()),
            color: Some("#d33".into()),
            fields: vec![AttachmentField {
                title: "score".into(),
                value: "0.93".into(),
                short: true,
            }],
            ..Attachment::default()
        }],
        id: Some("alert-1".into()),
    };
    let sent = client
        .send_message("messaging:mods", "chatguard-bot", &message)
        .await
        .unwrap();
    assert_eq!(sent.id, "alert-1");
    let call = only_call(&standin);
    assert_server_auth(&call);
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/channels/messaging/mods/message")
    );
    assert_eq!(
        call.body,
        Some(json!({"message": {
            "id": "alert-1",
            "text": "Flagged: message msg-1 by alice",
            "user_id": "chatguard-bot",
            "attachments": [{"title": "toxicity", "color": "#d33",
                             "fields": [{"title": "score", "value": "0.93", "short": true}]}]
        }}))
    );
    let stored = standin.messages_in("messaging:mods");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].user_id.as_str(), stored[0].text.as_str()),
        ("chatguard-bot", "Flagged: message msg-1 by alice")
    );
}

#[tokio::test]
async fn a_send_without_an_id_gets_a_client_chosen_one() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.create_channel(CID);
    let client = client(&standin);
    let message = OutgoingMessage {
        text: "hi".into(),
        ..OutgoingMessage::default()
    };

    let a = client
        .send_message(CID, "chatguard-bot", &message)
        .await
        .unwrap();
    let b = client
        .send_message(CID, "chatguard-bot", &message)
        .await
        .unwrap();

    assert_ne!(a.id, b.id);
    let sent_ids: Vec<Value> = standin
        .calls()
        .iter()
        .map(|c| c.body.as_ref().unwrap()["message"]["id"].clone())
        .collect();
    assert_eq!(sent_ids, [json!(a.id), json!(b.id)]);
    assert_eq!(standin.messages_in(CID).len(), 2);
}

#[tokio::test]
async fn wrong_secret_is_refused_once_with_a_parsed_error() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let cfg = fast_config(&standin);
    let client = StreamClient::new(API_KEY, &SecretString::from("not-the-secret"), &cfg).unwrap();

    let err = client
        .flag_message("msg-1", "chatguard-bot", None)
        .await
        .unwrap_err();

    let StreamError::Api {
        status,
        code,
        ref message,
        ref more_info,
        ..
    } = err
    else {
        panic!("expected an Api error, got {err:?}");
    };
    assert_eq!((status, code), (401, Some(43)), "{message}");
    assert!(message.contains("JWTAuth"), "{message}");
    assert!(more_info.is_some());
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(401));
    assert_eq!(only_call(&standin).status, Some(401));
}

#[tokio::test]
async fn wrong_api_key_is_refused_with_code_2() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let cfg = fast_config(&standin);
    let client = StreamClient::new("other-key", &SecretString::from(SECRET), &cfg).unwrap();

    let err = client.unban_user("mallory", None).await.unwrap_err();

    assert!(
        matches!(
            err,
            StreamError::Api {
                status: 401,
                code: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(standin.calls().len(), 1);
}

#[tokio::test]
async fn rate_limited_call_waits_until_the_reset_then_succeeds() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let reset = UNIX_EPOCH.elapsed().unwrap().as_secs() + 1;
    standin.push_scripted(Op::Flag, Scripted::rate_limited(reset), 1);
    let client = client(&standin);

    client
        .flag_message("msg-1", "chatguard-bot", None)
        .await
        .unwrap();

    let calls = standin.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!((calls[0].status, calls[1].status), (Some(429), Some(201)));
    let retried_at = calls[1].at.duration_since(UNIX_EPOCH).unwrap();
    assert!(
        retried_at >= Duration::from_secs(reset),
        "retried at {retried_at:?}, before the reset at {reset} s"
    );
    assert!(
        retried_at < Duration::from_secs(reset) + Duration::from_secs(1),
        "retried at {retried_at:?}, long after the reset at {reset} s"
    );
}

#[tokio::test]
async fn a_rate_limit_wait_is_capped_at_retry_max() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let reset = UNIX_EPOCH.elapsed().unwrap().as_secs() + 3_600;
    standin.push_scripted(Op::Ban, Scripted::rate_limited(reset), 2);
    let cfg = StreamClientConfig {
        max_retries: 1,
        retry_max_ms: 300,
        ..fast_config(&standin)
    };
    let client = client_with(cfg);
    let ban = BanRequest {
        target_user_id: "mallory".into(),
        banned_by_id: "chatguard-bot".into(),
        channel_cid: None,
        timeout_minutes: None,
        reason: None,
        shadow: false,
    };

    let err = client.ban_user(&ban).await.unwrap_err();

    let StreamError::RateLimited {
        limit,
        remaining,
        reset: got_reset,
        ..
    } = err
    else {
        panic!("expected RateLimited, got {err:?}");
    };
    assert_eq!(
        (limit, remaining, got_reset),
        (Some(300), Some(0), Some(reset))
    );
    let calls = standin.calls();
    assert_eq!(calls.len(), 2);
    let waited = calls[1].instant - calls[0].instant;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1_500),
        "{waited:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.add_message(CID, "msg-1", "alice", "x");
    standin.push_scripted(
        Op::DeleteMessage,
        Scripted::stream_error(500, -1, "internal error"),
        2,
    );
    let client = client(&standin);

    client.delete_message("msg-1", true, None).await.unwrap();

    let statuses: Vec<_> = standin.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    assert_eq!(standin.message("msg-1").unwrap().deleted, Some(true));
}

#[tokio::test]
async fn a_persistent_server_error_gives_up_after_max_retries() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.push_scripted("*", Scripted::text(503, "upstream unavailable"), usize::MAX);
    let cfg = StreamClientConfig {
        max_retries: 3,
        ..fast_config(&standin)
    };
    let client = client_with(cfg);

    let err = client
        .unflag_message("msg-1", "chatguard-bot")
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StreamError::Api { status: 503, code: None, message, .. } if message == "upstream unavailable"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(standin.calls().len(), 1 + 3);
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let client = client(&standin);
    let ban = BanRequest {
        target_user_id: "mallory".into(),
        banned_by_id: "chatguard-bot".into(),
        channel_cid: Some("messaging:no-such-channel".into()),
        timeout_minutes: None,
        reason: None,
        shadow: false,
    };
    standin.set_strict(true);

    // A scripted 400 with validation details ...
    standin.push_response(
        "/moderation/ban",
        400,
        &[],
        json!({"code": 4, "message": "Ban failed with error: \"reason is too long\"", "StatusCode": 400,
               "duration": "0.10ms", "more_info": "https://getstream.io/chat/docs/api_errors_response",
               "details": [], "exception_fields": {"reason": "reason is too long"}}),
    );
    let err = client.ban_user(&ban).await.unwrap_err();
    let StreamError::Api {
        status,
        code,
        ref exception_fields,
        ..
    } = err
    else {
        panic!("expected an Api error, got {err:?}");
    };
    assert_eq!((status, code), (400, Some(4)));
    assert_eq!(
        exception_fields.get("reason").map(String::as_str),
        Some("reason is too long")
    );
    assert!(!err.is_retryable());
    assert_eq!(standin.calls().len(), 1);

    // ... and the stand-in's own 404 for a channel it does not know.
    let err = client.ban_user(&ban).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(404), Some(16)));
    assert_eq!(standin.calls().len(), 2);
}

#[tokio::test]
async fn a_timeout_is_retried_then_reported() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.push_scripted(
        Op::Flag,
        Scripted::json(201, json!({})).delay(Duration::from_secs(2)),
        usize::MAX,
    );
    let cfg = StreamClientConfig {
        timeout_ms: 150,
        max_retries: 2,
        ..fast_config(&standin)
    };
    let client = client_with(cfg);

    let started = std::time::Instant::now();
    let err = client
        .flag_message("msg-1", "chatguard-bot", None)
        .await
        .unwrap_err();

    assert!(
        matches!(err, StreamError::Timeout { timeout_ms: 150 }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let calls = standin.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|c| c.status.is_none()),
        "the client gave up before every answer"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_stream_is_a_retryable_transport_error() {
    // A port nothing listens on any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cfg = StreamClientConfig {
        base_url: closed,
        max_retries: 1,
        retry_base_ms: 1,
        ..StreamClientConfig::default()
    };
    let client = StreamClient::new(API_KEY, &SecretString::from(SECRET), &cfg).unwrap();

    let err = client.unban_user("mallory", None).await.unwrap_err();

    assert!(matches!(err, StreamError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), None);
}

#[tokio::test]
async fn send_to_a_missing_channel_creates_it_then_sends() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let client = client(&standin);
    let message = OutgoingMessage {
        text: "hello moderators".into(),
        id: Some("alert-7".into()),
        ..OutgoingMessage::default()
    };

    let sent = client
        .send_message("messaging:mod-alerts", "chatguard-bot", &message)
        .await
        .unwrap();

    assert_eq!(sent.id, "alert-7");
    let calls: Vec<_> = standin
        .calls()
        .iter()
        .map(|c| (c.path.clone(), c.status))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "/channels/messaging/mod-alerts/message".to_owned(),
                Some(404)
            ),
            ("/channels/messaging/mod-alerts/query".to_owned(), Some(201)),
            (
                "/channels/messaging/mod-alerts/message".to_owned(),
                Some(201)
            ),
        ]
    );
    assert_eq!(
        standin
            .channel_created_by("messaging:mod-alerts")
            .as_deref(),
        Some("chatguard-bot")
    );
    assert_eq!(standin.messages_in("messaging:mod-alerts").len(), 1);
}

#[tokio::test]
async fn resending_the_same_message_id_does_not_duplicate() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.create_channel(CID);
    let client = client(&standin);
    let message = OutgoingMessage {
        text: "user alice banned".into(),
        id: Some("decision-42-alert".into()),
        ..OutgoingMessage::default()
    };

    let first = client
        .send_message(CID, "chatguard-bot", &message)
        .await
        .unwrap();
    let second = client
        .send_message(CID, "chatguard-bot", &message)
        .await
        .unwrap();

    assert_eq!(
        (first.id.as_str(), second.id.as_str()),
        ("decision-42-alert", "decision-42-alert")
    );
    let statuses: Vec<_> = standin.calls().iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [Some(201), Some(400)],
        "the stand-in refused the duplicate"
    );
    assert_eq!(standin.messages_in(CID).len(), 1);
}

#[tokio::test]
async fn a_send_stored_but_answered_too_late_is_not_duplicated_by_the_retry() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.create_channel(CID);
    // Stream stores the message but the answer comes after the client's timeout.
    standin.push_scripted(Op::SendMessage, Scripted::late(Duration::from_secs(2)), 1);
    let cfg = StreamClientConfig {
        timeout_ms: 200,
        ..fast_config(&standin)
    };
    let client = client_with(cfg);
    let message = OutgoingMessage {
        text: "retry me".into(),
        ..OutgoingMessage::default()
    };

    let sent = client
        .send_message(CID, "chatguard-bot", &message)
        .await
        .unwrap();

    let calls = standin.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!((calls[0].status, calls[1].status), (None, Some(400)));
    assert_eq!(
        calls[0].body.as_ref().unwrap()["message"]["id"],
        calls[1].body.as_ref().unwrap()["message"]["id"],
        "the retry reuses the id"
    );
    let stored = standin.messages_in(CID);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, sent.id);
}

#[tokio::test]
async fn invalid_arguments_are_refused_before_any_call() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let client = client(&standin);
    let message = OutgoingMessage {
        text: "x".into(),
        ..OutgoingMessage::default()
    };

    let errors = [
        client.flag_message("", "bot", None).await.unwrap_err(),
        client.delete_message(" ", true, None).await.unwrap_err(),
        client
            .unban_user("mallory", Some("no-colon"))
            .await
            .unwrap_err(),
        client
            .send_message("messaging:", "bot", &message)
            .await
            .unwrap_err(),
        client.get_or_create_channel(CID, "").await.unwrap_err(),
    ];

    for err in &errors {
        assert!(matches!(err, StreamError::InvalidArgument(_)), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert!(standin.calls().is_empty());
}

// The stand-in itself: it must refuse what Stream refuses, or the tests above prove nothing.

#[tokio::test]
async fn standin_refuses_requests_stream_would_refuse() {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}?api_key={API_KEY}", standin.base_url());
    let token = {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"server": true}),
            &key,
        )
        .unwrap()
    };
    let user_token = {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"user_id": "alice"}),
            &key,
        )
        .unwrap()
    };
    let send = |path: &str, method: reqwest::Method, auth: Option<String>| {
        let mut req = http
            .request(method, url(path))
            .header("stream-auth-type", "jwt")
            .header("x-stream-client", "test")
            .json(&json!({"target_message_id": "m", "user_id": "u"}));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    let answer = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["StatusCode"], json!(status), "{body}");
        assert!(
            body["message"].is_string() && body["more_info"].is_string(),
            "{body}"
        );
        (status, body["code"].as_i64())
    };

    let ok = send(
        "/moderation/flag",
        reqwest::Method::POST,
        Some(token.clone()),
    )
    .await
    .unwrap();
    assert_eq!(ok.status().as_u16(), 201);
    assert!(ok.headers().contains_key("x-ratelimit-reset"));

    let cases = [
        (
            "/moderation/flag",
            reqwest::Method::POST,
            None,
            (401, Some(5)),
        ),
        (
            "/moderation/flag",
            reqwest::Method::POST,
            Some(format!("Bearer {token}")),
            (401, Some(5)),
        ),
        (
            "/moderation/flag",
            reqwest::Method::POST,
            Some(user_token),
            (401, Some(5)),
        ),
        (
            "/moderation/flag",
            reqwest::Method::GET,
            Some(token.clone()),
            (405, Some(4)),
        ),
        (
            "/moderation/mute",
            reqwest::Method::POST,
            Some(token.clone()),
            (501, Some(-1)),
        ),
        (
            "/no/such/path",
            reqwest::Method::POST,
            Some(token.clone()),
            (404, Some(16)),
        ),
    ];
    for (path, method, auth, expected) in cases {
        let resp = send(path, method.clone(), auth).await.unwrap();
        assert_eq!(answer(resp).await, expected, "{method} {path}");
    }

    let no_key = http
        .post(format!("{}/moderation/flag", standin.base_url()))
        .header("authorization", token.clone())
        .header("stream-auth-type", "jwt")
        .header("x-stream-client", "test")
        .json(&json!({"target_message_id": "m", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(no_key).await, (401, Some(2)));

    // Server-side channel creation without a creator: §4.1's error.
    let resp = http
        .post(url("/channels/messaging/x/query"))
        .header("authorization", token)
        .header("stream-auth-type", "jwt")
        .header("x-stream-client", "test")
        .json(&json!({"data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(resp).await, (400, Some(4)));
    assert!(!standin.channel_exists("messaging:x"));
    assert_eq!(standin.calls().len(), 9);
}
