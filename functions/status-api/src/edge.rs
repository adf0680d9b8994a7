//! One invocation as the runtime makes it: the request under a span naming
//! it, then its metrics (`status_shared::telemetry`): the response's status
//! code, and what the handler noted on the way (bulk size, Redis hits and
//! SQL fallbacks, what a write published).
//!
//! The handler notes into a task-local [`CallMeasures`] that this edge
//! scopes around the call, so the routes keep their signatures and a call
//! outside the edge (a test of the handler alone) notes nothing.

use std::cell::RefCell;

use serde_json::Value;
use status_shared::domain::Millis;
use status_shared::ports::ChangePublisher;
use status_shared::telemetry::{names, Metrics, STATUS_CODE};
use tracing::Instrument;

use crate::handler::{ApiResponse, AppApi};
use crate::measures::{CallMeasures, CALL};

impl AppApi {
    /// The one entry point: answers one API Gateway HTTP API (payload v2)
    /// event at `now` under a `request` span with `request_id`, then writes
    /// the call's metrics to `metrics`: `Responses` by
    /// `StatusCode`, `RateLimited` for a 429, `BulkSize`, `RedisHits` and
    /// `SqlFallbacks` for a read, and for a write the events published,
    /// publish failures, users sent to repair and the outbox's depth
    /// (reads never touch the outbox, so they do not pay for counting it).
    /// The Lambda returns [`ApiResponse::into_apigw_json`] of the answer;
    /// the local HTTP edge sends it as it is.
    pub async fn invoke(&self, event: &Value, now: Millis, request_id: Option<&str>, metrics: &Metrics) -> ApiResponse {
        let span = tracing::info_span!("request", request_id = request_id.unwrap_or_default());
        let (response, measures) = CALL
            .scope(RefCell::new(CallMeasures::default()), async {
                let response = self.answer_event(event, now).await;
                (response, CALL.with(|call| std::mem::take(&mut *call.borrow_mut())))
            })
            .instrument(span.clone())
            .await;
        let depth = if measures.wrote && self.committer.publisher.enabled() {
            let by_shard = self.committer.store.outbox_depth_by_shard(1).instrument(span).await;
            by_shard.map(|by_shard| by_shard.values().sum::<u64>())
        } else {
            None
        };
        metrics.emit(request_id, |m| {
            m.count_by(names::RESPONSES, STATUS_CODE, response.status.to_string(), 1);
            m.count(names::RATE_LIMITED, usize::from(response.status == 429));
            if let Some(size) = measures.bulk_size {
                m.sample(names::BULK_SIZE, size as f64);
            }
            m.count(names::REDIS_HITS, measures.hits);
            m.count(names::SQL_FALLBACKS, measures.fallbacks);
            m.count(names::EVENTS_PUBLISHED, measures.published);
            m.count(names::PUBLISH_FAILURES, usize::from(measures.publish_failed));
            m.count(names::CHANGES_FED, measures.fed);
            m.count(names::FEED_FAILURES, usize::from(measures.feed_failed));
            if measures.sent_to_repair > 0 {
                m.count(names::REDIS_FAILURES, 1);
                m.count(names::USERS_SENT_TO_REPAIR, measures.sent_to_repair);
            }
            if let Some(depth) = depth {
                m.sample(names::OUTBOX_DEPTH, depth as f64);
            }
        });
        response
    }
}
