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
    async fn enqueue(&self, job: &ScoreJob, opts: EnqueueOptions) -> Result<(), QueueError> {
        let mut storage = self.storage.clone();
        storage
            .push_task(super::job::build_task(job, &opts))
            .await
            .map_err(|e| QueueError::Backend(e.to_string()))
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
