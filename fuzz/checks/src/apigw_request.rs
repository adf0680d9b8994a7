//! `apigw_request`: an API Gateway HTTP API (payload v2) event through the
//! status API's request reading, routing and the body validation of each
//! route that takes a body (DESIGN §7), all pure: no store is touched.

use serde_json::Value;
use status_api::audience::parse_audience;
use status_api::body::{parse_bulk, parse_manual, parse_visibility};
use status_api::error::ApiError;
use status_api::request::ApiRequest;
use status_api::response::{ApiResponse, MAX_BULK_IDS};
use status_api::route::{parse_user_id, route, Route};
use status_shared::domain::manual::MAX_MESSAGE_CHARS;
use status_shared::domain::UserId;

use crate::NOW_MS;

/// Reads `data` as an event when it is JSON (every refusal must be the
/// contract's error shape), and gives `data` itself to each body parser as
/// a body would arrive. Panics when an accepted request or body breaks the
/// contract's limits, or a refusal is not a 4xx in the error shape.
pub fn check(data: &[u8]) {
    check_bodies(data);
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    let request = match ApiRequest::from_event(&event) {
        Ok(request) => request,
        Err(error) => {
            assert!(matches!(error, ApiError::InvalidEvent(_)), "an unreadable event is invalid_event: {error:?}");
            return check_refusal(error);
        }
    };
    assert_eq!(
        Some(request.method.as_str()),
        event.pointer("/requestContext/http/method").and_then(Value::as_str),
        "the method is the event's"
    );
    let matched = match route(&request.method, &request.path) {
        Ok(matched) => matched,
        Err(error) => {
            let expected = matches!(error, ApiError::NotFound { .. } | ApiError::MethodNotAllowed { .. });
            assert!(expected, "routing refuses only as not_found or method_not_allowed: {error:?}");
            return check_refusal(error);
        }
    };
    match matched {
        Route::Bulk => check_bulk(&request.body),
        Route::Single(id) | Route::Public(id) | Route::Erase(id) => check_user_id(&id),
        Route::Visibility(id) => {
            check_user_id(&id);
            check_visibility(&request.body);
        }
        Route::ManualStatus { id, clear } => {
            check_user_id(&id);
            assert_eq!(clear, request.method == "DELETE", "only DELETE clears a manual status");
            if !clear {
                check_manual(&request.body);
            }
        }
        Route::Audience { id, put } => {
            check_user_id(&id);
            assert_eq!(put, request.method == "PUT", "only PUT sets an audience");
            if put {
                check_audience(&request.body);
            }
        }
    }
}

fn check_bodies(body: &[u8]) {
    check_bulk(body);
    check_visibility(body);
    check_manual(body);
    check_audience(body);
}

/// An accepted audience lists at most 1,000 ids, ascending and distinct.
fn check_audience(body: &[u8]) {
    match parse_audience(body) {
        Ok(audience) => {
            let ids = audience.except();
            assert!(ids.len() <= 1_000, "{} ids accepted", ids.len());
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "except is ascending and distinct");
        }
        Err(error) => check_refusal(error),
    }
}

/// An accepted bulk body names 1 to [`MAX_BULK_IDS`] distinct ids in range.
fn check_bulk(body: &[u8]) {
    match parse_bulk(body) {
        Ok(ids) => {
            assert!(!ids.is_empty() && ids.len() <= MAX_BULK_IDS, "{} ids accepted", ids.len());
            let mut distinct = ids.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), ids.len(), "duplicate ids kept");
            ids.into_iter().for_each(assert_user);
        }
        Err(error) => check_refusal(error),
    }
}

fn check_visibility(body: &[u8]) {
    if let Err(error) = parse_visibility(body) {
        check_refusal(error);
    }
}

/// An accepted manual status keeps DESIGN §7.1's limits at [`NOW_MS`].
fn check_manual(body: &[u8]) {
    match parse_manual(body, NOW_MS) {
        Ok(manual) => {
            let chars = manual.message.as_deref().map_or(0, |m| m.chars().count());
            assert!(chars <= MAX_MESSAGE_CHARS, "a message of {chars} characters accepted");
            assert!(manual.expires_at_ms.is_none_or(|end| end > NOW_MS), "an expiry not in the future accepted");
        }
        Err(error) => check_refusal(error),
    }
}

/// An accepted id is in range and reads back as itself.
fn check_user_id(raw: &str) {
    match parse_user_id(raw) {
        Ok(user) => {
            assert_user(user);
            assert_eq!(parse_user_id(&user.to_string()).ok(), Some(user), "{raw:?} does not read back");
        }
        Err(error) => check_refusal(error),
    }
}

/// A refusal of the request's own making is a 4xx with the contract's
/// error body: `{"error": {"code", "message"}}` as a JSON string body.
fn check_refusal(error: ApiError) {
    let code = error.code().to_owned();
    let response = ApiResponse::from(error);
    assert!((400..500).contains(&response.status), "{code} answered {}", response.status);
    let proxy = response.into_apigw_json();
    let body = proxy.get("body").and_then(Value::as_str).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(body.pointer("/error/code").and_then(Value::as_str), Some(code.as_str()), "error body {body}");
    assert!(body.pointer("/error/message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "no message");
}

fn assert_user(user: UserId) {
    assert!((1..=UserId::MAX).contains(&user.get()), "user id {} out of range", user.get());
}
