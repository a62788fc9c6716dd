//! Lexicon stage: finds listed words (profanity, insults, slurs, sexual terms) in normalised text.
//!
//! `rules/lexicon/terms.tsv` (built by `tools/build-lexicon.py`, see `rules/lexicon/SOURCES.md`)
//! gives each term a category and a severity; `allow.txt` lists clean words that contain or equal a
//! term ("Scunthorpe", "cocktail"). Terms and allowed words go through [`normalize`] at load, so list
//! spellings such as `sh1t` meet the text in the same form, and all of them are compiled into one
//! leftmost-longest Aho-Corasick automaton. A match counts only as a whole word: no letter or digit
//! before it, and after it either none or one of [`SUFFIXES`] followed by none (`fucking`,
//! `bitches`). A match of an allowed word (with or without a suffix) is never a hit, and because the
//! automaton prefers the longest match at the leftmost position, an allowed word also hides every
//! term inside it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aho_corasick::{AhoCorasick, Input, MatchKind};

use super::normalize::normalize;
use crate::domain::Category;

/// Folder of the lexicon inside the rules directory.
pub const LEXICON_DIR: &str = "lexicon";
const TERMS_FILE: &str = "terms.tsv";
const ALLOW_FILE: &str = "allow.txt";

/// Inflections accepted after a term (`fuck` matches `fuckers`); each must end the word.
pub const SUFFIXES: [&str; 9] = ["ies", "ers", "ing", "es", "ed", "er", "in", "s", "y"];

/// Terms shorter than this after normalisation are skipped: they would match too much.
const MIN_TERM_BYTES: usize = 3;

/// Marks an automaton pattern that is an allowed word rather than a term.
const ALLOWED: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: cannot build the matcher")]
    Build {
        path: PathBuf,
        #[source]
        source: aho_corasick::BuildError,
    },
}

/// One term found in normalised text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TermHit {
    /// Index of the term, see [`Lexicon::term`].
    pub term: u32,
    pub category: Category,
    /// 1 mild, 2 moderate, 3 severe.
    pub severity: u8,
    /// Byte range of the whole word (inflection included) in the normalised text.
    pub start: usize,
    pub end: usize,
}

/// The compiled word lists.
pub struct Lexicon {
    automaton: AhoCorasick,
    /// For each automaton pattern, the term it spells or [`ALLOWED`].
    pattern_term: Vec<u32>,
    /// Normalised terms, by index.
    terms: Vec<String>,
    /// For each term, its severity per category (see `category_slot`; 0: not in that category).
    severities: Vec<[u8; 3]>,
}

impl std::fmt::Debug for Lexicon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lexicon")
            .field("terms", &self.terms.len())
            .field("patterns", &self.pattern_term.len())
            .finish()
    }
}

