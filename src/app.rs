//! Start-up and shutdown: connect and migrate, load rules, bind, then run HTTP and/or the worker
//! until a shutdown token fires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::actions::email::{AlertMailer, DigestOutcome};
use crate::actions::executor::Executor;
use crate::actions::runner::{ActionWaker, Runner};
use crate::actions::stream::StreamClient;
use crate::api;
use crate::config::{Config, DEV_API_KEY};
use crate::ingest::{self, IngestState};
use crate::pipeline::Pipeline;
use crate::queue::{self, JobContext, JobQueue, QueueError};
use crate::reload::{RulesHandle, RulesLoadError};
use crate::store::{Store, StoreError};

/// The setting under which dry-run keeps its generated webhook secret.
pub const DEV_SECRET_SETTING: &str = "dev_webhook_secret";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database")]
    Store(#[from] StoreError),
    #[error("job queue")]
    Queue(#[from] QueueError),
    #[error("rules")]
    Rules(#[from] RulesLoadError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server")]
    Serve(#[source] std::io::Error),
    #[error("{0}")]
    Requeue(String),
    #[error("actions: {0}")]
    Actions(String),
    #[error(
        "no Stream credentials (stream.api_key / STREAM_API_KEY and STREAM_API_SECRET, or \
         CHATGUARD_STREAM_APPS): set them, or run with --dry-run (CHATGUARD_DRY_RUN=true) to \
         decide without acting"
    )]
    NoCredentials,
}

/// The storage, queue and rules every mode needs.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub store: Store,
    pub queue: Arc<dyn JobQueue>,
    /// Engine and policy, reloaded when the rules folder changes.
    pub rules: RulesHandle,
    /// Wakes this process's action runner when work is written here.
    pub actions: ActionWaker,
}

impl Services {
    /// Connects, migrates both our tables and the queue's, and loads the rules.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        crate::telemetry::metrics();
        let store = Store::connect(&config.database.url, config.database.max_connections).await?;
        store.migrate().await?;
        queue::migrate(&store).await?;
        let rules = RulesHandle::load(&config.rules.dir)?;
        {
            let loaded = rules.current();
            tracing::info!(
                dir = %config.rules.dir.display(),
                rules = loaded.engine.rules().len(),
                terms = loaded.engine.analyzer().lexicon.len(),
                policy = %loaded.policy.version,
                "rules loaded"
            );
        }
        let queue = queue::for_store(&store, &config.queue);
        Ok(Self {
            config: Arc::new(config),
            store,
            queue,
            rules,
            actions: ActionWaker::default(),
        })
    }

    /// The secrets webhooks are verified with: every app's, or without any app (dry-run only)
    /// one development key and secret, generated on first start and kept in the database. The
    /// secret is printed once, when it is made; `chatguard dev-secret` prints it again.
    pub async fn webhook_secrets(&self) -> Result<HashMap<String, SecretString>, StartError> {
        if !self.config.has_no_apps() {
            return Ok(self
                .config
                .stream_apps()
                .into_iter()
                .map(|a| (a.api_key, a.api_secret))
                .collect());
        }
        let (secret, fresh) = self.dev_secret().await?;
        if fresh {
            // Straight to the terminal, once: a log line would repeat it on every start and
            // carry it to wherever logs are shipped.
            eprintln!(
                "chatguard: dry-run development webhook key {DEV_API_KEY:?} and secret {secret} \
                 (shown once; `chatguard dev-secret` prints it again)"
            );
        }
        tracing::warn!(
            api_key = DEV_API_KEY,
            "dry-run without Stream credentials: nothing is sent to Stream; webhooks must be \
             signed with the development key (`chatguard dev-secret`)"
        );
        Ok(HashMap::from([(
            DEV_API_KEY.to_owned(),
            SecretString::from(secret),
        )]))
    }

    /// The dry-run development secret, created on first use; true when made now.
    pub async fn dev_secret(&self) -> Result<(String, bool), StartError> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let stored = self
            .store
            .get_or_insert_setting(DEV_SECRET_SETTING, &fresh)
            .await?;
        let made = stored == fresh;
        Ok((stored, made))
    }

    /// A Stream client per app (API key), none in dry-run.
    pub fn stream_clients(&self) -> Result<HashMap<String, StreamClient>, StartError> {
        let config = &self.config;
        if config.dry_run() {
            return Ok(HashMap::new());
        }
        config
            .stream_apps()
            .into_iter()
            .map(|app| {
                StreamClient::new(&app.api_key, &app.api_secret, &config.stream_client())
                    .map(|c| (app.api_key, c))
                    .map_err(|e| StartError::Actions(e.to_string()))
            })
            .collect()
    }

    /// The executor that makes Stream calls with each app's credentials.
    pub fn executor(&self) -> Result<Arc<Executor>, StartError> {
        Ok(Arc::new(Executor::new(
            self.stream_clients()?,
            self.config.stream.bot_user_id.clone(),
        )))
    }

    /// The worker's parts: the job context (pipeline) and the action runner.
    pub fn worker_parts(&self) -> Result<(Arc<JobContext>, Arc<Runner>), StartError> {
        let config = &self.config;
        let name = queue::worker_name();
        let runner = Arc::new(Runner::new(
            self.store.clone(),
            self.executor()?,
            config.actions.clone(),
            name.clone(),
            self.actions.clone(),
        ));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DigestOutcome>();
        let mailer = AlertMailer::start(&config.alerts, Some(tx))
            .map_err(|e| StartError::Actions(e.to_string()))?;
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(outcome) = rx.recv().await {
                let status = match &outcome.result {
                    Ok(()) => "sent".to_owned(),
                    Err(e) => format!("failed after {} attempts: {e}", outcome.attempts),
                };
                if let Err(e) = store
                    .record_alert_outcome(&outcome.decision_ids, &status)
                    .await
                {
                    tracing::error!(error = %e, "could not record an e-mail digest's outcome");
                }
            }
        });
        let pipeline = Pipeline::new(
            self.store.clone(),
            self.rules.clone(),
            self.config.clone(),
            name.clone(),
            self.actions.clone(),
            mailer,
        );
        let ctx = Arc::new(JobContext::new(
            self.store.clone(),
            self.queue.clone(),
            pipeline,
            self.config.clone(),
            name,
        ));
        Ok((ctx, runner))
    }
}

