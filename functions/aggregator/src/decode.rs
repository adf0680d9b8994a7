//! Translates an MSK batch into domain events (base64, JSON, the
//! contract's rules, DESIGN §3). A malformed record becomes a dead letter
//! naming its place in the topic and every user it names, and is logged
//! with it. No store is touched.

use std::collections::HashSet;

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine;
use serde_json::Value;
use status_shared::domain::{EventError, Millis, PresenceEvent, UserId};
use status_shared::ports::{DeadLetter, DEAD_LETTER_USERS_MAX};

/// The most of a malformed value kept in a dead letter: enough to see what
/// was wrong without storing a megabyte of garbage.
const DEAD_LETTER_VALUE_BYTES: usize = 4096;

/// The records of a batch split into valid events and dead letters.
pub struct Decoded {
    pub events: Vec<PresenceEvent>,
    pub malformed: Vec<DeadLetter>,
    pub records: usize,
}

/// Reads the event source's payload (JSON) as an MSK batch. Errors: the
/// `serde_json` error when it is not one.
///
/// `aws_lambda_events` reads a record's `timestamp` (epoch ms) through an
/// assertion that it has no fraction, so `1764270090.4` or `"1e-7"` would
/// panic, and with `panic = "abort"` end the process, instead of failing
/// one read. Such a timestamp is cut to its whole milliseconds first: the
/// aggregator never reads it.
pub fn read_batch(mut payload: Value) -> Result<KafkaEvent, serde_json::Error> {
    if let Some(partitions) = payload.get_mut("records").and_then(Value::as_object_mut) {
        let records = partitions.values_mut().filter_map(Value::as_array_mut).flatten();
        for timestamp in records.filter_map(|record| record.get_mut("timestamp")) {
            if let Some(whole) = whole_ms(timestamp) {
                *timestamp = Value::from(whole);
            }
        }
    }
    serde_json::from_value(payload)
}

/// The whole milliseconds of a non-negative timestamp with a fraction,
/// read as the library reads it (a number, or text holding one); `None`
/// for anything the library reads without panicking.
fn whole_ms(timestamp: &Value) -> Option<u64> {
    let ms = match timestamp {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse::<f64>().ok()?,
        _ => return None,
    };
    // Below 2^53 whenever there is a fraction, so the cut is exact.
    (ms.is_finite() && ms >= 0.0 && ms.fract() != 0.0).then(|| ms.trunc() as u64)
}

/// Decodes every record of `event` (base64, JSON, the contract's rules).
pub fn decode(event: &KafkaEvent, now: Millis, max_clock_skew_ms: i64) -> Decoded {
    let mut out = Decoded { events: Vec::new(), malformed: Vec::new(), records: 0 };
    // Sorted so logs and dead letters come out in a stable order.
    let mut partitions: Vec<_> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    for (topic_partition, records) in partitions {
        for record in records {
            out.records += 1;
            let parsed = record
                .value
                .as_deref()
                .ok_or(EventError::MissingValue)
                .and_then(|b64| {
                    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| EventError::InvalidBase64)
                })
                .and_then(|bytes| PresenceEvent::parse(&bytes))
                .and_then(|e| e.check_key(key_bytes(record.key.as_deref()).as_deref()).map(|()| e))
                .and_then(|e| e.check_not_ahead(now, max_clock_skew_ms).map(|()| e));
            match parsed {
                Ok(e) => out.events.push(e),
                Err(error) => {
                    let topic = record.topic.clone().unwrap_or_else(|| topic_of(topic_partition));
                    tracing::warn!(
                        topic = %topic,
                        partition = record.partition,
                        offset = record.offset,
                        code = error.code(),
                        reason = %error,
                        "malformed presence record"
                    );
                    out.malformed.push(DeadLetter {
                        topic,
                        partition: record.partition,
                        offset: record.offset,
                        code: error.code().to_owned(),
                        reason: error.to_string(),
                        value: record.value.as_deref().map(|v| truncate(v, DEAD_LETTER_VALUE_BYTES)),
                        users: named_users(record.key.as_deref(), record.value.as_deref()),
                        received_ms: now,
                    });
                }
            }
        }
    }
    out
}

