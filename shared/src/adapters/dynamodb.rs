//! DynamoDB: the cache-repair buffer (DESIGN §6) and the dead-letter table
//! for malformed presence records (DESIGN §3).
//!
//! Repair table (`REPAIR_TABLE`):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `shard` | N, partition key | `user_id mod SHARDS`, so one scan of a shard is one Query |
//! | `user_id` | N, sort key | the user whose Redis copy may be stale |
//! | `marker` | S | unique per `record` call; a clear deletes only the marker it read |
//! | `expires_at` | N, TTL | epoch seconds |
//!
//! Dead-letter table (`DEAD_LETTER_TABLE`):
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
//!
//! A letter's item stays far under DynamoDB's 400 KB whatever the record:
//! value, reason, code and user list are cut (see the constants), and the
//! rest is the Kafka topic name (at most 249 bytes) and numbers.
//! | `received_ms` | N | when the aggregator saw it |
//! | `expires_at` | N, TTL | epoch seconds |
//!
//! Over 400 lines because both tables' schemas are documented here in
//! full, beside the code that writes them.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};

use super::aws::{backoff, epoch_millis, epoch_seconds, BATCH_ATTEMPTS};
use crate::domain::UserId;
use crate::ports::{DeadLetter, DeadLetters, PendingRepair, RepairBuffer, RepairError, DEAD_LETTER_USERS_MAX};

/// BatchWriteItem's limit on requests per call.
const BATCH_WRITE_MAX: usize = 25;

/// Batch calls of one `record` or `put` in flight at once: enough to write
/// the users of a 10,000-event batch in a few round trips' time, few enough
/// not to trip on-demand throttling of a cold table.
const BATCH_CONCURRENCY: usize = 8;

/// Conditional deletes of one `clear` in flight at once. Each is its own
/// request (BatchWriteItem cannot carry conditions), so they run side by
/// side rather than one round trip after another.
const CLEAR_CONCURRENCY: usize = 16;

/// How long a repair entry lives if nothing clears it. A scan clears its
/// shard's entries within one schedule once Redis answers, so the TTL only
/// matters for entries nobody will scan any more (a shard dropped by
/// lowering `SHARDS`, a scanner switched off): a week outlives any outage
/// the scanner is expected to repair after, while bounding the table.
const REPAIR_TTL_S: i64 = 7 * 24 * 60 * 60;

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

/// The cache-repair buffer in DynamoDB: one partition per shard, so the
/// scanner of a shard reads exactly its own users with one paginated Query.
#[derive(Clone, Debug)]
pub struct DynamoRepairBuffer {
    client: Client,
    table: String,
    shards: u32,
}

impl DynamoRepairBuffer {
    /// `shards` must equal the `SHARDS` the scanner schedules use, or users
    /// land in partitions no scan reads.
    pub fn new(client: Client, table: impl Into<String>, shards: u32) -> Self {
        Self { client, table: table.into(), shards }
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

impl RepairBuffer for DynamoRepairBuffer {
    async fn record(&self, users: &[UserId]) -> Result<(), RepairError> {
        // One marker for the whole call: unique against every other call,
        // which is all a clear needs to tell "recorded again" apart. The
        // time in it also tells people when the entry was written.
        let marker = format!("{:016x}-{}", rand::random::<u64>(), epoch_millis());
        let expires_at = (epoch_seconds() + REPAIR_TTL_S).to_string();
        // BatchWriteItem refuses a call that names one key twice.
        let mut seen = HashSet::with_capacity(users.len());
        let mut requests = Vec::with_capacity(users.len());
        for user in users.iter().filter(|u| seen.insert(**u)) {
            let item = HashMap::from([
                ("shard".to_owned(), AttributeValue::N(user.shard(self.shards).to_string())),
                ("user_id".to_owned(), AttributeValue::N(user.get().to_string())),
                ("marker".to_owned(), AttributeValue::S(marker.clone())),
                ("expires_at".to_owned(), AttributeValue::N(expires_at.clone())),
            ]);
            requests.push(put_request(item)?);
        }
        write_all(&self.client, &self.table, requests).await
    }

    async fn pending(&self, shard: u32) -> Result<Vec<PendingRepair>, RepairError> {
        let items: Vec<HashMap<String, AttributeValue>> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#shard = :shard")
            .projection_expression("#user, #marker")
            .expression_attribute_names("#shard", "shard")
            .expression_attribute_names("#user", "user_id")
            .expression_attribute_names("#marker", "marker")
            .expression_attribute_values(":shard", AttributeValue::N(shard.to_string()))
            // A user recorded just before the scan must be seen by it, or
            // its repair slips to the next schedule.
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| RepairError::caused_by(format!("Query {} shard {shard}", self.table), e))?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let user = number(item, "user_id").and_then(|raw| UserId::new(raw).ok());
            match (user, string(item, "marker")) {
                (Some(user), Some(marker)) => out.push(PendingRepair { user, marker }),
                // An entry this code cannot read cannot be repaired either;
                // failing the scan for it would block the whole shard, and
                // its TTL removes it.
                _ => tracing::warn!(table = %self.table, shard, ?item, "unreadable repair entry, skipped"),
            }
        }
        Ok(out)
    }

