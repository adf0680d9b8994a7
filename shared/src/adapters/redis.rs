//! Redis: the hot copy of every user's record, the contract's keys, and the
//! per-user poll limit.
//!
//! Keys put the user id inside literal braces (a Redis Cluster hash tag) so
//! one user's keys share a slot:
//!
//! | key | type | content |
//! |---|---|---|
//! | `status:{42}` | HASH | `status`, `last_active_ms`, `device_count`, `v`, `sessions`, `hidden_at_ms`, `hidden_last_active_ms`, `announced`, `updated_ms` |
//! | `status:visible:{42}` | STRING | `true` / `false` |
//! | `status:bulk:{7}` | ZSET | shard 7: user id scored by `last_active_ms` |
//! | `status:due:{7}` | ZSET | shard 7: user id scored by when the scanner must look again |
//! | `status:poll:{42}` | STRING | present while end user 42 may not poll again |

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Script, Value};

use super::codec::{sessions_from_json, sessions_to_json};
use crate::domain::{Millis, Presence, Rules, Status, UserId, UserRecord, UserState, Visibility};
use crate::ports::{CacheError, CacheRead, CacheWrite, Cached, Write};

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
    pub fn bulk(&self, shard: u32) -> String {
        format!("{}status:bulk:{{{}}}", self.prefix, shard)
    }
    pub fn due(&self, shard: u32) -> String {
        format!("{}status:due:{{{}}}", self.prefix, shard)
    }
    pub fn poll(&self, caller: UserId) -> String {
        format!("{}status:poll:{{{}}}", self.prefix, caller)
    }
}

/// Replaces a user's hash unless Redis already holds the same or a newer
/// version, and mirrors the visibility flag. Monotonic, so a write that timed
/// out and lands late, or a backfill racing the aggregator, can never move a
/// user backwards.
const STORE_SCRIPT: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
if current and current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[3])
return 1
";

/// A lazily connected, self-reconnecting Redis client. Connecting lazily
/// lets a function start (and fall back to SQL) while Redis is down; the
/// short reconnect backoff lets it notice quickly that Redis is back.
#[derive(Clone)]
pub struct RedisConn {
    conn: ConnectionManager,
    timeout: Duration,
    round_trips: std::sync::Arc<AtomicU64>,
}

impl RedisConn {
    /// Must be called inside a Tokio runtime.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(CacheError::Redis)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(250))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(CacheError::Redis)?;
        Ok(Self { conn, timeout, round_trips: Default::default() })
    }

    /// How many requests (one command or one pipeline each) this client has
    /// sent: what tests and the benchmark use to count round trips.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` on the connection, the whole call (connecting included)
    /// bounded by the configured timeout.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(result) => result.map_err(CacheError::Redis),
            Err(_) => Err(CacheError::Timeout(self.timeout.as_millis())),
        }
    }
}

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
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn writer(&self) -> &RedisConn {
        &self.writer
    }

    /// The commands of a bulk read, exposed so the benchmark can time the
    /// same round trip without the service around it.
    pub fn load_pipeline(&self, users: &[UserId]) -> Pipeline {
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("HGETALL").arg(self.keys.status(*user));
            pipe.cmd("GET").arg(self.keys.visible(*user));
        }
        pipe
    }

    fn store_pipeline(&self, writes: &[Write<'_>], now: Millis, ttl: Option<Duration>) -> Pipeline {
        let mut pipe = redis::pipe();
        // Loading in the same pipeline costs no round trip and means a
        // server that lost its script cache (restart, failover) never
        // answers NOSCRIPT.
        pipe.load_script(&self.store_script).ignore();
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1));
        for write in writes {
            let user = write.user;
            let mut invocation = self.store_script.key(self.keys.status(user));
            invocation.key(self.keys.visible(user));
            invocation.arg(write.record.version).arg(ttl_ms as u64);
            invocation.arg(if write.record.state.visibility.is_visible() { "true" } else { "false" });
            for (field, value) in encode(write.record, now, &self.rules) {
                invocation.arg(field).arg(value);
            }
            pipe.invoke_script(&invocation).ignore();
            let shard = user.shard(self.shards);
            if let Some(active) = write.record.state.presence.last_active_ms {
                pipe.cmd("ZADD").arg(self.keys.bulk(shard)).arg("GT").arg(active).arg(user.get()).ignore();
            }
            if let Some(due) = write.next_change_ms {
                // LT: a writer may only bring a wake-up forward. Waking the
                // scanner early costs one look; waking it late would leave
                // a stored status stale.
                pipe.cmd("ZADD").arg(self.keys.due(shard)).arg("LT").arg(due).arg(user.get()).ignore();
            }
        }
        pipe
    }
}

