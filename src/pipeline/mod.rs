//! The per-message pipeline, one step per function:
//! parse → assess → decide → record (decision, strike, review item and the Stream calls as
//! durable work, in one transaction) → act (wake the action runner) → alert.
//!
//! Everything a step needs from outside is read before the record step, and everything the
//! pipeline changes is written by it in one transaction, so a crash anywhere leaves either
//! nothing (the job runs again) or the whole decision with its work (a re-run finds the decision
//! and does nothing). Only the run that records the decision acts, so a retried job or a
//! duplicate webhook never deletes, bans or notifies twice. The queue ([`crate::queue`]) is
//! transport only: it calls [`Pipeline::handle`] and retries on error.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::actions::email::{Alert, AlertMailer};
use crate::actions::plan::{DecisionFacts, Plan, plan_decision};
use crate::actions::runner::ActionWaker;
use crate::actions::status;
use crate::config::Config;
use crate::domain::{Assessment, ChatEvent, Decision, EventKind, Verdict};
use crate::engine::{Activity, Engine, ScoreContext, Scorer};
use crate::group_commit::{GroupCommit, GroupCommitError};
use crate::policy::PolicyContext;
use crate::reload::{Loaded, RulesHandle};
use crate::store::{
    ActivityQuery, EventRow, NewAction, NewDecision, NewReviewItem, Origin, Outcome, Store,
    StoreError,
};

/// Most outcomes one transaction records.
const MAX_OUTCOMES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("recording the outcome: {0}")]
    Record(#[from] GroupCommitError),
    #[error("stored payload no longer parses: {0}")]
    Payload(#[from] crate::domain::EventParseError),
    #[error("serialising the decision: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("scoring failed: {0}")]
    Scoring(String),
}

/// How an event was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Not a message to score (bans, deletions, …): kept in step, marked processed.
    Processed,
    Decided {
        decision_id: i64,
    },
    /// An earlier run recorded the decision (and its work) already.
    AlreadyDecided,
}

/// Everything the pipeline needs; shared by all jobs of one worker.
pub struct Pipeline {
    store: Store,
    /// Records outcomes in groups (see [`crate::group_commit`]).
    outcomes: GroupCommit<Outcome, Option<i64>>,
    rules: RulesHandle,
    config: Arc<Config>,
    worker_name: String,
    actions: ActionWaker,
    mailer: Option<AlertMailer>,
}

