//! The sizes live status is bounded by (DESIGN §12): API Gateway's frame
//! and message quotas, and the most ids one message may list.

/// The largest frame API Gateway carries to a client, in bytes (DESIGN §12).
pub const MAX_FRAME_BYTES: usize = 32_768;

/// The largest client message read, in bytes: 128 KB; a longer one is
/// refused with `payload_too_large` (DESIGN §12).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The most ids one subscribe or unsubscribe may list (DESIGN §12: 1..=1000).
pub const MAX_IDS_PER_MESSAGE: usize = 1_000;

/// The most ended connections of one end user whose sent state (what
/// their cursors resume from) is kept for `STREAM_CURSOR_RETENTION_S`
/// (DESIGN §12 "Kept after the end"): the newest 16. An older one's
/// cursor gets a `reset` snapshot, so a client that connects and leaves
/// over and over holds at most this many connections' state in Redis,
/// not one per connect. Service connections (IAM) are not capped.
pub const KEPT_ENDED_PER_VIEWER: usize = 16;
