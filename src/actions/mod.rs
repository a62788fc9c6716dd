//! What decisions do on Stream. [`plan`] turns a decision or a moderator's resolution into a list
//! of Stream calls, which is written as durable work in the same transaction as the decision;
//! [`runner`] carries it out with retries through [`executor`], which makes the calls with the
//! [`stream`] client of the event's app. [`email`] sends digests of blocks and bans.

pub mod email;
pub mod executor;
pub mod plan;
pub mod runner;
pub mod stream;

/// Statuses of a decision's actions, as stored in `decisions.action_status`.
pub mod status {
    /// Nothing to do (an allow).
    pub const NONE: &str = "none";
    /// Written as durable work; not yet carried out.
    pub const PENDING: &str = "pending";
    /// Every call carried out.
    pub const DONE: &str = "done";
    /// Stream refused for good (or the retry horizon passed), or an id was missing.
    pub const FAILED: &str = "failed";
    /// Shadow mode or an exempt role: logged, not acted on (see `would_do`).
    pub const SKIPPED: &str = "skipped";
    /// Dry-run: nothing is sent to Stream (see `would_do`).
    pub const WOULD_DO: &str = "would_do";
}
