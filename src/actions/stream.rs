//! Stream Chat REST client for the v1 server-side endpoints chatguard needs (flag, unflag,
//! delete, ban, unban, send a message, get-or-create a channel), as specified in
//! `docs/stream-api.md` §4: server JWT auth, Stream's error body, rate-limit headers, and
//! retries with exponential backoff and jitter.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `X-Stream-Client` value. §4.1: the header is informational and each SDK names itself.
const CLIENT_ID: &str = concat!("chatguard-", env!("CARGO_PKG_VERSION"));
/// Stream's "does not exist" error code (§4.2).
const CODE_NOT_FOUND: i64 = 16;
/// Stream's "input error" code (§4.2).
const CODE_INPUT: i64 = 4;
/// The longest raw (non-JSON) error body kept in an error message.
const RAW_ERROR_MAX_CHARS: usize = 300;

/// Connection and retry settings of the Stream client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamClientConfig {
    /// Stream's REST API root; v1 paths are appended to it (`STREAM_BASE_URL`).
    pub base_url: String,
    /// Limit for one attempt, from connecting to the last byte of the answer.
    pub timeout_ms: u64,
    /// Retries after the first attempt: at most `1 + max_retries` calls per operation.
    pub max_retries: u32,
    /// First backoff delay; it doubles with each retry.
    pub retry_base_ms: u64,
    /// Cap on one backoff delay and on a wait for a rate-limit reset.
    pub retry_max_ms: u64,
}

impl Default for StreamClientConfig {
    fn default() -> Self {
        Self {
            base_url: "https://chat.stream-io-api.com".to_owned(),
            timeout_ms: 5_000,
            max_retries: 4,
            retry_base_ms: 200,
            retry_max_ms: 10_000,
        }
    }
}

/// A failed Stream call.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Stream answered with a non-2xx status (other than a retryable 429).
    #[error("Stream answered HTTP {status}{}: {message}", code_suffix(.code))]
    Api {
        status: u16,
        /// Stream's error `code` (§4.2), absent when the body was not Stream's JSON.
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
        /// Stream says the request must not be retried.
        unrecoverable: bool,
        /// Per-field validation messages.
        exception_fields: BTreeMap<String, String>,
    },
    /// HTTP 429 (code 9), still limited after the last retry.
    #[error("Stream rate limit exceeded: {message}")]
    RateLimited {
        message: String,
        /// `X-RateLimit-Limit`.
        limit: Option<u64>,
        /// `X-RateLimit-Remaining`.
        remaining: Option<u64>,
        /// `X-RateLimit-Reset`, Unix seconds.
        reset: Option<u64>,
    },
    /// No complete answer within `timeout_ms`.
    #[error("Stream did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// Connecting, sending or receiving failed.
    #[error("cannot reach Stream")]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer whose body is not what the endpoint documents.
    #[error("Stream's HTTP {status} answer is not the documented JSON")]
    Decode {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    /// A request body could not be serialised.
    #[error("cannot encode the request body")]
    Encode(#[source] serde_json::Error),
    /// The client settings or credentials are unusable.
    #[error("Stream client configuration: {0}")]
    Config(String),
    /// An argument is empty or malformed (e.g. a cid without `:`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn code_suffix(code: &Option<i64>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

impl StreamError {
    /// Whether the same request may succeed later: 5xx, 408, 429, timeouts and connection
    /// errors, unless Stream marked the error `unrecoverable` (§4.2).
    ///
    /// 408 is Stream's "request timeout" (code 23, §4.2) and is retried like our own
    /// timeouts, as `docs/style.md` ("Retries") asks.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api {
                status,
                unrecoverable,
                ..
            } => !unrecoverable && (*status >= 500 || *status == 408),
            Self::RateLimited { .. } | Self::Timeout { .. } => true,
            Self::Transport(e) => !e.is_builder(),
            Self::Decode { .. } | Self::Encode(_) | Self::Config(_) | Self::InvalidArgument(_) => {
                false
            }
        }
    }

    /// The HTTP status Stream answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// Stream's error code, if it sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => *code,
            Self::RateLimited { .. } => Some(9),
            _ => None,
        }
    }

    /// Stream's "does not exist" (404, code 16).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) && self.code() == Some(CODE_NOT_FOUND)
    }

    /// Stream's answer to a send whose message id is taken: 400, code 4, "a message with ID …
    /// already exists". Not in `stream-api.md`; the text is the one Stream's own SDKs match
    /// (stream-chat-android #6587, stream-chat-swift #3061).
    fn is_duplicate_message(&self) -> bool {
        matches!(self, Self::Api { status: 400, code: Some(CODE_INPUT), message, .. }
            if message.contains("already exists"))
    }
}

