//! The canonical status (`online | idle | offline`) and the timing rules it
//! is derived under (DESIGN §4, §11): the vocabulary every other module of
//! the domain speaks, so it depends on none of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The timing rules of section 4, all in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// No activity for longer than this means idle.
    pub idle_after_ms: i64,
    /// A session not heard from for longer than this is gone.
    pub session_ttl_ms: i64,
    /// How long a user whose last session ended keeps their previous status.
    pub offline_grace_ms: i64,
    /// The most session registers a user keeps (`MAX_SESSIONS`, DESIGN §6);
    /// beyond it the oldest are dropped, see [`super::Presence::cap`].
    pub max_sessions: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self { idle_after_ms: 300_000, session_ttl_ms: 1_800_000, offline_grace_ms: 0, max_sessions: 64 }
    }
}

impl Rules {
    /// How long a register is kept after its timestamp. A tombstone must
    /// outlive any late duplicate of the connect it beat (`SESSION_TTL`), and
    /// every register must outlive the grace that its end may start.
    pub fn retention_ms(&self) -> i64 {
        self.session_ttl_ms.saturating_add(self.offline_grace_ms)
    }
}

/// The canonical status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Idle,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Idle => "idle",
            Self::Offline => "offline",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "online" => Ok(Self::Online),
            "idle" => Ok(Self::Idle),
            "offline" => Ok(Self::Offline),
            _ => Err(()),
        }
    }
}
