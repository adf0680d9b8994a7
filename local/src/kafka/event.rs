//! Kafka records as the MSK event Lambda hands the function (DESIGN §3,
//! §9): records grouped under `topic-partition` in arrival order, key and
//! value base64, headers as `[{name: [signed bytes]}]`, `eventSource`
//! `aws:kafka`, the cluster's ARN and bootstrap servers.

use std::collections::BTreeMap;

use aws_lambda_events::encodings::MillisecondTimestamp;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{TimeZone, Utc};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::Timestamp;

/// The `eventSource` of every MSK event.
pub const EVENT_SOURCE: &str = "aws:kafka";

/// One partition's share of a batch: what the on-failure description and
/// the commit need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    /// The first and last offsets of the batch in this partition, inclusive.
    pub first_offset: i64,
    pub last_offset: i64,
    /// Records of this partition in the batch.
    pub records: usize,
}

/// Each partition's range in `messages`, in (topic, partition) order.
pub fn ranges(messages: &[OwnedMessage]) -> Vec<PartitionRange> {
    let mut out: BTreeMap<(String, i32), PartitionRange> = BTreeMap::new();
    for m in messages {
        out.entry((m.topic().to_owned(), m.partition()))
            .and_modify(|r| {
                r.first_offset = r.first_offset.min(m.offset());
                r.last_offset = r.last_offset.max(m.offset());
                r.records += 1;
            })
            .or_insert_with(|| PartitionRange {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                first_offset: m.offset(),
                last_offset: m.offset(),
                records: 1,
            });
    }
    out.into_values().collect()
}

/// The MSK event for `messages`, which are in the order the consumer
/// delivered them (so in offset order within each partition).
pub fn msk_event(messages: &[OwnedMessage], event_source_arn: &str, bootstrap_servers: &str) -> KafkaEvent {
    let mut event = KafkaEvent::default();
    event.event_source = Some(EVENT_SOURCE.to_owned());
    event.event_source_arn = Some(event_source_arn.to_owned());
    event.bootstrap_servers = Some(bootstrap_servers.to_owned());
    for m in messages {
        event.records.entry(format!("{}-{}", m.topic(), m.partition())).or_default().push(record(m));
    }
    event
}

/// `event` as the JSON Lambda sends: as `aws_lambda_events` writes it, but
/// with each record's `timestamp` a number of ms, as in Lambda's events
/// (the crate writes it as a string, and reads both).
pub fn msk_json(event: &KafkaEvent) -> Result<serde_json::Value, serde_json::Error> {
    let mut json = serde_json::to_value(event)?;
    if let Some(groups) = json.get_mut("records").and_then(serde_json::Value::as_object_mut) {
        for record in groups.values_mut().filter_map(serde_json::Value::as_array_mut).flatten() {
            let ms = record.get("timestamp").and_then(serde_json::Value::as_str).and_then(|t| t.parse::<i64>().ok());
            if let Some(ms) = ms {
                record["timestamp"] = ms.into();
            }
        }
    }
    Ok(json)
}

fn record(m: &OwnedMessage) -> KafkaRecord {
    let (timestamp_ms, timestamp_type) = match m.timestamp() {
        Timestamp::CreateTime(ms) => (ms, "CREATE_TIME"),
        Timestamp::LogAppendTime(ms) => (ms, "LOG_APPEND_TIME"),
        Timestamp::NotAvailable => (0, "NO_TIMESTAMP_TYPE"),
    };
    let mut record = KafkaRecord::default();
    record.topic = Some(m.topic().to_owned());
    record.partition = i64::from(m.partition());
    record.offset = m.offset();
    record.timestamp = MillisecondTimestamp(Utc.timestamp_millis_opt(timestamp_ms).single().unwrap_or_default());
    record.timestamp_type = Some(timestamp_type.to_owned());
    record.key = m.key().map(|k| STANDARD.encode(k));
    record.value = m.payload().map(|v| STANDARD.encode(v));
    record.headers = m.headers().map(|h| h.iter().map(header).collect()).unwrap_or_default();
    record
}

/// Lambda's limit on one invocation's payload: a batch stops growing
/// before its event would pass it (DESIGN §9), as the event source's own
/// batches do.
pub const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;

/// The bytes of the event's envelope (`eventSource`, its ARN, the
/// servers) and of one record's fields around its key, value and headers,
/// rounded up: what [`event_bytes`] adds to the encoded parts.
const ENVELOPE_BYTES: usize = 2048;
const RECORD_BYTES: usize = 512;

