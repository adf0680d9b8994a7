//! Live status over WebSocket (DESIGN §12), the pure part: what a viewer is
//! sent of a user ([`entry`]), the server frames and their 32,768-byte
//! split ([`frame`]), the client messages and their bounds ([`message`]),
//! the resume cursor ([`cursor`]), the rule for holding back activity
//! ([`hold`]), a connection and who holds it ([`connection`]) and the
//! sizes it is bounded by ([`limits`]). No I/O and no clock.

pub mod connection;
pub mod cursor;
pub mod entry;
pub mod frame;
pub mod hold;
pub mod limits;
pub mod message;

pub use connection::{ConnectionId, Viewer, CONNECTION_LAPSE_MS};
pub use cursor::Cursor;
pub use entry::{Entry, Next};
pub use frame::{DataKind, ErrorCode};
pub use limits::{MAX_FRAME_BYTES, MAX_IDS_PER_MESSAGE, MAX_MESSAGE_BYTES};
pub use message::{ClientMessage, Refusal};

#[cfg(test)]
mod tests;
