//! A plain HTTP request turned into the event API Gateway (HTTP API,
//! payload format 2.0) would hand `StatusApiFunction`, so the function's
//! own parsing of the raw event (`ApiRequest::from_event`) runs unchanged
//! on local traffic.
//!
//! Identity stands in for the authorizers: header `X-Local-User: 42`
//! becomes a JWT authorizer context with claim `sub` = `"42"`; without it
//! the caller is a service signed in with IAM (DESIGN §9).

use std::net::IpAddr;

use base64::Engine;
use hyper::HeaderMap;
use serde_json::{json, Map, Value};
use status_shared::domain::Millis;

/// The header that makes a local request an end user's (DESIGN §9). It is
/// consumed here, as an authorizer consumes the token, so the function
/// never sees it among the headers.
pub const LOCAL_USER_HEADER: &str = "x-local-user";

/// The account id the fake authorizer contexts carry; AWS's documentation
/// placeholder, so nobody mistakes it for a real one.
pub(crate) const ACCOUNT_ID: &str = "123456789012";

/// The fake IAM principal of a service caller. The handler only asks
/// whether the authorizer is IAM; the ids are shaped like AWS's so a log
/// line or a test that prints them looks familiar.
pub(crate) const SERVICE_ACCESS_KEY: &str = "ASIAONLINESTATUSLOCAL";
pub(crate) const SERVICE_ROLE_ID: &str = "AROAONLINESTATUSLOCAL";
pub(crate) const SERVICE_SESSION: &str = "online-status-local";

/// Who the authorizer says is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// An end user whose token's `sub` is this text (not checked here: the
    /// function decides whether it is a user id, as it would in AWS).
    User(String),
    /// A service caller, signed with SigV4 and let through by IAM.
    Service,
}

impl Identity {
    /// Reads [`LOCAL_USER_HEADER`]; absent means a service caller.
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get(LOCAL_USER_HEADER) {
            Some(value) => Identity::User(String::from_utf8_lossy(value.as_bytes()).trim().to_owned()),
            None => Identity::Service,
        }
    }

    /// The `requestContext.authorizer` object API Gateway would send.
    fn authorizer(&self) -> Value {
        match self {
            Identity::User(sub) => json!({
                "jwt": {
                    "claims": { "sub": sub, "iss": "https://online-status.local", "aud": "online-status-local" },
                    "scopes": null,
                }
            }),
            Identity::Service => json!({
                "iam": {
                    "accessKey": SERVICE_ACCESS_KEY,
                    "accountId": ACCOUNT_ID,
                    "callerId": format!("{SERVICE_ROLE_ID}:{SERVICE_SESSION}"),
                    "principalOrgId": null,
                    "userArn": format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/{SERVICE_SESSION}/{SERVICE_SESSION}"),
                    "userId": format!("{SERVICE_ROLE_ID}:{SERVICE_SESSION}"),
                }
            }),
        }
    }
}

/// One HTTP request, already read.
#[derive(Clone, Copy, Debug)]
pub struct HttpCall<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded (API Gateway's `rawPath`).
    pub path: &'a str,
    /// The query without `?`, empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: IpAddr,
    pub request_id: &'a str,
    pub now: Millis,
}

/// The routes of the template's HTTP APIs (`template.yaml`), literal ones
/// first, as API Gateway prefers a literal segment over a parameter.
const ROUTES: [(&str, &str); 9] = [
    ("POST", "/v1/status/bulk"),
    ("GET", "/v1/status/{user_id}"),
    ("GET", "/v1/public/status/{user_id}"),
    ("PUT", "/v1/users/{user_id}/visibility"),
    ("PUT", "/v1/users/{user_id}/manual-status"),
    ("DELETE", "/v1/users/{user_id}/manual-status"),
    ("PUT", "/v1/users/{user_id}/audience"),
    ("GET", "/v1/users/{user_id}/audience"),
    ("DELETE", "/v1/users/{user_id}"),
];

