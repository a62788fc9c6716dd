//! The action planner and executor against the local Stream stand-in: the calls each decision
//! makes, the moderators' notice, partial failures and idempotent re-execution.

use std::time::{Duration, UNIX_EPOCH};

use std::collections::HashMap;

use chatguard::actions::executor::Executor;
use chatguard::actions::plan::{ActionsConfig, DecisionFacts, DeleteMode, plan_decision};
use chatguard::actions::stream::{StreamClient, StreamClientConfig};
use chatguard::domain::{BanPlan, Decision, Scores};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{API_KEY, SECRET};
use crate::stream_standin::{Call, Op, Scripted, StreamStandin};

const CID: &str = "messaging:general";
const MOD_CID: &str = "team:moderation";
const BOT: &str = "chatguard-bot";
const MSG: &str = "msg-1";
const USER: &str = "mallory";

fn client(standin: &StreamStandin, max_retries: u32) -> StreamClient {
    let cfg = StreamClientConfig {
        base_url: standin.base_url(),
        timeout_ms: 2_000,
        max_retries,
        retry_base_ms: 5,
        retry_max_ms: 3_000,
    };
    StreamClient::new(API_KEY, &SecretString::from(SECRET), &cfg).unwrap()
}

fn notify_cfg() -> ActionsConfig {
    ActionsConfig {
        moderation_channel: Some(MOD_CID.to_owned()),
        ..ActionsConfig::default()
    }
}

/// The planner and the executor together, as the action runner uses them for decision #7:
/// every planned step is carried out in order, a failed one does not stop the later ones.
struct Exec {
    exec: Executor,
    cfg: ActionsConfig,
}

#[derive(Debug, PartialEq)]
struct StepOut {
    step: &'static str,
    status: &'static str,
    error: Option<String>,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    status: &'static str,
    steps: Vec<StepOut>,
}

impl Exec {
    fn new(client: StreamClient, cfg: ActionsConfig) -> Self {
        Self {
            exec: Executor::new(
                HashMap::from([(API_KEY.to_owned(), client)]),
                BOT.to_owned(),
            ),
            cfg,
        }
    }

    async fn execute(&self, req: &DecisionFacts<'_>) -> Outcome {
        let plan = plan_decision(req, &self.cfg);
        let mut steps = Vec::new();
        for step in &plan.steps {
            let result = self.exec.run(API_KEY, step, Some(7)).await;
            steps.push(StepOut {
                step: step.name(),
                status: if result.is_ok() { "done" } else { "failed" },
                error: result.err().map(|e| e.to_string()),
            });
        }
        let status = if steps.is_empty() {
            "none"
        } else if steps.iter().any(|s| s.status == "failed") {
            "failed"
        } else {
            "done"
        };
        Outcome { status, steps }
    }
}

fn executor(standin: &StreamStandin, cfg: ActionsConfig) -> Exec {
    Exec::new(client(standin, 4), cfg)
}

/// A stand-in that knows the user's message and the moderators' channel.
async fn standin() -> StreamStandin {
    let standin = StreamStandin::start(API_KEY, SECRET).await;
    standin.set_strict(true);
    standin.add_message(CID, MSG, USER, "you are awful");
    standin.create_channel(MOD_CID);
    standin
}

fn request<'a>(
    decision: Decision,
    reasons: &'a [String],
    ban: Option<&'a BanPlan>,
) -> DecisionFacts<'a> {
    DecisionFacts {
        decision,
        message_id: Some(MSG),
        user_id: Some(USER),
        cid: Some(CID),
        text: "you are awful",
        scores: Scores {
            toxicity: 0.912,
            spam: 0.1,
            explicit: 0.004,
        },
        reasons,
        ban,
        pre_send: false,
    }
}

fn plan(timeout_minutes: Option<u32>) -> BanPlan {
    BanPlan {
        timeout_minutes,
        reason: "ban: 3 strikes in 24 h".to_owned(),
        strikes: 3,
    }
}

/// `(step, status)` of every step.
fn steps(out: &Outcome) -> Vec<(&'static str, &'static str)> {
    out.steps.iter().map(|s| (s.step, s.status)).collect()
}

