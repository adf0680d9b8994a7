//! The transactional outbox, `status_outbox` (DESIGN §6): rows written in
//! the same transaction as the state, claimed by one drain at a time under
//! a lease, removed once the bus took them.

use std::collections::HashMap;

use sqlx::{MySql, QueryBuilder, Row};

use super::row::to_datetime;
use super::{user_of, MySqlStore, CHUNK};
use crate::domain::{Millis, OutboxEvent, UserId};
use crate::ports::{Outbox, StoreError};

impl MySqlStore {
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
}

/// Adds `events` to the outbox inside `tx`; an event already there (a
/// replayed call) is left as it is.
pub(super) async fn insert_outbox(
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
