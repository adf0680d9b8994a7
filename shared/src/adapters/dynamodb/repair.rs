//! The cache-repair buffer (DESIGN §6) in the table `REPAIR_TABLE`:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `shard` | N, partition key | `user_id mod SHARDS`, so one scan of a shard is one Query |
//! | `user_id` | N, sort key | the user whose Redis copy may be stale |
//! | `marker` | S | unique per `record` call; a clear deletes only the marker it read |
//! | `expires_at` | N, TTL | epoch seconds |

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use futures::TryStreamExt;

use super::batch::{delete_request, number, put_request, string, write_all};
use crate::adapters::aws::{epoch_millis, epoch_seconds};
use crate::domain::UserId;
use crate::ports::{PendingRepair, RepairBuffer, RepairError};

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
