//! Merging a batch of valid presence events into user records, through the
//! one write path.

use std::collections::HashMap;

use super::commit::{CommitError, CommitOutcome, Committer};
use crate::domain::{Millis, PresenceEvent, UserId};
use crate::ports::{CacheRead, CacheWrite, ChangeFeed, ChangePublisher, Outbox, RepairBuffer, StoreWrite};

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheRead + CacheWrite,
    S: StoreWrite + Outbox,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    /// Merges `events` (any order, duplicates allowed) into their users'
    /// records: one load, one compare-and-set write per store, whatever the
    /// batch size.
    pub async fn aggregate(&self, events: &[PresenceEvent], now: Millis) -> Result<CommitOutcome, CommitError> {
        let mut by_user: HashMap<UserId, Vec<&PresenceEvent>> = HashMap::new();
        for event in events {
            by_user.entry(event.user_id).or_default().push(event);
        }
        let mut users: Vec<UserId> = by_user.keys().copied().collect();
        users.sort();
        let merge = |user: UserId, record: &mut crate::domain::UserRecord, _now: Millis| {
            for event in by_user.get(&user).into_iter().flatten() {
                if record.admits(event) {
                    record.state.apply(event);
                }
            }
            false
        };
        self.commit(&users, now, &merge).await
    }
}
