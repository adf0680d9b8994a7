//! The small traits the services depend on, one capability each, so a
//! function links (and its IAM policy grants) only what it uses, and pure
//! service tests can pass in-memory fakes.
//!
//! Layout: this module lists the capabilities of the stores, the cache and
//! the bus; `error` holds the ports' errors; `feed` the push feed,
//! `dead_letter` the table of malformed records, and `stream` the live
//! status registry and frame poster (DESIGN §12). Every item is re-exported
//! here, so a user names `crate::ports::X` whatever file holds it.

use std::collections::HashMap;
use std::future::Future;

use crate::domain::{Millis, OutboxEvent, ReadModel, UserId, UserRecord};

mod audience;
mod dead_letter;
mod error;
mod feed;
mod stream;
pub use audience::{CacheAudience, ListAsk, Listed, StoreAudience};
pub use dead_letter::{DeadLetter, DeadLetters, DEAD_LETTER_USERS_MAX};
pub use error::{CacheError, Cause, PublishError, RepairError, StoreError};
pub use feed::{ChangeFeed, FeedError};
pub use stream::{
    Begin, ConnectionState, Finish, FramePoster, HeldChanges, PostError, Posted, Sent, SentBy, StreamRegistry,
};

/// A user as the cache holds it: the record, plus the contract's
/// `status:visible:{id}` flag, which readers honour even if the record
/// disagrees (a hidden flag always wins, so visibility never leaks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    /// `None` on a miss: the hash is absent (never written, expired after a
    /// backfill, or flushed) and the caller must ask SQL.
    pub record: Option<UserRecord>,
    /// The flag has no TTL, so it can outlive a backfilled hash.
    pub visible_flag: Option<bool>,
}

/// What the cache holds of a user for the read path (DESIGN §10's hot
/// read): the read model written with the record, or, for a record written
/// before read models existed (or whose model this release cannot read),
/// the whole record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HotCopy {
    /// Answers [`ReadModel::view_for`] exactly as the record would.
    ReadModel(ReadModel),
    /// Answers through the full derivation, [`crate::domain::UserState::view_for`].
    Record(UserRecord),
}

/// A user as the read path gets it from the cache: the hot copy and the
/// contract's `status:visible:{id}` flag, which readers honour as with
/// [`Cached`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedView {
    /// `None` on a miss (as [`Cached::record`]): the caller must ask SQL.
    pub copy: Option<HotCopy>,
    /// The flag has no TTL, so it can outlive a backfilled hash.
    pub visible_flag: Option<bool>,
    /// The copy's record version (`v`, §5), read with it; 0 on a miss.
    /// The push path (DESIGN §12) orders what it sends by it.
    pub version: u64,
}

/// A record to write, with the time it was derived at (the stored `status`
/// and `device_count` are derived at the wall-clock time of the write).
#[derive(Clone, Debug)]
pub struct Write<'a> {
    pub user: UserId,
    pub record: &'a UserRecord,
    /// When the scanner should next look at the user (epoch ms), if ever;
    /// normally [`crate::domain::schedule::next_due`].
    pub next_change_ms: Option<Millis>,
    /// Whether this write may turn a stored hidden preference visible: only
    /// the visibility route's "show" may (DESIGN §4 property 4). Every other
    /// write keeps a hide it finds in either store.
    pub shows: bool,
}

impl<'a> Write<'a> {
    /// A write of `record` at `now` that also schedules the scanner at
    /// [`crate::domain::schedule::next_due`].
    pub fn derived(user: UserId, record: &'a UserRecord, now: Millis, rules: &crate::domain::Rules) -> Self {
        Self { user, record, next_change_ms: crate::domain::schedule::next_due(record, now, rules), shows: false }
    }
}

/// Reads whole user records from the hot cache: what writers merge into.
pub trait CacheRead: Send + Sync {
    /// One round trip for all `users`, answered in their order.
    fn load(&self, users: &[UserId]) -> impl Future<Output = Result<Vec<Cached>, CacheError>> + Send;
}

