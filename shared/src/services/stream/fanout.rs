//! The fan-out (DESIGN §12): a feed event's changed users, each one's live
//! watchers, and per connection one coalesced `status` frame (split at
//! 32 KB) of the entries that changed for that viewer. The work grows with
//! the watchers of the changed users, never with all connections.
//!
//! Coalescing across invocations: a connection whose last `status` frame
//! went out less than `STREAM_COALESCE_MS` ago is served at the end of
//! that window, from entries read then, so changes committed meanwhile go
//! out in the same frame and a racing fan-out then finds nothing new. A
//! fan-out waits once, for the latest window among its connections, and
//! reads the users once after it; a connection that got a frame from a
//! racing fan-out after that read is served once more after its new window
//! (so at most two waits of `STREAM_COALESCE_MS` per fan-out).
//!
//! Activity: an entry that only moves an online user's `last_active_ms`
//! is held back ([`crate::domain::stream::hold`]) and its user put in the
//! shard's held set, which the scanner feeds back once it is due. So is
//! an entry of a viewer an audience leaves out whose coarse bucket's edge
//! alone moved, until shortly before the edge last sent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::stream::{self, StreamExt};

use super::{StreamError, Streamer};
use crate::domain::stream::ConnectionId;
use crate::domain::{FeedEvent, Millis, UserId};
use crate::ports::{
    CacheAudience, CacheViews, CacheWrite, FramePoster, HeldChanges, StoreAudience, StoreRead, StreamRegistry,
};
use crate::services::read::Found;

/// What one fan-out did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Distinct users in the feed event.
    pub users: usize,
    /// Connections watching them.
    pub connections: usize,
    /// `status` frames posted.
    pub frames: usize,
    /// Entries held back as activity only (DESIGN §12), one per connection
    /// and user.
    pub held: usize,
    /// Connections found gone (`410`) or lapsed, and forgotten.
    pub gone: usize,
    /// Connections whose frames could not all be posted, even when served
    /// again within the fan-out: the fan-out as a whole fails, and its
    /// retry sends what did not go out.
    pub failed: usize,
    /// Attempts that failed to serve a connection which was then served
    /// again within the fan-out (whether that succeeded or not).
    pub retried: usize,
}

enum Delivered {
    /// Frames posted and entries held.
    Frames(usize, usize),
    Gone,
    Failed,
    /// A racing fan-out framed it after this one read the entries: served
    /// again once the window that frame opened (epoch ms) has passed.
    Deferred(Millis),
}

/// Connections by the indices (into the fan-out's users) they watch.
type Watching = BTreeMap<ConnectionId, Vec<usize>>;

/// The pauses before a fan-out serves its failed connections again, within
/// its invocation.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];

/// How long into a fan-out a retry may still start: a retry may wait out a
/// stale lock (11 s), and the function's timeout is 30 s.
const RETRY_WITHIN: Duration = Duration::from_secs(15);

mod batch;

use batch::BATCHES_IN_FLIGHT;
pub use batch::FANOUT_BATCH;

