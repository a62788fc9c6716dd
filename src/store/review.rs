//! The moderators' review queue: API tokens, review items (one open item per message) with
//! claims and resolutions, the audit log, queue statistics and the labelled-data export.
//!
//! Claims and resolutions are single `update … where <guard> returning` statements, so two
//! moderators racing for one item cannot both win on either backend.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::rows::parse_json;
use super::{Db, Store, StoreError};
use crate::domain::{Category, Scores};

/// How often `last_used_at` is rewritten for a busy token; lookups in between only read.
const LAST_USED_GRANULARITY: Duration = Duration::seconds(60);
/// Characters of message text shown as the excerpt.
const EXCERPT_CHARS: usize = 140;

/// `select <every TokenRow column> from api_tokens` followed by `$rest`.
macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "select id, name, role, token_hash, created_at, revoked_at, last_used_at from api_tokens",
            $rest
        )
    };
}

/// Every `ReviewItemRow` column, for `select` and `returning`.
macro_rules! review_columns {
    () => {
        "id, app, message_id, decision_id, first_decision_id, status, category, decision, toxicity, spam, \
         explicit, score, text, cid, user_id, reasons, rule_ids, action_status, flags, claimed_by, \
         claim_expires_at, resolved_by, resolution, note, created_at, updated_at, resolved_at"
    };
}
pub(crate) use review_columns;

/// `col = <excluded.col if the incoming decision is newer, else the stored value>`.
macro_rules! newest {
    ($col:literal) => {
        concat!(
            $col,
            " = case when excluded.decision_id > review_items.decision_id then excluded.",
            $col,
            " else review_items.",
            $col,
            " end"
        )
    };
}
pub(crate) use newest;

/// The upsert of [`Store::open_review_item`] for decision `$decision_id`, to run on a pool or
/// inside a transaction; evaluates to the query (returning the item's id).
macro_rules! open_item_query {
    ($item:expr, $decision_id:expr) => {{
        let item: &$crate::store::NewReviewItem = $item;
        let (category, score) = $crate::store::top_category(&item.scores);
        let rule_ids = serde_json::to_string(&item.rule_ids).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query_scalar::<_, i64>(concat!(
            "insert into review_items (app, message_id, decision_id, first_decision_id, status, category,
                 decision, toxicity, spam, explicit, score, text, cid, user_id, reasons, rule_ids,
                 action_status, flags, created_at, updated_at)
             values ($16, $1, $2, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, $15, $15)
             on conflict (app, message_id) where status <> 'resolved' do update set
                 flags = review_items.flags + 1, updated_at = excluded.updated_at, ",
            $crate::store::review::newest!("category"), ", ", $crate::store::review::newest!("decision"), ", ", $crate::store::review::newest!("toxicity"), ", ",
            $crate::store::review::newest!("spam"), ", ", $crate::store::review::newest!("explicit"), ", ", $crate::store::review::newest!("score"), ", ",
            $crate::store::review::newest!("text"), ", ", $crate::store::review::newest!("reasons"), ", ", $crate::store::review::newest!("rule_ids"), ", ",
            $crate::store::review::newest!("action_status"), ", ", $crate::store::review::newest!("decision_id"),
            " returning id"
        ))
        .bind(item.message_id.clone())
        .bind($decision_id)
        .bind(category.as_str())
        .bind(item.decision.clone())
        .bind(item.scores.toxicity)
        .bind(item.scores.spam)
        .bind(item.scores.explicit)
        .bind(score)
        .bind(item.text.clone())
        .bind(item.cid.clone())
        .bind(item.user_id.clone())
        .bind(item.reasons.clone())
        .bind(rule_ids)
        .bind(item.action_status.clone())
        .bind(item.at)
        .bind(item.app.clone())
    }};
}
pub(crate) use open_item_query;

/// What an API token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "moderator" => Ok(Role::Moderator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected viewer, moderator or admin)"
            )),
        }
    }
}

/// A stored API token (the secret itself is never stored).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    /// The role, or None if the stored text is not one (the schema's check prevents that).
    pub fn role(&self) -> Option<Role> {
        self.role.parse().ok()
    }
}

/// The hex SHA-256 of a token secret, as stored in `api_tokens.token_hash`.
///
/// Secrets carry 256 random bits, so a fast unsalted hash is enough: there is nothing to guess
/// that a slow password hash would protect.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A review item's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Open,
    Claimed,
    /// Resolved by a moderator; waiting for Stream to carry the resolution out.
    Resolving,
    Resolved,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Claimed => "claimed",
            ReviewStatus::Resolving => "resolving",
            ReviewStatus::Resolved => "resolved",
        }
    }
}

