//! The client messages of DESIGN §12, read with every bound checked: a
//! message is at most 128 KB of JSON naming 1 to 1,000 valid ids.

use serde_json::Value;

use super::frame::ErrorCode;
use super::limits::{MAX_IDS_PER_MESSAGE, MAX_MESSAGE_BYTES};
use crate::domain::ids::UserId;

/// A client message that passed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"action": "subscribe", "user_ids": [...], "since": "..."}`: the
    /// ids distinct, in the order of their first occurrence. `since` is
    /// kept as text: a cursor that does not decode answers a reset, not an
    /// error.
    Subscribe { user_ids: Vec<UserId>, since: Option<String> },
    /// `{"action": "unsubscribe", "user_ids": [...]}`, ids as above.
    Unsubscribe { user_ids: Vec<UserId> },
    /// `{"action": "ping"}`.
    Ping,
}

/// Why a message was refused: the `error` frame's code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Reads one message. Errors: `payload_too_large` over 128 KB,
/// `invalid_json` for text that is not JSON, `invalid_request` for JSON
/// that is not an object with a string `action` or whose `user_ids` is not
/// a non-empty array of valid ids (or `since` not a string),
/// `too_many_ids` for over 1,000 ids counted as listed, and
/// `unknown_action`. Fields the action does not use are ignored.
pub fn parse(body: &[u8]) -> Result<ClientMessage, Refusal> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::new(ErrorCode::PayloadTooLarge, "a message is at most 131072 bytes"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|_| Refusal::new(ErrorCode::InvalidJson, "the message is not JSON"))?;
    let Value::Object(fields) = value else {
        return Err(Refusal::new(ErrorCode::InvalidRequest, "the message must be a JSON object"));
    };
    let action = match fields.get("action") {
        Some(Value::String(action)) => action.as_str(),
        _ => return Err(Refusal::new(ErrorCode::InvalidRequest, "the message needs a string \"action\"")),
    };
    match action {
        "subscribe" => {
            let user_ids = user_ids(fields.get("user_ids"))?;
            let since = match fields.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => return Err(Refusal::new(ErrorCode::InvalidRequest, "\"since\" must be a string")),
            };
            Ok(ClientMessage::Subscribe { user_ids, since })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe { user_ids: user_ids(fields.get("user_ids"))? }),
        "ping" => Ok(ClientMessage::Ping),
        _ => Err(Refusal::new(ErrorCode::UnknownAction, "the action is none of subscribe, unsubscribe, ping")),
    }
}

/// `user_ids`: an array of 1 to 1,000 ids, each an integer from 1 to
/// 2^63 - 1, counted as listed; duplicates then collapse, keeping the
/// first occurrence's place.
fn user_ids(raw: Option<&Value>) -> Result<Vec<UserId>, Refusal> {
    let bad = |message: &str| Refusal::new(ErrorCode::InvalidRequest, message);
    let Some(Value::Array(items)) = raw else {
        return Err(bad("\"user_ids\" must be an array of user ids"));
    };
    if items.is_empty() {
        return Err(bad("\"user_ids\" must list between 1 and 1000 ids"));
    }
    if items.len() > MAX_IDS_PER_MESSAGE {
        // The bulk read's code for the same bound (DESIGN §7, §12).
        return Err(Refusal::new(
            ErrorCode::TooManyIds,
            format!("\"user_ids\" lists {} ids; at most {MAX_IDS_PER_MESSAGE}", items.len()),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let id = item
            .as_u64()
            .and_then(|raw| UserId::new(raw).ok())
            .ok_or_else(|| bad("each user id must be an integer from 1 to 9223372036854775807"))?;
        if seen.insert(id) {
            out.push(id);
        }
    }
    Ok(out)
}