impl<C, S, R, P> Streamer<C, S, R, P>
where
    C: CacheViews + CacheWrite + HeldChanges + CacheAudience,
    S: StoreRead + StoreAudience,
    R: StreamRegistry,
    P: FramePoster,
{
    /// Sends each connection watching a user of `feed` what changed in its
    /// view, in batches of [`FANOUT_BATCH`] connections (docs/DESIGN.md
    /// §12 "Fan-out"), after the connections' coalescing windows. Idempotent: a repeat sends only
    /// what differs from what each connection last got, and never an older
    /// state after a newer one. Errors when the registry or the stores
    /// failed before any connection was served; a connection that failed
    /// midway is counted in [`FanOut::failed`].
    pub async fn fan_out(&self, feed: &FeedEvent, now: Millis) -> Result<FanOut, StreamError> {
        let mut users: Vec<UserId> = feed.feed.iter().map(|change| change.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let mut out = FanOut { users: users.len(), ..FanOut::default() };
        if users.is_empty() {
            return Ok(out);
        }
        let watchers = self.registry.watchers(&users, now).await?;
        let mut by_connection: Watching = BTreeMap::new();
        for (i, connections) in watchers.into_iter().enumerate() {
            for connection in connections {
                by_connection.entry(connection).or_default().push(i);
            }
        }
        out.connections = by_connection.len();
        if by_connection.is_empty() {
            return Ok(out);
        }
        let coalesce = self.settings.coalesce_ms;
        let started = tokio::time::Instant::now();
        let now = if coalesce > 0 {
            let connections: Vec<ConnectionId> = by_connection.keys().cloned().collect();
            let framed = self.registry.framed(&connections).await?;
            self.wait_out(framed.into_iter().max().unwrap_or(0), now).await
        } else {
            now
        };
        let read = self.read_watched(&users, &by_connection, now).await?;
        let deferred = self.serve(&users, &found_in(&read), by_connection, coalesce > 0, now, started, &mut out).await;
        if let Some(window) = deferred.values().map(|(_, framed)| *framed).max() {
            let later = self.wait_out(window, now).await;
            let again: Watching = deferred.into_iter().map(|(c, (indices, _))| (c, indices)).collect();
            let read = self.read_watched(&users, &again, later).await?;
            self.serve(&users, &found_in(&read), again, false, later, started, &mut out).await;
        }
        Ok(out)
    }

    /// Waits until the coalescing window opened at `framed_ms` has passed
    /// (at most `coalesce_ms`); returns the `now` after the wait.
    async fn wait_out(&self, framed_ms: Millis, now: Millis) -> Millis {
        let coalesce = self.settings.coalesce_ms;
        let wait = framed_ms.saturating_add(coalesce).saturating_sub(now).clamp(0, coalesce);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        now.saturating_add(wait)
    }

    /// The users `watching` watches (indices into `users`), read once at
    /// `now`.
    async fn read_watched(
        &self,
        users: &[UserId],
        watching: &Watching,
        now: Millis,
    ) -> Result<Vec<(UserId, Found)>, StreamError> {
        let mut watched: Vec<usize> = watching.values().flatten().copied().collect();
        watched.sort_unstable();
        watched.dedup();
        let wanted: Vec<UserId> = watched.iter().map(|i| users[*i]).collect();
        let loaded = self.reader.load_models(&wanted, now).await?;
        Ok(wanted.into_iter().zip(loaded.models).collect())
    }

    /// Serves each connection of `watching` the entries `found` holds (as
    /// read at `now`), [`FANOUT_BATCH`] connections to a round of registry
    /// calls and two rounds at a time; returns those deferred (with
    /// `defer`) and the window each was found in. A connection that failed
    /// (a post or a registry call) is served again from the same entries
    /// after each of [`RETRY_PAUSES`], while [`RETRY_WITHIN`] of the
    /// fan-out (begun at `started`) has not passed: a state that did not
    /// last still reaches it, where the invocation's own retry, a minute
    /// later, would read a later one. Those still failing are counted in
    /// [`FanOut::failed`].
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        users: &[UserId],
        found: &HashMap<UserId, &Found>,
        watching: Watching,
        defer: bool,
        now: Millis,
        started: tokio::time::Instant,
        out: &mut FanOut,
    ) -> BTreeMap<ConnectionId, (Vec<usize>, Millis)> {
        let mut deferred = BTreeMap::new();
        let mut pending = watching;
        let mut defer = defer;
        for pause in std::iter::once(None).chain(RETRY_PAUSES.iter().map(Some)) {
            if pending.is_empty() {
                break;
            }
            if let Some(pause) = pause {
                if started.elapsed() + *pause > RETRY_WITHIN {
                    break;
                }
                tracing::warn!(connections = pending.len(), "fan-out serves its failed connections again");
                out.retried += pending.len();
                tokio::time::sleep(*pause).await;
            }
            let mut failed = Watching::new();
            for (connection, indices, result) in self.serve_once(users, found, pending, defer, now).await {
                match result {
                    Delivered::Frames(frames, held) => {
                        out.frames += frames;
                        out.held += held;
                    }
                    Delivered::Gone => out.gone += 1,
                    Delivered::Failed => {
                        failed.insert(connection, indices);
                    }
                    Delivered::Deferred(framed) => {
                        deferred.insert(connection, (indices, framed));
                    }
                }
            }
            pending = failed;
            // Served again, a connection is not deferred: what it is sent
            // is weighed against what it was sent meanwhile.
            defer = false;
        }
        out.failed += pending.len();
        deferred
    }

    /// One round of [`Streamer::serve`]: every connection of `watching`
    /// tried once.
    async fn serve_once(
        &self,
        users: &[UserId],
        found: &HashMap<UserId, &Found>,
        watching: Watching,
        defer: bool,
        now: Millis,
    ) -> Vec<(ConnectionId, Vec<usize>, Delivered)> {
        let mut batches: Vec<Vec<(ConnectionId, Vec<usize>)>> = Vec::new();
        let mut watching = watching.into_iter().peekable();
        while watching.peek().is_some() {
            batches.push(watching.by_ref().take(FANOUT_BATCH).collect());
        }
        let results: Vec<Vec<(ConnectionId, Vec<usize>, Delivered)>> = stream::iter(batches)
            .map(|batch| self.deliver_batch(users, found, batch, defer, now))
            .buffer_unordered(BATCHES_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }
}

/// The entries read, by user.
fn found_in(read: &[(UserId, Found)]) -> HashMap<UserId, &Found> {
    read.iter().map(|(user, found)| (*user, found)).collect()
}
