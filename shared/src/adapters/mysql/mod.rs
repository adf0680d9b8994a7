//! MySQL (Aurora; MariaDB locally) through sqlx: the durable copy of every
//! user's record in the seed's `user_status` table plus the columns the
//! merge needs. Writes are compare-and-set on `version`; reads and writes
//! of many users are one statement per chunk.
//!
//! Layout: this module holds the statements; [`row`] the codec of a row
//! and of instants, which every statement binds through.

pub mod row;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};

use self::row::{to_datetime, to_optional_datetime, RawRow};
use super::codec::{manual_to_json, sessions_to_json};
use crate::domain::ids::MAX_INSTANT_MS;
use crate::domain::{Millis, OutboxEvent, Rules, Status, UserId, UserRecord, Visibility};
use crate::ports::{
    Erasure, Outbox, ScheduleCursor, SchedulePage, ScheduleSource, StoreErase, StoreError, StoreRead, StoreWrite, Write,
};

/// The schema migrations in `migrations/`, embedded; the same files run with
/// `sqlx migrate run`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Rows per statement: 15 placeholders a row stays far below MySQL's 65,535
/// and keeps one statement's packet small.
const CHUNK: usize = 1000;

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
/// before each new attempt so the rivals do not meet again at once.
async fn retry_lock_conflicts<T, F, Fut>(what: &str, mut transaction: F) -> Result<T, StoreError>
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
}

impl MySqlStore {
    /// `reader` serves the read path (the Aurora reader endpoint); pass the
    /// writer pool again when there is none.
    pub fn new(writer: MySqlPool, reader: MySqlPool, rules: Rules) -> Self {
        Self { writer, reader, rules }
    }

    pub fn writer(&self) -> &MySqlPool {
        &self.writer
    }

    /// Events waiting in `status_outbox`, by shard (`user_id mod shards`,
    /// the scanner's shards); shards with none are absent. One `COUNT` over
    /// the table's primary key, which the drain keeps small: a metric
    /// (`OutboxDepth`, DESIGN §6's outbox), not a path any answer waits on,
    /// so a failure is logged and gives `None`.
    pub async fn outbox_depth_by_shard(&self, shards: u32) -> Option<HashMap<u32, u64>> {
        match self.count_outbox(shards).await {
            Ok(depth) => Some(depth),
            Err(error) => {
                tracing::warn!(%error, "outbox depth not read");
                None
            }
        }
    }

    async fn count_outbox(&self, shards: u32) -> Result<HashMap<u32, u64>, StoreError> {
        let rows: Vec<(u64, i64)> = sqlx::query_as(
            "SELECT CAST(MOD(user_id, ?) AS UNSIGNED) AS shard, COUNT(*) AS waiting FROM status_outbox GROUP BY shard",
        )
        .bind(shards.max(1))
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(shard, waiting)| (u32::try_from(shard).unwrap_or(u32::MAX), u64::try_from(waiting).unwrap_or(0)))
            .collect())
    }

    async fn load_from(&self, pool: &MySqlPool, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        let mut out = HashMap::with_capacity(users.len());
        for chunk in users.chunks(CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT user_id, version, sessions, last_active_at, visible, updated_at, hidden_at, \
                 hidden_last_active_at, announced, manual_status, manual_announced FROM user_status \
                 WHERE user_id IN (",
            );
            let mut ids = qb.separated(", ");
            for user in chunk {
                ids.push_bind(user.as_i64());
            }
            qb.push(")");
            let rows = qb.build().persistent(false).fetch_all(pool).await?;
            for row in rows {
                // One damaged row fails nothing beside it (DESIGN §6): it
                // reads as what can be salvaged, and the next write of the
                // user replaces it whole.
                match row::decode(raw_row(&row)?) {
                    Ok(decoded) => {
                        if !decoded.damaged.is_empty() {
                            tracing::warn!(user = %decoded.user, columns = ?decoded.damaged,
                                "user_status row has damaged columns; read as absent, replaced by the next write");
                        }
                        out.insert(decoded.user, decoded.record);
                    }
                    Err(error) => tracing::warn!(%error, "user_status row skipped"),
                }
            }
            // Erased users: the watermark says which events to ignore, and
            // an erased user without a row since reads as never seen, at the
            // version the erasure took.
            for (user, erased_ms, version) in watermarks(pool, chunk, false).await? {
                // The erasure announced it offline, so a replay that
                // changes nothing writes nothing either.
                let record = out.entry(user).or_insert_with(|| UserRecord {
                    version,
                    announced: Some(Status::Offline),
                    ..UserRecord::default()
                });
                record.erased_ms = Some(erased_ms);
            }
        }
        Ok(out)
    }
}

