//! In-memory fakes of the ports, for pure service tests of the write and
//! read paths' decisions (races, outages, no-ops). The adapters themselves
//! are tested against the real servers in `tests/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::domain::{FeedChange, ListTag, Millis, OutboxEvent, ReadModel, UserId, UserRecord};
use crate::ports::{
    CacheAudience, CacheErase, CacheError, CacheRead, CacheViews, CacheWrite, Cached, CachedView, ChangeFeed,
    ChangePublisher, DeadLetter, DeadLetters, Delivery, DueIndex, Erasure, FeedError, HeldChanges, HotCopy, ListAsk,
    Outbox, PendingRepair, PublishError, RepairBuffer, RepairError, ScheduleCursor, SchedulePage, ScheduleSource,
    StoreAudience, StoreErase, StoreError, StoreRead, StoreWrite, Write,
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

#[derive(Default)]
pub struct FakeStore {
    pub records: Mutex<HashMap<UserId, UserRecord>>,
    /// Before each of the next saves, a rival bumps these users' versions.
    pub rivals: Mutex<Vec<UserId>>,
    pub rival_rounds: AtomicUsize,
    pub saves: AtomicUsize,
    /// The outbox, in insertion order.
    pub outbox: Mutex<Vec<OutboxEvent>>,
    /// Except lists (DESIGN §13) by user and tag.
    pub lists: Mutex<HashMap<(UserId, ListTag), Vec<UserId>>>,
}

impl StoreAudience for FakeStore {
    async fn load_lists(
        &self,
        wanted: &[(UserId, ListTag)],
    ) -> Result<HashMap<(UserId, ListTag), Vec<UserId>>, StoreError> {
        let lists = self.lists.lock().unwrap();
        Ok(wanted.iter().filter_map(|k| lists.get(k).map(|ids| (*k, ids.clone()))).collect())
    }

    async fn put_list(&self, user: UserId, tag: ListTag, ids: &[UserId], _now: Millis) -> Result<(), StoreError> {
        self.lists.lock().unwrap().insert((user, tag), ids.to_vec());
        Ok(())
    }

    async fn prune_lists(&self, user: UserId, keep: Option<ListTag>, _before: Millis) -> Result<(), StoreError> {
        self.lists.lock().unwrap().retain(|(u, tag), _| *u != user || Some(*tag) == keep);
        Ok(())
    }
}

/// The fake cache holds no lists: every reader reads them from the store.
impl CacheAudience for FakeCache {
    async fn listed(&self, asks: &[ListAsk]) -> Result<Vec<Option<bool>>, CacheError> {
        Ok(vec![None; asks.len()])
    }

    async fn put_lists(&self, _lists: &[(UserId, ListTag, &[UserId])]) -> Result<(), CacheError> {
        Ok(())
    }
}

impl StoreRead for FakeStore {
    async fn load(&self, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        let records = self.records.lock().unwrap();
        Ok(users.iter().filter_map(|u| records.get(u).map(|r| (*u, r.clone()))).collect())
    }
}

impl StoreWrite for FakeStore {
    async fn load_current(&self, users: &[UserId]) -> Result<HashMap<UserId, UserRecord>, StoreError> {
        self.load(users).await
    }

    async fn save(
        &self,
        writes: &[Write<'_>],
        events: &[OutboxEvent],
        _now: Millis,
    ) -> Result<Vec<UserId>, StoreError> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let mut records = self.records.lock().unwrap();
        if self.rival_rounds.load(Ordering::SeqCst) > 0 {
            self.rival_rounds.fetch_sub(1, Ordering::SeqCst);
            for user in self.rivals.lock().unwrap().iter() {
                let rival = records.entry(*user).or_default();
                rival.version += 1;
                rival.state.presence.last_active_ms = rival.state.presence.last_active_ms.max(Some(1));
            }
        }
        let mut lost = Vec::new();
        for w in writes {
            let current = records.get(&w.user).map_or(0, |r| r.version);
            if current + 1 == w.record.version {
                records.insert(w.user, w.record.clone());
                let mut outbox = self.outbox.lock().unwrap();
                for e in events.iter().filter(|e| e.user == w.user && e.version == w.record.version) {
                    if !outbox.contains(e) {
                        outbox.push(e.clone());
                    }
                }
            } else {
                lost.push(w.user);
            }
        }
        Ok(lost)
    }
}

impl Outbox for FakeStore {
    async fn claim_for(
        &self,
        users: &[UserId],
        _claim: i64,
        _now: Millis,
        _lease_ms: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut out: Vec<OutboxEvent> =
            self.outbox.lock().unwrap().iter().filter(|e| users.contains(&e.user)).cloned().collect();
        out.sort_by_key(|e| (e.user, e.version));
        Ok(out)
    }

    async fn claim_in_shard(
        &self,
        shard: u32,
        shards: u32,
        _claim: i64,
        _now: Millis,
        _lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut out: Vec<OutboxEvent> =
            self.outbox.lock().unwrap().iter().filter(|e| e.user.shard(shards) == shard).cloned().collect();
        out.sort_by_key(|e| (e.user, e.version));
        out.truncate(limit);
        Ok(out)
    }

    async fn release(&self, _claim: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn remove(&self, done: &[OutboxEvent]) -> Result<(), StoreError> {
        self.outbox.lock().unwrap().retain(|e| !done.contains(e));
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeRepair {
    pub recorded: Mutex<Vec<UserId>>,
    pub fail: AtomicBool,
}

impl RepairBuffer for FakeRepair {
    async fn record(&self, users: &[UserId]) -> Result<(), RepairError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(RepairError::new("down"));
        }
        self.recorded.lock().unwrap().extend_from_slice(users);
        Ok(())
    }

    async fn pending(&self, _shard: u32) -> Result<Vec<PendingRepair>, RepairError> {
        Ok(self.recorded.lock().unwrap().iter().map(|u| PendingRepair { user: *u, marker: "m".into() }).collect())
    }

    async fn clear(&self, _shard: u32, done: &[PendingRepair]) -> Result<(), RepairError> {
        self.recorded.lock().unwrap().retain(|u| !done.iter().any(|d| d.user == *u));
        Ok(())
    }

    async fn forget(&self, user: UserId) -> Result<(), RepairError> {
        self.recorded.lock().unwrap().retain(|u| *u != user);
        Ok(())
    }
}

#[derive(Default)]
pub struct FakePublisher {
    pub published: Mutex<Vec<OutboxEvent>>,
    pub fail: AtomicBool,
    /// Gives every event up as too large for any bus call.
    pub too_large: AtomicBool,
}

impl FakePublisher {
    /// `(from, to)` of every `status_changed` published, in order.
    pub fn transitions(&self) -> Vec<(String, String)> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
                (d["from"].as_str().unwrap().to_owned(), d["to"].as_str().unwrap().to_owned())
            })
            .collect()
    }
}

