//! The local MSK event source poller (DESIGN §9): reads the topic as the
//! consumer group, gathers a batch, calls the function with the MSK event,
//! and commits only once the function succeeded.
//!
//! Semantics kept from Lambda's MSK event source mapping:
//!
//! - a batch closes at `MSK_BATCH_SIZE` records or `MSK_BATCHING_WINDOW_MS`
//!   after its first record;
//! - a function error retries the same batch, whole; nothing after it is
//!   read meanwhile, so no later record of its partitions is applied first;
//! - after `MSK_MAX_RETRIES` retries, one description per partition of the
//!   batch (topic, partition, offset range) goes to the on-failure queue,
//!   and then the batch is committed and the poller moves on;
//! - offsets live in the broker under the consumer group, so a poller that
//!   died resumes at the last committed offset: at least once, never
//!   skipped.
//!
//! One poller reads every partition, as one Lambda poller does: a batch
//! being retried holds back its own partitions and, here, the others too.
//! The function is a [`BatchFunction`], so tests can inject one that fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::kafka::event::{msk_event, ranges, PartitionRange};
use crate::kafka::settings::KafkaSettings;

/// First pause before a retry; it doubles up to [`RETRY_DELAY_MAX`], so a
/// function that fails for a moment (a database restart) is not hammered.
pub const RETRY_DELAY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two attempts of one batch.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// The function behind the event source: `Ok` when it succeeded, `Err`
/// with its error message when the batch must be retried.
pub trait BatchFunction: Send + Sync + 'static {
    fn call(&self, event: &KafkaEvent) -> impl Future<Output = Result<(), String>> + Send;
}

/// Where descriptions of batches given up on go: the template's
/// `OnFailure` destination.
pub trait OnFailure: Send + Sync + 'static {
    fn send(&self, description: &serde_json::Value) -> impl Future<Output = Result<(), String>> + Send;
}

/// The SQS queue of the emulator that stands for `AggregatorFailureQueue`.
#[derive(Clone, Debug)]
pub struct SqsOnFailure {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl OnFailure for SqsOnFailure {
    async fn send(&self, description: &serde_json::Value) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(description.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}

/// Why the poller could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot read topic {topic} from Kafka at {servers} (is the broker up? scripts/services.sh starts one)")]
pub struct PollerError {
    pub topic: String,
    pub servers: String,
    #[source]
    pub source: Box<KafkaError>,
}

/// What a finished batch came to, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The function succeeded after this many attempts; offsets committed.
    Done { attempts: u32 },
    /// Every attempt failed; the descriptions went to the on-failure queue
    /// and the offsets were committed past the batch.
    GaveUp { attempts: u32 },
    /// Shutdown came first; nothing committed, the batch will be read again.
    Stopped,
}

/// The poller: one consumer in the group, one function, one destination.
pub struct Poller<F, D> {
    consumer: Arc<StreamConsumer>,
    settings: KafkaSettings,
    function: F,
    on_failure: D,
    event_source_arn: String,
}

impl<F: BatchFunction, D: OnFailure> Poller<F, D> {
    /// Joins the consumer group as static member `instance_id` and
    /// subscribes. A static member that restarts takes its partitions back
    /// at once instead of waiting out the session of its dead self.
    pub fn new(
        settings: KafkaSettings,
        instance_id: &str,
        function: F,
        on_failure: D,
        event_source_arn: String,
    ) -> Result<Self, PollerError> {
        let error = |source| PollerError {
            topic: settings.topic.clone(),
            servers: settings.bootstrap_servers.clone(),
            source: Box::new(source),
        };
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("group.id", &settings.consumer_group)
            .set("group.instance.id", instance_id)
            .set("client.id", "online-status-local-poller")
            // Offsets move only when this code commits them.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", settings.starting_position.offset_reset())
            // A fetch waits at most this long for data: the floor of the
            // produce-to-visible latency when records trickle in.
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(error)?;
        consumer.subscribe(&[&settings.topic]).map_err(error)?;
        Ok(Self { consumer: Arc::new(consumer), settings, function, on_failure, event_source_arn })
    }

