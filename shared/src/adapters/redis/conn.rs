//! The transport: a routed [`Batch`] of commands and the [`RedisConn`]
//! that sends it, to one node or to a cluster, bounded by a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, Value};

use super::cluster::{cluster_seeds, key_slot, node_url, SlotMap};
use crate::ports::CacheError;

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

    /// An empty batch with room for `commands` commands.
    pub fn with_capacity(commands: usize) -> Self {
        Self { preamble: Vec::new(), commands: Vec::with_capacity(commands) }
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
        // One command's error (a key of the wrong type) comes back as its
        // own reply, so it need not fail the others.
        pipe.ignore_errors();
        for cmd in &self.preamble {
            pipe.add_command(cmd.clone()).ignore();
        }
        for i in indices {
            pipe.add_command(self.commands[i].1.clone());
        }
        pipe
    }

    /// The whole batch as one pipeline, its commands moved rather than
    /// copied (a 1,000-user read holds 2,000 of them).
    fn into_pipeline(self) -> Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for cmd in self.preamble {
            pipe.add_command(cmd).ignore();
        }
        for (_, cmd) in self.commands {
            pipe.add_command(cmd);
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
        let mut nodes = self.nodes.lock().map_err(|_| CacheError::Routing("node table poisoned".into()))?;
        if let Some(conn) = nodes.get(node) {
            return Ok(conn.clone());
        }
        let conn = manager(&node_url(&self.seeds[0], node), self.timeout).map_err(CacheError::from)?;
        nodes.insert(node.to_owned(), conn.clone());
        Ok(conn)
    }

    fn map(&self) -> Arc<SlotMap> {
        self.map.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Reads the slot map from the first seed or known node that answers.
    async fn refresh(&self) -> Result<Arc<SlotMap>, CacheError> {
        let mut last = CacheError::Routing("no cluster node answered".into());
        let known: Vec<String> = self.map().nodes().into_iter().map(|n| node_url(&self.seeds[0], n)).collect();
        for url in self.seeds.iter().chain(known.iter()) {
            let attempt = async {
                let mut conn = manager(url, self.timeout).map_err(CacheError::from)?;
                let reply: Value =
                    redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.map_err(CacheError::from)?;
                SlotMap::from_cluster_slots(&reply).map_err(CacheError::Routing)
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
            Some(_) => return Err(CacheError::Routing(format!("cluster url {url:?} names no node"))),
            None => Backend::Single(manager(url, timeout).map_err(CacheError::from)?),
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

    /// Runs `f` on a single node's connection, bounded by the timeout. For
    /// hand-built pipelines (the benchmark's floor); the service itself
    /// uses [`RedisConn::exec`], which also works against a cluster.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Backend::Single(conn) = &*self.backend else {
            return Err(CacheError::Routing("run needs a single-node connection".into()));
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, f(conn.clone())).await {
            Ok(result) => result.map_err(CacheError::from),
            Err(_) => Err(CacheError::Timeout(self.timeout.as_millis())),
        }
    }

    /// Sends `batch` and returns the replies of its commands in order, the
    /// whole call bounded by the timeout. A command the server refused
    /// fails the whole call, as a write must: see
    /// [`RedisConn::exec_replies`] for reads that can answer around it.
    pub async fn exec(&self, batch: Batch) -> Result<Vec<Value>, CacheError> {
        let replies = self.exec_replies(batch).await?;
        match refusal(&replies, |_| true) {
            Some(error) => Err(error),
            None => Ok(replies),
        }
    }

    /// [`RedisConn::exec`], but a command the server refused (a key of the
    /// wrong type: `WRONGTYPE`) is its own reply, a [`Value::ServerError`],
    /// and the other commands' replies stand. For bulk reads, where one
    /// damaged key must not send every user of the call to SQL.
    pub async fn exec_replies(&self, batch: Batch) -> Result<Vec<Value>, CacheError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let work = async {
            match &*self.backend {
                Backend::Single(conn) => {
                    let pipe = batch.into_pipeline();
                    match self.send(conn, &pipe).await {
                        // The server closed the connection while the
                        // function was frozen (idle timeout, failover,
                        // `CLIENT KILL`): this call is the first to see
                        // it. The manager has started a new connection;
                        // send once more on it, inside the same deadline.
                        // Every batch the service sends is safe to repeat.
                        Err(error) if error.is_connection_dropped() || error.is_unrecoverable_error() => {
                            tracing::info!(%error, "redis connection was closed; sending again on a new one");
                            self.send(conn, &pipe).await
                        }
                        other => other,
                    }
                    .map_err(CacheError::from)
                }
                Backend::Cluster(cluster) => match self.exec_cluster(cluster, &batch, cluster.map()).await {
                    // A moved slot, a new node or a first call: read the
                    // map again and retry once. Every batch the service
                    // sends is safe to repeat.
                    Err(_) => {
                        let map = cluster.refresh().await?;
                        self.exec_cluster(cluster, &batch, map).await
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

    async fn send(&self, conn: &ConnectionManager, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        pipe.query_async::<Vec<Value>>(&mut conn.clone()).await
    }

    async fn exec_cluster(
        &self,
        cluster: &Cluster,
        batch: &Batch,
        map: Arc<SlotMap>,
    ) -> Result<Vec<Value>, CacheError> {
        let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (slot, _)) in batch.commands.iter().enumerate() {
            let node = map.node_for(*slot).ok_or_else(|| CacheError::Routing(format!("no node serves slot {slot}")))?;
            by_node.entry(node).or_default().push(i);
        }
        let requests = by_node.into_iter().map(|(node, indices)| {
            let pipe = batch.pipeline(indices.iter().copied());
            let conn = cluster.node(node);
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            async move {
                let mut conn = conn?;
                let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(CacheError::from)?;
                // A slot that moved fails the node's part, so the caller
                // reads the slot map again and retries.
                if let Some(error) = refusal(&replies, |code| REROUTE.contains(&code)) {
                    return Err(error);
                }
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

/// The cluster's answers that mean "ask another node": the slot map is
/// read again and the batch sent once more.
const REROUTE: [&str; 4] = ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"];

/// The first reply among `replies` that is the server refusing a command
/// whose error code (`WRONGTYPE`, `MOVED`, ...) `counts`, as an error.
pub(super) fn refusal(replies: &[Value], counts: impl Fn(&str) -> bool) -> Option<CacheError> {
    replies.iter().find_map(|reply| match reply {
        Value::ServerError(error) if counts(error.code()) => {
            Some(CacheError::from(redis::RedisError::from(error.clone())))
        }
        _ => None,
    })
}

/// `SCRIPT LOAD code`, for a batch's preamble.
pub(super) fn script_load(code: &str) -> Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(code);
    cmd
}

impl From<redis::RedisError> for CacheError {
    fn from(error: redis::RedisError) -> Self {
        CacheError::Redis(Box::new(error))
    }
}
