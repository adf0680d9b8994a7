//! The fake side of audiences (DESIGN §13): the store keeps except lists
//! by user and tag; the cache holds none, so every reader asks the store.

use std::collections::HashMap;

use crate::domain::{AudienceRule, ListTag, Millis, UserId};
use crate::ports::{CacheAudience, CacheError, ListAsk, StoreAudience, StoreError};

use super::cache::FakeCache;
use super::store::FakeStore;

impl StoreAudience for FakeStore {
    async fn load_lists(
        &self,
        wanted: &[(UserId, ListTag)],
    ) -> Result<HashMap<(UserId, ListTag), Vec<UserId>>, StoreError> {
        let lists = self.lists.lock().unwrap();
        Ok(wanted.iter().filter_map(|k| lists.get(k).map(|ids| (*k, ids.clone()))).collect())
    }

    async fn put_list(&self, user: UserId, tag: ListTag, ids: &[UserId], _now: Millis) -> Result<(), StoreError> {
        // An erasure landing right after the list was written deletes it.
        if !self.erase_after_put_list.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.lists.lock().unwrap().insert((user, tag), ids.to_vec());
        }
        Ok(())
    }

    async fn restore_list(
        &self,
        user: UserId,
        rule: AudienceRule,
        ids: &[UserId],
        _now: Millis,
    ) -> Result<bool, StoreError> {
        let named = self.records.lock().unwrap().get(&user).is_some_and(|r| r.state.audience == rule);
        match rule.list {
            Some(tag) if named => {
                self.lists.lock().unwrap().insert((user, tag), ids.to_vec());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn prune_lists(&self, user: UserId, keep: Option<ListTag>, _before: Millis) -> Result<(), StoreError> {
        self.lists.lock().unwrap().retain(|(u, tag), _| *u != user || Some(*tag) == keep);
        Ok(())
    }
}

impl CacheAudience for FakeCache {
    async fn listed(&self, asks: &[ListAsk]) -> Result<Vec<Option<bool>>, CacheError> {
        Ok(vec![None; asks.len()])
    }

    async fn put_lists(&self, _lists: &[(UserId, ListTag, &[UserId])]) -> Result<(), CacheError> {
        Ok(())
    }
}
