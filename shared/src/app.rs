//! Start-up wiring shared by the three functions and the local stack: from
//! a [`Config`] to connected adapters, built once per process and reused
//! by every invocation.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::adapters::apigw::ApiGatewayPoster;
use crate::adapters::aws::{load_config, with_deadlines};
use crate::adapters::dynamodb::{DynamoDeadLetters, DynamoRepairBuffer};
use crate::adapters::eventbridge::{EventBridgePublisher, NoopPublisher};
use crate::adapters::lambda::{LambdaFeed, NoFeed};
use crate::adapters::mysql::MySqlStore;
use crate::adapters::redis::{Keys, RedisCache, RedisConn, RedisPollLimiter, RedisStreamRegistry};
use crate::config::Config;
use crate::domain::{FeedChange, OutboxEvent};
use crate::ports::{CacheError, ChangeFeed, ChangePublisher, Delivery, FeedError};
use crate::services::{Committer, Reader, StreamSettings, Streamer};

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("configuration variable {0} is required")]
    Missing(&'static str),
    #[error("redis url is invalid: {0}")]
    Redis(#[from] CacheError),
    #[error("database url is invalid: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database secret could not be read: {0}")]
    Secret(String),
}

/// Publishes to the configured bus, or nowhere when none is configured.
#[derive(Clone, Debug)]
pub enum Publisher {
    Bus(EventBridgePublisher),
    Off(NoopPublisher),
}

impl ChangePublisher for Publisher {
    fn enabled(&self) -> bool {
        match self {
            Self::Bus(bus) => bus.enabled(),
            Self::Off(off) => off.enabled(),
        }
    }

    async fn publish(&self, events: &[OutboxEvent]) -> Delivery {
        match self {
            Self::Bus(bus) => bus.publish(events).await,
            Self::Off(off) => off.publish(events).await,
        }
    }
}

/// Feeds the configured stream function (`STREAM_FUNCTION`), or nothing
/// when none is configured (DESIGN §12).
#[derive(Clone, Debug)]
pub enum Feed {
    Lambda(LambdaFeed),
    Off(NoFeed),
}

impl ChangeFeed for Feed {
    fn enabled(&self) -> bool {
        match self {
            Self::Lambda(lambda) => lambda.enabled(),
            Self::Off(off) => off.enabled(),
        }
    }

    async fn changed(&self, changes: &[FeedChange]) -> Result<(), FeedError> {
        match self {
            Self::Lambda(lambda) => lambda.changed(changes).await,
            Self::Off(off) => off.changed(changes).await,
        }
    }
}

/// Every adapter a function may use, connected lazily: nothing here blocks
/// on Redis or the database, so a function starts while either is down.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub cache: RedisCache,
    pub store: MySqlStore,
    pub repair: DynamoRepairBuffer,
    pub dead_letters: DynamoDeadLetters,
    pub publisher: Publisher,
    pub feed: Feed,
    pub limiter: RedisPollLimiter,
    /// Live status over WebSocket (DESIGN §12): the connection registry
    /// and the poster of frames.
    pub stream_registry: RedisStreamRegistry,
    pub frame_poster: ApiGatewayPoster,
}

/// The adapters the functions run over, named by their role so a function
/// crate names only this composition root, never an adapter.
pub type AppCache = crate::adapters::redis::RedisCache;
pub type AppStore = crate::adapters::mysql::MySqlStore;
pub type AppRepairBuffer = crate::adapters::dynamodb::DynamoRepairBuffer;
pub type AppDeadLetters = crate::adapters::dynamodb::DynamoDeadLetters;
pub type AppPollLimiter = crate::adapters::redis::RedisPollLimiter;

pub type AppStreamRegistry = crate::adapters::redis::RedisStreamRegistry;
pub type AppFramePoster = crate::adapters::apigw::ApiGatewayPoster;
/// The stream service over any poster (the functions use
/// [`AppFramePoster`]; tests pass one of their own).
pub type AppStreamer<P> = Streamer<RedisCache, MySqlStore, RedisStreamRegistry, P>;

