//! Stateless spam and abuse signals of one message: links and what the block lists say about
//! them, mentions, shouting, repetition, emoji, phone numbers, money amounts and scam phrases.
//!
//! Everything comes from the raw text alone (no clock, no history); offsets are byte offsets into
//! the raw text. Character, word, number and mention signals count only the text outside links
//! and e-mail addresses. The lists live in `<rules>/blocklists/` (see `SOURCES.md` there).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};
use linkify::LinkFinder;
use serde::Serialize;

/// Folder under the rules directory that holds the block lists.
pub const BLOCKLISTS_DIR: &str = "blocklists";

const SCAM_DOMAINS: &str = "scam-domains.txt";
const SUSPICIOUS_DOMAINS: &str = "suspicious-domains.txt";
const SCAM_URLS: &str = "scam-urls.txt";
const SCAM_PHRASES: &str = "scam-phrases.txt";
const SPAM_PHRASES: &str = "spam-phrases.txt";
const SCAM_PATHS: &str = "scam-paths.txt";
const SHORTENERS: &str = "shorteners.txt";
const INVITES: &str = "invites.txt";
const NEVER_BLOCK: &str = "never-block.txt";
const TLDS: &str = "tlds.txt";

/// Top-level domains accepted for links without a scheme even with no `tlds.txt`.
const BUILTIN_TLDS: &[&str] = &[
    "app", "biz", "cc", "co", "com", "de", "dev", "eu", "fr", "gg", "gift", "info", "io", "ly",
    "me", "net", "online", "org", "ru", "site", "store", "to", "top", "tv", "uk", "us", "xyz",
];

/// Words past this many are not counted for repeats.
const MAX_WORDS: usize = 128;

/// Words that make a number next to them an amount of money.
const CURRENCY_WORDS: &[&str] = &[
    "btc", "bucks", "cash", "dollar", "dollars", "eth", "eur", "euro", "euros", "gbp", "inr",
    "pound", "pounds", "quid", "rs", "rub", "rubles", "usd", "usdt",
];

/// Currency codes written before an amount (`usd 500`, `Rs.500`).
const CURRENCY_PREFIXES: &[&str] = &["btc", "eur", "gbp", "inr", "rs", "usd", "usdt"];

/// Words after "cash" that make a money phrase ("cash prize").
const PRIZE_WORDS: &[&str] = &["award", "bonus", "prize", "prizes", "reward"];

/// Words before a 4–6 digit number that make it an SMS short code ("text WIN to 87121").
const SHORT_CODE_CUES: &[&str] = &[
    "call", "dial", "reply", "ring", "send", "sms", "text", "txt",
];

/// A block list that cannot be read or parsed; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SignalsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Entry {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: cannot build the phrase matcher from the phrase lists")]
    Phrases {
        path: PathBuf,
        #[source]
        source: aho_corasick::BuildError,
    },
}

/// The compiled block lists; cheap to share, [`Signals::extract`] takes `&self`.
pub struct Signals {
    scam: HashSet<Box<str>>,
    suspicious: HashSet<Box<str>>,
    never_block: HashSet<Box<str>>,
    shorteners: HashSet<Box<str>>,
    /// Host → path prefixes (without the leading `/`); an empty prefix matches any path.
    invites: HashMap<Box<str>, Vec<Box<str>>>,
    /// `host/path`, lower-case, without a trailing `/`.
    scam_urls: HashSet<Box<str>>,
    scam_url_hosts: HashSet<Box<str>>,
    /// First path segments, lower-case.
    scam_paths: Vec<Box<str>>,
    tlds: HashSet<Box<str>>,
    phrases: Option<AhoCorasick>,
    /// Indexed by the automaton's pattern id.
    phrase_meta: Vec<(Box<str>, PhraseKind)>,
    scam_phrase_count: usize,
    spam_phrase_count: usize,
    finder: LinkFinder,
}

