//! Redis: the hot copy of every user's record, the contract's keys, the
//! scanner's indexes and the per-user poll limit.
//!
//! Keys put the user id inside literal braces (a Redis Cluster hash tag) so
//! one user's keys share a slot:
//!
//! | key | type | content |
//! |---|---|---|
//! | `status:{42}` | HASH | `status`, `last_active_ms`, `device_count`, `v`, `sessions`, `hidden_at_ms`, `hidden_last_active_ms`, `announced`, `updated_ms`, `manual`, `manual_announced`, `erased_ms`, `sum` |
//! | `status:visible:{42}` | STRING | `true` / `false` |
//! | `status:bulk:{7}` | ZSET | shard 7: user id scored by `last_active_ms` |
//! | `status:due:{7}` | ZSET | shard 7: user id scored by when the scanner must look again |
//! | `status:poll:{42}` | STRING | present while end user 42 may not poll again |
//! | `status:erased:{42}` | STRING | for 15 min after user 42's erasure: the version it took; older writes are refused |
//! | `status:audience:{42}` | SET | user 42's except list (DESIGN §13): viewer ids and `#tag`, see [`audience`] |
//!
//! `sum` is the record's read model ([`crate::domain::ReadModel`], written as
//! [`crate::adapters::codec::summary_to_text`] describes, usually under 60
//! bytes): everything a reader needs to answer at any later `now`. The hot
//! read fetches `HMGET status:{42} v sum` and `GET status:visible:{42}`
//! only (DESIGN §10); writers read the whole hash (`HGETALL`). A hash
//! written before `sum` existed has `v` but no `sum`, and is read whole.
//!
//! # Layout
//!
//! - [`keys`]: the key names above.
//! - [`conn`]: the transport, a routed [`Batch`] sent by a [`RedisConn`] to
//!   one node or one pipeline per cluster primary; [`cluster`]: slots and
//!   the slot map.
//! - [`record`]: the record codec (a record as hash fields).
//! - here: [`RedisCache`], the cache ports (load, store, backfill).
//! - [`due`]: the scanner's due index.
//! - [`limiter`]: the poll limit.

use std::time::Duration;

use redis::{Cmd, Pipeline, Script, Value};

pub mod audience;
pub mod cluster;
pub mod conn;
pub mod due;
pub mod held;
mod kept;
pub mod keys;
pub mod limiter;
pub mod record;
mod sent;
pub mod stream;

pub use conn::{Batch, RedisConn};
pub use keys::Keys;
pub use limiter::RedisPollLimiter;
pub use record::{decode, encode};
pub use stream::RedisStreamRegistry;

use crate::domain::{Millis, Rules, UserId};
use crate::ports::{
    CacheErase, CacheError, CacheRead, CacheViews, CacheWrite, Cached, CachedView, HotCopy, Listed, Write,
};
use record::{SummaryReply, SUMMARY_FIELD};

/// Replaces a user's hash unless Redis already holds the same or a newer
/// version, and mirrors the visibility flag. Monotonic, so a write that timed
/// out and lands late, or a backfill racing the aggregator, can never move a
/// user backwards. The flag is the contract's authority: a hide found there
/// (anything but `true`, as readers take it) is kept unless this write is
/// the visibility route's show (`ARGV[4]` = `1`).
///
/// A write of a version the user's erasure guard (`KEYS[3]`) holds or
/// passed is refused too: it was merged from before the erasure and lands
/// late (a read's backfill or a write that raced the erasure), and must
/// not bring the erased user back. A backfill's TTL applies to the flag as
/// well, so reads of unknown users leave nothing behind for good.
///
/// A key of the wrong type (damaged by hand) does not fail the script: a
/// hash key that is no hash, or whose `v` is past `MAX_VERSION`, is replaced, a flag that is no string counts as
/// a hide (kept unless this write hides or shows), a guard that is no
/// string counts as absent.
///
/// `KEYS`: hash, flag, erasure guard. `ARGV`: version, TTL ms (0: none),
/// flag, show, then field/value pairs.
const STORE_SCRIPT: &str = r"
local ok, current = pcall(redis.call, 'HGET', KEYS[1], 'v')
current = ok and tonumber(current)
if current and current <= 9223372036854775807 and current >= tonumber(ARGV[1]) then
  return 0
