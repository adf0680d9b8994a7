//! One invocation as the runtime makes it: the batch under a span naming
//! the request and the partitions and offsets it carries, then the batch's
//! metrics (`status_shared::telemetry`) from its [`Summary`].

use aws_lambda_events::event::kafka::KafkaEvent;
use status_shared::domain::Millis;
use status_shared::ports::ChangePublisher;
use status_shared::telemetry::{names, Metrics};
use tracing::Instrument;

use crate::error::AggregatorError;
use crate::handler::{AppAggregator, Summary};

/// `presence.updates-0:12-40,presence.updates-3:7-7`: each partition of
/// the batch with its first and last offset, sorted, for the batch's span.
pub fn offset_ranges(event: &KafkaEvent) -> String {
    let mut ranges: Vec<(&str, i64, i64)> = event
        .records
        .iter()
        .filter_map(|(partition, records)| {
            let first = records.iter().map(|r| r.offset).min()?;
            let last = records.iter().map(|r| r.offset).max()?;
            Some((partition.as_str(), first, last))
        })
        .collect();
    ranges.sort();
    ranges.iter().map(|(p, first, last)| format!("{p}:{first}-{last}")).collect::<Vec<_>>().join(",")
}

impl AppAggregator {
    /// Handles one batch ([`AppAggregator::handle`]) under a `batch` span
    /// with `request_id`, `partitions` and `offsets`, then writes its
    /// metrics to `metrics`: records applied, malformed and dead-lettered,
    /// users written, contention retries, Redis failures sent to repair,
    /// transitions, events published, publish failures, changes fed, feed
    /// failures and the outbox's depth. A failed batch reports the outbox depth only (its counts are
    /// those of the retry to come).
    pub async fn invoke(
        &self,
        event: &KafkaEvent,
        now: Millis,
        request_id: Option<&str>,
        metrics: &Metrics,
    ) -> Result<Summary, AggregatorError> {
        let span = tracing::info_span!(
            "batch",
            request_id = request_id.unwrap_or_default(),
            partitions = event.records.len(),
            offsets = %offset_ranges(event),
        );
        let result = self.handle(event, now).instrument(span.clone()).await;
        let depth = self.outbox_depth().instrument(span).await;
        metrics.emit(request_id, |m| {
            if let Ok(summary) = &result {
                m.count(names::RECORDS_APPLIED, summary.applied);
                m.count(names::RECORDS_MALFORMED, summary.malformed);
                let (stored, lost) =
                    if summary.dead_letter_failed { (0, summary.malformed) } else { (summary.malformed, 0) };
                m.count(names::DEAD_LETTERED, stored);
                m.count(names::DEAD_LETTER_FAILURES, lost);
                m.count(names::USERS_WRITTEN, summary.written);
                m.count(names::CONTENTION_RETRIES, summary.retried);
                m.count(names::TRANSITIONS, summary.transitions);
                if !summary.cache_ok {
                    // Every user written went to the repair buffer.
                    m.count(names::REDIS_FAILURES, 1);
                    m.count(names::USERS_SENT_TO_REPAIR, summary.written);
                }
                m.count(names::EVENTS_PUBLISHED, summary.published);
                m.count(names::PUBLISH_FAILURES, usize::from(summary.publish_failed));
                m.count(names::CHANGES_FED, summary.fed);
                m.count(names::FEED_FAILURES, usize::from(summary.feed_failed));
            }
            if let Some(depth) = depth {
                m.sample(names::OUTBOX_DEPTH, depth as f64);
            }
        });
        result
    }

    /// Events waiting in the outbox, or `None` without a bus (no outbox is
    /// kept) or when SQL does not answer (logged).
    async fn outbox_depth(&self) -> Option<u64> {
        if !self.committer.publisher.enabled() {
            return None;
        }
        self.committer.store.outbox_depth_by_shard(1).await.map(|by_shard| by_shard.values().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_ranges_name_each_partition_first_and_last() {
        let record = |partition: i64, offset: i64| {
            serde_json::json!({"topic": "t", "partition": partition, "offset": offset, "timestamp": 0,
                "timestampType": "CREATE_TIME", "key": null, "value": null, "headers": []})
        };
        let event: KafkaEvent = serde_json::from_value(serde_json::json!({
            "eventSource": "aws:kafka",
            "records": {"t-1": [record(1, 9), record(1, 4), record(1, 7)], "t-0": [record(0, 2)], "t-2": []}
        }))
        .unwrap();
        assert_eq!(offset_ranges(&event), "t-0:2-2,t-1:4-9");
    }
}
