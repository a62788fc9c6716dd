//! The bodies `/api/v1` answers with, typed so that the OpenAPI document describes exactly what
//! the handlers serialise.

use serde::Serialize;
use utoipa::ToSchema;

use crate::actions::stream::StreamError;
use crate::store::{AuditEntry, BanRow, DecisionView, ReviewItemView, StrikeRow, TokenRow};

/// Every `/api/` error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`, `bad_request`, `stream_failed` or
    /// `internal`.
    pub code: String,
    pub message: String,
}

/// A page of `GET /review-items`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewItemPage {
    pub items: Vec<ReviewItemView>,
    /// Pass as `cursor` (with the same filters and sort) for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// `GET /review-items/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewItemDetail {
    pub item: ReviewItemView,
    /// The item's latest decision with its reasons.
    pub decision: Option<DecisionView>,
    /// The user's latest decisions, newest first.
    pub history: Vec<DecisionView>,
    /// The user's strikes and bans, newest first.
    pub standing: Standing,
}

/// A user's strikes and bans.
#[derive(Debug, Serialize, ToSchema)]
pub struct Standing {
    /// Strikes inside the escalation window, not cleared by a moderator.
    pub active_strikes: i64,
    /// Bans chatguard gave before.
    pub previous_bans: i64,
    /// Whether a ban is in force.
    pub banned: bool,
    /// Latest strikes, cleared and expired ones included.
    pub strikes: Vec<StrikeRow>,
    /// Latest bans, lifted and expired ones included.
    pub bans: Vec<BanRow>,
}

/// An item after a claim or a release.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemBody {
    pub item: ReviewItemView,
}

/// What a moderator's action did on Stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamOutcome {
    /// `ok`, `failed` (unban only: a failed resolution answers 502), or `skipped` (dry-run: no
    /// Stream credentials).
    pub status: String,
    /// The Stream calls made, when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<String>>,
    /// Stream's error, when `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why nothing was called, when `skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl StreamOutcome {
    /// None: no Stream client (dry-run).
    pub fn from_result(result: Option<Result<Vec<&'static str>, StreamError>>) -> Self {
        let empty = StreamOutcome {
            status: String::new(),
            calls: None,
            error: None,
            reason: None,
        };
        match result {
            None => StreamOutcome {
                status: "skipped".into(),
                reason: Some("dry-run: no Stream credentials".into()),
                ..empty
            },
            Some(Ok(calls)) => StreamOutcome {
                status: "ok".into(),
                calls: Some(calls.into_iter().map(str::to_owned).collect()),
                ..empty
            },
            Some(Err(e)) => StreamOutcome::failed(e.to_string()),
        }
    }

    pub fn failed(error: String) -> Self {
        StreamOutcome {
            status: "failed".into(),
            calls: None,
            error: Some(error),
            reason: None,
        }
    }
}

/// `POST /review-items/{id}/resolve`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResolveResult {
    pub item: ReviewItemView,
    /// True when the item was resolved before: nothing was done again.
    pub already_resolved: bool,
    /// What the resolution did on Stream (`ok` or `skipped`); absent when `already_resolved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StreamOutcome>,
    /// On `approve`: whether a strike the decision gave was cleared; absent when
    /// `already_resolved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strike_cleared: Option<bool>,
}

/// One id of a bulk resolve: `status` is what the single route would have answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkEntry {
    pub id: i64,
    /// 200, 404, 409 or 502.
    pub status: u16,
    /// The result, when `status` is 200.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResolveResult>,
    /// Why not, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /review-items/bulk-resolve`: one entry per id, in the order given.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    pub results: Vec<BulkEntry>,
}

/// `GET /users/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub user_id: String,
    /// Latest decisions, newest first.
    pub decisions: Vec<DecisionView>,
    #[serde(flatten)]
    pub standing: Standing,
}

/// `POST /users/{id}/unban`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnbanResult {
    pub user_id: String,
    pub outcome: StreamOutcome,
    /// False when Stream refused: the stored bans are left as they are.
    pub lifted: bool,
    /// Whether a ban is still in force.
    pub banned: bool,
}

/// A page of `GET /decisions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionPage {
    pub decisions: Vec<DecisionView>,
    /// Pass as `before_id` for the next page; null on the last.
    pub next_before_id: Option<i64>,
}

/// A page of `GET /audit-log`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before_id` for the next page; null on the last.
    pub next_before_id: Option<i64>,
}

/// One line of `GET /export/labels`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelLine {
    pub text: String,
    pub category: String,
    /// `violation` when the moderator upheld chatguard (remove, ban), `clean` otherwise.
    pub verdict: String,
}

/// `GET /tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenRow>,
}

/// `POST /tokens`: the secret is shown here only.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewTokenResult {
    pub token: TokenRow,
    pub secret: String,
}

/// `DELETE /tokens/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResult {
    pub name: String,
    /// False when the token was already revoked.
    pub revoked: bool,
}
