//! Decisions per hour for the console's overview charts, counted by decision and by top
//! category.
//!
//! The counting is done by the database (one `group by` over the `decided_at` index), so a busy
//! week costs a few hundred rows rather than every decision. Only the hour truncation differs
//! between the backends; both yield `YYYY-MM-DDTHH` text in UTC.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::{Db, Store, StoreError};

/// The top category of a decision, as [`super::top_category`] picks it (the first of equals in
/// toxicity, spam, explicit order).
macro_rules! top_category_sql {
    () => {
        "case when toxicity >= spam and toxicity >= explicit then 'toxicity' \
              when spam >= explicit then 'spam' else 'explicit' end"
    };
}

/// The rest of the query after the hour expression: the window and the grouping.
macro_rules! hourly_rest {
    () => {
        concat!(
            " as hour, decision, ",
            top_category_sql!(),
            " as category, count(*) from decisions
             where decided_at >= $1 and decided_at < $2
             group by 1, 2, 3 order by 1, 2, 3"
        )
    };
}

/// Decisions decided in one hour with one decision and one top category.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyCount {
    /// The start of the hour, UTC.
    pub hour: DateTime<Utc>,
    /// `allow`, `flag`, `block` or `ban`.
    pub decision: String,
    /// `toxicity`, `spam` or `explicit`.
    pub category: String,
    pub count: i64,
}

/// `YYYY-MM-DDTHH` (or with a space) as the start of that hour in UTC.
fn parse_hour(text: &str) -> Option<DateTime<Utc>> {
    let head = text.get(..13)?.replace(' ', "T");
    NaiveDateTime::parse_from_str(&format!("{head}:00:00"), "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| Utc.from_utc_datetime(&t))
}

impl Store {
    /// Decisions decided in `[from, to)`, counted per hour, decision and top category; hours
    /// without decisions are absent.
    pub async fn hourly_decisions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourlyCount>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = match self.read_db() {
            // Stored as RFC 3339 text in UTC: the first 13 characters are the hour.
            Db::Sqlite(pool) => {
                sqlx::query_as(concat!("select substr(decided_at, 1, 13)", hourly_rest!()))
                    .bind(from)
                    .bind(to)
                    .fetch_all(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as(concat!(
                    "select to_char(date_trunc('hour', decided_at at time zone 'UTC'), \
                     'YYYY-MM-DD\"T\"HH24')",
                    hourly_rest!()
                ))
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(hour, decision, category, count)| {
                Some(HourlyCount {
                    hour: parse_hour(&hour)?,
                    decision,
                    category,
                    count,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_parse_from_either_backend_and_garbage_does_not() {
        let want = Utc.with_ymd_and_hms(2026, 5, 8, 13, 0, 0).unwrap();
        assert_eq!(parse_hour("2026-05-08T13"), Some(want));
        assert_eq!(parse_hour("2026-05-08 13"), Some(want));
        assert_eq!(parse_hour("2026-05-08T13:59:59.9+00:00"), Some(want));
        assert_eq!(parse_hour("2026-05-08"), None);
        assert_eq!(parse_hour("not a time at all"), None);
    }
}
