//! The WebSocket proxy events API Gateway hands the integration of a
//! WebSocket API (DESIGN §12, "Locally"): one per connect, message and
//! disconnect, shaped as AWS sends them, so the function's own reading of
//! the raw event runs unchanged on local traffic.
//!
//! Identity stands in for the `$connect` authorizers: `X-Local-User: 42`
//! on the upgrade request becomes what the Lambda REQUEST authorizer would
//! return for user 42, `requestContext.authorizer = {"principalId": "42",
//! "user_id": "42"}`, on every event of that connection. Without the header
//! the caller is a service signed in with IAM: as in AWS, an IAM-authorized
//! connection's events carry no `authorizer` at all, and the caller's IAM
//! principal shows in `requestContext.identity` instead.

use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine;
use hyper::HeaderMap;
use rand::RngCore;
use serde_json::{json, Map, Value};
use status_shared::domain::{Millis, UserId};

use crate::apigw::{clf_time, ACCOUNT_ID, LOCAL_USER_HEADER, SERVICE_ACCESS_KEY, SERVICE_ROLE_ID, SERVICE_SESSION};

/// The stage the local WebSocket API plays; management paths may carry it
/// as a prefix (`/local/@connections/{id}`), as AWS endpoints do.
pub const STAGE: &str = "local";

/// The `apiId` of the local WebSocket API.
pub const API_ID: &str = "local";

/// The route keys selected by `$request.body.action` (DESIGN §12); any
/// other action, and any body that is not a JSON object with a string
/// `action`, goes to `$default`.
pub const ACTION_ROUTES: [&str; 3] = ["subscribe", "unsubscribe", "ping"];

/// An id shaped like API Gateway's connection, request and message ids: 11
/// random bytes in base64, 16 characters ending in `=`. The URL-safe
/// alphabet keeps `/` and `+` out, so an id is one path segment as sent.
pub fn new_id() -> String {
    let mut bytes = [0u8; 11];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// Who the `$connect` authorizer says is connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An end user the Lambda REQUEST authorizer approved.
    User(UserId),
    /// A service signed in with IAM.
    Service,
}

/// Why an upgrade request's identity was refused (answered `401`, as an
/// authorizer's `Unauthorized` is, before any upgrade).
#[derive(Debug, thiserror::Error)]
#[error("X-Local-User must be a user id, a decimal from 1 to 9223372036854775807")]
pub struct BadLocalUser;

impl Caller {
    /// Reads [`LOCAL_USER_HEADER`]: absent is a service; present, it must
    /// be a valid user id (DESIGN §3) or the connection is refused.
    pub fn of(headers: &HeaderMap) -> Result<Self, BadLocalUser> {
        match headers.get(LOCAL_USER_HEADER) {
            None => Ok(Caller::Service),
            Some(value) => {
                let text = value.to_str().map_err(|_| BadLocalUser)?;
                UserId::from_str(text.trim()).map(Caller::User).map_err(|_| BadLocalUser)
            }
        }
    }

    /// `requestContext.authorizer`: the REQUEST authorizer's principal and
    /// context for a user, nothing for an IAM caller.
    fn authorizer(&self) -> Option<Value> {
        match self {
            Caller::User(id) => Some(json!({ "principalId": id.to_string(), "user_id": id.to_string() })),
            Caller::Service => None,
        }
    }
}

/// What every event of one connection repeats.
#[derive(Clone, Debug)]
pub struct ConnectionContext {
    pub connection_id: String,
    pub connected_at: Millis,
    pub caller: Caller,
    pub source_ip: IpAddr,
    pub user_agent: String,
    /// The `Host` the client connected to, as `domainName`.
    pub domain_name: String,
    /// The port the gateway listens on, as `X-Forwarded-Port`.
    pub server_port: u16,
}

/// How a connection ended, for the `$disconnect` event's
/// `disconnectStatusCode` and `disconnectReason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    pub status_code: u16,
    pub reason: String,
}