/// The erasure watermarks of `users` that have one, as `(user, erased_ms,
/// version)`; with `lock`, read under a shared lock that an erasure of
/// those users waits for (and that waits for one), so a write and an
/// erasure of one user never cross.
async fn watermarks<'c, E>(executor: E, users: &[UserId], lock: bool) -> Result<Vec<(UserId, Millis, u64)>, StoreError>
where
    E: sqlx::Executor<'c, Database = MySql>,
{
    let mut qb =
        QueryBuilder::<MySql>::new("SELECT user_id, erased_at, last_version FROM user_erasure WHERE user_id IN (");
    let mut ids = qb.separated(", ");
    for user in users {
        ids.push_bind(user.as_i64());
    }
    qb.push(")");
    if lock {
        qb.push(" LOCK IN SHARE MODE");
    }
    let rows = qb.build().persistent(false).fetch_all(executor).await?;
    rows.iter()
        .map(|row| {
            let user = user_of(row, "user_erasure")?;
            // A watermark whose time cannot be read keeps every event of
            // the user out: an erasure is a promise never to bring the
            // history back, so the damage fails closed, for this user only.
            let erased_ms = row
                .try_get::<Option<NaiveDateTime>, _>("erased_at")
                .ok()
                .flatten()
                .and_then(row::from_datetime)
                .unwrap_or_else(|| {
                    tracing::error!(%user, "erasure watermark unreadable; ignoring every event of the user");
                    MAX_INSTANT_MS
                });
            Ok((user, erased_ms, row.try_get("last_version")?))
        })
        .collect()
}

/// The columns an upsert replaces, each only if the compare-and-set holds.
/// MySQL applies assignments left to right and a later one sees the values
/// set before it, so `visible` and `version`, which the condition reads,
/// come last and in this order.
const UPSERT_COLUMNS: [&str; 14] = [
    "status",
    "last_active_at",
    "device_count",
    "updated_at",
    "write_token",
    "sessions",
    "hidden_at",
    "hidden_last_active_at",
    "announced",
    "next_change_at",
    "manual_status",
    "manual_announced",
    "visible",
    "version",
];

