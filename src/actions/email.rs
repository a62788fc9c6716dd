//! E-mail alerts on blocked content and bans, batched into digests and sent over SMTP (lettre).
//!
//! [`AlertMailer::notify`] only queues: a collector task opens a window of
//! `digest_interval_secs` at the first alert after a quiet period and, when it closes, hands one
//! digest to a sender task, which delivers it with exponential backoff and reports a
//! [`DigestOutcome`] for the decision log. A full queue drops the alert (counted, logged and
//! reported as an outcome), so the pipeline never waits for SMTP.
//!
//! Accepted `alerts.smtp_url` forms (`CHATGUARD_SMTP_URL`):
//!
//! | URL | transport |
//! |---|---|
//! | `smtps://[user:pass@]host[:465]` | implicit TLS |
//! | `smtp://[user:pass@]host[:587]` | STARTTLS, required (also `?tls=required`) |
//! | `smtp://…?tls=opportunistic` | STARTTLS when the server offers it, else plain text |
//! | `smtp://…?tls=none` | plain text; with credentials only to a loopback host |
//!
//! Unlike lettre's own `from_url`, a bare `smtp://` means STARTTLS required, never plain text.
//! User and password in the URL are percent-encoded; `alerts.username` / `alerts.password`
//! override them without encoding. The password never reaches the logs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest message excerpt shown per item, in characters.
pub const EXCERPT_CHARS: usize = 140;
/// Upper bound of the retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Digests waiting for the sender; when it is stuck retrying, the collector waits and the alert
/// queue absorbs (or drops) what comes in.
const DIGEST_QUEUE: usize = 64;
/// Time the tasks get after the shutdown deadline to report what they could not send.
const REPORT_GRACE: Duration = Duration::from_millis(100);

/// The `alerts` section: who gets e-mail, through which server, and how often.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// `smtp://…` or `smtps://…` (see the module docs); `None` turns e-mail alerts off.
    pub smtp_url: Option<SecretString>,
    /// SMTP user; overrides the one in the URL.
    pub username: Option<String>,
    /// SMTP password; overrides the one in the URL.
    pub password: Option<SecretString>,
    /// Sender mailbox, e.g. `chatguard <alerts@example.com>`.
    pub from: Option<String>,
    /// Recipient mailboxes; one digest goes to all of them.
    pub to: Vec<String>,
    /// Length of a digest window, opened by the first alert after a quiet period.
    pub digest_interval_secs: u64,
    /// The window in milliseconds; when set it wins over `digest_interval_secs`.
    pub digest_interval_ms: Option<u64>,
    /// Items listed in a digest; the rest are counted as "and N more".
    pub max_items: usize,
    /// Delivery attempts per digest before it is given up.
    pub max_attempts: u32,
    /// First retry delay; it doubles per attempt up to 5 minutes.
    pub retry_base_ms: u64,
    /// Alerts that may wait for the collector; more are dropped.
    pub queue_capacity: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            username: None,
            password: None,
            from: None,
            to: Vec::new(),
            digest_interval_secs: 60,
            digest_interval_ms: None,
            max_items: 20,
            max_attempts: 5,
            retry_base_ms: 1000,
            queue_capacity: 10_000,
        }
    }
}

impl AlertsConfig {
    /// Checks the section; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("alerts.max_attempts: must be at least 1".into());
        }
        if self.queue_capacity == 0 {
            return Err("alerts.queue_capacity: must be at least 1".into());
        }
        match self.digest_interval_ms {
            Some(0) => return Err("alerts.digest_interval_ms: must be at least 1".into()),
            None if self.digest_interval_secs == 0 => {
                return Err("alerts.digest_interval_secs: must be at least 1".into());
            }
            _ => {}
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("alerts.username and alerts.password: set both or neither".into());
        }
        for to in &self.to {
            parse_mailbox("alerts.to", to)?;
        }
        if let Some(from) = &self.from {
            parse_mailbox("alerts.from", from)?;
        }
        let Some(url) = &self.smtp_url else {
            return Ok(());
        };
        let endpoint = SmtpEndpoint::parse(url.expose_secret())?;
        if self.from.is_none() {
            return Err("alerts.from: required when alerts.smtp_url is set".into());
        }
        if self.to.is_empty() {
            return Err(
                "alerts.to: at least one address is required when alerts.smtp_url is set".into(),
            );
        }
        let credentials = endpoint.has_credentials || self.username.is_some();
        if endpoint.tls == TlsMode::None && credentials && !endpoint.loopback {
            return Err("alerts.smtp_url: credentials over plain text (tls=none) are only allowed to a loopback host".into());
        }
        Ok(())
    }

    /// The digest window.
    pub fn digest_interval(&self) -> Duration {
        match self.digest_interval_ms {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_secs(self.digest_interval_secs),
        }
    }
}

