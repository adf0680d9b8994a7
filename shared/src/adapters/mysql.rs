//! MySQL (Aurora; MariaDB locally) through sqlx: the durable copy of every
//! user's record in the seed's `user_status` table plus the columns the
//! merge needs. Writes are compare-and-set on `version`; reads and writes
//! of many users are one statement per chunk.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime};
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};

use super::codec::{sessions_from_json, sessions_to_json};
use crate::domain::{Millis, Presence, Rules, Status, UserId, UserRecord, UserState, Visibility};
use crate::ports::{StoreError, StoreRead, StoreWrite, Write};

/// The schema migrations in `migrations/`, embedded; the same files run with
/// `sqlx migrate run`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Rows per statement: 12 placeholders a row stays far below MySQL's 65,535
/// and keeps one statement's packet small.
const CHUNK: usize = 1000;

/// Opens a pool that connects on first use, so a function starts (and
/// serves from Redis) while the database is down.
pub fn connect_lazy(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<MySqlPool, StoreError> {
    let options = MySqlConnectOptions::from_str(url)?;
    Ok(MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options))
}

/// Converts epoch milliseconds to the UTC `DATETIME(3)` value stored.
pub fn to_datetime(ms: Millis) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc())
}

pub fn from_datetime(dt: NaiveDateTime) -> Millis {
    dt.and_utc().timestamp_millis()
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

    async fn load_from(&self, pool: &MySqlPool, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        let mut out = HashMap::with_capacity(users.len());
        for chunk in users.chunks(CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT user_id, version, sessions, last_active_at, visible, updated_at, hidden_at, \
                 hidden_last_active_at, announced FROM user_status WHERE user_id IN (",
            );
            let mut ids = qb.separated(", ");
            for user in chunk {
                ids.push_bind(user.as_i64());
            }
            qb.push(")");
            let rows = qb.build().persistent(false).fetch_all(pool).await?;
            for row in rows {
                let (user, record) = decode_row(&row)?;
                out.insert(user, record);
            }
        }
        Ok(out)
    }
}

