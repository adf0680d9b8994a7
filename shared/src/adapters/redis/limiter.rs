//! The end-user poll limit (DESIGN §7) in Redis.

use std::time::Duration;

use super::{Batch, Keys, RedisConn};
use crate::domain::UserId;
use crate::ports::CacheError;

/// The polling limit in Redis: `SET NX PX` takes the window atomically, so
/// two concurrent reads by one caller cannot both pass.
#[derive(Clone)]
pub struct RedisPollLimiter {
    conn: RedisConn,
    keys: Keys,
    window: Duration,
}

impl RedisPollLimiter {
    pub fn new(conn: RedisConn, keys: Keys, window: Duration) -> Self {
        Self { conn, keys, window }
    }
}

impl crate::ports::PollLimiter for RedisPollLimiter {
    async fn acquire(&self, caller: UserId) -> Result<Option<u64>, CacheError> {
        let key = self.keys.poll(caller);
        let window_ms = self.window.as_millis().max(1) as u64;
        let mut batch = Batch::new();
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(1).arg("PX").arg(window_ms).arg("NX");
        let mut pttl = redis::cmd("PTTL");
        pttl.arg(&key);
        batch.push(&key, set).push(&key, pttl);
        let replies = self.conn.exec(batch).await?;
        let (taken, ttl_ms): (Option<String>, i64) = match replies.as_slice() {
            [taken, ttl] => (
                redis::from_redis_value_ref(taken).map_err(|e| CacheError::Corrupt(e.to_string()))?,
                redis::from_redis_value_ref(ttl).map_err(|e| CacheError::Corrupt(e.to_string()))?,
            ),
            _ => return Err(CacheError::Corrupt("poll limit: wrong number of replies".into())),
        };
        if taken.is_some() {
            return Ok(None);
        }
        if ttl_ms == -1 {
            // A key with no expiry is none this limiter wrote (a leftover or
            // a hand edit, perhaps of another type): it would hold the
            // caller back for good. Take the window over it, and allow.
            let mut batch = Batch::new();
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(1).arg("PX").arg(window_ms);
            batch.push(&key, set);
            self.conn.exec(batch).await?;
            tracing::warn!(caller = caller.get(), "poll limit key without expiry replaced");
            return Ok(None);
        }
        // Round up so a client that waits the advertised time is allowed.
        let ttl_ms = u64::try_from(ttl_ms).unwrap_or(window_ms).min(window_ms);
        let window_s = self.window.as_secs().max(1);
        Ok(Some(ttl_ms.div_ceil(1000).clamp(1, window_s)))
    }
}
