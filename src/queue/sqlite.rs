//! apalis-sqlite wiring.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_sqlite::{Config, SqliteStorage};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::{EnqueueOptions, JobContext, JobQueue, QueueError, SCORE_QUEUE, ScoreJob, job};
use crate::config::QueueConfig;
use crate::store::JobsWake;

#[derive(Debug)]
pub struct SqliteQueue {
    storage: SqliteStorage<ScoreJob>,
    pool: SqlitePool,
}

fn apalis_config(config: &QueueConfig) -> Config {
    Config::default()
        .queue(SCORE_QUEUE)
        .batch_size(config.batch_size)
        .heartbeat_interval(Duration::from_secs(config.heartbeat_secs))
        .missed_heartbeats(5)
}

impl SqliteQueue {
    pub fn new(pool: SqlitePool, config: &QueueConfig) -> Self {
        let storage = SqliteStorage::new(&pool).with_config(apalis_config(config));
        Self { storage, pool }
    }
}

pub async fn migrate(pool: &SqlitePool) -> Result<(), QueueError> {
    // Not `SqliteStorage::setup`: it sets `synchronous = OFF` on whichever connection it gets.
    let mut migrator = SqliteStorage::migrations();
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    // Acks are planned through LIdx(lock_by), which walks every job the worker ever finished:
    // throughput falls without bound. Without it they use the primary key (rust-stack.md §1).
    sqlx::query("DROP INDEX IF EXISTS LIdx")
        .execute(pool)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue_many(&self, jobs: Vec<(ScoreJob, EnqueueOptions)>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let tasks: Vec<_> = jobs
            .iter()
            .map(|(job, opts)| job::build_task(job, opts))
            .collect();
        let mut storage = self.storage.clone();
        storage
            .push_all(futures::stream::iter(tasks))
            .await
            .map_err(|e| QueueError::Backend(e.to_string()))
    }

    async fn depth(&self) -> Result<i64, QueueError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM Jobs WHERE job_type = $1
             AND (status IN ('Pending', 'Queued', 'Running') OR (status = 'Failed' AND attempts < max_attempts))",
        )
        .bind(SCORE_QUEUE)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn prune_finished(&self, older_than: Duration) -> Result<u64, QueueError> {
        let cutoff = chrono::Utc::now().timestamp() - older_than.as_secs() as i64;
        let done = sqlx::query(
            "DELETE FROM Jobs WHERE job_type = $1 AND done_at IS NOT NULL AND done_at <= $2
             AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))",
        )
        .bind(SCORE_QUEUE)
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

pub async fn run_worker(
    pool: SqlitePool,
    wake: Option<JobsWake>,
    ctx: Arc<JobContext>,
    config: &QueueConfig,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let storage = SqliteStorage::<ScoreJob>::new(&pool).with_config(apalis_config(config));
    let name = ctx.worker_name.clone();
    let signal = async move {
        shutdown.cancelled_owned().await;
        Ok::<(), std::io::Error>(())
    };
    let result = match wake {
        Some(wake) => {
            WorkerBuilder::new(name)
                .backend(storage.poll_with_stream(wake))
                .data(ctx)
                .concurrency(config.concurrency)
                .build(job::handle)
                .run_until(signal)
                .await
        }
        None => {
            WorkerBuilder::new(name)
                .backend(storage)
                .data(ctx)
                .concurrency(config.concurrency)
                .build(job::handle)
                .run_until(signal)
                .await
        }
    };
    result.map_err(|e| QueueError::Backend(e.to_string()))
}
