//! Routing, validation and answers of the HTTP API (DESIGN §7). Every
//! refusal is an [`ApiError`] (one table of statuses and codes); nothing
//! internal ever reaches a body.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{json, Value};
use status_shared::app::{App, AppCache, AppDeadLetters, AppPollLimiter, AppRepairBuffer, AppStore, Feed, Publisher};
use status_shared::domain::{LastSeen, ManualState, ManualStatus, Millis, Platforms, UserId, View};
use status_shared::ports::{
    CacheAudience, CacheErase, CacheRead, CacheViews, CacheWrite, ChangeFeed, ChangePublisher, DeadLetters, Outbox,
    PollLimiter, RepairBuffer, StoreAudience, StoreErase, StoreRead, StoreWrite,
};
use status_shared::services::{Committer, Reader};

use tracing::Instrument;

use crate::error::ApiError;
use crate::measures::note;
use crate::request::{ApiRequest, Caller};

pub use crate::response::{ApiResponse, MAX_BODY_BYTES, MAX_BULK_IDS};

#[derive(Serialize)]
struct StatusBody<'a> {
    user_id: UserId,
    status: &'static str,
    last_active_ms: Option<Millis>,
    /// DESIGN §7.1: present only while shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    manual: Option<&'a ManualStatus>,
    /// DESIGN §7.1: present only while the status is not offline (and the
    /// reader may see it); platforms with no live session are absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    platforms: Option<PlatformsBody>,
    /// DESIGN §13: only for a viewer left out of a `coarse` audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<&'static str>,
}

/// `{"mobile": "online", "web": "idle"}`: only platforms with a live session.
struct PlatformsBody(Platforms);

impl Serialize for PlatformsBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.live().map(|(platform, status)| (platform.as_str(), status.as_str())))
    }
}

fn status_body(user: UserId, view: &View) -> StatusBody<'_> {
    StatusBody {
        user_id: user,
        status: view.status.as_str(),
        last_active_ms: view.last_active_ms,
        manual: view.manual.as_ref(),
        platforms: view.platforms.map(PlatformsBody),
        last_seen: view.last_seen.map(LastSeen::as_str),
    }
}

/// The routes the API knows, parsed from method and path by [`route`].
/// Each id is the raw path segment, checked later by [`parse_user_id`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/status/bulk`.
    Bulk,
    /// `GET /v1/status/{id}`.
    Single(String),
    /// `GET /v1/public/status/{id}`: the CDN-cached public read.
    Public(String),
    /// `PUT /v1/users/{id}/visibility`.
    Visibility(String),
    /// `PUT` sets, `DELETE` clears (DESIGN §7.1).
    ManualStatus { id: String, clear: bool },
    /// `DELETE /v1/users/{id}`: erasure, for service callers only.
    Erase(String),
    /// `PUT` sets, `GET` reads (DESIGN §13).
    Audience { id: String, put: bool },
}

/// Matches the path from its `/v1/` segment on, so a stage prefix
/// (`/prod/v1/...`) routes the same. The path is the raw one (`rawPath`):
/// segments are matched as sent and the `{user_id}` segment is then
/// percent-decoded, as API Gateway decodes the path parameter it matched
/// (DESIGN §9: `/v1/status/%34%32` is user 42). Pure: no I/O. Errors:
/// [`ApiError::NotFound`] for a path the API does not know,
/// [`ApiError::MethodNotAllowed`] (with the `Allow` list) for a known path
/// and another method (DESIGN §7).
pub fn route(method: &str, path: &str) -> Result<Route, ApiError> {
    let tail = path.find("/v1/").map_or(path, |at| &path[at..]);
    let segments: Vec<&str> = tail.trim_end_matches('/').split('/').skip(1).collect();
    let id = |raw: &str| percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned();
    let (route, allowed) = match segments.as_slice() {
        ["v1", "status", "bulk"] => (Route::Bulk, "POST"),
        ["v1", "status", raw] => (Route::Single(id(raw)), "GET"),
        ["v1", "public", "status", raw] => (Route::Public(id(raw)), "GET"),
        ["v1", "users", raw, "visibility"] => (Route::Visibility(id(raw)), "PUT"),
        ["v1", "users", raw] => (Route::Erase(id(raw)), "DELETE"),
        ["v1", "users", raw, "audience"] => (Route::Audience { id: id(raw), put: method == "PUT" }, "GET, PUT"),
        ["v1", "users", raw, "manual-status"] => {
            (Route::ManualStatus { id: id(raw), clear: method == "DELETE" }, "PUT, DELETE")
        }
        _ => return Err(ApiError::NotFound { method: method.to_owned(), path: path.to_owned() }),
    };
    let listed = allowed.split(", ").any(|m| m == method) || (allowed.starts_with("GET") && method == "HEAD");
    if !listed {
        return Err(ApiError::MethodNotAllowed { path: tail.to_owned(), allowed });
    }
    Ok(route)
}

