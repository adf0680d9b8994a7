//! Identifiers parsed once at the edge, so nothing past it handles a raw
//! integer or string that might break the contract's ranges.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Epoch milliseconds, the unit of every timestamp in the service.
pub type Millis = i64;

/// The last instant every store can hold exactly: `9999-12-31
/// 23:59:59.999` UTC, where SQL's `DATETIME(3)` ends (DESIGN §7). No
/// instant the service accepts or reads back from a store lies past it.
pub const MAX_INSTANT_MS: Millis = 253_402_300_799_999;

/// Whether `ms` is an instant every store holds exactly: from the epoch
/// (no event or clock of this service is earlier) to [`MAX_INSTANT_MS`]
/// (DESIGN §7). Decoders of stored state treat anything else as damage.
pub fn is_storable_instant(ms: Millis) -> bool {
    (0..=MAX_INSTANT_MS).contains(&ms)
}

/// A user id in the contract's range `1 ..= 2^63 - 1`, so it fits a signed
/// `BIGINT` column and a Redis decimal alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct UserId(u64);

/// Why a user id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id must be an integer from 1 to 9223372036854775807")]
    OutOfRange,
}

impl UserId {
    /// The largest id the contract allows (`2^63 - 1`).
    pub const MAX: u64 = i64::MAX as u64;

    pub fn new(raw: u64) -> Result<Self, UserIdError> {
        if (1..=Self::MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(UserIdError::OutOfRange)
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The signed form stored in SQL; lossless because of the range check.
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// The shard that owns this user's entry in the per-shard sorted sets.
    pub fn shard(self, shards: u32) -> u32 {
        (self.0 % u64::from(shards.max(1))) as u32
    }
}

impl TryFrom<u64> for UserId {
    type Error = UserIdError;
    fn try_from(raw: u64) -> Result<Self, Self::Error> {
        Self::new(raw)
    }
}

impl From<UserId> for u64 {
    fn from(id: UserId) -> u64 {
        id.0
    }
}

impl FromStr for UserId {
    type Err = UserIdError;
    /// Accepts plain decimal digits only: no sign, no spaces, no leading `+`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UserIdError::OutOfRange);
        }
        let raw: u64 = s.parse().map_err(|_| UserIdError::OutOfRange)?;
        Self::new(raw)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One connection's id, 1 to 128 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

/// Why a session id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    #[error("session_id must be 1 to 128 bytes, got {0}")]
    Length(usize),
}

impl SessionId {
    pub const MAX_BYTES: usize = 128;

    pub fn new(raw: impl Into<String>) -> Result<Self, SessionIdError> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > Self::MAX_BYTES {
            return Err(SessionIdError::Length(raw.len()));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = SessionIdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::new(raw)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_instants_end_where_sql_datetime_ends() {
        assert!(is_storable_instant(0));
        assert!(is_storable_instant(MAX_INSTANT_MS));
        assert!(!is_storable_instant(MAX_INSTANT_MS + 1));
        assert!(!is_storable_instant(-1));
        let last = chrono::DateTime::from_timestamp_millis(MAX_INSTANT_MS).map(|d| d.to_rfc3339());
        assert_eq!(last.as_deref(), Some("9999-12-31T23:59:59.999+00:00"));
    }

    #[test]
    fn user_id_range_is_one_to_i64_max() {
        assert!(UserId::new(0).is_err());
        assert!(UserId::new(1).is_ok());
        assert!(UserId::new(UserId::MAX).is_ok());
        assert!(UserId::new(UserId::MAX + 1).is_err());
    }

    #[test]
    fn user_id_text_must_be_plain_decimal() {
        assert_eq!("42".parse::<UserId>().unwrap().get(), 42);
        for bad in ["", "0", "-1", "+1", " 1", "1.0", "abc", "9223372036854775808", "99999999999999999999"] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn session_id_is_one_to_128_bytes() {
        assert!(SessionId::new("").is_err());
        assert!(SessionId::new("a".repeat(128)).is_ok());
        assert_eq!(SessionId::new("é".repeat(65)), Err(SessionIdError::Length(130)));
    }

    #[test]
    fn shard_is_id_modulo_shards() {
        assert_eq!(UserId::new(42).unwrap().shard(16), 10);
        assert_eq!(UserId::new(7).unwrap().shard(16), 7);
    }
}
