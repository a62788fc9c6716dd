//! Review-queue list latency with 100k items (measurement, ignored).
//!
//! Seeds events, decisions and review items with bulk inserts (before the app starts), then times
//! `GET /api/v1/review-items` over loopback for the listings moderators use and prints p50, p99
//! and max per listing. Every response is checked against the page computed from the seed data.
//!
//! ```sh
//! REVIEW_LOAD_ITEMS=5000 cargo test --test api review_load -- --ignored --nocapture   # try it
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo test --release --test api review_load -- --ignored --nocapture          # measure
//! ```
//!
//! `REVIEW_LOAD_ITEMS` (100000) sets the number of items and `REVIEW_LOAD_REQUESTS` (200) the
//! requests per listing. `REVIEW_LOAD_KEEP=1` keeps a copy of the seeded database for EXPLAIN
//! (a file in the temp dir on SQLite, database `review_load_keep` on PostgreSQL; drop it after).
//!
//! `both_backends!` cannot mark its tests ignored, so its two tests are spelled out here.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Instant;

use chatguard::store::{Db, Role, Store};
use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::helpers::*;

/// Rows per INSERT statement.
const BATCH: usize = 1_000;
const PAGE: usize = 50;
/// Pages per cursor walk.
const WALK_PAGES: usize = 20;
const CHANNELS: usize = 50;
const USERS: usize = 5_000;
const CATEGORIES: [&str; 3] = ["toxicity", "spam", "explicit"];
const RESOLUTIONS: [&str; 4] = ["approve", "remove", "ban", "dismiss"];
const WORDS: [&str; 12] = [
    "buy",
    "cheap",
    "followers",
    "now",
    "you",
    "are",
    "such",
    "an",
    "idiot",
    "click",
    "here",
    "free",
];

/// The two backends take turns: measuring one while the other seeds would skew both.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn list_latency_sqlite() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    list_latency(&db, Backend::Sqlite).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn list_latency_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    list_latency(&db, Backend::Postgres).await;
    db.cleanup().await;
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// One seeded review item (with its event and decision, which share its id).
pub(crate) struct Seed {
    id: i64,
    category: &'static str,
    decision: &'static str,
    channel: usize,
    user: usize,
    scores: [f64; 3],
    score: f64,
    created_at: DateTime<Utc>,
    status: &'static str,
    claim_expires_at: Option<DateTime<Utc>>,
    resolution: Option<&'static str>,
    resolved_at: Option<DateTime<Utc>>,
    text: String,
}

fn cid(channel: usize) -> String {
    format!("messaging:room-{channel}")
}

fn user(user: usize) -> String {
    format!("u-load-{user}")
}

/// Items spread over the last 30 days (ids ascending with time, as the worker writes them),
/// 80% open, 5% claimed (half of the claims expired), 15% resolved.
pub(crate) fn generate(n: usize, now: DateTime<Utc>) -> Vec<Seed> {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let start = now - Duration::days(30);
    let step_ms = Duration::days(30).num_milliseconds() / n as i64;
    (0..n)
        .map(|i| {
            let jitter = rng.random_range(0..step_ms.clamp(1, 20_000));
            let created_at = (start + Duration::milliseconds(step_ms * i as i64 + jitter))
                .min(now - Duration::seconds(1));
            let c = match rng.random_range(0..100) {
                0..45 => 0,
                45..80 => 1,
                _ => 2,
            };
            let score = 0.5 + 0.5 * rng.random::<f64>();
            let mut scores = [0.0; 3];
            for (k, s) in scores.iter_mut().enumerate() {
                // The other two stay below the top score, so the category is the top one.
                *s = if k == c {
                    score
                } else {
                    score * 0.99 * rng.random::<f64>()
                };
            }
            let (status, claim_expires_at, resolution, resolved_at) = match rng.random_range(0..100)
            {
                0..80 => ("open", None, None, None),
                80..85 => {
                    let until = if rng.random_bool(0.5) {
                        now - Duration::hours(2)
                    } else {
                        now + Duration::days(1)
                    };
                    ("claimed", Some(until), None, None)
                }
                _ => {
                    let at = (created_at + Duration::minutes(rng.random_range(1..2_880))).min(now);
                    let r = RESOLUTIONS[rng.random_range(0..RESOLUTIONS.len())];
                    ("resolved", None, Some(r), Some(at))
                }
            };
            let words = rng.random_range(4..14);
            let text = (0..words)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ");
            Seed {
                id: i as i64 + 1,
                category: CATEGORIES[c],
                decision: if rng.random_bool(0.25) {
                    "block"
                } else {
                    "flag"
                },
                channel: rng.random_range(0..CHANNELS),
                user: rng.random_range(0..USERS),
                scores,
                score,
                created_at,
                status,
                claim_expires_at,
                resolution,
                resolved_at,
                text,
            }
        })
        .collect()
}

