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
use axum::extract::{FromRef, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, ApiJsonError, Auth, Moderator, Viewer};
use super::extract::{ItemId, JsonBody, QueryParams};
use super::schema::{
    AuditPage, BulkEntry, BulkResult, DecisionPage, ErrorBody, ItemBody, LabelLine, NewTokenResult,
    ResolveResult, ReviewItemDetail, ReviewItemPage, RevokeResult, Standing, StreamOutcome,
    TokenList, UnbanResult, UserPage,
};
use crate::actions::plan::{DeleteMode, ResolutionCalls, Step, plan_resolution};
use crate::actions::runner::{ActionWaker, WorkOutcome, api_outcome};
use crate::config::Config;
use crate::domain::{Category, Decision};
use crate::store::{
    ActionContext, ClaimOutcome, Cursor, DecisionFilter, ItemBefore, ReleaseOutcome, Resolution,
    ResolveOutcome, ResolveRequest, ReviewFilter, ReviewItemRow, ReviewSort, ReviewStats,
    ReviewStatus, Role, Store, StoreError,
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
    /// Resolutions make no Stream call.
    pub dry_run: bool,
    /// Wakes this process's action runner when a resolution writes work.
    pub actions: ActionWaker,
    /// The policy in force (its thresholds are served to clients).
    pub rules: crate::reload::RulesHandle,
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
        .routes(routes!(super::session::me))
        .routes(routes!(super::session::policy))
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
            axum::routing::get(move |viewer: Viewer| openapi_json(viewer, doc.clone())),
        )
        .with_state(state)
}