/// `METHOD path` of every call, in order.
fn routes(standin: &StreamStandin) -> Vec<String> {
    standin
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

fn params(call: &Call) -> Vec<(&str, &str)> {
    call.query
        .iter()
        .filter(|(k, _)| k != "api_key")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The notice's attachment field `title`, from the recorded request body.
fn notice_field<'c>(call: &'c Call, title: &str) -> &'c str {
    call.body.as_ref().unwrap()["message"]["attachments"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"] == title)
        .and_then(|f| f["value"].as_str())
        .unwrap_or_else(|| panic!("no field {title} in {:?}", call.body))
}

#[tokio::test]
async fn flag_flags_as_the_bot_with_a_reason_naming_the_decision_and_no_notice() {
    let standin = standin().await;
    let reasons = vec!["toxicity 0.91 ≥ flag 0.60".to_owned()];

    let out = executor(&standin, notify_cfg())
        .execute(&request(Decision::Flag, &reasons, None))
        .await;

    assert_eq!((out.status, steps(&out)), ("done", vec![("flag", "done")]));
    assert_eq!(routes(&standin), ["POST /moderation/flag"]);
    let body = standin.calls()[0].body.clone().unwrap();
    assert_eq!(body["target_message_id"], MSG);
    assert_eq!(body["user_id"], BOT);
    assert_eq!(body["reason"], "toxicity 0.91 ≥ flag 0.60 (decision #7)");
    assert_eq!(standin.flags().len(), 1);
    assert!(standin.messages_in(MOD_CID).is_empty());
}

#[tokio::test]
async fn flag_posts_a_notice_when_notify_on_flag_is_on() {
    let standin = standin().await;
    let cfg = ActionsConfig {
        notify_on_flag: true,
        ..notify_cfg()
    };

    let out = executor(&standin, cfg)
        .execute(&request(Decision::Flag, &[], None))
        .await;

    assert_eq!(out.status, "done");
    assert_eq!(steps(&out), [("flag", "done"), ("notice", "done")]);
    let notices = standin.messages_in(MOD_CID);
    assert_eq!(notices.len(), 1);
    assert!(notices[0].text.contains("flagged"), "{}", notices[0].text);
}

#[tokio::test]
async fn block_hard_deletes_as_the_bot_then_posts_the_notice() {
    let standin = standin().await;
    let long = format!(
        "{}\nsecond line {}",
        "you are awful ".repeat(8),
        "x".repeat(100)
    );
    let mut req = request(Decision::Block, &[], None);
    req.text = &long;

    let out = executor(&standin, notify_cfg()).execute(&req).await;

    assert_eq!(out.status, "done");
    assert_eq!(steps(&out), [("delete", "done"), ("notice", "done")]);
    assert_eq!(
        routes(&standin),
        [
            "DELETE /messages/msg-1",
            "POST /channels/team/moderation/message"
        ]
    );
    let calls = standin.calls();
    assert_eq!(params(&calls[0]), [("hard", "true"), ("deleted_by", BOT)]);
    assert_eq!(standin.message(MSG).unwrap().deleted, Some(true));

    let notice = &calls[1];
    let msg = &notice.body.as_ref().unwrap()["message"];
    assert_eq!(msg["id"], "chatguard-decision-7");
    assert_eq!(msg["user_id"], BOT);
    assert_eq!(
        msg["text"],
        format!("🚫 blocked message from {USER} in {CID}")
    );
    assert_eq!(notice_field(notice, "User"), USER);
    assert_eq!(notice_field(notice, "Channel"), CID);
    assert_eq!(notice_field(notice, "Message id"), MSG);
    assert_eq!(notice_field(notice, "Decision"), "#7");
    assert_eq!(
        notice_field(notice, "Scores"),
        "toxicity 0.91 · spam 0.10 · explicit 0.00"
    );
    assert_eq!(notice_field(notice, "Action"), "message deleted");
    let excerpt = notice_field(notice, "Excerpt");
    assert_eq!(excerpt.chars().count(), 140, "{excerpt}");
    assert!(
        excerpt.starts_with("you are awful you are awful"),
        "{excerpt}"
    );
    assert!(
        excerpt.ends_with('…') && !excerpt.contains('\n'),
        "{excerpt}"
    );
    let stored = standin.messages_in(MOD_CID);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].id.as_str(), stored[0].user_id.as_str()),
        ("chatguard-decision-7", BOT)
    );
    assert!(stored[0].attachments[0]["color"].is_string());
}

