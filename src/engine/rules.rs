//! Regex rules from `rules/rules.toml`: each with an id, a category, a pattern and a score, an
//! optional action floor and channel-type scope, and a mode (`enforce` or `shadow`). Rules match
//! the normalised text unless they ask for the raw one (`text = "raw"`). Scores of several
//! matches in one category combine as a noisy-or: 1 − Π(1 − sᵢ).

use std::path::{Path, PathBuf};

use regex::{Regex, RegexSet};
use serde::Deserialize;

use super::ScoreContext;
use super::normalize::{Normalized, normalize};
use crate::domain::{Assessment, Category, Decision, Reason, RuleMatch, RuleMode};

pub const RULES_FILE: &str = "rules.toml";

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: rule {id:?}: {message}")]
    Rule {
        path: PathBuf,
        id: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    category: String,
    pattern: String,
    score: f64,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Channel types the rule applies to; empty means all.
    #[serde(default)]
    channel_types: Vec<String>,
    #[serde(default)]
    mode: RuleMode,
    #[serde(default)]
    text: TextView,
}

/// Which text a rule's pattern runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TextView {
    #[default]
    Normalized,
    Raw,
}

#[derive(Debug)]
struct Rule {
    id: String,
    category: Category,
    score: f64,
    action: Option<Decision>,
    channel_types: Vec<String>,
    mode: RuleMode,
    regex: Regex,
}