/// A running chatguard: HTTP, the worker, or both.
pub struct App {
    services: Services,
    listener: Option<TcpListener>,
    /// `/metrics` on an address of its own (`server.metrics_listen`).
    metrics_listener: Option<TcpListener>,
    router: Router,
    run_worker: bool,
    shutdown: CancellationToken,
}

impl App {
    /// `chatguard serve`: binds the listener; runs the worker too unless `queue.run_worker` is off.
    pub async fn serve(config: Config) -> Result<Self, StartError> {
        require_credentials(&config)?;
        let addr = config.server.listen;
        let run_worker = config.queue.run_worker;
        let services = Services::start(config).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let metrics_listener = match services.config.server.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        let router = router(&services, services.webhook_secrets().await?)?;
        Ok(Self {
            services,
            listener: Some(listener),
            metrics_listener,
            router,
            run_worker,
            shutdown: CancellationToken::new(),
        })
    }

    /// `chatguard worker`: the worker alone, for several processes sharing one PostgreSQL.
    pub async fn worker(config: Config) -> Result<Self, StartError> {
        require_credentials(&config)?;
        let services = Services::start(config).await?;
        Ok(Self {
            services,
            listener: None,
            metrics_listener: None,
            router: Router::new(),
            run_worker: true,
            shutdown: CancellationToken::new(),
        })
    }