#[tokio::test]
async fn soft_delete_is_configurable() {
    let standin = standin().await;
    let cfg = ActionsConfig {
        delete: DeleteMode::Soft,
        ..ActionsConfig::default()
    };

    let out = executor(&standin, cfg)
        .execute(&request(Decision::Block, &[], None))
        .await;

    assert_eq!(steps(&out), [("delete", "done")]);
    let call = &standin.calls()[0];
    assert_eq!(params(call), [("deleted_by", BOT)]);
    assert_eq!(standin.message(MSG).unwrap().deleted, Some(false));
}

#[tokio::test]
async fn ban_deletes_the_message_then_bans_app_wide_with_timeout_and_reason() {
    let standin = standin().await;
    let plan = plan(Some(60));

    let out = executor(&standin, notify_cfg())
        .execute(&request(Decision::Ban, &[], Some(&plan)))
        .await;

    assert_eq!(out.status, "done");
    assert_eq!(
        steps(&out),
        [("delete", "done"), ("ban", "done"), ("notice", "done")]
    );
    assert_eq!(
        routes(&standin),
        [
            "DELETE /messages/msg-1",
            "POST /moderation/ban",
            "POST /channels/team/moderation/message"
        ]
    );
    let body = standin.calls()[1].body.clone().unwrap();
    assert_eq!(body["target_user_id"], USER);
    assert_eq!(body["banned_by_id"], BOT);
    assert_eq!(body["timeout"], 60);
    assert_eq!(body["reason"], "ban: 3 strikes in 24 h (decision #7)");
    assert!(body.get("channel_cid").is_none() && body.get("shadow").is_none());
    let ban = standin.ban(USER, None).unwrap();
    assert_eq!((ban.timeout_minutes, ban.shadow), (Some(60), false));
    assert_eq!(standin.message(MSG).unwrap().deleted, Some(true));
    let notice = &standin.calls()[2];
    assert_eq!(
        notice_field(notice, "Action"),
        "user banned app-wide for 60 min (strike 3); message deleted"
    );
}

#[tokio::test]
async fn a_permanent_ban_sends_no_timeout() {
    let standin = standin().await;
    let plan = plan(None);

    let out = executor(&standin, ActionsConfig::default())
        .execute(&request(Decision::Ban, &[], Some(&plan)))
        .await;

    assert_eq!(out.status, "done");
    let ban_call = standin.calls_to("/moderation/ban");
    let body = ban_call[0].body.clone().unwrap();
    assert_eq!(body.get("timeout"), None, "{body}");
    assert_eq!(standin.ban(USER, None).unwrap().timeout_minutes, None);
}

#[tokio::test]
async fn allow_does_nothing() {
    let standin = standin().await;
    let out = executor(&standin, notify_cfg())
        .execute(&request(Decision::Allow, &[], None))
        .await;
    assert_eq!(
        out,
        Outcome {
            status: "none",
            steps: vec![]
        }
    );
    assert!(standin.calls().is_empty());
}

#[tokio::test]
async fn pre_send_bans_and_notifies_without_deleting() {
    let standin = standin().await;
    let plan = plan(Some(15));
    let req = DecisionFacts {
        pre_send: true,
        ..request(Decision::Ban, &[], Some(&plan))
    };

    let out = executor(&standin, notify_cfg()).execute(&req).await;

    assert_eq!(out.status, "done");
    assert_eq!(steps(&out), [("ban", "done"), ("notice", "done")]);
    assert_eq!(
        routes(&standin),
        [
            "POST /moderation/ban",
            "POST /channels/team/moderation/message"
        ]
    );
    assert_eq!(standin.message(MSG).unwrap().deleted, None);
    let notice = &standin.calls()[1];
    assert_eq!(notice_field(notice, "Message id"), "msg-1 (never sent)");
}

