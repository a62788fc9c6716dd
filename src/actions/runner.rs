//! Carries out the durable work in the `actions` table (the outbox): claims due rows under a
//! lease, runs their steps in order through the [`Executor`], and records the end.
//!
//! Why not apalis: the work must be written in the same transaction as the decision that implies
//! it, and apalis pushes on a connection of its own. The outbox row is the durable work; this
//! runner is only the loop that drives it, and needs no state of its own to survive a crash:
//! - a step Stream may accept later (5xx, 429, timeouts, Stream unreachable) is tried again with
//!   exponential backoff (`actions.retry_base_ms` doubling to `actions.retry_max_ms`) until
//!   `actions.retry_horizon_secs` after the work was written; then, or when Stream refuses for
//!   good, the work ends `failed` (metric `chatguard_actions_total{status="failed"}`,
//!   `chatguard actions --failed`, and the decision's review item shows it);
//! - a runner killed mid-work holds its lease until `actions.lease_secs` pass; then any runner
//!   takes the work again and resumes after the last step recorded. Steps are idempotent as
//!   Stream observes them (see [`super::executor`]), so a step carried out but not yet recorded
//!   is not done twice in effect.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::actions::executor::{Executor, StepError};
use crate::actions::plan::{ActionsConfig, Step};
use crate::actions::stream::StreamError;
use crate::store::{ActionEnd, ActionRow, ConfirmedBan, Finish, Origin, Store};

/// Wakes the runner of this process at once (work written here need not wait for the poll).
#[derive(Debug, Clone, Default)]
pub struct ActionWaker(Arc<Notify>);

impl ActionWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// What one step did, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub step: String,
    /// `done` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a piece of work did: the decision's `action_result`, the moderator's `outcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOutcome {
    /// `done` or `failed`.
    pub status: String,
    pub steps: Vec<StepResult>,
    /// Tries it took.
    pub attempts: i64,
}

pub struct Runner {
    store: Store,
    executor: Arc<Executor>,
    cfg: ActionsConfig,
    name: String,
    waker: ActionWaker,
}

impl Runner {
    /// `waker` is the one the rest of this process wakes the runner with.
    pub fn new(
        store: Store,
        executor: Arc<Executor>,
        cfg: ActionsConfig,
        name: String,
        waker: ActionWaker,
    ) -> Self {
        Self {
            store,
            executor,
            cfg,
            name,
            waker,
        }
    }

    pub fn waker(&self) -> ActionWaker {
        self.waker.clone()
    }

