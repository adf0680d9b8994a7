//! The dead-letter table (`DEAD_LETTER_TABLE`) of malformed presence
//! records (DESIGN §3), and their erasure (DESIGN §7.1):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `id` | S, partition key | `{topic}:{partition}:{offset}`, so a replayed batch overwrites |
//! | `topic`, `partition`, `offset` | S, N, N | where the record was read |
//! | `code`, `reason` | S | why it was refused |
//! | `value` | S, optional | the record value as received (base64), as much as the aggregator keeps (its first 4 KiB), and never more than 32 KiB here |
//! | `value_bytes` | N, optional | the whole value's length, when `value` is cut |
//! | `user_id` | N, optional | the first user the record names (its key's, when the key is one) |
//! | `user_ids` | NS, optional | every user the record names, at most 1,000; an erasure deletes by `user_id` or any of these |
//! | `received_ms` | N | when the aggregator saw it |
//! | `expires_at` | N, TTL | epoch seconds |
//!
//! A letter's item stays far under DynamoDB's 400 KB whatever the record:
//! value, reason, code and user list are cut (see the constants), and the
//! rest is the Kafka topic name (at most 249 bytes) and numbers.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::batch::{delete_request, number, put_request, string, write_all};
use crate::adapters::aws::epoch_seconds;
use crate::domain::UserId;
use crate::ports::{DeadLetter, DeadLetters, RepairError, DEAD_LETTER_USERS_MAX};

/// How long a dead letter is kept: two weeks gives people time to notice
/// the alarm across a holiday and look, while a producer stuck emitting
/// garbage (and any user data inside the values) cannot pile up for ever.
const DEAD_LETTER_TTL_S: i64 = 14 * 24 * 60 * 60;

/// The most of a record value a dead letter keeps. DynamoDB items stop at
/// 400 KB and a Kafka value may be larger; 32 KiB is plenty to see what
/// was wrong with it.
pub const DEAD_LETTER_VALUE_MAX: usize = 32 * 1024;

/// The most of a reason kept, for the same item-size reason; reasons are
/// short sentences, so this never cuts a real one.
const DEAD_LETTER_REASON_MAX: usize = 4 * 1024;

/// The most of a reason code kept: codes are short identifiers.
const DEAD_LETTER_CODE_MAX: usize = 256;

/// The dead-letter table: malformed records kept for people to look at.
#[derive(Clone, Debug)]
pub struct DynamoDeadLetters {
    client: Client,
    table: String,
}

impl DynamoDeadLetters {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The item key of a letter: the record's position in Kafka, so a
    /// replayed batch writes the same items again instead of new ones.
    pub fn id(letter: &DeadLetter) -> String {
        letter_id(&letter.topic, letter.partition, letter.offset)
    }

    /// Reads one letter back by its position, for people and tests; the
    /// functions only write.
    pub async fn get(&self, topic: &str, partition: i64, offset: i64) -> Result<Option<DeadLetter>, RepairError> {
        let id = letter_id(topic, partition, offset);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| RepairError::caused_by(format!("GetItem {} {id}", self.table), e))?;
        let Some(item) = out.item else { return Ok(None) };
        let letter = (|| {
            Some(DeadLetter {
                topic: string(&item, "topic")?,
                partition: number(&item, "partition")?,
                offset: number(&item, "offset")?,
                code: string(&item, "code")?,
                reason: string(&item, "reason")?,
                value: string(&item, "value"),
                users: letter_users(&item),
                received_ms: number(&item, "received_ms")?,
            })
        })();
        letter.map(Some).ok_or_else(|| RepairError::new(format!("dead letter {id} in {} is unreadable", self.table)))
    }
}

impl DeadLetters for DynamoDeadLetters {
    async fn put(&self, letters: &[DeadLetter]) -> Result<(), RepairError> {
        let expires_at = (epoch_seconds() + DEAD_LETTER_TTL_S).to_string();
        // BatchWriteItem refuses a call that names one key twice; the same
        // position twice is the same record, so the last copy is kept.
        let mut by_id: HashMap<String, &DeadLetter> = HashMap::with_capacity(letters.len());
        let mut order = Vec::with_capacity(letters.len());
        for letter in letters {
            let id = Self::id(letter);
            if by_id.insert(id.clone(), letter).is_none() {
                order.push(id);
            }
        }
        let mut requests = Vec::with_capacity(order.len());
        for id in order {
            let Some(letter) = by_id.get(&id) else { continue };
            requests.push(put_request(letter_item(letter, id, &expires_at))?);
        }
        write_all(&self.client, &self.table, requests).await
    }

    async fn forget(&self, user: UserId) -> Result<(), RepairError> {
        // Letters are keyed by their Kafka position, so finding a user's
        // takes a Scan; the table holds only what the last two weeks
        // refused (its TTL), and erasures are rare.
        // `user_id` alone finds letters written before `user_ids` was.
        let items: Vec<HashMap<String, AttributeValue>> = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("#user = :user OR contains(#users, :user)")
            .projection_expression("#id")
            .expression_attribute_names("#user", "user_id")
            .expression_attribute_names("#users", "user_ids")
            .expression_attribute_names("#id", "id")
            .expression_attribute_values(":user", AttributeValue::N(user.get().to_string()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| RepairError::caused_by(format!("Scan {} for user {user}", self.table), e))?;
        let requests = items
            .iter()
            .filter_map(|item| string(item, "id"))
            .map(|id| delete_request(HashMap::from([("id".to_owned(), AttributeValue::S(id))])))
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests).await
    }
}

