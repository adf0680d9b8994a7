//! The service steps, generic over the ports: commit (the one write path),
//! aggregate (presence events), read (bulk and single), visibility,
//! erasure.

pub mod aggregate;
pub mod commit;
pub mod erase;
pub mod read;
pub mod scan;

pub use commit::{Change, CommitError, CommitMode, CommitOutcome, Committer, Drained};
pub use erase::{EraseError, Erased};
pub use read::{ReadError, ReadOutcome, Reader};

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
