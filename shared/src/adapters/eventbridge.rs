//! EventBridge: the `status_changed` events of DESIGN §8, and a publisher
//! that drops them for when no bus is configured.
//!
//! Every event has source `status.service`, detail-type `status_changed`
//! and the detail `{"user_id": 42, "from": "online", "to": "idle",
//! "at_ms": 1764270300000}`. Which transitions are published (only real
//! ones, never one that reveals a hidden user) is decided by the services;
//! this adapter only delivers them.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::aws::{backoff, SetupError, BATCH_ATTEMPTS};
use crate::domain::{Millis, Status, Transition, UserId};
use crate::ports::{ChangePublisher, PublishError};

/// The contract's event source (DESIGN §8); rules match on it.
pub const SOURCE: &str = "status.service";

/// The contract's detail-type (DESIGN §8).
pub const DETAIL_TYPE: &str = "status_changed";

/// PutEvents' limit on entries per call.
const PUT_EVENTS_MAX: usize = 10;

/// PutEvents calls of one `publish` in flight at once: a scan that turns
/// thousands of users idle publishes in a few round trips' time instead of
/// one call after another, while staying far below the account's PutEvents
/// rate. EventBridge promises no order between events anyway, so sending
/// chunks side by side takes nothing from consumers.
const PUBLISH_CONCURRENCY: usize = 8;

/// The detail of one `status_changed` event, exactly the contract's shape:
/// `user_id` a JSON number, statuses in lowercase.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ChangeDetail {
    pub user_id: UserId,
    pub from: Status,
    pub to: Status,
    pub at_ms: Millis,
}

impl ChangeDetail {
    pub fn new(user: UserId, transition: &Transition) -> Self {
        Self { user_id: user, from: transition.from, to: transition.to, at_ms: transition.at_ms }
    }
}

/// Publishes `status_changed` to one bus.
#[derive(Clone, Debug)]
pub struct EventBridgePublisher {
    client: Client,
    bus: String,
}

impl EventBridgePublisher {
    /// `bus` is the bus's name or ARN (`STATUS_EVENT_BUS`).
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self { client, bus: bus.into() }
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// Sends one chunk, then resends only the entries EventBridge refused
    /// (each refused entry carries an error code, in request order), so an
    /// accepted event is never sent twice by this loop. A request that fails
    /// as a whole has been retried by the SDK already and fails the call.
    async fn put_chunk(&self, mut pending: Vec<PutEventsRequestEntry>) -> Result<(), PublishError> {
        let total = pending.len();
        let mut last_errors = Vec::new();
        for attempt in 1..=BATCH_ATTEMPTS {
            let out = self
                .client
                .put_events()
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(|e| PublishError::caused_by(format!("PutEvents to {}", self.bus), e))?;
            if out.failed_entry_count() == 0 {
                return Ok(());
            }
            let results = out.entries();
            if results.len() != pending.len() {
                // Without one result per entry there is no telling which
                // were accepted; resending all could duplicate events.
                return Err(PublishError::new(format!(
                    "PutEvents to {} answered {} results for {} entries",
                    self.bus,
                    results.len(),
                    pending.len()
                )));
            }
            last_errors = results
                .iter()
                .filter_map(|r| r.error_code().map(|code| format!("{code}: {}", r.error_message().unwrap_or(""))))
                .collect();
            let refused: Vec<PutEventsRequestEntry> = pending
                .into_iter()
                .zip(results)
                .filter(|(_, result)| result.error_code().is_some())
                .map(|(entry, _)| entry)
                .collect();
            if refused.is_empty() {
                return Err(PublishError::new(format!(
                    "PutEvents to {} reported {} failures without naming them",
                    self.bus,
                    out.failed_entry_count()
                )));
            }
            pending = refused;
            tracing::debug!(bus = %self.bus, attempt, refused = pending.len(), "resending refused events");
            if attempt < BATCH_ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(PublishError::new(format!(
            "{} of {total} events refused by {} after {BATCH_ATTEMPTS} attempts: {}",
            pending.len(),
            self.bus,
            last_errors.join("; ")
        )))
    }
}

impl ChangePublisher for EventBridgePublisher {
    async fn publish(&self, changes: &[(UserId, Transition)]) -> Result<(), PublishError> {
        let mut entries = Vec::with_capacity(changes.len());
        for (user, transition) in changes {
            let detail = serde_json::to_string(&ChangeDetail::new(*user, transition))
                .map_err(|e| PublishError::caused_by(format!("encoding the detail of user {user}"), e))?;
            entries.push(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(SOURCE)
                    .detail_type(DETAIL_TYPE)
                    .detail(detail)
                    .build(),
            );
        }
        futures::stream::iter(entries)
            .chunks(PUT_EVENTS_MAX)
            .map(Ok)
            .try_for_each_concurrent(PUBLISH_CONCURRENCY, |chunk| self.put_chunk(chunk))
            .await
    }
}

/// Accepts every change and sends nothing: for a deployment (or a local
/// run) with no `STATUS_EVENT_BUS`, so the services need no "maybe
/// publish" branches.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopPublisher;

impl ChangePublisher for NoopPublisher {
    async fn publish(&self, changes: &[(UserId, Transition)]) -> Result<(), PublishError> {
        tracing::trace!(dropped = changes.len(), "no event bus configured, status_changed not published");
        Ok(())
    }
}

/// Creates the bus `name` unless it exists. Idempotent, for the local stack
/// and tests; in AWS the SAM template owns the bus.
pub async fn create_bus(client: &Client, name: &str) -> Result<(), SetupError> {
    // Every account has the default bus, and creating it is refused.
    if name == "default" {
        return Ok(());
    }
    match client.create_event_bus().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => Ok(()),
        Err(e) => Err(SetupError::sdk(format!("CreateEventBus {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_has_the_contract_shape() {
        let user = UserId::new(42).unwrap();
        let transition = Transition { from: Status::Online, to: Status::Idle, at_ms: 1_764_270_300_000 };
        let json: serde_json::Value = serde_json::to_value(ChangeDetail::new(user, &transition)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user_id": 42, "from": "online", "to": "idle", "at_ms": 1_764_270_300_000_i64})
        );
    }
}
