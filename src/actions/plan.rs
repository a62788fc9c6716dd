//! The one planner: the Stream calls a decision or a moderator's resolution implies, as data.
//!
//! A plan is stored in the same transaction as the decision (or the resolution) that causes it,
//! and carried out later by [`super::runner`], so it must hold everything a call needs. The
//! decision's id is not known when its plan is made; calls that name it (the reason of a flag or
//! a ban, the moderators' notice and its client-chosen id) get it when they are carried out.

use serde::{Deserialize, Serialize};

use crate::domain::{BanPlan, Decision, Scores};

/// How a blocked (or banned user's) message is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    /// Gone for everyone, moderators included.
    #[default]
    Hard,
    /// Shown as "message deleted"; Stream keeps the content.
    Soft,
}

/// `[actions]`: what decisions do on Stream besides the policy itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    /// `hard` (default) or `soft` delete on block and ban.
    pub delete: DeleteMode,
    /// Post to the moderators channel on flag too (block and ban always post when a channel is set).
    pub notify_on_flag: bool,
    /// `type:id`, e.g. `team:moderation` (CHATGUARD_MODERATION_CHANNEL); none: no notices.
    pub moderation_channel: Option<String>,
    /// First retry delay of a Stream call that failed for a reason that may pass (5xx, 429,
    /// timeouts, Stream unreachable); it doubles up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How long such failures are retried before the action is recorded `failed`.
    pub retry_horizon_secs: u64,
    /// A runner holds the actions it carries out this long; one that died lets them go then.
    pub lease_secs: u64,
    /// Actions one worker process carries out at once.
    pub concurrency: usize,
    /// How often the runner looks for work other processes wrote (this process's wakes it at once).
    pub poll_ms: u64,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            delete: DeleteMode::Hard,
            notify_on_flag: false,
            moderation_channel: None,
            retry_base_ms: 2_000,
            retry_max_ms: 300_000,
            retry_horizon_secs: 6 * 3600,
            lease_secs: 120,
            concurrency: 16,
            poll_ms: 500,
        }
    }
}

impl ActionsConfig {
    /// The moderators channel, if one is set.
    pub fn moderation_channel(&self) -> Option<&str> {
        self.moderation_channel
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }

    /// Checks what Stream would refuse later, so that start-up fails instead of every notice.
    /// The message names the setting.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(cid) = self.moderation_channel()
            && !is_cid(cid)
        {
            return Err((
                "actions.moderation_channel (CHATGUARD_MODERATION_CHANNEL)",
                format!("{cid:?} is not type:id, e.g. team:moderation"),
            ));
        }
        for (key, value) in [
            ("actions.retry_base_ms", self.retry_base_ms),
            ("actions.lease_secs", self.lease_secs),
            ("actions.concurrency", self.concurrency as u64),
            ("actions.poll_ms", self.poll_ms),
        ] {
            if value == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err((
                "actions.retry_max_ms",
                "must be at least actions.retry_base_ms".into(),
            ));
        }
        Ok(())
    }

    /// Delay before the next try after `attempts` failed ones: base × 2^(attempts-1), capped.
    pub fn retry_delay(&self, attempts: u32) -> std::time::Duration {
        let factor = 1u64 << attempts.saturating_sub(1).min(30);
        std::time::Duration::from_millis(
            self.retry_base_ms
                .saturating_mul(factor)
                .min(self.retry_max_ms),
        )
    }
}

fn is_cid(cid: &str) -> bool {
    matches!(cid.split_once(':'), Some((kind, id)) if !kind.trim().is_empty() && !id.trim().is_empty())
}

/// One Stream call, with everything it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Step {
    /// Flag the message for Stream's moderation dashboard.
    Flag {
        message_id: String,
        reason: String,
    },
    /// Take a flag back (a moderator approved the message).
    Unflag {
        message_id: String,
    },
    Delete {
        message_id: String,
        hard: bool,
    },
    /// App-wide ban; `None` minutes bans until unbanned.
    Ban {
        user_id: String,
        timeout_minutes: Option<u32>,
        reason: Option<String>,
    },
    Unban {
        user_id: String,
    },
    /// The moderators' notice, rendered when sent (it names the decision).
    Notice {
        channel: String,
        notice: Notice,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Flag { .. } => "flag",
            Step::Unflag { .. } => "unflag",
            Step::Delete { .. } => "delete",
            Step::Ban { .. } => "ban",
            Step::Unban { .. } => "unban",
            Step::Notice { .. } => "notice",
        }
    }
}

