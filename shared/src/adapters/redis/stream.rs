//! The stream connection registry (DESIGN §12) in Redis.
//!
//! | key | type | content | lives |
//! |---|---|---|---|
//! | `stream:watch:{42}` | ZSET | connection ids watching user 42, scored by their lapse (ms) | members lapse by score, trimmed when read |
//! | `stream:conn:{c}` | HASH | `viewer` (`u:42` or `s`), `lapse`, `seq`, `framed` (ms of the last `status` frame) | until the lapse, or `$disconnect` / `410` |
//! | `stream:ids:{c}` | SET | the user ids connection `c` holds | as `stream:conn` |
//! | `stream:sent:{c}` | HASH | `v` the viewer; `s` the highest `seq` recorded (a cursor naming a later one was edited: reset); per user id `seq:version:at_ms:digest:shape:next_at` (`next_at` empty for `"next": null`; the four-part form of earlier releases is read as never holdable) | lapse + cursor retention; retention after the end |
//! | `stream:kept:{42}` | ZSET | user 42's ended connections whose `stream:sent` is kept, scored by until when (ms); the newest `KEPT_ENDED_PER_VIEWER` (16) | as its newest member (see `kept.rs`) |
//! | `stream:lock:{c}` | STRING | the token of the call numbering `c`'s frames | 10 s at most |
//! | `stream:held:{7}` | ZSET | users of shard 7 with held-back activity, scored by their flush instant (ms) | 2 h 15 min past the last hold (see `held.rs`) |
//!
//! A connection's keys share its `{c}` slot, so the scripts below touch one
//! slot each; the watch sets live in their user's slot and are written
//! through routed batches, one pipeline per node; the held sets live in
//! their shard's slot, the slot of the shard's due index.

use std::sync::Arc;

use redis::{Script, Value};

use super::conn::script_load;
use super::sent::{decode_sent, encode_sent};
use super::{kept, Batch, Keys, RedisConn};
use crate::domain::stream::{ConnectionId, Viewer};
use crate::domain::{Millis, UserId};
use crate::ports::{Begin, CacheError, ConnectionState, Finish, SentBy, StreamRegistry};