end
local ok_guard, erased = pcall(redis.call, 'GET', KEYS[3])
erased = ok_guard and tonumber(erased)
if erased and erased >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ok_flag, flag = pcall(redis.call, 'GET', KEYS[2])
if not ok_flag then
  flag = 'damaged'
end
if ARGV[3] == 'false' or ARGV[4] == '1' or not flag or flag == 'true' then
  if ARGV[2] ~= '0' then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[2], ARGV[3])
  end
end
return 1
";

/// How long an erasure's guard refuses writes merged from before it: the
/// longest a Lambda invocation can run (15 min), so no call that read the
/// user before the erasure can still be writing when it goes.
pub const ERASURE_GUARD: Duration = Duration::from_secs(15 * 60);

/// The Redis side of the ports: user records, visibility flags and the
/// shard indexes.
#[derive(Clone)]
pub struct RedisCache {
    writer: RedisConn,
    reader: RedisConn,
    keys: Keys,
    rules: Rules,
    shards: u32,
    backfill_ttl: Duration,
    store_script: std::sync::Arc<Script>,
    /// Shared by the clones: see [`audience::ListsSeen`].
    lists_seen: std::sync::Arc<audience::ListsSeen>,
}

impl RedisCache {
    /// `reader` serves the read path (a replica endpoint); pass the writer's
    /// connection again when there is none.
    pub fn new(
        writer: RedisConn,
        reader: RedisConn,
        keys: Keys,
        rules: Rules,
        shards: u32,
        backfill_ttl: Duration,
    ) -> Self {
        Self {
            writer,
            reader,
            keys,
            rules,
            shards,
            backfill_ttl,
            store_script: std::sync::Arc::new(Script::new(STORE_SCRIPT)),
            lists_seen: Default::default(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The same cache reading from the primary: for writers, which must
    /// merge into the newest state, not a replica's lagging copy.
    pub fn primary_only(&self) -> Self {
        Self { reader: self.writer.clone(), ..self.clone() }
    }

    pub fn writer(&self) -> &RedisConn {
        &self.writer
    }

    /// The commands of a bulk read ([`CacheViews::load_views`] of hashes
    /// that hold a read model), exposed so the benchmark can time the same
    /// round trip without the service around it.
    pub fn load_pipeline(&self, users: &[UserId]) -> Pipeline {
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("HMGET").arg(self.keys.status(*user)).arg("v").arg(SUMMARY_FIELD);
            pipe.cmd("GET").arg(self.keys.visible(*user));
        }
        pipe
    }

    /// The commands of a bulk read as a routed batch: per user, the version
    /// and the read model, and the visibility flag.
    fn views_batch(&self, users: &[UserId]) -> Batch {
        // The hot read's own cost is mostly building these 2,000 commands:
        // one key buffer reused, and each command sized up front.
        let mut batch = Batch::with_capacity(users.len() * 2);
        let mut key = String::with_capacity(self.keys.prefix().len() + 48);
        for user in users {
            self.keys.write_status(&mut key, *user);
            let mut hmget = Cmd::with_capacity(4, key.len() + 16);
            hmget.arg("HMGET").arg(key.as_str()).arg("v").arg(SUMMARY_FIELD);
            batch.push(&key, hmget);
            self.keys.write_visible(&mut key, *user);
            let mut get = Cmd::with_capacity(2, key.len() + 3);
            get.arg("GET").arg(key.as_str());
            batch.push(&key, get);
        }
        batch
    }

    /// `HGETALL` of each user's hash: the whole records.
    fn records_batch(&self, users: &[UserId]) -> Batch {
        let mut batch = Batch::new();
        for user in users {
            let status = self.keys.status(*user);
            let mut hgetall = redis::cmd("HGETALL");
            hgetall.arg(&status);
            batch.push(&status, hgetall);
        }
        batch
    }

    /// The commands of a writer's load as a routed batch: whole records and
    /// flags.
    fn load_batch(&self, users: &[UserId]) -> Batch {
        let mut batch = Batch::new();
        for user in users {
            let (status, visible) = (self.keys.status(*user), self.keys.visible(*user));
            let mut hgetall = redis::cmd("HGETALL");
            hgetall.arg(&status);
            let mut get = redis::cmd("GET");
            get.arg(&visible);
            batch.push(&status, hgetall).push(&visible, get);
        }
        batch
    }

    fn store_batch(&self, writes: &[Write<'_>], now: Millis, ttl: Option<Duration>) -> Batch {
        let mut batch = Batch::new();
        // Loading ahead of each node's part costs no round trip and means a
        // server that lost its script cache (restart, failover) never
        // answers NOSCRIPT.
        batch.preamble(conn::script_load(STORE_SCRIPT));
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1)) as u64;
        let mut active_by_shard: std::collections::BTreeMap<u32, Vec<(Millis, u64)>> = Default::default();
        let mut due_by_shard: std::collections::BTreeMap<u32, Vec<(Millis, u64)>> = Default::default();
        for write in writes {
            let user = write.user;
            let status_key = self.keys.status(user);
            let mut store = redis::cmd("EVALSHA");
            store.arg(self.store_script.get_hash()).arg(3).arg(&status_key).arg(self.keys.visible(user));
            store.arg(self.keys.erased(user));
            store.arg(write.record.version).arg(ttl_ms);
            store.arg(if write.record.state.visibility.is_visible() { "true" } else { "false" });
            store.arg(if write.shows { "1" } else { "0" });
            for (field, value) in encode(write.record, now, &self.rules) {
                store.arg(field).arg(value);
            }
            batch.push(&status_key, store);
            let shard = user.shard(self.shards);
            if let Some(active) = write.record.state.presence.last_active_ms {
                active_by_shard.entry(shard).or_default().push((active, user.get()));
            }
            if let Some(due) = write.next_change_ms {
                due_by_shard.entry(shard).or_default().push((due, user.get()));
            }
        }
        // One command per shard and index rather than one per user. GT keeps
        // the contract's score the newest activity whatever the order of
        // writes; the due index takes the writer's time when it is earlier
        // (waking the scanner early costs one look, late would leave a
        // status stale) or when the old one has passed (see DUE_SCRIPT).
        for (shard, members) in active_by_shard {
            let key = self.keys.bulk(shard);
            batch.push(&key, zadd(&key, "GT", &members));
        }
        for (shard, members) in due_by_shard {
            due::schedule(&mut batch, &self.keys.due(shard), now, &members);
        }
        batch
    }
}

/// `values` as the replies of `want` commands, in order; another count
/// means the connection is out of step, and fails the call.
fn expect_replies(values: Vec<Value>, want: usize) -> Result<std::vec::IntoIter<Value>, CacheError> {
    if values.len() != want {
        return Err(CacheError::Corrupt(format!("expected {want} replies, got {}", values.len())));
    }
    Ok(values.into_iter())
}

/// `ZADD key GT|LT score member ...` for many members at once.
fn zadd(key: &str, flag: &str, members: &[(Millis, u64)]) -> Cmd {
    let mut cmd = redis::cmd("ZADD");
    cmd.arg(key).arg(flag);
    for (score, member) in members {
        cmd.arg(*score).arg(*member);
    }
    cmd
}

impl CacheRead for RedisCache {
    async fn load(&self, users: &[UserId]) -> Result<Vec<Cached>, CacheError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.reader.exec_replies(self.load_batch(users)).await?;
        let mut replies = expect_replies(values, users.len() * 2)?;
        let mut out = Vec::with_capacity(users.len());
        while let (Some(hash), Some(flag)) = (replies.next(), replies.next()) {
            out.push(record::decode_reply(hash, flag));
        }
        Ok(out)
    }
}

