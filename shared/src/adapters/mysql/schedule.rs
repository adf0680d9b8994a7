//! The scanner's durable schedule, `next_change_at` and its index, from
//! which a lost due index is rebuilt (DESIGN §6).

use chrono::NaiveDateTime;
use sqlx::Row;

use super::row::{self};
use super::{user_of, MySqlStore};
use crate::ports::{ScheduleCursor, SchedulePage, ScheduleSource, StoreError};

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
