//! The moderators' review queue under `/api/v1`: list and read review items, claim and release
//! them, and resolve them, carrying the resolution out on Stream.
//!
//! Viewers read; moderators also claim, release, resolve and unban; admins also read the audit
//! log and manage tokens. Every change writes an audit row whose actor is the token's name.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiJsonError, Auth};
use crate::actions::stream::{BanRequest, StreamClient, StreamError};
use crate::config::Config;
use crate::store::{
    ClaimOutcome, Cursor, ReleaseOutcome, Resolution, ResolveOutcome, ReviewFilter, ReviewItemRow,
    ReviewSort, ReviewStats, Role, Store, StoreError,
};

/// How long a claim holds. `review.claim_ttl_secs` is not in the configuration yet.
pub const CLAIM_TTL: Duration = Duration::seconds(900);
/// Page size when `limit` is not given, and the largest allowed.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
/// Decisions shown as the user's history.
const HISTORY_LEN: usize = 20;

/// What the review routes need.
#[derive(Clone)]
pub struct ReviewState {
    pub store: Store,
    pub config: Arc<Config>,
    /// The Stream client; None in dry-run, where resolutions make no Stream call.
    pub stream: Option<StreamClient>,
}

impl FromRef<ReviewState> for Store {
    fn from_ref(state: &ReviewState) -> Store {
        state.store.clone()
    }
}

/// `/api/v1/`: review items, users, decisions, the audit log, stats, label export and tokens.
pub fn router(state: ReviewState) -> Router {
    let v1 = Router::new()
        .route("/review-items", get(list))
        .route("/review-items/{id}", get(show))
        .route("/review-items/{id}/claim", post(claim))
        .route("/review-items/{id}/release", post(release))
        .route("/review-items/{id}/resolve", post(resolve))
        .route("/review-items/bulk-resolve", post(bulk_resolve))
        .route("/users/{id}", get(user_page))
        .route("/users/{id}/unban", post(unban))
        .route("/decisions", get(decisions))
        .route("/audit-log", get(audit_log))
        .route("/stats", get(stats))
        .route("/export/labels", get(export_labels))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name}", delete(revoke_token))
        .with_state(state);
    Router::new().nest("/api/v1", v1)
}

/// Query parameters of `GET /review-items`, checked by [`ListParams::filter`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    category: Option<String>,
    decision: Option<String>,
    channel: Option<String>,
    user: Option<String>,
    min_score: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiJsonError {
    ApiJsonError::BadRequest(msg.into())
}

fn time_param(name: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiJsonError> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad(format!("{name} must be an RFC 3339 time, got {s:?}")))
    })
    .transpose()
}

impl ListParams {
    fn filter(self) -> Result<(ReviewFilter, i64, Option<Cursor>), ApiJsonError> {
        let sort: ReviewSort = match &self.sort {
            Some(s) => s.parse().map_err(bad)?,
            None => ReviewSort::default(),
        };
        let min_score = match &self.min_score {
            Some(s) => Some(
                s.parse::<f64>()
                    .ok()
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| {
                        bad(format!("min_score must be a number in [0, 1], got {s:?}"))
                    })?,
            ),
            None => None,
        };
        let limit = match &self.limit {
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad(format!("limit must be 1..={MAX_LIMIT}, got {s:?}")))?,
            None => DEFAULT_LIMIT,
        };
        let cursor = self
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, sort).map_err(|e| bad(e.to_string())))
            .transpose()?;
        let filter = ReviewFilter {
            status: self
                .status
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(bad)?,
            category: self.category,
            decision: self.decision,
            cid: self.channel,
            user_id: self.user,
            min_score,
            created_after: time_param("created_after", self.created_after.as_deref())?,
            created_before: time_param("created_before", self.created_before.as_deref())?,
            sort,
            now: None,
        };
        Ok((filter, limit, cursor))
    }
}

async fn list(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let (filter, limit, cursor) = params.filter()?;
    let (rows, next) = state
        .store
        .list_review_items(&filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(json!({
        "items": rows.iter().map(ReviewItemRow::to_json).collect::<Vec<_>>(),
        "next_cursor": next.map(|c| c.encode()),
    })))
}

fn item_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiJsonError> {
    id.map(|Path(id)| id)
        .map_err(|_| bad("the review item id must be an integer"))
}

