//! What the API answers, independent of how it is sent, and the contract's
//! request limits (DESIGN §7): the one shape every route and every error
//! answers in.

use serde_json::{json, Value};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most ids one bulk read may name, counted before duplicates go.
pub const MAX_BULK_IDS: usize = 1000;

/// An answer, independent of how it is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl ApiResponse {
    pub(crate) fn ok(body: Value) -> Self {
        Self { status: 200, headers: vec![("cache-control", "no-store".into())], body }
    }

    /// `204 No Content`: no body at all.
    pub(crate) fn no_content() -> Self {
        Self { status: 204, headers: vec![("cache-control", "no-store".into())], body: Value::Null }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value));
        self
    }

    /// The answer as an API Gateway v2 proxy response object: what the
    /// function returns to API Gateway (and to the local Invoke API).
    pub fn into_apigw_json(self) -> Value {
        let mut headers = serde_json::Map::new();
        if !self.body.is_null() {
            headers.insert("content-type".into(), Value::String("application/json".into()));
        }
        for (name, value) in self.headers {
            headers.insert(name.to_owned(), Value::String(value));
        }
        let body = if self.body.is_null() { String::new() } else { self.body.to_string() };
        json!({
            "statusCode": self.status,
            "headers": headers,
            "body": body,
            "isBase64Encoded": false,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