/// A record's key as its producer wrote it, from its base64: `None` for a
/// record without one. A key that is not base64 reads as no bytes, which
/// name no user.
fn key_bytes(key: Option<&str>) -> Option<Vec<u8>> {
    key.map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default())
}

/// Every user a refused record names, so an erasure (DESIGN §7.1) finds
/// its dead letter by any of them: the record key (producers key by the
/// user id in decimal, DESIGN §9), the value's `user_id` when the value is
/// a JSON object (a number, or a string of decimal digits), and every
/// `"user_id"` member written in the value's text, for a value that is not
/// JSON (cut short, broken) or whose id sits deeper. Key and value arrive
/// base64-encoded. Ids out of the contract's range are left out; each id
/// is listed once, the key's first, and no more than
/// [`DEAD_LETTER_USERS_MAX`] are collected (the rest of the value is not
/// read), so a value of megabytes costs one linear pass at most.
fn named_users(key: Option<&str>, value: Option<&str>) -> Vec<UserId> {
    let decode = |b64: &str| base64::engine::general_purpose::STANDARD.decode(b64).ok();
    let mut users: Vec<UserId> = Vec::new();
    let mut seen: HashSet<UserId> = HashSet::new();
    // Whether there is room for more.
    let mut add = |raw: Option<u64>| {
        if let Some(user) = raw.and_then(|raw| UserId::new(raw).ok()) {
            if users.len() < DEAD_LETTER_USERS_MAX && seen.insert(user) {
                users.push(user);
            }
        }
        users.len() < DEAD_LETTER_USERS_MAX
    };
    add(key.and_then(decode).and_then(|bytes| String::from_utf8(bytes).ok()).and_then(|k| k.trim().parse().ok()));
    if let Some(bytes) = value.and_then(decode) {
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            add(match json.get("user_id") {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            });
        }
        for raw in user_id_mentions(&bytes) {
            if !add(Some(raw)) {
                break;
            }
        }
    }
    users
}

