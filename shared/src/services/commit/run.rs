//! A commit from start to end (DESIGN §6): load, rounds of plan and
//! compare-and-set until no user lost, the cache, then the push feed and a
//! drain of what was announced.

use tracing::Instrument;

use super::steps::{Loaded, Plan};
use super::{contention_pause, Change, CommitError, CommitMode, CommitOutcome, Committer, CONTENTION_BUDGET};
use crate::domain::{FeedChange, Millis, UserId};
use crate::ports::{CacheRead, CacheWrite, ChangeFeed, ChangePublisher, Outbox, RepairBuffer, StoreWrite};
use crate::services::feed::change_of;
use crate::services::outbox::OUTBOX_LEASE_MS;

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
}