/// The write path as the functions use it.
pub type AppCommitter = Committer<RedisCache, MySqlStore, DynamoRepairBuffer, Publisher, Feed>;
/// The read path as the functions use it.
pub type AppReader = Reader<RedisCache, MySqlStore>;

impl App {
    /// Builds the adapters, with AWS clients from the standard SDK
    /// configuration (environment, Lambda role).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with(config, load_config().await).await
    }

    /// Builds the adapters with AWS clients from `sdk`, each under the
    /// deadlines and retry budget of `config.aws` (`AWS_TIMEOUT_MS` and
    /// the rest), whatever `sdk` said about them.
    pub async fn start_with(config: Config, sdk: aws_config::SdkConfig) -> Result<Self, StartError> {
        Self::start_sized(config, sdk, PoolSize::FUNCTION).await
    }

    /// [`App::start_with`] with database pools of `pool`'s size: for a
    /// process that runs more than one invocation at a time (a load
    /// generator, a test driving requests in parallel).
    pub async fn start_sized(config: Config, sdk: aws_config::SdkConfig, pool: PoolSize) -> Result<Self, StartError> {
        let sdk = with_deadlines(&sdk, &config.aws);
        let repair_table = config.repair_table.clone().ok_or(StartError::Missing("REPAIR_TABLE"))?;
        let dead_letter_table = config.dead_letter_table.clone().ok_or(StartError::Missing("DEAD_LETTER_TABLE"))?;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let publisher = match &config.status_event_bus {
            Some(bus) => Publisher::Bus(EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&sdk), bus)),
            None => {
                tracing::warn!("STATUS_EVENT_BUS is not set; status_changed events are not published");
                Publisher::Off(NoopPublisher)
            }
        };

        let feed = match &config.stream_function {
            Some(function) => Feed::Lambda(LambdaFeed::new(lambda_client(&sdk, &config), function)),
            None => Feed::Off(NoFeed),
        };
        let frame_poster = ApiGatewayPoster::new(&sdk, config.stream.endpoint.as_deref());

        let secret = match &config.database_secret_arn {
            Some(arn) => Some(read_secret(&sdk, arn).await?),
            None => None,
        };
        let Stores { cache, limiter, store, stream_registry } = Stores::connect_as(&config, secret.as_ref(), pool)?;

        Ok(Self {
            repair: DynamoRepairBuffer::new(dynamo.clone(), repair_table, config.shards),
            dead_letters: DynamoDeadLetters::new(dynamo, dead_letter_table),
            publisher,
            feed,
            cache,
            store,
            limiter,
            stream_registry,
            frame_poster,
            config,
        })
    }

    /// The write path. It loads what it merges into from the primaries,
    /// never from a replica that may lag.
    pub fn committer(&self) -> AppCommitter {
        Committer {
            cache: self.cache.primary_only(),
            store: self.store.clone(),
            repair: self.repair.clone(),
            publisher: self.publisher.clone(),
            feed: self.feed.clone(),
            rules: self.config.rules,
        }
    }

    /// The stream service (DESIGN §12) posting through `poster`. It reads
    /// from the primaries: a subscribe watches before it reads, and only a
    /// read that sees every change committed before the watch loses none.
    pub fn streamer<P>(&self, poster: P) -> AppStreamer<P> {
        Streamer {
            reader: Reader { cache: self.cache.primary_only(), store: self.store.clone(), rules: self.config.rules },
            registry: self.stream_registry.clone(),
            poster,
            settings: StreamSettings {
                max_ids: self.config.stream.max_ids,
                cursor_retention_ms: self.config.stream.cursor_retention_ms,
                concurrency: 64,
                coalesce_ms: self.config.stream.coalesce_ms,
                activity_refresh_ms: self.config.stream.activity_refresh_ms,
            },
        }
    }

    pub fn reader(&self) -> AppReader {
        Reader { cache: self.cache.clone(), store: self.store.clone(), rules: self.config.rules }
    }
}

