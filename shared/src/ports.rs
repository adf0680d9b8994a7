//! The small traits the services depend on, one capability each, so a
//! function links (and its IAM policy grants) only what it uses, and pure
//! service tests can pass in-memory fakes.

use std::collections::HashMap;
use std::future::Future;

use crate::domain::{Millis, Transition, UserId, UserRecord};

/// A user as the cache holds it: the record, plus the contract's
/// `status:visible:{id}` flag, which readers honour even if the record
/// disagrees (a hidden flag always wins, so visibility never leaks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    /// `None` on a miss: the hash is absent (never written, expired after a
    /// backfill, or flushed) and the caller must ask SQL.
    pub record: Option<UserRecord>,
    /// The flag has no TTL, so it can outlive a backfilled hash.
    pub visible_flag: Option<bool>,
}

/// Why a cache call failed. Every failure means "treat Redis as down for
/// this call": callers fall back to SQL and record repairs.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis did not answer within {0} ms")]
    Timeout(u128),
    #[error("redis failed: {0}")]
    Redis(#[source] redis::RedisError),
    #[error("redis holds a value this service cannot read: {0}")]
    Corrupt(String),
}

/// Why a durable store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database holds a value this service cannot read: {0}")]
    Corrupt(String),
}

/// A record to write, with the time it was derived at (the stored `status`
/// and `device_count` are derived at the wall-clock time of the write).
#[derive(Clone, Debug)]
pub struct Write<'a> {
    pub user: UserId,
    pub record: &'a UserRecord,
    /// When the scanner should next look at the user, if ever.
    pub next_change_ms: Option<Millis>,
}

/// Reads users from the hot cache.
pub trait CacheRead: Send + Sync {
    /// One round trip for all `users`, answered in their order.
    fn load(&self, users: &[UserId]) -> impl Future<Output = Result<Vec<Cached>, CacheError>> + Send;
}

/// Writes users to the hot cache. Writes are monotonic in the version: an
/// older record never replaces a newer one, so a late or repeated write is
/// harmless.
pub trait CacheWrite: Send + Sync {
    /// Writes records that are durable already; one round trip.
    fn store(&self, writes: &[Write<'_>], now: Millis) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Writes records read from SQL by a reader, with the backfill TTL, unless
    /// the cache already holds the same or a newer version.
    fn backfill(&self, writes: &[Write<'_>], now: Millis) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// Reads users from the durable store.
pub trait StoreRead: Send + Sync {
    /// One query; users absent from the store are absent from the map.
    fn load(&self, users: &[UserId]) -> impl Future<Output = Result<HashMap<UserId, UserRecord>, StoreError>> + Send;
}

/// Writes users to the durable store with compare-and-set on the version.
pub trait StoreWrite: Send + Sync {
    /// Saves every record whose stored version is still `record.version - 1`
    /// (or absent when that is 0) and returns the users that lost the race,
    /// whose records were left untouched.
    fn save(&self, writes: &[Write<'_>], now: Millis) -> impl Future<Output = Result<Vec<UserId>, StoreError>> + Send;
}

/// Publishes `status_changed` events.
pub trait ChangePublisher: Send + Sync {
    fn publish(&self, changes: &[(UserId, Transition)]) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Why publishing failed after its retries.
#[derive(Debug, thiserror::Error)]
#[error("publishing status_changed failed: {0}")]
pub struct PublishError(pub String);
