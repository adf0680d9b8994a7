//! Erasures (DESIGN §7.1 `DELETE /v1/users/{id}`) and the watermarks in
//! `user_erasure` that keep an erased history from coming back.

use chrono::NaiveDateTime;
use sqlx::{MySql, QueryBuilder, Row};

use super::outbox::insert_outbox;
use super::row::{self, to_datetime};
use super::{retry_lock_conflicts, user_of, MySqlStore};
use crate::domain::ids::MAX_INSTANT_MS;
use crate::domain::record::MAX_VERSION;
use crate::domain::{Millis, OutboxEvent, UserId};
use crate::ports::{Erasure, StoreErase, StoreError};

/// The erasure watermarks of `users` that have one, as `(user, erased_ms,
/// version)`; with `lock`, read under a shared lock that an erasure of
/// those users waits for (and that waits for one), so a write and an
/// erasure of one user never cross.
pub(super) async fn watermarks<'c, E>(
    executor: E,
    users: &[UserId],
    lock: bool,
) -> Result<Vec<(UserId, Millis, u64)>, StoreError>
where
    E: sqlx::Executor<'c, Database = MySql>,
{
    let mut qb =
        QueryBuilder::<MySql>::new("SELECT user_id, erased_at, last_version FROM user_erasure WHERE user_id IN (");
    super::push_id_list(&mut qb, users);
    if lock {
        qb.push(" LOCK IN SHARE MODE");
    }
    let rows = qb.build().fetch_all(executor).await?;
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

impl StoreErase for MySqlStore {
    /// A deadlock or lock wait timeout runs the transaction again, as for
    /// [`StoreWrite::save`].
    async fn erase(&self, erasure: &Erasure, events: &[OutboxEvent]) -> Result<bool, StoreError> {
        retry_lock_conflicts("erase", &self.lock_retries, || self.erase_once(erasure, events)).await
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
        // A version past MAX_VERSION is damage, which the row codec reads
        // as 0 (DESIGN §6); the erasure was planned from that reading.
        let row = row.map(|version| if version > MAX_VERSION { 0 } else { version });
        if row.unwrap_or(watermark) != erasure.expected_version {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_status WHERE user_id = ?").bind(user).execute(&mut *tx).await?;
        // The audience's lists go with the record that named them (DESIGN §13).
        sqlx::query("DELETE FROM user_audience WHERE user_id = ?").bind(user).execute(&mut *tx).await?;
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