/// The Lambda client of the push feed: `sdk`'s, sent to
/// `config.lambda_endpoint` when that is set (the local stack's Invoke API,
/// which is not where `AWS_ENDPOINT_URL` points).
fn lambda_client(sdk: &aws_config::SdkConfig, config: &Config) -> aws_sdk_lambda::Client {
    let mut lambda = aws_sdk_lambda::config::Builder::from(sdk);
    if let Some(endpoint) = &config.lambda_endpoint {
        lambda = lambda.endpoint_url(endpoint);
    }
    aws_sdk_lambda::Client::from_conf(lambda.build())
}

/// The Redis and SQL side of an [`App`], connected lazily: what an
/// adapter-level test or tool needs without any AWS client.
#[derive(Clone)]
pub struct Stores {
    pub cache: RedisCache,
    pub limiter: RedisPollLimiter,
    pub store: MySqlStore,
    /// The live-status connection registry (DESIGN §12), on the primary.
    pub stream_registry: RedisStreamRegistry,
}

impl Stores {
    /// The cache, limiter and store `config` names (`REDIS_URL`,
    /// `REDIS_READER_URL`, `DATABASE_URL`, `DATABASE_READER_URL`,
    /// `KEY_PREFIX` and the rules), the database signed into with the
    /// URL's own credentials, with pools of `pool`'s size. Errors: a URL
    /// that cannot be parsed.
    pub fn connect(config: &Config, pool: PoolSize) -> Result<Self, StartError> {
        Self::connect_as(config, None, pool)
    }

    fn connect_as(config: &Config, secret: Option<&DbSecret>, pool: PoolSize) -> Result<Self, StartError> {
        let writer = RedisConn::new(&config.redis_url, config.redis_timeout)?;
        let reader = match &config.redis_reader_url {
            Some(url) => RedisConn::new(url, config.redis_timeout)?,
            None => writer.clone(),
        };
        let keys = Keys::new(config.key_prefix.clone());
        let cache =
            RedisCache::new(writer.clone(), reader, keys.clone(), config.rules, config.shards, config.backfill_ttl);
        let limiter = RedisPollLimiter::new(writer.clone(), keys.clone(), config.poll_window);
        let stream_registry = RedisStreamRegistry::new(writer, keys);
        let db_writer = connect_pool(&config.database_url, secret, pool)?;
        let db_reader = match &config.database_reader_url {
            Some(url) => connect_pool(url, secret, pool)?,
            None => db_writer.clone(),
        };
        let store = MySqlStore::new(db_writer, db_reader, config.rules);
        Ok(Self { cache, limiter, store, stream_registry })
    }
}

/// Database credentials kept in Secrets Manager (the RDS secret shape).
#[derive(serde::Deserialize)]
struct DbSecret {
    username: String,
    password: String,
}

async fn read_secret(sdk: &aws_config::SdkConfig, arn: &str) -> Result<DbSecret, StartError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| StartError::Secret(aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string()))?;
    let text = out.secret_string().ok_or_else(|| StartError::Secret("secret has no string value".into()))?;
    serde_json::from_str(text).map_err(|e| StartError::Secret(format!("secret is not {{username, password}}: {e}")))
}

/// The size of a database pool: how many connections it opens at most, and
/// how long a query waits for one before it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub connections: u32,
    pub acquire_timeout: Duration,
}

impl PoolSize {
    /// A function's pools: Lambda runs one invocation per process at a
    /// time, so 4 connections suffice and spare Aurora's connection limit;
    /// a query waits at most 3 s for one.
    pub const FUNCTION: PoolSize = PoolSize { connections: 4, acquire_timeout: Duration::from_secs(3) };
}

/// A lazily connecting pool of `size`, signed in with `secret` when given.
fn connect_pool(url: &str, secret: Option<&DbSecret>, size: PoolSize) -> Result<MySqlPool, StartError> {
    let mut options = MySqlConnectOptions::from_str(url)?;
    if let Some(secret) = secret {
        options = options.username(&secret.username).password(&secret.password);
    }
    Ok(MySqlPoolOptions::new()
        .max_connections(size.connections)
        .acquire_timeout(size.acquire_timeout)
        .connect_lazy_with(options))
}

/// The service clock: epoch milliseconds now. Only entrypoints call it;
/// everything below takes `now` as a parameter.
pub fn now_ms() -> crate::domain::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