impl Lexicon {
    /// Reads `<rules_dir>/lexicon/terms.tsv` and `allow.txt`.
    pub fn load(rules_dir: &Path) -> Result<Self, LexiconError> {
        let dir = rules_dir.join(LEXICON_DIR);
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| LexiconError::Read { path, source })
        };
        Self::parse(&read(TERMS_FILE)?, &read(ALLOW_FILE)?, &dir)
    }

    /// Builds a lexicon from the two files' contents; `path` is their folder, used in errors.
    ///
    /// `terms_tsv` lines are `term<TAB>category<TAB>severity<TAB>sources`; `allow_txt` has one word
    /// or phrase a line. Both skip blank lines and `#` comments. Spellings that normalise to the same
    /// term are merged (highest severity per category), a term equal to an allowed word is dropped,
    /// and a term shorter than three bytes after normalisation is skipped.
    pub fn parse(terms_tsv: &str, allow_txt: &str, path: &Path) -> Result<Self, LexiconError> {
        let allowed = parse_allow(allow_txt, &path.join(ALLOW_FILE))?;
        let is_allowed: HashSet<&str> = allowed.iter().map(String::as_str).collect();
        let mut terms: Vec<String> = Vec::new();
        let mut severities: Vec<[u8; 3]> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let terms_path = path.join(TERMS_FILE);
        for (n, line) in terms_tsv.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (raw, category, severity) =
                parse_term_line(line).map_err(|message| LexiconError::Parse {
                    path: terms_path.clone(),
                    line: n + 1,
                    message,
                })?;
            let term = normalize_entry(raw);
            if term.len() < MIN_TERM_BYTES || is_allowed.contains(term.as_str()) {
                continue;
            }
            let next = u32::try_from(terms.len()).map_err(|_| LexiconError::Parse {
                path: terms_path.clone(),
                line: n + 1,
                message: "too many terms".into(),
            })?;
            let i = *index.entry(term.clone()).or_insert_with(|| {
                terms.push(term);
                severities.push([0; 3]);
                next
            }) as usize;
            let slot = &mut severities[i][category_slot(category)];
            *slot = (*slot).max(severity);
        }

        // Patterns: every term, the spellings its inflection rules cannot reach (`titties` for
        // `titty`, `raped` for `rape`, `blow-job` for `blow job`), then the allowed words.
        let mut patterns: Vec<String> = terms.clone();
        let mut pattern_term: Vec<u32> = (0..terms.len() as u32).collect();
        let mut seen: HashSet<String> = terms.iter().chain(&allowed).cloned().collect();
        for (i, term) in terms.iter().enumerate() {
            for variant in variants(term) {
                if seen.insert(variant.clone()) {
                    patterns.push(variant);
                    pattern_term.push(i as u32);
                }
            }
        }
        for word in allowed {
            patterns.push(word);
            pattern_term.push(ALLOWED);
        }

        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|source| LexiconError::Build {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            automaton,
            pattern_term,
            terms,
            severities,
        })
    }

    /// Appends every whole-word hit in `normalized` (output of normalize().as_str()) to `out`.
    ///
    /// Hits come in text order and do not overlap; a term listed in two categories gives two hits
    /// with the same range.
    pub fn find(&self, normalized: &str, out: &mut Vec<TermHit>) {
        let len = normalized.len();
        let mut at = 0;
        while at < len {
            let input = Input::new(normalized).span(at..len);
            let Ok(Some(m)) = self.automaton.try_find(input) else {
                break;
            };
            let Some(word_end) = whole_word_end(normalized, m.start(), m.end()) else {
                // Not a word on its own: a term may still start inside the match ("bass fuck").
                at = m.start() + 1;
                continue;
            };
            self.push_hits(
                self.pattern_term[m.pattern().as_usize()],
                m.start(),
                word_end,
                out,
            );
            at = word_end;
        }
    }

    /// Appends the terms found anywhere inside `normalized[start..end]`, ignoring word
    /// boundaries. Only for a word the normaliser joined from separated letters (`f u c k i n g
    /// b i t c h` → `fuckingbitch`): the evasion hides where the words were, and whole-word
    /// matching cannot see inside. Terms under 4 bytes are skipped there (too many accidents).
    pub fn find_in_joined(
        &self,
        normalized: &str,
        start: usize,
        end: usize,
        out: &mut Vec<TermHit>,
    ) {
        let end = end.min(normalized.len());
        let mut at = start;
        while at < end {
            let input = Input::new(normalized).span(at..end);
            let Ok(Some(m)) = self.automaton.try_find(input) else {
                break;
            };
            if m.len() >= 4 {
                self.push_hits(
                    self.pattern_term[m.pattern().as_usize()],
                    m.start(),
                    m.end(),
                    out,
                );
            }
            at = m.end().max(at + 1);
        }
    }

    /// One hit per category the term is listed in (none for an allowed word).
    fn push_hits(&self, term: u32, start: usize, end: usize, out: &mut Vec<TermHit>) {
        if term == ALLOWED {
            return;
        }
        let severities = &self.severities[term as usize];
        for category in Category::ALL {
            let severity = severities[category_slot(category)];
            if severity > 0 {
                out.push(TermHit {
                    term,
                    category,
                    severity,
                    start,
                    end,
                });
            }
        }
    }

    /// The normalised term with this index (from a [`TermHit`]); empty for an unknown index.
    pub fn term(&self, index: u32) -> &str {
        self.terms.get(index as usize).map_or("", String::as_str)
    }

    /// Number of distinct terms after normalisation.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Term counts per category, for `chatguard check-rules`.
    pub fn counts(&self) -> Vec<(Category, usize)> {
        Category::ALL
            .iter()
            .map(|&c| {
                let slot = category_slot(c);
                (c, self.severities.iter().filter(|s| s[slot] > 0).count())
            })
            .collect()
    }
}