impl ConnectionContext {
    /// `requestContext.identity`: the source address and user agent, plus
    /// the IAM principal for a service caller.
    fn identity(&self) -> Value {
        let mut identity = json!({
            "sourceIp": self.source_ip.to_string(),
            "userAgent": self.user_agent,
        });
        if self.caller == Caller::Service {
            identity["accountId"] = json!(ACCOUNT_ID);
            identity["accessKey"] = json!(SERVICE_ACCESS_KEY);
            identity["caller"] = json!(format!("{SERVICE_ROLE_ID}:{SERVICE_SESSION}"));
            identity["user"] = json!(format!("{SERVICE_ROLE_ID}:{SERVICE_SESSION}"));
            identity["userArn"] =
                json!(format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/{SERVICE_SESSION}/{SERVICE_SESSION}"));
        }
        identity
    }

    /// The `requestContext` of one event on `route`, with a fresh
    /// `requestId` (returned too, for the client's error messages).
    fn request_context(&self, route: &str, event_type: &str, now: Millis) -> (Value, String) {
        let request_id = new_id();
        let mut context = json!({
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": new_id(),
            "requestTime": clf_time(now),
            "messageDirection": "IN",
            "stage": STAGE,
            "connectedAt": self.connected_at,
            "requestTimeEpoch": now,
            "identity": self.identity(),
            "requestId": request_id,
            "domainName": self.domain_name,
            "connectionId": self.connection_id,
            "apiId": API_ID,
        });
        if let Some(authorizer) = self.caller.authorizer() {
            context["authorizer"] = authorizer;
        }
        (context, request_id)
    }

    /// The `$connect` event: the upgrade request's headers (less
    /// `X-Local-User`, which the authorizer consumed) under `headers` and
    /// `multiValueHeaders`, with the `X-Forwarded-*` ones API Gateway adds.
    pub fn connect_event(&self, headers: &HeaderMap, now: Millis) -> Value {
        let mut single = Map::new();
        let mut multi = Map::new();
        for name in headers.keys() {
            if name.as_str() == LOCAL_USER_HEADER || name.as_str().starts_with("x-forwarded-") {
                continue;
            }
            let values: Vec<String> =
                headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
            let name = canonical_header_name(name.as_str());
            single.insert(name.clone(), json!(values.join(",")));
            multi.insert(name, json!(values));
        }
        for (name, value) in [
            ("X-Forwarded-For", self.source_ip.to_string()),
            ("X-Forwarded-Port", self.server_port.to_string()),
            ("X-Forwarded-Proto", "http".to_owned()),
        ] {
            single.insert(name.to_owned(), json!(value));
            multi.insert(name.to_owned(), json!([value]));
        }
        let (context, _) = self.request_context("$connect", "CONNECT", now);
        json!({
            "headers": single,
            "multiValueHeaders": multi,
            "requestContext": context,
            "isBase64Encoded": false,
        })
    }

    /// A `MESSAGE` event for one client message, routed by
    /// [`select_route`]; binary data travels base64-encoded with
    /// `isBase64Encoded`. Returns the event and its `requestId`.
    pub fn message_event(&self, data: MessageData<'_>, now: Millis) -> (Value, String) {
        let (route, body, encoded) = match data {
            MessageData::Text(text) => (select_route(text), text.to_owned(), false),
            MessageData::Binary(bytes) => ("$default", base64::engine::general_purpose::STANDARD.encode(bytes), true),
        };
        let (mut context, request_id) = self.request_context(route, "MESSAGE", now);
        context["messageId"] = json!(new_id());
        let event = json!({
            "requestContext": context,
            "body": body,
            "isBase64Encoded": encoded,
        });
        (event, request_id)
    }

    /// The `$disconnect` event, with how the connection ended.
    pub fn disconnect_event(&self, how: &Disconnect, now: Millis) -> Value {
        let (mut context, _) = self.request_context("$disconnect", "DISCONNECT", now);
        context["disconnectStatusCode"] = json!(how.status_code);
        context["disconnectReason"] = json!(how.reason);
        json!({
            "headers": {
                "Host": self.domain_name,
                "X-Forwarded-For": self.source_ip.to_string(),
                "X-Forwarded-Port": self.server_port.to_string(),
                "X-Forwarded-Proto": "http",
            },
            "multiValueHeaders": {
                "Host": [self.domain_name],
                "X-Forwarded-For": [self.source_ip.to_string()],
                "X-Forwarded-Port": [self.server_port.to_string()],
                "X-Forwarded-Proto": ["http"],
            },
            "requestContext": context,
            "isBase64Encoded": false,
        })
    }
}

/// One client message's data.
#[derive(Clone, Copy, Debug)]
pub enum MessageData<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// The route `$request.body.action` selects for a text message: one of
/// [`ACTION_ROUTES`] when the body is a JSON object whose `action` is that
/// string, `$default` for anything else (another action, a non-string
/// action, no action, or text that is not JSON).
pub fn select_route(body: &str) -> &'static str {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body) else { return "$default" };
    match object.get("action").and_then(Value::as_str) {
        Some(action) => ACTION_ROUTES.iter().find(|route| **route == action).copied().unwrap_or("$default"),
        None => "$default",
    }
}

