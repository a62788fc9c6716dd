//! Carries out one planned [`Step`] on Stream with the credentials of the app the event came
//! from. Every call is idempotent as Stream can observe it: a delete of a message already gone
//! (404) is done, a notice re-sent under its client-chosen id is not a second message, a repeated
//! ban replaces the first, and an unflag of a message already gone is done. So the runner may
//! carry a step out again after a crash without acting twice.

use std::collections::HashMap;

use crate::actions::plan::{Notice, Step};
use crate::actions::stream::{
    Attachment, AttachmentField, BanRequest, OutgoingMessage, StreamClient, StreamError,
};
use crate::domain::Decision;

/// The longest excerpt of the message text in a notice, in characters.
pub const EXCERPT_MAX_CHARS: usize = 140;
/// The longest reason list in a notice, in characters.
const REASONS_MAX_CHARS: usize = 300;

/// A step could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("no Stream credentials for app {0:?}")]
    NoApp(String),
    #[error("{}", error_chain(.0))]
    Stream(#[from] StreamError),
}

impl StepError {
    /// Whether trying again later may succeed (Stream down, 5xx, 429, timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            StepError::NoApp(_) => false,
            StepError::Stream(e) => e.is_retryable(),
        }
    }
}

/// The error and its sources on one line: `StreamError`'s own text leaves out e.g. the
/// connection error behind "cannot reach Stream".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// Runs Stream calls for every configured app.
#[derive(Debug, Clone, Default)]
pub struct Executor {
    /// API key → client.
    clients: HashMap<String, StreamClient>,
    bot_user_id: String,
}

impl Executor {
    pub fn new(clients: HashMap<String, StreamClient>, bot_user_id: String) -> Self {
        Self {
            clients,
            bot_user_id,
        }
    }

    /// Carries `step` out for `app`; `decision_id` names the decision in reasons and notices.
    #[tracing::instrument(name = "step", skip_all, fields(step = step.name(), decision_id))]
    pub async fn run(
        &self,
        app: &str,
        step: &Step,
        decision_id: Option<i64>,
    ) -> Result<(), StepError> {
        let client = self
            .clients
            .get(app)
            .ok_or_else(|| StepError::NoApp(app.to_owned()))?;
        let bot = self.bot_user_id.as_str();
        let named = |reason: &str| match decision_id {
            Some(id) => format!("{reason} (decision #{id})"),
            None => reason.to_owned(),
        };
        match step {
            Step::Flag { message_id, reason } => {
                client
                    .flag_message(message_id, bot, Some(&named(reason)))
                    .await?;
            }
            Step::Unflag { message_id } => match client.unflag_message(message_id, bot).await {
                // Deleted already (a block, or by someone else): nothing left to unflag.
                Err(e) if e.is_not_found() => {}
                other => other?,
            },
            Step::Delete { message_id, hard } => {
                client.delete_message(message_id, *hard, Some(bot)).await?;
            }
            Step::Ban {
                user_id,
                timeout_minutes,
                reason,
            } => {
                client
                    .ban_user(&BanRequest {
                        target_user_id: user_id.clone(),
                        banned_by_id: bot.to_owned(),
                        channel_cid: None,
                        timeout_minutes: *timeout_minutes,
                        reason: reason.as_deref().map(named),
                        shadow: false,
                    })
                    .await?;
            }
            Step::Unban { user_id } => client.unban_user(user_id, None).await?,
            Step::Notice { channel, notice } => {
                client
                    .send_message(channel, bot, &moderator_notice(notice, decision_id))
                    .await?;
            }
        }
        Ok(())
    }
}

/// The id of the notice for a decision: a resend never makes a second message.
pub fn notice_id(decision_id: i64) -> String {
    format!("chatguard-decision-{decision_id}")
}

/// The moderators' notice for a decision (client-chosen id `chatguard-decision-<id>` so a
/// resend never duplicates it).
pub fn moderator_notice(n: &Notice, decision_id: Option<i64>) -> OutgoingMessage {
    let user = n.user_id.as_deref().unwrap_or("an unknown user");
    let cid = n.cid.as_deref().unwrap_or("an unknown channel");
    let text = match n.decision {
        Decision::Allow => format!("✅ allowed message from {user} in {cid}"),
        Decision::Flag => format!("⚠️ flagged message from {user} in {cid} for review"),
        Decision::Block => format!("🚫 blocked message from {user} in {cid}"),
        Decision::Ban => format!("⛔ banned {user} after a message in {cid}"),
    };
    let color = match n.decision {
        Decision::Allow => "#5cb85c",
        Decision::Flag => "#f0ad4e",
        Decision::Block => "#d33",
        Decision::Ban => "#800000",
    };
    let message_id = match (n.message_id.as_deref(), n.pre_send) {
        (Some(id), false) => id.to_owned(),
        (Some(id), true) => format!("{id} (never sent)"),
        (None, true) => "none (never sent)".to_owned(),
        (None, false) => "unknown".to_owned(),
    };
    let decision = decision_id.map_or_else(|| "unknown".to_owned(), |id| format!("#{id}"));
    let s = n.scores;
    let mut fields = vec![
        field("User", n.user_id.as_deref().unwrap_or("unknown"), true),
        field("Channel", n.cid.as_deref().unwrap_or("unknown"), true),
        field("Message id", &message_id, true),
        field("Decision", &decision, true),
        field(
            "Scores",
            &format!(
                "toxicity {:.2} · spam {:.2} · explicit {:.2}",
                s.toxicity, s.spam, s.explicit
            ),
            false,
        ),
        field("Action", &action_text(n), false),
        field("Excerpt", &one_line(&n.excerpt, EXCERPT_MAX_CHARS), false),
    ];
    if !n.reasons.is_empty() {
        fields.push(field(
            "Reasons",
            &one_line(&n.reasons.join("; "), REASONS_MAX_CHARS),
            false,
        ));
    }
    OutgoingMessage {
        text,
        attachments: vec![Attachment {
            title: Some(format!("chatguard decision {decision}")),
            color: Some(color.to_owned()),
            fields,
            ..Attachment::default()
        }],
        id: decision_id.map(notice_id),
    }
}

