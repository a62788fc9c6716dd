//! Engine throughput on chat-length messages (10–100 characters), with `rustrict` scored on the
//! same messages in the same run as the reference.
//!
//! `cargo bench --bench engine` (criterion; reports messages per second, one core).

use std::hint::black_box;
use std::path::Path;

use chatguard::engine::{Engine, ScoreContext, Scorer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rustrict::CensorStr;

const CLEAN: &[&str] = &[
    "gg",
    "anyone up for ranked tonight?",
    "lol that was close",
    "meet at the bridge in 5",
    "nice shot, that was a great play by our jungler",
    "can someone explain how the new crafting system works? I keep losing materials",
    "brb getting food",
    "I think we should push mid and then take the dragon before they respawn",
    "thanks for the carry!",
    "what time does the tournament start on saturday, and is it best of three?",
    "my internet is lagging so hard today",
    "Scunthorpe United won 2-1 last night, great match",
    "kill the boss first, then loot the chest",
    "does anyone know a good guide for the assassin class?",
    "happy birthday!! hope you have a great day",
    "ok see you all tomorrow",
];

const MATCHING: &[&str] = &[
    "you are a fucking idiot",
    "shut up bitch nobody asked",
    "f.u.c.k you and your team",
    "kys loser",
    "send nudes baby",
    "FREE NITRO claim now https://discord-nitro.gift/claim",
    "this is shit, uninstall the game you moron",
    "ur a stupid piece of sh1t",
    "click here to win $500 cash prize text WIN to 80085",
    "go back to your country you dirty animal",
    "show me your tits",
    "wtf is wrong with you, you absolute dumbass",
    "I will find you and hurt you",
    "fuuuuuck this game",
    "ѕһit team honestly",
    "check out my channel!!! subscribe subscribe subscribe",
];

fn engine() -> Engine {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    match Engine::load(&dir) {
        Ok(e) => e,
        Err(e) => panic!("rules/ does not load: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let ctx = ScoreContext::default();
    let fast = ScoreContext {
        skip_explanations: true,
        ..ScoreContext::default()
    };
    for (name, set) in [("clean", CLEAN), ("matching", MATCHING)] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(set.len() as u64));
        // Scores and reasons, as the worker asks (model explanations included).
        g.bench_function("chatguard", |b| {
            b.iter(|| {
                for m in set {
                    black_box(engine.assess(black_box(m), &ctx));
                }
            })
        });
        // The fast path: scores, terms, rules and signals, without the model's feature list.
        g.bench_function("chatguard_fast", |b| {
            b.iter(|| {
                for m in set {
                    black_box(engine.assess(black_box(m), &fast));
                }
            })
        });
        g.bench_function("rustrict", |b| {
            b.iter(|| {
                for m in set {
                    black_box(black_box(*m).is_inappropriate());
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
