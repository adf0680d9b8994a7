//! The API's one error table (DESIGN §7, `openapi.yaml`): every refusal is
//! an [`ApiError`], answered with its status as
//! `{"error": {"code", "message"}}`, plus `Retry-After` or `Allow` where
//! the client must act on them. The routes and the local server's HTTP
//! edge both answer through it; nothing internal reaches a message.

use serde_json::json;

use crate::response::{ApiResponse, MAX_BULK_IDS};

/// Why a request was refused. `Display` is the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    /// A known path asked with another method; `allowed` goes to `Allow`.
    #[error("{path} accepts {allowed} only")]
    MethodNotAllowed { path: String, allowed: &'static str },
    /// A user id in the path or body that is not one; the message names
    /// where it was and what it held.
    #[error("{0} is not a user id (an integer from 1 to 2^63-1)")]
    InvalidUserId(String),
    #[error("body is not JSON: {0}")]
    InvalidJson(String),
    /// A body that is JSON but not the route's shape.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// An event the function cannot read as an HTTP API request at all;
    /// API Gateway never sends one, a direct invocation may.
    #[error("the event is not an API Gateway HTTP API request: {0}")]
    InvalidEvent(String),
    #[error("user_ids is empty")]
    EmptyRequest,
    #[error("user_ids has {0} entries; at most {MAX_BULK_IDS} are allowed")]
    TooManyIds(usize),
    /// An audience listing more viewers than DESIGN §13 allows, counted
    /// as listed.
    #[error("except has {0} entries; at most 1000 are allowed")]
    TooManyExcept(usize),
    #[error("body is over {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("the token's sub is not a user id")]
    Unauthorized,
    /// An end user acting on another user's preference or status; the
    /// message says what only the user (or a service) may do, e.g.
    /// `change their visibility`.
    #[error("only the user may {0}")]
    Forbidden(&'static str),
    /// An end user calling a route for service callers only (an erasure,
    /// DESIGN §7.1); the message names what.
    #[error("only a service caller may {0}")]
    ServiceOnly(&'static str),
    /// A manual status that breaks DESIGN §7.1: an unknown `state`, a
    /// message over 100 characters, an `expires_at_ms` not an integer or
    /// not in the future. The message says which.
    #[error("{0}")]
    InvalidManualStatus(String),
    /// The end user's poll window (DESIGN §7) is taken; retry in whole s.
    #[error("one status read per window; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// Redis and SQL could not serve the call; nothing was changed that
    /// the retry would not redo.
    #[error("status storage is unavailable; retry shortly")]
    Unavailable,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::InvalidUserId(_)
            | Self::InvalidJson(_)
            | Self::InvalidRequest(_)
            | Self::InvalidEvent(_)
            | Self::EmptyRequest
            | Self::InvalidManualStatus(_)
            | Self::TooManyIds(_)
            | Self::TooManyExcept(_) => 400,
            Self::PayloadTooLarge { .. } => 413,
            Self::Unauthorized => 401,
            Self::Forbidden(_) | Self::ServiceOnly(_) => 403,
            Self::RateLimited { .. } => 429,
            Self::Unavailable => 503,
        }
    }

    /// The stable code programs read (listed in `openapi.yaml`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidUserId(_) => "invalid_user_id",
            Self::InvalidJson(_) => "invalid_json",
            // An unreadable event is a request the API cannot use, which
            // is what `invalid_request` tells a client already.
            Self::InvalidRequest(_) | Self::InvalidEvent(_) => "invalid_request",
            Self::EmptyRequest => "empty_request",
            Self::TooManyIds(_) | Self::TooManyExcept(_) => "too_many_ids",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) | Self::ServiceOnly(_) => "forbidden",
            Self::InvalidManualStatus(_) => "invalid_manual_status",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }

    /// `Retry-After` in whole seconds, where a retry can succeed.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_s } => Some(*retry_after_s),
            Self::Unavailable => Some(1),
            _ => None,
        }
    }
}

impl From<ApiError> for ApiResponse {
    fn from(error: ApiError) -> Self {
        let mut headers = vec![("cache-control", "no-store".to_owned())];
        if let Some(wait_s) = error.retry_after_s() {
            headers.push(("retry-after", wait_s.to_string()));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = &error {
            headers.push(("allow", (*allowed).to_owned()));
        }
        ApiResponse {
            status: error.status(),
            headers,
            body: json!({ "error": { "code": error.code(), "message": error.to_string() } }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_answers_its_status_code_and_headers() {
        let limited: ApiResponse = ApiError::RateLimited { retry_after_s: 7 }.into();
        assert_eq!((limited.status, limited.header("retry-after")), (429, Some("7")));
        assert_eq!(limited.body["error"]["code"], "rate_limited");
        assert_eq!(limited.body["error"]["message"], "one status read per window; retry in 7 s");
        let down: ApiResponse = ApiError::Unavailable.into();
        assert_eq!((down.status, down.header("retry-after")), (503, Some("1")));
        let wrong: ApiResponse = ApiError::MethodNotAllowed { path: "/v1/status/1".into(), allowed: "GET" }.into();
        assert_eq!((wrong.status, wrong.header("allow"), wrong.header("retry-after")), (405, Some("GET"), None));
        let unreadable: ApiResponse = ApiError::InvalidEvent("no requestContext".into()).into();
        assert_eq!((unreadable.status, unreadable.body["error"]["code"].as_str()), (400, Some("invalid_request")));
        assert_eq!(unreadable.header("cache-control"), Some("no-store"));
    }
}