/// Takes the lock and reads the connection's state in one step. `KEYS`:
/// lock, conn, ids, sent. `ARGV`: token, lock ms, then user ids. Answers
/// `{0}` unknown, `{1}` busy (another token holds the lock), or `{2,
/// viewer, lapse, seq, framed, held, (member, sent) per user}`. The same
/// token takes its own lock again: a batch sent twice after a dropped
/// connection does not wait on itself.
const BEGIN_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {0}
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {1}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local meta = redis.call('HMGET', KEYS[2], 'viewer', 'lapse', 'seq', 'framed')
local out = {2, meta[1] or '', meta[2] or '0', meta[3] or '0', meta[4] or '0', redis.call('SCARD', KEYS[3])}
for i = 3, #ARGV do
  out[#out + 1] = redis.call('SISMEMBER', KEYS[3], ARGV[i])
  out[#out + 1] = redis.call('HGET', KEYS[4], ARGV[i]) or ''
end
return out
";

/// Records what was sent and gives the lock back if the token still holds
/// it. One `HSET` per user rather than `unpack`, which Lua bounds to a few
/// thousand values. `KEYS`: lock, sent. `ARGV`: token, keep until (ms), viewer, then
/// user/value pairs.
const FINISH_SCRIPT: &str = r"
if #ARGV > 4 then
  redis.call('HSET', KEYS[2], 'v', ARGV[3])
  local last = tonumber(redis.call('HGET', KEYS[2], 's')) or 0
  if tonumber(ARGV[4]) > last then
    redis.call('HSET', KEYS[2], 's', ARGV[4])
  end
  for i = 5, #ARGV - 1, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Sets `seq` back to `ARGV[2]` if it is still `ARGV[1]`. `KEYS`: conn.
const TAKE_BACK_SCRIPT: &str =
    "if redis.call('HGET', KEYS[1], 'seq') == ARGV[1] then redis.call('HSET', KEYS[1], 'seq', ARGV[2]) end return 1";

/// The registry in Redis (see the module's table).
#[derive(Clone)]
pub struct RedisStreamRegistry {
    conn: RedisConn,
    keys: Keys,
    begin: Arc<Script>,
    finish: Arc<Script>,
}

impl RedisStreamRegistry {
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        Self { conn, keys, begin: Arc::new(Script::new(BEGIN_SCRIPT)), finish: Arc::new(Script::new(FINISH_SCRIPT)) }
    }
}

fn corrupt(what: &str) -> CacheError {
    CacheError::Corrupt(format!("stream registry: {what}"))
}

fn text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref::<Option<String>>(value).ok().flatten()
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// One connection's answer to [`BEGIN_SCRIPT`], which asked about `users`
/// ids; a refusal (a key of the wrong type) is that connection's error.
fn read_begin(reply: Value, connection: &ConnectionId, users: usize) -> Result<Begin, CacheError> {
    let reply = match reply {
        Value::Array(reply) => reply,
        Value::ServerError(error) => return Err(corrupt(&format!("begin on {connection} refused: {error:?}"))),
        _ => return Err(corrupt("begin answered no array")),
    };
    match reply.first().and_then(int) {
        Some(0) => return Ok(Begin::Unknown),
        Some(1) => return Ok(Begin::Busy),
        Some(2) => {}
        _ => return Err(corrupt("begin answered an unknown outcome")),
    }
    if reply.len() != 6 + users * 2 {
        return Err(corrupt("begin answered the wrong number of values"));
    }
    let viewer = reply.get(1).and_then(text).and_then(|t| Viewer::from_text(&t));
    let Some(viewer) = viewer else {
        // A connection whose identity cannot be read is treated as gone.
        tracing::warn!(connection = %connection, "stream connection with an unreadable viewer");
        return Ok(Begin::Unknown);
    };
    let lapse_ms = reply.get(2).and_then(int).unwrap_or(0);
    let seq = reply.get(3).and_then(int).and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let framed_ms = reply.get(4).and_then(int).unwrap_or(0);
    let held = reply.get(5).and_then(int).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let mut holds = Vec::with_capacity(users);
    let mut sent = Vec::with_capacity(users);
    for pair in reply[6..].chunks_exact(2) {
        holds.push(int(&pair[0]) == Some(1));
        sent.push(text(&pair[1]).as_deref().and_then(decode_sent));
    }
    Ok(Begin::Ready(ConnectionState { viewer, lapse_ms, seq, framed_ms, held, holds, sent }))
}

impl StreamRegistry for RedisStreamRegistry {
    async fn connect(&self, connection: &ConnectionId, viewer: Viewer, lapse_ms: Millis) -> Result<(), CacheError> {
        let (meta, ids) = (self.keys.stream_conn(connection), self.keys.stream_ids(connection));
        let mut batch = Batch::new();
        let mut del = redis::cmd("DEL");
        del.arg(&meta).arg(&ids);
        let mut hset = redis::cmd("HSET");
        hset.arg(&meta).arg("viewer").arg(viewer.to_text()).arg("lapse").arg(lapse_ms).arg("seq").arg(0);
        let mut expire = redis::cmd("PEXPIREAT");
        expire.arg(&meta).arg(lapse_ms);
        batch.push(&meta, del).push(&meta, hset).push(&meta, expire);
        self.conn.exec(batch).await.map(drop)
    }

    async fn is_connected(&self, connection: &ConnectionId) -> Result<bool, CacheError> {
        let meta = self.keys.stream_conn(connection);
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&meta);
        let mut batch = Batch::new();
        batch.push(&meta, exists);
        let replies = self.conn.exec_replies(batch).await?;
        Ok(replies.first().and_then(int) == Some(1))
    }

    async fn disconnect(&self, connection: &ConnectionId, keep_until_ms: Millis) -> Result<(), CacheError> {
        let ids_key = self.keys.stream_ids(connection);
        let meta = self.keys.stream_conn(connection);
        let mut read = Batch::new();
        let mut members = redis::cmd("SMEMBERS");
        members.arg(&ids_key);
        let mut viewer = redis::cmd("HGET");
        viewer.arg(&meta).arg("viewer");
        read.push(&ids_key, members).push(&meta, viewer);
        let replies = self.conn.exec_replies(read).await?;
        // A damaged ids key holds nothing to remove; the rest still goes.
        let ids: Vec<u64> = replies.first().and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or_default();
        // Only an end user's ended connections are capped (`kept.rs`).
        let end_user = match replies.get(1).and_then(text).and_then(|t| Viewer::from_text(&t)) {
            Some(Viewer::User(user)) => Some(user),
            _ => None,
        };
        let mut batch = Batch::new();
        for id in ids {
            let Ok(user) = UserId::new(id) else { continue };
            let key = self.keys.stream_watch(user);
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&key).arg(connection.as_str());
            batch.push(&key, zrem);
        }
        let mut del = redis::cmd("DEL");
        del.arg(&meta).arg(&ids_key);
        batch.push(&meta, del);
        let sent = self.keys.stream_sent(connection);
        let mut expire = redis::cmd("PEXPIREAT");
        expire.arg(&sent).arg(keep_until_ms);
        batch.push(&sent, expire);
        // The keep step's reply, last, names the connections whose state
        // goes now. A `$disconnect` repeated after its connection was
        // forgotten finds no viewer, and keeps nothing twice.
        if let Some(user) = end_user {
            kept::push_keep(&mut batch, &self.keys, user, connection, keep_until_ms);
        }
        let replies = self.conn.exec_replies(batch).await?;
        if let Some(error) = super::conn::refusal(&replies, |code| code != "WRONGTYPE") {
            return Err(error);
        }
        let popped = if end_user.is_some() { kept::popped(replies.last()) } else { Vec::new() };
        if !popped.is_empty() {
            self.conn.exec(kept::forget_sent(&self.keys, &popped)).await?;
        }
        Ok(())
    }

    async fn begin_many(
        &self,
        token: &str,
        ttl_ms: i64,
        asks: &[(ConnectionId, Vec<UserId>)],
    ) -> Result<Vec<Result<Begin, CacheError>>, CacheError> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Batch::with_capacity(asks.len());
        batch.preamble(script_load(BEGIN_SCRIPT));
        for (connection, users) in asks {
            let lock = self.keys.stream_lock(connection);
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.begin.get_hash()).arg(4).arg(&lock);
            cmd.arg(self.keys.stream_conn(connection)).arg(self.keys.stream_ids(connection));
            cmd.arg(self.keys.stream_sent(connection)).arg(token).arg(ttl_ms.max(1));
            for user in users {
                cmd.arg(user.get());
            }
            batch.push(&lock, cmd);
        }
        let replies = self.conn.exec_replies(batch).await?;
        if replies.len() != asks.len() {
            return Err(corrupt("begin answered the wrong number of replies"));
        }
        Ok(replies
            .into_iter()
            .zip(asks)
            .map(|(reply, (connection, users))| read_begin(reply, connection, users.len()))
            .collect())
    }

    async fn set_seq_many(&self, seqs: &[(ConnectionId, u64, Option<Millis>)]) -> Result<(), CacheError> {
        let mut batch = Batch::with_capacity(seqs.len());
        for (connection, seq, framed_ms) in seqs {
            let meta = self.keys.stream_conn(connection);
            let mut hset = redis::cmd("HSET");
            hset.arg(&meta).arg("seq").arg(*seq);
            if let Some(framed) = framed_ms {
                hset.arg("framed").arg(*framed);
            }
            batch.push(&meta, hset);
        }
        self.conn.exec(batch).await.map(drop)
    }

    async fn take_back_seq(&self, connection: &ConnectionId, reserved: u64, used: u64) -> Result<(), CacheError> {
        let meta = self.keys.stream_conn(connection);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(TAKE_BACK_SCRIPT).arg(1).arg(&meta).arg(reserved).arg(used);
        let mut batch = Batch::new();
        batch.push(&meta, cmd);
        self.conn.exec(batch).await.map(drop)
    }

    async fn framed(&self, connections: &[ConnectionId]) -> Result<Vec<Millis>, CacheError> {
        if connections.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Batch::with_capacity(connections.len());
        for connection in connections {
            let meta = self.keys.stream_conn(connection);
            let mut hget = redis::cmd("HGET");
            hget.arg(&meta).arg("framed");
            batch.push(&meta, hget);
        }
        let replies = self.conn.exec_replies(batch).await?;
        if replies.len() != connections.len() {
            return Err(corrupt("framed answered the wrong number of replies"));
        }
        // A missing or damaged value starts no window.
        Ok(replies.iter().map(|v| int(v).unwrap_or(0)).collect())
    }

    async fn finish_many(&self, token: &str, records: &[Finish]) -> Result<(), CacheError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::with_capacity(records.len());
        batch.preamble(script_load(FINISH_SCRIPT));
        for record in records {
            let lock = self.keys.stream_lock(&record.connection);
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.finish.get_hash()).arg(2).arg(&lock).arg(self.keys.stream_sent(&record.connection));
            let last_seq = record.sent.iter().map(|(_, entry)| entry.seq).max().unwrap_or(0);
            cmd.arg(token).arg(record.keep_until_ms).arg(record.viewer.to_text()).arg(last_seq);
            for (user, entry) in &record.sent {
                cmd.arg(user.get()).arg(encode_sent(entry));
            }
            batch.push(&lock, cmd);
        }
        self.conn.exec(batch).await.map(drop)
    }

    async fn watch(&self, connection: &ConnectionId, users: &[UserId], lapse_ms: Millis) -> Result<(), CacheError> {
        if users.is_empty() {
            return Ok(());
        }
        let ids = self.keys.stream_ids(connection);
        let mut batch = Batch::with_capacity(users.len() + 2);
        let mut sadd = redis::cmd("SADD");
        sadd.arg(&ids);
        for user in users {
            sadd.arg(user.get());
        }
        let mut expire = redis::cmd("PEXPIREAT");
        expire.arg(&ids).arg(lapse_ms);
        batch.push(&ids, sadd).push(&ids, expire);
        for user in users {
            let key = self.keys.stream_watch(*user);
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&key).arg(lapse_ms).arg(connection.as_str());
            batch.push(&key, zadd);
        }
        self.conn.exec(batch).await.map(drop)
    }

    async fn unwatch(&self, connection: &ConnectionId, users: &[UserId]) -> Result<(), CacheError> {
        if users.is_empty() {
            return Ok(());
        }
        let ids = self.keys.stream_ids(connection);
        let mut batch = Batch::with_capacity(users.len() + 1);
        let mut srem = redis::cmd("SREM");
        srem.arg(&ids);
        for user in users {
            srem.arg(user.get());
        }
        batch.push(&ids, srem);
        for user in users {
            let key = self.keys.stream_watch(*user);
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&key).arg(connection.as_str());
            batch.push(&key, zrem);
        }
        self.conn.exec(batch).await.map(drop)
    }

    async fn watchers(&self, users: &[UserId], now: Millis) -> Result<Vec<Vec<ConnectionId>>, CacheError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Batch::with_capacity(users.len() * 2);
        for user in users {
            let key = self.keys.stream_watch(*user);
            let mut trim = redis::cmd("ZREMRANGEBYSCORE");
            trim.arg(&key).arg("-inf").arg(now);
            let mut range = redis::cmd("ZRANGEBYSCORE");
            range.arg(&key).arg(format!("({now}")).arg("+inf");
            batch.push(&key, trim).push(&key, range);
        }
        let replies = self.conn.exec_replies(batch).await?;
        if replies.len() != users.len() * 2 {
            return Err(corrupt("watchers answered the wrong number of replies"));
        }
        Ok(replies
            .chunks_exact(2)
            .map(|pair| {
                // A damaged watch key (the wrong type) watches nobody.
                let members: Vec<String> = redis::from_redis_value_ref(&pair[1]).unwrap_or_default();
                members.iter().filter_map(|m| ConnectionId::new(m)).collect()
            })
            .collect())
    }

    async fn sent_by(&self, connection: &ConnectionId, users: &[UserId]) -> Result<Option<SentBy>, CacheError> {
        let key = self.keys.stream_sent(connection);
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(&key).arg("v").arg("s");
        for user in users {
            hmget.arg(user.get());
        }
        let mut batch = Batch::new();
        batch.push(&key, hmget);
        let replies = self.conn.exec_replies(batch).await?;
        let Some(Value::Array(values)) = replies.into_iter().next() else { return Ok(None) };
        if values.len() != users.len() + 2 {
            return Ok(None);
        }
        let Some(viewer) = text(&values[0]).and_then(|t| Viewer::from_text(&t)) else { return Ok(None) };
        let last_seq = text(&values[1]).and_then(|t| t.parse().ok());
        let sent = values[2..].iter().map(|v| text(v).as_deref().and_then(decode_sent)).collect();
        Ok(Some(SentBy { viewer, last_seq, sent }))
    }
}
