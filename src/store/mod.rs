//! Storage for events, decisions, job attempts and dead letters, on SQLite or PostgreSQL.
//!
//! The SQL is written once, lower case with `$N` placeholders, which both backends accept; the
//! [`on_pool!`] macro compiles each body once per backend. Runtime-checked queries keep the build
//! free of any database (see rust-stack.md §2), and the integration tests run them on both.

mod rows;
mod sqlite;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;

pub use review::{
    AuditEntry, AuditRow, ClaimOutcome, Cursor, CursorError, NewReviewItem, ReleaseOutcome,
    Resolution, ResolveOutcome, ResolveRequest, ReviewFilter, ReviewItemRow, ReviewItemView,
    ReviewSort, ReviewStats, ReviewStatus, Role, TokenRow, UpheldStats, hash_token, top_category,
};
pub use rows::{
    Attempt, BanRow, DeadLetterRow, DecisionRow, DecisionView, EventRow, NewDecision, NewEvent,
    Outcome, StrikeRow,
};
pub use sqlite::JobsWake;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("not found")]
    NotFound,
}

/// Event statuses, as stored.
pub mod status {
    /// Stored and put on the queue, waiting for a worker. (A crash between the two steps is
    /// repaired by re-enqueueing `received` events at start-up; the push is idempotent.)
    pub const RECEIVED: &str = "received";
    /// An event type chatguard does not handle.
    pub const IGNORED: &str = "ignored";
    /// Caused by chatguard's own bot user; never acted on.
    pub const OWN: &str = "own";
    /// Older than `server.stale_event_secs` when it arrived (a replayed capture): recorded,
    /// never acted on.
    pub const STALE: &str = "stale";
    pub const DECIDED: &str = "decided";
    /// Handled without a decision (bans, deletions, user flags).
    pub const PROCESSED: &str = "processed";
    /// Failed; a retry is queued with a delay.
    pub const RETRYING: &str = "retrying";
    /// Out of attempts; listed by `chatguard dead-letters`.
    pub const DEAD: &str = "dead";
}

/// The pool of the configured backend.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever backend is configured.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// `select <every EventRow column> from events` followed by `$rest`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "select id, webhook_id, api_key, event_type, status, deliveries, message_id, cid, user_id, ",
            "payload, attempts, last_error, received_at from events",
            $rest
        )
    };
}

/// `select <every DecisionRow column> from decisions` followed by `$rest`.
macro_rules! select_decisions {
    ($rest:literal) => {
        concat!(
            "select id, event_id, app, webhook_id, event_type, message_id, cid, user_id, text, toxicity, ",
            "spam, explicit, matched_rules, reasons, decision, policy_version, action, action_status, ",
            "dry_run, worker, received_at, decided_at, action_result, alert_status, shadow, would_do ",
            "from decisions",
            $rest
        )
    };
}

/// Inserts a `job_attempts` row inside transaction `$tx`.
macro_rules! insert_attempt {
    ($tx:ident, $a:expr, $error:expr) => {
        sqlx::query("insert into job_attempts (event_id, attempt, worker, started_at, error) values ($1, $2, $3, $4, $5)")
            .bind($a.event_id)
            .bind(i64::from($a.attempt))
            .bind($a.worker)
            .bind($a.started_at)
            .bind($error)
            .execute(&mut *$tx)
            .await?;
    };
}

mod actions;
pub mod overview;
mod retention;
mod review;

pub use retention::PruneReport;

pub use actions::{
    ActionContext, ActionEnd, ActionRow, ConfirmedBan, Finish, ItemBefore, NewAction, Origin,
};

/// What [`Store::insert_events`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New(i64),
    /// The webhook id was seen before; the stored event's id and status.
    Duplicate {
        id: i64,
        status: String,
    },
    /// The same event (by content) was stored under another webhook id.
    Replay {
        id: i64,
    },
}

#[derive(Clone, Debug)]
pub struct Store {
    /// Writes (and the queue). On SQLite one connection: writers then wait their turn in the pool
    /// instead of sleeping in SQLite's busy handler, which costs milliseconds under load.
    db: Db,
    /// Reads. On SQLite a separate pool (WAL readers never wait for the writer); on PostgreSQL the
    /// same pool as `db`.
    reads: Db,
    /// The job queue's (apalis's) pool: on SQLite its own, on PostgreSQL the same as `db`.
    queue: Db,
    wake: Option<JobsWake>,
}

