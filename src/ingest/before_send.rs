//! `POST /webhooks/stream/before-message-send`: Stream's synchronous pre-send hook (stream-api.md
//! §3). The delivery gets the push webhook's checks (size caps, gunzip, signature), then the rules
//! in force score and decide it inline. A block answers 200 with an error-type message; anything
//! else echoes the received message unchanged. Stream waits 1 s and then saves the message anyway,
//! so past our own, shorter deadline we let it through too (fail open). Only after the answer is
//! computed is the delivery stored and queued, in a spawned task, as a [`EVENT_TYPE`] event: the
//! worker logs the decision and runs the slow follow-ups (strikes, bans, notifications, e-mail).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::{EventWriter, Stored, header, verify_delivery};
use crate::domain::Decision;
use crate::engine::{ScoreContext, Scorer};
use crate::error::ApiError;
use crate::reload::RulesHandle;
use crate::store::{NewEvent, status};

/// The route Stream's `before_message_send_hook_url` points at.
pub const PATH: &str = "/webhooks/stream/before-message-send";

/// The event type a hook delivery is stored under. Stream has no such event: the stored payload
/// is the received body (`message`, `user`, `channel`, `request_info`) with `type` set to this,
/// `cid`/`channel_type`/`channel_id` copied from `channel`, and a `before_send` object saying what
/// was answered (`answer`: `allow`, `block` or `fail_open`; `decision`; `policy_version`;
/// `rules_generation`; `elapsed_us`).
pub const EVENT_TYPE: &str = "message.before_send";

/// The text a blocked sender sees, until configuration provides one.
pub const DEFAULT_BLOCK_TEXT: &str = "This message was blocked by the moderators' rules.";

/// The handler's own deadline, well inside Stream's 1 s, until configuration provides one.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(300);

/// What the hook needs: whose signatures to accept, the rules, and where to log decisions.
#[derive(Clone)]
pub struct BeforeSendState {
    /// API key → API secret; the same map as the push webhook route.
    pub secrets: Arc<HashMap<String, SecretString>>,
    pub rules: RulesHandle,
    /// Logs the decision and queues the follow-ups; share the push route's writer.
    pub writer: EventWriter,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    /// Own deadline, counted from the start of the handler; past it the message is let through
    /// (fail open) and a warning logged. `Duration::ZERO` always fails open.
    pub deadline: Duration,
    /// The text of the error message a blocked sender sees.
    pub block_text: Arc<str>,
}

/// `POST /webhooks/stream/before-message-send`.
pub fn router(state: BeforeSendState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// What the hook answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Allow,
    Block,
    FailOpen,
}

impl Answer {
    fn as_str(self) -> &'static str {
        match self {
            Answer::Allow => "allow",
            Answer::Block => "block",
            Answer::FailOpen => "fail_open",
        }
    }
}

/// The fields of the hook's body the decision needs; `message` stays raw so it can be echoed
/// byte for byte.
#[derive(Deserialize)]
struct HookBody<'a> {
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    user: Option<UserRef>,
    channel: Option<ChannelRef>,
}

#[derive(Deserialize)]
struct UserRef {
    id: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize)]
struct ChannelRef {
    cid: Option<String>,
    #[serde(rename = "type")]
    channel_type: Option<String>,
    id: Option<String>,
}

#[derive(Deserialize)]
struct MessageRef<'a> {
    id: Option<String>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// A decided delivery, to be stored after the answer has gone out.
struct ToLog {
    api_key: String,
    body: Bytes,
    message_id: Option<String>,
    cid: Option<String>,
    channel_type: Option<String>,
    channel_id: Option<String>,
    user_id: Option<String>,
    answer: Answer,
    decision: Decision,
    policy_version: String,
    rules_generation: u64,
    elapsed: Duration,
}

