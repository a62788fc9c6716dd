//! One typed configuration, read from built-in defaults, an optional TOML file and the environment,
//! in that order, then validated before anything starts.
//!
//! Environment names: `STREAM_API_KEY`, `STREAM_API_SECRET`, `STREAM_BASE_URL`, `CHATGUARD_DATABASE_URL`,
//! `CHATGUARD_LISTEN`, `CHATGUARD_RULES`, `CHATGUARD_STREAM_APPS` (`key1=secret1,key2=secret2`),
//! `CHATGUARD_BOT_USER_ID`, and `CHATGUARD_<SECTION>__<KEY>` for every other key of the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The built-in defaults; every key is documented there.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// What went wrong while loading the configuration; each message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Shape(String),
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub stream: StreamConfig,
    pub rules: RulesConfig,
    pub queue: QueueConfig,
    pub telemetry: TelemetryConfig,
    pub actions: crate::actions::plan::ActionsConfig,
    pub alerts: crate::actions::email::AlertsConfig,
    pub before_send: BeforeSendConfig,
    pub review: ReviewConfig,
    pub retention: RetentionConfig,
}

/// `[retention]`: days each kind of record is kept (0: for ever), pruned in the background.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub event_payload_days: u32,
    pub decisions_days: u32,
    pub job_attempts_days: u32,
    pub actions_days: u32,
    pub review_items_days: u32,
    pub audit_days: u32,
    pub interval_secs: u64,
    pub batch: u32,
}

/// The moderators' review queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Open review items for blocks and bans too (flags always open one).
    pub include_blocks: bool,
    /// How long a moderator's claim on an item holds, in seconds.
    pub claim_ttl_secs: u64,
    /// Most ids one `POST /review-items/bulk-resolve` may carry.
    pub bulk_max: usize,
    /// How long a resolution waits for Stream before answering 202 `resolving`.
    pub resolve_wait_ms: u64,
}

/// `POST /webhooks/stream/before-message-send`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeforeSendConfig {
    /// Past this, the message is let through (Stream itself waits 1 s, then lets it through).
    pub deadline_ms: u64,
    /// What the sender sees when a message is blocked.
    pub block_text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest accepted request body, as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest accepted body after gunzip; a larger one is a gzip bomb and gets 413.
    pub max_decompressed_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Open connections at most.
    pub max_connections: usize,
    /// Requests handled at once.
    pub max_concurrent_requests: usize,
    /// Events older than this are recorded `stale` and not acted on; 0: no check.
    pub stale_event_secs: u64,
    /// Serve `/metrics` here only, instead of on `listen`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `/metrics` needs this bearer token (CHATGUARD_METRICS_TOKEN).
    #[serde(default)]
    pub metrics_token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:…` or `postgres://…`; the scheme picks the backend for every table and the queue.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub base_url: String,
    pub api_key: Option<String>,
    pub api_secret: Option<SecretString>,
    /// Further apps posting to the same URL: API key → API secret.
    #[serde(default)]
    pub apps: BTreeMap<String, SecretString>,
    /// The user chatguard acts as on Stream; events it causes are recognised and left alone.
    pub bot_user_id: String,
    /// Decide and record, never call Stream (CHATGUARD_DRY_RUN, `--dry-run`).
    pub dry_run: bool,
    /// One attempt's limit, from connecting to the last byte.
    pub timeout_ms: u64,
    /// Retries after the first attempt (429, 5xx, timeouts).
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Run the scoring worker inside `serve`. `chatguard worker` always runs it.
    pub run_worker: bool,
    /// Jobs one worker process runs at once.
    pub concurrency: usize,
    /// Jobs one fetch claims.
    pub batch_size: usize,
    /// Attempts before a job becomes a dead letter.
    pub max_attempts: u32,
    /// First retry delay; each later one doubles, up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Worker heartbeat; also the fallback wake-up when no change notification arrives.
    pub heartbeat_secs: u64,
    /// Finished queue rows older than this are deleted.
    pub prune_done_after_secs: u64,
    pub prune_interval_secs: u64,
    /// Events whose status has not moved for this long are queued again.
    pub stranded_after_secs: u64,
    pub sweep_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter; `RUST_LOG` wins when set.
    pub log_filter: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    /// One JSON object per line.
    Json,
}

/// One app that may post webhooks: its key and the secret that signs them.
#[derive(Clone)]
pub struct StreamApp {
    pub api_key: String,
    pub api_secret: SecretString,
}

impl std::fmt::Debug for StreamApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamApp")
            .field("api_key", &self.api_key)
            .field("api_secret", &"[redacted]")
            .finish()
    }
}