/// A timestamp literal, spelled as sqlx binds a `DateTime<Utc>` on SQLite (so that text
/// comparisons there agree with the app's parameters); PostgreSQL casts it to timestamptz.
fn t(at: DateTime<Utc>) -> String {
    format!("'{}'", at.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

fn opt_t(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "null".to_owned(), t)
}

/// Multi-row INSERTs of `BATCH` rows: events, then decisions, then review items (the FK order).
fn insert_statements(items: &[Seed]) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in items.chunks(BATCH) {
        let mut ev = String::from(
            "insert into events (id, webhook_id, api_key, event_type, status, message_id, cid, \
             user_id, payload, received_at, updated_at) values ",
        );
        let mut de = String::from(
            "insert into decisions (id, event_id, webhook_id, event_type, message_id, cid, user_id, \
             text, toxicity, spam, explicit, matched_rules, reasons, decision, policy_version, \
             action, action_status, dry_run, worker, received_at, decided_at) values ",
        );
        let mut ri = String::from(
            "insert into review_items (id, message_id, decision_id, first_decision_id, status, \
             category, decision, toxicity, spam, explicit, score, text, cid, user_id, reasons, \
             rule_ids, action_status, flags, claimed_by, claim_expires_at, resolved_by, resolution, \
             note, created_at, updated_at, resolved_at) values ",
        );
        for (k, s) in chunk.iter().enumerate() {
            let sep = if k == 0 { "" } else { "," };
            let (id, at) = (s.id, t(s.created_at));
            let (cid, user) = (cid(s.channel), user(s.user));
            let [tox, spam, expl] = s.scores;
            let reasons = format!(r#"["{} {:.2}"]"#, s.category, s.score);
            let rules = format!(r#"["{}-{}"]"#, s.category, id % 7);
            let action = if s.decision == "block" {
                "delete"
            } else {
                "flag"
            };
            let updated = t(s.resolved_at.unwrap_or(s.created_at));
            let claimed_by = if s.status == "claimed" {
                "'mod-load'"
            } else {
                "null"
            };
            let resolved_by = if s.status == "resolved" {
                "'mod-load'"
            } else {
                "null"
            };
            let resolution = s
                .resolution
                .map_or_else(|| "null".to_owned(), |r| format!("'{r}'"));
            write!(
                ev,
                "{sep}({id}, 'w-load-{id}', 'test-key', 'message.new', 'decided', 'm-load-{id}', \
                 '{cid}', '{user}', '{{}}', {at}, {at})"
            )
            .unwrap();
            write!(
                de,
                "{sep}({id}, {id}, 'w-load-{id}', 'message.new', 'm-load-{id}', '{cid}', '{user}', \
                 '{text}', {tox}, {spam}, {expl}, '{rules}', '{reasons}', '{decision}', 'load', \
                 '{action}', 'done', false, 'load', {at}, {at})",
                text = s.text,
                decision = s.decision,
            )
            .unwrap();
            write!(
                ri,
                "{sep}({id}, 'm-load-{id}', {id}, {id}, '{status}', '{category}', '{decision}', \
                 {tox}, {spam}, {expl}, {score}, '{text}', '{cid}', '{user}', '{reasons}', \
                 '{rules}', 'done', 1, {claimed_by}, {claim}, {resolved_by}, {resolution}, null, \
                 {at}, {updated}, {resolved})",
                status = s.status,
                category = s.category,
                decision = s.decision,
                score = s.score,
                text = s.text,
                claim = opt_t(s.claim_expires_at),
                resolved = opt_t(s.resolved_at),
            )
            .unwrap();
        }
        out.extend([ev, de, ri]);
    }
    out
}

/// Runs `stmts` in one transaction on `pool`.
macro_rules! run_in_tx {
    ($pool:expr, $stmts:expr) => {{
        let mut tx = $pool.begin().await.expect("begin");
        for s in $stmts {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                .execute(&mut *tx)
                .await
                .expect("seed insert");
        }
        tx.commit().await.expect("commit");
    }};
}

/// Migrates the test database and seeds it through the store's own pool, before the app runs.
pub(crate) async fn seed(db: &TestDb, items: &[Seed]) {
    let store = Store::connect(&db.url, 2).await.expect("connect");
    store.migrate().await.expect("migrate");
    let started = Instant::now();
    let stmts = insert_statements(items);
    let built = started.elapsed();
    match store.db() {
        Db::Sqlite(pool) => run_in_tx!(pool, stmts),
        Db::Postgres(pool) => {
            let mut after = Vec::new();
            // Explicit ids leave the sequences behind; move them past the seed.
            for table in ["events", "decisions", "review_items"] {
                after.push(format!(
                    "select setval(pg_get_serial_sequence('{table}', 'id'), \
                     (select max(id) from {table}))"
                ));
            }
            run_in_tx!(pool, stmts.into_iter().chain(after))
        }
    }
    eprintln!(
        "seeded {} review items (+ as many events and decisions) in {:.2} s ({:.2} s building SQL)",
        items.len(),
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    if let Db::Postgres(pool) = store.db() {
        // Autovacuum analyzes a table this size soon after a bulk load; do it now, as it would be.
        let t0 = Instant::now();
        sqlx::raw_sql("analyze events; analyze decisions; analyze review_items")
            .execute(pool)
            .await
            .expect("analyze");
        eprintln!("analyze: {:.2} s", t0.elapsed().as_secs_f64());
    }
    if std::env::var_os("REVIEW_LOAD_KEEP").is_some()
        && let Db::Sqlite(pool) = store.db()
    {
        let path = std::env::temp_dir().join(format!("review_load_{}.db", items.len()));
        let _ = std::fs::remove_file(&path);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "vacuum into '{}'",
            path.display()
        )))
        .execute(pool)
        .await
        .expect("vacuum into");
        eprintln!("kept a copy in {}", path.display());
    }
    store.close().await;
    if std::env::var_os("REVIEW_LOAD_KEEP").is_some() && !db.url.starts_with("sqlite:") {
        let admin = postgres_url().expect("admin url");
        let name = db.url.rsplit_once('/').map(|(_, n)| n).expect("db name");
        let pool = sqlx::PgPool::connect(&admin).await.expect("admin connect");
        // One statement each: neither may run inside a (multi-statement) transaction.
        for sql in [
            "drop database if exists review_load_keep".to_owned(),
            format!("create database review_load_keep template {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("copy database");
        }
        pool.close().await;
        eprintln!("kept a copy as database review_load_keep");
    }
}

#[derive(Clone, Copy)]
enum Sort {
    Newest,
    Oldest,
    Score,
}

/// Ids of every seeded item that `keep` accepts, in the listing's order.
fn expected(items: &[Seed], keep: &dyn Fn(&Seed) -> bool, sort: Sort) -> Vec<i64> {
    let mut hits: Vec<&Seed> = items.iter().filter(|s| keep(s)).collect();
    match sort {
        Sort::Newest => hits.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id))),
        Sort::Oldest => hits.sort_by_key(|s| (s.created_at, s.id)),
        Sort::Score => hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.id.cmp(&a.id))),
    }
    hits.into_iter().map(|s| s.id).collect()
}

