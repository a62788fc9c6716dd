//! Stream webhook events, typed and tolerant: timestamps as RFC 3339 strings or integer nanoseconds,
//! custom fields flattened into the object (v1) or nested under `custom` (v2), unknown keys kept.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The event types chatguard acts on; anything else is recorded and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    MessageNew,
    MessageUpdated,
    MessageDeleted,
    MessageFlagged,
    UserBanned,
    UserUnbanned,
    UserFlagged,
    /// A Before Message Send request, stored by chatguard for the worker's follow-ups.
    MessageBeforeSend,
}

impl EventKind {
    pub fn parse(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "message.new" => Self::MessageNew,
            "message.updated" => Self::MessageUpdated,
            "message.deleted" => Self::MessageDeleted,
            "message.flagged" => Self::MessageFlagged,
            "user.banned" => Self::UserBanned,
            "user.unbanned" => Self::UserUnbanned,
            "user.flagged" => Self::UserFlagged,
            "message.before_send" => Self::MessageBeforeSend,
            _ => return None,
        })
    }

    /// Events whose message text is scored.
    pub fn is_scored(self) -> bool {
        matches!(
            self,
            Self::MessageNew
                | Self::MessageUpdated
                | Self::MessageFlagged
                | Self::MessageBeforeSend
        )
    }
}

/// A Stream user as it appears in events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct User {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub banned: Option<bool>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub custom: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl User {
    /// A custom field, whether Stream sent it flattened (v1) or under `custom` (v2).
    pub fn custom_field(&self, key: &str) -> Option<&Value> {
        self.custom
            .as_ref()
            .and_then(|c| c.get(key))
            .or_else(|| self.extra.get(key))
    }
}

/// A chat message as it appears in events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cid: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default, rename = "type")]
    pub message_type: Option<String>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub custom: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A webhook body: the fields chatguard reads, the rest kept in `extra`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub cid: Option<String>,
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub message: Option<Message>,
    /// The acting user: the author of a new message, who deleted or flagged, or the banned user.
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub target_user: Option<User>,
    #[serde(default)]
    pub created_by: Option<User>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub expiration: Option<DateTime<Utc>>,
    #[serde(default)]
    pub hard_delete: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a body is not an event.
#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    #[error("body is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("event has no \"type\" string")]
    MissingType,
    #[error("event does not match its type's shape: {0}")]
    Shape(serde_json::Error),
}

impl ChatEvent {
    /// What makes this event the same event whatever webhook id it arrives under: its type, the
    /// message id and the message's `updated_at` (else its `created_at`), or for an event
    /// without a message the event's `created_at` with its channel and user. None when the
    /// event carries no time (it is then deduplicated by webhook id only).
    pub fn content_identity(&self) -> Option<String> {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        match (&self.message, self.message_id()) {
            (Some(m), Some(id)) => {
                let when = m.updated_at.or(m.created_at).or(self.created_at)?;
                Some(format!("{}|{}|{}", self.event_type, id, at(when)))
            }
            _ => {
                let when = self.created_at?;
                Some(format!(
                    "{}|{}|{}|{}",
                    self.event_type,
                    self.cid().unwrap_or_default(),
                    self.subject_user_id().unwrap_or_default(),
                    at(when)
                ))
            }
        }
    }

