//! MSK events as the event source hands them to the aggregator (DESIGN §9):
//! the one builder of test batches, for the integration tests, the
//! end-to-end test and the benchmark.
//!
//! Records go on topic `presence.updates`, grouped by partition under
//! `presence.updates-<partition>`, at offsets 0, 1, ... in the order given;
//! keys and values are base64-encoded, as MSK sends them.

use std::collections::BTreeMap;

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use status_shared::domain::Millis;

/// The topic every built batch is on.
pub const TOPIC: &str = "presence.updates";

/// How many partitions built batches spread records over by user.
pub const PARTITIONS: u64 = 4;

/// One record of a batch, before encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub partition: u64,
    /// The raw key, or `None` for a record without one.
    pub key: Option<String>,
    /// The raw value, or `None` for a record without one.
    pub value: Option<String>,
    /// The broker's timestamp, epoch ms.
    pub timestamp: Millis,
}

impl Record {
    /// A record of `value` keyed, as producers key it, by the `user_id`
    /// it names, on that user's partition; with no key, on partition 0,
    /// when it names none (as a malformed value may not).
    pub fn value(value: impl Into<String>) -> Self {
        let value = value.into();
        let user = serde_json::from_str::<Value>(&value).ok().and_then(|v| v["user_id"].as_u64());
        Self {
            partition: user.unwrap_or(0) % PARTITIONS,
            key: user.map(|u| u.to_string()),
            value: Some(value),
            ..Self::default()
        }
    }

    /// A record of `value` keyed by `user`, on the user's partition, as
    /// producers key by user id.
    pub fn keyed(user: u64, value: impl Into<String>) -> Self {
        Self { partition: user % PARTITIONS, key: Some(user.to_string()), value: Some(value.into()), timestamp: 0 }
    }

    /// This record with the raw key `key` (or none).
    pub fn with_key(self, key: Option<&str>) -> Self {
        Self { key: key.map(str::to_owned), ..self }
    }

    /// This record on partition `partition`.
    pub fn on_partition(self, partition: u64) -> Self {
        Self { partition, ..self }
    }

    /// This record stamped `timestamp` (epoch ms) by the broker.
    pub fn at(self, timestamp: Millis) -> Self {
        Self { timestamp, ..self }
    }
}

/// The MSK event carrying `records`, as the event source delivers it.
pub fn msk_event(records: impl IntoIterator<Item = Record>) -> KafkaEvent {
    let mut partitions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (offset, record) in records.into_iter().enumerate() {
        partitions.entry(format!("{TOPIC}-{}", record.partition)).or_default().push(json!({
            "topic": TOPIC,
            "partition": record.partition,
            "offset": offset,
            "timestamp": record.timestamp,
            "timestampType": "CREATE_TIME",
            "key": record.key.map(|k| STANDARD.encode(k)),
            "value": record.value.map(|v| STANDARD.encode(v)),
            "headers": []
        }));
    }
    serde_json::from_value(json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/presence/abc",
        "bootstrapServers": "b-1.presence:9098",
        "records": partitions
    }))
    .expect("a valid MSK event")
}

/// An MSK event of raw record values, each on its user's partition.
pub fn kafka_event(values: &[String]) -> KafkaEvent {
    msk_event(values.iter().map(Record::value))
}

/// [`kafka_event`] for well-formed events.
pub fn kafka_batch(events: &[Value]) -> KafkaEvent {
    msk_event(events.iter().map(|event| Record::value(event.to_string())))
}
