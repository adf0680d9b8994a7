//! Kafka in the local stack (DESIGN §9 "Kafka, for real"): the topic, the
//! MSK event source poller in front of `AggregatorFunction`, and the
//! producer people and tests publish presence events with.
//!
//! # Layout
//!
//! - [`settings`]: `KAFKA_*`, `MSK_*`, `LOCAL_ONFAILURE_QUEUE`, and the
//!   one source of the event source's numbers ([`settings::EVENT_SOURCE`]).
//! - [`admin`]: creates the topic with `KAFKA_PARTITIONS` partitions.
//! - [`event`]: Kafka records as the MSK event.
//! - [`poller`]: the consumer, one lane per partition (`lanes.rs`) and
//!   its worker (`worker.rs`): batches, retries, commits; the pacer
//!   (`pacer.rs`), the one place that pauses and resumes partitions;
//!   [`batch`]: the function a batch goes to and the on-failure queue.
//! - [`produce`]: the producer and the `produce` command.
//! - [`load`]: event streams with a known outcome, for load and benchmarks.
//! - [`start`]: all of it made ready for the local stack.

pub mod admin;
pub mod batch;
pub mod event;
mod lanes;
pub mod load;
mod pacer;
pub mod poller;
pub mod produce;
pub mod record;
pub mod settings;
mod worker;

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use status_shared::app::now_ms;

use crate::functions::{Function, Functions};
use crate::kafka::admin::{ensure_topic, TopicError};
use crate::kafka::poller::{BatchFunction, Poller, PollerError, SqsOnFailure};
use crate::kafka::settings::KafkaSettings;

/// The local aggregator behind the poller: the event goes through JSON
/// to the same `invoke` the Invoke API uses, as Lambda serializes it.
impl BatchFunction for Arc<Functions> {
    async fn call(&self, event: &KafkaEvent) -> Result<(), String> {
        let payload = event::msk_json(event)
            .and_then(|json| serde_json::to_vec(&json))
            .map_err(|e| format!("the MSK event did not encode: {e}"))?;
        self.invoke(Function::Aggregator, &payload, now_ms()).await.map(|_| ()).map_err(|e| e.message())
    }
}

/// Why the Kafka side of the stack did not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaStartError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Poller(#[from] PollerError),
    #[error("cannot create the on-failure queue {queue}: {message}")]
    Queue { queue: String, message: String },
}

/// The poller of the local stack, ready to run, and what the banner says.
pub struct LocalKafka {
    pub poller: Poller<Arc<Functions>, SqsOnFailure>,
    pub settings: KafkaSettings,
    /// Partitions the topic has (an existing topic keeps its own count).
    pub partitions: usize,
    pub on_failure_queue_url: String,
}

/// Creates the topic and the on-failure queue if absent and joins the
/// consumer group.
pub async fn start(
    settings: KafkaSettings,
    functions: Arc<Functions>,
    sdk: &aws_config::SdkConfig,
) -> Result<LocalKafka, KafkaStartError> {
    let partitions = ensure_topic(&settings.bootstrap_servers, &settings.topic, settings.partitions).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let created =
        sqs.create_queue().queue_name(&settings.on_failure_queue).send().await.map_err(|e| KafkaStartError::Queue {
            queue: settings.on_failure_queue.clone(),
            message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
        })?;
    let queue_url = created.queue_url().unwrap_or_default().to_owned();
    let region = sdk.region().map_or("us-east-1", |r| r.as_ref()).to_owned();
    let arn = settings.event_source_arn(&region);
    let on_failure = SqsOnFailure { client: sqs, queue_url: queue_url.clone() };
    let poller = Poller::new(settings.clone(), &settings.member_id(), functions, on_failure, arn)?;
    Ok(LocalKafka { poller, settings, partitions, on_failure_queue_url: queue_url })
}
