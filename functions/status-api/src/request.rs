//! The request as the handler sees it: method, path, body and caller,
//! read once from the API Gateway HTTP API (payload v2) event so nothing
//! past here reads the raw event.
//!
//! The event is read tolerantly, as JSON, rather than through a typed
//! request: a JWT's claims may hold any JSON type (`"exp": 1893456000`),
//! and one odd claim must not turn a request into a function error. An
//! event that is not a request at all is a refusal in the error shape.

use base64::Engine;
use serde_json::Value;
use status_shared::domain::UserId;

use crate::error::ApiError;

/// Who is calling, from `requestContext.authorizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An end user (JWT authorizer) whose `sub` is this user id.
    User(UserId),
    /// An end user whose token carries no usable `sub`.
    BadSubject,
    /// A service (IAM authorizer), or a request with no authorizer: API
    /// Gateway only lets those through on routes configured without one
    /// (the public route) or with IAM.
    Service,
}

/// A request reduced to what the routes need.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub caller: Caller,
}

impl ApiRequest {
    /// Reads a payload v2 event: `requestContext.http.method`, `rawPath`
    /// (else `requestContext.http.path`), `body` (base64 when
    /// `isBase64Encoded`) and the caller. Anything else in the event is
    /// ignored, whatever its type. Errors: [`ApiError::InvalidEvent`] when
    /// one of those is missing or not of its type.
    pub fn from_event(event: &Value) -> Result<Self, ApiError> {
        let invalid = |why: &str| ApiError::InvalidEvent(why.to_owned());
        let context =
            event.get("requestContext").filter(|c| c.is_object()).ok_or_else(|| invalid("no requestContext object"))?;
        let method = context
            .pointer("/http/method")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no requestContext.http.method string"))?;
        let path = event
            .get("rawPath")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .or_else(|| context.pointer("/http/path").and_then(Value::as_str))
            .ok_or_else(|| invalid("no rawPath or requestContext.http.path string"))?;
        let body = match event.get("body") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| invalid("body is marked base64 but is not"))?
            }
            Some(Value::String(text)) => text.as_bytes().to_vec(),
            Some(_) => return Err(invalid("body is not a string")),
        };
        Ok(Self { method: method.to_owned(), path: path.to_owned(), body, caller: caller_of(context) })
    }
}

/// The caller from `requestContext.authorizer`: a JWT authorizer makes an
/// end user, whose `sub` may be a string or a number; IAM, a Lambda
/// authorizer or none makes a service.
fn caller_of(context: &Value) -> Caller {
    let Some(jwt) = context.pointer("/authorizer/jwt").filter(|jwt| !jwt.is_null()) else {
        return Caller::Service;
    };
    let user = match jwt.pointer("/claims/sub") {
        Some(Value::String(sub)) => sub.parse::<UserId>().ok(),
        Some(Value::Number(sub)) => sub.as_u64().and_then(|id| UserId::new(id).ok()),
        _ => None,
    };
    user.map_or(Caller::BadSubject, Caller::User)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event_with_claims(claims: Value) -> Value {
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/v1/status/42", "rawQueryString": "",
            "headers": {}, "isBase64Encoded": false,
            "requestContext": {
                "http": { "method": "GET", "path": "/v1/status/42" },
                "authorizer": { "jwt": { "claims": claims, "scopes": null } }
            }
        })
    }

    #[test]
    fn claims_of_any_json_type_are_read_and_sub_may_be_a_number() {
        let odd = json!({
            "sub": "42", "exp": 1_893_456_000, "email_verified": true, "groups": ["a", 1],
            "address": { "country": "NL" }, "nickname": null, "ratio": 0.5
        });
        let request = ApiRequest::from_event(&event_with_claims(odd)).unwrap();
        assert_eq!(request.caller, Caller::User(UserId::new(42).unwrap()));
        assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/v1/status/42"));
        let numeric = ApiRequest::from_event(&event_with_claims(json!({ "sub": 42, "exp": 1 }))).unwrap();
        assert_eq!(numeric.caller, Caller::User(UserId::new(42).unwrap()));
    }

    #[test]
    fn a_sub_that_is_no_user_id_is_a_bad_subject() {
        for sub in [json!("abc"), json!(0), json!(-3), json!(4.5), json!(true), json!(null), json!([42]), json!({})] {
            let request = ApiRequest::from_event(&event_with_claims(json!({ "sub": sub }))).unwrap();
            assert_eq!(request.caller, Caller::BadSubject, "sub {sub}");
        }
        let request = ApiRequest::from_event(&event_with_claims(json!({ "exp": 1 }))).unwrap();
        assert_eq!(request.caller, Caller::BadSubject, "no sub");
    }

    #[test]
    fn iam_or_no_authorizer_is_a_service() {
        let mut event = event_with_claims(json!({}));
        event["requestContext"]["authorizer"] = json!({ "iam": { "accessKey": "AKIA", "accountId": 1 } });
        assert_eq!(ApiRequest::from_event(&event).unwrap().caller, Caller::Service);
        event["requestContext"]["authorizer"] = Value::Null;
        assert_eq!(ApiRequest::from_event(&event).unwrap().caller, Caller::Service);
    }

    #[test]
    fn bodies_come_as_text_or_base64() {
        let mut event = event_with_claims(json!({}));
        event["body"] = json!("{\"visible\": false}");
        assert_eq!(ApiRequest::from_event(&event).unwrap().body, b"{\"visible\": false}");
        event["body"] = json!("/wB7");
        event["isBase64Encoded"] = json!(true);
        assert_eq!(ApiRequest::from_event(&event).unwrap().body, vec![0xff, 0x00, 0x7b]);
    }

    #[test]
    fn an_event_that_is_no_request_is_refused_in_the_error_shape() {
        let mut no_body_string = event_with_claims(json!({}));
        no_body_string["body"] = json!(17);
        let mut bad_base64 = event_with_claims(json!({}));
        bad_base64["body"] = json!("!!");
        bad_base64["isBase64Encoded"] = json!(true);
        let mut no_method = event_with_claims(json!({}));
        no_method["requestContext"]["http"] = json!({ "method": 5 });
        for event in [json!({}), json!([1]), json!("GET /"), no_body_string, bad_base64, no_method] {
            let error = ApiRequest::from_event(&event).unwrap_err();
            assert!(matches!(error, ApiError::InvalidEvent(_)), "{event}: {error:?}");
            assert_eq!(error.status(), 400);
        }
    }
}