    async fn clear(&self, shard: u32, done: &[PendingRepair]) -> Result<(), RepairError> {
        futures::stream::iter(done.iter().map(Ok))
            .try_for_each_concurrent(CLEAR_CONCURRENCY, |repair| async move {
                let result = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("shard", AttributeValue::N(shard.to_string()))
                    .key("user_id", AttributeValue::N(repair.user.get().to_string()))
                    .condition_expression("#marker = :marker")
                    .expression_attribute_names("#marker", "marker")
                    .expression_attribute_values(":marker", AttributeValue::S(repair.marker.clone()))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    // The user was recorded again after `pending` read it (or
                    // is gone already): the newer entry must stay for the
                    // next repair.
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(()),
                    Err(e) => Err(RepairError::caused_by(
                        format!("DeleteItem {} shard {shard} user {}", self.table, repair.user),
                        e,
                    )),
                }
            })
            .await
    }

    async fn forget(&self, user: UserId) -> Result<(), RepairError> {
        // Every shard, not just the user's under today's `SHARDS`: an entry
        // written under an older shard count names the user too.
        let requests = (0..self.shards.max(1))
            .map(|shard| {
                delete_request(HashMap::from([
                    ("shard".to_owned(), AttributeValue::N(shard.to_string())),
                    ("user_id".to_owned(), AttributeValue::N(user.get().to_string())),
                ]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        write_all(&self.client, &self.table, requests).await
    }
}

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

fn put_request(item: HashMap<String, AttributeValue>) -> Result<WriteRequest, RepairError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| RepairError::caused_by("building a PutRequest", e))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn delete_request(key: HashMap<String, AttributeValue>) -> Result<WriteRequest, RepairError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(|e| RepairError::caused_by("building a DeleteRequest", e))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// Writes `requests` in BatchWriteItem calls of 25, a few at a time, each
/// call resending what DynamoDB left unprocessed (throttling, partition
/// limits) with a growing pause, until all is written or the attempts run
/// out. Every write here is a whole-item put or a delete, so resending is
/// idempotent.
async fn write_all(client: &Client, table: &str, requests: Vec<WriteRequest>) -> Result<(), RepairError> {
    futures::stream::iter(requests)
        .chunks(BATCH_WRITE_MAX)
        .map(Ok)
        .try_for_each_concurrent(BATCH_CONCURRENCY, |chunk| write_chunk(client, table, chunk))
        .await
}

async fn write_chunk(client: &Client, table: &str, mut pending: Vec<WriteRequest>) -> Result<(), RepairError> {
    for attempt in 1..=BATCH_ATTEMPTS {
        let out = client
            .batch_write_item()
            .request_items(table, pending)
            .send()
            .await
            .map_err(|e| RepairError::caused_by(format!("BatchWriteItem {table}"), e))?;
        pending = out.unprocessed_items.and_then(|mut left| left.remove(table)).unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        if attempt < BATCH_ATTEMPTS {
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
    Err(RepairError::new(format!(
        "BatchWriteItem {table}: {} items still unprocessed after {BATCH_ATTEMPTS} attempts",
        pending.len()
    )))
}

fn number<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn string(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
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
