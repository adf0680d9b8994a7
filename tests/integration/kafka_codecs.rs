//! Compressed records (DESIGN §9 "compression"): a record compressed with
//! each codec Kafka producers use is read by the poller like a plain one,
//! against the real local broker.

use local_stack::kafka::produce::{presence_value, PARTITIONER};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use status_tests::kafka::{bootstrap_servers, TestTopic};

use crate::kafka_lanes::{start, Lanes};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

#[tokio::test(flavor = "multi_thread")]
async fn records_compressed_with_every_codec_are_read_like_plain_ones() {
    let topic = TestTopic::new(1).await;
    let mut sent = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers())
            .set("partitioner", PARTITIONER)
            .set("compression.codec", *codec)
            .create()
            .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
        let user = 500 + i as u64;
        // Repetitive enough that every codec really compresses it.
        let value = presence_value("activity", user, &codec.repeat(40), Some("ios"), i as i64);
        let key = user.to_string();
        producer
            .send(FutureRecord::to(&topic.name).key(&key).payload(&value), std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("the broker takes a {codec} record: {e}"));
        sent.push(value);
    }
    let function = Lanes::default();
    let poller = start(&topic, topic.settings(), &format!("{}-member", topic.group), function.clone());
    function.wait_until("one record per codec", |a| a.len() >= CODECS.len()).await;
    poller.stop().await;
    let values = function.values.lock().expect("not poisoned").clone();
    assert_eq!(values, sent, "each codec's record, in order, byte for byte");
}
