//! Bad input through the real broker (DESIGN §3, §9): records producers
//! should not send, each on the one partition of its test's topic, ahead
//! of a good record. Each is malformed: a dead letter, with its stable
//! code, that changes nobody's status; and none stalls the partition, so
//! the good record behind them all is applied and nothing goes to the
//! on-failure queue. A record over the broker's size limit never gets in:
//! the producer is told so, and the partition flows on.

use std::time::Duration;

use local_stack::kafka::produce::{presence_value, Delivered, DELIVERY_TIMEOUT, PARTITIONER};
use rdkafka::bindings as rdsys;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use status_tests::kafka::{bootstrap_servers, KafkaStack};
use status_tests::stack::wall_clock_ms;

const WAIT: Duration = Duration::from_secs(60);

/// The broker's limit on one record batch (Kafka's `message.max.bytes`
/// default, 1 MiB less a little, and librdkafka's own default): a value
/// of 2 MiB is over it on any broker left at its defaults.
const OVER_THE_LIMIT: usize = 2 * 1024 * 1024;

/// A producer that lets records of up to 10 MB leave it, so the broker
/// itself judges their size.
fn lenient_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers())
        .set("partitioner", PARTITIONER)
        .set("message.max.bytes", "10000000")
        .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
        .create()
        .expect("a producer")
}

/// Sends a record with `key` and `value`, either of which may be absent.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    value: Option<&[u8]>,
) -> Result<Delivered, KafkaError> {
    let mut record = FutureRecord::<str, [u8]>::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    match producer.send(record, DELIVERY_TIMEOUT).await {
        Ok(d) => Ok(Delivered { partition: d.partition, offset: d.offset }),
        Err((error, _)) => Err(error),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tombstones_keyless_and_wrongly_keyed_records_are_dead_letters_and_stall_nothing() {
    let stack = KafkaStack::start(1).await;
    let topic = stack.topic.name.clone();
    let producer = lenient_producer();
    let now = wall_clock_ms();
    let connect = |user: u64| presence_value("session_connected", user, "s", Some("ios"), now);

    // Over the limit: refused at the door, so there is nothing to apply.
    let huge = presence_value("session_connected", 601, &"s".repeat(OVER_THE_LIMIT), Some("ios"), now);
    let refused = send(&producer, &topic, Some("601"), Some(&huge)).await;
    assert_eq!(
        refused.err().and_then(|e| e.rdkafka_error_code()),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "the producer is told the record is too large"
    );
    // A tombstone (a key, no value), a record with no key, one keyed by
    // another user, and one keyed by another spelling of its own user.
    let bad = [
        (send(&producer, &topic, Some("602"), None).await, "missing_value"),
        (send(&producer, &topic, None, Some(&connect(603))).await, "missing_key"),
        (send(&producer, &topic, Some("605"), Some(&connect(604))).await, "key_not_user_id"),
        (send(&producer, &topic, Some("0606"), Some(&connect(606))).await, "key_not_user_id"),
    ];
    let good = send(&producer, &topic, Some("607"), Some(&connect(607))).await.expect("the broker takes it");

    // The good record behind them all is applied: nothing stalled.
    stack.status_until(607, WAIT, |b| b["status"] == "online").await;
    let letters = stack.local.tables.dead_letters();
    for (delivered, code) in &bad {
        let at = delivered.as_ref().expect("the broker takes it");
        assert_eq!(at.partition, good.partition, "one partition");
        let mut letter = None;
        for _ in 0..100 {
            letter = letters.get(&topic, i64::from(at.partition), at.offset).await.expect("dynamodb answers");
            if letter.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let letter = letter.unwrap_or_else(|| panic!("no dead letter at {at:?}"));
        assert_eq!(letter.code, *code, "{letter:?}");
    }
    for user in [601, 602, 603, 604, 605, 606] {
        let (_, body) = stack.get(&format!("/v1/status/{user}")).await;
        assert_eq!(body["status"], "offline", "a malformed record changes nobody: {body}");
        assert_eq!(body["last_active_ms"], serde_json::Value::Null, "{body}");
    }
    assert!(stack.topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}

/// Headers whose first name is the bytes `name` (which need not be UTF-8)
/// and whose second is `trace`. rdkafka takes names as `&str`, so the odd
/// one goes in through librdkafka's C API, on the list `as_borrowed` points
/// at (rdkafka's borrowed headers are that list's own address).
fn headers_named(name: &[u8]) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(2);
    let list = headers.as_borrowed() as *const BorrowedHeaders as *mut rdsys::rd_kafka_headers_t;
    let value = b"v";
    // SAFETY: `list` is the live header list `headers` owns; librdkafka
    // copies the name and value it is given, with their lengths.
    let err = unsafe {
        rdsys::rd_kafka_header_add(list, name.as_ptr().cast(), name.len() as isize, value.as_ptr().cast(), 1)
    };
    assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers.insert(Header { key: "trace", value: Some(&b"t"[..]) })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_name_that_is_not_utf8_is_read_as_javas_client_reads_it_and_stalls_nothing() {
    let stack = KafkaStack::start(1).await;
    let topic = stack.topic.name.clone();
    let producer = lenient_producer();
    let now = wall_clock_ms();
    let value = presence_value("session_connected", 611, "s", Some("ios"), now);
    let odd = FutureRecord::<str, [u8]>::to(&topic).key("611").payload(&value).headers(headers_named(b"\xff\xfeA"));
    producer.send(odd, DELIVERY_TIMEOUT).await.map_err(|(e, _)| e).expect("the broker takes it");
    let good = presence_value("session_connected", 612, "s", Some("ios"), now);
    send(&producer, &topic, Some("612"), Some(&good)).await.expect("the broker takes it");

    // The record itself is a good event: its header name reads as
    // "\u{FFFD}\u{FFFD}A", as Java's client decodes it, and it is applied;
    // so is the one behind it on the same partition.
    stack.status_until(611, WAIT, |b| b["status"] == "online").await;
    stack.status_until(612, WAIT, |b| b["status"] == "online").await;
    assert!(stack.topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}
