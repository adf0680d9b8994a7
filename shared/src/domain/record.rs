//! A user as stored: the state, the version that guards compare-and-set,
//! and what was last announced (DESIGN §4 property 5, §6, §8), with the
//! rules of writing one: when a write happens, what it announces, what an
//! erasure leaves behind.

use super::event::PresenceEvent;
use super::ids::Millis;
use super::manual::{ManualStatus, ManualTransition};
use super::state::UserState;
use super::status::{Rules, Status};
use super::view::Visibility;

/// The largest version a stored record may hold (DESIGN §6): `i64::MAX`.
/// No history reaches it (2^63 writes of one user), so a stored version
/// above it is damage and reads as unreadable, and every `+ 1` taken from a
/// version read back, in Rust or in SQL, stays within `u64`.
pub const MAX_VERSION: u64 = i64::MAX as u64;

/// A stored user: the state, the version that guards compare-and-set, and
/// the public status last announced in a `status_changed` event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// 0 for a user never written; every write stores `version + 1`.
    pub version: u64,
    pub state: UserState,
    /// The public status as of the last announced transition.
    pub announced: Option<Status>,
    /// When the record was last written (service clock): the stored
    /// `status` and `device_count` were derived at this time.
    pub written_ms: Millis,
    /// The manual status as of the last `manual_status_changed` announced
    /// (DESIGN §8); `None` when none was, or the last one was a clear.
    pub announced_manual: Option<ManualStatus>,
    /// The user's erasure watermark (DESIGN §7.1 `DELETE /v1/users/{id}`):
    /// the service clock (epoch ms) of the user's last erasure. Events
    /// stamped at or before it are ignored ([`UserRecord::admits`]), so a
    /// replay never brings the erased history back. `None`: never erased.
    pub erased_ms: Option<Millis>,
}

/// A change of the public status, to be published as `status_changed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
    pub at_ms: Millis,
}

impl UserRecord {
    /// Applies a hide found only in the contract's `status:visible:{id}`
    /// flag (DESIGN §4 property 4: anyone may set it, and it wins): the user
    /// reads as hidden since this copy's last write (or `now`, if that is
    /// earlier), a fixed time, so the view does not move and the write path
    /// adopting the hide at the same time changes nothing anyone sees.
    /// Returns whether the record was visible until now.
    pub fn hide_for_flag(&mut self, now: Millis) -> bool {
        if !self.state.visibility.is_visible() {
            return false;
        }
        self.state.visibility = Visibility::hidden_since(self.written_ms.min(now), self.state.presence.last_active_ms);
        true
    }

    /// Whether `event` may be merged: it is stamped after the user's last
    /// erasure, if any (DESIGN §7.1). An older event belongs to the erased
    /// history and is dropped, however late it arrives.
    pub fn admits(&self, event: &PresenceEvent) -> bool {
        self.erased_ms.is_none_or(|erased| event.ts_ms > erased)
    }

    /// The erasure watermark for an erasure at `now` (DESIGN §7.1): `now`,
    /// or the newest time any of the record's events was stamped with if
    /// that is later (an event may be stamped up to `MAX_CLOCK_SKEW_MS`
    /// ahead of the service clock), so a replay of any event already
    /// merged is ignored too.
    pub fn erasure_watermark(&self, now: Millis) -> Millis {
        let presence = &self.state.presence;
        let sessions = presence.sessions.values().flat_map(|s| [Some(s.register.ts()), s.active_ms]);
        sessions.chain([presence.last_active_ms, self.erased_ms]).flatten().fold(now, Millis::max)
    }

    /// The time a write at `now` that merges from this record is made at:
    /// `now`, or this record's own write time if that is later (another
    /// function's clock may run a few ms ahead). Writes of one user are
    /// ordered by the compare-and-set on `version`, so taking the later
    /// keeps every user's write times, and with them the `at_ms` of what
    /// they announce (DESIGN §8), from going backwards.
    pub fn write_time(&self, now: Millis) -> Millis {
        now.max(self.written_ms)
    }

