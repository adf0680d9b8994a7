//! The servers the bench talks to, and one run's private slice of them: a
//! database (created, migrated, dropped), a Redis key prefix (its keys
//! deleted afterwards) and two DynamoDB tables (deleted afterwards). No run
//! sees another's data or the user's own local stack.
//!
//! Every server must be on a loopback address: the bench creates and drops
//! databases and tables, and must never do that anywhere but here.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use local_stack::provision::create_tables;
use redis::aio::MultiplexedConnection;
use sqlx::migrate::MigrateDatabase;
use sqlx::mysql::{MySql, MySqlPool};
use status_shared::adapters::mysql::{connect_lazy, MySqlStore, MIGRATOR};
use status_shared::adapters::redis::{Keys, RedisCache, RedisConn};
use status_shared::app::{App, AppCommitter, PoolSize};
use status_shared::config::Config;
use status_shared::domain::Rules;

use crate::error::Error;

/// The shard count of the design (and of the template's schedules).
pub const SHARDS: u32 = 16;

/// Where the servers are, checked to be on this machine.
#[derive(Clone)]
pub struct Servers {
    pub redis_url: String,
    /// The MariaDB server, without a database.
    pub database_server_url: String,
    pub aws_endpoint: String,
    pub aws_region: String,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    pub aws_session_token: Option<String>,
    pub sdk: SdkConfig,
}

impl Servers {
    pub async fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let redis_url = var("BENCH_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        let database_server_url = var("BENCH_DATABASE_URL")
            .unwrap_or_else(|| "mysql://root@127.0.0.1:3306".into())
            .trim_end_matches('/')
            .to_owned();
        let aws_endpoint = var("AWS_ENDPOINT_URL").unwrap_or_else(|| "http://127.0.0.1:5000".into());
        for (name, url) in [
            ("BENCH_REDIS_URL", &redis_url),
            ("BENCH_DATABASE_URL", &database_server_url),
            ("AWS_ENDPOINT_URL", &aws_endpoint),
        ] {
            if !is_loopback_url(url) {
                return Err(format!(
                    "{name}={url} is not a loopback address; the bench only runs against local servers"
                )
                .into());
            }
        }
        let aws_region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        // The emulator accepts any credentials; the SDK refuses to sign
        // without some.
        let (aws_access_key_id, aws_secret_access_key, aws_session_token) =
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => (id, secret, var("AWS_SESSION_TOKEN")),
                _ => ("test".to_owned(), "test".to_owned(), None),
            };
        let credentials = Credentials::new(
            &aws_access_key_id,
            &aws_secret_access_key,
            aws_session_token.clone(),
            None,
            "status-bench",
        );
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&aws_endpoint)
            .region(Region::new(aws_region.clone()))
            .credentials_provider(credentials)
            .load()
            .await;
        Ok(Self {
            redis_url,
            database_server_url,
            aws_endpoint,
            aws_region,
            aws_access_key_id,
            aws_secret_access_key,
            aws_session_token,
            sdk,
        })
    }

    /// A DynamoDB client pinned to the emulator, whatever else the
    /// environment says (a service-specific endpoint variable included).
    pub fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk).endpoint_url(&self.aws_endpoint).build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// A plain Redis connection, for setup and cleanup outside the service.
    pub async fn raw_redis(&self) -> Result<MultiplexedConnection, Error> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        Ok(tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection()).await??)
    }
}

/// Whether the host of `url` is this machine (or the URL is a Unix socket).
fn is_loopback_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else { return false };
    if scheme.ends_with("+unix") || scheme == "unix" {
        return true;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How a run's service clients are tuned.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub redis_timeout: Duration,
    pub db_connections: u32,
    pub db_acquire_timeout: Duration,
}

