//! The presence event of the `presence.updates` topic, parsed from its JSON
//! value into typed fields with one distinct error per broken rule.

use serde::Deserialize;
use serde_json::Value;

use super::ids::{Millis, SessionId, UserId};

/// What happened to one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A connection opened; counts as activity.
    Connected,
    /// The connection is alive; says nothing about the user being active.
    Heartbeat,
    /// The user interacted.
    Activity,
    /// The connection closed.
    Disconnected,
}

impl EventKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "session_connected" => Self::Connected,
            "session_heartbeat" => Self::Heartbeat,
            "activity" => Self::Activity,
            "session_disconnected" => Self::Disconnected,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "session_connected",
            Self::Heartbeat => "session_heartbeat",
            Self::Activity => "activity",
            Self::Disconnected => "session_disconnected",
        }
    }

    /// Whether the event moves the user's `last_active_ms`.
    pub fn is_activity(self) -> bool {
        matches!(self, Self::Connected | Self::Activity)
    }
}

/// A valid presence event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEvent {
    pub kind: EventKind,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub device: Option<String>,
    pub ts_ms: Millis,
}

/// Why a record is malformed. `code()` is the stable short form that goes to
/// the dead-letter table and the logs; `Display` is the sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("record has no value")]
    MissingValue,
    #[error("value is not valid base64")]
    InvalidBase64,
    #[error("value is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("value is not a JSON object")]
    NotAnObject,
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `type` must be a string")]
    TypeNotString,
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("user_id must be an integer from 1 to 9223372036854775807")]
    UserIdOutOfRange,
    #[error("session_id must be a string")]
    SessionIdNotString,
    #[error("session_id must be 1 to 128 bytes, got {0}")]
    SessionIdLength(usize),
    #[error("device must be a string")]
    DeviceNotString,
    #[error("device must be at most 32 bytes, got {0}")]
    DeviceTooLong(usize),
    #[error("ts_ms must be a non-negative integer of epoch milliseconds")]
    TsNotInteger,
    #[error("ts_ms is {ahead_ms} ms ahead of the service clock (more than the {limit_ms} ms allowed)")]
    TsInFuture { ahead_ms: i64, limit_ms: i64 },
    #[error("record has no key (producers key a record by its user_id in decimal)")]
    MissingKey,
    #[error("record key is not the value's user_id in decimal")]
    KeyNotUserId,
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingValue => "missing_value",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject => "not_an_object",
            Self::Missing(_) => "missing_field",
            Self::TypeNotString | Self::UnknownType(_) => "invalid_type",
            Self::UserIdOutOfRange => "invalid_user_id",
            Self::SessionIdNotString | Self::SessionIdLength(_) => "invalid_session_id",
            Self::DeviceNotString | Self::DeviceTooLong(_) => "invalid_device",
            Self::TsNotInteger => "invalid_ts_ms",
            Self::TsInFuture { .. } => "ts_ms_in_future",
            Self::MissingKey => "missing_key",
            Self::KeyNotUserId => "key_not_user_id",
        }
    }
}

/// The wire shape before validation. Each field is kept as a raw JSON value
/// so a wrong type gets its own error instead of a generic serde message;
/// unknown fields are ignored, as the contract asks.
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: Option<Value>,
    user_id: Option<Value>,
    session_id: Option<Value>,
    device: Option<Value>,
    ts_ms: Option<Value>,
}

impl PresenceEvent {
    /// The longest `device` the contract allows, in bytes.
    pub const MAX_DEVICE_BYTES: usize = 32;

    /// Parses one record value. Checks run in field order so a record with
    /// several faults always reports the same one.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| EventError::InvalidJson(e.to_string()))?;
        if !value.is_object() {
            return Err(EventError::NotAnObject);
        }
        let raw: Raw = serde_json::from_value(value).map_err(|e| EventError::InvalidJson(e.to_string()))?;

