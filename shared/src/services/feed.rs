//! The push feed's side of the write path (DESIGN §12, §6 "Push feed"):
//! after a commit has made changes durable and written them to Redis, the
//! users whose records it wrote go to the stream function in one call
//! (chunked by the adapter), so their watchers hear of the change.
//!
//! A change committed is fed at least once. A feed call that fails for a
//! reason that may pass (throttling, a timeout) puts its users in the
//! cache-repair buffer: the shard's next scan repairs them (rewriting Redis
//! from SQL, harmless for a copy that is current) and feeds them again,
//! clearing them only once the feed took them. A commit is never failed for
//! the feed: the change is durable, and a retried batch would write nothing
//! and so feed nothing; the buffer is what carries the change on.

use crate::domain::{FeedChange, UserId, UserRecord};
use crate::ports::{ChangeFeed, FeedError, RepairBuffer};

use super::commit::Committer;

/// What one feed call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Changes the feed accepted.
    pub fed: usize,
    /// Whether the feed refused them (logged; counted as `FeedFailures`).
    /// Transient refusals are kept in the repair buffer for the next scan
    /// unless `lost` says otherwise.
    pub failed: bool,
    /// Users whose change reached neither the feed nor the repair buffer
    /// (both failed, logged as errors); their watchers learn of them with
    /// the user's next change or a resume.
    pub lost: usize,
}

/// The change a stored record stands for: its user, version and write time
/// (an erased user's, the erasure's watermark time).
pub(crate) fn change_of(user: UserId, record: &UserRecord) -> FeedChange {
    FeedChange { user_id: user, version: record.version, at_ms: record.written_ms.max(record.erased_ms.unwrap_or(0)) }
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    R: RepairBuffer,
    F: ChangeFeed,
{
    /// Hands `changes` to the feed (nothing when it is off or there are
    /// none). A transient failure is logged and its users go to the repair
    /// buffer; a permanent one (no such function) was logged by the feed
    /// and is only counted. Never fails.
    pub(crate) async fn feed_changes(&self, changes: &[FeedChange]) -> Fed {
        if changes.is_empty() || !self.feed.enabled() {
            return Fed::default();
        }
        let error = match self.feed.changed(changes).await {
            Ok(()) => return Fed { fed: changes.len(), ..Fed::default() },
            Err(error) => error,
        };
        if !error.retryable {
            return Fed { failed: true, ..Fed::default() };
        }
        let users: Vec<UserId> = changes.iter().map(|c| c.user_id).collect();
        match self.repair.record(&users).await {
            Ok(()) => {
                tracing::warn!(%error, users = users.len(), "changes not fed; the next scan of their shards feeds them");
                Fed { failed: true, ..Fed::default() }
            }
            Err(repair) => {
                tracing::error!(%error, %repair, users = users.len(), "changes neither fed nor kept for the next scan");
                Fed { failed: true, lost: users.len(), ..Fed::default() }
            }
        }
    }

    /// Feeds the users a repair rewrote (`changes`, from SQL). `Ok` when
    /// their repair entries may be cleared: the feed took them, is off, or
    /// refuses them for good (`failed`); `Err` after a failure that may
    /// pass, so the next scan feeds them again.
    pub(crate) async fn feed_repaired(&self, changes: &[FeedChange]) -> Result<Fed, FeedError> {
        if changes.is_empty() || !self.feed.enabled() {
            return Ok(Fed::default());
        }
        match self.feed.changed(changes).await {
            Ok(()) => Ok(Fed { fed: changes.len(), ..Fed::default() }),
            Err(error) if error.retryable => Err(error),
            Err(_) => Ok(Fed { failed: true, ..Fed::default() }),
        }
    }
}
