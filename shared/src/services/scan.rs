//! The idle scanner's step for one shard: first repair the cache from SQL
//! for users the repair buffer holds, then walk the users whose status is
//! due to change (a per-shard index scored by due time), write their
//! re-derived state and announce the transitions. Each page costs in
//! proportion to the users due, never to the shard's size.

use super::commit::{CommitError, Committer};
use crate::domain::{Millis, UserId, UserRecord};
use crate::ports::{
    CacheError, CacheRead, CacheWrite, ChangePublisher, DueIndex, RepairBuffer, RepairError, StoreError, StoreWrite,
    Write,
};

/// Users per page: one Redis round trip and one SQL statement each.
pub const PAGE: usize = 1000;
/// Pages per shard and call; what is left waits for the next schedule.
pub const MAX_PAGES: usize = 200;

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("redis unavailable; the shard is scanned on the next schedule")]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("cache repair failed: {0}")]
    Repair(#[from] RepairError),
    #[error("cache repair could not read SQL: {0}")]
    Store(#[from] StoreError),
}

/// What one shard's scan did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    pub shard: u32,
    pub repaired: usize,
    pub scanned: usize,
    pub written: usize,
    pub transitions: usize,
    pub pages: usize,
}

impl<C, S, R, P> Committer<C, S, R, P>
where
    C: CacheRead + CacheWrite + DueIndex,
    S: StoreWrite,
    R: RepairBuffer,
    P: ChangePublisher,
{
    /// Rewrites from SQL every user the repair buffer holds for `shard`,
    /// then clears them. Redis must answer; otherwise nothing is cleared.
    pub async fn repair_shard(&self, shard: u32, now: Millis) -> Result<usize, ScanError> {
        let pending = self.repair.pending(shard).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let users: Vec<UserId> = pending.iter().map(|p| p.user).collect();
        let mut durable = self.store.load_current(&users).await?;
        let records: Vec<(UserId, UserRecord)> =
            users.iter().map(|u| (*u, durable.remove(u).unwrap_or_default())).collect();
        let writes: Vec<Write<'_>> = records
            .iter()
            .filter(|(_, record)| record.version > 0)
            .map(|(user, record)| Write::derived(*user, record, now, &self.rules))
            .collect();
        // Versions only move forward in Redis, so this cannot undo a newer
        // write that landed since SQL was read.
        self.cache.store(&writes, now).await?;
        self.repair.clear(shard, &pending).await?;
        Ok(pending.len())
    }

    /// Repairs, then walks the due users of `shard` at `now`.
    pub async fn scan_shard(&self, shard: u32, now: Millis) -> Result<ScanOutcome, ScanError> {
        let mut outcome = ScanOutcome { shard, ..Default::default() };
        outcome.repaired = self.repair_shard(shard, now).await?;
        // Rewrite each due user whose stored status is out of date (a changed
        // announcement is written anyway). A user never stored (only in the
        // index) is left alone and drops out of it.
        let rules = self.rules;
        let refresh = move |_: UserId, record: &mut UserRecord, now: Millis| {
            record.version > 0 && record.stored_view_is_stale(now, &rules)
        };
        for _ in 0..MAX_PAGES {
            let due = self.cache.due(shard, now, PAGE).await?;
            if due.is_empty() {
                break;
            }
            outcome.pages += 1;
            outcome.scanned += due.len();
            let users: Vec<UserId> = due.iter().map(|(u, _)| *u).collect();
            let committed = self.commit(&users, now, &refresh).await?;
            outcome.written += committed.written.len();
            outcome.transitions += committed.transitions.len();
            let next: std::collections::HashMap<UserId, Option<Millis>> = committed.next_change.into_iter().collect();
            let settle: Vec<(UserId, f64, Option<Millis>)> =
                due.iter().map(|(user, seen)| (*user, *seen, next.get(user).copied().flatten())).collect();
            self.cache.settle(shard, &settle).await?;
            if due.len() < PAGE {
                break;
            }
        }
        tracing::info!(
            shard,
            repaired = outcome.repaired,
            scanned = outcome.scanned,
            written = outcome.written,
            transitions = outcome.transitions,
            "shard scanned"
        );
        Ok(outcome)
    }
}