impl MySqlStore {
    /// Upserts one chunk inside `tx` and returns the users whose rows a
    /// rival had moved on (left untouched). Without `may_show`, a stored
    /// hidden preference also makes the row lost when this write would show
    /// the user: the caller then merges again from the hidden row.
    async fn save_chunk(
        &self,
        tx: &mut sqlx::Transaction<'_, MySql>,
        chunk: &[&Write<'_>],
        may_show: bool,
        now: Millis,
    ) -> Result<Vec<UserId>, StoreError> {
        let updated_at = to_datetime(now)?;
        // Every instant is encoded before the statement is built, so a value
        // no column holds is an error of this call, never a driver panic.
        let encoded = chunk
            .iter()
            .map(|write| encode_instants(write, now, &self.rules))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Tells this writer's rows from a rival's that reached the same
        // version first.
        let token: i64 = rand::random();
        let mut qb = QueryBuilder::<MySql>::new(
            "INSERT INTO user_status (user_id, status, last_active_at, device_count, visible, updated_at, \
             version, write_token, sessions, hidden_at, hidden_last_active_at, announced, next_change_at, \
             manual_status, manual_announced) ",
        );
        qb.push_values(chunk.iter().zip(encoded), |mut row, (write, instants)| {
            let record = write.record;
            let EncodedInstants { view, last_active_at, hidden_at, hidden_last_active, next_change_at } = instants;
            row.push_bind(write.user.as_i64())
                .push_bind(view.status.as_str())
                .push_bind(last_active_at)
                .push_bind(view.device_count)
                .push_bind(record.state.visibility.is_visible())
                .push_bind(updated_at)
                .push_bind(record.version)
                .push_bind(token)
                .push_bind(sessions_to_json(&record.state.presence.sessions))
                .push_bind(hidden_at)
                .push_bind(hidden_last_active)
                .push_bind(record.announced.map(Status::as_str))
                .push_bind(next_change_at)
                .push_bind(manual_to_json(record.state.manual.as_ref()))
                .push_bind(manual_to_json(record.announced_manual.as_ref()));
        });
        // Every column is replaced only if the stored row is the version
        // this record was merged from (and, unless showing is allowed, the
        // write does not turn a stored hide visible).
        let cas = if may_show {
            "version + 1 = VALUES(version)"
        } else {
            "(version + 1 = VALUES(version) AND (visible OR NOT VALUES(visible)))"
        };
        qb.push(" ON DUPLICATE KEY UPDATE ");
        let assignments: Vec<String> =
            UPSERT_COLUMNS.iter().map(|c| format!("{c} = IF({cas}, VALUES({c}), {c})")).collect();
        qb.push(assignments.join(", "));
        let affected = qb.build().persistent(false).execute(&mut **tx).await?.rows_affected();

        // Which rows did this writer set? sqlx connects with
        // CLIENT_FOUND_ROWS, so each row counts 2 when updated and 1 when
        // inserted or when a rival's version was kept. A chunk that only
        // updates (every version > 1) and counts two per row was won whole,
        // with no read needed. Otherwise read the rows back: a row a rival
        // moved on (or a kept hide) holds another version or token.
        let only_updates = chunk.iter().all(|w| w.record.version > 1);
        if only_updates && affected == 2 * chunk.len() as u64 {
            return Ok(Vec::new());
        }
        let mut check =
            QueryBuilder::<MySql>::new("SELECT user_id, version, write_token FROM user_status WHERE user_id IN (");
        let mut ids = check.separated(", ");
        for write in chunk {
            ids.push_bind(write.user.as_i64());
        }
        check.push(")");
        let stored: HashMap<i64, (u64, i64)> = check
            .build()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("user_id")?, (row.try_get("version")?, row.try_get("write_token")?))))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(chunk
            .iter()
            .filter(|w| stored.get(&w.user.as_i64()) != Some(&(w.record.version, token)))
            .map(|w| w.user)
            .collect())
    }
}

/// Adds `events` to the outbox inside `tx`; an event already there (a
/// replayed call) is left as it is.
async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, MySql>,
    events: &[&OutboxEvent],
    now: Millis,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let created_at = to_datetime(now)?;
    let mut qb =
        QueryBuilder::<MySql>::new("INSERT INTO status_outbox (user_id, version, detail_type, detail, created_at) ");
    qb.push_values(events, |mut row, event| {
        row.push_bind(event.user.as_i64())
            .push_bind(event.version)
            .push_bind(event.detail_type.as_str())
            .push_bind(event.detail.as_str())
            .push_bind(created_at);
    });
    qb.push(" ON DUPLICATE KEY UPDATE created_at = created_at");
    qb.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}

/// The `user_id` column of a row of `table`, as a [`UserId`]; a value out
/// of its range is [`StoreError::Corrupt`].
fn user_of(row: &sqlx::mysql::MySqlRow, table: &str) -> Result<UserId, StoreError> {
    let raw: i64 = row.try_get("user_id")?;
    u64::try_from(raw)
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{table}.user_id {raw} out of range")))
}

fn decode_outbox_row(row: &sqlx::mysql::MySqlRow) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        user: user_of(row, "status_outbox")?,
        version: row.try_get("version")?,
        detail_type: row.try_get("detail_type")?,
        detail: row.try_get("detail")?,
    })
}

impl MySqlStore {
    /// The rows `claim` holds, each user's in version order.
    async fn claimed(&self, claim: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, version, detail_type, detail FROM status_outbox WHERE claim = ? \
             ORDER BY user_id, version",
        )
        .bind(claim)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(decode_outbox_row).collect()
    }
}

