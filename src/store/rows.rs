//! Rows read from and written to the store.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::Scores;

/// A verified webhook about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub webhook_id: String,
    pub api_key: String,
    /// The app and [`crate::domain::ChatEvent::content_identity`]: a replay under a new webhook
    /// id is recognised by it.
    pub content_key: Option<String>,
    pub event_type: String,
    pub status: &'static str,
    pub message_id: Option<String>,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub payload: String,
    pub received_at: DateTime<Utc>,
}

/// One run of a job; a failed one is recorded in `job_attempts` with its error.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub event_id: i64,
    pub attempt: u32,
    pub worker: &'a str,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub webhook_id: String,
    pub api_key: String,
    pub event_type: String,
    pub status: String,
    pub deliveries: i64,
    pub message_id: Option<String>,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub payload: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A decision about to be stored, with what is to be written in the same transaction: the
/// strike it gives, the review item it opens and the Stream calls it implies. JSON columns
/// arrive serialised.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub event_id: i64,
    /// The API key of the app whose webhook this answers.
    pub app: String,
    pub webhook_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub text: String,
    pub scores: Scores,
    pub matched_rules: String,
    pub reasons: String,
    pub decision: &'static str,
    pub policy_version: String,
    /// JSON list of the planned Stream calls.
    pub action: String,
    pub action_status: &'static str,
    pub dry_run: bool,
    /// Decided in shadow mode (or for an exempt role): logged, not acted on.
    pub shadow: bool,
    /// JSON: the strike, ban and calls a shadow, exempt or dry-run decision would have made.
    pub would_do: Option<String>,
    pub worker: String,
    pub received_at: DateTime<Utc>,
    /// Fingerprint of the normalised text, for repeat detection.
    pub fingerprint: Option<i64>,
    /// Set when the decision is a strike that counts: when it stops counting.
    pub strike_expires_at: Option<DateTime<Utc>>,
    /// Set when the calls are to be made: the outbox row (its decision id is filled in).
    pub outbox: Option<super::actions::NewAction>,
    /// Set when the decision opens (or adds to) a review item (its decision id is filled in).
    pub review: Option<super::review::NewReviewItem>,
}

/// How a successful job ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Decided(Box<NewDecision>),
    /// An event that needs no decision.
    Processed {
        event_id: i64,
    },
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub id: i64,
    pub event_id: i64,
    pub app: String,
    pub webhook_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub text: String,
    pub toxicity: f64,
    pub spam: f64,
    pub explicit: f64,
    pub matched_rules: String,
    pub reasons: String,
    pub decision: String,
    pub policy_version: String,
    pub action: String,
    pub action_status: String,
    pub dry_run: bool,
    pub worker: String,
    pub received_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    /// What each step did on Stream (JSON), once carried out.
    pub action_result: Option<String>,
    /// How the e-mail digest holding this decision went.
    pub alert_status: Option<String>,
    pub shadow: bool,
    pub would_do: Option<String>,
}

/// Stored JSON text as a value (a string if it is not JSON).
pub(crate) fn parse_json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_owned()))
}

/// A decision as the API and `chatguard decisions --json` show it, JSON columns expanded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Decision)]
pub struct DecisionView {
    pub id: i64,
    pub event_id: i64,
    /// The API key of the app the message belongs to.
    pub app: String,
    pub webhook_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub text: String,
    pub scores: Scores,
    /// Ids of the rules that matched.
    pub matched_rules: serde_json::Value,
    /// Why each score is what it is: rules, terms with offsets, signals, model features.
    pub reasons: serde_json::Value,
    /// `allow`, `flag`, `block` or `ban`.
    pub decision: String,
    pub policy_version: String,
    /// The planned action.
    pub action: serde_json::Value,
    /// `pending`, `done`, `failed`, `skipped` or `would_do`.
    pub action_status: String,
    /// What each step did on Stream, once carried out.
    pub action_result: Option<serde_json::Value>,
    pub alert_status: Option<String>,
    pub dry_run: bool,
    /// Decided in shadow mode or for an exempt role: logged, not acted on.
    pub shadow: bool,
    /// What a shadow, exempt or dry-run decision would have done (strike, ban, calls).
    pub would_do: Option<serde_json::Value>,
    pub worker: String,
    pub received_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    pub latency_ms: i64,
}

impl DecisionRow {
    pub fn view(&self) -> DecisionView {
        DecisionView {
            id: self.id,
            event_id: self.event_id,
            app: self.app.clone(),
            webhook_id: self.webhook_id.clone(),
            event_type: self.event_type.clone(),
            message_id: self.message_id.clone(),
            cid: self.cid.clone(),
            user_id: self.user_id.clone(),
            text: self.text.clone(),
            scores: Scores {
                toxicity: self.toxicity,
                spam: self.spam,
                explicit: self.explicit,
            },
            matched_rules: parse_json(&self.matched_rules),
            reasons: parse_json(&self.reasons),
            decision: self.decision.clone(),
            policy_version: self.policy_version.clone(),
            action: parse_json(&self.action),
            action_status: self.action_status.clone(),
            action_result: self.action_result.as_deref().map(parse_json),
            alert_status: self.alert_status.clone(),
            dry_run: self.dry_run,
            shadow: self.shadow,
            would_do: self.would_do.as_deref().map(parse_json),
            worker: self.worker.clone(),
            received_at: self.received_at,
            decided_at: self.decided_at,
            latency_ms: (self.decided_at - self.received_at).num_milliseconds(),
        }
    }

    /// [`DecisionRow::view`] as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub event_id: i64,
    pub webhook_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    pub attempts: i64,
    pub last_error: String,
    pub failed_at: DateTime<Utc>,
    pub retried_at: Option<DateTime<Utc>>,
    pub retry_count: i64,
}

/// A strike: a blocked message counts towards a ban until `expires_at`, unless a moderator
/// cleared it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = Strike)]
pub struct StrikeRow {
    pub id: i64,
    pub app: String,
    pub decision_id: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
}

/// A ban, chatguard's or one Stream told us about.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = Ban)]
pub struct BanRow {
    pub id: i64,
    pub app: String,
    /// `chatguard` (the escalation ladder, once Stream confirmed the ban), `moderator` (a
    /// resolution or ban through the review API) or `stream` (a `user.banned` event).
    pub source: String,
    pub decision_id: Option<i64>,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    /// None: permanent.
    pub until: Option<DateTime<Utc>>,
    pub lifted_at: Option<DateTime<Utc>>,
}
