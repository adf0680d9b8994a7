//! Lambda: the push feed (DESIGN §12) as asynchronous invocations of the
//! stream function, and a feed that drops everything for when no stream
//! function is configured.
//!
//! A commit's changes go out as `{"feed": [{"user_id": 42, "version": 7,
//! "at_ms": 1764800000000}, ...]}` ([`FeedEvent`]) through `Invoke` with
//! `InvocationType=Event`: Lambda queues the event, answers 202 and runs
//! the function later, retrying a failed run twice. The caller waits for
//! the queueing only, tens of milliseconds, not for the fan-out.
//!
//! An asynchronous invocation carries at most 1 MB (256 KB until late
//! 2025). A batch is cut into invocations of at most [`FEED_CHUNK`]
//! changes, which encode under [`FEED_PAYLOAD_LIMIT`] (256 KB, the older
//! and lower limit) whatever the values: an aggregator batch of 10,000
//! records is at most 5 invocations, a scanner page of 1,000 users one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;

use crate::domain::{FeedChange, FeedEvent};
use crate::ports::{ChangeFeed, FeedError};

/// The most changes one invocation carries. The longest change encodes in
/// 92 bytes with its comma (a 19-digit id, a 20-digit version, a 20-character
/// time), so a full chunk stays under [`FEED_PAYLOAD_LIMIT`].
pub const FEED_CHUNK: usize = 2_000;

/// The payload bound the chunks are cut for, bytes: Lambda's limit on an
/// asynchronous invocation before it was raised to 1 MB, so the feed holds
/// under either.
pub const FEED_PAYLOAD_LIMIT: usize = 256 * 1024;

/// Feeds changes to one function by asynchronous invocation.
#[derive(Clone, Debug)]
pub struct LambdaFeed {
    client: Client,
    function: String,
    /// Whether a missing function was reported already: it is logged once
    /// as a warning, then at debug level, since every commit meets it
    /// until the function is deployed (the local stack before it serves
    /// `StatusStreamFunction`).
    missing_reported: Arc<AtomicBool>,
}

impl LambdaFeed {
    /// `function` is the stream function's name or ARN (`STREAM_FUNCTION`).
    pub fn new(client: Client, function: impl Into<String>) -> Self {
        Self { client, function: function.into(), missing_reported: Arc::new(AtomicBool::new(false)) }
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// One asynchronous invocation carrying `changes` (at most
    /// [`FEED_CHUNK`]).
    async fn invoke(&self, changes: &[FeedChange]) -> Result<(), FeedError> {
        let payload = serde_json::to_vec(&FeedEvent { feed: changes.to_vec() })
            .map_err(|e| FeedError::permanent("encoding the feed event", Some(Box::new(e))))?;
        let sent = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(error) => Err(self.classify(error, changes.len())),
        }
    }

    /// A failed `Invoke` as a [`FeedError`]: refusals that every later call
    /// would meet are permanent (and logged here), the rest transient.
    fn classify(&self, error: SdkError<InvokeError>, changes: usize) -> FeedError {
        let context = format!("Invoke {} (Event, {changes} changes)", self.function);
        let permanent = error.as_service_error().map(|service| {
            (
                service.is_resource_not_found_exception(),
                service.is_request_too_large_exception()
                    || service.is_invalid_request_content_exception()
                    || service.is_invalid_parameter_value_exception(),
            )
        });
        let described = super::aws::describe(&error);
        match permanent {
            Some((true, _)) => {
                if self.missing_reported.swap(true, Ordering::Relaxed) {
                    tracing::debug!(function = %self.function, "stream function not found; changes not fed");
                } else {
                    tracing::warn!(
                        function = %self.function,
                        error = %described,
                        "stream function not found; changes are not fed until it exists"
                    );
                }
                FeedError::permanent(context, Some(Box::new(error)))
            }
            Some((false, true)) => {
                tracing::error!(function = %self.function, error = %described, "the stream function refused a feed event");
                FeedError::permanent(context, Some(Box::new(error)))
            }
            _ => FeedError::transient(context, Some(Box::new(error))),
        }
    }
}

impl ChangeFeed for LambdaFeed {
    fn enabled(&self) -> bool {
        true
    }

    /// Every chunk is invoked side by side (five at most, for the largest
    /// batch); the first failure is returned once all have answered, a
    /// transient one before a permanent one, since it is worth keeping.
    async fn changed(&self, changes: &[FeedChange]) -> Result<(), FeedError> {
        let calls = changes.chunks(FEED_CHUNK).map(|chunk| self.invoke(chunk));
        let mut errors: Vec<FeedError> =
            futures::future::join_all(calls).await.into_iter().filter_map(Result::err).collect();
        errors.sort_by_key(|e| !e.retryable);
        match errors.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The feed when `STREAM_FUNCTION` is not set: feeds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFeed;

impl ChangeFeed for NoFeed {
    fn enabled(&self) -> bool {
        false
    }

    async fn changed(&self, _changes: &[FeedChange]) -> Result<(), FeedError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    #[test]
    fn a_full_chunk_of_the_longest_changes_fits_the_payload_limit() {
        let longest = FeedChange { user_id: UserId::new(UserId::MAX).unwrap(), version: u64::MAX, at_ms: i64::MIN };
        let chunk = FeedEvent { feed: vec![longest; FEED_CHUNK] };
        let bytes = serde_json::to_vec(&chunk).unwrap().len();
        assert!(bytes < FEED_PAYLOAD_LIMIT, "{bytes} bytes");
        assert_eq!(bytes, 11 + FEED_CHUNK * 92 - 1, "92 bytes a change with its comma, 11 for the envelope");
    }
}