impl Store {
    /// Opens (creating a SQLite file if needed) the database at `url`. Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let (pools, wake) = sqlite::connect(url, max_connections).await?;
            Ok(Self {
                db: Db::Sqlite(pools.writer),
                reads: Db::Sqlite(pools.reader),
                queue: Db::Sqlite(pools.queue),
                wake: Some(wake),
            })
        } else {
            let options = PgConnectOptions::from_str(url)?;
            // One direct connection first: a pool reports an unreachable server only as a timeout.
            sqlx::postgres::PgConnection::connect_with(&options)
                .await?
                .close()
                .await?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Self {
                db: Db::Postgres(pool.clone()),
                reads: Db::Postgres(pool.clone()),
                queue: Db::Postgres(pool),
                wake: None,
            })
        }
    }

    /// Applies chatguard's migrations for the backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // The queue's migrations share SQLite's `_sqlx_migrations` table; each migrator must
        // tolerate the other's rows.
        let mut migrator: Migrator = match &self.db {
            Db::Sqlite(_) => sqlx::migrate!("./migrations/sqlite"),
            Db::Postgres(_) => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.set_ignore_missing(true);
        on_pool!(&self.db, pool => migrator.run(pool).await?);
        Ok(())
    }

    /// The pool chatguard's writes go through.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The pool the job queue (apalis) uses.
    pub fn queue_db(&self) -> &Db {
        &self.queue
    }

    /// The pool reads go through.
    pub fn read_db(&self) -> &Db {
        &self.reads
    }

    /// Wakes the queue on SQLite inserts into the jobs table (this process's writes only).
    pub fn take_jobs_wake(&self) -> Option<JobsWake> {
        self.wake.clone()
    }

    pub fn backend_name(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(&self.reads, pool => { sqlx::query("select 1").execute(pool).await?; });
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(&self.reads, pool => pool.close().await);
        on_pool!(&self.queue, pool => pool.close().await);
        on_pool!(&self.db, pool => pool.close().await);
    }

    /// Stores verified webhooks in one transaction, each once per webhook id; a repeat bumps
    /// `deliveries` and reports the stored status. Results are in input order.
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    pub async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Inserted>, StoreError> {
        let mut out = Vec::with_capacity(events.len());
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            for e in events {
                let inserted: Option<i64> = sqlx::query_scalar(
                    "insert into events (webhook_id, api_key, event_type, status, message_id, cid, user_id,
                                         payload, received_at, updated_at, content_key)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)
                     on conflict do nothing
                     returning id",
                )
                .bind(&e.webhook_id)
                .bind(&e.api_key)
                .bind(&e.event_type)
                .bind(e.status)
                .bind(&e.message_id)
                .bind(&e.cid)
                .bind(&e.user_id)
                .bind(&e.payload)
                .bind(e.received_at)
                .bind(&e.content_key)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(id) = inserted {
                    out.push(Inserted::New(id));
                    continue;
                }
                let known: Option<(i64, String)> = sqlx::query_as(
                    "update events set deliveries = deliveries + 1 where webhook_id = $1 returning id, status",
                )
                .bind(&e.webhook_id)
                .fetch_optional(&mut *tx)
                .await?;
                let (id, status) = match known {
                    Some(k) => k,
                    None => {
                        // Not the webhook id: the same event under a new id (a replay).
                        let (id,): (i64,) = sqlx::query_as("select id from events where content_key = $1")
                            .bind(&e.content_key)
                            .fetch_one(&mut *tx)
                            .await?;
                        out.push(Inserted::Replay { id });
                        continue;
                    }
                };
                out.push(Inserted::Duplicate { id, status });
            }
            tx.commit().await?;
        });
        Ok(out)
    }

    pub async fn get_event(&self, id: i64) -> Result<EventRow, StoreError> {
        let row: Option<EventRow> = on_pool!(&self.reads, pool => sqlx::query_as(
            select_events!(" where id = $1"),
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        row.ok_or(StoreError::NotFound)
    }

    pub async fn get_event_by_webhook_id(&self, webhook_id: &str) -> Result<EventRow, StoreError> {
        let row: Option<EventRow> = on_pool!(&self.reads, pool => sqlx::query_as(
            select_events!(" where webhook_id = $1"),
        )
        .bind(webhook_id)
        .fetch_optional(pool)
        .await?);
        row.ok_or(StoreError::NotFound)
    }

    /// Events still waiting for a worker (`received`) with ids above `after`, oldest first.
    pub async fn list_received_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            select_events!(" where status = 'received' and id > $1 order by id limit $2"),
        )
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Events waiting (`received`) or between tries (`retrying`) whose status has not changed
    /// since `cutoff`: their job was lost (a store error in the retry path, a queue row gone).
    /// Their `updated_at` is set to `now`, so one sweep re-queues each once. Returns
    /// (id, webhook id, attempts so far).
    pub async fn take_stranded_events(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Ok(on_pool!(&self.db, pool => sqlx::query_as(
            "update events set updated_at = $2
             where id in (select id from events where status in ('received', 'retrying')
                          and updated_at < $1 order by id limit $3)
             returning id, webhook_id, attempts",
        )
        .bind(cutoff)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Counts events per status.
    pub async fn count_events_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            "select status, count(*) from events group by status order by status",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Records a failed attempt and, in the same transaction, the event's new status
    /// (`retrying`, or `dead` with a dead letter when `dead` is true).
    pub async fn record_failed_attempt(
        &self,
        a: &Attempt<'_>,
        error: &str,
        dead: bool,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            insert_attempt!(tx, a, Some(error));
            let next = if dead { status::DEAD } else { status::RETRYING };
            sqlx::query(
                "update events set status = $2, attempts = attempts + 1, last_error = $3, updated_at = $4 where id = $1",
            )
            .bind(a.event_id)
            .bind(next)
            .bind(error)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if dead {
                sqlx::query(
                    "insert into dead_letters (event_id, webhook_id, attempts, last_error, failed_at)
                     select id, webhook_id, $2, $3, $4 from events where id = $1
                     on conflict (event_id) do update
                     set attempts = excluded.attempts, last_error = excluded.last_error,
                         failed_at = excluded.failed_at, retried_at = null",
                )
                .bind(a.event_id)
                .bind(i64::from(a.attempt))
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Start times of every failed attempt at an event, oldest first.
    pub async fn attempt_times(&self, event_id: i64) -> Result<Vec<DateTime<Utc>>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_scalar(
            "select started_at from job_attempts where event_id = $1 order by id",
        )
        .bind(event_id)
        .fetch_all(pool)
        .await?))
    }

    /// What a user posted before `q.before`: messages since `q.flood_since`, and since
    /// `q.repeat_since` the messages with the same fingerprint and the other channels they went
    /// to. Counted from the decision log, so every worker on the database sees the same numbers.
    pub async fn user_activity(&self, q: &ActivityQuery<'_>) -> Result<ActivityCounts, StoreError> {
        let since = q.flood_since.min(q.repeat_since);
        let (recent, same_text, same_text_channels): (i64, i64, i64) = on_pool!(&self.reads, pool => sqlx::query_as(
            "select
                 coalesce(sum(case when received_at >= $2 then 1 else 0 end), 0),
                 coalesce(sum(case when fingerprint = $3 and received_at >= $4 then 1 else 0 end), 0),
                 count(distinct case when fingerprint = $3 and received_at >= $4 and cid <> $5 then cid end)
             from decisions
             where app = $8 and user_id = $1 and received_at >= $6 and received_at < $7",
        )
        .bind(q.user_id)
        .bind(q.flood_since)
        .bind(q.fingerprint)
        .bind(q.repeat_since)
        .bind(q.cid.unwrap_or(""))
        .bind(since)
        .bind(q.before)
        .bind(q.app)
        .fetch_one(pool)
        .await?);
        Ok(ActivityCounts {
            recent,
            same_text,
            same_text_channels,
        })
    }

    /// A user's standing in `app` for the policy at `now`: strikes not expired or cleared, timed
    /// bans chatguard gave before, and whether a ban (ours or a moderator's) is in force or
    /// waiting to be carried out on Stream (so a burst of messages does not ban twice).
    pub async fn user_standing(
        &self,
        app: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Standing, StoreError> {
        let (strikes, bans, active, pending): (i64, i64, i64, i64) = on_pool!(&self.reads, pool => sqlx::query_as(
            "select
                 (select count(*) from strikes where app = $3 and user_id = $1 and expires_at > $2
                      and cleared_at is null),
                 (select count(*) from bans where app = $3 and user_id = $1 and source = 'chatguard'),
                 (select count(*) from bans where app = $3 and user_id = $1 and lifted_at is null
                      and (until is null or until > $2)),
                 (select count(*) from actions a join decisions d on d.id = a.decision_id
                      where a.status = 'pending' and a.app = $3 and d.app = $3 and d.user_id = $1
                        and d.decision = 'ban')",
        )
        .bind(user_id)
        .bind(now)
        .bind(app)
        .fetch_one(pool)
        .await?);
        Ok(Standing {
            active_strikes: strikes,
            previous_bans: bans,
            banned_now: active > 0 || pending > 0,
        })
    }

    /// Keeps ban state in step with Stream: a `user.banned` event records a ban from outside
    /// chatguard (unless ours is already in force); `user.unbanned` lifts every ban in force.
    pub async fn record_ban_event(
        &self,
        app: &str,
        user_id: &str,
        banned: bool,
        until: Option<DateTime<Utc>>,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_pool!(&self.db, pool => {
            if banned {
                sqlx::query(
                    "insert into bans (app, user_id, source, reason, started_at, until)
                     select $5, $1, 'stream', $2, $3, $4
                     where not exists (select 1 from bans where app = $5 and user_id = $1
                                       and lifted_at is null and (until is null or until > $3))",
                )
                .bind(user_id)
                .bind(reason)
                .bind(at)
                .bind(until)
                .bind(app)
                .execute(pool)
                .await?;
            } else {
                sqlx::query("update bans set lifted_at = $2 where app = $3 and user_id = $1 and lifted_at is null")
                    .bind(user_id)
                    .bind(at)
                    .bind(app)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// Records how the e-mail digest holding these decisions went.
    pub async fn record_alert_outcome(
        &self,
        decision_ids: &[i64],
        alert_status: &str,
    ) -> Result<(), StoreError> {
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            for id in decision_ids {
                sqlx::query("update decisions set alert_status = $2 where id = $1")
                    .bind(id)
                    .bind(alert_status)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records successful jobs in one transaction: each decision is stored, its attempt counted
    /// and its event marked decided (or processed). Per outcome, true when it was new; a re-run
    /// job whose event already has a decision gets false and changes nothing.
    #[tracing::instrument(skip_all, fields(outcomes = outcomes.len()))]
    pub async fn record_outcomes(
        &self,
        outcomes: &[Outcome],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(outcomes.len());
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            for outcome in outcomes {
                let (event_id, new_status, inserted) = match outcome {
                    Outcome::Processed { event_id } => (*event_id, status::PROCESSED, Some(0)),
                    Outcome::Decided(d) => {
                        let inserted: Option<i64> = sqlx::query_scalar(
                            "insert into decisions (event_id, app, webhook_id, event_type, message_id, cid, user_id,
                                 text, toxicity, spam, explicit, matched_rules, reasons, decision, policy_version,
                                 action, action_status, dry_run, worker, received_at, decided_at, fingerprint,
                                 shadow, would_do)
                             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                                     $18, $19, $20, $21, $22, $23, $24)
                             on conflict (event_id) do nothing
                             returning id",
                        )
                        .bind(d.event_id)
                        .bind(&d.app)
                        .bind(&d.webhook_id)
                        .bind(&d.event_type)
                        .bind(&d.message_id)
                        .bind(&d.cid)
                        .bind(&d.user_id)
                        .bind(&d.text)
                        .bind(d.scores.toxicity)
                        .bind(d.scores.spam)
                        .bind(d.scores.explicit)
                        .bind(&d.matched_rules)
                        .bind(&d.reasons)
                        .bind(d.decision)
                        .bind(&d.policy_version)
                        .bind(&d.action)
                        .bind(d.action_status)
                        .bind(d.dry_run)
                        .bind(&d.worker)
                        .bind(d.received_at)
                        .bind(now)
                        .bind(d.fingerprint)
                        .bind(d.shadow)
                        .bind(&d.would_do)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(id) = inserted {
                            if let (Some(user), Some(expires_at)) = (d.user_id.as_deref(), d.strike_expires_at) {
                                sqlx::query(
                                    "insert into strikes (app, user_id, decision_id, created_at, expires_at)
                                     values ($1, $2, $3, $4, $5)",
                                )
                                .bind(&d.app)
                                .bind(user)
                                .bind(id)
                                .bind(now)
                                .bind(expires_at)
                                .execute(&mut *tx)
                                .await?;
                            }
                            if let Some(item) = &d.review {
                                review::open_item_query!(item, id).fetch_one(&mut *tx).await?;
                            }
                            if let Some(action) = &d.outbox {
                                let action = actions::NewAction { decision_id: Some(id), ..action.clone() };
                                actions::insert_action!(tx, action, now);
                            }
                        }
                        (d.event_id, status::DECIDED, inserted)
                    }
                };
                if inserted.is_some() {
                    sqlx::query("update events set status = $2, attempts = attempts + 1, updated_at = $3 where id = $1")
                        .bind(event_id)
                        .bind(new_status)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                out.push(inserted);
            }
            tx.commit().await?;
        });
        Ok(out)
    }

    /// The most recent decisions, newest first.
    pub async fn recent_decisions(&self, limit: i64) -> Result<Vec<DecisionRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            select_decisions!(" order by id desc limit $1"),
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// The decision log newest first, filtered; `before_id` pages on from an earlier page.
    pub async fn list_decisions(
        &self,
        filter: &DecisionFilter,
        limit: i64,
    ) -> Result<Vec<DecisionRow>, StoreError> {
        let mut sql = select_decisions!(" where true").to_owned();
        let mut params: Vec<review::Param> = Vec::new();
        let mut bind = |p: review::Param| {
            params.push(p);
            format!("${}", params.len())
        };
        for (column, value) in [
            ("app", &filter.app),
            ("user_id", &filter.user_id),
            ("decision", &filter.decision),
            ("cid", &filter.cid),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(
                    " and {column} = {}",
                    bind(review::Param::Text(v.clone()))
                ));
            }
        }
        if let Some(t) = filter.received_after {
            sql.push_str(&format!(
                " and received_at >= {}",
                bind(review::Param::Time(t))
            ));
        }
        if let Some(t) = filter.received_before {
            sql.push_str(&format!(
                " and received_at < {}",
                bind(review::Param::Time(t))
            ));
        }
        if let Some(id) = filter.before_id {
            sql.push_str(&format!(" and id < {}", bind(review::Param::Int(id))));
        }
        sql.push_str(&format!(
            " order by id desc limit {}",
            bind(review::Param::Int(limit.max(1)))
        ));
        Ok(on_pool!(&self.reads, pool => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for p in params {
                q = match p {
                    review::Param::Text(v) => q.bind(v),
                    review::Param::Float(v) => q.bind(v),
                    review::Param::Time(v) => q.bind(v),
                    review::Param::Int(v) => q.bind(v),
                };
            }
            q.fetch_all(pool).await?
        }))
    }

    pub async fn decision_by_id(&self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        Ok(
            on_pool!(&self.reads, pool => sqlx::query_as(select_decisions!(" where id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?),
        )
    }

    /// A user's latest strikes and bans, newest first.
    pub async fn strikes_and_bans(
        &self,
        app: Option<&str>,
        user_id: &str,
        limit: i64,
    ) -> Result<(Vec<StrikeRow>, Vec<BanRow>), StoreError> {
        Ok(on_pool!(&self.reads, pool => {
            let strikes = sqlx::query_as(
                "select id, app, decision_id, created_at, expires_at, cleared_at from strikes
                 where user_id = $1 and app = coalesce($3, app) order by id desc limit $2",
            )
            .bind(user_id)
            .bind(limit)
            .bind(app)
            .fetch_all(pool)
            .await?;
            let bans = sqlx::query_as(
                "select id, app, source, decision_id, reason, started_at, until, lifted_at from bans
                 where user_id = $1 and app = coalesce($3, app) order by id desc limit $2",
            )
            .bind(user_id)
            .bind(limit)
            .bind(app)
            .fetch_all(pool)
            .await?;
            (strikes, bans)
        }))
    }

    /// A user's latest decisions, newest first.
    pub async fn decisions_for_user(
        &self,
        app: Option<&str>,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<DecisionRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            select_decisions!(" where user_id = $1 and app = coalesce($3, app) order by id desc limit $2"),
        )
        .bind(user_id)
        .bind(limit)
        .bind(app)
        .fetch_all(pool)
        .await?))
    }

    pub async fn decision_for_event(
        &self,
        event_id: i64,
    ) -> Result<Option<DecisionRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            select_decisions!(" where event_id = $1"),
        )
        .bind(event_id)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn count_decisions(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(&self.reads, pool => sqlx::query_scalar("select count(*) from decisions")
            .fetch_one(pool)
            .await?),
        )
    }

    /// Dead letters not yet sent back to the queue (all of them with `include_retried`).
    pub async fn list_dead_letters(
        &self,
        include_retried: bool,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            "select d.id, d.event_id, d.webhook_id, e.event_type, e.message_id, d.attempts, d.last_error,
                    d.failed_at, d.retried_at, d.retry_count
             from dead_letters d join events e on e.id = d.event_id
             where $1 or d.retried_at is null
             order by d.id",
        )
        .bind(include_retried)
        .fetch_all(pool)
        .await?))
    }

    /// Marks a dead letter as sent back to the queue and its event as waiting again (unless a
    /// worker has already picked it up).
    pub async fn mark_dead_letter_retried(&self, id: i64) -> Result<(), StoreError> {
        let now = Utc::now();
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let event_id: Option<i64> = sqlx::query_scalar(
                "update dead_letters set retried_at = $2, retry_count = retry_count + 1 where id = $1 returning event_id",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let event_id = event_id.ok_or(StoreError::NotFound)?;
            sqlx::query("update events set status = 'received', updated_at = $2 where id = $1 and status = 'dead'")
                .bind(event_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            on_pool!(&self.reads, pool => sqlx::query_scalar("select value from settings where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?),
        )
    }

    /// Stores `value` unless the setting exists; returns the stored value either way.
    pub async fn get_or_insert_setting(
        &self,
        name: &str,
        value: &str,
    ) -> Result<String, StoreError> {
        on_pool!(&self.db, pool => { sqlx::query("insert into settings (name, value) values ($1, $2) on conflict (name) do nothing")
            .bind(name)
            .bind(value)
            .execute(pool)
            .await?; });
        self.get_setting(name).await?.ok_or(StoreError::NotFound)
    }
}

/// Whose activity [`Store::user_activity`] counts, and over which windows.
#[derive(Debug, Clone)]
pub struct ActivityQuery<'a> {
    pub app: &'a str,
    pub user_id: &'a str,
    /// The channel of the message being decided (other channels count as cross-posting).
    pub cid: Option<&'a str>,
    pub fingerprint: i64,
    pub before: DateTime<Utc>,
    pub flood_since: DateTime<Utc>,
    pub repeat_since: DateTime<Utc>,
}

/// What [`Store::user_activity`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivityCounts {
    pub recent: i64,
    pub same_text: i64,
    pub same_text_channels: i64,
}

/// A user's standing for the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub active_strikes: i64,
    pub previous_bans: i64,
    pub banned_now: bool,
}

/// Filters of [`Store::list_decisions`]; every one given must hold.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// The app's API key.
    pub app: Option<String>,
    pub user_id: Option<String>,
    /// `allow`, `flag`, `block` or `ban`.
    pub decision: Option<String>,
    pub cid: Option<String>,
    pub received_after: Option<DateTime<Utc>>,
    pub received_before: Option<DateTime<Utc>>,
    /// Only decisions with a smaller id (the next page).
    pub before_id: Option<i64>,
}
