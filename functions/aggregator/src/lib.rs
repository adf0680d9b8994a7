//! The aggregator function: MSK batches of presence events into durable,
//! convergent user state. `main.rs` wires clients; [`handler`] translates;
//! [`error`] says what fails an invocation; [`edge`] is one invocation as
//! the runtime makes it, with its trace span and metrics.

pub mod edge;
pub mod error;
pub mod handler;
