//! Frames to WebSocket clients through API Gateway's Management API
//! (`PostToConnection`, and `DeleteConnection` to close one, DESIGN §12),
//! at the endpoints of `STREAM_ENDPOINT` (locally,
//! `http://127.0.0.1:3002`).
//!
//! The template has two WebSocket APIs (end users, services), and a
//! connection id is known only to the API it connected through, which
//! answers any other id `410 Gone`. So `STREAM_ENDPOINT` may list several
//! endpoints, comma-separated, the busiest first: a post tries them in
//! order and is [`Posted::Gone`] only when every one says so. A service's
//! frame, on the second API, costs one extra refused call.
//!
//! A frame is sent at most once per endpoint. The SDK's own retries are off
//! for this client: a post that timed out or answered 5xx may still have
//! reached the client, and sending it again would repeat its `seq`, which
//! DESIGN §12 ("Order and seq") forbids. Such a post fails, and the fan-out
//! sends what was not confirmed again later under a new `seq`, after a
//! cursor the client can resume from. Only a throttled post (`429`,
//! `LimitExceededException`), which API Gateway refused before delivering
//! anything, is tried again here, up to [`POST_ATTEMPTS`] times in all, with
//! the AWS adapters' backoff.

use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::StalledStreamProtectionConfig;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;

use crate::domain::stream::ConnectionId;
use crate::ports::{FramePoster, PostError, Posted};

/// How many times one frame is offered to one endpoint while API Gateway
/// answers it `429` (throttled, so not delivered): the first try and two
/// more. Any other failure is not retried here (see the module doc).
pub const POST_ATTEMPTS: u32 = 3;

/// Posts frames with the SDK client; `410 Gone` (`GoneException`) is
/// [`Posted::Gone`]. Without an endpoint configured every post fails.
#[derive(Clone, Debug)]
pub struct ApiGatewayPoster {
    clients: Vec<(String, Client)>,
}

impl ApiGatewayPoster {
    /// A poster for the management APIs at `endpoint`: one URL or several,
    /// comma-separated (each a WebSocket API's
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`), with
    /// the credentials, region and deadlines of `sdk`; `None` or blank:
    /// none configured.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let clients = endpoint
            .into_iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .retry_config(RetryConfig::disabled())
                    // A frame is at most 128 KB and the call's own deadline
                    // (the SDK config's operation timeout) bounds it, so
                    // the throughput watch the SDK wraps around each send,
                    // with timers of its own, is work a fan-out repeats
                    // 10,000 times for nothing (docs/BENCHMARKS.md).
                    .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
                    .build();
                (url.to_owned(), Client::from_conf(config))
            })
            .collect();
        Self { clients }
    }

    /// A poster with no endpoint: every post fails (for stacks that serve
    /// no WebSocket API).
    pub fn disabled() -> Self {
        Self { clients: Vec::new() }
    }
}

impl FramePoster for ApiGatewayPoster {
    async fn post(&self, connection: &ConnectionId, frame: &str) -> Result<Posted, PostError> {
        if self.clients.is_empty() {
            return Err(PostError::new("STREAM_ENDPOINT is not set"));
        }
        for (url, client) in &self.clients {
            let mut attempt = 1;
            let sent = loop {
                let call = client
                    .post_to_connection()
                    .connection_id(connection.as_str())
                    .data(Blob::new(frame.as_bytes().to_vec()))
                    .send();
                // On a task of its own: a fan-out awaits many posts at once
                // from one task, and the SDK's work per post (building,
                // signing, the HTTP exchange) then spreads over the
                // runtime's worker threads instead of one. The frames of
                // one connection are still posted one after another.
                let sent = match tokio::spawn(call).await {
                    Ok(sent) => sent,
                    Err(failed) => {
                        return Err(PostError::new(format!("PostToConnection to {connection} at {url}: {failed}")))
                    }
                };
                match sent {
                    Err(error) if is_throttled(&error) && attempt < POST_ATTEMPTS => {
                        tokio::time::sleep(super::aws::backoff(attempt)).await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            match sent {
                Ok(_) => return Ok(Posted::Sent),
                Err(error) if error.as_service_error().is_some_and(|e| e.is_gone_exception()) => continue,
                Err(error) => {
                    return Err(PostError::caused_by(
                        format!("PostToConnection to {connection} at {url} (attempt {attempt})"),
                        error,
                    ))
                }
            }
        }
        Ok(Posted::Gone)
    }

    async fn close(&self, connection: &ConnectionId) -> Result<(), PostError> {
        if self.clients.is_empty() {
            return Err(PostError::new("STREAM_ENDPOINT is not set"));
        }
        // The connection is known to one API only; the others answer 410.
        for (url, client) in &self.clients {
            let call = client.delete_connection().connection_id(connection.as_str()).send();
            match tokio::spawn(call).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) if error.as_service_error().is_some_and(|e| e.is_gone_exception()) => continue,
                Ok(Err(error)) => {
                    return Err(PostError::caused_by(format!("DeleteConnection of {connection} at {url}"), error))
                }
                Err(failed) => {
                    return Err(PostError::new(format!("DeleteConnection of {connection} at {url}: {failed}")))
                }
            }
        }
        Ok(())
    }
}

/// API Gateway refused the post before delivering it: `429`, which the
/// Management API names `LimitExceededException` (a bare `429` counts too).
fn is_throttled(error: &SdkError<PostToConnectionError, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            service.err().is_limit_exceeded_exception() || service.raw().status().as_u16() == 429
        }
        _ => false,
    }
}