async fn load(store: &Store, id: i64) -> Result<ReviewItemRow, ApiJsonError> {
    store.get_review_item(id).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => {
            ApiJsonError::NotFound(format!("no review item {id}"))
        }
        other => other.into(),
    })
}

async fn show(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let row = load(&state.store, item_id(id)?).await?;
    let decision = state
        .store
        .decision_by_id(row.decision_id)
        .await?
        .map(|d| d.to_json());
    let history: Vec<Value> = match &row.user_id {
        Some(user) => state
            .store
            .decisions_for_user(user, HISTORY_LEN as i64)
            .await?
            .iter()
            .map(|d| d.to_json())
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(json!({
        "item": row.to_json(),
        "decision": decision,
        "history": history,
    })))
}

fn target(id: i64) -> String {
    format!("review_item:{id}")
}

async fn claim(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let id = item_id(id)?;
    let before = load(&state.store, id).await?;
    let now = Utc::now();
    match state
        .store
        .claim_review_item(id, &auth.token_name, now, CLAIM_TTL)
        .await?
    {
        ClaimOutcome::Claimed(row) => {
            let after = row.to_json();
            state
                .store
                .insert_audit(
                    &auth.token_name,
                    "review_item.claim",
                    &target(id),
                    Some(&before.to_json()),
                    Some(&after),
                    now,
                )
                .await?;
            Ok(Json(json!({"item": after})))
        }
        ClaimOutcome::HeldBy { moderator, until } => Err(ApiJsonError::Conflict(format!(
            "claimed by {moderator} until {}",
            until.to_rfc3339()
        ))),
        ClaimOutcome::AlreadyResolved(_) => Err(ApiJsonError::Conflict(
            "the item is already resolved".to_owned(),
        )),
    }
}

async fn release(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let id = item_id(id)?;
    let before = load(&state.store, id).await?;
    match state
        .store
        .release_review_item(id, &auth.token_name)
        .await?
    {
        ReleaseOutcome::Released(row) => {
            let after = row.to_json();
            state
                .store
                .insert_audit(
                    &auth.token_name,
                    "review_item.release",
                    &target(id),
                    Some(&before.to_json()),
                    Some(&after),
                    Utc::now(),
                )
                .await?;
            Ok(Json(json!({"item": after})))
        }
        ReleaseOutcome::NotHeld(_) => Err(ApiJsonError::Conflict(format!(
            "{} holds no claim on this item",
            auth.token_name
        ))),
    }
}

/// Body of `POST /review-items/{id}/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    resolution: String,
    note: Option<String>,
    /// Ban length; none bans until unbanned.
    ban_timeout_minutes: Option<u32>,
    /// Ban reason shown by Stream.
    reason: Option<String>,
    /// Hard or soft delete on `remove` (and on `ban` with `delete_message`); the configured
    /// delete mode when absent.
    hard: Option<bool>,
    /// On `ban`, also delete the message.
    #[serde(default)]
    delete_message: bool,
}

/// What a resolution did on Stream: `ok`, `failed` (with the error) or `skipped`.
fn outcome(result: Option<Result<Vec<&'static str>, StreamError>>) -> Value {
    match result {
        None => json!({"status": "skipped", "reason": "dry-run: no Stream credentials"}),
        Some(Ok(calls)) => json!({"status": "ok", "calls": calls}),
        Some(Err(e)) => json!({"status": "failed", "error": e.to_string()}),
    }
}

/// The Stream calls `resolution` calls for, or the first that failed.
async fn carry_out(
    client: &StreamClient,
    config: &Config,
    row: &ReviewItemRow,
    resolution: Resolution,
    body: &ResolveBody,
) -> Result<Vec<&'static str>, StreamError> {
    let bot = config.stream.bot_user_id.as_str();
    let hard = body.hard.unwrap_or(config.actions.delete != "soft");
    let mut calls = Vec::new();
    match resolution {
        Resolution::Approve => {
            client.unflag_message(&row.message_id, bot).await?;
            calls.push("unflag_message");
        }
        Resolution::Remove => {
            client
                .delete_message(&row.message_id, hard, Some(bot))
                .await?;
            calls.push("delete_message");
        }
        Resolution::Ban => {
            if body.delete_message {
                client
                    .delete_message(&row.message_id, hard, Some(bot))
                    .await?;
                calls.push("delete_message");
            }
            let user = row.user_id.clone().ok_or_else(|| {
                StreamError::InvalidArgument("the item has no user to ban".to_owned())
            })?;
            client
                .ban_user(&BanRequest {
                    target_user_id: user,
                    banned_by_id: bot.to_owned(),
                    channel_cid: None,
                    timeout_minutes: body.ban_timeout_minutes,
                    reason: body.reason.clone(),
                    shadow: false,
                })
                .await?;
            calls.push("ban_user");
        }
        Resolution::Dismiss => {}
    }
    Ok(calls)
}

