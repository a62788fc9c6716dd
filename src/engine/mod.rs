//! Scoring: text in, one score per category plus the rules that matched. Pure and synchronous.
//!
//! The worker only sees [`Scorer`]; the regex rule set is the first implementation, and the full
//! detection engine (normalisation, lexicons, learned model) plugs in behind the same trait.

mod rules;

pub use rules::{RuleSet, RulesError};

use crate::domain::Assessment;

/// What the scorer may know besides the text.
#[derive(Debug, Clone, Default)]
pub struct ScoreContext<'a> {
    pub channel_type: Option<&'a str>,
}

pub trait Scorer: Send + Sync {
    fn assess(&self, text: &str, ctx: &ScoreContext<'_>) -> Assessment;
}
