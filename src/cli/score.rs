//! `chatguard score` and `chatguard eval`: the engine on files, without a database.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::domain::{Assessment, Category, Decision, Reason};
use crate::engine::{ScoreContext, Scorer, metrics, train};
use crate::reload::Loaded;

/// Lines scored together; each batch is split over the cores and written in input order.
const BATCH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One message per line.
    Text,
    /// One JSON object per line with the message in `text` (see --text-field).
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Read from this file instead of standard input.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The JSON field holding the message (jsonl).
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Channel type to score as (rules may be scoped to channel types).
    #[arg(long)]
    pub channel_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A JSON-lines file with a text field and label fields.
    #[arg(long)]
    pub data: PathBuf,
    /// CATEGORY=FIELD[:VALUE|VALUE…]: where a category's label is. FIELD may be dotted
    /// (labels.toxic); numbers ≥ 0.5 and true count as positive, or, when values are given, a
    /// string equal to one of them. Repeat for several categories.
    #[arg(long = "label", required = true)]
    pub labels: Vec<String>,
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Only the rows `chatguard train` holds out for validation, or only those it trains on.
    #[arg(long, value_enum, default_value_t = Split::All)]
    pub split: Split,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    All,
    Validation,
    Train,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    #[error("--label {0:?}: expected CATEGORY=FIELD[:VALUE|VALUE…]")]
    LabelSpec(String),
    #[error("--label {spec:?}: {message}")]
    LabelCategory { spec: String, message: String },
    #[error("{path}: no row had a label for any category")]
    NoLabels { path: String },
}

/// One output line of `score`.
#[derive(Debug, Serialize)]
struct Scored<'a> {
    toxicity: f64,
    spam: f64,
    explicit: f64,
    decision: Decision,
    reasons: &'a [Reason],
    /// The policy's reason chain: which threshold or rule decided.
    decided_by: &'a [String],
}

/// An input line that could not be scored; it keeps its place in the output.
#[derive(Debug, Serialize)]
struct Failed<'a> {
    line: usize,
    error: &'a str,
}

/// Scores `items` on every core, keeping their order.
fn score_batch(
    rules: &Loaded,
    ctx: &ScoreContext<'_>,
    items: &[Result<String, String>],
) -> Vec<Result<Assessment, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(64);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|t| match t {
                            Ok(text) => Ok(rules.engine.assess(text, ctx)),
                            Err(e) => Err(e.clone()),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

fn open_input(input: &Option<PathBuf>) -> Result<Box<dyn BufRead>, ScoreError> {
    Ok(match input {
        Some(path) => Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            std::fs::File::open(path).map_err(|source| ScoreError::Read {
                path: path.display().to_string(),
                source,
            })?,
        )),
        None => Box::new(std::io::stdin().lock()),
    })
}

/// A field of a JSON object by dotted path.
fn field<'v>(v: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn text_of(line: &str, format: Format, text_field: &str) -> Result<String, String> {
    match format {
        Format::Text => Ok(line.to_owned()),
        Format::Jsonl => {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
            field(&v, text_field)
                .and_then(|t| t.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("no string field {text_field:?}"))
        }
    }
}

/// Streams the input: reads a batch, scores it, writes it, and so on. Returns the count of
/// scored lines and of lines that could not be read.
pub fn run_score(rules: &Loaded, args: &ScoreArgs) -> Result<(usize, usize), ScoreError> {
    let mut input = open_input(&args.input)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let ctx = ScoreContext {
        channel_type: args.channel_type.as_deref(),
        activity: None,
        skip_explanations: false,
    };
    let (mut scored, mut failed, mut line_no) = (0usize, 0usize, 0usize);
    let mut batch: Vec<Result<String, String>> = Vec::with_capacity(BATCH);
    let mut buf = String::new();
    loop {
        batch.clear();
        while batch.len() < BATCH {
            buf.clear();
            let read = input
                .read_line(&mut buf)
                .map_err(|source| ScoreError::Read {
                    path: args
                        .input
                        .as_ref()
                        .map_or("standard input".into(), |p| p.display().to_string()),
                    source,
                })?;
            if read == 0 {
                break;
            }
            let line = buf.trim_end_matches(['\n', '\r']);
            if args.format == Format::Jsonl && line.trim().is_empty() {
                continue;
            }
            batch.push(text_of(line, args.format, &args.text_field));
        }
        if batch.is_empty() {
            break;
        }
        for result in score_batch(rules, &ctx, &batch) {
            line_no += 1;
            let written = match result {
                Ok(a) => {
                    scored += 1;
                    let verdict = rules.policy.decide(&a);
                    serde_json::to_writer(
                        &mut out,
                        &Scored {
                            toxicity: a.scores.toxicity,
                            spam: a.scores.spam,
                            explicit: a.scores.explicit,
                            decision: verdict.decision,
                            reasons: &a.reasons,
                            decided_by: &verdict.reasons,
                        },
                    )
                }
                Err(e) => {
                    failed += 1;
                    serde_json::to_writer(
                        &mut out,
                        &Failed {
                            line: line_no,
                            error: &e,
                        },
                    )
                }
            };
            written.map_err(|e| ScoreError::Write(e.into()))?;
            out.write_all(b"\n").map_err(ScoreError::Write)?;
        }
    }
    out.flush().map_err(ScoreError::Write)?;
    Ok((scored, failed))
}

