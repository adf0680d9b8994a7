//! The one write path every change takes (aggregator merges, scanner
//! transitions, visibility changes): load, change, compare-and-set in SQL
//! (retrying the losers from fresh state), then the cache, then the
//! `status_changed` events.
//!
//! SQL is written first because it is the durable copy: once it holds a
//! record the change is acknowledged, and a Redis failure after that only
//! leaves a repair to do, which the buffer remembers.

use std::collections::{HashMap, HashSet};

use crate::domain::{Millis, Rules, Transition, UserId, UserRecord};
use crate::ports::{
    CacheError, CacheRead, CacheWrite, ChangePublisher, RepairBuffer, RepairError, StoreError, StoreWrite, Write,
};

/// How many times a user that lost a compare-and-set is merged again from
/// fresh state before the whole call fails (and its trigger retries).
const MAX_ROUNDS: usize = 8;

/// Why a commit failed. Every variant means "nothing was acknowledged":
/// the caller fails so its trigger retries, which convergence makes safe.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("durable store unavailable")]
    Store(#[from] StoreError),
    #[error("users still contended after {MAX_ROUNDS} rounds: {0:?}")]
    Contended(Vec<UserId>),
    #[error("redis did not take the change and the repair buffer failed too")]
    Repair(#[source] RepairError),
    /// A change that must reach Redis before it is acknowledged (a hide:
    /// a stale visible copy in Redis would leak the user's status) could
    /// not be written there.
    #[error("redis is unavailable and this change must reach it")]
    CacheRequired,
}

/// What one commit did.
#[derive(Debug, Default)]
pub struct CommitOutcome {
    /// Users whose record was written.
    pub written: Vec<UserId>,
    /// Transitions of the public status, published after the write.
    pub transitions: Vec<(UserId, Transition)>,
    /// Whether Redis took every write; if not, the users are in the repair
    /// buffer.
    pub cache_ok: bool,
    /// Compare-and-set losers merged again.
    pub retried: usize,
    /// Whether publishing the transitions failed (logged; state is kept).
    pub publish_failed: bool,
    /// For every user handled, written or not: when the scanner should next
    /// look at them (`None`: only a new event can change them).
    pub next_change: Vec<(UserId, Option<Millis>)>,
}

/// Where a change comes from: the record it starts from, and whether to write
/// even if the record did not change (the scanner writes to refresh the
/// stored status).
pub trait Change: Sync {
    /// Changes `record` at `now`; returns whether to write it even if it is
    /// unchanged.
    fn apply(&self, user: UserId, record: &mut UserRecord, now: Millis) -> bool;
}

impl<F: Fn(UserId, &mut UserRecord, Millis) -> bool + Sync> Change for F {
    fn apply(&self, user: UserId, record: &mut UserRecord, now: Millis) -> bool {
        self(user, record, now)
    }
}

/// The write path over its ports.
#[derive(Clone)]
pub struct Committer<C, S, R, P> {
    pub cache: C,
    pub store: S,
    pub repair: R,
    pub publisher: P,
    pub rules: Rules,
}

impl<C, S, R, P> Committer<C, S, R, P>
where
    C: CacheRead + CacheWrite,
    S: StoreWrite,
    R: RepairBuffer,
    P: ChangePublisher,
{
    /// Applies `change` to each of `users` (distinct) and persists the
    /// results.
    pub async fn commit(
        &self,
        users: &[UserId],
        now: Millis,
        change: &impl Change,
    ) -> Result<CommitOutcome, CommitError> {
        self.commit_with(users, now, change, false).await
    }

    /// [`Committer::commit`], but with `cache_required` a Redis that does
    /// not answer fails the call: before anything is written when Redis is
    /// down from the start, after the durable write (with the repair
    /// recorded) when it fails in between.
    pub async fn commit_with(
        &self,
        users: &[UserId],
        now: Millis,
        change: &impl Change,
        cache_required: bool,
    ) -> Result<CommitOutcome, CommitError> {
        let mut outcome = CommitOutcome { cache_ok: true, ..Default::default() };
        if users.is_empty() {
            return Ok(outcome);
        }

        // Load: Redis first (one round trip), SQL for the misses or for all
        // when Redis is down.
        let (mut base, mut stale_in_cache) = match self.cache.load(users).await {
            Ok(cached) => {
                let mut base = HashMap::with_capacity(users.len());
                let mut misses = Vec::new();
                for (user, hit) in users.iter().zip(cached) {
                    match hit.record {
                        Some(record) => {
                            base.insert(*user, record);
                        }
                        None => misses.push(*user),
                    }
                }
                if !misses.is_empty() {
                    let mut durable = self.store.load_current(&misses).await?;
                    for user in &misses {
                        base.insert(*user, durable.remove(user).unwrap_or_default());
                    }
                }
                // Users missing from Redis are rewritten there even if the
                // change turns out to be a no-op, so a flushed cache fills
                // again.
                (base, misses)
            }
            Err(error) => {
                log_cache_down(&error, "load");
                if cache_required {
                    return Err(CommitError::CacheRequired);
                }
                outcome.cache_ok = false;
                let mut durable = self.store.load_current(users).await?;
                let base = users.iter().map(|u| (*u, durable.remove(u).unwrap_or_default())).collect();
                (base, Vec::new())
            }
        };

        // Once a round's SQL write is committed its transitions are owed to
        // subscribers: a failure after it (a later round, the cache, the
        // repair buffer) still publishes them before it is returned, since
        // the retry will find them announced already.
        let mut failure: Option<CommitError> = None;
        let mut written: HashMap<UserId, UserRecord> = HashMap::with_capacity(users.len());
        let mut pending: Vec<UserId> = users.to_vec();
        for round in 0..MAX_ROUNDS {
            let mut next: Vec<(UserId, UserRecord, Option<Transition>)> = Vec::with_capacity(pending.len());
            for user in &pending {
                let original = base.remove(user).unwrap_or_default();
                let mut record = original.clone();
                let force = change.apply(*user, &mut record, now);
                record.state.presence.prune(now, &self.rules);
                let transition = record.announce(now, &self.rules);
                if record == original && !force {
                    outcome.next_change.push((*user, Write::derived(*user, &record, now, &self.rules).next_change_ms));
                    continue;
                }
                record.version = original.version + 1;
                record.written_ms = now;
                next.push((*user, record, transition));
            }
            // Rows in user order, whoever writes: concurrent writers then
            // lock rows in the same order and do not deadlock.
            next.sort_by_key(|(user, _, _)| *user);
            let writes: Vec<Write<'_>> =
                next.iter().map(|(user, record, _)| Write::derived(*user, record, now, &self.rules)).collect();
            let lost: HashSet<UserId> = match self.store.save(&writes, now).await {
                Ok(lost) => lost.into_iter().collect(),
                Err(error) => {
                    failure = Some(error.into());
                    break;
                }
            };
            drop(writes);
            for (user, record, transition) in next {
                if !lost.contains(&user) {
                    outcome.next_change.push((user, Write::derived(user, &record, now, &self.rules).next_change_ms));
                    outcome.transitions.extend(transition.map(|t| (user, t)));
                    written.insert(user, record);
                }
            }
            if lost.is_empty() {
                break;
            }
            let mut lost: Vec<UserId> = lost.into_iter().collect();
            lost.sort();
            if round + 1 == MAX_ROUNDS {
                failure = Some(CommitError::Contended(lost));
                break;
            }
            // A rival wrote these first: merge again from what it wrote.
            outcome.retried += lost.len();
            match self.store.load_current(&lost).await {
                Ok(mut fresh) => {
                    for user in &lost {
                        base.insert(*user, fresh.remove(user).unwrap_or_default());
                    }
                }
                Err(error) => {
                    failure = Some(error.into());
                    break;
                }
            }
            // Redis may hold what the rival wrote or something older; it is
            // rewritten either way below.
            stale_in_cache.extend(lost.iter().copied());
            pending = lost;
        }

        if failure.is_none() {
            failure = self.update_cache(&written, &stale_in_cache, now, &mut outcome).await.err();
        }
        if failure.is_none() && cache_required && !outcome.cache_ok {
            failure = Some(CommitError::CacheRequired);
        }
        outcome.written = written.into_keys().collect();
        outcome.written.sort();
        if !outcome.transitions.is_empty() {
            if let Err(error) = self.publisher.publish(&outcome.transitions).await {
                tracing::error!(%error, count = outcome.transitions.len(), "status_changed events not published");
                outcome.publish_failed = true;
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(outcome),
        }
    }

    /// Writes Redis after the durable write: everything written, plus users
    /// Redis lacked or held stale. When Redis does not take them they go to
    /// the repair buffer.
    async fn update_cache(
        &self,
        written: &HashMap<UserId, UserRecord>,
        stale_in_cache: &[UserId],
        now: Millis,
        outcome: &mut CommitOutcome,
    ) -> Result<(), CommitError> {
        let mut refill: Vec<(UserId, UserRecord)> = Vec::new();
        if outcome.cache_ok && !stale_in_cache.is_empty() {
            let missing: Vec<UserId> = stale_in_cache.iter().copied().filter(|u| !written.contains_key(u)).collect();
            if !missing.is_empty() {
                refill.extend(self.store.load_current(&missing).await?);
            }
        }
        let mut to_cache: Vec<Write<'_>> = written
            .iter()
            .chain(refill.iter().map(|(u, r)| (u, r)))
            .map(|(user, record)| Write::derived(*user, record, now, &self.rules))
            .collect();
        to_cache.sort_by_key(|w| w.user);
        if outcome.cache_ok && !to_cache.is_empty() {
            if let Err(error) = self.cache.store(&to_cache, now).await {
                log_cache_down(&error, "store");
                outcome.cache_ok = false;
            }
        }
        if !outcome.cache_ok {
            let touched: Vec<UserId> = to_cache.iter().map(|w| w.user).collect();
            if !touched.is_empty() {
                self.repair.record(&touched).await.map_err(CommitError::Repair)?;
            }
        }
        Ok(())
    }
}

fn log_cache_down(error: &CacheError, step: &str) {
    tracing::warn!(%error, step, "redis unavailable; using SQL and the repair buffer");
}
