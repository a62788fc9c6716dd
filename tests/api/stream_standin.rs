//! A local stand-in for Stream's REST API, for tests of anything that calls Stream.
//!
//! It serves the v1 endpoints of `docs/stream-api.md` §4.4 on `127.0.0.1:<free port>` and checks
//! what Stream checks (§4.1): the `api_key` query parameter, a server JWT in `Authorization`
//! (HS256 with the app secret, `{"server": true}`, no `Bearer ` prefix), `Stream-Auth-Type: jwt`,
//! plus an `X-Stream-Client` header. Errors use Stream's body (§4.2), every answer carries the
//! rate-limit headers (§4.3). It keeps just enough state to answer like Stream: channels,
//! messages (sent, deleted), flags and bans.
//!
//! ```ignore
//! let standin = StreamStandin::start(API_KEY, SECRET).await;
//! standin.create_channel("messaging:general");
//! standin.push_response(Op::Flag, 500, &[], json!({}));   // the next flag fails once
//! // … point the code under test at standin.base_url() …
//! assert_eq!(standin.calls_to("/moderation/flag").len(), 2);
//! ```
//!
//! Modelled: flag, unflag, delete message, ban, unban, send message, get-or-create channel,
//! get message. Other documented paths answer 501 so that a test relying on them fails loudly;
//! undocumented paths answer 404 and a documented path with another method 405.
//!
//! Messages the stand-in has not seen (ids from webhook fixtures) are treated as existing unless
//! [`StreamStandin::set_strict`] is on; sending still needs the channel to exist.

// A shared fixture: each test binary module uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// `more_info` of Stream's error bodies.
pub const MORE_INFO: &str = "https://getstream.io/chat/docs/api_errors_response";

/// The headers a [`Call`] keeps (lower case).
const HEADERS_OF_INTEREST: [&str; 5] = [
    "authorization",
    "stream-auth-type",
    "x-stream-client",
    "content-type",
    "x-client-request-id",
];

/// A modelled Stream operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `POST /moderation/flag`
    Flag,
    /// `POST /moderation/unflag`
    Unflag,
    /// `DELETE /messages/{id}`
    DeleteMessage,
    /// `GET /messages/{id}`
    GetMessage,
    /// `POST /moderation/ban`
    Ban,
    /// `DELETE /moderation/ban`
    Unban,
    /// `POST /channels/{type}/{id}/message`
    SendMessage,
    /// `POST /channels/{type}/{id}/query`
    GetOrCreateChannel,
}

impl Op {
    /// Stream's operation name, used in its error messages ("SendMessage failed with error: …").
    pub fn stream_name(self) -> &'static str {
        match self {
            Op::Flag => "Flag",
            Op::Unflag => "Unflag",
            Op::DeleteMessage => "DeleteMessage",
            Op::GetMessage => "GetMessage",
            Op::Ban => "Ban",
            Op::Unban => "Unban",
            Op::SendMessage => "SendMessage",
            Op::GetOrCreateChannel => "GetOrCreateChannel",
        }
    }

    /// Requests per minute (§4.3 defaults).
    fn rate_limit(self) -> u32 {
        match self {
            Op::Flag | Op::Unflag | Op::Ban | Op::Unban => 300,
            Op::DeleteMessage | Op::GetMessage | Op::SendMessage => 1_000,
            Op::GetOrCreateChannel => 10_000,
        }
    }
}

/// Which requests a scripted answer applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Any,
    Op(Op),
    /// Requests whose path starts with this (e.g. `/channels/messaging:`… or `/moderation/`).
    PathPrefix(String),
}

impl From<Op> for Matcher {
    fn from(op: Op) -> Self {
        Matcher::Op(op)
    }
}

impl From<&str> for Matcher {
    /// `"*"` matches everything, anything else is a path prefix (`"/moderation/ban"`).
    fn from(s: &str) -> Self {
        if s == "*" {
            Matcher::Any
        } else {
            Matcher::PathPrefix(s.to_owned())
        }
    }
}