    /// Polls until `shutdown` resolves. A batch whose function call is under
    /// way when shutdown comes is finished and committed first; one still
    /// gathering or waiting to retry is dropped uncommitted.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let batch = tokio::select! {
                batch = self.gather() => batch,
                () = &mut shutdown => return,
            };
            if batch.is_empty() {
                continue;
            }
            let outcome = self.deliver(&batch, &mut shutdown).await;
            if outcome == Outcome::Stopped {
                return;
            }
        }
    }

    /// Waits for a first record, then gathers until the batch is full or
    /// the window has passed since that record.
    async fn gather(&self) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        match self.consumer.recv().await {
            Ok(message) => batch.push(message.detach()),
            Err(error) => {
                // Broker down or a rebalance: librdkafka reconnects itself.
                tracing::warn!(%error, "kafka poll failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return batch;
            }
        }
        let deadline = tokio::time::Instant::now() + self.settings.batching_window;
        while batch.len() < self.settings.batch_size {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(error)) => tracing::warn!(%error, "kafka poll failed"),
                Err(_) => break,
            }
        }
        batch
    }

    /// Calls the function until it succeeds or the retries run out, then
    /// commits; sends the descriptions first when it gave up.
    async fn deliver(&self, batch: &[OwnedMessage], shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Outcome {
        let event = msk_event(batch, &self.event_source_arn, &self.settings.bootstrap_servers);
        let ranges = ranges(batch);
        let mut delay = RETRY_DELAY_FIRST;
        let mut attempts = 0;
        let last_error = loop {
            attempts += 1;
            let error = match self.function.call(&event).await {
                Ok(()) => {
                    self.commit(&ranges).await;
                    return Outcome::Done { attempts };
                }
                Err(error) => error,
            };
            tracing::warn!(attempt = attempts, records = batch.len(), %error, "function failed; the batch will be retried");
            if attempts > self.settings.max_retries {
                break error;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut *shutdown => return Outcome::Stopped,
            }
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        };
        // Every description must be on the queue before the commit, or a
        // crash in between would lose the batch for good; a queue that
        // refuses is retried for as long as it takes.
        for range in &ranges {
            let description = description(range, attempts, &last_error, &self.settings.consumer_group);
            let mut delay = RETRY_DELAY_FIRST;
            while let Err(error) = self.on_failure.send(&description).await {
                tracing::warn!(%error, queue = %self.settings.on_failure_queue, "on-failure queue refused; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut *shutdown => return Outcome::Stopped,
                }
                delay = (delay * 2).min(RETRY_DELAY_MAX);
            }
            tracing::error!(
                topic = %range.topic, partition = range.partition, first_offset = range.first_offset,
                last_offset = range.last_offset, attempts, "batch given up on; its description is on the on-failure queue"
            );
        }
        self.commit(&ranges).await;
        Outcome::GaveUp { attempts }
    }

    /// Commits the offset after each partition's last record, synchronously
    /// (on a blocking thread, as librdkafka's call blocks). A failed commit
    /// is logged: the records will be delivered again, never skipped.
    async fn commit(&self, ranges: &[PartitionRange]) {
        let mut offsets = TopicPartitionList::new();
        for r in ranges {
            if let Err(error) = offsets.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.last_offset + 1)) {
                tracing::warn!(%error, "cannot name an offset to commit");
            }
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "commit failed; the batch will be delivered again"),
            Err(error) => tracing::warn!(%error, "commit task failed; the batch will be delivered again"),
        }
    }
}

/// What goes to the on-failure destination for one partition of a batch,
/// shaped as Lambda's invocation record for Kafka sources: the condition,
/// the attempts, and where the records are (`KafkaBatchInfo`), not the
/// records themselves.
pub fn description(range: &PartitionRange, attempts: u32, error: &str, group: &str) -> serde_json::Value {
    json!({
        "requestContext": {
            "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:AggregatorFunction",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": attempts,
        },
        "responseContext": { "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" },
        "errorMessage": error,
        "version": "1.0",
        "KafkaBatchInfo": {
            "consumerGroupId": group,
            "topic": range.topic,
            "partition": range.partition,
            "batchSize": range.records,
            "startOffset": range.first_offset,
            "endOffset": range.last_offset,
        }
    })
}
