//! Reads which shards a schedule asks for and scans them.

use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;
use status_shared::app::{App, AppCache, AppRepairBuffer, AppStore, Feed, Publisher};
use status_shared::domain::Millis;
use status_shared::ports::{
    CacheRead, CacheWrite, ChangeFeed, ChangePublisher, DueIndex, HeldChanges, Outbox, RepairBuffer, ScheduleSource,
    StoreWrite,
};
use status_shared::services::scan::ScanOutcome;
use status_shared::services::Committer;

use tracing::Instrument;

use crate::error::{InputError, ScannerError};

/// Shards scanned at once when a schedule asks for all of them: enough to
/// overlap round trips, few enough to keep one Redis and one database calm.
const PARALLEL_SHARDS: usize = 4;

/// The shards an invocation asks for: `{"shard": N}` is shard N; a bare
/// Scheduled Event envelope (from EventBridge or the Scheduler) is every
/// shard.
pub fn shards_of(input: &Value, shards: u32) -> Result<Vec<u32>, InputError> {
    let object = input.as_object().ok_or(InputError::Unrecognized)?;
    let explicit = object.get("shard").or_else(|| object.get("detail").and_then(|d| d.get("shard")));
    if let Some(raw) = explicit {
        let shard = raw
            .as_u64()
            .filter(|s| *s < u64::from(shards))
            .ok_or_else(|| InputError::ShardOutOfRange { got: raw.to_string(), max: shards.saturating_sub(1) })?;
        return Ok(vec![shard as u32]);
    }
    let is_schedule = object.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || matches!(object.get("source").and_then(Value::as_str), Some("aws.events" | "aws.scheduler"));
    if is_schedule {
        Ok((0..shards).collect())
    } else {
        Err(InputError::Unrecognized)
    }
}

/// The answer: one outcome per shard scanned, and the shards that failed.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub shards: Vec<ShardSummary>,
    pub failed: Vec<u32>,
}

