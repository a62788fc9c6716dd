//! Turns an [`Assessment`] into a [`Verdict`] with the settings in `rules/policy.toml`: thresholds
//! per category (overridable per channel type), rule action floors, exempt roles, shadow mode and
//! escalation of repeat offences to timed, then permanent, bans. Pure and synchronous: what the
//! worker knows about the author comes in a [`PolicyContext`].
//!
//! Shadow mode comes in two kinds:
//! - global (`shadow = true`): every verdict is decided as usual and marked `shadow`;
//! - per rule (`shadow_rules`): only the listed rules' action *floors* are held back (their score
//!   is already folded into the category scores; for a rule that must not touch scores either, set
//!   `mode = "shadow"` in `rules.toml`). The decision is computed with and without their floors.
//!   When the enforced causes alone would allow the message, the verdict carries the shadow rules'
//!   decision and is marked `shadow`, so the log shows what they would do and nothing is done.
//!   When the enforced causes already call for an action, that action stands (a rule on trial must
//!   never weaken moderation) and the reasons say what the shadow rule would have raised it to.
//!
//! A shadow or exempt verdict never counts as a strike (`strike = false`); a shadow verdict still
//! shows the ban the strikes the user already has would lead to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{Assessment, BanPlan, Category, Decision, Verdict};

pub const POLICY_FILE: &str = "policy.toml";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Flag and block levels for one category.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub flag: f64,
    pub block: f64,
}

/// What the worker knows about the message and its author when deciding.
#[derive(Debug, Clone, Default)]
pub struct PolicyContext<'a> {
    pub channel_type: Option<&'a str>,
    pub user_role: Option<&'a str>,
    /// Strikes the user has that have not expired and were not cleared (this message not included).
    pub active_strikes: u32,
    /// Timed bans chatguard has already given this user (they make the next one longer).
    pub previous_bans: u32,
    /// The user is banned right now (by chatguard or a moderator): no new ban is planned.
    pub banned_now: bool,
}

