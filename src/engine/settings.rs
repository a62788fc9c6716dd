//! `rules/engine.toml`: the engine's tunable numbers (stateful spam signals, how much an explicit
//! lexicon term weighs, how much to explain).

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const SETTINGS_FILE: &str = "engine.toml";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Many messages from one user in a short window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    pub window_secs: u64,
    /// This many messages in the window (this one included) raise spam; 0 turns it off.
    pub messages: u32,
    pub score: f64,
}

/// The same text posted again, or across channels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeats {
    pub window_secs: u64,
    /// Posted this many times in the window (this one included); 0 turns it off.
    pub same_text: u32,
    pub score: f64,
    /// Posted in this many different channels in the window; 0 turns it off.
    pub channels: u32,
    pub channels_score: f64,
}

/// What one block-list hit adds to spam on its own, whatever the model says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListScores {
    pub scam_domain: f64,
    pub suspicious_domain: f64,
    pub shortener: f64,
    pub invite: f64,
    pub scam_phrase: f64,
}

/// What an abuse pattern hit (see `patterns`) adds to toxicity on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternScores {
    /// A hit of intensity `i` adds 1 − (1 − per_intensity)^i …
    pub per_intensity: f64,
    /// … but never more than this.
    pub max: f64,
}

impl Default for PatternScores {
    fn default() -> Self {
        Self {
            per_intensity: 0.33,
            max: 0.8,
        }
    }
}

/// Links in ordinary chat: a message that is little more than a plain link (docs, a paste, a
/// video) is how people share things, not spam.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// A message with at most this many words besides its links, all of them plain (not on the
    /// scam or suspicious lists), with no scam phrase, is a lone link …
    pub lone_link_words: u32,
    /// … and the model's spam score for it is capped here (flood, repeats and rules still add).
    pub lone_link_spam_max: f64,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            lone_link_words: 3,
            lone_link_spam_max: 0.45,
        }
    }
}

/// Short messages (see `Engine::cap_short_toxicity`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortMessages {
    /// Messages of at most this many words …
    pub words: usize,
    /// … score at most this for toxicity on the model alone …
    pub model_only_max: f64,
    /// … and at most this with only mild lexicon, pattern or rule evidence.
    pub mild_max: f64,
}

impl Default for ShortMessages {
    fn default() -> Self {
        Self {
            words: 3,
            model_only_max: 0.5,
            mild_max: 0.8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub flood: Flood,
    pub repeats: Repeats,
    pub lists: ListScores,
    /// What one explicit lexicon term adds to the explicit score, by severity 1, 2, 3.
    pub explicit_term_scores: [f64; 3],
    /// Explain the model's score for categories at or above this probability.
    pub explain_above: f64,
    /// How many features an explanation lists.
    pub explain_top: usize,
    #[serde(default)]
    pub patterns: PatternScores,
    #[serde(default)]
    pub links: LinkSettings,
    #[serde(default)]
    pub short: ShortMessages,
}

impl EngineSettings {
    pub fn load(rules_dir: &Path) -> Result<Self, SettingsError> {
        let path = rules_dir.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let invalid = |message: String| SettingsError::Invalid {
            path: path.to_owned(),
            message,
        };
        let s: EngineSettings = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(format!("{name} = {v} is not in [0, 1]")))
            }
        };
        unit("flood.score", s.flood.score)?;
        unit("repeats.score", s.repeats.score)?;
        unit("repeats.channels_score", s.repeats.channels_score)?;
        unit("explain_above", s.explain_above)?;
        let l = &s.lists;
        for (name, v) in [
            ("lists.scam_domain", l.scam_domain),
            ("lists.suspicious_domain", l.suspicious_domain),
            ("lists.shortener", l.shortener),
            ("lists.invite", l.invite),
            ("lists.scam_phrase", l.scam_phrase),
            ("patterns.per_intensity", s.patterns.per_intensity),
            ("patterns.max", s.patterns.max),
            ("links.lone_link_spam_max", s.links.lone_link_spam_max),
            ("short.model_only_max", s.short.model_only_max),
            ("short.mild_max", s.short.mild_max),
        ] {
            unit(name, v)?;
        }
        for (i, v) in s.explicit_term_scores.iter().enumerate() {
            unit(&format!("explicit_term_scores[{i}]"), *v)?;
        }
        if s.flood.window_secs == 0 || s.repeats.window_secs == 0 {
            return Err(invalid("window_secs must be at least 1".into()));
        }
        Ok(s)
    }

    pub fn explicit_term_score(&self, severity: u8) -> f64 {
        let i = usize::from(severity.clamp(1, 3)) - 1;
        self.explicit_term_scores[i]
    }

    /// What one pattern hit of this intensity adds to toxicity.
    pub fn pattern_score(&self, intensity: f32) -> f64 {
        let p = &self.patterns;
        (1.0 - (1.0 - p.per_intensity).powf(f64::from(intensity).max(0.0))).min(p.max)
    }

    /// The longest window the worker must count activity over.
    pub fn activity_window_secs(&self) -> u64 {
        self.flood.window_secs.max(self.repeats.window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_settings_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let s = EngineSettings::load(&dir).unwrap();
        assert!(s.explicit_term_score(3) >= s.explicit_term_score(1));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/engine.toml"),
        )
        .unwrap()
        .replace("explain_above = ", "explain_above = 1");
        let e = EngineSettings::parse(&text, Path::new("e.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("explain_above"), "{e}");
    }
}
