//! What a reader is shown of a user at a given `now` ([`View`], made by
//! [`super::derive`]), and the preference that decides whether others see
//! it at all ([`Visibility`], DESIGN §4 property 4).

use super::ids::Millis;
use super::last_seen::LastSeen;
use super::manual::ManualStatus;
use super::platform::Platforms;
use super::status::Status;

/// Status derived at a given time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub status: Status,
    pub last_active_ms: Option<Millis>,
    pub device_count: u32,
    /// The manual status shown (DESIGN §7.1); `None` when there is none,
    /// it expired, the status is offline or the reader may not see it.
    pub manual: Option<ManualStatus>,
    /// Each platform's status (DESIGN §7.1); `None` when the field is
    /// omitted (offline, or hidden from the reader).
    pub platforms: Option<Platforms>,
    /// The coarse last seen a viewer left out of the user's audience
    /// receives under `"coarse"` (DESIGN §13); `None` for everyone else.
    pub last_seen: Option<LastSeen>,
}

impl View {
    /// How a user never seen reads.
    pub const UNKNOWN: View = View {
        status: Status::Offline,
        last_active_ms: None,
        device_count: 0,
        manual: None,
        platforms: None,
        last_seen: None,
    };

    /// How a user who left (or hid) with this last activity reads to
    /// others: `offline`, nothing else shown (DESIGN §4 property 4).
    pub fn gone(last_active_ms: Option<Millis>) -> View {
        View { last_active_ms, ..View::UNKNOWN }
    }
}

/// Whether others may see the user's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Visibility {
    #[default]
    Visible,
    /// Hidden since `since_ms` (the service clock when it was saved). Others
    /// see the user as gone offline then: `last_active_ms` is the newest
    /// connect or activity not later than `since_ms`.
    Hidden { since_ms: Millis, last_active_ms: Option<Millis> },
}

impl Visibility {
    pub fn is_visible(self) -> bool {
        matches!(self, Self::Visible)
    }

    /// Hidden since `since_ms` for a user whose newest activity is
    /// `last_active_ms`: the frozen view keeps the newest activity not later
    /// than `since_ms`. Only an event stamped ahead of the service clock can
    /// be later; its time is then capped at `since_ms`, the closest value
    /// the kept state can honestly give.
    pub fn hidden_since(since_ms: Millis, last_active_ms: Option<Millis>) -> Self {
        Self::Hidden { since_ms, last_active_ms: last_active_ms.map(|ts| ts.min(since_ms)) }
    }
}