/// The route API Gateway would match for `method` and the raw `path`, as
/// its `routeKey` (`GET /v1/status/{user_id}`), with the path parameters
/// percent-decoded (DESIGN §9). `None` when no route matches: the event
/// then goes out on `$default` and the function answers 404 or 405.
fn matched_route(method: &str, path: &str) -> Option<(String, Map<String, Value>)> {
    let sent: Vec<&str> = path.split('/').collect();
    ROUTES.iter().filter(|(m, _)| *m == method || (*m == "GET" && method == "HEAD")).find_map(|(m, template)| {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != sent.len() {
            return None;
        }
        let mut parameters = Map::new();
        for (part, raw) in parts.iter().zip(&sent) {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !raw.is_empty() => {
                    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                    parameters.insert(name.to_owned(), Value::String(decoded.into_owned()));
                }
                Some(_) => return None,
                None if part != raw => return None,
                None => {}
            }
        }
        Some((format!("{m} {template}"), parameters))
    })
}

/// The payload v2 event for `call`, with the `routeKey` and decoded
/// `pathParameters` of the template's route it matches (`$default` when
/// none does), stage `$default`, and the raw path in `rawPath`.
///
/// Headers are lowercased and repeated ones joined with commas, cookies go
/// to `cookies`, as API Gateway does. A body that is UTF-8 is sent as text,
/// any other body base64-encoded with `isBase64Encoded`. The parsed
/// `queryStringParameters` are left out: the function reads no query, and
/// `lambda_http` rebuilds them from `rawQueryString` anyway.
pub fn to_event(call: &HttpCall<'_>) -> Value {
    let mut headers = Map::new();
    let mut cookies: Vec<String> = Vec::new();
    for name in call.headers.keys() {
        let values = call.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match name.as_str() {
            LOCAL_USER_HEADER => {}
            "cookie" => {
                cookies.extend(values.flat_map(|v| v.split(';').map(|c| c.trim().to_owned()).collect::<Vec<_>>()))
            }
            // `HeaderName` is lowercase already.
            lower => {
                headers.insert(lower.to_owned(), Value::String(values.collect::<Vec<_>>().join(",")));
            }
        }
    }
    let header = |name: &str| headers.get(name).and_then(Value::as_str).map(str::to_owned);
    let domain = header("host").unwrap_or_else(|| "127.0.0.1".to_owned());
    let user_agent = header("user-agent").unwrap_or_default();

    let (route_key, path_parameters) = match matched_route(call.method, call.path) {
        Some((key, parameters)) => (key, Some(parameters)),
        None => ("$default".to_owned(), None),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": call.path,
        "rawQueryString": call.query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "authorizer": Identity::of(call.headers).authorizer(),
            "domainName": domain,
            "domainPrefix": "local",
            "http": {
                "method": call.method,
                "path": call.path,
                "protocol": "HTTP/1.1",
                "sourceIp": call.source_ip.to_string(),
                "userAgent": user_agent,
            },
            "requestId": call.request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": clf_time(call.now),
            "timeEpoch": call.now,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if let Some(parameters) = path_parameters.filter(|p| !p.is_empty()) {
        event["pathParameters"] = Value::Object(parameters);
    }
    // API Gateway leaves `body` out when there is none.
    if !call.body.is_empty() {
        match std::str::from_utf8(call.body) {
            Ok(text) => event["body"] = Value::String(text.to_owned()),
            Err(_) => {
                event["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(call.body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    event
}

/// `requestContext.time` here and `requestTime` in a WebSocket event
/// ([`crate::websocket::event`]): the access-log format API Gateway uses,
/// e.g. `27/Nov/2026:22:18:17 +0000`.
pub(crate) fn clf_time(now: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(now)
        .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hyper::header::{HeaderValue, COOKIE, HOST};
    use lambda_http::request::RequestContext;
    use lambda_http::{Body, RequestExt};

    use super::*;

    fn call<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> HttpCall<'a> {
        HttpCall {
            method: "POST",
            path: "/v1/status/bulk",
            query: "a=1&b=2",
            headers,
            body,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            request_id: "req-1",
            now: 1_764_270_000_000,
        }
    }

    fn parse(event: &Value) -> lambda_http::Request {
        lambda_http::request::from_str(&event.to_string()).expect("lambda_http reads the event")
    }

    #[test]
    fn a_request_without_the_local_user_header_comes_from_a_service() {
        let headers = HeaderMap::new();
        let event = to_event(&call(&headers, br#"{"user_ids": [1]}"#));
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["requestContext"]["time"], "27/Nov/2025:19:00:00 +0000");
        let request = parse(&event);
        assert_eq!(request.method(), "POST");
        assert_eq!(request.raw_http_path(), "/v1/status/bulk");
        assert_eq!(request.uri().query(), Some("a=1&b=2"));
        assert!(matches!(request.body(), Body::Text(t) if t == r#"{"user_ids": [1]}"#));
        let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else { panic!("v2 context") };
        let authorizer = context.authorizer.as_ref().expect("an authorizer");
        assert!(authorizer.jwt.is_none());
        assert_eq!(authorizer.iam.as_ref().and_then(|iam| iam.access_key.as_deref()), Some(SERVICE_ACCESS_KEY));
    }

    #[test]
    fn the_local_user_header_becomes_the_jwt_subject_and_is_not_passed_on() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Local-User", HeaderValue::from_static("42"));
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:3000"));
        headers.append(COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append("x-many", HeaderValue::from_static("one"));
        headers.append("x-many", HeaderValue::from_static("two"));
        let event = to_event(&call(&headers, b""));
        assert_eq!(event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "42");
        assert_eq!(event["headers"].get(LOCAL_USER_HEADER), None);
        assert_eq!(event["headers"]["x-many"], "one,two");
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event.get("body"), None);
        let request = parse(&event);
        let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else { panic!("v2 context") };
        let jwt = context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).expect("a jwt authorizer");
        assert_eq!(jwt.claims.get("sub").map(String::as_str), Some("42"));
    }

    #[test]
    fn path_parameters_are_percent_decoded_and_the_raw_path_kept() {
        let headers = HeaderMap::new();
        let event = to_event(&HttpCall { method: "GET", path: "/v1/status/%34%32", ..call(&headers, b"") });
        assert_eq!(event["routeKey"], "GET /v1/status/{user_id}");
        assert_eq!(event["pathParameters"], json!({"user_id": "42"}));
        assert_eq!(event["rawPath"], "/v1/status/%34%32");
        let request = parse(&event);
        assert_eq!(request.raw_http_path(), "/v1/status/%34%32");

        let put = to_event(&HttpCall { method: "PUT", path: "/v1/users/7/manual-status", ..call(&headers, b"") });
        assert_eq!(put["routeKey"], "PUT /v1/users/{user_id}/manual-status");
        let bulk = to_event(&call(&headers, b""));
        assert_eq!(bulk["routeKey"], "POST /v1/status/bulk", "the literal route wins");
        assert_eq!(bulk.get("pathParameters"), None);
        let unknown = to_event(&HttpCall { method: "GET", path: "/v2/nothing", ..call(&headers, b"") });
        assert_eq!(unknown["routeKey"], "$default");
        let empty = to_event(&HttpCall { method: "GET", path: "/v1/status/", ..call(&headers, b"") });
        assert_eq!(empty["routeKey"], "$default", "an empty segment matches no parameter");
    }

    #[test]
    fn a_body_that_is_not_text_travels_base64_encoded() {
        let headers = HeaderMap::new();
        let event = to_event(&call(&headers, &[0xff, 0x00, 0x7b]));
        assert_eq!(event["isBase64Encoded"], true);
        assert!(matches!(parse(&event).body(), Body::Binary(b) if b == &[0xff, 0x00, 0x7b]));
    }
}