fn field(title: &str, value: &str, short: bool) -> AttachmentField {
    AttachmentField {
        title: title.to_owned(),
        value: value.to_owned(),
        short,
    }
}

/// What the decision does, in words (the delete mode is the executor's, so it is not named).
fn action_text(n: &Notice) -> String {
    let message = if n.pre_send {
        "message blocked before it was sent"
    } else {
        "message deleted"
    };
    match n.decision {
        Decision::Allow => "none".to_owned(),
        Decision::Flag => "message flagged for review".to_owned(),
        Decision::Block => message.to_owned(),
        Decision::Ban => {
            let length = match n.ban.as_ref().and_then(|b| b.timeout_minutes) {
                Some(minutes) => format!("for {minutes} min"),
                None => "permanently".to_owned(),
            };
            let strikes = n
                .ban
                .as_ref()
                .map(|b| format!(" (strike {})", b.strikes))
                .unwrap_or_default();
            format!("user banned app-wide {length}{strikes}; {message}")
        }
    }
}

/// `text` on one line (whitespace runs become one space, control characters go), cut to at most
/// `max` characters with an ellipsis.
pub fn one_line(text: &str, max: usize) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect();
    let line = words.join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BanPlan, Scores};

    fn notice(decision: Decision, reasons: &[&str], ban: Option<BanPlan>) -> Notice {
        Notice {
            decision,
            user_id: Some("u-1".into()),
            cid: Some("messaging:general".into()),
            message_id: Some("m-1".into()),
            pre_send: false,
            excerpt: "you are\n\tawful".into(),
            scores: Scores {
                toxicity: 0.934,
                spam: 0.016,
                explicit: 0.0,
            },
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            ban,
        }
    }

    fn value<'m>(msg: &'m OutgoingMessage, title: &str) -> &'m str {
        msg.attachments[0]
            .fields
            .iter()
            .find(|f| f.title == title)
            .map(|f| f.value.as_str())
            .unwrap_or_else(|| panic!("no field {title}: {msg:?}"))
    }

    #[test]
    fn one_line_collapses_whitespace_and_cuts_on_characters() {
        assert_eq!(one_line("  a\n\nb\tc \u{7}d ", 140), "a b c d");
        let long = "é".repeat(200);
        let cut = one_line(&long, 140);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line(&"x".repeat(140), 140), "x".repeat(140));
        assert_eq!(
            one_line(&format!("{} tail", "y".repeat(138)), 140),
            format!("{}…", "y".repeat(138))
        );
    }

    #[test]
    fn notice_has_every_field_and_a_stable_id() {
        let reasons = ["toxicity 0.93 ≥ block 0.85"];
        let msg = moderator_notice(&notice(Decision::Block, &reasons, None), Some(42));
        assert_eq!(msg.id.as_deref(), Some("chatguard-decision-42"));
        assert_eq!(msg.text, "🚫 blocked message from u-1 in messaging:general");
        assert_eq!(value(&msg, "User"), "u-1");
        assert_eq!(value(&msg, "Channel"), "messaging:general");
        assert_eq!(value(&msg, "Message id"), "m-1");
        assert_eq!(value(&msg, "Decision"), "#42");
        assert_eq!(
            value(&msg, "Scores"),
            "toxicity 0.93 · spam 0.02 · explicit 0.00"
        );
        assert_eq!(value(&msg, "Action"), "message deleted");
        assert_eq!(value(&msg, "Excerpt"), "you are awful");
        assert_eq!(value(&msg, "Reasons"), reasons[0]);
        assert_eq!(msg.attachments[0].color.as_deref(), Some("#d33"));
    }

    #[test]
    fn notice_colour_and_action_follow_the_decision() {
        let plan = BanPlan {
            timeout_minutes: Some(60),
            reason: "3 strikes".to_owned(),
            strikes: 3,
        };
        let ban = moderator_notice(&notice(Decision::Ban, &[], Some(plan)), Some(1));
        assert_eq!(
            value(&ban, "Action"),
            "user banned app-wide for 60 min (strike 3); message deleted"
        );
        assert!(
            ban.attachments[0]
                .fields
                .iter()
                .all(|f| f.title != "Reasons")
        );
        let flag = moderator_notice(&notice(Decision::Flag, &[], None), Some(1));
        assert_ne!(ban.attachments[0].color, flag.attachments[0].color);
        let mut pre = notice(Decision::Block, &[], None);
        pre.pre_send = true;
        pre.message_id = None;
        let pre = moderator_notice(&pre, Some(1));
        assert_eq!(value(&pre, "Message id"), "none (never sent)");
        assert_eq!(value(&pre, "Action"), "message blocked before it was sent");
    }

    #[tokio::test]
    async fn an_unknown_app_is_a_permanent_error() {
        let exec = Executor::new(HashMap::new(), "bot".into());
        let err = exec
            .run(
                "nope",
                &Step::Unban {
                    user_id: "u".into(),
                },
                None,
            )
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