fn decode_row(row: &sqlx::mysql::MySqlRow) -> Result<(UserId, UserRecord), StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(what);
    let raw_id: i64 = row.try_get("user_id")?;
    let user = u64::try_from(raw_id)
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| corrupt(format!("user_id {raw_id} out of range")))?;
    let sessions: Option<String> = row.try_get("sessions")?;
    let sessions =
        sessions_from_json(sessions.as_deref().unwrap_or("")).map_err(|e| corrupt(format!("{user}: {e}")))?;
    let last_active_ms = row.try_get::<Option<NaiveDateTime>, _>("last_active_at")?.map(from_datetime);
    let visible: bool = row.try_get("visible")?;
    let updated_ms = from_datetime(row.try_get("updated_at")?);
    let hidden_at = row.try_get::<Option<NaiveDateTime>, _>("hidden_at")?.map(from_datetime);
    let hidden_last_active = row.try_get::<Option<NaiveDateTime>, _>("hidden_last_active_at")?.map(from_datetime);
    let announced: Option<String> = row.try_get("announced")?;
    let announced =
        announced.map(|s| s.parse::<Status>().map_err(|_| corrupt(format!("{user}: announced {s:?}")))).transpose()?;
    let mut state = UserState { presence: Presence { sessions, last_active_ms }, visibility: Visibility::Visible };
    match hidden_at {
        Some(since_ms) => state.visibility = Visibility::Hidden { since_ms, last_active_ms: hidden_last_active },
        // A row hidden by hand, without the time: hide from its last write.
        None if !visible => state.set_visible(false, updated_ms),
        None => {}
    }
    Ok((user, UserRecord { version: row.try_get("version")?, state, announced, written_ms: updated_ms }))
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

    async fn save(&self, writes: &[Write<'_>], now: Millis) -> Result<Vec<UserId>, StoreError> {
        let mut lost = Vec::new();
        if writes.is_empty() {
            return Ok(lost);
        }
        let updated_at = to_datetime(now);
        // One transaction for every chunk: the call is all or nothing (a
        // failure half-way leaves no committed rows whose transitions the
        // caller would not know of), and the rows stay locked until the
        // read-back has seen who won them.
        let mut tx = self.writer.begin().await?;
        for chunk in writes.chunks(CHUNK) {
            // Tells this writer's rows from a rival's that reached the same
            // version first.
            let token: i64 = rand::random();
            let mut qb = QueryBuilder::<MySql>::new(
                "INSERT INTO user_status (user_id, status, last_active_at, device_count, visible, updated_at, \
                 version, write_token, sessions, hidden_at, hidden_last_active_at, announced) ",
            );
            qb.push_values(chunk, |mut row, write| {
                let record = write.record;
                let view = record.state.derive(now, &self.rules);
                let (hidden_at, hidden_last_active) = match record.state.visibility {
                    Visibility::Visible => (None, None),
                    Visibility::Hidden { since_ms, last_active_ms } => {
                        (to_datetime(since_ms), last_active_ms.and_then(to_datetime))
                    }
                };
                row.push_bind(write.user.as_i64())
                    .push_bind(view.status.as_str())
                    .push_bind(view.last_active_ms.and_then(to_datetime))
                    .push_bind(view.device_count)
                    .push_bind(record.state.visibility.is_visible())
                    .push_bind(updated_at)
                    .push_bind(record.version)
                    .push_bind(token)
                    .push_bind(sessions_to_json(&record.state.presence.sessions))
                    .push_bind(hidden_at)
                    .push_bind(hidden_last_active)
                    .push_bind(record.announced.map(Status::as_str));
            });
            // Every column is replaced only if the stored row is the version
            // this record was merged from. MySQL applies the assignments in
            // order, so `version` must stay last.
            qb.push(" ON DUPLICATE KEY UPDATE ");
            let columns = [
                "status",
                "last_active_at",
                "device_count",
                "visible",
                "updated_at",
                "write_token",
                "sessions",
                "hidden_at",
                "hidden_last_active_at",
                "announced",
                "version",
            ];
            let assignments: Vec<String> =
                columns.iter().map(|c| format!("{c} = IF(version + 1 = VALUES(version), VALUES({c}), {c})")).collect();
            qb.push(assignments.join(", "));
            let affected = qb.build().persistent(false).execute(&mut *tx).await?.rows_affected();

            // Which rows did this writer set? sqlx connects with
            // CLIENT_FOUND_ROWS, so each row counts 2 when updated and 1
            // when inserted or when a rival's version was kept. A chunk that
            // only updates (every version > 1) and counts two per row was
            // won whole, with no read needed. Otherwise read the rows back:
            // a row a rival moved on holds another version or token.
            let only_updates = chunk.iter().all(|w| w.record.version > 1);
            let ambiguous: Vec<&Write<'_>> =
                if only_updates && affected == 2 * chunk.len() as u64 { Vec::new() } else { chunk.iter().collect() };
            if ambiguous.is_empty() {
                continue;
            }
            let mut check =
                QueryBuilder::<MySql>::new("SELECT user_id, version, write_token FROM user_status WHERE user_id IN (");
            let mut ids = check.separated(", ");
            for write in &ambiguous {
                ids.push_bind(write.user.as_i64());
            }
            check.push(")");
            let stored: HashMap<i64, (u64, i64)> = check
                .build()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("user_id")?, (row.try_get("version")?, row.try_get("write_token")?))))
                .collect::<Result<_, sqlx::Error>>()?;
            for write in ambiguous {
                if stored.get(&write.user.as_i64()) != Some(&(write.record.version, token)) {
                    lost.push(write.user);
                }
            }
        }
        tx.commit().await?;
        Ok(lost)
    }
}
