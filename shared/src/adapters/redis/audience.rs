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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use redis::{Cmd, Value};

use super::{expect_replies, Batch, RedisCache};
use crate::domain::{ListTag, UserId};
use crate::ports::{CacheAudience, CacheError, CachedView, HotCopy, ListAsk};

/// The most users [`ListsSeen`] remembers; past it, it starts again.
/// 64 Ki users at about 40 bytes each: under 3 MB.
pub const LISTS_SEEN_MAX: usize = 65_536;

/// The users whose read model named an except list when this process last
/// read them, with the list's tag: a hot read by an end user asks those
/// lists in its own round trip ([`crate::ports::CacheViews::load_views_for`])
/// instead of a second one. A guess only, shared by the clones of one
/// [`RedisCache`]: a list changed since is answered under the old tag, and
/// the reader, which checks the tag against the record it just read, asks
/// again. Bounded by [`LISTS_SEEN_MAX`].
#[derive(Default)]
pub struct ListsSeen {
    tags: Mutex<HashMap<UserId, ListTag>>,
    /// `tags.len()`, read without the lock, so reads of users without
    /// audiences never take it.
    len: AtomicUsize,
}

impl ListsSeen {
    /// The lists to ask for `reader` among `users`: those remembered, but
    /// never the reader's own (the user always sees themself).
    pub fn guesses(&self, users: &[UserId], reader: UserId) -> Vec<ListAsk> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let Ok(tags) = self.tags.lock() else { return Vec::new() };
        users
            .iter()
            .filter(|user| **user != reader)
            .filter_map(|user| tags.get(user).map(|tag| ListAsk { user: *user, tag: *tag, viewer: reader }))
            .collect()
    }

    /// Remembers the lists `views` (of `users`, in order) name, and
    /// forgets the users whose read model names none.
    pub fn learn(&self, users: &[UserId], views: &[CachedView]) {
        let named = |view: &CachedView| match &view.copy {
            Some(HotCopy::ReadModel(model)) => model.audience.list,
            _ => None,
        };
        if self.len.load(Ordering::Relaxed) == 0 && !views.iter().any(|view| named(view).is_some()) {
            return;
        }
        let Ok(mut tags) = self.tags.lock() else { return };
        for (user, view) in users.iter().zip(views) {
            match named(view) {
                Some(tag) => {
                    if tags.len() >= LISTS_SEEN_MAX && !tags.contains_key(user) {
                        tags.clear();
                    }
                    tags.insert(*user, tag);
                }
                None => {
                    tags.remove(user);
                }
            }
        }
        self.len.store(tags.len(), Ordering::Relaxed);
    }
}

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
        self.push_listed(&mut batch, asks);
        batch
    }

    /// Adds one `SMISMEMBER key viewer #tag` per ask to `batch`.
    pub(super) fn push_listed(&self, batch: &mut Batch, asks: &[ListAsk]) {
        for ask in asks {
            let key = self.keys.audience(ask.user);
            let mut cmd = Cmd::with_capacity(4, key.len() + 48);
            cmd.arg("SMISMEMBER").arg(&key).arg(ask.viewer.get()).arg(tag_member(ask.tag));
            batch.push(&key, cmd);
        }
    }
}

/// One `SMISMEMBER key viewer #tag` reply: `Some(listed)` when the set
/// holds the tag, `None` otherwise (absent, another tag, a key of the
/// wrong type, an answer of another shape).
pub(super) fn decode_listed(reply: Value) -> Option<bool> {
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
    use crate::domain::{ReadModel, UserRecord};

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

    fn view(list: Option<u64>) -> CachedView {
        let mut model = ReadModel::of(&UserRecord::default().state, 0);
        model.audience.list = list.map(ListTag);
        CachedView { copy: Some(HotCopy::ReadModel(model)), visible_flag: Some(true), version: 1 }
    }

    fn id(n: u64) -> UserId {
        UserId::new(n).expect("a valid id")
    }

    #[test]
    fn lists_seen_guesses_what_it_last_read_never_the_readers_own_and_stays_bounded() {
        let seen = ListsSeen::default();
        let users = [id(1), id(2), id(3)];
        assert!(seen.guesses(&users, id(9)).is_empty(), "nothing read yet");
        seen.learn(&users, &[view(Some(7)), view(None), view(Some(8))]);
        let ask = |user: u64, tag: u64, viewer: u64| ListAsk { user: id(user), tag: ListTag(tag), viewer: id(viewer) };
        assert_eq!(seen.guesses(&users, id(9)), vec![ask(1, 7, 9), ask(3, 8, 9)]);
        assert_eq!(seen.guesses(&users, id(3)), vec![ask(1, 7, 3)], "not the reader's own list");
        // A user read without a list, or with another, is forgotten or
        // replaced; a miss forgets too.
        seen.learn(&users, &[view(None), view(Some(5)), CachedView { copy: None, visible_flag: None, version: 0 }]);
        assert_eq!(seen.guesses(&users, id(9)), vec![ask(2, 5, 9)]);

        let many: Vec<UserId> = (1..=LISTS_SEEN_MAX as u64 + 1).map(id).collect();
        let views: Vec<CachedView> = many.iter().map(|_| view(Some(1))).collect();
        seen.learn(&many, &views);
        let held = seen.tags.lock().expect("lock").len();
        assert!((1..=LISTS_SEEN_MAX).contains(&held), "{held}");
        assert_eq!(seen.len.load(Ordering::Relaxed), held);
    }
}