/// A ban (§4.4 "Ban"): app-wide, or in one channel when `channel_cid` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRequest {
    pub target_user_id: String,
    /// Who bans; chatguard's bot user.
    pub banned_by_id: String,
    /// `type:id` of the channel for a channel ban.
    pub channel_cid: Option<String>,
    /// Ban length in minutes; `None` bans until unbanned.
    pub timeout_minutes: Option<u32>,
    pub reason: Option<String>,
    /// A shadow ban: the user can still post but nobody sees it.
    pub shadow: bool,
}

/// A message chatguard posts (e.g. a moderator alert in a private channel).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    pub text: String,
    pub attachments: Vec<Attachment>,
    /// Client-chosen id: re-sending the same id never makes a second message. When `None`,
    /// the client picks one, so that its own retries are idempotent too.
    pub id: Option<String>,
}

/// A Stream attachment (§2.2 `Attachment`), e.g. a card with fields for moderators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A CSS colour for the side bar, e.g. `#d33`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<AttachmentField>,
}

/// One `title: value` row of an [`Attachment`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentField {
    pub title: String,
    pub value: String,
    /// Shown side by side with the next short field.
    pub short: bool,
}

/// The message Stream stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub id: String,
}

/// Client for Stream's server-side REST API. Cloning is cheap.
#[derive(Clone)]
pub struct StreamClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    api_key: String,
    cfg: StreamClientConfig,
}

impl fmt::Debug for StreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamClient")
            .field("base_url", &self.inner.base.as_str())
            .field("api_key", &self.inner.api_key)
            .finish_non_exhaustive()
    }
}

/// One HTTP request of an operation, replayable across retries.
struct ApiRequest<'a> {
    method: Method,
    path: Vec<&'a str>,
    query: Vec<(&'static str, &'a str)>,
    body: Option<Bytes>,
}

impl<'a> ApiRequest<'a> {
    fn new(method: Method, path: Vec<&'a str>) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    fn json(mut self, body: &Value) -> Result<Self, StreamError> {
        self.body = Some(Bytes::from(
            serde_json::to_vec(body).map_err(StreamError::Encode)?,
        ));
        Ok(self)
    }

    fn query(mut self, key: &'static str, value: &'a str) -> Self {
        self.query.push((key, value));
        self
    }
}

/// The server token of §4.1: HS256 over exactly `{"server": true}`, no `iat`/`exp`.
fn server_token(api_secret: &SecretString) -> Result<String, StreamError> {
    let key = jsonwebtoken::EncodingKey::from_secret(api_secret.expose_secret().as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &json!({ "server": true }), &key)
        .map_err(|e| StreamError::Config(format!("cannot sign the server token: {e}")))
}

fn non_empty<'a>(what: &str, value: &'a str) -> Result<&'a str, StreamError> {
    if value.trim().is_empty() {
        Err(StreamError::InvalidArgument(format!("{what} is empty")))
    } else {
        Ok(value)
    }
}

/// Splits a cid `type:id` into its two non-empty parts.
fn split_cid(cid: &str) -> Result<(&str, &str), StreamError> {
    match cid.split_once(':') {
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() => Ok((kind, id)),
        _ => Err(StreamError::InvalidArgument(format!(
            "channel cid {cid:?} is not \"type:id\""
        ))),
    }
}

