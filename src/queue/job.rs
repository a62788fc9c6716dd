//! The scoring job: read the stored event, score, decide, record. Failures are retried with
//! exponential backoff by re-enqueueing with a delay, then kept as a dead letter.

use std::sync::Arc;
use std::time::Instant;

use apalis::prelude::{BoxDynError, Data, Task, TaskBuilder};
use futures::FutureExt;
use tracing::Instrument;

use super::{EnqueueOptions, JobQueue, ScoreJob};
use crate::actions;
use crate::actions::email::{Alert, AlertMailer};
use crate::actions::executor::{ActionRequest, Executor};
use crate::config::Config;
use crate::domain::ChatEvent;
use crate::domain::{Decision, EventKind};
use crate::engine::{Activity, Engine, ScoreContext, Scorer};
use crate::group_commit::{GroupCommit, GroupCommitError};
use crate::policy::PolicyContext;
use crate::reload::RulesHandle;
use crate::store::{
    Attempt, EventRow, NewDecision, NewReviewItem, Outcome, Store, StoreError, status,
};

/// Most job outcomes one transaction records.
const MAX_OUTCOMES: usize = 256;

/// Everything a job needs; shared by all jobs of one worker.
pub struct JobContext {
    pub store: Store,
    /// Records successful outcomes in groups (see [`crate::group_commit`]).
    outcomes: GroupCommit<Outcome, Option<i64>>,
    pub queue: Arc<dyn JobQueue>,
    /// Engine and policy in force; swapped on reload.
    pub rules: RulesHandle,
    pub config: Arc<Config>,
    pub worker_name: String,
    /// Carries decisions out on Stream.
    pub executor: Arc<Executor>,
    /// E-mail digests of blocks and bans, when configured.
    pub mailer: Option<AlertMailer>,
}