/// Reads what the read path needs of users from the hot cache (DESIGN §10):
/// read models rather than whole records, so a bulk read fetches a few
/// short values per user.
pub trait CacheViews: Send + Sync {
    /// One round trip for all `users`, answered in their order; a second
    /// one only when some of them were written before read models existed,
    /// for just those (their whole records).
    fn load_views(&self, users: &[UserId]) -> impl Future<Output = Result<Vec<CachedView>, CacheError>> + Send;

    /// [`CacheViews::load_views`] for end user `reader`, with the except
    /// lists (DESIGN §13) this cache expects to matter asked in the same
    /// round trip: a guess from the lists the users' records named when
    /// last read, each answered as [`CacheAudience::listed`] answers. The
    /// caller may use an answer only where the record just read names the
    /// same list. The default guesses nothing.
    fn load_views_for(
        &self,
        users: &[UserId],
        reader: UserId,
    ) -> impl Future<Output = Result<(Vec<CachedView>, Vec<Listed>), CacheError>> + Send {
        let _ = reader;
        async move { Ok((self.load_views(users).await?, Vec::new())) }
    }
}

/// Writes users to the hot cache. Writes are monotonic in the version: an
/// older record never replaces a newer one, so a late or repeated write is
/// harmless.
pub trait CacheWrite: Send + Sync {
    /// Writes records that are durable already; one round trip. It also
    /// writes the schedule: each record's newest activity into its shard's
    /// `status:bulk` index and each `next_change_ms` into the scanner's due
    /// index, where it replaces the time there by
    /// [`crate::domain::schedule::replaces`].
    fn store(&self, writes: &[Write<'_>], now: Millis) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Writes records read from SQL by a reader, with the backfill TTL, unless
    /// the cache already holds the same or a newer version; the schedule is
    /// written as by [`CacheWrite::store`].
    fn backfill(&self, writes: &[Write<'_>], now: Millis) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// Erases users from the cache (DESIGN §7.1 `DELETE /v1/users/{id}`).
pub trait CacheErase: Send + Sync {
    /// Deletes `user`'s keys (`status:{id}`, `status:visible:{id}`,
    /// `status:poll:{id}`) and removes the user from the `status:bulk` and
    /// `status:due` index of every shard, in one round trip. Idempotent.
    /// With `guard`, the version the erasure took, it also refuses for a
    /// while every cache write of that version or older: a read's backfill
    /// or a write merged from before the erasure that lands after it.
    fn erase(&self, user: UserId, guard: Option<u64>) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// One erasure to make durable (DESIGN §7.1): a write like any other, with
/// compare-and-set on the version, that leaves only the watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    pub user: UserId,
    /// The version the erasure was decided from: the row's, or the
    /// watermark's when there is no row, or 0 for a user never stored.
    pub expected_version: u64,
    /// The version the erasure takes (`expected_version + 1`): the
    /// watermark keeps it, so the user's next write is numbered after it
    /// and an `event_id` is never used twice.
    pub version: u64,
    /// The service clock at the erasure (epoch ms): events stamped at or
    /// before it are ignored from now on.
    pub at_ms: Millis,
}

/// Erases users from the durable store.
pub trait StoreErase: Send + Sync {
    /// In one transaction, if the stored version is still
    /// `erasure.expected_version`: deletes the user's row, adds `events`
    /// to the outbox, and sets the user's erasure watermark to
    /// `(erasure.at_ms, erasure.version)` (an earlier `at_ms` never
    /// replaces a later one). The user's outbox rows not yet sent stay, to
    /// be published and deleted by the next drain like any others (DESIGN
    /// §6: no transition is lost). Returns whether it erased; `false`
    /// means a rival write came first and nothing changed.
    fn erase(&self, erasure: &Erasure, events: &[OutboxEvent])
        -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Reads users from the durable store.
pub trait StoreRead: Send + Sync {
    /// Two statements per chunk of 1,000 users (the rows, then the erasure
    /// watermarks of those users); users absent from the store are absent
    /// from the map.
    fn load(&self, users: &[UserId]) -> impl Future<Output = Result<HashMap<UserId, UserRecord>, StoreError>> + Send;
}

/// Writes users to the durable store with compare-and-set on the version.
pub trait StoreWrite: Send + Sync {
    /// Loads from the primary (never a replica): what a writer merges into.
    fn load_current(
        &self,
        users: &[UserId],
    ) -> impl Future<Output = Result<HashMap<UserId, UserRecord>, StoreError>> + Send;

    /// Saves every record whose stored version is still `record.version - 1`
    /// (or absent when that is 0) and returns the users that lost the race,
    /// whose records were left untouched. In the same transaction it adds
    /// to the outbox each of `events` whose write won (matched by user and
    /// version), so a state change and its announcement are durable
    /// together or not at all (DESIGN §6).
    ///
    /// A write whose [`Write::shows`] is false never turns a stored hidden
    /// preference visible: such a row counts as lost, so the caller merges
    /// again from the hidden row.
    fn save(
        &self,
        writes: &[Write<'_>],
        events: &[OutboxEvent],
        now: Millis,
    ) -> impl Future<Output = Result<Vec<UserId>, StoreError>> + Send;
}

/// The transactional outbox (DESIGN §6): announcements written with the
/// state that made them, kept until the bus has accepted them. A drain
/// claims rows before publishing them, so concurrent drains (a commit's and
/// a scan's, or two scanners of one shard) do not send the same row twice;
/// a claim runs out after `lease_ms`, so a drain that died leaves nothing
/// stuck.
pub trait Outbox: Send + Sync {
    /// Claims, under `claim`, the waiting events of `users` that no other
    /// live claim holds, and returns them, each user's in version order.
    fn claim_for(
        &self,
        users: &[UserId],
        claim: i64,
        now: Millis,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, StoreError>> + Send;
    /// Claims up to `limit` unclaimed waiting events of the users in `shard`
    /// (of `shards`), in (user, version) order, and returns them.
    fn claim_in_shard(
        &self,
        shard: u32,
        shards: u32,
        claim: i64,
        now: Millis,
        lease_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, StoreError>> + Send;
    /// Gives up `claim`'s remaining rows (not accepted by the bus), so the
    /// next drain takes them at once.
    fn release(&self, claim: i64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forgets events the bus accepted.
    fn remove(&self, done: &[OutboxEvent]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Publishes the announcements of DESIGN §8 (`status_changed`, ...).
pub trait ChangePublisher: Send + Sync {
    /// Whether a bus is configured. Without one nothing is announced and no
    /// outbox is kept (it would only grow).
    fn enabled(&self) -> bool;
    /// Publishes `events` (each user's in the order given, which must be
    /// version order): a user's event is sent only once the one before it
    /// was accepted. Never fails as a whole; the [`Delivery`] says which
    /// were accepted.
    fn publish(&self, events: &[OutboxEvent]) -> impl Future<Output = Delivery> + Send;
}

/// What a [`ChangePublisher::publish`] call delivered.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Indices into the events given, ascending, of those the bus accepted.
    pub accepted: Vec<usize>,
    /// Indices, ascending, of events no bus call can ever carry (one over
    /// PutEvents' 256 KB on its own, DESIGN §8): sending them again would
    /// hold the user's later events back for ever, so the outbox forgets
    /// them like accepted ones, and the drain logs each and counts the
    /// call as a publish failure.
    pub dropped: Vec<usize>,
    /// Why the others were not sent, if any were not.
    pub error: Option<PublishError>,
}

/// The cache-repair buffer (DESIGN §6): users whose Redis copy may be stale
/// because Redis did not answer when their durable state changed.
pub trait RepairBuffer: Send + Sync {
    /// Remembers `users` (each under its shard) until a repair clears them.
    /// Recording a user again replaces its marker.
    fn record(&self, users: &[UserId]) -> impl Future<Output = Result<(), RepairError>> + Send;
    /// The users waiting for repair in `shard`, with the marker each was
    /// recorded under.
    fn pending(&self, shard: u32) -> impl Future<Output = Result<Vec<PendingRepair>, RepairError>> + Send;
    /// Forgets repairs that were done, each only if it still holds the
    /// marker read by `pending`: a user recorded again meanwhile stays.
    fn clear(&self, shard: u32, done: &[PendingRepair]) -> impl Future<Output = Result<(), RepairError>> + Send;
    /// Forgets `user` in every shard (an erasure, DESIGN §7.1).
    fn forget(&self, user: UserId) -> impl Future<Output = Result<(), RepairError>> + Send;
}

/// One buffered repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRepair {
    pub user: UserId,
    /// Unique per `record` call, so a clear never erases a newer entry.
    pub marker: String,
}

/// The end-user polling limit (DESIGN §7): one status read per window,
/// counted from the last allowed read.
pub trait PollLimiter: Send + Sync {
    /// Takes `caller`'s read for this window: `None` if allowed, else the
    /// whole seconds to wait (at least 1).
    fn acquire(&self, caller: UserId) -> impl Future<Output = Result<Option<u64>, CacheError>> + Send;
}

/// The scanner's per-shard index of when each user needs another look.
pub trait DueIndex: Send + Sync {
    /// How many shards the index is split into (`SHARDS`).
    fn shards(&self) -> u32;
    /// Up to `limit` users of `shard` due at or before `now`, with the score
    /// each was read at, and whether the index is known complete (one round
    /// trip). An index lost with the cache (FLUSHALL, failover to an empty
    /// replica, eviction) is not, and must be rebuilt from the durable
    /// schedule before it can be trusted.
    fn due(
        &self,
        shard: u32,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<(UserId, f64)>, bool), CacheError>> + Send;
    /// Moves each user to its next due time, or out of the index when
    /// `None`, but only if its score is still the one read: a writer that
    /// brought it forward meanwhile wins.
    fn settle(
        &self,
        shard: u32,
        entries: &[(UserId, f64, Option<Millis>)],
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Schedules users read from the durable schedule, as a writer would
    /// (an earlier or passed time is replaced), and, with `complete`, marks
    /// the shard's index complete afterwards.
    fn restore(
        &self,
        shard: u32,
        entries: &[(UserId, Millis)],
        complete: bool,
        now: Millis,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// The durable copy of the scanner's schedule (the `next_change_at` column),
/// from which a lost due index is rebuilt.
pub trait ScheduleSource: Send + Sync {
    /// Up to `limit` rows of `shard` (of `shards`) with a next change,
    /// ordered by `(due, user)` and strictly after `after` (keyset paging
    /// over the schedule's index, never a table scan). A row whose due
    /// time cannot be read is due at once (`0`) and counted in
    /// [`SchedulePage::unreadable`] (DESIGN §6: one bad row fails nothing
    /// beside it).
    fn scheduled(
        &self,
        shard: u32,
        shards: u32,
        after: Option<&ScheduleCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<SchedulePage, StoreError>> + Send;
}

/// Where a walk of the schedule stopped: the last row's due time as the
/// store wrote it (kept as the store's own text, so a damaged time still
/// marks a place) and its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleCursor {
    pub due_text: String,
    pub user: UserId,
}

/// One page of [`ScheduleSource::scheduled`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulePage {
    /// `(user, due ms)`; a due time that could not be read is `0`.
    pub entries: Vec<(UserId, Millis)>,
    /// Rows the page read: fewer than the limit means the walk is done.
    pub rows: usize,
    /// Rows whose due time or id could not be read (logged, each).
    pub unreadable: usize,
    /// Where the next page starts; `None` when the page read nothing.
    pub next: Option<ScheduleCursor>,
}
