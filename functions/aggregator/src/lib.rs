//! The aggregator function: MSK batches of presence events into durable,
//! convergent user state. `main.rs` wires clients; [`decode`] translates a
//! batch into events and dead letters; [`handler`] hands them to the write
//! path; [`error`] says what fails an invocation; [`edge`] is one invocation
//! as the runtime makes it, with its trace span and metrics.

pub mod decode;
pub mod edge;
pub mod error;
pub mod handler;