/// What the moderators' notice says about a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub decision: Decision,
    pub user_id: Option<String>,
    pub cid: Option<String>,
    pub message_id: Option<String>,
    /// The message never reached the channel (Before Message Send blocked it).
    pub pre_send: bool,
    /// An excerpt only (see [`super::executor::EXCERPT_MAX_CHARS`]).
    pub excerpt: String,
    pub scores: Scores,
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<BanPlan>,
}

/// What the planner needs to know about a decision.
#[derive(Debug, Clone)]
pub struct DecisionFacts<'a> {
    pub decision: Decision,
    pub message_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub cid: Option<&'a str>,
    pub text: &'a str,
    pub scores: Scores,
    /// The policy's reason chain.
    pub reasons: &'a [String],
    /// Set when the decision is `ban`.
    pub ban: Option<&'a BanPlan>,
    /// The message never reached the channel (Before Message Send blocked it): nothing to flag
    /// or delete.
    pub pre_send: bool,
}

/// The calls a decision implies, in the order they run: delete before ban, the notice last.
/// Steps whose ids are missing are left out (and said so in `missing`).
pub fn plan_decision(facts: &DecisionFacts<'_>, cfg: &ActionsConfig) -> Plan {
    let mut plan = Plan::default();
    let on_message = !facts.pre_send;
    let message = |plan: &mut Plan| match facts.message_id {
        Some(id) => Some(id.to_owned()),
        None => {
            plan.missing.push("the event has no message id");
            None
        }
    };
    match facts.decision {
        Decision::Allow => return plan,
        Decision::Flag if on_message => {
            if let Some(message_id) = message(&mut plan) {
                let reason = facts
                    .reasons
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "flagged by chatguard".to_owned());
                plan.steps.push(Step::Flag { message_id, reason });
            }
        }
        Decision::Block | Decision::Ban if on_message => {
            if let Some(message_id) = message(&mut plan) {
                plan.steps.push(Step::Delete {
                    message_id,
                    hard: cfg.delete == DeleteMode::Hard,
                });
            }
        }
        _ => {}
    }
    if facts.decision == Decision::Ban {
        match (facts.user_id, facts.ban) {
            (Some(user), Some(ban)) => plan.steps.push(Step::Ban {
                user_id: user.to_owned(),
                timeout_minutes: ban.timeout_minutes,
                reason: Some(ban.reason.clone()),
            }),
            (None, _) => plan.missing.push("the event has no user id"),
            (_, None) => plan.missing.push("the ban decision carries no ban plan"),
        }
    }
    let notify = match facts.decision {
        // A flag before sending does nothing, so there is nothing to tell.
        Decision::Flag => cfg.notify_on_flag && on_message,
        _ => true,
    };
    if notify && let Some(channel) = cfg.moderation_channel() {
        plan.steps.push(Step::Notice {
            channel: channel.to_owned(),
            notice: Notice {
                decision: facts.decision,
                user_id: facts.user_id.map(str::to_owned),
                cid: facts.cid.map(str::to_owned),
                message_id: facts.message_id.map(str::to_owned),
                pre_send: facts.pre_send,
                excerpt: super::executor::one_line(facts.text, super::executor::EXCERPT_MAX_CHARS),
                scores: facts.scores,
                reasons: facts.reasons.to_vec(),
                ban: facts.ban.cloned(),
            },
        });
    }
    plan
}

/// A planned list of calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Calls the decision implies but that cannot be made (an id is missing).
    pub missing: Vec<&'static str>,
}

/// What a moderator's resolution asks of Stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionCalls {
    /// The message was fine: unflag it.
    Unflag,
    Delete {
        hard: bool,
    },
    Ban {
        timeout_minutes: Option<u32>,
        delete: Option<bool>,
    },
    Nothing,
}

