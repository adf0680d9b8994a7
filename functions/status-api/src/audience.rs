//! `PUT` and `GET /v1/users/{user_id}/audience` (DESIGN §13): the body's
//! validation and the two answers. The rule itself lives in the domain
//! ([`Audience`]); the handler only routes here.

use serde_json::{json, Value};
use status_shared::domain::{Audience, AudienceDefault, AudienceError, LastSeenRule, Millis, UserId};
use status_shared::ports::{
    CacheAudience, CacheErase, CacheRead, CacheViews, CacheWrite, ChangeFeed, ChangePublisher, DeadLetters, Outbox,
    PollLimiter, RepairBuffer, StoreAudience, StoreErase, StoreRead, StoreWrite,
};

use crate::body::parse_json;
use crate::error::ApiError;
use crate::handler::StatusApi;
use crate::measures::note;
use crate::request::{ApiRequest, Caller};
use crate::response::ApiResponse;
use crate::route::parse_user_id;

/// Validates an audience body: `{"default": "everyone"|"nobody",
/// "except"?: [ids], "last_seen"?: "none"|"coarse"}`, at most
/// [`crate::response::MAX_BODY_BYTES`] bytes. `except` is counted as
/// listed, duplicates included, before they collapse. Pure: no I/O.
/// Errors: `payload_too_large`, `invalid_json`, `invalid_request` (another
/// shape, an unknown `default` or `last_seen`), `invalid_user_id`,
/// `too_many_ids` (over 1,000).
pub fn parse_audience(body: &[u8]) -> Result<Audience, ApiError> {
    let value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::InvalidRequest("body must be an object with a default"));
    };
    let default = match object.get("default") {
        Some(Value::String(raw)) => raw
            .parse::<AudienceDefault>()
            .map_err(|_| ApiError::InvalidRequest("default must be \"everyone\" or \"nobody\""))?,
        _ => return Err(ApiError::InvalidRequest("default must be \"everyone\" or \"nobody\"")),
    };
    let last_seen = match object.get("last_seen") {
        None | Some(Value::Null) => LastSeenRule::default(),
        Some(Value::String(raw)) => raw
            .parse::<LastSeenRule>()
            .map_err(|_| ApiError::InvalidRequest("last_seen must be \"none\" or \"coarse\""))?,
        Some(_) => return Err(ApiError::InvalidRequest("last_seen must be \"none\" or \"coarse\"")),
    };
    let listed: &[Value] = match object.get("except") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(ids)) => ids,
        Some(_) => return Err(ApiError::InvalidRequest("except must be an array of user ids")),
    };
    // Counted before anything else about the ids, as the bulk route does.
    if listed.len() > status_shared::domain::audience::MAX_EXCEPT {
        return Err(ApiError::TooManyExcept(listed.len()));
    }
    let ids = listed
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            raw.as_u64()
                .and_then(|id| UserId::new(id).ok())
                .ok_or_else(|| ApiError::InvalidUserId(format!("except[{index}] = {raw}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Audience::new(default, ids, last_seen).map_err(|error| match error {
        AudienceError::TooManyIds(n) => ApiError::TooManyExcept(n),
        AudienceError::UnknownDefault(_) => ApiError::InvalidRequest("default must be \"everyone\" or \"nobody\""),
        AudienceError::UnknownLastSeen(_) => ApiError::InvalidRequest("last_seen must be \"none\" or \"coarse\""),
    })
}

/// The answer of both routes: `{"user_id": 1, "audience": {...}}`.
fn audience_body(user: UserId, audience: &Audience) -> Value {
    json!({ "user_id": user, "audience": audience })
}

impl<C, S, W, R, P, F, L, D> StatusApi<C, S, W, R, P, F, L, D>
where
    C: CacheRead + CacheViews + CacheWrite + CacheErase + CacheAudience,
    S: StoreRead + StoreAudience,
    W: StoreWrite + StoreErase + Outbox + StoreAudience,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
    L: PollLimiter,
    D: DeadLetters,
{
    /// `PUT` (`put`) or `GET /v1/users/{raw}/audience` at `now`: for the
    /// user or a service only (DESIGN §13), checked before the body is
    /// read, so another end user learns nothing from a 400. A refused
    /// body changes nothing.
    pub(crate) async fn audience_route(
        &self,
        raw: &str,
        put: bool,
        request: &ApiRequest,
        now: Millis,
    ) -> Result<ApiResponse, ApiError> {
        let user = parse_user_id(raw)?;
        if let Caller::User(caller) = request.caller {
            if caller != user {
                let what = if put { "change their audience" } else { "read their audience" };
                return Err(ApiError::Forbidden(what));
            }
        }
        if !put {
            let audience = self.reader.audience_of(user).await.map_err(|_| ApiError::Unavailable)?;
            return Ok(ApiResponse::ok(audience_body(user, &audience)));
        }
        let audience = parse_audience(&request.body)?;
        note(|m| m.wrote = true);
        let outcome = self.committer.set_audience(user, &audience, now).await.map_err(|error| {
            tracing::error!(%error, %user, "audience not saved");
            ApiError::Unavailable
        })?;
        note(|m| m.commit(&outcome));
        Ok(ApiResponse::ok(audience_body(user, &audience)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::MAX_BODY_BYTES;

    fn code(body: &str) -> Result<Audience, (u16, &'static str)> {
        parse_audience(body.as_bytes()).map_err(|e| (e.status(), e.code()))
    }

    #[test]
    fn audience_bodies_are_validated_with_the_contract_codes() {
        let full = code(r#"{"default": "nobody", "except": [9, 3, 9], "last_seen": "coarse"}"#).unwrap();
        assert_eq!(
            serde_json::to_value(&full).unwrap(),
            json!({"default": "nobody", "except": [3, 9], "last_seen": "coarse"})
        );
        assert_eq!(code(r#"{"default": "everyone"}"#), Ok(Audience::EVERYONE));
        assert_eq!(code(r#"{"default": "everyone", "except": null, "last_seen": null}"#), Ok(Audience::EVERYONE));
        assert_eq!(code(r#"{"default": "all"}"#), Err((400, "invalid_request")));
        assert_eq!(code(r#"{"except": [1]}"#), Err((400, "invalid_request")));
        assert_eq!(code(r#"{"default": "nobody", "last_seen": "exact"}"#), Err((400, "invalid_request")));
        assert_eq!(code(r#"{"default": "nobody", "last_seen": 1}"#), Err((400, "invalid_request")));
        assert_eq!(code(r#"{"default": "nobody", "except": "1"}"#), Err((400, "invalid_request")));
        assert_eq!(code(r#"{"default": "nobody", "except": [1, 0]}"#), Err((400, "invalid_user_id")));
        assert_eq!(code(r#"{"default": "nobody", "except": ["1"]}"#), Err((400, "invalid_user_id")));
        assert_eq!(code(r#"{"default": "nobody", "except": [9223372036854775808]}"#), Err((400, "invalid_user_id")));
        assert_eq!(code("[]"), Err((400, "invalid_request")));
        assert_eq!(code("{"), Err((400, "invalid_json")));
        let same = format!(r#"{{"default": "nobody", "except": [{}]}}"#, vec!["7"; 1000].join(","));
        assert_eq!(code(&same).map(|a| a.except().len()), Ok(1), "duplicates collapse after counting");
        let over = format!(r#"{{"default": "nobody", "except": [{}]}}"#, vec!["7"; 1001].join(","));
        assert_eq!(code(&over), Err((400, "too_many_ids")), "counted as listed");
        let big = format!(r#"{{"default": "nobody", "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(code(&big), Err((413, "payload_too_large")));
    }
}
