//! Group commit: many tasks hand items to one writer task, which commits whatever has accumulated
//! in one go and then answers each of them. Under light load a batch is one item (no timer, no
//! added wait); under heavy load batches grow and the cost of a commit is shared. Used by ingest
//! (webhooks → events and jobs) and by the worker (job outcomes → decisions).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// Items waiting for the writer before submitters wait to hand theirs over.
const CHANNEL: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupCommitError {
    #[error("{0}")]
    Failed(String),
    #[error("the {0} writer has stopped")]
    Stopped(&'static str),
}

type Reply<R> = oneshot::Sender<Result<R, GroupCommitError>>;

/// Commits `items`, checking that there is one result per item.
async fn run<T, R, F, Fut>(
    name: &str,
    commit: &F,
    items: Vec<T>,
) -> Result<Vec<R>, GroupCommitError>
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, String>>,
{
    let n = items.len();
    match commit(items).await {
        Ok(results) if results.len() == n => Ok(results),
        Ok(results) => Err(GroupCommitError::Failed(format!(
            "{name} writer returned {} results for {n} items",
            results.len()
        ))),
        Err(e) => Err(GroupCommitError::Failed(e)),
    }
}

/// A handle to a writer task; cheap to clone. The task ends when every handle is dropped.
pub struct GroupCommit<T, R> {
    name: &'static str,
    tx: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            tx: self.tx.clone(),
        }
    }
}

impl<T: Clone + Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the writer. `commit` gets up to `max_batch` items and must return one result per
    /// item, in order. When a batch fails, its items are committed one by one, so that one bad
    /// item fails alone.
    pub fn spawn<F, Fut>(name: &'static str, max_batch: usize, commit: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, String>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(T, Reply<R>)>(CHANNEL);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.drain(..).unzip();
                metrics::histogram!("chatguard_group_commit_size", "writer" => name)
                    .record(items.len() as f64);
                if items.len() == 1 {
                    let result = run(name, &commit, items).await.map(|mut r| r.remove(0));
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(result);
                    }
                    continue;
                }
                match run(name, &commit, items.clone()).await {
                    Ok(results) => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(result));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(writer = name, items = items.len(), error = %e, "batch failed; committing one by one");
                        for (item, reply) in items.into_iter().zip(replies) {
                            let _ = reply.send(
                                run(name, &commit, vec![item])
                                    .await
                                    .map(|mut r| r.remove(0)),
                            );
                        }
                    }
                }
            }
        });
        Self { name, tx }
    }

    /// Hands `item` over and waits until its batch is committed.
    pub async fn submit(&self, item: T) -> Result<R, GroupCommitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| GroupCommitError::Stopped(self.name))?;
        answer
            .await
            .map_err(|_| GroupCommitError::Stopped(self.name))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_submits_share_commits_and_get_their_own_results() {
        let commits = Arc::new(AtomicUsize::new(0));
        let counter = commits.clone();
        let writer = GroupCommit::spawn("test", 64, move |items: Vec<u32>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let results = futures::future::join_all((0..200u32).map(|i| {
            let w = writer.clone();
            async move { w.submit(i).await.unwrap() }
        }))
        .await;
        assert_eq!(results, (0..200u32).map(|i| i * 2).collect::<Vec<_>>());
        let n = commits.load(Ordering::SeqCst);
        assert!((200 / 64..200).contains(&n), "{n} commits for 200 items");
    }

    #[tokio::test]
    async fn a_failing_item_fails_alone() {
        let writer = GroupCommit::spawn("test", 64, |items: Vec<u32>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            if items.contains(&13) {
                Err("unlucky".to_owned())
            } else {
                Ok(items)
            }
        });
        let results = futures::future::join_all((10..20u32).map(|i| {
            let w = writer.clone();
            async move { (i, w.submit(i).await) }
        }))
        .await;
        for (i, r) in results {
            match r {
                Ok(v) => assert_eq!(v, i),
                Err(GroupCommitError::Failed(e)) => assert!(i == 13 && e == "unlucky", "{i}: {e}"),
                Err(e) => panic!("{i}: {e}"),
            }
        }
    }
}
