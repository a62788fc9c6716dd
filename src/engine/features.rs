//! Features of one message for the learned model: hashed word 1–2-grams and character 2–5-grams
//! of the normalised text, plus named features from the lexicon and the spam signals.
//!
//! The hash is written here rather than taken from a crate on purpose: the committed model file
//! stores weights by hash bucket, so the function must never change under us with a dependency
//! update. It is FNV-1a over the bytes followed by murmur3's 64-bit finaliser.

use super::lexicon::TermHit;
use super::patterns::{PatternHit, Patterns};
use super::signals::{LinkKind, SpamSignals};
use crate::domain::Category;

/// log2 of the number of hash buckets.
pub const DIM_BITS: u32 = 20;
pub const DIM: usize = 1 << DIM_BITS;

/// One feature, before hashing. `Named` features come from the other stages.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Word(&'a str),
    Bigram(&'a str, &'a str),
    /// A character n-gram with its hash, computed incrementally while the grams grow.
    Chars(&'a str, u64),
    Named(&'a str),
}

impl<'a> Key<'a> {
    /// A character n-gram key.
    pub fn chars(s: &'a str) -> Self {
        Key::Chars(s, fnv(SEED_CHARS, s.as_bytes()))
    }

    fn hash(&self) -> u64 {
        match self {
            Key::Word(w) => fnv(SEED_WORD, w.as_bytes()),
            Key::Bigram(a, b) => fnv(fnv(fnv(SEED_BIGRAM, a.as_bytes()), b"\x1f"), b.as_bytes()),
            Key::Chars(_, h) => *h,
            Key::Named(s) => fnv(SEED_NAMED, s.as_bytes()),
        }
    }

    /// A readable name, for explanations.
    pub fn describe(&self) -> String {
        match self {
            Key::Word(w) => format!("word \"{w}\""),
            Key::Bigram(a, b) => format!("words \"{a} {b}\""),
            Key::Chars(s, _) => format!("chars \"{s}\""),
            Key::Named(s) => (*s).to_owned(),
        }
    }
}

const SEED_WORD: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_BIGRAM: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEED_CHARS: u64 = 0x1656_67b1_9e37_79f9;
const SEED_NAMED: u64 = 0x85eb_ca77_c2b2_ae63;

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ FNV_BASIS;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A hashed feature: bucket and signed value (the sign comes from the hash, which makes
/// collisions cancel out on average instead of adding up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hashed {
    pub index: u32,
    pub value: f32,
}

pub fn hash_key(key: &Key<'_>, value: f32) -> Hashed {
    let h = fmix(key.hash());
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    Hashed {
        index: (h as usize & (DIM - 1)) as u32,
        value: value * sign,
    }
}

/// Buffers reused from one message to the next.
#[derive(Debug, Default)]
pub struct Scratch {
    words: Vec<(usize, usize)>,
    padded: String,
    chars: Vec<usize>,
}

/// The pattern hits of a message and the patterns they index.
#[derive(Clone, Copy)]
pub struct PatternFeatures<'a> {
    pub patterns: &'a Patterns,
    pub hits: &'a [PatternHit],
}

