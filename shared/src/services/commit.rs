//! The one write path every change takes (aggregator merges, scanner
//! transitions, visibility changes): load, change, compare-and-set in SQL
//! together with the outbox (retrying the losers from fresh state), then the
//! cache, then the push feed and a drain of the outbox to the bus.
//!
//! SQL is written first because it is the durable copy: once it holds a
//! record the change is acknowledged, and a Redis failure after that only
//! leaves a repair to do, which the buffer remembers. The announcements of
//! a change are written in the same transaction (DESIGN §6), so one that
//! the bus does not take now is sent by a later drain, never lost.
//!
//! Over 400 lines because its steps (load, plan, save round, cache update)
//! are one algorithm read in order; the outbox drain is in [`super::outbox`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tracing::Instrument;

use super::feed::change_of;
use super::outbox::OUTBOX_LEASE_MS;
use crate::domain::schedule::next_due;
use crate::domain::{FeedChange, ManualTransition, Millis, OutboxEvent, Rules, Transition, UserId, UserRecord};
use crate::ports::{
    CacheError, CacheRead, CacheWrite, ChangeFeed, ChangePublisher, Outbox, RepairBuffer, RepairError, StoreError,
    StoreWrite, Write,
};

/// How long users that keep losing compare-and-set races are merged again
/// before the call gives up. Bounded in time, not in rounds: twelve writers
/// on one user need up to twelve rounds, and each round is a few ms. Well
/// under every function's timeout (the API's is 15 s in `template.yaml`).
pub const CONTENTION_BUDGET: Duration = Duration::from_secs(5);

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
    /// the next drain).
    pub publish_failed: bool,
    /// Outbox events the bus accepted during this call (this call's and any
    /// older ones of the same users still waiting).
    pub published: usize,
    /// Changes the push feed accepted: one per user written (DESIGN §12).
    pub fed: usize,
    /// Whether the push feed refused the written users (logged; kept in the
    /// repair buffer for the next scan when the failure may pass).
    pub feed_failed: bool,
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
pub struct Committer<C, S, R, P, F> {
    pub cache: C,
    pub store: S,
    pub repair: R,
    pub publisher: P,
    /// The push feed (DESIGN §12), told of every user a commit wrote.
    pub feed: F,
    pub rules: Rules,
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheRead + CacheWrite,
    S: StoreWrite + Outbox,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
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
    ///
    /// The steps: [`Self::load`], then rounds of [`Self::plan`] and
    /// [`Self::save_round`] until no user lost its compare-and-set (the
    /// losers merged again from what the rival wrote), then
    /// [`Self::update_cache`], then, side by side, the push feed of every
    /// user written and a drain of what was announced. Both happen even
    /// when a later step failed, for whatever was made durable; a failed
    /// feed never fails the call (`services/feed.rs` says why).
    pub async fn commit_with(
        &self,
        users: &[UserId],
        now: Millis,
        change: &impl Change,
        mode: CommitMode,
    ) -> Result<CommitOutcome, CommitError> {
        let mut outcome = CommitOutcome { cache_ok: true, ..Default::default() };
        if users.is_empty() {
            return Ok(outcome);
        }
        let Loaded { mut base, hidden_flags, mut stale_in_cache } = self.load(users, mode, &mut outcome).await?;

        // Once a round's SQL write is committed its transitions are owed to
        // subscribers: a failure after it (a later round, the cache, the
        // repair buffer) still publishes them before it is returned, since
        // the retry will find them announced already.
        let mut failure: Option<CommitError> = None;
        let mut written: Vec<Plan> = Vec::with_capacity(users.len());
        let mut announced: Vec<UserId> = Vec::new();
        let mut pending: Vec<UserId> = users.to_vec();
        let deadline = tokio::time::Instant::now() + CONTENTION_BUDGET;
        let mut round: u32 = 0;
        loop {
            round += 1;
            let merge_span = tracing::info_span!("merge", round, users = pending.len()).entered();
            let mut plans: Vec<Plan> = Vec::with_capacity(pending.len());
            for user in &pending {
                let original = base.remove(user).unwrap_or_default();
                let plan = self.plan(*user, original, hidden_flags.contains(user), change, now);
                if plan.writes {
                    plans.push(plan);
                } else {
                    outcome.next_change.push((*user, plan.next_change_ms));
                }
            }
            drop(merge_span);
            let lost = match self.save_round(&mut plans, mode, round, now).await {
                Ok(lost) => lost,
                Err(error) => {
                    failure = Some(error.into());
                    break;
                }
            };
            for plan in plans {
                if lost.contains(&plan.user) {
                    continue;
                }
                outcome.next_change.push((plan.user, plan.next_change_ms));
                if plan.transition.is_some() || plan.manual_change.is_some() {
                    announced.push(plan.user);
                }
                outcome.transitions.extend(plan.transition.map(|t| (plan.user, t)));
                outcome.manual_changes.extend(plan.manual_change.clone().map(|m| (plan.user, m)));
                written.push(plan);
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
        if failure.is_none() && mode.cache_required && !outcome.cache_ok {
            failure = Some(CommitError::CacheRequired);
        }
        outcome.written = written.iter().map(|plan| plan.user).collect();
        outcome.written.sort();
        // What this call made durable goes to the watchers (DESIGN §12) and
        // is announced now if the bus takes it; if not, it waits in the
        // outbox for the next drain (every scan).
        let changes: Vec<FeedChange> = written.iter().map(|plan| change_of(plan.user, &plan.record)).collect();
        let feeding = self.feed_changes(&changes).instrument(tracing::info_span!("feed", users = changes.len()));
        let draining = async {
            if announced.is_empty() || !self.publisher.enabled() {
                return None;
            }
            let claim: i64 = rand::random();
            let waiting = self.store.claim_for(&announced, claim, now, OUTBOX_LEASE_MS).await;
            Some(self.drain(claim, waiting).await)
        }
        .instrument(tracing::info_span!("publish", users = announced.len()));
        let (fed, drained) = futures::future::join(feeding, draining).await;
        (outcome.fed, outcome.feed_failed) = (fed.fed, fed.failed);
        if let Some(drained) = drained {
            outcome.published = drained.published;
            outcome.publish_failed = drained.failed;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(outcome),
        }
    }

    /// Step 1: every user's record, from Redis first (one round trip) and
    /// SQL for the misses, or all from SQL when Redis is down (then the
    /// call fails at once if `mode.cache_required`). Users missing from
    /// Redis are marked stale there, so a flushed cache fills again even if
    /// their change is a no-op.
    async fn load(
        &self,
        users: &[UserId],
        mode: CommitMode,
        outcome: &mut CommitOutcome,
    ) -> Result<Loaded, CommitError> {
        let load_span = tracing::info_span!("load", users = users.len());
        match self.cache.load(users).instrument(load_span.clone()).await {
            Ok(cached) => {
                let mut loaded = Loaded { base: HashMap::with_capacity(users.len()), ..Loaded::default() };
                let mut misses = Vec::new();
                for (user, hit) in users.iter().zip(cached) {
                    if hit.visible_flag == Some(false) {
                        loaded.hidden_flags.insert(*user);
                    }
                    match hit.record {
                        Some(record) => {
                            loaded.base.insert(*user, record);
                        }
                        None => misses.push(*user),
                    }
                }
                if !misses.is_empty() {
                    let mut durable = self.store.load_current(&misses).instrument(load_span).await?;
                    for user in &misses {
                        loaded.base.insert(*user, durable.remove(user).unwrap_or_default());
                    }
                }
                loaded.stale_in_cache = misses;
                Ok(loaded)
            }
            Err(error) => {
                log_cache_down(&error, "load");
                if mode.cache_required {
                    return Err(CommitError::CacheRequired);
                }
                outcome.cache_ok = false;
                let mut durable = self.store.load_current(users).instrument(load_span).await?;
                let base = users.iter().map(|u| (*u, durable.remove(u).unwrap_or_default())).collect();
                Ok(Loaded { base, ..Loaded::default() })
            }
        }
    }

    /// Step 2, for one user: applies `change` to `original` at the write's
    /// time, with the flag's hide adopted first, and says what the write
    /// would announce and when the user is next due, derived once here and
    /// carried by the plan to every store. A plan that does not write
    /// (`writes` false) keeps the record as it was found.
    fn plan(&self, user: UserId, original: UserRecord, hidden_flag: bool, change: &impl Change, now: Millis) -> Plan {
        // Each write of a user happens at or after the one it merges from,
        // so along the user's versions no announced `at_ms` goes backwards
        // (DESIGN §8), whichever writer's clock read first and lost the
        // compare-and-set.
        let now = original.write_time(now);
        let mut record = original.clone();
        if hidden_flag {
            // Hidden as of the copy's last write, exactly as a reader shows
            // it (`Reader::read`), so adopting the hide moves nothing anyone
            // can see.
            record.hide_for_flag(now);
        }
        let force = change.apply(user, &mut record, now);
        record.state.presence.prune(now, &self.rules);
        record.state.drop_expired_manual(now);
        let transition = record.announce(now, &self.rules);
        let manual_change = record.announce_manual(now);
        let mut writes = record != original || force;
        if writes {
            match original.next_version() {
                Some(version) => {
                    record.version = version;
                    record.written_ms = now;
                }
                None => {
                    // Only a damaged store holds such a version (DESIGN §6):
                    // this user is left as stored, the rest of the call goes on.
                    tracing::error!(%user, version = original.version, "no version left to write; user left as stored");
                    record = original;
                    writes = false;
                }
            }
        }
        let next_change_ms = next_due(&record, now, &self.rules);
        Plan { user, record, transition, manual_change, next_change_ms, writes }
    }

    /// Step 3: one compare-and-set write of `plans` with their outbox
    /// events, in one transaction; returns the users a rival wrote first.
    /// Rows go in user order, whoever writes, so concurrent writers lock
    /// rows in the same order and do not deadlock.
    async fn save_round(
        &self,
        plans: &mut [Plan],
        mode: CommitMode,
        round: u32,
        now: Millis,
    ) -> Result<HashSet<UserId>, StoreError> {
        plans.sort_by_key(|plan| plan.user);
        let writes: Vec<Write<'_>> = plans.iter().map(|plan| plan.write(mode.shows)).collect();
        // Without a bus nothing is announced, so nothing is kept.
        let events: Vec<OutboxEvent> =
            if self.publisher.enabled() { plans.iter().flat_map(Plan::events).collect() } else { Vec::new() };
        let save = self.store.save(&writes, &events, now);
        let lost = save.instrument(tracing::info_span!("commit", round, rows = writes.len())).await?;
        Ok(lost.into_iter().collect())
    }

    /// Step 4: Redis after the durable write: everything written, plus
    /// users Redis lacked or held stale. When Redis does not take them they
    /// go to the repair buffer.
    async fn update_cache(
        &self,
        written: &[Plan],
        stale_in_cache: &[UserId],
        now: Millis,
        shows: bool,
        outcome: &mut CommitOutcome,
    ) -> Result<(), CommitError> {
        let mut refill: Vec<(UserId, UserRecord)> = Vec::new();
        if outcome.cache_ok && !stale_in_cache.is_empty() {
            let written_users: HashSet<UserId> = written.iter().map(|plan| plan.user).collect();
            let missing: Vec<UserId> = stale_in_cache.iter().copied().filter(|u| !written_users.contains(u)).collect();
            if !missing.is_empty() {
                // Placeholders (users never seen, erased users) are left
                // to reads, which cache them with the backfill TTL.
                refill
                    .extend(self.store.load_current(&missing).await?.into_iter().filter(|(_, r)| !r.is_placeholder()));
            }
        }
        let mut to_cache: Vec<Write<'_>> = written
            .iter()
            .map(|plan| plan.write(shows))
            .chain(
                refill.iter().map(|(user, record)| Write { shows, ..Write::derived(*user, record, now, &self.rules) }),
            )
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

/// What [`Committer::load`] found.
#[derive(Default)]
struct Loaded {
    base: HashMap<UserId, UserRecord>,
    /// Users whose Redis visibility flag says hidden.
    hidden_flags: HashSet<UserId>,
    /// Users to rewrite in Redis whatever their change.
    stale_in_cache: Vec<UserId>,
}

/// One user's write in a round: the record to store, what it announces,
/// and when the scanner should next look at the user.
struct Plan {
    user: UserId,
    record: UserRecord,
    transition: Option<Transition>,
    manual_change: Option<ManualTransition>,
    next_change_ms: Option<Millis>,
    /// Whether there is anything to write: the change changed the record,
    /// or asked for a write anyway.
    writes: bool,
}

impl Plan {
    fn write(&self, shows: bool) -> Write<'_> {
        Write { user: self.user, record: &self.record, next_change_ms: self.next_change_ms, shows }
    }

    /// The outbox events of this write, each named by its version.
    fn events(&self) -> impl Iterator<Item = OutboxEvent> + '_ {
        let status = self.transition.as_ref().map(|t| OutboxEvent::status_changed(self.user, self.record.version, t));
        let manual =
            self.manual_change.as_ref().map(|m| OutboxEvent::manual_status_changed(self.user, self.record.version, m));
        status.into_iter().chain(manual)
    }
}

fn log_cache_down(error: &CacheError, step: &str) {
    tracing::warn!(%error, step, "redis unavailable; using SQL and the repair buffer");
}
