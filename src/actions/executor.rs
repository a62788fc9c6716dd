//! Carries out a decision on Stream: flag, delete, ban, and the notice in the moderators'
//! channel. Every step is idempotent (the client treats an already deleted message and an already
//! stored notice id as done, and Stream replaces a repeated ban), so a retried job or a duplicate
//! webhook never acts twice. Each step's outcome is returned for the decision log.

use serde::{Deserialize, Serialize};

use crate::actions::stream::{
    Attachment, AttachmentField, BanRequest, OutgoingMessage, StreamClient, StreamError,
};
use crate::domain::{BanPlan, Decision, Scores};

/// The longest excerpt of the message text in a notice, in characters.
const EXCERPT_MAX_CHARS: usize = 140;
/// The longest reason list in a notice, in characters.
const REASONS_MAX_CHARS: usize = 300;

/// How a blocked (or banned user's) message is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Gone for everyone, moderators included.
    #[default]
    Hard,
    /// Shown as "message deleted"; Stream keeps the content.
    Soft,
}

/// What actions do besides the decision itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    /// "hard" (default) or "soft" delete on block and ban.
    pub delete: DeleteMode,
    /// Post to the moderators channel on flag too (block and ban always post when a channel is set).
    pub notify_on_flag: bool,
    /// "type:id", e.g. "team:moderation"; `None`: no notices.
    pub moderation_channel: Option<String>,
}

/// An unusable [`ActionsConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ActionsConfigError {
    #[error("moderation_channel {0:?} is not \"type:id\"")]
    ModerationChannel(String),
}

impl ActionsConfig {
    /// Checks what Stream would refuse later, so that start-up fails instead of every notice.
    pub fn validate(&self) -> Result<(), ActionsConfigError> {
        match &self.moderation_channel {
            Some(cid) if !is_cid(cid) => Err(ActionsConfigError::ModerationChannel(cid.clone())),
            _ => Ok(()),
        }
    }
}

fn is_cid(cid: &str) -> bool {
    matches!(cid.split_once(':'), Some((kind, id)) if !kind.trim().is_empty() && !id.trim().is_empty())
}

/// Everything needed to act on one decision.
#[derive(Debug, Clone)]
pub struct ActionRequest<'a> {
    pub decision_id: i64,
    pub decision: Decision,
    /// Decided in shadow mode: logged, not acted on.
    pub shadow: bool,
    /// The user's role is exempt: logged, not acted on.
    pub exempt: bool,
    /// No Stream credentials or dry-run configured: record what would be done.
    pub dry_run: bool,
    pub message_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// The message's channel, "type:id".
    pub cid: Option<&'a str>,
    /// The message text (only an excerpt reaches the notice; never logged).
    pub text: &'a str,
    pub scores: Scores,
    /// The policy's reason chain.
    pub reasons: &'a [String],
    /// Set when the decision is `ban`.
    pub ban: Option<&'a BanPlan>,
    /// The message never reached the channel (Before Message Send blocked it): nothing to flag or delete.
    pub pre_send: bool,
}

/// The outcome of one Stream call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepOutcome {
    /// `flag`, `delete`, `ban` or `notice`.
    pub step: &'static str,
    /// `done`, `failed` or `skipped`.
    pub status: &'static str,
    /// Stream's error (status, code, message) or why the call could not be made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What executing a decision did, recorded with the decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionOutcome {
    /// `done` (every step done), `failed` (any step failed), `skipped` (shadow, exempt, dry-run
    /// or no client) or `none` (nothing to do).
    pub status: &'static str,
    pub steps: Vec<StepOutcome>,
}

impl ActionOutcome {
    /// Nothing to do (an `allow`).
    pub fn none() -> Self {
        Self {
            status: "none",
            steps: Vec::new(),
        }
    }

    fn from_steps(steps: Vec<StepOutcome>) -> Self {
        let status = if steps.is_empty() {
            "none"
        } else if steps.iter().any(|s| s.status == "failed") {
            "failed"
        } else if steps.iter().all(|s| s.status == "skipped") {
            "skipped"
        } else {
            "done"
        };
        Self { status, steps }
    }
}

/// A step the decision calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Flag,
    Delete,
    Ban,
    Notice,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Flag => "flag",
            Step::Delete => "delete",
            Step::Ban => "ban",
            Step::Notice => "notice",
        }
    }
}

