//! The durable job queue, apalis on SQLite or PostgreSQL behind [`JobQueue`].
//!
//! apalis 1.0 needs four workarounds here (rust-stack.md §1), each covered by a test:
//! - its SQLite index `LIdx` makes every ack walk all finished jobs, so it is dropped after migrating;
//! - an idle worker only fetches on its heartbeat unless woken, so SQLite uses an update hook
//!   ([`crate::store::JobsWake`]) and PostgreSQL LISTEN/NOTIFY, with a short heartbeat as the net;
//! - its `setup()` sets `synchronous = OFF` on one pooled connection, so it is never called: the
//!   migrations run directly and the pragmas live in the connect options;
//! - its retries have no backoff, so a failed job is re-enqueued by us with `run_after`, which
//!   survives a restart, and becomes a dead letter after the last attempt;
//! - finished rows are never deleted, so [`JobQueue::prune_finished`] runs periodically.
//!
//! Whatever else strands an event (a store error while recording a failed attempt, a queue row
//! lost), a sweep finds events whose status has not moved for `queue.stranded_after_secs` and
//! queues them again while the service runs. A second job for an event is harmless: the
//! decision is recorded once per event, and only the run that records it acts.

mod job;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::QueueConfig;
use crate::store::{Db, Store};

pub use job::{JobContext, idempotency_key};

/// The apalis queue (its `job_type`) that carries scoring jobs.
pub const SCORE_QUEUE: &str = "chatguard.score_message";

/// Score (or record) one stored event. Small on purpose: the event itself is read from the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreJob {
    pub event_id: i64,
    pub webhook_id: String,
    /// 1 for the first try; retries carry the next number.
    pub attempt: u32,
}

/// How to enqueue: a key that makes repeated pushes one job, and a delay.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    pub idempotency_key: Option<String>,
    pub delay: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("queue migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("apalis: {0}")]
    Backend(String),
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

/// What the rest of chatguard needs from a queue.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Stores the job durably; returns once it is committed.
    async fn enqueue(&self, job: &ScoreJob, opts: EnqueueOptions) -> Result<(), QueueError> {
        self.enqueue_many(vec![(job.clone(), opts)]).await
    }
    /// Stores several jobs in one transaction; returns once it is committed.
    async fn enqueue_many(&self, jobs: Vec<(ScoreJob, EnqueueOptions)>) -> Result<(), QueueError>;
    /// Jobs waiting or running (not finished, not given up).
    async fn depth(&self) -> Result<i64, QueueError>;
    /// Deletes finished rows older than `older_than`; returns how many.
    async fn prune_finished(&self, older_than: Duration) -> Result<u64, QueueError>;
}

/// The queue that lives in the same database as `store`.
pub fn for_store(store: &Store, config: &QueueConfig) -> Arc<dyn JobQueue> {
    match store.queue_db() {
        Db::Sqlite(pool) => Arc::new(sqlite::SqliteQueue::new(pool.clone(), config)),
        Db::Postgres(pool) => Arc::new(postgres::PgQueue::new(pool.clone(), config)),
    }
}

/// Creates or upgrades apalis's tables, and applies the index workaround on SQLite.
pub async fn migrate(store: &Store) -> Result<(), QueueError> {
    match store.queue_db() {
        Db::Sqlite(pool) => sqlite::migrate(pool).await,
        Db::Postgres(pool) => postgres::migrate(pool).await,
    }
}

/// Runs one apalis worker with `config.concurrency` jobs in flight until `shutdown` fires.
pub async fn run_worker(
    ctx: Arc<JobContext>,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let store = ctx.store.clone();
    let config = ctx.config.queue.clone();
    let pruner = tokio::spawn(prune_loop(
        ctx.queue.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(sweep_loop(
        store.clone(),
        ctx.queue.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let result = match store.queue_db() {
        Db::Sqlite(pool) => {
            let wake = store.take_jobs_wake();
            sqlite::run_worker(pool.clone(), wake, ctx, &config, shutdown.clone()).await
        }
        Db::Postgres(pool) => {
            postgres::run_worker(pool.clone(), ctx, &config, shutdown.clone()).await
        }
    };
    shutdown.cancel();
    let _ = pruner.await;
    let _ = sweeper.await;
    result
}

/// Re-queues stranded events every `queue.sweep_interval_secs`.
async fn sweep_loop(
    store: Store,
    queue: Arc<dyn JobQueue>,
    config: QueueConfig,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.sweep_interval_secs));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match requeue_stranded(&store, queue.as_ref(), &config).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(events = n, "re-queued stranded events"),
            Err(e) => tracing::warn!(error = %e, "sweeping stranded events failed"),
        }
    }
}

/// One sweep: queues every stranded event again under a key of its own (the earlier job's key
/// may still be taken by a job that finished without recording anything).
pub async fn requeue_stranded(
    store: &Store,
    queue: &dyn JobQueue,
    config: &QueueConfig,
) -> Result<usize, QueueError> {
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::seconds(config.stranded_after_secs as i64);
    let mut n = 0;
    loop {
        let rows = store
            .take_stranded_events(cutoff, now, 500)
            .await
            .map_err(|e| QueueError::Backend(e.to_string()))?;
        if rows.is_empty() {
            return Ok(n);
        }
        n += rows.len();
        let jobs = rows
            .into_iter()
            .map(|(event_id, webhook_id, attempts)| {
                let attempt = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
                let key = format!(
                    "{}#swept-{}",
                    idempotency_key(&webhook_id, attempt),
                    now.timestamp_millis()
                );
                (
                    ScoreJob {
                        event_id,
                        webhook_id,
                        attempt,
                    },
                    EnqueueOptions {
                        idempotency_key: Some(key),
                        delay: None,
                    },
                )
            })
            .collect();
        queue.enqueue_many(jobs).await?;
    }
}

async fn prune_loop(queue: Arc<dyn JobQueue>, config: QueueConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.prune_interval_secs));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue
            .prune_finished(Duration::from_secs(config.prune_done_after_secs))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "pruned finished jobs"),
            Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed"),
        }
    }
}

/// A worker name unique to this process, stored by apalis as the lock owner.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "chatguard-{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
