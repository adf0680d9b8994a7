//! A user's own preferences, written through the one write path: the
//! visibility preference (DESIGN §4 property 4), the manual status (§7.1),
//! and the adoption of a hide found only in Redis's visibility flag.

use super::commit::{CommitError, CommitMode, CommitOutcome, Committer};
use crate::domain::{ManualStatus, Millis, UserId};
use crate::ports::{CacheRead, CacheWrite, ChangeFeed, ChangePublisher, Outbox, RepairBuffer, StoreWrite};

impl<C, S, R, P, F> Committer<C, S, R, P, F>
where
    C: CacheRead + CacheWrite,
    S: StoreWrite + Outbox,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    /// Saves a visibility preference at `now` (the hide time others see).
    /// A hide is acknowledged only once Redis holds it: readers trust a
    /// Redis hit, so a visible copy left there would leak the user until
    /// the repair. Showing again has no such risk and works without Redis;
    /// it is the only write that may turn a hidden preference visible.
    pub async fn set_visibility(&self, user: UserId, visible: bool, now: Millis) -> Result<CommitOutcome, CommitError> {
        let change = |_: UserId, record: &mut crate::domain::UserRecord, now: Millis| {
            record.state.set_visible(visible, now);
            false
        };
        self.commit_with(&[user], now, &change, CommitMode { cache_required: !visible, shows: visible }).await
    }

    /// Sets (`Some`) or clears (`None`) the user's manual status at `now`
    /// (DESIGN §7.1), through the one write path: concurrent sets resolve
    /// by the version (the last to commit wins, each merged from what the
    /// other wrote), a replay of the same value writes and announces
    /// nothing, and the start, change or clear goes to the outbox as
    /// `manual_status_changed` with the state. Validity (message length,
    /// an expiry in the future) is checked by [`ManualStatus::new`] at the
    /// edge.
    pub async fn set_manual(
        &self,
        user: UserId,
        manual: Option<ManualStatus>,
        now: Millis,
    ) -> Result<CommitOutcome, CommitError> {
        let change = |_: UserId, record: &mut crate::domain::UserRecord, _: Millis| {
            record.state.manual = manual.clone();
            false
        };
        self.commit(&[user], now, &change).await
    }

    /// Writes `users` as they are, which adopts into SQL a hide found only
    /// in Redis's visibility flag (see [`Committer::commit_with`]); for the
    /// read path, which finds such hides but does not write.
    pub async fn adopt_hides(&self, users: &[UserId], now: Millis) -> Result<CommitOutcome, CommitError> {
        let keep = |_: UserId, _: &mut crate::domain::UserRecord, _: Millis| false;
        self.commit(users, now, &keep).await
    }
}