/// Resolves the item in the store first, so that of two racing or repeated requests only one
/// resolves it and calls Stream; a repeat answers 200 with the stored item and calls nothing.
/// A Stream failure therefore leaves the item resolved, with the failure in the response and
/// the audit row.
async fn resolve(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let id = item_id(id)?;
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    let resolution = check_resolve_body(&body)?;
    resolve_one(&state, &auth, id, resolution, &body)
        .await
        .map(Json)
}

fn check_resolve_body(body: &ResolveBody) -> Result<Resolution, ApiJsonError> {
    if body.ban_timeout_minutes == Some(0) {
        return Err(bad("ban_timeout_minutes must be positive"));
    }
    body.resolution.parse().map_err(bad)
}

/// Resolves one item as [`resolve`] describes; shared with [`bulk_resolve`].
async fn resolve_one(
    state: &ReviewState,
    auth: &Auth,
    id: i64,
    resolution: Resolution,
    body: &ResolveBody,
) -> Result<Value, ApiJsonError> {
    let before = load(&state.store, id).await?;
    let now = Utc::now();
    let row = match state
        .store
        .resolve_review_item(id, &auth.token_name, resolution, body.note.as_deref(), now)
        .await?
    {
        ResolveOutcome::Resolved(row) => row,
        ResolveOutcome::AlreadyResolved(row) => {
            return Ok(json!({"item": row.to_json(), "already_resolved": true}));
        }
        ResolveOutcome::HeldBy { moderator, until } => {
            return Err(ApiJsonError::Conflict(format!(
                "claimed by {moderator} until {}",
                until.to_rfc3339()
            )));
        }
    };
    let result = match &state.stream {
        Some(client) => Some(carry_out(client, &state.config, &row, resolution, body).await),
        None => None,
    };
    let outcome = outcome(result);
    // The message was fine: the strike its decision gave no longer counts.
    let strike_cleared =
        resolution == Resolution::Approve && state.store.clear_strike(row.decision_id, now).await?;
    let after = row.to_json();
    state
        .store
        .insert_audit(
            &auth.token_name,
            "review_item.resolve",
            &target(id),
            Some(&before.to_json()),
            Some(&json!({"item": after, "outcome": outcome, "strike_cleared": strike_cleared})),
            now,
        )
        .await?;
    Ok(json!({
        "item": after,
        "already_resolved": false,
        "outcome": outcome,
        "strike_cleared": strike_cleared,
    }))
}

/// Ids one bulk resolve may carry.
const MAX_BULK: usize = 100;

/// Body of `POST /review-items/bulk-resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    ids: Vec<i64>,
    resolution: String,
    note: Option<String>,
}

/// Resolves each id in turn as the single route does, answering per id
/// `{"id", "status": 200|404|409, "item"|"error"}`; one failing id does not stop the others.
async fn bulk_resolve(
    auth: Auth,
    State(state): State<ReviewState>,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let Json(bulk) = body.map_err(|e| bad(e.body_text()))?;
    if bulk.ids.is_empty() || bulk.ids.len() > MAX_BULK {
        return Err(bad(format!(
            "ids must hold 1..={MAX_BULK} ids, got {}",
            bulk.ids.len()
        )));
    }
    let body = ResolveBody {
        resolution: bulk.resolution,
        note: bulk.note,
        ban_timeout_minutes: None,
        reason: None,
        hard: None,
        delete_message: false,
    };
    let resolution = check_resolve_body(&body)?;
    let mut results = Vec::with_capacity(bulk.ids.len());
    for id in bulk.ids {
        results.push(
            match resolve_one(&state, &auth, id, resolution, &body).await {
                Ok(mut done) => {
                    done["id"] = json!(id);
                    done["status"] = json!(200);
                    done
                }
                Err(e @ (ApiJsonError::NotFound(_) | ApiJsonError::Conflict(_))) => json!({
                    "id": id,
                    "status": e.status().as_u16(),
                    "error": {"code": e.code(), "message": e.to_string()},
                }),
                Err(other) => return Err(other),
            },
        );
    }
    Ok(Json(json!({"results": results})))
}

