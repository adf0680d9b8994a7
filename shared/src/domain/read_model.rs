//! The read model (DESIGN §4, §7.1, §10): what a reader needs of a stored
//! user to answer [`UserState::view_for`] at any later `now`, taken at
//! write time, so the hot read fetches one short hash field per user
//! instead of the whole record and decodes no session registers.
//!
//! # Why it answers exactly as the record does
//!
//! [`UserState::view_for`] reads, and only reads:
//!
//! - every connected register's last-seen time, newest activity and
//!   platform ([`super::Presence::connections`]): the device count, the per-session
//!   expiry, the offline grace and each platform's staircase of
//!   (seen, activity) pairs all come from these;
//! - of the tombstones, only the newest (the offline grace starts from the
//!   last session's end, a maximum);
//! - the user's `last_active_ms`, the [`Visibility`] (hidden since, frozen
//!   last activity) and the manual status as set, with its expiry.
//!
//! A [`ReadModel`] keeps exactly those, nothing derived at a particular time,
//! and answers through the same derivation functions the full record uses
//! (`derive`, `platforms` and `view_for` in [`super::state`]), so the two
//! can only differ if the facts handed over differ. Since nothing in it
//! depends on the rules either, a summary stays right for any `now` and
//! even if `IDLE_AFTER`, `SESSION_TTL` or `OFFLINE_GRACE` change between
//! the write and the read. The property test in this module checks the
//! whole claim, storage format included, on random states and times.
//!
//! Nothing here does I/O or reads a clock.

use super::audience::AudienceRule;
use super::derive::{self as derivation, Connection};
use super::ids::Millis;
use super::manual::ManualStatus;
use super::platform::Platforms;
use super::state::UserState;
use super::status::Rules;
use super::view::{View, Visibility};

/// A user's read model: what [`ReadModel::view_for`] needs to answer as
/// [`UserState::view_for`] would on the record it was taken from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadModel {
    /// The user's newest connect or activity (epoch ms), as
    /// [`super::Presence::last_active_ms`].
    pub last_active_ms: Option<Millis>,
    /// Every connected register, in the record's session order. Tombstones
    /// are not listed.
    pub connections: Vec<Connection>,
    /// The time of the newest tombstone (epoch ms), if any.
    pub newest_tombstone: Option<Millis>,
    /// Whether others may see the user, as stored.
    pub visibility: Visibility,
    /// The manual status as set (DESIGN §7.1), possibly expired: readers
    /// apply the expiry at their own `now`.
    pub manual: Option<ManualStatus>,
    /// When the record was written (service clock, epoch ms): a hide found
    /// only in the visibility flag takes effect from here
    /// ([`ReadModel::hide_for_flag`]).
    pub written_ms: Millis,
    /// Who may see the user (DESIGN §13), as stored: readers apply it with
    /// [`AudienceRule::entry`] after [`ReadModel::view_for`].
    pub audience: AudienceRule,
}

impl ReadModel {
    /// The read model of `state` as written at `written_ms`.
    pub fn of(state: &UserState, written_ms: Millis) -> Self {
        Self {
            last_active_ms: state.presence.last_active_ms,
            connections: state.presence.connections().collect(),
            newest_tombstone: state.presence.newest_tombstone(),
            visibility: state.visibility,
            manual: state.manual.clone(),
            written_ms,
            audience: state.audience,
        }
    }

    /// The user's true status at `now`: [`super::Presence::derive`] of the record.
    pub fn derive(&self, now: Millis, rules: &Rules) -> View {
        derivation::derive(self.connections.iter().copied(), self.newest_tombstone, self.last_active_ms, now, rules)
    }

    /// Each platform's status at `now`: [`super::Presence::platforms`] of the record.
    pub fn platforms(&self, now: Millis, rules: &Rules) -> Platforms {
        derivation::platforms(self.connections.iter().copied(), now, rules)
    }

    /// The view for a reader at `now`: [`UserState::view_for`] of the
    /// record (the truth for the user themself, the public view for anyone
    /// else, with the manual status and platforms of DESIGN §7.1).
    pub fn view_for(&self, is_self: bool, now: Millis, rules: &Rules) -> View {
        derivation::view_for(
            is_self,
            now,
            self.visibility,
            self.manual.as_ref(),
            || self.derive(now, rules),
            || self.platforms(now, rules),
        )
    }

    /// [`super::UserRecord::hide_for_flag`] on the read model: a hide found
    /// only in the visibility flag shows from the record's last write (or
    /// `now`, if earlier). Returns whether the user was visible until now.
    pub fn hide_for_flag(&mut self, now: Millis) -> bool {
        if !self.visibility.is_visible() {
            return false;
        }
        self.visibility = Visibility::hidden_since(self.written_ms.min(now), self.last_active_ms);
        true
    }
}

#[cfg(test)]
mod tests;
