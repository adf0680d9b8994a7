//! A user's presence state and every rule that changes it: the
//! per-session last-writer-wins registers, the merge, pruning, visibility
//! and the manual status. What the state shows at a given `now` is derived
//! in [`super::derive`] as a [`super::view::View`]; the stored record around it is
//! [`super::record`]. Nothing here does I/O or reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::derive::{self as derivation, Connection};
use super::event::{EventKind, PresenceEvent};
use super::ids::{is_storable_instant, Millis, SessionId};
use super::manual::ManualStatus;
use super::platform::{Platform, Platforms};
use super::status::Rules;
use super::view::{View, Visibility};

/// One session's last-writer-wins register, ordered by the producer's
/// `ts_ms`. Serialized as `{"c": ts}` or `{"d": ts}` to keep stored states
/// small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Register {
    /// Alive, last heard from at this time.
    #[serde(rename = "c")]
    Connected(Millis),
    /// Closed at this time; kept as a tombstone so late duplicates lose.
    #[serde(rename = "d")]
    Disconnected(Millis),
}

impl Register {
    pub fn ts(self) -> Millis {
        match self {
            Self::Connected(ts) | Self::Disconnected(ts) => ts,
        }
    }

    /// Whether `self` replaces `other`: newer wins, and at equal time a
    /// disconnect wins. Two registers with the same time and kind are equal,
    /// so the choice between them never matters.
    pub fn beats(self, other: Register) -> bool {
        match self.ts().cmp(&other.ts()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                matches!((self, other), (Self::Disconnected(_), Self::Connected(_)))
            }
        }
    }

    /// The join of two registers: the one that wins.
    pub fn join(self, other: Register) -> Register {
        if other.beats(self) {
            other
        } else {
            self
        }
    }
}

/// One session: its last-writer-wins [`Register`] plus what DESIGN §7.1's
/// platforms need, the session's newest activity and its platform.
///
/// Stored as `{"c": ts}` or `{"d": ts}` (the form written before platforms
/// existed, which still reads: no activity, no platform) with `"a": ms`
/// and `"p": "m" | "w" | "d"` added when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredSession", into = "StoredSession")]
pub struct Session {
    pub register: Register,
    /// The newest `ts_ms` of this session's connect and activity events,
    /// whether or not they won the register (as `last_active_ms`, §4).
    pub active_ms: Option<Millis>,
    /// The platform of the session's `device` ([`Platform::of_device`]).
    pub platform: Option<Platform>,
}

impl Session {
    /// What one event says about its session.
    pub fn of_event(event: &PresenceEvent) -> Self {
        let register = match event.kind {
            EventKind::Disconnected => Register::Disconnected(event.ts_ms),
            EventKind::Connected | EventKind::Heartbeat | EventKind::Activity => Register::Connected(event.ts_ms),
        };
        Self {
            register,
            active_ms: event.kind.is_activity().then_some(event.ts_ms),
            platform: Platform::of_device(event.device.as_deref()),
        }
    }

    /// The join: the winning register, the newest activity, and the
    /// greatest platform named. Each part is a semilattice of its own
    /// (register order, max, max), so the whole stays commutative,
    /// associative and idempotent. A connection runs on one device, so
    /// platforms only disagree when a producer misreports; the greatest
    /// then wins whatever the order.
    pub fn join(self, other: Session) -> Session {
        Session {
            register: self.register.join(other.register),
            active_ms: self.active_ms.max(other.active_ms),
            platform: self.platform.max(other.platform),
        }
    }
}

impl From<Register> for Session {
    fn from(register: Register) -> Self {
        Self { register, active_ms: None, platform: None }
    }
}

/// The stored form of a [`Session`]: exactly one of `c` / `d`.
#[derive(Serialize, Deserialize)]
struct StoredSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Platform>,
}

impl TryFrom<StoredSession> for Session {
    type Error = &'static str;
    fn try_from(raw: StoredSession) -> Result<Self, Self::Error> {
        let register = match (raw.c, raw.d) {
            (Some(ts), None) => Register::Connected(ts),
            (None, Some(ts)) => Register::Disconnected(ts),
            _ => return Err("a session holds exactly one of c and d"),
        };
        // Every stored instant came from an accepted event (DESIGN §7); one
        // outside the range is damage, refused here rather than in a later
        // write of the user.
        if !is_storable_instant(register.ts()) || raw.a.is_some_and(|a| !is_storable_instant(a)) {
            return Err("a session time is outside the instants the service stores");
        }
        Ok(Session { register, active_ms: raw.a, platform: raw.p })
    }
}

