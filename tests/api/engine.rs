//! The shipped engine (rules/ as committed) on the evasion and false-positive suites.

use chatguard::domain::{Category, Decision, Reason};
use chatguard::engine::{Activity, ScoreContext, Scorer};
use chatguard::reload::Loaded;

use crate::helpers::rules_dir;

fn loaded() -> Loaded {
    Loaded::load(&rules_dir(), 1).expect("shipped rules load")
}

fn data(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn clean_messages_that_naive_filters_flag_stay_below_every_flag_threshold() {
    let l = loaded();
    let ctx = ScoreContext::default();
    let mut failures = Vec::new();
    let text = data("clean-chat.txt");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(lines.len() >= 60, "{}", lines.len());
    for line in &lines {
        let a = l.engine.assess(line, &ctx);
        let v = l.policy.decide(&a);
        if v.decision != Decision::Allow {
            failures.push(format!("{line:?}: {:?} {:?}", a.scores, v.reasons));
        }
    }
    assert!(failures.is_empty(), "flagged:\n{}", failures.join("\n"));
}

/// Deterministic obfuscations of the words a filter would look for.
mod evade {
    const LEET: [(char, char); 6] = [
        ('a', '4'),
        ('e', '3'),
        ('i', '1'),
        ('o', '0'),
        ('s', '$'),
        ('t', '7'),
    ];
    const HOMOGLYPHS: [(char, char); 7] = [
        ('a', 'а'),
        ('e', 'е'),
        ('o', 'о'),
        ('p', 'р'),
        ('c', 'с'),
        ('x', 'х'),
        ('i', 'і'),
    ];

    pub fn leet(w: &str) -> String {
        w.chars()
            .map(|c| {
                LEET.iter()
                    .find(|(a, _)| *a == c.to_ascii_lowercase())
                    .map_or(c, |(_, b)| *b)
            })
            .collect()
    }

    pub fn spaced(w: &str) -> String {
        w.chars().map(String::from).collect::<Vec<_>>().join(" ")
    }

    pub fn dotted(w: &str) -> String {
        w.chars().map(String::from).collect::<Vec<_>>().join(".")
    }

    pub fn homoglyphs(w: &str) -> String {
        w.chars()
            .map(|c| {
                HOMOGLYPHS
                    .iter()
                    .find(|(a, _)| *a == c)
                    .map_or(c, |(_, b)| *b)
            })
            .collect()
    }

    pub fn repeats(w: &str) -> String {
        let mut out = String::new();
        let mut done = false;
        for c in w.chars() {
            out.push(c);
            if !done && "aeiou".contains(c) {
                for _ in 0..4 {
                    out.push(c);
                }
                done = true;
            }
        }
        out
    }

    pub fn zero_width(w: &str) -> String {
        w.chars()
            .map(String::from)
            .collect::<Vec<_>>()
            .join("\u{200B}")
    }
}

type Obfuscation = fn(&str) -> String;

/// Rewrites the words the engine found (lexicon terms), or else the two longest words.
fn obfuscate(l: &Loaded, text: &str, f: Obfuscation) -> String {
    let a = l.engine.assess(text, &ScoreContext::default());
    let mut spans: Vec<(usize, usize)> = a
        .reasons
        .iter()
        .filter_map(|r| match r {
            // Only words written plainly: some rows are obfuscated already.
            Reason::Term {
                start,
                end,
                matched,
                ..
            } if matched.chars().all(char::is_alphanumeric) => Some((*start, *end)),
            _ => None,
        })
        .collect();
    if spans.is_empty() {
        let mut words: Vec<(usize, usize)> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 4)
            .map(|w| {
                let start = w.as_ptr() as usize - text.as_ptr() as usize;
                (start, start + w.len())
            })
            .collect();
        words.sort_by_key(|(s, e)| std::cmp::Reverse(e - s));
        words.truncate(2);
        spans = words;
    }
    spans.sort();
    spans.dedup_by(|b, a| b.0 < a.1);
    let mut out = String::new();
    let mut at = 0;
    for (s, e) in spans {
        if s < at || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            continue;
        }
        out.push_str(&text[at..s]);
        out.push_str(&f(&text[s..e]));
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

#[test]
fn recall_on_obfuscated_toxic_rows_is_within_five_points_of_the_originals() {
    let l = loaded();
    let ctx = ScoreContext::default();
    let flag = l.policy.threshold(Category::Toxicity).flag;
    let rows: Vec<String> = data("evasion-source.jsonl")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    assert!(rows.len() >= 200, "{}", rows.len());
    let recall = |texts: &[String]| {
        texts
            .iter()
            .filter(|t| l.engine.assess(t, &ctx).scores.toxicity >= flag)
            .count() as f64
            / texts.len() as f64
    };
    let base = recall(&rows);
    assert!(base >= 0.5, "recall on the originals is only {base:.3}");
    let kinds: [(&str, Obfuscation); 6] = [
        ("leet", evade::leet),
        ("spaced", evade::spaced),
        ("dotted", evade::dotted),
        ("homoglyphs", evade::homoglyphs),
        ("repeats", evade::repeats),
        ("zero-width", evade::zero_width),
    ];
    let mut report = vec![format!("originals: {base:.3}")];
    let mut worst: f64 = 0.0;
    for (name, f) in kinds {
        let changed: Vec<String> = rows.iter().map(|t| obfuscate(&l, t, f)).collect();
        assert!(
            changed.iter().zip(&rows).filter(|(a, b)| a != b).count() > rows.len() / 2,
            "{name}: the obfuscation changed too few rows"
        );
        let r = recall(&changed);
        if name == "spaced" {
            for (a, b) in rows.iter().zip(&changed) {
                let sa = l.engine.assess(a, &ctx);
                let sb = l.engine.assess(b, &ctx);
                if sa.scores.toxicity >= flag && sb.scores.toxicity < flag {
                    eprintln!(
                        "LOST {:.2}->{:.2} | {} || {}",
                        sa.scores.toxicity,
                        sb.scores.toxicity,
                        a.chars().take(100).collect::<String>(),
                        b.chars().take(140).collect::<String>()
                    );
                }
            }
        }
        worst = worst.max(base - r);
        report.push(format!("{name}: {r:.3}"));
    }
    eprintln!("evasion recall: {}", report.join(", "));
    assert!(worst <= 0.05, "recall dropped by {worst:.3}: {report:?}");
}

#[test]
fn explanations_point_at_the_original_text() {
    let l = loaded();
    let text = "you are a f.u.c.k.i.n.g 1d10t";
    let a = l.engine.assess(text, &ScoreContext::default());
    assert!(a.scores.toxicity >= 0.6, "{a:?}");
    let terms: Vec<(&str, &str)> = a
        .reasons
        .iter()
        .filter_map(|r| match r {
            Reason::Term {
                term,
                start,
                end,
                matched,
                ..
            } => {
                assert_eq!(&text[*start..*end], matched);
                Some((term.as_str(), matched.as_str()))
            }
            _ => None,
        })
        .collect();
    assert!(
        terms.iter().any(|(_, m)| m.contains("f.u.c.k")),
        "{terms:?}"
    );
    // The model explains itself with the features that raised its score.
    let b = l
        .engine
        .assess("shut up you stupid b1tch", &ScoreContext::default());
    assert!(
        b.reasons.iter().any(|r| matches!(
            r,
            Reason::Model { category: Category::Toxicity, top, .. }
                if top.iter().any(|c| c.feature.contains("bitch") && c.weight > 0.0)
        )),
        "{:?}",
        b.reasons
    );
}

#[test]
fn spam_signals_and_flood_activity_raise_spam() {
    let l = loaded();
    let scam = l.engine.assess(
        "FREE NITRO for everyone!!! claim it now https://discord-nitro.gift/claim",
        &ScoreContext::default(),
    );
    assert!(scam.scores.spam >= 0.7, "{scam:?}");
    let calm = "anyone up for ranked tonight?";
    let alone = l.engine.assess(calm, &ScoreContext::default());
    assert!(alone.scores.spam < 0.3, "{alone:?}");
    let flooding = l.engine.assess(
        calm,
        &ScoreContext {
            channel_type: None,
            activity: Some(Activity {
                recent_messages: 20,
                same_text: 5,
                same_text_channels: 4,
            }),
            skip_explanations: false,
        },
    );
    assert!(flooding.scores.spam >= 0.9, "{flooding:?}");
    assert!(
        flooding.reasons.iter().any(
            |r| matches!(r, Reason::Signal { signal, .. } if signal.starts_with("cross-posting"))
        ),
        "{:?}",
        flooding.reasons
    );
}

#[test]
fn explicit_content_is_scored() {
    let l = loaded();
    let ctx = ScoreContext::default();
    for text in [
        "send nudes baby",
        "i want to suck your dick",
        "show me your tits",
    ] {
        let a = l.engine.assess(text, &ctx);
        assert!(a.scores.explicit >= 0.6, "{text}: {:?}", a.scores);
    }
    for text in [
        "the sex of the kitten is female",
        "breast cancer awareness month",
        "what size bra should I buy",
    ] {
        let a = l.engine.assess(text, &ctx);
        assert!(a.scores.explicit < 0.6, "{text}: {:?}", a.scores);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_on_change_and_a_bad_edit_keeps_the_old_set() {
    use chatguard::reload::RulesHandle;
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_dir(&rules_dir(), dir.path());
    let handle = RulesHandle::load(dir.path()).unwrap();
    let first = handle.current();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watcher = handle.spawn_watcher(shutdown.clone());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // A good edit is picked up without a restart.
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace(&first.policy.version, "test-reloaded"),
    )
    .unwrap();
    let h = handle.clone();
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the new policy",
        move || {
            let h = h.clone();
            async move { (h.current().policy.version == "test-reloaded").then_some(()) }
        },
    )
    .await;
    let good = handle.current().generation;
    assert!(good > first.generation);

    // A bad edit is rejected and the rules in force stay.
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nid = 'x'\ncategory = 'toxicity'\npattern = '(unclosed'\nscore = 0.5\n",
    )
    .unwrap();
    let err = handle.reload().unwrap_err().to_string();
    assert!(
        err.contains("bad pattern") || err.contains("rules.toml"),
        "{err}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let now = handle.current();
    assert_eq!(now.generation, good);
    assert_eq!(now.policy.version, "test-reloaded");
    assert!(now.engine.rules().len() >= 20);

    shutdown.cancel();
    let _ = watcher.await;
}