impl Outbox for MySqlStore {
    async fn claim_for(
        &self,
        users: &[UserId],
        claim: i64,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let (until, now_at) = (to_datetime(now.saturating_add(lease_ms))?, to_datetime(now)?);
        for chunk in users.chunks(CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new("UPDATE status_outbox SET claim = ");
            qb.push_bind(claim).push(", claimed_until = ").push_bind(until);
            qb.push(" WHERE (claimed_until IS NULL OR claimed_until < ").push_bind(now_at);
            qb.push(") AND user_id IN (");
            let mut ids = qb.separated(", ");
            for user in chunk {
                ids.push_bind(user.as_i64());
            }
            qb.push(")");
            qb.build().persistent(false).execute(&self.writer).await?;
        }
        self.claimed(claim).await
    }

    async fn claim_in_shard(
        &self,
        shard: u32,
        shards: u32,
        claim: i64,
        now: Millis,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        // Primary-key order is each user's version order, so a page never
        // takes a user's later event ahead of an earlier one.
        sqlx::query(
            "UPDATE status_outbox SET claim = ?, claimed_until = ? \
             WHERE MOD(user_id, ?) = ? AND (claimed_until IS NULL OR claimed_until < ?) \
             ORDER BY user_id, version LIMIT ?",
        )
        .bind(claim)
        .bind(to_datetime(now.saturating_add(lease_ms))?)
        .bind(shards.max(1))
        .bind(shard)
        .bind(to_datetime(now)?)
        .bind(limit as u64)
        .execute(&self.writer)
        .await?;
        self.claimed(claim).await
    }

