//! One invocation as the runtime makes it: the shards asked for, scanned
//! under a span naming the request, then the scan's metrics
//! (`status_shared::telemetry`) from its [`Summary`].

use serde_json::Value;
use status_shared::domain::Millis;
use status_shared::ports::ChangePublisher;
use status_shared::telemetry::{names, Metrics, SHARD};
use tracing::Instrument;

use crate::error::ScannerError;
use crate::handler::{scan, shards_of, AppScanner, Summary};

impl AppScanner {
    /// Handles one invocation like [`AppScanner::handle`] (the same input
    /// rules and errors), writing the scan's metrics to `metrics` whether
    /// or not every shard succeeded.
    pub async fn invoke(
        &self,
        input: &Value,
        now: Millis,
        request_id: Option<&str>,
        metrics: &Metrics,
    ) -> Result<Summary, ScannerError> {
        let wanted = shards_of(input, self.shards)?;
        self.scan_measured(&wanted, now, request_id, metrics).await.into_result()
    }

    /// Scans `shards` at `now` under an `invocation` span with
    /// `request_id`, then writes the metrics: users scanned, transitions,
    /// repairs drained, index rebuilds, events published, publish
    /// failures, changes fed, feed failures and failed shards for the function, and per `Shard` the
    /// scan's duration (ms) and the outbox events still waiting.
    pub async fn scan_measured(
        &self,
        shards: &[u32],
        now: Millis,
        request_id: Option<&str>,
        metrics: &Metrics,
    ) -> Summary {
        let span =
            tracing::info_span!("invocation", request_id = request_id.unwrap_or_default(), shards = shards.len());
        let summary = scan(&self.committer, shards, now).instrument(span.clone()).await;
        let depth = if self.committer.publisher.enabled() {
            self.committer.store.outbox_depth_by_shard(self.shards).instrument(span).await
        } else {
            None
        };
        metrics.emit(request_id, |m| {
            let total = |f: fn(&crate::handler::ShardSummary) -> usize| summary.shards.iter().map(f).sum::<usize>();
            m.count(names::USERS_SCANNED, total(|s| s.scanned));
            m.count(names::TRANSITIONS, total(|s| s.transitions));
            m.count(names::REPAIRS_DRAINED, total(|s| s.repaired));
            m.count(names::INDEX_REBUILDS, total(|s| s.rebuilds));
            m.count(names::UNREADABLE_ROWS, total(|s| s.unreadable_rows));
            m.count(names::EVENTS_PUBLISHED, total(|s| s.published));
            m.count(names::PUBLISH_FAILURES, total(|s| usize::from(s.publish_failed)));
            m.count(names::CHANGES_FED, total(|s| s.fed));
            m.count(names::FEED_FAILURES, total(|s| usize::from(s.feed_failed)));
            m.count(names::HELD_FLUSHED, total(|s| s.flushed));
            m.count(names::SHARDS_FAILED, summary.failed.len());
            for shard in &summary.shards {
                m.sample_by(names::SCAN_DURATION, SHARD, shard.shard.to_string(), shard.duration_ms as f64);
            }
            if let Some(depth) = &depth {
                for shard in shards {
                    let waiting = depth.get(shard).copied().unwrap_or(0);
                    m.sample_by(names::OUTBOX_DEPTH, SHARD, shard.to_string(), waiting as f64);
                }
            }
        });
        summary
    }
}
