//! The moderators' review queue under `/api/v1`: list and read review items, claim and release
//! them, and resolve them, carrying the resolution out on Stream.
//!
//! Viewers read; moderators also claim, release, resolve and unban; admins also read the audit
//! log and manage tokens. Every change writes an audit row whose actor is the token's name.
//!
//! Each handler carries its `#[utoipa::path]`, and [`routes`] registers handler and document
//! together, so `GET /api/openapi.json` lists exactly the routes served.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ApiJsonError, Auth};
use super::schema::{
    AuditPage, BulkEntry, BulkResult, DecisionPage, ErrorBody, ItemBody, LabelLine, NewTokenResult,
    ResolveResult, ReviewItemDetail, ReviewItemPage, RevokeResult, Standing, StreamOutcome,
    TokenList, UnbanResult, UserPage,
};
use crate::actions::stream::{BanRequest, StreamClient, StreamError};
use crate::config::Config;
use crate::domain::{Category, Decision};
use crate::store::{
    ClaimOutcome, Cursor, DecisionFilter, ReleaseOutcome, Resolution, ResolveOutcome, ReviewFilter,
    ReviewItemRow, ReviewSort, ReviewStats, ReviewStatus, Role, Store, StoreError,
};

/// Page size when `limit` is not given, and the largest allowed.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;
/// Decisions shown as the user's history.
const HISTORY_LEN: i64 = 20;

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

/// The document's frame; [`routes`] adds the paths and their schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatguard review API",
        description = "The moderators' review queue. Every route needs `Authorization: Bearer \
                       <token>` (`chatguard token create`); viewers read, moderators also \
                       claim, resolve and unban, admins also read the audit log and manage \
                       tokens. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, LabelLine)),
    tags(
        (name = "review", description = "Review items: list, read, claim, resolve"),
        (name = "users", description = "A user's history, strikes and bans"),
        (name = "log", description = "Decisions, audit log, stats, label export"),
        (name = "tokens", description = "API tokens (admin)"),
    )
)]
struct ApiDoc;

/// Declares the bearer scheme every operation names.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// Every `/api/v1` route with its OpenAPI operation.
fn routes() -> OpenApiRouter<ReviewState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(claim))
        .routes(routes!(release))
        .routes(routes!(resolve))
        .routes(routes!(bulk_resolve))
        .routes(routes!(user_page))
        .routes(routes!(unban))
        .routes(routes!(decisions))
        .routes(routes!(audit_log))
        .routes(routes!(stats))
        .routes(routes!(export_labels))
        .routes(routes!(super::overview::series))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1)
}

/// The OpenAPI 3 document of `/api/v1`, as `GET /api/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// `/api/v1/…` and `GET /api/openapi.json`.
pub fn router(state: ReviewState) -> Router {
    let (router, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/api/openapi.json",
            axum::routing::get(move |auth: Auth| openapi_json(auth, doc.clone())),
        )
        .with_state(state)
}

/// Behind a token like every `/api/` route; any role may read it.
async fn openapi_json(
    auth: Auth,
    doc: Arc<utoipa::openapi::OpenApi>,
) -> Result<Json<Arc<utoipa::openapi::OpenApi>>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    Ok(Json(doc))
}

fn bad(msg: impl Into<String>) -> ApiJsonError {
    ApiJsonError::BadRequest(msg.into())
}

/// Where the next page starts (the last row's id) when this one is full; None on the last.
fn next_page<T>(rows: &[T], limit: i64, id: impl Fn(&T) -> i64) -> Option<i64> {
    (rows.len() as i64 == limit)
        .then(|| rows.last().map(id))
        .flatten()
}

fn limit_param(limit: Option<i64>) -> Result<i64, ApiJsonError> {
    match limit {
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(bad(format!("limit must be 1..={MAX_LIMIT}, got {n}"))),
        None => Ok(DEFAULT_LIMIT),
    }
}

