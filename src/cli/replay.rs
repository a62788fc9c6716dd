//! `chatguard replay`: sign fixture files the way Stream does and POST them.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::ingest::{body, signature};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Files or folders of events (*.json, or *.json.gz sent gzip-compressed).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Webhook URL; defaults to the configured listen address.
    #[arg(long)]
    pub url: Option<String>,
    /// Secret to sign with; defaults to STREAM_API_SECRET, else the dry-run development secret.
    #[arg(long, env = "STREAM_API_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Value of X-Api-Key; defaults to STREAM_API_KEY, else the dry-run key.
    #[arg(long, env = "STREAM_API_KEY")]
    pub api_key: Option<String>,
    /// Send every file under this X-Webhook-Id prefix plus the file name (repeat runs then dedupe);
    /// by default every send gets a fresh id.
    #[arg(long)]
    pub webhook_id_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no .json or .json.gz files found")]
    Empty(PathBuf),
    #[error("{path}: {message}")]
    Body { path: PathBuf, message: String },
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// One sent file and what came back.
#[derive(Debug)]
pub struct ReplayResult {
    pub path: PathBuf,
    pub status: u16,
    pub body: String,
}

/// Expands folders into their event files, sorted by name.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReplayError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| ReplayError::Read {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_event_file(p))
                .collect();
            if found.is_empty() {
                return Err(ReplayError::Empty(path.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_event_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".json") || name.ends_with(".json.gz")
}

/// Signs and posts each file in order; stops only on errors that are not the server's answer.
pub async fn replay(
    files: &[PathBuf],
    url: &str,
    api_key: &str,
    secret: &str,
    webhook_id_prefix: Option<&str>,
) -> Result<Vec<ReplayResult>, ReplayError> {
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let raw = std::fs::read(path).map_err(|source| ReplayError::Read {
            path: path.clone(),
            source,
        })?;
        let gzipped = body::is_gzip(&raw);
        // Stream signs the uncompressed JSON (stream-api.md §1.4).
        let plain =
            body::decode(raw.clone().into(), usize::MAX / 2).map_err(|e| ReplayError::Body {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let webhook_id = match webhook_id_prefix {
            Some(prefix) => format!(
                "{prefix}{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("event")
            ),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-api-key", api_key)
            .header("x-signature", signature::sign(secret.as_bytes(), &plain))
            .header("x-webhook-id", &webhook_id)
            .header("x-webhook-attempt", "1");
        if gzipped {
            request = request.header("content-encoding", "gzip");
        }
        let response = request.body(raw).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        out.push(ReplayResult {
            path: path.clone(),
            status,
            body,
        });
    }
    Ok(out)
}