    async fn release(&self, claim: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE status_outbox SET claim = NULL, claimed_until = NULL WHERE claim = ?")
            .bind(claim)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn remove(&self, done: &[OutboxEvent]) -> Result<(), StoreError> {
        for chunk in done.chunks(CHUNK) {
            let mut qb =
                QueryBuilder::<MySql>::new("DELETE FROM status_outbox WHERE (user_id, version, detail_type) IN (");
            let mut rows = qb.separated(", ");
            for event in chunk {
                rows.push("(");
                rows.push_bind_unseparated(event.user.as_i64());
                rows.push_unseparated(", ");
                rows.push_bind_unseparated(event.version);
                rows.push_unseparated(", ");
                rows.push_bind_unseparated(event.detail_type.as_str());
                rows.push_unseparated(")");
            }
            qb.push(")");
            qb.build().persistent(false).execute(&self.writer).await?;
        }
        Ok(())
    }
}

impl ScheduleSource for MySqlStore {
    async fn scheduled(
        &self,
        shard: u32,
        shards: u32,
        after: Option<&ScheduleCursor>,
        limit: usize,
    ) -> Result<SchedulePage, StoreError> {
        // `idx_next_change` holds (next_change_at, user_id), so this is a
        // walk of that index alone, paged by its own order; forced, so a
        // small table's statistics never turn it into a table scan. The
        // time comes back as the server's own text and the cursor hands
        // that text back: a damaged time (a zero date) is still a position
        // in the index the next page can start after, so a walk never
        // stops or loops on one.
        let (after_at, after_user) = match after {
            Some(cursor) => (Some(cursor.due_text.as_str()), cursor.user.as_i64()),
            None => (None, 0),
        };
        let rows = sqlx::query(
            "SELECT user_id, CAST(next_change_at AS CHAR) AS due_text FROM user_status FORCE INDEX (idx_next_change) \
             WHERE next_change_at IS NOT NULL AND MOD(user_id, ?) = ? \
               AND (? IS NULL OR next_change_at > ? OR (next_change_at = ? AND user_id > ?)) \
             ORDER BY next_change_at, user_id LIMIT ?",
        )
        .bind(shards.max(1))
        .bind(shard)
        .bind(after_at)
        .bind(after_at)
        .bind(after_at)
        .bind(after_user)
        .bind(limit as u64)
        .fetch_all(&self.writer)
        .await?;
        let mut page = SchedulePage { rows: rows.len(), ..SchedulePage::default() };
        for raw in &rows {
            let user = match user_of(raw, "user_status") {
                Ok(user) => user,
                Err(error) => {
                    tracing::warn!(%error, "scheduled row skipped");
                    page.unreadable += 1;
                    continue;
                }
            };
            let due_text: String = raw.try_get("due_text")?;
            page.next = Some(ScheduleCursor { due_text: due_text.clone(), user });
            match NaiveDateTime::parse_from_str(&due_text, "%Y-%m-%d %H:%M:%S%.f").ok().and_then(row::from_datetime) {
                Some(due) => page.entries.push((user, due)),
                None => {
                    // Due at once: the scan looks at the user now and
                    // schedules them from what their record derives.
                    tracing::warn!(%user, next_change_at = %due_text, "unreadable next_change_at; the user is due at once");
                    page.unreadable += 1;
                    page.entries.push((user, 0));
                }
            }
        }
        Ok(page)
    }
}

/// The instants of one write, encoded for their columns.
struct EncodedInstants {
    view: crate::domain::View,
    last_active_at: Option<NaiveDateTime>,
    hidden_at: Option<NaiveDateTime>,
    hidden_last_active: Option<NaiveDateTime>,
    next_change_at: Option<NaiveDateTime>,
}

/// Derives `write`'s stored view at `now` and encodes every instant the
/// row holds, failing on one no column can hold ([`row::to_datetime`]).
fn encode_instants(write: &Write<'_>, now: Millis, rules: &Rules) -> Result<EncodedInstants, StoreError> {
    let record = write.record;
    let view = record.state.derive(now, rules);
    let (hidden_at, hidden_last_active) = match record.state.visibility {
        Visibility::Visible => (None, None),
        Visibility::Hidden { since_ms, last_active_ms } => {
            (Some(to_datetime(since_ms)?), to_optional_datetime(last_active_ms)?)
        }
    };
    Ok(EncodedInstants {
        last_active_at: to_optional_datetime(view.last_active_ms)?,
        hidden_at,
        hidden_last_active,
        next_change_at: to_optional_datetime(write.next_change_ms)?,
        view,
    })
}

/// Reads a `user_status` row column by column ([`row::RawRow`]); only the
/// key and version, which no write can damage, fail the read.
fn raw_row(row: &sqlx::mysql::MySqlRow) -> Result<RawRow, StoreError> {
    fn column<'r, T>(row: &'r sqlx::mysql::MySqlRow, name: &str) -> row::Column<T>
    where
        T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
    {
        row.try_get::<Option<T>, _>(name).map_err(|e| e.to_string())
    }
    Ok(RawRow {
        user_id: row.try_get("user_id")?,
        version: row.try_get("version")?,
        sessions: column(row, "sessions"),
        last_active_at: column(row, "last_active_at"),
        visible: column(row, "visible"),
        updated_at: column(row, "updated_at"),
        hidden_at: column(row, "hidden_at"),
        hidden_last_active_at: column(row, "hidden_last_active_at"),
        announced: column(row, "announced"),
        manual_status: column(row, "manual_status"),
        manual_announced: column(row, "manual_announced"),
    })
}

impl StoreRead for MySqlStore {
    async fn load(&self, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        self.load_from(&self.reader, users).await
    }
}

impl StoreWrite for MySqlStore {
    async fn load_current(&self, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        self.load_from(&self.writer, users).await
    }

