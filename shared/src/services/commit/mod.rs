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
//! Layout: this module holds the write path's vocabulary (the
//! [`Committer`], what a commit is asked and what it answers); `run` the
//! commit itself, its rounds in order; `steps` each step it takes (load,
//! plan, save round, cache update). The outbox drain is in
//! [`super::outbox`], the push feed in [`super::feed`].

mod run;
mod steps;

use std::time::Duration;

use crate::domain::{ManualTransition, Millis, Rules, Transition, UserId, UserRecord};
use crate::ports::{RepairError, StoreError};

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
