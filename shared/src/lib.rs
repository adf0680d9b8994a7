//! The online status service's shared library: the presence rules and
//! everything the three Lambda functions have in common.
//!
//! # Layout
//!
//! - [`domain`]: pure rules (events, registers, merge, status, visibility).
//! - [`config`]: typed configuration read once from the environment.
//! - [`ports`]: the small traits services depend on.
//! - [`adapters`]: Redis, MySQL, DynamoDB and EventBridge, the only code that
//!   knows a driver.
//! - [`services`]: aggregate, read and scan, generic over the ports.
//! - [`app`]: start-up wiring from a config to connected adapters;
//!   [`error`]: error text with its causes; [`telemetry`]: metrics as
//!   CloudWatch EMF lines; [`allocator`]: the allocator of the binaries
//!   that serve many small requests at once.

pub mod adapters;
pub mod allocator;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod ports;
pub mod services;
pub mod telemetry;
