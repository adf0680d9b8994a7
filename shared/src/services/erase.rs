//! Erasure (DESIGN §7.1 `DELETE /v1/users/{id}`): every trace of a user
//! goes (the Redis keys and index members, the SQL row, the DynamoDB
//! items) and only the erasure watermark stays: the user id, when, and the
//! version the erasure took. Events stamped at or before it are ignored
//! from then on ([`crate::domain::UserRecord::admits`]), so a replay of the
//! topic leaves the user unseen, while later events start afresh under
//! versions that continue the old ones (an `event_id` is never reused).

use std::time::Duration;

use super::commit::{contention_pause, Committer, CONTENTION_BUDGET};
use super::outbox::OUTBOX_LEASE_MS;
use crate::domain::{FeedChange, Millis, OutboxEvent, UserId};
use crate::ports::{
    CacheErase, CacheError, ChangeFeed, ChangePublisher, DeadLetters, Erasure, FeedError, Outbox, RepairBuffer,
    RepairError, StoreErase, StoreError, StoreWrite,
};

/// How long an erasure waits before it clears Redis the last time: longer
/// than a cache write already sent takes to land (`REDIS_TIMEOUT_MS` is
/// 500 ms by default).
pub const ERASURE_SETTLE: Duration = Duration::from_secs(1);

/// Why an erasure failed. Every step is idempotent, so the caller answers
/// 503 and the client retries the whole erasure.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("redis did not take the erasure: {0}")]
    Cache(#[from] CacheError),
    #[error("the database did not take the erasure: {0}")]
    Store(#[from] StoreError),
    #[error("the user's record kept changing for {budget_s} s", budget_s = CONTENTION_BUDGET.as_secs())]
    Contended,
    #[error("the DynamoDB items were not deleted: {0}")]
    Items(#[from] RepairError),
    /// The push feed did not take the erasure for a reason that may pass
    /// (DESIGN §12): the erasure is durable, and the client's retry, which
    /// erases again under a new version, feeds it.
    #[error("the erasure was not fed to the stream: {0}")]
    Feed(#[from] FeedError),
}

/// What one erasure did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Erased {
    /// The version the erasure took (the watermark's).
    pub version: u64,
    /// Outbox events the bus accepted during the call (the erasure's own
    /// and any of the user's still waiting).
    pub published: usize,
    /// Whether some stay in the outbox for the next drain (logged).
    pub publish_failed: bool,
    /// Changes the push feed accepted: 1, or 0 without a stream function.
    pub fed: usize,
    /// Whether the push feed refused the erasure for good (no stream
    /// function; logged by the feed). A refusal that may pass fails the
    /// call instead.
    pub feed_failed: bool,
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheErase,
    S: StoreWrite + StoreErase + Outbox,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    /// Erases `user` at `now` (service clock, epoch ms), with its dead
    /// letters in `dead_letters`. Idempotent: erasing again (or a user
    /// never seen) only moves the watermark to the later time.
    ///
    /// Order: Redis first, so reads fall through to SQL at once; then the
    /// SQL row with compare-and-set (merging again, within
    /// [`CONTENTION_BUDGET`], when a write comes first), which writes the
    /// announcements to the outbox in the same transaction; then Redis
    /// again, guarded against older writes that land late, and once more
    /// after [`ERASURE_SETTLE`]; then the DynamoDB items, the push feed
    /// (DESIGN §12) and a drain of the user's outbox. A feed that fails for
    /// a reason that may pass fails the call after the drain
    /// ([`EraseError::Feed`]): the retry feeds the erasure, whereas keeping
    /// the user in the repair buffer would leave a trace of them behind.
    pub async fn erase(
        &self,
        user: UserId,
        now: Millis,
        dead_letters: &impl DeadLetters,
    ) -> Result<Erased, EraseError> {
        self.cache.erase(user, None).await?;
        let deadline = tokio::time::Instant::now() + CONTENTION_BUDGET;
        let mut round: u32 = 0;
        let (mut erased, at_ms) = loop {
            round += 1;
            let record = self.store.load_current(&[user]).await?.remove(&user).unwrap_or_default();
            // Only a damaged store holds a version with none after it
            // (DESIGN §6); the erasure then fails for this user alone.
            let version = record.next_version().ok_or_else(|| {
                StoreError::Corrupt(format!("user {user}: version {} has no version after it", record.version))
            })?;
            // Announced no earlier than the write it follows (DESIGN §8).
            let (transition, manual_change) = record.erasure_announcements(record.write_time(now));
            let events: Vec<OutboxEvent> = if self.publisher.enabled() {
                let status = transition.as_ref().map(|t| OutboxEvent::status_changed(user, version, t));
                let manual = manual_change.as_ref().map(|m| OutboxEvent::manual_status_changed(user, version, m));
                status.into_iter().chain(manual).collect()
            } else {
                Vec::new()
            };
            let erasure =
                Erasure { user, expected_version: record.version, version, at_ms: record.erasure_watermark(now) };
            if self.store.erase(&erasure, &events).await? {
                break (Erased { version, ..Erased::default() }, record.write_time(now));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EraseError::Contended);
            }
            tokio::time::sleep(contention_pause(round).max(Duration::from_millis(1))).await;
        };
        // Again, now guarded: a write merged from before the erasure may
        // have reached Redis since the first clear, and one may still be on
        // its way. The guard refuses the record; index members such a write
        // adds in its own commands are cleared once more after a pause.
        self.cache.erase(user, Some(erased.version)).await?;
        tokio::time::sleep(ERASURE_SETTLE).await;
        self.cache.erase(user, Some(erased.version)).await?;
        self.repair.forget(user).await?;
        dead_letters.forget(user).await?;
        let change = FeedChange { user_id: user, version: erased.version, at_ms };
        let fed = if self.feed.enabled() { self.feed.changed(&[change]).await } else { Ok(()) };
        erased.feed_failed = fed.is_err();
        erased.fed = usize::from(fed.is_ok() && self.feed.enabled());
        if self.publisher.enabled() {
            let claim: i64 = rand::random();
            let waiting = self.store.claim_for(&[user], claim, now, OUTBOX_LEASE_MS).await;
            let drained = self.drain(claim, waiting).await;
            erased.published = drained.published;
            erased.publish_failed = drained.failed;
        }
        match fed {
            Err(error) if error.retryable => return Err(error.into()),
            _ => {}
        }
        tracing::info!(%user, version = erased.version, "user erased");
        Ok(erased)
    }
}
