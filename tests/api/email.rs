//! E-mail alert digests against a real SMTP server in the test process.

use std::collections::BTreeSet;
use std::time::Duration;

use chatguard::actions::email::{Alert, AlertMailer, AlertsConfig, DigestOutcome, EmailError};
use chatguard::domain::Scores;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::smtp_sink::SmtpSink;

const WAIT: Duration = Duration::from_secs(10);

fn config(url: String) -> AlertsConfig {
    AlertsConfig {
        smtp_url: Some(url.into()),
        from: Some("chatguard <alerts@example.com>".into()),
        to: vec![
            "mods@example.com".into(),
            "Lead Moderator <lead@example.com>".into(),
        ],
        digest_interval_ms: Some(200),
        max_items: 3,
        max_attempts: 4,
        retry_base_ms: 20,
        ..AlertsConfig::default()
    }
}

fn alert(id: i64, decision: &str, text: &str) -> Alert {
    Alert {
        decision_id: id,
        decision: decision.into(),
        user_id: Some(format!("user-{id}")),
        cid: Some("messaging:general".into()),
        message_id: Some(format!("msg-{id:04}")),
        text: text.into(),
        scores: Scores {
            toxicity: 0.97,
            spam: 0.0,
            explicit: 0.25,
        },
        action: format!("hard-delete message msg-{id:04}"),
        at: chrono::Utc::now(),
    }
}

fn start(cfg: &AlertsConfig) -> (AlertMailer, UnboundedReceiver<DigestOutcome>) {
    let (tx, rx) = unbounded_channel();
    let mailer = AlertMailer::start(cfg, Some(tx))
        .expect("valid config")
        .expect("smtp_url is set");
    (mailer, rx)
}

async fn next_outcome(rx: &mut UnboundedReceiver<DigestOutcome>) -> DigestOutcome {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an outcome in time")
        .expect("outcome channel open")
}

/// A loopback port with nothing listening.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("smtp://{addr}?tls=none")
}