/// The decimal ids written after each `"user_id"` member name in `text`,
/// JSON or not, in order and lazily: the name, optional whitespace, `:`,
/// optional whitespace, an optional `"`, then the digits (as many as fit a
/// `u64`).
fn user_id_mentions(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const NAME: &[u8] = b"\"user_id\"";
    let skip_space = |mut at: usize| {
        while text.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut from = 0;
    std::iter::from_fn(move || loop {
        let offset = text.get(from..)?.windows(NAME.len()).position(|w| w == NAME)?;
        from += offset + NAME.len();
        let mut at = skip_space(from);
        if text.get(at) != Some(&b':') {
            continue;
        }
        at = skip_space(at + 1);
        if text.get(at) == Some(&b'"') {
            at += 1;
        }
        let digits = text.get(at..).unwrap_or_default().iter().take_while(|b| b.is_ascii_digit()).take(20);
        let mut raw: Option<u64> = None;
        for digit in digits {
            raw = raw.unwrap_or(0).checked_mul(10).and_then(|r| r.checked_add(u64::from(digit - b'0')));
            if raw.is_none() {
                break;
            }
        }
        if raw.is_some() {
            return raw;
        }
    })
}

/// `presence.updates-3` names topic `presence.updates`, partition 3.
fn topic_of(topic_partition: &str) -> String {
    match topic_partition.rsplit_once('-') {
        Some((topic, partition)) if partition.bytes().all(|b| b.is_ascii_digit()) => topic.to_owned(),
        _ => topic_partition.to_owned(),
    }
}

fn truncate(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_record_names_every_user_of_its_key_and_value() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ids = |users: Vec<UserId>| users.iter().map(|u| u.get()).collect::<Vec<_>>();
        let garbage = b64("not json");
        assert_eq!(ids(named_users(Some(&b64("42")), Some(&garbage))), vec![42], "the key");
        let value = b64(r#"{"type":"nap","user_id":7}"#);
        assert_eq!(ids(named_users(None, Some(&value))), vec![7], "the value's user_id");
        assert_eq!(ids(named_users(Some(&b64("42")), Some(&value))), vec![42, 7], "both, the key's first");
        assert_eq!(ids(named_users(Some(&b64("7")), Some(&value))), vec![7], "once each");
        assert_eq!(ids(named_users(Some(&b64("x")), Some(&value))), vec![7], "a key that is no id");
        assert_eq!(ids(named_users(None, Some(&b64(r#"{"user_id":"42","ts_ms":1}"#)))), vec![42], "a string id");
        let cut = b64(r#"{"type":"activity","user_id" : "99","session_id":"s","ts_"#);
        assert_eq!(ids(named_users(None, Some(&cut))), vec![99], "a value cut short");
        let broken = b64(r#"{"user_id": 5, "user_id":6 oops"#);
        assert_eq!(ids(named_users(None, Some(&broken))), vec![5, 6], "every mention in text that is not JSON");
        let nested = b64(r#"{"type":"x","data":{"user_id":8}}"#);
        assert_eq!(ids(named_users(None, Some(&nested))), vec![8], "a mention deeper in JSON");
        assert_eq!(ids(named_users(None, Some(&garbage))), Vec::<u64>::new());
        assert_eq!(ids(named_users(None, Some(&b64(r#"{"user_id":-3}"#)))), Vec::<u64>::new(), "no valid id");
        assert_eq!(ids(named_users(None, Some(&b64(r#"{"user_id":0}"#)))), Vec::<u64>::new(), "no valid id");
        let huge = b64(r#"{"user_id":99999999999999999999999}"#);
        assert_eq!(ids(named_users(None, Some(&huge))), Vec::<u64>::new(), "past u64");
        assert_eq!(ids(named_users(None, Some(&b64(r#""user_id""#)))), Vec::<u64>::new(), "a name with nothing after");
        assert_eq!(ids(named_users(Some("%%%"), None)), Vec::<u64>::new(), "not base64");
    }

    #[test]
    fn a_value_naming_many_users_lists_the_first_thousand_once_each() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // 200,000 distinct ids, each written twice, after the key's.
        let mut text = String::from("[");
        for id in 1..=200_000u64 {
            text.push_str(&format!(r#""user_id":{id},"user_id":{id},"#));
        }
        let users = named_users(Some(&b64("500000")), Some(&b64(&text)));
        assert_eq!(users.len(), DEAD_LETTER_USERS_MAX);
        let ids: Vec<u64> = users.iter().map(|u| u.get()).collect();
        let expected: Vec<u64> =
            std::iter::once(500_000).chain(1..u64::try_from(DEAD_LETTER_USERS_MAX).unwrap()).collect();
        assert_eq!(ids, expected, "the key's first, then the value's in order, each once");
    }

    #[test]
    fn a_record_timestamp_with_a_fraction_is_read_not_a_panic() {
        // Found by the msk_event fuzz target: the library's own reader
        // asserts on these and took the process down.
        let value = base64::engine::general_purpose::STANDARD
            .encode(r#"{"type":"activity","user_id":42,"session_id":"s","ts_ms":1764270090000}"#);
        for (timestamp, cut) in [
            (serde_json::json!(1_764_270_090.4), Some(1_764_270_090)),
            (serde_json::json!("1764270090.99"), Some(1_764_270_090)),
            (serde_json::json!("1e-7"), Some(0)),
            (serde_json::json!(1_764_270_090_040_u64), None),
            (serde_json::json!("1764270090040"), None),
        ] {
            assert_eq!(whole_ms(&timestamp), cut, "{timestamp}");
            let payload = serde_json::json!({ "records": { "presence.updates-0": [{
                "topic": "presence.updates", "partition": 0, "offset": 1, "timestamp": timestamp,
                "timestampType": "CREATE_TIME", "key": "NDI=", "value": value, "headers": []
            }]}});
            let event = read_batch(payload).unwrap();
            assert_eq!(decode(&event, 1_764_270_090_000, 0).events.len(), 1);
        }
        let negative = serde_json::json!({ "records": { "p-0": [{ "partition": 0, "offset": 1, "timestamp": -1.5,
            "key": null, "value": null, "headers": [] }]}});
        assert!(read_batch(negative).is_err(), "the library refuses a negative one itself");
        assert!(read_batch(serde_json::json!([1])).is_err());
    }

    /// A batch of `values` on one partition, each keyed as producers key
    /// it: by the `user_id` it names, if any.
    fn batch(values: &[Option<&str>]) -> KafkaEvent {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let records: Vec<serde_json::Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let user = v.and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok()?["user_id"].as_u64());
                serde_json::json!({
                    "topic": "presence.updates", "partition": 0, "offset": i, "timestamp": 0,
                    "timestampType": "CREATE_TIME", "key": user.map(|u| b64(&u.to_string())),
                    "value": v.map(b64),
                    "headers": []
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "eventSource": "aws:kafka",
            "records": { "presence.updates-0": records }
        }))
        .unwrap()
    }

    #[test]
    fn a_malformed_record_is_set_aside_and_the_good_ones_kept() {
        let good = r#"{"type":"activity","user_id":1,"session_id":"s","ts_ms":1000}"#;
        let event = batch(&[Some(good), Some("{oops"), None, Some(good)]);
        let decoded = decode(&event, 1000, 0);
        assert_eq!(decoded.records, 4);
        assert_eq!(decoded.events.len(), 2);
        let codes: Vec<_> = decoded.malformed.iter().map(|d| (d.offset, d.code.as_str())).collect();
        assert_eq!(codes, vec![(1, "invalid_json"), (2, "missing_value")]);
        assert_eq!(decoded.malformed[0].topic, "presence.updates");
    }

    #[test]
    fn bad_base64_and_future_stamps_are_malformed() {
        let ahead = r#"{"type":"activity","user_id":1,"session_id":"s","ts_ms":5000}"#;
        let mut event = batch(&[Some(ahead)]);
        event.records.get_mut("presence.updates-0").unwrap()[0].value = Some("!!not base64".into());
        assert_eq!(decode(&event, 0, 0).malformed[0].code, "invalid_base64");
        let event = batch(&[Some(ahead)]);
        assert_eq!(decode(&event, 1000, 1000).malformed[0].code, "ts_ms_in_future");
        assert_eq!(decode(&event, 4000, 1000).events.len(), 1);
    }

    #[test]
    fn a_record_not_keyed_by_its_user_id_is_malformed() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let good = r#"{"type":"activity","user_id":42,"session_id":"s","ts_ms":1000}"#;
        let mut event = batch(&[Some(good); 5]);
        let records = event.records.get_mut("presence.updates-0").unwrap();
        records[1].key = None;
        records[2].key = Some(b64("43"));
        records[3].key = Some("42".into());
        // A tombstone: a key and no value.
        records[4].value = None;
        let decoded = decode(&event, 1000, 0);
        assert_eq!(decoded.events.len(), 1, "only the record keyed by its user");
        let codes: Vec<_> = decoded.malformed.iter().map(|d| (d.offset, d.code.as_str())).collect();
        assert_eq!(
            codes,
            vec![(1, "missing_key"), (2, "key_not_user_id"), (3, "key_not_user_id"), (4, "missing_value")],
            "a key not in base64 names no user"
        );
        let users: Vec<Vec<u64>> =
            decoded.malformed.iter().map(|d| d.users.iter().map(|u| u.get()).collect()).collect();
        assert_eq!(users, vec![vec![42], vec![43, 42], vec![42], vec![42]], "every user named, the key's first");
    }

    #[test]
    fn the_topic_comes_from_the_partition_key_when_the_record_lacks_it() {
        assert_eq!(topic_of("presence.updates-12"), "presence.updates");
        assert_eq!(topic_of("odd"), "odd");
    }
}