/// A user id from a path segment: a decimal from 1 to 2^63 - 1 (DESIGN §3).
/// Errors: [`ApiError::InvalidUserId`].
pub fn parse_user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse::<UserId>().map_err(|_| ApiError::InvalidUserId(format!("{raw:?}")))
}

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

/// The API over its ports.
pub struct StatusApi<C, S, W, R, P, F, L, D> {
    pub reader: Reader<C, S>,
    pub committer: Committer<C, W, R, P, F>,
    pub limiter: L,
    /// Where an erasure finds the user's dead letters (DESIGN §7.1).
    pub dead_letters: D,
}

/// The API as the function runs it, over the adapters of an [`App`].
pub type AppApi =
    StatusApi<AppCache, AppStore, AppStore, AppRepairBuffer, Publisher, Feed, AppPollLimiter, AppDeadLetters>;

impl AppApi {
    /// The one way to build the function's handler, from its started
    /// adapters and configuration: used by `main.rs`, the local stack, the
    /// benchmark and the integration tests.
    pub fn from_app(app: &App) -> Self {
        StatusApi {
            reader: app.reader(),
            committer: app.committer(),
            limiter: app.limiter.clone(),
            dead_letters: app.dead_letters.clone(),
        }
    }
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
    /// Answers one API Gateway HTTP API (payload v2) event at `now`. Never
    /// fails: an event that is not a request is a 400 in the error shape.
    /// The function's entry point is `AppApi::invoke`, which adds the
    /// span and the metrics.
    pub(crate) async fn answer_event(&self, event: &Value, now: Millis) -> ApiResponse {
        match ApiRequest::from_event(event) {
            Ok(request) => self.handle(&request, now).await,
            Err(error) => error.into(),
        }
    }

    /// Answers one request at `now`. Never fails: every problem is an
    /// answer.
    pub async fn handle(&self, request: &ApiRequest, now: Millis) -> ApiResponse {
        self.route(request, now).await.unwrap_or_else(ApiResponse::from)
    }

    async fn route(&self, request: &ApiRequest, now: Millis) -> Result<ApiResponse, ApiError> {
        let matched = tracing::info_span!("route").in_scope(|| route(&request.method, &request.path))?;
        // The public route takes no identity (API Gateway runs no authorizer
        // for it, and the CDN caches one answer for everyone), so a caller's
        // token, good or bad, must not change what it answers.
        if request.caller == Caller::BadSubject && !matches!(matched, Route::Public(_)) {
            return Err(ApiError::Unauthorized);
        }
        match matched {
            Route::Bulk => {
                let users = parse_bulk(&request.body)?;
                note(|m| m.bulk_size = Some(users.len()));
                self.check_poll(request.caller).await?;
                let views = self.read(&users, request.caller, now).await?;
                let statuses: Vec<StatusBody> = users.iter().zip(&views).map(|(u, v)| status_body(*u, v)).collect();
                Ok(ApiResponse::ok(json!({ "statuses": statuses })))
            }
            Route::Single(raw) => {
                let user = parse_user_id(&raw)?;
                self.check_poll(request.caller).await?;
                let views = self.read(&[user], request.caller, now).await?;
                Ok(ApiResponse::ok(json!(status_body(user, &views[0]))))
            }
            Route::Public(raw) => {
                let user = parse_user_id(&raw)?;
                // A CDN caches this answer for everyone: always the public
                // view, whoever asks.
                let views = self.read(&[user], Caller::Service, now).await?;
                Ok(ApiResponse::ok(json!(status_body(user, &views[0])))
                    .with_header("cache-control", "public, max-age=30".to_owned()))
            }
            Route::Visibility(raw) => {
                let user = parse_user_id(&raw)?;
                if let Caller::User(caller) = request.caller {
                    if caller != user {
                        return Err(ApiError::Forbidden("visibility"));
                    }
                }
                let visible = parse_visibility(&request.body)?;
                note(|m| m.wrote = true);
                let outcome = self.committer.set_visibility(user, visible, now).await.map_err(|error| {
                    tracing::error!(%error, %user, "visibility not saved");
                    ApiError::Unavailable
                })?;
                note(|m| m.commit(&outcome));
                Ok(ApiResponse::ok(json!({ "user_id": user, "visible": visible })))
            }
            Route::ManualStatus { id, clear } => {
                let user = parse_user_id(&id)?;
                if let Caller::User(caller) = request.caller {
                    if caller != user {
                        return Err(ApiError::Forbidden("manual status"));
                    }
                }
                let manual = if clear { None } else { Some(parse_manual(&request.body, now)?) };
                note(|m| m.wrote = true);
                let outcome = self.committer.set_manual(user, manual.clone(), now).await.map_err(|error| {
                    tracing::error!(%error, %user, "manual status not saved");
                    ApiError::Unavailable
                })?;
                note(|m| m.commit(&outcome));
                Ok(ApiResponse::ok(json!({ "user_id": user, "manual": manual })))
            }
            Route::Erase(raw) => {
                let user = parse_user_id(&raw)?;
                if request.caller != Caller::Service {
                    return Err(ApiError::ServiceOnly("erase a user"));
                }
                note(|m| m.wrote = true);
                let erased = self.committer.erase(user, now, &self.dead_letters).await.map_err(|error| {
                    tracing::error!(%error, %user, "erasure not finished; a retry completes it");
                    ApiError::Unavailable
                })?;
                note(|m| {
                    m.published += erased.published;
                    m.publish_failed |= erased.publish_failed;
                    m.feed_failed |= erased.feed_failed;
                    m.fed += erased.fed;
                });
                Ok(ApiResponse::no_content())
            }
            Route::Audience { id, put } => self.audience_route(&id, put, request, now).await,
        }
    }

