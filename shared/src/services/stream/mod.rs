//! Live status over WebSocket (DESIGN §12), generic over its ports: the
//! connection's life ([`Streamer::connect`], [`Streamer::disconnect`]),
//! the client messages ([`Streamer::message`], in [`session`]) and the
//! fan-out of changes ([`Streamer::fan_out`], in [`fanout`]).
//!
//! Every data frame of one connection is numbered and posted under the
//! connection's lock in the registry ([`StreamRegistry::begin`]): the
//! `seq` is written before the posts and what was sent after them, so
//! `seq` runs gap-free and in order, and a call that dies midway is
//! repeated by its caller and sends only what had not gone out.

pub mod fanout;
mod session;

use std::time::Duration;

use crate::domain::stream::{frame, ConnectionId, Cursor, DataKind, Entry, Viewer, CONNECTION_LAPSE_MS};
use crate::domain::{Millis, UserId};
use crate::ports::{
    Begin, CacheAudience, CacheError, CacheViews, CacheWrite, ConnectionState, Finish, FramePoster, HeldChanges,
    PostError, Posted, Sent, StoreAudience, StoreRead, StreamRegistry,
};
use crate::services::read::{ReadError, Reader};

pub use session::{Resumed, Subscribed};

/// How long a connection's lock is held at most (ms): longer than any
/// call's posts, short enough that a call that died frees it soon.
pub const LOCK_MS: i64 = 10_000;

/// How long a client message waits for another call to free a
/// connection's lock, in tries and the pause between them: 3 s in all,
/// then the client is answered `unavailable` and sends it again.
const LOCK_TRIES: u32 = 150;
const LOCK_PAUSE: Duration = Duration::from_millis(20);

/// How long a fan-out waits for a connection's lock (ms): past
/// [`LOCK_MS`], so that a lock whose holder died, or one a frozen Redis
/// took for a caller that had already given up, runs out first. A change
/// is then sent as the fan-out read it, rather than failed over to a
/// retry minutes later that would read a later state and skip it
/// (docs/DESIGN.md §12 "Order and seq").
const FANOUT_LOCK_WAIT: Duration = Duration::from_millis(LOCK_MS as u64 + 1_000);

/// The pause between a fan-out's tries for a lock once the first 3 s have
/// passed: a lock held that long is a stale one, running out.
const STALE_LOCK_PAUSE: Duration = Duration::from_millis(100);

/// The settings of the stream (DESIGN §11, §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// `STREAM_MAX_IDS`.
    pub max_ids: usize,
    /// `STREAM_CURSOR_RETENTION_S`, in ms.
    pub cursor_retention_ms: i64,
    /// How many connections of one fan-out batch are posted to at once.
    pub concurrency: usize,
    /// `STREAM_COALESCE_MS`: one connection's `status` frames are at least
    /// this far apart, changes meanwhile going out together (0: no wait).
    pub coalesce_ms: i64,
    /// `STREAM_ACTIVITY_REFRESH_MS`: the least time between two frames of
    /// one user to one connection that only move `last_active_ms` (0:
    /// every change is sent).
    pub activity_refresh_ms: i64,
}

/// Why a stream call failed: its caller answers an error (a message) or
/// is retried (a fan-out).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Registry(#[from] CacheError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Post(#[from] PostError),
    #[error("connection {0}'s lock stayed taken")]
    Busy(String),
}

impl StreamError {
    /// A store that did not answer, or a lock that stayed taken: the same
    /// message may succeed when sent again. A failed post is not: the
    /// client could not be told.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Post(_))
    }
}

/// The stream service over its ports.
#[derive(Clone)]
pub struct Streamer<C, S, R, P> {
    /// Must read from the primaries: a watch is added before the entries
    /// are read, so that no change falls between the two.
    pub reader: Reader<C, S>,
    pub registry: R,
    pub poster: P,
    pub settings: StreamSettings,
}

/// A data frame about to go out, with the entries it carries.
struct Outgoing {
    seq: u64,
    text: String,
    users: std::ops::Range<usize>,
}