/// The calls a review resolution implies.
pub fn plan_resolution(
    calls: ResolutionCalls,
    message_id: &str,
    user_id: Option<&str>,
    reason: Option<&str>,
) -> Result<Vec<Step>, &'static str> {
    let message_id = message_id.to_owned();
    Ok(match calls {
        ResolutionCalls::Unflag => vec![Step::Unflag { message_id }],
        ResolutionCalls::Delete { hard } => vec![Step::Delete { message_id, hard }],
        ResolutionCalls::Ban {
            timeout_minutes,
            delete,
        } => {
            let user_id = user_id.ok_or("the item has no user to ban")?.to_owned();
            let mut steps = Vec::new();
            if let Some(hard) = delete {
                steps.push(Step::Delete { message_id, hard });
            }
            steps.push(Step::Ban {
                user_id,
                timeout_minutes,
                reason: reason.map(str::to_owned),
            });
            steps
        }
        ResolutionCalls::Nothing => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(decision: Decision, ban: Option<&'a BanPlan>) -> DecisionFacts<'a> {
        DecisionFacts {
            decision,
            message_id: Some("m-1"),
            user_id: Some("u-1"),
            cid: Some("messaging:general"),
            text: "you are\n\tawful",
            scores: Scores::default(),
            reasons: &[],
            ban,
            pre_send: false,
        }
    }

    fn names(plan: &Plan) -> Vec<&'static str> {
        plan.steps.iter().map(Step::name).collect()
    }

    #[test]
    fn plan_per_decision_and_config() {
        let plain = ActionsConfig::default();
        let notify = ActionsConfig {
            moderation_channel: Some("team:moderation".into()),
            ..ActionsConfig::default()
        };
        let on_flag = ActionsConfig {
            notify_on_flag: true,
            ..notify.clone()
        };
        let ban = BanPlan {
            timeout_minutes: Some(60),
            reason: "3 strikes".into(),
            strikes: 3,
        };
        let cases: [(&ActionsConfig, Decision, bool, &[&str]); 9] = [
            (&plain, Decision::Allow, false, &[]),
            (&plain, Decision::Flag, false, &["flag"]),
            (&plain, Decision::Block, false, &["delete"]),
            (&plain, Decision::Ban, false, &["delete", "ban"]),
            (&notify, Decision::Flag, false, &["flag"]),
            (&on_flag, Decision::Flag, false, &["flag", "notice"]),
            (&notify, Decision::Block, true, &["notice"]),
            (&notify, Decision::Ban, true, &["ban", "notice"]),
            (&on_flag, Decision::Flag, true, &[]),
        ];
        for (cfg, decision, pre_send, want) in cases {
            let mut f = facts(decision, Some(&ban));
            f.pre_send = pre_send;
            assert_eq!(
                names(&plan_decision(&f, cfg)),
                want,
                "{decision:?} pre_send={pre_send}"
            );
        }
    }

    #[test]
    fn missing_ids_are_named_not_planned() {
        let mut f = facts(Decision::Ban, None);
        f.message_id = None;
        let plan = plan_decision(&f, &ActionsConfig::default());
        assert!(plan.steps.is_empty());
        assert_eq!(
            plan.missing,
            [
                "the event has no message id",
                "the ban decision carries no ban plan"
            ]
        );
    }

    #[test]
    fn steps_round_trip_through_json() {
        let ban = BanPlan {
            timeout_minutes: None,
            reason: "r".into(),
            strikes: 4,
        };
        let plan = plan_decision(
            &facts(Decision::Ban, Some(&ban)),
            &ActionsConfig {
                moderation_channel: Some("team:mods".into()),
                ..ActionsConfig::default()
            },
        );
        let json = serde_json::to_string(&plan.steps).unwrap();
        let back: Vec<Step> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, plan.steps);
        assert!(json.contains("\"call\":\"delete\""), "{json}");
    }

    #[test]
    fn resolutions() {
        assert_eq!(
            plan_resolution(ResolutionCalls::Unflag, "m", None, None).unwrap(),
            [Step::Unflag {
                message_id: "m".into()
            }]
        );
        let ban = plan_resolution(
            ResolutionCalls::Ban {
                timeout_minutes: Some(5),
                delete: Some(false),
            },
            "m",
            Some("u"),
            Some("spam"),
        )
        .unwrap();
        assert_eq!(
            ban.iter().map(Step::name).collect::<Vec<_>>(),
            ["delete", "ban"]
        );
        assert!(
            plan_resolution(
                ResolutionCalls::Ban {
                    timeout_minutes: None,
                    delete: None
                },
                "m",
                None,
                None
            )
            .is_err()
        );
        assert!(
            plan_resolution(ResolutionCalls::Nothing, "m", None, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn config_reads_toml_and_validates() {
        let cfg: ActionsConfig =
            toml::from_str("delete = \"soft\"\nmoderation_channel = \"team:moderation\"").unwrap();
        assert_eq!(cfg.delete, DeleteMode::Soft);
        assert!(cfg.validate().is_ok());
        assert!(toml::from_str::<ActionsConfig>("delete = \"gone\"").is_err());
        assert!(toml::from_str::<ActionsConfig>("notify = true").is_err());
        for bad in ["moderation", ":x", "team:"] {
            let cfg = ActionsConfig {
                moderation_channel: Some(bad.to_owned()),
                ..ActionsConfig::default()
            };
            assert!(cfg.validate().is_err(), "{bad}");
        }
        let cfg = ActionsConfig::default();
        assert_eq!(cfg.retry_delay(1).as_millis(), 2_000);
        assert_eq!(cfg.retry_delay(2).as_millis(), 4_000);
        assert_eq!(cfg.retry_delay(40).as_millis(), 300_000);
    }
}