impl FromStr for ReviewStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(ReviewStatus::Open),
            "claimed" => Ok(ReviewStatus::Claimed),
            "resolving" => Ok(ReviewStatus::Resolving),
            "resolved" => Ok(ReviewStatus::Resolved),
            other => Err(format!(
                "unknown status {other:?} (expected open, claimed, resolving or resolved)"
            )),
        }
    }
}

/// How a moderator resolved an item. `Remove` and `Ban` uphold chatguard's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    Approve,
    Remove,
    Ban,
    Dismiss,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Approve => "approve",
            Resolution::Remove => "remove",
            Resolution::Ban => "ban",
            Resolution::Dismiss => "dismiss",
        }
    }

    /// Whether the moderator agreed that the message was bad.
    pub fn upholds(self) -> bool {
        matches!(self, Resolution::Remove | Resolution::Ban)
    }
}

impl FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "approve" => Ok(Resolution::Approve),
            "remove" => Ok(Resolution::Remove),
            "ban" => Ok(Resolution::Ban),
            "dismiss" => Ok(Resolution::Dismiss),
            other => Err(format!(
                "unknown resolution {other:?} (expected approve, remove, ban or dismiss)"
            )),
        }
    }
}

/// A flag (or block or ban) to put in front of moderators. JSON columns arrive serialised.
#[derive(Debug, Clone)]
pub struct NewReviewItem {
    /// The API key of the app the message belongs to.
    pub app: String,
    pub message_id: String,
    pub decision_id: i64,
    pub decision: String,
    pub scores: Scores,
    pub text: String,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub reasons: String,
    /// Ids of the rules that matched.
    pub rule_ids: Vec<String>,
    pub action_status: String,
    pub at: DateTime<Utc>,
}

/// The highest-scoring category (the first of equals in [`Category::ALL`] order) and its score.
pub fn top_category(scores: &Scores) -> (Category, f64) {
    Category::ALL
        .iter()
        .fold((Category::Toxicity, f64::NEG_INFINITY), |best, &c| {
            if scores.get(c) > best.1 {
                (c, scores.get(c))
            } else {
                best
            }
        })
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReviewItemRow {
    pub id: i64,
    pub app: String,
    pub message_id: String,
    /// The latest decision on the message.
    pub decision_id: i64,
    /// The decision that opened the item.
    pub first_decision_id: i64,
    pub status: String,
    pub category: String,
    pub decision: String,
    pub toxicity: f64,
    pub spam: f64,
    pub explicit: f64,
    /// The highest of the three scores.
    pub score: f64,
    pub text: String,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    pub reasons: String,
    pub rule_ids: String,
    pub action_status: String,
    pub flags: i64,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl ReviewItemRow {
    /// The rule ids as a list (empty if the stored text is not a JSON list of strings).
    pub fn rule_id_list(&self) -> Vec<String> {
        serde_json::from_str(&self.rule_ids).unwrap_or_default()
    }

    /// The status at `now`: a claim past its expiry counts as open.
    pub fn effective_status(&self, now: DateTime<Utc>) -> ReviewStatus {
        match self.status.as_str() {
            "resolved" => ReviewStatus::Resolved,
            "resolving" => ReviewStatus::Resolving,
            "claimed" if self.claim_expires_at.is_some_and(|t| t > now) => ReviewStatus::Claimed,
            _ => ReviewStatus::Open,
        }
    }

    /// The item as the API shows it, with the JSON columns expanded and an excerpt of the text.
    pub fn view(&self) -> ReviewItemView {
        ReviewItemView {
            id: self.id,
            app: self.app.clone(),
            message_id: self.message_id.clone(),
            decision_id: self.decision_id,
            first_decision_id: self.first_decision_id,
            status: self.status.clone(),
            category: self.category.clone(),
            decision: self.decision.clone(),
            scores: Scores {
                toxicity: self.toxicity,
                spam: self.spam,
                explicit: self.explicit,
            },
            score: self.score,
            text: self.text.clone(),
            excerpt: crate::actions::email::excerpt(&self.text, EXCERPT_CHARS),
            cid: self.cid.clone(),
            user_id: self.user_id.clone(),
            reasons: parse_json(&self.reasons),
            rule_ids: self.rule_id_list(),
            action_status: self.action_status.clone(),
            flags: self.flags,
            claimed_by: self.claimed_by.clone(),
            claim_expires_at: self.claim_expires_at,
            resolved_by: self.resolved_by.clone(),
            resolution: self.resolution.clone(),
            note: self.note.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            resolved_at: self.resolved_at,
        }
    }
}

/// A review item as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ReviewItem)]
pub struct ReviewItemView {
    pub id: i64,
    /// The API key of the app the message belongs to.
    pub app: String,
    pub message_id: String,
    /// The latest decision on the message.
    pub decision_id: i64,
    /// The decision that opened the item.
    pub first_decision_id: i64,
    /// `open`, `claimed` or `resolved`, as stored: a claim past `claim_expires_at` no longer
    /// holds.
    pub status: String,
    /// The category with the highest score: `toxicity`, `spam` or `explicit`.
    pub category: String,
    /// The latest decision: `flag`, `block` or `ban`.
    pub decision: String,
    pub scores: Scores,
    /// The highest of the three scores.
    pub score: f64,
    pub text: String,
    /// The start of the text.
    pub excerpt: String,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    /// The decision's reasons.
    pub reasons: serde_json::Value,
    pub rule_ids: Vec<String>,
    /// What chatguard already did on Stream: `pending`, `done`, `failed`, `skipped`, `would_do`.
    pub action_status: String,
    /// How many decisions flagged the message.
    pub flags: i64,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    /// `approve`, `remove`, `ban` or `dismiss`.
    pub resolution: Option<String>,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The order of a review-item listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewSort {
    #[default]
    Newest,
    Oldest,
    /// Highest score first. An item's score changes when a new flag is added to it, so a page
    /// walk in this order can miss or repeat an item that is flagged again meanwhile.
    Score,
}

impl ReviewSort {
    fn tag(self) -> &'static str {
        match self {
            ReviewSort::Newest => "n",
            ReviewSort::Oldest => "o",
            ReviewSort::Score => "s",
        }
    }
}

impl FromStr for ReviewSort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "newest" => Ok(ReviewSort::Newest),
            "oldest" => Ok(ReviewSort::Oldest),
            "score" => Ok(ReviewSort::Score),
            other => Err(format!(
                "unknown sort {other:?} (expected newest, oldest or score)"
            )),
        }
    }
}

