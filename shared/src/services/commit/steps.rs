//! The steps of a commit, each one call of `run`'s: load every
//! user's record, plan one user's write, save a round with compare-and-set,
//! then bring Redis up to date (or record the repairs).

use std::collections::{HashMap, HashSet};

use tracing::Instrument;

use super::{Change, CommitError, CommitMode, CommitOutcome, Committer};
use crate::domain::schedule::next_due;
use crate::domain::{ManualTransition, Millis, OutboxEvent, Transition, UserId, UserRecord};
use crate::ports::{CacheError, CacheRead, CacheWrite, ChangePublisher, RepairBuffer, StoreError, StoreWrite, Write};

/// Each step asks only for the ports it uses.
impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheRead + CacheWrite,
    S: StoreWrite,
    R: RepairBuffer,
    P: ChangePublisher,
{
    /// Step 1: every user's record, from Redis first (one round trip) and
    /// SQL for the misses, or all from SQL when Redis is down (then the
    /// call fails at once if `mode.cache_required`). Users missing from
    /// Redis are marked stale there, so a flushed cache fills again even if
    /// their change is a no-op.
    pub(super) async fn load(
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
    pub(super) fn plan(
        &self,
        user: UserId,
        original: UserRecord,
        hidden_flag: bool,
        change: &impl Change,
        now: Millis,
    ) -> Plan {
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
    pub(super) async fn save_round(
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
    pub(super) async fn update_cache(
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
pub(super) struct Loaded {
    pub(super) base: HashMap<UserId, UserRecord>,
    /// Users whose Redis visibility flag says hidden.
    pub(super) hidden_flags: HashSet<UserId>,
    /// Users to rewrite in Redis whatever their change.
    pub(super) stale_in_cache: Vec<UserId>,
}

/// One user's write in a round: the record to store, what it announces,
/// and when the scanner should next look at the user.
pub(super) struct Plan {
    pub(super) user: UserId,
    pub(super) record: UserRecord,
    pub(super) transition: Option<Transition>,
    pub(super) manual_change: Option<ManualTransition>,
    pub(super) next_change_ms: Option<Millis>,
    /// Whether there is anything to write: the change changed the record,
    /// or asked for a write anyway.
    pub(super) writes: bool,
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