impl StreamClient {
    /// Builds the client and signs the server token once (it has no expiry, §4.1).
    pub fn new(
        api_key: &str,
        api_secret: &SecretString,
        cfg: &StreamClientConfig,
    ) -> Result<Self, StreamError> {
        if api_key.trim().is_empty() {
            return Err(StreamError::Config("the API key is empty".to_owned()));
        }
        if api_secret.expose_secret().is_empty() {
            return Err(StreamError::Config("the API secret is empty".to_owned()));
        }
        let base = Url::parse(&cfg.base_url)
            .map_err(|e| StreamError::Config(format!("base_url {:?}: {e}", cfg.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(StreamError::Config(format!(
                "base_url {:?} is not an http(s) URL",
                cfg.base_url
            )));
        }
        if cfg.timeout_ms == 0 {
            return Err(StreamError::Config(
                "timeout_ms must be positive".to_owned(),
            ));
        }
        if cfg.retry_base_ms > cfg.retry_max_ms {
            return Err(StreamError::Config(
                "retry_base_ms must not exceed retry_max_ms".to_owned(),
            ));
        }

        let mut auth = HeaderValue::from_str(&server_token(api_secret)?)
            .map_err(|_| StreamError::Config("the server token is not a header value".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        // §4.1: the bare token, no "Bearer " prefix.
        headers.insert(AUTHORIZATION, auth);
        headers.insert("stream-auth-type", HeaderValue::from_static("jwt"));
        headers.insert("x-stream-client", HeaderValue::from_static(CLIENT_ID));

        let timeout = Duration::from_millis(cfg.timeout_ms);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            // Stream does not redirect API calls; following one could carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StreamError::Config(format!("cannot build the HTTP client: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                api_key: api_key.to_owned(),
                cfg: cfg.clone(),
            }),
        })
    }

