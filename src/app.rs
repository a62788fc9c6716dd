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
use crate::actions::executor::{ActionsConfig, DeleteMode, Executor};
use crate::actions::stream::StreamClient;
use crate::api;
use crate::config::{Config, DEV_API_KEY};
use crate::ingest::{self, IngestState};
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
}

/// The storage, queue and rules every mode needs.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub store: Store,
    pub queue: Arc<dyn JobQueue>,
    /// Engine and policy, reloaded when the rules folder changes.
    pub rules: RulesHandle,
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
        })
    }

    /// The secrets webhooks are verified with. In dry-run, one development secret, generated on
    /// first start, kept in the database and logged so it can be used to sign test deliveries.
    pub async fn webhook_secrets(&self) -> Result<HashMap<String, SecretString>, StartError> {
        if !self.config.dry_run() {
            return Ok(self
                .config
                .stream_apps()
                .into_iter()
                .map(|a| (a.api_key, a.api_secret))
                .collect());
        }
        let secret = self.dev_secret().await?;
        tracing::warn!(
            api_key = DEV_API_KEY,
            secret = %secret,
            "dry-run: STREAM_API_KEY/STREAM_API_SECRET are not set, so nothing is sent to Stream; \
             webhooks must be signed with this development key and secret"
        );
        Ok(HashMap::from([(
            DEV_API_KEY.to_owned(),
            SecretString::from(secret),
        )]))
    }

    /// The dry-run development secret, created on first use.
    pub async fn dev_secret(&self) -> Result<String, StartError> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        Ok(self
            .store
            .get_or_insert_setting(DEV_SECRET_SETTING, &fresh)
            .await?)
    }

    /// The Stream client, or None in dry-run (no credentials).
    pub fn stream_client(&self) -> Result<Option<StreamClient>, StartError> {
        let config = &self.config;
        match config.stream_apps().into_iter().next() {
            Some(app) if !config.dry_run() => Ok(Some(
                StreamClient::new(&app.api_key, &app.api_secret, &config.stream_client())
                    .map_err(|e| StartError::Actions(e.to_string()))?,
            )),
            _ => Ok(None),
        }
    }

    /// The executor that carries decisions out on Stream.
    pub fn executor(&self) -> Result<Arc<Executor>, StartError> {
        let config = &self.config;
        let actions = ActionsConfig {
            delete: if config.actions.delete == "soft" {
                DeleteMode::Soft
            } else {
                DeleteMode::Hard
            },
            notify_on_flag: config.actions.notify_on_flag,
            moderation_channel: config.moderation_channel().map(str::to_owned),
        };
        Ok(Arc::new(Executor::new(
            self.stream_client()?,
            actions,
            config.stream.bot_user_id.clone(),
        )))
    }

    pub fn job_context(&self) -> Result<Arc<JobContext>, StartError> {
        let config = &self.config;
        let executor = self.executor()?;
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
        Ok(Arc::new(JobContext::new(
            self.store.clone(),
            self.queue.clone(),
            self.rules.clone(),
            self.config.clone(),
            queue::worker_name(),
            executor,
            mailer,
        )))
    }
}

/// A running chatguard: HTTP, the worker, or both.
pub struct App {
    services: Services,
    listener: Option<TcpListener>,
    router: Router,
    run_worker: bool,
    shutdown: CancellationToken,
}

impl App {
    /// `chatguard serve`: binds the listener; runs the worker too unless `queue.run_worker` is off.
    pub async fn serve(config: Config) -> Result<Self, StartError> {
        let addr = config.server.listen;
        let run_worker = config.queue.run_worker;
        let services = Services::start(config).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let router = router(&services, services.webhook_secrets().await?)?;
        Ok(Self {
            services,
            listener: Some(listener),
            router,
            run_worker,
            shutdown: CancellationToken::new(),
        })
    }

    /// `chatguard worker`: the worker alone, for several processes sharing one PostgreSQL.
    pub async fn worker(config: Config) -> Result<Self, StartError> {
        let services = Services::start(config).await?;
        Ok(Self {
            services,
            listener: None,
            router: Router::new(),
            run_worker: true,
            shutdown: CancellationToken::new(),
        })
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
            let ctx = self.services.job_context()?;
            tracing::info!(worker = %ctx.worker_name, "worker started");
            let mailer = ctx.mailer.clone();
            Some((
                tokio::spawn(queue::run_worker(ctx, shutdown.clone())),
                mailer,
            ))
        } else {
            None
        };
        let server = match self.listener {
            Some(listener) => {
                tracing::info!(addr = ?listener.local_addr().ok(), "listening");
                let stop = shutdown.clone();
                axum::serve(listener, self.router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                    .map_err(StartError::Serve)
            }
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        shutdown.cancel();
        if let Some((worker, mailer)) = worker {
            match worker.await {
                Ok(Err(e)) => tracing::error!(error = %e, "worker stopped with an error"),
                Err(e) => tracing::error!(error = %e, "worker panicked"),
                Ok(Ok(())) => {}
            }
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
        deadline: ingest::before_send::DEFAULT_DEADLINE,
        block_text: ingest::before_send::DEFAULT_BLOCK_TEXT.into(),
    });
    let ingest = ingest::router(IngestState {
        writer,
        secrets,
        bot_user_id: Arc::from(config.stream.bot_user_id.as_str()),
        max_body_bytes: config.server.max_body_bytes,
        max_decompressed_bytes: config.server.max_decompressed_bytes,
    });
    let ops = api::router(api::OpsState {
        store: services.store.clone(),
        queue: services.queue.clone(),
    });
    let review = api::review::router(api::review::ReviewState {
        store: services.store.clone(),
        config: services.config.clone(),
        stream: services.stream_client()?,
    });
    Ok(ingest
        .merge(before_send)
        .merge(ops)
        .merge(review)
        .merge(crate::console::router())
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid)))
}
