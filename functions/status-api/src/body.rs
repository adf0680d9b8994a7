//! The request bodies of the HTTP API, validated into domain values
//! (DESIGN §7, §7.1): the bulk read's ids, the visibility preference and
//! the manual status. Pure: no I/O.

use std::collections::HashSet;

use serde_json::Value;
use status_shared::domain::{ManualState, ManualStatus, Millis, UserId};

use crate::error::ApiError;
use crate::response::{MAX_BODY_BYTES, MAX_BULK_IDS};

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge { limit_bytes: MAX_BODY_BYTES });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Validates a bulk body (`{"user_ids": [..]}`, at most [`MAX_BODY_BYTES`]
/// bytes and [`MAX_BULK_IDS`] ids) into distinct ids in first-seen order
/// (DESIGN §7). Pure: no I/O. Errors: `payload_too_large`, `invalid_json`,
/// `invalid_request`, `empty_request`, `too_many_ids`, `invalid_user_id`.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<UserId>, ApiError> {
    let value = parse_json(body)?;
    let Some(ids) = value.as_object().and_then(|o| o.get("user_ids")) else {
        return Err(ApiError::InvalidRequest("body must be an object with a user_ids array"));
    };
    let Some(ids) = ids.as_array() else {
        return Err(ApiError::InvalidRequest("user_ids must be an array"));
    };
    if ids.is_empty() {
        return Err(ApiError::EmptyRequest);
    }
    if ids.len() > MAX_BULK_IDS {
        return Err(ApiError::TooManyIds(ids.len()));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for (index, raw) in ids.iter().enumerate() {
        let user = raw
            .as_u64()
            .and_then(|id| UserId::new(id).ok())
            .ok_or_else(|| ApiError::InvalidUserId(format!("user_ids[{index}] = {raw}")))?;
        if seen.insert(user) {
            out.push(user);
        }
    }
    Ok(out)
}

/// Validates a visibility body, `{"visible": true|false}` (DESIGN §7.1).
/// Pure: no I/O. Errors: `payload_too_large`, `invalid_json`,
/// `invalid_request`.
pub fn parse_visibility(body: &[u8]) -> Result<bool, ApiError> {
    let value = parse_json(body)?;
    value
        .as_object()
        .and_then(|o| o.get("visible"))
        .and_then(Value::as_bool)
        .ok_or(ApiError::InvalidRequest("body must be {\"visible\": true|false}"))
}

/// Validates a manual status body at `now`: `{"state": "dnd"|"busy"|"away",
/// "message"?: string|null (≤ 100 characters), "expires_at_ms"?: integer|null
/// (later than `now`)}`. Errors: `invalid_request` for another shape,
/// `invalid_manual_status` for a value DESIGN §7.1 refuses. Pure: no I/O.
pub fn parse_manual(body: &[u8], now: Millis) -> Result<ManualStatus, ApiError> {
    let value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::InvalidRequest("body must be an object with a state"));
    };
    let invalid = |why: String| ApiError::InvalidManualStatus(why);
    let state = match object.get("state") {
        Some(Value::String(raw)) => {
            raw.parse::<ManualState>().map_err(|_| invalid(format!("state {raw:?} is not dnd, busy or away")))?
        }
        _ => return Err(ApiError::InvalidRequest("state must be a string: dnd, busy or away")),
    };
    let message = match object.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(ApiError::InvalidRequest("message must be a string or null")),
    };
    let expires_at_ms = match object.get("expires_at_ms") {
        None | Some(Value::Null) => None,
        Some(raw) => {
            Some(raw.as_i64().ok_or_else(|| invalid(format!("expires_at_ms {raw} is not an integer (epoch ms)")))?)
        }
    };
    ManualStatus::new(state, message, expires_at_ms, now).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_status_bodies_are_validated() {
        const NOW: Millis = 1_764_270_000_000;
        let code = |body: &str| parse_manual(body.as_bytes(), NOW).map(drop).map_err(|e| (e.status(), e.code()));
        assert_eq!(code(r#"{"state": "dnd"}"#), Ok(()));
        let max = format!(r#"{{"state": "busy", "message": "{}", "expires_at_ms": {}}}"#, "ü".repeat(100), NOW + 1);
        assert_eq!(code(&max), Ok(()));
        let over = format!(r#"{{"state": "busy", "message": "{}"}}"#, "ü".repeat(101));
        assert_eq!(code(&over), Err((400, "invalid_manual_status")));
        assert_eq!(code(r#"{"state": "sleeping"}"#), Err((400, "invalid_manual_status")));
        assert_eq!(
            code(&format!(r#"{{"state": "away", "expires_at_ms": {NOW}}}"#)),
            Err((400, "invalid_manual_status"))
        );
        assert_eq!(code(r#"{"state": "away", "expires_at_ms": 1.5}"#), Err((400, "invalid_manual_status")));
        assert_eq!(code(r#"{"state": "away", "expires_at_ms": "soon"}"#), Err((400, "invalid_manual_status")));
        assert_eq!(code(r#"{"state": 3}"#), Err((400, "invalid_request")));
        assert_eq!(code(r#"{"state": "dnd", "message": 7}"#), Err((400, "invalid_request")));
        assert_eq!(code("[]"), Err((400, "invalid_request")));
        assert_eq!(code("{"), Err((400, "invalid_json")));
        let big = format!(r#"{{"state": "dnd", "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(code(&big), Err((413, "payload_too_large")));
    }

    fn code(r: Result<Vec<UserId>, ApiError>) -> (u16, String) {
        let r = r.unwrap_err();
        (r.status(), r.code().to_owned())
    }

    #[test]
    fn bulk_bodies_are_validated_with_the_contract_codes() {
        assert_eq!(code(parse_bulk(b"{nope")), (400, "invalid_json".into()));
        assert_eq!(code(parse_bulk(b"[1,2]")), (400, "invalid_request".into()));
        assert_eq!(code(parse_bulk(br#"{"user_ids": "1"}"#)), (400, "invalid_request".into()));
        assert_eq!(code(parse_bulk(br#"{"user_ids": []}"#)), (400, "empty_request".into()));
        assert_eq!(code(parse_bulk(br#"{"user_ids": [1, 0]}"#)), (400, "invalid_user_id".into()));
        assert_eq!(code(parse_bulk(br#"{"user_ids": ["1"]}"#)), (400, "invalid_user_id".into()));
        let many = format!(r#"{{"user_ids": [{}]}}"#, vec!["1"; 1001].join(","));
        assert_eq!(code(parse_bulk(many.as_bytes())), (400, "too_many_ids".into()));
        let big = format!(r#"{{"user_ids": [1], "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(code(parse_bulk(big.as_bytes())), (413, "payload_too_large".into()));
    }

    #[test]
    fn bulk_ids_keep_first_occurrence_order() {
        let ids = parse_bulk(br#"{"user_ids": [3, 1, 3, 2, 1]}"#).unwrap();
        assert_eq!(ids.iter().map(|u| u.get()).collect::<Vec<_>>(), vec![3, 1, 2]);
        // The limit counts before duplicates collapse.
        let many = format!(r#"{{"user_ids": [{}]}}"#, vec!["7"; 1000].join(","));
        assert_eq!(parse_bulk(many.as_bytes()).unwrap().len(), 1);
    }
}