/// An upper bound on what `message` adds to an MSK event, in bytes: its
/// key and value in base64, each header's name and its bytes as signed
/// numbers (at most 5 characters each, `-128,`), and the record's fields.
pub fn event_bytes(message: &OwnedMessage) -> usize {
    let base64 = |n: usize| n.div_ceil(3) * 4;
    let headers: usize = message
        .headers()
        .map(|h| h.iter().map(|h| h.key.len() * 6 + 16 + h.value.map_or(0, <[u8]>::len) * 5).sum())
        .unwrap_or(0);
    base64(message.key().map_or(0, <[u8]>::len))
        + base64(message.payload().map_or(0, <[u8]>::len))
        + headers
        + RECORD_BYTES
}

/// Whether a batch whose records add `batch_bytes` (by [`event_bytes`])
/// may take one more that adds `next`: always for the first record.
pub fn fits(batch_bytes: usize, next: usize) -> bool {
    batch_bytes == 0 || ENVELOPE_BYTES + batch_bytes + next <= MAX_EVENT_BYTES
}

/// One header as Lambda gives it: a one-entry map from its name to its
/// bytes as Java's signed bytes (0x80..=0xff become -128..=-1), since the
/// MSK event is produced by a Java service. A header without a value has
/// no bytes.
fn header(h: rdkafka::message::Header<'_, &[u8]>) -> std::collections::HashMap<String, Vec<i8>> {
    let bytes = h.value.unwrap_or_default().iter().map(|b| i8::from_ne_bytes([*b])).collect();
    std::iter::once((h.key.to_owned(), bytes)).collect()
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn message(partition: i32, offset: i64, key: Option<&[u8]>, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            key.map(<[u8]>::to_vec),
            "presence.updates".into(),
            Timestamp::CreateTime(1_764_270_000_000),
            partition,
            offset,
            headers,
        )
    }

    #[test]
    fn event_bytes_bound_what_each_record_adds_to_the_event_as_sent() {
        let arn = "arn:aws:kafka:us-east-1:000000000000:cluster/online-status-local/presence.updates";
        let value = |n: usize, byte: u8| Some(vec![byte; n]);
        let headers = || {
            OwnedHeaders::new()
                .insert(Header { key: "trace\"\u{1}", value: Some(&[0x80u8; 300][..]) })
                .insert(Header::<&[u8]> { key: "empty", value: None })
        };
        let mut batch = Vec::new();
        for (i, (size, byte)) in [(0, 0u8), (1, b'{'), (2, 0xff), (1000, 0x00), (70_000, 0x22)].into_iter().enumerate()
        {
            let m = message(i as i32 % 3, i as i64, Some(b"18446744073709551615"), Some(headers()));
            batch.push(m.set_payload(value(size, byte)));
        }
        let bound: usize = batch.iter().map(event_bytes).sum::<usize>() + ENVELOPE_BYTES;
        let sent = serde_json::to_vec(&msk_json(&msk_event(&batch, arn, "127.0.0.1:9092,127.0.0.1:9093")).unwrap())
            .unwrap()
            .len();
        assert!(sent <= bound, "{sent} bytes sent, bound {bound}");
        assert!(bound < 2 * sent, "a bound, not a guess: {bound} for {sent}");
        assert!(fits(0, MAX_EVENT_BYTES * 2), "a first record always starts a batch");
        assert!(!fits(1, MAX_EVENT_BYTES));
        assert!(fits(MAX_EVENT_BYTES / 2, MAX_EVENT_BYTES / 2 - ENVELOPE_BYTES));
    }

    #[test]
    fn records_are_grouped_by_topic_partition_in_arrival_order() {
        let batch = [message(1, 7, None, None), message(0, 3, None, None), message(1, 8, None, None)];
        let event = msk_event(&batch, "arn:x", "127.0.0.1:9092");
        assert_eq!(event.event_source.as_deref(), Some("aws:kafka"));
        assert_eq!(event.bootstrap_servers.as_deref(), Some("127.0.0.1:9092"));
        let offsets: Vec<i64> = event.records["presence.updates-1"].iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [7, 8]);
        assert_eq!(event.records["presence.updates-0"][0].partition, 0);
        let ranges = ranges(&batch);
        assert_eq!((ranges[1].first_offset, ranges[1].last_offset, ranges[1].records), (7, 8, 2));
    }

    #[test]
    fn key_and_value_are_base64_and_header_bytes_are_signed() {
        let headers = OwnedHeaders::new().insert(Header { key: "trace", value: Some(&[0x01u8, 0x7f, 0x80, 0xff][..]) });
        let event = msk_event(&[message(0, 0, Some(b"42"), Some(headers))], "arn:x", "b");
        let json = msk_json(&event).unwrap();
        let record = &json["records"]["presence.updates-0"][0];
        assert_eq!(record["key"], "NDI=");
        assert_eq!(record["value"], "e30=");
        assert_eq!(record["headers"], serde_json::json!([{ "trace": [1, 127, -128, -1] }]));
        assert_eq!(record["timestampType"], "CREATE_TIME");
        assert_eq!(record["timestamp"], 1_764_270_000_000i64);
    }
}
