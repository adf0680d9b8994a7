//! The fan-out (DESIGN §12): a feed event's changed users, each one's live
//! watchers, and per connection one coalesced `status` frame (split at
//! 32 KB) of the entries that changed for that viewer. The work grows with
//! the watchers of the changed users, never with all connections.

use std::collections::{BTreeMap, HashMap};

use futures::stream::{self, StreamExt};

use super::{frames, sent_of, token, StreamError, Streamer};
use crate::domain::stream::{ConnectionId, DataKind, Entry};
use crate::domain::{FeedEvent, Millis, UserId};
use crate::ports::{Begin, CacheViews, CacheWrite, FramePoster, StoreRead, StreamRegistry};
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
    /// Connections found gone (`410`) or lapsed, and forgotten.
    pub gone: usize,
    /// Connections whose frames could not all be posted: the fan-out as a
    /// whole fails, and its retry sends what did not go out.
    pub failed: usize,
}

enum Delivered {
    Frames(usize),
    Gone,
    Failed,
}

impl<C, S, R, P> Streamer<C, S, R, P>
where
    C: CacheViews + CacheWrite,
    S: StoreRead,
    R: StreamRegistry,
    P: FramePoster,
{
    /// Sends each connection watching a user of `feed` what changed in its
    /// view, at most `settings.concurrency` connections at a time.
    /// Idempotent: a repeat sends only what differs from what each
    /// connection last got, and never an older state after a newer one.
    /// Errors when the registry or the stores failed before any
    /// connection was served; a connection that failed midway is counted
    /// in [`FanOut::failed`].
    pub async fn fan_out(&self, feed: &FeedEvent, now: Millis) -> Result<FanOut, StreamError> {
        let mut users: Vec<UserId> = feed.feed.iter().map(|change| change.user_id).collect();
        users.sort_unstable();
        users.dedup();
        let mut out = FanOut { users: users.len(), ..FanOut::default() };
        if users.is_empty() {
            return Ok(out);
        }
        let watchers = self.registry.watchers(&users, now).await?;
        let mut by_connection: BTreeMap<ConnectionId, Vec<usize>> = BTreeMap::new();
        for (i, connections) in watchers.into_iter().enumerate() {
            for connection in connections {
                by_connection.entry(connection).or_default().push(i);
            }
        }
        out.connections = by_connection.len();
        if by_connection.is_empty() {
            return Ok(out);
        }
        let watched: Vec<usize> = {
            let mut all: Vec<usize> = by_connection.values().flatten().copied().collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let wanted: Vec<UserId> = watched.iter().map(|i| users[*i]).collect();
        let loaded = self.reader.load_models(&wanted, now).await?;
        let found: HashMap<UserId, &Found> = wanted.iter().copied().zip(loaded.models.iter()).collect();

        let results: Vec<Delivered> = stream::iter(by_connection)
            .map(|(connection, indices)| {
                let mine: Vec<(UserId, &Found)> =
                    indices.iter().filter_map(|i| found.get(&users[*i]).map(|f| (users[*i], *f))).collect();
                async move {
                    match self.deliver(&connection, &mine, now).await {
                        Ok(delivered) => delivered,
                        Err(error) => {
                            tracing::warn!(%error, %connection, "fan-out to a connection failed");
                            Delivered::Failed
                        }
                    }
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        for result in results {
            match result {
                Delivered::Frames(n) => out.frames += n,
                Delivered::Gone => out.gone += 1,
                Delivered::Failed => out.failed += 1,
            }
        }
        Ok(out)
    }

    /// One connection's share of a fan-out, under its lock.
    async fn deliver(
        &self,
        connection: &ConnectionId,
        changed: &[(UserId, &Found)],
        now: Millis,
    ) -> Result<Delivered, StreamError> {
        let users: Vec<UserId> = changed.iter().map(|(user, _)| *user).collect();
        let token = token();
        let state = match self.begin(connection, &token, &users).await? {
            Begin::Ready(state) => state,
            // Lapsed or ended without a `$disconnect`: drop the watches
            // that still name it.
            _ => {
                self.registry.unwatch(connection, &users).await?;
                return Ok(Delivered::Gone);
            }
        };
        let rules = self.reader.rules;
        let mut entries: Vec<(Entry, u64, u64)> = Vec::new();
        for (i, (user, found)) in changed.iter().enumerate() {
            if !state.holds.get(i).copied().unwrap_or(false) {
                continue; // unsubscribed meanwhile
            }
            let entry = Entry::of(*user, &found.model, state.viewer.is(*user), now, &rules);
            let digest = entry.digest();
            let send = match state.sent.get(i).copied().flatten() {
                Some(sent) => sent.digest != digest && sent.is_older_than(found.version, now),
                None => true,
            };
            if send {
                entries.push((entry, digest, found.version));
            }
        }
        if entries.is_empty() {
            self.release(connection, &token, state.viewer).await;
            return Ok(Delivered::Frames(0));
        }
        let texts: Vec<String> = entries.iter().map(|(entry, _, _)| entry.to_json()).collect();
        let outgoing = frames(DataKind::Status, connection, state.seq, &texts, false, now);
        let mut sent = Vec::with_capacity(entries.len());
        for out in &outgoing {
            for k in out.users.clone() {
                let (entry, digest, version) = &entries[k];
                sent.push(sent_of(entry, *digest, out.seq, *version, now));
            }
        }
        let total = outgoing.len();
        let done = self.send(connection, &token, &state, outgoing, sent, Vec::new(), now).await?;
        Ok(if done < total { Delivered::Gone } else { Delivered::Frames(done) })
    }
}
