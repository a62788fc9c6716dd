//! `chatguard train`: fits the model's three heads on the labelled sets in `../shared/data/train`
//! and holds out a validation split from each.
//!
//! Label mapping (dataset labels → chatguard categories; `-` = the row does not train that head):
//!
//! | dataset | toxicity | spam | explicit |
//! |---|---|---|---|
//! | jigsaw-toxic-train | any of toxic, severe_toxic, obscene, threat, insult, identity_hate | 0 | 0 if not toxic, else - |
//! | davidson-tweets | class hate or offensive | 0 | 0 if neither, else - |
//! | tweeteval-offensive | offensive | 0 | 0 if not offensive, else - |
//! | tweeteval-hate | hate | 0 | - |
//! | edos-sexism | sexist | 0 | - |
//! | hatexplain | toxic | 0 | 0 if not toxic, else - |
//! | i2p-prompts | - | 0 | sexual_topic (weak label) |
//! | sms-spam, youtube-spam, tg-spam | 0 if not spam, else - | spam | 0 if not spam, else - |
//!
//! tweeteval-hate's 0 may still be offensive, and edos's 0 may be abusive without being sexist,
//! so neither set trains the explicit head and both train toxicity as labelled.
//!
//! The split: a row is held out for validation when a hash of its text falls in the last fifth,
//! so identical texts always land on the same side and the split never changes between runs.
//! Training is deterministic: fixed shuffles from a seeded generator, one thread per head.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Analyzer;
use super::features::{DIM, Hashed};
use super::metrics;
use super::model::{HEAD_CATEGORIES, HEADS, Model, sigmoid};

/// The datasets `train` reads, in a fixed order.
pub const DATASETS: [&str; 10] = [
    "jigsaw-toxic-train",
    "davidson-tweets",
    "tweeteval-offensive",
    "tweeteval-hate",
    "edos-sexism",
    "hatexplain",
    "i2p-prompts",
    "sms-spam",
    "youtube-spam",
    "tg-spam",
];

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Row {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no training rows found in {0}")]
    Empty(PathBuf),
}

/// Hyper-parameters. The defaults are what the shipped model was trained with.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub epochs: u32,
    pub seed: u64,
    /// FTRL-proximal learning rate α, β, L1 and L2.
    pub alpha: f32,
    pub beta: f32,
    pub l1: f32,
    pub l2: f32,
    /// Read at most this many rows per dataset (for quick tests); `None` reads all.
    pub limit_per_dataset: Option<usize>,
    /// Rows of a dataset weigh (median rows / its rows)^balance, within [0.25, 4], so that the
    /// small sets (Jigsaw, the spam sets) are not drowned by the large tweet sets; 0 weighs
    /// every row the same.
    pub balance: f32,
    /// Give each dataset its own bias while training, so that base rates that differ between
    /// datasets (83% offensive in one, 10% toxic in another) are not learnt as content. The
    /// shipped bias is the global one plus the mean bias of the datasets that label both
    /// classes for the head.
    pub dataset_bias: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 6,
            seed: 20261121,
            alpha: 0.5,
            beta: 1.0,
            l1: 0.0005,
            l2: 0.0005,
            limit_per_dataset: None,
            dataset_bias: true,
            balance: 0.75,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Row {
    text: String,
    #[serde(default)]
    labels: serde_json::Value,
}

/// Labels of one row, per head.
pub type Labels = [Option<bool>; HEADS];