    /// Whether the record is a placeholder no write has made since the
    /// user was last erased or ever: a user never seen, or an erased one
    /// read back from the watermark. The cache is not worth filling with
    /// it beyond a read's backfill.
    pub fn is_placeholder(&self) -> bool {
        self.written_ms == 0
    }

    /// The version the next write of this record takes (`version + 1`);
    /// `None` when that would pass [`MAX_VERSION`], so the record can be
    /// written no more and its user is left as stored (DESIGN §6).
    pub fn next_version(&self) -> Option<u64> {
        self.version.checked_add(1).filter(|next| *next <= MAX_VERSION)
    }

    /// What erasing the user at `now` announces (DESIGN §7.1, §8): the
    /// transition to `offline` when the status last announced was not
    /// offline, and a manual status clear when one was announced and the
    /// user is visible (a hidden user's manual status is never announced).
    /// Consumers learn the user is gone; nothing else of the user remains.
    pub fn erasure_announcements(&self, now: Millis) -> (Option<Transition>, Option<ManualTransition>) {
        let from = self.announced.unwrap_or(Status::Offline);
        let status = (from != Status::Offline).then_some(Transition { from, to: Status::Offline, at_ms: now });
        let manual = self
            .announced_manual
            .clone()
            .filter(|_| self.state.visibility.is_visible())
            .map(|from| ManualTransition { from: Some(from), to: None, at_ms: now });
        (status, manual)
    }

    /// Whether the status and device count stored at the last write differ
    /// from what `now` derives: the scanner rewrites exactly those users.
    pub fn stored_view_is_stale(&self, now: Millis, rules: &Rules) -> bool {
        let then = self.state.derive(self.written_ms, rules);
        let current = self.state.derive(now, rules);
        (then.status, then.device_count) != (current.status, current.device_count)
    }

    /// Whether the public status at `now` differs from the last announced
    /// one: a transition is still to be published.
    pub fn announcement_owed(&self, now: Millis, rules: &Rules) -> bool {
        self.state.public_view(now, rules).status != self.announced.unwrap_or(Status::Offline)
    }

    /// Records the public status at `now` as announced and returns the
    /// transition if it differs from the last one announced. A user never
    /// announced counts as `offline`, so a first connect is a transition and
    /// a first heartbeat-only idle is one too, while a user who never showed
    /// anything is not.
    pub fn announce(&mut self, now: Millis, rules: &Rules) -> Option<Transition> {
        let to = self.state.public_view(now, rules).status;
        let from = self.announced.unwrap_or(Status::Offline);
        self.announced = Some(to);
        (from != to).then_some(Transition { from, to, at_ms: now })
    }

    /// The manual status to announce at `now`: the one set, while it holds;
    /// `None` for a hidden user, whose manual status is never announced
    /// (DESIGN §7.1), so the announced one then stays as it was and a change
    /// made while hidden is announced once the user shows again. The same
    /// for a user whose audience leaves the public out (DESIGN §13: the
    /// bus carries the public view).
    fn manual_to_announce(&self, now: Millis) -> Option<Option<&ManualStatus>> {
        (self.state.visibility.is_visible() && self.state.shows_the_public())
            .then(|| ManualStatus::live_at(self.state.manual.as_ref(), now))
    }

    /// Whether a `manual_status_changed` is still to be published at `now`
    /// (a start, change, clear or expiry not yet announced).
    pub fn manual_announcement_owed(&self, now: Millis) -> bool {
        self.manual_to_announce(now).is_some_and(|m| m != self.announced_manual.as_ref())
    }

    /// Records the manual status at `now` as announced and returns the
    /// change if it differs from the last one announced.
    pub fn announce_manual(&mut self, now: Millis) -> Option<ManualTransition> {
        let to = self.manual_to_announce(now)?.cloned();
        if to == self.announced_manual {
            return None;
        }
        let from = std::mem::replace(&mut self.announced_manual, to.clone());
        Some(ManualTransition { from, to, at_ms: now })
    }
}
