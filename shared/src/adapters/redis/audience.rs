//! The except lists of DESIGN §13 in Redis: `status:audience:{42}`, a SET
//! of viewer ids plus the member `#tag` naming the [`ListTag`] the list is
//! stored under. One key per user, in the user's slot, so every command
//! touches one slot and the layout works unchanged on a Redis Cluster.
//!
//! A reader asks `SMISMEMBER status:audience:{42} viewer #tag`: one
//! command per user whose record names a list (never for users without
//! one), answering both whether the viewer is listed and whether the set is
//! the list the record names. A set under another tag, or none, is a miss
//! the durable store answers.

use redis::{Cmd, Value};

use super::{expect_replies, Batch, RedisCache};
use crate::domain::{ListTag, UserId};
use crate::ports::{CacheAudience, CacheError, ListAsk};

/// Replaces one list atomically: readers see the old set or the new one,
/// never a part. `KEYS`: the list. `ARGV`: `#tag`, then the ids.
const PUT_LIST_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
redis.call('SADD', KEYS[1], unpack(ARGV))
return 1
";

/// The member naming the tag a set is stored under; never a decimal id.
fn tag_member(tag: ListTag) -> String {
    format!("#{}", tag.0)
}

impl RedisCache {
    /// The commands of [`CacheAudience::listed`]: one `SMISMEMBER` per ask.
    pub fn listed_batch(&self, asks: &[ListAsk]) -> Batch {
        let mut batch = Batch::with_capacity(asks.len());
        for ask in asks {
            let key = self.keys.audience(ask.user);
            let mut cmd = Cmd::with_capacity(4, key.len() + 48);
            cmd.arg("SMISMEMBER").arg(&key).arg(ask.viewer.get()).arg(tag_member(ask.tag));
            batch.push(&key, cmd);
        }
        batch
    }
}

/// One `SMISMEMBER key viewer #tag` reply: `Some(listed)` when the set
/// holds the tag, `None` otherwise (absent, another tag, a key of the
/// wrong type, an answer of another shape).
fn decode_listed(reply: Value) -> Option<bool> {
    match redis::from_redis_value::<Vec<i64>>(reply) {
        Ok(flags) => match flags.as_slice() {
            [listed, 1] => Some(*listed == 1),
            _ => None,
        },
        Err(_) => None,
    }
}

impl CacheAudience for RedisCache {
    async fn listed(&self, asks: &[ListAsk]) -> Result<Vec<Option<bool>>, CacheError> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.reader.exec_replies(self.listed_batch(asks)).await?;
        Ok(expect_replies(replies, asks.len())?.map(decode_listed).collect())
    }

    async fn put_lists(&self, lists: &[(UserId, ListTag, &[UserId])]) -> Result<(), CacheError> {
        let mut batch = Batch::new();
        for (user, tag, ids) in lists {
            let key = self.keys.audience(*user);
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(PUT_LIST_SCRIPT).arg(1).arg(&key).arg(tag_member(*tag));
            for id in *ids {
                cmd.arg(id.get());
            }
            batch.push(&key, cmd);
        }
        self.writer.exec(batch).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_under_the_tag_answers() {
        let reply = |a: i64, b: i64| Value::Array(vec![Value::Int(a), Value::Int(b)]);
        assert_eq!(decode_listed(reply(1, 1)), Some(true));
        assert_eq!(decode_listed(reply(0, 1)), Some(false));
        assert_eq!(decode_listed(reply(1, 0)), None, "another tag's list");
        assert_eq!(decode_listed(reply(0, 0)), None, "no list");
        assert_eq!(decode_listed(Value::Nil), None);
        assert_eq!(decode_listed(Value::Array(vec![Value::Int(1)])), None);
        assert_eq!(tag_member(ListTag(7)), "#7");
    }
}
