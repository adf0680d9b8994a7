//! The service steps, generic over the ports: commit (the one write path),
//! aggregate (presence events), preferences (visibility, manual status),
//! outbox (the drain to the bus), feed (the push feed to the stream
//! function), read (bulk and single), scan, erasure.

pub mod aggregate;
pub mod audience;
pub mod commit;
pub mod erase;
pub mod feed;
pub mod outbox;
pub mod preferences;
pub mod read;
pub mod scan;
pub mod stream;

pub use commit::{Change, CommitError, CommitMode, CommitOutcome, Committer};
pub use erase::{EraseError, Erased};
pub use feed::Fed;
pub use outbox::Drained;
pub use read::{Found, Loaded, ReadError, ReadOutcome, Reader};
pub use stream::fanout::FanOut;
pub use stream::{Resumed, StreamError, StreamSettings, Streamer, Subscribed};

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod feed_tests;
#[cfg(test)]
mod tests;