/// The signals of one message. Counts are 0 when the signal is absent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpamSignals {
    pub links: Vec<Link>,
    /// `@name` mentions (not e-mail addresses).
    pub mentions: u32,
    /// E-mail addresses.
    pub emails: u32,
    /// Alphabetic characters.
    pub letters: u32,
    /// Upper-case letters / letters; 0 when there are fewer than 8 letters.
    pub caps_ratio: f32,
    /// Longest run of one repeated non-space character (emoji and punctuation too); 0 when no
    /// character repeats three times in a row (doubled letters are ordinary spelling, and so is
    /// `...`).
    pub longest_char_run: u32,
    /// Emoji and pictographs; a flag or a joined sequence counts once.
    pub emoji: u32,
    /// How often the most repeated word (2+ characters, any case) occurs; 0 when none repeats.
    /// Counted over the first 128 words.
    pub longest_token_repeat: u32,
    /// Words of 2+ letters or digits, to put `longest_token_repeat` in proportion.
    pub words: u32,
    /// Phone numbers (7–15 digits) and SMS short codes after "text", "call", "to", ….
    pub phone_like: u32,
    /// Currency amounts ("£1000", "500$", "50 usd", "1000 cash") and "cash prize".
    pub money: u32,
    /// Hits of the scam and spam phrase lists, longest first where they overlap.
    pub scam_phrases: Vec<PhraseHit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// Raw byte offsets of the link.
    pub start: usize,
    pub end: usize,
    /// Host, lower-case, without `www.`.
    pub domain: String,
    pub kind: LinkKind,
    /// The first path segment is a known scam path (`/claim`, `/nitro-gift`, …); never set for
    /// never-block hosts and invites.
    pub scam_path: bool,
    /// Written to dodge link detection (`hxxp://`, `example[.]com`).
    pub obfuscated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// The host or a parent domain is a known phishing or scam domain, or the link is a known
    /// scam URL.
    Scam,
    Suspicious,
    Shortener,
    /// A chat invite (Discord, Telegram, WhatsApp, …).
    Invite,
    Plain,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhraseHit {
    /// The phrase as listed (lower-case).
    pub phrase: String,
    /// Raw byte offsets of the hit.
    pub start: usize,
    pub end: usize,
    pub kind: PhraseKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhraseKind {
    /// From `scam-phrases.txt` (Discord/Steam scams).
    Scam,
    /// From `spam-phrases.txt` (self-promotion, prize and money spam).
    Spam,
}

impl SpamSignals {
    /// Zeroes every field, keeping the vectors' capacity.
    fn reset(&mut self) {
        let mut links = std::mem::take(&mut self.links);
        let mut scam_phrases = std::mem::take(&mut self.scam_phrases);
        links.clear();
        scam_phrases.clear();
        *self = SpamSignals {
            links,
            scam_phrases,
            ..SpamSignals::default()
        };
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Signals");
        for (name, n) in self.counts() {
            s.field(name, &n);
        }
        s.finish()
    }
}

impl Signals {
    /// Loads `<rules_dir>/blocklists/*.txt`; every list must exist (it may be empty).
    pub fn load(rules_dir: &Path) -> Result<Self, SignalsError> {
        let dir = rules_dir.join(BLOCKLISTS_DIR);
        let mut s = Signals::empty();
        s.never_block = host_set(&dir.join(NEVER_BLOCK))?;
        s.scam = host_set(&dir.join(SCAM_DOMAINS))?;
        s.suspicious = host_set(&dir.join(SUSPICIOUS_DOMAINS))?;
        s.shorteners = host_set(&dir.join(SHORTENERS))?;
        for host in &s.never_block {
            s.scam.remove(host);
            s.suspicious.remove(host);
        }

        let path = dir.join(INVITES);
        for (line, entry) in read_list(&path)? {
            let (host, prefix) = entry.split_once('/').unwrap_or((&entry, ""));
            let host = parse_host(host).map_err(|message| entry_error(&path, line, message))?;
            let prefix = prefix.trim_matches('/').to_ascii_lowercase();
            s.invites.entry(host).or_default().push(prefix.into());
        }

        let path = dir.join(SCAM_URLS);
        for (line, entry) in read_list(&path)? {
            let Some((host, url_path)) = entry.split_once('/') else {
                return Err(entry_error(&path, line, "expected host/path".into()));
            };
            let host = parse_host(host).map_err(|message| entry_error(&path, line, message))?;
            let url_path = url_path.trim_matches('/').to_lowercase();
            if url_path.is_empty() {
                return Err(entry_error(&path, line, "expected host/path".into()));
            }
            if s.never_block.contains(&host) {
                continue;
            }
            s.scam_urls.insert(format!("{host}/{url_path}").into());
            s.scam_url_hosts.insert(host);
        }

        let path = dir.join(SCAM_PATHS);
        for (line, entry) in read_list(&path)? {
            let segment = entry.trim_matches('/').to_lowercase();
            if segment.is_empty() || segment.contains(['/', '?', '#']) {
                return Err(entry_error(&path, line, "expected one path segment".into()));
            }
            s.scam_paths.push(segment.into());
        }

        let path = dir.join(TLDS);
        for (line, entry) in read_list(&path)? {
            let tld = entry.trim_start_matches('.').to_lowercase();
            if tld.is_empty() || tld.contains(['.', '/']) || tld.contains(char::is_whitespace) {
                return Err(entry_error(
                    &path,
                    line,
                    "expected a top-level domain".into(),
                ));
            }
            s.tlds.insert(tld.into());
        }

        s.build_phrases(&dir.join(SCAM_PHRASES), &dir.join(SPAM_PHRASES))?;
        Ok(s)
    }

    /// No lists: links are found and classified as plain, every other signal still works.
    pub fn empty() -> Self {
        let mut finder = LinkFinder::new();
        finder
            .url_must_have_scheme(false)
            .kinds(&[linkify::LinkKind::Url, linkify::LinkKind::Email]);
        Signals {
            scam: HashSet::new(),
            suspicious: HashSet::new(),
            never_block: HashSet::new(),
            shorteners: HashSet::new(),
            invites: HashMap::new(),
            scam_urls: HashSet::new(),
            scam_url_hosts: HashSet::new(),
            scam_paths: Vec::new(),
            tlds: BUILTIN_TLDS.iter().map(|t| Box::from(*t)).collect(),
            phrases: None,
            phrase_meta: Vec::new(),
            scam_phrase_count: 0,
            spam_phrase_count: 0,
            finder,
        }
    }

    /// List name → number of entries, for `check-rules`.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("scam-domains", self.scam.len()),
            ("suspicious-domains", self.suspicious.len()),
            ("scam-urls", self.scam_urls.len()),
            ("scam-paths", self.scam_paths.len()),
            ("scam-phrases", self.scam_phrase_count),
            ("spam-phrases", self.spam_phrase_count),
            ("shorteners", self.shorteners.len()),
            ("invites", self.invites.values().map(Vec::len).sum()),
            ("never-block", self.never_block.len()),
            ("tlds", self.tlds.len()),
        ]
    }

    /// Fills `out` (cleared first) with the signals of one message.
    pub fn extract(&self, raw: &str, out: &mut SpamSignals) {
        out.reset();
        if !may_be_obfuscated(raw) {
            self.extract_plain(raw, out);
            return;
        }
        // Rare path: rewrite `[.]`-style dots to `.`, extract from the rewritten text and map
        // the offsets back.
        let (text, map, rewrites) = deobfuscate(raw);
        if rewrites.is_empty() {
            self.extract_plain(raw, out);
            return;
        }
        self.extract_plain(&text, out);
        let to_raw = |offset: usize| map.get(offset).copied().unwrap_or(raw.len());
        for link in &mut out.links {
            link.obfuscated |= rewrites.iter().any(|&r| link.start <= r && r < link.end);
            link.start = to_raw(link.start);
            link.end = to_raw(link.end);
        }
        for hit in &mut out.scam_phrases {
            hit.start = to_raw(hit.start);
            hit.end = to_raw(hit.end);
        }
    }

    fn extract_plain(&self, raw: &str, out: &mut SpamSignals) {
        let mut scan = TextScan::default();
        let mut pos = 0;
        if may_contain_link(raw) {
            for found in self.finder.links(raw) {
                let (start, end) = (found.start(), found.end());
                scan.scan(&raw[pos..start]);
                pos = end;
                if *found.kind() == linkify::LinkKind::Email {
                    out.emails += 1;
                } else if let Some(link) = self.link(found.as_str(), start, end) {
                    out.links.push(link);
                } else {
                    scan.scan(found.as_str());
                }
            }
        }
        scan.scan(&raw[pos..]);
        scan.finish(out);
        self.find_phrases(raw, out);
    }

    /// Classifies one URL found by linkify; `None` when it is not taken for a link (a bare
    /// `word.word` whose last label is not a known top-level domain).
    fn link(&self, text: &str, start: usize, end: usize) -> Option<Link> {
        let url = split_url(text);
        let mut domain = url.host.to_lowercase();
        let www = domain.starts_with("www.");
        if www {
            domain.drain(..4);
        }
        if domain.is_empty() {
            return None;
        }
        let kind = self.classify(&domain, url.path);
        if kind == LinkKind::Plain && url.scheme.is_none() && !www {
            let tld = domain.rsplit('.').next().unwrap_or_default();
            // `news.By the way`: a sentence missing its space, not a `.by` domain.
            let raw_tld = url.host.rsplit('.').next().unwrap_or_default();
            let title_case =
                raw_tld.chars().any(char::is_uppercase) && raw_tld.chars().any(char::is_lowercase);
            if !self.tlds.contains(tld) || title_case {
                return None;
            }
        }
        let protected = kind == LinkKind::Invite || self.protected(&domain);
        let scam_path = !protected && self.is_scam_path(url.path);
        let obfuscated = url
            .scheme
            .is_some_and(|s| s.eq_ignore_ascii_case("hxxp") || s.eq_ignore_ascii_case("hxxps"));
        Some(Link {
            start,
            end,
            domain,
            kind,
            scam_path,
            obfuscated,
        })
    }

    /// Walks from the host up to its registrable parents; the most specific listed entry wins,
    /// and never-block wins a tie.
    fn classify(&self, host: &str, path: &str) -> LinkKind {
        for suffix in domain_suffixes(host) {
            if self.never_block.contains(suffix) {
                break;
            }
            if self.scam.contains(suffix) {
                return LinkKind::Scam;
            }
            if self.suspicious.contains(suffix) {
                return LinkKind::Suspicious;
            }
        }
        if !self.protected(host)
            && self.scam_url_hosts.contains(host)
            && self.is_scam_url(host, path)
        {
            return LinkKind::Scam;
        }
        for suffix in domain_suffixes(host) {
            if let Some(prefixes) = self.invites.get(suffix)
                && prefixes.iter().any(|p| path_has_prefix(path, p))
            {
                return LinkKind::Invite;
            }
        }
        if domain_suffixes(host).any(|s| self.shorteners.contains(s)) {
            return LinkKind::Shortener;
        }
        LinkKind::Plain
    }

    /// Whether never-block covers `host` more specifically than any scam or suspicious entry.
    fn protected(&self, host: &str) -> bool {
        for suffix in domain_suffixes(host) {
            if self.never_block.contains(suffix) {
                return true;
            }
            if self.scam.contains(suffix) || self.suspicious.contains(suffix) {
                return false;
            }
        }
        false
    }

    fn is_scam_url(&self, host: &str, path: &str) -> bool {
        let path = path
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_matches('/');
        if path.is_empty() {
            return false;
        }
        let key = format!("{host}/{}", path.to_lowercase());
        // A listed URL also covers anything below it (`bit.ly/abc/x`).
        let mut candidate = key.as_str();
        loop {
            if self.scam_urls.contains(candidate) {
                return true;
            }
            match candidate.rsplit_once('/') {
                Some((parent, _)) if parent.len() > host.len() => candidate = parent,
                _ => return false,
            }
        }
    }

    fn is_scam_path(&self, path: &str) -> bool {
        let first = path
            .strip_prefix('/')
            .and_then(|p| p.split(['/', '?', '#']).next())
            .unwrap_or_default();
        !first.is_empty()
            && self
                .scam_paths
                .iter()
                .any(|p| p.eq_ignore_ascii_case(first))
    }

    fn build_phrases(&mut self, scam: &Path, spam: &Path) -> Result<(), SignalsError> {
        let mut seen = HashSet::new();
        for (path, kind) in [(scam, PhraseKind::Scam), (spam, PhraseKind::Spam)] {
            for (_, entry) in read_list(path)? {
                let phrase = entry.split_whitespace().collect::<Vec<_>>().join(" ");
                let phrase = phrase.to_lowercase();
                if !seen.insert(phrase.clone()) {
                    continue;
                }
                match kind {
                    PhraseKind::Scam => self.scam_phrase_count += 1,
                    PhraseKind::Spam => self.spam_phrase_count += 1,
                }
                self.phrase_meta.push((phrase.into(), kind));
            }
        }
        if self.phrase_meta.is_empty() {
            return Ok(());
        }
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(self.phrase_meta.iter().map(|(p, _)| p.as_bytes()))
            .map_err(|source| SignalsError::Phrases {
                path: scam.parent().unwrap_or(scam).to_path_buf(),
                source,
            })?;
        self.phrases = Some(automaton);
        Ok(())
    }

    fn find_phrases(&self, raw: &str, out: &mut SpamSignals) {
        let Some(automaton) = &self.phrases else {
            return;
        };
        for m in automaton.find_overlapping_iter(raw) {
            if !is_word_boundary(raw, m.start(), m.end()) {
                continue;
            }
            let Some((phrase, kind)) = self.phrase_meta.get(m.pattern().as_usize()) else {
                continue;
            };
            out.scam_phrases.push(PhraseHit {
                phrase: phrase.to_string(),
                start: m.start(),
                end: m.end(),
                kind: *kind,
            });
        }
        if out.scam_phrases.len() > 1 {
            out.scam_phrases
                .sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
            let mut last_end = 0;
            out.scam_phrases.retain(|h| {
                let keep = h.start >= last_end;
                if keep {
                    last_end = h.end;
                }
                keep
            });
        }
    }
}

