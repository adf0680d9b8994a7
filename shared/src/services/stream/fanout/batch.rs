//! One batch of a fan-out (DESIGN §12 "Fan-out"): up to [`FANOUT_BATCH`]
//! connections locked, planned, numbered, posted to and recorded, each
//! registry step one round trip for the whole batch.

use std::collections::HashMap;

use futures::stream::{self, StreamExt};

use super::super::{
    frames, lock_only, sent_of, token, Outgoing, Streamer, FANOUT_LOCK_WAIT, LOCK_MS, LOCK_PAUSE, STALE_LOCK_PAUSE,
};
use super::Delivered;
use crate::domain::stream::hold::{self, HOLD_SLACK_MS};
use crate::domain::stream::{ConnectionId, DataKind, Entry};
use crate::domain::{AudienceRule, Millis, UserId, ViewerClass};
use crate::ports::{
    Begin, CacheAudience, CacheViews, CacheWrite, ConnectionState, Finish, FramePoster, HeldChanges, PostError, Posted,
    Sent, StoreAudience, StoreRead, StreamRegistry,
};
use crate::services::read::Found;

/// How many connections one round of registry calls serves: their locks
/// taken, `seq`s set and sends recorded as one pipeline per Redis node.
pub const FANOUT_BATCH: usize = 256;

/// How many batches one fan-out serves at once, so that one batch's
/// registry round trips overlap another's posts.
pub(super) const BATCHES_IN_FLIGHT: usize = 2;

/// How long a lock may be held by a live call posting to its connection;
/// after that a fan-out tries less often, for a stale lock running out.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// A connection of a batch whose lock the batch's token holds.
struct Locked<'a> {
    connection: ConnectionId,
    indices: Vec<usize>,
    /// The changed users it was asked about, as the fan-out read them.
    changed: Vec<(UserId, &'a Found)>,
    state: ConnectionState,
}

/// What one connection is sent and what of it is held back.
struct Plan {
    /// Entry, its digest, and the record version it was made from.
    entries: Vec<(Entry, u64, u64)>,
    /// Users held back, with their flush instants (epoch ms).
    held: Vec<(UserId, Millis)>,
    /// For each user held back, what the connection was sent with the
    /// held entry's record version: recorded, so that a fan-out that read
    /// an older state and comes later sends it nothing (docs/DESIGN.md §12
    /// "Activity hold-back").
    raised: Vec<(UserId, Sent)>,
}

/// How one connection's posts went.
struct Posting {
    /// Frames taken, from the first.
    done: usize,
    /// A `410 Gone` answered.
    gone: bool,
    failure: Option<PostError>,
}