/// A message event, parsed, with what the later steps need.
struct Message<'a> {
    row: &'a EventRow,
    event: ChatEvent,
    text: String,
    channel_type: Option<String>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        rules: RulesHandle,
        config: Arc<Config>,
        worker_name: String,
        actions: ActionWaker,
        mailer: Option<AlertMailer>,
    ) -> Self {
        let writer = store.clone();
        let outcomes = GroupCommit::spawn("outcomes", MAX_OUTCOMES, move |batch: Vec<Outcome>| {
            let store = writer.clone();
            async move {
                store
                    .record_outcomes(&batch)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        Self {
            store,
            outcomes,
            rules,
            config,
            worker_name,
            actions,
            mailer,
        }
    }

    pub fn mailer(&self) -> Option<&AlertMailer> {
        self.mailer.as_ref()
    }

    /// Runs the whole pipeline on a stored event.
    pub async fn handle(&self, row: &EventRow) -> Result<Handled, PipelineError> {
        let Some(msg) = self.parse(row).await? else {
            self.outcomes
                .submit(Outcome::Processed { event_id: row.id })
                .await?;
            return Ok(Handled::Processed);
        };
        let rules = self.rules.current();
        let fingerprint = Engine::fingerprint(&msg.text);
        let assessment = self.assess(&rules, &msg, fingerprint).await?;
        let verdict = self.decide(&rules, &msg, &assessment).await?;
        let (decision, plan) = self.plan(&rules, &msg, &assessment, &verdict, fingerprint)?;
        let Some(decision_id) = self.record(decision).await? else {
            return Ok(Handled::AlreadyDecided);
        };
        metrics::counter!("chatguard_decisions_total", "decision" => verdict.decision.as_str())
            .increment(1);
        tracing::info!(
            decision = verdict.decision.as_str(),
            decision_id,
            toxicity = assessment.scores.toxicity,
            spam = assessment.scores.spam,
            explicit = assessment.scores.explicit,
            "decided"
        );
        if !plan.steps.is_empty() {
            self.actions.wake();
        }
        self.alert(&msg, &verdict, &assessment, decision_id);
        Ok(Handled::Decided { decision_id })
    }

    /// The message to score, or None for an event that is only kept in step (bans) or not
    /// scored at all.
    async fn parse<'a>(&self, row: &'a EventRow) -> Result<Option<Message<'a>>, PipelineError> {
        let event = ChatEvent::parse(row.payload.as_bytes())?;
        let kind = event.kind();
        if let Some(k @ (EventKind::UserBanned | EventKind::UserUnbanned)) = kind
            && let Some(user) = event.subject_user_id()
        {
            self.store
                .record_ban_event(
                    &row.api_key,
                    user,
                    k == EventKind::UserBanned,
                    event.expiration,
                    event.reason.as_deref(),
                    event.created_at.unwrap_or(row.received_at),
                )
                .await?;
        }
        // A Before Message Send request that was let through is followed by Stream's own
        // message.new, which is scored and acted on: only a blocked one needs the follow-ups here.
        let let_through = row.event_type == crate::ingest::before_send::EVENT_TYPE
            && event
                .extra
                .get("before_send")
                .and_then(|b| b.get("answer"))
                .and_then(|a| a.as_str())
                != Some("block");
        let scored = kind.is_some_and(|k| k.is_scored()) && !let_through;
        let Some(text) = event.text().filter(|_| scored).map(str::to_owned) else {
            return Ok(None);
        };
        let channel_type = event.channel_type();
        Ok(Some(Message {
            row,
            event,
            text,
            channel_type,
        }))
    }

    /// Scores the message, with the user's recent activity from the decision log. Scoring runs
    /// on the blocking pool, so a burst of it never starves ingest on the async threads.
    async fn assess(
        &self,
        rules: &Arc<Loaded>,
        msg: &Message<'_>,
        fingerprint: i64,
    ) -> Result<Assessment, PipelineError> {
        let activity = match msg.row.user_id.as_deref() {
            Some(user) => Some(
                self.activity(&rules.engine, msg.row, user, fingerprint)
                    .await?,
            ),
            None => None,
        };
        let rules = rules.clone();
        let text = msg.text.clone();
        let channel_type = msg.channel_type.clone();
        tokio::task::spawn_blocking(move || {
            let ctx = ScoreContext {
                channel_type: channel_type.as_deref(),
                activity,
                skip_explanations: false,
            };
            rules.engine.assess(&text, &ctx)
        })
        .await
        .map_err(|e| PipelineError::Scoring(e.to_string()))
    }

    /// The policy's verdict, given the user's standing in the event's app.
    async fn decide(
        &self,
        rules: &Loaded,
        msg: &Message<'_>,
        assessment: &Assessment,
    ) -> Result<Verdict, PipelineError> {
        let standing = match msg.row.user_id.as_deref() {
            Some(user) => {
                self.store
                    .user_standing(&msg.row.api_key, user, msg.row.received_at)
                    .await?
            }
            None => Default::default(),
        };
        let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Ok(rules.policy.decide_in(
            assessment,
            &PolicyContext {
                channel_type: msg.channel_type.as_deref(),
                user_role: msg.event.author_role(),
                active_strikes: count(standing.active_strikes),
                previous_bans: count(standing.previous_bans),
                banned_now: standing.banned_now,
            },
        ))
    }

    /// The decision to record, with its strike, review item and the Stream calls it implies.
    /// Shadow, exempt and dry-run decisions record what they would have done in `would_do` and
    /// get no strike and no work, so nothing that never happened counts for escalation.
    fn plan(
        &self,
        rules: &Loaded,
        msg: &Message<'_>,
        assessment: &Assessment,
        verdict: &Verdict,
        fingerprint: i64,
    ) -> Result<(NewDecision, Plan), PipelineError> {
        let row = msg.row;
        let dry_run = self.config.dry_run();
        let plan = plan_decision(
            &DecisionFacts {
                decision: verdict.decision,
                message_id: row.message_id.as_deref(),
                user_id: row.user_id.as_deref(),
                cid: row.cid.as_deref(),
                text: &msg.text,
                scores: assessment.scores,
                reasons: &verdict.reasons,
                ban: verdict.ban.as_ref(),
                pre_send: row.event_type == crate::ingest::before_send::EVENT_TYPE,
            },
            &self.config.actions,
        );
        let held_back = verdict.shadow || verdict.exempt || dry_run;
        let steps = serde_json::to_string(&plan.steps)?;
        let action_status = match () {
            _ if plan.steps.is_empty() && plan.missing.is_empty() => status::NONE,
            _ if verdict.shadow || verdict.exempt => status::SKIPPED,
            _ if dry_run => status::WOULD_DO,
            _ if plan.steps.is_empty() => status::FAILED,
            _ => status::PENDING,
        };
        let strike_window = chrono::Duration::from_std(rules.policy.strike_window())
            .unwrap_or(chrono::Duration::days(1));
        let would_do = (held_back && (verdict.strike || !plan.steps.is_empty())).then(|| {
            serde_json::json!({
                "because": if verdict.shadow { "shadow" } else if verdict.exempt { "exempt" } else { "dry_run" },
                "strike": verdict.strike,
                "ban": verdict.ban,
                "calls": plan.steps,
            })
            .to_string()
        });
        let outbox = (!held_back && !plan.steps.is_empty()).then(|| NewAction {
            app: row.api_key.clone(),
            origin: Origin::Decision,
            decision_id: None,
            review_item_id: None,
            steps: steps.clone(),
            context: None,
        });
        let reviewed = verdict.decision == Decision::Flag
            || (verdict.decision >= Decision::Block && self.config.review.include_blocks);
        let review = match (reviewed, row.message_id.clone()) {
            (true, Some(message_id)) => Some(NewReviewItem {
                app: row.api_key.clone(),
                message_id,
                decision_id: 0,
                decision: verdict.decision.as_str().to_owned(),
                scores: assessment.scores,
                text: msg.text.clone(),
                cid: row.cid.clone(),
                user_id: row.user_id.clone(),
                reasons: serde_json::to_string(&verdict.reasons)?,
                rule_ids: assessment
                    .matches
                    .iter()
                    .map(|m| m.rule_id.clone())
                    .collect(),
                action_status: action_status.to_owned(),
                at: row.received_at,
            }),
            _ => None,
        };
        let action_json = if plan.missing.is_empty() {
            steps
        } else {
            serde_json::json!({"calls": plan.steps, "missing": plan.missing}).to_string()
        };
        let decision = NewDecision {
            event_id: row.id,
            app: row.api_key.clone(),
            webhook_id: row.webhook_id.clone(),
            event_type: row.event_type.clone(),
            message_id: row.message_id.clone(),
            cid: row.cid.clone(),
            user_id: row.user_id.clone(),
            text: msg.text.clone(),
            scores: assessment.scores,
            matched_rules: serde_json::to_string(&assessment.reasons)?,
            reasons: serde_json::to_string(&verdict.reasons)?,
            decision: verdict.decision.as_str(),
            policy_version: rules.policy.version.clone(),
            action: action_json,
            action_status,
            dry_run,
            shadow: verdict.shadow || verdict.exempt,
            would_do,
            worker: self.worker_name.clone(),
            received_at: row.received_at,
            fingerprint: Some(fingerprint),
            strike_expires_at: (verdict.strike && !held_back)
                .then(|| row.received_at + strike_window),
            outbox,
            review,
        };
        Ok((decision, plan))
    }

    /// Records the decision and everything written with it; None if an earlier run did.
    async fn record(&self, decision: NewDecision) -> Result<Option<i64>, PipelineError> {
        Ok(self
            .outcomes
            .submit(Outcome::Decided(Box::new(decision)))
            .await?)
    }

    /// Queues the e-mail digest entry of a block or ban that is acted on.
    fn alert(&self, msg: &Message<'_>, verdict: &Verdict, a: &Assessment, decision_id: i64) {
        let Some(mailer) = &self.mailer else {
            return;
        };
        if verdict.decision < Decision::Block || verdict.shadow || verdict.exempt {
            return;
        }
        let row = msg.row;
        mailer.notify(Alert {
            decision_id,
            decision: verdict.decision.as_str().to_owned(),
            user_id: row.user_id.clone(),
            cid: row.cid.clone(),
            message_id: row.message_id.clone(),
            text: msg.text.clone(),
            scores: a.scores,
            action: if self.config.dry_run() {
                status::WOULD_DO
            } else {
                status::PENDING
            }
            .to_owned(),
            at: row.received_at,
        });
    }

    /// The user's recent messages in the event's app, counted from the decision log (shared by
    /// every worker).
    async fn activity(
        &self,
        engine: &Engine,
        row: &EventRow,
        user: &str,
        fingerprint: i64,
    ) -> Result<Activity, StoreError> {
        let s = engine.settings();
        let secs = |n: u64| chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2));
        let since = |n: u64| -> DateTime<Utc> { row.received_at - secs(n) };
        let counts = self
            .store
            .user_activity(&ActivityQuery {
                app: &row.api_key,
                user_id: user,
                cid: row.cid.as_deref(),
                fingerprint,
                before: row.received_at,
                flood_since: since(s.flood.window_secs),
                repeat_since: since(s.repeats.window_secs),
            })
            .await?;
        let n = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Ok(Activity {
            recent_messages: n(counts.recent),
            same_text: n(counts.same_text),
            same_text_channels: n(counts.same_text_channels),
        })
    }
}