/// Non-empty, non-comment lines (trimmed) with their 1-based line numbers.
fn read_list(path: &Path) -> Result<Vec<(usize, String)>, SignalsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SignalsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.to_string()))
        .collect())
}

fn host_set(path: &Path) -> Result<HashSet<Box<str>>, SignalsError> {
    read_list(path)?
        .into_iter()
        .map(|(line, entry)| parse_host(&entry).map_err(|message| entry_error(path, line, message)))
        .collect()
}

/// A list entry as a host: lower-case, without `www.` or a trailing dot.
fn parse_host(entry: &str) -> Result<Box<str>, String> {
    let mut host = entry.trim().trim_end_matches('.').to_lowercase();
    if host.starts_with("www.") {
        host.drain(..4);
    }
    let valid = !host.is_empty()
        && !host.starts_with('.')
        && !host.contains("..")
        && !host.contains(|c: char| c.is_whitespace() || "/?#@:*".contains(c));
    if valid {
        Ok(host.into())
    } else {
        Err(format!("not a host: {entry:?}"))
    }
}

fn entry_error(path: &Path, line: usize, message: String) -> SignalsError {
    SignalsError::Entry {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// `a.b.c.com`, `b.c.com`, `c.com` (never the bare top-level domain).
fn domain_suffixes(host: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(host), |h| h.split_once('.').map(|(_, rest)| rest))
        .take_while(|s| s.contains('.'))
}

/// Whether `path` (`/a/b?q`) starts with the segments of `prefix` (`a` or `a/b`); an empty
/// prefix matches anything.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.len() >= prefix.len()
        && rest.is_char_boundary(prefix.len())
        && rest[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(
            rest.as_bytes().get(prefix.len()),
            None | Some(b'/' | b'?' | b'#')
        )
}

struct UrlParts<'a> {
    scheme: Option<&'a str>,
    host: &'a str,
    /// From the first `/`, `?` or `#` after the host (may be empty).
    path: &'a str,
}

fn split_url(url: &str) -> UrlParts<'_> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (Some(scheme), rest)
        }
        _ => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    UrlParts {
        scheme,
        host: host.trim_end_matches('.'),
        path,
    }
}

/// Cheap pre-check before running linkify: a link or e-mail needs a dot between two
/// domain-label characters, so most chat lines (`lol.`, `ok...`) skip the link finder.
fn may_contain_link(raw: &str) -> bool {
    let b = raw.as_bytes();
    let label = |c: u8| c.is_ascii_alphanumeric() || c >= 0x80;
    b.iter()
        .enumerate()
        .skip(1)
        .any(|(i, &c)| c == b'.' && label(b[i - 1]) && b.get(i + 1).is_some_and(|&n| label(n)))
}

const OBFUSCATED_DOTS: &[&str] = &["[.]", "(.)", "{.}", "[dot]", "(dot)", "{dot}"];