/// Which review items to list. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    /// The app's API key.
    pub app: Option<String>,
    /// Matched against the status at `now`: an expired claim is open.
    pub status: Option<ReviewStatus>,
    pub category: Option<String>,
    pub decision: Option<String>,
    pub cid: Option<String>,
    pub user_id: Option<String>,
    /// Items whose highest score is at least this.
    pub min_score: Option<f64>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created strictly before.
    pub created_before: Option<DateTime<Utc>>,
    pub sort: ReviewSort,
    /// When claims are judged expired; the current time when None.
    pub now: Option<DateTime<Utc>>,
}

/// A position in a listing: the sort keys of the last item of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    sort: ReviewSort,
    created_at: DateTime<Utc>,
    score: f64,
    id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("invalid cursor")]
    Invalid,
    #[error("the cursor belongs to a listing in another order")]
    WrongSort,
}

impl Cursor {
    fn after(sort: ReviewSort, row: &ReviewItemRow) -> Self {
        Self {
            sort,
            created_at: row.created_at,
            score: row.score,
            id: row.id,
        }
    }

    /// An opaque, URL-safe text for the client to send back.
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}.{}.{}.{:x}.{}",
            self.sort.tag(),
            self.created_at.timestamp(),
            self.created_at.timestamp_subsec_nanos(),
            self.score.to_bits(),
            self.id
        ))
    }

    /// Reads a cursor made by [`Cursor::encode`] for a listing in order `sort`.
    pub fn decode(text: &str, sort: ReviewSort) -> Result<Self, CursorError> {
        let bytes = hex::decode(text).map_err(|_| CursorError::Invalid)?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError::Invalid)?;
        let parts: Vec<&str> = text.split('.').collect();
        let [tag, secs, nanos, score, id] = parts.as_slice() else {
            return Err(CursorError::Invalid);
        };
        let found = [ReviewSort::Newest, ReviewSort::Oldest, ReviewSort::Score]
            .into_iter()
            .find(|s| s.tag() == *tag)
            .ok_or(CursorError::Invalid)?;
        let secs: i64 = secs.parse().map_err(|_| CursorError::Invalid)?;
        let nanos: u32 = nanos.parse().map_err(|_| CursorError::Invalid)?;
        let created_at = Utc
            .timestamp_opt(secs, nanos)
            .single()
            .ok_or(CursorError::Invalid)?;
        let score = u64::from_str_radix(score, 16)
            .map(f64::from_bits)
            .map_err(|_| CursorError::Invalid)?;
        let id: i64 = id.parse().map_err(|_| CursorError::Invalid)?;
        if !score.is_finite() {
            return Err(CursorError::Invalid);
        }
        if found != sort {
            return Err(CursorError::WrongSort);
        }
        Ok(Self {
            sort,
            created_at,
            score,
            id,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// What [`Store::claim_review_item`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The moderator holds the item until `claim_expires_at`.
    Claimed(ReviewItemRow),
    /// Another moderator holds it.
    HeldBy {
        moderator: String,
        until: DateTime<Utc>,
    },
    /// Nothing left to claim.
    AlreadyResolved(ReviewItemRow),
}

/// What [`Store::release_review_item`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseOutcome {
    Released(ReviewItemRow),
    /// The moderator held no claim on the item; it is unchanged.
    NotHeld(ReviewItemRow),
}

