//! Ingest's group commit: verified webhooks are stored in one transaction per batch and their
//! jobs queued in one push, and only then is each handler answered. SQLite has one writer, so this
//! also keeps ingest from queueing for it once per webhook.

use std::sync::Arc;

use crate::group_commit::{GroupCommit, GroupCommitError};
use crate::queue::{EnqueueOptions, JobQueue, ScoreJob, idempotency_key};
use crate::store::{Inserted, NewEvent, Store, status};

/// Most events one batch takes.
const MAX_BATCH: usize = 512;

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored now; queued for scoring when its status is `received`.
    New { id: i64 },
    /// Seen before, with the status the stored copy has.
    Duplicate { id: i64, status: String },
}

/// A handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct EventWriter(GroupCommit<NewEvent, Stored>);

impl EventWriter {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(store: Store, queue: Arc<dyn JobQueue>) -> Self {
        Self(GroupCommit::spawn(
            "ingest",
            MAX_BATCH,
            move |events: Vec<NewEvent>| {
                let store = store.clone();
                let queue = queue.clone();
                async move { write_batch(&store, queue.as_ref(), &events).await }
            },
        ))
    }

    /// Stores `event` (and queues it, if it is to be scored); returns once both are committed.
    pub async fn write(&self, event: NewEvent) -> Result<Stored, GroupCommitError> {
        self.0.submit(event).await
    }
}

async fn write_batch(
    store: &Store,
    queue: &dyn JobQueue,
    events: &[NewEvent],
) -> Result<Vec<Stored>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("storing webhooks: {e}");
    let inserted = store.insert_events(events).await.map_err(|e| fail(&e))?;
    let mut jobs = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for (event, ins) in events.iter().zip(inserted) {
        let (id, stored_status, result) = match ins {
            Inserted::New(id) => (id, event.status.to_owned(), Stored::New { id }),
            Inserted::Duplicate { id, status } => {
                (id, status.clone(), Stored::Duplicate { id, status })
            }
            // Never queued again: the stored copy is (or was) handled under its own id.
            Inserted::Replay { id } => (
                id,
                "replay".to_owned(),
                Stored::Duplicate {
                    id,
                    status: "replay".to_owned(),
                },
            ),
        };
        // New, or stored by an earlier delivery that may have failed before its job was pushed:
        // push attempt 1 under a key that makes every such push one job.
        if stored_status == status::RECEIVED {
            jobs.push((
                ScoreJob {
                    event_id: id,
                    webhook_id: event.webhook_id.clone(),
                    attempt: 1,
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
pub async fn requeue_received(store: &Store, queue: &dyn JobQueue) -> Result<usize, String> {
    let fail = |e: &dyn std::fmt::Display| format!("re-queueing stored events: {e}");
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