impl Matcher {
    fn matches(&self, op: Option<Op>, path: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Op(want) => op == Some(*want),
            Matcher::PathPrefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// A scripted answer, served instead of (or, for [`Scripted::late`], after) normal handling.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// `None`: handle the request normally, then answer after `delay`.
    pub canned: Option<Canned>,
    /// Time to wait before answering. A client that gives up first leaves the call's `status`
    /// at `None`.
    pub delay: Duration,
}

/// A fixed answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Scripted {
    /// Answers `status` with a JSON body.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            canned: Some(Canned {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
            }),
            delay: Duration::ZERO,
        }
    }

    /// Answers `status` with a plain-text body (like Stream's edge rate limiter, §4.2).
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            canned: Some(Canned {
                status,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: body.as_bytes().to_vec(),
            }),
            delay: Duration::ZERO,
        }
    }

    /// Answers with Stream's error body.
    pub fn stream_error(status: u16, code: i64, message: &str) -> Self {
        Self::json(status, error_body(status, code, message))
    }

    /// A 429 (code 9) with the §4.3 headers, limited until `reset_unix` (Unix seconds).
    pub fn rate_limited(reset_unix: u64) -> Self {
        Self::stream_error(
            429,
            9,
            "Too many requests, check response headers for more information.",
        )
        .header("X-RateLimit-Limit", "300")
        .header("X-RateLimit-Remaining", "0")
        .header("X-RateLimit-Reset", &reset_unix.to_string())
    }

    /// Handles the request normally (state changes happen), then answers only after `delay`:
    /// a call Stream executed although the client timed out.
    pub fn late(delay: Duration) -> Self {
        Self {
            canned: None,
            delay,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Some(canned) = &mut self.canned {
            canned.headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Stream's error body (§4.2).
pub fn error_body(status: u16, code: i64, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "StatusCode": status,
        "duration": "0.00ms",
        "more_info": MORE_INFO,
        "details": [],
    })
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// The headers of [`HEADERS_OF_INTEREST`], lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; `None` when empty or not JSON (see `raw_body`).
    pub body: Option<Value>,
    pub raw_body: String,
    /// The modelled operation, if the path is one.
    pub op: Option<Op>,
    pub at: SystemTime,
    pub instant: Instant,
    /// The status answered; `None` while answering or when the client went away first.
    pub status: Option<u16>,
}

impl Call {
    /// The first value of query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A recorded header (lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A message as the stand-in stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: String,
    pub cid: String,
    pub user_id: String,
    pub text: String,
    pub attachments: Vec<Value>,
    /// `Some(hard)` once deleted.
    pub deleted: Option<bool>,
    pub deleted_by: Option<String>,
}

/// A flag as the stand-in stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFlag {
    /// `message:<id>` or `user:<id>`.
    pub target: String,
    pub user_id: String,
    pub reason: Option<String>,
}

/// A ban as the stand-in stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBan {
    pub target_user_id: String,
    pub channel_cid: Option<String>,
    pub banned_by: String,
    pub timeout_minutes: Option<u64>,
    pub reason: Option<String>,
    pub shadow: bool,
}

#[derive(Default)]
struct Data {
    calls: Vec<Call>,
    scripts: VecDeque<(Matcher, Scripted, usize)>,
    /// cid → created_by
    channels: BTreeMap<String, String>,
    messages: BTreeMap<String, StoredMessage>,
    flags: Vec<StoredFlag>,
    bans: BTreeMap<(String, Option<String>), StoredBan>,
    strict: bool,
    enforce_rate_limits: bool,
    /// An outage: every request gets 503 until it ends.
    down: bool,
    /// op → (minute, requests in it)
    windows: HashMap<Op, (u64, u32)>,
}

struct Shared {
    /// API key → secret of every app the stand-in serves.
    apps: BTreeMap<String, String>,
    data: Mutex<Data>,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        // A test that panicked while holding the lock already failed; keep serving the others.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in; stops when dropped.
pub struct StreamStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StreamStandin {
    /// Starts the stand-in for one app on a free loopback port.
    pub async fn start(api_key: &str, secret: &str) -> Self {
        Self::start_apps(&[(api_key, secret)]).await
    }