/// What [`Store::resolve_review_item`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolveOutcome {
    /// Resolved, or resolving until the durable work `action_id` ends.
    Resolved {
        row: ReviewItemRow,
        action_id: Option<i64>,
    },
    /// Resolved before; the item is unchanged.
    AlreadyResolved(ReviewItemRow),
    /// Another moderator's claim is in force.
    HeldBy {
        moderator: String,
        until: DateTime<Utc>,
    },
}

/// A moderator's resolution, as [`Store::resolve_review_item`] records it.
#[derive(Debug, Clone)]
pub struct ResolveRequest<'a> {
    pub id: i64,
    pub moderator: &'a str,
    pub resolution: Resolution,
    pub note: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// JSON list of the Stream calls to make; None: nothing to call, resolved at once.
    pub steps: Option<String>,
    pub context: super::ActionContext,
    /// The audit row's outcome when nothing is called (dry-run, dismiss).
    pub outcome_without_calls: serde_json::Value,
}

/// How moderators judged the items of one rule or category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UpheldStats {
    /// Resolved items.
    pub reviewed: i64,
    /// Resolved with remove or ban.
    pub upheld: i64,
    /// `upheld / reviewed`.
    pub upheld_share: f64,
}

/// The queue at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReviewStats {
    /// Items not resolved, by category.
    pub open_by_category: BTreeMap<String, i64>,
    /// Age of the oldest item not resolved.
    pub oldest_open_secs: Option<f64>,
    pub resolved: i64,
    /// Median of `resolved_at - created_at` over resolved items.
    pub median_resolution_secs: Option<f64>,
    pub by_rule: BTreeMap<String, UpheldStats>,
    pub by_category: BTreeMap<String, UpheldStats>,
}

/// One audit-log entry. `before` and `after` are JSON text.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub at: DateTime<Utc>,
}

impl AuditRow {
    pub fn view(&self) -> AuditEntry {
        AuditEntry {
            id: self.id,
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            before: self.before.as_deref().map(parse_json),
            after: self.after.as_deref().map(parse_json),
            at: self.at,
        }
    }
}

/// One audit-log entry as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// The name of the token that acted.
    pub actor: String,
    /// e.g. `review_item.resolve`, `user.unban`, `token.create`.
    pub action: String,
    /// e.g. `review_item:42`, `user:u-1`, `token:alice`.
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// A resolved item as tallied for stats: category, rule ids, resolution, created and resolved.
type ResolvedItem = (String, String, String, DateTime<Utc>, DateTime<Utc>);

/// A value bound to a listing query built at run time.
pub(super) enum Param {
    Text(String),
    Float(f64),
    Time(DateTime<Utc>),
    Int(i64),
}

/// The middle of the sorted values (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

impl Store {
    /// Creates a token and returns it with its secret, which is not stored and cannot be
    /// shown again; None when the name is taken.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<Option<(TokenRow, String)>, StoreError> {
        let secret = format!("cg_{}", hex::encode(rand::random::<[u8; 32]>()));
        let row: Option<TokenRow> = on_pool!(&self.db, pool => sqlx::query_as(
            "insert into api_tokens (name, role, token_hash, created_at) values ($1, $2, $3, $4)
             on conflict (name) do nothing
             returning id, name, role, token_hash, created_at, revoked_at, last_used_at",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash_token(&secret))
        .bind(now)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(|r| (r, secret)))
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        Ok(
            on_pool!(&self.reads, pool => sqlx::query_as(select_tokens!(" order by id"))
            .fetch_all(pool)
            .await?),
        )
    }