/// A compiled rule file: one RegexSet per text view.
#[derive(Debug)]
pub struct RuleSet {
    normalized: RegexSet,
    raw: RegexSet,
    /// Rule indices behind each set's patterns.
    normalized_ids: Vec<usize>,
    raw_ids: Vec<usize>,
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Loads and compiles `<dir>/rules.toml`.
    pub fn load(dir: &Path) -> Result<Self, RulesError> {
        let path = dir.join(RULES_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| RulesError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Compiles rules from TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut rules = Vec::with_capacity(file.rules.len());
        let (mut normalized_ids, mut raw_ids) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for spec in file.rules {
            let err = |message: String| RulesError::Rule {
                path: path.to_owned(),
                id: spec.id.clone(),
                message,
            };
            if spec.id.trim().is_empty() {
                return Err(err("id is empty".into()));
            }
            if !seen.insert(spec.id.clone()) {
                return Err(err("duplicate id".into()));
            }
            let category: Category = spec.category.parse().map_err(err)?;
            if !(spec.score > 0.0 && spec.score <= 1.0) {
                return Err(err(format!("score {} is not in (0, 1]", spec.score)));
            }
            let action = spec
                .action
                .as_deref()
                .map(str::parse::<Decision>)
                .transpose()
                .map_err(err)?;
            let regex = Regex::new(&spec.pattern).map_err(|e| err(format!("bad pattern: {e}")))?;
            let _ = &spec.description;
            if spec.text == TextView::Raw {
                raw_ids.push(rules.len());
            } else {
                normalized_ids.push(rules.len());
            }
            rules.push(Rule {
                id: spec.id,
                category,
                score: spec.score,
                action,
                channel_types: spec.channel_types,
                mode: spec.mode,
                regex,
            });
        }
        let set = |ids: &[usize]| {
            RegexSet::new(ids.iter().map(|i| rules[*i].regex.as_str())).map_err(|e| {
                RulesError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                }
            })
        };
        Ok(Self {
            normalized: set(&normalized_ids)?,
            raw: set(&raw_ids)?,
            normalized_ids,
            raw_ids,
            rules,
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule counts per category, for `check-rules`.
    pub fn counts(&self) -> Vec<(Category, usize)> {
        Category::ALL
            .iter()
            .map(|c| (*c, self.rules.iter().filter(|r| r.category == *c).count()))
            .collect()
    }
}

impl RuleSet {
    /// Shadow rules, for `check-rules`.
    pub fn shadow_count(&self) -> usize {
        self.rules
            .iter()
            .filter(|r| r.mode == RuleMode::Shadow)
            .count()
    }

    /// Adds every matching rule in scope to `out`: enforced ones to its scores, matches and
    /// reasons, shadow ones to its reasons only. Offsets are mapped back to the raw text.
    pub fn evaluate(
        &self,
        raw: &str,
        normalized: &Normalized,
        ctx: &ScoreContext<'_>,
        out: &mut Assessment,
    ) {
        let views = [
            (&self.normalized, &self.normalized_ids, normalized.as_str()),
            (&self.raw, &self.raw_ids, raw),
        ];
        for (view, (set, ids, text)) in views.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            for index in set.matches(text).iter() {
                let rule = &self.rules[ids[index]];
                if !rule.channel_types.is_empty()
                    && !ctx
                        .channel_type
                        .is_some_and(|t| rule.channel_types.iter().any(|c| c == t))
                {
                    continue;
                }
                let Some(m) = rule.regex.find(text) else {
                    continue;
                };
                let (start, end) = if view == 0 {
                    let r = normalized.original_range(m.start(), m.end());
                    (r.start, r.end)
                } else {
                    (m.start(), m.end())
                };
                out.reasons.push(Reason::Rule {
                    rule_id: rule.id.clone(),
                    category: rule.category,
                    score: rule.score,
                    mode: rule.mode,
                    start,
                    end,
                    action: rule.action,
                });
                if rule.mode == RuleMode::Shadow {
                    tracing::info!(rule = %rule.id, "shadow rule matched");
                    metrics::counter!("chatguard_shadow_rule_matches_total", "rule" => rule.id.clone())
                        .increment(1);
                    continue;
                }
                let score = out.scores.get_mut(rule.category);
                *score = 1.0 - (1.0 - *score) * (1.0 - rule.score);
                out.matches.push(RuleMatch {
                    rule_id: rule.id.clone(),
                    category: rule.category,
                    score: rule.score,
                    start,
                    end,
                    action: rule.action,
                });
            }
        }
    }

    /// Rules alone on one message (normalises it first); for tests and `check-rules`.
    pub fn assess(&self, text: &str, ctx: &ScoreContext<'_>) -> Assessment {
        let mut out = Assessment::default();
        self.evaluate(text, &normalize(text), ctx, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
        [[rule]]
        id = "t1"
        category = "toxicity"
        pattern = '(?i)\bidiot\b'
        score = 0.5
        [[rule]]
        id = "t2"
        category = "toxicity"
        pattern = '(?i)\bworthless\b'
        score = 0.5
        [[rule]]
        id = "s1"
        category = "spam"
        pattern = '(?i)free'
        score = 0.3
        channel_types = ["livestream"]
    "#;

    fn set() -> RuleSet {
        RuleSet::parse(RULES, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn combines_matches_per_category_with_offsets() {
        let a = set().assess("you worthless IDIOT", &ScoreContext::default());
        assert!((a.scores.toxicity - 0.75).abs() < 1e-9);
        assert_eq!(a.scores.spam, 0.0);
        let m = a.matches.iter().find(|m| m.rule_id == "t1").unwrap();
        assert_eq!(&"you worthless IDIOT"[m.start..m.end], "IDIOT");
    }

    #[test]
    fn channel_scope_limits_rules() {
        let s = set();
        assert_eq!(
            s.assess("free stuff", &ScoreContext::default()).scores.spam,
            0.0
        );
        let ctx = ScoreContext {
            channel_type: Some("livestream"),
            ..Default::default()
        };
        assert!((s.assess("free stuff", &ctx).scores.spam - 0.3).abs() < 1e-9);
    }

    #[test]
    fn bad_rules_are_rejected_with_their_id() {
        let bad = |t: &str| {
            RuleSet::parse(t, Path::new("r.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = bad("[[rule]]\nid='x'\ncategory='toxicity'\npattern='('\nscore=0.5\n");
        assert!(e.contains("\"x\"") && e.contains("bad pattern"), "{e}");
        let e = bad("[[rule]]\nid='y'\ncategory='rude'\npattern='a'\nscore=0.5\n");
        assert!(e.contains("unknown category"), "{e}");
        let e = bad("[[rule]]\nid='z'\ncategory='spam'\npattern='a'\nscore=1.5\n");
        assert!(e.contains("score"), "{e}");
        let e = bad("[[rule]]\nid='z'\ncategory='spam'\npattern='a'\nscore=0.5\nactoin='ban'\n");
        assert!(e.contains("actoin"), "{e}");
    }

    #[test]
    fn shipped_rules_compile_and_score_the_fixtures_texts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let s = RuleSet::load(&dir).unwrap();
        assert!(s.counts().iter().all(|(_, n)| *n >= 3));
        let ctx = ScoreContext::default();
        let clean = s.assess(
            "gg everyone, anyone up for another ranked match tonight?",
            &ctx,
        );
        assert_eq!(clean.matches, vec![]);
        for (text, cat) in [
            (
                "you are a worthless idiot, nobody wants you here. kill yourself",
                Category::Toxicity,
            ),
            (
                "FREE V-BUCKS!!! Claim your prize now at https://bit.ly/free-vbucks-now",
                Category::Spam,
            ),
            (
                "send nudes baby, i want to see you naked",
                Category::Explicit,
            ),
        ] {
            let a = s.assess(text, &ctx);
            assert!(a.scores.get(cat) >= 0.8, "{text}: {a:?}");
        }
        for text in [
            "kill the boss first",
            "that play was sick",
            "I hate Mondays",
            "Scunthorpe United won",
        ] {
            let a = s.assess(text, &ctx);
            assert!(
                Category::ALL.iter().all(|c| a.scores.get(*c) < 0.6),
                "{text}: {a:?}"
            );
        }
    }
}
