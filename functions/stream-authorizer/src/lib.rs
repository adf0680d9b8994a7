//! The WebSocket API's `$connect` authorizer (DESIGN §12): a Lambda REQUEST
//! authorizer that admits an end user holding a JWT from the same issuer
//! and audiences as the HTTP API's JWT authorizer, and names that user to
//! `StatusStreamFunction` through `requestContext.authorizer.user_id`.
//!
//! `main.rs` wires; [`config`] reads `JWT_ISSUER` and `JWT_AUDIENCE`;
//! [`request`] finds the token in the event; [`jwks`] keeps the issuer's
//! keys; [`verify`] checks a token; [`policy`] shapes the answer;
//! [`error`] says what refuses a connect and what the runtime reports;
//! [`handler`] is one invocation.

pub mod config;
pub mod error;
pub mod handler;
pub mod jwks;
pub mod policy;
pub mod request;
pub mod verify;
