//! The data the figures run on: presence events as producers send them, MSK
//! batches built in memory, and a population of users in mixed states.

use aws_lambda_events::event::kafka::KafkaEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, UserId};
use status_tests::msk::{msk_event, Record};

use crate::error::Error;

/// One presence event.
pub fn event(kind: EventKind, user: UserId, session: u32, ts_ms: Millis) -> Result<PresenceEvent, Error> {
    Ok(PresenceEvent {
        kind,
        user_id: user,
        session_id: SessionId::new(format!("s{}-{session}", user.get()))?,
        device: Some(if session == 0 { "ios" } else { "web" }.to_owned()),
        ts_ms,
    })
}

pub fn user(id: u64) -> Result<UserId, Error> {
    Ok(UserId::new(id)?)
}

pub fn users(first: u64, count: u64) -> Result<Vec<UserId>, Error> {
    (first..first + count).map(user).collect()
}

/// The record value a producer writes for `event`.
fn value_of(event: &PresenceEvent) -> String {
    json!({
        "type": event.kind.as_str(),
        "user_id": event.user_id.get(),
        "session_id": event.session_id.as_str(),
        "device": event.device,
        "ts_ms": event.ts_ms,
    })
    .to_string()
}

/// An MSK event carrying `events`, each keyed by its user on the user's
/// partition and stamped with its own time, as the event source delivers
/// them (the tests' one batch builder, [`status_tests::msk`]).
pub fn kafka_event(events: &[PresenceEvent]) -> KafkaEvent {
    msk_event(events.iter().map(|event| Record::keyed(event.user_id.get(), value_of(event)).at(event.ts_ms)))
}

/// `count` events over the users `first..first + users`, picked at random
/// (seeded, so every run sees the same batch): 40% heartbeats, 30%
/// activity, 20% connects and 10% disconnects, on up to two sessions per
/// user, stamped within the minute before `now`.
pub fn mixed_batch(first: u64, users: u64, count: usize, now: Millis, seed: u64) -> Result<Vec<PresenceEvent>, Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let kind = match rng.random_range(0..10) {
                0..=3 => EventKind::Heartbeat,
                4..=6 => EventKind::Activity,
                7..=8 => EventKind::Connected,
                _ => EventKind::Disconnected,
            };
            let id = first + rng.random_range(0..users);
            event(kind, user(id)?, rng.random_range(0..2), now - rng.random_range(0..60_000))
        })
        .collect()
}

/// Events that leave the users in a mix of states at `now`: a quarter
/// online on one device, a quarter online on two, a quarter idle (connected,
/// heartbeating, last active twenty minutes ago) and a quarter offline.
pub fn mixed_population(users: &[UserId], now: Millis) -> Result<Vec<PresenceEvent>, Error> {
    let mut events = Vec::with_capacity(users.len() * 3);
    for user in users {
        match user.get() % 4 {
            0 => {
                events.push(event(EventKind::Connected, *user, 0, now - 60_000)?);
                events.push(event(EventKind::Activity, *user, 0, now - 5_000)?);
            }
            1 => {
                events.push(event(EventKind::Connected, *user, 0, now - 120_000)?);
                events.push(event(EventKind::Connected, *user, 1, now - 30_000)?);
                events.push(event(EventKind::Activity, *user, 1, now - 2_000)?);
            }
            2 => {
                events.push(event(EventKind::Connected, *user, 0, now - 1_200_000)?);
                events.push(event(EventKind::Heartbeat, *user, 0, now - 10_000)?);
            }
            _ => {
                events.push(event(EventKind::Connected, *user, 0, now - 600_000)?);
                events.push(event(EventKind::Disconnected, *user, 0, now - 300_000)?);
            }
        }
    }
    Ok(events)
}

/// Whether `user` is among the hidden ones of a population (one in twenty).
pub fn is_hidden(user: UserId) -> bool {
    user.get() % 20 == 7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_back_to_its_events() {
        let events = mixed_batch(1, 50, 200, 1_764_270_000_000, 7).unwrap();
        let kafka = kafka_event(&events);
        let decoded = aggregator::handler::decode(&kafka, 1_764_270_000_000, 0);
        assert_eq!(decoded.records, 200);
        assert!(decoded.malformed.is_empty());
        let mut want: Vec<_> = events.iter().map(|e| (e.user_id, e.ts_ms)).collect();
        let mut got: Vec<_> = decoded.events.iter().map(|e| (e.user_id, e.ts_ms)).collect();
        want.sort();
        got.sort();
        assert_eq!(want, got);
    }

    #[test]
    fn batches_are_repeatable_and_cover_every_kind() {
        let a = mixed_batch(1, 100, 1000, 1_000_000, 3).unwrap();
        assert_eq!(a, mixed_batch(1, 100, 1000, 1_000_000, 3).unwrap());
        for kind in [EventKind::Connected, EventKind::Heartbeat, EventKind::Activity, EventKind::Disconnected] {
            assert!(a.iter().any(|e| e.kind == kind));
        }
        assert!(a.iter().all(|e| (1..=100).contains(&e.user_id.get()) && e.ts_ms <= 1_000_000));
    }
}
