//! The derivation of DESIGN §4 and §7.1 over the facts it reads: the
//! connected registers, the newest tombstone and the newest activity. Both
//! the full record ([`super::Presence`]) and the read model
//! ([`super::read_model::ReadModel`]) answer through these functions and nothing
//! else, so the two can only differ in the facts they hand over.

use super::ids::Millis;
use super::manual::ManualStatus;
use super::platform::{Platform, Platforms};
use super::status::{Rules, Status};
use super::view::{View, Visibility};

/// One connected register as the derivation reads it (see
/// [`super::Presence::connections`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The register's `last_seen_ms` (epoch ms).
    pub seen_ms: Millis,
    /// The session's newest connect or activity (epoch ms), if any.
    pub active_ms: Option<Millis>,
    /// The session's platform, if its device named one.
    pub platform: Option<Platform>,
}

/// Whether a session last seen at `seen_ms` is still live at `now`: heard
/// from within `SESSION_TTL` (DESIGN §4).
pub(crate) fn is_live(seen_ms: Millis, now: Millis, rules: &Rules) -> bool {
    seen_ms >= now.saturating_sub(rules.session_ttl_ms)
}

/// The first instant a session last seen at `seen_ms` is no longer live.
pub(crate) fn silent_end(seen_ms: Millis, rules: &Rules) -> Millis {
    seen_ms.saturating_add(rules.session_ttl_ms).saturating_add(1)
}

/// The live sessions among `connections` at `now`.
pub(crate) fn device_count(connections: impl Iterator<Item = Connection>, now: Millis, rules: &Rules) -> u32 {
    let live = connections.filter(|c| is_live(c.seen_ms, now, rules)).count();
    u32::try_from(live).unwrap_or(u32::MAX)
}

/// When the last session ended: the newest tombstone, or the moment a
/// silent session passed `SESSION_TTL`, whichever is later. `None` with no
/// registers at all.
pub(crate) fn ended_at(
    connections: impl Iterator<Item = Connection>,
    newest_tombstone: Option<Millis>,
    rules: &Rules,
) -> Option<Millis> {
    connections.map(|c| silent_end(c.seen_ms, rules)).max().max(newest_tombstone)
}

/// Each platform's status at `now` from the connected sessions (see
/// [`super::Presence::platforms`]).
pub(crate) fn platforms(connections: impl Iterator<Item = Connection>, now: Millis, rules: &Rules) -> Platforms {
    let mut live = [false; 3];
    let mut active: [Option<Millis>; 3] = [None; 3];
    for connection in connections {
        let Some(platform) = connection.platform else { continue };
        if is_live(connection.seen_ms, now, rules) {
            let slot = platform as usize;
            live[slot] = true;
            active[slot] = active[slot].max(connection.active_ms);
        }
    }
    let mut out = Platforms::default();
    for platform in Platform::ALL {
        let slot = platform as usize;
        if live[slot] {
            out.set(platform, Some(activity_status(active[slot], now, rules)));
        }
    }
    out
}

/// The true status at `now` (see [`super::Presence::derive`]).
pub(crate) fn derive(
    connections: impl Iterator<Item = Connection> + Clone,
    newest_tombstone: Option<Millis>,
    last_active_ms: Option<Millis>,
    now: Millis,
    rules: &Rules,
) -> View {
    let device_count = device_count(connections.clone(), now, rules);
    let status = if device_count > 0 {
        activity_status(last_active_ms, now, rules)
    } else {
        match ended_at(connections, newest_tombstone, rules) {
            Some(ended) if rules.offline_grace_ms > 0 && now < ended.saturating_add(rules.offline_grace_ms) => {
                activity_status(last_active_ms, now, rules)
            }
            _ => Status::Offline,
        }
    };
    View { status, last_active_ms, device_count, manual: None, platforms: None, last_seen: None }
}

/// The view for a reader (see [`super::UserState::view_for`]) from the parts it
/// reads: the truth and the platforms, computed only when they show.
pub(crate) fn view_for(
    is_self: bool,
    now: Millis,
    visibility: Visibility,
    manual: Option<&ManualStatus>,
    truth: impl FnOnce() -> View,
    platforms: impl FnOnce() -> Platforms,
) -> View {
    let mut view = match visibility {
        Visibility::Hidden { last_active_ms, .. } if !is_self => View::gone(last_active_ms),
        _ => truth(),
    };
    if view.status != Status::Offline {
        view.platforms = Some(platforms());
    }
    if view.status != Status::Offline || is_self {
        view.manual = ManualStatus::live_at(manual, now).cloned();
    }
    view
}

/// `online` while `last_active_ms` is at most `IDLE_AFTER` old at `now`
/// (exactly `IDLE_AFTER` still counts), else `idle` (DESIGN §4): the one
/// home of the idle rule, for the user and for each platform.
pub(crate) fn activity_status(last_active_ms: Option<Millis>, now: Millis, rules: &Rules) -> Status {
    match last_active_ms {
        Some(active) if active >= now.saturating_sub(rules.idle_after_ms) => Status::Online,
        _ => Status::Idle,
    }
}