impl ChangePublisher for FakePublisher {
    fn enabled(&self) -> bool {
        true
    }

    async fn publish(&self, events: &[OutboxEvent]) -> Delivery {
        if self.fail.load(Ordering::SeqCst) {
            return Delivery { error: Some(PublishError::new("down")), ..Delivery::default() };
        }
        if self.too_large.load(Ordering::SeqCst) {
            return Delivery { dropped: (0..events.len()).collect(), ..Delivery::default() };
        }
        self.published.lock().unwrap().extend_from_slice(events);
        Delivery { accepted: (0..events.len()).collect(), ..Delivery::default() }
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

impl ScheduleSource for FakeStore {
    async fn scheduled(
        &self,
        _shard: u32,
        _shards: u32,
        _after: Option<&ScheduleCursor>,
        _limit: usize,
    ) -> Result<SchedulePage, StoreError> {
        Ok(SchedulePage::default())
    }
}

impl StoreErase for FakeStore {
    /// Leaves the watermark as a placeholder record: the erasure's version
    /// and time, nothing else.
    async fn erase(&self, erasure: &Erasure, events: &[OutboxEvent]) -> Result<bool, StoreError> {
        let mut records = self.records.lock().unwrap();
        if records.get(&erasure.user).map_or(0, |r| r.version) != erasure.expected_version {
            return Ok(false);
        }
        let watermark =
            UserRecord { version: erasure.version, erased_ms: Some(erasure.at_ms), ..UserRecord::default() };
        records.insert(erasure.user, watermark);
        self.outbox.lock().unwrap().extend_from_slice(events);
        Ok(true)
    }
}

/// Dead letters nobody reads.
#[derive(Default)]
pub struct FakeDeadLetters;

impl DeadLetters for FakeDeadLetters {
    async fn put(&self, _letters: &[DeadLetter]) -> Result<(), RepairError> {
        Ok(())
    }

    async fn forget(&self, _user: UserId) -> Result<(), RepairError> {
        Ok(())
    }
}

/// The push feed, in memory: every call's changes, in order.
#[derive(Default)]
pub struct FakeFeed {
    pub calls: Mutex<Vec<Vec<FeedChange>>>,
    /// Refuses every call for a reason that may pass (throttling).
    pub fail: AtomicBool,
    /// Refuses every call for good (no such function).
    pub missing: AtomicBool,
}

impl FakeFeed {
    /// Every change fed so far, in order, as `(user, version)`.
    pub fn fed(&self) -> Vec<(u64, u64)> {
        self.calls.lock().unwrap().iter().flatten().map(|c| (c.user_id.get(), c.version)).collect()
    }
}

impl ChangeFeed for FakeFeed {
    fn enabled(&self) -> bool {
        true
    }

    async fn changed(&self, changes: &[FeedChange]) -> Result<(), FeedError> {
        if self.missing.load(Ordering::SeqCst) {
            return Err(FeedError::permanent("no such function", None));
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(FeedError::transient("throttled", None));
        }
        self.calls.lock().unwrap().push(changes.to_vec());
        Ok(())
    }
}
