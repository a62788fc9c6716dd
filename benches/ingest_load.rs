//! Load benchmark for the webhook ingest path.
//!
//! Sends signed `message.new` webhooks over loopback to three targets in this one process and
//! prints Markdown tables:
//! - `bare`: an axum route that reads the body and answers 200, the reference;
//! - `sqlite`: the real app (ingest, queue and worker) on a SQLite file in a temp dir;
//! - `postgres`: the real app on a fresh PostgreSQL database, when `TEST_POSTGRES_URL` is set.
//!
//! Per target: a short warm-up, an open-loop phase (`--rate` events/s for `--seconds`, latency
//! measured from each request's intended send time so a stalled server cannot hide its queueing,
//! queue depth sampled every 250 ms, then the time until the worker has decided every accepted
//! webhook), and a closed-loop phase (`--concurrency` senders back to back for `--seconds`).
//!
//! ```text
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench --bench ingest_load -- --rate 2000 --seconds 10 --concurrency 64
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use chatguard::app::{App, Services};
use chatguard::config::Config;
use chatguard::ingest::signature;
use chatguard::queue::JobQueue;
use clap::{Parser, ValueEnum};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const API_KEY: &str = "bench-key";
const SECRET: &str = "bench-secret";
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
const X_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-webhook-id");
const X_WEBHOOK_ATTEMPT: HeaderName = HeaderName::from_static("x-webhook-attempt");

/// Chat-like texts, 10–100 characters: two clean, three that match rules.
const TEXTS: [&str; 5] = [
    "hey everyone, are we still on for the raid tonight at 9?",
    "gg that last round was wild lol",
    "just kys already, nobody wants you here",
    "FREE robux at bit.ly/x claim before it expires!!",
    "send nudes or i tell everyone what you said",
];
/// Distinct pre-signed bodies (message ids and users vary); requests cycle through them, each
/// under its own webhook id.
const BODY_POOL: u64 = 500;
/// Requests in flight at once in the open loop (a client's connection cap). Waiting for a slot
/// counts as latency, since latency runs from the intended send time.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 2048;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const WARMUP_REQUESTS: u64 = 256;
const WARMUP_CONCURRENCY: u64 = 16;
const DEPTH_SAMPLE_EVERY: Duration = Duration::from_millis(250);
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
const CLOSED_LOOP_MAX_PER_SENDER: u64 = 1_000_000;
const STOP_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(
    name = "ingest_load",
    about = "Signed webhooks over loopback against a bare axum route, chatguard on SQLite and on PostgreSQL"
)]
struct Args {
    /// Open-loop arrival rate, events per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Length of each phase, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Senders in the closed-loop phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Targets to run, comma-separated; postgres needs TEST_POSTGRES_URL.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [TargetKind::Bare, TargetKind::Sqlite, TargetKind::Postgres]
    )]
    targets: Vec<TargetKind>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Bare,
    Sqlite,
    Postgres,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Bare => "bare",
            TargetKind::Sqlite => "sqlite",
            TargetKind::Postgres => "postgres",
        })
    }
}

// ── requests ────────────────────────────────────────────────────────────────────────────────────

/// A pre-built body and its signature.
struct Payload {
    body: Bytes,
    signature: HeaderValue,
}

fn message_new(message_id: &str, user_id: &str, text: &str) -> Vec<u8> {
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
    .expect("a json! value serialises")
}

fn build_payloads(run_id: &str) -> Arc<[Payload]> {
    (0..BODY_POOL)
        .map(|i| {
            let body = message_new(
                &format!("bench-{run_id}-m{i}"),
                &format!("user-{}", i % 37),
                TEXTS[(i % TEXTS.len() as u64) as usize],
            );
            let signature = HeaderValue::from_str(&signature::sign(SECRET.as_bytes(), &body))
                .expect("a hex signature is a valid header value");
            Payload {
                body: Bytes::from(body),
                signature,
            }
        })
        .collect()
}

/// How one request ended.
enum Outcome {
    Ok,
    Status(u16),
    Error(String),
}

/// Sends to one target.
struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    payloads: Arc<[Payload]>,
    /// Prefix of every webhook id, unique per run and target.
    prefix: String,
}

