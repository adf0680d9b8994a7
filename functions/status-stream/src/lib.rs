//! The stream function (DESIGN §12): live status over an API Gateway
//! WebSocket API. `main.rs` wires clients; [`event`] reads the two kinds
//! of events it is invoked with (WebSocket proxy events and feed events);
//! [`handler`] answers them through the shared stream service; [`error`]
//! says what fails an invocation; [`measures`] is what a call records.

pub mod error;
pub mod event;
pub mod handler;
pub mod measures;
