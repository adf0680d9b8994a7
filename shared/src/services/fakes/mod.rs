//! In-memory fakes of the ports, for pure service tests of the write and
//! read paths' decisions (races, outages, no-ops). The adapters themselves
//! are tested against the real servers in `tests/`. One file a store:
//! `cache` (Redis), `store` (SQL), `aws` (DynamoDB, EventBridge, Lambda),
//! `audience` (both stores' except lists).

mod audience;
mod aws;
mod cache;
mod store;

pub use aws::{FakeDeadLetters, FakeFeed, FakePublisher, FakeRepair};
pub use cache::FakeCache;
pub use store::FakeStore;