    /// A deadlock or lock wait timeout runs the whole transaction again
    /// (up to [`LOCK_ATTEMPTS`] times) before it is returned as an error.
    async fn save(&self, writes: &[Write<'_>], events: &[OutboxEvent], now: Millis) -> Result<Vec<UserId>, StoreError> {
        retry_lock_conflicts("save", || self.save_once(writes, events, now)).await
    }
}

impl MySqlStore {
    /// One attempt of [`StoreWrite::save`], in one transaction.
    async fn save_once(
        &self,
        writes: &[Write<'_>],
        events: &[OutboxEvent],
        now: Millis,
    ) -> Result<Vec<UserId>, StoreError> {
        let mut lost = Vec::new();
        if writes.is_empty() {
            return Ok(lost);
        }
        // One transaction for every chunk: the call is all or nothing (a
        // failure half-way leaves no committed rows whose transitions the
        // caller would not know of), and the rows stay locked until the
        // read-back has seen who won them. The visibility route's "show"
        // writes go in statements of their own, the only ones allowed to
        // turn a stored hide visible.
        let mut tx = self.writer.begin().await?;
        let (shows, keeps): (Vec<&Write<'_>>, Vec<&Write<'_>>) = writes.iter().partition(|w| w.shows);
        for (group, may_show) in [(keeps, false), (shows, true)] {
            for chunk in group.chunks(CHUNK) {
                // A write merged from before an erasure of its user is
                // lost: the caller merges again from the watermark. Read
                // first and locked, as an erasure locks it first too.
                let users: Vec<UserId> = chunk.iter().map(|w| w.user).collect();
                let erased: HashMap<UserId, u64> =
                    watermarks(&mut *tx, &users, true).await?.into_iter().map(|(u, _, v)| (u, v)).collect();
                let (chunk, mut chunk_lost): (Vec<&Write<'_>>, Vec<UserId>) = if erased.is_empty() {
                    (chunk.to_vec(), Vec::new())
                } else {
                    let (stale, fresh): (Vec<&Write<'_>>, Vec<&Write<'_>>) =
                        chunk.iter().partition(|w| erased.get(&w.user).is_some_and(|v| w.record.version <= *v));
                    (fresh, stale.iter().map(|w| w.user).collect())
                };
                let chunk = chunk.as_slice();
                if !chunk.is_empty() {
                    chunk_lost.extend(self.save_chunk(&mut tx, chunk, may_show, now).await?);
                }
                let won = |w: &&&Write<'_>| !chunk_lost.contains(&w.user);
                let winners: HashMap<UserId, u64> =
                    chunk.iter().filter(won).map(|w| (w.user, w.record.version)).collect();
                let announced: Vec<&OutboxEvent> =
                    events.iter().filter(|e| winners.get(&e.user) == Some(&e.version)).collect();
                insert_outbox(&mut tx, &announced, now).await?;
                lost.extend(chunk_lost);
            }
        }
        tx.commit().await?;
        Ok(lost)
    }
}

impl StoreErase for MySqlStore {
    /// A deadlock or lock wait timeout runs the transaction again, as for
    /// [`StoreWrite::save`].
    async fn erase(&self, erasure: &Erasure, events: &[OutboxEvent]) -> Result<bool, StoreError> {
        retry_lock_conflicts("erase", || self.erase_once(erasure, events)).await
    }
}

impl MySqlStore {
    /// One attempt of [`StoreErase::erase`], in one transaction.
    async fn erase_once(&self, erasure: &Erasure, events: &[OutboxEvent]) -> Result<bool, StoreError> {
        let user = erasure.user.as_i64();
        let at = to_datetime(erasure.at_ms)?;
        let mut tx = self.writer.begin().await?;
        // The watermark row first, locked for the whole transaction: every
        // save reads it first under a shared lock, so a write of this user
        // either committed before (and is erased here) or waits and then
        // finds the watermark (and merges again from it).
        sqlx::query(
            "INSERT INTO user_erasure (user_id, erased_at, last_version) VALUES (?, ?, 0) \
             ON DUPLICATE KEY UPDATE user_id = user_id",
        )
        .bind(user)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let watermark: u64 = sqlx::query_scalar("SELECT last_version FROM user_erasure WHERE user_id = ? FOR UPDATE")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        let row: Option<u64> = sqlx::query_scalar("SELECT version FROM user_status WHERE user_id = ? FOR UPDATE")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
        if row.unwrap_or(watermark) != erasure.expected_version {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_status WHERE user_id = ?").bind(user).execute(&mut *tx).await?;
        let events: Vec<&OutboxEvent> = events.iter().collect();
        insert_outbox(&mut tx, &events, erasure.at_ms).await?;
        sqlx::query("UPDATE user_erasure SET erased_at = GREATEST(erased_at, ?), last_version = ? WHERE user_id = ?")
            .bind(at)
            .bind(erasure.version)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
