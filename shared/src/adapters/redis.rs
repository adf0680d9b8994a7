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
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, Script, Value};

use super::redis_cluster::{cluster_seeds, key_slot, node_url, SlotMap};

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
/// user backwards. The flag is the contract's authority: a hide found there
/// (anything but `true`, as readers take it) is kept unless this write is
/// the visibility route's show (`ARGV[4]` = `1`).
///
/// `ARGV`: version, TTL ms (0: none), flag, show, then field/value pairs.
const STORE_SCRIPT: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], 'v'))
if current and current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local flag = redis.call('GET', KEYS[2])
if ARGV[3] == 'false' or ARGV[4] == '1' or not flag or flag == 'true' then
  redis.call('SET', KEYS[2], ARGV[3])
end
return 1
";

/// The member that marks a due index complete. It is not a user id, and its
/// score (`+inf`) keeps it out of every range the scanner reads; losing the
/// index (FLUSHALL, failover, eviction of the key) loses it too.
const INDEX_COMPLETE: &str = "index-complete";

/// The commands of one logical step, each routed by its key: against a
/// single node they go as one pipeline; against a cluster, as one pipeline
/// per node, all nodes at once. The preamble (script loads) goes ahead of
/// every node's part and its replies are dropped.
#[derive(Default)]
pub struct Batch {
    preamble: Vec<Cmd>,
    commands: Vec<(u16, Cmd)>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a command sent ahead of every node's part, reply dropped.
    pub fn preamble(&mut self, cmd: Cmd) -> &mut Self {
        self.preamble.push(cmd);
        self
    }

    /// Adds `cmd`, routed by `key` (the key it touches).
    pub fn push(&mut self, key: &str, cmd: Cmd) -> &mut Self {
        self.commands.push((key_slot(key.as_bytes()), cmd));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    fn pipeline(&self, indices: impl Iterator<Item = usize>) -> Pipeline {
        let mut pipe = redis::pipe();
        for cmd in &self.preamble {
            pipe.add_command(cmd.clone()).ignore();
        }
        for i in indices {
            pipe.add_command(self.commands[i].1.clone());
        }
        pipe
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(250))
        .set_number_of_retries(2)
}

fn manager(url: &str, timeout: Duration) -> Result<ConnectionManager, redis::RedisError> {
    ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, manager_config(timeout))
}

/// A Redis Cluster reached through one connection per primary.
struct Cluster {
    seeds: Vec<String>,
    timeout: Duration,
    map: std::sync::RwLock<Arc<SlotMap>>,
    nodes: std::sync::Mutex<HashMap<String, ConnectionManager>>,
}

impl Cluster {
    fn node(&self, node: &str) -> Result<ConnectionManager, CacheError> {
        let mut nodes = self.nodes.lock().map_err(|_| CacheError::Corrupt("node table poisoned".into()))?;
        if let Some(conn) = nodes.get(node) {
            return Ok(conn.clone());
        }
        let conn = manager(&node_url(&self.seeds[0], node), self.timeout).map_err(CacheError::Redis)?;
        nodes.insert(node.to_owned(), conn.clone());
        Ok(conn)
    }