impl From<Session> for StoredSession {
    fn from(s: Session) -> Self {
        let (c, d) = match s.register {
            Register::Connected(ts) => (Some(ts), None),
            Register::Disconnected(ts) => (None, Some(ts)),
        };
        StoredSession { c, d, a: s.active_ms, p: s.platform }
    }
}

/// What events build: the sessions and the newest activity. This part is
/// a join-semilattice, so any order and any duplication of the same events
/// gives the same value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub sessions: BTreeMap<SessionId, Session>,
    pub last_active_ms: Option<Millis>,
}

impl Presence {
    /// Merges one event. A session's register changes only if the event's
    /// register beats it; `last_active_ms` takes the newest connect or
    /// activity whether or not that event won its register.
    pub fn apply(&mut self, event: &PresenceEvent) {
        let incoming = Session::of_event(event);
        match self.sessions.get_mut(&event.session_id) {
            Some(current) => *current = current.join(incoming),
            None => {
                self.sessions.insert(event.session_id.clone(), incoming);
            }
        }
        if event.kind.is_activity() {
            self.last_active_ms = self.last_active_ms.max(Some(event.ts_ms));
        }
    }

    /// The join of two presences (register-wise winner, newest activity).
    pub fn join(&mut self, other: &Presence) {
        for (session, register) in &other.sessions {
            match self.sessions.get_mut(session) {
                Some(current) => *current = current.join(*register),
                None => {
                    self.sessions.insert(session.clone(), *register);
                }
            }
        }
        self.last_active_ms = self.last_active_ms.max(other.last_active_ms);
    }

    /// Drops registers older than the retention: they can no longer count as
    /// live, end a grace, or beat an event that could still matter. Any
    /// late event they would have beaten is itself older than the retention
    /// and is dropped by the same call, so pruning keeps convergence.
    pub fn prune(&mut self, now: Millis, rules: &Rules) {
        let horizon = now.saturating_sub(rules.retention_ms());
        self.sessions.retain(|_, session| session.register.ts() >= horizon);
        self.cap(rules.max_sessions);
    }

    /// Keeps at most `max` registers (DESIGN §6 `MAX_SESSIONS`), dropping
    /// the oldest by `(ts_ms, session id)`. The order is total and a join
    /// only ever moves a register later, so a register dropped here has
    /// `max` later ones that every later join keeps ahead of it: capping
    /// after each merge gives the same result as capping once after all of
    /// them, and the merge stays commutative, associative and idempotent.
    ///
    /// One limit: a dropped session's activity and platform are forgotten
    /// with it, so if a later heartbeat (no activity) or an event naming no
    /// device revives that session id, its platform reads idle or unknown
    /// until its next activity or device, where a copy that never dropped it
    /// would still know them. Registers, `last_active_ms`, `status` and
    /// `device_count` are exact either way, and so are the platforms when
    /// a session's events all name its device.
    pub fn cap(&mut self, max: usize) {
        if self.sessions.len() <= max {
            return;
        }
        let mut order: Vec<(Millis, SessionId)> =
            self.sessions.iter().map(|(id, session)| (session.register.ts(), id.clone())).collect();
        order.sort_unstable();
        let excess = order.len() - max;
        for (_, session) in order.into_iter().take(excess) {
            self.sessions.remove(&session);
        }
    }