    /// Flags a message for review as `reporter_user_id` (`POST /moderation/flag`).
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "flag_message", message_id = %message_id))]
    pub async fn flag_message(
        &self,
        message_id: &str,
        reporter_user_id: &str,
        reason: Option<&str>,
    ) -> Result<(), StreamError> {
        let mut body = json!({
            "target_message_id": non_empty("message_id", message_id)?,
            "user_id": non_empty("reporter_user_id", reporter_user_id)?,
        });
        if let Some(reason) = reason {
            body["reason"] = json!(reason);
        }
        let req = ApiRequest::new(Method::POST, vec!["moderation", "flag"]).json(&body)?;
        self.call(&req).await.map(drop)
    }

    /// Removes `reporter_user_id`'s flag from a message (`POST /moderation/unflag`; §4.4 notes it
    /// is used by the SDKs but missing from the v236 spec).
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "unflag_message", message_id = %message_id))]
    pub async fn unflag_message(
        &self,
        message_id: &str,
        reporter_user_id: &str,
    ) -> Result<(), StreamError> {
        let body = json!({
            "target_message_id": non_empty("message_id", message_id)?,
            "user_id": non_empty("reporter_user_id", reporter_user_id)?,
        });
        let req = ApiRequest::new(Method::POST, vec!["moderation", "unflag"]).json(&body)?;
        self.call(&req).await.map(drop)
    }

    /// Deletes a message, soft or `hard` (`DELETE /messages/{id}`). A message Stream says does
    /// not exist (404, code 16) counts as deleted, so repeating a delete succeeds.
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "delete_message", message_id = %message_id, hard))]
    pub async fn delete_message(
        &self,
        message_id: &str,
        hard: bool,
        deleted_by: Option<&str>,
    ) -> Result<(), StreamError> {
        let mut req = ApiRequest::new(
            Method::DELETE,
            vec!["messages", non_empty("message_id", message_id)?],
        );
        if hard {
            req = req.query("hard", "true");
        }
        if let Some(user) = deleted_by {
            req = req.query("deleted_by", non_empty("deleted_by", user)?);
        }
        match self.call(&req).await {
            Ok(_) => Ok(()),
            // Undocumented whether Stream answers 404 or 200 for an already deleted message
            // (§4.4 lists only the 200 answer); either way the message is gone.
            Err(e) if e.is_not_found() => {
                tracing::info!("message already gone");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Bans a user app-wide or in one channel (`POST /moderation/ban`). Stream updates an
    /// existing ban, so banning twice succeeds.
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "ban_user", target_user_id = %ban.target_user_id))]
    pub async fn ban_user(&self, ban: &BanRequest) -> Result<(), StreamError> {
        let mut body = json!({
            "target_user_id": non_empty("target_user_id", &ban.target_user_id)?,
            // §4.4: go sends `user_id`, the spec's BanRequest names it `banned_by_id`.
            "banned_by_id": non_empty("banned_by_id", &ban.banned_by_id)?,
        });
        if let Some(cid) = &ban.channel_cid {
            split_cid(cid)?;
            // §4.4 offers `type` + `id` (go/py) or the spec's `channel_cid`; we use the spec's.
            body["channel_cid"] = json!(cid);
        }
        match ban.timeout_minutes {
            Some(0) => {
                return Err(StreamError::InvalidArgument(
                    "timeout_minutes must be positive (None bans until unbanned)".to_owned(),
                ));
            }
            Some(minutes) => body["timeout"] = json!(minutes),
            None => {}
        }
        if let Some(reason) = &ban.reason {
            body["reason"] = json!(reason);
        }
        if ban.shadow {
            body["shadow"] = json!(true);
        }
        let req = ApiRequest::new(Method::POST, vec!["moderation", "ban"]).json(&body)?;
        self.call(&req).await.map(drop)
    }

    /// Lifts a ban, app-wide or in one channel (`DELETE /moderation/ban?target_user_id=…`).
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "unban_user", target_user_id = %target_user_id))]
    pub async fn unban_user(
        &self,
        target_user_id: &str,
        channel_cid: Option<&str>,
    ) -> Result<(), StreamError> {
        let mut req = ApiRequest::new(Method::DELETE, vec!["moderation", "ban"]).query(
            "target_user_id",
            non_empty("target_user_id", target_user_id)?,
        );
        if let Some(cid) = channel_cid {
            split_cid(cid)?;
            req = req.query("channel_cid", cid);
        }
        self.call(&req).await.map(drop)
    }

    /// Sends a message to `cid` ("type:id") as `user_id`; creates the channel (get-or-create,
    /// created_by `user_id`, normally the bot) if Stream answers that it does not exist, then
    /// retries once. A send whose id Stream already stored counts as sent.
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "send_message", cid = %cid, message_id))]
    pub async fn send_message(
        &self,
        cid: &str,
        user_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SentMessage, StreamError> {
        let (kind, channel_id) = split_cid(cid)?;
        non_empty("user_id", user_id)?;
        let id = match &message.id {
            Some(id) => non_empty("message id", id)?.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        tracing::Span::current().record("message_id", id.as_str());

        let mut msg = json!({ "id": id, "text": message.text, "user_id": user_id });
        if !message.attachments.is_empty() {
            msg["attachments"] =
                serde_json::to_value(&message.attachments).map_err(StreamError::Encode)?;
        }
        let req = ApiRequest::new(Method::POST, vec!["channels", kind, channel_id, "message"])
            .json(&json!({ "message": msg }))?;

        let first = match self.call(&req).await {
            Err(e) if e.is_not_found() => {
                tracing::info!("channel missing, creating it");
                self.get_or_create_channel(cid, user_id).await?;
                self.call(&req).await
            }
            other => other,
        };
        match first {
            Ok(body) => {
                #[derive(Deserialize)]
                struct Sent {
                    message: SentId,
                }
                #[derive(Deserialize)]
                struct SentId {
                    id: String,
                }
                let sent: Sent =
                    serde_json::from_slice(&body).map_err(|source| StreamError::Decode {
                        status: 201,
                        source,
                    })?;
                Ok(SentMessage {
                    id: sent.message.id,
                })
            }
            Err(e) if e.is_duplicate_message() => {
                tracing::info!("message id already stored, treating the send as done");
                Ok(SentMessage { id })
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the channel if it does not exist (`POST /channels/{type}/{id}/query`).
    #[tracing::instrument(name = "stream", skip_all, fields(operation = "get_or_create_channel", cid = %cid))]
    pub async fn get_or_create_channel(
        &self,
        cid: &str,
        created_by: &str,
    ) -> Result<(), StreamError> {
        let (kind, channel_id) = split_cid(cid)?;
        // §4.1: server-side creation must name the creator.
        let body = json!({
            "data": { "created_by_id": non_empty("created_by", created_by)? },
            "state": true,
            "watch": false,
            "presence": false,
        });
        let req = ApiRequest::new(Method::POST, vec!["channels", kind, channel_id, "query"])
            .json(&body)?;
        self.call(&req).await.map(drop)
    }

    /// Sends `req`, retrying retryable failures up to `max_retries` times; returns the 2xx body.
    async fn call(&self, req: &ApiRequest<'_>) -> Result<Bytes, StreamError> {
        let cfg = &self.inner.cfg;
        let mut retry = 0;
        loop {
            let err = match self.attempt(req).await {
                Ok(body) => return Ok(body),
                Err(err) => err,
            };
            if !err.is_retryable() || retry >= cfg.max_retries {
                tracing::warn!(attempts = retry + 1, error = %err, "Stream call failed");
                return Err(err);
            }
            let delay = retry_delay(&err, retry, cfg, SystemTime::now(), rand::rng().random());
            tracing::debug!(
                attempt = retry + 1,
                error = %err,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "Stream call failed, retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    async fn attempt(&self, req: &ApiRequest<'_>) -> Result<Bytes, StreamError> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| StreamError::Config("base_url cannot take a path".to_owned()))?
            .pop_if_empty()
            .extend(&req.path);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api_key", &self.inner.api_key);
            for (k, v) in &req.query {
                pairs.append_pair(k, v);
            }
        }
        let mut builder = self.inner.http.request(req.method.clone(), url);
        if let Some(body) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let timeout_ms = self.inner.cfg.timeout_ms;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                StreamError::Timeout { timeout_ms }
            } else {
                StreamError::Transport(e)
            }
        };
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(error_from_response(status, &headers, &body))
        }
    }
}

/// Reads Stream's error body (§4.2) field by field: `details` comes as an array or an object,
/// and edge rate-limit answers are not JSON at all, so one odd field must not lose the rest.
fn error_from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> StreamError {
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|m| m.get(name));
    let code = field("code").and_then(Value::as_i64);
    let message = match field("message").and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => {
            let raw = String::from_utf8_lossy(body);
            let raw = raw.trim();
            if raw.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                raw.chars().take(RAW_ERROR_MAX_CHARS).collect()
            }
        }
    };
    let unrecoverable = field("unrecoverable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if status == StatusCode::TOO_MANY_REQUESTS && !unrecoverable {
        return StreamError::RateLimited {
            message,
            limit: header_u64(headers, "x-ratelimit-limit"),
            remaining: header_u64(headers, "x-ratelimit-remaining"),
            reset: header_u64(headers, "x-ratelimit-reset"),
        };
    }
    let exception_fields = field("exception_fields")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    StreamError::Api {
        status: status.as_u16(),
        code,
        message,
        more_info: field("more_info")
            .and_then(Value::as_str)
            .map(str::to_owned),
        unrecoverable,
        exception_fields,
    }
}

