//! The moderators' review queue under `/api/v1`: list and read review items, claim and release
//! them, and resolve them, carrying the resolution out on Stream.
//!
//! Viewers read; moderators also claim, release and resolve. Every change writes an audit row
//! whose actor is the token's name.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiJsonError, Auth};
use crate::actions::stream::{BanRequest, StreamClient, StreamError};
use crate::config::Config;
use crate::store::{
    ClaimOutcome, Cursor, ReleaseOutcome, Resolution, ResolveOutcome, ReviewFilter, ReviewItemRow,
    ReviewSort, Role, Store,
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

/// `/api/v1/review-items…`.
pub fn router(state: ReviewState) -> Router {
    let v1 = Router::new()
        .route("/review-items", get(list))
        .route("/review-items/{id}", get(show))
        .route("/review-items/{id}/claim", post(claim))
        .route("/review-items/{id}/release", post(release))
        .route("/review-items/{id}/resolve", post(resolve))
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
    let resolution: Resolution = body.resolution.parse().map_err(bad)?;
    if body.ban_timeout_minutes == Some(0) {
        return Err(bad("ban_timeout_minutes must be positive"));
    }
    let before = load(&state.store, id).await?;
    let now = Utc::now();
    let row = match state
        .store
        .resolve_review_item(id, &auth.token_name, resolution, body.note.as_deref(), now)
        .await?
    {
        ResolveOutcome::Resolved(row) => row,
        ResolveOutcome::AlreadyResolved(row) => {
            return Ok(Json(
                json!({"item": row.to_json(), "already_resolved": true}),
            ));
        }
        ResolveOutcome::HeldBy { moderator, until } => {
            return Err(ApiJsonError::Conflict(format!(
                "claimed by {moderator} until {}",
                until.to_rfc3339()
            )));
        }
    };
    let result = match &state.stream {
        Some(client) => Some(carry_out(client, &state.config, &row, resolution, &body).await),
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
    Ok(Json(json!({
        "item": after,
        "already_resolved": false,
        "outcome": outcome,
        "strike_cleared": strike_cleared,
    })))
}
