//! Creates the topic the poller reads, with `KAFKA_PARTITIONS` partitions:
//! brokers that auto-create topics give them one partition, which would
//! put every user in one partition.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How long topic creation and the metadata read after it may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the topic could not be made ready.
#[derive(Debug, thiserror::Error)]
#[error("cannot create topic {topic} on Kafka at {servers} (is the broker up? scripts/services.sh starts one)")]
pub struct TopicError {
    pub topic: String,
    pub servers: String,
    #[source]
    pub source: KafkaError,
}

/// Creates `topic` with `partitions` partitions (replication 1: one local
/// broker) unless it exists, and answers how many partitions it has. An
/// existing topic keeps its partitions, whatever `partitions` says.
pub async fn ensure_topic(servers: &str, topic: &str, partitions: i32) -> Result<usize, TopicError> {
    let error = |source| TopicError { topic: topic.to_owned(), servers: servers.to_owned(), source };
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", servers).create().map_err(error)?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin.create_topics([&new], &options).await.map_err(error)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(error(KafkaError::AdminOp(code))),
        }
    }
    // The metadata call blocks inside librdkafka, so it runs off the
    // async threads.
    let topic_owned = topic.to_owned();
    let counted = tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(Some(&topic_owned), ADMIN_TIMEOUT)?;
        Ok::<_, KafkaError>(metadata.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await
    .map_err(|_| error(KafkaError::Canceled))?;
    counted.map_err(error)
}

/// Deletes `topic`; for tests and benchmarks that made their own.
pub async fn delete_topic(servers: &str, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", servers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    admin.delete_topics(&[topic], &options).await?;
    Ok(())
}

/// A client that reads consumer group `group`'s committed offsets without
/// joining the group: what the event source mapping has finished, for
/// benchmarks and tests that wait for it.
pub struct GroupOffsets {
    consumer: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    topic: String,
}

impl GroupOffsets {
    pub fn new(servers: &str, group: &str, topic: &str) -> Result<Self, KafkaError> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Self { consumer: std::sync::Arc::new(consumer), topic: topic.to_owned() })
    }

    /// The committed offset (the next record to read) of each of
    /// `partitions`, in that order; -1 where the group has committed none.
    pub async fn committed(&self, partitions: &[i32]) -> Result<Vec<i64>, KafkaError> {
        use rdkafka::consumer::Consumer;
        let mut list = rdkafka::TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&self.topic, *partition);
        }
        let consumer = self.consumer.clone();
        let (topic, partitions) = (self.topic.clone(), partitions.to_vec());
        tokio::task::spawn_blocking(move || {
            let committed = consumer.committed_offsets(list, ADMIN_TIMEOUT)?;
            Ok(partitions
                .iter()
                .map(|p| match committed.find_partition(&topic, *p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(offset)) => offset,
                    _ => -1,
                })
                .collect())
        })
        .await
        .map_err(|_| KafkaError::Canceled)?
    }
}
