//! One integration-test binary against the real local servers; each module
//! is one area of the service.

mod aggregator;
mod api;
mod aws_adapters;
mod cluster;
mod e2e;
mod kafka;
mod readers;
mod samples;
mod scanner;
mod stores;
