//! Scoring: text in, one score per category in [0, 1] plus the reasons. Pure and synchronous;
//! the stateful signals (flood, repeats) arrive already counted in [`ScoreContext::activity`].
//!
//! Stages, each its own module: [`normalize`] (evasion-proof text with offsets back to the
//! original) → [`lexicon`] (one aho-corasick automaton over the word lists) and [`signals`]
//! (links, block-listed domains, mentions, caps, repeats) → [`features`] + [`model`] (hashed n-gram
//! logistic regression, one head per category) → `rules` (regex rules, enforce or shadow). The
//! final score per category combines model, lexicon (explicit only), rules and stateful signals
//! as a noisy-or: 1 − Π(1 − sᵢ).

pub mod features;
pub mod lexicon;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod patterns;
mod rules;
mod settings;
pub mod signals;
pub mod train;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

pub use rules::{RuleSet, RulesError};
pub use settings::{EngineSettings, SettingsError};

use self::features::Hashed;
use self::lexicon::{Lexicon, LexiconError, TermHit};
use self::model::{HEAD_CATEGORIES, Model, ModelError};
use self::normalize::Normalized;
use self::patterns::{PatternHit, Patterns, PatternsError};
use self::signals::{LinkKind, PhraseKind, Signals, SignalsError, SpamSignals};
use crate::domain::{Assessment, Category, Contribution, Reason};

/// What a user did recently, counted by the worker from the decision log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// The user's earlier messages within the flood window.
    pub recent_messages: u32,
    /// Earlier messages of the user with the same normalised text within the repeat window.
    pub same_text: u32,
    /// Other channels those repeats were posted in.
    pub same_text_channels: u32,
}

/// What the scorer may know besides the text.
#[derive(Debug, Clone, Default)]
pub struct ScoreContext<'a> {
    pub channel_type: Option<&'a str>,
    pub activity: Option<Activity>,
    /// Scores and every reason but the model's feature list (the fast path, for callers that
    /// only need the decision now).
    pub skip_explanations: bool,
}

