//! The test harness: a private database and Redis key prefix per test, the
//! stream function over them, and a frame poster that records frames.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use sqlx::{MySql, MySqlPool};
use status_shared::app::{App, AppCommitter};
use status_shared::config::Config;
use status_shared::domain::stream::ConnectionId;
use status_shared::domain::{EventKind, FeedChange, Millis, PresenceEvent, SessionId, UserId};
use status_shared::ports::{DeadLetter, DeadLetters, FramePoster, PostError, Posted, RepairError};
use status_stream::handler::Stream;

/// Ahead of the real clock: Redis expires keys by its own clock, and the
/// registry sets expiries from the service clock, here `NOW`-based.
pub const NOW: Millis = 1_900_000_000_000;

/// Records every frame per connection; connections in `gone` answer 410;
/// with `fail_after` set, posts beyond that many fail; with `fail_next`,
/// that many of the next posts fail. A closed connection
/// is recorded in `closed` and answers 410 from then on.
#[derive(Clone, Default)]
pub struct Recorder {
    pub frames: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    pub closed: Arc<Mutex<Vec<String>>>,
    pub gone: Arc<Mutex<HashSet<String>>>,
    pub fail_after: Arc<AtomicUsize>,
    /// So many of the next posts fail, then posts go out again.
    pub fail_next: Arc<AtomicUsize>,
    pub posts: Arc<AtomicUsize>,
    pub largest: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn new() -> Self {
        let r = Self::default();
        r.fail_after.store(usize::MAX, Ordering::SeqCst);
        r
    }

    /// Frames `connection` got, and forgets them.
    pub fn take(&self, connection: &str) -> Vec<Value> {
        self.frames.lock().unwrap().remove(connection).unwrap_or_default()
    }
}

impl FramePoster for Recorder {
    async fn post(&self, connection: &ConnectionId, frame: &str) -> Result<Posted, PostError> {
        if self.gone.lock().unwrap().contains(connection.as_str()) {
            return Ok(Posted::Gone);
        }
        if self.posts.fetch_add(1, Ordering::SeqCst) >= self.fail_after.load(Ordering::SeqCst) {
            return Err(PostError::new("the test drops this frame"));
        }
        if self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(PostError::new("the test fails this post once"));
        }
        self.largest.fetch_max(frame.len(), Ordering::SeqCst);
        let value: Value = serde_json::from_str(frame).expect("every frame is JSON");
        self.frames.lock().unwrap().entry(connection.as_str().to_owned()).or_default().push(value);
        Ok(Posted::Sent)
    }

    async fn close(&self, connection: &ConnectionId) -> Result<(), PostError> {
        self.closed.lock().unwrap().push(connection.as_str().to_owned());
        self.gone.lock().unwrap().insert(connection.as_str().to_owned());
        Ok(())
    }
}

/// Dead letters that hold nothing, for an erasure in a test.
pub struct NoDeadLetters;

impl DeadLetters for NoDeadLetters {
    async fn put(&self, _: &[DeadLetter]) -> Result<(), RepairError> {
        Ok(())
    }
    async fn forget(&self, _: UserId) -> Result<(), RepairError> {
        Ok(())
    }
}

pub struct Env {
    pub app: App,
    pub stream: Stream<Recorder>,
    pub poster: Recorder,
    pub committer: AppCommitter,
    database_url: String,
    /// This test's Redis key prefix.
    pub prefix: String,
}

impl Env {
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    pub async fn with(settings: &[(&str, &str)]) -> Self {
        let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let server = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let redis = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let database_url = format!("{server}/stream_test_{tag}");
        MySql::create_database(&database_url).await.expect("MariaDB creates the test database");
        // The schema from `migrations/`, as `sqlx migrate run` applies it.
        let pool = MySqlPool::connect(&database_url).await.expect("the test database answers");
        sqlx::migrate!("../../migrations").run(&pool).await.expect("migrations apply");
        pool.close().await;
        let prefix = format!("t{tag}:");
        let mut vars: HashMap<String, String> = HashMap::from([
            ("REDIS_URL".into(), redis),
            ("DATABASE_URL".into(), database_url.clone()),
            ("KEY_PREFIX".into(), prefix.clone()),
            ("REPAIR_TABLE".into(), "none".into()),
            ("DEAD_LETTER_TABLE".into(), "none".into()),
            ("REDIS_TIMEOUT_MS".into(), "5000".into()),
        ]);
        for (k, v) in settings {
            vars.insert((*k).into(), (*v).into());
        }
        let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("config");
        let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let app = App::start_with(config, sdk).await.expect("app starts");
        let poster = Recorder::new();
        let stream = Stream::with_poster(&app, poster.clone());
        let committer = app.committer();
        Self { app, stream, poster, committer, database_url, prefix }
    }