/// Where one category's label is found.
#[derive(Debug)]
struct LabelSpec {
    category: Category,
    field: String,
    positive: Vec<String>,
}

fn parse_label(spec: &str) -> Result<LabelSpec, ScoreError> {
    let (category, rest) = spec
        .split_once('=')
        .ok_or_else(|| ScoreError::LabelSpec(spec.to_owned()))?;
    let category: Category =
        category
            .trim()
            .parse()
            .map_err(|message| ScoreError::LabelCategory {
                spec: spec.to_owned(),
                message,
            })?;
    let (field, values) = match rest.split_once(':') {
        Some((f, v)) => (f, v.split('|').map(str::to_owned).collect()),
        None => (rest, Vec::new()),
    };
    if field.trim().is_empty() {
        return Err(ScoreError::LabelSpec(spec.to_owned()));
    }
    Ok(LabelSpec {
        category,
        field: field.trim().to_owned(),
        positive: values,
    })
}

fn label_of(v: &serde_json::Value, spec: &LabelSpec) -> Option<bool> {
    let x = field(v, &spec.field)?;
    if !spec.positive.is_empty() {
        let s = match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Some(spec.positive.contains(&s));
    }
    x.as_bool()
        .or_else(|| x.as_f64().map(|f| f >= 0.5))
        .or_else(|| x.as_str().map(|s| matches!(s, "1" | "true" | "yes")))
}

/// `chatguard eval`: per category ROC-AUC, AUPRC, and precision/recall/false-flag rate at the
/// policy's flag and block thresholds.
pub fn run_eval(
    rules: &Loaded,
    args: &EvalArgs,
) -> Result<BTreeMap<&'static str, metrics::Report>, ScoreError> {
    let specs = args
        .labels
        .iter()
        .map(|s| parse_label(s))
        .collect::<Result<Vec<_>, _>>()?;
    let path = args.data.display().to_string();
    let mut input = open_input(&Some(args.data.clone()))?;
    let mut texts = Vec::new();
    let mut labels: Vec<Vec<Option<bool>>> = Vec::new();
    let mut buf = String::new();
    loop {
        buf.clear();
        if input
            .read_line(&mut buf)
            .map_err(|source| ScoreError::Read {
                path: path.clone(),
                source,
            })?
            == 0
        {
            break;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(buf.trim()) else {
            continue;
        };
        let Some(text) = field(&v, &args.text_field).and_then(|t| t.as_str()) else {
            continue;
        };
        let held_out = train::is_validation(text);
        match args.split {
            Split::Validation if !held_out => continue,
            Split::Train if held_out => continue,
            _ => {}
        }
        texts.push(Ok(text.to_owned()));
        labels.push(specs.iter().map(|s| label_of(&v, s)).collect());
    }
    let ctx = ScoreContext::default();
    let mut assessments = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH * 4) {
        assessments.extend(score_batch(rules, &ctx, chunk));
    }
    let mut out = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let (mut scores, mut ys) = (Vec::new(), Vec::new());
        for (a, l) in assessments.iter().zip(&labels) {
            if let (Ok(a), Some(y)) = (a, l[i]) {
                scores.push(a.scores.get(spec.category));
                ys.push(y);
            }
        }
        if ys.is_empty() {
            continue;
        }
        let t = rules.policy.threshold(spec.category);
        out.insert(
            spec.category.as_str(),
            metrics::report(&scores, &ys, t.flag, t.block),
        );
    }
    if out.is_empty() {
        return Err(ScoreError::NoLabels { path });
    }
    Ok(out)
}

/// The eval report as a table.
pub fn format_eval(report: &BTreeMap<&'static str, metrics::Report>) -> String {
    let pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.4}"));
    let mut s = format!(
        "{:<9} {:>7} {:>6} {:>8} {:>7}  {:>26}  {:>26}\n",
        "category",
        "rows",
        "pos",
        "ROC-AUC",
        "AUPRC",
        "at flag: P / R / false-flag",
        "at block: P / R / false-flag"
    );
    for (c, r) in report {
        s.push_str(&format!(
            "{:<9} {:>7} {:>6} {:>8} {:>7}  {:>26}  {:>26}\n",
            c,
            r.rows,
            r.positives,
            num(r.roc_auc),
            num(r.auprc),
            format!(
                "{} / {} / {}",
                pct(r.flag.precision),
                pct(r.flag.recall),
                pct(r.flag.false_flag_rate)
            ),
            format!(
                "{} / {} / {}",
                pct(r.block.precision),
                pct(r.block.recall),
                pct(r.block.false_flag_rate)
            ),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_specs() {
        let s = parse_label("toxicity=labels.class:hate|offensive").unwrap();
        assert_eq!(s.category, Category::Toxicity);
        assert_eq!(
            label_of(&json!({"labels": {"class": "hate"}}), &s),
            Some(true)
        );
        assert_eq!(
            label_of(&json!({"labels": {"class": "neither"}}), &s),
            Some(false)
        );
        assert_eq!(label_of(&json!({"labels": {}}), &s), None);
        let s = parse_label("spam=spam").unwrap();
        assert_eq!(label_of(&json!({"spam": 1}), &s), Some(true));
        assert_eq!(label_of(&json!({"spam": 0.2}), &s), Some(false));
        assert!(
            parse_label("rude=x")
                .unwrap_err()
                .to_string()
                .contains("rude")
        );
        assert!(parse_label("toxicity").is_err());
    }
}