/// Behind a token like every `/api/` route; any role may read it.
async fn openapi_json(
    _: Viewer,
    doc: Arc<utoipa::openapi::OpenApi>,
) -> Result<Json<Arc<utoipa::openapi::OpenApi>>, ApiJsonError> {
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
    /// The app's API key.
    app: Option<String>,
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
            app: self.app,
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
    _: Viewer,
    State(state): State<ReviewState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ReviewItemPage>, ApiJsonError> {
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
    _: Viewer,
    State(state): State<ReviewState>,
    ItemId(id): ItemId,
) -> Result<Json<ReviewItemDetail>, ApiJsonError> {
    let row = load(&state.store, id).await?;
    let decision = state
        .store
        .decision_by_id(row.decision_id)
        .await?
        .map(|d| d.view());
    let user = row.user_id.as_deref().unwrap_or_default();
    let history = state
        .store
        .decisions_for_user(Some(&row.app), user, HISTORY_LEN)
        .await?
        .iter()
        .map(|d| d.view())
        .collect();
    Ok(Json(ReviewItemDetail {
        item: row.view(),
        decision,
        history,
        standing: standing(&state.store, Some(&row.app), user).await?,
    }))
}

/// The user's strike and ban counts and latest rows.
/// Without an app, the counts are the user's in the app of their latest decision.
async fn standing(store: &Store, app: Option<&str>, user: &str) -> Result<Standing, ApiJsonError> {
    let app = match app {
        Some(a) => a.to_owned(),
        None => store
            .decisions_for_user(None, user, 1)
            .await?
            .first()
            .map(|d| d.app.clone())
            .unwrap_or_default(),
    };
    let s = store.user_standing(&app, user, Utc::now()).await?;
    let (strikes, bans) = store
        .strikes_and_bans(Some(&app), user, HISTORY_LEN)
        .await?;
    Ok(Standing {
        active_strikes: s.active_strikes,
        previous_bans: s.previous_bans,
        banned: s.banned_now,
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
    Moderator(auth): Moderator,
    State(state): State<ReviewState>,
    ItemId(id): ItemId,
) -> Result<Json<ItemBody>, ApiJsonError> {
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
    Moderator(auth): Moderator,
    State(state): State<ReviewState>,
    ItemId(id): ItemId,
) -> Result<Json<ItemBody>, ApiJsonError> {
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

/// The Stream calls `body` asks for on `row`.
fn resolution_steps(
    config: &Config,
    row: &ReviewItemRow,
    body: &ResolveBody,
) -> Result<Vec<Step>, ApiJsonError> {
    let hard = body
        .hard
        .unwrap_or(config.actions.delete == DeleteMode::Hard);
    let calls = match body.resolution {
        Resolution::Approve => ResolutionCalls::Unflag,
        Resolution::Remove => ResolutionCalls::Delete { hard },
        Resolution::Ban => ResolutionCalls::Ban {
            timeout_minutes: body.ban_timeout_minutes,
            delete: body.delete_message.then_some(hard),
        },
        Resolution::Dismiss => ResolutionCalls::Nothing,
    };
    plan_resolution(
        calls,
        &row.message_id,
        row.user_id.as_deref(),
        body.reason.as_deref(),
    )
    .map_err(bad)
}

/// Resolves the item and has the resolution carried out on Stream (nothing in dry-run).
///
/// The item becomes `resolving` and the Stream calls are written as durable work in the same
/// transaction, so of two racing or repeated requests only one resolves it, and a crash cannot
/// lose the calls. The answer waits up to `review.resolve_wait_ms` for Stream: 200 once it
/// confirmed, 502 if it refused (the item is put back as it was, so the moderator can try
/// again), 202 if Stream is not answering yet (the work goes on with retries; the item shows
/// `resolving`). A repeat answers 200 with `already_resolved` and calls nothing.
#[utoipa::path(post, path = "/review-items/{id}/resolve", tag = "review",
    params(("id" = i64, Path, description = "Review item id")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Resolved (or resolved before)", body = ResolveResult),
        (status = 202, description = "Waiting for Stream; the item is `resolving`", body = ResolveResult),
        (status = 400, description = "A bad id or body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot resolve", body = ErrorBody),
        (status = 404, description = "No such item", body = ErrorBody),
        (status = 409, description = "Another moderator holds a claim on it", body = ErrorBody),
        (status = 502, description = "Stream refused; the item is as it was", body = ErrorBody),
    ))]
async fn resolve(
    Moderator(auth): Moderator,
    State(state): State<ReviewState>,
    ItemId(id): ItemId,
    JsonBody(body): JsonBody<ResolveBody>,
) -> Result<(StatusCode, Json<ResolveResult>), ApiJsonError> {
    if body.ban_timeout_minutes == Some(0) {
        return Err(bad("ban_timeout_minutes must be positive"));
    }
    let done = resolve_one(&state, &auth, id, &body).await?;
    let status = if done.item.status == "resolving" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(done)))
}

