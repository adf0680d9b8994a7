//! Hands an MSK batch, decoded by [`crate::decode`], to the write path: the
//! valid events are aggregated, the malformed records dead-lettered; a
//! malformed record never fails the records beside it.

use aws_lambda_events::event::kafka::KafkaEvent;
use serde::Serialize;
use status_shared::app::{App, AppCache, AppDeadLetters, AppRepairBuffer, AppStore, Feed, Publisher};
use status_shared::domain::Millis;
use status_shared::ports::{
    CacheRead, CacheWrite, ChangeFeed, ChangePublisher, DeadLetters, Outbox, RepairBuffer, StoreWrite,
};
use status_shared::services::Committer;
use tracing::Instrument;

use crate::error::AggregatorError;

pub use crate::decode::{decode, read_batch, Decoded};

/// The answer to one invocation, also logged as the batch's summary line.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    pub applied: usize,
    pub malformed: usize,
    pub users: usize,
    pub written: usize,
    pub transitions: usize,
    pub cache_ok: bool,
    pub retried: usize,
    pub dead_letter_failed: bool,
    pub publish_failed: bool,
    /// Outbox events the bus accepted during the batch.
    pub published: usize,
    /// Changes the push feed accepted (DESIGN §12).
    pub fed: usize,
    /// Whether the push feed refused the batch's changes (logged; the batch
    /// is not failed for it).
    pub feed_failed: bool,
}

/// Everything a batch needs.
pub struct Aggregator<C, S, R, P, F, D> {
    pub committer: Committer<C, S, R, P, F>,
    pub dead_letters: D,
    /// How far ahead of the service clock an event may be stamped.
    pub max_clock_skew_ms: i64,
}

/// The aggregator as the function runs it, over the adapters of an [`App`].
pub type AppAggregator = Aggregator<AppCache, AppStore, AppRepairBuffer, Publisher, Feed, AppDeadLetters>;

impl AppAggregator {
    /// The one way to build the function's handler, from its started
    /// adapters and configuration: used by `main.rs`, the local stack, the
    /// benchmark and the integration tests.
    pub fn from_app(app: &App) -> Self {
        Aggregator {
            committer: app.committer(),
            dead_letters: app.dead_letters.clone(),
            max_clock_skew_ms: app.config.max_clock_skew_ms,
        }
    }
}

impl<C, S, R, P, F, D> Aggregator<C, S, R, P, F, D>
where
    C: CacheRead + CacheWrite,
    S: StoreWrite + Outbox,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
    D: DeadLetters,
{
    /// Handles one batch. Fails only when the batch's effect could not be
    /// made durable; the event source then retries it, which convergence
    /// makes safe.
    pub async fn handle(&self, event: &KafkaEvent, now: Millis) -> Result<Summary, AggregatorError> {
        let decoded = tracing::info_span!("decode").in_scope(|| decode(event, now, self.max_clock_skew_ms));
        let mut summary = Summary {
            records: decoded.records,
            applied: decoded.events.len(),
            malformed: decoded.malformed.len(),
            ..Default::default()
        };
        if !decoded.malformed.is_empty() {
            let put = self.dead_letters.put(&decoded.malformed);
            if let Err(error) =
                put.instrument(tracing::info_span!("dead_letter", count = decoded.malformed.len())).await
            {
                // The records are already logged with topic, partition and
                // offset; holding back the good ones would not help.
                tracing::error!(%error, count = decoded.malformed.len(), "dead letters not written");
                summary.dead_letter_failed = true;
            }
        }
        let mut users: Vec<_> = decoded.events.iter().map(|e| e.user_id).collect();
        users.sort();
        users.dedup();
        summary.users = users.len();
        let outcome = self.committer.aggregate(&decoded.events, now).await?;
        summary.written = outcome.written.len();
        summary.transitions = outcome.transitions.len();
        summary.cache_ok = outcome.cache_ok;
        summary.retried = outcome.retried;
        summary.publish_failed = outcome.publish_failed;
        summary.published = outcome.published;
        summary.fed = outcome.fed;
        summary.feed_failed = outcome.feed_failed;
        tracing::info!(
            records = summary.records,
            applied = summary.applied,
            malformed = summary.malformed,
            users = summary.users,
            written = summary.written,
            transitions = summary.transitions,
            cache_ok = summary.cache_ok,
            retried = summary.retried,
            "batch aggregated"
        );
        Ok(summary)
    }
}