fn parse_mailbox(setting: &str, value: &str) -> Result<Mailbox, String> {
    value
        .parse::<Mailbox>()
        .map_err(|_| format!("{setting}: {value:?} is not an e-mail address"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Implicit,
    Required,
    Opportunistic,
    None,
}

/// `alerts.smtp_url`, checked and rewritten into the form lettre's `from_url` expects.
struct SmtpEndpoint {
    lettre_url: SecretString,
    redacted: String,
    tls: TlsMode,
    loopback: bool,
    has_credentials: bool,
}

impl SmtpEndpoint {
    /// Errors never quote the URL: it may hold a password.
    fn parse(raw: &str) -> Result<Self, String> {
        let mut url =
            Url::parse(raw).map_err(|e| format!("alerts.smtp_url: not a valid URL ({e})"))?;
        let Some(host) = url.host_str() else {
            return Err("alerts.smtp_url: no host".into());
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let mut tls_param = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "tls" if tls_param.is_none() => tls_param = Some(value.into_owned()),
                "tls" => return Err("alerts.smtp_url: tls is given twice".into()),
                other => {
                    return Err(format!(
                        "alerts.smtp_url: unknown parameter {other:?} (only tls is accepted)"
                    ));
                }
            }
        }
        let tls = match (url.scheme(), tls_param.as_deref()) {
            ("smtps", None) => TlsMode::Implicit,
            ("smtps", Some(_)) => {
                return Err(
                    "alerts.smtp_url: smtps:// is always TLS; drop the tls parameter".into(),
                );
            }
            ("smtp", None | Some("required")) => TlsMode::Required,
            ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
            ("smtp", Some("none")) => TlsMode::None,
            ("smtp", Some(other)) => {
                return Err(format!(
                    "alerts.smtp_url: tls must be required, opportunistic or none, not {other:?}"
                ));
            }
            (scheme, _) => {
                return Err(format!(
                    "alerts.smtp_url: scheme must be smtp or smtps, not {scheme:?}"
                ));
            }
        };
        let has_credentials = !url.username().is_empty() || url.password().is_some();
        // lettre reads a missing tls parameter on smtp:// as plain text and knows no `none`.
        match tls {
            TlsMode::Required => {
                url.set_query(Some("tls=required"));
            }
            TlsMode::None => url.set_query(None),
            TlsMode::Implicit | TlsMode::Opportunistic => {}
        }
        let lettre_url = SecretString::from(url.as_str());
        if url.password().is_some() {
            // Only fails for URLs without a host, which were rejected above.
            let _ = url.set_password(Some("***"));
        }
        Ok(Self {
            lettre_url,
            redacted: url.to_string(),
            tls,
            loopback,
            has_credentials,
        })
    }
}

/// One blocked message or ban to report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    pub decision_id: i64,
    /// `block` or `ban`.
    pub decision: String,
    pub user_id: Option<String>,
    pub cid: Option<String>,
    pub message_id: Option<String>,
    /// The full message text; the digest shows an excerpt.
    pub text: String,
    pub scores: crate::domain::Scores,
    pub action: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What happened to a digest; the app records it in the decision log for each decision id.
#[derive(Debug, Clone)]
pub struct DigestOutcome {
    pub decision_ids: Vec<i64>,
    pub result: Result<(), String>,
    /// SMTP attempts made; 0 when the alert never reached a digest or the digest was not built.
    pub attempts: u32,
}

/// Why e-mail alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("invalid alerts configuration: {0}")]
    Config(String),
    #[error("e-mail alerts need a running Tokio runtime")]
    NoRuntime,
    #[error("cannot set up the SMTP transport")]
    Transport(#[source] lettre::transport::smtp::Error),
}

/// Handle to the alert digest tasks. Cloning shares the same queue.
#[derive(Clone)]
pub struct AlertMailer {
    alerts: mpsc::Sender<Alert>,
    outcomes: Option<mpsc::UnboundedSender<DigestOutcome>>,
    stop: CancellationToken,
    deadline: Arc<OnceLock<Instant>>,
    tasks: Arc<Mutex<Option<[JoinHandle<()>; 2]>>>,
}

impl AlertMailer {
    /// Spawns the digest task; `outcomes` receives one DigestOutcome per digest sent or given up.
    /// `Ok(None)` when `smtp_url` is not set.
    pub fn start(
        cfg: &AlertsConfig,
        outcomes: Option<mpsc::UnboundedSender<DigestOutcome>>,
    ) -> Result<Option<Self>, EmailError> {
        let Some(url) = &cfg.smtp_url else {
            return Ok(None);
        };
        cfg.validate().map_err(EmailError::Config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EmailError::NoRuntime)?;
        let endpoint = SmtpEndpoint::parse(url.expose_secret()).map_err(EmailError::Config)?;
        let from = cfg
            .from
            .as_deref()
            .map(|f| parse_mailbox("alerts.from", f))
            .transpose()
            .map_err(EmailError::Config)?
            .ok_or_else(|| EmailError::Config("alerts.from: required".into()))?;
        let to = cfg
            .to
            .iter()
            .map(|t| parse_mailbox("alerts.to", t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EmailError::Config)?;

        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(endpoint.lettre_url.expose_secret())
                .map_err(EmailError::Transport)?
                // Digests go out one at a time, so one pooled connection is enough.
                .pool_config(PoolConfig::new().max_size(1));
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        let transport = builder.build();

        tracing::info!(
            smtp = %endpoint.redacted,
            recipients = to.len(),
            interval_ms = cfg.digest_interval().as_millis() as u64,
            "e-mail alerts enabled"
        );

        let (alerts_tx, alerts_rx) = mpsc::channel(cfg.queue_capacity);
        let (digest_tx, digest_rx) = mpsc::channel(DIGEST_QUEUE);
        let stop = CancellationToken::new();
        let deadline = Arc::new(OnceLock::new());
        let collector = runtime.spawn(collect(
            alerts_rx,
            digest_tx,
            stop.clone(),
            cfg.digest_interval(),
            cfg.max_items,
        ));
        let sender = Sender {
            transport,
            from,
            to,
            max_attempts: cfg.max_attempts,
            retry_base: Duration::from_millis(cfg.retry_base_ms),
            outcomes: outcomes.clone(),
            stop: stop.clone(),
            deadline: deadline.clone(),
        };
        let sender = runtime.spawn(sender.run(digest_rx));
        Ok(Some(Self {
            alerts: alerts_tx,
            outcomes,
            stop,
            deadline,
            tasks: Arc::new(Mutex::new(Some([collector, sender]))),
        }))
    }

    /// Never blocks and never fails the caller: queues the alert (a full queue drops it, counts
    /// it in a metric, logs a warning and reports it as a failed outcome).
    pub fn notify(&self, mut alert: Alert) {
        // Only the excerpt is ever shown, so the queue need not hold whole messages.
        alert.text = excerpt(&alert.text, EXCERPT_CHARS);
        if let Err(e) = self.alerts.try_send(alert) {
            let (reason, alert) = match e {
                mpsc::error::TrySendError::Full(a) => ("alert queue full", a),
                mpsc::error::TrySendError::Closed(a) => ("alert mailer stopped", a),
            };
            metrics::counter!("chatguard_alerts_dropped_total").increment(1);
            tracing::warn!(
                decision_id = alert.decision_id,
                reason,
                "e-mail alert dropped"
            );
            self.report(DigestOutcome {
                decision_ids: vec![alert.decision_id],
                result: Err(format!("{reason}: alert dropped")),
                attempts: 0,
            });
        }
    }

    /// Sends what is pending now and stops (for graceful shutdown), waiting at most `deadline`
    /// (plus a moment for the tasks to report what they could not send). Digests still
    /// undelivered at the deadline are reported as failed. If another clone is already shutting
    /// down, this only asks the tasks to stop.
    pub async fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let _ = self.deadline.set(until);
        self.stop.cancel();
        let tasks = match self.tasks.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(tasks) = tasks else {
            return;
        };
        let aborts = tasks.each_ref().map(JoinHandle::abort_handle);
        let joined = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout_at(until + REPORT_GRACE, joined)
            .await
            .is_err()
        {
            tracing::warn!("e-mail alert tasks did not stop in time; aborted");
            for abort in aborts {
                abort.abort();
            }
        }
    }

    fn report(&self, outcome: DigestOutcome) {
        if let Some(tx) = &self.outcomes {
            let _ = tx.send(outcome);
        }
    }
}

/// The alerts of one window: the first `max_items` in full, every id, and counts.
#[derive(Debug)]
struct Digest {
    items: Vec<Alert>,
    max_items: usize,
    decision_ids: Vec<i64>,
    blocked: usize,
    banned_users: BTreeSet<String>,
    banned_unknown: usize,
    other: usize,
    first_at: Option<chrono::DateTime<chrono::Utc>>,
    last_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Digest {
    fn new(max_items: usize) -> Self {
        Self {
            items: Vec::new(),
            max_items,
            decision_ids: Vec::new(),
            blocked: 0,
            banned_users: BTreeSet::new(),
            banned_unknown: 0,
            other: 0,
            first_at: None,
            last_at: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.decision_ids.is_empty()
    }

    fn push(&mut self, alert: Alert) {
        self.decision_ids.push(alert.decision_id);
        match (alert.decision.as_str(), &alert.user_id) {
            ("block", _) => self.blocked += 1,
            ("ban", Some(user)) => {
                self.banned_users.insert(user.clone());
            }
            ("ban", None) => self.banned_unknown += 1,
            _ => self.other += 1,
        }
        self.first_at = Some(self.first_at.map_or(alert.at, |t| t.min(alert.at)));
        self.last_at = Some(self.last_at.map_or(alert.at, |t| t.max(alert.at)));
        if self.items.len() < self.max_items {
            let mut alert = alert;
            alert.text = excerpt(&alert.text, EXCERPT_CHARS);
            self.items.push(alert);
        }
    }

    fn count(&self) -> usize {
        self.decision_ids.len()
    }

    /// "12 messages blocked, 1 user banned".
    fn summary(&self) -> String {
        let banned = self.banned_users.len() + self.banned_unknown;
        let mut parts = Vec::new();
        if self.blocked > 0 {
            parts.push(plural(self.blocked, "message", "messages") + " blocked");
        }
        if banned > 0 {
            parts.push(plural(banned, "user", "users") + " banned");
        }
        if self.other > 0 || parts.is_empty() {
            parts.push(plural(self.other, "other alert", "other alerts"));
        }
        parts.join(", ")
    }

    fn subject(&self) -> String {
        format!("chatguard: {}", self.summary())
    }

    fn period(&self) -> String {
        match (self.first_at, self.last_at) {
            (Some(a), Some(b)) if a != b => format!("from {} to {}", fmt_time(a), fmt_time(b)),
            (Some(a), _) => format!("at {}", fmt_time(a)),
            _ => String::new(),
        }
    }

    fn more(&self) -> usize {
        self.count() - self.items.len()
    }

    fn text_body(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "chatguard: {} {}: {}.\n",
            plural(self.count(), "alert", "alerts"),
            self.period(),
            self.summary()
        );
        for (i, a) in self.items.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. {}  {}  (decision {})",
                i + 1,
                fmt_time(a.at),
                clean(&a.decision),
                a.decision_id
            );
            let _ = writeln!(
                out,
                "   user: {}  channel: {}  message: {}",
                clean_opt(&a.user_id),
                clean_opt(&a.cid),
                clean_opt(&a.message_id)
            );
            let _ = writeln!(out, "   scores: {}", fmt_scores(&a.scores));
            let _ = writeln!(out, "   action: {}", clean(&a.action));
            let _ = writeln!(out, "   text: \"{}\"\n", a.text);
        }
        if self.more() > 0 {
            let _ = writeln!(out, "and {} more.", self.more());
        }
        out
    }

    fn html_body(&self) -> String {
        let mut out =
            String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n");
        let _ = writeln!(
            out,
            "<p><b>chatguard</b>: {} {}: {}.</p>",
            plural(self.count(), "alert", "alerts"),
            self.period(),
            escape_html(&self.summary())
        );
        out.push_str(
            "<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr><th>time</th>\
             <th>decision</th><th>user</th><th>channel</th><th>message</th><th>scores</th>\
             <th>action</th><th>text</th></tr>\n",
        );
        for a in &self.items {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                fmt_time(a.at),
                escape_html(&clean(&a.decision)),
                a.decision_id,
                escape_html(&clean_opt(&a.user_id)),
                escape_html(&clean_opt(&a.cid)),
                escape_html(&clean_opt(&a.message_id)),
                fmt_scores(&a.scores),
                escape_html(&clean(&a.action)),
                escape_html(&a.text),
            );
        }
        out.push_str("</table>\n");
        if self.more() > 0 {
            let _ = writeln!(out, "<p>and {} more.</p>", self.more());
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn fmt_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn fmt_scores(s: &crate::domain::Scores) -> String {
    format!(
        "toxicity {:.2}, spam {:.2}, explicit {:.2}",
        s.toxicity, s.spam, s.explicit
    )
}

fn clean_opt(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "-".to_owned(), clean)
}

fn clean(value: &str) -> String {
    excerpt(value, 200)
}

/// Characters that reorder text on screen (bidi embeddings, overrides and isolates).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// At most `max_chars` characters of `text` on one line: control and bidi characters become
/// spaces, runs of whitespace collapse, and a cut is marked with `…`. Reads only what it keeps,
/// and applying it to its own output changes nothing.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: Vec<char> = Vec::with_capacity(max_chars.min(text.len()) + 2);
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || is_bidi_control(c) {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        if out.len() > max_chars {
            out.truncate(max_chars.saturating_sub(1));
            while out.last() == Some(&' ') {
                out.pop();
            }
            if max_chars > 0 {
                out.push('…');
            }
            break;
        }
    }
    out.into_iter().collect()
}

