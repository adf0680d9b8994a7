//! The except lists of DESIGN §13 in `user_audience`, one row per
//! `(user_id, tag)`: the ids ascending and distinct, in decimal, split by
//! commas.

use std::collections::HashMap;
use std::fmt::Write as _;

use sqlx::{MySql, QueryBuilder, Row};

use super::row::to_datetime;
use super::{user_of, MySqlStore, CHUNK};
use crate::adapters::codec::audience_to_text;
use crate::domain::audience::MAX_EXCEPT;
use crate::domain::{AudienceRule, ListTag, Millis, UserId};
use crate::ports::{StoreAudience, StoreError};

/// `ids` as stored: `3,17,42` (empty for none).
pub fn list_to_text(ids: &[UserId]) -> String {
    let mut out = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{id}");
    }
    out
}

/// Reads a text written by [`list_to_text`]; `Err` for anything else (an
/// id outside the contract, more than [`MAX_EXCEPT`] ids), which the
/// caller treats as no list, failing closed.
pub fn list_from_text(raw: &str) -> Result<Vec<UserId>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let ids = raw
        .split(',')
        .map(|part| part.parse::<UserId>().map_err(|_| format!("except id {part:?} is not a user id")))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > MAX_EXCEPT {
        return Err(format!("except list holds {} ids", ids.len()));
    }
    Ok(ids)
}

impl StoreAudience for MySqlStore {
    async fn load_lists(
        &self,
        wanted: &[(UserId, ListTag)],
    ) -> Result<HashMap<(UserId, ListTag), Vec<UserId>>, StoreError> {
        let mut out = HashMap::with_capacity(wanted.len());
        for chunk in wanted.chunks(CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(
                "SELECT user_id, tag, except_ids FROM user_audience WHERE (user_id, tag) IN (",
            );
            let mut pairs = qb.separated(", ");
            for (user, tag) in chunk {
                pairs.push("(");
                pairs.push_bind_unseparated(user.as_i64());
                pairs.push_unseparated(", ");
                pairs.push_bind_unseparated(tag.0);
                pairs.push_unseparated(")");
            }
            qb.push(")");
            for row in qb.build().persistent(false).fetch_all(&self.reader).await? {
                let user = user_of(&row, "user_audience")?;
                let tag = ListTag(row.try_get("tag")?);
                let text: String = row.try_get("except_ids")?;
                match list_from_text(&text) {
                    Ok(ids) => {
                        out.insert((user, tag), ids);
                    }
                    // Damage fails only this user, and closed: no list.
                    Err(reason) => tracing::warn!(%user, %reason, "user_audience row unreadable; read as no list"),
                }
            }
        }
        Ok(out)
    }

    async fn put_list(&self, user: UserId, tag: ListTag, ids: &[UserId], now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_audience (user_id, tag, except_ids, created_at) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE except_ids = VALUES(except_ids)",
        )
        .bind(user.as_i64())
        .bind(tag.0)
        .bind(list_to_text(ids))
        .bind(to_datetime(now)?)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn restore_list(
        &self,
        user: UserId,
        rule: AudienceRule,
        ids: &[UserId],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (Some(tag), Some(named)) = (rule.list, audience_to_text(&rule)) else { return Ok(false) };
        // INSERT ... SELECT reads the user_status row under a shared lock,
        // so an erasure's transaction either deleted it first (no row, no
        // list) or waits and deletes the list with it.
        let done = sqlx::query(
            "INSERT INTO user_audience (user_id, tag, except_ids, created_at) \
             SELECT user_id, ?, ?, ? FROM user_status WHERE user_id = ? AND audience = ? \
             ON DUPLICATE KEY UPDATE except_ids = VALUES(except_ids)",
        )
        .bind(tag.0)
        .bind(list_to_text(ids))
        .bind(to_datetime(now)?)
        .bind(user.as_i64())
        .bind(named)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn prune_lists(&self, user: UserId, keep: Option<ListTag>, before: Millis) -> Result<(), StoreError> {
        // A tag is a u64 and never u64::MAX by chance alone; with nothing to
        // keep, no row is spared.
        let keep = keep.map(|t| t.0);
        sqlx::query("DELETE FROM user_audience WHERE user_id = ? AND (? IS NULL OR tag <> ?) AND created_at < ?")
            .bind(user.as_i64())
            .bind(keep)
            .bind(keep)
            .bind(to_datetime(before.max(0))?)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_round_trips_and_damage_is_refused() {
        let ids: Vec<UserId> = [3u64, 17, i64::MAX as u64].iter().map(|r| UserId::new(*r).unwrap()).collect();
        assert_eq!(list_to_text(&ids), "3,17,9223372036854775807");
        assert_eq!(list_from_text(&list_to_text(&ids)), Ok(ids));
        assert_eq!(list_from_text(""), Ok(Vec::new()));
        for bad in ["0", "1,,2", "x", "1, 2", "-1", "9223372036854775808"] {
            assert!(list_from_text(bad).is_err(), "{bad:?} was read");
        }
        let too_many = vec!["1"; MAX_EXCEPT + 1].join(",");
        assert!(list_from_text(&too_many).is_err());
    }
}
