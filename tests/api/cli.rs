//! The `chatguard` binary: help, configuration errors, rule checks, decisions.

use std::process::Command;

use crate::helpers::*;

fn run(c: &mut Command) -> (bool, String, String) {
    let out = c.output().expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_command() {
    let (ok, out, _) = run(bin().arg("--help"));
    assert!(ok);
    for cmd in [
        "serve",
        "worker",
        "migrate",
        "replay",
        "decisions",
        "dead-letters",
        "check-rules",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
    }
    let (ok, out, _) = run(bin().args(["replay", "--help"]));
    assert!(ok);
    assert!(
        out.contains("--secret") && out.contains("--api-key") && out.contains("--url"),
        "{out}"
    );
}

#[test]
fn a_bad_setting_is_named_at_start_up() {
    let (ok, _, err) = run(bin()
        .arg("check-rules")
        .env("CHATGUARD_LISTEN", "not-an-address"));
    assert!(!ok);
    assert!(err.contains("listen"), "{err}");
    let (ok, _, err) = run(bin().arg("serve").env("STREAM_API_KEY", "k"));
    assert!(!ok);
    assert!(err.contains("STREAM_API_SECRET"), "{err}");
    // An unreachable database is reported at once with its cause, not after a pool timeout.
    let started = std::time::Instant::now();
    let (ok, _, err) = run(bin().args(["serve", "--dry-run"]).env(
        "CHATGUARD_DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/x",
    ));
    assert!(!ok);
    assert!(err.contains("database") && err.contains("refused"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[queue]\nconcurency = 3\n").unwrap();
    let (ok, _, err) = run(bin().args(["--config", file.to_str().unwrap(), "check-rules"]));
    assert!(!ok);
    assert!(err.contains("concurency"), "{err}");
}

#[test]
fn check_rules_reports_what_it_loaded_and_rejects_a_bad_rule() {
    let (ok, out, err) = run(bin().arg("check-rules"));
    assert!(ok, "{err}");
    assert!(out.contains("rules.toml: 30 rules"), "{out}");
    assert!(out.contains("toxicity  flag ≥ 0.6 block ≥ 0.85"), "{out}");
    assert!(out.contains("dry-run"), "{out}");

    assert!(out.contains("terms"), "{out}");
    assert!(out.contains("non-zero buckets"), "{out}");
    assert!(out.contains("scam-domains"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    copy_dir(&rules_dir(), dir.path());
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nid = 'broken'\ncategory = 'toxicity'\npattern = '(unclosed'\nscore = 0.5\n",
    )
    .unwrap();
    let (ok, _, err) = run(bin().arg("check-rules").env("CHATGUARD_RULES", dir.path()));
    assert!(!ok);
    assert!(
        err.contains("broken") && err.contains("bad pattern"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_prints_recent_decisions_as_json_lines() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let app = TestApp::spawn(config(&db.url, &[])).await;
    for (i, text) in ["hello friends", "you are a worthless idiot, kys"]
        .iter()
        .enumerate()
    {
        let id = format!("cli-{i}");
        assert_eq!(
            app.post_webhook(&message_new(&id, "u-cli", text), &id)
                .await
                .status(),
            200
        );
    }
    wait_settled(app.store()).await;
    let (ok, out, err) = run(bin()
        .args(["decisions", "--json", "--limit", "5"])
        .env("CHATGUARD_DATABASE_URL", &db.url));
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0]["id"].as_i64() > lines[1]["id"].as_i64(),
        "newest first: {out}"
    );
    let by_message = |m: &str| {
        lines
            .iter()
            .find(|l| l["message_id"] == m)
            .unwrap_or_else(|| panic!("{m}: {out}"))
    };
    let toxic = by_message("cli-1");
    assert_eq!(toxic["decision"], "block");
    assert!(toxic["scores"]["toxicity"].as_f64().unwrap() >= 0.85);
    let reasons = toxic["matched_rules"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r["kind"] == "rule" && r["category"] == "toxicity"),
        "{out}"
    );
    assert_eq!(by_message("cli-0")["decision"], "allow");
    for key in [
        "webhook_id",
        "event_id",
        "cid",
        "user_id",
        "text",
        "action",
        "received_at",
        "decided_at",
    ] {
        assert!(!toxic[key].is_null(), "{key} missing: {out}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_a_secret_uses_the_dry_run_secret_from_the_database() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let mut cfg = config(&db.url, &[]);
    cfg.stream.api_key = None;
    cfg.stream.api_secret = None;
    cfg.stream.dry_run = true;
    let app = TestApp::spawn(cfg).await;
    let (ok, out, err) = run(bin()
        .arg("replay")
        .arg(fixtures_dir().join("message_new_toxic.json"))
        .arg(fixtures_dir().join("message_new_gzip.json.gz"))
        .args(["--url", &format!("{}/webhooks/stream", app.url)])
        .env("CHATGUARD_DATABASE_URL", &db.url));
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.matches("\t200\t").count(), 2, "{out}");
    wait_settled(app.store()).await;
    assert_eq!(app.store().count_decisions().await.unwrap(), 2);
    // A wrong secret is reported, and the command fails.
    let (ok, out, _) = run(bin()
        .arg("replay")
        .arg(fixtures_dir().join("message_new_clean.json"))
        .args([
            "--url",
            &format!("{}/webhooks/stream", app.url),
            "--secret",
            "wrong",
        ])
        .env("CHATGUARD_DATABASE_URL", &db.url));
    assert!(!ok);
    assert!(out.contains("\t401\t"), "{out}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_once_listed_and_revoked() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let token = |args: &[&str]| {
        run(bin()
            .arg("token")
            .args(args)
            .env("CHATGUARD_DATABASE_URL", &db.url))
    };
    let (ok, secret, err) = token(&["create", "--name", "alice", "--role", "moderator"]);
    assert!(ok, "{err}");
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("cg_") && secret.len() > 40, "{secret}");
    assert!(err.contains("shown only once"), "{err}");
    // Only a hash is stored, and it finds the token.
    let store = chatguard::store::Store::connect(&db.url, 1).await.unwrap();
    let row = store
        .token_by_hash(&chatguard::store::hash_token(&secret), chrono::Utc::now())
        .await
        .unwrap()
        .expect("the token is found by its hash");
    assert_eq!(
        (row.name.as_str(), row.role.as_str()),
        ("alice", "moderator")
    );
    assert_ne!(row.token_hash, secret);
    store.close().await;

    let (ok, _, err) = token(&["create", "--name", "alice", "--role", "viewer"]);
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = token(&["create", "--name", "bob", "--role", "root"]);
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, out, err) = token(&["list"]);
    assert!(
        ok && out.contains("alice") && out.contains("moderator"),
        "{out}{err}"
    );
    assert!(!out.contains(&secret));
    let (ok, out, _) = token(&["revoke", "--name", "alice"]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, _, err) = token(&["revoke", "--name", "nobody"]);
    assert!(!ok && err.contains("no token named"), "{err}");
    let store = chatguard::store::Store::connect(&db.url, 1).await.unwrap();
    assert!(
        store
            .token_by_hash(&chatguard::store::hash_token(&secret), chrono::Utc::now())
            .await
            .unwrap()
            .is_none(),
        "a revoked token no longer authenticates"
    );
    // Both changes are in the audit log, made from the command line.
    let audit = store.list_audit(10, None).await.unwrap();
    let actions: Vec<_> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["token.revoke", "token.create"], "{audit:?}");
    assert!(
        audit.iter().all(|a| a.actor.starts_with("cli:")),
        "{audit:?}"
    );
    assert!(audit.iter().all(|a| a.target == "token:alice"), "{audit:?}");
    store.close().await;
    db.cleanup().await;
}
