//! What both tables write with: BatchWriteItem in calls of 25, a few at a
//! time, resending what DynamoDB leaves unprocessed; and the readers of an
//! item's attributes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};

use crate::adapters::aws::{backoff, BATCH_ATTEMPTS};
use crate::ports::RepairError;

/// BatchWriteItem's limit on requests per call.
const BATCH_WRITE_MAX: usize = 25;

/// Batch calls of one `record` or `put` in flight at once: enough to write
/// the users of a 10,000-event batch in a few round trips' time, few enough
/// not to trip on-demand throttling of a cold table.
const BATCH_CONCURRENCY: usize = 8;

pub(super) fn put_request(item: HashMap<String, AttributeValue>) -> Result<WriteRequest, RepairError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| RepairError::caused_by("building a PutRequest", e))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

pub(super) fn delete_request(key: HashMap<String, AttributeValue>) -> Result<WriteRequest, RepairError> {
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
pub(super) async fn write_all(client: &Client, table: &str, requests: Vec<WriteRequest>) -> Result<(), RepairError> {
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

pub(super) fn number<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub(super) fn string(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}