impl Tuning {
    /// As the functions start (`App::start`): `REDIS_TIMEOUT_MS` 500 and
    /// [`PoolSize::FUNCTION`]. Every measured figure uses it.
    pub const SERVICE: Tuning = Tuning {
        redis_timeout: Duration::from_millis(500),
        db_connections: PoolSize::FUNCTION.connections,
        db_acquire_timeout: PoolSize::FUNCTION.acquire_timeout,
    };
    /// For populating a million users: generous, so a slow moment of a busy
    /// 2-core machine never sends setup down the Redis-outage path.
    pub const LOADER: Tuning = Tuning {
        redis_timeout: Duration::from_secs(10),
        db_connections: 8,
        db_acquire_timeout: Duration::from_secs(30),
    };
}

/// What a cleanup must remove; registered while a run is alive so Ctrl-C
/// can still remove it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Owned {
    database: String,
    key_prefix: String,
    tables: [String; 2],
}

static LIVE: Mutex<Option<HashSet<Owned>>> = Mutex::new(None);

fn register(owned: &Owned) {
    if let Ok(mut live) = LIVE.lock() {
        live.get_or_insert_with(HashSet::new).insert(owned.clone());
    }
}

fn unregister(owned: &Owned) {
    if let Ok(mut live) = LIVE.lock() {
        if let Some(set) = live.as_mut() {
            set.remove(owned);
        }
    }
}

/// Removes whatever runs are still registered: after an interruption, or a
/// run abandoned for taking too long.
pub async fn cleanup_interrupted(servers: &Servers) {
    let owned: Vec<Owned> =
        LIVE.lock().ok().and_then(|mut l| l.take()).map(|s| s.into_iter().collect()).unwrap_or_default();
    for owned in owned {
        eprintln!("status-bench: removing {} and its keys and tables", owned.database);
        remove(servers, &owned).await;
    }
}

/// One run's private database, key prefix and tables.
pub struct BenchEnv {
    pub servers: Servers,
    pub tag: String,
    pub database_url: String,
    pub keys: Keys,
    pub rules: Rules,
    pub dynamo: aws_sdk_dynamodb::Client,
    owned: Owned,
}

/// The service's clients over one [`BenchEnv`], started as the functions
/// start them (events are not published: no bus, as when
/// `STATUS_EVENT_BUS` is unset). The functions' handlers are built from
/// `app` by their own constructors (`from_app`); the other fields are
/// `app`'s own clients, so round trips counted on `redis` are the
/// service's.
pub struct Stack {
    pub app: App,
    pub redis: RedisConn,
    pub cache: RedisCache,
    pub store: MySqlStore,
    pub pool: MySqlPool,
    pub rules: Rules,
}

impl Stack {
    /// The write path, as the functions use it.
    pub fn committer(&self) -> AppCommitter {
        self.app.committer()
    }
}

impl BenchEnv {
    pub async fn create(servers: &Servers) -> Result<Self, Error> {
        let tag = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let owned = Owned {
            database: format!("status_bench_{tag}"),
            key_prefix: format!("bench{tag}:"),
            tables: [format!("status-bench-repair-{tag}"), format!("status-bench-dead-letters-{tag}")],
        };
        register(&owned);
        let env = Self {
            servers: servers.clone(),
            database_url: format!("{}/{}", servers.database_server_url, owned.database),
            keys: Keys::new(owned.key_prefix.clone()),
            rules: Rules::default(),
            dynamo: servers.dynamo(),
            tag,
            owned,
        };
        // Set up under the registration, so a failure half-way is cleaned
        // up like any run.
        if let Err(error) = env.set_up().await {
            env.remove().await;
            return Err(error);
        }
        Ok(env)
    }

    async fn set_up(&self) -> Result<(), Error> {
        MySql::create_database(&self.database_url).await?;
        let pool = connect_lazy(&self.database_url, 2, Duration::from_secs(10))?;
        MIGRATOR.run(&pool).await?;
        pool.close().await;
        create_tables(&self.dynamo, self.repair_table(), self.dead_letter_table()).await?;
        Ok(())
    }

    pub fn key_prefix(&self) -> &str {
        &self.owned.key_prefix
    }