    /// Starts the stand-in for several apps (each checked against its own secret).
    pub async fn start_apps(apps: &[(&str, &str)]) -> Self {
        let shared = Arc::new(Shared {
            apps: apps
                .iter()
                .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
                .collect(),
            data: Mutex::new(Data::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Stream stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>`, for `STREAM_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.data().calls.clone()
    }

    /// The requests whose path contains `path_part`.
    pub fn calls_to(&self, path_part: &str) -> Vec<Call> {
        self.shared
            .data()
            .calls
            .iter()
            .filter(|c| c.path.contains(path_part))
            .cloned()
            .collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.shared.data().calls.clear();
    }

    /// The next request that `matcher` matches gets this answer instead of normal handling
    /// (before any auth check).
    pub fn push_response(
        &self,
        matcher: impl Into<Matcher>,
        status: u16,
        headers: &[(&str, &str)],
        body: Value,
    ) {
        let scripted = headers
            .iter()
            .fold(Scripted::json(status, body), |s, (k, v)| s.header(k, v));
        self.push_scripted(matcher, scripted, 1);
    }

    /// The next `times` requests that `matcher` matches get `scripted` (`usize::MAX`: all).
    /// Scripts are used in the order pushed.
    pub fn push_scripted(&self, matcher: impl Into<Matcher>, scripted: Scripted, times: usize) {
        self.shared
            .data()
            .scripts
            .push_back((matcher.into(), scripted, times));
    }

    /// Starts (true) or ends (false) an outage: meanwhile every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.shared.data().down = down;
    }

    /// Makes a channel exist, as if created earlier.
    pub fn create_channel(&self, cid: &str) {
        self.shared
            .data()
            .channels
            .insert(cid.to_owned(), "standin".to_owned());
    }

    pub fn channel_exists(&self, cid: &str) -> bool {
        self.shared.data().channels.contains_key(cid)
    }

    /// Who created the channel, if it exists.
    pub fn channel_created_by(&self, cid: &str) -> Option<String> {
        self.shared.data().channels.get(cid).cloned()
    }

    /// Makes a message exist (and its channel), as if a user had sent it.
    pub fn add_message(&self, cid: &str, id: &str, user_id: &str, text: &str) {
        let mut data = self.shared.data();
        data.channels
            .entry(cid.to_owned())
            .or_insert_with(|| user_id.to_owned());
        data.messages.insert(
            id.to_owned(),
            StoredMessage {
                id: id.to_owned(),
                cid: cid.to_owned(),
                user_id: user_id.to_owned(),
                text: text.to_owned(),
                attachments: Vec::new(),
                deleted: None,
                deleted_by: None,
            },
        );
    }

    pub fn message(&self, id: &str) -> Option<StoredMessage> {
        self.shared.data().messages.get(id).cloned()
    }

    /// The messages of one channel, by id.
    pub fn messages_in(&self, cid: &str) -> Vec<StoredMessage> {
        self.shared
            .data()
            .messages
            .values()
            .filter(|m| m.cid == cid)
            .cloned()
            .collect()
    }

    pub fn flags(&self) -> Vec<StoredFlag> {
        self.shared.data().flags.clone()
    }

    /// The ban of `user_id` app-wide (`cid` `None`) or in one channel.
    pub fn ban(&self, user_id: &str, cid: Option<&str>) -> Option<StoredBan> {
        self.shared
            .data()
            .bans
            .get(&(user_id.to_owned(), cid.map(str::to_owned)))
            .cloned()
    }

    /// Strict: unknown message ids get 404 (code 16) like Stream, and channel bans need the
    /// channel. Off by default so that tests may act on messages from webhook fixtures.
    pub fn set_strict(&self, strict: bool) {
        self.shared.data().strict = strict;
    }

    /// Answer 429 once an operation exceeds its §4.3 per-minute limit (off by default).
    pub fn set_enforce_rate_limits(&self, on: bool) {
        self.shared.data().enforce_rate_limits = on;
    }
}

/// What a path and method are.
enum Route {
    Op(Op),
    /// Documented in §4.4 but not modelled here.
    NotModelled,
    MethodNotAllowed,
    NotFound,
}

fn route(method: &Method, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let allowed: &[(Method, Option<Op>)] = match segs.as_slice() {
        ["moderation", "flag"] => &[(Method::POST, Some(Op::Flag))],
        ["moderation", "unflag"] => &[(Method::POST, Some(Op::Unflag))],
        ["moderation", "ban"] => &[
            (Method::POST, Some(Op::Ban)),
            (Method::DELETE, Some(Op::Unban)),
        ],
        ["messages", id] if !id.is_empty() => &[
            (Method::DELETE, Some(Op::DeleteMessage)),
            (Method::GET, Some(Op::GetMessage)),
            (Method::POST, None),
            (Method::PUT, None),
        ],
        ["channels", kind, id, "message"] if !kind.is_empty() && !id.is_empty() => {
            &[(Method::POST, Some(Op::SendMessage))]
        }
        ["channels", kind, id, "query"] if !kind.is_empty() && !id.is_empty() => {
            &[(Method::POST, Some(Op::GetOrCreateChannel))]
        }
        ["moderation", "mute" | "unmute"]
        | ["messages", _, "undelete"]
        | ["channels"]
        | ["users", "block"]
        | ["check_push" | "check_sqs" | "check_sns"] => &[(Method::POST, None)],
        ["moderation", "flags", "message"] | ["query_banned_users"] | ["rate_limits"] => {
            &[(Method::GET, None)]
        }
        ["app"] => &[(Method::GET, None), (Method::PATCH, None)],
        ["blocklists"] => &[(Method::GET, None), (Method::POST, None)],
        ["blocklists", _] => &[
            (Method::GET, None),
            (Method::PUT, None),
            (Method::DELETE, None),
        ],
        ["channeltypes", _] => &[(Method::PUT, None)],
        _ => return Route::NotFound,
    };
    match allowed.iter().find(|(m, _)| m == method) {
        Some((_, Some(op))) => Route::Op(*op),
        Some((_, None)) => Route::NotModelled,
        None => Route::MethodNotAllowed,
    }
}

/// An answer before the rate-limit headers are added.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, mut body: Value) -> Self {
        if let Some(obj) = body.as_object_mut() {
            obj.entry("duration").or_insert(json!("0.42ms"));
        }
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn error(status: u16, code: i64, message: impl AsRef<str>) -> Self {
        Self::json(status, error_body(status, code, message.as_ref()))
    }

    /// Stream's "<Op> failed with error: \"…\"" 400 (code 4), naming the bad field.
    fn input(op: Op, field: &str, message: &str) -> Self {
        let mut body = error_body(
            400,
            4,
            &format!("{} failed with error: \"{message}\"", op.stream_name()),
        );
        body["exception_fields"] = json!({ field: message });
        Self::json(400, body)
    }

    fn not_found(op: Op, what: &str) -> Self {
        Self::error(
            404,
            16,
            format!("{} failed with error: \"{what}\"", op.stream_name()),
        )
    }

    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (k, v) in self.headers {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::try_from(k.as_str()),
                HeaderValue::from_str(&v),
            ) {
                resp.headers_mut().append(name, value);
            }
        }
        resp
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    // reqwest's Url decodes the query the way Stream's server would (form-urlencoded pairs).
    let query: Vec<(String, String)> = reqwest::Url::parse(&format!("http://standin{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let route = route(&method, &path);
    let op = match route {
        Route::Op(op) => Some(op),
        _ => None,
    };
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();

    let (index, script) = {
        let mut data = shared.data();
        data.calls.push(Call {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers: HEADERS_OF_INTEREST
                .iter()
                .filter_map(|h| {
                    let v = headers.get(*h)?.to_str().ok()?;
                    Some(((*h).to_owned(), v.to_owned()))
                })
                .collect(),
            body: json_body.clone(),
            raw_body,
            op,
            at: SystemTime::now(),
            instant: Instant::now(),
            status: None,
        });
        let index = data.calls.len() - 1;
        let pos = data
            .scripts
            .iter()
            .position(|(m, _, _)| m.matches(op, &path));
        let outage = data
            .down
            .then(|| Scripted::stream_error(503, -1, "service unavailable"));
        let script = outage.or_else(|| {
            pos.and_then(|pos| {
                let entry = data.scripts.get_mut(pos)?;
                entry.2 = entry.2.saturating_sub(1);
                let scripted = entry.1.clone();
                if entry.2 == 0 {
                    data.scripts.remove(pos);
                }
                Some(scripted)
            })
        });
        (index, script)
    };

    let answer = match script {
        Some(Scripted {
            canned:
                Some(Canned {
                    status,
                    headers,
                    body,
                }),
            delay,
        }) => {
            tokio::time::sleep(delay).await;
            Answer {
                status,
                headers,
                body,
            }
        }
        Some(Scripted {
            canned: None,
            delay,
        }) => {
            let answer = respond(&shared, &method, route, &query, &headers, json_body, &path);
            tokio::time::sleep(delay).await;
            answer
        }
        None => respond(&shared, &method, route, &query, &headers, json_body, &path),
    };
    if let Some(call) = shared.data().calls.get_mut(index) {
        call.status = Some(answer.status);
    }
    answer.into_response()
}

/// Normal handling: route, auth, rate limit, then the operation.
fn respond(
    shared: &Shared,
    method: &Method,
    route: Route,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: Option<Value>,
    path: &str,
) -> Answer {
    let op = match route {
        Route::Op(op) => op,
        Route::NotFound => {
            return Answer::error(404, 16, format!("{method} {path} does not exist"));
        }
        Route::MethodNotAllowed => {
            return Answer::error(405, 4, format!("method {method} is not allowed on {path}"));
        }
        Route::NotModelled => {
            return Answer::error(
                501,
                -1,
                format!("{method} {path} is documented but not modelled by the stand-in"),
            );
        }
    };
    if let Some(refusal) = check_auth(shared, query, headers) {
        return refusal;
    }
    let mut data = shared.data();
    let rate = count_rate(&mut data, op);
    let mut answer = if data.enforce_rate_limits && rate.exceeded {
        Answer::error(
            429,
            9,
            "Too many requests, check response headers for more information.",
        )
    } else {
        handle_op(&mut data, op, path, query, body)
    };
    answer.headers.extend([
        ("X-RateLimit-Limit".to_owned(), rate.limit.to_string()),
        (
            "X-RateLimit-Remaining".to_owned(),
            rate.remaining.to_string(),
        ),
        ("X-RateLimit-Reset".to_owned(), rate.reset.to_string()),
    ]);
    answer
}

/// §4.3 counters: one-minute windows per operation.
struct RateWindow {
    limit: u32,
    remaining: u32,
    /// Unix seconds when the window ends.
    reset: u64,
    exceeded: bool,
}

fn count_rate(data: &mut Data, op: Op) -> RateWindow {
    let minute = now_unix() / 60;
    let window = data.windows.entry(op).or_insert((minute, 0));
    if window.0 != minute {
        *window = (minute, 0);
    }
    let limit = op.rate_limit();
    let exceeded = window.1 >= limit;
    if !exceeded {
        window.1 += 1;
    }
    RateWindow {
        limit,
        remaining: limit - window.1,
        reset: (minute + 1) * 60,
        exceeded,
    }
}

/// The §4.1 checks, in Stream's order: API key, then the token.
fn check_auth(shared: &Shared, query: &[(String, String)], headers: &HeaderMap) -> Option<Answer> {
    let api_key = query.iter().find(|(k, _)| k == "api_key").map(|(_, v)| v);
    let secret = match api_key {
        None => return Some(Answer::error(401, 2, "api_key not found")),
        Some(k) => match shared.apps.get(k) {
            Some(secret) => secret,
            None => return Some(Answer::error(401, 2, format!("api_key {k:?} not valid"))),
        },
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("stream-auth-type") != Some("jwt") {
        return Some(Answer::error(
            401,
            5,
            "Stream-Auth-Type header must be \"jwt\" for server-side auth",
        ));
    }
    let Some(token) = header("authorization") else {
        return Some(Answer::error(401, 5, "JWTAuth error: token is missing"));
    };
    if token.starts_with("Bearer ") {
        return Some(Answer::error(
            401,
            5,
            "JWTAuth error: token is malformed (send the bare token, no Bearer prefix)",
        ));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    ) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            let code = match e.kind() {
                ErrorKind::InvalidSignature => 43,
                ErrorKind::ExpiredSignature => 40,
                ErrorKind::ImmatureSignature => 41,
                _ => 5,
            };
            return Some(Answer::error(401, code, format!("JWTAuth error: {e}")));
        }
    };
    if claims.get("server") != Some(&json!(true)) {
        return Some(Answer::error(
            401,
            5,
            "JWTAuth error: not a server token (claims must be {\"server\": true})",
        ));
    }
    if header("x-stream-client").is_none_or(str::is_empty) {
        // Stream itself does not insist; the stand-in does, so that clients identify themselves.
        return Some(Answer::error(400, 4, "X-Stream-Client header is missing"));
    }
    None
}

fn str_field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn query_value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn message_json(m: &StoredMessage) -> Value {
    let now = now_rfc3339();
    let mut v = json!({
        "id": m.id,
        "cid": m.cid,
        "text": m.text,
        "html": format!("<p>{}</p>\n", m.text),
        "type": if m.deleted.is_some() { "deleted" } else { "regular" },
        "user": { "id": m.user_id },
        "attachments": m.attachments,
        "mentioned_users": [],
        "latest_reactions": [],
        "own_reactions": [],
        "reaction_counts": {},
        "reaction_scores": {},
        "reply_count": 0,
        "silent": false,
        "shadowed": false,
        "pinned": false,
        "created_at": now,
        "updated_at": now,
    });
    if m.deleted.is_some() {
        v["deleted_at"] = json!(now);
    }
    v
}

fn handle_op(
    data: &mut Data,
    op: Op,
    path: &str,
    query: &[(String, String)],
    body: Option<Value>,
) -> Answer {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let needs_body = matches!(
        op,
        Op::Flag | Op::Unflag | Op::Ban | Op::SendMessage | Op::GetOrCreateChannel
    );
    let body = match body {
        Some(b) if b.is_object() => b,
        _ if needs_body => {
            return Answer::error(
                400,
                4,
                format!(
                    "{} failed with error: \"invalid JSON body\"",
                    op.stream_name()
                ),
            );
        }
        _ => json!({}),
    };
    match op {
        Op::Flag | Op::Unflag => flag(data, op, &body),
        Op::DeleteMessage => delete_message(data, &segs[1], query),
        Op::GetMessage => match data.messages.get(&segs[1]) {
            Some(m) if m.deleted != Some(true) => {
                Answer::json(200, json!({ "message": message_json(m) }))
            }
            _ => Answer::not_found(op, &format!("message with id {} does not exist", segs[1])),
        },
        Op::Ban => ban(data, &body),
        Op::Unban => unban(data, query),
        Op::SendMessage => send_message(data, &format!("{}:{}", segs[1], segs[2]), &body),
        Op::GetOrCreateChannel => {
            get_or_create_channel(data, &format!("{}:{}", segs[1], segs[2]), &body)
        }
    }
}

/// Decodes `%XX` escapes of a path segment. Hand-written because no direct dependency exposes
/// a percent-decoder (`url`'s form decoder would also turn `+` into a space, wrong in a path).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a message can be acted on: known and not hard-deleted, or unknown in lenient mode.
fn message_usable(data: &Data, id: &str) -> bool {
    match data.messages.get(id) {
        Some(m) => m.deleted != Some(true),
        None => !data.strict,
    }
}

fn flag(data: &mut Data, op: Op, body: &Value) -> Answer {
    // §4.1: server-side calls name the acting user.
    let Some(user_id) = str_field(body, &["user_id"]).or(str_field(body, &["user", "id"])) else {
        return Answer::input(op, "user_id", "user_id or user is a required field");
    };
    let target = match (
        str_field(body, &["target_message_id"]),
        str_field(body, &["target_user_id"]),
    ) {
        (Some(m), None) => {
            if !message_usable(data, m) {
                return Answer::not_found(op, &format!("message with id {m} does not exist"));
            }
            format!("message:{m}")
        }
        (None, Some(u)) => format!("user:{u}"),
        _ => {
            return Answer::input(
                op,
                "target_message_id",
                "exactly one of target_message_id or target_user_id is required",
            );
        }
    };
    let reason = str_field(body, &["reason"]).map(str::to_owned);
    data.flags
        .retain(|f| !(f.target == target && f.user_id == user_id));
    if op == Op::Flag {
        data.flags.push(StoredFlag {
            target: target.clone(),
            user_id: user_id.to_owned(),
            reason: reason.clone(),
        });
    }
    let now = now_rfc3339();
    let mut flag = json!({
        "user": { "id": user_id },
        "created_by_automod": false,
        "created_at": now,
        "updated_at": now,
    });
    match target.split_once(':') {
        Some(("message", id)) => flag["target_message_id"] = json!(id),
        Some((_, id)) => flag["target_user"] = json!({ "id": id }),
        None => {}
    }
    if let Some(r) = reason {
        flag["reason"] = json!(r);
    }
    Answer::json(201, json!({ "flag": flag }))
}

fn delete_message(data: &mut Data, id: &str, query: &[(String, String)]) -> Answer {
    let hard = match query_value(query, "hard") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Answer::input(
                Op::DeleteMessage,
                "hard",
                &format!("hard must be a boolean, not {other:?}"),
            );
        }
    };
    if !message_usable(data, id) {
        return Answer::not_found(
            Op::DeleteMessage,
            &format!("message with id {id} does not exist"),
        );
    }
    let deleted_by = query_value(query, "deleted_by").map(str::to_owned);
    let m = data
        .messages
        .entry(id.to_owned())
        .or_insert_with(|| StoredMessage {
            id: id.to_owned(),
            cid: "unknown:unknown".to_owned(),
            user_id: "unknown".to_owned(),
            text: String::new(),
            attachments: Vec::new(),
            deleted: None,
            deleted_by: None,
        });
    // A soft-deleted message can be deleted again (and hardened); a hard-deleted one is gone.
    m.deleted = Some(hard || m.deleted == Some(true));
    m.deleted_by = deleted_by.or(m.deleted_by.take());
    Answer::json(200, json!({ "message": message_json(m) }))
}

