//! Test harness: a real database per test (a SQLite file, or a fresh PostgreSQL database when
//! `TEST_POSTGRES_URL` is set), the real app on a loopback port, and signed deliveries.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chatguard::app::{App, Services};
use chatguard::config::Config;
use chatguard::ingest::signature;
use chatguard::store::Store;
use tokio_util::sync::CancellationToken;

pub const API_KEY: &str = "test-key";
pub const SECRET: &str = "test-secret";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

/// PostgreSQL's admin URL, or None (and a note) when the suite runs without PostgreSQL.
/// Under CI (`CI` set) a missing `TEST_POSTGRES_URL` fails the test instead of skipping it.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but TEST_POSTGRES_URL is not: the PostgreSQL tests must run in CI"
            );
            // Straight to the handle: the test harness captures eprintln!, and a skip must show.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (PostgreSQL) {}: TEST_POSTGRES_URL is not set",
                std::thread::current().name().unwrap_or("test")
            );
            None
        }
    }
}

impl TestDb {
    /// None when the backend is PostgreSQL and no server is configured.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("chatguard.db").display());
                Some(Self {
                    url,
                    _dir: Some(dir),
                    pg_admin: None,
                })
            }
            Backend::Postgres => {
                let admin = postgres_url()?;
                let name = format!("chatguard_t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&admin)
                    .await
                    .expect("connect to TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Some(Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg_admin: Some((admin, name)),
                })
            }
        }
    }

    /// Drops a PostgreSQL test database (SQLite files go with their temp dir).
    pub async fn cleanup(self) {
        let Some((admin, name)) = &self.pg_admin else {
            return;
        };
        if let Ok(pool) = sqlx::PgPool::connect(admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {name} with (force)"
            )))
            .execute(&pool)
            .await;
            pool.close().await;
        }
    }
}

/// The `chatguard` binary, with the developer's own settings kept out.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chatguard"));
    c.env_remove("CHATGUARD_CONFIG")
        .env_remove("STREAM_API_KEY")
        .env_remove("STREAM_API_SECRET")
        .env("CHATGUARD_RULES", rules_dir())
        // As in `config`: Stream is unreachable and refused at once unless a test says otherwise.
        .env("STREAM_BASE_URL", "http://127.0.0.1:9")
        .env("CHATGUARD_STREAM__MAX_RETRIES", "0")
        // Fixtures carry fixed dates: the stale-event check has its own tests.
        .env("CHATGUARD_SERVER__STALE_EVENT_SECS", "0")
        .env("RUST_LOG", "warn");
    c
}

pub fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The test configuration: a known app key and secret, port 0, fast retries.
pub fn config(db_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = [
        ("CHATGUARD_DATABASE_URL", db_url),
        ("CHATGUARD_LISTEN", "127.0.0.1:0"),
        ("STREAM_API_KEY", API_KEY),
        ("STREAM_API_SECRET", SECRET),
        ("CHATGUARD_QUEUE__RETRY_BASE_SECS", "1"),
        ("CHATGUARD_QUEUE__HEARTBEAT_SECS", "1"),
        ("CHATGUARD_DATABASE__MAX_CONNECTIONS", "5"),
        // Stream is unreachable unless a test points STREAM_BASE_URL at its stand-in: a refused
        // connection fails at once, without retries.
        ("STREAM_BASE_URL", "http://127.0.0.1:9"),
        ("CHATGUARD_STREAM__MAX_RETRIES", "0"),
        // Fixtures carry fixed dates: the stale-event check has its own tests.
        ("CHATGUARD_SERVER__STALE_EVENT_SECS", "0"),
        // Durable actions retry fast in tests; a runner that died lets go within 2 s.
        ("CHATGUARD_ACTIONS__RETRY_BASE_MS", "100"),
        ("CHATGUARD_ACTIONS__RETRY_MAX_MS", "1000"),
        ("CHATGUARD_ACTIONS__LEASE_SECS", "2"),
        ("CHATGUARD_ACTIONS__POLL_MS", "50"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push(("CHATGUARD_RULES".into(), rules_dir().display().to_string()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_from(None, env).expect("test config")
}

/// The app running on a loopback port.
pub struct TestApp {
    pub url: String,
    pub services: Services,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn spawn(config: Config) -> Self {
        let app = App::serve(config).await.expect("app starts");
        let addr = app.local_addr().expect("bound");
        let services = app.services().clone();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(async move {
            app.run_until_stopped().await.expect("app runs");
        });
        Self {
            url: format!("http://{addr}"),
            services,
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    pub fn store(&self) -> &Store {
        &self.services.store
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }

    /// Signs `body` with the test secret and posts it under `webhook_id`.
    pub async fn post_webhook(&self, body: &[u8], webhook_id: &str) -> reqwest::Response {
        self.post_raw(body, body, Some(API_KEY), Some(SECRET), Some(webhook_id))
            .await
    }

    /// Posts `sent` with a signature over `signed` (they differ for gzip bodies).
    pub async fn post_raw(
        &self,
        sent: &[u8],
        signed: &[u8],
        api_key: Option<&str>,
        secret: Option<&str>,
        webhook_id: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhooks/stream", self.url))
            .header("content-type", "application/json")
            .body(sent.to_vec());
        if let Some(k) = api_key {
            req = req.header("x-api-key", k);
        }
        if let Some(s) = secret {
            req = req.header("x-signature", signature::sign(s.as_bytes(), signed));
        }
        if let Some(id) = webhook_id {
            req = req
                .header("x-webhook-id", id)
                .header("x-webhook-attempt", "1");
        }
        req.send().await.expect("request sent")
    }
}

/// A message.new body with the given text and ids.
pub fn message_new(message_id: &str, user_id: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "message.new",
        "cid": "messaging:general",
        "channel_type": "messaging",
        "channel_id": "general",
        "message_id": message_id,
        "message": {
            "id": message_id,
            "text": text,
            "type": "regular",
            "user": {"id": user_id, "role": "user"},
            "created_at": "2026-05-08T12:00:00.000000Z"
        },
        "user": {"id": user_id, "role": "user"},
        "created_at": "2026-05-08T12:00:00.000001Z"
    }))
    .expect("json")
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every event is in a final state.
pub async fn wait_settled(store: &Store) {
    eventually(Duration::from_secs(30), "all events settled", || async {
        let counts = store.count_events_by_status().await.ok()?;
        counts
            .iter()
            .all(|(s, _)| !matches!(s.as_str(), "received" | "queued" | "retrying"))
            .then_some(())
    })
    .await
}

/// Waits until the queue has nothing waiting or running (acks are written in batches, so a job's
/// row can finish a moment after its decision).
pub async fn wait_queue_empty(app: &TestApp) {
    eventually(Duration::from_secs(10), "an empty queue", || async {
        (app.services.queue.depth().await.ok()? == 0).then_some(())
    })
    .await
}

/// Runs `body` against each backend available.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::helpers::TestDb::new($crate::helpers::Backend::Sqlite)
                    .await
                    .unwrap();
                $body(&db, $crate::helpers::Backend::Sqlite).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) =
                    $crate::helpers::TestDb::new($crate::helpers::Backend::Postgres).await
                else {
                    return;
                };
                $body(&db, $crate::helpers::Backend::Postgres).await;
                db.cleanup().await;
            }
        }
    };
}

/// Copies a folder tree (a rules folder for a test to edit).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
