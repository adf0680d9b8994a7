//! The routes of the HTTP API (DESIGN §7), matched from a request's
//! method and raw path, and the user id a path names. Pure: no I/O.

use status_shared::domain::UserId;

use crate::error::ApiError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::ApiResponse;

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
}
