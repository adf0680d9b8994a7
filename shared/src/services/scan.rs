//! The idle scanner's step for one shard: first repair the cache from SQL
//! for users the repair buffer holds, then drain the shard's outbox, then
//! walk the users whose status is due to change (a per-shard index scored
//! by due time), write their re-derived state and announce the transitions.
//! Each page costs in proportion to the users due, never to the shard's
//! size. A due index lost with the cache is first rebuilt from SQL's
//! durable schedule (DESIGN §6), one pass over that column's index.

use tracing::Instrument;

use super::commit::{CommitError, Committer};
use super::feed::change_of;
use crate::domain::{FeedChange, Millis, UserId, UserRecord};
use crate::ports::{
    CacheError, CacheRead, CacheWrite, ChangeFeed, ChangePublisher, DueIndex, HeldChanges, Outbox, RepairBuffer,
    RepairError, ScheduleSource, StoreError, StoreWrite, Write,
};

/// Users per page: one Redis round trip and one SQL statement each.
pub const PAGE: usize = 1000;
/// Pages per shard and call; what is left waits for the next schedule.
pub const MAX_PAGES: usize = 200;
/// Users per page of an index rebuild: one SQL query and one Redis round
/// trip each.
pub const REBUILD_PAGE: usize = 10_000;

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
    /// Users put back in the due index from SQL after it was found lost
    /// (0 when it was complete).
    pub rebuilt: usize,
    /// Whether the index had to be rebuilt.
    pub rebuilds: usize,
    /// Outbox events published by this scan's drain.
    pub published: usize,
    /// Whether the drain left events waiting (bus or SQL failed).
    pub publish_failed: bool,
    /// Changes the push feed accepted: users written, and users repaired
    /// (DESIGN §12).
    pub fed: usize,
    /// Whether the push feed refused some (logged; a transient refusal is
    /// fed again by the next scan).
    pub feed_failed: bool,
    /// Users with held-back activity whose flush instant had come, fed to
    /// the stream function (DESIGN §12); also counted in `fed`.
    pub flushed: usize,
    pub scanned: usize,
    pub written: usize,
    pub transitions: usize,
    pub pages: usize,
    /// Rows of the schedule whose due time could not be read during a
    /// rebuild (each logged; the users were looked at at once).
    pub unreadable_rows: usize,
}

/// What a repair of a shard did.
#[derive(Clone, Copy, Debug, Default)]
struct Repaired {
    repaired: usize,
    fed: usize,
    feed_failed: bool,
}

/// What a flush of a shard's held activity did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Users the feed took.
    pub fed: usize,
    /// Whether the feed refused some (logged).
    pub failed: bool,
}

