//! The one encoding of a user record's parts shared by the Redis and SQL
//! adapters, so both stores hold byte-for-byte the same session registers
//! and manual status.

use std::collections::BTreeMap;

use crate::domain::{ManualStatus, Session, SessionId};

/// Sessions as compact JSON: `{"a1b2":{"c":1764270000000,"a":1764270000000,"p":"m"}}`
/// (`a` and `p` only when known; records written before they existed hold
/// `{"c": ts}` / `{"d": ts}` and read as sessions without them).
pub fn sessions_to_json(sessions: &BTreeMap<SessionId, Session>) -> String {
    // Serializing a map of strings to a two-variant enum cannot fail.
    serde_json::to_string(sessions).unwrap_or_else(|_| "{}".to_owned())
}

pub fn sessions_from_json(raw: &str) -> Result<BTreeMap<SessionId, Session>, String> {
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(raw).map_err(|e| format!("sessions: {e}"))
}

/// A manual status as JSON, `{"state":"dnd","message":null,"expires_at_ms":null}`,
/// or `None` for none (a NULL column, an absent hash field).
pub fn manual_to_json(manual: Option<&ManualStatus>) -> Option<String> {
    // A struct of an enum, a string and a number always serializes.
    manual.and_then(|m| serde_json::to_string(m).ok())
}

pub fn manual_from_json(raw: Option<&str>) -> Result<Option<ManualStatus>, String> {
    raw.filter(|r| !r.is_empty())
        .map(|r| serde_json::from_str(r).map_err(|e| format!("manual status: {e}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ManualState, Platform, Register};

    #[test]
    fn sessions_round_trip_compactly() {
        let mut sessions = BTreeMap::new();
        sessions.insert(SessionId::new("a\"b").unwrap(), Session::from(Register::Connected(5)));
        sessions.insert(SessionId::new("z").unwrap(), Session::from(Register::Disconnected(7)));
        sessions.insert(
            SessionId::new("m").unwrap(),
            Session { register: Register::Connected(9), active_ms: Some(8), platform: Some(Platform::Mobile) },
        );
        let json = sessions_to_json(&sessions);
        assert_eq!(json, r#"{"a\"b":{"c":5},"m":{"c":9,"a":8,"p":"m"},"z":{"d":7}}"#);
        assert_eq!(sessions_from_json(&json).unwrap(), sessions);
        assert!(sessions_from_json(r#"{"":{"c":1}}"#).is_err(), "an empty session id is refused");
        assert!(sessions_from_json(r#"{"x":{"c":1,"d":2}}"#).is_err(), "one register kind per session");
        assert!(sessions_from_json(r#"{"x":{"a":1}}"#).is_err(), "a session without a register is refused");
    }

    #[test]
    fn sessions_stored_before_platforms_still_read() {
        let old = sessions_from_json(r#"{"a":{"c":1764270000000},"b":{"d":1764270000005}}"#).unwrap();
        assert_eq!(old[&SessionId::new("a").unwrap()], Session::from(Register::Connected(1_764_270_000_000)));
        assert_eq!(old[&SessionId::new("b").unwrap()].register, Register::Disconnected(1_764_270_000_005));
        assert!(old.values().all(|s| s.active_ms.is_none() && s.platform.is_none()));
    }

    #[test]
    fn a_manual_status_round_trips() {
        let m = ManualStatus { state: ManualState::Busy, message: Some("é \"q\"".into()), expires_at_ms: Some(3) };
        let json = manual_to_json(Some(&m));
        assert_eq!(json.as_deref(), Some(r#"{"state":"busy","message":"é \"q\"","expires_at_ms":3}"#));
        assert_eq!(manual_from_json(json.as_deref()).unwrap(), Some(m));
        assert_eq!(manual_from_json(None).unwrap(), None);
        assert!(manual_from_json(Some(r#"{"state":"gone"}"#)).is_err());
    }
}
