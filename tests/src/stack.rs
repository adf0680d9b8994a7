//! A whole service over real servers for one test: the write path, the read
//! path, the aggregator, the scanner and the API, built as `main` builds
//! them: a [`Config`](status_shared::config::Config) naming the test's own database, key prefix, tables
//! and bus, [`App::start_sized`] over it, and the functions' own
//! constructors (`from_app`).

use std::process::Stdio;
use std::time::Duration;

use aggregator::handler::AppAggregator;
use idle_scanner::handler::AppScanner;
use status_api::handler::AppApi;
use status_shared::adapters::redis::RedisPollLimiter;
use status_shared::app::{App, AppCommitter, AppReader, Feed};
use status_shared::config::AwsDeadlines;
use status_shared::domain::{Millis, Rules, UserId, UserRecord};
use status_shared::ports::{CacheRead, StoreRead};
use tokio::process::{Child, Command};

use crate::aws::{AwsTables, EventSink};
use crate::{TestEnv, TEST_POOL};

/// Kept here too: the integration tests name it beside the stack's helpers.
pub use crate::free_port;

/// The AWS deadlines of a test's service: loose enough for the shared
/// emulator on a loaded 2-core machine. The deadlines themselves are
/// tested with tight values of their own (`integration/deadlines.rs`).
pub const TEST_AWS_DEADLINES: AwsDeadlines = AwsDeadlines {
    connect_timeout: Duration::from_secs(3),
    attempt_timeout: Duration::from_secs(15),
    operation_timeout: Duration::from_secs(30),
    max_attempts: 3,
};

/// The pieces of one test's service.
pub struct Stack {
    pub env: TestEnv,
    pub aws: AwsTables,
    pub sink: Option<EventSink>,
    /// The adapters as a function holds them. `env`'s clients are this
    /// app's own, so round trips counted on `env.redis` are the service's.
    pub app: App,
    pub committer: AppCommitter,
    pub reader: AppReader,
    pub limiter: RedisPollLimiter,
}

/// How to build a [`Stack`].
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    pub rules: Rules,
    /// Publish to a real (emulated) bus read back through a queue.
    pub events: bool,
    /// Use this Redis instead of the shared local server.
    pub redis_url: Option<String>,
    pub redis_timeout: Option<Duration>,
    /// The push feed (DESIGN §12); none unless given.
    pub feed: Option<Feed>,
}

impl Stack {
    pub async fn new() -> Self {
        Self::with(StackOptions::default()).await
    }

    pub async fn with(options: StackOptions) -> Self {
        let mut env = TestEnv::build(
            options.rules,
            options.redis_url.as_deref(),
            options.redis_timeout.unwrap_or(Duration::from_secs(5)),
        )
        .await;
        let aws = AwsTables::new().await;
        let sink = if options.events { Some(EventSink::new().await) } else { None };
        let mut config = env.config.clone();
        config.repair_table = Some(aws.repair_table.clone());
        config.dead_letter_table = Some(aws.dead_letter_table.clone());
        config.status_event_bus = sink.as_ref().map(|sink| sink.bus.clone());
        config.aws = TEST_AWS_DEADLINES;
        let mut app = App::start_sized(config, aws.config.clone(), TEST_POOL).await.expect("the service starts");
        env.redis = app.cache.writer().clone();
        env.cache = app.cache.clone();
        env.store = app.store.clone();
        if let Some(feed) = options.feed {
            app.feed = feed;
        }
        let (committer, reader, limiter) = (app.committer(), app.reader(), app.limiter.clone());
        Self { env, aws, sink, app, committer, reader, limiter }
    }

    /// The aggregator function's handler over this stack.
    pub fn aggregator(&self) -> AppAggregator {
        AppAggregator::from_app(&self.app)
    }

    /// The scanner function's handler over this stack.
    pub fn scanner(&self) -> AppScanner {
        AppScanner::from_app(&self.app)
    }

    /// The API function's handler over this stack.
    pub fn api(&self) -> AppApi {
        AppApi::from_app(&self.app)
    }

    /// A stack on a Redis of the test's own, with a short
    /// `REDIS_TIMEOUT_MS` so outages are noticed quickly.
    pub async fn over(redis: &PrivateRedis) -> Self {
        Self::with(StackOptions {
            redis_url: Some(redis.url()),
            redis_timeout: Some(Duration::from_millis(200)),
            ..Default::default()
        })
        .await
    }

    /// What Redis holds for `user`, or `None`.
    pub async fn cached(&self, user: UserId) -> Option<UserRecord> {
        self.env.cache.load(&[user]).await.expect("redis answers").remove(0).record
    }