/// Query parameters of `GET /review-items`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// An expired claim counts as `open`.
    #[param(inline)]
    status: Option<ReviewStatus>,
    /// The item's top category.
    #[param(inline)]
    category: Option<Category>,
    /// The item's latest decision.
    #[param(inline)]
    decision: Option<Decision>,
    /// Channel cid (`type:id`).
    channel: Option<String>,
    /// Stream user id.
    user: Option<String>,
    /// Items whose highest score is at least this, in [0, 1].
    #[param(minimum = 0.0, maximum = 1.0)]
    min_score: Option<f64>,
    /// RFC 3339; items created at or after.
    created_after: Option<DateTime<Utc>>,
    /// RFC 3339; items created before.
    created_before: Option<DateTime<Utc>>,
    /// `newest` (default), `oldest` or `score` (highest first).
    #[param(inline)]
    sort: Option<ReviewSort>,
    /// Items per page, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page, with the same filters and sort.
    cursor: Option<String>,
}

impl ListParams {
    fn filter(self) -> Result<(ReviewFilter, i64, Option<Cursor>), ApiJsonError> {
        let sort = self.sort.unwrap_or_default();
        if let Some(v) = self.min_score
            && !(0.0..=1.0).contains(&v)
        {
            return Err(bad(format!("min_score must be in [0, 1], got {v}")));
        }
        let limit = limit_param(self.limit)?;
        let cursor = self
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, sort).map_err(|e| bad(e.to_string())))
            .transpose()?;
        let filter = ReviewFilter {
            status: self.status,
            category: self.category.map(|c| c.as_str().to_owned()),
            decision: self.decision.map(|d| d.as_str().to_owned()),
            cid: self.channel,
            user_id: self.user,
            min_score: self.min_score,
            created_after: self.created_after,
            created_before: self.created_before,
            sort,
            now: None,
        };
        Ok((filter, limit, cursor))
    }
}