/// Calls `sink` with every feature of a message. Text features are scaled so a message's text
/// vector has about unit length whatever its size; named features are counts or flags.
pub fn visit(
    normalized: &str,
    hits: &[TermHit],
    patterns: &PatternFeatures<'_>,
    signals: &SpamSignals,
    scratch: &mut Scratch,
    sink: &mut impl FnMut(Key<'_>, f32),
) {
    let Scratch {
        words,
        padded: buf,
        chars,
    } = scratch;
    // Words: runs of letters, digits, apostrophes; mentions and links become placeholders so the
    // model learns "a mention" rather than one dataset's user names.
    words.clear();
    let bytes = normalized.as_bytes();
    let mut start = None;
    for (i, c) in normalized.char_indices() {
        let is_word = c.is_alphanumeric() || c == '\'' || c == '@' || c == '#';
        match (is_word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, bytes.len()));
    }
    let word_at = |&(s, e): &(usize, usize)| -> &str {
        let w = &normalized[s..e];
        if w.starts_with('@') && w.len() > 1 {
            "@user"
        } else if w.len() >= 4 && w.bytes().all(|b| b.is_ascii_digit()) {
            // Long numbers (ids, sizes, timestamps) say nothing by their digits.
            "#number"
        } else {
            w.trim_matches('\'')
        }
    };
    let n_words = words.len();
    if n_words > 0 {
        let scale = 1.0 / ((2 * n_words) as f32).sqrt();
        let mut prev: Option<&str> = None;
        for span in words.iter() {
            let w = word_at(span);
            if w.is_empty() {
                continue;
            }
            sink(Key::Word(w), scale);
            if let Some(p) = prev {
                sink(Key::Bigram(p, w), scale);
            }
            prev = Some(w);
        }
    }

    // Character 2–5-grams over the text with a space at each end, by characters.
    if !normalized.is_empty() {
        // Mentions read as "@user" here too.
        buf.clear();
        buf.push(' ');
        let mut at = 0;
        for &(s, e) in words.iter() {
            if bytes[s] == b'@' && e - s > 1 {
                buf.push_str(&normalized[at..s]);
                buf.push_str("@user");
                at = e;
            }
        }
        buf.push_str(&normalized[at..]);
        buf.push(' ');
        chars.clear();
        chars.extend(buf.char_indices().map(|(i, _)| i));
        chars.push(buf.len());
        let n_chars = chars.len() - 1;
        let grams = (2..=5)
            .map(|n| n_chars.saturating_sub(n - 1))
            .sum::<usize>();
        let scale = 1.0 / (grams.max(1) as f32).sqrt();
        let bytes = buf.as_bytes();
        for i in 0..n_chars {
            // FNV is sequential: the hash of an n-gram continues into the (n+1)-gram's.
            let mut h = SEED_CHARS ^ FNV_BASIS;
            for n in 1..=5 {
                let Some(&end) = chars.get(i + n) else { break };
                for b in &bytes[chars[i + n - 1]..end] {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(FNV_PRIME);
                }
                if n >= 2 {
                    sink(Key::Chars(&buf[chars[i]..end], h), scale);
                }
            }
        }
    }

    // Lexicon: counts by category and severity.
    let mut lex = [[0u32; 4]; 3];
    for h in hits {
        let c = match h.category {
            Category::Toxicity => 0,
            Category::Explicit => 1,
            Category::Spam => 2,
        };
        lex[c][usize::from(h.severity.min(3))] += 1;
    }
    for (c, sev) in lex.iter().enumerate() {
        for (s, n) in sev.iter().enumerate().skip(1) {
            if *n > 0 {
                sink(Key::Named(LEX_NAMES[c][s - 1]), (*n as f32).min(3.0));
            }
        }
    }

    // Abuse patterns: one feature per pattern (its weight is learnt) and one per file, valued
    // by intensity, so patterns rare in training still lean the way their kind does.
    let mut by_label: [(Option<&str>, f32); 8] = [(None, 0.0); 8];
    for h in patterns.hits {
        let p = patterns.patterns.get(h.pattern);
        sink(Key::Named(&p.feature), 1.0);
        if let Some(slot) = by_label
            .iter_mut()
            .find(|(l, _)| l.is_none() || *l == Some(p.label_feature.as_str()))
        {
            slot.0 = Some(p.label_feature.as_str());
            slot.1 += p.intensity;
        }
    }
    for (label, sum) in by_label {
        let Some(label) = label else { break };
        sink(Key::Named(label), sum.min(4.0));
    }

    // Spam signals, bucketed.
    for link in &signals.links {
        let name = match link.kind {
            LinkKind::Scam => "link: scam domain",
            LinkKind::Suspicious => "link: suspicious domain",
            LinkKind::Shortener => "link: URL shortener",
            LinkKind::Invite => "link: invite",
            LinkKind::Plain => "link",
        };
        sink(Key::Named(name), 1.0);
    }
    if signals.links.len() >= 2 {
        sink(Key::Named("links: 2 or more"), 1.0);
    }
    let bucket = |v: u32, edges: &[u32]| edges.iter().filter(|e| v >= **e).count();
    const MENTIONS: [&str; 3] = ["mentions: 1", "mentions: 2-4", "mentions: 5+"];
    if let Some(b) = bucket(signals.mentions, &[1, 2, 5]).checked_sub(1) {
        sink(Key::Named(MENTIONS[b]), 1.0);
    }
    if signals.letters >= 8 {
        const CAPS: [&str; 2] = ["caps: over half", "caps: nearly all"];
        if let Some(b) = bucket((signals.caps_ratio * 100.0) as u32, &[50, 90]).checked_sub(1) {
            sink(Key::Named(CAPS[b]), 1.0);
        }
    }
    const RUNS: [&str; 2] = ["repeated character: 4-9", "repeated character: 10+"];
    if let Some(b) = bucket(signals.longest_char_run, &[4, 10]).checked_sub(1) {
        sink(Key::Named(RUNS[b]), 1.0);
    }
    const EMOJI: [&str; 2] = ["emoji: 3-9", "emoji: 10+"];
    if let Some(b) = bucket(signals.emoji, &[3, 10]).checked_sub(1) {
        sink(Key::Named(EMOJI[b]), 1.0);
    }
    const REPEATS: [&str; 2] = ["repeated word: 3-5", "repeated word: 6+"];
    if let Some(b) = bucket(signals.longest_token_repeat, &[3, 6]).checked_sub(1) {
        sink(Key::Named(REPEATS[b]), 1.0);
    }
    if signals.phone_like > 0 {
        sink(Key::Named("phone number or short code"), 1.0);
    }
    if signals.money > 0 {
        sink(Key::Named("money amount"), 1.0);
    }
    if !signals.scam_phrases.is_empty() {
        sink(
            Key::Named("scam phrase"),
            signals.scam_phrases.len().min(3) as f32,
        );
    }
}