async fn receive(
    State(state): State<BeforeSendState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let webhook_id = header(&headers, "x-webhook-id")
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "before_send",
        webhook_id = %webhook_id,
        user_id = tracing::field::Empty,
        user_role = tracing::field::Empty,
    );
    let result = span.in_scope(|| decide(&state, &headers, body, started));
    let (response, outcome) = match result {
        Ok((json, log)) => {
            let outcome = log.answer.as_str();
            let writer = state.writer.clone();
            tokio::spawn(store(writer, webhook_id, log).instrument(span));
            let headers = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
            ((headers, json).into_response(), outcome)
        }
        Err(e) => (e.into_response(), "refused"),
    };
    metrics::histogram!("chatguard_before_send_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("chatguard_before_send_total", "outcome" => outcome).increment(1);
    response
}

/// Verifies, parses, scores and decides; returns the response body and what to log.
fn decide(
    state: &BeforeSendState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<(String, ToLog), ApiError> {
    let (api_key, body) = verify_delivery(
        &state.secrets,
        state.max_body_bytes,
        state.max_decompressed_bytes,
        headers,
        body,
    )?;
    let hook: HookBody<'_> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a before-message-send body: {e}")))?;
    let raw_message = hook
        .message
        .filter(|m| m.get().starts_with('{'))
        .ok_or_else(|| ApiError::BadRequest("body has no message object".into()))?;
    let message: MessageRef<'_> = serde_json::from_str(raw_message.get())
        .map_err(|e| ApiError::BadRequest(format!("message: {e}")))?;
    let span = tracing::Span::current();
    let (user_id, role) = hook.user.map_or((None, None), |u| (u.id, u.role));
    if let Some(id) = &user_id {
        span.record("user_id", id.as_str());
    }
    if let Some(role) = &role {
        span.record("user_role", role.as_str());
    }
    let (cid, channel_type, channel_id) = hook
        .channel
        .map_or((None, None, None), |c| (c.cid, c.channel_type, c.id));
    let channel_type = channel_type.or_else(|| {
        cid.as_deref()
            .and_then(|c| c.split_once(':'))
            .map(|(t, _)| t.to_owned())
    });

    let rules = state.rules.current();
    let ctx = ScoreContext {
        channel_type: channel_type.as_deref(),
        activity: None,
        skip_explanations: true,
    };
    let assessment = rules
        .engine
        .assess(message.text.as_deref().unwrap_or(""), &ctx);
    // Strikes and bans need the database: the worker applies them from the stored event.
    let verdict = rules.policy.decide_in(
        &assessment,
        &crate::policy::PolicyContext {
            channel_type: channel_type.as_deref(),
            user_role: role.as_deref(),
            ..Default::default()
        },
    );
    let elapsed = started.elapsed();
    let answer = if elapsed >= state.deadline {
        tracing::warn!(
            elapsed_us = elapsed.as_micros() as u64,
            deadline_ms = state.deadline.as_millis() as u64,
            decision = verdict.decision.as_str(),
            "before-message-send deadline passed; failing open"
        );
        Answer::FailOpen
    } else if verdict.decision >= Decision::Block && !verdict.shadow && !verdict.exempt {
        Answer::Block
    } else {
        Answer::Allow
    };
    tracing::info!(
        answer = answer.as_str(),
        decision = verdict.decision.as_str(),
        elapsed_us = elapsed.as_micros() as u64,
        "before-message-send answered"
    );
    let json = match answer {
        Answer::Block => {
            serde_json::json!({"message": {"type": "error", "text": &*state.block_text}})
                .to_string()
        }
        Answer::Allow | Answer::FailOpen => format!("{{\"message\":{}}}", raw_message.get()),
    };
    let log = ToLog {
        api_key: api_key.to_owned(),
        message_id: message.id.filter(|id| !id.is_empty()),
        cid: cid.or_else(|| {
            channel_type
                .as_deref()
                .zip(channel_id.as_deref())
                .map(|(t, i)| format!("{t}:{i}"))
        }),
        channel_type,
        channel_id,
        user_id,
        answer,
        decision: verdict.decision,
        policy_version: rules.policy.version.clone(),
        rules_generation: rules.generation,
        elapsed,
        body,
    };
    Ok((json, log))
}

/// Stores the delivery as a queued [`EVENT_TYPE`] event; failures are logged, since the answer
/// has already gone out.
async fn store(writer: EventWriter, webhook_id: String, log: ToLog) {
    let new = match event(webhook_id, log) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "before-message-send delivery not logged: bad body");
            return;
        }
    };
    match writer.write(new).await {
        Ok(Stored::New { id }) => tracing::debug!(event_id = id, "before-message-send logged"),
        Ok(Stored::Duplicate { id, .. }) => {
            tracing::info!(event_id = id, "before-message-send delivery seen before")
        }
        Err(e) => tracing::error!(error = %e, "before-message-send delivery not logged"),
    }
}