impl<C, S, R, P> Streamer<C, S, R, P>
where
    C: CacheViews + CacheWrite + HeldChanges + CacheAudience,
    S: StoreAudience + StoreRead,
    R: StreamRegistry,
    P: FramePoster,
{
    /// One batch of connections, each under its lock: locks taken and
    /// states read in one round trip, then each connection planned, then
    /// `seq`s set in one round trip, the frames posted (at most
    /// `settings.concurrency` connections at a time, each connection's in
    /// order) and what went out recorded in one round trip. A connection
    /// whose lock another call holds is tried again after the others,
    /// until [`FANOUT_LOCK_WAIT`] has passed: past the lock's own life, so
    /// only a live holder that keeps taking it fails the connection.
    pub(super) async fn deliver_batch(
        &self,
        users: &[UserId],
        found: &HashMap<UserId, &Found>,
        batch: Vec<(ConnectionId, Vec<usize>)>,
        defer: bool,
        now: Millis,
    ) -> Vec<(ConnectionId, Vec<usize>, Delivered)> {
        let token = token();
        let mut results = Vec::with_capacity(batch.len());
        let mut pending = batch;
        let started = tokio::time::Instant::now();
        let mut first = true;
        while !pending.is_empty() {
            if !first {
                let waited = started.elapsed();
                if waited >= FANOUT_LOCK_WAIT {
                    break;
                }
                let pause = if waited < STALE_AFTER { LOCK_PAUSE } else { STALE_LOCK_PAUSE };
                tokio::time::sleep(pause).await;
            }
            first = false;
            let changed: Vec<Vec<(UserId, &Found)>> = pending
                .iter()
                .map(|(_, indices)| {
                    indices.iter().filter_map(|i| found.get(&users[*i]).map(|found| (users[*i], *found))).collect()
                })
                .collect();
            let asks: Vec<(ConnectionId, Vec<UserId>)> = pending
                .iter()
                .zip(&changed)
                .map(|((connection, _), mine)| (connection.clone(), mine.iter().map(|(user, _)| *user).collect()))
                .collect();
            let begun = match self.registry.begin_many(&token, LOCK_MS, &asks).await {
                Ok(begun) => begun,
                Err(error) => {
                    tracing::warn!(%error, connections = pending.len(), "fan-out could not lock its connections");
                    // The locks may still be taken once Redis runs the
                    // call: given back behind it.
                    let releases: Vec<Finish> = pending.iter().map(|(connection, _)| lock_only(connection)).collect();
                    self.release_after_failure(&token, &releases).await;
                    results.extend(pending.drain(..).map(|(c, indices)| (c, indices, Delivered::Failed)));
                    break;
                }
            };
            let mut ready = Vec::new();
            let mut busy = Vec::new();
            for ((((connection, indices), (_, mine)), changed), begin) in
                pending.drain(..).zip(asks).zip(changed).zip(begun)
            {
                match begin {
                    Ok(Begin::Ready(state)) => ready.push(Locked { connection, indices, changed, state }),
                    Ok(Begin::Busy) => busy.push((connection, indices)),
                    // Lapsed or ended without a `$disconnect`: drop the
                    // watches that still name it.
                    Ok(Begin::Unknown) => {
                        let delivered = match self.registry.unwatch(&connection, &mine).await {
                            Ok(()) => Delivered::Gone,
                            Err(error) => {
                                tracing::warn!(%error, %connection, "forgetting a gone connection's watches failed");
                                Delivered::Failed
                            }
                        };
                        results.push((connection, indices, delivered));
                    }
                    Err(error) => {
                        tracing::warn!(%error, %connection, "fan-out could not lock a connection");
                        results.push((connection, indices, Delivered::Failed));
                    }
                }
            }
            results.extend(self.deliver_locked(&token, ready, defer, now).await);
            pending = busy;
        }
        for (connection, indices) in pending {
            tracing::warn!(%connection, "fan-out skipped a connection whose lock stayed taken");
            results.push((connection, indices, Delivered::Failed));
        }
        results
    }

    /// The connections of a batch whose locks `token` holds: each one's
    /// entries planned, its frames numbered and posted, and what went out
    /// recorded, every registry step one round trip for all of them.
    async fn deliver_locked(
        &self,
        token: &str,
        ready: Vec<Locked<'_>>,
        defer: bool,
        now: Millis,
    ) -> Vec<(ConnectionId, Vec<usize>, Delivered)> {
        let mut results = Vec::with_capacity(ready.len());
        let mut releases: Vec<Finish> = Vec::new();
        let release = |locked: &Locked<'_>| Finish {
            connection: locked.connection.clone(),
            viewer: locked.state.viewer,
            sent: Vec::new(),
            keep_until_ms: 0,
        };
        // With `defer`, a connection framed less than `STREAM_COALESCE_MS`
        // before `now` is left for later.
        let mut planning = Vec::with_capacity(ready.len());
        for locked in ready {
            if defer && locked.state.framed_ms.saturating_add(self.settings.coalesce_ms) > now {
                releases.push(release(&locked));
                let framed = locked.state.framed_ms;
                results.push((locked.connection, locked.indices, Delivered::Deferred(framed)));
            } else {
                planning.push(locked);
            }
        }
        // The audiences of DESIGN §13, for each connection's viewer: a
        // viewer whose view a new rule changes gets the entry now visible
        // to them, as any changed entry. Lists asked of in one round trip.
        let ids: Vec<Vec<UserId>> =
            planning.iter().map(|locked| locked.changed.iter().map(|(user, _)| *user).collect()).collect();
        let audiences: Vec<Vec<AudienceRule>> = planning
            .iter()
            .map(|locked| locked.changed.iter().map(|(_, found)| found.model.audience).collect())
            .collect();
        let asks: Vec<(&[UserId], &[AudienceRule], Option<UserId>)> = planning
            .iter()
            .zip(ids.iter().zip(&audiences))
            .map(|(locked, (ids, rules))| (ids.as_slice(), rules.as_slice(), locked.state.viewer.reader()))
            .collect();
        let allowed = self.reader.allowed_each(&asks, true).await;
        let plans: Vec<Plan> =
            planning.iter().zip(&allowed).map(|(locked, allowed)| self.plan(locked, allowed, now)).collect();

        // Held entries before anything goes out: a call that dies later is
        // retried and holds again; the scanner feeds the users back when due.
        let held: Vec<(UserId, Millis)> = plans.iter().flat_map(|plan| plan.held.iter().copied()).collect();
        let held_failed = if held.is_empty() {
            None
        } else {
            self.reader.cache.hold(&held, now.saturating_add(HOLD_SLACK_MS)).await.err()
        };
        if let Some(error) = &held_failed {
            tracing::warn!(%error, "fan-out could not hold back activity");
        }
        let mut sending: Vec<(Locked<'_>, Plan, Vec<Outgoing>)> = Vec::new();
        for (locked, plan) in planning.into_iter().zip(plans) {
            if held_failed.is_some() && !plan.held.is_empty() {
                releases.push(release(&locked));
                results.push((locked.connection, locked.indices, Delivered::Failed));
            } else if plan.entries.is_empty() {
                let keep_until_ms = self.sent_kept_until(&locked.state);
                releases.push(Finish { sent: plan.raised.clone(), keep_until_ms, ..release(&locked) });
                let held = plan.held.len();
                results.push((locked.connection, locked.indices, Delivered::Frames(0, held)));
            } else {
                let texts: Vec<String> = plan.entries.iter().map(|(entry, _, _)| entry.to_json()).collect();
                let outgoing = frames(DataKind::Status, &locked.connection, locked.state.seq, &texts, false, now);
                sending.push((locked, plan, outgoing));
            }
        }
        if !releases.is_empty() {
            if let Err(error) = self.registry.finish_many(token, &releases).await {
                tracing::warn!(%error, "stream locks not given back; they run out");
            }
        }
        if sending.is_empty() {
            return results;
        }

        let seqs: Vec<(ConnectionId, u64, Option<Millis>)> = sending
            .iter()
            .map(|(locked, _, outgoing)| {
                (locked.connection.clone(), outgoing.last().map_or(locked.state.seq, |f| f.seq), Some(now))
            })
            .collect();
        if let Err(error) = self.registry.set_seq_many(&seqs).await {
            tracing::warn!(%error, connections = sending.len(), "fan-out could not number its frames");
            let releases: Vec<Finish> = sending.iter().map(|(locked, _, _)| release(locked)).collect();
            if let Err(error) = self.registry.finish_many(token, &releases).await {
                tracing::warn!(%error, "stream locks not given back; they run out");
            }
            results.extend(sending.into_iter().map(|(l, _, _)| (l.connection, l.indices, Delivered::Failed)));
            return results;
        }

        // Each connection is recorded as sent as soon as its posts end, in
        // one round trip for all that ended meanwhile: a slow connection
        // neither delays the others' records nor, if the call dies while
        // it waits, makes them be sent again. The futures are made before
        // the stream, not by a closure over borrowed items inside it,
        // which the compiler cannot prove `Send` for every lifetime.
        let posts: Vec<_> = sending
            .iter()
            .enumerate()
            .map(|(k, (locked, _, outgoing))| async move { (k, self.post_all(&locked.connection, outgoing).await) })
            .collect();
        let mut posted: Vec<Option<(Posting, bool)>> = (0..sending.len()).map(|_| None).collect();
        let mut ended =
            stream::iter(posts).buffer_unordered(self.settings.concurrency.max(1)).ready_chunks(FANOUT_BATCH);
        while let Some(chunk) = ended.next().await {
            let records: Vec<Finish> =
                chunk.iter().map(|(k, posting)| self.record(&sending[*k], posting, now)).collect();
            let recorded = self.registry.finish_many(token, &records).await;
            if let Err(error) = &recorded {
                tracing::warn!(%error, connections = records.len(), "fan-out could not record what it sent");
            }
            for (k, posting) in chunk {
                if let Some(slot) = posted.get_mut(k) {
                    *slot = Some((posting, recorded.is_ok()));
                }
            }
        }
        drop(ended);
        for ((locked, plan, outgoing), posting) in sending.into_iter().zip(posted) {
            let delivered = match posting {
                None => Delivered::Failed,
                Some((posting, _)) if posting.gone => match self.disconnect(&locked.connection, now).await {
                    Ok(()) => Delivered::Gone,
                    Err(error) => {
                        tracing::warn!(%error, connection = %locked.connection, "forgetting a gone connection failed");
                        Delivered::Failed
                    }
                },
                Some((Posting { failure: Some(error), .. }, _)) => {
                    tracing::warn!(%error, connection = %locked.connection, "fan-out to a connection failed");
                    Delivered::Failed
                }
                Some((_, false)) => Delivered::Failed,
                Some((posting, true)) if posting.done < outgoing.len() => Delivered::Gone,
                Some((posting, true)) => Delivered::Frames(posting.done, plan.held.len()),
            };
            results.push((locked.connection, locked.indices, delivered));
        }
        results
    }

    /// What went out to one locked connection, as its `finish` records it:
    /// the entries of the frames taken (none once it answered `410`).
    fn record(
        &self,
        (locked, plan, outgoing): &(Locked<'_>, Plan, Vec<Outgoing>),
        posting: &Posting,
        now: Millis,
    ) -> Finish {
        let mut sent = Vec::new();
        if !posting.gone {
            for frame in outgoing.iter().take(posting.done) {
                for k in frame.users.clone() {
                    let (entry, digest, version) = &plan.entries[k];
                    sent.push(sent_of(entry, *digest, frame.seq, *version, now));
                }
            }
            sent.extend(plan.raised.iter().copied());
        }
        let keep_until_ms = self.sent_kept_until(&locked.state);
        Finish { connection: locked.connection.clone(), viewer: locked.state.viewer, sent, keep_until_ms }
    }

    /// Posts `outgoing` to `connection` in order, stopping at the first
    /// frame that is not taken.
    async fn post_all(&self, connection: &ConnectionId, outgoing: &[Outgoing]) -> Posting {
        let mut posting = Posting { done: 0, gone: false, failure: None };
        for frame in outgoing {
            match self.poster.post(connection, &frame.text).await {
                Ok(Posted::Sent) => posting.done += 1,
                Ok(Posted::Gone) => {
                    posting.gone = true;
                    break;
                }
                Err(error) => {
                    posting.failure = Some(error);
                    break;
                }
            }
        }
        posting
    }

    /// What a locked connection is sent of the changed users it holds, and
    /// which of them are held back (DESIGN §12 "Activity of an online
    /// user"): only entries that differ from what it was last sent and are
    /// not older.
    fn plan(&self, locked: &Locked<'_>, allowed: &[bool], now: Millis) -> Plan {
        let rules = self.reader.rules;
        let refresh = self.settings.activity_refresh_ms;
        let reader = locked.state.viewer.reader();
        let mut plan = Plan { entries: Vec::new(), held: Vec::new(), raised: Vec::new() };
        for (i, (user, found)) in locked.changed.iter().enumerate() {
            if !locked.state.holds.get(i).copied().unwrap_or(false) {
                continue; // unsubscribed meanwhile
            }
            let allowed = allowed.get(i).copied().unwrap_or(false);
            let viewer = ViewerClass::of(*user, reader);
            let entry = Entry::for_viewer(*user, &found.model, viewer, allowed, now, &rules);
            let digest = entry.digest();
            let sent = locked.state.sent.get(i).copied().flatten();
            let newer = match sent {
                Some(sent) => sent.digest != digest && sent.is_older_than(found.version, now),
                None => true,
            };
            if !newer {
                continue;
            }
            let shown = sent.and_then(|s| s.shown());
            // A viewer the audience leaves out is not told of activity by
            // the edge of their coarse bucket moving (DESIGN §12, §13).
            let holds = if allowed {
                hold::hold(entry.shape(), entry.is_online(), shown.as_ref(), now, refresh)
            } else {
                hold::hold_left_out(entry.shape(), shown.as_ref(), now)
            };
            match (holds, sent) {
                // Not recorded as sent (a resume's delta carries it), but
                // its version is: what was shown is now known to be no
                // older than it.
                (Some(flush_at), Some(sent)) => {
                    plan.held.push((*user, flush_at));
                    plan.raised.push((*user, Sent { version: sent.version.max(found.version), ..sent }));
                }
                _ => plan.entries.push((entry, digest, found.version)),
            }
        }
        plan
    }
}
