//! The name of every Redis key the service uses (the table in the parent
//! module), under an optional prefix so several stacks share one Redis.

use std::fmt::Write as _;

use crate::domain::stream::ConnectionId;
use crate::domain::UserId;

/// Builds every key the service uses, under an optional prefix.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn status(&self, user: UserId) -> String {
        format!("{}status:{{{}}}", self.prefix, user)
    }
    pub fn visible(&self, user: UserId) -> String {
        format!("{}status:visible:{{{}}}", self.prefix, user)
    }
    /// [`Keys::status`] written into `buf` (cleared first): a loop over
    /// many users reuses one buffer instead of allocating a key each.
    pub fn write_status(&self, buf: &mut String, user: UserId) {
        buf.clear();
        // Writing to a String cannot fail.
        let _ = write!(buf, "{}status:{{{}}}", self.prefix, user);
    }
    /// [`Keys::visible`] written into `buf` (cleared first), as
    /// [`Keys::write_status`].
    pub fn write_visible(&self, buf: &mut String, user: UserId) {
        buf.clear();
        let _ = write!(buf, "{}status:visible:{{{}}}", self.prefix, user);
    }
    pub fn bulk(&self, shard: u32) -> String {
        format!("{}status:bulk:{{{}}}", self.prefix, shard)
    }
    pub fn due(&self, shard: u32) -> String {
        format!("{}status:due:{{{}}}", self.prefix, shard)
    }
    /// The erasure guard: present for a while after the user's erasure,
    /// holding the version it took (see `ERASURE_GUARD`).
    pub fn erased(&self, user: UserId) -> String {
        format!("{}status:erased:{{{}}}", self.prefix, user)
    }
    /// The user's except list (DESIGN §13): SET of viewer ids plus the
    /// member `#tag`, the [`crate::domain::ListTag`] the list is stored
    /// under; in the user's slot.
    pub fn audience(&self, user: UserId) -> String {
        format!("{}status:audience:{{{}}}", self.prefix, user)
    }
    pub fn poll(&self, caller: UserId) -> String {
        format!("{}status:poll:{{{}}}", self.prefix, caller)
    }
    /// The connections watching a user (DESIGN §12): a ZSET of connection
    /// ids scored by when the watch lapses (ms). In the user's slot, so a
    /// commit can ask "is anyone watching?" in its own pipeline.
    pub fn stream_watch(&self, user: UserId) -> String {
        format!("{}stream:watch:{{{}}}", self.prefix, user)
    }
    /// A stream connection's identity (DESIGN §12): HASH `viewer`,
    /// `lapse`, `seq`. Every key of one connection shares its `{id}` slot.
    pub fn stream_conn(&self, connection: &ConnectionId) -> String {
        format!("{}stream:conn:{{{}}}", self.prefix, connection)
    }
    /// A stream connection's subscribed ids: SET of user ids.
    pub fn stream_ids(&self, connection: &ConnectionId) -> String {
        format!("{}stream:ids:{{{}}}", self.prefix, connection)
    }
    /// The ended connections of end user `viewer` whose sent state is
    /// kept (DESIGN §12): ZSET of connection ids scored by how long (ms),
    /// in the user's slot.
    pub fn stream_kept(&self, viewer: UserId) -> String {
        format!("{}stream:kept:{{{}}}", self.prefix, viewer)
    }
    /// What a stream connection was last sent: HASH, `v` the viewer and,
    /// per user id, `seq:version:at_ms:digest`.
    pub fn stream_sent(&self, connection: &ConnectionId) -> String {
        format!("{}stream:sent:{{{}}}", self.prefix, connection)
    }
    /// The users of a shard with held-back activity (DESIGN §12): ZSET of
    /// user ids scored by their flush instant (ms), in the shard's slot
    /// (that of [`Keys::due`]).
    pub fn stream_held(&self, shard: u32) -> String {
        format!("{}stream:held:{{{}}}", self.prefix, shard)
    }
    /// The short lock that serializes the frames of one connection.
    pub fn stream_lock(&self, connection: &ConnectionId) -> String {
        format!("{}stream:lock:{{{}}}", self.prefix, connection)
    }
}