    pub async fn connect(&self, connection: &str, user: Option<u64>, now: Millis) -> Value {
        let authorizer = match user {
            Some(id) => json!({"principalId": id.to_string(), "user_id": id}),
            None => Value::Null,
        };
        self.stream
            .invoke(
                &json!({"requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": connection,
                    "authorizer": authorizer}}),
                now,
            )
            .await
    }

    pub async fn disconnect(&self, connection: &str, now: Millis) {
        let event = json!({"requestContext": {"routeKey": "$disconnect", "eventType": "DISCONNECT",
            "connectionId": connection}});
        assert_eq!(self.stream.invoke(&event, now).await, json!({"statusCode": 200}));
    }

    /// Sends `body` on `connection` and returns the frames it got.
    pub async fn send(&self, connection: &str, body: &str, now: Millis) -> Vec<Value> {
        let event = json!({"requestContext": {"routeKey": "subscribe", "eventType": "MESSAGE",
            "connectionId": connection}, "body": body});
        assert_eq!(self.stream.invoke(&event, now).await, json!({"statusCode": 200}));
        self.poster.take(connection)
    }

    pub async fn subscribe(&self, connection: &str, ids: &[u64], since: Option<&str>, now: Millis) -> Vec<Value> {
        let body = match since {
            Some(cursor) => json!({"action": "subscribe", "user_ids": ids, "since": cursor}),
            None => json!({"action": "subscribe", "user_ids": ids}),
        };
        self.send(connection, &body.to_string(), now).await
    }

    /// A feed event naming `users`, handed to the function.
    pub async fn feed(&self, users: &[u64], now: Millis) -> Value {
        let feed: Vec<FeedChange> =
            users.iter().map(|u| FeedChange { user_id: id(*u), version: 1, at_ms: now }).collect();
        self.stream.invoke(&serde_json::to_value(status_shared::domain::FeedEvent { feed }).unwrap(), now).await
    }

    pub async fn event(&self, kind: EventKind, user: u64, session: &str, device: Option<&str>, ts: Millis) {
        let event = PresenceEvent {
            kind,
            user_id: id(user),
            session_id: SessionId::new(session).unwrap(),
            device: device.map(str::to_owned),
            ts_ms: ts,
        };
        self.committer.aggregate(&[event], ts).await.expect("commit");
    }

    /// The bulk read's entries of `users` for `viewer`, as JSON objects.
    pub async fn bulk(&self, users: &[u64], viewer: Option<u64>, now: Millis) -> Vec<status_shared::domain::View> {
        let ids: Vec<UserId> = users.iter().map(|u| id(*u)).collect();
        self.app.reader().read(&ids, viewer.map(id), now).await.expect("read")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let (database_url, prefix) = (self.database_url.clone(), self.prefix.clone());
        let redis = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let _ = MySql::drop_database(&database_url).await;
                let Ok(client) = redis::Client::open(redis) else { return };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// A plain Redis connection for assertions on raw keys.
pub async fn raw_redis() -> redis::aio::MultiplexedConnection {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

pub fn id(n: u64) -> UserId {
    UserId::new(n).unwrap()
}

/// The `statuses` of `frames`, in order, by user id (later ones win).
pub fn apply(state: &mut HashMap<u64, Value>, frames: &[Value]) {
    for frame in frames {
        for entry in frame["statuses"].as_array().into_iter().flatten() {
            state.insert(entry["user_id"].as_u64().unwrap(), entry.clone());
        }
    }
}

/// An entry without `next`: what the bulk read shows.
pub fn shown(entry: &Value) -> Value {
    let mut entry = entry.clone();
    entry.as_object_mut().unwrap().remove("next");
    entry
}

/// The bulk read's view as the entry JSON would show it (no `next`).
pub fn view_json(user: u64, view: &status_shared::domain::View) -> Value {
    let mut out = json!({"user_id": user, "status": view.status.as_str(), "last_active_ms": view.last_active_ms});
    if let Some(manual) = &view.manual {
        out["manual"] = serde_json::to_value(manual).unwrap();
    }
    if let Some(platforms) = &view.platforms {
        let map: serde_json::Map<String, Value> =
            platforms.live().map(|(p, s)| (p.as_str().to_owned(), json!(s.as_str()))).collect();
        out["platforms"] = Value::Object(map);
    }
    out
}

/// The seqs of data frames, in order.
pub fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

/// The cursor of the last frame that carries one.
pub fn cursor(frames: &[Value]) -> String {
    frames.iter().rev().find_map(|f| f["cursor"].as_str()).expect("a cursor").to_owned()
}