/// Review items, filtered and sorted, a page at a time. The cursor stays correct while items
/// are added (keyset pagination).
#[utoipa::path(get, path = "/review-items", tag = "review", params(ListParams),
    responses(
        (status = 200, description = "A page of items", body = ReviewItemPage),
        (status = 400, description = "A bad filter, limit or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ReviewItemPage>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let (filter, limit, cursor) = params.filter()?;
    let (rows, next) = state
        .store
        .list_review_items(&filter, limit, cursor.as_ref())
        .await?;
    Ok(Json(ReviewItemPage {
        items: rows.iter().map(ReviewItemRow::view).collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

fn item_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiJsonError> {
    id.map(|Path(id)| id)
        .map_err(|_| bad("the review item id must be an integer"))
}

async fn load(store: &Store, id: i64) -> Result<ReviewItemRow, ApiJsonError> {
    store.get_review_item(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiJsonError::NotFound(format!("no review item {id}")),
        other => other.into(),
    })
}

/// One item with its latest decision (scores, reasons) and the user's recent decisions.
#[utoipa::path(get, path = "/review-items/{id}", tag = "review",
    params(("id" = i64, Path, description = "Review item id")),
    responses(
        (status = 200, description = "The item", body = ReviewItemDetail),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
    ))]
async fn show(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<ReviewItemDetail>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let row = load(&state.store, item_id(id)?).await?;
    let decision = state
        .store
        .decision_by_id(row.decision_id)
        .await?
        .map(|d| d.view());
    let user = row.user_id.as_deref().unwrap_or_default();
    let history = state
        .store
        .decisions_for_user(user, HISTORY_LEN)
        .await?
        .iter()
        .map(|d| d.view())
        .collect();
    Ok(Json(ReviewItemDetail {
        item: row.view(),
        decision,
        history,
        standing: standing(&state.store, user).await?,
    }))
}

/// The user's strike and ban counts and latest rows.
async fn standing(store: &Store, user: &str) -> Result<Standing, ApiJsonError> {
    let (active_strikes, previous_bans, banned) = store.user_standing(user, Utc::now()).await?;
    let (strikes, bans) = store.strikes_and_bans(user, HISTORY_LEN).await?;
    Ok(Standing {
        active_strikes,
        previous_bans,
        banned,
        strikes,
        bans,
    })
}

fn target(id: i64) -> String {
    format!("review_item:{id}")
}

/// A JSON snapshot for the audit log.
fn snapshot(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Claims the item for the caller until the claim expires (`review.claim_ttl_secs`);
/// claiming again extends one's own claim.
#[utoipa::path(post, path = "/review-items/{id}/claim", tag = "review",
    params(("id" = i64, Path, description = "Review item id")),
    responses(
        (status = 200, description = "Claimed", body = ItemBody),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot claim", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 409, description = "Another moderator holds it, or it is resolved", body = ErrorBody),
    ))]
async fn claim(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<ItemBody>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let id = item_id(id)?;
    let before = load(&state.store, id).await?;
    let now = Utc::now();
    let ttl = Duration::seconds(state.config.review.claim_ttl_secs as i64);
    match state
        .store
        .claim_review_item(id, &auth.token_name, now, ttl)
        .await?
    {
        ClaimOutcome::Claimed(row) => {
            let after = row.view();
            state
                .store
                .insert_audit(
                    &auth.token_name,
                    "review_item.claim",
                    &target(id),
                    Some(&snapshot(&before.view())),
                    Some(&snapshot(&after)),
                    now,
                )
                .await?;
            Ok(Json(ItemBody { item: after }))
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

/// Gives up the caller's claim.
#[utoipa::path(post, path = "/review-items/{id}/release", tag = "review",
    params(("id" = i64, Path, description = "Review item id")),
    responses(
        (status = 200, description = "Released", body = ItemBody),
        (status = 400, description = "The id is not an integer", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot release", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 409, description = "The caller holds no claim on it", body = ErrorBody),
    ))]
async fn release(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<ItemBody>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let id = item_id(id)?;
    let before = load(&state.store, id).await?;
    match state
        .store
        .release_review_item(id, &auth.token_name)
        .await?
    {
        ReleaseOutcome::Released(row) => {
            let after = row.view();
            state
                .store
                .insert_audit(
                    &auth.token_name,
                    "review_item.release",
                    &target(id),
                    Some(&snapshot(&before.view())),
                    Some(&snapshot(&after)),
                    Utc::now(),
                )
                .await?;
            Ok(Json(ItemBody { item: after }))
        }
        ReleaseOutcome::NotHeld(_) => Err(ApiJsonError::Conflict(format!(
            "{} holds no claim on this item",
            auth.token_name
        ))),
    }
}

/// Body of `POST /review-items/{id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// `approve` (the message was fine: unflag, clear the strike), `remove` (delete it),
    /// `ban` (ban the user), `dismiss` (nothing on Stream).
    resolution: Resolution,
    note: Option<String>,
    /// On `ban`: its length; none bans until unbanned.
    #[schema(minimum = 1)]
    ban_timeout_minutes: Option<u32>,
    /// On `ban`: the reason Stream records.
    reason: Option<String>,
    /// On `remove` (and `ban` with `delete_message`): hard or soft delete; the configured
    /// `actions.delete` when absent.
    hard: Option<bool>,
    /// On `ban`: also delete the message.
    #[serde(default)]
    delete_message: bool,
}

/// The Stream calls `body` calls for, or the first that failed.
async fn carry_out(
    client: &StreamClient,
    config: &Config,
    row: &ReviewItemRow,
    body: &ResolveBody,
) -> Result<Vec<&'static str>, StreamError> {
    let bot = config.stream.bot_user_id.as_str();
    let hard = body.hard.unwrap_or(config.actions.delete != "soft");
    let mut calls = Vec::new();
    match body.resolution {
        Resolution::Approve => match client.unflag_message(&row.message_id, bot).await {
            Ok(()) => calls.push("unflag_message"),
            // Deleted already (a block, or by someone else): nothing left to unflag, and the
            // approval still clears the strike.
            Err(e) if e.is_not_found() => calls.push("unflag_message: the message is gone"),
            Err(e) => return Err(e),
        },
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

/// Resolves the item and carries the resolution out on Stream (nothing in dry-run).
///
/// The item is resolved in the store first, so that of two racing or repeated requests only
/// one resolves it and calls Stream; a repeat answers 200 with `already_resolved` and calls
/// nothing. If Stream does not carry it out, the item is put back as it was and the answer is
/// 502, so the moderator can try again.
#[utoipa::path(post, path = "/review-items/{id}/resolve", tag = "review",
    params(("id" = i64, Path, description = "Review item id")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Resolved (or resolved before)", body = ResolveResult),
        (status = 400, description = "A bad id or body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot resolve", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 409, description = "Another moderator holds a claim on it", body = ErrorBody),
        (status = 502, description = "Stream refused or was unreachable; the item is as it was", body = ErrorBody),
    ))]
async fn resolve(
    auth: Auth,
    State(state): State<ReviewState>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Json<ResolveResult>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let id = item_id(id)?;
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    if body.ban_timeout_minutes == Some(0) {
        return Err(bad("ban_timeout_minutes must be positive"));
    }
    resolve_one(&state, &auth, id, &body).await.map(Json)
}

/// Resolves one item as [`resolve`] describes; shared with [`bulk_resolve`].
async fn resolve_one(
    state: &ReviewState,
    auth: &Auth,
    id: i64,
    body: &ResolveBody,
) -> Result<ResolveResult, ApiJsonError> {
    let before = load(&state.store, id).await?;
    let now = Utc::now();
    let row = match state
        .store
        .resolve_review_item(
            id,
            &auth.token_name,
            body.resolution,
            body.note.as_deref(),
            now,
        )
        .await?
    {
        ResolveOutcome::Resolved(row) => row,
        ResolveOutcome::AlreadyResolved(row) => {
            return Ok(ResolveResult {
                item: row.view(),
                already_resolved: true,
                outcome: None,
                strike_cleared: None,
            });
        }
        ResolveOutcome::HeldBy { moderator, until } => {
            return Err(ApiJsonError::Conflict(format!(
                "claimed by {moderator} until {}",
                until.to_rfc3339()
            )));
        }
    };
    let result = match &state.stream {
        Some(client) => Some(carry_out(client, &state.config, &row, body).await),
        None => None,
    };
    if let Some(Err(e)) = &result {
        return Err(reopen(state, auth, &before, now, e).await);
    }
    let outcome = StreamOutcome::from_result(result);
    // Recorded now rather than when Stream's `user.banned` webhook arrives, so the user's page
    // shows it at once; the webhook then finds a ban in force and adds none.
    if body.resolution == Resolution::Ban
        && let Some(user) = &row.user_id
    {
        let until = body
            .ban_timeout_minutes
            .map(|m| now + Duration::minutes(i64::from(m)));
        state
            .store
            .record_ban_event(user, true, until, body.reason.as_deref(), now)
            .await?;
    }
    // The message was fine: the strike its decision gave no longer counts.
    let strike_cleared = body.resolution == Resolution::Approve
        && state.store.clear_strike(row.decision_id, now).await?;
    let done = ResolveResult {
        item: row.view(),
        already_resolved: false,
        outcome: Some(outcome),
        strike_cleared: Some(strike_cleared),
    };
    state
        .store
        .insert_audit(
            &auth.token_name,
            "review_item.resolve",
            &target(id),
            Some(&snapshot(&before.view())),
            Some(&snapshot(&done)),
            now,
        )
        .await?;
    Ok(done)
}

/// Stream did not carry a resolution out: the item goes back to how it was (so the moderator
/// can try again, and a retry is not mistaken for a repeat), the attempt is audited, and the
/// caller gets 502 with Stream's error.
async fn reopen(
    state: &ReviewState,
    auth: &Auth,
    before: &ReviewItemRow,
    resolved_at: DateTime<Utc>,
    error: &StreamError,
) -> ApiJsonError {
    let reopened = state
        .store
        .reopen_review_item(before, &auth.token_name, resolved_at, Utc::now())
        .await;
    let after = json!({
        "outcome": StreamOutcome::failed(error.to_string()),
        "reopened": matches!(reopened, Ok(Some(_))),
    });
    if let Err(e) = state
        .store
        .insert_audit(
            &auth.token_name,
            "review_item.resolve_failed",
            &target(before.id),
            Some(&snapshot(&before.view())),
            Some(&after),
            resolved_at,
        )
        .await
    {
        tracing::error!(error = %e, item = before.id, "could not audit a failed resolution");
    }
    match reopened {
        Ok(_) => ApiJsonError::StreamFailed(format!(
            "Stream did not carry the resolution out ({error}); the item is as it was, try again"
        )),
        Err(e) => e.into(),
    }
}

/// Body of `POST /review-items/bulk-resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    /// 1 to `review.bulk_max` (default 100) item ids.
    #[schema(min_items = 1, max_items = 100)]
    ids: Vec<i64>,
    resolution: Resolution,
    note: Option<String>,
}

