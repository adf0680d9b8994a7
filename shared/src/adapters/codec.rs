//! The one encoding of a user record's parts shared by the Redis and SQL
//! adapters, so both stores hold byte-for-byte the same session registers.

use std::collections::BTreeMap;

use crate::domain::{Register, SessionId};

/// Session registers as compact JSON: `{"a1b2":{"c":1764270000000}}`.
pub fn sessions_to_json(sessions: &BTreeMap<SessionId, Register>) -> String {
    // Serializing a map of strings to a two-variant enum cannot fail.
    serde_json::to_string(sessions).unwrap_or_else(|_| "{}".to_owned())
}

pub fn sessions_from_json(raw: &str) -> Result<BTreeMap<SessionId, Register>, String> {
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(raw).map_err(|e| format!("sessions: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_round_trip_compactly() {
        let mut sessions = BTreeMap::new();
        sessions.insert(SessionId::new("a\"b").unwrap(), Register::Connected(5));
        sessions.insert(SessionId::new("z").unwrap(), Register::Disconnected(7));
        let json = sessions_to_json(&sessions);
        assert_eq!(json, r#"{"a\"b":{"c":5},"z":{"d":7}}"#);
        assert_eq!(sessions_from_json(&json).unwrap(), sessions);
        assert!(sessions_from_json(r#"{"":{"c":1}}"#).is_err(), "an empty session id is refused");
    }
}