/// Maps a dataset's own labels to chatguard's heads (see the module docs).
pub fn map_labels(source: &str, labels: &serde_json::Value) -> Labels {
    let flag = |k: &str| {
        labels.get(k).and_then(|v| {
            v.as_i64()
                .map(|n| n != 0)
                .or_else(|| v.as_f64().map(|f| f >= 0.5))
                .or_else(|| v.as_bool())
        })
    };
    let clean_only = |toxic: Option<bool>| toxic.and_then(|t| (!t).then_some(false));
    match source {
        "jigsaw-toxic-train" => {
            let toxic = [
                "toxic",
                "severe_toxic",
                "obscene",
                "threat",
                "insult",
                "identity_hate",
            ]
            .iter()
            .filter_map(|k| flag(k))
            .reduce(|a, b| a || b);
            [toxic, Some(false), clean_only(toxic)]
        }
        "davidson-tweets" => {
            let toxic = labels
                .get("class")
                .and_then(|v| v.as_str())
                .map(|c| c == "hate" || c == "offensive");
            [toxic, Some(false), clean_only(toxic)]
        }
        "tweeteval-offensive" => {
            let toxic = flag("offensive");
            [toxic, Some(false), clean_only(toxic)]
        }
        "tweeteval-hate" => [flag("hate"), Some(false), None],
        "edos-sexism" => [flag("sexist"), Some(false), None],
        "hatexplain" => {
            let toxic = flag("toxic");
            [toxic, Some(false), clean_only(toxic)]
        }
        "i2p-prompts" => [None, Some(false), flag("sexual_topic")],
        "sms-spam" | "youtube-spam" | "tg-spam" => {
            let spam = flag("spam");
            [clean_only(spam), spam, clean_only(spam)]
        }
        _ => [None; HEADS],
    }
}

/// True when a row belongs to the held-out validation fifth.
pub fn is_validation(text: &str) -> bool {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    h % 5 == 4
}

/// One labelled row, featurised.
pub struct Example {
    pub dataset: usize,
    pub text: String,
    pub labels: Labels,
    pub validation: bool,
    pub features: Vec<Hashed>,
}