/// Escapes text for HTML element content and quoted attributes. Hand-written because no HTML
/// crate is a dependency and these five characters are all that is needed.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Delay before retry number `attempt` (1-based): `base`, doubling, capped at 5 minutes.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Gathers alerts into digests, one per window.
async fn collect(
    mut alerts: mpsc::Receiver<Alert>,
    digests: mpsc::Sender<Digest>,
    stop: CancellationToken,
    interval: Duration,
    max_items: usize,
) {
    let mut digest = Digest::new(max_items);
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            a = alerts.recv() => a,
        };
        let Some(first) = first else { break };
        digest.push(first);
        let closes = Instant::now() + interval;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(closes) => break,
                a = alerts.recv() => match a {
                    Some(a) => digest.push(a),
                    None => break,
                },
            }
        }
        if stop.is_cancelled() || alerts.is_closed() {
            break;
        }
        let full = std::mem::replace(&mut digest, Digest::new(max_items));
        if digests.send(full).await.is_err() {
            return;
        }
    }
    // Stopping: whatever is queued joins the last digest; later notifies are dropped.
    alerts.close();
    while let Ok(a) = alerts.try_recv() {
        digest.push(a);
    }
    if !digest.is_empty() {
        let _ = digests.send(digest).await;
    }
}

/// Delivers digests one at a time, with retries.
struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    max_attempts: u32,
    retry_base: Duration,
    outcomes: Option<mpsc::UnboundedSender<DigestOutcome>>,
    stop: CancellationToken,
    deadline: Arc<OnceLock<Instant>>,
}

