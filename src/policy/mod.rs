//! Turns scores into a decision with thresholds from `rules/policy.toml`. Pure and synchronous.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{Assessment, Category, Decision, Verdict};

pub const POLICY_FILE: &str = "policy.toml";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Flag and block levels for one category.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub flag: f64,
    pub block: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    thresholds: BTreeMap<String, Threshold>,
}

/// Thresholds per category, with a version stored beside every decision.
#[derive(Debug, Clone)]
pub struct Policy {
    pub version: String,
    thresholds: BTreeMap<Category, Threshold>,
}

impl Policy {
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let path = dir.join(POLICY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut thresholds = BTreeMap::new();
        for (name, t) in file.thresholds {
            let category: Category = name.parse().map_err(&invalid)?;
            let ok = |v: f64| (0.0..=1.0).contains(&v);
            if !ok(t.flag) || !ok(t.block) || t.flag > t.block {
                return Err(invalid(format!(
                    "thresholds.{name}: need 0 ≤ flag ≤ block ≤ 1, got flag {} block {}",
                    t.flag, t.block
                )));
            }
            thresholds.insert(category, t);
        }
        for c in Category::ALL {
            if !thresholds.contains_key(&c) {
                return Err(invalid(format!("thresholds.{} is missing", c.as_str())));
            }
        }
        Ok(Self {
            version: file.version,
            thresholds,
        })
    }

    pub fn threshold(&self, c: Category) -> Threshold {
        self.thresholds.get(&c).copied().unwrap_or(Threshold {
            flag: 1.0,
            block: 1.0,
        })
    }

    /// The most severe outcome any category or rule calls for, with the reasons.
    pub fn decide(&self, a: &Assessment) -> Verdict {
        let mut decision = Decision::Allow;
        let mut reasons = Vec::new();
        for c in Category::ALL {
            let score = a.scores.get(c);
            let t = self.threshold(c);
            let (level, limit) = if score >= t.block {
                (Decision::Block, t.block)
            } else if score >= t.flag {
                (Decision::Flag, t.flag)
            } else {
                continue;
            };
            reasons.push(format!(
                "{} {score:.2} ≥ {} threshold {limit}",
                c.as_str(),
                level.as_str()
            ));
            decision = decision.max(level);
        }
        for m in &a.matches {
            if let Some(action) = m.action.filter(|act| *act > Decision::Allow) {
                reasons.push(format!("rule {} asks for {}", m.rule_id, action.as_str()));
                decision = decision.max(action);
            }
        }
        Verdict { decision, reasons }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RuleMatch, Scores};

    const POLICY: &str = r#"
        version = "t1"
        [thresholds.toxicity]
        flag = 0.6
        block = 0.85
        [thresholds.spam]
        flag = 0.7
        block = 0.9
        [thresholds.explicit]
        flag = 0.6
        block = 0.8
    "#;

    fn policy() -> Policy {
        Policy::parse(POLICY, Path::new("p.toml")).unwrap()
    }

    fn scores(toxicity: f64, spam: f64, explicit: f64) -> Assessment {
        Assessment {
            scores: Scores {
                toxicity,
                spam,
                explicit,
            },
            matches: vec![],
            reasons: vec![],
        }
    }

    #[test]
    fn thresholds_decide() {
        let p = policy();
        let cases = [
            ((0.0, 0.0, 0.0), Decision::Allow),
            ((0.59, 0.69, 0.59), Decision::Allow),
            ((0.6, 0.0, 0.0), Decision::Flag),
            ((0.0, 0.7, 0.0), Decision::Flag),
            ((0.0, 0.0, 0.8), Decision::Block),
            ((0.85, 0.7, 0.0), Decision::Block),
        ];
        for ((t, s, e), want) in cases {
            let v = p.decide(&scores(t, s, e));
            assert_eq!(v.decision, want, "{t} {s} {e}: {v:?}");
            assert_eq!(v.reasons.is_empty(), want == Decision::Allow);
        }
    }

    #[test]
    fn rule_action_can_raise_to_ban() {
        let mut a = scores(0.3, 0.0, 0.0);
        a.matches.push(RuleMatch {
            rule_id: "threat".into(),
            category: Category::Toxicity,
            score: 0.3,
            start: 0,
            end: 1,
            action: Some(Decision::Ban),
        });
        let v = policy().decide(&a);
        assert_eq!(v.decision, Decision::Ban);
        assert!(v.reasons[0].contains("threat"));
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let e = Policy::parse(
            "version='x'\n[thresholds.toxicity]\nflag=0.9\nblock=0.5\n",
            Path::new("p"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("flag ≤ block"), "{e}");
        let e = Policy::parse(
            "version='x'\n[thresholds.toxicity]\nflag=0.1\nblock=0.5\n",
            Path::new("p"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spam is missing") || e.contains("explicit is missing"),
            "{e}"
        );
    }

    #[test]
    fn shipped_policy_loads_with_documented_defaults() {
        let p = Policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
        assert_eq!(
            p.threshold(Category::Explicit),
            Threshold {
                flag: 0.6,
                block: 0.8
            }
        );
        assert_eq!(
            p.threshold(Category::Spam),
            Threshold {
                flag: 0.7,
                block: 0.9
            }
        );
        assert_eq!(
            p.threshold(Category::Toxicity),
            Threshold {
                flag: 0.6,
                block: 0.85
            }
        );
    }
}
