//! The ports of live status over WebSocket (DESIGN §12): the connection
//! registry and the poster of frames.

use std::future::Future;

use super::error::{CacheError, Cause};
use crate::domain::stream::hold::Shown;
use crate::domain::stream::{ConnectionId, Viewer};
use crate::domain::{Millis, UserId};

/// What a connection was last sent of one user: enough to tell whether a
/// new entry differs (`digest`), whether it is older than what went out
/// (`version`, then `at_ms`), and whether a cursor covers it (`seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The data frame that carried it.
    pub seq: u64,
    /// The record version the entry was made from (`v`, §5), or, once a
    /// newer entry of the same shape was held back (DESIGN §12 "Activity
    /// hold-back"), that entry's: what was shown is then no older than it,
    /// and a fan-out that read an earlier version sends nothing.
    pub version: u64,
    /// The `now` the entry was made at (epoch ms).
    pub at_ms: Millis,
    /// [`crate::domain::stream::Entry::digest`].
    pub digest: u64,
    /// [`crate::domain::stream::Entry::shape`]; `None` in what an earlier
    /// release stored, which then is never held against.
    pub shape: Option<u64>,
    /// The `next.at_ms` the entry carried (`None`: `"next": null`).
    pub next_at: Option<Millis>,
}

impl Sent {
    /// Whether an entry made from `version` at `at_ms` is newer than this
    /// one: a greater version, or the same version later (time alone moves
    /// an entry, DESIGN §12 `next`). Never send an older state after a
    /// newer one.
    pub fn is_older_than(&self, version: u64, at_ms: Millis) -> bool {
        (self.version, self.at_ms) < (version, at_ms)
    }

    /// What a held change is weighed against (DESIGN §12), or `None` when
    /// the stored form predates holding.
    pub fn shown(&self) -> Option<Shown> {
        Some(Shown { at_ms: self.at_ms, shape: self.shape?, next_at: self.next_at })
    }
}

/// A live connection as the registry holds it, read under its lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionState {
    pub viewer: Viewer,
    /// When its registrations lapse (epoch ms): `$connect` + 2 h 15 min.
    pub lapse_ms: Millis,
    /// The `seq` of the last data frame numbered (0 before the first).
    pub seq: u64,
    /// When its last `status` frame was numbered (epoch ms; 0 before the
    /// first): where its `STREAM_COALESCE_MS` window starts.
    pub framed_ms: Millis,
    /// How many distinct ids it holds.
    pub held: usize,
    /// For each user asked about: whether the connection holds it.
    pub holds: Vec<bool>,
    /// For each user asked about: what it was last sent, if anything.
    pub sent: Vec<Option<Sent>>,
}

/// What an earlier connection was sent ([`StreamRegistry::sent_by`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentBy {
    /// Who held it: a cursor resumes only for the same viewer.
    pub viewer: Viewer,
    /// The highest `seq` of a data frame it recorded as sent; a cursor
    /// naming a later one was not issued as it reads (DESIGN §12: a
    /// reset). `None` for a state an earlier release wrote.
    pub last_seq: Option<u64>,
    /// For each user asked about: what it was last sent, if anything.
    pub sent: Vec<Option<Sent>>,
}

/// What one connection's [`StreamRegistry::finish`] records: `sent` (none
/// to only give the lock back), kept until `keep_until_ms` (epoch ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub connection: ConnectionId,
    pub viewer: Viewer,
    pub sent: Vec<(UserId, Sent)>,
    pub keep_until_ms: Millis,
}

/// The outcome of [`StreamRegistry::begin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The lock is taken; here is the connection.
    Ready(ConnectionState),
    /// Another call holds the connection's lock.
    Busy,
    /// No such live connection (never connected, ended, or lapsed).
    Unknown,
}