/// The status the API filters on: an expired claim counts as open.
fn open_now(s: &Seed) -> bool {
    s.status == "open"
        || (s.status == "claimed" && s.claim_expires_at.is_some_and(|t| t <= Utc::now()))
}

struct Page {
    ms: f64,
    bytes: usize,
    ids: Vec<i64>,
    next: Option<String>,
}

/// One timed request (send to last body byte); the body is parsed after the clock stops.
async fn get_page(app: &TestApp, token: &str, params: &[(&str, String)]) -> Page {
    let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/review-items", app.url), params)
        .expect("url");
    let t0 = Instant::now();
    let res = app
        .client
        .get(url.clone())
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    let status = res.status();
    let body = res.bytes().await.expect("body");
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(
        status,
        200,
        "{url}: {}",
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );
    let v: Value = serde_json::from_slice(&body).expect("json");
    let ids = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    Page {
        ms,
        bytes: body.len(),
        ids,
        next: v["next_cursor"].as_str().map(str::to_owned),
    }
}

/// Latencies of one listing.
struct Stat {
    query: String,
    ms: Vec<f64>,
    items: usize,
    bytes: usize,
}

impl Stat {
    fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            ms: Vec::new(),
            items: 0,
            bytes: 0,
        }
    }

    fn add(&mut self, p: &Page) {
        self.ms.push(p.ms);
        self.items += p.ids.len();
        self.bytes += p.bytes;
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }
}