impl CacheViews for RedisCache {
    async fn load_views(&self, users: &[UserId]) -> Result<Vec<CachedView>, CacheError> {
        self.load_views_with(users, None).await.map(|(views, _)| views)
    }

    async fn load_views_for(
        &self,
        users: &[UserId],
        reader: UserId,
    ) -> Result<(Vec<CachedView>, Vec<Listed>), CacheError> {
        self.load_views_with(users, Some(reader)).await
    }
}

impl RedisCache {
    /// The views of `users`, and for end user `reader` the lists
    /// [`audience::ListsSeen`] guesses, in one round trip (a second only
    /// for hashes without a read model); what the views name is then
    /// remembered for the next read.
    async fn load_views_with(
        &self,
        users: &[UserId],
        reader: Option<UserId>,
    ) -> Result<(Vec<CachedView>, Vec<Listed>), CacheError> {
        if users.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut batch = self.views_batch(users);
        let asks = reader.map_or_else(Vec::new, |reader| self.lists_seen.guesses(users, reader));
        self.push_listed(&mut batch, &asks);
        let values = self.reader.exec_replies(batch).await?;
        let mut replies = expect_replies(values, users.len() * 2 + asks.len())?;
        let mut out = Vec::with_capacity(users.len());
        let mut whole = Vec::new();
        for _ in users {
            let (Some(summary), Some(flag)) = (replies.next(), replies.next()) else { break };
            let (copy, version) = match record::decode_summary_reply(summary) {
                SummaryReply::ReadModel(summary, version) => (Some(HotCopy::ReadModel(summary)), version),
                SummaryReply::Miss => (None, 0),
                SummaryReply::Whole => {
                    whole.push(out.len());
                    (None, 0)
                }
            };
            out.push(CachedView { copy, visible_flag: record::decode_flag(flag), version });
        }
        let listed: Vec<Listed> = asks.into_iter().zip(replies.map(audience::decode_listed)).collect();
        self.lists_seen.learn(users, &out);
        if !whole.is_empty() {
            // Hashes without a read model (written before it existed): their
            // whole records, in one more round trip for just those users. A
            // hash gone meanwhile reads as a miss, one rewritten meanwhile
            // as its newer record; either answers as well as the first reply.
            let ids: Vec<UserId> = whole.iter().map(|i| users[*i]).collect();
            let hashes = self.reader.exec_replies(self.records_batch(&ids)).await?;
            for (i, hash) in whole.into_iter().zip(expect_replies(hashes, ids.len())?) {
                let record = record::decode_hash(hash);
                out[i].version = record.as_ref().map_or(0, |r| r.version);
                out[i].copy = record.map(HotCopy::Record);
            }
        }
        Ok((out, listed))
    }
}