const LEX_NAMES: [[&str; 3]; 3] = [
    [
        "lexicon: toxicity severity 1",
        "lexicon: toxicity severity 2",
        "lexicon: toxicity severity 3",
    ],
    [
        "lexicon: explicit severity 1",
        "lexicon: explicit severity 2",
        "lexicon: explicit severity 3",
    ],
    [
        "lexicon: spam severity 1",
        "lexicon: spam severity 2",
        "lexicon: spam severity 3",
    ],
];

/// Hashes every feature of a message into `out` (cleared first).
pub fn extract(
    normalized: &str,
    hits: &[TermHit],
    patterns: &PatternFeatures<'_>,
    signals: &SpamSignals,
    scratch: &mut Scratch,
    out: &mut Vec<Hashed>,
) {
    out.clear();
    visit(normalized, hits, patterns, signals, scratch, &mut |k, v| {
        out.push(hash_key(&k, v))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        let mut v = vec![];
        let none = Patterns::empty();
        visit(
            text,
            &[],
            &PatternFeatures {
                patterns: &none,
                hits: &[],
            },
            &SpamSignals::default(),
            &mut Scratch::default(),
            &mut |k, _| v.push(k.describe()),
        );
        v
    }

    #[test]
    fn words_bigrams_and_char_grams() {
        let n = names("hi @bob42 you");
        assert!(n.contains(&"word \"hi\"".to_owned()), "{n:?}");
        assert!(n.contains(&"word \"@user\"".to_owned()), "{n:?}");
        assert!(n.contains(&"words \"@user you\"".to_owned()), "{n:?}");
        assert!(n.contains(&"chars \" hi\"".to_owned()), "{n:?}");
        assert!(n.contains(&"chars \"you \"".to_owned()), "{n:?}");
        assert!(!n.iter().any(|s| s.contains("bob")), "{n:?}");
        // 2–5-grams over " hi @user you " (14 chars): 13 + 12 + 11 + 10.
        assert_eq!(n.iter().filter(|s| s.starts_with("chars")).count(), 46);
    }

    #[test]
    fn multibyte_text_never_splits_a_char() {
        let n = names("привет 🙂 ok");
        assert!(n.iter().any(|s| s == "chars \"🙂 \""), "{n:?}");
    }

    #[test]
    fn hashing_is_stable() {
        // Pinned: the committed model depends on these exact buckets.
        let got: Vec<(u32, f32)> = [
            Key::Word("idiot"),
            Key::Bigram("you", "idiot"),
            Key::chars(" id"),
            Key::Named("link"),
        ]
        .iter()
        .map(|k| hash_key(k, 1.0))
        .map(|h| (h.index, h.value))
        .collect();
        assert_eq!(
            got,
            vec![(604045, -1.0), (600172, 1.0), (579457, -1.0), (78139, -1.0)]
        );
    }

    #[test]
    fn empty_text_has_no_features() {
        assert!(names("").is_empty());
    }
}