    fn map(&self) -> Arc<SlotMap> {
        self.map.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Reads the slot map from the first seed or known node that answers.
    async fn refresh(&self) -> Result<Arc<SlotMap>, CacheError> {
        let mut last = CacheError::Corrupt("no cluster node answered".into());
        let known: Vec<String> = self.map().nodes().into_iter().map(|n| node_url(&self.seeds[0], n)).collect();
        for url in self.seeds.iter().chain(known.iter()) {
            let attempt = async {
                let mut conn = manager(url, self.timeout).map_err(CacheError::Redis)?;
                let reply: Value =
                    redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.map_err(CacheError::Redis)?;
                SlotMap::from_cluster_slots(&reply).map_err(CacheError::Corrupt)
            };
            match attempt.await {
                Ok(map) => {
                    let map = Arc::new(map);
                    if let Ok(mut slot) = self.map.write() {
                        *slot = map.clone();
                    }
                    return Ok(map);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

enum Backend {
    Single(ConnectionManager),
    Cluster(Cluster),
}

/// A lazily connected, self-reconnecting Redis client, to one node or to a
/// cluster (`redis+cluster://host:port,...`). Connecting lazily lets a
/// function start (and fall back to SQL) while Redis is down; the short
/// reconnect backoff lets it notice quickly that Redis is back.
#[derive(Clone)]
pub struct RedisConn {
    backend: Arc<Backend>,
    timeout: Duration,
    round_trips: Arc<AtomicU64>,
}

impl RedisConn {
    /// Must be called inside a Tokio runtime.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CacheError> {
        let backend = match cluster_seeds(url) {
            Some(seeds) if !seeds.is_empty() => {
                Backend::Cluster(Cluster { seeds, timeout, map: Default::default(), nodes: Default::default() })
            }
            Some(_) => return Err(CacheError::Corrupt(format!("cluster url {url:?} names no node"))),
            None => Backend::Single(manager(url, timeout).map_err(CacheError::Redis)?),
        };
        Ok(Self { backend: Arc::new(backend), timeout, round_trips: Default::default() })
    }

    /// How many requests (one pipeline to one node each) this client has
    /// sent: what tests and the benchmark use to count round trips.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_cluster(&self) -> bool {
        matches!(*self.backend, Backend::Cluster(_))
    }

    /// Runs `f` on a single node's connection, bounded by the timeout. For
    /// hand-built pipelines (the benchmark's floor); the service itself
    /// uses [`RedisConn::exec`], which also works against a cluster.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Backend::Single(conn) = &*self.backend else {
            return Err(CacheError::Corrupt("run needs a single-node connection".into()));
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, f(conn.clone())).await {
            Ok(result) => result.map_err(CacheError::Redis),
            Err(_) => Err(CacheError::Timeout(self.timeout.as_millis())),
        }
    }

    /// Sends `batch` and returns the replies of its commands in order, the
    /// whole call bounded by the timeout.
    pub async fn exec(&self, batch: &Batch) -> Result<Vec<Value>, CacheError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let work = async {
            match &*self.backend {
                Backend::Single(conn) => {
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                    let pipe = batch.pipeline(0..batch.commands.len());
                    pipe.query_async::<Vec<Value>>(&mut conn.clone()).await.map_err(CacheError::Redis)
                }
                Backend::Cluster(cluster) => match self.exec_cluster(cluster, batch, cluster.map()).await {
                    // A moved slot, a new node or a first call: read the
                    // map again and retry once. Every batch the service
                    // sends is safe to repeat.
                    Err(_) => {
                        let map = cluster.refresh().await?;
                        self.exec_cluster(cluster, batch, map).await
                    }
                    ok => ok,
                },
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(CacheError::Timeout(self.timeout.as_millis())),
        }
    }

    async fn exec_cluster(
        &self,
        cluster: &Cluster,
        batch: &Batch,
        map: Arc<SlotMap>,
    ) -> Result<Vec<Value>, CacheError> {
        let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (slot, _)) in batch.commands.iter().enumerate() {
            let node = map.node_for(*slot).ok_or_else(|| CacheError::Corrupt(format!("no node serves slot {slot}")))?;
            by_node.entry(node).or_default().push(i);
        }
        let requests = by_node.into_iter().map(|(node, indices)| {
            let pipe = batch.pipeline(indices.iter().copied());
            let conn = cluster.node(node);
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            async move {
                let mut conn = conn?;
                let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(CacheError::Redis)?;
                Ok::<_, CacheError>((indices, replies))
            }
        });
        let mut out = vec![Value::Nil; batch.commands.len()];
        for result in futures::future::join_all(requests).await {
            let (indices, replies) = result?;
            if indices.len() != replies.len() {
                return Err(CacheError::Corrupt("a node answered the wrong number of replies".into()));
            }
            for (i, reply) in indices.into_iter().zip(replies) {
                out[i] = reply;
            }
        }
        Ok(out)
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

    /// The same cache reading from the primary: for writers, which must
    /// merge into the newest state, not a replica's lagging copy.
    pub fn primary_only(&self) -> Self {
        Self { reader: self.writer.clone(), ..self.clone() }
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

    /// The commands of a bulk read as a routed batch.
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
        batch.preamble(script_load(STORE_SCRIPT));
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1)) as u64;
        let mut active_by_shard: std::collections::BTreeMap<u32, Vec<(Millis, u64)>> = Default::default();
        let mut due_by_shard: std::collections::BTreeMap<u32, Vec<(Millis, u64)>> = Default::default();
        for write in writes {
            let user = write.user;
            let status_key = self.keys.status(user);
            let mut store = redis::cmd("EVALSHA");
            store.arg(self.store_script.get_hash()).arg(2).arg(&status_key).arg(self.keys.visible(user));
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
        if !due_by_shard.is_empty() {
            batch.preamble(script_load(DUE_SCRIPT));
        }
        for (shard, members) in due_by_shard {
            let key = self.keys.due(shard);
            let mut schedule = redis::cmd("EVALSHA");
            schedule.arg(Script::new(DUE_SCRIPT).get_hash()).arg(1).arg(&key).arg(now);
            for (due, member) in &members {
                schedule.arg(*due).arg(*member);
            }
            batch.push(&key, schedule);
        }
        batch
    }
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

fn script_load(code: &str) -> Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(code);
    cmd
}

impl CacheRead for RedisCache {
    async fn load(&self, users: &[UserId]) -> Result<Vec<Cached>, CacheError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.reader.exec(&self.load_batch(users)).await?;
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
        self.writer.exec(&self.store_batch(writes, now, None)).await.map(drop)
    }