    /// The bound `/metrics` address, when it has its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound address (port 0 in tests becomes a real port here).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Cancelling this token stops the app gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> Result<(), StartError> {
        let shutdown = self.shutdown.clone();
        let watcher = self.services.rules.spawn_watcher(shutdown.clone());
        let worker = if self.run_worker {
            let n = ingest::requeue_received(&self.services.store, self.services.queue.as_ref())
                .await
                .map_err(StartError::Requeue)?;
            if n > 0 {
                tracing::info!(
                    events = n,
                    "re-queued events waiting from before the restart"
                );
            }
            let (ctx, runner) = self.services.worker_parts()?;
            tracing::info!(worker = %ctx.worker_name, "worker started");
            let mailer = ctx.pipeline.mailer().cloned();
            let services = self.services.clone();
            Some((
                tokio::spawn(queue::run_worker(ctx, shutdown.clone())),
                tokio::spawn(runner.run(shutdown.clone())),
                tokio::spawn(background(services, shutdown.clone())),
                mailer,
            ))
        } else {
            None
        };
        let server = match self.listener {
            Some(listener) => {
                tracing::info!(addr = ?listener.local_addr().ok(), "listening");
                let metrics = match self.metrics_listener {
                    Some(l) => {
                        tracing::info!(addr = ?l.local_addr().ok(), "metrics listening");
                        let router = api::metrics_router(api::OpsState {
                            store: self.services.store.clone(),
                            metrics_token: self.services.config.server.metrics_token.clone(),
                        });
                        let cfg = self.services.config.server.clone();
                        let stop = shutdown.clone();
                        Some(tokio::spawn(async move {
                            crate::server::serve(l, router, &cfg, stop).await
                        }))
                    }
                    None => None,
                };
                let result = crate::server::serve(
                    listener,
                    self.router,
                    &self.services.config.server,
                    shutdown.clone(),
                )
                .await
                .map_err(StartError::Serve);
                if let Some(m) = metrics {
                    shutdown.cancel();
                    let _ = m.await;
                }
                result
            }
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        shutdown.cancel();
        if let Some((worker, runner, background, mailer)) = worker {
            match worker.await {
                Ok(Err(e)) => tracing::error!(error = %e, "worker stopped with an error"),
                Err(e) => tracing::error!(error = %e, "worker panicked"),
                Ok(Ok(())) => {}
            }
            let _ = runner.await;
            let _ = background.await;
            // Send what the e-mail digest holds before going.
            if let Some(mailer) = mailer {
                mailer.shutdown(std::time::Duration::from_secs(5)).await;
            }
        }
        let _ = watcher.await;
        self.services.store.close().await;
        tracing::info!("stopped");
        server
    }
}

/// Refuses to run without Stream credentials unless dry-run is asked for: a deploy whose
/// secret mount failed must not look healthy while it enforces nothing.
fn require_credentials(config: &Config) -> Result<(), StartError> {
    if config.has_no_apps() && !config.dry_run() {
        return Err(StartError::NoCredentials);
    }
    Ok(())
}

/// Work beside the worker: retention and the gauges `/metrics` shows (computed here so that a
/// scrape costs nothing).
async fn background(services: Services, shutdown: CancellationToken) {
    let config = services.config.clone();
    let mut prune = tokio::time::interval(std::time::Duration::from_secs(
        config.retention.interval_secs,
    ));
    let mut gauges = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = prune.tick() => {
                match services.store.prune(&config.retention, chrono::Utc::now()).await {
                    Ok(r) if r.total() > 0 => tracing::info!(report = ?r, "retention: pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention: pruning failed"),
                }
            }
            _ = gauges.tick() => api::refresh_gauges(&services.store, services.queue.as_ref()).await,
        }
    }
}

fn router(
    services: &Services,
    secrets: HashMap<String, SecretString>,
) -> Result<Router, StartError> {
    let config = &services.config;
    let writer = ingest::EventWriter::spawn(services.store.clone(), services.queue.clone());
    let secrets = Arc::new(secrets);
    let before_send = ingest::before_send::router(ingest::before_send::BeforeSendState {
        secrets: secrets.clone(),
        rules: services.rules.clone(),
        writer: writer.clone(),
        max_body_bytes: config.server.max_body_bytes,
        max_decompressed_bytes: config.server.max_decompressed_bytes,
        deadline: std::time::Duration::from_millis(config.before_send.deadline_ms),
        block_text: config.before_send.block_text.as_str().into(),
    });
    let ingest = ingest::router(IngestState {
        writer,
        secrets,
        bot_user_id: Arc::from(config.stream.bot_user_id.as_str()),
        max_body_bytes: config.server.max_body_bytes,
        max_decompressed_bytes: config.server.max_decompressed_bytes,
        stale_after: (config.server.stale_event_secs > 0)
            .then(|| chrono::Duration::seconds(config.server.stale_event_secs as i64)),
    });
    let ops = api::router(
        api::OpsState {
            store: services.store.clone(),
            metrics_token: config.server.metrics_token.clone(),
        },
        config.server.metrics_listen.is_none(),
    );
    let review = api::review::router(api::review::ReviewState {
        store: services.store.clone(),
        config: services.config.clone(),
        dry_run: config.dry_run(),
        actions: services.actions.clone(),
        rules: services.rules.clone(),
    });
    let app = ingest
        .merge(before_send)
        .merge(ops)
        .merge(review)
        .merge(crate::console::router())
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    Ok(crate::server::with_limits(app, &config.server))
}
