//! What the DynamoDB and EventBridge adapters share: the SDK configuration
//! and its deadlines, the retry pacing for partial batch failures, and the
//! error of the one-time setup calls (tables, bus).
//!
//! The SDK retries whole requests that fail transiently on its own, within
//! the deadlines and attempts [`with_deadlines`] gives it; what it does not
//! retry is a request that succeeds while leaving some entries undone
//! (`UnprocessedItems`, `FailedEntryCount`), which is what [`backoff`]
//! paces.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::AwsDeadlines;

/// Loads the standard SDK configuration (environment, profile, the Lambda
/// role's credentials). `AWS_ENDPOINT_URL` is honoured by the loader
/// itself, which is how the functions reach the local emulator unchanged.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The first pause of the SDK's retries. Its default (1 s) would spend a
/// whole call's deadline on one pause; AWS's transient errors clear in
/// tens of milliseconds, and throttling is paced by the SDK's retry quota
/// besides.
const SDK_INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause of the SDK's retries: under `AWS_TIMEOUT_MS`'s
/// default, so a retry still fits in the call's deadline.
const SDK_MAX_BACKOFF: Duration = Duration::from_millis(1_000);

/// `sdk` with `deadlines` as its timeouts and retry budget, for every
/// client built from it (DESIGN §6; issue 17). The SDK enforces them
/// itself: a call past `operation_timeout` fails with a timeout error
/// (`SdkError::TimeoutError`), which the adapters report like any other
/// failure of the call.
pub fn with_deadlines(sdk: &SdkConfig, deadlines: &AwsDeadlines) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(deadlines.connect_timeout)
        .read_timeout(deadlines.attempt_timeout)
        .operation_attempt_timeout(deadlines.attempt_timeout)
        .operation_timeout(deadlines.operation_timeout)
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(deadlines.max_attempts)
        .with_initial_backoff(SDK_INITIAL_BACKOFF)
        .with_max_backoff(SDK_MAX_BACKOFF);
    sdk.to_builder().timeout_config(timeouts).retry_config(retries).build()
}

/// How many times a batch call is sent before its remaining entries count
/// as failed: with [`backoff`] that is under a second of waiting in all,
/// long enough to ride out a throttling burst, short enough to stay well
/// inside a Lambda invocation (the failed batch is then retried whole by
/// the event source or the next scan).
pub const BATCH_ATTEMPTS: u32 = 6;

/// The pause before retry number `attempt` (1-based) of the entries a batch
/// call left undone: exponential from 25 ms, capped at 800 ms, with up to
/// half of it random so concurrent callers that were throttled together do
/// not come back together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base_ms = 25u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    let capped = base_ms.min(800);
    let jitter = rand::random::<u64>() % (capped / 2 + 1);
    Duration::from_millis(capped / 2 + jitter)
}

/// Seconds since the epoch, for TTL attributes (DynamoDB's TTL reads epoch
/// seconds). Adapters are the edge, so reading the clock here is allowed.
pub(crate) fn epoch_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Epoch milliseconds, for markers that also tell people when an entry was
/// written.
pub(crate) fn epoch_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The full text of an SDK error. `SdkError`'s own `Display` says only
/// "service error"; the context names the service's code and message,
/// which is what an operator needs in a log line.
pub(crate) fn describe<E: std::error::Error>(err: &E) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string()
}

/// Why creating a table or a bus failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {message}")]
pub struct SetupError {
    /// The call that failed, e.g. `CreateTable status-repair`.
    pub step: String,
    /// The SDK's full description of the failure.
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SetupError {
    /// The failure of SDK call `step`, described in full.
    pub fn sdk<E>(step: impl Into<String>, err: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self { step: step.into(), message: describe(&err), source: Some(Box::new(err)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..=20 {
            let pause = backoff(attempt);
            assert!(pause <= Duration::from_millis(800), "attempt {attempt}: {pause:?}");
            assert!(pause >= Duration::from_millis(12), "attempt {attempt}: {pause:?}");
        }
        assert!(backoff(6) >= Duration::from_millis(400));
    }

    #[test]
    fn deadlines_reach_the_sdk_configuration() {
        let deadlines = AwsDeadlines {
            connect_timeout: Duration::from_millis(100),
            attempt_timeout: Duration::from_millis(200),
            operation_timeout: Duration::from_millis(700),
            max_attempts: 2,
        };
        let sdk = with_deadlines(&SdkConfig::builder().build(), &deadlines);
        let timeouts = sdk.timeout_config().unwrap();
        assert_eq!(timeouts.connect_timeout(), Some(Duration::from_millis(100)));
        assert_eq!(timeouts.read_timeout(), Some(Duration::from_millis(200)));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(Duration::from_millis(200)));
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_millis(700)));
        let retries = sdk.retry_config().unwrap();
        assert_eq!(retries.max_attempts(), 2);
        assert_eq!(retries.initial_backoff(), SDK_INITIAL_BACKOFF);
        // Every client built from it gets them.
        let dynamo = aws_sdk_dynamodb::config::Config::from(&sdk);
        assert_eq!(dynamo.timeout_config().and_then(|t| t.operation_timeout()), Some(Duration::from_millis(700)));
        let events = aws_sdk_eventbridge::config::Config::from(&sdk);
        assert_eq!(events.retry_config().map(|r| r.max_attempts()), Some(2));
    }
}
