//! The held-back activity of each shard (`stream:held:{shard}`, DESIGN §12
//! "Activity of an online user"): the fan-out holds users in it, the
//! shard's scanner reads the due ones and lets them go once fed. Holding
//! applies the due index's rule ([`crate::domain::schedule::replaces`], the
//! same script): an earlier flush instant wins, and a passed one is
//! replaced, so a scanner that read the old score leaves the new one in.
//! Each hold pushes the key's expiry to 2 h 15 min on: every connection a
//! member was held for has lapsed by then.

use redis::{Script, Value};

use super::conn::script_load;
use super::due::{schedule, SETTLE_SCRIPT};
use super::{Batch, RedisCache};
use crate::domain::stream::CONNECTION_LAPSE_MS;
use crate::domain::{Millis, UserId};
use crate::ports::{CacheError, HeldChanges};

impl HeldChanges for RedisCache {
    async fn hold(&self, users: &[(UserId, Millis)], now: Millis) -> Result<(), CacheError> {
        let mut by_shard: std::collections::BTreeMap<u32, Vec<(Millis, u64)>> = Default::default();
        for (user, at) in users {
            by_shard.entry(user.shard(self.shards)).or_default().push((*at, user.get()));
        }
        let mut batch = Batch::new();
        for (shard, members) in by_shard {
            let key = self.keys.stream_held(shard);
            schedule(&mut batch, &key, now, &members);
            let mut expire = redis::cmd("PEXPIREAT");
            expire.arg(&key).arg(now.saturating_add(CONNECTION_LAPSE_MS));
            batch.push(&key, expire);
        }
        self.writer.exec(batch).await.map(drop)
    }

    async fn held_due(&self, shard: u32, now: Millis, limit: usize) -> Result<Vec<(UserId, f64)>, CacheError> {
        let key = self.keys.stream_held(shard);
        let mut range = redis::cmd("ZRANGE");
        range.arg(&key).arg("-inf").arg(now).arg("BYSCORE").arg("LIMIT").arg(0).arg(limit).arg("WITHSCORES");
        let mut batch = Batch::new();
        batch.push(&key, range);
        let reply = self.writer.exec(batch).await?.into_iter().next().unwrap_or(Value::Nil);
        let raw: Vec<(String, f64)> = redis::from_redis_value(reply).map_err(|e| CacheError::Corrupt(e.to_string()))?;
        // A member that is no user id cannot be fed; it lapses with the key.
        Ok(raw
            .into_iter()
            .filter_map(|(id, score)| id.parse::<u64>().ok().and_then(|id| UserId::new(id).ok()).map(|u| (u, score)))
            .collect())
    }

    async fn release_held(&self, shard: u32, users: &[(UserId, f64)]) -> Result<(), CacheError> {
        if users.is_empty() {
            return Ok(());
        }
        let key = self.keys.stream_held(shard);
        let mut settle = redis::cmd("EVALSHA");
        settle.arg(Script::new(SETTLE_SCRIPT).get_hash()).arg(1).arg(&key);
        for (user, seen) in users {
            // An empty due time removes the member.
            settle.arg(user.get()).arg(*seen).arg("");
        }
        let mut batch = Batch::new();
        batch.preamble(script_load(SETTLE_SCRIPT));
        batch.push(&key, settle);
        self.writer.exec(batch).await.map(drop)
    }
}