    async fn backfill(&self, writes: &[Write<'_>], now: Millis) -> Result<(), CacheError> {
        self.writer.exec(&self.store_batch(writes, now, Some(self.backfill_ttl))).await.map(drop)
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
        let mut batch = Batch::new();
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(1).arg("PX").arg(window_ms).arg("NX");
        let mut pttl = redis::cmd("PTTL");
        pttl.arg(&key);
        batch.push(&key, set).push(&key, pttl);
        let replies = self.conn.exec(&batch).await?;
        let (taken, ttl_ms): (Option<String>, i64) = match replies.as_slice() {
            [taken, ttl] => (
                redis::from_redis_value_ref(taken).map_err(|e| CacheError::Corrupt(e.to_string()))?,
                redis::from_redis_value_ref(ttl).map_err(|e| CacheError::Corrupt(e.to_string()))?,
            ),
            _ => return Err(CacheError::Corrupt("poll limit: wrong number of replies".into())),
        };
        if taken.is_some() {
            return Ok(None);
        }
        // Round up so a client that waits the advertised time is allowed.
        let ttl_ms = u64::try_from(ttl_ms).unwrap_or(window_ms).min(window_ms);
        let window_s = self.window.as_secs().max(1);
        Ok(Some(ttl_ms.div_ceil(1000).clamp(1, window_s)))
    }
}

/// Schedules users in a due index: `ARGV[1]` is the writer's `now`, then
/// pairs of due time and member. A user's time is replaced when the new one
/// is earlier, or when the old one has already passed: a scanner may be
/// working from that old time, and moving it makes the scanner's later
/// reschedule (conditional on the time it read) leave the newer one alone.
const DUE_SCRIPT: &str = r"
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
        let mut replies = self.writer.exec(&batch).await?.into_iter();
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
        if !entries.is_empty() {
            batch.preamble(script_load(DUE_SCRIPT));
            let mut schedule = redis::cmd("EVALSHA");
            schedule.arg(Script::new(DUE_SCRIPT).get_hash()).arg(1).arg(&key).arg(now);
            for (user, due) in entries {
                schedule.arg(*due).arg(user.get());
            }
            batch.push(&key, schedule);
        }
        if complete {
            let mut mark = redis::cmd("ZADD");
            mark.arg(&key).arg("+inf").arg(INDEX_COMPLETE);
            batch.push(&key, mark);
        }
        self.writer.exec(&batch).await.map(drop)
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
        self.writer.exec(&batch).await.map(drop)
    }
}