#[tokio::test]
async fn a_rate_limited_delete_waits_for_the_reset_and_deletes_once() {
    let standin = standin().await;
    let reset = UNIX_EPOCH.elapsed().unwrap().as_secs() + 1;
    standin.push_scripted(Op::DeleteMessage, Scripted::rate_limited(reset), 1);

    let out = executor(&standin, ActionsConfig::default())
        .execute(&request(Decision::Block, &[], None))
        .await;

    assert_eq!(
        (out.status, steps(&out)),
        ("done", vec![("delete", "done")])
    );
    let calls = standin.calls_to("/messages/");
    let statuses: Vec<_> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(429), Some(200)]);
    assert!(calls[1].at.duration_since(UNIX_EPOCH).unwrap() >= Duration::from_secs(reset));
    assert_eq!(standin.message(MSG).unwrap().deleted, Some(true));
}

#[tokio::test]
async fn stream_down_fails_every_step_with_streams_error_and_tries_them_all() {
    let standin = standin().await;
    standin.push_scripted(
        "*",
        Scripted::stream_error(500, -1, "internal error"),
        usize::MAX,
    );
    let plan = plan(Some(60));
    let exec = Exec::new(client(&standin, 1), notify_cfg());

    let out = exec
        .execute(&request(Decision::Ban, &[], Some(&plan)))
        .await;

    assert_eq!(out.status, "failed");
    assert_eq!(
        steps(&out),
        [
            ("delete", "failed"),
            ("ban", "failed"),
            ("notice", "failed")
        ]
    );
    for step in &out.steps {
        let error = step.error.as_deref().unwrap();
        assert!(
            error.contains("HTTP 500")
                && error.contains("code -1")
                && error.contains("internal error"),
            "{}: {error}",
            step.step
        );
    }
    // One retry each (max_retries 1), in order.
    assert_eq!(
        routes(&standin),
        [
            "DELETE /messages/msg-1",
            "DELETE /messages/msg-1",
            "POST /moderation/ban",
            "POST /moderation/ban",
            "POST /channels/team/moderation/message",
            "POST /channels/team/moderation/message"
        ]
    );
}

#[tokio::test]
async fn a_failed_delete_still_bans_and_notifies() {
    let standin = standin().await;
    standin.push_scripted(
        Op::DeleteMessage,
        Scripted::stream_error(500, -1, "internal error"),
        usize::MAX,
    );
    let plan = plan(Some(60));
    let exec = Exec::new(client(&standin, 1), notify_cfg());

    let out = exec
        .execute(&request(Decision::Ban, &[], Some(&plan)))
        .await;

    assert_eq!(out.status, "failed");
    assert_eq!(
        steps(&out),
        [("delete", "failed"), ("ban", "done"), ("notice", "done")]
    );
    assert!(standin.ban(USER, None).is_some());
    assert_eq!(standin.messages_in(MOD_CID).len(), 1);
}

#[tokio::test]
async fn executing_the_same_decision_twice_acts_once() {
    let standin = standin().await;
    let plan = plan(Some(60));
    let exec = executor(&standin, notify_cfg());
    let req = request(Decision::Ban, &[], Some(&plan));

    let first = exec.execute(&req).await;
    standin.clear_calls();
    let second = exec.execute(&req).await;

    assert_eq!(first, second);
    assert_eq!(second.status, "done");
    let statuses: Vec<_> = standin.calls().iter().map(|c| c.status).collect();
    // The message is gone (404 counts as deleted), the ban is replaced, the notice id is taken.
    assert_eq!(statuses, [Some(404), Some(201), Some(400)]);
    let notices = standin.messages_in(MOD_CID);
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let ids: Vec<Value> = standin
        .calls_to("/team/moderation/message")
        .iter()
        .map(|c| c.body.as_ref().unwrap()["message"]["id"].clone())
        .collect();
    assert_eq!(ids, [Value::from("chatguard-decision-7")]);
}
