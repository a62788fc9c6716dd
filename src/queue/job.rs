//! The scoring job: read the stored event, score, decide, record. Failures are retried with
//! exponential backoff by re-enqueueing with a delay, then kept as a dead letter.

use std::sync::Arc;
use std::time::Instant;

use apalis::prelude::{BoxDynError, Data, Task, TaskBuilder};
use futures::FutureExt;
use tracing::Instrument;

use super::{EnqueueOptions, JobQueue, ScoreJob};
use crate::actions;
use crate::config::Config;
use crate::domain::ChatEvent;
use crate::engine::{Activity, Engine, ScoreContext, Scorer};
use crate::group_commit::{GroupCommit, GroupCommitError};
use crate::reload::RulesHandle;
use crate::store::{Attempt, EventRow, NewDecision, Outcome, Store, StoreError, status};

/// Most job outcomes one transaction records.
const MAX_OUTCOMES: usize = 256;

/// Everything a job needs; shared by all jobs of one worker.
pub struct JobContext {
    pub store: Store,
    /// Records successful outcomes in groups (see [`crate::group_commit`]).
    outcomes: GroupCommit<Outcome, bool>,
    pub queue: Arc<dyn JobQueue>,
    /// Engine and policy in force; swapped on reload.
    pub rules: RulesHandle,
    pub config: Arc<Config>,
    pub worker_name: String,
}

impl JobContext {
    pub fn new(
        store: Store,
        queue: Arc<dyn JobQueue>,
        rules: RulesHandle,
        config: Arc<Config>,
        worker_name: String,
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

    /// Scores and records a message event, or marks any other event processed; either way the
    /// attempt is recorded in the same transaction.
    async fn process(
        &self,
        row: &EventRow,
        attempt: &Attempt<'_>,
    ) -> Result<&'static str, JobError> {
        let event = ChatEvent::parse(row.payload.as_bytes())?;
        let scored = event.kind().is_some_and(|k| k.is_scored());
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
        let verdict = rules.policy.decide(&assessment);
        let dry_run = self.config.dry_run();
        let action = actions::plan(verdict.decision, &event);
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
        };
        if self
            .outcomes
            .submit(Outcome::Decided(Box::new(decision)))
            .await?
        {
            metrics::counter!("chatguard_decisions_total", "decision" => verdict.decision.as_str())
                .increment(1);
            tracing::info!(
                decision = verdict.decision.as_str(),
                toxicity = assessment.scores.toxicity,
                spam = assessment.scores.spam,
                explicit = assessment.scores.explicit,
                "decided"
            );
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