/// The connection registry (DESIGN §12): who watches whom, and what each
/// connection was sent. Everything of one connection lives in one Redis
/// Cluster slot; each watched user's watchers, in the user's slot.
pub trait StreamRegistry: Send + Sync {
    /// Registers a connection at `$connect` for `viewer`, lapsing at
    /// `lapse_ms`. Replaces any earlier state under the same id.
    fn connect(
        &self,
        connection: &ConnectionId,
        viewer: Viewer,
        lapse_ms: Millis,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Forgets a connection (`$disconnect`, a `410 Gone`): its ids, its
    /// place among each watched user's watchers and its identity; its sent
    /// state stays until `keep_until_ms`, so a resume from its cursor is
    /// exact, for the newest `KEPT_ENDED_PER_VIEWER` (16) ended
    /// connections of its end user (DESIGN §12 "Kept after the end"): an
    /// older one's goes now. Idempotent.
    fn disconnect(
        &self,
        connection: &ConnectionId,
        keep_until_ms: Millis,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Whether the registry knows `connection` as live (registered, not
    /// ended, not lapsed), read without its lock in one round trip: what
    /// a `ping` asks (DESIGN §12 "State and loss").
    fn is_connected(&self, connection: &ConnectionId) -> impl Future<Output = Result<bool, CacheError>> + Send;

    /// Takes the connection's lock under `token` for `ttl_ms` and, in the
    /// same round trip, reads its state and what it holds and was sent of
    /// `users`. The lock serializes everything that numbers frames on one
    /// connection, so `seq` runs gap-free and in order. A lock `token`
    /// already holds is taken again (a repeated call after a dropped
    /// connection is not kept waiting on itself).
    fn begin(
        &self,
        connection: &ConnectionId,
        token: &str,
        ttl_ms: i64,
        users: &[UserId],
    ) -> impl Future<Output = Result<Begin, CacheError>> + Send {
        async move {
            let asks = [(connection.clone(), users.to_vec())];
            let mut begun = self.begin_many(token, ttl_ms, &asks).await?;
            begun.pop().unwrap_or_else(|| Err(CacheError::Corrupt("stream registry: begin answered nothing".into())))
        }
    }

    /// [`StreamRegistry::begin`] for each `(connection, users)` of `asks`,
    /// all under `token`, in one round trip per node: one answer per ask,
    /// in order, each its own success or refusal. Errors only when the
    /// round trip as a whole failed.
    fn begin_many(
        &self,
        token: &str,
        ttl_ms: i64,
        asks: &[(ConnectionId, Vec<UserId>)],
    ) -> impl Future<Output = Result<Vec<Result<Begin, CacheError>>, CacheError>> + Send;

    /// Sets the connection's `seq` (numbers allocated before posting) and,
    /// for `status` frames, `framed_ms`, the start of its coalescing window.
    fn set_seq(
        &self,
        connection: &ConnectionId,
        seq: u64,
        framed_ms: Option<Millis>,
    ) -> impl Future<Output = Result<(), CacheError>> + Send {
        async move { self.set_seq_many(&[(connection.clone(), seq, framed_ms)]).await }
    }

    /// Sets the connection's `seq` back to `used` if it is still
    /// `reserved`: numbers allocated by [`StreamRegistry::set_seq`] for
    /// frames that never went out, taken back so that `seq` stays
    /// gap-free (DESIGN §12). Errors when the registry failed.
    fn take_back_seq(
        &self,
        connection: &ConnectionId,
        reserved: u64,
        used: u64,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// [`StreamRegistry::set_seq`] for each `(connection, seq, framed_ms)`,
    /// in one round trip per node.
    fn set_seq_many(
        &self,
        seqs: &[(ConnectionId, u64, Option<Millis>)],
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// When each of `connections` last had a `status` frame numbered
    /// ([`ConnectionState::framed_ms`]; 0 when never or unknown), read
    /// without their locks in one round trip per node.
    fn framed(&self, connections: &[ConnectionId]) -> impl Future<Output = Result<Vec<Millis>, CacheError>> + Send;

    /// Records what was sent (after posting), keeping it until
    /// `keep_until_ms`, and gives the lock back if `token` still holds it.
    fn finish(
        &self,
        connection: &ConnectionId,
        token: &str,
        viewer: Viewer,
        sent: &[(UserId, Sent)],
        keep_until_ms: Millis,
    ) -> impl Future<Output = Result<(), CacheError>> + Send {
        async move {
            let record = Finish { connection: connection.clone(), viewer, sent: sent.to_vec(), keep_until_ms };
            self.finish_many(token, std::slice::from_ref(&record)).await
        }
    }

    /// [`StreamRegistry::finish`] for each of `records`, all under `token`,
    /// in one round trip per node.
    fn finish_many(&self, token: &str, records: &[Finish]) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Adds `users` to the connection's ids and the connection to each
    /// one's watchers, scored by `lapse_ms`.
    fn watch(
        &self,
        connection: &ConnectionId,
        users: &[UserId],
        lapse_ms: Millis,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Removes `users` from the connection's ids and it from their watchers.
    fn unwatch(
        &self,
        connection: &ConnectionId,
        users: &[UserId],
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// The live watchers of each of `users` at `now` (one round trip);
    /// lapsed ones are left out and trimmed.
    fn watchers(
        &self,
        users: &[UserId],
        now: Millis,
    ) -> impl Future<Output = Result<Vec<Vec<ConnectionId>>, CacheError>> + Send;

    /// What an earlier (possibly ended) connection was sent of `users`, and
    /// its viewer: what a resume from its cursor compares with. `None` when
    /// the registry no longer knows it.
    fn sent_by(
        &self,
        connection: &ConnectionId,
        users: &[UserId],
    ) -> impl Future<Output = Result<Option<SentBy>, CacheError>> + Send;
}

/// The users with held-back activity (DESIGN §12 "Activity of an online
/// user"), per shard, each scored by the instant its held change must be
/// flushed: the fan-out holds, the shard's scanner feeds the due ones to
/// the stream function and then lets them go.
pub trait HeldChanges: Send + Sync {
    /// Holds each `(user, flush_at_ms)` in its shard's set, as written at
    /// `now`: an earlier flush instant wins, and one that has already come
    /// is replaced, so a scanner working from it leaves the new one in.
    fn hold(&self, users: &[(UserId, Millis)], now: Millis) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Up to `limit` users of `shard` whose flush instant is at or before
    /// `now`, with the score read (one round trip).
    fn held_due(
        &self,
        shard: u32,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(UserId, f64)>, CacheError>> + Send;

    /// Lets go of each `(user, score)` whose score is still the one read.
    fn release_held(&self, shard: u32, users: &[(UserId, f64)]) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// What became of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// API Gateway took it for the client.
    Sent,
    /// The connection is gone (`410 Gone`): forget it.
    Gone,
}

/// Why a frame could not be posted (after the SDK's retries).
#[derive(Debug, thiserror::Error)]
#[error("posting a frame failed: {context}{}", super::error::describe_cause(.source.as_deref()))]
pub struct PostError {
    pub context: String,
    #[source]
    pub source: Option<Cause>,
}

impl PostError {
    pub fn new(context: impl Into<String>) -> Self {
        Self { context: context.into(), source: None }
    }

    pub fn caused_by(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self { context: context.into(), source: Some(source.into()) }
    }
}

/// Posts frames to WebSocket connections (API Gateway's
/// `PostToConnection`, DESIGN §12).
pub trait FramePoster: Send + Sync {
    /// Posts one text frame (at most 32,768 bytes) to `connection`.
    fn post(&self, connection: &ConnectionId, frame: &str) -> impl Future<Output = Result<Posted, PostError>> + Send;

    /// Closes `connection` (`DeleteConnection`; API Gateway then sends
    /// `$disconnect`). One already gone (`410`) counts as closed. Errors
    /// when the management API failed.
    fn close(&self, connection: &ConnectionId) -> impl Future<Output = Result<(), PostError>> + Send;
}
