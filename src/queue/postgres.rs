//! apalis-postgres wiring: `FOR UPDATE SKIP LOCKED` fetches, so any number of worker processes
//! can share one database; LISTEN/NOTIFY wakes idle workers.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{EnqueueOptions, JobContext, JobQueue, QueueError, SCORE_QUEUE, ScoreJob, job};
use crate::config::QueueConfig;

pub struct PgQueue {
    storage: PostgresStorage<ScoreJob>,
    pool: PgPool,
}

fn apalis_config(config: &QueueConfig) -> Config {
    Config::default()
        .queue(SCORE_QUEUE)
        .batch_size(config.batch_size)
        .heartbeat_interval(Duration::from_secs(config.heartbeat_secs))
        .missed_heartbeats(5)
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue").finish_non_exhaustive()
    }
}

impl PgQueue {
    pub fn new(pool: PgPool, config: &QueueConfig) -> Self {
        let storage = PostgresStorage::new(&pool).with_config(apalis_config(config));
        Self { storage, pool }
    }
}

pub async fn migrate(pool: &PgPool) -> Result<(), QueueError> {
    // apalis keeps its own migration table in schema `apalis`; setup() only runs the migrator.
    PostgresStorage::setup(pool)
        .await
        .map_err(|e| QueueError::Backend(e.to_string()))
}

#[async_trait::async_trait]
impl JobQueue for PgQueue {
    async fn enqueue_many(&self, jobs: Vec<(ScoreJob, EnqueueOptions)>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let tasks: Vec<_> = jobs
            .iter()
            .map(|(job, opts)| job::build_task(job, opts))
            .collect();
        let mut storage = self.storage.clone();
        match storage.push_all(futures::stream::iter(tasks)).await {
            Ok(()) => Ok(()),
            // apalis-postgres 1.0 inserts without ON CONFLICT, so one key already queued fails the
            // whole batch (apalis-sqlite skips it). Keep SQLite's meaning: push one at a time and
            // count an existing key as queued.
            Err(e) if is_duplicate_key(&e) => {
                for (job, opts) in &jobs {
                    match storage.push_task(job::build_task(job, opts)).await {
                        Ok(()) => {}
                        Err(e) if is_duplicate_key(&e) => {
                            tracing::debug!(key = ?opts.idempotency_key, "job already queued");
                        }
                        Err(e) => return Err(QueueError::Backend(e.to_string())),
                    }
                }
                Ok(())
            }
            Err(e) => Err(QueueError::Backend(e.to_string())),
        }
    }

    async fn depth(&self) -> Result<i64, QueueError> {
        Ok(sqlx::query_scalar(
            "select count(*) from apalis.jobs where job_type = $1
             and (status in ('Pending', 'Queued', 'Running') or (status = 'Failed' and attempts < max_attempts))",
        )
        .bind(SCORE_QUEUE)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn prune_finished(&self, older_than: Duration) -> Result<u64, QueueError> {
        let done = sqlx::query(
            "delete from apalis.jobs where job_type = $1 and done_at is not null
             and done_at <= now() - make_interval(secs => $2)
             and (status in ('Done', 'Killed') or (status = 'Failed' and attempts >= max_attempts))",
        )
        .bind(SCORE_QUEUE)
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// True when a push failed only because a job with the same idempotency key exists.
fn is_duplicate_key(e: &TaskSinkError<apalis_postgres::Error>) -> bool {
    match e {
        TaskSinkError::PushError(apalis_postgres::Error::Database(sqlx::Error::Database(db))) => {
            db.is_unique_violation() && db.constraint() == Some(IDEMPOTENCY_INDEX)
        }
        _ => false,
    }
}

/// apalis-postgres's unique index on `(job_type, idempotency_key)`.
const IDEMPOTENCY_INDEX: &str = "idx_jobs_idempotency_key";

pub async fn run_worker(
    pool: PgPool,
    ctx: Arc<JobContext>,
    config: &QueueConfig,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let storage = PostgresStorage::<ScoreJob>::new(&pool).with_config(apalis_config(config));
    let signal = async move {
        shutdown.cancelled_owned().await;
        Ok::<(), std::io::Error>(())
    };
    WorkerBuilder::new(ctx.worker_name.clone())
        .backend(storage.with_pubsub())
        .data(ctx)
        .concurrency(config.concurrency)
        .build(job::handle)
        .run_until(signal)
        .await
        .map_err(|e| QueueError::Backend(e.to_string()))
}