    pub fn repair_table(&self) -> &str {
        &self.owned.tables[0]
    }

    pub fn dead_letter_table(&self) -> &str {
        &self.owned.tables[1]
    }

    /// Service clients over this environment, started as the functions
    /// start (`App::start_with`) from a [`Config`] naming this run's
    /// database, key prefix and tables, with `tuning`'s pool and Redis
    /// timeout.
    pub async fn stack(&self, tuning: Tuning) -> Result<Stack, Error> {
        let mut config = Config::from_lookup(|_| None)?;
        config.rules = self.rules;
        config.shards = SHARDS;
        config.redis_url = self.servers.redis_url.clone();
        config.redis_timeout = tuning.redis_timeout;
        config.database_url = self.database_url.clone();
        config.key_prefix = self.keys.prefix().to_owned();
        config.repair_table = Some(self.repair_table().to_owned());
        config.dead_letter_table = Some(self.dead_letter_table().to_owned());
        let pool = PoolSize { connections: tuning.db_connections, acquire_timeout: tuning.db_acquire_timeout };
        let app = App::start_sized(config, self.servers.sdk.clone(), pool).await?;
        Ok(Stack {
            redis: app.cache.writer().clone(),
            cache: app.cache.clone(),
            store: app.store.clone(),
            pool: app.store.writer().clone(),
            rules: self.rules,
            app,
        })
    }

    /// Drops the database, deletes the keys and the tables.
    pub async fn remove(self) {
        remove(&self.servers, &self.owned).await;
        unregister(&self.owned);
    }
}

async fn remove(servers: &Servers, owned: &Owned) {
    // Each step bounded, so a stuck server cannot hang the bench; a step
    // that fails is reported and the others still run.
    let database_url = format!("{}/{}", servers.database_server_url, owned.database);
    let database = async { MySql::drop_database(&database_url).await.map_err(Error::from) };
    report("drop database", &owned.database, tokio::time::timeout(Duration::from_secs(120), database).await);
    let keys = delete_keys(servers, &owned.key_prefix);
    report("delete keys", &owned.key_prefix, tokio::time::timeout(Duration::from_secs(300), keys).await);
    let client = servers.dynamo();
    for table in &owned.tables {
        let delete = async { client.delete_table().table_name(table).send().await.map(|_| ()).map_err(Error::from) };
        report("delete table", table, tokio::time::timeout(Duration::from_secs(30), delete).await);
    }
}

fn report(step: &str, what: &str, outcome: Result<Result<(), Error>, tokio::time::error::Elapsed>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("status-bench: warning: {step} {what} failed: {error}"),
        Err(_) => eprintln!("status-bench: warning: {step} {what} timed out"),
    }
}

/// Deletes every key under `prefix` with SCAN + UNLINK, never KEYS, so a
/// million users' keys go without blocking the server for seconds.
async fn delete_keys(servers: &Servers, prefix: &str) -> Result<(), Error> {
    let mut conn = servers.raw_redis().await?;
    let pattern = format!("{prefix}*");
    let started = Instant::now();
    let mut cursor: u64 = 0;
    // Bounded: SCAN visits every key once per full cycle; 100,000 calls of
    // COUNT 10,000 cover a billion keys.
    for _ in 0..100_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(280) {
            break;
        }
    }
    Err(format!("keys under {prefix} not all deleted").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_pass() {
        assert!(is_loopback_url("redis://127.0.0.1:6379"));
        assert!(is_loopback_url("mysql://root:pw@localhost:3306"));
        assert!(is_loopback_url("http://[::1]:5000"));
        assert!(is_loopback_url("redis+unix:///run/redis.sock"));
        assert!(!is_loopback_url("mysql://root@db.example.com:3306"));
        assert!(!is_loopback_url("https://dynamodb.us-east-1.amazonaws.com"));
        assert!(!is_loopback_url("redis://10.0.0.5"));
        assert!(!is_loopback_url("127.0.0.1:6379"));
    }
}