/// The channel of a ban or unban: `channel_cid`, or `type` + `id` (§4.4).
fn ban_channel(get: impl Fn(&str) -> Option<String>) -> Result<Option<String>, &'static str> {
    match (get("channel_cid"), get("type"), get("id")) {
        (Some(cid), None, None) => match cid.split_once(':') {
            Some((t, i)) if !t.is_empty() && !i.is_empty() => Ok(Some(cid)),
            _ => Err("channel_cid must be \"type:id\""),
        },
        (None, Some(t), Some(i)) => Ok(Some(format!("{t}:{i}"))),
        (None, None, None) => Ok(None),
        _ => Err("give either channel_cid or both type and id"),
    }
}

fn ban(data: &mut Data, body: &Value) -> Answer {
    let Some(target) = str_field(body, &["target_user_id"]) else {
        return Answer::input(
            Op::Ban,
            "target_user_id",
            "target_user_id is a required field",
        );
    };
    let Some(banned_by) = str_field(body, &["banned_by_id"])
        .or(str_field(body, &["user_id"]))
        .or(str_field(body, &["banned_by", "id"]))
    else {
        return Answer::input(
            Op::Ban,
            "banned_by_id",
            "either banned_by, banned_by_id or user_id must be provided when using server side auth",
        );
    };
    let channel = match ban_channel(|k| str_field(body, &[k]).map(str::to_owned)) {
        Ok(c) => c,
        Err(msg) => return Answer::input(Op::Ban, "channel_cid", msg),
    };
    if let Some(cid) = &channel
        && data.strict
        && !data.channels.contains_key(cid)
    {
        return Answer::not_found(Op::Ban, &format!("channel {cid} does not exist"));
    }
    let timeout = match body.get("timeout") {
        None | Some(Value::Null) => None,
        Some(t) => match t.as_u64() {
            Some(m) if m > 0 => Some(m),
            _ => return Answer::input(Op::Ban, "timeout", "timeout must be a positive integer"),
        },
    };
    let shadow = match body.get("shadow") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Answer::input(Op::Ban, "shadow", "shadow must be a boolean"),
    };
    // Banning again replaces the ban (Stream does not refuse a repeated ban).
    data.bans.insert(
        (target.to_owned(), channel.clone()),
        StoredBan {
            target_user_id: target.to_owned(),
            channel_cid: channel,
            banned_by: banned_by.to_owned(),
            timeout_minutes: timeout,
            reason: str_field(body, &["reason"]).map(str::to_owned),
            shadow,
        },
    );
    Answer::json(201, json!({}))
}