/// The API key dry-run mode accepts, signed with the generated development secret.
pub const DEV_API_KEY: &str = "chatguard-dev";

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = DEFAULTS
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Shape(format!("built-in defaults: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Toml {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
            merge(&mut table, overlay);
        }
        for (var, value) in env {
            apply_env(&mut table, &var, &value)?;
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    ConfigError::Shape(
                        e.to_string()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and combinations; the error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "database.url (CHATGUARD_DATABASE_URL)",
                message: "must start with sqlite: or postgres://".into(),
            });
        }
        match (&self.stream.api_key, &self.stream.api_secret) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "stream.api_secret (STREAM_API_SECRET)",
                    message: "STREAM_API_KEY is set but its secret is not".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "stream.api_key (STREAM_API_KEY)",
                    message: "STREAM_API_SECRET is set but the key it belongs to is not".into(),
                });
            }
            _ => {}
        }
        for (key, secret) in self.stream.apps.iter().map(|(k, s)| (k.as_str(), s)).chain(
            self.stream
                .api_key
                .as_deref()
                .zip(self.stream.api_secret.as_ref()),
        ) {
            if key.trim().is_empty() || secret.expose_secret().trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "stream.apps (CHATGUARD_STREAM_APPS)",
                    message: "an API key or secret is empty".into(),
                });
            }
        }
        if !(self.stream.base_url.starts_with("https://")
            || self.stream.base_url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                key: "stream.base_url (STREAM_BASE_URL)",
                message: format!("{:?} is not an http(s) URL", self.stream.base_url),
            });
        }
        if self.stream.bot_user_id.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "stream.bot_user_id (CHATGUARD_BOT_USER_ID)",
                message: "must not be empty".into(),
            });
        }
        let positive = [
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            (
                "server.max_decompressed_bytes",
                self.server.max_decompressed_bytes as u64,
            ),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            ("queue.concurrency", self.queue.concurrency as u64),
            ("queue.batch_size", self.queue.batch_size as u64),
            ("queue.max_attempts", u64::from(self.queue.max_attempts)),
            ("queue.retry_base_secs", self.queue.retry_base_secs),
            ("queue.heartbeat_secs", self.queue.heartbeat_secs),
            ("queue.prune_interval_secs", self.queue.prune_interval_secs),
            ("queue.sweep_interval_secs", self.queue.sweep_interval_secs),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.body_read_timeout_ms",
                self.server.body_read_timeout_ms,
            ),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.max_concurrent_requests",
                self.server.max_concurrent_requests as u64,
            ),
            ("retention.interval_secs", self.retention.interval_secs),
            ("retention.batch", u64::from(self.retention.batch)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if let Err((key, message)) = self.actions.validate() {
            return Err(ConfigError::Invalid { key, message });
        }
        if let Err(message) = self.alerts.validate() {
            return Err(ConfigError::Invalid {
                key: "alerts (CHATGUARD_SMTP_URL, CHATGUARD_ALERT_FROM, CHATGUARD_ALERT_TO)",
                message,
            });
        }
        if self.before_send.deadline_ms == 0 || self.before_send.deadline_ms >= 1000 {
            return Err(ConfigError::Invalid {
                key: "before_send.deadline_ms",
                message: "must be between 1 and 999 (Stream gives up after 1 s)".into(),
            });
        }
        if !(10..=86_400).contains(&self.review.claim_ttl_secs) {
            return Err(ConfigError::Invalid {
                key: "review.claim_ttl_secs",
                message: "must be between 10 and 86400 (one day)".into(),
            });
        }
        if !(1..=1000).contains(&self.review.bulk_max) {
            return Err(ConfigError::Invalid {
                key: "review.bulk_max",
                message: "must be between 1 and 1000".into(),
            });
        }
        if self.server.max_decompressed_bytes < self.server.max_body_bytes {
            return Err(ConfigError::Invalid {
                key: "server.max_decompressed_bytes",
                message: "must be at least server.max_body_bytes".into(),
            });
        }
        if self.queue.stranded_after_secs <= self.queue.retry_max_secs {
            return Err(ConfigError::Invalid {
                key: "queue.stranded_after_secs",
                message: "must be longer than queue.retry_max_secs".into(),
            });
        }
        if !(100..=60_000).contains(&self.review.resolve_wait_ms) {
            return Err(ConfigError::Invalid {
                key: "review.resolve_wait_ms",
                message: "must be between 100 and 60000".into(),
            });
        }
        if self.queue.retry_max_secs < self.queue.retry_base_secs {
            return Err(ConfigError::Invalid {
                key: "queue.retry_max_secs",
                message: "must be at least queue.retry_base_secs".into(),
            });
        }
        Ok(())
    }

    /// Decide and record, never call Stream: `stream.dry_run` (`--dry-run`, CHATGUARD_DRY_RUN).
    pub fn dry_run(&self) -> bool {
        self.stream.dry_run
    }

    /// True when no app's credentials are configured.
    pub fn has_no_apps(&self) -> bool {
        self.stream.api_key.is_none() && self.stream.apps.is_empty()
    }

    /// Every app whose webhooks are accepted (none in dry-run; see [`DEV_API_KEY`]).
    pub fn stream_apps(&self) -> Vec<StreamApp> {
        let mut apps: Vec<StreamApp> = self
            .stream
            .apps
            .iter()
            .map(|(k, s)| StreamApp {
                api_key: k.clone(),
                api_secret: s.clone(),
            })
            .collect();
        if let (Some(key), Some(secret)) = (&self.stream.api_key, &self.stream.api_secret) {
            apps.retain(|a| &a.api_key != key);
            apps.push(StreamApp {
                api_key: key.clone(),
                api_secret: secret.clone(),
            });
        }
        apps
    }

    /// The Stream client's settings.
    pub fn stream_client(&self) -> crate::actions::stream::StreamClientConfig {
        crate::actions::stream::StreamClientConfig {
            base_url: self.stream.base_url.clone(),
            timeout_ms: self.stream.timeout_ms,
            max_retries: self.stream.max_retries,
            retry_base_ms: self.stream.retry_base_ms,
            retry_max_ms: self.stream.retry_max_ms,
        }
    }

    pub fn retry_delay(&self, attempt: u32) -> Duration {
        retry_delay(
            self.queue.retry_base_secs,
            self.queue.retry_max_secs,
            attempt,
        )
    }

    /// A one-line summary for the start-up log, with no secrets in it.
    pub fn summary(&self) -> String {
        format!(
            "listen={} database={} rules={} apps=[{}] dry_run={} worker={} concurrency={}",
            self.server.listen,
            redact_url(&self.database.url),
            self.rules.dir.display(),
            self.stream_apps()
                .iter()
                .map(|a| a.api_key.as_str())
                .collect::<Vec<_>>()
                .join(","),
            self.dry_run(),
            self.queue.run_worker,
            self.queue.concurrency,
        )
    }
}