#[tokio::test]
async fn a_burst_of_ten_alerts_makes_one_digest_to_every_recipient() {
    let sink = SmtpSink::start();
    let (mailer, mut outcomes) = start(&config(sink.url()));

    for id in 1..=9 {
        mailer.notify(alert(id, "block", &format!("bad message number {id}")));
    }
    mailer.notify(alert(10, "ban", "worst message"));

    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.decision_ids, (1..=10).collect::<Vec<_>>());
    // Two more windows pass without a second e-mail.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "one digest for the burst");
    let mail = &mails[0];

    assert_eq!(mail.from, "alerts@example.com");
    let to: BTreeSet<_> = mail.to.iter().map(String::as_str).collect();
    assert_eq!(to, BTreeSet::from(["mods@example.com", "lead@example.com"]));
    assert_eq!(
        mail.subject().as_deref(),
        Some("chatguard: 9 messages blocked, 1 user banned")
    );
    let text = mail.text_part().expect("text/plain part");
    assert!(text.contains("10 alerts"), "{text}");
    for listed in ["msg-0001", "msg-0002", "msg-0003"] {
        assert!(text.contains(listed), "{listed} missing from {text}");
    }
    assert!(
        !text.contains("msg-0004"),
        "only max_items are listed: {text}"
    );
    assert!(text.contains("and 7 more"), "{text}");
    assert!(text.contains("user-1") && text.contains("messaging:general"));
    assert!(text.contains("toxicity 0.97, spam 0.00, explicit 0.25"));
    assert!(text.contains("bad message number 1"));
    let html = mail.html_part().expect("text/html part");
    assert!(
        html.contains("and 7 more") && html.contains("msg-0003"),
        "{html}"
    );
    assert!(!html.contains("msg-0004"));

    mailer.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn user_text_is_html_escaped_and_cannot_reach_the_headers() {
    let sink = SmtpSink::start();
    let (mailer, mut outcomes) = start(&config(sink.url()));
    let mut hostile = alert(
        1,
        "block",
        "<script>alert(\"x\")</script> Tom & Jerry\r\nBcc: evil@example.net\r\n\r\nGrüße 😀",
    );
    hostile.user_id = Some("<img src=x onerror=y>".into());
    mailer.notify(hostile);

    assert_eq!(next_outcome(&mut outcomes).await.result, Ok(()));
    let mails = sink.wait_for(1, WAIT).await;
    let mail = &mails[0];

    let content_type = mail
        .top()
        .header("Content-Type")
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    assert!(
        mail.parts()
            .iter()
            .all(|p| p.header("Content-Transfer-Encoding") != Some("7bit")),
        "non-ASCII text is transfer-encoded, and the sink decodes it"
    );
    let kinds: Vec<_> = mail.parts().iter().map(|p| p.content_type()).collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);

    let html = mail.html_part().expect("html");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; Tom &amp; Jerry"),
        "{html}"
    );
    assert!(html.contains("&lt;img src=x onerror=y&gt;"), "{html}");
    assert!(!html.contains("<script>") && !html.contains("<img"));
    assert!(html.contains("Grüße 😀"), "non-ASCII survives: {html}");

    let text = mail.text_part().expect("text");
    assert!(
        text.contains("<script>alert(\"x\")</script> Tom & Jerry Bcc: evil@example.net Grüße 😀"),
        "plain text keeps the characters on one line: {text}"
    );

    let top = mail.top();
    assert!(top.header("Message-ID").is_some_and(|id| id.contains('@')));
    assert!(top.header("Bcc").is_none());
    assert_eq!(mail.to.len(), 2, "no extra recipient: {:?}", mail.to);
    for (name, value) in &top.headers {
        assert!(
            !value
                .chars()
                .chain(name.chars())
                .any(|c| c.is_control() && c != '\t'),
            "control character in header {name}: {value:?}"
        );
    }
    assert!(!mail.raw().contains("\r\nBcc:"));

    mailer.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn transient_refusals_are_retried_until_the_digest_is_delivered() {
    let sink = SmtpSink::start();
    sink.fail_next(2);
    let (mailer, mut outcomes) = start(&config(sink.url()));
    for id in 1..=3 {
        mailer.notify(alert(id, "block", "x"));
    }

    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.attempts, 3);
    assert_eq!(outcome.decision_ids, [1, 2, 3]);
    assert_eq!(sink.refused(), 2);
    assert_eq!(sink.messages().len(), 1);

    mailer.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_server_refusing_every_attempt_reports_each_decision_as_failed() {
    let sink = SmtpSink::start();
    sink.set_failing(true);
    let (mailer, mut outcomes) = start(&config(sink.url()));
    for id in 1..=5 {
        mailer.notify(alert(id, "block", "x"));
    }

    let outcome = next_outcome(&mut outcomes).await;
    let error = outcome.result.expect_err("given up");
    assert!(error.contains("451"), "{error}");
    assert_eq!(outcome.attempts, 4, "max_attempts");
    assert_eq!(outcome.decision_ids, [1, 2, 3, 4, 5]);
    assert_eq!(sink.refused(), 4);
    assert!(sink.messages().is_empty());

    // The server recovers: the next window is delivered.
    sink.set_failing(false);
    mailer.notify(alert(6, "ban", "x"));
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!((outcome.result, outcome.decision_ids), (Ok(()), vec![6]));

    mailer.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_permanent_rejection_is_not_retried() {
    let sink = SmtpSink::start();
    sink.set_rejecting(true);
    let (mailer, mut outcomes) = start(&config(sink.url()));
    mailer.notify(alert(1, "block", "x"));

    let outcome = next_outcome(&mut outcomes).await;
    let error = outcome.result.expect_err("rejected");
    assert!(error.contains("554"), "{error}");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(sink.refused(), 1);

    mailer.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn notify_returns_at_once_while_smtp_is_unreachable_and_every_alert_is_accounted_for() {
    let mut cfg = config(closed_port_url());
    // A window far longer than the loop below: nothing can be sent while it runs.
    cfg.digest_interval_ms = Some(60_000);
    cfg.max_attempts = 2;
    let (mailer, mut outcomes) = start(&cfg);

    let started = std::time::Instant::now();
    for id in 0..1000 {
        mailer.notify(alert(id, "block", &"long text ".repeat(100)));
    }
    let notifying = started.elapsed();
    assert!(
        notifying < Duration::from_secs(60),
        "1,000 notifies took {notifying:?}"
    );
    assert!(
        outcomes.try_recv().is_err(),
        "nothing is sent before the window closes"
    );

    let stopping = std::time::Instant::now();
    mailer.shutdown(Duration::from_secs(5)).await;
    assert!(stopping.elapsed() < Duration::from_secs(6));

    let mut ids = Vec::new();
    while let Ok(outcome) = outcomes.try_recv() {
        assert!(outcome.result.is_err(), "{outcome:?}");
        ids.extend(outcome.decision_ids);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_full_queue_drops_alerts_visibly() {
    let metrics = chatguard::telemetry::metrics();
    let sink = SmtpSink::start();
    let mut cfg = config(sink.url());
    cfg.queue_capacity = 10;
    let (mailer, mut outcomes) = start(&cfg);

    // The collector shares this thread, so it cannot drain the queue during the loop.
    for id in 0..100 {
        mailer.notify(alert(id, "block", "x"));
    }
    mailer.shutdown(Duration::from_secs(5)).await;

    let mut delivered = Vec::new();
    let mut dropped = Vec::new();
    while let Ok(outcome) = outcomes.try_recv() {
        match outcome.result {
            Ok(()) => delivered.extend(outcome.decision_ids),
            Err(e) => {
                assert!(e.contains("queue full"), "{e}");
                assert_eq!(outcome.attempts, 0);
                dropped.extend(outcome.decision_ids);
            }
        }
    }
    assert_eq!(delivered, (0..10).collect::<Vec<_>>());
    assert_eq!(dropped, (10..100).collect::<Vec<_>>());
    assert_eq!(sink.messages().len(), 1);

    let rendered = metrics.render();
    let counted: f64 = rendered
        .lines()
        .find_map(|l| l.strip_prefix("chatguard_alerts_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(counted >= 90.0, "dropped counter {counted} in:\n{rendered}");
    assert!(rendered.contains("chatguard_alert_emails_total{result=\"sent\"}"));
}

#[tokio::test]
async fn shutdown_sends_what_is_pending_and_later_alerts_are_reported_dropped() {
    let sink = SmtpSink::start();
    let mut cfg = config(sink.url());
    cfg.digest_interval_ms = Some(60_000);
    let (mailer, mut outcomes) = start(&cfg);
    let other_handle = mailer.clone();
    mailer.notify(alert(1, "block", "x"));
    mailer.notify(alert(2, "ban", "y"));

    mailer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        sink.messages().len(),
        1,
        "sent without waiting for the window"
    );
    let outcome = next_outcome(&mut outcomes).await;
    assert_eq!((outcome.result, outcome.decision_ids), (Ok(()), vec![1, 2]));

    other_handle.notify(alert(3, "block", "z"));
    let late = next_outcome(&mut outcomes).await;
    assert_eq!(late.decision_ids, [3]);
    assert!(late.result.expect_err("dropped").contains("stopped"));
}

#[tokio::test]
async fn start_checks_the_configuration() {
    assert!(matches!(
        AlertMailer::start(&AlertsConfig::default(), None),
        Ok(None)
    ));
    let cases = [
        (
            AlertsConfig {
                to: vec!["bob".into()],
                ..config("smtp://127.0.0.1:2525?tls=none".into())
            },
            "alerts.to: \"bob\" is not an e-mail address",
        ),
        (
            config("http://mail.example.com".into()),
            "alerts.smtp_url: scheme must be smtp or smtps",
        ),
        (
            AlertsConfig {
                from: None,
                ..config("smtps://mail.example.com".into())
            },
            "alerts.from: required",
        ),
        (
            config("smtp://user:pw@mail.example.com?tls=none".into()),
            "alerts.smtp_url: credentials over plain text",
        ),
    ];
    for (cfg, want) in cases {
        match AlertMailer::start(&cfg, None) {
            Err(EmailError::Config(message)) => {
                assert!(message.contains(want), "{message:?} lacks {want:?}");
                assert!(!message.contains("pw@"), "no password in {message:?}");
            }
            Err(other) => panic!("{want}: wrong error {other}"),
            Ok(_) => panic!("{want}: accepted"),
        }
    }
    for url in [
        "smtps://user:pw@mail.example.com",
        "smtp://mail.example.com:587",
        "smtp://mail.example.com?tls=opportunistic",
    ] {
        let mailer = AlertMailer::start(&config(url.into()), None)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .expect("enabled");
        mailer.shutdown(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_digest_still_retrying_at_the_shutdown_deadline_is_reported_failed() {
    let sink = SmtpSink::start();
    sink.set_failing(true);
    let mut cfg = config(sink.url());
    cfg.digest_interval_ms = Some(60_000);
    cfg.retry_base_ms = 60_000;
    let (mailer, mut outcomes) = start(&cfg);
    mailer.notify(alert(1, "block", "x"));
    mailer.notify(alert(2, "block", "y"));

    let stopping = std::time::Instant::now();
    mailer.shutdown(Duration::from_millis(500)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "did not wait for the 60 s backoff"
    );

    let outcome = outcomes
        .try_recv()
        .expect("reported before shutdown returned");
    assert_eq!(outcome.decision_ids, [1, 2]);
    assert_eq!(outcome.attempts, 1);
    let error = outcome.result.expect_err("not delivered");
    assert!(
        error.contains("shutdown deadline") && error.contains("451"),
        "{error}"
    );
}