pub trait Scorer: Send + Sync {
    fn assess(&self, text: &str, ctx: &ScoreContext<'_>) -> Assessment;
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Lexicon(#[from] LexiconError),
    #[error(transparent)]
    Signals(#[from] SignalsError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Patterns(#[from] PatternsError),
}

/// Buffers reused from one message to the next (one set per thread).
#[derive(Default)]
pub struct Scratch {
    normalized: Normalized,
    /// The normalised text with short spaced-out words that spell a term or pattern joined
    /// ("h o e" → "hoe"), which patterns and model features read; `view_map` maps its byte
    /// offsets back to the normalised text's.
    view: String,
    view_map: Vec<usize>,
    /// Short spaced runs that spelled a term or pattern: (start, end) in the normalised text.
    joined_runs: Vec<(usize, usize)>,
    /// Offsets in the normalised text where the view puts a space (terms inside joined words).
    splits: Vec<usize>,
    hits: Vec<TermHit>,
    pattern_hits: Vec<PatternHit>,
    signals: SpamSignals,
    features: Vec<Hashed>,
    feature_scratch: features::Scratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The stages that turn text into features: shared by scoring and training.
pub struct Analyzer {
    pub lexicon: Lexicon,
    pub signals: Signals,
    pub patterns: Patterns,
}

impl Analyzer {
    pub fn load(rules_dir: &Path) -> Result<Self, EngineError> {
        Ok(Self {
            lexicon: Lexicon::load(rules_dir)?,
            signals: Signals::load(rules_dir)?,
            patterns: Patterns::load(rules_dir)?,
        })
    }

    /// Runs normalisation, lexicon and signals into `scratch`.
    fn analyze(&self, text: &str, s: &mut Scratch) {
        normalize::normalize_into(text, &mut s.normalized);
        s.hits.clear();
        let norm = s.normalized.as_str();
        self.lexicon.find(norm, &mut s.hits);
        // Words joined from separated letters may hold several words: look inside them.
        let mut word_start = None;
        let mut joined_words: Vec<(usize, usize)> = Vec::new();
        for (i, c) in norm
            .char_indices()
            .chain(std::iter::once((norm.len(), ' ')))
        {
            match (c.is_alphanumeric(), word_start) {
                (true, None) => word_start = Some(i),
                (false, Some(ws)) => {
                    word_start = None;
                    let original = s.normalized.original_range(ws, i);
                    // Joined from separated letters: the original has a separator between
                    // every two letters ("f.u.c.k", "a h o e").
                    let separators = text
                        .get(original.clone())
                        .map_or(0, |o| o.chars().filter(|c| !c.is_alphanumeric()).count());
                    let joined = i - ws >= 3 && separators + 1 >= i - ws;
                    let covered = s.hits.iter().any(|h| h.start <= ws && h.end >= i);
                    if joined && !covered {
                        self.lexicon.find_in_joined(norm, ws, i, &mut s.hits);
                        joined_words.push((ws, i));
                    }
                }
                _ => {}
            }
        }
        // Terms found inside a joined word are words of their own for patterns and the model
        // ("userfuck" reads "user fuck").
        s.splits.clear();
        for &(ws, we) in &joined_words {
            for h in s.hits.iter().filter(|h| ws <= h.start && h.end <= we) {
                s.splits
                    .extend([h.start, h.end].into_iter().filter(|&x| ws < x && x < we));
            }
        }
        s.splits.sort_unstable();
        s.pattern_hits.clear();
        self.short_spaced_terms(s);
        self.build_view(s);
        let before = s.pattern_hits.len();
        self.patterns.find(&s.view, &mut s.pattern_hits);
        for h in &mut s.pattern_hits[before..] {
            let (start, end) = (h.start, h.end);
            h.start = s.view_map.get(start).copied().unwrap_or(start);
            h.end = match end.checked_sub(1).and_then(|e| s.view_map.get(e)) {
                Some(&last) => last + 1,
                None => end,
            };
        }
        let norm = s.normalized.as_str();
        // In words joined from separated letters a leading article or pronoun may have been
        // swallowed ("a p a t h e t i c" → "apathetic"): a pattern that spans the rest counts.
        for (ws, we) in joined_words {
            for skip in 0..=2 {
                let from = ws + skip;
                if from >= we || !norm.is_char_boundary(from) {
                    continue;
                }
                let word = &norm[from..we];
                let before = s.pattern_hits.len();
                self.patterns.find(word, &mut s.pattern_hits);
                let whole: Vec<PatternHit> = s.pattern_hits.drain(before..).collect();
                let mut found = false;
                for mut h in whole {
                    if h.start == 0 && h.end == word.len() {
                        let dup = s.pattern_hits.iter().any(|x| x.pattern == h.pattern);
                        h.start += from;
                        h.end += from;
                        if !dup {
                            s.pattern_hits.push(h);
                        }
                        found = true;
                    }
                }
                if found {
                    break;
                }
            }
        }
        self.signals.extract(text, &mut s.signals);
    }

    /// [`Scratch::view`]: the normalised text with the joined runs' inner spaces left out.
    fn build_view(&self, s: &mut Scratch) {
        let norm = s.normalized.as_str();
        s.view.clear();
        s.view_map.clear();
        let mut runs = s.joined_runs.iter().peekable();
        for (i, c) in norm.char_indices() {
            while runs.peek().is_some_and(|r| r.1 <= i) {
                runs.next();
            }
            let inside = runs.peek().is_some_and(|r| r.0 <= i && i < r.1);
            if inside && c == ' ' {
                continue;
            }
            if s.splits.binary_search(&i).is_ok() && !s.view.ends_with(' ') {
                s.view.push(' ');
                s.view_map.push(i);
            }
            s.view.push(c);
            s.view_map.extend(std::iter::repeat_n(i, c.len_utf8()));
        }
    }

    /// `a s s`, `h o e`: spaced words too short for the normaliser to join on its own (they look
    /// like chat's one-letter words) count when, joined, they spell a lexicon term exactly.
    fn short_spaced_terms(&self, s: &mut Scratch) {
        s.joined_runs.clear();
        let norm = s.normalized.as_str().as_bytes();
        let single = |i: usize| {
            norm[i].is_ascii_alphabetic()
                && (i == 0 || norm[i - 1] == b' ')
                && (i + 1 == norm.len() || norm[i + 1] == b' ')
        };
        let mut i = 0;
        while i < norm.len() {
            if !single(i) {
                i += 1;
                continue;
            }
            let start = i;
            let mut end = i + 1;
            while end + 1 < norm.len() && single(end + 1) {
                end += 2;
            }
            // Within the run, the longest stretches that spell a term or a pattern, from the
            // left: "a h o e" holds "hoe", "u s e r f u c k" holds "fuck".
            let letters = (end - start).div_ceil(2);
            let mut p = 0;
            while p < letters {
                let mut took = 1;
                for len in (2..=(letters - p).min(12)).rev() {
                    let (from, to) = (start + 2 * p, start + 2 * (p + len) - 1);
                    if self.spell_spaced(norm, from, to, &mut s.hits) {
                        s.joined_runs.push((from, to));
                        took = len;
                        break;
                    }
                }
                p += took;
            }
            i = end;
        }
    }

    /// Whether the single letters in `norm[from..to]`, joined, spell a lexicon term or an abuse
    /// pattern exactly; a term's hit is added over the letters.
    fn spell_spaced(&self, norm: &[u8], from: usize, to: usize, hits: &mut Vec<TermHit>) -> bool {
        let joined: String = norm[from..to]
            .iter()
            .filter(|b| **b != b' ')
            .map(|b| char::from(*b))
            .collect();
        let mut probe = Vec::new();
        self.patterns.find(&joined, &mut probe);
        let mut spells = probe.iter().any(|h| h.start == 0 && h.end == joined.len());
        let before = hits.len();
        self.lexicon.find(&joined, hits);
        let mut k = before;
        while k < hits.len() {
            if hits[k].start == 0 && hits[k].end == joined.len() {
                hits[k].start = from;
                hits[k].end = to;
                spells = true;
                k += 1;
            } else {
                hits.remove(k);
            }
        }
        spells
    }

    /// The model features of one message.
    pub fn features<'s>(&self, text: &str, s: &'s mut Scratch) -> &'s [Hashed] {
        self.analyze(text, s);
        features::extract(
            &s.view,
            &s.hits,
            &features::PatternFeatures {
                patterns: &self.patterns,
                hits: &s.pattern_hits,
            },
            &s.signals,
            &mut s.feature_scratch,
            &mut s.features,
        );
        &s.features
    }
}

/// Everything loaded from the rules directory.
pub struct Engine {
    analyzer: Analyzer,
    rules: RuleSet,
    model: Model,
    settings: EngineSettings,
    dir: PathBuf,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

impl Engine {
    /// Loads and checks every file the engine needs from `rules_dir`.
    pub fn load(rules_dir: &Path) -> Result<Self, EngineError> {
        Ok(Self {
            analyzer: Analyzer::load(rules_dir)?,
            rules: RuleSet::load(rules_dir)?,
            model: Model::load(rules_dir)?,
            settings: EngineSettings::load(rules_dir)?,
            dir: rules_dir.to_owned(),
        })
    }

    /// Loads everything but the model from `rules_dir` and scores with `model` (training uses
    /// it to calibrate a model inside the engine it will ship in).
    pub fn load_with_model(rules_dir: &Path, model: Model) -> Result<Self, EngineError> {
        Ok(Self {
            analyzer: Analyzer::load(rules_dir)?,
            rules: RuleSet::load(rules_dir)?,
            model,
            settings: EngineSettings::load(rules_dir)?,
            dir: rules_dir.to_owned(),
        })
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// A stable fingerprint of a message's normalised text, for counting repeats.
    pub fn fingerprint(text: &str) -> i64 {
        let n = normalize::normalize(text);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in n
            .as_str()
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b >= 0x80)
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h as i64
    }

    fn assess_with(&self, text: &str, ctx: &ScoreContext<'_>, s: &mut Scratch) -> Assessment {
        let mut out = Assessment::default();
        self.analyzer.features(text, s);
        let probs = self.model.predict(&s.features);
        for (h, c) in HEAD_CATEGORIES.iter().enumerate() {
            *out.scores.get_mut(*c) = f64::from(probs[h]);
        }
        if self.is_lone_link(text, &s.signals) {
            let spam = out.scores.get_mut(Category::Spam);
            *spam = spam.min(self.settings.links.lone_link_spam_max);
        }

        // Abuse patterns not marked feature-only add to toxicity by their intensity.
        for hit in &s.pattern_hits {
            let p = self.analyzer.patterns.get(hit.pattern);
            // A pattern that is just a lexicon word ("stupid", "shit") is already weighed by the
            // model through the lexicon features: adding it again would count it twice.
            let in_lexicon = s.hits.iter().any(|t| {
                t.category == Category::Toxicity && t.start <= hit.start && t.end >= hit.end
            });
            if !p.direct || in_lexicon {
                continue;
            }
            let add = self.settings.pattern_score(p.intensity);
            let t = out.scores.get_mut(Category::Toxicity);
            *t = 1.0 - (1.0 - *t) * (1.0 - add);
            let range = s.normalized.original_range(hit.start, hit.end);
            out.reasons.push(Reason::Term {
                term: p.feature.clone(),
                category: Category::Toxicity,
                severity: p.severity(),
                matched: text.get(range.clone()).unwrap_or_default().to_owned(),
                start: range.start,
                end: range.end,
            });
        }

        // Lexicon terms: explicit terms raise the explicit score directly (there is no
        // human-labelled explicit chat to learn their weight from); every term is a reason.
        for hit in &s.hits {
            let range = s.normalized.original_range(hit.start, hit.end);
            if hit.category == Category::Explicit {
                let add = self.settings.explicit_term_score(hit.severity);
                let e = out.scores.get_mut(Category::Explicit);
                *e = 1.0 - (1.0 - *e) * (1.0 - add);
            }
            out.reasons.push(Reason::Term {
                term: self.analyzer.lexicon.term(hit.term).to_owned(),
                category: hit.category,
                severity: hit.severity,
                matched: text.get(range.clone()).unwrap_or_default().to_owned(),
                start: range.start,
                end: range.end,
            });
        }

        self.signal_reasons(&s.signals, ctx, &mut out);
        self.rules.evaluate(text, &s.normalized, ctx, &mut out);

        // The model's reason: its probability and the features that pushed it up most, for the
        // categories where it matters.
        let explain: Vec<usize> = (0..HEAD_CATEGORIES.len())
            .filter(|h| f64::from(probs[*h]) >= self.settings.explain_above)
            .collect();
        if !explain.is_empty() {
            let tops = if ctx.skip_explanations {
                vec![Vec::new(); explain.len()]
            } else {
                self.top_features(&explain, s)
            };
            for (h, top) in explain.into_iter().zip(tops) {
                out.reasons.push(Reason::Model {
                    category: HEAD_CATEGORIES[h],
                    probability: round3(f64::from(probs[h])),
                    top,
                });
            }
        }
        self.cap_short_toxicity(s, &mut out);
        for c in Category::ALL {
            let v = out.scores.get_mut(c);
            *v = round3(v.clamp(0.0, 1.0));
        }
        out
    }

    /// A message of a few words gives the model little to go on: "silly", "sad", "N000000000"
    /// or "ez" alone must not be judged by one word's weight. Without any lexicon, pattern or
    /// rule evidence its toxicity stays below flag; with only mild evidence (severity 1, a
    /// pattern under intensity 2, a rule under 0.8) below block. See `[short]` in engine.toml.
    fn cap_short_toxicity(&self, s: &Scratch, out: &mut Assessment) {
        let short = &self.settings.short;
        let words = s
            .view
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
        if words > short.words {
            return;
        }
        let patterns = &self.analyzer.patterns;
        let lex = s.hits.iter().filter(|h| h.category == Category::Toxicity);
        let pats = s
            .pattern_hits
            .iter()
            .map(|h| patterns.get(h.pattern))
            .filter(|p| p.direct);
        let rules = out
            .matches
            .iter()
            .filter(|m| m.category == Category::Toxicity);
        let any = lex.clone().next().is_some()
            || pats.clone().next().is_some()
            || rules.clone().next().is_some();
        let strong = lex.clone().any(|h| h.severity >= 2)
            || pats.clone().any(|p| p.intensity >= 2.0)
            || rules.clone().any(|m| m.score >= 0.8 || m.action.is_some());
        let cap = if !any {
            short.model_only_max
        } else if !strong {
            short.mild_max
        } else {
            return;
        };
        let t = out.scores.get_mut(Category::Toxicity);
        *t = t.min(cap);
    }

    /// A message that is little more than plain links (see [`settings::LinkSettings`]).
    fn is_lone_link(&self, text: &str, sig: &SpamSignals) -> bool {
        if sig.links.is_empty()
            || !sig.scam_phrases.is_empty()
            || sig
                .links
                .iter()
                .any(|l| matches!(l.kind, LinkKind::Scam | LinkKind::Suspicious) || l.scam_path)
        {
            return false;
        }
        let mut words = 0u32;
        let mut at = 0;
        for token in text.split_whitespace() {
            let start = text[at..].find(token).map_or(at, |i| at + i);
            let end = start + token.len();
            at = end;
            let in_link = sig.links.iter().any(|l| l.start < end && start < l.end);
            if !in_link && token.chars().any(char::is_alphanumeric) {
                words += 1;
                if words > self.settings.links.lone_link_words {
                    return false;
                }
            }
        }
        true
    }

    fn signal_reasons(&self, sig: &SpamSignals, ctx: &ScoreContext<'_>, out: &mut Assessment) {
        let lists = &self.settings.lists;
        let mut listed = |name: String, score: f64, start: usize, end: usize| {
            let s = out.scores.get_mut(Category::Spam);
            *s = 1.0 - (1.0 - *s) * (1.0 - score);
            out.reasons.push(Reason::Signal {
                signal: name,
                category: Category::Spam,
                value: 1.0,
                score,
                start: Some(start),
                end: Some(end),
            });
        };
        for link in &sig.links {
            let (name, score) = match link.kind {
                LinkKind::Scam => ("scam domain", lists.scam_domain),
                LinkKind::Suspicious => ("suspicious domain", lists.suspicious_domain),
                LinkKind::Shortener => ("URL shortener", lists.shortener),
                LinkKind::Invite => ("invite link", lists.invite),
                LinkKind::Plain => continue,
            };
            listed(
                format!("{name}: {}", link.domain),
                score,
                link.start,
                link.end,
            );
        }
        for p in &sig.scam_phrases {
            let score = match p.kind {
                PhraseKind::Scam => lists.scam_phrase,
                PhraseKind::Spam => 0.0,
            };
            listed(format!("phrase: {}", p.phrase), score, p.start, p.end);
        }
        let Some(a) = ctx.activity else { return };
        let f = &self.settings;
        let mut add = |name: String, value: u32, score: f64| {
            let s = out.scores.get_mut(Category::Spam);
            *s = 1.0 - (1.0 - *s) * (1.0 - score);
            out.reasons.push(Reason::Signal {
                signal: name,
                category: Category::Spam,
                value: f64::from(value),
                score,
                start: None,
                end: None,
            });
        };
        if f.flood.messages > 0 && a.recent_messages + 1 >= f.flood.messages {
            add(
                format!(
                    "flood: {} messages within {} s",
                    a.recent_messages + 1,
                    f.flood.window_secs
                ),
                a.recent_messages + 1,
                f.flood.score,
            );
        }
        if f.repeats.same_text > 0 && a.same_text + 1 >= f.repeats.same_text {
            add(
                format!(
                    "repeated text: posted {} times within {} s",
                    a.same_text + 1,
                    f.repeats.window_secs
                ),
                a.same_text + 1,
                f.repeats.score,
            );
        }
        if f.repeats.channels > 0 && a.same_text_channels + 1 >= f.repeats.channels {
            add(
                format!(
                    "cross-posting: same text in {} channels within {} s",
                    a.same_text_channels + 1,
                    f.repeats.window_secs
                ),
                a.same_text_channels + 1,
                f.repeats.channels_score,
            );
        }
    }

    /// For each head in `heads`, the features that add most to its logit. Contributions are
    /// ranked on the hashed features already computed; only the winners are named, in one more
    /// walk over the features.
    fn top_features(&self, heads: &[usize], s: &mut Scratch) -> Vec<Vec<Contribution>> {
        let k = self.settings.explain_top;
        let Scratch {
            view,
            hits,
            pattern_hits,
            signals,
            features: hashed,
            feature_scratch,
            ..
        } = s;
        // The k largest single contributions per head (k is small: insertion beats sorting).
        let winners: Vec<Vec<(u32, f32)>> = heads
            .iter()
            .map(|&h| {
                let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
                for f in hashed.iter() {
                    let c = self.model.contribution(h, f);
                    if c <= 0.0 || (top.len() == k && top.last().is_some_and(|l| l.1 >= c)) {
                        continue;
                    }
                    if let Some(same) = top.iter_mut().find(|t| t.0 == f.index) {
                        same.1 = same.1.max(c);
                    } else {
                        let at = top.iter().position(|t| t.1 < c).unwrap_or(top.len());
                        top.insert(at, (f.index, c));
                        top.truncate(k);
                    }
                }
                top
            })
            .collect();
        let mut named: Vec<Vec<Contribution>> = vec![Vec::new(); heads.len()];
        if k > 0 {
            features::visit(
                view,
                hits,
                &features::PatternFeatures {
                    patterns: &self.analyzer.patterns,
                    hits: pattern_hits,
                },
                signals,
                feature_scratch,
                &mut |key, v| {
                    let index = features::hash_key(&key, v).index;
                    for (w, out) in winners.iter().zip(named.iter_mut()) {
                        if let Some((_, c)) = w.iter().find(|(i, _)| *i == index) {
                            let feature = key.describe();
                            if !out.iter().any(|n| n.feature == feature) {
                                out.push(Contribution {
                                    feature,
                                    weight: round3(f64::from(*c)),
                                });
                            }
                        }
                    }
                },
            );
        }
        for out in &mut named {
            out.sort_by(|a, b| b.weight.total_cmp(&a.weight));
            out.truncate(k);
        }
        named
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl Scorer for Engine {
    fn assess(&self, text: &str, ctx: &ScoreContext<'_>) -> Assessment {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => self.assess_with(text, ctx, &mut s),
            // Re-entrant call on this thread (not expected): use fresh buffers.
            Err(_) => self.assess_with(text, ctx, &mut Scratch::default()),
        })
    }
}