impl JobContext {
    pub fn new(
        store: Store,
        queue: Arc<dyn JobQueue>,
        rules: RulesHandle,
        config: Arc<Config>,
        worker_name: String,
        executor: Arc<Executor>,
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
            queue,
            rules,
            config,
            worker_name,
            executor,
            mailer,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("recording the outcome: {0}")]
    Record(#[from] GroupCommitError),
    #[error("stored payload no longer parses: {0}")]
    Payload(#[from] crate::domain::EventParseError),
    #[error("serialising the decision: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Idempotency key of a job attempt: a redelivered webhook re-pushes attempt 1 under the same key.
pub fn idempotency_key(webhook_id: &str, attempt: u32) -> String {
    format!("{webhook_id}#{attempt}")
}

pub(super) fn build_task(job: &ScoreJob, opts: &EnqueueOptions) -> Task<ScoreJob> {
    // Retrying is ours (with backoff); apalis may only re-run a job whose worker died mid-run.
    let mut builder = TaskBuilder::new(job.clone()).max_attempts(3);
    if let Some(key) = &opts.idempotency_key {
        builder = builder.idempotency_key(key);
    }
    if let Some(delay) = opts.delay {
        // apalis stores whole seconds and `run_after` truncates; round up so that a retry never
        // runs before its backoff has passed.
        let at = (std::time::SystemTime::now() + delay)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        builder = builder.run_at_timestamp(at.as_secs() + u64::from(at.subsec_nanos() > 0));
    }
    builder.build()
}

/// The apalis handler.
pub(super) async fn handle(job: ScoreJob, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        event_id = job.event_id,
        webhook_id = %job.webhook_id,
        attempt = job.attempt,
        message_id = tracing::field::Empty,
    );
    // A panic becomes an error, so apalis records the failure instead of losing the worker.
    match std::panic::AssertUnwindSafe(ctx.run(job).instrument(span))
        .catch_unwind()
        .await
    {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err("job panicked".into()),
    }
}

impl JobContext {
    /// Runs one attempt. An error here means the outcome could not even be recorded; apalis then
    /// re-runs the job.
    pub async fn run(&self, job: ScoreJob) -> Result<(), StoreError> {
        let started = Instant::now();
        let event = match self.store.get_event(job.event_id).await {
            Ok(e) => e,
            Err(StoreError::NotFound) => {
                tracing::error!("job refers to an event that is not stored; dropped");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if matches!(event.status.as_str(), status::DECIDED | status::PROCESSED) {
            tracing::debug!(status = %event.status, "already handled");
            return Ok(());
        }
        if let Some(m) = &event.message_id {
            tracing::Span::current().record("message_id", m.as_str());
        }
        let attempt = Attempt {
            event_id: event.id,
            attempt: job.attempt,
            worker: &self.worker_name,
            started_at: chrono::Utc::now(),
        };
        match self.process(&event, &attempt).await {
            Ok(outcome) => {
                metrics::histogram!("chatguard_job_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("chatguard_jobs_total", "outcome" => "ok").increment(1);
                tracing::info!(outcome, "job done");
                Ok(())
            }
            Err(e) => {
                metrics::counter!("chatguard_jobs_total", "outcome" => "failed").increment(1);
                self.retry_or_bury(&job, &attempt, &e.to_string()).await
            }
        }
    }

    async fn retry_or_bury(
        &self,
        job: &ScoreJob,
        attempt: &Attempt<'_>,
        error: &str,
    ) -> Result<(), StoreError> {
        if job.attempt >= self.config.queue.max_attempts {
            tracing::error!(
                error,
                attempts = job.attempt,
                "job failed for the last time; dead letter"
            );
            metrics::counter!("chatguard_dead_letters_total").increment(1);
            return self.store.record_failed_attempt(attempt, error, true).await;
        }
        let delay = self.config.retry_delay(job.attempt);
        tracing::warn!(
            error,
            retry_in_secs = delay.as_secs(),
            "job failed; retrying"
        );
        // Status first: once enqueued, the retry may run (and finish) at any moment.
        self.store
            .record_failed_attempt(attempt, error, false)
            .await?;
        let next = ScoreJob {
            attempt: job.attempt + 1,
            ..job.clone()
        };
        let opts = EnqueueOptions {
            idempotency_key: Some(idempotency_key(&job.webhook_id, next.attempt)),
            delay: Some(delay),
        };
        if let Err(e) = self.queue.enqueue(&next, opts).await {
            // Leave the failure to apalis, which re-runs the job rather than lose it.
            tracing::error!(error = %e, "could not enqueue the retry");
            return Err(StoreError::Db(sqlx::Error::Protocol(format!(
                "enqueue retry: {e}"
            ))));
        }
        Ok(())
    }

    /// Scores, decides and records a message event, then carries the decision out; keeps ban
    /// state in step for ban events; marks any other event processed. The attempt is recorded in
    /// the same transaction as the outcome.
    async fn process(
        &self,
        row: &EventRow,
        attempt: &Attempt<'_>,
    ) -> Result<&'static str, JobError> {
        let event = ChatEvent::parse(row.payload.as_bytes())?;
        let kind = event.kind();
        if let Some(k @ (EventKind::UserBanned | EventKind::UserUnbanned)) = kind
            && let Some(user) = event.subject_user_id()
        {
            {
                self.store
                    .record_ban_event(
                        user,
                        k == EventKind::UserBanned,
                        event.expiration,
                        event.reason.as_deref(),
                        event.created_at.unwrap_or(row.received_at),
                    )
                    .await?;
            }
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
        let Some(text) = event.text().filter(|_| scored) else {
            self.outcomes
                .submit(Outcome::Processed {
                    event_id: attempt.event_id,
                })
                .await?;
            return Ok("processed");
        };
        let rules = self.rules.current();
        let fingerprint = Engine::fingerprint(text);
        let activity = match row.user_id.as_deref() {
            Some(user) => Some(self.activity(&rules.engine, row, user, fingerprint).await?),
            None => None,
        };
        let channel_type = event.channel_type();
        let ctx = ScoreContext {
            channel_type: channel_type.as_deref(),
            activity,
            skip_explanations: false,
        };
        let assessment = rules.engine.assess(text, &ctx);
        let (active_strikes, previous_bans, banned_now) = match row.user_id.as_deref() {
            Some(user) => self.store.user_standing(user, row.received_at).await?,
            None => (0, 0, false),
        };
        let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        let verdict = rules.policy.decide_in(
            &assessment,
            &PolicyContext {
                channel_type: channel_type.as_deref(),
                user_role: event.author_role(),
                active_strikes: count(active_strikes),
                previous_bans: count(previous_bans),
                banned_now,
            },
        );
        let dry_run = self.config.dry_run();
        let action = actions::plan(verdict.decision, &event);
        let strike_window = chrono::Duration::from_std(rules.policy.strike_window())
            .unwrap_or(chrono::Duration::days(1));
        let decision = NewDecision {
            event_id: row.id,
            webhook_id: row.webhook_id.clone(),
            event_type: row.event_type.clone(),
            message_id: row.message_id.clone(),
            cid: row.cid.clone(),
            user_id: row.user_id.clone(),
            text: text.to_owned(),
            scores: assessment.scores,
            matched_rules: serde_json::to_string(&assessment.reasons)?,
            reasons: serde_json::to_string(&verdict.reasons)?,
            decision: verdict.decision.as_str(),
            policy_version: rules.policy.version.clone(),
            action: serde_json::to_string(&action)?,
            action_status: actions::status(&action, dry_run),
            dry_run,
            worker: self.worker_name.clone(),
            received_at: row.received_at,
            fingerprint: Some(fingerprint),
            strike_expires_at: verdict.strike.then(|| row.received_at + strike_window),
            ban: verdict.ban.as_ref().map(|b| {
                (
                    b.timeout_minutes
                        .map(|m| row.received_at + chrono::Duration::minutes(i64::from(m))),
                    b.reason.clone(),
                )
            }),
        };
        let Some(decision_id) = self
            .outcomes
            .submit(Outcome::Decided(Box::new(decision)))
            .await?
        else {
            // Already decided by an earlier run: its actions ran (or were recorded) then.
            return Ok("decided");
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
        // Only the run that recorded the decision acts, so a retried job or a duplicate webhook
        // never deletes, bans or notifies twice.
        let outcome = self
            .executor
            .execute(&ActionRequest {
                decision_id,
                decision: verdict.decision,
                shadow: verdict.shadow,
                exempt: verdict.exempt,
                dry_run,
                message_id: row.message_id.as_deref(),
                user_id: row.user_id.as_deref(),
                cid: row.cid.as_deref(),
                text,
                scores: assessment.scores,
                reasons: &verdict.reasons,
                ban: verdict.ban.as_ref(),
                pre_send: row.event_type == crate::ingest::before_send::EVENT_TYPE,
            })
            .await;
        let result = serde_json::to_string(&outcome)?;
        let status = match (outcome.status, dry_run) {
            ("skipped", true) => "would_do",
            (s, _) => s,
        };
        if let Err(e) = self
            .store
            .record_action_outcome(decision_id, status, &result)
            .await
        {
            tracing::error!(decision_id, error = %e, "could not record the action outcome");
        }
        let reviewed = verdict.decision == Decision::Flag
            || (verdict.decision >= Decision::Block && self.config.review.include_blocks);
        if let (true, Some(message_id)) = (reviewed, row.message_id.clone()) {
            let item = NewReviewItem {
                message_id,
                decision_id,
                decision: verdict.decision.as_str().to_owned(),
                scores: assessment.scores,
                text: text.to_owned(),
                cid: row.cid.clone(),
                user_id: row.user_id.clone(),
                reasons: serde_json::to_string(&verdict.reasons)?,
                rule_ids: assessment
                    .matches
                    .iter()
                    .map(|m| m.rule_id.clone())
                    .collect(),
                action_status: status.to_owned(),
                at: row.received_at,
            };
            if let Err(e) = self.store.open_review_item(&item).await {
                tracing::error!(decision_id, error = %e, "could not open the review item");
            }
        }
        if verdict.decision >= Decision::Block
            && !verdict.shadow
            && !verdict.exempt
            && let Some(mailer) = &self.mailer
        {
            {
                mailer.notify(Alert {
                    decision_id,
                    decision: verdict.decision.as_str().to_owned(),
                    user_id: row.user_id.clone(),
                    cid: row.cid.clone(),
                    message_id: row.message_id.clone(),
                    text: text.to_owned(),
                    scores: assessment.scores,
                    action: outcome.status.to_owned(),
                    at: row.received_at,
                });
            }
        }
        Ok("decided")
    }

    /// The user's recent messages, counted from the decision log (shared by every worker).
    async fn activity(
        &self,
        engine: &Engine,
        row: &EventRow,
        user: &str,
        fingerprint: i64,
    ) -> Result<Activity, StoreError> {
        let s = engine.settings();
        let secs = |n: u64| chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2));
        let (recent, same, channels) = self
            .store
            .user_activity(
                user,
                row.cid.as_deref(),
                fingerprint,
                row.received_at,
                row.received_at - secs(s.flood.window_secs),
                row.received_at - secs(s.repeats.window_secs),
            )
            .await?;
        let n = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Ok(Activity {
            recent_messages: n(recent),
            same_text: n(same),
            same_text_channels: n(channels),
        })
    }
}
