//! Rows read from and written to the store.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::Scores;

/// A verified webhook about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub webhook_id: String,
    pub api_key: String,
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

/// A decision about to be stored. JSON columns arrive serialised.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub event_id: i64,
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
    pub action: String,
    pub action_status: &'static str,
    pub dry_run: bool,
    pub worker: String,
    pub received_at: DateTime<Utc>,
    /// Fingerprint of the normalised text, for repeat detection.
    pub fingerprint: Option<i64>,
    /// Set when the decision is a strike: when it stops counting.
    pub strike_expires_at: Option<DateTime<Utc>>,
    /// Set when the decision bans: until when (`None`: permanent), and why.
    pub ban: Option<(Option<DateTime<Utc>>, String)>,
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
}

impl DecisionRow {
    /// The decision as one JSON object, with the JSON columns expanded.
    pub fn to_json(&self) -> serde_json::Value {
        let parse =
            |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_owned()));
        serde_json::json!({
            "id": self.id,
            "event_id": self.event_id,
            "webhook_id": self.webhook_id,
            "event_type": self.event_type,
            "message_id": self.message_id,
            "cid": self.cid,
            "user_id": self.user_id,
            "text": self.text,
            "scores": {"toxicity": self.toxicity, "spam": self.spam, "explicit": self.explicit},
            "matched_rules": parse(&self.matched_rules),
            "reasons": parse(&self.reasons),
            "decision": self.decision,
            "policy_version": self.policy_version,
            "action": parse(&self.action),
            "action_status": self.action_status,
            "action_result": self.action_result.as_deref().map(parse),
            "alert_status": self.alert_status,
            "dry_run": self.dry_run,
            "worker": self.worker,
            "received_at": self.received_at,
            "decided_at": self.decided_at,
            "latency_ms": (self.decided_at - self.received_at).num_milliseconds(),
        })
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