/// Resolves each id in turn as the single route does (with the configured delete mode and
/// bans without a timeout), reporting per id; one failing id does not stop the others.
#[utoipa::path(post, path = "/review-items/bulk-resolve", tag = "review",
    request_body = BulkBody,
    responses(
        (status = 200, description = "One entry per id", body = BulkResult),
        (status = 400, description = "A bad body, or too many ids", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot resolve", body = ErrorBody),
    ))]
async fn bulk_resolve(
    auth: Auth,
    State(state): State<ReviewState>,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Result<Json<BulkResult>, ApiJsonError> {
    auth.require(Role::Moderator)?;
    let Json(bulk) = body.map_err(|e| bad(e.body_text()))?;
    let max = state.config.review.bulk_max;
    if bulk.ids.is_empty() || bulk.ids.len() > max {
        return Err(bad(format!(
            "ids must hold 1..={max} ids (review.bulk_max), got {}",
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
    let mut results = Vec::with_capacity(bulk.ids.len());
    for id in bulk.ids {
        results.push(match resolve_one(&state, &auth, id, &body).await {
            Ok(done) => BulkEntry {
                id,
                status: 200,
                result: Some(done),
                error: None,
            },
            Err(
                e @ (ApiJsonError::NotFound(_)
                | ApiJsonError::Conflict(_)
                | ApiJsonError::StreamFailed(_)),
            ) => BulkEntry {
                id,
                status: e.status().as_u16(),
                result: None,
                error: Some(e.detail()),
            },
            Err(other) => return Err(other),
        });
    }
    Ok(Json(BulkResult { results }))
}

fn user_target(user: &str) -> String {
    format!("user:{user}")
}

/// A user's recent decisions, active strikes, earlier bans and whether a ban is in force.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = String, Path, description = "Stream user id")),
    responses(
        (status = 200, description = "The user's standing", body = UserPage),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Nothing is recorded about the user", body = ErrorBody),
    ))]
async fn user_page(
    auth: Auth,
    State(state): State<ReviewState>,
    Path(user): Path<String>,
) -> Result<Json<UserPage>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let decisions = state.store.decisions_for_user(&user, HISTORY_LEN).await?;
    let standing = standing(&state.store, &user).await?;
    if decisions.is_empty() && standing.strikes.is_empty() && standing.bans.is_empty() {
        return Err(ApiJsonError::NotFound(format!(
            "nothing is recorded about user {user:?}"
        )));
    }
    Ok(Json(UserPage {
        user_id: user,
        decisions: decisions.iter().map(|d| d.view()).collect(),
        standing,
    }))
}

/// Unbans on Stream (skipped in dry-run), then lifts the user's bans in the store. If Stream
/// refuses, the store is left as it is, so it keeps matching Stream; the response and the
/// audit row carry the failure.
#[utoipa::path(post, path = "/users/{id}/unban", tag = "users",
    params(("id" = String, Path, description = "Stream user id")),
    responses(
        (status = 200, description = "What the unban did", body = UnbanResult),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot unban", body = ErrorBody),
    ))]
