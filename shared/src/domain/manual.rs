//! A user's manual status (DESIGN §7.1): `dnd`, `busy` or `away`, with an
//! optional message and an optional exact expiry. This module is the one
//! home of the rules that say what a valid manual status is and when one is
//! still shown; nothing here does I/O or reads a clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ids::{is_storable_instant, Millis, MAX_INSTANT_MS};

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
    /// Epoch ms; shown while `now < expires_at_ms` (exclusive). Never past
    /// [`MAX_INSTANT_MS`] (DESIGN §7): a stored value that is reads as
    /// damage, as the request that carries one is refused.
    #[serde(default, deserialize_with = "storable_expiry")]
    pub expires_at_ms: Option<Millis>,
}

/// Reads a stored `expires_at_ms`, refusing an instant no store can hold
/// (DESIGN §7), so a damaged copy fails its own decode instead of a later
/// write or scan of the user.
fn storable_expiry<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Millis>, D::Error> {
    let raw = Option::<Millis>::deserialize(deserializer)?;
    match raw {
        Some(ms) if !is_storable_instant(ms) => {
            Err(serde::de::Error::custom(format_args!("expires_at_ms {ms} is outside 0..={MAX_INSTANT_MS}")))
        }
        _ => Ok(raw),
    }
}

/// Why a requested manual status is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManualError {
    #[error("message has {0} characters; at most {MAX_MESSAGE_CHARS} are allowed")]
    MessageTooLong(usize),
    #[error("expires_at_ms {expires_at_ms} is not in the future (now is {now})")]
    ExpiryNotInFuture { expires_at_ms: Millis, now: Millis },
    #[error(
        "expires_at_ms {0} is past {MAX_INSTANT_MS} (9999-12-31T23:59:59.999Z), the last instant the service stores"
    )]
    ExpiryBeyondRange(Millis),
}

impl ManualStatus {
    /// A manual status requested at `now`, checked against DESIGN §7.1:
    /// the message is at most [`MAX_MESSAGE_CHARS`] characters, and an
    /// expiry must be later than `now` (one at `now` would never show) and
    /// no later than [`MAX_INSTANT_MS`] (DESIGN §7: every store must hold it
    /// exactly, so a microsecond value sent as ms is refused, not clamped).
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
            if expires_at_ms > MAX_INSTANT_MS {
                return Err(ManualError::ExpiryBeyondRange(expires_at_ms));
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
    fn an_expiry_must_fit_every_store() {
        assert!(ManualStatus::new(ManualState::Busy, None, Some(MAX_INSTANT_MS), NOW).is_ok());
        assert_eq!(
            ManualStatus::new(ManualState::Busy, None, Some(MAX_INSTANT_MS + 1), NOW),
            Err(ManualError::ExpiryBeyondRange(MAX_INSTANT_MS + 1))
        );
        let micros = NOW * 1000;
        assert_eq!(
            ManualStatus::new(ManualState::Dnd, None, Some(micros), NOW),
            Err(ManualError::ExpiryBeyondRange(micros))
        );
        assert!(ManualStatus::new(ManualState::Dnd, None, Some(i64::MAX), NOW).is_err());
    }

    #[test]
    fn a_stored_expiry_past_the_range_reads_as_damage() {
        let ok = format!(r#"{{"state":"dnd","message":null,"expires_at_ms":{MAX_INSTANT_MS}}}"#);
        assert!(serde_json::from_str::<ManualStatus>(&ok).is_ok());
        let far = r#"{"state":"dnd","message":null,"expires_at_ms":3000000000000000}"#;
        assert!(serde_json::from_str::<ManualStatus>(far).is_err());
        let negative = r#"{"state":"dnd","message":null,"expires_at_ms":-1}"#;
        assert!(serde_json::from_str::<ManualStatus>(negative).is_err());
        let none = r#"{"state":"dnd","message":null}"#;
        assert_eq!(serde_json::from_str::<ManualStatus>(none).ok().map(|m| m.expires_at_ms), Some(None));
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