impl Sender {
    async fn send(&self, n: u64, webhook_id: String) -> Outcome {
        let p = &self.payloads[(n % self.payloads.len() as u64) as usize];
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(X_API_KEY, HeaderValue::from_static(API_KEY))
            .header(X_SIGNATURE, p.signature.clone())
            .header(X_WEBHOOK_ID, webhook_id)
            .header(X_WEBHOOK_ATTEMPT, HeaderValue::from_static("1"))
            .body(p.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Error(error_chain(&e)),
        };
        let status = response.status();
        match response.bytes().await {
            Err(e) => Outcome::Error(error_chain(&e)),
            Ok(_) if status.is_success() => Outcome::Ok,
            Ok(_) => Outcome::Status(status.as_u16()),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Counts and latencies of one phase.
#[derive(Default)]
struct Tally {
    ok: u64,
    non_2xx: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    /// Latencies of 2xx responses, microseconds; sorted by `finish`.
    latencies_us: Vec<u64>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                self.latencies_us
                    .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
            }
            Outcome::Status(code) => *self.non_2xx.entry(code).or_default() += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (code, n) in other.non_2xx {
            *self.non_2xx.entry(code).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    fn finish(&mut self) {
        self.latencies_us.sort_unstable();
    }

    fn non_2xx_total(&self) -> u64 {
        self.non_2xx.values().sum()
    }

    fn requests(&self) -> u64 {
        self.ok + self.non_2xx_total() + self.errors
    }

    /// Nearest-rank percentile in ms, or "–" with no samples.
    fn pct(&self, p: f64) -> String {
        let n = self.latencies_us.len();
        if n == 0 {
            return "–".into();
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        ms(self.latencies_us[rank.clamp(1, n) - 1])
    }

    fn max(&self) -> String {
        self.latencies_us.last().map_or("–".into(), |&us| ms(us))
    }

    /// "401×3, 503×2" and the first transport error, if any.
    fn problems(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .non_2xx
            .iter()
            .map(|(code, n)| format!("HTTP {code} ×{n}"))
            .collect();
        if let Some(e) = &self.first_error {
            parts.push(format!("{} errors, first: {e}", self.errors));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn per_sec(n: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

// ── targets ─────────────────────────────────────────────────────────────────────────────────────

/// What has to be removed when a target stops.
enum Db {
    None,
    /// The SQLite file lives (and goes) with this directory.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        admin: String,
        name: String,
    },
}

/// A target listening on loopback.
struct Running {
    addr: SocketAddr,
    services: Option<Services>,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    db: Db,
}

impl Running {
    /// Stops the server (and worker) and removes the database.
    async fn stop(self) {
        self.token.cancel();
        let stopping = Instant::now();
        match tokio::time::timeout(STOP_LIMIT, self.task).await {
            Ok(Ok(Ok(()))) => eprintln!("  stopped in {:.2} s", stopping.elapsed().as_secs_f64()),
            Ok(Ok(Err(e))) => eprintln!("  note: target stopped with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("  note: target task failed: {e}"),
            Err(_) => eprintln!("  note: target did not stop within {STOP_LIMIT:?}"),
        }
        if let Db::Postgres { admin, name } = &self.db {
            drop_pg_database(admin, name).await;
        }
    }
}

async fn start_bare() -> anyhow::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the bare server to 127.0.0.1:0")?;
    let addr = listener.local_addr().context("bare server address")?;
    let router = Router::new().route(
        "/webhooks/stream",
        post(|_body: Bytes| async { StatusCode::OK }),
    );
    let token = CancellationToken::new();
    let stop = token.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("bare server")
    });
    Ok(Running {
        addr,
        services: None,
        token,
        task,
        db: Db::None,
    })
}

/// The app's configuration: the bench's own settings, then any `CHATGUARD_<SECTION>__<KEY>` from
/// the environment (e.g. `CHATGUARD_QUEUE__CONCURRENCY=4`) so that settings can be compared.
fn app_config(db_url: &str) -> anyhow::Result<Config> {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut env: Vec<(String, String)> = [
        ("CHATGUARD_DATABASE_URL", db_url.to_owned()),
        ("CHATGUARD_LISTEN", "127.0.0.1:0".to_owned()),
        ("CHATGUARD_RULES", rules.display().to_string()),
        ("STREAM_API_KEY", API_KEY.to_owned()),
        ("STREAM_API_SECRET", SECRET.to_owned()),
        ("CHATGUARD_TELEMETRY__LOG_FILTER", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(std::env::vars().filter(|(k, _)| k.starts_with("CHATGUARD_") && k.contains("__")));
    Config::load_from(None, env).context("building the chatguard config")
}

async fn start_app(db_url: &str, db: Db) -> anyhow::Result<Running> {
    let config = match app_config(db_url) {
        Ok(c) => c,
        Err(e) => return Err(cleanup_on_error(e, db).await),
    };
    // Warnings and errors from the app (and sqlx's slow-statement notes) go to stderr.
    chatguard::telemetry::init_logs(&config.telemetry);
    let app = match App::serve(config).await {
        Ok(app) => app,
        Err(e) => {
            return Err(
                cleanup_on_error(anyhow::Error::new(e).context("starting chatguard"), db).await,
            );
        }
    };
    let Some(addr) = app.local_addr() else {
        return Err(cleanup_on_error(anyhow::anyhow!("chatguard has no listen address"), db).await);
    };
    let services = app.services().clone();
    let token = app.shutdown_token();
    let task = tokio::spawn(async move {
        app.run_until_stopped()
            .await
            .context("chatguard run_until_stopped")
    });
    Ok(Running {
        addr,
        services: Some(services),
        token,
        task,
        db,
    })
}

async fn cleanup_on_error(e: anyhow::Error, db: Db) -> anyhow::Error {
    if let Db::Postgres { admin, name } = &db {
        drop_pg_database(admin, name).await;
    }
    e
}

async fn start_sqlite() -> anyhow::Result<Running> {
    let dir = tempfile::tempdir().context("creating a temp dir for the SQLite database")?;
    let url = format!("sqlite:{}", dir.path().join("bench.db").display());
    start_app(&url, Db::Sqlite(dir)).await
}

async fn start_postgres(admin: &str) -> anyhow::Result<Running> {
    let name = format!("chatguard_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(admin)
        .await
        .context("connecting to TEST_POSTGRES_URL")?;
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&pool)
        .await;
    pool.close().await;
    created.with_context(|| format!("creating database {name}"))?;
    // Same server and options, another database.
    let (without_query, query) = match admin.split_once('?') {
        Some((a, q)) => (a, format!("?{q}")),
        None => (admin, String::new()),
    };
    let base = without_query
        .rsplit_once('/')
        .map_or(without_query, |(b, _)| b);
    let url = format!("{base}/{name}{query}");
    start_app(
        &url,
        Db::Postgres {
            admin: admin.to_owned(),
            name,
        },
    )
    .await
}

async fn drop_pg_database(admin: &str, name: &str) {
    let dropped = async {
        let pool = sqlx::PgPool::connect(admin).await?;
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .execute(&pool)
        .await;
        pool.close().await;
        r.map(|_| ())
    };
    match tokio::time::timeout(STOP_LIMIT, dropped).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("  note: could not drop database {name}: {e}"),
        Err(_) => eprintln!("  note: dropping database {name} timed out"),
    }
}

// ── phases ──────────────────────────────────────────────────────────────────────────────────────

/// Opens connections and warms the app with [`WARMUP_REQUESTS`] webhooks from
/// [`WARMUP_CONCURRENCY`] senders, then waits until they are decided; fails if any was refused.
async fn warm_up(sender: &Arc<Sender>, services: Option<&Services>) -> anyhow::Result<()> {
    let baseline = match services {
        Some(s) => Some(count_decisions(s).await?),
        None => None,
    };
    let per_task = WARMUP_REQUESTS / WARMUP_CONCURRENCY;
    let handles: Vec<_> = (0..WARMUP_CONCURRENCY)
        .map(|t| {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for i in 0..per_task {
                    let start = Instant::now();
                    let id = format!("{}-warm-{t}-{i}", sender.prefix);
                    let outcome = sender.send(t * per_task + i, id).await;
                    tally.record(outcome, start.elapsed());
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(h.await.context("warm-up sender panicked")?);
    }
    if let Some(problems) = tally.problems() {
        bail!("warm-up requests were refused: {problems}");
    }
    if let (Some(s), Some(base)) = (services, baseline) {
        let want = base + i64::try_from(tally.ok).unwrap_or(i64::MAX);
        match wait_decided(s, want, Instant::now()).await {
            Drain::Done { .. } => {}
            other => bail!("the worker did not decide the warm-up webhooks: {other}"),
        }
    }
    Ok(())
}

async fn count_decisions(services: &Services) -> anyhow::Result<i64> {
    services
        .store
        .count_decisions()
        .await
        .context("counting decisions")
}

/// How long the worker took, after the load stopped, to decide every accepted webhook.
enum Drain {
    Done {
        after: Duration,
        decided: i64,
        want: i64,
    },
    TimedOut {
        decided: i64,
        want: i64,
    },
    Error(String),
}

impl fmt::Display for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drain::Done {
                after,
                decided,
                want,
            } => write!(f, "{:.2} s ({decided}/{want} decided)", after.as_secs_f64()),
            Drain::TimedOut { decided, want } => write!(
                f,
                "not within {} s ({decided} of {want} decided)",
                DRAIN_LIMIT.as_secs()
            ),
            Drain::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Polls until the decision count reaches `want`, for at most [`DRAIN_LIMIT`] from now.
async fn wait_decided(services: &Services, want: i64, load_end: Instant) -> Drain {
    let limit = Instant::now() + DRAIN_LIMIT;
    loop {
        let decided = match services.store.count_decisions().await {
            Ok(n) => n,
            Err(e) => return Drain::Error(e.to_string()),
        };
        if decided >= want {
            return Drain::Done {
                after: load_end.elapsed(),
                decided,
                want,
            };
        }
        if Instant::now() >= limit {
            return Drain::TimedOut { decided, want };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Samples the queue depth every [`DEPTH_SAMPLE_EVERY`] until stopped (or `limit` passes);
/// returns the largest depth seen and how many samples failed.
fn spawn_depth_sampler(
    queue: Arc<dyn JobQueue>,
    stop: CancellationToken,
    limit: Duration,
) -> JoinHandle<(Option<i64>, u64)> {
    tokio::spawn(async move {
        let until = Instant::now() + limit;
        let mut tick = tokio::time::interval(DEPTH_SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut max, mut failed) = (None::<i64>, 0u64);
        while Instant::now() < until {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match queue.depth().await {
                Ok(d) => max = Some(max.map_or(d, |m| m.max(d))),
                Err(_) => failed += 1,
            }
        }
        (max, failed)
    })
}

struct QueueStats {
    max_depth: Option<i64>,
    end_depth: Option<i64>,
    failed_samples: u64,
    drain: Drain,
}

struct OpenResult {
    tally: Tally,
    sent: u64,
    /// From the first intended send to the last actual one.
    send_window: Duration,
    /// From the first intended send to the last response.
    load_window: Duration,
    /// Largest delay between a request's intended and actual spawn (client saturation).
    max_send_lag: Duration,
    queue: Option<QueueStats>,
}

async fn open_loop(
    sender: &Arc<Sender>,
    services: Option<&Services>,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<OpenResult> {
    let total = rate * seconds;
    let baseline = match services {
        Some(s) => Some(count_decisions(s).await?),
        None => None,
    };
    let stop_sampling = CancellationToken::new();
    // Bounded: the phase, every request's timeout, and a margin.
    let sampler = services.map(|s| {
        spawn_depth_sampler(
            s.queue.clone(),
            stop_sampling.clone(),
            Duration::from_secs(seconds) + REQUEST_TIMEOUT + Duration::from_secs(10),
        )
    });
    let slots = Arc::new(Semaphore::new(OPEN_LOOP_MAX_IN_FLIGHT));
    let t0 = Instant::now() + Duration::from_millis(10);
    let mut max_send_lag = Duration::ZERO;
    let mut handles = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let intended = t0 + Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = Instant::now();
        if intended > now {
            tokio::time::sleep_until(intended).await;
        } else {
            max_send_lag = max_send_lag.max(now - intended);
        }
        let sender = sender.clone();
        let slots = slots.clone();
        handles.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let id = format!("{}-open-{i}", sender.prefix);
            let outcome = sender.send(i, id).await;
            // From the intended send time: waiting for the client to get round to it counts.
            (outcome, intended.elapsed())
        }));
    }
    let send_window = t0.elapsed();
    let mut tally = Tally::default();
    for h in handles {
        let (outcome, latency) = h.await.context("open-loop request task panicked")?;
        tally.record(outcome, latency);
    }
    tally.finish();
    let load_end = Instant::now();
    let load_window = load_end - t0;

    let queue = match (services, sampler) {
        (Some(s), Some(sampler)) => {
            let end_depth = s.queue.depth().await.ok();
            stop_sampling.cancel();
            let (max_depth, failed_samples) = sampler.await.unwrap_or((None, 0));
            let max_depth = match (max_depth, end_depth) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let want = baseline.unwrap_or(0) + i64::try_from(tally.ok).unwrap_or(i64::MAX);
            let drain = wait_decided(s, want, load_end).await;
            Some(QueueStats {
                max_depth,
                end_depth,
                failed_samples,
                drain,
            })
        }
        _ => None,
    };
    Ok(OpenResult {
        tally,
        sent: total,
        send_window,
        load_window,
        max_send_lag,
        queue,
    })
}

struct ClosedResult {
    tally: Tally,
    elapsed: Duration,
    end_depth: Option<i64>,
}

async fn closed_loop(
    sender: &Arc<Sender>,
    services: Option<&Services>,
    concurrency: u64,
    seconds: u64,
) -> anyhow::Result<ClosedResult> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..concurrency)
        .map(|t| {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut i = 0u64;
                while i < CLOSED_LOOP_MAX_PER_SENDER && Instant::now() < deadline {
                    let sent_at = Instant::now();
                    let id = format!("{}-closed-{t}-{i}", sender.prefix);
                    let outcome = sender.send(t.wrapping_mul(7919).wrapping_add(i), id).await;
                    tally.record(outcome, sent_at.elapsed());
                    i += 1;
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(h.await.context("closed-loop sender panicked")?);
    }
    tally.finish();
    let elapsed = start.elapsed();
    let end_depth = match services {
        Some(s) => s.queue.depth().await.ok(),
        None => None,
    };
    Ok(ClosedResult {
        tally,
        elapsed,
        end_depth,
    })
}

struct TargetResult {
    kind: TargetKind,
    open: OpenResult,
    closed: ClosedResult,
}

async fn run_target(
    kind: TargetKind,
    target: &Running,
    client: &reqwest::Client,
    payloads: &Arc<[Payload]>,
    run_id: &str,
    args: &Args,
) -> anyhow::Result<TargetResult> {
    let url = reqwest::Url::parse(&format!("http://{}/webhooks/stream", target.addr))
        .context("target URL")?;
    if !url
        .host_str()
        .is_some_and(|h| h == "127.0.0.1" || h == "[::1]")
    {
        bail!("refusing to send to {url}: only loopback targets");
    }
    let sender = Arc::new(Sender {
        client: client.clone(),
        url,
        payloads: payloads.clone(),
        prefix: format!("bench-{run_id}-{kind}"),
    });
    let services = target.services.as_ref();
    eprintln!("  warm-up: {WARMUP_REQUESTS} requests");
    warm_up(&sender, services).await?;
    eprintln!("  open loop: {} events/s for {} s", args.rate, args.seconds);
    let open = open_loop(&sender, services, args.rate, args.seconds).await?;
    eprintln!(
        "  closed loop: {} senders for {} s",
        args.concurrency, args.seconds
    );
    let closed = closed_loop(&sender, services, args.concurrency, args.seconds).await?;
    Ok(TargetResult { kind, open, closed })
}

// ── report ──────────────────────────────────────────────────────────────────────────────────────

fn opt(v: Option<i64>) -> String {
    v.map_or("–".into(), |d| d.to_string())
}

fn print_report(args: &Args, results: &[TargetResult], skipped: &[String]) {
    println!();
    println!(
        "### Open loop: {} events/s for {} s",
        args.rate, args.seconds
    );
    println!();
    println!(
        "Latency runs from each request's *intended* send time (fixed schedule) to the end of its \
         2xx response, so time spent queued behind a slow server or a busy client counts \
         (no coordinated omission). At most {OPEN_LOOP_MAX_IN_FLIGHT} requests are in flight. \
         Queue depth is sampled every {} ms; the last column is the time from the last response \
         until the decision log holds a decision for every accepted webhook (counts include the \
         {WARMUP_REQUESTS} warm-up webhooks; bounded at {} s).",
        DEPTH_SAMPLE_EVERY.as_millis(),
        DRAIN_LIMIT.as_secs()
    );
    println!();
    println!(
        "| target | sent | sent/s | ok | non-2xx | errors | ok/s | p50 ms | p90 ms | p99 ms | max ms | max send lag ms | max queue depth | queue depth at end | all decided after load stopped |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in results {
        let o = &r.open;
        let (max_depth, end_depth, drain) = match &o.queue {
            Some(q) => (opt(q.max_depth), opt(q.end_depth), q.drain.to_string()),
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.kind,
            o.sent,
            per_sec(o.sent, o.send_window),
            o.tally.ok,
            o.tally.non_2xx_total(),
            o.tally.errors,
            per_sec(o.tally.ok, o.load_window),
            o.tally.pct(50.0),
            o.tally.pct(90.0),
            o.tally.pct(99.0),
            o.tally.max(),
            ms(u64::try_from(o.max_send_lag.as_micros()).unwrap_or(u64::MAX)),
            max_depth,
            end_depth,
            drain,
        );
    }
    println!();
    println!(
        "### Closed loop: {} senders back to back for {} s",
        args.concurrency, args.seconds
    );
    println!();
    println!(
        "| target | requests | ok | non-2xx | errors | req/s (2xx) | p50 ms | p99 ms | max ms | queue depth at end |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let c = &r.closed;
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.kind,
            c.tally.requests(),
            c.tally.ok,
            c.tally.non_2xx_total(),
            c.tally.errors,
            per_sec(c.tally.ok, c.elapsed),
            c.tally.pct(50.0),
            c.tally.pct(99.0),
            c.tally.max(),
            opt(c.end_depth),
        );
    }
    println!();

    let bare = results.iter().find(|r| r.kind == TargetKind::Bare);
    let bare_rps = bare.map(|b| per_sec(b.closed.tally.ok, b.closed.elapsed));
    for r in results.iter().filter(|r| r.kind != TargetKind::Bare) {
        let rps = per_sec(r.closed.tally.ok, r.closed.elapsed);
        let p99 = r.open.tally.pct(99.0);
        match (bare, bare_rps) {
            (Some(b), Some(b_rps)) if b_rps > 0.0 => println!(
                "- **{}**: closed-loop req/s ÷ bare = {:.3} ({rps:.0} / {b_rps:.0}); \
                 open-loop p99 = {p99} ms (bare {} ms)",
                r.kind,
                rps / b_rps,
                b.open.tally.pct(99.0),
            ),
            _ => println!(
                "- **{}**: closed-loop {rps:.0} req/s, open-loop p99 = {p99} ms \
                 (no ratio: bare was not run)",
                r.kind,
            ),
        }
    }
    for s in skipped {
        println!("- {s}");
    }

    let mut notes = Vec::new();
    for r in results {
        if let Some(p) = r.open.tally.problems() {
            notes.push(format!("{} open loop: {p}", r.kind));
        }
        if let Some(p) = r.closed.tally.problems() {
            notes.push(format!("{} closed loop: {p}", r.kind));
        }
        if let Some(q) = &r.open.queue
            && q.failed_samples > 0
        {
            notes.push(format!(
                "{}: {} queue-depth samples failed",
                r.kind, q.failed_samples
            ));
        }
    }
    if !notes.is_empty() {
        println!();
        println!("Problems:");
        for n in notes {
            println!("- {n}");
        }
    }
}

// ── main ────────────────────────────────────────────────────────────────────────────────────────

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut targets: Vec<TargetKind> = Vec::new();
    for t in &args.targets {
        if !targets.contains(t) {
            targets.push(*t);
        }
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "debug (debug_assertions on)"
    } else {
        "release"
    };

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let payloads = build_payloads(&run_id);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;

    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for kind in targets {
        let started = match kind {
            TargetKind::Bare => start_bare().await,
            TargetKind::Sqlite => start_sqlite().await,
            TargetKind::Postgres => match std::env::var("TEST_POSTGRES_URL") {
                Ok(url) if !url.is_empty() => start_postgres(&url).await,
                _ => {
                    let note = "postgres: skipped (TEST_POSTGRES_URL is not set)".to_owned();
                    eprintln!("{note}");
                    skipped.push(note);
                    continue;
                }
            },
        };
        let target = started.with_context(|| format!("starting target {kind}"))?;
        eprintln!("{kind}: listening on {}", target.addr);
        let result = run_target(kind, &target, &client, &payloads, &run_id, &args).await;
        target.stop().await;
        results.push(result.with_context(|| format!("target {kind}"))?);
    }

    println!();
    println!("## chatguard ingest load");
    println!();
    println!(
        "Machine: {nproc} CPUs (available_parallelism); build profile: {profile}. \
         Client, servers, worker and any local PostgreSQL share these CPUs. \
         Webhooks: signed `message.new`, {BODY_POOL} pre-built bodies over {} texts, a unique \
         X-Webhook-Id each, one keep-alive reqwest client over 127.0.0.1.",
        TEXTS.len()
    );
    print_report(&args, &results, &skipped);
    Ok(())
}