fn letter_id(topic: &str, partition: i64, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

/// The item of `letter` under key `id`, every free-length text and list
/// cut so the item stays under DynamoDB's 400 KB (see the module docs).
fn letter_item(letter: &DeadLetter, id: String, expires_at: &str) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("topic".to_owned(), AttributeValue::S(letter.topic.clone())),
        ("partition".to_owned(), AttributeValue::N(letter.partition.to_string())),
        ("offset".to_owned(), AttributeValue::N(letter.offset.to_string())),
        ("code".to_owned(), AttributeValue::S(truncate_utf8(&letter.code, DEAD_LETTER_CODE_MAX).to_owned())),
        ("reason".to_owned(), AttributeValue::S(truncate_utf8(&letter.reason, DEAD_LETTER_REASON_MAX).to_owned())),
        ("received_ms".to_owned(), AttributeValue::N(letter.received_ms.to_string())),
        ("expires_at".to_owned(), AttributeValue::N(expires_at.to_owned())),
        ("id".to_owned(), AttributeValue::S(id)),
    ]);
    if let Some(first) = letter.users.first() {
        item.insert("user_id".to_owned(), AttributeValue::N(first.get().to_string()));
        // A number set cannot hold one number twice.
        let mut seen = HashSet::new();
        let users: Vec<String> = letter
            .users
            .iter()
            .filter(|u| seen.insert(**u))
            .take(DEAD_LETTER_USERS_MAX)
            .map(|u| u.get().to_string())
            .collect();
        item.insert("user_ids".to_owned(), AttributeValue::Ns(users));
    }
    if let Some(value) = &letter.value {
        let kept = truncate_utf8(value, DEAD_LETTER_VALUE_MAX);
        if kept.len() < value.len() {
            // Says that what is kept is not the whole record.
            item.insert("value_bytes".to_owned(), AttributeValue::N(value.len().to_string()));
        }
        item.insert("value".to_owned(), AttributeValue::S(kept.to_owned()));
    }
    item
}

/// The users a stored letter names: its `user_ids`, or its `user_id` alone
/// for a letter written before `user_ids` was; the first one first.
fn letter_users(item: &HashMap<String, AttributeValue>) -> Vec<UserId> {
    let first: Option<UserId> = number(item, "user_id").and_then(|raw| UserId::new(raw).ok());
    let listed = item.get("user_ids").and_then(|v| v.as_ns().ok()).cloned().unwrap_or_default();
    let mut users: Vec<UserId> = first.into_iter().collect();
    for raw in listed {
        if let Some(user) = raw.parse().ok().and_then(|raw| UserId::new(raw).ok()) {
            if !users.contains(&user) {
                users.push(user);
            }
        }
    }
    users
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary (values are base64 text, but a reason may not be).
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("abcdef", 4), "abcd");
        // "é" is two bytes: cutting at 3 would split the second one.
        assert_eq!(truncate_utf8("éé", 3), "é");
    }

    #[test]
    fn a_letter_is_keyed_by_its_kafka_position() {
        let letter = DeadLetter {
            topic: "presence.updates".into(),
            partition: 3,
            offset: 1207,
            code: "invalid_json".into(),
            reason: "expected value".into(),
            value: None,
            users: vec![],
            received_ms: 1,
        };
        assert_eq!(DynamoDeadLetters::id(&letter), "presence.updates:3:1207");
    }

    /// An item's size as DynamoDB counts it, rounded up: names and values
    /// in UTF-8 bytes, a number as its digits and one byte more.
    fn item_bytes(item: &HashMap<String, AttributeValue>) -> usize {
        let value = |v: &AttributeValue| match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len() + 1,
            AttributeValue::Ns(ns) => ns.iter().map(|n| n.len() + 1).sum(),
            other => panic!("a letter holds no {other:?}"),
        };
        item.iter().map(|(name, v)| name.len() + value(v)).sum()
    }

    #[test]
    fn no_letter_makes_an_item_over_400_kb() {
        let megabyte = "é".repeat(512 * 1024);
        let letter = DeadLetter {
            // Kafka's longest topic name.
            topic: "t".repeat(249),
            partition: i64::MIN,
            offset: i64::MIN,
            code: megabyte.clone(),
            reason: megabyte.clone(),
            value: Some(megabyte),
            users: (1..=200_000).map(|raw| UserId::new(UserId::MAX - raw).unwrap()).collect(),
            received_ms: i64::MIN,
        };
        let item = letter_item(&letter, DynamoDeadLetters::id(&letter), &i64::MAX.to_string());
        let size = item_bytes(&item);
        assert!(size < 100 * 1024, "{size} bytes");
        assert_eq!(item["user_ids"].as_ns().unwrap().len(), DEAD_LETTER_USERS_MAX);
        assert_eq!(item["value_bytes"].as_n().unwrap(), &(1024 * 1024).to_string());
    }

    #[test]
    fn a_letter_lists_each_user_once_and_reads_back_the_first_first() {
        let user = |raw| UserId::new(raw).unwrap();
        let letter = DeadLetter {
            topic: "presence.updates".into(),
            partition: 0,
            offset: 1,
            code: "invalid_json".into(),
            reason: "expected value".into(),
            value: None,
            users: vec![user(42), user(7), user(42)],
            received_ms: 1,
        };
        let item = letter_item(&letter, "presence.updates:0:1".into(), "1");
        assert_eq!(item["user_id"].as_n().unwrap(), "42");
        assert_eq!(item["user_ids"].as_ns().unwrap(), &vec!["42".to_owned(), "7".to_owned()]);
        assert_eq!(letter_users(&item), vec![user(42), user(7)]);
        let mut bare = letter.clone();
        bare.users.clear();
        let item = letter_item(&bare, "presence.updates:0:1".into(), "1");
        assert!(!item.contains_key("user_id") && !item.contains_key("user_ids"), "no empty set");
        assert_eq!(letter_users(&item), vec![]);
    }
}
