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

    pub fn job_context(&self) -> Arc<JobContext> {
        Arc::new(JobContext::new(
            self.store.clone(),
            self.queue.clone(),
            self.rules.clone(),
            self.config.clone(),
            queue::worker_name(),
        ))
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
        let router = router(&services, services.webhook_secrets().await?);
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
            let ctx = self.services.job_context();
            tracing::info!(worker = %ctx.worker_name, "worker started");
            Some(tokio::spawn(queue::run_worker(ctx, shutdown.clone())))
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
        if let Some(worker) = worker {
            match worker.await {
                Ok(Err(e)) => tracing::error!(error = %e, "worker stopped with an error"),
                Err(e) => tracing::error!(error = %e, "worker panicked"),
                Ok(Ok(())) => {}
            }
        }
        let _ = watcher.await;
        self.services.store.close().await;
        tracing::info!("stopped");
        server
    }
}

fn router(services: &Services, secrets: HashMap<String, SecretString>) -> Router {
    let config = &services.config;
    let ingest = ingest::router(IngestState {
        writer: ingest::EventWriter::spawn(services.store.clone(), services.queue.clone()),
        secrets: Arc::new(secrets),
        bot_user_id: Arc::from(config.stream.bot_user_id.as_str()),
        max_body_bytes: config.server.max_body_bytes,
        max_decompressed_bytes: config.server.max_decompressed_bytes,
    });
    let ops = api::router(api::OpsState {
        store: services.store.clone(),
        queue: services.queue.clone(),
    });
    ingest
        .merge(ops)
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
