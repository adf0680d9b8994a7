//! The outbox's drain (DESIGN §6): publishing what a commit wrote to
//! `status_outbox` until the bus accepts it, and forgetting only what it
//! accepted. A commit drains the rows it made; each scan drains its shard's
//! rows that are still waiting, whoever made them.

use crate::domain::{Millis, OutboxEvent};
use crate::ports::{ChangePublisher, DueIndex, Outbox, StoreError};

use super::commit::Committer;

/// How long a drain's claim on outbox rows lasts: longer than one publish
/// can take (a few `AWS_TIMEOUT_MS`), so no other drain sends them
/// meanwhile; short enough that rows of a drain that died are sent by the
/// next scan but one.
pub const OUTBOX_LEASE_MS: i64 = 30_000;

/// Outbox events per page of a shard's drain, and pages per scan.
pub const DRAIN_PAGE: usize = 1000;
const DRAIN_MAX_PAGES: usize = 50;

/// What one drain of the outbox did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Events the bus accepted and the outbox forgot.
    pub published: usize,
    /// Whether some events stay waiting (bus or SQL failed; logged), or
    /// one was dropped as too large for any bus call (logged).
    pub failed: bool,
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    S: Outbox,
    P: ChangePublisher,
{
    /// Publishes outbox events claimed under `claim` (each user's in version
    /// order), forgets the accepted ones and gives the rest back. Never
    /// fails: whatever is not accepted stays for the next drain, and an
    /// accepted event whose removal failed is sent again once its claim
    /// runs out (consumers deduplicate on `event_id`).
    pub(crate) async fn drain(&self, claim: i64, waiting: Result<Vec<OutboxEvent>, StoreError>) -> Drained {
        let waiting = match waiting {
            Ok(waiting) => waiting,
            Err(error) => {
                tracing::error!(%error, "outbox not read; its events wait for the next drain");
                return Drained { published: 0, failed: true };
            }
        };
        if waiting.is_empty() {
            return Drained::default();
        }
        let delivery = self.publisher.publish(&waiting).await;
        let published = delivery.accepted.len();
        let mut failed = false;
        for event in delivery.dropped.iter().filter_map(|i| waiting.get(*i)) {
            tracing::error!(
                event_id = %event.event_id(),
                detail_type = %event.detail_type,
                detail_bytes = event.detail.len(),
                "event too large for the bus; dropped from the outbox"
            );
            failed = true;
        }
        let done: Vec<OutboxEvent> =
            delivery.accepted.iter().chain(&delivery.dropped).filter_map(|i| waiting.get(*i).cloned()).collect();
        if let Some(error) = &delivery.error {
            tracing::error!(%error, waiting = waiting.len() - done.len(), "events not published; kept in the outbox");
            failed = true;
        }
        if let Err(error) = self.store.remove(&done).await {
            tracing::warn!(%error, count = done.len(), "published events not removed from the outbox; sent again later");
            failed = true;
        } else if done.len() < waiting.len() {
            if let Err(error) = self.store.release(claim).await {
                tracing::warn!(%error, "unsent events keep their claim until it runs out");
            }
        }
        Drained { published, failed }
    }
}

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: DueIndex,
    S: Outbox,
    P: ChangePublisher,
{
    /// Publishes `shard`'s waiting outbox events, page by page, until none
    /// is left or the bus refuses one (the rest wait for the next scan).
    /// Rows another drain has claimed are left to it.
    pub async fn drain_shard(&self, shard: u32, now: Millis) -> Drained {
        let mut total = Drained::default();
        if !self.publisher.enabled() {
            return total;
        }
        for _ in 0..DRAIN_MAX_PAGES {
            let claim: i64 = rand::random();
            let page =
                self.store.claim_in_shard(shard, self.cache.shards(), claim, now, OUTBOX_LEASE_MS, DRAIN_PAGE).await;
            let full = page.as_ref().is_ok_and(|p| p.len() == DRAIN_PAGE);
            let drained = self.drain(claim, page).await;
            total.published += drained.published;
            total.failed |= drained.failed;
            if drained.failed || !full {
                break;
            }
        }
        total
    }
}
