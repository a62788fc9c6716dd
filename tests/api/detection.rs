//! Detection on real chat (issue 11): what the shipped engine must catch (threats, self-harm
//! incitement, dehumanisation, gaming insults), what it must leave alone (identity words in
//! neutral sentences, lone ordinary links, long digit runs), and calibration on held-back clean
//! chat. The sentences here are written for these tests; none is in the training data.

use chatguard::domain::{Category, Decision};
use chatguard::engine::{ScoreContext, Scorer};
use chatguard::reload::Loaded;

use crate::helpers::rules_dir;

fn loaded() -> Loaded {
    Loaded::load(&rules_dir(), 1).expect("shipped rules load")
}

/// Lines whose decision is not at least `min` (or more than `max`), with their scores.
fn outside(l: &Loaded, lines: &[&str], min: Decision, max: Decision) -> Vec<String> {
    let ctx = ScoreContext::default();
    lines
        .iter()
        .filter_map(|line| {
            let a = l.engine.assess(line, &ctx);
            let d = l.policy.decide(&a).decision;
            (d < min || d > max).then(|| format!("{line:?}: {d:?} {:?}", a.scores))
        })
        .collect()
}

fn toxicity(l: &Loaded, text: &str) -> f64 {
    l.engine
        .assess(text, &ScoreContext::default())
        .scores
        .get(Category::Toxicity)
}

#[test]
fn threats_and_self_harm_incitement_are_caught() {
    let l = loaded();
    let lines = [
        "I will find where you live",
        "i know where you live and where you sleep",
        "we will find you irl and you'll regret it",
        "watch your back after the match",
        "you're dead when i see you",
        "i'll break your legs",
        "i'm going to hurt you",
        "hope you die in a fire",
        "go jump off a bridge",
        "just drink bleach lol",
        "you should kill yourself",
        "kys noob",
        "nobody would miss you if you were gone",
    ];
    let missed = outside(&l, &lines, Decision::Flag, Decision::Ban);
    assert!(missed.is_empty(), "not flagged:\n{}", missed.join("\n"));
}

#[test]
fn dehumanisation_and_calls_for_violence_against_groups_are_caught() {
    let l = loaded();
    let lines = [
        "you people are animals",
        "those people are vermin",
        "immigrants are a disease",
        "all muslims are rats",
        "refugees should be exterminated",
        "kill all the immigrants",
    ];
    let missed = outside(&l, &lines, Decision::Flag, Decision::Ban);
    assert!(missed.is_empty(), "not flagged:\n{}", missed.join("\n"));
}

#[test]
fn gaming_insults_and_team_abuse_are_caught() {
    let l = loaded();
    let lines = [
        "gg ez noob team",
        "fucking team",
        "uninstall the game you trash",
        "you're trash, uninstall",
        "dogwater jungler",
        "useless noob support",
        "cyka blyat noob",
        "puta madre team",
        "report this feeder idiot",
        "you're so bad at this game, uninstall",
    ];
    let missed = outside(&l, &lines, Decision::Flag, Decision::Ban);
    assert!(missed.is_empty(), "not flagged:\n{}", missed.join("\n"));
}

#[test]
fn a_lone_mild_gaming_insult_is_a_flag_at_most() {
    let l = loaded();
    let lines = ["noob", "ez", "git gud", "trash", "skill issue", "noob lol"];
    let over = outside(&l, &lines, Decision::Allow, Decision::Flag);
    assert!(over.is_empty(), "blocked:\n{}", over.join("\n"));
    // …but they do count: each scores above clean chat.
    for line in lines {
        assert!(toxicity(&l, line) > 0.2, "{line}: {}", toxicity(&l, line));
    }
}

#[test]
fn identity_words_in_neutral_sentences_are_not_toxic() {
    let l = loaded();
    let lines = [
        "I'm a female gamer",
        "the sex of the kitten is female",
        "I am a gay man and I play healer",
        "my wife is Muslim and she loves this map",
        "As a black woman in tech I mentor new players",
        "she's jewish and lives in Berlin",
        "There are many trans people in our guild",
        "I'm an immigrant from Mexico",
        "my grandfather is deaf",
        "we're a team of mostly asian students",
        "i feel sad today",
        "my ping makes me feel weak",
    ];
    let flagged = outside(&l, &lines, Decision::Allow, Decision::Allow);
    assert!(flagged.is_empty(), "flagged:\n{}", flagged.join("\n"));
}

#[test]
fn a_lone_ordinary_link_is_not_spam() {
    let l = loaded();
    let lines = [
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "https://gist.github.com/someone/5f2a8c1b9e0d4f7a",
        "http://pastebin.com/Xy12AbCd",
        "see https://docs.python.org/3/library/re.html",
        "https://en.wikipedia.org/wiki/Dijkstra%27s_algorithm",
        "here: http://paste.ubuntu.com/12345678/",
        "https://help.ubuntu.com/community/Grub2 read this",
        "https://github.com/rust-lang/rust/issues/12345",
        "https://imgur.com/a/Qw3rTy",
        "https://example.org/downloads/setup-1.2.3.tar.gz",
    ];
    let flagged = outside(&l, &lines, Decision::Allow, Decision::Allow);
    assert!(flagged.is_empty(), "flagged:\n{}", flagged.join("\n"));
}

#[test]
fn a_link_alone_is_never_blocked_unless_its_domain_is_block_listed() {
    let l = loaded();
    let plain = [
        "https://some-unknown-site.xyz/",
        "http://totally-new-domain.top/page",
        "https://free-gifts-4-you.online",
    ];
    let blocked = outside(&l, &plain, Decision::Allow, Decision::Flag);
    assert!(blocked.is_empty(), "blocked:\n{}", blocked.join("\n"));
    // A block-listed domain alone still counts.
    let listed = "https://101nitro.com/claim";
    let a = l.engine.assess(listed, &ScoreContext::default());
    assert!(
        l.policy.decide(&a).decision >= Decision::Flag,
        "{:?}",
        a.scores
    );
}

#[test]
fn long_digit_runs_are_not_toxicity() {
    let l = loaded();
    for line in [
        "N000000000",
        "4000000000003220",
        "0x7f000001 is 127.0.0.1",
        "my order is 100000000000 and it's still not here",
        "uid 1000000001 gid 1000000001",
    ] {
        let t = toxicity(&l, line);
        assert!(t < 0.5, "{line}: toxicity {t}");
    }
}

/// Calibration: on held-back ordinary chat (never read by `chatguard train`, see
/// tests/data/README.md) the policy's thresholds flag at most 1% and block at most 0.2%.
#[test]
fn held_back_clean_chat_is_rarely_flagged_and_almost_never_blocked() {
    let l = loaded();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/irc-heldback.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let ctx = ScoreContext::default();
    let (mut n, mut flagged, mut blocked) = (0usize, Vec::new(), 0usize);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let msg = v["text"].as_str().unwrap();
        n += 1;
        let a = l.engine.assess(msg, &ctx);
        let d = l.policy.decide(&a).decision;
        if d >= Decision::Flag {
            flagged.push(format!("{msg:?} {:?}", a.scores));
        }
        if d >= Decision::Block {
            blocked += 1;
        }
    }
    assert!(n >= 10_000, "{n}");
    let rate = flagged.len() as f64 / n as f64;
    let sample: Vec<&String> = flagged.iter().take(20).collect();
    assert!(
        rate <= 0.01,
        "{:.2}% flagged, e.g. {sample:#?}",
        rate * 100.0
    );
    assert!(
        blocked as f64 / n as f64 <= 0.002,
        "{blocked} of {n} blocked"
    );
}