    /// The connected registers as the derivation reads them (DESIGN §4,
    /// §7.1): each one's last-seen time, newest activity and platform.
    /// Together with [`Presence::newest_tombstone`] and `last_active_ms`
    /// they are everything [`Presence::derive`] and [`Presence::platforms`]
    /// read, which is what lets [`super::read_model::ReadModel`] answer for them.
    pub fn connections(&self) -> impl Iterator<Item = Connection> + Clone + '_ {
        self.sessions.values().filter_map(|s| match s.register {
            Register::Connected(seen_ms) => Some(Connection { seen_ms, active_ms: s.active_ms, platform: s.platform }),
            Register::Disconnected(_) => None,
        })
    }

    /// The time of the newest tombstone (`None` without one): the only
    /// thing the derivation reads of disconnected registers.
    pub fn newest_tombstone(&self) -> Option<Millis> {
        self.sessions
            .values()
            .filter_map(|s| match s.register {
                Register::Disconnected(at) => Some(at),
                Register::Connected(_) => None,
            })
            .max()
    }

    /// Connected sessions heard from within `SESSION_TTL` of `now`.
    pub fn device_count(&self, now: Millis, rules: &Rules) -> u32 {
        derivation::device_count(self.connections(), now, rules)
    }

    /// When the last session ended: the newest tombstone, or the moment a
    /// silent session passed `SESSION_TTL`. `None` with no registers at all.
    fn ended_at(&self, rules: &Rules) -> Option<Millis> {
        derivation::ended_at(self.connections(), self.newest_tombstone(), rules)
    }

    /// Each platform's status at `now` (DESIGN §7.1): the rules of §4
    /// applied to that platform's live sessions alone: `online` while the
    /// newest activity of one of them is at most `IDLE_AFTER` old, else
    /// `idle`. A
    /// platform with no live session is absent. Sessions with no platform
    /// count for `status` only.
    pub fn platforms(&self, now: Millis, rules: &Rules) -> Platforms {
        derivation::platforms(self.connections(), now, rules)
    }

    /// The true status at `now`.
    pub fn derive(&self, now: Millis, rules: &Rules) -> View {
        derivation::derive(self.connections(), self.newest_tombstone(), self.last_active_ms, now, rules)
    }

    /// The earliest time after `now` at which [`Presence::derive`] may answer
    /// differently without any new event, or `None` if it never will. It
    /// may be early (a second device expiring changes only the count), never
    /// late: the idle scanner wakes for each user at this time.
    pub fn next_change_after(&self, now: Millis, rules: &Rules) -> Option<Millis> {
        let live = self.device_count(now, rules) > 0;
        let grace_end = self
            .ended_at(rules)
            .filter(|_| rules.offline_grace_ms > 0)
            .map(|ended| ended.saturating_add(rules.offline_grace_ms))
            .filter(|end| *end > now);
        if !live && grace_end.is_none() {
            // Offline for good: only a new event can change anything.
            return None;
        }
        let idle_at = self.last_active_ms.map(|active| active.saturating_add(rules.idle_after_ms).saturating_add(1));
        let expiries = self.connections().map(|c| derivation::silent_end(c.seen_ms, rules));
        idle_at.into_iter().chain(expiries).chain(grace_end).filter(|t| *t > now).min()
    }
}

/// Everything the service keeps about a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    pub presence: Presence,
    pub visibility: Visibility,
    /// The manual status as set (DESIGN §7.1), possibly expired already:
    /// readers apply the expiry at their own `now`.
    pub manual: Option<ManualStatus>,
}

impl UserState {
    /// Merges one event into the presence and, for a hidden user, into the
    /// frozen `last_active_ms` when the event predates the hiding, so a late
    /// old event counts the same as if it had come in time.
    pub fn apply(&mut self, event: &PresenceEvent) {
        self.presence.apply(event);
        if let Visibility::Hidden { since_ms, last_active_ms } = &mut self.visibility {
            if event.kind.is_activity() && event.ts_ms <= *since_ms {
                *last_active_ms = (*last_active_ms).max(Some(event.ts_ms));
            }
        }
    }

    /// Applies a preference saved at `now`. Hiding twice keeps the first
    /// `since_ms`, so a repeated request cannot move the frozen view.
    pub fn set_visible(&mut self, visible: bool, now: Millis) {
        self.visibility = match (visible, self.visibility) {
            (true, _) => Visibility::Visible,
            (false, hidden @ Visibility::Hidden { .. }) => hidden,
            (false, Visibility::Visible) => Visibility::hidden_since(now, self.presence.last_active_ms),
        };
    }

    /// The user's true status at `now`.
    pub fn derive(&self, now: Millis, rules: &Rules) -> View {
        self.presence.derive(now, rules)
    }

    /// What everyone but the user sees at `now`.
    pub fn public_view(&self, now: Millis, rules: &Rules) -> View {
        match self.visibility {
            Visibility::Visible => self.derive(now, rules),
            Visibility::Hidden { last_active_ms, .. } => View::gone(last_active_ms),
        }
    }

    /// The view for a reader: the truth for the user themself, the public
    /// view for anyone else, with the fields of DESIGN §7.1. The manual
    /// status shows while it holds at `now` and the status is not offline,
    /// and to the user themself always (they see what they set); the
    /// platforms while the status is not offline. A hidden user shows
    /// neither to others, since the public view is offline.
    pub fn view_for(&self, is_self: bool, now: Millis, rules: &Rules) -> View {
        derivation::view_for(
            is_self,
            now,
            self.visibility,
            self.manual.as_ref(),
            || self.derive(now, rules),
            || self.presence.platforms(now, rules),
        )
    }

    /// Forgets a manual status that no longer holds at `now`; every write
    /// does this, so stored records do not keep expired ones.
    pub fn drop_expired_manual(&mut self, now: Millis) {
        if self.manual.as_ref().is_some_and(|m| !m.is_live(now)) {
            self.manual = None;
        }
    }
}

#[cfg(test)]
mod tests;
