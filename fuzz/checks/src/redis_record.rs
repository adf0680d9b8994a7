//! `redis_record`: a `status:{id}` hash as Redis hands it back, through the
//! record codec, and a read model (`sum`) through its byte parser
//! (DESIGN §5, §10). A damaged hash may be refused; whatever is read must
//! write back to the same record, and its read model must answer as the
//! record does.

use std::collections::HashMap;

use status_shared::adapters::codec::{summary_from_bytes, summary_to_text};
use status_shared::adapters::redis::record::{decode, encode, SUMMARY_FIELD};
use status_shared::domain::{ReadModel, Rules, UserRecord};

use crate::NOW_MS;

/// Reads `data` as a read model, and as a hash of `name=value` lines.
/// Panics when something read does not write back to itself, or a record
/// and its read model answer differently.
pub fn check(data: &[u8]) {
    check_summary(data);
    let fields = fields_of(data);
    let Ok(record) = decode(&fields) else { return };
    let written = rewrite(&record, &fields);
    assert_eq!(written, UserRecord { written_ms: NOW_MS, ..record.clone() }, "a write changed the record");
    assert_eq!(rewrite(&written, &fields), written, "a second write changed the record");
}

/// A hash from `name=value` lines (split at the first `=`; a line without
/// one is no field). Redis returns text, so bytes that are not UTF-8 are
/// replaced as a lossy read would.
pub fn fields_of(data: &[u8]) -> HashMap<String, String> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|b| *b == b'=')?;
            Some((
                String::from_utf8_lossy(&line[..at]).into_owned(),
                String::from_utf8_lossy(&line[at + 1..]).into_owned(),
            ))
        })
        .collect()
}

/// Encodes `record` at [`NOW_MS`] and reads it back, checking that the read
/// model written beside it answers as the record does.
fn rewrite(record: &UserRecord, original: &HashMap<String, String>) -> UserRecord {
    let rules = Rules::default();
    let fields: HashMap<String, String> =
        encode(record, NOW_MS, &rules).into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    let again = match decode(&fields) {
        Ok(again) => again,
        Err(reason) => panic!("an encoded record does not read back ({reason}); read from {original:?}"),
    };
    let text = fields.get(SUMMARY_FIELD).map_or("", String::as_str);
    let summary = match summary_from_bytes(text.as_bytes()) {
        Ok(summary) => summary,
        Err(reason) => panic!("a written read model {text:?} does not read back ({reason})"),
    };
    assert_eq!(summary, ReadModel::of(&record.state, NOW_MS), "the read model is not the record's");
    for rules in [rules, Rules { offline_grace_ms: 60_000, ..rules }] {
        for now in [NOW_MS, NOW_MS + rules.idle_after_ms + 1, NOW_MS + rules.session_ttl_ms + 1] {
            for is_self in [true, false] {
                assert_eq!(
                    summary.view_for(is_self, now, &rules),
                    record.state.view_for(is_self, now, &rules),
                    "the read model answers otherwise than the record at {now}, is_self {is_self}"
                );
            }
        }
    }
    again
}

/// A read model that parses writes back to text that parses to itself.
fn check_summary(data: &[u8]) {
    let Ok(summary) = summary_from_bytes(data) else { return };
    let text = summary_to_text(&summary);
    assert_eq!(summary_from_bytes(text.as_bytes()).as_ref(), Ok(&summary), "{text:?} does not read back");
    let rules = Rules::default();
    for is_self in [true, false] {
        let _ = summary.view_for(is_self, NOW_MS, &rules);
    }
}
