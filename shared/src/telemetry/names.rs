//! The metric names: one home, used by the handlers, the tests and the
//! template's alarms and dashboard (which spell them out).

/// Valid records a batch merged (aggregator).
pub const RECORDS_APPLIED: &str = "RecordsApplied";
/// Malformed records set aside (aggregator).
pub const RECORDS_MALFORMED: &str = "RecordsMalformed";
/// Malformed records written to the dead-letter table (aggregator).
pub const DEAD_LETTERED: &str = "DeadLettered";
/// Malformed records whose dead letter could not be written; they are
/// in the logs only (aggregator).
pub const DEAD_LETTER_FAILURES: &str = "DeadLetterFailures";
/// Users whose record a call wrote (aggregator).
pub const USERS_WRITTEN: &str = "UsersWritten";
/// Users merged again after losing an SQL compare-and-set (aggregator).
pub const CONTENTION_RETRIES: &str = "ContentionRetries";
/// Calls whose Redis write failed, so their users went to the repair
/// buffer (aggregator, API).
pub const REDIS_FAILURES: &str = "RedisFailures";
/// Users sent to the repair buffer (aggregator, API).
pub const USERS_SENT_TO_REPAIR: &str = "UsersSentToRepair";
/// Ids one bulk read asked for, after duplicates (API; one sample per read).
pub const BULK_SIZE: &str = "BulkSize";
/// Users a read found in Redis (API).
pub const REDIS_HITS: &str = "RedisHits";
/// Users a read had to take from SQL (API).
pub const SQL_FALLBACKS: &str = "SqlFallbacks";
/// Reads refused by the poll limit, 429 (API).
pub const RATE_LIMITED: &str = "RateLimited";
/// Answers, by `StatusCode` (API).
pub const RESPONSES: &str = "Responses";
/// Users a scan looked at (scanner).
pub const USERS_SCANNED: &str = "UsersScanned";
/// Public status changes made (aggregator, scanner).
pub const TRANSITIONS: &str = "Transitions";
/// Users the scanner rewrote from SQL out of the repair buffer (scanner).
pub const REPAIRS_DRAINED: &str = "RepairsDrained";
/// Due indexes rebuilt from SQL after a cache loss (scanner).
pub const INDEX_REBUILDS: &str = "IndexRebuilds";
/// Schedule rows whose due time could not be read while rebuilding a
/// due index; each is logged and its user looked at at once (scanner).
pub const UNREADABLE_ROWS: &str = "UnreadableRows";
/// How long one shard's scan took, ms, by `Shard` (scanner).
pub const SCAN_DURATION: &str = "ScanDuration";
/// Shards whose scan failed (scanner).
pub const SHARDS_FAILED: &str = "ShardsFailed";
/// `status_changed` events waiting in the outbox after the call (every
/// function; by `Shard` in the scanner).
pub const OUTBOX_DEPTH: &str = "OutboxDepth";
/// Calls whose publish left events waiting in the outbox (every function).
pub const PUBLISH_FAILURES: &str = "PublishFailures";
/// Changes the push feed (DESIGN §12) accepted during the call (every
/// function).
pub const CHANGES_FED: &str = "ChangesFed";
/// Calls whose push feed refused changes; those that may pass wait in
/// the repair buffer for the next scan (every function).
pub const FEED_FAILURES: &str = "FeedFailures";
/// Users with held-back activity the scanner fed to the stream
/// function once due (DESIGN §12), per invocation.
pub const HELD_FLUSHED: &str = "HeldFlushed";
/// Outbox events the bus accepted during the call (every function).
pub const EVENTS_PUBLISHED: &str = "EventsPublished";
/// WebSocket connections accepted at `$connect` (stream, DESIGN §12).
pub const CONNECTIONS_OPENED: &str = "ConnectionsOpened";
/// `$disconnect`s received (stream).
pub const CONNECTIONS_CLOSED: &str = "ConnectionsClosed";
/// Client messages by route (`subscribe`, `unsubscribe`, `ping`,
/// `$default`) under the `Route` dimension (stream).
pub const MESSAGES: &str = "Messages";
/// Ids a subscribe asked for, one sample per subscribe (stream).
pub const SUBSCRIBED_IDS: &str = "SubscribedIds";
/// Ids an accepted subscribe added to its connection's set, one sample per
/// accepted subscribe (stream).
pub const SUBSCRIPTIONS_ADDED: &str = "SubscriptionsAdded";
/// Distinct ids the connection holds after an accepted subscribe (at most
/// `STREAM_MAX_IDS`), one sample per accepted subscribe (stream).
pub const SUBSCRIPTIONS_HELD: &str = "SubscriptionsHeld";
/// Change-log entries a resume read: the cursor's connection's sent state,
/// one per (connection, subscribed user) that had one; one sample per
/// subscribe with `since` (stream).
pub const RESUME_LOG_ENTRIES: &str = "ResumeLogEntries";
/// How old a resume's cursor was, ms, one sample per subscribe with a
/// well-formed `since` still within `STREAM_CURSOR_RETENTION_S` (stream).
pub const RESUME_CURSOR_AGE: &str = "ResumeCursorAge";
/// Subscribes with `since` answered by a `reset` snapshot (stream).
pub const RESUME_RESETS: &str = "ResumeResets";
/// Changed users a feed invocation fanned out (stream).
pub const FANOUT_USERS: &str = "FanoutUsers";
/// Connections a fan-out reached (stream).
pub const FANOUT_CONNECTIONS: &str = "FanoutConnections";
/// Data frames a fan-out posted (stream).
pub const FRAMES_SENT: &str = "FramesSent";
/// Entries a fan-out held back as activity only (DESIGN §12), one per
/// connection and user.
pub const ENTRIES_HELD: &str = "EntriesHeld";
/// Connections found gone (`410`) and forgotten (stream).
pub const CONNECTIONS_GONE: &str = "ConnectionsGone";
/// Attempts of a fan-out that failed to serve a connection (a post failed
/// or stayed throttled, or a registry call failed), whether a retry within
/// the invocation then served it or the invocation failed for Lambda to
/// run again (stream).
pub const POST_FAILURES: &str = "PostFailures";
/// From the earliest commit of a feed to the end of its fan-out, ms
/// (stream): the push's lag behind the stores.
pub const FANOUT_LAG: &str = "FanoutLag";
