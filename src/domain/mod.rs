//! Types shared by every stage; no I/O here.

pub mod event;
pub mod verdict;

pub use event::{ChatEvent, EventKind, EventParseError, Message, User};
pub use verdict::{
    Assessment, BanPlan, Category, Contribution, Decision, Reason, RuleMatch, RuleMode, Scores,
    Verdict,
};
