//! The fake Redis: records, visibility flags, one shard's due index and
//! held-back activity, and a switch for each outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::domain::{Millis, ReadModel, UserId, UserRecord};
use crate::ports::{
    CacheErase, CacheError, CacheRead, CacheViews, CacheWrite, Cached, CachedView, DueIndex, HeldChanges, HotCopy,
    Write,
};

fn down() -> CacheError {
    CacheError::Timeout(1)
}

#[derive(Default)]
pub struct FakeCache {
    pub records: Mutex<HashMap<UserId, UserRecord>>,
    pub fail_load: AtomicBool,
    pub fail_store: AtomicBool,
    /// Users whose `status:visible` flag says `false`, as set by anyone.
    pub hidden_flags: Mutex<std::collections::HashSet<UserId>>,
    /// The scanner's due index, one shard: each user's due time.
    pub due: Mutex<HashMap<UserId, Millis>>,
    /// Held-back activity, one shard: each user's flush instant.
    pub held: Mutex<HashMap<UserId, Millis>>,
}

impl CacheRead for FakeCache {
    async fn load(&self, users: &[UserId]) -> Result<Vec<Cached>, CacheError> {
        if self.fail_load.load(Ordering::SeqCst) {
            return Err(down());
        }
        let records = self.records.lock().unwrap();
        let hidden = self.hidden_flags.lock().unwrap();
        Ok(users
            .iter()
            .map(|u| Cached { record: records.get(u).cloned(), visible_flag: hidden.contains(u).then_some(false) })
            .collect())
    }
}

impl CacheViews for FakeCache {
    async fn load_views(&self, users: &[UserId]) -> Result<Vec<CachedView>, CacheError> {
        Ok(self
            .load(users)
            .await?
            .into_iter()
            .map(|c| CachedView {
                version: c.record.as_ref().map_or(0, |r| r.version),
                copy: c.record.map(|r| HotCopy::ReadModel(ReadModel::of(&r.state, r.written_ms))),
                visible_flag: c.visible_flag,
            })
            .collect())
    }
}

impl CacheWrite for FakeCache {
    async fn store(&self, writes: &[Write<'_>], _now: Millis) -> Result<(), CacheError> {
        if self.fail_store.load(Ordering::SeqCst) {
            return Err(down());
        }
        let mut records = self.records.lock().unwrap();
        for w in writes {
            if w.shows {
                // Only the visibility route's show clears a hidden flag.
                self.hidden_flags.lock().unwrap().remove(&w.user);
            }
            // Monotonic, like the Redis script.
            if records.get(&w.user).is_none_or(|r| r.version < w.record.version) {
                records.insert(w.user, w.record.clone());
            }
            let mut due = self.due.lock().unwrap();
            match w.next_change_ms {
                Some(at) => {
                    due.insert(w.user, at);
                }
                None => {
                    due.remove(&w.user);
                }
            }
        }
        Ok(())
    }

    async fn backfill(&self, writes: &[Write<'_>], now: Millis) -> Result<(), CacheError> {
        self.store(writes, now).await
    }
}

/// One shard; holding keeps the earliest flush instant, or replaces one
/// that has come, as the Redis set does.
impl HeldChanges for FakeCache {
    async fn hold(&self, users: &[(UserId, Millis)], now: Millis) -> Result<(), CacheError> {
        let mut held = self.held.lock().unwrap();
        for (user, at) in users {
            let replace = held.get(user).is_none_or(|current| at < current || *current <= now);
            if replace {
                held.insert(*user, *at);
            }
        }
        Ok(())
    }

    async fn held_due(&self, _shard: u32, now: Millis, limit: usize) -> Result<Vec<(UserId, f64)>, CacheError> {
        let mut due: Vec<(UserId, f64)> =
            self.held.lock().unwrap().iter().filter(|(_, at)| **at <= now).map(|(u, at)| (*u, *at as f64)).collect();
        due.sort_by_key(|(u, _)| *u);
        due.truncate(limit);
        Ok(due)
    }

    async fn release_held(&self, _shard: u32, users: &[(UserId, f64)]) -> Result<(), CacheError> {
        let mut held = self.held.lock().unwrap();
        for (user, seen) in users {
            if held.get(user).is_some_and(|at| *at as f64 == *seen) {
                held.remove(user);
            }
        }
        Ok(())
    }
}

/// One shard (`shards` is 1) whose index is always complete.
impl DueIndex for FakeCache {
    fn shards(&self) -> u32 {
        1
    }

    async fn due(&self, _shard: u32, now: Millis, limit: usize) -> Result<(Vec<(UserId, f64)>, bool), CacheError> {
        let mut due: Vec<(UserId, f64)> =
            self.due.lock().unwrap().iter().filter(|(_, at)| **at <= now).map(|(u, at)| (*u, *at as f64)).collect();
        due.sort_by_key(|(u, _)| *u);
        due.truncate(limit);
        Ok((due, true))
    }

    async fn settle(&self, _shard: u32, entries: &[(UserId, f64, Option<Millis>)]) -> Result<(), CacheError> {
        let mut due = self.due.lock().unwrap();
        for (user, seen, next) in entries {
            if due.get(user).is_some_and(|at| *at as f64 == *seen) {
                match next {
                    Some(at) => due.insert(*user, *at),
                    None => due.remove(user),
                };
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        _shard: u32,
        entries: &[(UserId, Millis)],
        _complete: bool,
        _now: Millis,
    ) -> Result<(), CacheError> {
        self.due.lock().unwrap().extend(entries.iter().copied());
        Ok(())
    }
}

impl CacheErase for FakeCache {
    async fn erase(&self, user: UserId, _guard: Option<u64>) -> Result<(), CacheError> {
        self.records.lock().unwrap().remove(&user);
        self.due.lock().unwrap().remove(&user);
        Ok(())
    }
}
