//! The test harness: every test gets its own MariaDB database (created,
//! migrated, dropped) and its own Redis key prefix, so tests run in parallel
//! against the real local servers without seeing each other.
//!
//! Servers are found through `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and `TEST_DATABASE_URL` (default
//! `mysql://root@127.0.0.1:3306`); `scripts/test.sh` starts them.

pub mod aws;
pub mod aws_limits;
pub mod cluster;
pub mod kafka;
pub mod lambda;
pub mod local;

pub mod stack;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::mysql::{MySql, MySqlPool};
use status_shared::adapters::mysql::{connect_lazy, MySqlStore, MIGRATOR};
use status_shared::adapters::redis::{Keys, RedisCache, RedisConn};
use status_shared::domain::Rules;

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn database_server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A random lowercase tag, unique enough to name a database or key prefix.
pub fn unique_tag() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// One test's private slice of the real servers.
pub struct TestEnv {
    pub tag: String,
    pub database: String,
    pub database_url: String,
    pub pool: MySqlPool,
    pub keys: Keys,
    pub rules: Rules,
    pub redis: RedisConn,
    pub cache: RedisCache,
    pub store: MySqlStore,
    pub shards: u32,
    /// The Redis this environment uses.
    pub redis_url: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_rules(Rules::default()).await
    }

    pub async fn with_rules(rules: Rules) -> Self {
        Self::build(rules, None, Duration::from_secs(5)).await
    }

    /// An environment whose Redis is `redis_url` (a server of the test's
    /// own) when given, with `redis_timeout` as `REDIS_TIMEOUT_MS`.
    pub async fn build(rules: Rules, redis_url: Option<&str>, redis_timeout: Duration) -> Self {
        let tag = unique_tag();
        let database = format!("status_test_{tag}");
        let database_url = format!("{}/{}", database_server_url(), database);
        MySql::create_database(&database_url).await.expect("MariaDB is reachable and creates the test database");
        let pool = connect_lazy(&database_url, 8, Duration::from_secs(10)).expect("database url");
        MIGRATOR.run(&pool).await.expect("migrations apply");
        let keys = Keys::new(format!("t{tag}:"));
        let redis_url = redis_url.map_or_else(self::redis_url, str::to_owned);
        let redis = RedisConn::new(&redis_url, redis_timeout).expect("redis url");
        let shards = 16;
        let cache = RedisCache::new(redis.clone(), redis.clone(), keys.clone(), rules, shards, Duration::from_secs(60));
        let store = MySqlStore::new(pool.clone(), pool.clone(), rules);
        Self { tag, database, database_url, pool, keys, rules, redis, cache, store, shards, redis_url }
    }

    /// Deletes this test's Redis keys, as a failover or `FLUSHALL` would.
    pub async fn flush_redis(&self) {
        let mut conn = self.raw_redis().await;
        let pattern = format!("{}*", self.keys.prefix());
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
        }
    }

    /// A plain connection for assertions on raw keys.
    pub async fn raw_redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Drop runs outside async; clean up on a thread with its own runtime.
        let database_url = self.database_url.clone();
        let prefix = self.keys.prefix().to_owned();
        let redis_url = self.redis_url.clone();
        clean_up_in_drop(async move { forget_database_and_keys(&database_url, &redis_url, &prefix).await });
    }
}

/// Drops the database at `database_url` and deletes every Redis key under
/// `prefix`: what a test leaves behind. Never fails, and gives Redis at
/// most 2 s, since a test's private server may be paused or gone.
pub async fn forget_database_and_keys(database_url: &str, redis_url: &str, prefix: &str) {
    let _ = MySql::drop_database(database_url).await;
    let cleanup = async {
        let client = redis::Client::open(redis_url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.ok()?;
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), cleanup).await;
}

/// Runs `cleanup` to its end from a `Drop`, which runs outside async: on a
/// thread of its own with a runtime of its own, joined before the drop
/// returns, so a test's servers are clean when it ends (even by a panic).
/// A cleanup that cannot start its runtime is skipped: it only tidies.
pub fn clean_up_in_drop(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(cleanup);
    })
    .join();
}
