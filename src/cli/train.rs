//! `chatguard train`: fits the model from the labelled sets and writes it under `rules/models/`,
//! with `model.toml` beside it recording how it was made and how it scored on validation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::model::{MODEL_FILE, MODELS_DIR, ModelError};
use crate::engine::train::{self, TrainError, TrainOptions, TrainReport};
use crate::engine::{Analyzer, Engine, EngineError};

pub const METADATA_FILE: &str = "model.toml";

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Folder with the labelled *.jsonl sets.
    #[arg(long, default_value = "../shared/data/train")]
    pub data: PathBuf,
    /// Rules folder to read the lexicon and block lists from and to write models/ into;
    /// defaults to the configured rules folder.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Ordinary chat (JSON lines with `text`): negatives for every head and the calibration
    /// anchor; a fifth of it is never read (held back for `eval` and tests). `none` skips it.
    #[arg(long, default_value = "../shared/data/unlabelled/irc-chat.jsonl")]
    pub clean: PathBuf,
    /// Passes over the training rows.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Use at most this many rows per dataset (quick experiments and tests).
    #[arg(long)]
    pub limit: Option<usize>,
    /// FTRL learning rate α (tuning).
    #[arg(long, hide = true)]
    pub alpha: Option<f32>,
    /// L1 regularisation (tuning).
    #[arg(long, hide = true)]
    pub l1: Option<f32>,
    /// L2 regularisation (tuning).
    #[arg(long, hide = true)]
    pub l2: Option<f32>,
    /// Print the validation report without writing the model (tuning).
    #[arg(long, hide = true)]
    pub dry: bool,
    /// Train without per-dataset biases (tuning).
    #[arg(long, hide = true)]
    pub no_dataset_bias: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainCommandError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy: {0}")]
    Policy(String),
    #[error("encoding model.toml: {0}")]
    Encode(#[from] toml::ser::Error),
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    /// What this file is.
    about: &'static str,
    model_file: &'static str,
    sha256: String,
    bytes: usize,
    command: String,
    report: &'a TrainReport,
}

/// Trains and writes the model; returns the report and the model path.
pub fn run(
    args: &TrainArgs,
    rules_dir: &Path,
) -> Result<(TrainReport, PathBuf), TrainCommandError> {
    let started = Instant::now();
    let analyzer = Analyzer::load(rules_dir)?;
    let mut opts = TrainOptions {
        limit_per_dataset: args.limit,
        ..TrainOptions::default()
    };
    let clean = (args.clean.as_os_str() != "none").then_some(args.clean.as_path());
    let examples = train::load_examples(&args.data, clean, &analyzer, &opts)?;
    tracing::info!(
        rows = examples.len(),
        secs = started.elapsed().as_secs_f32(),
        "featurised"
    );
    if let Some(e) = args.epochs {
        opts.epochs = e;
    }
    if let Some(v) = args.alpha {
        opts.alpha = v;
    }
    if let Some(v) = args.l1 {
        opts.l1 = v;
    }
    if let Some(v) = args.l2 {
        opts.l2 = v;
    }
    if args.no_dataset_bias {
        opts.dataset_bias = false;
    }
    let (model, mut report) = train::train(&examples, &opts);
    let policy = crate::policy::Policy::load(rules_dir)
        .map_err(|e| TrainCommandError::Policy(e.to_string()))?;
    let thresholds = crate::engine::model::HEAD_CATEGORIES.map(|c| {
        let t = policy.threshold(c);
        (t.flag, t.block)
    });
    let mut engine = Engine::load_with_model(rules_dir, model.clone())?;
    let (model, calibration) =
        train::calibrate_engine(&mut engine, model, &examples, &opts, thresholds);
    report.calibration = calibration;
    if args.dry {
        return Ok((report, rules_dir.join(MODELS_DIR).join(MODEL_FILE)));
    }
    let path = model.save(rules_dir)?;
    let bytes = model.encode();
    let mut command = String::from("chatguard train");
    if let Some(e) = args.epochs {
        command.push_str(&format!(" --epochs {e}"));
    }
    if let Some(l) = args.limit {
        command.push_str(&format!(" --limit {l}"));
    }
    for (name, v) in [("alpha", args.alpha), ("l1", args.l1), ("l2", args.l2)] {
        if let Some(v) = v {
            command.push_str(&format!(" --{name} {v}"));
        }
    }
    let meta = Metadata {
        about: "How rules/models/chatguard.model was trained; written by `chatguard train`.",
        model_file: MODEL_FILE,
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: bytes.len(),
        command,
        report: &report,
    };
    let meta_path = rules_dir.join(MODELS_DIR).join(METADATA_FILE);
    std::fs::write(&meta_path, toml::to_string(&meta)?).map_err(|source| {
        TrainCommandError::Write {
            path: meta_path.clone(),
            source,
        }
    })?;
    Ok((report, path))
}

/// The validation table `train` prints.
pub fn format_report(r: &TrainReport) -> String {
    let mut s = String::from("validation (held-out fifth of each set):\n");
    s.push_str(&format!(
        "  {:<20} {:<9} {:>6} {:>6} {:>8} {:>7}\n",
        "dataset", "category", "rows", "pos", "ROC-AUC", "AUPRC"
    ));
    for v in &r.validation {
        s.push_str(&format!(
            "  {:<20} {:<9} {:>6} {:>6} {:>8} {:>7}\n",
            v.dataset,
            v.category,
            v.rows,
            v.positives,
            v.roc_auc.map_or("–".into(), |x| format!("{x:.4}")),
            v.auprc.map_or("–".into(), |x| format!("{x:.4}")),
        ));
    }
    for c in &r.calibration {
        s.push_str(&format!(
            "calibration {:<9} slope {:.3} offset {:+.3}: clean chat flagged {:.2}% -> {:.2}%, blocked {:.2}% -> {:.2}% ({} lines)\n",
            c.category,
            c.slope,
            c.offset,
            c.clean_flagged_before * 100.0,
            c.clean_flagged_after * 100.0,
            c.clean_blocked_before * 100.0,
            c.clean_blocked_after * 100.0,
            c.clean_rows
        ));
    }
    s.push_str(&format!(
        "non-zero buckets: {} of {}; largest probability shift from quantisation: {:.4}\n",
        r.nonzero_buckets,
        crate::engine::features::DIM,
        r.max_quantisation_shift
    ));
    s
}
