//! The service steps, generic over the ports: commit (the one write path),
//! aggregate (presence events), preferences (visibility, manual status),
//! outbox (the drain to the bus), read (bulk and single), scan, erasure.

pub mod aggregate;
pub mod commit;
pub mod erase;
pub mod outbox;
pub mod preferences;
pub mod read;
pub mod scan;
pub mod stream;

pub use commit::{Change, CommitError, CommitMode, CommitOutcome, Committer};
pub use erase::{EraseError, Erased};
pub use outbox::Drained;
pub use read::{Found, Loaded, ReadError, ReadOutcome, Reader};
pub use stream::{FanOut, StreamError, StreamSettings, Streamer};

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
