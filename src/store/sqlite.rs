//! SQLite connections: every pragma set per connection, and a wake-up on job inserts.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc::{UnboundedReceiver, unbounded};
use futures::{Stream, StreamExt};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteOperation, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

/// apalis's table of jobs; an insert there wakes the worker.
const JOBS_TABLE: &str = "Jobs";

/// A stream that yields once per job inserted through this process's pool.
///
/// apalis-sqlite has the same listener, but its event type cannot be built outside that crate and
/// its `connect_with_callback` takes a URL, which cannot carry the per-connection pragmas below.
#[derive(Clone, Debug)]
pub struct JobsWake {
    rx: Arc<Mutex<UnboundedReceiver<()>>>,
}

impl Stream for JobsWake {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        match self.rx.lock() {
            Ok(mut rx) => rx.poll_next_unpin(cx),
            Err(_) => Poll::Ready(None),
        }
    }
}

/// The three pools chatguard keeps on one SQLite file.
pub struct SqlitePools {
    /// chatguard's own writes: one connection, so writers queue in the pool instead of sleeping
    /// in SQLite's busy handler.
    pub writer: SqlitePool,
    pub reader: SqlitePool,
    /// apalis's own pool (one connection), with the jobs wake-up hook. Kept apart from `writer` because a
    /// saturated apalis worker can hold its connection until a running job finishes, while that
    /// job waits for a connection to record its outcome: sharing one pool deadlocked under load.
    pub queue: SqlitePool,
}

/// Opens the writer, reader and queue pools. WAL, `synchronous=NORMAL`, `busy_timeout` and
/// foreign keys go in the connect options, so every connection gets them; pragmas run through a
/// pool reach only one connection. Needs a database file (`sqlite::memory:` would give each pool
/// its own database).
pub async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<(SqlitePools, JobsWake), sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await?;
    let (tx, rx) = unbounded::<()>();
    let queue = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            let tx = tx.clone();
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                handle.set_update_hook(move |ev| {
                    if ev.operation == SqliteOperation::Insert && ev.table == JOBS_TABLE {
                        let _ = tx.unbounded_send(());
                    }
                });
                Ok(())
            })
        })
        .connect_lazy_with(options.clone());
    let reader = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.create_if_missing(false));
    Ok((
        SqlitePools {
            writer,
            reader,
            queue,
        },
        JobsWake {
            rx: Arc::new(Mutex::new(rx)),
        },
    ))
}