fn default_exempt_roles() -> Vec<String> {
    vec!["admin".to_owned(), "moderator".to_owned()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: String,
    #[serde(default)]
    shadow: bool,
    #[serde(default = "default_exempt_roles")]
    exempt_roles: Vec<String>,
    #[serde(default)]
    shadow_rules: Vec<String>,
    thresholds: BTreeMap<String, Threshold>,
    #[serde(default)]
    channel_types: BTreeMap<String, ChannelTypeFile>,
    #[serde(default)]
    escalation: EscalationFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelTypeFile {
    thresholds: BTreeMap<String, Threshold>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EscalationFile {
    strike_decisions: Vec<String>,
    strike_expiry_hours: u32,
    ban_after: u32,
    ban_ladder_minutes: Vec<u32>,
    permanent_after_ladder: bool,
}

impl Default for EscalationFile {
    fn default() -> Self {
        Self {
            strike_decisions: vec!["block".to_owned()],
            strike_expiry_hours: 24,
            ban_after: 3,
            ban_ladder_minutes: vec![60, 1440],
            permanent_after_ladder: true,
        }
    }
}

/// Validated `[escalation]`.
#[derive(Debug, Clone)]
struct Escalation {
    /// A flag counts as a strike (then a block does too).
    flags_strike: bool,
    /// A block, or a ban asked for by a rule, counts as a strike.
    blocks_strike: bool,
    expiry_hours: u32,
    ban_after: u32,
    ladder: Vec<u32>,
    permanent_after_ladder: bool,
}

impl Escalation {
    fn counts(&self, d: Decision) -> bool {
        match d {
            Decision::Allow => false,
            Decision::Flag => self.flags_strike,
            Decision::Block | Decision::Ban => self.blocks_strike,
        }
    }

    /// Minutes of the next timed ban, `None` for a permanent one.
    fn ban_minutes(&self, previous_bans: u32) -> Option<u32> {
        let step = usize::try_from(previous_bans).unwrap_or(usize::MAX);
        match self.ladder.get(step) {
            Some(m) => Some(*m),
            None if self.permanent_after_ladder => None,
            None => self.ladder.last().copied(),
        }
    }

    fn offences(&self) -> &'static str {
        if self.flags_strike {
            "flagged or blocked messages"
        } else {
            "blocked messages"
        }
    }
}

/// The policy in force, with a version stored beside every decision.
#[derive(Debug, Clone)]
pub struct Policy {
    pub version: String,
    shadow: bool,
    exempt_roles: Vec<String>,
    shadow_rules: BTreeSet<String>,
    thresholds: BTreeMap<Category, Threshold>,
    channel_types: BTreeMap<String, BTreeMap<Category, Threshold>>,
    escalation: Escalation,
}

fn parse_thresholds(
    key: &str,
    raw: BTreeMap<String, Threshold>,
) -> Result<BTreeMap<Category, Threshold>, String> {
    let mut out = BTreeMap::new();
    for (name, t) in raw {
        let category: Category = name.parse().map_err(|e| format!("{key}.{name}: {e}"))?;
        let ok = |v: f64| (0.0..=1.0).contains(&v);
        if !ok(t.flag) || !ok(t.block) || t.flag > t.block {
            return Err(format!(
                "{key}.{name}: need 0 ≤ flag ≤ block ≤ 1, got flag {} block {}",
                t.flag, t.block
            ));
        }
        out.insert(category, t);
    }
    Ok(out)
}

fn parse_escalation(e: EscalationFile) -> Result<Escalation, String> {
    let mut flags_strike = false;
    let mut blocks_strike = false;
    for name in &e.strike_decisions {
        let d: Decision = name
            .parse()
            .map_err(|err| format!("escalation.strike_decisions: {err}"))?;
        match d {
            Decision::Flag => flags_strike = true,
            Decision::Block => blocks_strike = true,
            Decision::Allow | Decision::Ban => {
                return Err(format!(
                    "escalation.strike_decisions: only flag and block can count as strikes, got {name}"
                ));
            }
        }
    }
    if flags_strike && !blocks_strike {
        return Err(
            "escalation.strike_decisions: if flag counts as a strike, block must count too"
                .to_owned(),
        );
    }
    if e.strike_expiry_hours < 1 {
        return Err("escalation.strike_expiry_hours must be ≥ 1".to_owned());
    }
    if e.ban_after < 1 {
        return Err("escalation.ban_after must be ≥ 1".to_owned());
    }
    if let Some(i) = e.ban_ladder_minutes.iter().position(|m| *m < 1) {
        return Err(format!("escalation.ban_ladder_minutes[{i}] must be ≥ 1"));
    }
    if e.ban_ladder_minutes.windows(2).any(|w| w[1] < w[0]) {
        return Err("escalation.ban_ladder_minutes must not decrease".to_owned());
    }
    if e.ban_ladder_minutes.is_empty() && !e.permanent_after_ladder {
        return Err(
            "escalation.ban_ladder_minutes is empty and permanent_after_ladder is false: no ban length"
                .to_owned(),
        );
    }
    Ok(Escalation {
        flags_strike,
        blocks_strike,
        expiry_hours: e.strike_expiry_hours,
        ban_after: e.ban_after,
        ladder: e.ban_ladder_minutes,
        permanent_after_ladder: e.permanent_after_ladder,
    })
}

fn validate(file: PolicyFile) -> Result<Policy, String> {
    if file.version.trim().is_empty() {
        return Err("version must not be empty".to_owned());
    }
    if file.exempt_roles.iter().any(|r| r.trim().is_empty()) {
        return Err("exempt_roles: a role name is empty".to_owned());
    }
    if file.shadow_rules.iter().any(|r| r.trim().is_empty()) {
        return Err("shadow_rules: a rule id is empty".to_owned());
    }
    let thresholds = parse_thresholds("thresholds", file.thresholds)?;
    if let Some(c) = Category::ALL.iter().find(|c| !thresholds.contains_key(c)) {
        return Err(format!("thresholds.{} is missing", c.as_str()));
    }
    let mut channel_types = BTreeMap::new();
    for (name, ct) in file.channel_types {
        if name.trim().is_empty() {
            return Err("channel_types: a channel type name is empty".to_owned());
        }
        let key = format!("channel_types.{name}.thresholds");
        let t = parse_thresholds(&key, ct.thresholds)?;
        channel_types.insert(name, t);
    }
    Ok(Policy {
        version: file.version,
        shadow: file.shadow,
        exempt_roles: file.exempt_roles,
        shadow_rules: file.shadow_rules.into_iter().collect(),
        thresholds,
        channel_types,
        escalation: parse_escalation(file.escalation)?,
    })
}

fn ban_length(minutes: Option<u32>) -> String {
    match minutes {
        Some(m) => format!("ban {m} min"),
        None => "permanent ban".to_owned(),
    }
}

impl Policy {
    /// Reads and validates `dir/policy.toml`.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let path = dir.join(POLICY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses and validates policy text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        validate(file).map_err(invalid)
    }

    /// The global thresholds for a category.
    pub fn threshold(&self, c: Category) -> Threshold {
        self.threshold_for(c, None)
    }

    /// Thresholds for a category in a channel type (the override if there is one).
    pub fn threshold_for(&self, c: Category, channel_type: Option<&str>) -> Threshold {
        self.lookup(c, channel_type).0
    }

    /// The threshold and the channel type whose override supplied it, if any.
    fn lookup<'c>(
        &self,
        c: Category,
        channel_type: Option<&'c str>,
    ) -> (Threshold, Option<&'c str>) {
        if let Some(name) = channel_type
            && let Some(t) = self.channel_types.get(name).and_then(|o| o.get(&c))
        {
            return (*t, Some(name));
        }
        // Every category is present after `validate`; the fallback never acts.
        let t = self.thresholds.get(&c).copied().unwrap_or(Threshold {
            flag: 1.0,
            block: 1.0,
        });
        (t, None)
    }

    /// How long a strike counts, for the worker's query.
    pub fn strike_window(&self) -> Duration {
        Duration::from_secs(u64::from(self.escalation.expiry_hours) * 3600)
    }

    /// Roles whose messages are decided and logged but never actioned.
    pub fn exempt_roles(&self) -> &[String] {
        &self.exempt_roles
    }

    /// Global shadow mode: every verdict is logged and nothing is done.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Kept for callers without context: same as [`Policy::decide_in`] with
    /// `PolicyContext::default()`.
    pub fn decide(&self, a: &Assessment) -> Verdict {
        self.decide_in(a, &PolicyContext::default())
    }

    /// The most severe outcome any threshold or rule calls for, then shadow mode, exemption and
    /// escalation, with the reason chain that led to it.
    pub fn decide_in(&self, a: &Assessment, ctx: &PolicyContext<'_>) -> Verdict {
        let mut decision = Decision::Allow;
        let mut reasons = Vec::new();
        for c in Category::ALL {
            let score = a.scores.get(c);
            let (t, overridden) = self.lookup(c, ctx.channel_type);
            let (level, limit) = if score >= t.block {
                (Decision::Block, t.block)
            } else if score >= t.flag {
                (Decision::Flag, t.flag)
            } else {
                continue;
            };
            let scope = overridden.map(|n| format!(" ({n})")).unwrap_or_default();
            reasons.push(format!(
                "{} {score:.2} ≥ {} threshold {limit}{scope}",
                c.as_str(),
                level.as_str()
            ));
            decision = decision.max(level);
        }

        let mut ban_rule: Option<&str> = None;
        let mut held_back = Vec::new();
        for m in &a.matches {
            let Some(action) = m.action.filter(|act| *act > Decision::Allow) else {
                continue;
            };
            if self.shadow_rules.contains(&m.rule_id) {
                held_back.push((m.rule_id.as_str(), action));
                continue;
            }
            reasons.push(format!("rule {} asks for {}", m.rule_id, action.as_str()));
            decision = decision.max(action);
            if action == Decision::Ban && ban_rule.is_none() {
                ban_rule = Some(&m.rule_id);
            }
        }

        let mut shadow = self.shadow;
        let enforced = decision;
        for (rule_id, action) in held_back {
            if action <= enforced {
                continue;
            }
            if enforced == Decision::Allow {
                reasons.push(format!(
                    "rule {rule_id} asks for {} (shadow rule: nothing is done)",
                    action.as_str()
                ));
                decision = decision.max(action);
                shadow = true;
                if action == Decision::Ban && ban_rule.is_none() {
                    ban_rule = Some(rule_id);
                }
            } else {
                reasons.push(format!(
                    "rule {rule_id} would ask for {} (shadow rule: the decision stays {})",
                    action.as_str(),
                    enforced.as_str()
                ));
            }
        }

        let exempt_role = ctx
            .user_role
            .filter(|role| self.exempt_roles.iter().any(|e| e == role));
        let mut strike = false;
        let mut ban = None;
        if let Some(role) = exempt_role {
            if decision > Decision::Allow {
                reasons.push(format!("role {role} is exempt: no action"));
            }
        } else {
            let e = &self.escalation;
            let counts = e.counts(decision);
            let strikes = ctx.active_strikes.saturating_add(u32::from(counts));
            let escalates = counts && strikes >= e.ban_after;
            let mut strike_reason = counts.then(|| {
                format!(
                    "strike {strikes} of {} within {} h",
                    e.ban_after, e.expiry_hours
                )
            });
            if escalates || decision == Decision::Ban {
                if ctx.banned_now {
                    decision = decision.min(Decision::Block);
                    reasons.extend(strike_reason.take());
                    reasons.push("user is already banned: no new ban".to_owned());
                } else {
                    let minutes = e.ban_minutes(ctx.previous_bans);
                    let length = ban_length(minutes);
                    let why = match (escalates, ban_rule) {
                        (false, Some(rule)) => format!("rule {rule} asks for ban"),
                        _ => format!("{strikes} {} within {} h", e.offences(), e.expiry_hours),
                    };
                    let reason = if counts {
                        format!("chatguard: {why} (strike {strikes})")
                    } else {
                        format!("chatguard: {why}")
                    };
                    match strike_reason.take() {
                        Some(s) => reasons.push(format!("{s} → {length}")),
                        None => reasons.push(length),
                    }
                    decision = Decision::Ban;
                    ban = Some(BanPlan {
                        timeout_minutes: minutes,
                        reason,
                        strikes,
                    });
                }
            }
            reasons.extend(strike_reason);
            strike = counts && !shadow;
        }
        if self.shadow && decision > Decision::Allow {
            reasons.push("shadow mode: nothing is done".to_owned());
        }

        Verdict {
            decision,
            reasons,
            shadow,
            exempt: exempt_role.is_some(),
            strike,
            ban,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RuleMatch, Scores};
    use proptest::prelude::*;

    const THRESHOLDS: &str = r#"
        [thresholds.toxicity]
        flag = 0.6
        block = 0.85
        [thresholds.spam]
        flag = 0.7
        block = 0.9
        [thresholds.explicit]
        flag = 0.6
        block = 0.8
    "#;

    /// A policy with the default thresholds, `top` before them and `bottom` after them.
    fn policy_with(top: &str, bottom: &str) -> Policy {
        let text = format!("version = \"t1\"\n{top}\n{THRESHOLDS}\n{bottom}");
        Policy::parse(&text, Path::new("p.toml")).unwrap()
    }

    fn policy() -> Policy {
        policy_with("", "")
    }

    fn parse_err(text: &str) -> String {
        Policy::parse(text, Path::new("p.toml"))
            .unwrap_err()
            .to_string()
    }

    fn scores(toxicity: f64, spam: f64, explicit: f64) -> Assessment {
        Assessment {
            scores: Scores {
                toxicity,
                spam,
                explicit,
            },
            matches: vec![],
            reasons: vec![],
        }
    }

    fn with_rule(mut a: Assessment, rule_id: &str, action: Decision) -> Assessment {
        a.matches.push(RuleMatch {
            rule_id: rule_id.into(),
            category: Category::Toxicity,
            score: 0.3,
            start: 0,
            end: 1,
            action: Some(action),
        });
        a
    }

    fn ctx(active_strikes: u32, previous_bans: u32) -> PolicyContext<'static> {
        PolicyContext {
            active_strikes,
            previous_bans,
            ..PolicyContext::default()
        }
    }

    const BLOCKED: (f64, f64, f64) = (0.9, 0.0, 0.0);

    fn blocked() -> Assessment {
        scores(BLOCKED.0, BLOCKED.1, BLOCKED.2)
    }

    #[test]
    fn thresholds_decide() {
        let p = policy();
        let cases = [
            ((0.0, 0.0, 0.0), Decision::Allow),
            ((0.59, 0.69, 0.59), Decision::Allow),
            ((0.6, 0.0, 0.0), Decision::Flag),
            ((0.0, 0.7, 0.0), Decision::Flag),
            ((0.0, 0.0, 0.8), Decision::Block),
            ((0.85, 0.7, 0.0), Decision::Block),
        ];
        for ((t, s, e), want) in cases {
            let v = p.decide(&scores(t, s, e));
            assert_eq!(v.decision, want, "{t} {s} {e}: {v:?}");
            assert_eq!(v.reasons.is_empty(), want == Decision::Allow);
            assert!(!v.shadow && !v.exempt && v.ban.is_none(), "{v:?}");
            assert_eq!(v.strike, want == Decision::Block, "{v:?}");
        }
        let v = p.decide(&scores(0.91, 0.75, 0.0));
        assert_eq!(
            v.reasons,
            [
                "toxicity 0.91 ≥ block threshold 0.85",
                "spam 0.75 ≥ flag threshold 0.7",
                "strike 1 of 3 within 24 h",
            ]
        );
    }

    #[test]
    fn channel_type_overrides_replace_only_their_categories() {
        let p = policy_with(
            "",
            "[channel_types.livestream.thresholds.toxicity]\nflag = 0.5\nblock = 0.7\n",
        );
        let live = Threshold {
            flag: 0.5,
            block: 0.7,
        };
        assert_eq!(
            p.threshold_for(Category::Toxicity, Some("livestream")),
            live
        );
        assert_eq!(
            p.threshold_for(Category::Spam, Some("livestream")),
            p.threshold(Category::Spam)
        );
        assert_eq!(
            p.threshold_for(Category::Toxicity, Some("messaging")),
            p.threshold(Category::Toxicity)
        );
        assert_eq!(
            p.threshold_for(Category::Toxicity, None),
            p.threshold(Category::Toxicity)
        );

        let a = scores(0.75, 0.75, 0.0);
        let in_live = PolicyContext {
            channel_type: Some("livestream"),
            ..PolicyContext::default()
        };
        let v = p.decide_in(&a, &in_live);
        assert_eq!(v.decision, Decision::Block);
        assert_eq!(
            v.reasons[0],
            "toxicity 0.75 ≥ block threshold 0.7 (livestream)"
        );
        assert_eq!(v.reasons[1], "spam 0.75 ≥ flag threshold 0.7");
        let elsewhere = PolicyContext {
            channel_type: Some("team"),
            ..PolicyContext::default()
        };
        let v = p.decide_in(&a, &elsewhere);
        assert_eq!(v.decision, Decision::Flag);
        assert_eq!(v.reasons[0], "toxicity 0.75 ≥ flag threshold 0.6");
    }

    #[test]
    fn rule_floors_raise_the_decision() {
        let p = policy();
        let v = p.decide(&with_rule(scores(0.3, 0.0, 0.0), "threat", Decision::Block));
        assert_eq!(v.decision, Decision::Block);
        assert_eq!(v.reasons[0], "rule threat asks for block");
        assert!(v.strike);

        // A floor below what the scores give changes nothing.
        let v = p.decide(&with_rule(blocked(), "mild", Decision::Flag));
        assert_eq!(v.decision, Decision::Block);
    }

    #[test]
    fn rule_action_can_raise_to_ban() {
        let a = with_rule(scores(0.3, 0.0, 0.0), "threat", Decision::Ban);
        let v = policy().decide(&a);
        assert_eq!(v.decision, Decision::Ban);
        assert!(v.reasons[0].contains("threat"));
        let plan = v.ban.unwrap();
        assert_eq!(plan.timeout_minutes, Some(60));
        assert_eq!(
            plan.reason,
            "chatguard: rule threat asks for ban (strike 1)"
        );
        assert_eq!(plan.strikes, 1);
        assert!(v.strike);

        // Someone already banned is not banned again; the message is still blocked.
        let now = PolicyContext {
            banned_now: true,
            ..PolicyContext::default()
        };
        let v = policy().decide_in(&a, &now);
        assert_eq!(v.decision, Decision::Block);
        assert!(v.ban.is_none());
        assert!(
            v.reasons
                .iter()
                .any(|r| r == "user is already banned: no new ban")
        );
    }

    #[test]
    fn exempt_roles_are_decided_but_never_actioned() {
        let p = policy();
        let a = blocked();
        for role in ["admin", "moderator"] {
            let c = PolicyContext {
                user_role: Some(role),
                active_strikes: 10,
                ..PolicyContext::default()
            };
            let v = p.decide_in(&a, &c);
            assert!(v.exempt, "{role}");
            assert_eq!(v.decision, Decision::Block);
            assert!(!v.strike && v.ban.is_none(), "{v:?}");
            assert_eq!(
                v.reasons.last().unwrap(),
                &format!("role {role} is exempt: no action")
            );
        }
        let user = PolicyContext {
            user_role: Some("user"),
            ..PolicyContext::default()
        };
        let v = p.decide_in(&a, &user);
        assert!(!v.exempt && v.strike);

        let custom = policy_with("exempt_roles = [\"vip\"]", "");
        assert_eq!(custom.exempt_roles(), ["vip"]);
        let admin = PolicyContext {
            user_role: Some("admin"),
            ..PolicyContext::default()
        };
        assert!(!custom.decide_in(&a, &admin).exempt);
        let vip = PolicyContext {
            user_role: Some("vip"),
            ..PolicyContext::default()
        };
        assert!(custom.decide_in(&a, &vip).exempt);
        // An exempt author's allowed message gets no exemption reason.
        assert!(
            custom
                .decide_in(&scores(0.0, 0.0, 0.0), &vip)
                .reasons
                .is_empty()
        );
    }

    #[test]
    fn global_shadow_decides_as_usual_and_does_nothing() {
        let live = policy();
        let shadow = policy_with("shadow = true", "");
        assert!(shadow.is_shadow() && !live.is_shadow());
        for a in [scores(0.0, 0.0, 0.0), scores(0.7, 0.0, 0.0), blocked()] {
            let v = shadow.decide(&a);
            assert!(v.shadow);
            assert!(!v.strike, "a shadow verdict is no strike: {v:?}");
            assert_eq!(v.decision, live.decide(&a).decision);
            assert_eq!(
                v.reasons
                    .last()
                    .is_some_and(|r| r == "shadow mode: nothing is done"),
                v.decision > Decision::Allow,
                "{v:?}"
            );
        }
        // The ban the user's real strikes would lead to is shown, not done.
        let v = shadow.decide_in(&blocked(), &ctx(2, 0));
        assert_eq!(v.decision, Decision::Ban);
        assert!(v.shadow && !v.strike && v.ban.is_some());
    }

    #[test]
    fn shadow_rules_only_show_what_they_would_do() {
        let p = policy_with("shadow_rules = [\"new.rule\"]", "");

        // Alone, the shadow rule's floor gives a shadow verdict.
        let v = p.decide(&with_rule(
            scores(0.0, 0.0, 0.0),
            "new.rule",
            Decision::Block,
        ));
        assert_eq!(v.decision, Decision::Block);
        assert!(v.shadow && !v.strike, "{v:?}");
        assert!(v.reasons[0].contains("new.rule") && v.reasons[0].contains("shadow rule"));

        // Over an enforced flag, the flag stands and the reasons name the rule.
        let v = p.decide(&with_rule(
            scores(0.7, 0.0, 0.0),
            "new.rule",
            Decision::Block,
        ));
        assert_eq!(v.decision, Decision::Flag);
        assert!(!v.shadow);
        assert!(
            v.reasons
                .iter()
                .any(|r| r.contains("new.rule") && r.contains("stays flag")),
            "{v:?}"
        );

        // When enforced causes decide as much, the shadow rule changes nothing.
        let v = p.decide(&with_rule(blocked(), "new.rule", Decision::Block));
        assert_eq!(v.decision, Decision::Block);
        assert!(!v.shadow && v.strike);
        assert!(!v.reasons.iter().any(|r| r.contains("new.rule")), "{v:?}");

        // Other rules are enforced.
        let v = p.decide(&with_rule(
            scores(0.0, 0.0, 0.0),
            "old.rule",
            Decision::Block,
        ));
        assert!(!v.shadow && v.decision == Decision::Block);
    }

    #[test]
    fn blocks_count_as_strikes_and_escalate_along_the_ladder() {
        let p = policy();
        assert_eq!(p.strike_window(), Duration::from_secs(24 * 3600));

        assert!(
            !p.decide(&scores(0.7, 0.0, 0.0)).strike,
            "a flag is no strike"
        );
        let v = p.decide_in(&blocked(), &ctx(1, 0));
        assert_eq!(v.decision, Decision::Block);
        assert!(v.strike && v.ban.is_none());
        assert!(v.reasons.iter().any(|r| r == "strike 2 of 3 within 24 h"));

        let ladder = [(0, Some(60)), (1, Some(1440)), (2, None), (7, None)];
        for (previous_bans, want) in ladder {
            let v = p.decide_in(&blocked(), &ctx(2, previous_bans));
            assert_eq!(v.decision, Decision::Ban, "{previous_bans}");
            assert!(v.strike);
            let plan = v.ban.unwrap();
            assert_eq!(plan.timeout_minutes, want, "{previous_bans}");
            assert_eq!(plan.strikes, 3);
            assert_eq!(
                plan.reason,
                "chatguard: 3 blocked messages within 24 h (strike 3)"
            );
        }
        let v = p.decide_in(&blocked(), &ctx(2, 0));
        assert!(
            v.reasons
                .iter()
                .any(|r| r == "strike 3 of 3 within 24 h → ban 60 min"),
            "{v:?}"
        );
        let v = p.decide_in(&blocked(), &ctx(4, 2));
        assert_eq!(v.ban.as_ref().unwrap().strikes, 5);
        assert!(
            v.reasons
                .iter()
                .any(|r| r == "strike 5 of 3 within 24 h → permanent ban"),
            "{v:?}"
        );

        let banned = PolicyContext {
            active_strikes: 2,
            banned_now: true,
            ..PolicyContext::default()
        };
        let v = p.decide_in(&blocked(), &banned);
        assert_eq!(v.decision, Decision::Block);
        assert!(v.strike && v.ban.is_none());
    }

    #[test]
    fn escalation_settings_are_honoured() {
        let p = policy_with(
            "",
            "[escalation]\nstrike_decisions = [\"flag\", \"block\"]\nstrike_expiry_hours = 6\n\
             ban_after = 2\nban_ladder_minutes = [10, 30]\npermanent_after_ladder = false\n",
        );
        assert_eq!(p.strike_window(), Duration::from_secs(6 * 3600));
        let flagged = scores(0.7, 0.0, 0.0);
        let v = p.decide(&flagged);
        assert_eq!(v.decision, Decision::Flag);
        assert!(v.strike);
        let v = p.decide_in(&flagged, &ctx(1, 5));
        assert_eq!(v.decision, Decision::Ban);
        let plan = v.ban.unwrap();
        assert_eq!(plan.timeout_minutes, Some(30), "the last step is kept");
        assert_eq!(
            plan.reason,
            "chatguard: 2 flagged or blocked messages within 6 h (strike 2)"
        );

        let off = policy_with("", "[escalation]\nstrike_decisions = []\n");
        let v = off.decide_in(&blocked(), &ctx(50, 0));
        assert!(!v.strike && v.decision == Decision::Block && v.ban.is_none());

        let always_permanent = policy_with("", "[escalation]\nban_ladder_minutes = []\n");
        let v = always_permanent.decide_in(&blocked(), &ctx(2, 0));
        assert_eq!(v.ban.unwrap().timeout_minutes, None);
    }

    #[test]
    fn invalid_policies_are_rejected_naming_the_key() {
        let t = THRESHOLDS;
        let cases: Vec<(String, &str)> = vec![
            (
                "version='x'\n[thresholds.toxicity]\nflag=0.9\nblock=0.5\n".into(),
                "thresholds.toxicity: need 0 ≤ flag ≤ block ≤ 1",
            ),
            (
                "version='x'\n[thresholds.spam]\nflag=0.5\nblock=1.5\n".into(),
                "thresholds.spam: need 0 ≤ flag ≤ block ≤ 1",
            ),
            (
                "version='x'\n[thresholds.toxicity]\nflag=0.1\nblock=0.5\n".into(),
                "thresholds.spam is missing",
            ),
            (
                format!("version='x'\n{t}\n[thresholds.violence]\nflag=0.1\nblock=0.5\n"),
                "thresholds.violence: unknown category",
            ),
            (format!("version=' '\n{t}"), "version must not be empty"),
            (
                format!(
                    "version='x'\n{t}\n[channel_types.livestream.thresholds.toxicity]\nflag=0.9\nblock=0.8\n"
                ),
                "channel_types.livestream.thresholds.toxicity: need 0 ≤ flag ≤ block ≤ 1",
            ),
            (
                format!(
                    "version='x'\n{t}\n[channel_types.livestream.thresholds.gore]\nflag=0.1\nblock=0.8\n"
                ),
                "channel_types.livestream.thresholds.gore: unknown category",
            ),
            (
                format!(
                    "version='x'\n{t}\n[channel_types.\"\".thresholds.spam]\nflag=0.1\nblock=0.8\n"
                ),
                "channel_types: a channel type name is empty",
            ),
            (
                format!("version='x'\nexempt_roles=['']\n{t}"),
                "exempt_roles: a role name is empty",
            ),
            (
                format!("version='x'\nshadow_rules=['']\n{t}"),
                "shadow_rules: a rule id is empty",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nban_after = 0\n"),
                "escalation.ban_after must be ≥ 1",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nstrike_expiry_hours = 0\n"),
                "escalation.strike_expiry_hours must be ≥ 1",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nban_ladder_minutes = [60, 0]\n"),
                "escalation.ban_ladder_minutes[1] must be ≥ 1",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nban_ladder_minutes = [60, 30]\n"),
                "escalation.ban_ladder_minutes must not decrease",
            ),
            (
                format!(
                    "version='x'\n{t}\n[escalation]\nban_ladder_minutes = []\npermanent_after_ladder = false\n"
                ),
                "escalation.ban_ladder_minutes is empty and permanent_after_ladder is false",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nstrike_decisions = ['blocks']\n"),
                "escalation.strike_decisions: unknown decision \"blocks\"",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nstrike_decisions = ['ban']\n"),
                "escalation.strike_decisions: only flag and block can count as strikes, got ban",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nstrike_decisions = ['flag']\n"),
                "escalation.strike_decisions: if flag counts as a strike, block must count too",
            ),
            (
                format!("version='x'\nshadows = true\n{t}"),
                "unknown field `shadows`",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nban_afterr = 2\n"),
                "unknown field `ban_afterr`",
            ),
            (
                format!("version='x'\n{t}\n[channel_types.livestream]\nthreshold = 1\n"),
                "unknown field `threshold`",
            ),
            (
                format!("version='x'\n{t}\n[escalation]\nban_after = -1\n"),
                "ban_after",
            ),
        ];
        for (text, want) in cases {
            let e = parse_err(&text);
            assert!(e.contains(want), "want {want:?} in {e:?}");
            assert!(e.starts_with("p.toml: "), "{e}");
        }
    }

    #[test]
    fn shipped_policy_loads_with_documented_defaults() {
        let p = Policy::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
        assert!(!p.version.is_empty());
        let defaults = [
            (Category::Explicit, 0.6, 0.8),
            (Category::Spam, 0.7, 0.9),
            (Category::Toxicity, 0.6, 0.85),
        ];
        for (c, flag, block) in defaults {
            assert_eq!(p.threshold(c), Threshold { flag, block }, "{c:?}");
            assert_eq!(p.threshold_for(c, Some("messaging")), p.threshold(c));
        }
        let live = p.threshold_for(Category::Spam, Some("livestream"));
        let global = p.threshold(Category::Spam);
        assert!(live.flag <= global.flag && live.block <= global.block);
        assert_ne!(live, global, "the shipped livestream override is in force");
        assert!(!p.is_shadow());
        assert_eq!(p.exempt_roles(), ["admin", "moderator"]);
        assert_eq!(p.strike_window(), Duration::from_secs(24 * 3600));
        let v = p.decide_in(&blocked(), &ctx(2, 0));
        assert_eq!(v.ban.unwrap().timeout_minutes, Some(60));
        assert_eq!(
            p.decide_in(&blocked(), &ctx(2, 1))
                .ban
                .unwrap()
                .timeout_minutes,
            Some(1440)
        );
        assert_eq!(
            p.decide_in(&blocked(), &ctx(2, 2))
                .ban
                .unwrap()
                .timeout_minutes,
            None
        );
        assert_eq!(
            p.decide_in(&blocked(), &ctx(1, 0)).decision,
            Decision::Block
        );
    }

    fn any_decision() -> impl Strategy<Value = Option<Decision>> {
        prop_oneof![
            Just(None),
            Just(Some(Decision::Flag)),
            Just(Some(Decision::Block)),
            Just(Some(Decision::Ban)),
        ]
    }

    proptest! {
        #[test]
        fn verdict_invariants_hold(
            t in 0.0..=1.0f64, s in 0.0..=1.0f64, e in 0.0..=1.0f64,
            action in any_decision(),
            shadow_rule in any::<bool>(),
            role in prop_oneof![Just(None), Just(Some("user")), Just(Some("moderator"))],
            active_strikes in 0u32..6, previous_bans in 0u32..4, banned_now in any::<bool>(),
        ) {
            let p = policy_with("shadow_rules = [\"trial\"]", "");
            let mut a = scores(t, s, e);
            if let Some(action) = action {
                a = with_rule(a, if shadow_rule { "trial" } else { "live" }, action);
            }
            let c = PolicyContext {
                channel_type: None,
                user_role: role,
                active_strikes,
                previous_bans,
                banned_now,
            };
            let v = p.decide_in(&a, &c);
            prop_assert_eq!(v.ban.is_some(), v.decision == Decision::Ban && !v.exempt);
            prop_assert!(!(v.strike && (v.exempt || v.shadow)));
            prop_assert!(!(banned_now && v.ban.is_some()));
            prop_assert_eq!(v.reasons.is_empty(), v.decision == Decision::Allow);
            // Context never lowers a decision below what scores and enforced rules ask for,
            // except that an existing ban turns a new one into a block.
            let floor = p.decide_in(&a, &PolicyContext::default()).decision;
            let floor = if banned_now { floor.min(Decision::Block) } else { floor };
            prop_assert!(v.decision >= floor, "{:?} < {:?}", v.decision, floor);
            let global = policy_with("shadow = true\nshadow_rules = [\"trial\"]", "");
            prop_assert_eq!(global.decide_in(&a, &c).decision, v.decision);
        }
    }
}
