use anyhow::{Context, bail};
use clap::Parser;

use chatguard::app::{App, DEV_SECRET_SETTING, Services};
use chatguard::cli::{Cli, Command, DeadLetterAction, TokenAction, replay};
use chatguard::config::{Config, DEV_API_KEY};
use chatguard::reload::Loaded;
use chatguard::store::Store;
use chatguard::{queue, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatguard: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref()).context("configuration")?;
    if let Command::Serve { dry_run: true } | Command::Worker { dry_run: true } = cli.command {
        config.stream.dry_run = true;
    }
    telemetry::init_logs(&config.telemetry);
    match cli.command {
        Command::Serve { .. } => {
            tracing::info!(config = %config.summary(), "starting");
            let app = App::serve(config).await?;
            stop_on_signal(app.shutdown_token());
            app.run_until_stopped().await?;
        }
        Command::Worker { .. } => {
            tracing::info!(config = %config.summary(), "starting worker");
            let app = App::worker(config).await?;
            stop_on_signal(app.shutdown_token());
            app.run_until_stopped().await?;
        }
        Command::Score(args) => {
            let loaded = load_rules(&config)?;
            let (scored, failed) = chatguard::cli::score::run_score(&loaded, &args)?;
            if failed > 0 {
                eprintln!(
                    "chatguard: {scored} lines scored, {failed} could not be read (see their \"error\" lines)"
                );
                std::process::exit(2);
            }
        }
        Command::Eval(args) => {
            let loaded = load_rules(&config)?;
            let report = chatguard::cli::score::run_eval(&loaded, &args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}: policy {}", args.data.display(), loaded.policy.version);
                print!("{}", chatguard::cli::score::format_eval(&report));
            }
        }
        Command::Openapi => {
            println!("{}", chatguard::api::review::openapi().to_pretty_json()?);
        }
        Command::Train(args) => {
            let dir = args
                .rules
                .clone()
                .unwrap_or_else(|| config.rules.dir.clone());
            let started = std::time::Instant::now();
            let (report, path) = chatguard::cli::train::run(&args, &dir)?;
            print!("{}", chatguard::cli::train::format_report(&report));
            println!(
                "wrote {} in {:.1} s",
                path.display(),
                started.elapsed().as_secs_f32()
            );
        }
        Command::Token { action } => {
            let services = Services::start(config).await?;
            let store = &services.store;
            let now = chrono::Utc::now();
            match action {
                TokenAction::Create { name, role } => {
                    let role: chatguard::store::Role = role
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
                    let name = name.trim();
                    if name.is_empty() {
                        bail!("--name must not be empty");
                    }
                    let Some((row, secret)) = store.create_token(name, role, now).await? else {
                        bail!(
                            "a token named {name:?} exists already; revoke it or pick another name"
                        );
                    };
                    let shown = serde_json::to_value(&row)?;
                    store
                        .insert_audit(
                            &cli_actor(),
                            "token.create",
                            &format!("token:{name}"),
                            None,
                            Some(&shown),
                            now,
                        )
                        .await?;
                    println!("{secret}");
                    eprintln!(
                        "token {:?} ({}) created; the secret above is shown only once",
                        row.name,
                        role.as_str()
                    );
                }
                TokenAction::List { json } => {
                    for t in store.list_tokens().await? {
                        if json {
                            println!("{}", serde_json::to_string(&t)?);
                        } else {
                            println!(
                                "{:<24} {:<9} created {}{}",
                                t.name,
                                t.role,
                                t.created_at.format("%Y-%m-%d %H:%M"),
                                t.revoked_at
                                    .map(|r| format!(", revoked {}", r.format("%Y-%m-%d %H:%M")))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
                TokenAction::Revoke { name } => match store.revoke_token(&name, now).await {
                    Ok(true) => {
                        store
                            .insert_audit(
                                &cli_actor(),
                                "token.revoke",
                                &format!("token:{name}"),
                                None,
                                Some(&serde_json::json!({"revoked_at": now})),
                                now,
                            )
                            .await?;
                        println!("token {name:?} revoked");
                    }
                    Ok(false) => println!("token {name:?} was already revoked"),
                    Err(chatguard::store::StoreError::NotFound) => {
                        bail!("no token named {name:?}")
                    }
                    Err(e) => return Err(e.into()),
                },
            }
            services.store.close().await;
        }
        Command::DevSecret => {
            let services = Services::start(config).await?;
            let (secret, _) = services.dev_secret().await?;
            println!("{DEV_API_KEY}\t{secret}");
            services.store.close().await;
        }
        Command::Actions { limit, json } => {
            let store = Store::connect(&config.database.url, 1).await?;
            for a in store.list_failed_actions(limit).await? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": a.id, "app": a.app, "origin": a.origin,
                            "decision_id": a.decision_id, "review_item_id": a.review_item_id,
                            "attempts": a.attempts, "error": a.last_error,
                            "steps": serde_json::from_str::<serde_json::Value>(&a.steps).ok(),
                            "created_at": a.created_at, "finished_at": a.finished_at,
                        })
                    );
                } else {
                    println!(
                        "#{} {} decision={} item={} attempts={} failed {}: {}",
                        a.id,
                        a.origin,
                        a.decision_id.map_or("-".into(), |d| d.to_string()),
                        a.review_item_id.map_or("-".into(), |d| d.to_string()),
                        a.attempts,
                        a.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        a.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        Command::Migrate => {
            Services::start(config).await?;
            println!("database migrated");
        }
        Command::Replay(args) => {
            let files = replay::collect_files(&args.paths)?;
            let url = args
                .url
                .unwrap_or_else(|| format!("http://{}/webhooks/stream", config.server.listen));
            let (api_key, secret) = match (args.api_key, args.secret) {
                (Some(k), Some(s)) => (k, s),
                (None, Some(s)) => (DEV_API_KEY.to_owned(), s),
                (key, None) => {
                    if !config.has_no_apps() {
                        bail!("give --secret (or STREAM_API_SECRET) to sign with");
                    }
                    let store = Store::connect(&config.database.url, 1).await?;
                    let secret = store.get_setting(DEV_SECRET_SETTING).await?.context(
                        "no development secret in the database yet: start `chatguard serve` once, or give --secret",
                    )?;
                    (key.unwrap_or_else(|| DEV_API_KEY.to_owned()), secret)
                }
            };
            let results = replay::replay(
                &files,
                &url,
                &api_key,
                &secret,
                args.webhook_id_prefix.as_deref(),
            )
            .await?;
            let mut failed = 0;
            for r in &results {
                println!("{}\t{}\t{}", r.path.display(), r.status, r.body);
                failed += usize::from(!(200..300).contains(&r.status));
            }
            if failed > 0 {
                bail!("{failed} of {} deliveries were not accepted", results.len());
            }
        }
        Command::Decisions { limit, json } => {
            let store = Store::connect(&config.database.url, 1).await?;
            for d in store.recent_decisions(limit).await? {
                if json {
                    println!("{}", d.to_json());
                } else {
                    println!(
                        "#{} {} {:<5} tox={:.2} spam={:.2} expl={:.2} msg={} user={} action={} {:?}",
                        d.id,
                        d.decided_at.format("%Y-%m-%d %H:%M:%S"),
                        d.decision,
                        d.toxicity,
                        d.spam,
                        d.explicit,
                        d.message_id.as_deref().unwrap_or("-"),
                        d.user_id.as_deref().unwrap_or("-"),
                        d.action_status,
                        d.text.chars().take(60).collect::<String>(),
                    );
                }
            }
        }
        Command::DeadLetters { action } => {
            let services = Services::start(config).await?;
            match action.unwrap_or(DeadLetterAction::List {
                all: false,
                json: false,
            }) {
                DeadLetterAction::List { all, json } => {
                    let rows = services.store.list_dead_letters(all).await?;
                    if rows.is_empty() && !json {
                        println!("no dead letters");
                    }
                    for r in rows {
                        if json {
                            println!("{}", serde_json::to_string(&r)?);
                        } else {
                            println!(
                                "#{} event={} webhook={} type={} attempts={} failed_at={} retried={} error={}",
                                r.id,
                                r.event_id,
                                r.webhook_id,
                                r.event_type,
                                r.attempts,
                                r.failed_at.format("%Y-%m-%d %H:%M:%S"),
                                r.retry_count,
                                r.last_error
                            );
                        }
                    }
                }
                DeadLetterAction::Retry { ids } => {
                    let pending = services.store.list_dead_letters(false).await?;
                    let chosen: Vec<_> = if ids.is_empty() {
                        pending
                    } else {
                        for id in &ids {
                            if !pending.iter().any(|r| r.id == *id) {
                                bail!("dead letter #{id} does not exist or was already retried");
                            }
                        }
                        pending
                            .into_iter()
                            .filter(|r| ids.contains(&r.id))
                            .collect()
                    };
                    for r in &chosen {
                        let job = queue::ScoreJob {
                            event_id: r.event_id,
                            webhook_id: r.webhook_id.clone(),
                            attempt: 1,
                        };
                        // No idempotency key: earlier attempts of this event used theirs.
                        services
                            .queue
                            .enqueue(&job, queue::EnqueueOptions::default())
                            .await?;
                        services.store.mark_dead_letter_retried(r.id).await?;
                        println!("dead letter #{} (event {}) queued again", r.id, r.event_id);
                    }
                    println!("{} queued", chosen.len());
                }
            }
        }
        Command::CheckRules => {
            let dir = &config.rules.dir;
            let started = std::time::Instant::now();
            let loaded =
                Loaded::load(dir, 1).with_context(|| format!("rules in {}", dir.display()))?;
            print!("{}", check_rules_report(dir, &loaded));
            println!("loaded in {} ms", started.elapsed().as_millis());
            let apps = config.stream_apps();
            println!(
                "stream: {}",
                if apps.is_empty() {
                    "dry-run (no credentials)".to_owned()
                } else {
                    format!(
                        "{} app(s): {}",
                        apps.len(),
                        apps.iter()
                            .map(|a| a.api_key.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
    }
    Ok(())
}

/// The cause chain on one line, without a backtrace (an operator's mistake is not a crash).
fn one_line(e: &anyhow::Error) -> String {
    chatguard::telemetry::error_chain(e.as_ref())
}

/// Cancels `token` on Ctrl-C or SIGTERM.
fn stop_on_signal(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}

fn load_rules(config: &Config) -> anyhow::Result<Loaded> {
    let dir = &config.rules.dir;
    Loaded::load(dir, 1).with_context(|| format!("rules in {}", dir.display()))
}

/// What `check-rules` prints about a loaded rules folder.
fn check_rules_report(dir: &std::path::Path, loaded: &Loaded) -> String {
    use std::fmt::Write;
    let e = &loaded.engine;
    let mut s = String::new();
    let rules = e.rules();
    let _ = writeln!(
        s,
        "{}: {} rules ({} shadow)",
        dir.join("rules.toml").display(),
        rules.len(),
        rules.shadow_count()
    );
    for (category, n) in rules.counts() {
        let _ = writeln!(s, "  {:<9} {n}", category.as_str());
    }
    let lex = &e.analyzer().lexicon;
    let _ = writeln!(s, "{}: {} terms", dir.join("lexicon").display(), lex.len());
    for (category, n) in lex.counts() {
        let _ = writeln!(s, "  {:<9} {n}", category.as_str());
    }
    let _ = writeln!(s, "{}:", dir.join("blocklists").display());
    for (name, n) in e.analyzer().signals.counts() {
        let _ = writeln!(s, "  {name:<20} {n}");
    }
    let _ = writeln!(
        s,
        "{}: {} non-zero buckets",
        dir.join("models/chatguard.model").display(),
        e.model().nonzero()
    );
    let st = e.settings();
    let _ = writeln!(
        s,
        "{}: flood {} msgs/{} s, repeats {}×/{} channels within {} s",
        dir.join("engine.toml").display(),
        st.flood.messages,
        st.flood.window_secs,
        st.repeats.same_text,
        st.repeats.channels,
        st.repeats.window_secs
    );
    let _ = writeln!(
        s,
        "{}: version {}",
        dir.join("policy.toml").display(),
        loaded.policy.version
    );
    for category in chatguard::domain::Category::ALL {
        let t = loaded.policy.threshold(category);
        let _ = writeln!(
            s,
            "  {:<9} flag ≥ {} block ≥ {}",
            category.as_str(),
            t.flag,
            t.block
        );
    }
    s
}

/// The audit log's actor for a change made from the command line: `cli:<login>`.
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}
