//! User records in `user_status`: loading many users in one statement per
//! chunk, and the compare-and-set save of a batch, with its outbox events,
//! in one transaction.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use sqlx::mysql::MySqlPool;
use sqlx::{MySql, QueryBuilder, Row};

use super::erase::watermarks;
use super::outbox::insert_outbox;
use super::row::{self, to_datetime, to_optional_datetime, RawRow};
use super::{retry_lock_conflicts, MySqlStore, CHUNK};
use crate::adapters::codec::{audience_to_text, manual_to_json, sessions_to_json};
use crate::domain::record::MAX_VERSION;
use crate::domain::{Millis, OutboxEvent, Rules, Status, UserId, UserRecord, Visibility};
use crate::ports::{StoreError, StoreRead, StoreWrite, Write};

impl MySqlStore {
    async fn load_from(&self, pool: &MySqlPool, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        let mut out = HashMap::with_capacity(users.len());
        for chunk in users.chunks(CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT user_id, version, sessions, last_active_at, visible, updated_at, hidden_at, \
                 hidden_last_active_at, announced, manual_status, manual_announced, audience FROM user_status \
                 WHERE user_id IN (",
            );
            super::push_id_list(&mut qb, chunk);
            let rows = qb.build().fetch_all(pool).await?;
            for row in rows {
                // One damaged row fails nothing beside it (DESIGN §6): it
                // reads as what can be salvaged, and the next write of the
                // user replaces it whole.
                match row::decode(raw_row(&row)?) {
                    Ok(decoded) => {
                        if !decoded.damaged.is_empty() {
                            self.damaged_rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

/// The columns an upsert replaces, each only if the compare-and-set holds.
/// MySQL applies assignments left to right and a later one sees the values
/// set before it, so `visible` and `version`, which the condition reads,
/// come last and in this order.
const UPSERT_COLUMNS: [&str; 15] = [
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
    "audience",
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
        // Every write stores a version taken by `UserRecord::next_version`,
        // so at least 1; the compare-and-set below subtracts 1 from it.
        if let Some(write) = chunk.iter().find(|w| w.record.version == 0) {
            return Err(StoreError::Unencodable(format!("user {}: a write of version 0", write.user)));
        }
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
             manual_status, manual_announced, audience) ",
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
                .push_bind(manual_to_json(record.announced_manual.as_ref()))
                .push_bind(audience_to_text(&record.state.audience));
        });
        // Every column is replaced only if the stored row is the version
        // this record was merged from, or a version past MAX_VERSION (damage
        // the row codec read as 0, replaced as a damaged Redis hash is), and,
        // unless showing is allowed, the write does not turn a stored hide
        // visible. No side of it can overflow: every written version is at
        // least 1 (checked above), and the stored one is never added to.
        let version_cas = format!("(version > {MAX_VERSION} OR version = VALUES(version) - 1)");
        let cas = if may_show { version_cas } else { format!("({version_cas} AND (visible OR NOT VALUES(visible)))") };
        qb.push(" ON DUPLICATE KEY UPDATE ");
        let assignments: Vec<String> =
            UPSERT_COLUMNS.iter().map(|c| format!("{c} = IF({cas}, VALUES({c}), {c})")).collect();
        qb.push(assignments.join(", "));
        // Prepared once per connection, row count and `may_show`, then kept in the
        // connection's statement cache: under load most batches repeat a
        // few counts (docs/BENCHMARKS.md).
        let affected = qb.build().execute(&mut **tx).await?.rows_affected();

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
        let users: Vec<UserId> = chunk.iter().map(|w| w.user).collect();
        super::push_id_list(&mut check, &users);
        let stored: HashMap<i64, (u64, i64)> = check
            .build()
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
        audience: column(row, "audience"),
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
        retry_lock_conflicts("save", &self.lock_retries, || self.save_once(writes, events, now)).await
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
