//! One integration-test binary against the real local servers; each module
//! is one area of the service.

mod aggregator;
mod api;
mod apigw_poster;
mod asyncapi;
mod authority;
mod aws_adapters;
mod bounds;
mod cluster;
mod deadlines;
mod e2e;
mod erasure;
mod feed;
mod kafka;
mod kafka_bad_input;
mod kafka_broker;
mod kafka_codecs;
mod kafka_lanes;
mod kafka_mariadb;
mod kafka_members;
mod kafka_pacing;
mod kafka_restart;
mod manual;
mod outbox;
mod push;
mod push_faults;
mod push_outage;
mod read_model;
mod readers;
mod samples;
mod scanner;
mod stores;
mod stream;
mod telemetry;
mod versions;
