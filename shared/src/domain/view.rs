//! What a reader is shown of a user at one `now` (DESIGN §4, §7, §7.1,
//! §13): the one shape every path answers in. No rule lives here; the
//! derivation, appear-offline and the audience each make or narrow one.

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