    /// Revokes the named token: true if it was active, false if already revoked.
    pub async fn revoke_token(&self, name: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = on_pool!(&self.db, pool => sqlx::query(
            "update api_tokens set revoked_at = $2 where name = $1 and revoked_at is null",
        )
        .bind(name)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        if done > 0 {
            return Ok(true);
        }
        let exists: Option<i64> = on_pool!(&self.db, pool => sqlx::query_scalar(
            "select id from api_tokens where name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        exists.map(|_| false).ok_or(StoreError::NotFound)
    }

    /// The active token with this hash, recording the use (at most once a minute per token).
    pub async fn token_by_hash(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRow>, StoreError> {
        let row: Option<TokenRow> = on_pool!(&self.reads, pool => sqlx::query_as(
            select_tokens!(" where token_hash = $1 and revoked_at is null"),
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?);
        let Some(mut row) = row else {
            return Ok(None);
        };
        if row
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_GRANULARITY)
        {
            on_pool!(&self.db, pool => {
                sqlx::query("update api_tokens set last_used_at = $2 where id = $1")
                    .bind(row.id)
                    .bind(now)
                    .execute(pool)
                    .await?;
            });
            row.last_used_at = Some(now);
        }
        Ok(Some(row))
    }

    /// Opens a review item for the message, or adds this flag to the one already open (flags
    /// + 1; the newer decision's id, scores, reasons and rules win). Returns the item's id.
    pub async fn open_review_item(&self, item: &NewReviewItem) -> Result<i64, StoreError> {
        Ok(
            on_pool!(&self.db, pool => open_item_query!(item, item.decision_id).fetch_one(pool).await?),
        )
    }

    pub async fn get_review_item(&self, id: i64) -> Result<ReviewItemRow, StoreError> {
        self.review_item_on(&self.reads, id).await
    }

    async fn review_item_on(&self, db: &Db, id: i64) -> Result<ReviewItemRow, StoreError> {
        let row: Option<ReviewItemRow> = on_pool!(db, pool => sqlx::query_as(
            concat!("select ", review_columns!(), " from review_items where id = $1"),
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        row.ok_or(StoreError::NotFound)
    }

    /// One page of items matching `filter`, after `cursor`, and the cursor of the next page
    /// (None on the last). Keyset pagination on (created_at or score, id): items added while a
    /// client pages neither repeat nor push others off their page (see [`ReviewSort::Score`]
    /// for the one caveat).
    pub async fn list_review_items(
        &self,
        filter: &ReviewFilter,
        limit: i64,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<ReviewItemRow>, Option<Cursor>), StoreError> {
        // The SQL text is built once for both backends, like every other query here;
        // sqlx's QueryBuilder would need one builder per backend.
        let mut sql = format!("select {} from review_items where true", review_columns!());
        let mut params: Vec<Param> = Vec::new();
        let bind = |params: &mut Vec<Param>, p: Param| {
            params.push(p);
            format!("${}", params.len())
        };
        if let Some(status) = filter.status {
            let now = bind(
                &mut params,
                Param::Time(filter.now.unwrap_or_else(Utc::now)),
            );
            sql.push_str(&match status {
                ReviewStatus::Open => format!(
                    " and (status = 'open' or (status = 'claimed' and claim_expires_at <= {now}))"
                ),
                ReviewStatus::Claimed => {
                    format!(" and status = 'claimed' and claim_expires_at > {now}")
                }
                ReviewStatus::Resolving => " and status = 'resolving'".to_owned(),
                ReviewStatus::Resolved => " and status = 'resolved'".to_owned(),
            });
        }
        for (column, value) in [
            ("category", &filter.category),
            ("decision", &filter.decision),
            ("cid", &filter.cid),
            ("app", &filter.app),
            ("user_id", &filter.user_id),
        ] {
            if let Some(v) = value {
                let p = bind(&mut params, Param::Text(v.clone()));
                sql.push_str(&format!(" and {column} = {p}"));
            }
        }
        if let Some(min) = filter.min_score {
            sql.push_str(&format!(
                " and score >= {}",
                bind(&mut params, Param::Float(min))
            ));
        }
        if let Some(t) = filter.created_after {
            sql.push_str(&format!(
                " and created_at >= {}",
                bind(&mut params, Param::Time(t))
            ));
        }
        if let Some(t) = filter.created_before {
            sql.push_str(&format!(
                " and created_at < {}",
                bind(&mut params, Param::Time(t))
            ));
        }
        let (key, op, order) = match filter.sort {
            ReviewSort::Newest => ("created_at", "<", "created_at desc, id desc"),
            ReviewSort::Oldest => ("created_at", ">", "created_at, id"),
            ReviewSort::Score => ("score", "<", "score desc, id desc"),
        };
        if let Some(c) = cursor {
            let k = match filter.sort {
                ReviewSort::Score => bind(&mut params, Param::Float(c.score)),
                _ => bind(&mut params, Param::Time(c.created_at)),
            };
            let id = bind(&mut params, Param::Int(c.id));
            // A row value, so that PostgreSQL starts the index walk at the cursor instead of
            // reading and discarding every row before it (17 ms at page 1,600 of 100k items).
            sql.push_str(&format!(" and ({key}, id) {op} ({k}, {id})"));
        }
        let limit = limit.max(1);
        let lim = bind(&mut params, Param::Int(limit + 1));
        sql.push_str(&format!(" order by {order} limit {lim}"));

        let mut rows: Vec<ReviewItemRow> = on_pool!(&self.reads, pool => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for p in params {
                q = match p {
                    Param::Text(v) => q.bind(v),
                    Param::Float(v) => q.bind(v),
                    Param::Time(v) => q.bind(v),
                    Param::Int(v) => q.bind(v),
                };
            }
            q.fetch_all(pool).await?
        });
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = more
            .then(|| rows.last().map(|r| Cursor::after(filter.sort, r)))
            .flatten();
        Ok((rows, next))
    }

    /// Claims the item for `moderator` until `now + ttl`, unless another moderator's claim is
    /// in force. Claiming again extends one's own claim.
    pub async fn claim_review_item(
        &self,
        id: i64,
        moderator: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        // A lost race can leave the item free by the time it is read back; try again then.
        for _ in 0..3 {
            let row: Option<ReviewItemRow> = on_pool!(&self.db, pool => sqlx::query_as(concat!(
                "update review_items
                 set status = 'claimed', claimed_by = $2, claim_expires_at = $3, updated_at = $4
                 where id = $1 and status not in ('resolved', 'resolving')
                   and (claimed_by is null or claimed_by = $2 or claim_expires_at <= $4)
                 returning ",
                review_columns!()
            ))
            .bind(id)
            .bind(moderator)
            .bind(now + ttl)
            .bind(now)
            .fetch_optional(pool)
            .await?);
            if let Some(row) = row {
                return Ok(ClaimOutcome::Claimed(row));
            }
            let row = self.review_item_on(&self.db, id).await?;
            if matches!(row.status.as_str(), "resolved" | "resolving") {
                return Ok(ClaimOutcome::AlreadyResolved(row));
            }
            if let (Some(by), Some(until)) = (row.claimed_by, row.claim_expires_at)
                && by != moderator
                && until > now
            {
                return Ok(ClaimOutcome::HeldBy {
                    moderator: by,
                    until,
                });
            }
        }
        Err(StoreError::Db(sqlx::Error::Protocol(
            "review item claim kept changing underfoot".into(),
        )))
    }

    /// Gives up `moderator`'s claim on the item.
    pub async fn release_review_item(
        &self,
        id: i64,
        moderator: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        let row: Option<ReviewItemRow> = on_pool!(&self.db, pool => sqlx::query_as(concat!(
            "update review_items
             set status = 'open', claimed_by = null, claim_expires_at = null
             where id = $1 and status = 'claimed' and claimed_by = $2
             returning ",
            review_columns!()
        ))
        .bind(id)
        .bind(moderator)
        .fetch_optional(pool)
        .await?);
        match row {
            Some(row) => Ok(ReleaseOutcome::Released(row)),
            None => Ok(ReleaseOutcome::NotHeld(
                self.review_item_on(&self.db, id).await?,
            )),
        }
    }

    /// Resolves the item, unless another moderator's claim is in force; resolving a resolved
    /// (or resolving) item changes nothing and returns it as it is. With Stream calls to make
    /// the item becomes `resolving` and the calls are written as durable work, the audit row in
    /// the same transaction; the end of that work resolves it (or puts it back as it was).
    /// Without calls it is resolved at once.
    pub async fn resolve_review_item(
        &self,
        req: &ResolveRequest<'_>,
    ) -> Result<ResolveOutcome, StoreError> {
        let now = req.now;
        let status = if req.steps.is_some() {
            "resolving"
        } else {
            "resolved"
        };
        for _ in 0..3 {
            let resolved: Option<(ReviewItemRow, Option<i64>)> = on_pool!(&self.db, pool => {
                let mut tx = pool.begin().await?;
                let row: Option<ReviewItemRow> = sqlx::query_as(concat!(
                    "update review_items
                     set status = $6, resolved_by = $2, resolution = $3, note = $4,
                         resolved_at = case when $6 = 'resolved' then $5 else null end,
                         updated_at = $5, claimed_by = null, claim_expires_at = null
                     where id = $1 and status not in ('resolved', 'resolving')
                       and (claimed_by is null or claimed_by = $2 or claim_expires_at <= $5)
                     returning ",
                    review_columns!()
                ))
                .bind(req.id)
                .bind(req.moderator)
                .bind(req.resolution.as_str())
                .bind(req.note)
                .bind(now)
                .bind(status)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    None => None,
                    Some(row) => {
                        let target = format!("review_item:{}", row.id);
                        let action_id = match &req.steps {
                            Some(steps) => {
                                let action = super::NewAction {
                                    app: row.app.clone(),
                                    origin: super::Origin::Resolution,
                                    decision_id: None,
                                    review_item_id: Some(row.id),
                                    steps: steps.clone(),
                                    context: Some(serde_json::to_string(&req.context).unwrap_or_default()),
                                };
                                let id = super::actions::insert_action!(tx, action, now);
                                let after = serde_json::json!({"item": row.view(), "waiting_for": "stream"});
                                super::actions::insert_audit_tx!(tx, req.moderator, "review_item.resolve_requested",
                                    &target, req.context.audit_before.as_ref(), Some(&after), now);
                                Some(id)
                            }
                            None => {
                                let after = serde_json::json!({"item": row.view(), "outcome": req.outcome_without_calls});
                                super::actions::insert_audit_tx!(tx, req.moderator, "review_item.resolve",
                                    &target, req.context.audit_before.as_ref(), Some(&after), now);
                                None
                            }
                        };
                        tx.commit().await?;
                        Some((row, action_id))
                    }
                }
            });
            if let Some((row, action_id)) = resolved {
                return Ok(ResolveOutcome::Resolved { row, action_id });
            }
            let row = self.review_item_on(&self.db, req.id).await?;
            if matches!(row.status.as_str(), "resolved" | "resolving") {
                return Ok(ResolveOutcome::AlreadyResolved(row));
            }
            if let (Some(by), Some(until)) = (row.claimed_by, row.claim_expires_at)
                && by != req.moderator
                && until > now
            {
                return Ok(ResolveOutcome::HeldBy {
                    moderator: by,
                    until,
                });
            }
        }
        Err(StoreError::Db(sqlx::Error::Protocol(
            "review item claim kept changing underfoot".into(),
        )))
    }

    /// Writes a moderator's unban as durable work, audited in the same transaction.
    pub async fn request_unban(
        &self,
        app: &str,
        steps: &str,
        context: &super::ActionContext,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(on_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let action = super::NewAction {
                app: app.to_owned(),
                origin: super::Origin::Unban,
                decision_id: None,
                review_item_id: None,
                steps: steps.to_owned(),
                context: Some(serde_json::to_string(context).unwrap_or_default()),
            };
            let id = super::actions::insert_action!(tx, action, now);
            let target = format!("user:{}", context.user_id.as_deref().unwrap_or_default());
            super::actions::insert_audit_tx!(tx, &context.actor, "user.unban_requested", &target,
                context.audit_before.as_ref(), None::<&serde_json::Value>, now);
            tx.commit().await?;
            id
        }))
    }

    /// Appends to the audit log; returns the entry's id.
    pub async fn insert_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        before: Option<&serde_json::Value>,
        after: Option<&serde_json::Value>,
        at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(on_pool!(&self.db, pool => sqlx::query_scalar(
            "insert into audit_log (actor, action, target, before, after, at)
             values ($1, $2, $3, $4, $5, $6) returning id",
        )
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(before.map(|v| v.to_string()))
        .bind(after.map(|v| v.to_string()))
        .bind(at)
        .fetch_one(pool)
        .await?))
    }

    /// Audit entries newest first, with ids below `before_id` when given.
    pub async fn list_audit(
        &self,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(
            "select id, actor, action, target, before, after, at from audit_log
             where id < $1 order by id desc limit $2",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Open items by category, the median time to resolution, and per rule and per category
    /// the share of resolved items that moderators upheld.
    pub async fn review_stats(&self, now: DateTime<Utc>) -> Result<ReviewStats, StoreError> {
        let open: Vec<(String, i64)> = on_pool!(&self.reads, pool => sqlx::query_as(
            "select category, count(*) from review_items where status <> 'resolved'
             group by category order by category",
        )
        .fetch_all(pool)
        .await?);
        let oldest: Option<DateTime<Utc>> = on_pool!(&self.reads, pool => sqlx::query_scalar(
            "select created_at from review_items where status <> 'resolved'
             order by created_at limit 1",
        )
        .fetch_optional(pool)
        .await?);
        // Rule ids are JSON lists and the median needs every duration, so the resolved items
        // are tallied here rather than in SQL that differs between backends.
        let resolved: Vec<ResolvedItem> = on_pool!(&self.reads, pool => sqlx::query_as(
            "select category, rule_ids, resolution, created_at, resolved_at from review_items
             where status = 'resolved' and resolution is not null and resolved_at is not null",
        )
        .fetch_all(pool)
        .await?);
        let mut stats = ReviewStats {
            open_by_category: open.into_iter().collect(),
            oldest_open_secs: oldest.map(|t| secs_between(t, now)),
            resolved: resolved.len() as i64,
            ..ReviewStats::default()
        };
        let mut durations = Vec::with_capacity(resolved.len());
        for (category, rule_ids, resolution, created_at, resolved_at) in resolved {
            durations.push(secs_between(created_at, resolved_at));
            let upheld = resolution
                .parse::<Resolution>()
                .is_ok_and(Resolution::upholds);
            let rules: Vec<String> = serde_json::from_str(&rule_ids).unwrap_or_default();
            let s = stats.by_category.entry(category).or_default();
            s.reviewed += 1;
            s.upheld += i64::from(upheld);
            for rule in rules {
                let s = stats.by_rule.entry(rule).or_default();
                s.reviewed += 1;
                s.upheld += i64::from(upheld);
            }
        }
        for s in stats
            .by_rule
            .values_mut()
            .chain(stats.by_category.values_mut())
        {
            s.upheld_share = s.upheld as f64 / s.reviewed as f64;
        }
        stats.median_resolution_secs = median(durations);
        Ok(stats)
    }

    /// Resolved items resolved at or after `since`, with ids above `after_id`, by id: page on
    /// with the last id returned.
    pub async fn reviewed_labels(
        &self,
        since: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ReviewItemRow>, StoreError> {
        Ok(on_pool!(&self.reads, pool => sqlx::query_as(concat!(
            "select ",
            review_columns!(),
            " from review_items where status = 'resolved' and resolved_at >= $1 and id > $2
              order by id limit $3"
        ))
        .bind(since)
        .bind(after_id)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            sort: ReviewSort::Score,
            created_at: Utc.timestamp_opt(1_790_000_000, 123_456_000).unwrap(),
            score: 0.7312,
            id: 42,
        };
        let text = c.encode();
        assert_eq!(Cursor::decode(&text, ReviewSort::Score), Ok(c));
        assert_eq!(
            Cursor::decode(&text, ReviewSort::Newest),
            Err(CursorError::WrongSort)
        );
        for bad in ["", "zz", "6e2e31", &hex::encode("n.1.2.3ff0000000000000.x")] {
            assert_eq!(
                Cursor::decode(bad, ReviewSort::Newest),
                Err(CursorError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 10.0]), Some(3.5));
    }

    #[test]
    fn top_category_takes_the_highest_score_and_the_first_of_equals() {
        let s = |toxicity, spam, explicit| Scores {
            toxicity,
            spam,
            explicit,
        };
        assert_eq!(top_category(&s(0.1, 0.8, 0.3)), (Category::Spam, 0.8));
        assert_eq!(top_category(&s(0.5, 0.5, 0.5)), (Category::Toxicity, 0.5));
        assert_eq!(top_category(&s(0.0, 0.2, 0.9)), (Category::Explicit, 0.9));
    }
}
