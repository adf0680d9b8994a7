//! The dead-letter port (DESIGN §3, §7.1): where malformed presence
//! records are kept for people to look at, and how an erasure finds them.

use std::future::Future;

use super::error::RepairError;
use crate::domain::UserId;

/// The most users one dead letter lists (bytes: at most 20 digits each).
/// A presence record names one; a record naming more than this many is
/// not one, and only the first 1,000 it names can erase it (DESIGN §7.1).
pub const DEAD_LETTER_USERS_MAX: usize = 1_000;

/// A malformed record kept for people to look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    /// The stable reason code (`EventError::code`).
    pub code: String,
    /// The reason in words.
    pub reason: String,
    /// The record value as received (base64 text), cut to a safe size.
    pub value: Option<String>,
    /// Every user the record names (its key, a `user_id` in its value,
    /// JSON or not), each once, so an erasure of any of them finds it
    /// (DESIGN §7.1). Empty when it names none; at most
    /// [`DEAD_LETTER_USERS_MAX`] are kept by the store.
    pub users: Vec<UserId>,
    pub received_ms: i64,
}

/// Where malformed records go.
pub trait DeadLetters: Send + Sync {
    fn put(&self, letters: &[DeadLetter]) -> impl Future<Output = Result<(), RepairError>> + Send;
    /// Deletes every letter that names `user` (an erasure, DESIGN §7.1).
    fn forget(&self, user: UserId) -> impl Future<Output = Result<(), RepairError>> + Send;
}