/// A filtered listing: its query string, which seeded items match, and its order.
struct Case {
    name: String,
    params: Vec<(&'static str, String)>,
    keep: Box<dyn Fn(&Seed) -> bool>,
    sort: Sort,
}

fn case(
    name: &str,
    params: &[(&'static str, String)],
    sort: Sort,
    keep: impl Fn(&Seed) -> bool + 'static,
) -> Case {
    Case {
        name: name.to_owned(),
        params: params.to_vec(),
        keep: Box::new(keep),
        sort,
    }
}

async fn list_latency(db: &TestDb, backend: Backend) {
    let _turn = SERIAL.lock().await;
    let n = env_usize("REVIEW_LOAD_ITEMS", 100_000);
    let requests = env_usize("REVIEW_LOAD_REQUESTS", 200).max(WALK_PAGES);
    assert!(
        n >= 2 * PAGE * WALK_PAGES,
        "REVIEW_LOAD_ITEMS must be at least {}",
        2 * PAGE * WALK_PAGES
    );
    let backend_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    eprintln!("\n== {backend_name}: {n} review items, {requests} requests per listing");

    // Microseconds, as PostgreSQL keeps them.
    let now = Utc::now().trunc_subsecs(6);
    let items = generate(n, now);
    seed(db, &items).await;

    let app = TestApp::spawn(config(&db.url, &[])).await;
    let (_, token) = app
        .store()
        .create_token("load-viewer", Role::Viewer, Utc::now())
        .await
        .unwrap()
        .unwrap();

    // The busiest user, so that the user listing has the most to show.
    let mut per_user = vec![0usize; USERS];
    for s in &items {
        per_user[s.user] += 1;
    }
    let busiest = (0..USERS).max_by_key(|&u| (per_user[u], u)).unwrap();
    let channel = 7;
    let after = now - Duration::days(15);
    let cases = vec![
        case("default (newest)", &[], Sort::Newest, |_| true),
        case(
            "status=open&category=spam",
            &[("status", "open".into()), ("category", "spam".into())],
            Sort::Newest,
            |s| open_now(s) && s.category == "spam",
        ),
        case(
            "min_score=0.9",
            &[("min_score", "0.9".into())],
            Sort::Newest,
            |s| s.score >= 0.9,
        ),
        case(
            &format!("user=<one user> ({} items)", per_user[busiest]),
            &[("user", user(busiest))],
            Sort::Newest,
            move |s| s.user == busiest,
        ),
        case(
            "channel=<one cid>",
            &[("channel", cid(channel))],
            Sort::Newest,
            move |s| s.channel == channel,
        ),
        case(
            "created_after=<15 days ago>",
            &[(
                "created_after",
                after.to_rfc3339_opts(SecondsFormat::Millis, true),
            )],
            Sort::Newest,
            move |s| s.created_at >= after,
        ),
        case(
            "sort=score",
            &[("sort", "score".into())],
            Sort::Score,
            |_| true,
        ),
        case(
            "decision=block&sort=oldest",
            &[("decision", "block".into()), ("sort", "oldest".into())],
            Sort::Oldest,
            |s| s.decision == "block",
        ),
    ];

    // Warm-up: connections, statement caches, the database's pages.
    for _ in 0..50 {
        get_page(&app, &token, &[]).await;
    }

    let mut stats = Vec::new();
    for c in &cases {
        let want = expected(&items, &*c.keep, c.sort);
        assert!(
            !want.is_empty(),
            "{}: the seed has no matching item",
            c.name
        );
        let first: Vec<i64> = want.iter().copied().take(PAGE).collect();
        let mut stat = Stat::new(&c.name);
        for round in 0..5 + requests {
            let page = get_page(&app, &token, &c.params).await;
            assert_eq!(page.ids, first, "{}: first page", c.name);
            assert_eq!(page.next.is_some(), want.len() > PAGE, "{}: cursor", c.name);
            if round >= 5 {
                stat.add(&page);
            }
        }
        stats.push(stat);
    }

    // Cursor walks over the default listing: per-page latency while following next_cursor.
    let newest = expected(&items, &|_| true, Sort::Newest);
    let mut walk = Stat::new(format!("cursor walk, pages 1-{WALK_PAGES} (per page)"));
    let walks = requests / WALK_PAGES;
    let mut last = Stat::new(format!("page {WALK_PAGES} in the walks ({walks} samples)"));
    let mut page20_cursor = None;
    for _ in 0..walks {
        let mut seen = HashSet::new();
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        for page_no in 1..=WALK_PAGES {
            let mut params = Vec::new();
            if let Some(c) = &cursor {
                params.push(("cursor", c.clone()));
                if page_no == WALK_PAGES {
                    page20_cursor = Some(c.clone());
                }
            }
            let page = get_page(&app, &token, &params).await;
            assert_eq!(page.ids.len(), PAGE, "page {page_no} is full");
            for id in &page.ids {
                assert!(seen.insert(*id), "id {id} repeated on page {page_no}");
            }
            walked.extend_from_slice(&page.ids);
            walk.add(&page);
            if page_no == WALK_PAGES {
                last.add(&page);
            }
            cursor = page.next;
            assert!(cursor.is_some(), "page {page_no} has a next cursor");
        }
        assert_eq!(
            walked,
            newest[..PAGE * WALK_PAGES],
            "the walk lists the newest items in order"
        );
    }
    stats.push(walk);
    stats.push(last);

    // The 20th page alone, through the cursor a walk reached it with.
    let cursor = page20_cursor.expect("a walk reached page 20");
    let want20 = &newest[PAGE * (WALK_PAGES - 1)..PAGE * WALK_PAGES];
    let mut direct = Stat::new(format!("page {WALK_PAGES} by its cursor"));
    for _ in 0..requests {
        let page = get_page(&app, &token, &[("cursor", cursor.clone())]).await;
        assert_eq!(page.ids, want20, "page {WALK_PAGES} by its cursor");
        direct.add(&page);
    }
    stats.push(direct);

    eprintln!(
        "\n{:<9} {:<40} {:>7} {:>7} {:>7} {:>10} {:>8}",
        "backend", "query", "p50 ms", "p99 ms", "max ms", "items/page", "kB/page"
    );
    for s in &stats {
        let pages = s.ms.len() as f64;
        eprintln!(
            "{:<9} {:<40} {:>7.2} {:>7.2} {:>7.2} {:>10.1} {:>8.1}",
            backend_name,
            s.query,
            s.pct(0.50),
            s.pct(0.99),
            s.pct(1.0),
            s.items as f64 / pages,
            s.bytes as f64 / pages / 1024.0
        );
    }
    eprintln!();

    app.stop().await;
}
