//! The stream function against real Redis and MariaDB, with a frame poster
//! that records what it is given (DESIGN §12).

mod fanout;
mod hold;
mod lost;
mod messages;
mod metrics;
mod props;
mod resume;
mod support;
