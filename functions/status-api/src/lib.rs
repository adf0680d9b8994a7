//! The status API function: bulk and single reads, the public cached read,
//! and the visibility preference, behind API Gateway (HTTP API, payload v2).
//! `main.rs` wires clients; [`request`] translates API Gateway requests;
//! [`handler`] routes and answers.

pub mod handler;
pub mod request;
