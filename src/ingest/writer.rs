//! Group commit for ingest: handlers hand verified events to one task, which stores whatever has
//! accumulated in one transaction, queues their jobs in one more, and only then answers each
//! handler. Under light load a batch is one event (no timer, no added wait); under heavy load
//! batches grow and the per-event cost of a commit shrinks. SQLite has one writer, so this also
//! stops ingest connections from fighting over its lock (and sleeping in its busy handler).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::queue::{EnqueueOptions, JobQueue, ScoreJob, idempotency_key};
use crate::store::{Inserted, NewEvent, Store, status};

/// Most events one batch takes.
const MAX_BATCH: usize = 512;
/// Events waiting for the writer before handlers wait to hand theirs over.
const CHANNEL: usize = 4096;

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored now; queued for scoring when its status is `received`.
    New { id: i64 },
    /// Seen before, with the status the stored copy has.
    Duplicate { id: i64, status: String },
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum WriteError {
    #[error("storing the batch failed: {0}")]
    Failed(String),
    #[error("the event writer has stopped")]
    Stopped,
}

struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<Stored, WriteError>>,
}

/// A handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<Pending>,
}

impl EventWriter {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(store: Store, queue: Arc<dyn JobQueue>) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(run(rx, store, queue));
        Self { tx }
    }

    /// Stores `event` (and queues it, if it is to be scored); returns once both are committed.
    pub async fn write(&self, event: NewEvent) -> Result<Stored, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { event, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

async fn run(mut rx: mpsc::Receiver<Pending>, store: Store, queue: Arc<dyn JobQueue>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<NewEvent> = batch.iter().map(|p| p.event.clone()).collect();
        metrics::histogram!("chatguard_ingest_batch_size").record(events.len() as f64);
        match write_batch(&store, queue.as_ref(), &events).await {
            Ok(results) => {
                for (pending, result) in batch.drain(..).zip(results) {
                    let _ = pending.reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "storing webhooks failed");
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn write_batch(
    store: &Store,
    queue: &dyn JobQueue,
    events: &[NewEvent],
) -> Result<Vec<Stored>, WriteError> {
    let fail = |e: &dyn std::fmt::Display| WriteError::Failed(e.to_string());
    let inserted = store.insert_events(events).await.map_err(|e| fail(&e))?;
    let mut jobs = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for (event, ins) in events.iter().zip(inserted) {
        let (id, stored_status, result) = match ins {
            Inserted::New(id) => (id, event.status.to_owned(), Stored::New { id }),
            Inserted::Duplicate { id, status } => {
                (id, status.clone(), Stored::Duplicate { id, status })
            }
        };
        // New, or stored by an earlier delivery that may have failed before its job was pushed:
        // push attempt 1 under a key that makes every such push one job.
        if stored_status == status::RECEIVED {
            jobs.push((
                ScoreJob {
                    event_id: id,
                    webhook_id: event.webhook_id.clone(),
                    attempt: 1,
                    received_at: event.received_at,
                },
                EnqueueOptions {
                    idempotency_key: Some(idempotency_key(&event.webhook_id, 1)),
                    delay: None,
                },
            ));
        }
        out.push(result);
    }
    queue.enqueue_many(jobs).await.map_err(|e| fail(&e))?;
    Ok(out)
}

/// Re-enqueues events stored as `received` (their jobs are pushed again under the same
/// idempotency key, so this is a no-op for those already queued). Run at worker start-up.
pub async fn requeue_received(store: &Store, queue: &dyn JobQueue) -> Result<usize, WriteError> {
    let fail = |e: &dyn std::fmt::Display| WriteError::Failed(e.to_string());
    let mut after = 0;
    let mut n = 0;
    loop {
        let rows = store
            .list_received_events(after, 500)
            .await
            .map_err(|e| fail(&e))?;
        let Some(last) = rows.last() else {
            return Ok(n);
        };
        after = last.id;
        n += rows.len();
        let jobs = rows
            .into_iter()
            .map(|row| {
                let key = idempotency_key(&row.webhook_id, 1);
                (
                    ScoreJob {
                        event_id: row.id,
                        webhook_id: row.webhook_id,
                        attempt: 1,
                        received_at: row.received_at,
                    },
                    EnqueueOptions {
                        idempotency_key: Some(key),
                        delay: None,
                    },
                )
            })
            .collect();
        queue.enqueue_many(jobs).await.map_err(|e| fail(&e))?;
    }
}