    async fn read(&self, users: &[UserId], caller: Caller, now: Millis) -> Result<Vec<View>, ApiError> {
        let viewer = match caller {
            Caller::User(user) => Some(user),
            _ => None,
        };
        let read = self.reader.read_counted(users, viewer, now);
        let read = read
            .instrument(tracing::info_span!("read", users = users.len()))
            .await
            .map_err(|_| ApiError::Unavailable)?;
        note(|m| {
            m.hits += read.hits;
            m.fallbacks += read.fallbacks;
        });
        let (views, adopt) = (read.views, read.adopt);
        if !adopt.is_empty() {
            // A hide set in Redis's flag by someone else: make it durable so
            // a cache loss cannot undo it. The answer is right either way.
            note(|m| m.wrote = true);
            match self.committer.adopt_hides(&adopt, now).await {
                Ok(outcome) => note(|m| m.commit(&outcome)),
                Err(error) => {
                    tracing::warn!(%error, users = adopt.len(), "hide from the visibility flag not adopted into SQL yet")
                }
            }
        }
        Ok(views)
    }

    async fn check_poll(&self, caller: Caller) -> Result<(), ApiError> {
        let Caller::User(user) = caller else { return Ok(()) };
        match self.limiter.acquire(user).await {
            Ok(None) => Ok(()),
            Ok(Some(retry_after_s)) => Err(ApiError::RateLimited { retry_after_s }),
            Err(error) => {
                // Without Redis the limit cannot be counted; reads still come
                // from SQL, so let the caller through rather than fail them.
                tracing::warn!(%error, "poll limit not checked: redis unavailable");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_or_without_a_stage_prefix() {
        assert!(matches!(route("POST", "/v1/status/bulk"), Ok(Route::Bulk)));
        assert!(matches!(route("GET", "/prod/v1/status/42"), Ok(Route::Single(id)) if id == "42"));
        assert!(matches!(route("GET", "/v1/public/status/42/"), Ok(Route::Public(_))));
        assert!(matches!(route("PUT", "/v1/users/42/visibility"), Ok(Route::Visibility(_))));
        assert_eq!(route("GET", "/v2/nothing").err().map(|r| r.status()), Some(404));
        assert_eq!(route("DELETE", "/v1/status/42").err().map(|r| r.status()), Some(405));
        assert!(matches!(route("PUT", "/v1/users/42/manual-status"), Ok(Route::ManualStatus { clear: false, .. })));
        assert!(matches!(route("DELETE", "/v1/users/42/manual-status"), Ok(Route::ManualStatus { clear: true, .. })));
        assert!(matches!(route("DELETE", "/v1/users/42"), Ok(Route::Erase(id)) if id == "42"));
        assert!(matches!(route("DELETE", "/prod/v1/users/42/"), Ok(Route::Erase(id)) if id == "42"));
        assert!(matches!(route("PUT", "/v1/users/42/audience"), Ok(Route::Audience { put: true, .. })));
        assert!(matches!(route("GET", "/v1/users/42/audience"), Ok(Route::Audience { put: false, .. })));
        assert!(matches!(route("HEAD", "/v1/users/42/audience"), Ok(Route::Audience { put: false, .. })));
        let wrong = route("POST", "/v1/users/42/audience").err().map(ApiResponse::from).unwrap();
        assert_eq!((wrong.status, wrong.header("allow")), (405, Some("GET, PUT")));
        assert!(matches!(route("GET", "/v1/status/%34%32"), Ok(Route::Single(id)) if id == "42"));
        assert!(matches!(route("GET", "/v1/public/status/%34%32"), Ok(Route::Public(id)) if id == "42"));
        assert!(
            matches!(route("PUT", "/v1/users/4%32/manual-status"), Ok(Route::ManualStatus { id, .. }) if id == "42")
        );
        assert!(matches!(route("GET", "/v1/status/%FF"), Ok(Route::Single(id)) if id == "\u{FFFD}"), "not UTF-8");
        let wrong = route("PUT", "/v1/users/42").err().map(ApiResponse::from).unwrap();
        assert_eq!((wrong.status, wrong.header("allow")), (405, Some("DELETE")));
        let wrong = route("GET", "/v1/users/42/manual-status").err().map(ApiResponse::from).unwrap();
        assert_eq!((wrong.status, wrong.header("allow")), (405, Some("PUT, DELETE")));
    }

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
