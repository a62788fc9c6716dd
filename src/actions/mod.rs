//! What a decision does on Stream. This release plans and records the action; calling Stream's
//! REST API arrives with the actions release, so with credentials an action is recorded as
//! `pending` and in dry-run as `would_do`.

pub mod email;
pub mod executor;
pub mod stream;

use serde::Serialize;

use crate::domain::{ChatEvent, Decision};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    None,
    FlagMessage,
    DeleteMessage,
    BanUser,
}

/// The Stream call a decision maps to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedAction {
    pub kind: ActionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub description: String,
}

pub fn plan(decision: Decision, event: &ChatEvent) -> PlannedAction {
    let message_id = event.message_id().map(str::to_owned);
    let user_id = event.subject_user_id().map(str::to_owned);
    let m = message_id.as_deref().unwrap_or("?");
    let (kind, description) = match decision {
        Decision::Allow => (ActionKind::None, "nothing".to_owned()),
        Decision::Flag => (
            ActionKind::FlagMessage,
            format!("flag message {m} for review"),
        ),
        Decision::Block => (
            ActionKind::DeleteMessage,
            format!("hard-delete message {m}"),
        ),
        Decision::Ban => (
            ActionKind::BanUser,
            format!(
                "hard-delete message {m} and ban user {}",
                user_id.as_deref().unwrap_or("?")
            ),
        ),
    };
    PlannedAction {
        kind,
        message_id,
        user_id,
        description,
    }
}

/// The recorded status of a planned action.
pub fn status(action: &PlannedAction, dry_run: bool) -> &'static str {
    match (action.kind, dry_run) {
        (ActionKind::None, _) => "none",
        (_, true) => "would_do",
        (_, false) => "pending",
    }
}
