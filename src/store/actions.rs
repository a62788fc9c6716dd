//! The outbox: Stream calls as durable work. A row is written in the same transaction as the
//! decision or resolution that implies it; runners claim due rows under a lease (a runner that
//! dies lets its rows go when the lease ends), carry them out, and record the end in one
//! transaction with everything that follows from it: the decision's action status, a ban row once
//! Stream confirmed the ban, a resolved (or reopened) review item and its audit row.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{Db, Store, StoreError};

/// `insert into actions …` inside transaction `$tx`; evaluates to the new row's id.
macro_rules! insert_action {
    ($tx:expr, $a:expr, $now:expr) => {
        sqlx::query_scalar::<_, i64>(
            "insert into actions (app, origin, decision_id, review_item_id, steps, status, next_at,
                                  context, created_at, updated_at)
             values ($1, $2, $3, $4, $5, 'pending', $6, $7, $6, $6) returning id",
        )
        .bind(&$a.app)
        .bind($a.origin.as_str())
        .bind($a.decision_id)
        .bind($a.review_item_id)
        .bind(&$a.steps)
        .bind($now)
        .bind(&$a.context)
        .fetch_one(&mut *$tx)
        .await?
    };
}
pub(crate) use insert_action;

/// Inserts an `audit_log` row inside transaction `$tx`.
macro_rules! insert_audit_tx {
    ($tx:expr, $actor:expr, $action:expr, $target:expr, $before:expr, $after:expr, $at:expr) => {
        sqlx::query(
            "insert into audit_log (actor, action, target, before, after, at)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind($actor)
        .bind($action)
        .bind($target)
        .bind($before.map(|v: &serde_json::Value| v.to_string()))
        .bind($after.map(|v: &serde_json::Value| v.to_string()))
        .bind($at)
        .execute(&mut *$tx)
        .await?
    };
}
pub(crate) use insert_audit_tx;

/// What caused an action, and so what its end changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The policy's decision on a message.
    Decision,
    /// A moderator's resolution of a review item.
    Resolution,
    /// A moderator's unban.
    Unban,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Decision => "decision",
            Origin::Resolution => "resolution",
            Origin::Unban => "unban",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "decision" => Some(Origin::Decision),
            "resolution" => Some(Origin::Resolution),
            "unban" => Some(Origin::Unban),
            _ => None,
        }
    }
}

/// Work about to be written.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub app: String,
    pub origin: Origin,
    pub decision_id: Option<i64>,
    pub review_item_id: Option<i64>,
    /// JSON list of [`crate::actions::plan::Step`].
    pub steps: String,
    /// JSON of [`ActionContext`].
    pub context: Option<String>,
}

/// What the end of a moderator's action needs to know.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActionContext {
    /// Token name of the moderator (the audit row's actor).
    pub actor: String,
    /// Review item: `approve`, `remove`, `ban` or `dismiss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// The review item as it was before the resolution (restored if Stream refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<ItemBefore>,
    /// The ban's reason and the user, for the ban row written once Stream confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The audit log's `before` of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_before: Option<serde_json::Value>,
}

/// The parts of a review item a failed resolution puts back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemBefore {
    pub status: String,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionRow {
    pub id: i64,
    pub app: String,
    pub origin: String,
    pub decision_id: Option<i64>,
    pub review_item_id: Option<i64>,
    pub steps: String,
    pub done_steps: i64,
    pub results: String,
    pub status: String,
    pub attempts: i64,
    pub next_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub context: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl ActionRow {
    pub fn origin(&self) -> Option<Origin> {
        Origin::parse(&self.origin)
    }

    pub fn context(&self) -> ActionContext {
        self.context
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default()
    }
}

const ACTION_COLUMNS: &str = "id, app, origin, decision_id, review_item_id, steps, done_steps, results, status, \
     attempts, next_at, last_error, context, created_at, finished_at";

/// How a piece of work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionEnd {
    Done,
    /// Stream refused for good, or the retry horizon passed.
    Failed,
}

impl ActionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionEnd::Done => "done",
            ActionEnd::Failed => "failed",
        }
    }
}

/// A ban Stream confirmed, to be recorded with the end of its action.
#[derive(Debug, Clone)]
pub struct ConfirmedBan {
    pub user_id: String,
    pub timeout_minutes: Option<u32>,
    pub reason: Option<String>,
}