fn event(webhook_id: String, log: ToLog) -> Result<NewEvent, serde_json::Error> {
    let mut payload: Map<String, Value> = serde_json::from_slice(&log.body)?;
    payload.insert("type".into(), EVENT_TYPE.into());
    for (key, value) in [
        ("cid", &log.cid),
        ("channel_type", &log.channel_type),
        ("channel_id", &log.channel_id),
    ] {
        if let Some(v) = value {
            payload
                .entry(key)
                .or_insert_with(|| Value::String(v.clone()));
        }
    }
    let received_at = chrono::Utc::now();
    payload
        .entry("created_at")
        .or_insert_with(|| Value::String(received_at.to_rfc3339()));
    payload.insert(
        "before_send".into(),
        serde_json::json!({
            "answer": log.answer.as_str(),
            "decision": log.decision.as_str(),
            "policy_version": log.policy_version,
            "rules_generation": log.rules_generation,
            "elapsed_us": log.elapsed.as_micros() as u64,
        }),
    );
    Ok(NewEvent {
        webhook_id,
        content_key: None,
        api_key: log.api_key,
        event_type: EVENT_TYPE.to_owned(),
        status: status::RECEIVED,
        message_id: log.message_id,
        cid: log.cid,
        user_id: log.user_id,
        payload: Value::Object(payload).to_string(),
        received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(body: &str) -> ToLog {
        ToLog {
            api_key: "k".into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            message_id: None,
            cid: Some("messaging:general".into()),
            channel_type: Some("messaging".into()),
            channel_id: Some("general".into()),
            user_id: Some("u1".into()),
            answer: Answer::Block,
            decision: Decision::Block,
            policy_version: "p1".into(),
            rules_generation: 3,
            elapsed: Duration::from_micros(42),
        }
    }

    #[test]
    fn stored_payload_parses_as_a_chat_event() {
        let body = r#"{"message":{"id":"","text":"hi there"},"user":{"id":"u1","role":"user"},
            "channel":{"cid":"messaging:general","type":"messaging","id":"general"}}"#;
        let new = event("w1".into(), log(body)).unwrap();
        assert_eq!(new.event_type, EVENT_TYPE);
        assert_eq!(new.status, status::RECEIVED);
        assert_eq!(new.user_id.as_deref(), Some("u1"));
        let parsed = crate::domain::ChatEvent::parse(new.payload.as_bytes()).unwrap();
        assert_eq!(parsed.event_type, EVENT_TYPE);
        assert_eq!(parsed.cid().as_deref(), Some("messaging:general"));
        assert_eq!(
            parsed.message.and_then(|m| m.text).as_deref(),
            Some("hi there")
        );
        let v: Value = serde_json::from_str(&new.payload).unwrap();
        assert_eq!(v["before_send"]["answer"], "block");
        assert_eq!(v["before_send"]["elapsed_us"], 42);
        assert_eq!(v["before_send"]["rules_generation"], 3);
    }

    #[test]
    fn stored_payload_keeps_a_cid_the_body_has() {
        let body = r#"{"message":{"text":"x"},"cid":"team:other"}"#;
        let new = event("w2".into(), log(body)).unwrap();
        let v: Value = serde_json::from_str(&new.payload).unwrap();
        assert_eq!(v["cid"], "team:other");
        assert_eq!(v["channel_type"], "messaging");
    }
}
