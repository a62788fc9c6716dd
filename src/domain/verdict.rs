//! What the engine and policy produce: scores per category, the rules that matched, the decision.

use serde::{Deserialize, Serialize};

/// The three categories every detector scores.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Toxicity,
    Spam,
    Explicit,
}

impl Category {
    pub const ALL: [Category; 3] = [Category::Toxicity, Category::Spam, Category::Explicit];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Toxicity => "toxicity",
            Category::Spam => "spam",
            Category::Explicit => "explicit",
        }
    }
}

impl std::str::FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "toxicity" => Ok(Category::Toxicity),
            "spam" => Ok(Category::Spam),
            "explicit" => Ok(Category::Explicit),
            other => Err(format!(
                "unknown category {other:?} (expected toxicity, spam or explicit)"
            )),
        }
    }
}

/// One score in [0, 1] per category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scores {
    pub toxicity: f64,
    pub spam: f64,
    pub explicit: f64,
}

impl Scores {
    pub fn get(&self, c: Category) -> f64 {
        match c {
            Category::Toxicity => self.toxicity,
            Category::Spam => self.spam,
            Category::Explicit => self.explicit,
        }
    }

    pub fn get_mut(&mut self, c: Category) -> &mut f64 {
        match c {
            Category::Toxicity => &mut self.toxicity,
            Category::Spam => &mut self.spam,
            Category::Explicit => &mut self.explicit,
        }
    }
}

/// A rule that matched, with the byte range of the match in the scored text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleMatch {
    pub rule_id: String,
    pub category: Category,
    pub score: f64,
    pub start: usize,
    pub end: usize,
    /// Set when the rule asks for a stronger decision than its score alone would give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Decision>,
}

/// Whether a rule acts or is only evaluated and logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    #[default]
    Enforce,
    Shadow,
}

/// One feature's share of a model score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub feature: String,
    /// What the feature adds to the logit.
    pub weight: f64,
}

/// Why a score is what it is; offsets are byte offsets into the original message text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// A regex rule matched (shadow rules appear here but change no score).
    Rule {
        rule_id: String,
        category: Category,
        score: f64,
        mode: RuleMode,
        start: usize,
        end: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<Decision>,
    },
    /// A lexicon term matched; `matched` is the original text it was found in.
    Term {
        term: String,
        category: Category,
        severity: u8,
        start: usize,
        end: usize,
        matched: String,
    },
    /// A spam or abuse signal and what it added to the category's score.
    Signal {
        signal: String,
        category: Category,
        value: f64,
        score: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<usize>,
    },
    /// The learned model's probability and the features that pushed it up most.
    Model {
        category: Category,
        probability: f64,
        top: Vec<Contribution>,
    },
}

/// What the engine found in one message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub scores: Scores,
    /// Enforced rule matches: the policy reads their actions.
    pub matches: Vec<RuleMatch>,
    /// Everything that contributed, for moderators.
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

/// The outcome for a message, from least to most severe.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    #[default]
    Allow,
    Flag,
    Block,
    Ban,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Flag => "flag",
            Decision::Block => "block",
            Decision::Ban => "ban",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Decision::Allow),
            "flag" => Ok(Decision::Flag),
            "block" => Ok(Decision::Block),
            "ban" => Ok(Decision::Ban),
            other => Err(format!(
                "unknown decision {other:?} (expected allow, flag, block or ban)"
            )),
        }
    }
}

/// A ban the policy asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanPlan {
    /// `None` bans permanently.
    pub timeout_minutes: Option<u32>,
    /// Shown to the user and moderators; names the decision and the strike count.
    pub reason: String,
    /// Strikes the user has, this one included.
    pub strikes: u32,
}

/// The decision with the reasons that led to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    /// Human-readable reason chain: which threshold, rule or strike decided.
    pub reasons: Vec<String>,
    /// Decided and logged, but nothing is to be done (global or per-rule shadow mode).
    #[serde(default)]
    pub shadow: bool,
    /// The user's role is exempt: logged, never actioned.
    #[serde(default)]
    pub exempt: bool,
    /// This decision counts as a strike against the user.
    #[serde(default)]
    pub strike: bool,
    /// Set when the decision is `ban`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<BanPlan>,
}