fn user_target(user: &str) -> String {
    format!("user:{user}")
}

/// A user's page: recent decisions, active strikes, bans chatguard gave before, and whether a
/// ban is in force. 404 when nothing is recorded about the user.
async fn user_page(
    auth: Auth,
    State(state): State<ReviewState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let decisions = state
        .store
        .decisions_for_user(&user, HISTORY_LEN as i64)
        .await?;
    let (strikes, previous_bans, banned) = state.store.user_standing(&user, Utc::now()).await?;
    if decisions.is_empty() && strikes == 0 && previous_bans == 0 && !banned {
        return Err(ApiJsonError::NotFound(format!(
            "nothing is recorded about user {user:?}"
        )));
    }
    Ok(Json(json!({
        "user_id": user,
        "decisions": decisions.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
        "active_strikes": strikes,
        "previous_bans": previous_bans,
        "banned": banned,
    })))
}

/// Unbans on Stream (skipped in dry-run), then lifts the user's bans in the store. If Stream
/// refuses, the store is left as it is, so it keeps matching Stream; the response and the
/// audit row carry the failure.
async fn unban(
    auth: Auth,
    State(state): State<ReviewState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let now = Utc::now();
    let before = state.store.user_standing(&user, now).await?;
    let result = match &state.stream {
        Some(client) => Some(
            client
                .unban_user(&user, None)
                .await
                .map(|()| vec!["unban_user"]),
        ),
        None => None,
    };
    let lifted = !matches!(result, Some(Err(_)));
    let outcome = outcome(result);
    if lifted {
        state
            .store
            .record_ban_event(&user, false, None, None, now)
            .await?;
    }
    let (_, _, banned) = state.store.user_standing(&user, now).await?;
    let after = json!({"outcome": outcome, "lifted": lifted, "banned": banned});
    state
        .store
        .insert_audit(
            &auth.token_name,
            "user.unban",
            &user_target(&user),
            Some(&json!({"banned": before.2})),
            Some(&after),
            now,
        )
        .await?;
    Ok(Json(json!({
        "user_id": user,
        "outcome": outcome,
        "lifted": lifted,
        "banned": banned,
    })))
}

/// Query parameters of `GET /decisions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionParams {
    limit: Option<String>,
    user: Option<String>,
    decision: Option<String>,
}

/// Decisions scanned when filtering by `decision` without a user.
const DECISION_SCAN: i64 = 1000;

fn limit_param(limit: Option<&str>) -> Result<i64, ApiJsonError> {
    match limit {
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad(format!("limit must be 1..={MAX_LIMIT}, got {s:?}"))),
        None => Ok(DEFAULT_LIMIT),
    }
}

/// The decision log, newest first. The store has no query filtered by decision, so with
/// `decision` the latest [`DECISION_SCAN`] decisions (or the user's, with `user`) are filtered
/// here: older matches are not found.
async fn decisions(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<DecisionParams>, QueryRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let limit = limit_param(params.limit.as_deref())?;
    let fetch = if params.decision.is_some() {
        DECISION_SCAN
    } else {
        limit
    };
    let rows = match &params.user {
        Some(user) => state.store.decisions_for_user(user, fetch).await?,
        None => state.store.recent_decisions(fetch).await?,
    };
    let rows: Vec<Value> = rows
        .iter()
        .filter(|d| {
            params
                .decision
                .as_deref()
                .is_none_or(|want| d.decision == want)
        })
        .take(limit as usize)
        .map(|d| d.to_json())
        .collect();
    Ok(Json(json!({"decisions": rows})))
}

/// Query parameters of `GET /audit-log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<String>,
    before_id: Option<String>,
}