fn category_slot(category: Category) -> usize {
    match category {
        Category::Toxicity => 0,
        Category::Spam => 1,
        Category::Explicit => 2,
    }
}

fn normalize_entry(raw: &str) -> String {
    normalize(raw).as_str().trim().to_owned()
}

fn parse_term_line(line: &str) -> Result<(&str, Category, u8), String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [term, category, severity, _sources] = fields[..] else {
        return Err(format!(
            "expected 4 tab-separated fields (term, category, severity, sources), found {}",
            fields.len()
        ));
    };
    if term.trim().is_empty() || term.trim() != term {
        return Err(format!("term {term:?} is empty or has surrounding spaces"));
    }
    let category = Category::from_str(category)?;
    let severity = match severity {
        "1" => 1,
        "2" => 2,
        "3" => 3,
        other => return Err(format!("severity {other:?} is not 1, 2 or 3")),
    };
    Ok((term, category, severity))
}

fn parse_allow(text: &str, path: &Path) -> Result<Vec<String>, LexiconError> {
    let mut words = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let word = normalize_entry(entry);
        if entry.contains('\t') || !word.chars().any(char::is_alphanumeric) {
            return Err(LexiconError::Parse {
                path: path.to_path_buf(),
                line: n + 1,
                message: format!("{entry:?} is not a word or phrase"),
            });
        }
        if !words.contains(&word) {
            words.push(word);
        }
    }
    Ok(words)
}