fn may_be_obfuscated(raw: &str) -> bool {
    raw.contains(['[', '(', '{'])
        && OBFUSCATED_DOTS.iter().any(|d| {
            raw.as_bytes()
                .windows(d.len())
                .any(|w| w.eq_ignore_ascii_case(d.as_bytes()))
        })
}

/// The text with every obfuscated dot written as `.`, a map from each byte offset of it
/// (and its length) to the raw offset, and the rewritten offsets of the dots.
fn deobfuscate(raw: &str) -> (String, Vec<usize>, Vec<usize>) {
    let mut text = String::with_capacity(raw.len());
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut rewrites = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let rest = &raw.as_bytes()[i..];
        let dot = OBFUSCATED_DOTS
            .iter()
            .find(|d| rest.len() >= d.len() && rest[..d.len()].eq_ignore_ascii_case(d.as_bytes()));
        let between_labels = i > 0
            && raw.as_bytes()[i - 1].is_ascii_alphanumeric()
            && dot.is_some_and(|d| rest.get(d.len()).is_some_and(u8::is_ascii_alphanumeric));
        if let (Some(d), true) = (dot, between_labels) {
            rewrites.push(text.len());
            map.push(i);
            text.push('.');
            i += d.len();
            continue;
        }
        let Some(c) = raw[i..].chars().next() else {
            break;
        };
        for _ in 0..c.len_utf8() {
            map.push(i);
        }
        // Bytes of one char map to its start; only char-boundary offsets are ever looked up.
        text.push(c);
        i += c.len_utf8();
    }
    map.push(raw.len());
    (text, map, rewrites)
}

fn is_word_boundary(raw: &str, start: usize, end: usize) -> bool {
    let before = raw[..start].chars().next_back();
    let after = raw[end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// Pictographic code points. Hand-written because no emoji-property crate is a dependency; the
/// ranges are the Unicode emoji blocks, which is all a spam signal needs.
fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF
        | 0x2600..=0x27BF
        | 0x2B05..=0x2B07 | 0x2B1B..=0x2B1C | 0x2B50 | 0x2B55
        | 0x231A..=0x231B | 0x2328 | 0x23CF | 0x23E9..=0x23F3 | 0x23F8..=0x23FA
        | 0x2194..=0x2199 | 0x21A9..=0x21AA | 0x2934..=0x2935
        | 0x203C | 0x2049 | 0x20E3 | 0x24C2 | 0x25AA..=0x25AB | 0x25B6 | 0x25C0 | 0x25FB..=0x25FE
        | 0x3030 | 0x303D | 0x3297 | 0x3299)
}

fn is_regional_indicator(c: char) -> bool {
    matches!(c as u32, 0x1F1E6..=0x1F1FF)
}

/// Variation selectors and skin tones: part of the emoji before them, so they neither count
/// nor break a run.
fn is_emoji_modifier(c: char) -> bool {
    matches!(c as u32, 0xFE0E | 0xFE0F | 0x1F3FB..=0x1F3FF)
}

fn is_currency_symbol(c: char) -> bool {
    matches!(c, '$' | '£' | '¥' | '¢' | '\u{20A0}'..='\u{20CF}')
}

fn in_list(word: &str, list: &[&str]) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum PrevWord {
    #[default]
    Other,
    Cash,
}

/// Character, word and number statistics over the text outside links, fed segment by segment.
struct TextScan {
    letters: u32,
    upper: u32,
    run_char: Option<char>,
    run_len: u32,
    longest_run: u32,
    emoji: u32,
    mentions: u32,
    money: u32,
    phone: u32,
    /// FNV-1a hashes of the lower-cased words, so repeats are counted without allocating.
    words: [u64; MAX_WORDS],
    n_words: usize,
    total_words: u32,
    prev_word: PrevWord,
}

