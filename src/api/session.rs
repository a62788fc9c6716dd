//! What a client of the API needs to know about itself and the policy in force: `GET /me` (the
//! token's name and role, so a console shows only what the role allows) and `GET /policy` (the
//! thresholds the scores are judged against, so they can be drawn beside the scores).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{ApiJsonError, Viewer};
use super::extract::QueryParams;
use super::review::ReviewState;
use super::schema::ErrorBody;
use crate::domain::Category;

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub token_name: String,
    /// `viewer`, `moderator` or `admin`.
    pub role: String,
}

/// The token's name and role.
#[utoipa::path(get, path = "/me", tag = "tokens",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn me(Viewer(auth): Viewer) -> Json<Me> {
    Json(Me {
        token_name: auth.token_name,
        role: auth.role.as_str().to_owned(),
    })
}

/// Query parameters of `GET /policy`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PolicyParams {
    /// A channel type (the part of a cid before `:`); its overrides apply when it has any.
    #[param(max_length = 64)]
    channel_type: Option<String>,
}

/// A category's levels.
#[derive(Debug, Serialize, ToSchema)]
pub struct Levels {
    /// A score at or above this is flagged.
    pub flag: f64,
    /// A score at or above this is blocked.
    pub block: f64,
}

/// The thresholds in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyThresholds {
    /// The policy's version (`rules/policy.toml`).
    pub version: String,
    pub channel_type: Option<String>,
    /// Per category (`toxicity`, `spam`, `explicit`).
    pub thresholds: BTreeMap<String, Levels>,
}

/// The policy's flag and block thresholds per category, for a channel type if given.
#[utoipa::path(get, path = "/policy", tag = "log", params(PolicyParams),
    responses(
        (status = 200, description = "The thresholds in force", body = PolicyThresholds),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn policy(
    _: Viewer,
    State(state): State<ReviewState>,
    QueryParams(params): QueryParams<PolicyParams>,
) -> Result<Json<PolicyThresholds>, ApiJsonError> {
    if params.channel_type.as_ref().is_some_and(|c| c.len() > 64) {
        return Err(ApiJsonError::BadRequest(
            "channel_type is at most 64 characters".into(),
        ));
    }
    let rules = state.rules.current();
    let thresholds = Category::ALL
        .iter()
        .map(|&c| {
            let t = rules
                .policy
                .threshold_for(c, params.channel_type.as_deref());
            (
                c.as_str().to_owned(),
                Levels {
                    flag: t.flag,
                    block: t.block,
                },
            )
        })
        .collect();
    Ok(Json(PolicyThresholds {
        version: rules.policy.version.clone(),
        channel_type: params.channel_type,
        thresholds,
    }))
}
