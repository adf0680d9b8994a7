//! MySQL (Aurora; MariaDB locally) through sqlx: the durable copy of every
//! user's record in the seed's `user_status` table plus the columns the
//! merge needs. Writes are compare-and-set on `version`; reads and writes
//! of many users are one statement per chunk.
//!
//! Layout, one concern a file: this module holds the store, its pools and
//! the lock-conflict retry; [`row`] the codec of a row and of instants,
//! which every statement binds through; `status` the user records (load
//! and compare-and-set save); `outbox` the transactional outbox; `schedule`
//! the scanner's durable schedule; `erase` erasures and their watermarks;
//! `audience` the except lists of DESIGN §13.

mod audience;
mod erase;
mod outbox;
pub mod row;
mod schedule;
mod status;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::Row;

use crate::domain::{Rules, UserId};
use crate::ports::StoreError;

/// The schema migrations in `migrations/`, embedded; the same files run with
/// `sqlx migrate run`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Rows per statement: 15 placeholders a row stays far below MySQL's 65,535
/// and keeps one statement's packet small.
pub(super) const CHUNK: usize = 1000;

/// Binds `users` as the id list of a `… IN (` that `qb` ends with, and
/// closes it. The list is padded with its last id up to the next power of
/// two (at most [`CHUNK`]): a repeated id changes nothing an `IN` selects,
/// and the statement then has one of 11 shapes per chunk size instead of
/// one per count, so the connection's statement cache serves it prepared
/// (MariaDB spent a fifth of its time preparing statements used once,
/// docs/BENCHMARKS.md). `users` must not be empty or over [`CHUNK`].
pub(super) fn push_id_list(qb: &mut sqlx::QueryBuilder<'_, sqlx::MySql>, users: &[UserId]) {
    let padded = users.len().next_power_of_two().min(CHUNK).max(users.len());
    let last = users.last().map_or(0, |u| u.as_i64());
    let mut ids = qb.separated(", ");
    for user in users {
        ids.push_bind(user.as_i64());
    }
    for _ in users.len()..padded {
        ids.push_bind(last);
    }
    qb.push(")");
}

/// Attempts of one write transaction that InnoDB rolled back to break a
/// deadlock, or whose lock wait timed out. Writers of different users can
/// still deadlock on the gaps between their keys (the MSK event source
/// runs one aggregator invocation per partition at once, and the scanner
/// and the API write beside them); the transaction is rolled back whole and
/// is safe to run again.
const LOCK_ATTEMPTS: u32 = 4;

/// Whether `error` is InnoDB giving a transaction up to free its locks:
/// a deadlock (error 1213) or a lock wait timeout (1205).
fn is_lock_conflict(error: &StoreError) -> bool {
    let StoreError::Database(cause) = error else { return false };
    cause
        .downcast_ref::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|mysql| matches!(mysql.number(), 1205 | 1213))
}

/// Runs `transaction` until it ends other than by a lock conflict, at most
/// [`LOCK_ATTEMPTS`] times, with a random pause of up to 5, 10, then 20 ms
/// before each new attempt so the rivals do not meet again at once. Each
/// attempt run again is counted in `retries`.
pub(super) async fn retry_lock_conflicts<T, F, Fut>(
    what: &str,
    retries: &AtomicU64,
    mut transaction: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        // Boxed: the callers' futures are deep already (the API's erasure
        // route), and a box keeps the compiler's layout queries shallow.
        match Box::pin(transaction()).await {
            Err(error) if attempt < LOCK_ATTEMPTS && is_lock_conflict(&error) => {
                tracing::warn!(%error, attempt, what, "transaction rolled back by a lock conflict; running it again");
                retries.fetch_add(1, Ordering::Relaxed);
                let cap_us = 5_000u64 << (attempt - 1);
                tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % (cap_us + 1))).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Opens a pool that connects on first use, so a function starts (and
/// serves from Redis) while the database is down.
pub fn connect_lazy(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<MySqlPool, StoreError> {
    let options = MySqlConnectOptions::from_str(url)?;
    Ok(MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options))
}

/// The durable store.
#[derive(Clone)]
pub struct MySqlStore {
    writer: MySqlPool,
    reader: MySqlPool,
    rules: Rules,
    /// Transactions run again after a lock conflict, by every clone.
    lock_retries: Arc<AtomicU64>,
    /// Rows read with damaged columns, by every clone.
    damaged_rows: Arc<AtomicU64>,
}

impl MySqlStore {
    /// `reader` serves the read path (the Aurora reader endpoint); pass the
    /// writer pool again when there is none.
    pub fn new(writer: MySqlPool, reader: MySqlPool, rules: Rules) -> Self {
        Self { writer, reader, rules, lock_retries: Arc::default(), damaged_rows: Arc::default() }
    }

    pub fn writer(&self) -> &MySqlPool {
        &self.writer
    }

    /// How many write or erasure transactions this store (and its clones)
    /// ran again after InnoDB rolled them back for a deadlock or a lock
    /// wait timeout.
    pub fn lock_retries(&self) -> u64 {
        self.lock_retries.load(Ordering::Relaxed)
    }

    /// How many `user_status` rows this store (and its clones) read with
    /// damaged columns, a version past `MAX_VERSION` included (DESIGN §6);
    /// each was logged, read as what could be salvaged, and is replaced by
    /// its user's next write. A row read twice counts twice.
    pub fn damaged_rows(&self) -> u64 {
        self.damaged_rows.load(Ordering::Relaxed)
    }
}

/// The `user_id` column of a row of `table`, as a [`UserId`]; a value out
/// of its range is [`StoreError::Corrupt`].
pub(super) fn user_of(row: &sqlx::mysql::MySqlRow, table: &str) -> Result<UserId, StoreError> {
    let raw: i64 = row.try_get("user_id")?;
    u64::try_from(raw)
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{table}.user_id {raw} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The placeholders of an id list of `n` ids, as `push_id_list` binds them.
    fn placeholders(n: usize) -> usize {
        let users: Vec<UserId> = (1..=n as u64).map(|i| UserId::new(i).expect("a valid id")).collect();
        let mut qb = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT 1 WHERE x IN (");
        push_id_list(&mut qb, &users);
        let sql = qb.sql();
        assert!(sql.ends_with(')'), "{sql}");
        sql.matches('?').count()
    }

    #[test]
    fn id_lists_are_padded_to_the_next_power_of_two_at_most_a_chunk() {
        for (n, shape) in
            [(1, 1), (2, 2), (3, 4), (5, 8), (64, 64), (65, 128), (100, 128), (513, CHUNK), (CHUNK, CHUNK)]
        {
            assert_eq!(placeholders(n), shape, "{n} ids");
        }
        let shapes: std::collections::BTreeSet<usize> = (1..=CHUNK).map(placeholders).collect();
        assert_eq!(shapes.len(), 11, "{shapes:?}");
    }
}
