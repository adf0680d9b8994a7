//! `msk_event`: an MSK batch as the event source sends it (JSON, values in
//! base64) through the aggregator's decoding, and one record value through
//! the presence event parser (DESIGN §3, §9).

use aggregator::handler::{decode, read_batch, Decoded};
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine;
use status_shared::domain::{PresenceEvent, SessionId, UserId};

use crate::{MAX_CLOCK_SKEW_MS, NOW_MS};

/// The most of a refused value a dead letter keeps (bytes), as the
/// aggregator cuts it.
const DEAD_LETTER_VALUE_BYTES: usize = 4096;

/// Reads `data` three ways: as a whole MSK batch (when it is one, read by
/// [`read_batch`] as the function reads its payload), as one
/// record value given straight to [`PresenceEvent::parse`], and as the
/// base64 value of a one-record batch, which must agree with the direct
/// parse. Panics when a record is neither one event nor one dead letter,
/// or an accepted event breaks the contract's ranges.
pub fn check(data: &[u8]) {
    // As the function reads its payload: JSON, then the batch.
    if let Ok(Ok(event)) = serde_json::from_slice(data).map(read_batch) {
        check_batch(&event);
    }

    let direct = PresenceEvent::parse(data);
    if let Ok(event) = &direct {
        check_event(event);
    }

    // Keyed as a producer keys it (DESIGN §3): by the value's user id, so
    // the key rule refuses nothing here; a value that does not parse is
    // refused for itself before its key is looked at.
    let key = direct.as_ref().map_or_else(|_| "42".to_owned(), |event| event.user_id.to_string());
    let decoded = check_batch(&one_record(data, &key));
    match direct.and_then(|event| event.check_not_ahead(NOW_MS, MAX_CLOCK_SKEW_MS).map(|()| event)) {
        Ok(event) => assert_eq!(decoded.events, vec![event], "the batch and the parser disagree"),
        Err(error) => {
            assert!(decoded.events.is_empty(), "the batch accepted what the parser refused ({error})");
            let code = decoded.malformed.first().map(|letter| letter.code.as_str());
            assert_eq!(code, Some(error.code()), "the batch and the parser refuse differently");
        }
    }
}

/// A batch of one record on partition 3 whose value is `data` in base64,
/// keyed by `key` (a user id in decimal, DESIGN §3).
fn one_record(data: &[u8], key: &str) -> KafkaEvent {
    let mut record = KafkaRecord::default();
    record.topic = Some("presence.updates".to_owned());
    record.partition = 3;
    record.offset = 7;
    record.key = Some(base64::engine::general_purpose::STANDARD.encode(key));
    record.value = Some(base64::engine::general_purpose::STANDARD.encode(data));
    let mut event = KafkaEvent::default();
    event.records.insert("presence.updates-3".to_owned(), vec![record]);
    event
}

/// Decodes a batch and checks that every record ends as exactly one event
/// or one dead letter, and that each is in range.
fn check_batch(event: &KafkaEvent) -> Decoded {
    let decoded = decode(event, NOW_MS, MAX_CLOCK_SKEW_MS);
    let records: usize = event.records.values().map(Vec::len).sum();
    assert_eq!(decoded.records, records, "records counted");
    assert_eq!(decoded.events.len() + decoded.malformed.len(), records, "each record is an event or a dead letter");
    for event in &decoded.events {
        check_event(event);
        assert!(event.ts_ms <= NOW_MS + MAX_CLOCK_SKEW_MS, "accepted an event from too far ahead: {event:?}");
    }
    for letter in &decoded.malformed {
        assert!(!letter.code.is_empty() && !letter.reason.is_empty(), "a dead letter says why: {letter:?}");
        assert!(letter.value.as_ref().is_none_or(|v| v.len() <= DEAD_LETTER_VALUE_BYTES), "dead letter value cut");
        assert_eq!(letter.received_ms, NOW_MS);
        letter.users.iter().copied().for_each(assert_user);
        let mut distinct = letter.users.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), letter.users.len(), "a dead letter names a user twice: {letter:?}");
    }
    decoded
}

/// The ranges an accepted event must keep (DESIGN §3).
fn check_event(event: &PresenceEvent) {
    assert_user(event.user_id);
    let session = event.session_id.as_str().len();
    assert!((1..=SessionId::MAX_BYTES).contains(&session), "session id of {session} bytes");
    assert!(event.device.as_ref().is_none_or(|d| d.len() <= PresenceEvent::MAX_DEVICE_BYTES), "device too long");
    assert!(event.ts_ms >= 0, "negative ts_ms {}", event.ts_ms);
}

fn assert_user(user: UserId) {
    assert!((1..=UserId::MAX).contains(&user.get()), "user id {} out of range", user.get());
}