/// A step could not be attempted, or Stream refused it.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("the event has no message id")]
    NoMessageId,
    #[error("the event has no user id")]
    NoUserId,
    #[error("the ban decision carries no ban plan")]
    NoBanPlan,
    #[error("{}", error_chain(.0))]
    Stream(#[from] StreamError),
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

/// Runs the Stream calls of decisions.
#[derive(Debug, Clone)]
pub struct Executor {
    client: Option<StreamClient>,
    cfg: ActionsConfig,
    bot_user_id: String,
}

impl Executor {
    /// `client` `None` (no credentials) skips every step.
    pub fn new(client: Option<StreamClient>, cfg: ActionsConfig, bot_user_id: String) -> Self {
        Self {
            client,
            cfg,
            bot_user_id,
        }
    }

    /// The steps `req` calls for, in the order they run: delete before ban, the notice last.
    fn plan(&self, req: &ActionRequest<'_>) -> Vec<Step> {
        let on_message = !req.pre_send;
        let mut steps = match req.decision {
            Decision::Allow => return Vec::new(),
            Decision::Flag if on_message => vec![Step::Flag],
            Decision::Block | Decision::Ban if on_message => vec![Step::Delete],
            _ => Vec::new(),
        };
        if req.decision == Decision::Ban {
            steps.push(Step::Ban);
        }
        let notify = match req.decision {
            // A flag before sending does nothing, so there is nothing to tell.
            Decision::Flag => self.cfg.notify_on_flag && on_message,
            _ => true,
        };
        if notify && self.cfg.moderation_channel.is_some() {
            steps.push(Step::Notice);
        }
        steps
    }

    /// Carries out what the decision calls for. Never panics; Stream errors become failed steps,
    /// and a failed step does not stop the later ones.
    #[tracing::instrument(
        name = "execute",
        skip_all,
        fields(
            decision_id = req.decision_id,
            decision = req.decision.as_str(),
            message_id = req.message_id.unwrap_or_default(),
        )
    )]
    pub async fn execute(&self, req: &ActionRequest<'_>) -> ActionOutcome {
        let steps = self.plan(req);
        let skip_because = if req.shadow {
            Some("shadow")
        } else if req.exempt {
            Some("exempt")
        } else if req.dry_run {
            Some("dry_run")
        } else if self.client.is_none() {
            Some("no_client")
        } else {
            None
        };
        let client = match (&self.client, skip_because) {
            (Some(client), None) => client,
            (_, because) => {
                if !steps.is_empty() {
                    tracing::info!(because, "actions skipped");
                }
                let steps = steps
                    .into_iter()
                    .map(|step| StepOutcome {
                        step: step.name(),
                        status: "skipped",
                        error: None,
                    })
                    .collect();
                return ActionOutcome::from_steps(steps);
            }
        };

        let mut outcomes = Vec::with_capacity(steps.len());
        for step in steps {
            let result = self.run(client, step, req).await;
            let outcome = match result {
                Ok(()) => {
                    tracing::info!(step = step.name(), "action done");
                    StepOutcome {
                        step: step.name(),
                        status: "done",
                        error: None,
                    }
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(step = step.name(), error = %error, "action failed");
                    StepOutcome {
                        step: step.name(),
                        status: "failed",
                        error: Some(error),
                    }
                }
            };
            outcomes.push(outcome);
        }
        ActionOutcome::from_steps(outcomes)
    }

    async fn run(
        &self,
        client: &StreamClient,
        step: Step,
        req: &ActionRequest<'_>,
    ) -> Result<(), StepError> {
        let bot = self.bot_user_id.as_str();
        match step {
            Step::Flag => {
                let message_id = req.message_id.ok_or(StepError::NoMessageId)?;
                let reason = format!(
                    "{} (decision #{})",
                    req.reasons
                        .first()
                        .map_or("flagged by chatguard", String::as_str),
                    req.decision_id
                );
                client.flag_message(message_id, bot, Some(&reason)).await?;
            }
            Step::Delete => {
                let message_id = req.message_id.ok_or(StepError::NoMessageId)?;
                let hard = self.cfg.delete == DeleteMode::Hard;
                client.delete_message(message_id, hard, Some(bot)).await?;
            }
            Step::Ban => {
                let user_id = req.user_id.ok_or(StepError::NoUserId)?;
                let plan = req.ban.ok_or(StepError::NoBanPlan)?;
                let ban = BanRequest {
                    target_user_id: user_id.to_owned(),
                    banned_by_id: bot.to_owned(),
                    channel_cid: None,
                    timeout_minutes: plan.timeout_minutes,
                    reason: Some(format!("{} (decision #{})", plan.reason, req.decision_id)),
                    shadow: false,
                };
                client.ban_user(&ban).await?;
            }
            Step::Notice => {
                // `plan` adds the notice only when a channel is set.
                if let Some(channel) = &self.cfg.moderation_channel {
                    client
                        .send_message(channel, bot, &moderator_notice(req))
                        .await?;
                }
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
pub fn moderator_notice(req: &ActionRequest<'_>) -> OutgoingMessage {
    let user = req.user_id.unwrap_or("an unknown user");
    let cid = req.cid.unwrap_or("an unknown channel");
    let text = match req.decision {
        Decision::Allow => format!("✅ allowed message from {user} in {cid}"),
        Decision::Flag => format!("⚠️ flagged message from {user} in {cid} for review"),
        Decision::Block => format!("🚫 blocked message from {user} in {cid}"),
        Decision::Ban => format!("⛔ banned {user} after a message in {cid}"),
    };
    let color = match req.decision {
        Decision::Allow => "#5cb85c",
        Decision::Flag => "#f0ad4e",
        Decision::Block => "#d33",
        Decision::Ban => "#800000",
    };
    let message_id = match (req.message_id, req.pre_send) {
        (Some(id), false) => id.to_owned(),
        (Some(id), true) => format!("{id} (never sent)"),
        (None, true) => "none (never sent)".to_owned(),
        (None, false) => "unknown".to_owned(),
    };
    let s = req.scores;
    let mut fields = vec![
        field("User", req.user_id.unwrap_or("unknown"), true),
        field("Channel", req.cid.unwrap_or("unknown"), true),
        field("Message id", &message_id, true),
        field("Decision", &format!("#{}", req.decision_id), true),
        field(
            "Scores",
            &format!(
                "toxicity {:.2} · spam {:.2} · explicit {:.2}",
                s.toxicity, s.spam, s.explicit
            ),
            false,
        ),
        field("Action", &action_text(req), false),
        field("Excerpt", &one_line(req.text, EXCERPT_MAX_CHARS), false),
    ];
    if !req.reasons.is_empty() {
        fields.push(field(
            "Reasons",
            &one_line(&req.reasons.join("; "), REASONS_MAX_CHARS),
            false,
        ));
    }
    OutgoingMessage {
        text,
        attachments: vec![Attachment {
            title: Some(format!("chatguard decision #{}", req.decision_id)),
            color: Some(color.to_owned()),
            fields,
            ..Attachment::default()
        }],
        id: Some(notice_id(req.decision_id)),
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
fn action_text(req: &ActionRequest<'_>) -> String {
    let message = if req.pre_send {
        "message blocked before it was sent"
    } else {
        "message deleted"
    };
    match req.decision {
        Decision::Allow => "none".to_owned(),
        Decision::Flag => "message flagged for review".to_owned(),
        Decision::Block => message.to_owned(),
        Decision::Ban => {
            let length = match req.ban.and_then(|b| b.timeout_minutes) {
                Some(minutes) => format!("for {minutes} min"),
                None => "permanently".to_owned(),
            };
            let strikes = req
                .ban
                .map(|b| format!(" (strike {})", b.strikes))
                .unwrap_or_default();
            format!("user banned app-wide {length}{strikes}; {message}")
        }
    }
}

/// `text` on one line (whitespace runs become one space, control characters go), cut to at most
/// `max` characters with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
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

    fn request<'a>(
        decision: Decision,
        reasons: &'a [String],
        ban: Option<&'a BanPlan>,
    ) -> ActionRequest<'a> {
        ActionRequest {
            decision_id: 42,
            decision,
            shadow: false,
            exempt: false,
            dry_run: false,
            message_id: Some("m-1"),
            user_id: Some("u-1"),
            cid: Some("messaging:general"),
            text: "you are\n\tawful",
            scores: Scores {
                toxicity: 0.934,
                spam: 0.016,
                explicit: 0.0,
            },
            reasons,
            ban,
            pre_send: false,
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

    fn executor(cfg: ActionsConfig) -> Executor {
        Executor::new(None, cfg, "bot".to_owned())
    }

    fn with_channel() -> ActionsConfig {
        ActionsConfig {
            moderation_channel: Some("team:moderation".to_owned()),
            ..ActionsConfig::default()
        }
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
        let reasons = vec!["toxicity 0.93 ≥ block 0.85".to_owned()];
        let msg = moderator_notice(&request(Decision::Block, &reasons, None));
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
        let ban = moderator_notice(&request(Decision::Ban, &[], Some(&plan)));
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
        let flag = moderator_notice(&request(Decision::Flag, &[], None));
        assert_ne!(ban.attachments[0].color, flag.attachments[0].color);
        let mut pre = request(Decision::Block, &[], None);
        pre.pre_send = true;
        pre.message_id = None;
        let pre = moderator_notice(&pre);
        assert_eq!(value(&pre, "Message id"), "none (never sent)");
        assert_eq!(value(&pre, "Action"), "message blocked before it was sent");
    }

    #[test]
    fn plan_per_decision_and_config() {
        let plain = executor(ActionsConfig::default());
        let notify = executor(with_channel());
        let on_flag = executor(ActionsConfig {
            notify_on_flag: true,
            ..with_channel()
        });
        let cases: [(&Executor, Decision, bool, &[Step]); 9] = [
            (&plain, Decision::Allow, false, &[]),
            (&plain, Decision::Flag, false, &[Step::Flag]),
            (&plain, Decision::Block, false, &[Step::Delete]),
            (&plain, Decision::Ban, false, &[Step::Delete, Step::Ban]),
            (&notify, Decision::Flag, false, &[Step::Flag]),
            (&on_flag, Decision::Flag, false, &[Step::Flag, Step::Notice]),
            (&notify, Decision::Block, true, &[Step::Notice]),
            (&notify, Decision::Ban, true, &[Step::Ban, Step::Notice]),
            (&on_flag, Decision::Flag, true, &[]),
        ];
        for (exec, decision, pre_send, want) in cases {
            let mut req = request(decision, &[], None);
            req.pre_send = pre_send;
            assert_eq!(exec.plan(&req), want, "{decision:?} pre_send={pre_send}");
        }
    }

    #[tokio::test]
    async fn without_a_client_every_planned_step_is_skipped() {
        let exec = executor(with_channel());
        let out = exec.execute(&request(Decision::Ban, &[], None)).await;
        assert_eq!(out.status, "skipped");
        let names: Vec<_> = out.steps.iter().map(|s| (s.step, s.status)).collect();
        assert_eq!(
            names,
            [
                ("delete", "skipped"),
                ("ban", "skipped"),
                ("notice", "skipped")
            ]
        );
        assert_eq!(
            exec.execute(&request(Decision::Allow, &[], None)).await,
            ActionOutcome::none()
        );
    }

    #[tokio::test]
    async fn missing_ids_fail_their_step_without_calling_stream() {
        // Port 9 (discard) on loopback: any call would fail with a transport error instead.
        let cfg = crate::actions::stream::StreamClientConfig {
            base_url: "http://127.0.0.1:9".to_owned(),
            max_retries: 0,
            ..Default::default()
        };
        let client = StreamClient::new("key", &"secret".to_owned().into(), &cfg).unwrap();
        let exec = Executor::new(Some(client), ActionsConfig::default(), "bot".to_owned());
        let mut req = request(Decision::Ban, &[], None);
        req.message_id = None;
        req.user_id = None;
        let out = exec.execute(&req).await;
        assert_eq!(out.status, "failed");
        let errors: Vec<_> = out.steps.iter().map(|s| s.error.as_deref()).collect();
        assert_eq!(
            errors,
            [
                Some("the event has no message id"),
                Some("the event has no user id")
            ]
        );
    }

    #[test]
    fn overall_status_from_steps() {
        let step = |status| StepOutcome {
            step: "delete",
            status,
            error: None,
        };
        assert_eq!(ActionOutcome::from_steps(vec![]).status, "none");
        assert_eq!(
            ActionOutcome::from_steps(vec![step("done"), step("done")]).status,
            "done"
        );
        assert_eq!(
            ActionOutcome::from_steps(vec![step("failed"), step("done")]).status,
            "failed"
        );
        assert_eq!(
            ActionOutcome::from_steps(vec![step("skipped")]).status,
            "skipped"
        );
    }

    #[test]
    fn config_reads_toml_and_validates_the_channel() {
        let cfg: ActionsConfig =
            toml::from_str("delete = \"soft\"\nmoderation_channel = \"team:moderation\"").unwrap();
        assert_eq!(cfg.delete, DeleteMode::Soft);
        assert!(!cfg.notify_on_flag);
        assert!(cfg.validate().is_ok());
        assert_eq!(ActionsConfig::default().delete, DeleteMode::Hard);
        assert!(toml::from_str::<ActionsConfig>("delete = \"gone\"").is_err());
        assert!(toml::from_str::<ActionsConfig>("notify = true").is_err());
        for bad in ["moderation", ":x", "team:"] {
            let cfg = ActionsConfig {
                moderation_channel: Some(bad.to_owned()),
                ..ActionsConfig::default()
            };
            assert!(cfg.validate().is_err(), "{bad}");
        }
    }
}
