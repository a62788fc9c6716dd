//! Retention: records are deleted (or, for event payloads, blanked) once older than
//! `[retention]` says, in batches so that no statement holds the database for long. Message text
//! is personal data; it lives in event payloads, decisions, review items and the actions that
//! carry a notice excerpt, so each of those goes with its record.

use chrono::{DateTime, Duration, Utc};

use super::{Db, Store, StoreError};
use crate::config::RetentionConfig;

/// Rows pruned in one pass, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub payloads_blanked: u64,
    pub job_attempts: u64,
    pub actions: u64,
    pub review_items: u64,
    pub audit: u64,
    pub decisions: u64,
    pub events: u64,
}

impl PruneReport {
    pub fn total(&self) -> u64 {
        self.payloads_blanked
            + self.job_attempts
            + self.actions
            + self.review_items
            + self.audit
            + self.decisions
            + self.events
    }
}

fn cutoff(now: DateTime<Utc>, days: u32) -> Option<DateTime<Utc>> {
    (days > 0).then(|| now - Duration::days(i64::from(days)))
}

/// Runs `$sql` (binding `$1` = cutoff, `$2` = batch) until it touches no more rows; adds the
/// count to `$out`.
macro_rules! in_batches {
    ($db:expr, $sql:expr, $cutoff:expr, $batch:expr, $out:expr) => {
        loop {
            let n = on_pool!($db, pool => sqlx::query($sql)
                .bind($cutoff)
                .bind($batch)
                .execute(pool)
                .await?
                .rows_affected());
            $out += n;
            if n == 0 {
                break;
            }
        }
    };
}

impl Store {
    /// One pass of every retention rule at `now`.
    pub async fn prune(
        &self,
        cfg: &RetentionConfig,
        now: DateTime<Utc>,
    ) -> Result<PruneReport, StoreError> {
        let mut r = PruneReport::default();
        let batch = i64::from(cfg.batch.max(1));
        let db: &Db = &self.db;
        if let Some(c) = cutoff(now, cfg.event_payload_days) {
            in_batches!(
                db,
                "update events set payload = '' where id in (select id from events
                 where received_at < $1 and payload <> ''
                   and status not in ('received', 'retrying') order by id limit $2)",
                c,
                batch,
                r.payloads_blanked
            );
        }
        if let Some(c) = cutoff(now, cfg.job_attempts_days) {
            in_batches!(
                db,
                "delete from job_attempts where id in (select id from job_attempts
                 where started_at < $1 order by id limit $2)",
                c,
                batch,
                r.job_attempts
            );
        }
        if let Some(c) = cutoff(now, cfg.actions_days) {
            in_batches!(
                db,
                "delete from actions where id in (select id from actions
                 where status <> 'pending' and finished_at < $1 order by id limit $2)",
                c,
                batch,
                r.actions
            );
        }
        if let Some(c) = cutoff(now, cfg.review_items_days) {
            in_batches!(
                db,
                "delete from review_items where id in (select i.id from review_items i
                 where i.status = 'resolved' and i.resolved_at < $1
                   and not exists (select 1 from actions a where a.review_item_id = i.id)
                 order by i.id limit $2)",
                c,
                batch,
                r.review_items
            );
        }
        if let Some(c) = cutoff(now, cfg.audit_days) {
            in_batches!(
                db,
                "delete from audit_log where id in (select id from audit_log
                 where at < $1 order by id limit $2)",
                c,
                batch,
                r.audit
            );
        }
        if let Some(c) = cutoff(now, cfg.decisions_days) {
            self.prune_decisions(c, batch, &mut r).await?;
        }
        Ok(r)
    }

    /// Decisions older than `cutoff` with what hangs on them (strikes, review items, finished
    /// actions; bans keep their row, since they count for the ladder, but lose the link), then
    /// events older than `cutoff` that nothing refers to any more.
    async fn prune_decisions(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
        r: &mut PruneReport,
    ) -> Result<(), StoreError> {
        // A decision whose work is still pending stays until the work ends.
        r.decisions += self
            .delete_in_batches(
                "select d.id from decisions d where d.received_at < $1
                 and not exists (select 1 from actions a where a.decision_id = d.id and a.status = 'pending')
                 order by d.id limit $2",
                &[
                    "delete from strikes where decision_id = $1",
                    "update bans set decision_id = null where decision_id = $1",
                    "delete from actions where decision_id = $1",
                    "delete from actions where review_item_id in (select id from review_items
                         where decision_id = $1 or first_decision_id = $1)",
                    "delete from review_items where decision_id = $1 or first_decision_id = $1",
                    "delete from decisions where id = $1",
                ],
                cutoff,
                batch,
            )
            .await?;
        r.events += self
            .delete_in_batches(
                "select e.id from events e where e.received_at < $1
                 and e.status not in ('received', 'retrying')
                 and not exists (select 1 from decisions d where d.event_id = e.id)
                 order by e.id limit $2",
                &[
                    "delete from job_attempts where event_id = $1",
                    "delete from dead_letters where event_id = $1",
                    "delete from events where id = $1",
                ],
                cutoff,
                batch,
            )
            .await?;
        Ok(())
    }

    /// Until `select` (binding `$1` = cutoff, `$2` = batch) finds no more ids: per id, the
    /// statements of `each` (binding `$1` = id), one transaction per batch. Returns the ids done.
    async fn delete_in_batches(
        &self,
        select: &'static str,
        each: &[&'static str],
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut done = 0;
        loop {
            let n = on_pool!(&self.db, pool => {
                let mut tx = pool.begin().await?;
                let ids: Vec<i64> = sqlx::query_scalar(select)
                    .bind(cutoff)
                    .bind(batch)
                    .fetch_all(&mut *tx)
                    .await?;
                for id in &ids {
                    for sql in each {
                        sqlx::query(*sql).bind(id).execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                ids.len() as u64
            });
            done += n;
            if n == 0 {
                return Ok(done);
            }
        }
    }
}
