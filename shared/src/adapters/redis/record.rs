//! The record codec: a user record as the fields of its `status:{id}` hash,
//! and the replies of a bulk read as [`Cached`] users or, for the read path,
//! as read models ([`ReadModel`]).

use std::collections::HashMap;

use redis::Value;

use crate::adapters::codec::{
    audience_from_text, audience_to_text, manual_from_json, manual_to_json, sessions_from_json, sessions_to_json,
    summary_from_bytes, summary_to_text,
};
use crate::domain::ids::is_storable_instant;
use crate::domain::record::MAX_VERSION;
use crate::domain::{Millis, Presence, ReadModel, Rules, Status, UserRecord, UserState, Visibility};
use crate::ports::Cached;

/// The hash field holding the record's read model
/// ([`crate::adapters::codec::summary_to_text`]), all the hot read fetches
/// of the hash besides `v` (DESIGN §10).
pub const SUMMARY_FIELD: &str = "sum";

/// The hash field holding the user's audience rule (DESIGN §13,
/// [`crate::adapters::codec::audience_to_text`]); absent for a user who
/// never set one. A damaged one makes the hash unreadable, so the user is
/// read from SQL, whose damaged rule fails closed.
pub const AUDIENCE_FIELD: &str = "audience";

/// The hash fields of a record, with `status` and `device_count` derived at
/// `now` (the wall-clock time of the write), and its read model as written
/// at `now` in [`SUMMARY_FIELD`].
pub fn encode(record: &UserRecord, now: Millis, rules: &Rules) -> Vec<(&'static str, String)> {
    let view = record.state.derive(now, rules);
    let mut fields = vec![
        ("v", record.version.to_string()),
        ("status", view.status.as_str().to_owned()),
        ("device_count", view.device_count.to_string()),
        ("sessions", sessions_to_json(&record.state.presence.sessions)),
        ("updated_ms", now.to_string()),
        (SUMMARY_FIELD, summary_to_text(&ReadModel::of(&record.state, now))),
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
    if let Some(audience) = audience_to_text(&record.state.audience) {
        fields.push((AUDIENCE_FIELD, audience));
    }
    fields
}

/// Reads a record back from its hash fields.
pub fn decode(fields: &HashMap<String, String>) -> Result<UserRecord, String> {
    // Every integer field but `v` is an instant; one outside what the
    // stores hold (DESIGN §7) is damage, read from SQL instead.
    let int = |name: &str| -> Result<Option<i64>, String> {
        let read = |v: &String| match v.parse::<i64>() {
            Ok(ms) if is_storable_instant(ms) => Ok(ms),
            Ok(ms) => Err(format!("{name}={ms} is outside the instants the service stores")),
            Err(_) => Err(format!("{name}={v:?} is not an integer")),
        };
        fields.get(name).map(read).transpose()
    };
    let version = fields
        .get("v")
        .ok_or("field v is missing")?
        .parse::<u64>()
        .ok()
        .filter(|v| *v <= MAX_VERSION)
        .ok_or_else(|| format!("field v is not an integer up to {MAX_VERSION}"))?;
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
            audience: audience_from_text(fields.get(AUDIENCE_FIELD).map(String::as_str))?,
        },
        announced,
        written_ms: int("updated_ms")?.unwrap_or(0),
        announced_manual: manual_from_json(fields.get("manual_announced").map(String::as_str))?,
        erased_ms: int("erased_ms")?,
    })
}

pub(super) fn decode_reply(hash: Value, flag: Value) -> Cached {
    Cached { record: decode_hash(hash), visible_flag: decode_flag(flag) }
}

/// An `HGETALL status:{id}` reply as a record; `None` for an absent hash.
/// One damaged hash (the wrong type, bytes that are not text, a field this
/// release cannot read) must not fail the whole bulk read: it reads as a
/// miss too, so SQL answers for that user and the next write replaces it.
pub(super) fn decode_hash(hash: Value) -> Option<UserRecord> {
    let fields: HashMap<String, String> = match redis::from_redis_value(hash) {
        Ok(fields) => fields,
        Err(error) => {
            tracing::warn!(%error, "status key unreadable as a hash of text, reading from SQL");
            return None;
        }
    };
    if fields.is_empty() {
        return None;
    }
    decode(&fields).map_err(|reason| tracing::warn!(%reason, "unreadable status hash, reading from SQL")).ok()
}

/// A `GET status:visible:{id}` reply as the contract's flag.
pub(super) fn decode_flag(flag: Value) -> Option<bool> {
    match flag {
        Value::Nil => None,
        Value::BulkString(raw) => Some(raw == b"true"),
        // Anything but a clear "true" hides: a damaged flag must not leak.
        Value::SimpleString(raw) => Some(raw == "true"),
        // A key of another type (the server's refusal) is damaged, and
        // hides too.
        other => {
            tracing::warn!(reply = ?other, "visibility flag unreadable, the user reads hidden");
            Some(false)
        }
    }
}

/// What an `HMGET status:{id} v sum` reply holds.
pub(super) enum SummaryReply {
    /// No hash: the user is not in the cache.
    Miss,
    /// The read model and the hash's version `v` (0 if unreadable).
    ReadModel(ReadModel, u64),
    /// A hash without a read model this release can read (written before
    /// read models existed, or damaged): read the whole record instead.
    Whole,
}

/// A hash's `v` field as a version; 0 when absent or unreadable (a
/// version is only compared, so 0 makes the copy the oldest there is).
fn version_of(value: &Value) -> u64 {
    redis::from_redis_value_ref::<Option<u64>>(value).ok().flatten().unwrap_or(0)
}

/// Reads an `HMGET status:{id} v sum` reply. A key the server refused to
/// read as a hash (the wrong type) reads as a miss: SQL answers.
pub(super) fn decode_summary_reply(reply: Value) -> SummaryReply {
    let Value::Array(values) = reply else {
        tracing::warn!(?reply, "status read model unreadable, reading from SQL");
        return SummaryReply::Miss;
    };
    let mut values = values.into_iter();
    let (version, summary) = (values.next().unwrap_or(Value::Nil), values.next().unwrap_or(Value::Nil));
    match (version, summary) {
        (version, Value::BulkString(raw)) => match summary_from_bytes(&raw) {
            Ok(summary) => SummaryReply::ReadModel(summary, version_of(&version)),
            Err(reason) => {
                tracing::warn!(%reason, "unreadable read model, reading the whole status hash");
                SummaryReply::Whole
            }
        },
        (Value::Nil, _) => SummaryReply::Miss,
        _ => SummaryReply::Whole,
    }
}
