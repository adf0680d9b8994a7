//! DynamoDB: the cache-repair buffer (DESIGN §6) in `repair`, and the
//! dead-letter table for malformed presence records (DESIGN §3) in
//! `dead_letter`, each module with its table's schema; `batch` is the
//! batched writing and item reading both share.

mod batch;
mod dead_letter;
mod repair;

pub use dead_letter::{DynamoDeadLetters, DEAD_LETTER_VALUE_MAX};
pub use repair::DynamoRepairBuffer;
