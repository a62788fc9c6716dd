//! The scoring job as transport: load the stored event, hand it to the [`Pipeline`], and retry
//! on any failure (an error or a panic alike) with exponential backoff by re-enqueueing with a
//! delay, then keep it as a dead letter.

use std::sync::Arc;
use std::time::Instant;

use apalis::prelude::{BoxDynError, Data, Task, TaskBuilder};
use futures::FutureExt;
use tracing::Instrument;

use super::{EnqueueOptions, JobQueue, ScoreJob};
use crate::config::Config;
use crate::pipeline::{Handled, Pipeline};
use crate::store::{Attempt, Store, StoreError, status};

/// Everything a job needs; shared by all jobs of one worker.
pub struct JobContext {
    pub store: Store,
    pub queue: Arc<dyn JobQueue>,
    pub pipeline: Pipeline,
    pub config: Arc<Config>,
    pub worker_name: String,
}

impl JobContext {
    pub fn new(
        store: Store,
        queue: Arc<dyn JobQueue>,
        pipeline: Pipeline,
        config: Arc<Config>,
        worker_name: String,
    ) -> Self {
        Self {
            store,
            queue,
            pipeline,
            config,
            worker_name,
        }
    }
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

/// The apalis handler. An error here means not even the failure could be recorded; apalis then
/// re-runs the job (and the stranded-event sweep re-queues it if that fails too).
pub(super) async fn handle(job: ScoreJob, ctx: Data<Arc<JobContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        event_id = job.event_id,
        webhook_id = %job.webhook_id,
        attempt = job.attempt,
        message_id = tracing::field::Empty,
    );
    ctx.run(job).instrument(span).await.map_err(Into::into)
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
        // A panic in any step is an attempt like any other: backoff, then a dead letter.
        let result = std::panic::AssertUnwindSafe(self.pipeline.handle(&event))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".to_owned());
                Err(crate::pipeline::PipelineError::Scoring(format!(
                    "panicked: {what}"
                )))
            });
        match result {
            Ok(handled) => {
                metrics::histogram!("chatguard_job_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("chatguard_jobs_total", "outcome" => "ok").increment(1);
                let outcome = match handled {
                    Handled::Processed => "processed",
                    Handled::Decided { .. } => "decided",
                    Handled::AlreadyDecided => "already decided",
                };
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
}
