//! The status API function: bulk and single reads, the public cached read,
//! and the visibility preference, behind API Gateway (HTTP API, payload v2).
//! `main.rs` wires clients; [`request`] reads API Gateway events;
//! [`route`] matches a request's route; [`body`] validates its body;
//! [`handler`] answers each route through the services; [`response`] is
//! the answer's shape and the request limits; [`error`] is the table of
//! refusals; [`measures`] is what a call notes for its metrics; [`edge`] is
//! one invocation as the runtime makes it, with its trace span and
//! metrics. Imports run one way: edge → handler → (route, body, measures,
//! request, error → response).

pub mod audience;
pub mod body;
pub mod edge;
pub mod error;
pub mod handler;
pub mod measures;
pub mod request;
pub mod response;
pub mod route;
