//! `POST /webhooks/stream`: size cap, gunzip, signature, parse, store once per webhook id, enqueue,
//! and only then 200 (stream-api.md §1).

pub mod before_send;
pub mod body;
pub mod signature;
mod writer;

pub use writer::{EventWriter, Stored, requeue_received};

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::Instrument;

use crate::domain::ChatEvent;
use crate::error::ApiError;
use crate::store::{NewEvent, status};

/// What ingest needs: where to store and queue, and whose signatures to accept.
#[derive(Clone)]
pub struct IngestState {
    pub writer: EventWriter,
    /// API key → API secret.
    pub secrets: Arc<HashMap<String, SecretString>>,
    pub bot_user_id: Arc<str>,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    /// Events whose `created_at` is older than this are recorded `stale`, not acted on.
    pub stale_after: Option<chrono::Duration>,
}

/// The answer to a delivery.
#[derive(Debug, Serialize)]
pub struct Receipt {
    /// `queued`, `duplicate` (same webhook id, or the same event under a new one), `ignored`
    /// (unknown type), `own` (caused by chatguard's bot) or `stale` (too old to act on).
    pub status: &'static str,
    pub webhook_id: String,
    pub event_id: i64,
}

pub fn router(state: IngestState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/webhooks/stream", post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn receive(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Receipt>, ApiError> {
    let webhook_id = header(&headers, "x-webhook-id").map(str::to_owned);
    let span = tracing::info_span!(
        "webhook",
        webhook_id = webhook_id.as_deref().unwrap_or(""),
        event_type = tracing::field::Empty,
        event_id = tracing::field::Empty,
        message_id = tracing::field::Empty,
    );
    let result = accept(&state, &headers, webhook_id, body)
        .instrument(span)
        .await;
    let outcome = match &result {
        Ok(r) => r.status,
        Err(ApiError::Unauthorized) => "unauthorized",
        Err(ApiError::BadRequest(_)) => "bad_request",
        Err(ApiError::PayloadTooLarge(_)) => "too_large",
        Err(ApiError::Unavailable(_)) => "error",
    };
    metrics::counter!("chatguard_webhooks_total", "outcome" => outcome).increment(1);
    result.map(Json)
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The checks every signed Stream delivery gets: size caps, gunzip, and the signature under the
/// secret that `X-Api-Key` names. Returns the API key and the body as signed.
pub(crate) fn verify_delivery<'h>(
    secrets: &HashMap<String, SecretString>,
    max_body_bytes: usize,
    max_decompressed_bytes: usize,
    headers: &'h HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(&'h str, Bytes), ApiError> {
    let raw = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("body exceeds {max_body_bytes} bytes"))
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let api_key = header(headers, "x-api-key").ok_or(ApiError::Unauthorized)?;
    let secret = secrets.get(api_key).ok_or_else(|| {
        tracing::warn!("webhook for an unknown API key");
        ApiError::Unauthorized
    })?;
    let body = body::decode(raw, max_decompressed_bytes).map_err(|e| match e {
        body::BodyError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
        body::BodyError::BadGzip(_) => ApiError::BadRequest(e.to_string()),
    })?;
    signature::verify(
        secret.expose_secret().as_bytes(),
        &body,
        header(headers, "x-signature"),
    )
    .map_err(|e| {
        tracing::warn!(reason = %e, "webhook signature rejected");
        ApiError::Unauthorized
    })?;
    Ok((api_key, body))
}

async fn accept(
    state: &IngestState,
    headers: &HeaderMap,
    webhook_id: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Receipt, ApiError> {
    let (api_key, body) = verify_delivery(
        &state.secrets,
        state.max_body_bytes,
        state.max_decompressed_bytes,
        headers,
        body,
    )?;
    let event = ChatEvent::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let payload =
        std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
    // Stream always sends X-Webhook-Id; without one, the body's hash dedupes exact repeats.
    let webhook_id =
        webhook_id.unwrap_or_else(|| format!("sha256:{}", signature::sign(b"", &body)));
    let span = tracing::Span::current();
    span.record("event_type", event.event_type.as_str());
    if let Some(m) = event.message_id() {
        span.record("message_id", m);
    }

    let now = chrono::Utc::now();
    let stale = match (state.stale_after, event.created_at) {
        (Some(window), Some(created)) => created < now - window,
        _ => false,
    };
    let initial = if event.kind().is_none() {
        status::IGNORED
    } else if event.is_caused_by(&state.bot_user_id) {
        status::OWN
    } else if stale {
        tracing::warn!("event older than server.stale_event_secs: recorded, not acted on");
        status::STALE
    } else {
        status::RECEIVED
    };
    let new = NewEvent {
        webhook_id: webhook_id.clone(),
        content_key: event.content_identity().map(|id| format!("{api_key}|{id}")),
        api_key: api_key.to_owned(),
        event_type: event.event_type.clone(),
        status: initial,
        message_id: event.message_id().map(str::to_owned),
        cid: event.cid(),
        user_id: event.subject_user_id().map(str::to_owned),
        payload: payload.to_owned(),
        received_at: now,
    };
    let stored = state
        .writer
        .write(new)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let (event_id, status) = match stored {
        Stored::New { id } => (
            id,
            match initial {
                status::IGNORED => "ignored",
                status::OWN => "own",
                status::STALE => "stale",
                _ => "queued",
            },
        ),
        Stored::Duplicate { id, .. } => (id, "duplicate"),
    };
    span.record("event_id", event_id);
    tracing::info!(status, "accepted");
    Ok(Receipt {
        status,
        webhook_id,
        event_id,
    })
}
