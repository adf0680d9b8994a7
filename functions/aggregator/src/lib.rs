//! The aggregator function: MSK batches of presence events into durable,
//! convergent user state. `main.rs` wires clients; [`handler`] translates.

pub mod handler;