async fn unban(
    auth: Auth,
    State(state): State<ReviewState>,
    Path(user): Path<String>,
) -> Result<Json<UnbanResult>, ApiJsonError> {
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
    let outcome = StreamOutcome::from_result(result);
    if lifted {
        state
            .store
            .record_ban_event(&user, false, None, None, now)
            .await?;
    }
    let (_, _, banned) = state.store.user_standing(&user, now).await?;
    let done = UnbanResult {
        user_id: user,
        outcome,
        lifted,
        banned,
    };
    state
        .store
        .insert_audit(
            &auth.token_name,
            "user.unban",
            &user_target(&done.user_id),
            Some(&json!({"banned": before.2})),
            Some(&snapshot(&done)),
            now,
        )
        .await?;
    Ok(Json(done))
}

/// Query parameters of `GET /decisions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DecisionParams {
    /// Stream user id.
    user: Option<String>,
    #[param(inline)]
    decision: Option<Decision>,
    /// Channel cid (`type:id`).
    channel: Option<String>,
    /// RFC 3339; decisions on webhooks received at or after.
    received_after: Option<DateTime<Utc>>,
    /// RFC 3339; decisions on webhooks received before.
    received_before: Option<DateTime<Utc>>,
    /// `next_before_id` of the previous page.
    before_id: Option<i64>,
    /// Decisions per page, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// The decision log, newest first, filtered, a page at a time.
