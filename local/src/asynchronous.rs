//! Asynchronous invocation (`X-Amz-Invocation-Type: Event`) as Lambda runs
//! it: the Invoke API answers 202 at once, the function runs in the
//! background, and a run that fails is tried twice more before the event is
//! given up (logged as a warning). Lambda waits about one minute, then two,
//! between the runs; the local stack waits [`FIRST_RETRY_DELAY`], then
//! twice that, so a failure and its retries show within seconds.
//!
//! This is how the push feed (DESIGN §12) reaches `StatusStreamFunction`
//! locally: the write path invokes it with `InvocationType=Event` through
//! the real `aws-sdk-lambda` client, pointed here by
//! `AWS_ENDPOINT_URL_LAMBDA`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hyper::body::Bytes;
use status_shared::app::now_ms;
use tokio::task::JoinHandle;

use crate::functions::{Function, FunctionError, Functions};

/// Runs after the first that a failed asynchronous invocation gets, as in
/// Lambda (its `MaximumRetryAttempts` default).
pub const RETRIES: usize = 2;

/// The pause before the first retry; the second waits twice as long.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Runs `event` on `function` in the background, with Lambda's retries;
/// the final failure is logged with `request_id` and the attempts made.
pub fn spawn(functions: Arc<Functions>, function: Function, event: Bytes, request_id: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let run = || functions.invoke(function, &event, now_ms());
        let (outcome, attempts) = with_retries(run, FIRST_RETRY_DELAY, function.name(), &request_id).await;
        match outcome {
            Ok(_) => tracing::info!(function = function.name(), %request_id, attempts, "async invocation done"),
            Err(error) => tracing::warn!(
                function = function.name(),
                %request_id,
                attempts,
                error_type = error.error_type(),
                error = %error.message(),
                "async invocation failed after its retries; the event is dropped"
            ),
        }
    })
}

/// Runs `attempt` until it succeeds or has failed [`RETRIES`] + 1 times,
/// pausing `first_delay`, then twice that, between runs. Returns the last
/// outcome and how many runs were made.
pub async fn with_retries<T, Fut>(
    mut attempt: impl FnMut() -> Fut,
    first_delay: Duration,
    function: &str,
    request_id: &str,
) -> (Result<T, FunctionError>, usize)
where
    Fut: Future<Output = Result<T, FunctionError>>,
{
    let mut attempts = 0;
    let counted = || {
        attempts += 1;
        attempt()
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(first_delay)
        .with_factor(2.0)
        .with_max_times(RETRIES)
        .without_max_delay();
    let outcome = counted
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|error: &FunctionError, pause: Duration| {
            tracing::info!(
                function,
                request_id,
                error = %error.message(),
                retry_in_ms = pause.as_millis() as u64,
                "async invocation failed; retrying"
            );
        })
        .await;
    (outcome, attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> FunctionError {
        FunctionError::Panicked("boom".into())
    }

    #[tokio::test]
    async fn a_failing_run_is_tried_twice_more_with_growing_pauses_then_given_up() {
        let started = tokio::time::Instant::now();
        let (outcome, attempts) =
            with_retries(|| async { Err::<(), _>(failure()) }, Duration::from_millis(50), "F", "r").await;
        assert!(outcome.is_err());
        assert_eq!(attempts, 3, "the first run and two retries");
        assert!(started.elapsed() >= Duration::from_millis(150), "50 ms, then 100 ms: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_run_that_succeeds_on_a_retry_stops_there() {
        let mut failures = 1;
        let (outcome, attempts) = with_retries(
            || {
                let fail = failures > 0;
                failures -= 1;
                async move {
                    if fail {
                        Err(failure())
                    } else {
                        Ok(7)
                    }
                }
            },
            Duration::from_millis(1),
            "F",
            "r",
        )
        .await;
        assert_eq!((outcome.ok(), attempts), (Some(7), 2));
    }
}
