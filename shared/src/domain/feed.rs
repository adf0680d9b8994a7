//! The push feed (DESIGN §12): which users' entries changed, as handed from
//! a commit's outbox drain to the stream function's fan-out. A change names
//! the user and the version the commit wrote; the fan-out reads the user's
//! current state itself, so a late or repeated feed event is harmless
//! (entries are states).

use serde::{Deserialize, Serialize};

use super::{Millis, UserId};

/// One user whose visible entry may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedChange {
    pub user_id: UserId,
    /// The record's version after the change (`v`, §5).
    pub version: u64,
    /// When the change was committed, ms since the epoch.
    pub at_ms: Millis,
}

/// The stream function's feed event: `{"feed": [{"user_id": 42, "version":
/// 7, "at_ms": 1764800000000}, ...]}`. Told apart from the WebSocket proxy
/// events by its `feed` field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    pub feed: Vec<FeedChange>,
}
