//! The events the stream function is invoked with, read tolerantly as JSON
//! so nothing in an event can fail the runtime's deserialization.

use base64::Engine;
use serde_json::Value;
use status_shared::domain::ids::is_storable_instant;
use status_shared::domain::stream::{ConnectionId, Viewer};
use status_shared::domain::{FeedChange, FeedEvent, UserId};

/// One invocation's event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// `$connect`, with the identity the authorizer gave (`None`: an
    /// identity that is no user id, refused with 403).
    Connect { connection: ConnectionId, viewer: Option<Viewer> },
    /// `$disconnect`.
    Disconnect { connection: ConnectionId },
    /// A client message on any other route (`subscribe`, `unsubscribe`,
    /// `ping`, `$default`): the body as received.
    Message { connection: ConnectionId, body: Vec<u8> },
    /// Changed users from the committers (`{"feed": [...]}`); changes that
    /// do not read as one are left out, each logged.
    Feed(FeedEvent),
    /// Anything else.
    Invalid(String),
}

impl StreamEvent {
    /// Reads an event: a feed event has a `feed` field; a WebSocket proxy
    /// event has `requestContext.routeKey` and `requestContext.connectionId`.
    pub fn read(event: &Value) -> Self {
        if let Some(feed) = event.get("feed") {
            return feed_of(feed);
        }
        let Some(context) = event.get("requestContext").filter(|c| c.is_object()) else {
            return Self::Invalid("neither a feed nor a WebSocket event".into());
        };
        let Some(route) = context.get("routeKey").and_then(Value::as_str) else {
            return Self::Invalid("no requestContext.routeKey string".into());
        };
        let Some(connection) = context.get("connectionId").and_then(Value::as_str).and_then(ConnectionId::new) else {
            return Self::Invalid("no usable requestContext.connectionId".into());
        };
        match route {
            "$connect" => Self::Connect { connection, viewer: viewer_of(context) },
            "$disconnect" => Self::Disconnect { connection },
            _ => {
                let body = match event.get("body") {
                    Some(Value::String(text))
                        if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) =>
                    {
                        // Undecodable base64 is no JSON either: the client
                        // gets `invalid_json`.
                        base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_else(|_| b"\xff".to_vec())
                    }
                    Some(Value::String(text)) => text.as_bytes().to_vec(),
                    _ => Vec::new(),
                };
                Self::Message { connection, body }
            }
        }
    }
}

/// The identity in `requestContext.authorizer` (DESIGN §12): a Lambda
/// authorizer's `user_id` (or else its `principalId`), a string of digits
/// or a number, is an end user; an authorizer naming neither, or none (IAM),
/// is a service. `None`: it names something that is no user id.
fn viewer_of(context: &Value) -> Option<Viewer> {
    let Some(authorizer) = context.get("authorizer").filter(|a| a.is_object()) else {
        return Some(Viewer::Service);
    };
    let named = match authorizer.get("user_id") {
        Some(value) if !value.is_null() => Some(value),
        _ => authorizer.get("principalId").filter(|v| !v.is_null() && v.as_str() != Some("")),
    };
    let Some(value) = named else { return Some(Viewer::Service) };
    let user = match value {
        Value::String(text) => text.parse::<UserId>().ok(),
        Value::Number(n) => n.as_u64().and_then(|raw| UserId::new(raw).ok()),
        _ => None,
    };
    user.map(Viewer::User)
}

fn feed_of(feed: &Value) -> StreamEvent {
    let Value::Array(items) = feed else { return StreamEvent::Invalid("feed is not an array".into()) };
    let mut changes = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::from_value::<FeedChange>(item.clone()) {
            // An instant no store holds (DESIGN §7) is no commit's.
            Ok(change) if !is_storable_instant(change.at_ms) => {
                tracing::warn!(at_ms = change.at_ms, "feed change with an impossible commit instant, left out")
            }
            Ok(change) => changes.push(change),
            Err(error) => tracing::warn!(%error, "feed change unreadable, left out"),
        }
    }
    StreamEvent::Feed(FeedEvent { feed: changes })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn connect(authorizer: Value) -> StreamEvent {
        StreamEvent::read(&json!({"requestContext": {"routeKey": "$connect", "connectionId": "abc=",
            "authorizer": authorizer}}))
    }

    fn viewer(event: StreamEvent) -> Option<Viewer> {
        match event {
            StreamEvent::Connect { viewer, .. } => viewer,
            other => panic!("not a connect: {other:?}"),
        }
    }

    #[test]
    fn the_identity_comes_from_the_authorizer() {
        let user = Some(Viewer::User(UserId::new(42).unwrap()));
        assert_eq!(viewer(connect(json!({"principalId": "42"}))), user);
        assert_eq!(viewer(connect(json!({"user_id": 42, "principalId": "someone"}))), user);
        assert_eq!(viewer(connect(json!({"user_id": "42"}))), user);
        assert_eq!(viewer(connect(Value::Null)), Some(Viewer::Service));
        assert_eq!(viewer(connect(json!({"principalId": ""}))), Some(Viewer::Service));
        assert_eq!(viewer(connect(json!({"principalId": "alice"}))), None);
        assert_eq!(viewer(connect(json!({"user_id": 0}))), None);
        assert_eq!(viewer(connect(json!({"user_id": [1]}))), None);
    }

    #[test]
    fn odd_events_are_invalid_not_a_panic() {
        for event in [
            json!(null),
            json!([]),
            json!({"requestContext": 5}),
            json!({"feed": 1}),
            json!({"requestContext": {"routeKey": "ping", "connectionId": "a{b}"}}),
            json!({"requestContext": {"routeKey": "ping"}}),
        ] {
            assert!(matches!(StreamEvent::read(&event), StreamEvent::Invalid(_)), "{event}");
        }
        let feed = StreamEvent::read(&json!({"feed": [{"user_id": 1, "version": 2, "at_ms": 3}, {"user_id": 0}]}));
        assert!(matches!(feed, StreamEvent::Feed(ref f) if f.feed.len() == 1), "the bad change alone is left out");
        let feed = StreamEvent::read(&json!({"feed": [{"user_id": 1, "version": 2, "at_ms": -5},
            {"user_id": 2, "version": 2, "at_ms": 253_402_300_800_000_i64}, {"user_id": 3, "version": 2, "at_ms": 0}]}));
        let StreamEvent::Feed(feed) = feed else { panic!("not a feed") };
        let users: Vec<u64> = feed.feed.iter().map(|c| c.user_id.get()).collect();
        assert_eq!(users, [3], "instants before the epoch or past 9999 are left out");
        let message = StreamEvent::read(&json!({"requestContext": {"routeKey": "$default", "connectionId": "a"},
            "body": "eyJhIjoxfQ==", "isBase64Encoded": true}));
        assert_eq!(
            message,
            StreamEvent::Message { connection: ConnectionId::new("a").unwrap(), body: b"{\"a\":1}".to_vec() }
        );
    }
}
