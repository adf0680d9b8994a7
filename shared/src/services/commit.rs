//! The one write path every change takes (aggregator merges, scanner
//! transitions, visibility changes): load, change, compare-and-set in SQL
//! together with the outbox (retrying the losers from fresh state), then the
//! cache, then a drain of the outbox to the bus.
//!
//! SQL is written first because it is the durable copy: once it holds a
//! record the change is acknowledged, and a Redis failure after that only
//! leaves a repair to do, which the buffer remembers. The announcements of
//! a change are written in the same transaction (DESIGN §6), so one that
//! the bus does not take now is sent by a later drain, never lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tracing::Instrument;

use crate::domain::{ManualTransition, Millis, OutboxEvent, Rules, Transition, UserId, UserRecord};
use crate::ports::{
    CacheError, CacheRead, CacheWrite, ChangePublisher, Outbox, RepairBuffer, RepairError, StoreError, StoreWrite,
    Write,
};

/// How long users that keep losing compare-and-set races are merged again
/// before the call gives up. Bounded in time, not in rounds: twelve writers
/// on one user need up to twelve rounds, and each round is a few ms. Well
/// under every function's timeout (the API's is 10 s).
pub const CONTENTION_BUDGET: Duration = Duration::from_secs(5);

/// How long a drain's claim on outbox rows lasts: longer than one publish
/// can take (a few `AWS_TIMEOUT_MS`), so no other drain sends them
/// meanwhile; short enough that rows of a drain that died are sent by the
/// next scan but one.
pub const OUTBOX_LEASE_MS: i64 = 30_000;

/// The pause before merging again after round `round` (1-based) was lost:
/// exponential from 2 ms, capped at 64 ms, with the whole of it random so
/// rivals that collided once spread out instead of colliding again.
pub(crate) fn contention_pause(round: u32) -> Duration {
    let cap_ms = 2u64 << round.saturating_sub(1).min(5);
    Duration::from_micros(rand::random::<u64>() % (cap_ms * 1000 + 1))
}

