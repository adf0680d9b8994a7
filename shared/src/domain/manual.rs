//! A user's manual status (DESIGN §7.1): `dnd`, `busy` or `away`, with an
//! optional message and an optional exact expiry. This module is the one
//! home of the rules that say what a valid manual status is and when one is
//! still shown; nothing here does I/O or reads a clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::Millis;

/// The most characters (Unicode scalar values, not bytes) a message may
/// hold (DESIGN §7.1).
pub const MAX_MESSAGE_CHARS: usize = 100;

/// What the user says about themself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManualState {
    Dnd,
    Busy,
    Away,
}

impl ManualState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dnd => "dnd",
            Self::Busy => "busy",
            Self::Away => "away",
        }
    }
}

impl fmt::Display for ManualState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ManualState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "dnd" => Ok(Self::Dnd),
            "busy" => Ok(Self::Busy),
            "away" => Ok(Self::Away),
            _ => Err(()),
        }
    }
}

/// A manual status as stored and as shown: the contract's
/// `{"state", "message", "expires_at_ms"}` (DESIGN §7.1), with `null` for
/// an absent message or expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualStatus {
    pub state: ManualState,
    pub message: Option<String>,
    /// Epoch ms; shown while `now < expires_at_ms` (exclusive).
    pub expires_at_ms: Option<Millis>,
}

/// Why a requested manual status is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    #[error("message has {0} characters; at most {MAX_MESSAGE_CHARS} are allowed")]
    MessageTooLong(usize),
    #[error("expires_at_ms {expires_at_ms} is not in the future (now is {now})")]
    ExpiryNotInFuture { expires_at_ms: Millis, now: Millis },
}

impl ManualStatus {
    /// A manual status requested at `now`, checked against DESIGN §7.1:
    /// the message is at most [`MAX_MESSAGE_CHARS`] characters, and an
    /// expiry must be later than `now` (one at `now` would never show).
    pub fn new(
        state: ManualState,
        message: Option<String>,
        expires_at_ms: Option<Millis>,
        now: Millis,
    ) -> Result<Self, ManualError> {
        if let Some(text) = &message {
            let chars = text.chars().count();
            if chars > MAX_MESSAGE_CHARS {
                return Err(ManualError::MessageTooLong(chars));
            }
        }
        if let Some(expires_at_ms) = expires_at_ms {
            if expires_at_ms <= now {
                return Err(ManualError::ExpiryNotInFuture { expires_at_ms, now });
            }
        }
        Ok(Self { state, message, expires_at_ms })
    }

    /// Whether it still holds at `now`: the expiry is exclusive, so at
    /// `now >= expires_at_ms` it is gone on every path, whatever any job
    /// did (DESIGN §7.1).
    pub fn is_live(&self, now: Millis) -> bool {
        self.expires_at_ms.is_none_or(|end| now < end)
    }

    /// `self` if it still holds at `now`.
    pub fn live_at(this: Option<&Self>, now: Millis) -> Option<&Self> {
        this.filter(|m| m.is_live(now))
    }
}

/// A change of the announced manual status, to be published as
/// `manual_status_changed` (DESIGN §8): start (`from` null), change, clear
/// or expiry (`to` null).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualTransition {
    pub from: Option<ManualStatus>,
    pub to: Option<ManualStatus>,
    pub at_ms: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_764_270_000_000;

    #[test]
    fn a_message_is_measured_in_characters_not_bytes() {
        let hundred = "é".repeat(100);
        assert_eq!(hundred.len(), 200, "two bytes each");
        assert!(ManualStatus::new(ManualState::Dnd, Some(hundred), None, NOW).is_ok());
        let over = "é".repeat(101);
        assert_eq!(ManualStatus::new(ManualState::Dnd, Some(over), None, NOW), Err(ManualError::MessageTooLong(101)));
    }

    #[test]
    fn an_expiry_must_be_later_than_now() {
        assert!(ManualStatus::new(ManualState::Busy, None, Some(NOW + 1), NOW).is_ok());
        assert!(ManualStatus::new(ManualState::Busy, None, Some(NOW), NOW).is_err());
        assert!(ManualStatus::new(ManualState::Busy, None, Some(NOW - 1), NOW).is_err());
    }

    #[test]
    fn expiry_is_exclusive() {
        let m = ManualStatus::new(ManualState::Away, None, Some(NOW + 10), NOW).unwrap();
        assert!(m.is_live(NOW + 9));
        assert!(!m.is_live(NOW + 10));
        assert!(ManualStatus { expires_at_ms: None, ..m }.is_live(i64::MAX));
    }

    #[test]
    fn states_parse_and_print_as_the_contract_names() {
        for s in ["dnd", "busy", "away"] {
            assert_eq!(s.parse::<ManualState>().unwrap().as_str(), s);
        }
        assert!("DND".parse::<ManualState>().is_err());
        assert!("offline".parse::<ManualState>().is_err());
    }
}