/// `sec-websocket-key` as API Gateway shows header names: each dash-
/// separated word capitalized, `websocket` spelled `WebSocket`.
fn canonical_header_name(lower: &str) -> String {
    lower
        .split('-')
        .map(|word| match word {
            "websocket" => "WebSocket".to_owned(),
            _ => {
                let mut chars = word.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn routes_follow_the_body_action_and_fall_back_to_default() {
        assert_eq!(select_route(r#"{"action": "subscribe", "user_ids": [1]}"#), "subscribe");
        assert_eq!(select_route(r#"{"action": "unsubscribe"}"#), "unsubscribe");
        assert_eq!(select_route(r#"{"action": "ping"}"#), "ping");
        assert_eq!(select_route(r#"{"action": "dance"}"#), "$default");
        assert_eq!(select_route(r#"{"action": 5}"#), "$default");
        assert_eq!(select_route(r#"{"user_ids": [1]}"#), "$default");
        assert_eq!(select_route(r#"["ping"]"#), "$default");
        assert_eq!(select_route("ping"), "$default");
        assert_eq!(select_route(""), "$default");
    }

    #[test]
    fn ids_look_like_api_gateway_ids_and_differ() {
        let a = new_id();
        assert_eq!(a.len(), 16);
        assert!(a.ends_with('='));
        assert!(a[..15].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{a}");
        assert_ne!(a, new_id());
    }

    #[test]
    fn the_local_user_header_must_be_a_user_id() {
        let mut headers = HeaderMap::new();
        assert_eq!(Caller::of(&headers).unwrap(), Caller::Service);
        headers.insert(LOCAL_USER_HEADER, HeaderValue::from_static("42"));
        assert_eq!(Caller::of(&headers).unwrap(), Caller::User(UserId::new(42).unwrap()));
        for bad in ["0", "-1", "abc", "", "9223372036854775808", "+7", "1.5"] {
            headers.insert(LOCAL_USER_HEADER, HeaderValue::from_static(bad));
            assert!(Caller::of(&headers).is_err(), "{bad:?}");
        }
        headers.insert(LOCAL_USER_HEADER, HeaderValue::from_static("9223372036854775807"));
        assert!(Caller::of(&headers).is_ok());
    }

    #[test]
    fn header_names_are_shown_as_api_gateway_shows_them() {
        assert_eq!(canonical_header_name("sec-websocket-key"), "Sec-WebSocket-Key");
        assert_eq!(canonical_header_name("host"), "Host");
        assert_eq!(canonical_header_name("x-amzn-trace-id"), "X-Amzn-Trace-Id");
    }
}
