//! The idle scanner function: one EventBridge schedule per shard turns
//! stale users idle or offline, repairs the cache and announces the
//! transitions. `main.rs` wires clients; [`handler`] translates; [`error`]
//! says what fails an invocation; [`edge`] is one invocation as the runtime
//! makes it, with its trace span and metrics.

pub mod edge;
pub mod error;
pub mod handler;
