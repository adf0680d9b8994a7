//! The record codec: a user record as the fields of its `status:{id}` hash,
//! and the replies of a bulk read as [`Cached`] users.

use std::collections::HashMap;

use redis::Value;

use crate::adapters::codec::{manual_from_json, manual_to_json, sessions_from_json, sessions_to_json};
use crate::domain::{Millis, Presence, Rules, Status, UserRecord, UserState, Visibility};
use crate::ports::{CacheError, Cached};

/// The hash fields of a record, with `status` and `device_count` derived at
/// `now` (the wall-clock time of the write).
pub fn encode(record: &UserRecord, now: Millis, rules: &Rules) -> Vec<(&'static str, String)> {
    let view = record.state.derive(now, rules);
    let mut fields = vec![
        ("v", record.version.to_string()),
        ("status", view.status.as_str().to_owned()),
        ("device_count", view.device_count.to_string()),
        ("sessions", sessions_to_json(&record.state.presence.sessions)),
        ("updated_ms", now.to_string()),
    ];
    if let Some(active) = view.last_active_ms {
        fields.push(("last_active_ms", active.to_string()));
    }
    if let Visibility::Hidden { since_ms, last_active_ms } = record.state.visibility {
        fields.push(("hidden_at_ms", since_ms.to_string()));
        if let Some(active) = last_active_ms {
            fields.push(("hidden_last_active_ms", active.to_string()));
        }
    }
    if let Some(announced) = record.announced {
        fields.push(("announced", announced.as_str().to_owned()));
    }
    if let Some(manual) = manual_to_json(record.state.manual.as_ref()) {
        fields.push(("manual", manual));
    }
    if let Some(manual) = manual_to_json(record.announced_manual.as_ref()) {
        fields.push(("manual_announced", manual));
    }
    if let Some(erased) = record.erased_ms {
        fields.push(("erased_ms", erased.to_string()));
    }
    fields
}

/// Reads a record back from its hash fields.
pub fn decode(fields: &HashMap<String, String>) -> Result<UserRecord, String> {
    let int = |name: &str| -> Result<Option<i64>, String> {
        fields.get(name).map(|v| v.parse::<i64>().map_err(|_| format!("{name}={v:?} is not an integer"))).transpose()
    };
    let version = fields
        .get("v")
        .ok_or("field v is missing")?
        .parse::<u64>()
        .map_err(|_| "field v is not an integer".to_owned())?;
    let sessions = sessions_from_json(fields.get("sessions").map_or("", String::as_str))?;
    let visibility = match int("hidden_at_ms")? {
        None => Visibility::Visible,
        Some(since_ms) => Visibility::Hidden { since_ms, last_active_ms: int("hidden_last_active_ms")? },
    };
    let announced = match fields.get("announced") {
        None => None,
        Some(s) => Some(s.parse::<Status>().map_err(|_| format!("announced={s:?} is not a status"))?),
    };
    Ok(UserRecord {
        version,
        state: UserState {
            presence: Presence { sessions, last_active_ms: int("last_active_ms")? },
            visibility,
            manual: manual_from_json(fields.get("manual").map(String::as_str))?,
        },
        announced,
        written_ms: int("updated_ms")?.unwrap_or(0),
        announced_manual: manual_from_json(fields.get("manual_announced").map(String::as_str))?,
        erased_ms: int("erased_ms")?,
    })
}

pub(super) fn decode_reply(hash: Value, flag: Value) -> Result<Cached, CacheError> {
    let fields: HashMap<String, String> =
        redis::from_redis_value(hash).map_err(|e| CacheError::Corrupt(format!("status hash: {e}")))?;
    let flag: Option<String> =
        redis::from_redis_value(flag).map_err(|e| CacheError::Corrupt(format!("visible flag: {e}")))?;
    let visible_flag = match flag.as_deref() {
        None => None,
        Some("true") => Some(true),
        // Anything but a clear "true" hides: a damaged flag must not leak.
        Some(_) => Some(false),
    };
    let record = if fields.is_empty() {
        None
    } else {
        // One damaged hash must not fail the whole bulk read: it reads as a
        // miss, so SQL answers for that user and the backfill rewrites it.
        decode(&fields).map_err(|reason| tracing::warn!(%reason, "unreadable status hash, reading from SQL")).ok()
    };
    Ok(Cached { record, visible_flag })
}
