//! The ended connections whose sent state is kept, per end user (DESIGN
//! §12 "Kept after the end"): `stream:kept:{42}`, a ZSET of user 42's
//! ended connection ids scored by how long each one's sent state is kept
//! (ms), in that user's slot. At a `$disconnect` the connection goes in,
//! and the oldest beyond [`KEPT_ENDED_PER_VIEWER`] come out, their
//! `stream:sent:{c}` deleted: so what ended connections leave in Redis is
//! bounded per user, however often they connect.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::conn::script_load;
use super::{Batch, Keys};
use crate::domain::stream::limits::KEPT_ENDED_PER_VIEWER;
use crate::domain::stream::ConnectionId;
use crate::domain::{Millis, UserId};

/// Adds an ended connection and pops the oldest beyond the cap, in one
/// step. `KEYS`: kept. `ARGV`: keep until (ms), connection id, cap.
/// Answers the popped ids. The set lives as long as its newest member.
const KEEP_SCRIPT: &str = r"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], newest[2])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
local popped = {}
if extra > 0 then
  local pairs = redis.call('ZPOPMIN', KEYS[1], extra)
  for i = 1, #pairs, 2 do popped[#popped + 1] = pairs[i] end
end
return popped
";

static KEEP: LazyLock<Script> = LazyLock::new(|| Script::new(KEEP_SCRIPT));

/// Adds to `batch` the step that keeps `connection` among `viewer`'s ended
/// connections until `keep_until_ms`; [`popped`] reads its reply.
pub(super) fn push_keep(
    batch: &mut Batch,
    keys: &Keys,
    viewer: UserId,
    connection: &ConnectionId,
    keep_until_ms: Millis,
) {
    let kept = keys.stream_kept(viewer);
    batch.preamble(script_load(KEEP_SCRIPT));
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(KEEP.get_hash()).arg(1).arg(&kept).arg(keep_until_ms).arg(connection.as_str()).arg(KEPT_ENDED_PER_VIEWER);
    batch.push(&kept, cmd);
}

/// The connections [`push_keep`]'s step popped, whose sent state goes;
/// an unreadable reply pops nothing (their state then runs out on its own).
pub(super) fn popped(reply: Option<&Value>) -> Vec<ConnectionId> {
    let ids: Vec<String> = reply.and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
    ids.iter().filter_map(|id| ConnectionId::new(id)).collect()
}

/// A batch deleting the sent state of `popped` connections.
pub(super) fn forget_sent(keys: &Keys, popped: &[ConnectionId]) -> Batch {
    let mut batch = Batch::with_capacity(popped.len());
    for connection in popped {
        let sent = keys.stream_sent(connection);
        let mut del = redis::cmd("DEL");
        del.arg(&sent);
        batch.push(&sent, del);
    }
    batch
}