/// What [`Store::finish_action`] records.
#[derive(Debug, Clone)]
pub struct Finish {
    pub end: ActionEnd,
    /// JSON outcome of every step.
    pub results: String,
    pub error: Option<String>,
    /// Bans Stream confirmed.
    pub bans: Vec<ConfirmedBan>,
    /// Users Stream unbanned.
    pub unbanned: Vec<String>,
    /// The API's answer to the moderator, kept in the audit row's `after`.
    pub audit_after: Option<serde_json::Value>,
}

impl Store {
    /// Claims up to `limit` due actions for `runner` until `now + lease`.
    pub async fn claim_due_actions(
        &self,
        runner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ActionRow>, StoreError> {
        let due = "select id from actions where status = 'pending' and next_at <= $3
                   and (lease_until is null or lease_until <= $3) order by next_at, id limit $4";
        let rows = match &self.db {
            // One writer at a time: the subquery and the update cannot interleave with another's.
            Db::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "update actions set lease_until = $1, lease_by = $2, updated_at = $3
                     where id in ({due}) returning {ACTION_COLUMNS}"
                )))
                .bind(now + lease)
                .bind(runner)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
            // Several workers: each takes rows the others have not locked.
            Db::Postgres(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "update actions set lease_until = $1, lease_by = $2, updated_at = $3
                     where id in ({due} for update skip locked) returning {ACTION_COLUMNS}"
                )))
                .bind(now + lease)
                .bind(runner)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// Records that the first `done_steps` steps are carried out (a restart resumes after them).
    pub async fn record_action_progress(
        &self,
        id: i64,
        done_steps: i64,
        results: &str,
    ) -> Result<(), StoreError> {
        on_pool!(&self.db, pool => {
            sqlx::query("update actions set done_steps = $2, results = $3 where id = $1")
                .bind(id)
                .bind(done_steps)
                .bind(results)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A try failed for a reason that may pass: try again at `next_at`, lease released.
    pub async fn retry_action(
        &self,
        id: i64,
        next_at: DateTime<Utc>,
        error: &str,
        results: &str,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        on_pool!(&self.db, pool => {
            sqlx::query(
                "update actions set attempts = attempts + 1, next_at = $2, last_error = $3,
                     results = $4, lease_until = null, lease_by = null, updated_at = $5
                 where id = $1 and status = 'pending'",
            )
            .bind(id)
            .bind(next_at)
            .bind(error)
            .bind(results)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends an action, and in the same transaction records what follows from it (see the
    /// module doc). False if it had already ended (another runner finished it first).
    pub async fn finish_action(&self, row: &ActionRow, f: &Finish) -> Result<bool, StoreError> {
        let now = Utc::now();
        let ctx = row.context();
        let origin = row.origin();
        let done = f.end == ActionEnd::Done;
        on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "update actions set status = $2, results = $3, last_error = coalesce($4, last_error),
                     attempts = attempts + 1, lease_until = null, lease_by = null,
                     updated_at = $5, finished_at = $5
                 where id = $1 and status = 'pending'",
            )
            .bind(row.id)
            .bind(f.end.as_str())
            .bind(&f.results)
            .bind(&f.error)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            let ban_source = match origin {
                Some(Origin::Decision) => "chatguard",
                _ => "moderator",
            };
            for ban in &f.bans {
                sqlx::query(
                    "insert into bans (app, user_id, source, decision_id, reason, started_at, until)
                     values ($1, $2, $3, $4, $5, $6, $7)
                     on conflict (decision_id) do nothing",
                )
                .bind(&row.app)
                .bind(&ban.user_id)
                .bind(ban_source)
                .bind(if origin == Some(Origin::Decision) { row.decision_id } else { None })
                .bind(&ban.reason)
                .bind(now)
                .bind(ban.timeout_minutes.map(|m| now + Duration::minutes(i64::from(m))))
                .execute(&mut *tx)
                .await?;
            }
            for user in &f.unbanned {
                sqlx::query(
                    "update bans set lifted_at = $3 where app = $1 and user_id = $2 and lifted_at is null",
                )
                .bind(&row.app)
                .bind(user)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            match origin {
                Some(Origin::Decision) => {
                    sqlx::query("update decisions set action_status = $2, action_result = $3 where id = $1")
                        .bind(row.decision_id)
                        .bind(f.end.as_str())
                        .bind(&f.results)
                        .execute(&mut *tx)
                        .await?;
                    let updated = sqlx::query("update review_items set action_status = $2 where decision_id = $1")
                        .bind(row.decision_id)
                        .bind(f.end.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    // A decision Stream would not carry out goes before the moderators.
                    if !done && updated == 0 {
                        let d: Option<super::DecisionRow> = sqlx::query_as(select_decisions!(" where id = $1"))
                            .bind(row.decision_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if let Some(item) = d.as_ref().and_then(failed_item) {
                            super::review::open_item_query!(&item, item.decision_id)
                                .fetch_one(&mut *tx)
                                .await?;
                        }
                    }
                }
                Some(Origin::Resolution) => {
                    let target = format!("review_item:{}", row.review_item_id.unwrap_or_default());
                    if done {
                        sqlx::query(
                            "update review_items set status = 'resolved', resolved_at = $2, updated_at = $2
                             where id = $1 and status = 'resolving'",
                        )
                        .bind(row.review_item_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        if ctx.resolution.as_deref() == Some("approve") {
                            // The message was fine: the strike its decision gave no longer counts.
                            sqlx::query(
                                "update strikes set cleared_at = $2 where cleared_at is null
                                 and decision_id = (select decision_id from review_items where id = $1)",
                            )
                            .bind(row.review_item_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        }
                    } else {
                        let before = ctx.before.clone().unwrap_or_default();
                        sqlx::query(
                            "update review_items
                             set status = $2, claimed_by = $3, claim_expires_at = $4, note = $5,
                                 resolved_by = null, resolution = null, resolved_at = null, updated_at = $6
                             where id = $1 and status = 'resolving'",
                        )
                        .bind(row.review_item_id)
                        .bind(if before.status.is_empty() { "open".to_owned() } else { before.status })
                        .bind(&before.claimed_by)
                        .bind(before.claim_expires_at)
                        .bind(&before.note)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let item: Option<super::ReviewItemRow> = sqlx::query_as(concat!(
                        "select ", super::review::review_columns!(), " from review_items where id = $1"
                    ))
                    .bind(row.review_item_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let after = if done {
                        serde_json::json!({"item": item.map(|i| i.view()), "outcome": f.audit_after})
                    } else {
                        serde_json::json!({"outcome": f.audit_after, "reopened": true})
                    };
                    let action = if done { "review_item.resolve" } else { "review_item.resolve_failed" };
                    insert_audit_tx!(tx, &ctx.actor, action, &target, ctx.audit_before.as_ref(), Some(&after), now);
                }
                Some(Origin::Unban) => {
                    let target = format!("user:{}", ctx.user_id.as_deref().unwrap_or_default());
                    let action = if done { "user.unban" } else { "user.unban_failed" };
                    insert_audit_tx!(tx, &ctx.actor, action, &target, ctx.audit_before.as_ref(), f.audit_after.as_ref(), now);
                }
                None => {}
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    pub async fn get_action(&self, id: i64) -> Result<ActionRow, StoreError> {
        let row: Option<ActionRow> = on_pool!(&self.db, pool => sqlx::query_as(sqlx::AssertSqlSafe(
            format!("select {ACTION_COLUMNS} from actions where id = $1"),
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?);
        row.ok_or(StoreError::NotFound)
    }

    /// Actions that failed for good, newest first.
    pub async fn list_failed_actions(&self, limit: i64) -> Result<Vec<ActionRow>, StoreError> {
        Ok(
            on_pool!(&self.reads, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ACTION_COLUMNS} from actions where status = 'failed' order by id desc limit $1"
        )))
        .bind(limit)
        .fetch_all(pool)
        .await?),
        )
    }

    /// Actions per status (`pending`, `done`, `failed`).
    pub async fn count_actions_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            "select status, count(*) from actions group by status order by status",
        )
        .fetch_all(pool)
        .await?))
    }
}

/// The review item that shows moderators a decision whose Stream calls failed for good.
fn failed_item(d: &super::DecisionRow) -> Option<super::NewReviewItem> {
    Some(super::NewReviewItem {
        app: d.app.clone(),
        message_id: d.message_id.clone()?,
        decision_id: d.id,
        decision: d.decision.clone(),
        scores: crate::domain::Scores {
            toxicity: d.toxicity,
            spam: d.spam,
            explicit: d.explicit,
        },
        text: d.text.clone(),
        cid: d.cid.clone(),
        user_id: d.user_id.clone(),
        reasons: d.reasons.clone(),
        rule_ids: Vec::new(),
        action_status: ActionEnd::Failed.as_str().to_owned(),
        at: d.received_at,
    })
}