impl Summary {
    /// The invocation's result: the summary, or, when any shard failed,
    /// [`ScannerError::ShardsFailed`] so the trigger retries and the Errors
    /// alarm sees it (the other shards keep their work). The one home of
    /// that rule, for the handler and the measured edge alike.
    pub fn into_result(self) -> Result<Summary, ScannerError> {
        if self.failed.is_empty() {
            Ok(self)
        } else {
            Err(ScannerError::ShardsFailed(self.failed))
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ShardSummary {
    pub shard: u32,
    pub repaired: usize,
    pub scanned: usize,
    pub written: usize,
    pub transitions: usize,
    /// Whether the due index was lost and rebuilt from SQL.
    pub rebuilds: usize,
    /// Schedule rows a rebuild could not read (logged, looked at at once).
    pub unreadable_rows: usize,
    /// Outbox events the bus accepted during the scan.
    pub published: usize,
    pub publish_failed: bool,
    /// Changes the push feed accepted (DESIGN §12).
    pub fed: usize,
    /// Whether the push feed refused some (logged; fed again next scan).
    pub feed_failed: bool,
    /// Users with held-back activity fed back to the stream function
    /// once due (DESIGN §12); also counted in `fed`.
    pub flushed: usize,
    /// How long the shard's scan took, ms (the `ScanDuration` metric).
    pub duration_ms: u64,
}

impl ShardSummary {
    fn of(o: ScanOutcome, duration_ms: u64) -> Self {
        Self {
            shard: o.shard,
            repaired: o.repaired,
            scanned: o.scanned,
            written: o.written,
            transitions: o.transitions,
            rebuilds: o.rebuilds,
            unreadable_rows: o.unreadable_rows,
            published: o.published,
            publish_failed: o.publish_failed,
            fed: o.fed,
            feed_failed: o.feed_failed,
            flushed: o.flushed,
            duration_ms,
        }
    }
}

/// The scanner function over its ports.
pub struct IdleScanner<C, S, R, P, F> {
    pub committer: Committer<C, S, R, P, F>,
    /// `SHARDS`: how many shards exist (and schedules fire).
    pub shards: u32,
}

impl<C, S, R, P, F> IdleScanner<C, S, R, P, F>
where
    C: CacheRead + CacheWrite + DueIndex + HeldChanges,
    S: StoreWrite + Outbox + ScheduleSource,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    /// Handles one invocation at `now`: the shards `input` asks for
    /// ([`shards_of`]), scanned. Fails when the input names no shard, or
    /// when a shard failed (the others keep their work), so the Errors
    /// alarm sees it.
    pub async fn handle(&self, input: &Value, now: Millis) -> Result<Summary, ScannerError> {
        let wanted = shards_of(input, self.shards)?;
        scan(&self.committer, &wanted, now).await.into_result()
    }

    /// Every shard, as a bare Scheduled Event asks for.
    pub fn all_shards(&self) -> Vec<u32> {
        (0..self.shards).collect()
    }
}

/// The scanner as the function runs it, over the adapters of an [`App`].
pub type AppScanner = IdleScanner<AppCache, AppStore, AppRepairBuffer, Publisher, Feed>;

impl AppScanner {
    /// The one way to build the function's handler, from its started
    /// adapters and configuration: used by `main.rs`, the local stack and
    /// the integration tests.
    pub fn from_app(app: &App) -> Self {
        IdleScanner { committer: app.committer(), shards: app.config.shards }
    }
}

/// Scans `shards` at `now`; a failed shard does not stop the others.
pub async fn scan<C, S, R, P, F>(committer: &Committer<C, S, R, P, F>, shards: &[u32], now: Millis) -> Summary
where
    C: CacheRead + CacheWrite + DueIndex + HeldChanges,
    S: StoreWrite + Outbox + ScheduleSource,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
{
    let results: Vec<_> = stream::iter(shards.iter().copied())
        .map(|shard| async move {
            // A duration, not a time of day: the rules still get `now`.
            let started = std::time::Instant::now();
            let result = committer.scan_shard(shard, now).instrument(tracing::info_span!("scan", shard)).await;
            (shard, result, started.elapsed().as_millis() as u64)
        })
        .buffer_unordered(PARALLEL_SHARDS)
        .collect()
        .await;
    let mut summary = Summary::default();
    for (shard, result, duration_ms) in results {
        match result {
            Ok(outcome) => summary.shards.push(ShardSummary::of(outcome, duration_ms)),
            Err(error) => {
                tracing::error!(shard, %error, "shard scan failed");
                summary.failed.push(shard);
            }
        }
    }
    summary.shards.sort_by_key(|s| s.shard);
    summary.failed.sort();
    summary
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_shard_input_names_one_shard() {
        assert_eq!(shards_of(&json!({"shard": 3}), 16), Ok(vec![3]));
        assert_eq!(shards_of(&json!({"detail": {"shard": 5}, "source": "aws.events"}), 16), Ok(vec![5]));
    }

    #[test]
    fn a_scheduled_event_envelope_means_every_shard() {
        let envelope = json!({
            "version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "1", "time": "2026-11-27T00:00:00Z", "region": "us-east-1", "resources": [], "detail": {}
        });
        assert_eq!(shards_of(&envelope, 4), Ok(vec![0, 1, 2, 3]));
    }

    #[test]
    fn bad_inputs_are_refused_clearly() {
        assert!(matches!(shards_of(&json!({"shard": 16}), 16), Err(InputError::ShardOutOfRange { .. })));
        assert!(matches!(shards_of(&json!({"shard": -1}), 16), Err(InputError::ShardOutOfRange { .. })));
        assert!(matches!(shards_of(&json!({"shard": "2"}), 16), Err(InputError::ShardOutOfRange { .. })));
        assert_eq!(shards_of(&json!({"hello": 1}), 16), Err(InputError::Unrecognized));
        assert_eq!(shards_of(&json!([1]), 16), Err(InputError::Unrecognized));
    }
}