/// Why a commit failed. Every variant means "nothing was acknowledged":
/// the caller fails so its trigger retries, which convergence makes safe.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("durable store unavailable")]
    Store(#[from] StoreError),
    #[error("users still contended after {budget_s} s of retries: {users:?}", budget_s = CONTENTION_BUDGET.as_secs(), users = .0)]
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
    /// Transitions of the public status made by this call, written to the
    /// outbox with the state and published after the write.
    pub transitions: Vec<(UserId, Transition)>,
    /// Manual status changes (DESIGN §7.1) made by this call, written to
    /// the outbox as `manual_status_changed` like the transitions.
    pub manual_changes: Vec<(UserId, ManualTransition)>,
    /// Whether Redis took every write; if not, the users are in the repair
    /// buffer.
    pub cache_ok: bool,
    /// Compare-and-set losers merged again.
    pub retried: usize,
    /// Whether publishing failed (logged; the events stay in the outbox for
    /// the next drain), or an event too large for any bus call was dropped
    /// from it (logged).
    pub publish_failed: bool,
    /// Outbox events the bus accepted during this call (this call's and any
    /// older ones of the same users still waiting).
    pub published: usize,
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

/// How a commit treats the stores beyond the compare-and-set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitMode {
    /// A Redis that does not answer fails the call (a hide must reach it).
    pub cache_required: bool,
    /// The call may turn a hidden preference visible (the visibility
    /// route's show, and nothing else).
    pub shows: bool,
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
    S: StoreWrite + Outbox,
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
        self.commit_with(users, now, change, CommitMode::default()).await
    }

    /// [`Committer::commit`] with a [`CommitMode`]. With `cache_required`
    /// a Redis that does not answer fails the call: before anything is
    /// written when Redis is down from the start, after the durable write
    /// (with the repair recorded) when it fails in between.
    ///
    /// A hide found in Redis's `status:visible:{id}` flag (the contract's
    /// authority, which anyone may have set) is adopted into the record
    /// before the change, so it is written to SQL and survives a cache
    /// loss; only `mode.shows` may turn it visible again.
    pub async fn commit_with(
        &self,
        users: &[UserId],
        now: Millis,
        change: &impl Change,
        mode: CommitMode,
    ) -> Result<CommitOutcome, CommitError> {
        let cache_required = mode.cache_required;
        let mut outcome = CommitOutcome { cache_ok: true, ..Default::default() };
        if users.is_empty() {
            return Ok(outcome);
        }

        // Load: Redis first (one round trip), SQL for the misses or for all
        // when Redis is down.
        let mut hidden_flags: HashSet<UserId> = HashSet::new();
        let load_span = tracing::info_span!("load", users = users.len());
        let (mut base, mut stale_in_cache) = match self.cache.load(users).instrument(load_span.clone()).await {
            Ok(cached) => {
                let mut base = HashMap::with_capacity(users.len());
                let mut misses = Vec::new();
                for (user, hit) in users.iter().zip(cached) {
                    if hit.visible_flag == Some(false) {
                        hidden_flags.insert(*user);
                    }
                    match hit.record {
                        Some(record) => {
                            base.insert(*user, record);
                        }
                        None => misses.push(*user),
                    }
                }
                if !misses.is_empty() {
                    let mut durable = self.store.load_current(&misses).instrument(load_span.clone()).await?;
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
                let mut durable = self.store.load_current(users).instrument(load_span).await?;
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
        let mut announced: Vec<UserId> = Vec::new();
        let mut pending: Vec<UserId> = users.to_vec();
        let deadline = tokio::time::Instant::now() + CONTENTION_BUDGET;
        let mut round: u32 = 0;
        loop {
            round += 1;
            type Next = (UserId, UserRecord, Option<Transition>, Option<ManualTransition>);
            let mut next: Vec<Next> = Vec::with_capacity(pending.len());
            let merge_span = tracing::info_span!("merge", round, users = pending.len()).entered();
            for user in &pending {
                let original = base.remove(user).unwrap_or_default();
                let mut record = original.clone();
                if hidden_flags.contains(user) {
                    // Hidden as of the copy's last write, exactly as a
                    // reader shows it (`Reader::read`), so adopting the
                    // hide moves nothing anyone can see.
                    record.hide_for_flag(now);
                }
                let force = change.apply(*user, &mut record, now);
                record.state.presence.prune(now, &self.rules);
                record.state.drop_expired_manual(now);
                let transition = record.announce(now, &self.rules);
                let manual_change = record.announce_manual(now);
                if record == original && !force {
                    outcome.next_change.push((*user, Write::derived(*user, &record, now, &self.rules).next_change_ms));
                    continue;
                }
                record.version = original.version + 1;
                record.written_ms = now;
                next.push((*user, record, transition, manual_change));
            }
            drop(merge_span);
            // Rows in user order, whoever writes: concurrent writers then
            // lock rows in the same order and do not deadlock.
            next.sort_by_key(|(user, ..)| *user);
            let writes: Vec<Write<'_>> = next
                .iter()
                .map(|(user, record, ..)| Write {
                    shows: mode.shows,
                    ..Write::derived(*user, record, now, &self.rules)
                })
                .collect();
            // Without a bus nothing is announced, so nothing is kept.
            let events: Vec<OutboxEvent> = if self.publisher.enabled() {
                next.iter()
                    .flat_map(|(user, record, t, m)| {
                        let status = t.as_ref().map(|t| OutboxEvent::status_changed(*user, record.version, t));
                        let manual = m.as_ref().map(|m| OutboxEvent::manual_status_changed(*user, record.version, m));
                        status.into_iter().chain(manual)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let save = self.store.save(&writes, &events, now);
            let lost: HashSet<UserId> =
                match save.instrument(tracing::info_span!("commit", round, rows = writes.len())).await {
                    Ok(lost) => lost.into_iter().collect(),
                    Err(error) => {
                        failure = Some(error.into());
                        break;
                    }
                };
            drop(writes);
            for (user, record, transition, manual_change) in next {
                if !lost.contains(&user) {
                    outcome.next_change.push((user, Write::derived(user, &record, now, &self.rules).next_change_ms));
                    if transition.is_some() || manual_change.is_some() {
                        announced.push(user);
                    }
                    if let Some(t) = transition {
                        outcome.transitions.push((user, t));
                    }
                    if let Some(m) = manual_change {
                        outcome.manual_changes.push((user, m));
                    }
                    written.insert(user, record);
                }
            }
            if lost.is_empty() {
                break;
            }
            let mut lost: Vec<UserId> = lost.into_iter().collect();
            lost.sort();
            if tokio::time::Instant::now() >= deadline {
                failure = Some(CommitError::Contended(lost));
                break;
            }
            // A rival wrote these first: merge again from what it wrote,
            // after a random pause so the rivals spread out.
            outcome.retried += lost.len();
            tokio::time::sleep(contention_pause(round)).await;
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
            let cache_span = tracing::info_span!("cache_write", users = written.len());
            failure = self
                .update_cache(&written, &stale_in_cache, now, mode.shows, &mut outcome)
                .instrument(cache_span)
                .await
                .err();
        }
        if failure.is_none() && cache_required && !outcome.cache_ok {
            failure = Some(CommitError::CacheRequired);
        }
        outcome.written = written.into_keys().collect();
        outcome.written.sort();
        // What this call made durable is announced now if the bus takes it;
        // if not, it waits in the outbox for the next drain (every scan).
        if !announced.is_empty() && self.publisher.enabled() {
            let claim: i64 = rand::random();
            let publish_span = tracing::info_span!("publish", users = announced.len());
            let drained = async {
                let waiting = self.store.claim_for(&announced, claim, now, OUTBOX_LEASE_MS).await;
                self.drain(claim, waiting).await
            }
            .instrument(publish_span)
            .await;
            outcome.published = drained.published;
            outcome.publish_failed = drained.failed;
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
        shows: bool,
        outcome: &mut CommitOutcome,
    ) -> Result<(), CommitError> {
        let mut refill: Vec<(UserId, UserRecord)> = Vec::new();
        if outcome.cache_ok && !stale_in_cache.is_empty() {
            let missing: Vec<UserId> = stale_in_cache.iter().copied().filter(|u| !written.contains_key(u)).collect();
            if !missing.is_empty() {
                // Placeholders (users never seen, erased users) are left
                // to reads, which cache them with the backfill TTL.
                refill
                    .extend(self.store.load_current(&missing).await?.into_iter().filter(|(_, r)| !r.is_placeholder()));
            }
        }
        let mut to_cache: Vec<Write<'_>> = written
            .iter()
            .chain(refill.iter().map(|(u, r)| (u, r)))
            .map(|(user, record)| Write { shows, ..Write::derived(*user, record, now, &self.rules) })
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

/// What one drain of the outbox did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Events the bus accepted and the outbox forgot.
    pub published: usize,
    /// Whether some events stay waiting (bus or SQL failed; logged), or
    /// one was dropped as too large for any bus call (logged).
    pub failed: bool,
}

impl<C, S, R, P> Committer<C, S, R, P>
where
    S: Outbox,
    P: ChangePublisher,
{
    /// Publishes outbox events claimed under `claim` (each user's in version
    /// order), forgets the accepted ones and gives the rest back. Never
    /// fails: whatever is not accepted stays for the next drain, and an
    /// accepted event whose removal failed is sent again once its claim
    /// runs out (consumers deduplicate on `event_id`).
    pub(crate) async fn drain(&self, claim: i64, waiting: Result<Vec<OutboxEvent>, StoreError>) -> Drained {
        let waiting = match waiting {
            Ok(waiting) => waiting,
            Err(error) => {
                tracing::error!(%error, "outbox not read; its events wait for the next drain");
                return Drained { published: 0, failed: true };
            }
        };
        if waiting.is_empty() {
            return Drained::default();
        }
        let delivery = self.publisher.publish(&waiting).await;
        let published = delivery.accepted.len();
        let mut failed = false;
        for event in delivery.dropped.iter().filter_map(|i| waiting.get(*i)) {
            tracing::error!(
                event_id = %event.event_id(),
                detail_type = %event.detail_type,
                detail_bytes = event.detail.len(),
                "event too large for the bus; dropped from the outbox"
            );
            failed = true;
        }
        let done: Vec<OutboxEvent> =
            delivery.accepted.iter().chain(&delivery.dropped).filter_map(|i| waiting.get(*i).cloned()).collect();
        if let Some(error) = &delivery.error {
            tracing::error!(%error, waiting = waiting.len() - done.len(), "events not published; kept in the outbox");
            failed = true;
        }
        if let Err(error) = self.store.remove(&done).await {
            tracing::warn!(%error, count = done.len(), "published events not removed from the outbox; sent again later");
            failed = true;
        } else if done.len() < waiting.len() {
            if let Err(error) = self.store.release(claim).await {
                tracing::warn!(%error, "unsent events keep their claim until it runs out");
            }
        }
        Drained { published, failed }
    }
}

fn log_cache_down(error: &CacheError, step: &str) {
    tracing::warn!(%error, step, "redis unavailable; using SQL and the repair buffer");
}