/// A numeric header; §4.3: a value may be repeated comma-separated, the first one counts.
fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// How long to wait before retry number `retry + 1`. A 429 waits until `X-RateLimit-Reset`
/// (§4.3) plus a little jitter, capped at `retry_max_ms`; everything else, and a 429 whose
/// reset is missing or past, backs off exponentially with "equal jitter" (half fixed, half
/// random: delays still grow while workers that failed together spread out).
/// `jitter` is a uniform sample in [0, 1).
fn retry_delay(
    err: &StreamError,
    retry: u32,
    cfg: &StreamClientConfig,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    if let StreamError::RateLimited {
        reset: Some(reset), ..
    } = err
    {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let until_reset = reset.saturating_mul(1000).saturating_sub(now_ms);
        if until_reset > 0 {
            let spread = scale(cfg.retry_base_ms, jitter);
            return Duration::from_millis(until_reset.saturating_add(spread).min(cfg.retry_max_ms));
        }
    }
    let full = cfg
        .retry_base_ms
        .saturating_mul(1u64.checked_shl(retry).unwrap_or(u64::MAX))
        .min(cfg.retry_max_ms);
    let half = full / 2;
    Duration::from_millis(half + scale(full - half, jitter))
}

/// `value × fraction`, rounded down.
fn scale(value: u64, fraction: f64) -> u64 {
    // u64 → f64 loses precision only above 2^53 ms, far beyond any configured delay.
    (value as f64 * fraction) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StreamClientConfig {
        StreamClientConfig {
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            ..StreamClientConfig::default()
        }
    }

    fn server_error() -> StreamError {
        error_from_response(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), b"")
    }

    fn claims_of(token: &str, secret: &str) -> Value {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims
    }

    #[test]
    fn server_token_has_exactly_the_documented_claims() {
        let token = server_token(&SecretString::from("example-secret")).unwrap();
        // §4.1's example token, signed with the same dummy secret, carries the same payload.
        let doc = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXJ2ZXIiOnRydWV9.a_H57S6Hi85Po-WJV-LePBjfa1r-ILHMpolK2A1S41s";
        assert_eq!(token.split('.').nth(1), doc.split('.').nth(1));
        assert_eq!(claims_of(&token, "example-secret"), json!({"server": true}));
        assert_eq!(claims_of(doc, "example-secret"), json!({"server": true}));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    }

    #[test]
    fn parses_streams_error_body_with_details_as_an_object() {
        // The body of ggo's errors_test.go (§4.2).
        let body = br#"{"code":4,"message":"bad request","StatusCode":400,"unrecoverable":true,"details":{"field":"value"},"more_info":"https://docs.example/4","exception_fields":{"message.text":"too long"}}"#;
        let err = error_from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        let StreamError::Api {
            status,
            code,
            message,
            more_info,
            unrecoverable,
            exception_fields,
        } = &err
        else {
            panic!("not an Api error: {err:?}");
        };
        assert_eq!((*status, *code), (400, Some(4)));
        assert_eq!(message, "bad request");
        assert_eq!(more_info.as_deref(), Some("https://docs.example/4"));
        assert!(*unrecoverable);
        assert_eq!(exception_fields["message.text"], "too long");
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_non_json_error_keeps_the_raw_text() {
        let err = error_from_response(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"upstream gone");
        assert!(
            matches!(&err, StreamError::Api { code: None, message, .. } if message == "upstream gone")
        );
        assert!(err.is_retryable());
        assert_eq!(err.status(), Some(502));
    }

    #[test]
    fn unrecoverable_5xx_and_429_are_not_retried() {
        let body = br#"{"code":-1,"message":"no","unrecoverable":true}"#;
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            let err = error_from_response(status, &HeaderMap::new(), body);
            assert!(!err.is_retryable(), "{status}: {err:?}");
        }
    }

    #[test]
    fn retryability_by_status() {
        for (status, retry) in [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (408, true),
            (429, true),
            (500, true),
            (503, true),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let err = error_from_response(status, &HeaderMap::new(), b"{}");
            assert_eq!(err.is_retryable(), retry, "{status}");
        }
    }

    #[test]
    fn rate_limit_headers_take_the_first_of_repeated_values() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("1700000001, 1700000001"),
        );
        headers.insert("x-ratelimit-limit", HeaderValue::from_static("300"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let err = error_from_response(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"code":9,"message":"Too many requests"}"#,
        );
        let StreamError::RateLimited {
            limit,
            remaining,
            reset,
            ..
        } = err
        else {
            panic!("not RateLimited: {err:?}");
        };
        assert_eq!(
            (limit, remaining, reset),
            (Some(300), Some(0), Some(1_700_000_001))
        );
    }

    #[test]
    fn backoff_doubles_within_equal_jitter_bounds_and_is_capped() {
        let cfg = cfg();
        let now = SystemTime::now();
        for retry in 0..8 {
            let full = (100u64 << retry).min(1_000);
            let low = retry_delay(&server_error(), retry, &cfg, now, 0.0).as_millis() as u64;
            let high = retry_delay(&server_error(), retry, &cfg, now, 0.999_999).as_millis() as u64;
            assert_eq!(low, full / 2, "retry {retry}");
            assert!(
                high < full + 1 && high + 1 >= full,
                "retry {retry}: {high} vs {full}"
            );
        }
        assert_eq!(
            retry_delay(&server_error(), 200, &cfg, now, 0.0),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn rate_limit_waits_until_reset_capped_at_retry_max() {
        let cfg = cfg();
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let limited = |reset| StreamError::RateLimited {
            message: String::new(),
            limit: None,
            remaining: Some(0),
            reset: Some(reset),
        };
        assert_eq!(
            retry_delay(&limited(1_700_000_001), 0, &cfg, now, 0.0),
            Duration::from_millis(750)
        );
        assert_eq!(
            retry_delay(&limited(1_700_000_001), 0, &cfg, now, 0.5),
            Duration::from_millis(800)
        );
        assert_eq!(
            retry_delay(&limited(1_700_000_060), 0, &cfg, now, 0.0),
            Duration::from_millis(1_000)
        );
        // A reset in the past falls back to the backoff.
        assert_eq!(
            retry_delay(&limited(1_699_999_999), 2, &cfg, now, 0.0),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn new_rejects_bad_settings_and_hides_credentials_in_debug() {
        let secret = SecretString::from("s3cret-value");
        let bad = |cfg: StreamClientConfig| StreamClient::new("key", &secret, &cfg).is_err();
        assert!(bad(StreamClientConfig {
            base_url: "ftp://x".into(),
            ..cfg()
        }));
        assert!(bad(StreamClientConfig {
            base_url: "not a url".into(),
            ..cfg()
        }));
        assert!(bad(StreamClientConfig {
            timeout_ms: 0,
            ..cfg()
        }));
        assert!(bad(StreamClientConfig {
            retry_base_ms: 5_000,
            ..cfg()
        }));
        assert!(StreamClient::new("", &secret, &cfg()).is_err());
        assert!(StreamClient::new("key", &SecretString::from(""), &cfg()).is_err());

        let client = StreamClient::new("key", &secret, &cfg()).unwrap();
        let token = server_token(&secret).unwrap();
        let debug = format!("{client:?}");
        assert!(debug.contains("key"));
        assert!(
            !debug.contains("s3cret") && !debug.contains(&token),
            "{debug}"
        );
    }

    #[test]
    fn config_reads_partial_toml_and_rejects_unknown_keys() {
        let cfg: StreamClientConfig = toml::from_str("timeout_ms = 750").unwrap();
        assert_eq!(cfg.timeout_ms, 750);
        assert_eq!(cfg.base_url, StreamClientConfig::default().base_url);
        assert!(toml::from_str::<StreamClientConfig>("timeout = 1").is_err());
    }

    #[test]
    fn cids_need_a_type_and_an_id() {
        assert_eq!(
            split_cid("messaging:general").unwrap(),
            ("messaging", "general")
        );
        assert_eq!(split_cid("team:a:b").unwrap(), ("team", "a:b"));
        for bad in ["general", ":general", "messaging:", ""] {
            assert!(split_cid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_and_not_found_detection() {
        let dup = br#"{"code":4,"message":"SendMessage failed with error: \"a message with ID m1 already exists\"","StatusCode":400}"#;
        assert!(
            error_from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), dup)
                .is_duplicate_message()
        );
        let other = br#"{"code":4,"message":"message.text is too long","StatusCode":400}"#;
        assert!(
            !error_from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), other)
                .is_duplicate_message()
        );
        let missing = br#"{"code":16,"message":"channel does not exist","StatusCode":404}"#;
        assert!(
            error_from_response(StatusCode::NOT_FOUND, &HeaderMap::new(), missing).is_not_found()
        );
        assert!(
            !error_from_response(StatusCode::NOT_FOUND, &HeaderMap::new(), b"nope").is_not_found()
        );
    }
}
