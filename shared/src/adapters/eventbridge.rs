//! EventBridge: the `status_changed` events of DESIGN §8, and a publisher
//! that drops them for when no bus is configured.
//!
//! Every event has source `status.service`, the detail-type and detail its
//! outbox row holds (`status_changed`: `{"user_id": 42, "from": "online",
//! "to": "idle", "at_ms": 1764270300000, "event_id": "42-17-status_changed"}`).
//! Which transitions are published (only real ones, never one that reveals
//! a hidden user) is decided by the services; this adapter only delivers
//! them, in order per user.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use futures::StreamExt;

use super::aws::{backoff, SetupError, BATCH_ATTEMPTS};
use crate::domain::{OutboxEvent, UserId};
use crate::ports::{ChangePublisher, Delivery, PublishError};

/// The contract's event source (DESIGN §8); rules match on it.
pub const SOURCE: &str = "status.service";

/// The contract's detail-type of a status change (DESIGN §8).
pub const DETAIL_TYPE: &str = crate::domain::announce::STATUS_CHANGED;

/// PutEvents' limit on entries per call.
const PUT_EVENTS_MAX: usize = 10;

/// PutEvents calls of one `publish` in flight at once: a scan that turns
/// thousands of users idle publishes in a few round trips' time instead of
/// one call after another, while staying far below the account's PutEvents
/// rate. EventBridge promises no order between events anyway, so sending
/// chunks side by side takes nothing from consumers.
const PUBLISH_CONCURRENCY: usize = 8;

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
    /// accepted event is never sent twice by this loop. Returns the indices
    /// (the first of each pair) that were accepted, and the error that left
    /// the others unsent. A request that fails as a whole has been retried
    /// by the SDK already.
    async fn put_chunk(&self, mut pending: Vec<(usize, PutEventsRequestEntry)>) -> (Vec<usize>, Option<PublishError>) {
        let total = pending.len();
        let mut accepted = Vec::with_capacity(total);
        let mut last_errors = Vec::new();
        for attempt in 1..=BATCH_ATTEMPTS {
            let entries: Vec<PutEventsRequestEntry> = pending.iter().map(|(_, e)| e.clone()).collect();
            let out = match self.client.put_events().set_entries(Some(entries)).send().await {
                Ok(out) => out,
                Err(e) => {
                    return (accepted, Some(PublishError::caused_by(format!("PutEvents to {}", self.bus), e)));
                }
            };
            if out.failed_entry_count() == 0 {
                accepted.extend(pending.iter().map(|(i, _)| *i));
                return (accepted, None);
            }
            let results = out.entries();
            if results.len() != pending.len() {
                // Without one result per entry there is no telling which
                // were accepted; they stay in the outbox and are sent again.
                let error = format!(
                    "PutEvents to {} answered {} results for {} entries",
                    self.bus,
                    results.len(),
                    pending.len()
                );
                return (accepted, Some(PublishError::new(error)));
            }
            last_errors = results
                .iter()
                .filter_map(|r| r.error_code().map(|code| format!("{code}: {}", r.error_message().unwrap_or(""))))
                .collect();
            let mut refused = Vec::new();
            for (entry, result) in pending.into_iter().zip(results) {
                if result.error_code().is_some() {
                    refused.push(entry);
                } else {
                    accepted.push(entry.0);
                }
            }
            pending = refused;
            if pending.is_empty() {
                return (accepted, None);
            }
            tracing::debug!(bus = %self.bus, attempt, refused = pending.len(), "resending refused events");
            if attempt < BATCH_ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        let error = format!(
            "{} of {total} events refused by {} after {BATCH_ATTEMPTS} attempts: {}",
            pending.len(),
            self.bus,
            last_errors.join("; ")
        );
        (accepted, Some(PublishError::new(error)))
    }
}

impl ChangePublisher for EventBridgePublisher {
    fn enabled(&self) -> bool {
        true
    }

    /// Sends in waves: the first unsent event of every user, then the next,
    /// each wave's chunks side by side. A user's event goes out only once
    /// the one before it was accepted, so a consumer sees each user's
    /// events in order even when a chunk fails half-way.
    async fn publish(&self, events: &[OutboxEvent]) -> Delivery {
        let mut queues: Vec<std::collections::VecDeque<usize>> = Vec::new();
        let mut slot_of: std::collections::HashMap<UserId, usize> = std::collections::HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let slot = *slot_of.entry(event.user).or_insert_with(|| {
                queues.push(Default::default());
                queues.len() - 1
            });
            queues[slot].push_back(i);
        }
        let mut delivery = Delivery::default();
        loop {
            let wave: Vec<(usize, PutEventsRequestEntry)> = queues
                .iter_mut()
                .filter_map(|queue| queue.pop_front())
                .map(|i| {
                    let entry = PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(&events[i].detail_type)
                        .detail(&events[i].detail)
                        .build();
                    (i, entry)
                })
                .collect();
            if wave.is_empty() {
                break;
            }
            let sent = wave.len();
            let chunks: Vec<Vec<(usize, PutEventsRequestEntry)>> =
                wave.chunks(PUT_EVENTS_MAX).map(<[_]>::to_vec).collect();
            let results: Vec<(Vec<usize>, Option<PublishError>)> = futures::stream::iter(chunks)
                .map(|chunk| self.put_chunk(chunk))
                .buffer_unordered(PUBLISH_CONCURRENCY)
                .collect()
                .await;
            let mut accepted_now = 0;
            for (accepted, error) in results {
                accepted_now += accepted.len();
                delivery.accepted.extend(accepted);
                if error.is_some() {
                    delivery.error = error;
                }
            }
            if accepted_now < sent {
                // A user whose event was refused keeps the rest of its
                // queue for a later drain: nothing may overtake it.
                break;
            }
        }
        delivery.accepted.sort_unstable();
        delivery
    }
}

/// Accepts every change and sends nothing: for a deployment (or a local
/// run) with no `STATUS_EVENT_BUS`. It reports itself disabled, so the
/// write path keeps no outbox for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopPublisher;

impl ChangePublisher for NoopPublisher {
    fn enabled(&self) -> bool {
        false
    }

    async fn publish(&self, events: &[OutboxEvent]) -> Delivery {
        tracing::trace!(dropped = events.len(), "no event bus configured, events not published");
        Delivery { accepted: (0..events.len()).collect(), error: None }
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