impl Default for TextScan {
    fn default() -> Self {
        TextScan {
            letters: 0,
            upper: 0,
            run_char: None,
            run_len: 0,
            longest_run: 0,
            emoji: 0,
            mentions: 0,
            money: 0,
            phone: 0,
            words: [0; MAX_WORDS],
            n_words: 0,
            total_words: 0,
            prev_word: PrevWord::Other,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl TextScan {
    fn scan(&mut self, seg: &str) {
        self.scan_chars(seg);
        self.scan_numbers(seg);
        // A link or e-mail between two segments breaks runs.
        self.run_char = None;
        self.run_len = 0;
    }

    fn scan_chars(&mut self, seg: &str) {
        let mut prev: Option<char> = None;
        let mut word: Option<(usize, u64, u32)> = None;
        let mut pending_flag = false;
        let mut after_zwj = false;
        for (i, c) in seg.char_indices() {
            if c == '\u{200D}' || is_emoji_modifier(c) {
                after_zwj = c == '\u{200D}';
                continue;
            }
            if c.is_whitespace() {
                self.run_char = None;
                self.run_len = 0;
            } else if self.run_char == Some(c) {
                self.run_len += 1;
                // An ellipsis is ordinary punctuation; longer runs of dots are not.
                if c != '.' || self.run_len > 3 {
                    self.longest_run = self.longest_run.max(self.run_len);
                }
            } else {
                self.run_char = Some(c);
                self.run_len = 1;
            }

            if is_emoji(c) {
                if is_regional_indicator(c) {
                    // Two regional indicators make one flag.
                    if !pending_flag {
                        self.emoji += 1;
                    }
                    pending_flag = !pending_flag;
                } else {
                    if !after_zwj {
                        self.emoji += 1;
                    }
                    pending_flag = false;
                }
            } else {
                pending_flag = false;
            }
            after_zwj = false;

            if c == '@'
                && !prev.is_some_and(|p| p.is_alphanumeric() || "._-+@".contains(p))
                && seg[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|n| n.is_alphanumeric() || n == '_')
            {
                self.mentions += 1;
            }

            if c.is_alphanumeric() {
                if c.is_alphabetic() {
                    self.letters += 1;
                    if c.is_uppercase() {
                        self.upper += 1;
                    }
                }
                let (start, mut hash, len) = word.unwrap_or((i, FNV_OFFSET, 0));
                if c.is_ascii() {
                    let l = c.to_ascii_lowercase();
                    hash = (hash ^ u64::from(u32::from(l))).wrapping_mul(FNV_PRIME);
                } else {
                    for l in c.to_lowercase() {
                        hash = (hash ^ u64::from(u32::from(l))).wrapping_mul(FNV_PRIME);
                    }
                }
                word = Some((start, hash, len + 1));
            } else if let Some((start, hash, len)) = word.take() {
                self.end_word(&seg[start..i], hash, len);
            }
            prev = Some(c);
        }
        if let Some((start, hash, len)) = word {
            self.end_word(&seg[start..], hash, len);
        }
    }

    fn end_word(&mut self, word: &str, hash: u64, chars: u32) {
        if chars >= 2 {
            self.total_words += 1;
            if self.n_words < MAX_WORDS {
                self.words[self.n_words] = hash;
                self.n_words += 1;
            }
        }
        if self.prev_word == PrevWord::Cash && in_list(word, PRIZE_WORDS) {
            self.money += 1;
        }
        self.prev_word = if word.eq_ignore_ascii_case("cash") {
            PrevWord::Cash
        } else {
            PrevWord::Other
        };
    }

    /// Money amounts and phone numbers. Numbers are ASCII digits; `1,000.50` is one number.
    fn scan_numbers(&mut self, seg: &str) {
        let b = seg.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            // The decimals of a number already seen (`3.14`) or a digit glued to one.
            let continuation =
                i >= 2 && matches!(b[i - 1], b'.' | b',') && b[i - 2].is_ascii_digit();
            let num_end = number_end(b, i);
            if continuation {
                i = num_end;
                continue;
            }
            if is_money(seg, i, num_end) {
                self.money += 1;
                i = num_end;
                continue;
            }
            let group = phone_group(b, i);
            if is_phone(seg, i, &group) {
                self.phone += 1;
                i = group.end.max(num_end);
            } else {
                i = num_end;
            }
        }
    }

    fn finish(&mut self, out: &mut SpamSignals) {
        out.letters = self.letters;
        out.caps_ratio = if self.letters >= 8 {
            self.upper as f32 / self.letters as f32
        } else {
            0.0
        };
        out.longest_char_run = if self.longest_run >= 3 {
            self.longest_run
        } else {
            0
        };
        out.emoji = self.emoji;
        out.mentions = self.mentions;
        out.money = self.money;
        out.phone_like = self.phone;
        out.words = self.total_words;
        let words = &mut self.words[..self.n_words];
        words.sort_unstable();
        let longest = words
            .chunk_by(|a, b| a == b)
            .map(<[u64]>::len)
            .max()
            .unwrap_or(0);
        out.longest_token_repeat = if longest >= 2 { longest as u32 } else { 0 };
    }
}

/// The ASCII letters at the end of `s` (`"text WIN to"` → `"to"`).
fn trailing_ascii_word(s: &str) -> &str {
    let start = s
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_ascii_alphabetic())
        .map_or(0, |(i, c)| i + c.len_utf8());
    &s[start..]
}

/// End of the number starting at `start`: digits, with `.` or `,` between digits.
fn number_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < b.len() {
        if b[i].is_ascii_digit()
            || (matches!(b[i], b'.' | b',')
                && i > start
                && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// A currency symbol or word right before or after the number (one space allowed), or a
/// `k`/`m` suffix then a currency word (`10k usd`).
fn is_money(seg: &str, start: usize, end: usize) -> bool {
    let before = seg[..start].strip_suffix(' ').unwrap_or(&seg[..start]);
    if before.chars().next_back().is_some_and(is_currency_symbol) {
        return true;
    }
    let prev_word = trailing_ascii_word(before.strip_suffix('.').unwrap_or(before));
    if !prev_word.is_empty() && in_list(prev_word, CURRENCY_PREFIXES) {
        return true;
    }
    let after = &seg[end..];
    let after = after
        .strip_prefix(['k', 'K', 'm', 'M'])
        .filter(|a| !a.starts_with(|c: char| c.is_alphanumeric()))
        .unwrap_or(after);
    let after = after.strip_prefix(' ').unwrap_or(after);
    if after.chars().next().is_some_and(is_currency_symbol) {
        return true;
    }
    let word_end = after
        .find(|c: char| !c.is_alphanumeric())
        .unwrap_or(after.len());
    // `L8RS` (later) is not 8 rupees.
    let glued = seg[..start]
        .chars()
        .next_back()
        .is_some_and(char::is_alphabetic);
    !glued && word_end > 0 && in_list(&after[..word_end], CURRENCY_WORDS)
}

struct PhoneGroup {
    end: usize,
    digits: usize,
    /// (start, length) of each digit run.
    runs: [(usize, usize); 6],
    n_runs: usize,
}

/// Digit runs joined by up to two of ` -()`: `0845 281 0075`, `(555) 123-4567`. Runs after the
/// first need two digits, so scores (`2-1`) and counts (`5 6 7`) stay apart.
fn phone_group(b: &[u8], start: usize) -> PhoneGroup {
    let mut g = PhoneGroup {
        end: start,
        digits: 0,
        runs: [(0, 0); 6],
        n_runs: 0,
    };
    let mut i = start;
    loop {
        let run_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let len = i - run_start;
        if g.n_runs > 0 && len < 2 {
            break;
        }
        g.runs[g.n_runs] = (run_start, len);
        g.n_runs += 1;
        g.digits += len;
        g.end = i;
        let mut j = i;
        while j < b.len() && j - i < 2 && matches!(b[j], b' ' | b'-' | b'(' | b')') {
            j += 1;
        }
        if j == i || g.n_runs == g.runs.len() || !b.get(j).is_some_and(u8::is_ascii_digit) {
            break;
        }
        i = j;
    }
    g
}

fn is_phone(seg: &str, start: usize, g: &PhoneGroup) -> bool {
    let lead = seg[..start]
        .strip_suffix(['+', '('])
        .unwrap_or(&seg[..start]);
    let before = lead.chars().next_back();
    let after = seg[g.end..].chars().next();
    if matches!(before, Some('@' | '#')) {
        // A handle or hashtag (`@100046729`, `#2024`).
        return false;
    }
    let boundary =
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
    let b = seg.as_bytes();
    let digits = || g.runs[..g.n_runs].iter().flat_map(|&(s, n)| &b[s..s + n]);
    let len = |k: usize| g.runs.get(k).map_or(0, |r| r.1);
    let year = |k: usize| {
        let (s, n) = g.runs[k];
        n == 4 && matches!(&b[s..s + 2], b"19" | b"20")
    };
    let date = g.n_runs >= 3
        && ((len(0) <= 2 && len(1) <= 2 && len(2) == 4)
            || (len(0) == 4 && len(1) <= 2 && len(2) <= 2));
    let years = g.n_runs == 2 && year(0) && year(1);
    let same_digit = digits().all(|d| Some(d) == digits().next());
    let round = g.n_runs == 1 && g.digits >= 7 && digits().skip(g.digits - 4).all(|&d| d == b'0');
    if date || years || same_digit || round {
        return false;
    }
    match g.digits {
        // Long enough to be a phone number even with a word glued after it
        // ("08452810075over18's").
        10..=15 => !before.is_some_and(char::is_alphabetic),
        7..=9 => boundary,
        4..=6 if g.n_runs == 1 && boundary => {
            let cue = trailing_ascii_word(lead.trim_end_matches([' ', ':']));
            in_list(cue, SHORT_CODE_CUES) || (g.digits >= 5 && cue.eq_ignore_ascii_case("to"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Signals {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        Signals::load(&rules).unwrap()
    }

    fn signals(s: &Signals, raw: &str) -> SpamSignals {
        let mut out = SpamSignals::default();
        s.extract(raw, &mut out);
        out
    }

    fn kinds(out: &SpamSignals) -> Vec<(String, LinkKind)> {
        out.links
            .iter()
            .map(|l| (l.domain.clone(), l.kind))
            .collect()
    }

    #[test]
    fn signals_can_be_shared_between_workers() {
        fn shared<T: Send + Sync + 'static>(_: &T) {}
        shared(&Signals::empty());
        let json =
            serde_json::to_value(signals(&Signals::empty(), "see https://example.com")).unwrap();
        assert_eq!(json["links"][0]["kind"], "plain");
        assert_eq!(json["links"][0]["domain"], "example.com");
    }

    #[test]
    fn shipped_lists_load_with_sane_counts() {
        let s = shipped();
        let counts: HashMap<_, _> = s.counts().into_iter().collect();
        assert!(counts["scam-domains"] > 20_000, "{counts:?}");
        assert!(counts["suspicious-domains"] > 500, "{counts:?}");
        assert!(counts["scam-phrases"] > 50, "{counts:?}");
        assert!(counts["spam-phrases"] > 20, "{counts:?}");
        for name in [
            "scam-urls",
            "scam-paths",
            "shorteners",
            "invites",
            "never-block",
            "tlds",
        ] {
            assert!(counts[name] > 0, "{name}: {counts:?}");
        }
        for legit in [
            "discord.com",
            "google.com",
            "youtube.com",
            "github.com",
            "steamcommunity.com",
        ] {
            assert!(
                !s.scam.contains(legit) && !s.suspicious.contains(legit),
                "{legit}"
            );
        }
    }

    #[test]
    fn clean_chat_gives_zero_signals() {
        let s = shipped();
        for raw in [
            "gg wp",
            "anyone up for ranked?",
            "lol that was close",
            "meet at 5",
            "I scored 2-1",
            "ok... see you tomorrow.",
            "that was close.anyway, next round",
            "need 2 more for the raid, 10:30 tonight",
        ] {
            let out = signals(&s, raw);
            assert!(out.links.is_empty(), "{raw}: {:?}", out.links);
            assert!(out.scam_phrases.is_empty(), "{raw}: {:?}", out.scam_phrases);
            assert_eq!(
                (
                    out.mentions,
                    out.emails,
                    out.emoji,
                    out.phone_like,
                    out.money
                ),
                (0, 0, 0, 0, 0),
                "{raw}"
            );
            assert_eq!(
                (out.longest_char_run, out.longest_token_repeat),
                (0, 0),
                "{raw}"
            );
            assert_eq!(out.caps_ratio, 0.0, "{raw}");
            assert!(out.letters > 0, "{raw}");
        }
    }

    #[test]
    fn sms_prize_spam() {
        let s = shipped();
        let raw = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to \
                   87121 to receive entry question(std txt rate)T&C's apply 08452810075over18's";
        let out = signals(&s, raw);
        assert_eq!(out.phone_like, 2, "short code and phone number");
        let phrases: Vec<_> = out.scam_phrases.iter().map(|h| h.phrase.as_str()).collect();
        assert_eq!(phrases, ["free entry"]);
        assert_eq!(
            &raw[out.scam_phrases[0].start..out.scam_phrases[0].end],
            "Free entry"
        );
        assert_eq!(out.scam_phrases[0].kind, PhraseKind::Spam);
        assert_eq!(out.money, 0);

        let raw = "URGENT! We are trying to contact U. Todays draw shows that you have won a £800 \
                   prize GUARANTEED. Call 09050003091 from land line. Claim C52. Valid12hrs only";
        let out = signals(&s, raw);
        assert_eq!(out.money, 1);
        assert_eq!(out.phone_like, 1);
        let phrases: Vec<_> = out.scam_phrases.iter().map(|h| h.phrase.as_str()).collect();
        assert_eq!(
            phrases,
            [
                "we are trying to contact",
                "you have won",
                "prize guaranteed"
            ]
        );
        assert!(
            out.caps_ratio > 0.2 && out.caps_ratio < 0.5,
            "{}",
            out.caps_ratio
        );
    }

    #[test]
    fn money_amounts() {
        let s = shipped();
        let cases = [
            ("win $500 now", 1),
            ("£1000 cash or a £2000 prize", 2),
            ("only 4500 $ a month", 1),
            ("Per User : ₹40/-", 1),
            ("code EARN40₹", 1),
            ("made 10k usd last week", 1),
            ("Rs.500 bonus", 1),
            ("claim your cash prize", 1),
            ("std txt rate £1.50 to rcv", 1),
            ("free skins for everyone", 0),
            ("IL EXPLAIN EVERYTHIN ON MON.L8RS.x", 0),
            ("I have 500 gold and 3.5 gems", 0),
        ];
        for (raw, money) in cases {
            assert_eq!(signals(&s, raw).money, money, "{raw}");
        }
    }

    #[test]
    fn phone_numbers_and_short_codes() {
        let s = shipped();
        let cases = [
            ("call 08452810075 now", 1),
            ("ring +44 7700 900123", 1),
            ("(555) 123-4567", 1),
            ("txt NOK to 87021", 1),
            ("txt CARD SPOOK to 8007", 0),
            ("text 8007 for more", 1),
            ("my number 555-0199 ok", 1),
            ("event on 2024-05-12", 0),
            ("upgrade to 1000 elo", 0),
            ("got 12000 points", 0),
            ("steam id 76561198000000000", 0),
            ("3.14159265358979", 0),
            ("2008-2010 were the years for pop", 0),
            ("2017-08-12 23:50:56", 0),
            ("BEST SONG EVER X3333333333", 0),
            ("1000000000 views", 0),
            ("@100046729 lol", 0),
            ("num 6744 1233", 1),
        ];
        for (raw, phones) in cases {
            assert_eq!(signals(&s, raw).phone_like, phones, "{raw}");
        }
    }

    #[test]
    fn scam_domain_with_offsets_and_subdomains() {
        let s = shipped();
        let raw = "bro check free-nitro.gift/claim";
        let domain = "free-nitro.gift";
        // Use a real list entry so the test follows the shipped data.
        assert!(s.scam.contains("101nitro.com"));
        let out = signals(&s, raw);
        assert_eq!(out.links.len(), 1);
        let link = &out.links[0];
        assert_eq!(&raw[link.start..link.end], "free-nitro.gift/claim");
        assert_eq!(link.domain, domain);
        assert!(link.scam_path, "/claim is a scam path");

        let raw = "Free nitro: https://a.b.101nitro.com/gift?code=1 hurry";
        let out = signals(&s, raw);
        assert_eq!(
            kinds(&out),
            [("a.b.101nitro.com".to_string(), LinkKind::Scam)]
        );
        assert_eq!(
            &raw[out.links[0].start..out.links[0].end],
            "https://a.b.101nitro.com/gift?code=1"
        );
        let out = signals(&s, "see WWW.101Nitro.COM");
        assert_eq!(kinds(&out), [("101nitro.com".to_string(), LinkKind::Scam)]);
        let out = signals(&s, "a happy news.By the grace of God, not news.by");
        assert_eq!(kinds(&out), [("news.by".to_string(), LinkKind::Plain)]);
        let out = signals(&s, "not.101nitro.company/x");
        assert_ne!(out.links.first().map(|l| l.kind), Some(LinkKind::Scam));
    }

    #[test]
    fn suspicious_and_unicode_lookalikes() {
        let s = shipped();
        let out = signals(&s, "join https://0xmons.net today");
        assert_eq!(
            kinds(&out),
            [("0xmons.net".to_string(), LinkKind::Suspicious)]
        );
        let out = signals(&s, "login at https://steamcommunìty.com/id/x");
        assert_eq!(out.links.len(), 1);
        assert_eq!(out.links[0].kind, LinkKind::Scam);
    }

    #[test]
    fn never_block_wins_but_specific_scam_entries_still_count() {
        let s = shipped();
        for raw in [
            "https://discord.com/channels/1/2",
            "https://github.com/rust-lang/rust",
            "https://steamcommunity.com/tradeoffer/new/?partner=1",
            "youtube.com/watch?v=abc",
        ] {
            let out = signals(&s, raw);
            assert_eq!(out.links.len(), 1, "{raw}");
            assert_eq!(out.links[0].kind, LinkKind::Plain, "{raw}");
            assert!(!out.links[0].scam_path, "{raw}");
        }
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join(BLOCKLISTS_DIR);
        std::fs::create_dir(&lists).unwrap();
        let files = [
            (SCAM_DOMAINS, "google.com\nevil.blogspot.com\n"),
            (SUSPICIOUS_DOMAINS, ""),
            (NEVER_BLOCK, "# legit\ngoogle.com\nblogspot.com\n"),
            (SCAM_URLS, ""),
            (SCAM_PHRASES, ""),
            (SPAM_PHRASES, ""),
            (SCAM_PATHS, "/claim\n"),
            (SHORTENERS, ""),
            (INVITES, ""),
            (TLDS, "com\n"),
        ];
        for (name, text) in files {
            std::fs::write(lists.join(name), text).unwrap();
        }
        let s = Signals::load(dir.path()).unwrap();
        assert_eq!(
            s.counts()[0],
            ("scam-domains", 1),
            "google.com dropped at load"
        );
        let out = signals(&s, "google.com/claim mine.blogspot.com x.evil.blogspot.com");
        let found: Vec<_> = out.links.iter().map(|l| (l.kind, l.scam_path)).collect();
        assert_eq!(
            found,
            [
                (LinkKind::Plain, false),
                (LinkKind::Plain, false),
                (LinkKind::Scam, false)
            ]
        );
    }

    #[test]
    fn shorteners_invites_and_scam_urls() {
        let s = shipped();
        let out = signals(
            &s,
            "https://tinyurl.com/abc123 bit.ly/2zo2ibr t.co/x discord.gg/abcd \
             https://discord.com/invite/xyz https://t.me/+X4_xs3XKM3o2MzRk chat.whatsapp.com/AbC",
        );
        let found: Vec<_> = kinds(&out).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            found,
            [
                LinkKind::Shortener,
                LinkKind::Scam,
                LinkKind::Shortener,
                LinkKind::Invite,
                LinkKind::Invite,
                LinkKind::Invite,
                LinkKind::Invite,
            ]
        );
        let out = signals(
            &s,
            "https://discord.com/channels/1/2 https://t.me/joinchat/abc",
        );
        assert_eq!(out.links[0].kind, LinkKind::Plain, "not an invite path");
        assert_eq!(out.links[1].kind, LinkKind::Invite);
        assert!(!out.links[1].scam_path, "invites never carry a scam path");
    }

    #[test]
    fn emails_are_not_links_or_mentions() {
        let s = shipped();
        let out = signals(
            &s,
            "mail bob1234567@example.com or ping @alice and <@123456> @",
        );
        assert!(out.links.is_empty(), "{:?}", out.links);
        assert_eq!(out.emails, 1);
        assert_eq!(out.mentions, 2);
        assert_eq!(out.phone_like, 0);
        let out = signals(
            &s,
            "All thanks to  @Beyondtrader for the successful cash out. 👉 https://t.me/trade_with_x",
        );
        assert_eq!(out.mentions, 1);
        assert_eq!(kinds(&out), [("t.me".to_string(), LinkKind::Invite)]);
        let phrases: Vec<_> = out.scam_phrases.iter().map(|h| h.phrase.as_str()).collect();
        assert_eq!(phrases, ["all thanks to", "cash out"]);
        assert_eq!(out.emoji, 1);
    }

    #[test]
    fn youtube_self_promotion() {
        let s = shipped();
        let out = signals(
            &s,
            "Hey guys subscribe to my channel and i will subscribe back :) http://www.twitch.tv/jaroadc",
        );
        let phrases: Vec<_> = out.scam_phrases.iter().map(|h| h.phrase.as_str()).collect();
        assert_eq!(phrases, ["subscribe to my channel", "subscribe back"]);
        assert_eq!(kinds(&out), [("twitch.tv".to_string(), LinkKind::Plain)]);
        assert_eq!(out.longest_token_repeat, 2, "subscribe ×2");
        let out = signals(
            &s,
            "Meet The Richest Online Marketer  NOW CLICK : bit.ly/make-money-without-adroid",
        );
        assert_eq!(kinds(&out), [("bit.ly".to_string(), LinkKind::Shortener)]);
    }

    #[test]
    fn discord_nitro_scam() {
        let s = shipped();
        let raw = "@everyone Discord is giving away free nitro for 3 months!! catch the gift: \
                   https://discord-nitro.gift/welcomes";
        let out = signals(&s, raw);
        assert_eq!(out.mentions, 1);
        let phrases: Vec<_> = out.scam_phrases.iter().map(|h| h.phrase.as_str()).collect();
        assert_eq!(
            phrases,
            ["discord is giving", "free nitro for", "catch the gift"]
        );
        assert_eq!(out.scam_phrases[0].kind, PhraseKind::Scam);
        assert_eq!(out.longest_char_run, 0, "!! is only two");
        // Word boundaries: inside words no phrase matches.
        let out = signals(&s, "freeentry, afree entry2");
        assert!(out.scam_phrases.is_empty(), "{:?}", out.scam_phrases);
    }

    #[test]
    fn caps_runs_emoji_and_repeats() {
        let s = shipped();
        assert_eq!(
            signals(&s, "OMG WOW").caps_ratio,
            0.0,
            "fewer than 8 letters"
        );
        let out = signals(&s, "BUY NOW CHEAP GOLD");
        assert_eq!(out.caps_ratio, 1.0);
        assert_eq!(out.letters, 15);
        let out = signals(&s, "Buy Now cheap gold");
        assert!((out.caps_ratio - 2.0 / 15.0).abs() < 1e-6);

        assert_eq!(signals(&s, "noooooo!!!").longest_char_run, 6);
        assert_eq!(signals(&s, "what?!?!?! ....").longest_char_run, 4);
        assert_eq!(signals(&s, "😂😂😂😂 lol").longest_char_run, 4);
        assert_eq!(
            signals(&s, "❤️❤️❤️").longest_char_run,
            3,
            "variation selectors skipped"
        );
        assert_eq!(
            signals(&s, "www.example.com aaa").longest_char_run,
            3,
            "not the www"
        );

        assert_eq!(signals(&s, "gg 😂😂 👍🏽 🇬🇧🇺🇸 👨‍👩‍👧 ✨").emoji, 7);
        let out = signals(&s, "buy buy buy BUY now");
        assert_eq!((out.longest_token_repeat, out.words), (4, 5));
        assert_eq!(
            signals(&s, "a a a a").longest_token_repeat,
            0,
            "one-letter words"
        );
    }

    #[test]
    fn obfuscated_links() {
        let s = shipped();
        let raw = "go to 101nitro[.]com/gift now";
        let out = signals(&s, raw);
        assert_eq!(out.links.len(), 1);
        let link = &out.links[0];
        assert_eq!(link.kind, LinkKind::Scam);
        assert!(link.obfuscated && link.scam_path);
        assert_eq!(&raw[link.start..link.end], "101nitro[.]com/gift");
        let out = signals(&s, "hxxps://discord(dot)gg/abc and (.) [dot]");
        assert_eq!(kinds(&out), [("discord.gg".to_string(), LinkKind::Invite)]);
        assert!(out.links[0].obfuscated);
        let out = signals(&s, "a (dot) b and c [.] d");
        assert!(out.links.is_empty());
    }

    #[test]
    fn extract_resets_previous_signals() {
        let s = shipped();
        let mut out = SpamSignals::default();
        s.extract("@a @b https://bit.ly/x £5 free nitro for all", &mut out);
        assert!(!out.links.is_empty() && out.mentions == 2 && out.money == 1);
        s.extract("gg", &mut out);
        assert!(out.links.is_empty() && out.scam_phrases.is_empty());
        assert_eq!((out.mentions, out.money, out.letters), (0, 0, 2));
    }

    #[test]
    fn empty_signals_still_find_links() {
        let s = Signals::empty();
        let out = signals(
            &s,
            "see https://101nitro.com and example.com and close.anyway",
        );
        assert_eq!(
            kinds(&out),
            [
                ("101nitro.com".to_string(), LinkKind::Plain),
                ("example.com".to_string(), LinkKind::Plain)
            ]
        );
        assert!(
            s.counts()
                .iter()
                .all(|(name, n)| *n == 0 || *name == "tlds")
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Signals::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(NEVER_BLOCK), "{err}");

        let lists = dir.path().join(BLOCKLISTS_DIR);
        std::fs::create_dir(&lists).unwrap();
        std::fs::write(lists.join(NEVER_BLOCK), "ok.com\nnot a host\n").unwrap();
        let err = Signals::load(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(NEVER_BLOCK) && msg.contains(":2:"), "{msg}");
    }

    #[test]
    fn offsets_stay_on_char_boundaries() {
        let s = shipped();
        let raw = "ünïcödé 😀 https://exämple.com/ä?x=1 and @jöhn £5 ☃☃☃ free nitro for Ω";
        let out = signals(&s, raw);
        for l in &out.links {
            assert!(raw.is_char_boundary(l.start) && raw.is_char_boundary(l.end));
        }
        assert_eq!(out.links.len(), 1);
        assert_eq!(out.links[0].domain, "exämple.com");
        assert_eq!((out.mentions, out.money, out.longest_char_run), (1, 1, 3));
        assert_eq!(out.scam_phrases.len(), 1);
    }

    /// Firing rates on the labelled spam sets, when `../shared/data` exists. Run with
    /// `cargo test --lib engine::signals -- --ignored --nocapture`.
    #[test]
    #[ignore = "reads ../shared/data/train"]
    fn rates_on_labelled_spam() {
        let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/train");
        if !train.exists() {
            eprintln!("skipped: {} not found", train.display());
            return;
        }
        let s = shipped();
        let mut out = SpamSignals::default();
        for file in ["sms-spam.jsonl", "youtube-spam.jsonl", "tg-spam.jsonl"] {
            let text = std::fs::read_to_string(train.join(file)).unwrap();
            // [spam, ham] × [rows, links, listed links, phrases, phone, money, mentions, caps>.5]
            let mut n = [[0u32; 8]; 2];
            let started = std::time::Instant::now();
            for line in text.lines() {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                let raw = row["text"].as_str().unwrap();
                let class = usize::from(row["labels"]["spam"] != 1);
                s.extract(raw, &mut out);
                let listed = out.links.iter().any(|l| l.kind != LinkKind::Plain);
                let fired = [
                    true,
                    !out.links.is_empty(),
                    listed,
                    !out.scam_phrases.is_empty(),
                    out.phone_like > 0,
                    out.money > 0,
                    out.mentions > 0,
                    out.caps_ratio > 0.5,
                ];
                for (k, f) in fired.into_iter().enumerate() {
                    n[class][k] += u32::from(f);
                }
            }
            let per = started.elapsed() / text.lines().count() as u32;
            let pct = |c: usize, k: usize| 100.0 * f64::from(n[c][k]) / f64::from(n[c][0].max(1));
            eprintln!("{file}: {per:?}/message (debug build)");
            let names = [
                "rows", "links", "listed", "phrases", "phone", "money", "mentions", "caps",
            ];
            for (k, name) in names.iter().enumerate().skip(1) {
                eprintln!("  {name:9} spam {:5.1}%  ham {:5.1}%", pct(0, k), pct(1, k));
            }
            if file == "sms-spam.jsonl" {
                assert!(pct(0, 4) > 50.0 && pct(1, 4) < 2.0, "phone numbers");
                assert!(pct(0, 5) > 20.0 && pct(1, 5) < 2.0, "money");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_offsets_are_char_boundaries(raw in "\\PC{0,80}") {
            let s = Signals::empty();
            let out = signals(&s, &raw);
            for l in &out.links {
                proptest::prop_assert!(l.start < l.end && l.end <= raw.len());
                proptest::prop_assert!(raw.is_char_boundary(l.start) && raw.is_char_boundary(l.end));
            }
            proptest::prop_assert!((0.0..=1.0).contains(&out.caps_ratio));
        }

        #[test]
        fn chat_like_text_never_panics(
            raw in "([a-zA-Z0-9@.$£€₹()\\[\\] :/+-]|ü|😀|[.]|dot){0,40}"
        ) {
            let s = shipped_cached();
            let out = signals(s, &raw);
            for h in &out.scam_phrases {
                proptest::prop_assert!(raw.is_char_boundary(h.start) && raw.is_char_boundary(h.end));
            }
            for l in &out.links {
                proptest::prop_assert!(raw.is_char_boundary(l.start) && raw.is_char_boundary(l.end));
                proptest::prop_assert!(l.end <= raw.len());
            }
        }
    }

    fn shipped_cached() -> &'static Signals {
        static SHIPPED: std::sync::OnceLock<Signals> = std::sync::OnceLock::new();
        SHIPPED.get_or_init(shipped)
    }
}
