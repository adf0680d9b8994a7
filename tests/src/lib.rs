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
pub mod fake_aws;
pub mod faults;
pub mod kafka;
pub mod lambda;
pub mod local;
pub mod mariadb;
pub mod msk;
pub mod process;
pub mod push_client;
pub mod schema;

pub mod stack;

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::mysql::{MySql, MySqlPool};
use status_shared::adapters::mysql::{MySqlStore, MIGRATOR};
use status_shared::adapters::redis::{Keys, RedisCache, RedisConn};
use status_shared::app::{PoolSize, Stores};
use status_shared::config::Config;
use status_shared::domain::Rules;

/// The pools of a test's service: room for the requests a test runs in
/// parallel, and a wait a loaded 2-core machine never runs out.
pub const TEST_POOL: PoolSize = PoolSize { connections: 8, acquire_timeout: Duration::from_secs(10) };

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn database_server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
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
    /// The service configuration naming this slice (`REDIS_URL`,
    /// `DATABASE_URL`, `KEY_PREFIX`, the rules), from which the clients
    /// above were built; a [`stack::Stack`] adds its tables and bus.
    pub config: Config,
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
        let keys = Keys::new(format!("t{tag}:"));
        let redis_url = redis_url.map_or_else(self::redis_url, str::to_owned);
        let mut config = Config::from_lookup(|_| None).expect("the defaults are valid");
        config.rules = rules;
        config.redis_url = redis_url.clone();
        config.redis_timeout = redis_timeout;
        config.database_url = database_url.clone();
        config.key_prefix = keys.prefix().to_owned();
        let stores = Stores::connect(&config, TEST_POOL).expect("valid urls");
        let pool = stores.store.writer().clone();
        MIGRATOR.run(&pool).await.expect("migrations apply");
        Self {
            tag,
            database,
            database_url,
            pool,
            keys,
            rules,
            redis: stores.cache.writer().clone(),
            cache: stores.cache,
            store: stores.store,
            shards: config.shards,
            redis_url,
            config,
        }
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
