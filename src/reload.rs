//! The rules directory as one unit (engine files and policy), swapped atomically when it
//! changes: on a file change (watched with `notify`) or on SIGHUP. A set that fails to load is
//! rejected with its error logged and the previous set stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError};
use crate::policy::{Policy, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum RulesLoadError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Everything loaded from the rules directory at one moment.
#[derive(Debug)]
pub struct Loaded {
    pub engine: Engine,
    pub policy: Policy,
    /// Increments on every successful reload.
    pub generation: u64,
}

impl Loaded {
    pub fn load(dir: &Path, generation: u64) -> Result<Self, RulesLoadError> {
        Ok(Self {
            engine: Engine::load(dir)?,
            policy: Policy::load(dir)?,
            generation,
        })
    }
}

/// A cheap, cloneable handle on the rules in force.
#[derive(Clone)]
pub struct RulesHandle {
    dir: PathBuf,
    current: Arc<ArcSwap<Loaded>>,
}

impl std::fmt::Debug for RulesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesHandle")
            .field("dir", &self.dir)
            .finish()
    }
}

impl RulesHandle {
    pub fn load(dir: &Path) -> Result<Self, RulesLoadError> {
        let loaded = Loaded::load(dir, 1)?;
        Ok(Self {
            dir: dir.to_owned(),
            current: Arc::new(ArcSwap::from_pointee(loaded)),
        })
    }

    /// The rules in force now; hold the `Arc` for the length of one job.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the directory again and swaps it in, or keeps the old set and returns the error.
    pub fn reload(&self) -> Result<u64, RulesLoadError> {
        let next = self.current().generation + 1;
        match Loaded::load(&self.dir, next) {
            Ok(loaded) => {
                tracing::info!(
                    generation = next,
                    policy = %loaded.policy.version,
                    rules = loaded.engine.rules().len(),
                    "rules reloaded"
                );
                metrics::counter!("chatguard_rules_reloads_total", "result" => "ok").increment(1);
                self.current.store(Arc::new(loaded));
                Ok(next)
            }
            Err(e) => {
                tracing::error!(
                    error = %crate::telemetry::error_chain(&e),
                    "rules reload rejected; the previous rules stay in force"
                );
                metrics::counter!("chatguard_rules_reloads_total", "result" => "rejected")
                    .increment(1);
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP and when a file under the rules directory changes (debounced), until
    /// `shutdown`.
    pub fn spawn_watcher(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let file_tx = tx.clone();
            let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res
                    && !matches!(ev.kind, notify::EventKind::Access(_))
                    && ev.paths.iter().any(|p| !is_temporary(p))
                {
                    let _ = file_tx.send(());
                }
            });
            let _watcher = match watcher {
                Ok(mut w) => {
                    use notify::Watcher;
                    match w.watch(&handle.dir, notify::RecursiveMode::Recursive) {
                        Ok(()) => Some(w),
                        Err(e) => {
                            tracing::warn!(error = %e, dir = %handle.dir.display(), "cannot watch the rules directory; reload with SIGHUP");
                            None
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no file watcher; reload with SIGHUP");
                    None
                }
            };
            spawn_sighup(tx, shutdown.clone());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    got = rx.recv() => {
                        if got.is_none() { break; }
                        // Editors write in several steps: wait for the burst to end.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        while rx.try_recv().is_ok() {}
                        let h = handle.clone();
                        let _ = tokio::task::spawn_blocking(move || h.reload()).await;
                    }
                }
            }
        })
    }
}

fn is_temporary(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".tmp") || n.ends_with('~') || n.starts_with(".#"))
}

#[cfg(unix)]
fn spawn_sighup(tx: tokio::sync::mpsc::UnboundedSender<()>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hup.recv() => {
                    if got.is_none() { break; }
                    tracing::info!("SIGHUP: reloading rules");
                    if tx.send(()).is_err() { break; }
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: tokio::sync::mpsc::UnboundedSender<()>, _shutdown: CancellationToken) {}