    /// What SQL holds for `user`, or `None`.
    pub async fn durable(&self, user: UserId) -> Option<UserRecord> {
        self.env.store.load(&[user]).await.expect("sql answers").remove(&user)
    }

    /// The status string stored in SQL's seed column for `user`.
    pub async fn sql_status(&self, user: UserId) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM user_status WHERE user_id = ?")
            .bind(user.as_i64())
            .fetch_optional(&self.env.pool)
            .await
            .expect("sql answers")
    }

    /// The `status` field of the Redis hash for `user`.
    pub async fn redis_status(&self, user: UserId) -> Option<String> {
        let mut raw = self.env.raw_redis().await;
        redis::cmd("HGET").arg(self.env.keys.status(user)).arg("status").query_async(&mut raw).await.expect("redis")
    }
}

/// A Redis server of the test's own on a free loopback port, which the test
/// can pause (it stops answering, like an overloaded or partitioned node),
/// kill (connections refused) and start again.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    replica_of: Option<u16>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let mut redis = Self { port, child: None, replica_of: None };
        redis.launch().await;
        redis
    }

    /// A replica of the server on `primary_port`, as a read endpoint.
    pub async fn start_replica_of(primary_port: u16) -> Self {
        let port = free_port();
        let mut redis = Self { port, child: None, replica_of: Some(primary_port) };
        redis.launch().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        // Replication snapshots go to the temp dir, never the work tree.
        command.arg("--dir").arg(std::env::temp_dir()).args(["--repl-diskless-sync", "yes"]);
        if let Some(primary) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("private redis did not start on port {}", self.port);
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("private redis is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// The server's process id, to pause it together with others
    /// ([`crate::aws::Frozen`]).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("private redis is running")
    }

    /// Stops answering without closing connections.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server: connections are refused, and its data is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts an empty server on the same port again.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            if let Some(pid) = child.id() {
                // A paused server must be woken to die cleanly.
                let _ = std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status();
            }
        }
    }
}

/// Milliseconds since the epoch, for tests that need a realistic `now`.
pub fn wall_clock_ms() -> Millis {
    status_shared::app::now_ms()
}

/// One presence event as a producer would send it.
pub fn presence(kind: &str, user: u64, session: &str, ts_ms: Millis) -> serde_json::Value {
    serde_json::json!({ "type": kind, "user_id": user, "session_id": session, "device": "ios", "ts_ms": ts_ms })
}

/// One event of session `session` of user `id`, sent from `device` if any.
pub fn session_event(
    kind: status_shared::domain::EventKind,
    id: u64,
    session: &str,
    device: Option<&str>,
    ts_ms: Millis,
) -> status_shared::domain::PresenceEvent {
    status_shared::domain::PresenceEvent {
        kind,
        user_id: user(id),
        session_id: status_shared::domain::SessionId::new(session).expect("a valid session id"),
        device: device.map(str::to_owned),
        ts_ms,
    }
}

/// An HTTP API request as the API handler takes it.
pub fn api_request(
    method: &str,
    path: &str,
    body: impl Into<Vec<u8>>,
    caller: status_api::request::Caller,
) -> status_api::request::ApiRequest {
    status_api::request::ApiRequest { method: method.to_owned(), path: path.to_owned(), body: body.into(), caller }
}

/// The entry for `id` on each read route as a service caller reads it at
/// `now`: bulk, single and public, in that order; each must answer 200.
pub async fn service_views(api: &AppApi, id: u64, now: Millis) -> Vec<serde_json::Value> {
    use status_api::request::Caller;
    let body = serde_json::json!({ "user_ids": [id] }).to_string();
    let bulk = api.handle(&api_request("POST", "/v1/status/bulk", body, Caller::Service), now).await;
    let single = api.handle(&api_request("GET", &format!("/v1/status/{id}"), "", Caller::Service), now).await;
    let public = api.handle(&api_request("GET", &format!("/v1/public/status/{id}"), "", Caller::Service), now).await;
    for r in [&bulk, &single, &public] {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    vec![bulk.body["statuses"][0].clone(), single.body, public.body]
}

/// A user id known to be valid.
pub fn user(id: u64) -> status_shared::domain::UserId {
    status_shared::domain::UserId::new(id).expect("a valid user id")
}

/// A `session_connected` event of session `s`.
pub fn connect(id: u64, ts_ms: Millis) -> status_shared::domain::PresenceEvent {
    status_shared::domain::PresenceEvent {
        kind: status_shared::domain::EventKind::Connected,
        user_id: user(id),
        session_id: status_shared::domain::SessionId::new("s").expect("a valid session id"),
        device: None,
        ts_ms,
    }
}