fn unban(data: &mut Data, query: &[(String, String)]) -> Answer {
    let Some(target) = query_value(query, "target_user_id") else {
        return Answer::input(
            Op::Unban,
            "target_user_id",
            "target_user_id is a required field",
        );
    };
    let channel = match ban_channel(|k| query_value(query, k).map(str::to_owned)) {
        Ok(c) => c,
        Err(msg) => return Answer::input(Op::Unban, "channel_cid", msg),
    };
    data.bans.remove(&(target.to_owned(), channel));
    Answer::json(200, json!({}))
}

fn send_message(data: &mut Data, cid: &str, body: &Value) -> Answer {
    let op = Op::SendMessage;
    if !data.channels.contains_key(cid) {
        return Answer::not_found(op, &format!("channel {cid} does not exist"));
    }
    let Some(msg) = body.get("message").filter(|m| m.is_object()) else {
        return Answer::input(op, "message", "message is a required field");
    };
    let Some(user_id) = str_field(msg, &["user_id"]).or(str_field(msg, &["user", "id"])) else {
        return Answer::input(
            op,
            "message.user",
            "message.user or message.user_id is a required field when using server side auth",
        );
    };
    let text = msg.get("text").and_then(Value::as_str).unwrap_or("");
    let attachments = match msg.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Answer::input(op, "message.attachments", "attachments must be an array");
        }
    };
    if text.is_empty() && attachments.is_empty() {
        return Answer::input(
            op,
            "message.text",
            "message text or attachments are required",
        );
    }
    let id = match msg.get("id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(_) => return Answer::input(op, "message.id", "message.id must be a non-empty string"),
    };
    if data.messages.contains_key(&id) {
        // Stream's wording, as its SDKs match it (stream-chat-swift #3061).
        return Answer::error(
            400,
            4,
            format!("SendMessage failed with error: \"a message with ID {id} already exists\""),
        );
    }
    let stored = StoredMessage {
        id: id.clone(),
        cid: cid.to_owned(),
        user_id: user_id.to_owned(),
        text: text.to_owned(),
        attachments,
        deleted: None,
        deleted_by: None,
    };
    let answer = Answer::json(201, json!({ "message": message_json(&stored) }));
    data.messages.insert(id, stored);
    answer
}

fn get_or_create_channel(data: &mut Data, cid: &str, body: &Value) -> Answer {
    if !data.channels.contains_key(cid) {
        let creator = str_field(body, &["data", "created_by_id"])
            .or(str_field(body, &["data", "created_by", "id"]));
        let Some(creator) = creator else {
            // The wording of §4.1.
            return Answer::input(
                Op::GetOrCreateChannel,
                "data.created_by",
                "either data.created_by or data.created_by_id must be provided when using server side auth.",
            );
        };
        data.channels.insert(cid.to_owned(), creator.to_owned());
    }
    let created_by = data.channels.get(cid).cloned().unwrap_or_default();
    let (kind, id) = cid.split_once(':').unwrap_or((cid, ""));
    let messages: Vec<Value> = data
        .messages
        .values()
        .filter(|m| m.cid == cid)
        .map(message_json)
        .collect();
    Answer::json(
        201,
        json!({
            "channel": { "cid": cid, "type": kind, "id": id, "created_by": { "id": created_by } },
            "members": [],
            "messages": messages,
            "pinned_messages": [],
            "read": [],
            "watchers": [],
        }),
    )
}
