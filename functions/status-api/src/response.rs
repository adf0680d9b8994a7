//! What the API answers, independent of how it is sent, and the contract's
//! request limits (DESIGN §7): the one shape every route and every error
//! answers in.

use serde::Serialize;
use serde_json::{json, Value};
use status_shared::domain::{LastSeen, ManualStatus, Millis, Platforms, UserId, View};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most ids one bulk read may name, counted before duplicates go.
pub const MAX_BULK_IDS: usize = 1000;

/// One user's status as every read answers it (DESIGN §7, §7.1).
#[derive(Serialize)]
pub(crate) struct StatusBody<'a> {
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

/// The answer for `user` from the `view` its reader may see.
pub(crate) fn status_body(user: UserId, view: &View) -> StatusBody<'_> {
    StatusBody {
        user_id: user,
        status: view.status.as_str(),
        last_active_ms: view.last_active_ms,
        manual: view.manual.as_ref(),
        platforms: view.platforms.map(PlatformsBody),
        last_seen: view.last_seen.map(LastSeen::as_str),
    }
}

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