impl Sender {
    async fn run(self, mut digests: mpsc::Receiver<Digest>) {
        while let Some(digest) = digests.recv().await {
            let (result, attempts) = self.deliver(&digest).await;
            let outcome = DigestOutcome {
                decision_ids: digest.decision_ids,
                result,
                attempts,
            };
            if let Some(tx) = &self.outcomes {
                let _ = tx.send(outcome);
            }
        }
    }

    /// Resolves once shutdown has begun and its deadline has passed.
    async fn expired(&self) {
        self.stop.cancelled().await;
        if let Some(deadline) = self.deadline.get() {
            tokio::time::sleep_until(*deadline).await;
        }
    }

    fn is_expired(&self) -> bool {
        self.stop.is_cancelled() && self.deadline.get().is_none_or(|d| Instant::now() >= *d)
    }

    fn message(&self, digest: &Digest) -> Result<Message, lettre::error::Error> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(digest.subject())
            .message_id(None)
            .date_now();
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.multipart(MultiPart::alternative_plain_html(
            digest.text_body(),
            digest.html_body(),
        ))
    }

    #[tracing::instrument(skip_all, fields(alerts = digest.count()))]
    async fn deliver(&self, digest: &Digest) -> (Result<(), String>, u32) {
        let message = match self.message(digest) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("chatguard_alert_emails_total", "result" => "failed")
                    .increment(1);
                tracing::error!(error = %e, "cannot build the alert e-mail");
                return (Err(format!("cannot build the e-mail: {e}")), 0);
            }
        };
        let mut last_error = String::from("no attempt was made");
        let mut attempt = 0;
        while attempt < self.max_attempts && !self.is_expired() {
            attempt += 1;
            let sent = tokio::select! {
                biased;
                _ = self.expired() => break,
                r = self.transport.send(message.clone()) => r,
            };
            let error = match sent {
                Ok(_) => {
                    metrics::counter!("chatguard_alert_emails_total", "result" => "sent")
                        .increment(1);
                    tracing::info!(attempt, "alert e-mail sent");
                    return (Ok(()), attempt);
                }
                Err(e) => e,
            };
            last_error = error.to_string();
            if error.is_permanent() || attempt == self.max_attempts {
                metrics::counter!("chatguard_alert_emails_total", "result" => "failed")
                    .increment(1);
                tracing::error!(attempt, error = %last_error, "alert e-mail given up");
                return (Err(last_error), attempt);
            }
            let delay = backoff(self.retry_base, attempt);
            metrics::counter!("chatguard_alert_emails_total", "result" => "retried").increment(1);
            tracing::warn!(
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %last_error,
                "alert e-mail failed; will retry"
            );
            tokio::select! {
                biased;
                _ = self.expired() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        metrics::counter!("chatguard_alert_emails_total", "result" => "failed").increment(1);
        tracing::error!(attempt, error = %last_error, "alert e-mail given up at shutdown");
        (
            Err(format!("shutdown deadline passed: {last_error}")),
            attempt,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: i64, decision: &str, user: Option<&str>, text: &str) -> Alert {
        Alert {
            decision_id: id,
            decision: decision.into(),
            user_id: user.map(Into::into),
            cid: Some("messaging:general".into()),
            message_id: Some(format!("m{id}")),
            text: text.into(),
            scores: crate::domain::Scores {
                toxicity: 0.91,
                spam: 0.0,
                explicit: 0.5,
            },
            action: "hard-delete message".into(),
            at: chrono::Utc::now(),
        }
    }

    fn enabled() -> AlertsConfig {
        AlertsConfig {
            smtp_url: Some("smtp://mail.example.com".into()),
            from: Some("chatguard <alerts@example.com>".into()),
            to: vec!["mods@example.com".into()],
            ..AlertsConfig::default()
        }
    }

    #[test]
    fn excerpt_keeps_short_text_and_cuts_long_text_with_an_ellipsis() {
        assert_eq!(excerpt("hello  world", 140), "hello world");
        let long = "é".repeat(300);
        let cut = excerpt(&long, 140);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        let exact = "a".repeat(140);
        assert_eq!(excerpt(&exact, 140), exact);
        let over = "a".repeat(141);
        assert_eq!(excerpt(&over, 140).chars().count(), 140);
    }

    #[test]
    fn excerpt_removes_control_and_bidi_characters() {
        let e = excerpt("a\r\nb\u{1b}[31mc\u{202E}d\0", 140);
        assert!(
            !e.chars().any(|c| c.is_control() || is_bidi_control(c)),
            "{e:?}"
        );
        assert_eq!(e, "a b [31mc d");
    }

    #[test]
    fn excerpt_of_trailing_whitespace_is_not_cut() {
        assert_eq!(excerpt("abc   ", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "ab…");
        assert_eq!(excerpt("", 3), "");
    }

    #[test]
    fn html_escape_covers_markup_characters() {
        assert_eq!(
            escape_html("<script>alert('x&y')</script>\""),
            "&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt;&quot;"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(1000);
        assert_eq!(backoff(base, 1), Duration::from_secs(1));
        assert_eq!(backoff(base, 2), Duration::from_secs(2));
        assert_eq!(backoff(base, 4), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }

    #[test]
    fn subject_counts_blocks_and_distinct_banned_users() {
        let mut d = Digest::new(2);
        for i in 0..12 {
            d.push(alert(i, "block", Some("u1"), "x"));
        }
        d.push(alert(12, "ban", Some("u9"), "x"));
        d.push(alert(13, "ban", Some("u9"), "x"));
        assert_eq!(d.subject(), "chatguard: 12 messages blocked, 1 user banned");
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.more(), 12);
        assert!(d.text_body().contains("and 12 more."));
        let mut one = Digest::new(5);
        one.push(alert(1, "ban", None, "x"));
        assert_eq!(one.subject(), "chatguard: 1 user banned");
    }

    #[test]
    fn bodies_escape_and_clean_user_text() {
        let mut d = Digest::new(5);
        d.push(alert(
            1,
            "block",
            Some("<b>eve</b>"),
            "<script>x</script> & co\r\nBcc: x",
        ));
        let html = d.html_body();
        assert!(
            html.contains("&lt;script&gt;x&lt;/script&gt; &amp; co Bcc: x"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(!html.contains("<script>"));
        let text = d.text_body();
        assert!(text.contains("<script>x</script> & co Bcc: x"), "{text}");
        assert!(
            text.contains("toxicity 0.91, spam 0.00, explicit 0.50"),
            "{text}"
        );
    }

    #[test]
    fn validation_names_the_setting() {
        assert!(AlertsConfig::default().validate().is_ok());
        assert!(enabled().validate().is_ok());
        let cases: Vec<(AlertsConfig, &str)> = vec![
            (
                AlertsConfig {
                    to: vec!["bob".into()],
                    ..enabled()
                },
                "alerts.to: \"bob\" is not an e-mail address",
            ),
            (
                AlertsConfig {
                    smtp_url: Some("http://x".into()),
                    ..enabled()
                },
                "alerts.smtp_url: scheme must be smtp or smtps",
            ),
            (
                AlertsConfig {
                    from: None,
                    ..enabled()
                },
                "alerts.from: required",
            ),
            (
                AlertsConfig {
                    to: vec![],
                    ..enabled()
                },
                "alerts.to: at least one",
            ),
            (
                AlertsConfig {
                    smtp_url: Some("smtp://h?tls=maybe".into()),
                    ..enabled()
                },
                "alerts.smtp_url: tls must be",
            ),
            (
                AlertsConfig {
                    smtp_url: Some("smtp://h?tsl=none".into()),
                    ..enabled()
                },
                "unknown parameter \"tsl\"",
            ),
            (
                AlertsConfig {
                    smtp_url: Some("smtp://u:p@mail.example.com?tls=none".into()),
                    ..enabled()
                },
                "only allowed to a loopback host",
            ),
            (
                AlertsConfig {
                    queue_capacity: 0,
                    ..enabled()
                },
                "alerts.queue_capacity",
            ),
            (
                AlertsConfig {
                    max_attempts: 0,
                    ..enabled()
                },
                "alerts.max_attempts",
            ),
            (
                AlertsConfig {
                    digest_interval_secs: 0,
                    ..enabled()
                },
                "alerts.digest_interval_secs",
            ),
            (
                AlertsConfig {
                    username: Some("u".into()),
                    ..enabled()
                },
                "alerts.username",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.validate().expect_err(want);
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn url_errors_never_show_the_password() {
        let err = SmtpEndpoint::parse("ftp://user:hunter2@h")
            .err()
            .unwrap_or_default();
        assert!(!err.contains("hunter2"), "{err}");
        let err = SmtpEndpoint::parse("smtp://user:hunter2@h?x=1")
            .err()
            .unwrap_or_default();
        assert!(!err.contains("hunter2") && !err.is_empty(), "{err}");
    }

    #[test]
    fn url_forms_map_to_tls_modes_and_redact_the_password() {
        let e = SmtpEndpoint::parse("smtp://u:s3cret@mail.example.com:587").unwrap();
        assert_eq!(e.tls, TlsMode::Required);
        assert!(e.lettre_url.expose_secret().contains("tls=required"));
        assert!(!e.redacted.contains("s3cret") && e.redacted.contains("u:***@"));
        assert!(e.has_credentials && !e.loopback);
        assert_eq!(
            SmtpEndpoint::parse("smtps://h").unwrap().tls,
            TlsMode::Implicit
        );
        let plain = SmtpEndpoint::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(plain.tls, TlsMode::None);
        assert!(plain.loopback && !plain.lettre_url.expose_secret().contains("tls"));
        assert_eq!(
            SmtpEndpoint::parse("smtp://h?tls=opportunistic")
                .unwrap()
                .tls,
            TlsMode::Opportunistic
        );
    }
}
