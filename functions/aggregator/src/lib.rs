//! The aggregator function: MSK batches of presence events into durable,
//! convergent user state. `main.rs` wires clients; [`handler`] translates;
//! [`error`] says what fails an invocation.

pub mod error;
pub mod handler;