/// Delay before attempt `attempt + 1`, after `attempt` failures: base × 2^(attempt-1), capped.
pub fn retry_delay(base_secs: u64, max_secs: u64, attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(30);
    Duration::from_secs(base_secs.saturating_mul(factor).min(max_secs))
}

/// The URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_owned(), value);
    }
}

/// Reads a scalar the way a person writes it in an environment variable.
fn scalar(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = value.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(value.to_owned())
    }
}

fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let string = || toml::Value::String(value.to_owned());
    match var {
        "STREAM_API_KEY" => set(table, "stream", "api_key", string()),
        "STREAM_API_SECRET" => set(table, "stream", "api_secret", string()),
        "STREAM_BASE_URL" => set(table, "stream", "base_url", string()),
        "CHATGUARD_DATABASE_URL" => set(table, "database", "url", string()),
        "CHATGUARD_LISTEN" => set(table, "server", "listen", string()),
        "CHATGUARD_RULES" => set(table, "rules", "dir", string()),
        "CHATGUARD_BOT_USER_ID" => set(table, "stream", "bot_user_id", string()),
        "CHATGUARD_MODERATION_CHANNEL" => set(table, "actions", "moderation_channel", string()),
        "CHATGUARD_DRY_RUN" => set(table, "stream", "dry_run", scalar(value)),
        "CHATGUARD_METRICS_TOKEN" => set(table, "server", "metrics_token", string()),
        "CHATGUARD_SMTP_URL" => set(table, "alerts", "smtp_url", string()),
        "CHATGUARD_ALERT_FROM" => set(table, "alerts", "from", string()),
        "CHATGUARD_ALERT_TO" => set(
            table,
            "alerts",
            "to",
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(|a| toml::Value::String(a.to_owned()))
                    .collect(),
            ),
        ),
        "CHATGUARD_STREAM_APPS" => {
            let mut apps = toml::Table::new();
            for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (key, secret) = pair.split_once('=').ok_or_else(|| ConfigError::Env {
                    var: var.to_owned(),
                    message: "expected key1=secret1,key2=secret2".into(),
                })?;
                apps.insert(
                    key.trim().to_owned(),
                    toml::Value::String(secret.trim().to_owned()),
                );
            }
            set(table, "stream", "apps", toml::Value::Table(apps));
        }
        "CHATGUARD_CONFIG" => {}
        _ => {
            if let Some((section, key)) = var
                .strip_prefix("CHATGUARD_")
                .and_then(|r| r.split_once("__"))
            {
                set(
                    table,
                    &section.to_ascii_lowercase(),
                    &key.to_ascii_lowercase(),
                    scalar(value),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_have_no_apps_and_no_dry_run_on_sqlite() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert!(c.has_no_apps());
        assert!(!c.dry_run());
        let c = Config::load_from(None, env(&[("CHATGUARD_DRY_RUN", "true")])).unwrap();
        assert!(c.dry_run());
        assert!(c.database.url.starts_with("sqlite:"));
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 256 * 1024);
        assert_eq!(c.rules.dir, PathBuf::from("rules"));
    }

    #[test]
    fn named_env_vars_override_defaults() {
        let c = Config::load_from(
            None,
            env(&[
                ("STREAM_API_KEY", "k1"),
                ("STREAM_API_SECRET", "s1"),
                ("CHATGUARD_STREAM_APPS", "k2=s2, k3=s3"),
                ("CHATGUARD_DATABASE_URL", "postgres://u:pw@db/x"),
                ("CHATGUARD_LISTEN", "0.0.0.0:9000"),
                ("CHATGUARD_QUEUE__CONCURRENCY", "3"),
            ]),
        )
        .unwrap();
        assert!(!c.has_no_apps());
        assert!(c.database.url.starts_with("postgres://"));
        let keys: Vec<_> = c.stream_apps().into_iter().map(|a| a.api_key).collect();
        assert_eq!(keys, ["k2", "k3", "k1"]);
        assert_eq!(c.queue.concurrency, 3);
        assert_eq!(c.server.listen.port(), 9000);
        assert!(!c.summary().contains("pw"));
    }

    #[test]
    fn errors_name_the_bad_setting() {
        let err = Config::load_from(None, env(&[("STREAM_API_KEY", "k")])).unwrap_err();
        assert!(err.to_string().contains("STREAM_API_SECRET"), "{err}");
        let err =
            Config::load_from(None, env(&[("CHATGUARD_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(err.to_string().contains("CHATGUARD_DATABASE_URL"), "{err}");
        let err = Config::load_from(None, env(&[("CHATGUARD_LISTEN", "nope")])).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err =
            Config::load_from(None, env(&[("CHATGUARD_QUEUE__CONCURENCY", "3")])).unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
        let err =
            Config::load_from(None, env(&[("CHATGUARD_STREAM_APPS", "novalue")])).unwrap_err();
        assert!(err.to_string().contains("CHATGUARD_STREAM_APPS"), "{err}");
        for (var, key) in [
            ("CHATGUARD_REVIEW__CLAIM_TTL_SECS", "review.claim_ttl_secs"),
            ("CHATGUARD_REVIEW__BULK_MAX", "review.bulk_max"),
        ] {
            let err = Config::load_from(None, env(&[(var, "0")])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let c =
            Config::load_from(None, env(&[("CHATGUARD_REVIEW__CLAIM_TTL_SECS", "60")])).unwrap();
        assert_eq!(c.review.claim_ttl_secs, 60);
        assert_eq!(c.review.bulk_max, 100);
    }

    #[test]
    fn modes_are_typed_and_a_bad_one_is_named() {
        let err = Config::load_from(None, env(&[("CHATGUARD_TELEMETRY__LOG_FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_format") && err.contains("json"), "{err}");
        let err = Config::load_from(None, env(&[("CHATGUARD_ACTIONS__DELETE", "gone")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("delete") && err.contains("soft"), "{err}");
        let err = Config::load_from(None, env(&[("CHATGUARD_QUEUE__STRANDED_AFTER_SECS", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.stranded_after_secs"), "{err}");
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[queue]\nconcurrency = 7\nmax_attempts = 9\n").unwrap();
        let c =
            Config::load_from(Some(&path), env(&[("CHATGUARD_QUEUE__MAX_ATTEMPTS", "2")])).unwrap();
        assert_eq!(c.queue.concurrency, 7);
        assert_eq!(c.queue.max_attempts, 2);
        std::fs::write(&path, "[queue\n").unwrap();
        let err = Config::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("c.toml"), "{err}");
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        assert_eq!(retry_delay(2, 60, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(2, 60, 2), Duration::from_secs(4));
        assert_eq!(retry_delay(2, 60, 3), Duration::from_secs(8));
        assert_eq!(retry_delay(2, 60, 10), Duration::from_secs(60));
        assert_eq!(retry_delay(2, 60, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn redacts_database_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite:chatguard.db"), "sqlite:chatguard.db");
    }
}
