//! Publishing presence events as producers do (DESIGN §3): key = the user
//! id as a decimal string, partitioned by Kafka's default murmur2
//! partitioner (Java's client), so one partition owns a user as in
//! production. Also the `produce` command people use from the README.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde_json::json;

/// How long a record may wait for the broker before its send fails: long
/// enough for a broker restart, short enough that a missing broker is
/// reported in seconds rather than librdkafka's default five minutes.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// librdkafka's name for Java's default partitioner: murmur2 of the key,
/// random partition for records without one.
pub const PARTITIONER: &str = "murmur2_random";

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A producer of presence events to one topic.
#[derive(Clone)]
pub struct PresenceProducer {
    producer: FutureProducer,
    topic: String,
}

impl PresenceProducer {
    /// A producer to `topic` on `servers`. `linger_ms` trades latency for
    /// batching: 0 sends each record at once (people, tests), a few ms lets
    /// a load test fill batches.
    pub fn new(servers: &str, topic: &str, linger_ms: u32) -> Result<Self, KafkaError> {
        Self::compressed(servers, topic, linger_ms, "none")
    }

    /// [`Self::new`] with the producer's `compression.type`: `none`,
    /// `gzip`, `snappy`, `lz4` or `zstd` (the codecs of DESIGN §9; any
    /// other name fails here, from librdkafka). Each batch of records is
    /// compressed as a whole, as gateway producers do under load.
    pub fn compressed(servers: &str, topic: &str, linger_ms: u32, codec: &str) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("partitioner", PARTITIONER)
            .set("linger.ms", linger_ms.to_string())
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .set("compression.type", codec)
            .create()?;
        Ok(Self { producer, topic: topic.to_owned() })
    }

    /// Sends one record keyed by `user_id` (decimal), with `headers`, and
    /// waits until the broker has it.
    pub async fn send(&self, user_id: u64, value: &[u8], headers: &[(&str, &[u8])]) -> Result<Delivered, KafkaError> {
        let key = user_id.to_string();
        self.send_keyed(Some(&key), value, headers).await
    }

    /// Queues one record keyed by `user_id` without waiting for the broker,
    /// for load: the future says later whether it was delivered. Fails at
    /// once only when librdkafka's queue is full.
    pub fn enqueue(&self, user_id: u64, value: &[u8]) -> Result<DeliveryFuture, KafkaError> {
        let key = user_id.to_string();
        let record = FutureRecord::<str, [u8]>::to(&self.topic).payload(value).key(&key);
        self.producer.send_result(record).map_err(|(error, _)| error)
    }

    /// Sends one record with any key (or none), for tests of records
    /// producers should not send.
    pub async fn send_keyed(
        &self,
        key: Option<&str>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Delivered, KafkaError> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, bytes) in headers {
            owned = owned.insert(Header { key: name, value: Some(*bytes) });
        }
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).payload(value).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.producer.send(record, DELIVERY_TIMEOUT).await {
            Ok(delivery) => Ok(Delivered { partition: delivery.partition, offset: delivery.offset }),
            Err((error, _)) => Err(error),
        }
    }
}

/// A presence event's JSON value (DESIGN §3).
pub fn presence_value(kind: &str, user_id: u64, session_id: &str, device: Option<&str>, ts_ms: i64) -> Vec<u8> {
    let mut value = json!({ "type": kind, "user_id": user_id, "session_id": session_id, "ts_ms": ts_ms });
    if let Some(device) = device {
        value["device"] = json!(device);
    }
    value.to_string().into_bytes()
}

/// The `produce` command's usage.
pub const USAGE: &str = "\
usage: online-status-local produce --user ID [--type session_connected] [--session ID] [--device NAME] [--ts-ms MS]

Publishes one presence event to KAFKA_TOPIC (default presence.updates) on
KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), keyed by the user id.
--type is session_connected, session_heartbeat, activity or session_disconnected;
--session defaults to `cli`, --ts-ms to now.
";

/// The `produce` command's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceArgs {
    pub user_id: u64,
    pub kind: String,
    pub session_id: String,
    pub device: Option<String>,
    pub ts_ms: Option<i64>,
}

impl ProduceArgs {
    /// Parses the arguments after `produce`. Values are checked by the
    /// aggregator as for any producer, so a bad `--type` reaches dead letters
    /// there; only what this command needs to build the record is checked.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut out = ProduceArgs {
            user_id: 0,
            kind: "session_connected".into(),
            session_id: "cli".into(),
            device: None,
            ts_ms: None,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--user" => out.user_id = value()?.parse().map_err(|_| "--user needs a positive integer".to_owned())?,
                "--type" => out.kind = value()?,
                "--session" => out.session_id = value()?,
                "--device" => out.device = Some(value()?),
                "--ts-ms" => out.ts_ms = Some(value()?.parse().map_err(|_| "--ts-ms needs an integer".to_owned())?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if out.user_id == 0 {
            return Err("--user is required (a positive integer)".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ProduceArgs, String> {
        ProduceArgs::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn produce_arguments_have_useful_defaults_and_need_a_user() {
        let args = parse(&["--user", "42", "--device", "ios"]).unwrap();
        assert_eq!((args.user_id, args.kind.as_str(), args.session_id.as_str()), (42, "session_connected", "cli"));
        assert_eq!(args.device.as_deref(), Some("ios"));
        assert!(parse(&["--type", "activity"]).unwrap_err().contains("--user"));
        assert!(parse(&["--user", "x"]).is_err());
        assert!(parse(&["--colour", "red"]).unwrap_err().contains("--colour"));
    }

    #[test]
    fn the_value_is_the_presence_event_contract() {
        let value: serde_json::Value = serde_json::from_slice(&presence_value("activity", 7, "s", None, 5)).unwrap();
        assert_eq!(value, json!({"type": "activity", "user_id": 7, "session_id": "s", "ts_ms": 5}));
    }
}