/// What a rebuild of a shard's due index put back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Users put back in the index, unreadable ones included.
    pub users: usize,
    /// Of those, rows whose due time could not be read.
    pub unreadable: usize,
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheRead + CacheWrite + DueIndex + HeldChanges,
    S: StoreWrite + Outbox + ScheduleSource,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    /// Rewrites from SQL every user the repair buffer holds for `shard`,
    /// feeds them to the push feed (DESIGN §12: the buffer also holds users
    /// whose feed failed), then clears them. Redis must answer; otherwise
    /// nothing is cleared. A feed that fails for a reason that may pass
    /// leaves them all in the buffer for the next scan (logged), without
    /// failing the scan.
    pub async fn repair_shard(&self, shard: u32, now: Millis) -> Result<usize, ScanError> {
        Ok(self.repair_and_feed(shard, now).await?.repaired)
    }

    /// [`Self::repair_shard`], saying what the feed did too.
    async fn repair_and_feed(&self, shard: u32, now: Millis) -> Result<Repaired, ScanError> {
        let pending = self.repair.pending(shard).await?;
        if pending.is_empty() {
            return Ok(Repaired::default());
        }
        let users: Vec<UserId> = pending.iter().map(|p| p.user).collect();
        let mut durable = self.store.load_current(&users).await?;
        let records: Vec<(UserId, UserRecord)> =
            users.iter().map(|u| (*u, durable.remove(u).unwrap_or_default())).collect();
        // Placeholders (erased users, users never stored) are left to
        // reads, as the write path leaves them.
        let writes: Vec<Write<'_>> = records
            .iter()
            .filter(|(_, record)| record.version > 0 && !record.is_placeholder())
            .map(|(user, record)| Write::derived(*user, record, now, &self.rules))
            .collect();
        // Versions only move forward in Redis, so this cannot undo a newer
        // write that landed since SQL was read.
        self.cache.store(&writes, now).await?;
        let changes: Vec<_> = records
            .iter()
            .filter(|(_, record)| record.version > 0)
            .map(|(user, record)| change_of(*user, record))
            .collect();
        let fed = match self.feed_repaired(&changes).await {
            Ok(fed) => fed,
            Err(error) => {
                tracing::warn!(%error, shard, users = changes.len(), "repaired users not fed; kept for the next scan");
                return Ok(Repaired { repaired: pending.len(), fed: 0, feed_failed: true });
            }
        };
        self.repair.clear(shard, &pending).await?;
        Ok(Repaired { repaired: pending.len(), fed: fed.fed, feed_failed: fed.failed })
    }

    /// Puts every user of `shard` with a durable next change back in the
    /// due index, then marks the index complete. Safe to race with writers
    /// and with another rebuild: entries are merged as writers merge them
    /// (an earlier or passed time is replaced), and the worst an old row
    /// does is wake the scanner early for a user.
    ///
    /// A row whose due time cannot be read is put in as due at once, so the
    /// scan looks at that user now and schedules them from their record;
    /// such rows are logged and counted in the result.
    pub async fn rebuild_index(&self, shard: u32, now: Millis) -> Result<Rebuilt, ScanError> {
        let mut after = None;
        let mut rebuilt = Rebuilt::default();
        loop {
            let page = self.store.scheduled(shard, self.cache.shards(), after.as_ref(), REBUILD_PAGE).await?;
            rebuilt.users += page.entries.len();
            rebuilt.unreadable += page.unreadable;
            let done = page.rows < REBUILD_PAGE || page.next.is_none();
            self.cache.restore(shard, &page.entries, done, now).await?;
            if done {
                break;
            }
            after = page.next;
        }
        // An empty shard (a fresh database) lost nothing worth a warning.
        if rebuilt.users > 0 || rebuilt.unreadable > 0 {
            tracing::warn!(
                shard,
                users = rebuilt.users,
                unreadable = rebuilt.unreadable,
                "due index was lost; rebuilt from SQL"
            );
        }
        Ok(rebuilt)
    }

    /// Repairs, drains the outbox, then walks the due users of `shard` at
    /// `now` (rebuilding the due index first if it was lost).
    pub async fn scan_shard(&self, shard: u32, now: Millis) -> Result<ScanOutcome, ScanError> {
        let mut outcome = ScanOutcome { shard, ..Default::default() };
        let repaired = self.repair_and_feed(shard, now).instrument(tracing::info_span!("repair")).await?;
        (outcome.repaired, outcome.fed, outcome.feed_failed) = (repaired.repaired, repaired.fed, repaired.feed_failed);
        let drained = self.drain_shard(shard, now).instrument(tracing::info_span!("publish")).await;
        outcome.published = drained.published;
        outcome.publish_failed = drained.failed;
        // Rewrite each due user whose stored status is out of date (a changed
        // announcement is written anyway). A user never stored (only in the
        // index) is left alone and drops out of it.
        let rules = self.rules;
        let refresh = move |_: UserId, record: &mut UserRecord, now: Millis| {
            record.version > 0 && record.stored_view_is_stale(now, &rules)
        };
        for _ in 0..MAX_PAGES {
            let (due, complete) = self.cache.due(shard, now, PAGE).instrument(tracing::info_span!("due")).await?;
            if !complete && outcome.rebuilds == 0 {
                let rebuilt = self.rebuild_index(shard, now).instrument(tracing::info_span!("rebuild")).await?;
                outcome.rebuilt = rebuilt.users;
                outcome.unreadable_rows = rebuilt.unreadable;
                outcome.rebuilds = 1;
                continue;
            }
            if due.is_empty() {
                break;
            }
            outcome.pages += 1;
            outcome.scanned += due.len();
            let users: Vec<UserId> = due.iter().map(|(u, _)| *u).collect();
            let committed = self.commit(&users, now, &refresh).await?;
            outcome.written += committed.written.len();
            outcome.transitions += committed.transitions.len();
            outcome.published += committed.published;
            outcome.publish_failed |= committed.publish_failed;
            outcome.fed += committed.fed;
            outcome.feed_failed |= committed.feed_failed;
            let next: std::collections::HashMap<UserId, Option<Millis>> = committed.next_change.into_iter().collect();
            let settle: Vec<(UserId, f64, Option<Millis>)> =
                due.iter().map(|(user, seen)| (*user, *seen, next.get(user).copied().flatten())).collect();
            self.cache.settle(shard, &settle).await?;
            if due.len() < PAGE {
                break;
            }
        }
        let flushed = self.flush_held(shard, now).instrument(tracing::info_span!("flush")).await?;
        outcome.flushed = flushed.fed;
        outcome.fed += flushed.fed;
        outcome.feed_failed |= flushed.failed;
        tracing::info!(
            shard,
            repaired = outcome.repaired,
            rebuilt = outcome.rebuilt,
            published = outcome.published,
            scanned = outcome.scanned,
            written = outcome.written,
            transitions = outcome.transitions,
            flushed = outcome.flushed,
            "shard scanned"
        );
        Ok(outcome)
    }

    /// Feeds the users of `shard` whose held-back activity is due at `now`
    /// (DESIGN §12), a page at a time, and lets each go only once the feed
    /// took it: a refusal that may pass leaves them for the next scan
    /// (logged); one that cannot lets them go, as the feed then never
    /// reaches the stream function. Nothing to do when no feed is set.
    /// The last step of [`Self::scan_shard`]. Errors: Redis failed.
    pub async fn flush_held(&self, shard: u32, now: Millis) -> Result<Flushed, ScanError> {
        let mut flushed = Flushed::default();
        if !self.feed.enabled() {
            return Ok(flushed);
        }
        for _ in 0..MAX_PAGES {
            let due = self.cache.held_due(shard, now, PAGE).await?;
            if due.is_empty() {
                break;
            }
            // A flush names no version; its time is the flush instant, so
            // the fan-out's lag counts from when it came due.
            let changes: Vec<FeedChange> =
                due.iter().map(|(user, at)| FeedChange { user_id: *user, version: 0, at_ms: *at as Millis }).collect();
            match self.feed.changed(&changes).await {
                Ok(()) => flushed.fed += changes.len(),
                Err(error) if error.retryable => {
                    tracing::warn!(%error, shard, users = changes.len(), "held activity not fed; kept for the next scan");
                    flushed.failed = true;
                    break;
                }
                Err(_) => flushed.failed = true,
            }
            self.cache.release_held(shard, &due).await?;
            if due.len() < PAGE {
                break;
            }
        }
        Ok(flushed)
    }
}