/// Resolves one item as [`resolve`] describes; shared with [`bulk_resolve`].
async fn resolve_one(
    state: &ReviewState,
    auth: &Auth,
    id: i64,
    body: &ResolveBody,
) -> Result<ResolveResult, ApiJsonError> {
    let before = load(&state.store, id).await?;
    let steps = resolution_steps(&state.config, &before, body)?;
    let calls = !steps.is_empty() && !state.dry_run;
    let skipped = if state.dry_run && !steps.is_empty() {
        StreamOutcome::from_result(None)
    } else {
        StreamOutcome {
            status: "ok".into(),
            calls: Some(Vec::new()),
            error: None,
            reason: None,
        }
    };
    let request = ResolveRequest {
        id,
        moderator: &auth.token_name,
        resolution: body.resolution,
        note: body.note.as_deref(),
        now: Utc::now(),
        steps: calls
            .then(|| serde_json::to_string(&steps))
            .transpose()
            .map_err(|e| ApiJsonError::Internal(e.to_string()))?,
        context: ActionContext {
            actor: auth.token_name.clone(),
            resolution: Some(body.resolution.as_str().to_owned()),
            before: Some(ItemBefore {
                status: before.status.clone(),
                claimed_by: before.claimed_by.clone(),
                claim_expires_at: before.claim_expires_at,
                note: before.note.clone(),
            }),
            audit_before: Some(snapshot(&before.view())),
            ..ActionContext::default()
        },
        outcome_without_calls: snapshot(&skipped),
    };
    let (row, action_id) = match state.store.resolve_review_item(&request).await? {
        ResolveOutcome::Resolved { row, action_id } => (row, action_id),
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
    let Some(action_id) = action_id else {
        return Ok(ResolveResult {
            item: row.view(),
            already_resolved: false,
            outcome: Some(skipped),
            strike_cleared: Some(false),
        });
    };
    state.actions.wake();
    match wait_for(state, action_id).await? {
        Some(outcome) if outcome.status == "failed" => {
            let error = api_outcome(&outcome)["error"]
                .as_str()
                .unwrap_or("refused")
                .to_owned();
            Err(ApiJsonError::StreamFailed(format!(
                "Stream did not carry the resolution out ({error}); the item is as it was, try again"
            )))
        }
        Some(outcome) => {
            let item = load(&state.store, id).await?;
            let strike_cleared = body.resolution == Resolution::Approve
                && state
                    .store
                    .strikes_and_bans(
                        Some(&item.app),
                        item.user_id.as_deref().unwrap_or_default(),
                        HISTORY_LEN,
                    )
                    .await?
                    .0
                    .iter()
                    .any(|s| s.decision_id == item.decision_id && s.cleared_at.is_some());
            Ok(ResolveResult {
                item: item.view(),
                already_resolved: false,
                outcome: Some(stream_outcome(&outcome)),
                strike_cleared: Some(strike_cleared),
            })
        }
        None => Ok(ResolveResult {
            item: load(&state.store, id).await?.view(),
            already_resolved: false,
            outcome: None,
            strike_cleared: None,
        }),
    }
}

/// Waits up to `review.resolve_wait_ms` for the work to end; None if it has not.
async fn wait_for(
    state: &ReviewState,
    action_id: i64,
) -> Result<Option<WorkOutcome>, ApiJsonError> {
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(state.config.review.resolve_wait_ms);
    loop {
        let row = state.store.get_action(action_id).await?;
        if row.status != "pending" {
            return Ok(serde_json::from_str(&row.results).ok());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn stream_outcome(outcome: &WorkOutcome) -> StreamOutcome {
    let v = api_outcome(outcome);
    StreamOutcome {
        status: v["status"].as_str().unwrap_or("failed").to_owned(),
        calls: v["calls"].as_array().map(|c| {
            c.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        }),
        error: v["error"].as_str().map(str::to_owned),
        reason: None,
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
    Moderator(auth): Moderator,
    State(state): State<ReviewState>,
    JsonBody(bulk): JsonBody<BulkBody>,
) -> Result<Json<BulkResult>, ApiJsonError> {
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
    params(("id" = String, Path, description = "Stream user id"), UserParams),
    responses(
        (status = 200, description = "The user's standing", body = UserPage),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Nothing is recorded about the user", body = ErrorBody),
    ))]
async fn user_page(
    _: Viewer,
    State(state): State<ReviewState>,
    Path(user): Path<String>,
    QueryParams(params): QueryParams<UserParams>,
) -> Result<Json<UserPage>, ApiJsonError> {
    let decisions = state
        .store
        .decisions_for_user(params.app.as_deref(), &user, HISTORY_LEN)
        .await?;
    let standing = standing(&state.store, params.app.as_deref(), &user).await?;
    let known_elsewhere = || async {
        Ok::<_, ApiJsonError>(
            params.app.is_some()
                && !state
                    .store
                    .decisions_for_user(None, &user, 1)
                    .await?
                    .is_empty(),
        )
    };
    if decisions.is_empty()
        && standing.strikes.is_empty()
        && standing.bans.is_empty()
        && !known_elsewhere().await?
    {
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

/// Query parameters of the user routes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UserParams {
    /// The app's API key; the app of the user's latest decision when absent.
    app: Option<String>,
}

/// Unbans on Stream (skipped in dry-run), through the same durable work as every action, then
/// lifts the user's bans in the store once Stream confirmed. If Stream refuses, the store is
/// left as it is, so it keeps matching Stream; the response and the audit row carry the failure.
#[utoipa::path(post, path = "/users/{id}/unban", tag = "users",
    params(("id" = String, Path, description = "Stream user id"), UserParams),
    responses(
        (status = 200, description = "What the unban did", body = UnbanResult),
        (status = 202, description = "Waiting for Stream; the unban goes on with retries", body = UnbanResult),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Viewers cannot unban", body = ErrorBody),
    ))]
async fn unban(
    Moderator(auth): Moderator,
    State(state): State<ReviewState>,
    Path(user): Path<String>,
    QueryParams(params): QueryParams<UserParams>,
) -> Result<(StatusCode, Json<UnbanResult>), ApiJsonError> {
    let now = Utc::now();
    let app = match params.app {
        Some(a) => a,
        None => state
            .store
            .decisions_for_user(None, &user, 1)
            .await?
            .first()
            .map(|d| d.app.clone())
            .unwrap_or_default(),
    };
    let before = state.store.user_standing(&app, &user, now).await?;
    let mut status = StatusCode::OK;
    let (outcome, lifted) = if state.dry_run {
        (StreamOutcome::from_result(None), true)
    } else {
        let steps = serde_json::to_string(&[Step::Unban {
            user_id: user.clone(),
        }])
        .map_err(|e| ApiJsonError::Internal(e.to_string()))?;
        let context = ActionContext {
            actor: auth.token_name.clone(),
            user_id: Some(user.clone()),
            audit_before: Some(json!({"banned": before.banned_now})),
            ..ActionContext::default()
        };
        let action_id = state
            .store
            .request_unban(&app, &steps, &context, now)
            .await?;
        state.actions.wake();
        match wait_for(&state, action_id).await? {
            Some(o) => {
                let lifted = o.status == "done";
                (stream_outcome(&o), lifted)
            }
            None => {
                status = StatusCode::ACCEPTED;
                (
                    StreamOutcome {
                        status: "pending".into(),
                        calls: None,
                        error: None,
                        reason: Some("waiting for Stream; retried until it answers".into()),
                    },
                    false,
                )
            }
        }
    };
    if state.dry_run {
        state
            .store
            .record_ban_event(&app, &user, false, None, None, now)
            .await?;
        state
            .store
            .insert_audit(
                &auth.token_name,
                "user.unban",
                &user_target(&user),
                Some(&json!({"banned": before.banned_now})),
                Some(&snapshot(&outcome)),
                now,
            )
            .await?;
    }
    let banned = state
        .store
        .user_standing(&app, &user, now)
        .await?
        .banned_now;
    Ok((
        status,
        Json(UnbanResult {
            user_id: user,
            outcome,
            lifted,
            banned,
        }),
    ))
}

/// Query parameters of `GET /decisions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DecisionParams {
    /// The app's API key.
    app: Option<String>,
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
    _: Viewer,
    State(state): State<ReviewState>,
    QueryParams(params): QueryParams<DecisionParams>,
) -> Result<Json<DecisionPage>, ApiJsonError> {
    let limit = limit_param(params.limit)?;
    let filter = DecisionFilter {
        app: params.app,
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
    _: Admin,
    State(state): State<ReviewState>,
    QueryParams(params): QueryParams<AuditParams>,
) -> Result<Json<AuditPage>, ApiJsonError> {
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
    _: Viewer,
    State(state): State<ReviewState>,
) -> Result<Json<ReviewStats>, ApiJsonError> {
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
    _: Viewer,
    State(state): State<ReviewState>,
    QueryParams(params): QueryParams<ExportParams>,
) -> Result<Response, ApiJsonError> {
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
    _: Admin,
    State(state): State<ReviewState>,
) -> Result<Json<TokenList>, ApiJsonError> {
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
    Admin(auth): Admin,
    State(state): State<ReviewState>,
    JsonBody(new): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<NewTokenResult>), ApiJsonError> {
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
    Admin(auth): Admin,
    State(state): State<ReviewState>,
    Path(name): Path<String>,
) -> Result<Json<RevokeResult>, ApiJsonError> {
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
