//! A WebSocket connection as the rules see it (DESIGN §12): its id, who
//! holds it, and how long its registrations live.

use std::fmt;

use crate::domain::ids::{Millis, UserId};

/// How long a connection's registrations live whatever happens: 2 h 15 min
/// in ms (DESIGN §12). API Gateway ends every connection after 2 h.
pub const CONNECTION_LAPSE_MS: Millis = 8_100_000;

/// An API Gateway connection id: 1 to 128 characters of the base64 and
/// URL-safe alphabets (`[A-Za-z0-9+/=_-]`), so it can sit inside a Redis
/// hash tag and a cursor without escaping.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// The longest connection id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// `None` for an empty, too long or oddly spelled id.
    pub fn new(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'));
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who holds a connection, decided at `$connect` (DESIGN §12): an end user
/// sees their own true status, everyone else (services included) the view
/// the rules grant (§4 property 4, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Viewer {
    User(UserId),
    Service,
}

impl Viewer {
    /// Whether this viewer is `user` themself.
    pub fn is(self, user: UserId) -> bool {
        self == Viewer::User(user)
    }

    /// The end user, or `None` for a service: the reader the read path
    /// takes (`Reader::read`, the audiences of DESIGN §13).
    pub fn reader(self) -> Option<UserId> {
        match self {
            Viewer::User(user) => Some(user),
            Viewer::Service => None,
        }
    }

    /// `u:42` or `s`: how the registry stores it.
    pub fn to_text(self) -> String {
        match self {
            Viewer::User(user) => format!("u:{user}"),
            Viewer::Service => "s".to_owned(),
        }
    }

    /// Reads [`Viewer::to_text`]; `None` for anything else.
    pub fn from_text(text: &str) -> Option<Self> {
        match text {
            "s" => Some(Viewer::Service),
            _ => text.strip_prefix("u:")?.parse().ok().map(Viewer::User),
        }
    }
}