impl<C, S, R, P> Streamer<C, S, R, P>
where
    C: CacheViews + CacheWrite + HeldChanges + CacheAudience,
    S: StoreRead + StoreAudience,
    R: StreamRegistry,
    P: FramePoster,
{
    /// `$connect`: registers the connection for `viewer` until 2 h 15 min
    /// from `now`.
    pub async fn connect(&self, connection: &ConnectionId, viewer: Viewer, now: Millis) -> Result<(), StreamError> {
        Ok(self.registry.connect(connection, viewer, now.saturating_add(CONNECTION_LAPSE_MS)).await?)
    }

    /// `$disconnect` (and the first `410 Gone`): forgets the connection,
    /// keeping what it was sent for the cursor retention.
    pub async fn disconnect(&self, connection: &ConnectionId, now: Millis) -> Result<(), StreamError> {
        let keep = now.saturating_add(self.settings.cursor_retention_ms);
        Ok(self.registry.disconnect(connection, keep).await?)
    }

    /// Takes `connection`'s lock, waiting for another call to give it back.
    /// A `begin` that failed may still run later (Redis frozen, its answer
    /// lost), leaving the lock taken for nobody: it is given back at once,
    /// best effort, and the release sent behind it.
    async fn begin(&self, connection: &ConnectionId, token: &str, users: &[UserId]) -> Result<Begin, StreamError> {
        for _ in 0..LOCK_TRIES {
            match self.registry.begin(connection, token, LOCK_MS, users).await {
                Ok(Begin::Busy) => tokio::time::sleep(LOCK_PAUSE).await,
                Ok(other) => return Ok(other),
                Err(error) => {
                    self.release_after_failure(token, &[lock_only(connection)]).await;
                    return Err(error.into());
                }
            }
        }
        Err(StreamError::Busy(connection.to_string()))
    }

    /// Sends the release of `token`'s locks on `releases`' connections
    /// after a `begin` that failed, without waiting for the answer beyond
    /// [`RELEASE_SEND`]: Redis runs it after the `begin`, if that ever runs,
    /// on the same connection (`FINISH_SCRIPT` deletes a lock only if
    /// `token` holds it).
    async fn release_after_failure(&self, token: &str, releases: &[Finish]) {
        let sent = tokio::time::timeout(RELEASE_SEND, self.registry.finish_many(token, releases)).await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!(
                connections = releases.len(),
                "locks a failed begin may take were released unconfirmed; at worst they run out"
            );
        }
    }

    /// Numbers `frames` after the connection's `seq`, posts them in order
    /// and records, for each entry of a frame that went out, what was sent
    /// (`sent` holds them in entry order, without the `seq`), then gives the
    /// lock back. `framed_ms` is set for `status` frames: it opens the
    /// connection's coalescing window. A `410` forgets the connection.
    /// Returns the frames sent.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        connection: &ConnectionId,
        token: &str,
        state: &ConnectionState,
        frames: Vec<Outgoing>,
        sent: Vec<(UserId, Sent)>,
        also: Vec<(UserId, Sent)>,
        framed_ms: Option<Millis>,
        now: Millis,
    ) -> Result<usize, StreamError> {
        let last = frames.last().map_or(state.seq, |f| f.seq);
        if last != state.seq {
            if let Err(error) = self.registry.set_seq(connection, last, framed_ms).await {
                // It may have been applied with its answer lost: nothing
                // went out, so the numbers go back.
                self.take_back(connection, last, state.seq).await;
                self.release(connection, token, state.viewer).await;
                return Err(error.into());
            }
        }
        let mut done = 0usize;
        let mut reached = 0usize;
        let mut failure = None;
        for outgoing in &frames {
            match self.poster.post(connection, &outgoing.text).await {
                Ok(Posted::Sent) => {
                    done += 1;
                    reached = outgoing.users.end;
                }
                Ok(Posted::Gone) => {
                    self.release(connection, token, state.viewer).await;
                    self.disconnect(connection, now).await?;
                    return Ok(done);
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let mut record: Vec<(UserId, Sent)> = sent.into_iter().take(reached).collect();
        if failure.is_none() {
            record.extend(also);
        } else {
            // The frame whose post failed may have arrived; the numbers
            // after it were never used and go back, so the next frame
            // follows (DESIGN §12: `seq` gap-free).
            self.take_back(connection, last, state.seq.saturating_add(done as u64 + 1)).await;
        }
        let keep = self.sent_kept_until(state);
        let recorded = self.registry.finish(connection, token, state.viewer, &record, keep).await;
        match (failure, recorded) {
            (Some(error), _) => Err(error.into()),
            (None, Err(error)) if done == 0 => Err(error.into()),
            // Every frame went out: the client has its answer. What was
            // not recorded is sent again by a resume's delta, and the
            // lock runs out.
            (None, Err(error)) => {
                tracing::warn!(%error, %connection, "an answer went out but was not recorded; a resume repeats it");
                Ok(done)
            }
            (None, Ok(())) => Ok(done),
        }
    }

    /// Until when what a live connection was sent is kept (epoch ms): its
    /// lapse plus the cursor retention (DESIGN §12).
    fn sent_kept_until(&self, state: &ConnectionState) -> Millis {
        state.lapse_ms.saturating_add(self.settings.cursor_retention_ms)
    }

    /// Takes back the frame numbers after `used` when the connection's
    /// `seq` is still `reserved` (numbers allocated for frames that did not
    /// go out); a failure leaves the gap, which a client resumes across.
    async fn take_back(&self, connection: &ConnectionId, reserved: u64, used: u64) {
        if used >= reserved {
            return;
        }
        if let Err(error) = self.registry.take_back_seq(connection, reserved, used).await {
            tracing::warn!(%error, %connection, "unused frame numbers not taken back; the client resumes across the gap");
        }
    }

    /// Gives the lock back without recording anything; a failure only
    /// leaves the lock to run out.
    async fn release(&self, connection: &ConnectionId, token: &str, viewer: Viewer) {
        if let Err(error) = self.registry.finish(connection, token, viewer, &[], 0).await {
            tracing::warn!(%error, %connection, "stream lock not given back; it runs out");
        }
    }
}

/// How long a release after a failed `begin` is waited for: long enough
/// for the command to be written, not for a frozen Redis to answer it.
const RELEASE_SEND: Duration = Duration::from_millis(50);

/// A [`Finish`] that records nothing and only gives `connection`'s lock
/// back (the viewer is written only with something sent).
fn lock_only(connection: &ConnectionId) -> Finish {
    Finish { connection: connection.clone(), viewer: Viewer::Service, sent: Vec::new(), keep_until_ms: 0 }
}

/// A fresh lock token.
fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `entries` as data frames of `kind` numbered from `after + 1`: snapshot
/// and delta always at least one frame, with `part`/`parts` and the cursor
/// on the last; status frames each with their own cursor.
fn frames(
    kind: DataKind,
    connection: &ConnectionId,
    after: u64,
    entries: &[String],
    reset: bool,
    now: Millis,
) -> Vec<Outgoing> {
    let mut groups = frame::split(entries);
    if groups.is_empty() && kind != DataKind::Status {
        groups.push(0..0);
    }
    let parts = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, users)| {
            let seq = after.saturating_add(i as u64 + 1);
            let last = i + 1 == parts;
            let cursor = (kind == DataKind::Status || last)
                .then(|| Cursor { connection: connection.clone(), seq, issued_ms: now }.encode());
            let part = (kind != DataKind::Status).then_some((i + 1, parts));
            let text = frame::data(kind, seq, &entries[users.clone()], cursor.as_deref(), part, reset);
            Outgoing { seq, text, users }
        })
        .collect()
}

/// What was sent of `entry` in frame `seq`.
fn sent_of(entry: &Entry, digest: u64, seq: u64, version: u64, now: Millis) -> (UserId, Sent) {
    let next_at = entry.next.as_ref().map(|next| next.at_ms);
    (entry.user_id, Sent { seq, version, at_ms: now, digest, shape: Some(entry.shape()), next_at })
}