    /// Parses a verified webhook body.
    pub fn parse(body: &[u8]) -> Result<Self, EventParseError> {
        let value: Value = serde_json::from_slice(body).map_err(EventParseError::Json)?;
        let Value::Object(map) = value else {
            return Err(EventParseError::NotObject);
        };
        match map.get("type") {
            Some(Value::String(t)) if !t.is_empty() => {}
            _ => return Err(EventParseError::MissingType),
        }
        serde_json::from_value(Value::Object(map)).map_err(EventParseError::Shape)
    }

    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.event_type)
    }

    /// `message_id`, or the embedded message's id.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                self.message
                    .as_ref()
                    .map(|m| m.id.as_str())
                    .filter(|s| !s.is_empty())
            })
    }

    /// The channel, from `cid`, `channel_type:channel_id` or the message.
    pub fn cid(&self) -> Option<String> {
        self.cid
            .clone()
            .or_else(|| match (&self.channel_type, &self.channel_id) {
                (Some(t), Some(i)) => Some(format!("{t}:{i}")),
                _ => None,
            })
            .or_else(|| self.message.as_ref().and_then(|m| m.cid.clone()))
    }

    /// The channel type (`messaging`, `livestream`, …).
    pub fn channel_type(&self) -> Option<String> {
        self.channel_type.clone().or_else(|| {
            self.cid()
                .and_then(|c| c.split_once(':').map(|(t, _)| t.to_owned()))
        })
    }

    /// The user the event is about: a message's author, or the banned or flagged user.
    pub fn subject_user_id(&self) -> Option<&str> {
        let id = match self.kind() {
            Some(EventKind::UserFlagged) => self.target_user.as_ref().map(|u| u.id.as_str()),
            Some(EventKind::UserBanned | EventKind::UserUnbanned) => {
                self.user.as_ref().map(|u| u.id.as_str())
            }
            _ => self
                .message
                .as_ref()
                .and_then(|m| m.user.as_ref())
                .or(self.user.as_ref())
                .map(|u| u.id.as_str()),
        };
        id.filter(|s| !s.is_empty())
    }

    /// The role of the message's author (`admin`, `moderator`, `user`, …).
    pub fn author_role(&self) -> Option<&str> {
        self.message
            .as_ref()
            .and_then(|m| m.user.as_ref())
            .or(self.user.as_ref())
            .and_then(|u| u.role.as_deref())
    }

    /// The text to score, if the event carries a message with text.
    pub fn text(&self) -> Option<&str> {
        self.message.as_ref().and_then(|m| m.text.as_deref())
    }

    /// True when chatguard's own bot user caused the event (wrote, deleted, banned or flagged),
    /// so it is never acted on again.
    pub fn is_caused_by(&self, bot_user_id: &str) -> bool {
        let is_bot = |u: &Option<User>| u.as_ref().is_some_and(|u| u.id == bot_user_id);
        match self.kind() {
            Some(EventKind::UserBanned | EventKind::UserUnbanned) => is_bot(&self.created_by),
            _ => is_bot(&self.user) || self.message.as_ref().is_some_and(|m| is_bot(&m.user)),
        }
    }
}

/// Accepts an RFC 3339 string, integer nanoseconds since the epoch, or null.
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(match value {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Some(Value::Number(n)) => n.as_i64().map(|ns| Utc.timestamp_nanos(ns)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_nanosecond_timestamps() {
        let a = ChatEvent::parse(
            br#"{"type":"message.new","created_at":"2019-04-24T10:51:28.142291+02:00"}"#,
        )
        .unwrap();
        assert_eq!(
            a.created_at.unwrap().to_rfc3339(),
            "2019-04-24T08:51:28.142291+00:00"
        );
        let b = ChatEvent::parse(br#"{"type":"message.new","created_at":1778198400000000000}"#)
            .unwrap();
        assert_eq!(b.created_at.unwrap().timestamp(), 1_778_198_400);
        let c = ChatEvent::parse(br#"{"type":"message.new","created_at":"garbage"}"#).unwrap();
        assert!(c.created_at.is_none());
    }

    #[test]
    fn custom_fields_flat_or_nested() {
        let flat =
            ChatEvent::parse(br#"{"type":"user.banned","created_by":{"id":"t","awesome":true}}"#)
                .unwrap();
        let nested = ChatEvent::parse(
            br#"{"type":"user.banned","created_by":{"id":"t","custom":{"awesome":true}}}"#,
        )
        .unwrap();
        for e in [flat, nested] {
            assert_eq!(
                e.created_by.unwrap().custom_field("awesome"),
                Some(&Value::Bool(true))
            );
        }
    }

    #[test]
    fn rejects_non_events() {
        assert!(matches!(
            ChatEvent::parse(b"{nope"),
            Err(EventParseError::Json(_))
        ));
        assert!(matches!(
            ChatEvent::parse(b"[1]"),
            Err(EventParseError::NotObject)
        ));
        assert!(matches!(
            ChatEvent::parse(br#"{"a":1}"#),
            Err(EventParseError::MissingType)
        ));
        assert!(matches!(
            ChatEvent::parse(br#"{"type":""}"#),
            Err(EventParseError::MissingType)
        ));
        assert!(matches!(
            ChatEvent::parse(br#"{"type":"message.new","message":5}"#),
            Err(EventParseError::Shape(_))
        ));
    }

    #[test]
    fn derives_ids_and_recognises_bot() {
        let e = ChatEvent::parse(
            br#"{"type":"message.new","channel_type":"team","channel_id":"mods",
                 "message":{"id":"m1","text":"hi","user":{"id":"chatguard-bot"}}}"#,
        )
        .unwrap();
        assert_eq!(e.message_id(), Some("m1"));
        assert_eq!(e.cid().as_deref(), Some("team:mods"));
        assert_eq!(e.channel_type().as_deref(), Some("team"));
        assert_eq!(e.subject_user_id(), Some("chatguard-bot"));
        assert!(e.is_caused_by("chatguard-bot"));
        assert!(!e.is_caused_by("someone-else"));
        let ban = ChatEvent::parse(
            br#"{"type":"user.banned","user":{"id":"u"},"created_by":{"id":"chatguard-bot"}}"#,
        )
        .unwrap();
        assert_eq!(ban.subject_user_id(), Some("u"));
        assert!(ban.is_caused_by("chatguard-bot"));
    }
}