/// Reads every dataset under `data_dir` and featurises the rows (in parallel, order kept).
pub fn load_examples(
    data_dir: &Path,
    analyzer: &Analyzer,
    limit: Option<usize>,
) -> Result<Vec<Example>, TrainError> {
    let mut rows = Vec::new();
    for (d, name) in DATASETS.iter().enumerate() {
        let path = data_dir.join(format!("{name}.jsonl"));
        let file = std::fs::File::open(&path).map_err(|source| TrainError::Read {
            path: path.clone(),
            source,
        })?;
        let mut taken = 0;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| TrainError::Read {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let row: Row = serde_json::from_str(&line).map_err(|e| TrainError::Row {
                path: path.clone(),
                line: i + 1,
                message: e.to_string(),
            })?;
            let labels = map_labels(name, &row.labels);
            if labels.iter().all(Option::is_none) {
                continue;
            }
            if limit.is_some_and(|l| taken >= l) {
                break;
            }
            taken += 1;
            rows.push((d, row.text, labels));
        }
    }
    if rows.is_empty() {
        return Err(TrainError::Empty(data_dir.to_owned()));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = rows.len().div_ceil(threads);
    let mut out: Vec<Example> = Vec::with_capacity(rows.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut scratch = super::Scratch::default();
                    part.iter()
                        .map(|(d, text, labels)| {
                            let features = analyzer.features(text, &mut scratch).to_vec();
                            Example {
                                dataset: *d,
                                validation: is_validation(text),
                                text: text.clone(),
                                labels: *labels,
                                features,
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    Ok(out)
}

/// SplitMix64: a tiny seeded generator, so shuffles never change with a dependency update.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// FTRL-proximal logistic regression for one head (McMahan et al., 2013).
fn train_head(
    examples: &[&Example],
    head: usize,
    weights: &[f32],
    opts: &TrainOptions,
) -> (f32, Vec<f32>) {
    // Buckets, then the global bias, then one bias per dataset.
    let bias_at = DIM;
    let slots = DIM + 1 + DATASETS.len();
    let mut z = vec![0.0f32; slots];
    let mut n = vec![0.0f32; slots];
    let weight = |z: f32, n: f32, l1: f32| -> f32 {
        if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((opts.beta + n.sqrt()) / opts.alpha + opts.l2)
        }
    };
    let update = |z: &mut [f32], n: &mut [f32], at: usize, w: f32, gi: f32| {
        let sigma = ((n[at] + gi * gi).sqrt() - n[at].sqrt()) / opts.alpha;
        z[at] += gi - sigma * w;
        n[at] += gi * gi;
    };
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = SplitMix(opts.seed ^ (head as u64).wrapping_mul(0x9e37_79b9));
    let mut ws: Vec<f32> = Vec::new();
    for _ in 0..opts.epochs {
        rng.shuffle(&mut order);
        for &i in &order {
            let ex = examples[i];
            let Some(y) = ex.labels[head] else { continue };
            let y = if y { 1.0 } else { 0.0 };
            let dataset_at = DIM + 1 + ex.dataset;
            ws.clear();
            let wb = weight(z[bias_at], n[bias_at], 0.0);
            let wd = if opts.dataset_bias {
                weight(z[dataset_at], n[dataset_at], 0.0)
            } else {
                0.0
            };
            let mut logit = wb + wd;
            for f in &ex.features {
                let w = weight(z[f.index as usize], n[f.index as usize], opts.l1);
                ws.push(w);
                logit += w * f.value;
            }
            let g = (sigmoid(logit.clamp(-35.0, 35.0)) - y) * weights[ex.dataset];
            update(&mut z, &mut n, bias_at, wb, g);
            if opts.dataset_bias {
                update(&mut z, &mut n, dataset_at, wd, g);
            }
            for (f, w) in ex.features.iter().zip(&ws) {
                update(&mut z, &mut n, f.index as usize, *w, g * f.value);
            }
        }
    }
    let mut bias = weight(z[bias_at], n[bias_at], 0.0);
    if opts.dataset_bias {
        // Datasets that only give negatives for this head have no base rate to speak of.
        let has = |d: usize, y: bool| {
            examples
                .iter()
                .any(|e| e.dataset == d && e.labels[head] == Some(y))
        };
        // The explicit head's only positives are weak labels on image prompts: its prior comes
        // from every set it sees, mostly chat that is not explicit, so the model alone rarely
        // flags and the lexicon and rules lead.
        let weak = HEAD_CATEGORIES[head] == crate::domain::Category::Explicit;
        let used: Vec<f32> = (0..DATASETS.len())
            .filter(|d| {
                (weak && (has(*d, true) || has(*d, false))) || (has(*d, true) && has(*d, false))
            })
            .map(|d| weight(z[DIM + 1 + d], n[DIM + 1 + d], 0.0))
            .collect();
        if !used.is_empty() {
            bias += used.iter().sum::<f32>() / used.len() as f32;
        }
    }
    let weights = (0..DIM).map(|i| weight(z[i], n[i], opts.l1)).collect();
    (bias, weights)
}

/// Validation figures for one dataset and head.
#[derive(Debug, Clone, Serialize)]
pub struct HeadScore {
    pub dataset: String,
    pub category: String,
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub auprc: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub options: TrainOptions,
    /// Row weight per dataset.
    pub weights: BTreeMap<String, f32>,
    /// Rows used per dataset: (train, validation).
    pub rows: BTreeMap<String, (usize, usize)>,
    pub validation: Vec<HeadScore>,
    pub nonzero_buckets: usize,
    /// Largest change in any validation probability caused by quantising the weights.
    pub max_quantisation_shift: f32,
}

/// Row weight per dataset (see [`TrainOptions::balance`]).
pub fn dataset_weights(rows: &[&Example], balance: f32) -> Vec<f32> {
    let mut counts = vec![0usize; DATASETS.len()];
    for e in rows {
        counts[e.dataset] += 1;
    }
    let mut present: Vec<usize> = counts.iter().copied().filter(|c| *c > 0).collect();
    present.sort_unstable();
    let median = present.get(present.len() / 2).copied().unwrap_or(1) as f32;
    counts
        .iter()
        .map(|c| {
            if *c == 0 {
                1.0
            } else {
                (median / *c as f32).powf(balance).clamp(0.25, 4.0)
            }
        })
        .collect()
}

/// Trains all heads on the training rows and measures them on the validation rows.
pub fn train(examples: &[Example], opts: &TrainOptions) -> (Model, TrainReport) {
    let train_rows: Vec<&Example> = examples.iter().filter(|e| !e.validation).collect();
    let weights = dataset_weights(&train_rows, opts.balance);
    let heads: Vec<(f32, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..HEADS)
            .map(|h| {
                let rows = &train_rows;
                let weights = &weights;
                s.spawn(move || train_head(rows, h, weights, opts))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    let mut bias = [0.0f32; HEADS];
    let mut interleaved = vec![0.0f32; DIM * HEADS];
    for (h, (b, w)) in heads.iter().enumerate() {
        bias[h] = *b;
        for (i, v) in w.iter().enumerate() {
            interleaved[i * HEADS + h] = *v;
        }
    }
    let model = Model::quantise(bias, &interleaved);

    let float_predict = |f: &[Hashed], h: usize| {
        let z = heads[h].0
            + f.iter()
                .map(|x| heads[h].1[x.index as usize] * x.value)
                .sum::<f32>();
        sigmoid(z)
    };
    let mut rows: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for e in examples {
        let r = rows.entry(DATASETS[e.dataset].to_owned()).or_default();
        if e.validation {
            r.1 += 1;
        } else {
            r.0 += 1;
        }
    }
    let mut max_shift = 0.0f32;
    let mut validation = Vec::new();
    for (d, name) in DATASETS.iter().enumerate() {
        for (h, category) in HEAD_CATEGORIES.iter().enumerate() {
            let mut scores = Vec::new();
            let mut labels = Vec::new();
            for e in examples.iter().filter(|e| e.validation && e.dataset == d) {
                let Some(y) = e.labels[h] else { continue };
                let p = model.predict(&e.features)[h];
                max_shift = max_shift.max((p - float_predict(&e.features, h)).abs());
                scores.push(f64::from(p));
                labels.push(y);
            }
            let positives = labels.iter().filter(|l| **l).count();
            if positives == 0 || positives == labels.len() {
                continue;
            }
            validation.push(HeadScore {
                dataset: (*name).to_owned(),
                category: category.as_str().to_owned(),
                rows: labels.len(),
                positives,
                roc_auc: metrics::roc_auc(&scores, &labels),
                auprc: metrics::auprc(&scores, &labels),
            });
        }
    }
    let report = TrainReport {
        options: opts.clone(),
        weights: DATASETS
            .iter()
            .zip(&weights)
            .map(|(d, w)| ((*d).to_owned(), (w * 1000.0).round() / 1000.0))
            .collect(),
        rows,
        validation,
        nonzero_buckets: model.nonzero(),
        max_quantisation_shift: max_shift,
    };
    (model, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_mapping() {
        let t = |s: &str, v: serde_json::Value| map_labels(s, &v);
        assert_eq!(
            t("davidson-tweets", json!({"class": "offensive"})),
            [Some(true), Some(false), None]
        );
        assert_eq!(
            t("davidson-tweets", json!({"class": "neither"})),
            [Some(false), Some(false), Some(false)]
        );
        assert_eq!(
            t("jigsaw-toxic-train", json!({"toxic": 0, "insult": 1})),
            [Some(true), Some(false), None]
        );
        assert_eq!(t("sms-spam", json!({"spam": 1})), [None, Some(true), None]);
        assert_eq!(
            t("i2p-prompts", json!({"sexual_topic": 1})),
            [None, Some(false), Some(true)]
        );
        assert_eq!(t("unknown", json!({"spam": 1})), [None; HEADS]);
    }

    #[test]
    fn split_is_about_a_fifth_and_stable() {
        let held = (0..10_000)
            .filter(|i| is_validation(&format!("message {i}")))
            .count();
        assert!((1_800..2_200).contains(&held), "{held}");
        assert!(is_validation("message 7") == is_validation("message 7"));
    }

    #[test]
    fn shuffle_is_seeded() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        SplitMix(1).shuffle(&mut a);
        SplitMix(1).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
