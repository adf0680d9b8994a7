//! EventBridge: the `status_changed` events of DESIGN §8, and a publisher
//! that drops them for when no bus is configured.
//!
//! Every event has source `status.service`, the detail-type and detail its
//! outbox row holds (`status_changed`: `{"user_id": 42, "from": "online",
//! "to": "idle", "at_ms": 1764270300000, "event_id": "42-17-status_changed"}`).
//! Which transitions are published (only real ones, never one that reveals
//! a hidden user) is decided by the services; this adapter only delivers
//! them, in order per user.
//!
//! PutEvents takes at most 10 entries and less than 256 KB of them per call
//! (sizes as EventBridge counts them, [`entry_size`]), so calls are cut by
//! both. A detail here is a few hundred bytes (a manual status message is
//! at most 100 characters), so the byte bound binds only if that changes;
//! an event that alone reaches it is dropped with an error log and a
//! publish failure counted ([`crate::ports::Delivery::dropped`]).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use futures::StreamExt;

use super::aws::{backoff, BATCH_ATTEMPTS};
use crate::domain::{OutboxEvent, UserId};
use crate::ports::{ChangePublisher, Delivery, PublishError};

/// The contract's event source (DESIGN §8); rules match on it.
pub const SOURCE: &str = "status.service";

/// PutEvents' limit on entries per call.
const PUT_EVENTS_MAX: usize = 10;

/// PutEvents' bound on one call, bytes: the sizes of its entries
/// ([`entry_size`]) must add up to less than 256 KB. An entry that alone
/// reaches it can never be sent.
pub const PUT_EVENTS_MAX_BYTES: usize = 256 * 1024;

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
            let mut wave: Vec<(usize, PutEventsRequestEntry)> = Vec::new();
            let mut sizes: Vec<usize> = Vec::new();
            let mut popped = false;
            for i in queues.iter_mut().filter_map(|queue| queue.pop_front()) {
                popped = true;
                let event = &events[i];
                let size = entry_size(SOURCE, &event.detail_type, &event.detail);
                if size >= PUT_EVENTS_MAX_BYTES {
                    // No call can carry it; kept, it would hold the
                    // user's later events back for ever. The drain logs
                    // it and counts a publish failure.
                    tracing::error!(bus = %self.bus, event_id = %event.event_id(), size, "event over PutEvents' size limit");
                    delivery.dropped.push(i);
                    continue;
                }
                let entry = PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(SOURCE)
                    .detail_type(&event.detail_type)
                    .detail(&event.detail)
                    .build();
                wave.push((i, entry));
                sizes.push(size);
            }
            if !popped {
                break;
            }
            let sent = wave.len();
            let chunks: Vec<Vec<(usize, PutEventsRequestEntry)>> =
                chunk_bounds(&sizes).into_iter().map(|range| wave[range].to_vec()).collect();
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
        delivery.dropped.sort_unstable();
        delivery
    }
}

/// The size EventBridge counts for a PutEvents entry with this source,
/// detail-type and detail and no `Time` or `Resources` (the adapter sets
/// neither), bytes: the UTF-8 lengths added up.
pub fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    source.len() + detail_type.len() + detail.len()
}

/// Cuts entries of these `sizes` (bytes, each under
/// [`PUT_EVENTS_MAX_BYTES`]) into consecutive PutEvents calls: at most
/// [`PUT_EVENTS_MAX`] entries each, their sizes adding up to less than
/// [`PUT_EVENTS_MAX_BYTES`]. Returns the index range of each call.
fn chunk_bounds(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut bounds = Vec::new();
    let (mut start, mut total) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        let full = i - start == PUT_EVENTS_MAX || total + size >= PUT_EVENTS_MAX_BYTES;
        if i > start && full {
            bounds.push(start..i);
            (start, total) = (i, 0);
        }
        total += size;
    }
    if start < sizes.len() {
        bounds.push(start..sizes.len());
    }
    bounds
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
        Delivery { accepted: (0..events.len()).collect(), ..Delivery::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_at_most_ten_entries() {
        assert_eq!(chunk_bounds(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(chunk_bounds(&[100; 10]), vec![0..10]);
        assert_eq!(chunk_bounds(&[100; 11]), vec![0..10, 10..11]);
        assert_eq!(chunk_bounds(&[100; 23]), vec![0..10, 10..20, 20..23]);
    }

    #[test]
    fn calls_stay_under_256_kb() {
        let third = PUT_EVENTS_MAX_BYTES / 3;
        // Three thirds reach the bound exactly, which is already too much.
        assert_eq!(chunk_bounds(&[third, third, third + 1]), vec![0..2, 2..3]);
        assert_eq!(chunk_bounds(&[third, third, third]), vec![0..3]);
        assert_eq!(chunk_bounds(&[PUT_EVENTS_MAX_BYTES - 1, 1, 5]), vec![0..1, 1..3]);
        for sizes in [vec![90_000; 7], vec![200_000, 70_000, 10, 10, 200_000], vec![30_000; 25]] {
            let bounds = chunk_bounds(&sizes);
            assert_eq!(bounds.iter().map(|r| r.len()).sum::<usize>(), sizes.len(), "{sizes:?}");
            for range in bounds {
                assert!(range.len() <= PUT_EVENTS_MAX);
                assert!(sizes[range].iter().sum::<usize>() < PUT_EVENTS_MAX_BYTES);
            }
        }
    }

    #[test]
    fn an_entry_is_its_texts_in_utf8_bytes() {
        assert_eq!(entry_size("status.service", "status_changed", r#"{"m":"é"}"#), 14 + 14 + 10);
    }
}
