//! The status API function: bulk and single reads, the public cached read,
//! and the visibility preference, behind API Gateway (HTTP API, payload v2).
//! `main.rs` wires clients; [`request`] reads API Gateway events;
//! [`handler`] routes and answers; [`error`] is the table of refusals.

pub mod error;
pub mod handler;
pub mod request;