    /// Runs until `shutdown`; work in flight then gets a few seconds to end (what does not is
    /// taken again by a runner when its lease ends).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let poll = Duration::from_millis(self.cfg.poll_ms);
        loop {
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free > 0 {
                let now = Utc::now();
                let lease = chrono::Duration::seconds(self.cfg.lease_secs as i64);
                match self
                    .store
                    .claim_due_actions(&self.name, now, lease, free as i64)
                    .await
                {
                    Ok(rows) => {
                        let claimed = rows.len();
                        for row in rows {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                break;
                            };
                            let me = self.clone();
                            let span = tracing::info_span!(
                                "action",
                                action_id = row.id,
                                origin = %row.origin,
                                decision_id = row.decision_id,
                                review_item_id = row.review_item_id,
                            );
                            tasks.spawn(
                                async move {
                                    me.carry_out(row).await;
                                    drop(permit);
                                }
                                .instrument(span),
                            );
                        }
                        // A full batch: more may be due at once.
                        if claimed == free {
                            continue;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming due actions failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.waker.0.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }

    /// Carries one claimed piece of work on as far as it goes now.
    async fn carry_out(&self, row: ActionRow) {
        let steps: Vec<Step> = match serde_json::from_str(&row.steps) {
            Ok(steps) => steps,
            Err(e) => {
                let error = format!("stored steps do not parse: {e}");
                self.end(&row, ActionEnd::Failed, Vec::new(), Some(error))
                    .await;
                return;
            }
        };
        let mut results: Vec<StepResult> = serde_json::from_str(&row.results).unwrap_or_default();
        results.truncate(usize::try_from(row.done_steps).unwrap_or(0));
        let first = results.len();
        // Moderators' work stops at the first refusal (the item goes back as it was); the
        // policy's goes on (a refused delete should not spare the ban or the notice).
        let stop_at_failure = row.origin() != Some(Origin::Decision);
        let mut failed = None;
        for (i, step) in steps.iter().enumerate().skip(first) {
            match self.executor.run(&row.app, step, row.decision_id).await {
                Ok(()) => {
                    results.push(StepResult {
                        step: step.name().into(),
                        status: "done".into(),
                        error: None,
                    });
                    if i + 1 < steps.len() {
                        let json = serde_json::to_string(&results).unwrap_or_default();
                        if let Err(e) = self
                            .store
                            .record_action_progress(row.id, (i + 1) as i64, &json)
                            .await
                        {
                            // The step stays undone on record; it is idempotent, so it is
                            // carried out again when the lease ends.
                            tracing::warn!(error = %e, "could not record a step's progress");
                            return;
                        }
                    }
                }
                Err(e) if e.is_retryable() && self.within_horizon(&row) => {
                    let attempts = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                    let delay = retry_after(&e).map_or_else(
                        || self.cfg.retry_delay(attempts),
                        |d| d.max(self.cfg.retry_delay(attempts)),
                    );
                    let error = e.to_string();
                    tracing::warn!(step = step.name(), error = %error, retry_in_ms = delay.as_millis() as u64, "Stream call failed; will retry");
                    metrics::counter!("chatguard_actions_total", "status" => "retry").increment(1);
                    let next = Utc::now()
                        + chrono::Duration::from_std(delay)
                            .unwrap_or_else(|_| chrono::Duration::seconds(60));
                    let json = serde_json::to_string(&results).unwrap_or_default();
                    if let Err(e) = self.store.retry_action(row.id, next, &error, &json).await {
                        tracing::warn!(error = %e, "could not schedule the retry; the lease will");
                    }
                    return;
                }
                Err(e) => {
                    let error = e.to_string();
                    tracing::warn!(step = step.name(), error = %error, "Stream call failed for good");
                    results.push(StepResult {
                        step: step.name().into(),
                        status: "failed".into(),
                        error: Some(error.clone()),
                    });
                    failed.get_or_insert(error);
                    if stop_at_failure {
                        break;
                    }
                }
            }
        }
        let end = if failed.is_some() {
            ActionEnd::Failed
        } else {
            ActionEnd::Done
        };
        self.end_with(&row, end, &steps, results, failed).await;
    }

    fn within_horizon(&self, row: &ActionRow) -> bool {
        let age = Utc::now() - row.created_at;
        age < chrono::Duration::seconds(self.cfg.retry_horizon_secs as i64)
    }

    async fn end(
        &self,
        row: &ActionRow,
        end: ActionEnd,
        results: Vec<StepResult>,
        error: Option<String>,
    ) {
        self.end_with(row, end, &[], results, error).await;
    }

    async fn end_with(
        &self,
        row: &ActionRow,
        end: ActionEnd,
        steps: &[Step],
        results: Vec<StepResult>,
        error: Option<String>,
    ) {
        let done = |i: usize| results.get(i).is_some_and(|r| r.status == "done");
        let mut bans = Vec::new();
        let mut unbanned = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Ban {
                    user_id,
                    timeout_minutes,
                    reason,
                } if done(i) => bans.push(ConfirmedBan {
                    user_id: user_id.clone(),
                    timeout_minutes: *timeout_minutes,
                    reason: reason.clone(),
                }),
                Step::Unban { user_id } if done(i) => unbanned.push(user_id.clone()),
                _ => {}
            }
        }
        let outcome = WorkOutcome {
            status: end.as_str().into(),
            steps: results,
            attempts: row.attempts + 1,
        };
        let finish = Finish {
            end,
            results: serde_json::to_string(&outcome).unwrap_or_default(),
            error,
            bans,
            unbanned,
            audit_after: Some(api_outcome(&outcome)),
        };
        match self.store.finish_action(row, &finish).await {
            Ok(true) => {
                metrics::counter!("chatguard_actions_total", "status" => end.as_str()).increment(1);
                tracing::info!(status = end.as_str(), "action finished");
            }
            Ok(false) => tracing::debug!("action already finished by another runner"),
            Err(e) => {
                tracing::warn!(error = %e, "could not record the action's end; the lease will")
            }
        }
    }
}

/// How long Stream asked us to wait (429 with `X-RateLimit-Reset`).
fn retry_after(e: &StepError) -> Option<Duration> {
    match e {
        StepError::Stream(StreamError::RateLimited {
            reset: Some(reset), ..
        }) => {
            let now = Utc::now().timestamp().max(0) as u64;
            Some(Duration::from_secs(reset.saturating_sub(now).min(3600)))
        }
        _ => None,
    }
}

/// The moderator-facing outcome: `{"status": "ok"|"failed", "calls": [...], "error"}`.
pub fn api_outcome(outcome: &WorkOutcome) -> serde_json::Value {
    let calls: Vec<&str> = outcome
        .steps
        .iter()
        .filter(|s| s.status == "done")
        .map(|s| call_name(&s.step))
        .collect();
    match outcome.status.as_str() {
        "done" => serde_json::json!({"status": "ok", "calls": calls}),
        _ => serde_json::json!({
            "status": "failed",
            "calls": calls,
            "error": outcome.steps.iter().find_map(|s| s.error.clone()),
        }),
    }
}

/// The Stream call a step makes, as the review API names it.
fn call_name(step: &str) -> &'static str {
    match step {
        "flag" => "flag_message",
        "unflag" => "unflag_message",
        "delete" => "delete_message",
        "ban" => "ban_user",
        "unban" => "unban_user",
        "notice" => "send_message",
        _ => "unknown",
    }
}
