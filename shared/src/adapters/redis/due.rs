//! The scanner's due index (`status:due:{shard}`): how writers schedule
//! users in it and how the scanner reads and settles it. When a user is
//! due is a presence rule ([`crate::domain::schedule`]); the scripts here
//! only apply it atomically to the scores they find.

use redis::{Script, Value};

use super::conn::script_load;
use super::{Batch, RedisCache};
use crate::domain::{Millis, UserId};
use crate::ports::CacheError;

/// Schedules users in a due index: `ARGV[1]` is the writer's `now`, then
/// pairs of due time and member. The condition is
/// [`crate::domain::schedule::replaces`], applied to each member's score in
/// one atomic step (the integration test
/// `the_due_script_applies_the_domain_rule` checks the two agree).
pub const DUE_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local i = 2
while i <= #ARGV do
  local due, member = tonumber(ARGV[i]), ARGV[i + 1]
  local current = tonumber(redis.call('ZSCORE', KEYS[1], member))
  if not current or due < current or current <= now then
    redis.call('ZADD', KEYS[1], due, member)
  end
  i = i + 2
end
return 1
";

/// Reschedules one user in a due index only if its score is unchanged.
pub const SETTLE_SCRIPT: &str = r"
local i = 1
while i <= #ARGV do
  local member, seen, due = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score and tonumber(score) == tonumber(seen) then
    if due == '' then
      redis.call('ZREM', KEYS[1], member)
    else
      redis.call('ZADD', KEYS[1], due, member)
    end
  end
  i = i + 3
end
return 1
";

/// The member that marks a due index complete. It is not a user id, and its
/// score (`+inf`) keeps it out of every range the scanner reads; losing the
/// index (FLUSHALL, failover, eviction of the key) loses it too.
const INDEX_COMPLETE: &str = "index-complete";

impl crate::ports::DueIndex for RedisCache {
    fn shards(&self) -> u32 {
        self.shards
    }

    async fn due(&self, shard: u32, now: Millis, limit: usize) -> Result<(Vec<(UserId, f64)>, bool), CacheError> {
        let key = self.keys.due(shard);
        let mut range = redis::cmd("ZRANGE");
        range.arg(&key).arg("-inf").arg(now).arg("BYSCORE").arg("LIMIT").arg(0).arg(limit).arg("WITHSCORES");
        let mut marker = redis::cmd("ZSCORE");
        marker.arg(&key).arg(INDEX_COMPLETE);
        let mut batch = Batch::new();
        batch.push(&key, range).push(&key, marker);
        let mut replies = self.writer.exec(batch).await?.into_iter();
        let (reply, marker) = (replies.next().unwrap_or(Value::Nil), replies.next().unwrap_or(Value::Nil));
        let raw: Vec<(String, f64)> = redis::from_redis_value(reply).map_err(|e| CacheError::Corrupt(e.to_string()))?;
        // A member that is not a user id cannot be scanned; skip it.
        let due = raw
            .into_iter()
            .filter_map(|(id, score)| id.parse::<u64>().ok().and_then(|id| UserId::new(id).ok()).map(|u| (u, score)))
            .collect();
        Ok((due, !matches!(marker, Value::Nil)))
    }

    async fn restore(
        &self,
        shard: u32,
        entries: &[(UserId, Millis)],
        complete: bool,
        now: Millis,
    ) -> Result<(), CacheError> {
        let key = self.keys.due(shard);
        let mut batch = Batch::new();
        let members: Vec<(Millis, u64)> = entries.iter().map(|(user, due)| (*due, user.get())).collect();
        schedule(&mut batch, &key, now, &members);
        if complete {
            let mut mark = redis::cmd("ZADD");
            mark.arg(&key).arg("+inf").arg(INDEX_COMPLETE);
            batch.push(&key, mark);
        }
        self.writer.exec(batch).await.map(drop)
    }

    async fn settle(&self, shard: u32, entries: &[(UserId, f64, Option<Millis>)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.keys.due(shard);
        let mut settle = redis::cmd("EVALSHA");
        settle.arg(Script::new(SETTLE_SCRIPT).get_hash()).arg(1).arg(&key);
        for (user, seen, due) in entries {
            settle.arg(user.get()).arg(*seen).arg(due.map(|d| d.to_string()).unwrap_or_default());
        }
        let mut batch = Batch::new();
        batch.preamble(script_load(SETTLE_SCRIPT));
        batch.push(&key, settle);
        self.writer.exec(batch).await.map(drop)
    }
}

/// Adds to `batch` the scheduling of `members` (due time in epoch ms, user
/// id) in the due index `key`, as written at `now`: one command per index,
/// not one per user.
pub(super) fn schedule(batch: &mut Batch, key: &str, now: Millis, members: &[(Millis, u64)]) {
    if members.is_empty() {
        return;
    }
    batch.preamble(script_load(DUE_SCRIPT));
    let mut schedule = redis::cmd("EVALSHA");
    schedule.arg(Script::new(DUE_SCRIPT).get_hash()).arg(1).arg(key).arg(now);
    for (due, member) in members {
        schedule.arg(*due).arg(*member);
    }
    batch.push(key, schedule);
}
