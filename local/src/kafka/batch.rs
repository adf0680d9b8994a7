//! The two ends of a batch's trip through the poller: the function it is
//! handed to ([`BatchFunction`]) and, once its retries run out, the
//! on-failure destination its description goes to ([`OnFailure`],
//! [`description`]); with the pauses between attempts and what a batch
//! came to.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use serde_json::json;

use crate::kafka::event::PartitionRange;

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
