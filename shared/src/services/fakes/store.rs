//! The fake SQL store: records with compare-and-set, rivals that win a
//! round, the outbox, the schedule and erasures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::domain::{ListTag, Millis, OutboxEvent, UserId, UserRecord};
use crate::ports::{
    Erasure, Outbox, ScheduleCursor, SchedulePage, ScheduleSource, StoreErase, StoreError, StoreRead, StoreWrite, Write,
};

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
    /// When set, the next `put_list` is undone at once, as an erasure
    /// landing between an audience's list and its record would.
    pub erase_after_put_list: std::sync::atomic::AtomicBool,
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
