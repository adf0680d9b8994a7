//! Answers the stream function's events (DESIGN §12) through the shared
//! stream service: WebSocket routes answer `{"statusCode": N}` (frames go
//! out through the frame poster, never as the route's response); a feed
//! event answers what its fan-out did.

use serde_json::{json, Value};
use status_shared::app::{now_ms, App, AppFramePoster, AppStreamer};
use status_shared::domain::stream::Viewer;
use status_shared::domain::Millis;
use status_shared::ports::FramePoster;
use status_shared::services::Subscribed;
use status_shared::telemetry::Metrics;

use crate::event::StreamEvent;

use crate::error::InvokeFailure;

/// The stream function over a frame poster.
pub struct Stream<P> {
    streamer: AppStreamer<P>,
}

/// The stream function as deployed: frames go through API Gateway's
/// Management API at `STREAM_ENDPOINT`.
pub type AppStream = Stream<AppFramePoster>;

impl AppStream {
    pub fn from_app(app: &App) -> Self {
        Self::with_poster(app, app.frame_poster.clone())
    }
}

impl<P: FramePoster> Stream<P> {
    /// The function over `app`'s adapters, posting through `poster`.
    pub fn with_poster(app: &App, poster: P) -> Self {
        Self { streamer: app.streamer(poster) }
    }

    /// Answers one event at `now`; never fails and never panics. A
    /// WebSocket event answers `{"statusCode": 200}`, or 403 on a
    /// `$connect` whose identity is no user id, 503 on a `$connect` the
    /// registry could not record, 400 for an event that is not one, 500
    /// when the registry or stores failed otherwise. A feed event
    /// answers `{"statusCode": 200, "fanout": {...}}`, or 500 when some
    /// connection was not served.
    pub async fn invoke(&self, event: &serde_json::Value, now: Millis) -> serde_json::Value {
        match self.invoke_checked(event, now).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::error!(%error, "stream invocation failed");
                json!({"statusCode": 500})
            }
        }
    }

    /// [`Stream::invoke_checked`], its metrics emitted to `metrics` once
    /// it is done (`request_id` names the invocation in them).
    pub async fn invoke_measured(
        &self,
        event: &Value,
        now: Millis,
        request_id: Option<&str>,
        metrics: &Metrics,
    ) -> Result<Value, InvokeFailure> {
        let detailed = self.invoke_detailed(event, now).await;
        let (outcome, subscribed) = match detailed {
            Ok((answer, subscribed)) => (Ok(answer), subscribed),
            Err(failure) => (Err(failure), None),
        };
        let read = StreamEvent::read(event);
        metrics.emit(request_id, |m| {
            crate::measures::record(m, &read, event, &outcome, now_ms());
            if let Some(subscribed) = &subscribed {
                crate::measures::record_subscribe(m, subscribed);
            }
        });
        outcome
    }

    /// [`Stream::invoke`], with a failure the Lambda entry reports as the
    /// invocation's error, so an asynchronous fan-out is retried.
    pub async fn invoke_checked(&self, event: &Value, now: Millis) -> Result<Value, InvokeFailure> {
        self.invoke_detailed(event, now).await.map(|(answer, _)| answer)
    }

    /// [`Stream::invoke_checked`], with what an accepted subscribe did.
    async fn invoke_detailed(&self, event: &Value, now: Millis) -> Result<(Value, Option<Subscribed>), InvokeFailure> {
        let answer = match StreamEvent::read(event) {
            StreamEvent::Connect { connection, viewer: Some(viewer) } => {
                match self.streamer.connect(&connection, viewer, now).await {
                    Ok(()) => {
                        tracing::info!(%connection, service = viewer == Viewer::Service, "stream connected");
                        Ok(json!({"statusCode": 200}))
                    }
                    // The registry did not answer: the upgrade is refused
                    // `503`, and the client connects again (docs/DESIGN.md
                    // §12 "State and loss"), rather than a bare `500`.
                    Err(error) if error.is_transient() => {
                        tracing::warn!(%error, %connection, "stream connect refused: the registry did not answer");
                        Ok(json!({"statusCode": 503}))
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            StreamEvent::Connect { connection, viewer: None } => {
                tracing::info!(%connection, "stream connect refused: the identity is no user id");
                Ok(json!({"statusCode": 403}))
            }
            StreamEvent::Disconnect { connection } => {
                self.streamer.disconnect(&connection, now).await?;
                Ok(json!({"statusCode": 200}))
            }
            StreamEvent::Message { connection, body } => {
                let subscribed = self.streamer.message(&connection, &body, now).await?;
                return Ok((json!({"statusCode": 200}), subscribed));
            }
            StreamEvent::Feed(feed) => {
                let done = self.streamer.fan_out(&feed, now).await?;
                if done.failed > 0 {
                    return Err(InvokeFailure::Unserved { failed: done.failed, retried: done.retried });
                }
                Ok(json!({"statusCode": 200, "fanout": {
                    "users": done.users, "connections": done.connections, "frames": done.frames, "held": done.held,
                    "gone": done.gone, "retried": done.retried,
                }}))
            }
            StreamEvent::Invalid(why) => {
                tracing::warn!(%why, "not a stream event");
                Ok(json!({"statusCode": 400}))
            }
        };
        answer.map(|answer| (answer, None))
    }
}