/// Spellings of `term` that [`SUFFIXES`] do not cover.
fn variants(term: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(stem) = term.strip_suffix('y').filter(|s| s.len() >= 2) {
        out.push(format!("{stem}ies"));
    }
    if let Some(stem) = term.strip_suffix('e').filter(|s| s.len() >= 2) {
        out.extend([
            format!("{term}d"),
            format!("{term}r"),
            format!("{term}rs"),
            format!("{stem}ing"),
            format!("{stem}in"),
        ]);
    }
    if term.contains(' ') {
        out.push(term.replace(' ', "-"));
    }
    if term.contains('-') {
        out.push(term.replace('-', " "));
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Where the word holding `text[start..end]` ends, if the match is a whole word once one optional
/// suffix is allowed; `None` when a letter or digit touches it.
fn whole_word_end(text: &str, start: usize, end: usize) -> Option<usize> {
    let before = text.get(..start)?.chars().next_back();
    if before.is_some_and(is_word_char) {
        return None;
    }
    let rest = text.get(end..)?;
    let ends_word = |s: &str| s.chars().next().is_none_or(|c| !is_word_char(c));
    if ends_word(rest) {
        return Some(end);
    }
    SUFFIXES
        .iter()
        .find(|suffix| rest.strip_prefix(*suffix).is_some_and(ends_word))
        .map(|suffix| end + suffix.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const TERMS: &str = "\
# term\tcategory\tseverity\tsources
fuck\ttoxicity\t2\ttest
Fuck\ttoxicity\t1\ttest
bitch\ttoxicity\t2\ttest
idiot\ttoxicity\t1\ttest
cunt\ttoxicity\t3\ttest
cock\texplicit\t2\ttest
dick\texplicit\t2\ttest
dick\ttoxicity\t2\ttest
titty\texplicit\t2\ttest
rape\ttoxicity\t3\ttest
blow job\texplicit\t3\ttest
ass\ttoxicity\t1\ttest
hell\ttoxicity\t1\ttest
";
    const ALLOW: &str = "\
# clean words
scunthorpe
cocktail   # and cocktails
cocky
hell
";

    fn tiny() -> Lexicon {
        match Lexicon::parse(TERMS, ALLOW, Path::new("rules/lexicon")) {
            Ok(lexicon) => lexicon,
            Err(e) => panic!("inline lexicon: {e}"),
        }
    }

    fn shipped() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(|| {
            let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
            match Lexicon::load(&rules) {
                Ok(lexicon) => lexicon,
                Err(e) => panic!("shipped lexicon: {e}"),
            }
        })
    }

    fn hits(lexicon: &Lexicon, text: &str) -> Vec<TermHit> {
        let normalized = normalize(text);
        let mut out = Vec::new();
        lexicon.find(normalized.as_str(), &mut out);
        out
    }

    /// (term, category, severity, matched text) for readable assertions.
    fn described(lexicon: &Lexicon, text: &str) -> Vec<(String, Category, u8, String)> {
        let normalized = normalize(text);
        let mut out = Vec::new();
        lexicon.find(normalized.as_str(), &mut out);
        out.iter()
            .map(|h| {
                (
                    lexicon.term(h.term).to_owned(),
                    h.category,
                    h.severity,
                    normalized.as_str()[h.start..h.end].to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn finds_whole_words_with_category_severity_and_offsets() {
        let lexicon = tiny();
        let found = hits(&lexicon, "you are a fucking idiot");
        let fuck = found[0].term;
        assert_eq!(lexicon.term(fuck), "fuck");
        assert_eq!(
            found,
            vec![
                TermHit {
                    term: fuck,
                    category: Category::Toxicity,
                    severity: 2,
                    start: 10,
                    end: 17
                },
                TermHit {
                    term: found[1].term,
                    category: Category::Toxicity,
                    severity: 1,
                    start: 18,
                    end: 23
                },
            ]
        );
        assert_eq!(lexicon.term(found[1].term), "idiot");
    }

    #[test]
    fn inflections_match_and_span_the_whole_word() {
        let lexicon = tiny();
        for (text, term, word) in [
            ("fuckers!", "fuck", "fuckers"),
            ("stupid bitches", "bitch", "bitches"),
            ("two cocks", "cock", "cocks"),
            ("nice titties", "titty", "titties"),
            ("she was raped", "rape", "raped"),
            ("raping", "rape", "raping"),
            ("fuckin' hell", "fuck", "fuckin"),
            ("give me blow jobs", "blow job", "blow jobs"),
            ("a blow-job", "blow job", "blow-job"),
        ] {
            let found = described(&lexicon, text);
            assert!(
                found.iter().any(|(t, _, _, w)| t == term && w == word),
                "{text:?}: expected {term:?} as {word:?}, got {found:?}"
            );
        }
    }

    #[test]
    fn a_term_in_two_categories_gives_two_hits_on_the_same_range() {
        let found = described(&tiny(), "what a dick");
        assert_eq!(
            found,
            vec![
                ("dick".into(), Category::Toxicity, 2, "dick".into()),
                ("dick".into(), Category::Explicit, 2, "dick".into()),
            ]
        );
    }

    #[test]
    fn substrings_of_longer_words_are_not_hits() {
        let lexicon = tiny();
        for text in [
            "assassin",
            "bass guitar",
            "classic",
            "passion",
            "Dickens",
            "shell",
            "hello",
            "cockroach",
            "peacock",
            "fuckfuck",
            "2fuck",
            "grapes",
            "therapist",
        ] {
            assert_eq!(described(&lexicon, text), vec![], "{text:?}");
        }
    }

    #[test]
    fn allowed_words_hide_the_terms_inside_them_even_with_a_suffix() {
        let lexicon = tiny();
        for text in [
            "Scunthorpe",
            "a cocktail",
            "cocktails",
            "cocky",
            "go to hell",
        ] {
            assert_eq!(described(&lexicon, text), vec![], "{text:?}");
        }
        // The allowed word covers only itself: the next word is still checked.
        let found = described(&lexicon, "cocktail fuck");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].3, "fuck");
    }

    #[test]
    fn a_rejected_match_does_not_hide_a_hit_that_starts_inside_it() {
        let found = described(&tiny(), "bass fuck");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].3, "fuck");
    }

    #[test]
    fn spellings_that_normalise_alike_are_merged_with_the_highest_severity() {
        let lexicon = tiny();
        let found = hits(&lexicon, "FUCK");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, 2);
        // "Fuck" and "fuck" are one term; "hell" is dropped because it is allowed.
        assert_eq!(lexicon.len(), 10);
    }

    #[test]
    fn counts_terms_per_category() {
        let counts = tiny().counts();
        assert_eq!(
            counts,
            vec![
                (Category::Toxicity, 7),
                (Category::Spam, 0),
                (Category::Explicit, 4),
            ]
        );
    }

    #[test]
    fn find_appends_to_the_output() {
        let lexicon = tiny();
        let mut out = Vec::new();
        lexicon.find("fuck", &mut out);
        lexicon.find("fuck", &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn unknown_term_index_is_empty() {
        assert_eq!(tiny().term(10_000), "");
    }

    fn parse_error(terms: &str, allow: &str) -> String {
        match Lexicon::parse(terms, allow, Path::new("rules/lexicon")) {
            Ok(_) => panic!("accepted {terms:?} / {allow:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_are_rejected_with_file_and_line() {
        let cases = [
            (
                "fuck\ttoxicity\t2\tx\nbad line\n",
                "",
                "terms.tsv:2:",
                "4 tab-separated",
            ),
            (
                "# c\n\nfuck\tviolence\t2\tx\n",
                "",
                "terms.tsv:3:",
                "unknown category",
            ),
            (
                "fuck\ttoxicity\t4\tx\n",
                "",
                "terms.tsv:1:",
                "not 1, 2 or 3",
            ),
            (
                "fuck\ttoxicity\ttwo\tx\n",
                "",
                "terms.tsv:1:",
                "not 1, 2 or 3",
            ),
            (
                " fuck\ttoxicity\t2\tx\n",
                "",
                "terms.tsv:1:",
                "surrounding spaces",
            ),
            (
                "fuck\ttoxicity\t2\tx\textra\n",
                "",
                "terms.tsv:1:",
                "found 5",
            ),
            (
                "fuck\ttoxicity\t2\tx\n",
                "ok\n---\n",
                "allow.txt:2:",
                "not a word",
            ),
            (
                "fuck\ttoxicity\t2\tx\n",
                "a\tb\n",
                "allow.txt:1:",
                "not a word",
            ),
        ];
        for (terms, allow, at, why) in cases {
            let message = parse_error(terms, allow);
            assert!(
                message.contains(&format!("rules/lexicon/{at}")) && message.contains(why),
                "{terms:?} / {allow:?}: {message}"
            );
        }
    }

    #[test]
    fn load_reports_a_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = Lexicon::load(dir.path()).unwrap_err();
        assert!(matches!(err, LexiconError::Read { .. }), "{err}");
        assert!(err.to_string().contains("terms.tsv"), "{err}");
    }

    #[test]
    fn load_reads_both_files_from_the_lexicon_folder() {
        let dir = tempfile::tempdir().unwrap();
        let lexicon_dir = dir.path().join(LEXICON_DIR);
        std::fs::create_dir(&lexicon_dir).unwrap();
        std::fs::write(lexicon_dir.join(TERMS_FILE), "cunt\ttoxicity\t3\tx\n").unwrap();
        std::fs::write(lexicon_dir.join(ALLOW_FILE), "scunthorpe\n").unwrap();
        let lexicon = Lexicon::load(dir.path()).unwrap();
        assert_eq!(hits(&lexicon, "you cunt").len(), 1);
        assert_eq!(hits(&lexicon, "scunthorpe").len(), 0);
    }

    // --- The shipped lists ---------------------------------------------------------------------

    #[test]
    fn shipped_lexicon_loads_with_both_categories() {
        let lexicon = shipped();
        assert!(lexicon.len() > 2000, "{} terms", lexicon.len());
        let counts = lexicon.counts();
        for category in [Category::Toxicity, Category::Explicit] {
            let n = counts.iter().find(|(c, _)| *c == category).map(|(_, n)| *n);
            assert!(n.is_some_and(|n| n > 500), "{category:?}: {n:?}");
        }
    }

    #[test]
    fn shipped_scunthorpe_suite_stays_clean() {
        let lexicon = shipped();
        for text in [
            "Scunthorpe",
            "assassin",
            "cocktail",
            "cocktails at the bar",
            "Sussex",
            "Essex",
            "Middlesex",
            "Penistone",
            "grape",
            "therapist",
            "classic",
            "bass guitar",
            "passion",
            "cucumber",
            "shiitake mushrooms",
            "hello",
            "button",
            "Dickens",
            "analysis",
            "cumulative",
            "document",
            "title",
            "Titan",
            "peacock",
            "cockpit",
            "Hancock",
            "Hitchcock",
            "shell",
            "spicy food",
            "he is so cocky",
            "magna cum laude",
            "cumin",
            "homo sapiens",
            "booby trap",
            "I hate Mondays",
            "kill the boss",
            "that's sick",
            "nice shot",
            "gg wp, that was a great game",
            "the boss hits hard",
            "strap on your helmet",
            "that's hit",
            "I'm gay and proud",
            "my jewish friend",
        ] {
            let found = described(lexicon, text);
            assert!(found.is_empty(), "{text:?} -> {found:?}");
        }
    }

    #[test]
    fn shipped_medical_words_are_explicit_at_severity_one_only() {
        let lexicon = shipped();
        for text in [
            "breast cancer screening",
            "testicular exam",
            "rectal thermometer",
            "vaginal infection",
            "penis and vagina are anatomy terms",
        ] {
            let found = hits(lexicon, text);
            assert!(!found.is_empty(), "{text:?} should be recognised");
            assert!(
                found
                    .iter()
                    .all(|h| h.severity == 1 && h.category == Category::Explicit),
                "{text:?} -> {:?}",
                described(lexicon, text)
            );
        }
    }

    #[test]
    fn shipped_hits_carry_the_expected_categories() {
        let lexicon = shipped();
        let has = |text: &str, word: &str, category: Category, severity: u8| {
            let found = described(lexicon, text);
            assert!(
                found
                    .iter()
                    .any(|(_, c, s, w)| w == word && *c == category && *s == severity),
                "{text:?}: expected {word:?} {category:?} {severity}, got {found:?}"
            );
        };
        has("you are a fucking idiot", "fucking", Category::Toxicity, 2);
        has("you are a fucking idiot", "idiot", Category::Toxicity, 1);
        has("nice tits", "tits", Category::Explicit, 2);
        has("go back home you nigger", "nigger", Category::Toxicity, 3);
        has("give me a blow job", "blow job", Category::Explicit, 3);
        has(
            "shut the fuck up",
            "shut the fuck up",
            Category::Toxicity,
            2,
        );
        has("what a bunch of bitches", "bitches", Category::Toxicity, 2);
        // Profanity alone is not explicit.
        let fucking = described(lexicon, "fucking");
        assert!(fucking.iter().all(|(_, c, _, _)| *c == Category::Toxicity));
    }

    /// Rough speed check; run with `cargo test --release --lib engine::lexicon -- --ignored`.
    #[test]
    #[ignore = "timing, not a correctness check"]
    fn throughput() {
        let lexicon = shipped();
        let messages: Vec<String> = (0..10_000)
            .map(|i| match i % 4 {
                0 => format!("gg wp team, round {i} was close, nice shot"),
                1 => "you are a fucking idiot lol".to_owned(),
                2 => format!("anyone up for a classic match at {i}? bring snacks"),
                _ => "that cocktail bar in Scunthorpe is great".to_owned(),
            })
            .map(|m| normalize(&m).as_str().to_owned())
            .collect();
        let mut out = Vec::with_capacity(16);
        let started = std::time::Instant::now();
        let mut found = 0;
        for _ in 0..10 {
            for m in &messages {
                out.clear();
                lexicon.find(m, &mut out);
                found += out.len();
            }
        }
        let per_second = 100_000.0 / started.elapsed().as_secs_f64();
        eprintln!(
            "{} terms, {} patterns, {} bytes of automaton: {per_second:.0} messages/s ({found} hits)",
            lexicon.len(),
            lexicon.pattern_term.len(),
            lexicon.automaton.memory_usage()
        );
        for category in Category::ALL {
            let slot = category_slot(category);
            let by_severity: Vec<usize> = (1..=3)
                .map(|sev| lexicon.severities.iter().filter(|s| s[slot] == sev).count())
                .collect();
            eprintln!("{category:?}: terms by severity 1, 2, 3: {by_severity:?}");
        }
        assert_eq!(found, 10 * 2500 * 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn hits_are_ordered_disjoint_and_on_char_boundaries(text in "[a-zé ',.!-]{0,40}( fuck| cock| blow job)?[a-z ]{0,10}") {
            let normalized = normalize(&text);
            let s = normalized.as_str();
            let mut out = Vec::new();
            shipped().find(s, &mut out);
            let mut last_end = 0;
            let mut last_start = None;
            for h in &out {
                prop_assert!(h.start < h.end && h.end <= s.len());
                prop_assert!(s.is_char_boundary(h.start) && s.is_char_boundary(h.end));
                if last_start != Some(h.start) {
                    prop_assert!(h.start >= last_end, "overlap in {:?}: {:?}", s, out);
                }
                last_start = Some(h.start);
                last_end = h.end;
            }
        }
    }
}
