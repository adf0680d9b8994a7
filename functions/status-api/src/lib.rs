//! The status API function: bulk and single reads, the public cached read,
//! and the visibility preference, behind API Gateway (HTTP API, payload v2).
//! `main.rs` wires clients; [`request`] reads API Gateway events;
//! [`handler`] routes and answers; [`error`] is the table of refusals;
//! [`edge`] is one invocation as the runtime makes it, with its trace span
//! and metrics.

pub mod edge;
pub mod error;
pub mod handler;
pub mod request;
