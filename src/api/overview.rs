//! `GET /api/v1/overview/series`: decisions per hour by decision and by category, the time
//! series behind the console's overview charts. The queue figures beside them (open items,
//! oldest open item, median time to resolution, upheld shares) come from `GET /stats`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{ApiJsonError, Viewer};
use super::extract::QueryParams;
use super::review::ReviewState;
use super::schema::ErrorBody;

/// How far back the series reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum Window {
    /// The last 24 hours.
    #[default]
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days.
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    fn hours(self) -> i64 {
        match self {
            Window::Day => 24,
            Window::Week => 24 * 7,
        }
    }
}

/// Query parameters of `GET /overview/series`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// `24h` (default) or `7d`.
    #[param(inline)]
    window: Option<Window>,
}

/// Decisions in one hour.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HourBucket {
    /// The start of the hour (UTC).
    pub start: DateTime<Utc>,
    /// Decisions by decision (`allow`, `flag`, `block`, `ban`); every key is present.
    pub by_decision: BTreeMap<String, i64>,
    /// Decisions other than `allow` by top category (`toxicity`, `spam`, `explicit`); every key
    /// is present.
    pub by_category: BTreeMap<String, i64>,
}

/// `GET /overview/series`: one bucket per hour, oldest first, hours without decisions included.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverviewSeries {
    pub window: Window,
    /// Always 3600.
    pub bucket_secs: i64,
    /// The start of the first bucket.
    pub from: DateTime<Utc>,
    /// The end of the last bucket (the end of the current hour).
    pub to: DateTime<Utc>,
    pub buckets: Vec<HourBucket>,
}

const DECISIONS: [&str; 4] = ["allow", "flag", "block", "ban"];
const CATEGORIES: [&str; 3] = ["toxicity", "spam", "explicit"];

fn zeroes(keys: &[&str]) -> BTreeMap<String, i64> {
    keys.iter().map(|k| ((*k).to_owned(), 0)).collect()
}

/// Decisions per hour over the last 24 hours or 7 days, by decision and by top category, for
/// charts. The current hour is the last bucket and is still filling.
#[utoipa::path(get, path = "/overview/series", tag = "log", params(SeriesParams),
    responses(
        (status = 200, description = "Hourly buckets, oldest first", body = OverviewSeries),
        (status = 400, description = "A bad window", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub async fn series(
    _: Viewer,
    State(state): State<ReviewState>,
    QueryParams(params): QueryParams<SeriesParams>,
) -> Result<Json<OverviewSeries>, ApiJsonError> {
    let window = params.window.unwrap_or_default();
    let hour = TimeDelta::hours(1);
    let now = Utc::now();
    let to = now
        .duration_trunc(hour)
        .map_err(|e| ApiJsonError::Internal(e.to_string()))?
        + hour;
    let from = to - TimeDelta::hours(window.hours());
    let counts = state.store.hourly_decisions(from, to).await?;
    let mut buckets: Vec<HourBucket> = (0..window.hours())
        .map(|i| HourBucket {
            start: from + TimeDelta::hours(i),
            by_decision: zeroes(&DECISIONS),
            by_category: zeroes(&CATEGORIES),
        })
        .collect();
    for c in counts {
        let Ok(i) = usize::try_from((c.hour - from).num_hours()) else {
            continue;
        };
        let Some(b) = buckets.get_mut(i) else {
            continue;
        };
        *b.by_decision.entry(c.decision.clone()).or_default() += c.count;
        if c.decision != "allow" {
            *b.by_category.entry(c.category).or_default() += c.count;
        }
    }
    Ok(Json(OverviewSeries {
        window,
        bucket_secs: hour.num_seconds(),
        from,
        to,
        buckets,
    }))
}
