//! Weighted abuse patterns from `rules/lexicon/patterns/*.tsv` (toxiscope-patterns, MIT; see
//! `rules/lexicon/SOURCES.md`): regular expressions for gaming insults ("noob", "ez", "git gud"),
//! threats, self-harm incitement, slurs and swearing in the languages common in game chat, each
//! with an intensity (0.8–3.0).
//!
//! Why patterns and not more lexicon terms: many of them are phrases with optional parts
//! (`i'?ll (hunt|find) you\s*down`) that a word list cannot express. Every hit is a model feature
//! (so training decides how much "sucks" weighs in a technical channel), and hits of patterns not
//! listed in `feature-only.txt` also add to toxicity directly, by intensity (`[patterns]` in
//! `engine.toml`): live chat's short insults are too rare in the labelled sets for the model to
//! learn them alone.
//!
//! All patterns run as one [`RegexSet`] over the normalised text; word boundaries are ASCII ones so
//! the set stays on the fast DFA engines.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use regex::{Regex, RegexSet};

pub const PATTERNS_DIR: &str = "lexicon/patterns";
/// Patterns (their regex source, exactly as in the TSV) that only feed the model.
pub const FEATURE_ONLY_FILE: &str = "feature-only.txt";

#[derive(Debug, thiserror::Error)]
pub enum PatternsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Set { path: PathBuf, message: String },
}

#[derive(Debug)]
pub struct Pattern {
    /// The file it came from (`insult`, `threat`, …).
    pub label: String,
    /// The regex as written in the file.
    pub source: String,
    pub intensity: f32,
    /// Adds to toxicity on its own (not listed in `feature-only.txt`).
    pub direct: bool,
    /// The model features' names: this pattern, and its file.
    pub feature: String,
    pub label_feature: String,
    regex: Regex,
}

impl Pattern {
    /// Lexicon-style severity 1–3 for reasons.
    pub fn severity(&self) -> u8 {
        if self.intensity < 1.5 {
            1
        } else if self.intensity < 2.5 {
            2
        } else {
            3
        }
    }
}

/// One pattern hit, in normalised-text byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternHit {
    pub pattern: u32,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
pub struct Patterns {
    set: RegexSet,
    patterns: Vec<Pattern>,
}

impl Patterns {
    /// No patterns (a rules folder without `lexicon/patterns/`).
    pub fn empty() -> Self {
        Self {
            set: RegexSet::empty(),
            patterns: Vec::new(),
        }
    }

    /// Loads every `*.tsv` under `<rules_dir>/lexicon/patterns`, in name order; a folder that does
    /// not exist means no patterns.
    pub fn load(rules_dir: &Path) -> Result<Self, PatternsError> {
        let dir = rules_dir.join(PATTERNS_DIR);
        if !dir.is_dir() {
            return Ok(Self::empty());
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PatternsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|source| PatternsError::Read {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
            .collect();
        files.sort();
        let only_path = dir.join(FEATURE_ONLY_FILE);
        let feature_only: HashSet<String> = if only_path.exists() {
            read(&only_path)?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        } else {
            HashSet::new()
        };
        let mut sources = Vec::new();
        for path in &files {
            let label = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (i, line) in read(path)?.lines().enumerate() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |message: String| PatternsError::Line {
                    path: path.clone(),
                    line: i + 1,
                    message,
                };
                let (source, intensity) = line
                    .split_once('\t')
                    .ok_or_else(|| bad("expected regex<TAB>intensity".into()))?;
                let intensity: f32 = intensity
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("intensity {intensity:?} is not a number")))?;
                if !(0.0..=5.0).contains(&intensity) {
                    return Err(bad(format!("intensity {intensity} is not in [0, 5]")));
                }
                sources.push((label.clone(), source.to_owned(), intensity, path.clone(), i));
            }
        }
        Self::build(sources, &feature_only, &dir)
    }

    fn build(
        sources: Vec<(String, String, f32, PathBuf, usize)>,
        feature_only: &HashSet<String>,
        dir: &Path,
    ) -> Result<Self, PatternsError> {
        let mut seen = HashSet::new();
        let mut patterns = Vec::new();
        for (label, source, intensity, path, line) in sources {
            // The same regex in two files (slurs are both identity_hate and racism) counts once.
            if !seen.insert(source.clone()) {
                continue;
            }
            let regex = Regex::new(&compile_form(&source)).map_err(|e| PatternsError::Line {
                path,
                line: line + 1,
                message: format!("bad pattern: {e}"),
            })?;
            patterns.push(Pattern {
                feature: format!("pattern {label}: {source}"),
                label_feature: format!("patterns: {label}"),
                direct: !feature_only.contains(&source),
                label,
                source,
                intensity,
                regex,
            });
        }
        let set = RegexSet::new(patterns.iter().map(|p| p.regex.as_str())).map_err(|e| {
            PatternsError::Set {
                path: dir.to_owned(),
                message: e.to_string(),
            }
        })?;
        Ok(Self { set, patterns })
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn get(&self, i: u32) -> &Pattern {
        &self.patterns[i as usize]
    }

    /// Appends the hits in `normalized` to `out` (not cleared).
    pub fn find(&self, normalized: &str, out: &mut Vec<PatternHit>) {
        if self.patterns.is_empty() {
            return;
        }
        for i in self.set.matches(normalized).iter() {
            if let Some(m) = self.patterns[i].regex.find(normalized) {
                out.push(PatternHit {
                    pattern: i as u32,
                    start: m.start(),
                    end: m.end(),
                });
            }
        }
    }
}

/// The pattern as compiled: case-insensitive, ASCII word boundaries (Unicode ones push the
/// regex crate off its DFAs onto a much slower engine for any non-ASCII text).
fn compile_form(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 16);
    out.push_str("(?i)");
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('b') => out.push_str("(?-u:\\b)"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Patterns {
        Patterns::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap()
    }

    fn labels(p: &Patterns, text: &str) -> Vec<String> {
        let mut hits = vec![];
        p.find(text, &mut hits);
        hits.iter()
            .map(|h| p.get(h.pattern).label.clone())
            .collect()
    }

    #[test]
    fn shipped_patterns_compile_and_deduplicate() {
        let p = shipped();
        assert!(p.len() > 250, "{}", p.len());
        let n = p
            .patterns
            .iter()
            .filter(|x| x.source == r"\bchink\b")
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn finds_gaming_insults_and_threats_with_offsets() {
        let p = shipped();
        assert!(labels(&p, "gg ez noob team").contains(&"insult".to_owned()));
        assert!(labels(&p, "i'll find where you live").contains(&"threat".to_owned()));
        let mut hits = vec![];
        p.find("you are a noob", &mut hits);
        let h = hits
            .iter()
            .find(|h| p.get(h.pattern).source == r"\bnoob\b")
            .unwrap();
        assert_eq!(&"you are a noob"[h.start..h.end], "noob");
        assert!(labels(&p, "the snooby kitten").is_empty());
    }

    #[test]
    fn escapes_other_than_word_boundaries_survive() {
        assert_eq!(compile_form(r"\bf\W*ck\b"), r"(?i)(?-u:\b)f\W*ck(?-u:\b)");
    }
}
