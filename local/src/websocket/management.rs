//! The API Gateway Management API of the local WebSocket API
//! (`@connections`, DESIGN §12 "Locally"), on the WebSocket API's own
//! port, in the wire shape the `aws-sdk-apigatewaymanagement` client reads:
//!
//! - `POST /@connections/{connectionId}`: the body, at most
//!   [`MAX_MESSAGE_BYTES`], goes to the client as one frame (text when it
//!   is UTF-8, binary otherwise); `200` with no body.
//! - `GET /@connections/{connectionId}`: `200` with
//!   `{"connectedAt", "identity": {"sourceIp", "userAgent"}, "lastActiveAt"}`,
//!   times in RFC 3339 with milliseconds (`2026-12-05T07:20:59.123Z`).
//! - `DELETE /@connections/{connectionId}`: closes the connection (`1000`,
//!   `$disconnect` follows); `204`.
//!
//! An unknown or closed connection answers `410` with
//! `x-amzn-ErrorType: GoneException`; a larger body `413`
//! `PayloadTooLargeException`; errors carry `{"message": "..."}`. A path
//! may start with a stage (`/local/@connections/{id}`), as when the
//! endpoint is given as `https://{domain}/{stage}`, and the id may be
//! percent-encoded (the SDK sends `=` as `%3D`).

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use status_shared::domain::Millis;

use super::event::new_id;
use super::registry::{CloseReason, Registry};
use super::settings::MAX_MESSAGE_BYTES;

/// The connection id a management path names, percent-decoded: the last
/// of `[stage/]@connections/{id}`. `None` for any other path.
pub fn connection_id(path: &str) -> Option<String> {
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let id = match segments.as_slice() {
        [at, id] | [_, at, id] if at == "@connections" => id,
        _ => return None,
    };
    (!id.is_empty()).then(|| id.clone())
}

/// Answers one management call against `registry`.
pub async fn answer(registry: &Registry, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = new_id();
    let (parts, body) = request.into_parts();
    let Some(id) = connection_id(parts.uri.path()) else {
        let message = format!("no such resource: {} {}", parts.method, parts.uri.path());
        return error(StatusCode::NOT_FOUND, "NotFoundException", &message, &request_id);
    };
    let response = match parts.method {
        Method::POST => {
            let data = match Limited::new(body, MAX_MESSAGE_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(failure) if failure.is::<LengthLimitError>() => {
                    let message = format!("Request must be at most {MAX_MESSAGE_BYTES} bytes");
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", &message, &request_id);
                }
                Err(_) => return error(StatusCode::BAD_REQUEST, "BadRequestException", "unreadable body", &request_id),
            };
            if registry.post(&id, data) {
                empty(StatusCode::OK)
            } else {
                gone(&request_id)
            }
        }
        Method::GET => match registry.describe(&id) {
            Some(description) => json_body(
                StatusCode::OK,
                &json!({
                    "connectedAt": rfc3339(description.connected_at),
                    "identity": { "sourceIp": description.source_ip, "userAgent": description.user_agent },
                    "lastActiveAt": rfc3339(description.last_active_at),
                }),
            ),
            None => gone(&request_id),
        },
        Method::DELETE => {
            if registry.close(&id, CloseReason::Deleted) {
                empty(StatusCode::NO_CONTENT)
            } else {
                gone(&request_id)
            }
        }
        _ => {
            let message = format!("{} is not a management operation", parts.method);
            error(StatusCode::NOT_FOUND, "NotFoundException", &message, &request_id)
        }
    };
    with_request_id(response, &request_id)
}

fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn json_body(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn with_request_id(mut response: Response<Full<Bytes>>, request_id: &str) -> Response<Full<Bytes>> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// An error as AWS's REST JSON services send it: the type in
/// `x-amzn-ErrorType`, the text in `{"message": ...}`.
fn error(status: StatusCode, error_type: &'static str, message: &str, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = json_body(status, &json!({ "message": message }));
    response.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    with_request_id(response, request_id)
}

fn gone(request_id: &str) -> Response<Full<Bytes>> {
    error(StatusCode::GONE, "GoneException", "the connection is closed or does not exist", request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_paths_name_their_connection_with_or_without_a_stage() {
        assert_eq!(connection_id("/@connections/abc="), Some("abc=".into()));
        assert_eq!(connection_id("/@connections/abc%3D"), Some("abc=".into()));
        assert_eq!(connection_id("/local/@connections/abc%3D"), Some("abc=".into()));
        assert_eq!(connection_id("/%40connections/x"), Some("x".into()));
        assert_eq!(connection_id("/@connections/"), None);
        assert_eq!(connection_id("/@connections"), None);
        assert_eq!(connection_id("/a/b/@connections/x"), None);
        assert_eq!(connection_id("/local/other/x"), None);
        assert_eq!(connection_id(""), None);
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(1_764_270_000_123), "2025-11-27T19:00:00.123Z");
    }
}