#[utoipa::path(get, path = "/decisions", tag = "log", params(DecisionParams),
    responses(
        (status = 200, description = "A page of decisions", body = DecisionPage),
        (status = 400, description = "A bad filter or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn decisions(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<DecisionParams>, QueryRejection>,
) -> Result<Json<DecisionPage>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let limit = limit_param(params.limit)?;
    let filter = DecisionFilter {
        user_id: params.user,
        decision: params.decision.map(|d| d.as_str().to_owned()),
        cid: params.channel,
        received_after: params.received_after,
        received_before: params.received_before,
        before_id: params.before_id,
    };
    let rows = state.store.list_decisions(&filter, limit).await?;
    let next_before_id = next_page(&rows, limit, |r| r.id);
    Ok(Json(DecisionPage {
        decisions: rows.iter().map(|d| d.view()).collect(),
        next_before_id,
    }))
}

/// Query parameters of `GET /audit-log`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Entries per page, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_before_id` of the previous page.
    before_id: Option<i64>,
}

/// Every claim, release, resolution, unban and token change, newest first: who, what, when,
/// before and after.
#[utoipa::path(get, path = "/audit-log", tag = "log", params(AuditParams),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "A bad limit or before_id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody),
    ))]
async fn audit_log(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiJsonError> {
    auth.require(Role::Admin)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let limit = limit_param(params.limit)?;
    let rows = state.store.list_audit(limit, params.before_id).await?;
    let next_before_id = next_page(&rows, limit, |r| r.id);
    Ok(Json(AuditPage {
        entries: rows.iter().map(|r| r.view()).collect(),
        next_before_id,
    }))
}

/// Open items by category, the median time to resolution, and per rule and per category the
/// share of reviewed items moderators upheld (remove or ban): the rules' precision.
#[utoipa::path(get, path = "/stats", tag = "log",
    responses(
        (status = 200, description = "The queue at a glance", body = ReviewStats),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn stats(
    auth: Auth,
    State(state): State<ReviewState>,
) -> Result<Json<ReviewStats>, ApiJsonError> {
    auth.require(Role::Viewer)?;
    Ok(Json(state.store.review_stats(Utc::now()).await?))
}

/// Query parameters of `GET /export/labels`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportParams {
    /// RFC 3339; items resolved at or after.
    since: DateTime<Utc>,
}

/// Rows per `reviewed_labels` page while exporting.
const EXPORT_PAGE: i64 = 500;

/// One export line, as [`LabelLine`] describes.
fn label_line(row: &ReviewItemRow) -> String {
    let upheld = row
        .resolution
        .as_deref()
        .and_then(|r| r.parse::<Resolution>().ok())
        .is_some_and(Resolution::upholds);
    let line = LabelLine {
        text: row.text.clone(),
        category: row.category.clone(),
        verdict: if upheld { "violation" } else { "clean" }.to_owned(),
    };
    let mut text = snapshot(&line).to_string();
    text.push('\n');
    text
}

/// Reviewed items resolved since `since` as JSON lines (each a `LabelLine`), for retraining.
/// The body is streamed a page at a time, so a large export is never held in memory; the
/// status is sent before the first page, so a store failure mid-way cuts the body short.
#[utoipa::path(get, path = "/export/labels", tag = "log", params(ExportParams),
    responses(
        (status = 200, description = "JSON lines, each a LabelLine", content_type = "application/x-ndjson", body = LabelLine),
        (status = 400, description = "since is missing or not RFC 3339", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn export_labels(
    auth: Auth,
    State(state): State<ReviewState>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiJsonError> {
    auth.require(Role::Viewer)?;
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let since = params.since;
    let store = state.store.clone();
    let pages = futures::stream::try_unfold(Some(0_i64), move |after| {
        let store = store.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let rows = store.reviewed_labels(since, after, EXPORT_PAGE).await?;
            let next = next_page(&rows, EXPORT_PAGE, |r| r.id);
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

/// Every token, revoked ones included; never a secret.
#[utoipa::path(get, path = "/tokens", tag = "tokens",
    responses(
        (status = 200, description = "The tokens", body = TokenList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody),
    ))]
async fn list_tokens(
    auth: Auth,
    State(state): State<ReviewState>,
) -> Result<Json<TokenList>, ApiJsonError> {
    auth.require(Role::Admin)?;
    Ok(Json(TokenList {
        tokens: state.store.list_tokens().await?,
    }))
}

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// 1 to 64 characters (leading and trailing spaces do not count), unique.
    #[schema(min_length = 1, max_length = 64, pattern = "\\S")]
    name: String,
    role: Role,
}

/// Longest token name accepted.
const MAX_TOKEN_NAME: usize = 64;

/// Creates a token; the secret is in this response only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = NewToken,
    responses(
        (status = 201, description = "Created", body = NewTokenResult),
        (status = 400, description = "A bad name or role", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    ))]
async fn create_token(
    auth: Auth,
    State(state): State<ReviewState>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<NewTokenResult>), ApiJsonError> {
    auth.require(Role::Admin)?;
    let Json(new) = body.map_err(|e| bad(e.body_text()))?;
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME {
        return Err(bad(format!("name must be 1..={MAX_TOKEN_NAME} characters")));
    }
    let now = Utc::now();
    let (token, secret) = state
        .store
        .create_token(name, new.role, now)
        .await?
        .ok_or_else(|| ApiJsonError::Conflict(format!("a token named {name:?} exists")))?;
    state
        .store
        .insert_audit(
            &auth.token_name,
            "token.create",
            &format!("token:{name}"),
            None,
            Some(&snapshot(&token)),
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(NewTokenResult { token, secret })))
}

/// Revokes a token; `revoked` is false if it already was.
#[utoipa::path(delete, path = "/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "Token name")),
    responses(
        (status = 200, description = "Revoked", body = RevokeResult),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Admins only", body = ErrorBody),
        (status = 404, description = "No token of that name", body = ErrorBody),
    ))]
async fn revoke_token(
    auth: Auth,
    State(state): State<ReviewState>,
    Path(name): Path<String>,
) -> Result<Json<RevokeResult>, ApiJsonError> {
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
    Ok(Json(RevokeResult { name, revoked }))
}