        let kind = match raw.kind {
            None | Some(Value::Null) => return Err(EventError::Missing("type")),
            Some(Value::String(s)) => EventKind::parse(&s).ok_or(EventError::UnknownType(s))?,
            Some(_) => return Err(EventError::TypeNotString),
        };
        let user_id = match raw.user_id {
            None | Some(Value::Null) => return Err(EventError::Missing("user_id")),
            Some(Value::Number(n)) => {
                n.as_u64().and_then(|raw| UserId::new(raw).ok()).ok_or(EventError::UserIdOutOfRange)?
            }
            Some(_) => return Err(EventError::UserIdOutOfRange),
        };
        let session_id = match raw.session_id {
            None | Some(Value::Null) => return Err(EventError::Missing("session_id")),
            Some(Value::String(s)) => {
                let len = s.len();
                SessionId::new(s).map_err(|_| EventError::SessionIdLength(len))?
            }
            Some(_) => return Err(EventError::SessionIdNotString),
        };
        let device = match raw.device {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() > Self::MAX_DEVICE_BYTES => {
                return Err(EventError::DeviceTooLong(s.len()))
            }
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(EventError::DeviceNotString),
        };
        let ts_ms = match raw.ts_ms {
            None | Some(Value::Null) => return Err(EventError::Missing("ts_ms")),
            Some(Value::Number(n)) => n.as_i64().filter(|ts| *ts >= 0).ok_or(EventError::TsNotInteger)?,
            Some(_) => return Err(EventError::TsNotInteger),
        };
        Ok(Self { kind, user_id, session_id, device, ts_ms })
    }

    /// Refuses a record whose key (its raw bytes, `None` for a record
    /// without one) is not this event's `user_id` written in decimal,
    /// exactly as producers write it (DESIGN §3): the partitioner hashes
    /// the key's bytes, so a record keyed otherwise (`"042"`, another user,
    /// none) may sit on another partition than the user's other records
    /// and lose their order.
    pub fn check_key(&self, key: Option<&[u8]>) -> Result<(), EventError> {
        match key {
            None => Err(EventError::MissingKey),
            Some(key) if key == self.user_id.get().to_string().as_bytes() => Ok(()),
            Some(_) => Err(EventError::KeyNotUserId),
        }
    }

    /// Refuses an event stamped further ahead of `now` than `limit_ms`: a
    /// producer with a runaway clock would otherwise pin its user online
    /// until that future time.
    pub fn check_not_ahead(&self, now: Millis, limit_ms: i64) -> Result<(), EventError> {
        let ahead_ms = self.ts_ms.saturating_sub(now);
        if ahead_ms > limit_ms {
            return Err(EventError::TsInFuture { ahead_ms, limit_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PresenceEvent, EventError> {
        PresenceEvent::parse(s.as_bytes())
    }

    #[test]
    fn parses_the_contract_example_and_ignores_unknown_fields() {
        let e = parse(r#"{"type":"session_connected","user_id":42,"session_id":"a1b2","device":"ios","ts_ms":1764270000000,"extra":[1]}"#).unwrap();
        assert_eq!(e.kind, EventKind::Connected);
        assert_eq!(e.user_id.get(), 42);
        assert_eq!(e.session_id.as_str(), "a1b2");
        assert_eq!(e.device.as_deref(), Some("ios"));
        assert_eq!(e.ts_ms, 1_764_270_000_000);
    }

    #[test]
    fn every_broken_rule_has_its_own_error() {
        let cases: &[(&str, &str)] = &[
            ("not json", "invalid_json"),
            ("[1,2]", "not_an_object"),
            (r#"{"user_id":1,"session_id":"s","ts_ms":1}"#, "missing_field"),
            (r#"{"type":"login","user_id":1,"session_id":"s","ts_ms":1}"#, "invalid_type"),
            (r#"{"type":7,"user_id":1,"session_id":"s","ts_ms":1}"#, "invalid_type"),
            (r#"{"type":"activity","user_id":0,"session_id":"s","ts_ms":1}"#, "invalid_user_id"),
            (r#"{"type":"activity","user_id":-5,"session_id":"s","ts_ms":1}"#, "invalid_user_id"),
            (r#"{"type":"activity","user_id":9223372036854775808,"session_id":"s","ts_ms":1}"#, "invalid_user_id"),
            (r#"{"type":"activity","user_id":"42","session_id":"s","ts_ms":1}"#, "invalid_user_id"),
            (r#"{"type":"activity","user_id":1.5,"session_id":"s","ts_ms":1}"#, "invalid_user_id"),
            (r#"{"type":"activity","user_id":1,"session_id":"","ts_ms":1}"#, "invalid_session_id"),
            (r#"{"type":"activity","user_id":1,"session_id":12,"ts_ms":1}"#, "invalid_session_id"),
            (r#"{"type":"activity","user_id":1,"session_id":"s","device":5,"ts_ms":1}"#, "invalid_device"),
            (r#"{"type":"activity","user_id":1,"session_id":"s","ts_ms":"1"}"#, "invalid_ts_ms"),
            (r#"{"type":"activity","user_id":1,"session_id":"s","ts_ms":1.5}"#, "invalid_ts_ms"),
            (r#"{"type":"activity","user_id":1,"session_id":"s","ts_ms":-1}"#, "invalid_ts_ms"),
            (r#"{"type":"activity","user_id":1,"session_id":"s"}"#, "missing_field"),
        ];
        for (input, code) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.code(), *code, "{input}: {err}");
        }
    }

    #[test]
    fn length_limits_count_bytes() {
        let long_session = format!(r#"{{"type":"activity","user_id":1,"session_id":"{}","ts_ms":1}}"#, "s".repeat(129));
        assert_eq!(parse(&long_session), Err(EventError::SessionIdLength(129)));
        let ok_session = format!(r#"{{"type":"activity","user_id":1,"session_id":"{}","ts_ms":1}}"#, "s".repeat(128));
        assert!(parse(&ok_session).is_ok());
        let long_device =
            format!(r#"{{"type":"activity","user_id":1,"session_id":"s","device":"{}","ts_ms":1}}"#, "é".repeat(17));
        assert_eq!(parse(&long_device), Err(EventError::DeviceTooLong(34)));
    }

    #[test]
    fn null_device_means_no_device() {
        let e = parse(r#"{"type":"activity","user_id":1,"session_id":"s","device":null,"ts_ms":1}"#).unwrap();
        assert_eq!(e.device, None);
    }

    #[test]
    fn the_key_must_be_the_user_id_in_decimal() {
        let e = parse(r#"{"type":"activity","user_id":42,"session_id":"s","ts_ms":1}"#).unwrap();
        assert_eq!(e.check_key(Some(b"42")), Ok(()));
        assert_eq!(e.check_key(None).unwrap_err().code(), "missing_key");
        for key in [&b"43"[..], b"042", b" 42", b"42 ", b"", b"+42", b"\xff"] {
            assert_eq!(e.check_key(Some(key)).unwrap_err().code(), "key_not_user_id", "{key:?}");
        }
    }

    #[test]
    fn a_runaway_producer_clock_is_refused() {
        let e = parse(r#"{"type":"activity","user_id":1,"session_id":"s","ts_ms":10000}"#).unwrap();
        assert!(e.check_not_ahead(10_000 - 500, 500).is_ok());
        assert_eq!(e.check_not_ahead(10_000 - 501, 500).unwrap_err().code(), "ts_ms_in_future");
    }
}