/// Audit entries newest first; `next_before_id` pages on when the page is full.
async fn audit_log(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Admin)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let limit = limit_param(params.limit.as_deref())?;
    let before_id = params
        .before_id
        .as_deref()
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| bad(format!("before_id must be an integer, got {s:?}")))
        })
        .transpose()?;
    let rows = state.store.list_audit(limit, before_id).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({
        "entries": rows.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        "next_before_id": next,
    })))
}

async fn stats(
    auth: Auth,
    State(state): State<ReviewState>,
) -> Result<Json<ReviewStats>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    Ok(Json(state.store.review_stats(Utc::now()).await?))
}

/// Query parameters of `GET /export/labels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    since: String,
}

/// Rows per `reviewed_labels` page while exporting.
const EXPORT_PAGE: i64 = 500;

/// One export line. `verdict` is `violation` when the resolution upheld chatguard (remove,
/// ban) and `clean` otherwise (approve, dismiss), as the stats count it.
fn label_line(row: &ReviewItemRow) -> String {
    let upheld = row
        .resolution
        .as_deref()
        .and_then(|r| r.parse::<Resolution>().ok())
        .is_some_and(Resolution::upholds);
    let verdict = if upheld { "violation" } else { "clean" };
    let mut line =
        json!({"text": row.text, "category": row.category, "verdict": verdict}).to_string();
    line.push('\n');
    line
}

/// Reviewed items resolved since `since` as JSON lines. The body is streamed a page of
/// [`EXPORT_PAGE`] at a time, so a large export is never held in memory; the status and
/// headers are sent before the first page, so a store failure mid-way cuts the body short.
async fn export_labels(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let since =
        time_param("since", Some(&params.since))?.ok_or_else(|| bad("since is required"))?;
    let store = state.store.clone();
    let pages = futures::stream::try_unfold(Some(0_i64), move |after| {
        let store = store.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let rows = store.reviewed_labels(since, after, EXPORT_PAGE).await?;
            let next = (rows.len() as i64 == EXPORT_PAGE)
                .then(|| rows.last().map(|r| r.id))
                .flatten();
            if rows.is_empty() {
                return Ok(None);
            }
            let chunk: String = rows.iter().map(label_line).collect();
            Ok::<_, StoreError>(Some((chunk, next)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

async fn list_tokens(
    auth: Auth,
    State(state): State<ReviewState>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Admin)?;
    Ok(Json(json!({"tokens": state.store.list_tokens().await?})))
}

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

/// Longest token name accepted.
const MAX_TOKEN_NAME: usize = 64;

/// Creates a token; the secret is in this response only. 409 when the name is taken.
async fn create_token(
    auth: Auth,
    State(state): State<ReviewState>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiJsonError> {
    auth.require(Role::Admin)?;
    let Json(new) = body.map_err(|e| bad(e.body_text()))?;
    let role: Role = new.role.parse().map_err(bad)?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME {
        return Err(bad(format!("name must be 1..={MAX_TOKEN_NAME} characters")));
    }
    let now = Utc::now();
    let (row, secret) = state
        .store
        .create_token(name, role, now)
        .await?
        .ok_or_else(|| ApiJsonError::Conflict(format!("a token named {name:?} exists")))?;
    let shown = serde_json::to_value(&row).map_err(|e| ApiJsonError::Internal(e.to_string()))?;
    state
        .store
        .insert_audit(
            &auth.token_name,
            "token.create",
            &format!("token:{name}"),
            None,
            Some(&shown),
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": shown, "secret": secret})),
    ))
}

/// Revokes a token: `revoked` is false if it already was. 404 for an unknown name.
async fn revoke_token(
    auth: Auth,
    State(state): State<ReviewState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiJsonError> {
    auth.require(Role::Admin)?;
    let now = Utc::now();
    let revoked = state
        .store
        .revoke_token(&name, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiJsonError::NotFound(format!("no token named {name:?}")),
            other => other.into(),
        })?;
    if revoked {
        state
            .store
            .insert_audit(
                &auth.token_name,
                "token.revoke",
                &format!("token:{name}"),
                None,
                Some(&json!({"revoked_at": now})),
                now,
            )
            .await?;
    }
    Ok(Json(json!({"name": name, "revoked": revoked})))
}