impl CacheRead for RedisCache {
    async fn load(&self, users: &[UserId]) -> Result<Vec<Cached>, CacheError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.load_pipeline(users);
        let values: Vec<Value> = self.reader.run(|mut conn| async move { pipe.query_async(&mut conn).await }).await?;
        if values.len() != users.len() * 2 {
            return Err(CacheError::Corrupt(format!("expected {} replies, got {}", users.len() * 2, values.len())));
        }
        let mut out = Vec::with_capacity(users.len());
        let mut replies = values.into_iter();
        while let (Some(hash), Some(flag)) = (replies.next(), replies.next()) {
            out.push(decode_reply(hash, flag)?);
        }
        Ok(out)
    }
}

impl CacheWrite for RedisCache {
    async fn store(&self, writes: &[Write<'_>], now: Millis) -> Result<(), CacheError> {
        if writes.is_empty() {
            return Ok(());
        }
        let pipe = self.store_pipeline(writes, now, None);
        self.writer.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await
    }

    async fn backfill(&self, writes: &[Write<'_>], now: Millis) -> Result<(), CacheError> {
        if writes.is_empty() {
            return Ok(());
        }
        let pipe = self.store_pipeline(writes, now, Some(self.backfill_ttl));
        self.writer.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await
    }
}

/// The hash fields of a record, with `status` and `device_count` derived at
/// `now` (the wall-clock time of the write).
pub fn encode(record: &UserRecord, now: Millis, rules: &Rules) -> Vec<(&'static str, String)> {
    let view = record.state.derive(now, rules);
    let mut fields = vec![
        ("v", record.version.to_string()),
        ("status", view.status.as_str().to_owned()),
        ("device_count", view.device_count.to_string()),
        ("sessions", sessions_to_json(&record.state.presence.sessions)),
        ("updated_ms", now.to_string()),
    ];
    if let Some(active) = view.last_active_ms {
        fields.push(("last_active_ms", active.to_string()));
    }
    if let Visibility::Hidden { since_ms, last_active_ms } = record.state.visibility {
        fields.push(("hidden_at_ms", since_ms.to_string()));
        if let Some(active) = last_active_ms {
            fields.push(("hidden_last_active_ms", active.to_string()));
        }
    }
    if let Some(announced) = record.announced {
        fields.push(("announced", announced.as_str().to_owned()));
    }
    fields
}

/// Reads a record back from its hash fields.
pub fn decode(fields: &HashMap<String, String>) -> Result<UserRecord, String> {
    let int = |name: &str| -> Result<Option<i64>, String> {
        fields.get(name).map(|v| v.parse::<i64>().map_err(|_| format!("{name}={v:?} is not an integer"))).transpose()
    };
    let version = fields
        .get("v")
        .ok_or("field v is missing")?
        .parse::<u64>()
        .map_err(|_| "field v is not an integer".to_owned())?;
    let sessions = sessions_from_json(fields.get("sessions").map_or("", String::as_str))?;
    let visibility = match int("hidden_at_ms")? {
        None => Visibility::Visible,
        Some(since_ms) => Visibility::Hidden { since_ms, last_active_ms: int("hidden_last_active_ms")? },
    };
    let announced = match fields.get("announced") {
        None => None,
        Some(s) => Some(s.parse::<Status>().map_err(|_| format!("announced={s:?} is not a status"))?),
    };
    Ok(UserRecord {
        version,
        state: UserState { presence: Presence { sessions, last_active_ms: int("last_active_ms")? }, visibility },
        announced,
        written_ms: int("updated_ms")?.unwrap_or(0),
    })
}

fn decode_reply(hash: Value, flag: Value) -> Result<Cached, CacheError> {
    let fields: HashMap<String, String> =
        redis::from_redis_value(hash).map_err(|e| CacheError::Corrupt(format!("status hash: {e}")))?;
    let flag: Option<String> =
        redis::from_redis_value(flag).map_err(|e| CacheError::Corrupt(format!("visible flag: {e}")))?;
    let visible_flag = match flag.as_deref() {
        None => None,
        Some("true") => Some(true),
        // Anything but a clear "true" hides: a damaged flag must not leak.
        Some(_) => Some(false),
    };
    let record = if fields.is_empty() {
        None
    } else {
        // One damaged hash must not fail the whole bulk read: it reads as a
        // miss, so SQL answers for that user and the backfill rewrites it.
        decode(&fields).map_err(|reason| tracing::warn!(%reason, "unreadable status hash, reading from SQL")).ok()
    };
    Ok(Cached { record, visible_flag })
}

/// The polling limit in Redis: `SET NX PX` takes the window atomically, so
/// two concurrent reads by one caller cannot both pass.
#[derive(Clone)]
pub struct RedisPollLimiter {
    conn: RedisConn,
    keys: Keys,
    window: Duration,
}

impl RedisPollLimiter {
    pub fn new(conn: RedisConn, keys: Keys, window: Duration) -> Self {
        Self { conn, keys, window }
    }
}

impl crate::ports::PollLimiter for RedisPollLimiter {
    async fn acquire(&self, caller: UserId) -> Result<Option<u64>, CacheError> {
        let key = self.keys.poll(caller);
        let window_ms = self.window.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(1).arg("PX").arg(window_ms).arg("NX");
        pipe.cmd("PTTL").arg(&key);
        let (taken, ttl_ms): (Option<String>, i64) =
            self.conn.run(|mut conn| async move { pipe.query_async(&mut conn).await }).await?;
        if taken.is_some() {
            return Ok(None);
        }
        // Round up so a client that waits the advertised time is allowed.
        let ttl_ms = u64::try_from(ttl_ms).unwrap_or(window_ms).min(window_ms);
        let window_s = self.window.as_secs().max(1);
        Ok(Some(ttl_ms.div_ceil(1000).clamp(1, window_s)))
    }
}

/// Reschedules one user in a due index only if its score is unchanged.
const SETTLE_SCRIPT: &str = r"
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

impl crate::ports::DueIndex for RedisCache {
    async fn due(&self, shard: u32, now: Millis, limit: usize) -> Result<Vec<(UserId, f64)>, CacheError> {
        let key = self.keys.due(shard);
        let raw: Vec<(u64, f64)> = self
            .writer
            .run(|mut conn| async move {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        // A member that is not a user id cannot be scanned; skip it.
        Ok(raw.into_iter().filter_map(|(id, score)| UserId::new(id).ok().map(|u| (u, score))).collect())
    }

    async fn settle(&self, shard: u32, entries: &[(UserId, f64, Option<Millis>)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let script = Script::new(SETTLE_SCRIPT);
        let mut invocation = script.key(self.keys.due(shard));
        for (user, seen, due) in entries {
            invocation.arg(user.get()).arg(*seen).arg(due.map(|d| d.to_string()).unwrap_or_default());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&script).ignore();
        pipe.invoke_script(&invocation).ignore();
        self.writer.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await
    }
}
