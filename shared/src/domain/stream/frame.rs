//! The server frames of DESIGN §12 as JSON text, and the split of a long
//! answer into frames of at most [`MAX_FRAME_BYTES`].

use serde_json::json;

use super::limits::MAX_FRAME_BYTES;
use crate::domain::ids::UserId;

/// What is kept free in every data frame for everything but its entries:
/// the type, `seq`, `part`, `parts`, `reset` and the cursor (a cursor is
/// under 300 bytes, [`super::Cursor::MAX_TEXT_BYTES`]).
pub const FRAME_OVERHEAD_BYTES: usize = 1_024;

/// The data frames, the ones numbered by `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// Entries of newly subscribed ids (`part`/`parts`).
    Snapshot,
    /// Entries changed since a cursor (`part`/`parts`).
    Delta,
    /// Changes as they happen (no `part`/`parts`).
    Status,
}

impl DataKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Delta => "delta",
            Self::Status => "status",
        }
    }
}

/// The error codes of DESIGN §12, in §7's error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message is not JSON.
    InvalidJson,
    /// JSON of the wrong shape, or bad ids.
    InvalidRequest,
    /// The subscribe would take the connection past `STREAM_MAX_IDS`.
    TooManyIds,
    /// An `action` the stream does not know.
    UnknownAction,
    /// A message over 128 KB.
    PayloadTooLarge,
    /// The service could not finish the message (its stores did not
    /// answer in time, or a connection's lock stayed taken): the client
    /// sends it again, as after `503 unavailable` on the HTTP API (§7).
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidRequest => "invalid_request",
            Self::TooManyIds => "too_many_ids",
            Self::UnknownAction => "unknown_action",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Splits entries (each already JSON) into consecutive groups that fit a
/// frame each: the sum of their lengths plus commas stays within
/// [`MAX_FRAME_BYTES`] less [`FRAME_OVERHEAD_BYTES`]. An entry is at most
/// a few hundred bytes (a manual message holds 100 characters), so every
/// entry fits. No entries make no groups.
pub fn split(entries: &[String]) -> Vec<std::ops::Range<usize>> {
    let budget = MAX_FRAME_BYTES - FRAME_OVERHEAD_BYTES;
    let mut groups = Vec::new();
    let (mut start, mut size) = (0, 0usize);
    for (i, entry) in entries.iter().enumerate() {
        let cost = entry.len() + 1;
        if i > start && size + cost > budget {
            groups.push(start..i);
            start = i;
            size = 0;
        }
        size += cost;
    }
    if start < entries.len() {
        groups.push(start..entries.len());
    }
    groups
}

/// One data frame: `{"type", "seq", "statuses", "cursor", "part", "parts"}`
/// with `cursor` only when given (the last part) and `part`/`parts` only
/// when given (snapshot and delta), `"reset": true` when `reset`.
pub fn data(
    kind: DataKind,
    seq: u64,
    entries: &[String],
    cursor: Option<&str>,
    part: Option<(usize, usize)>,
    reset: bool,
) -> String {
    let mut out = String::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 256);
    out.push_str("{\"type\":\"");
    out.push_str(kind.as_str());
    out.push_str("\",\"seq\":");
    out.push_str(&seq.to_string());
    out.push_str(",\"statuses\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(entry);
    }
    out.push(']');
    if let Some(cursor) = cursor {
        out.push_str(",\"cursor\":");
        out.push_str(&json!(cursor).to_string());
    }
    if let Some((part, parts)) = part {
        out.push_str(&format!(",\"part\":{part},\"parts\":{parts}"));
    }
    if reset {
        out.push_str(",\"reset\":true");
    }
    out.push('}');
    out
}

/// `{"type": "pong"}`.
pub fn pong() -> String {
    json!({"type": "pong"}).to_string()
}

/// `{"type": "unsubscribed", "user_ids": [...]}`.
pub fn unsubscribed(user_ids: &[UserId]) -> String {
    json!({"type": "unsubscribed", "user_ids": user_ids}).to_string()
}

/// `{"type": "error", "error": {"code", "message"}}`.
pub fn error(code: ErrorCode, message: &str) -> String {
    json!({"type": "error", "error": {"code": code.as_str(), "message": message}}).to_string()
}