impl CacheWrite for RedisCache {
    async fn store(&self, writes: &[Write<'_>], now: Millis) -> Result<(), CacheError> {
        self.writer.exec(self.store_batch(writes, now, None)).await.map(drop)
    }

    async fn backfill(&self, writes: &[Write<'_>], now: Millis) -> Result<(), CacheError> {
        self.writer.exec(self.store_batch(writes, now, Some(self.backfill_ttl))).await.map(drop)
    }
}

impl CacheErase for RedisCache {
    async fn erase(&self, user: UserId, guard: Option<u64>) -> Result<(), CacheError> {
        let mut batch = Batch::new();
        if let Some(version) = guard {
            let key = self.keys.erased(user);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(version).arg("PX").arg(ERASURE_GUARD.as_millis() as u64);
            batch.push(&key, set);
        }
        for key in [self.keys.status(user), self.keys.visible(user), self.keys.poll(user), self.keys.audience(user)] {
            let mut del = redis::cmd("DEL");
            del.arg(&key);
            batch.push(&key, del);
        }
        // Every shard's indexes under `SHARDS`, not only the user's: cheap
        // (ZREM of an absent member costs nothing) and safe should a
        // member be left in another shard's index.
        for shard in 0..self.shards.max(1) {
            for key in [self.keys.bulk(shard), self.keys.due(shard)] {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(&key).arg(user.get());
                batch.push(&key, zrem);
            }
        }
        // A shard index of the wrong type (damaged by hand) holds no member
        // to remove, and must not block every erasure; any other refusal
        // fails the erasure, which a retry completes.
        let replies = self.writer.exec_replies(batch).await?;
        match conn::refusal(&replies, |code| code != "WRONGTYPE") {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
