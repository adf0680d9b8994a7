//! The REQUEST authorizer event API Gateway sends for a WebSocket
//! `$connect` (DESIGN §12), read tolerantly: only `methodArn`, `headers`
//! and `queryStringParameters` matter, and any of them may be absent or of
//! the wrong shape without failing the read.
//!
//! The token comes from the query parameter `token` (a browser cannot set
//! headers on a WebSocket upgrade) or else from `Authorization: Bearer`.

use std::fmt;

use serde_json::Value;

use crate::error::Refusal;

/// The longest `methodArn` accepted, in bytes; API Gateway's are far
/// shorter, and the ARN is echoed into the policy.
pub const MAX_METHOD_ARN_BYTES: usize = 2048;

/// Where a connect's token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Query string parameter `token`.
    Query,
    /// Header `Authorization: Bearer <token>`.
    Header,
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Query => "query",
            Self::Header => "header",
        })
    }
}

/// What the authorizer reads of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRequest {
    method_arn: Option<String>,
    query_token: Option<String>,
    authorization: Option<String>,
}

/// A present, non-blank string field, trimmed.
fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

impl ConnectRequest {
    /// Reads `event`; never fails. A field that is absent, not a string,
    /// or empty reads as absent. Header names match case-insensitively.
    pub fn from_event(event: &Value) -> Self {
        let authorization = event.get("headers").and_then(Value::as_object).and_then(|headers| {
            headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                .find_map(|(_, value)| text(Some(value)))
        });
        Self {
            method_arn: text(event.get("methodArn")).map(str::to_owned),
            query_token: text(event.get("queryStringParameters").and_then(|q| q.get("token"))).map(str::to_owned),
            authorization: authorization.map(str::to_owned),
        }
    }

    /// The ARN the policy is for: `arn:…`, at most
    /// [`MAX_METHOD_ARN_BYTES`]; else [`Refusal::NoMethodArn`].
    pub fn method_arn(&self) -> Result<&str, Refusal> {
        self.method_arn
            .as_deref()
            .filter(|arn| arn.starts_with("arn:") && arn.len() <= MAX_METHOD_ARN_BYTES)
            .ok_or(Refusal::NoMethodArn)
    }

    /// The token and where it came from: the query's `token` if present,
    /// else the `Authorization` header, whose scheme must be `Bearer`
    /// (any case). Errors: [`Refusal::NoToken`], [`Refusal::NotBearer`].
    pub fn bearer(&self) -> Result<(&str, TokenSource), Refusal> {
        if let Some(token) = &self.query_token {
            return Ok((token, TokenSource::Query));
        }
        let header = self.authorization.as_deref().ok_or(Refusal::NoToken)?;
        let (scheme, token) = header.split_once(char::is_whitespace).ok_or(Refusal::NotBearer)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Refusal::NotBearer);
        }
        Ok((token, TokenSource::Header))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/$connect";

    #[test]
    fn the_query_token_comes_first_then_the_bearer_header() {
        let both = json!({"methodArn": ARN, "queryStringParameters": {"token": "q.q.q"},
            "headers": {"Authorization": "Bearer h.h.h"}});
        assert_eq!(ConnectRequest::from_event(&both).bearer(), Ok(("q.q.q", TokenSource::Query)));
        let header = json!({"headers": {"authorization": "bearer   h.h.h "}, "queryStringParameters": {"token": ""}});
        assert_eq!(ConnectRequest::from_event(&header).bearer(), Ok(("h.h.h", TokenSource::Header)));
        assert_eq!(ConnectRequest::from_event(&both).method_arn(), Ok(ARN));
    }

    #[test]
    fn other_schemes_and_missing_tokens_are_refused() {
        for (headers, refusal) in [
            (json!({"Authorization": "Basic dXNlcjpwdw=="}), Refusal::NotBearer),
            (json!({"Authorization": "Bearer"}), Refusal::NotBearer),
            (json!({"Authorization": "Bearer    "}), Refusal::NotBearer),
            (json!({"Authorization": "h.h.h"}), Refusal::NotBearer),
            (json!({"Authorization": 42}), Refusal::NoToken),
            (json!({}), Refusal::NoToken),
            (json!(null), Refusal::NoToken),
        ] {
            let request = ConnectRequest::from_event(&json!({"headers": headers}));
            assert_eq!(request.bearer(), Err(refusal), "{headers}");
        }
    }

    #[test]
    fn events_of_any_shape_read_without_failing() {
        for event in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"headers": [], "queryStringParameters": "token=a"}),
            json!({"methodArn": 7, "queryStringParameters": {"token": null}}),
            json!({"methodArn": "not-an-arn"}),
            json!({"methodArn": format!("arn:{}", "x".repeat(MAX_METHOD_ARN_BYTES))}),
        ] {
            let request = ConnectRequest::from_event(&event);
            assert_eq!(request.method_arn(), Err(Refusal::NoMethodArn), "{event}");
            assert_eq!(request.bearer(), Err(Refusal::NoToken), "{event}");
        }
    }
}
