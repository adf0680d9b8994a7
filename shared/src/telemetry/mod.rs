//! Metrics as CloudWatch embedded metric format (EMF) lines: each
//! invocation's counts, written once at the end of the call as JSON lines
//! on stdout, which Lambda sends to CloudWatch Logs and CloudWatch turns
//! into metrics. No agent, no network call per metric.
//!
//! The `metrics` facade with `metrics_cloudwatch_embedded` as its recorder
//! does the EMF encoding. That recorder is process-wide, so every emission
//! here is one synchronous step under one lock: record this call's values,
//! flush them, release. A flush therefore holds exactly one call's values,
//! also when the local stack or a test runs many handlers in one process.
//! The handlers measure at their edge, from the outcomes the services
//! return, and hand the numbers to [`Metrics::emit`]; nothing below the
//! edge knows about metrics.
//!
//! Dimensions are few: `Function` on every metric, `Shard` where a shard's
//! figure matters (scan duration, outbox depth in the scanner), and
//! `StatusCode` on the API's responses. Names are in [`names`]; an EMF line
//! is read back by [`EmfDocument`] (`document`).

use std::sync::{Arc, Mutex, OnceLock};

use metrics::Unit;
use metrics_cloudwatch_embedded::{Builder, Collector};

/// The one CloudWatch namespace of the service's metrics.
pub const NAMESPACE: &str = "OnlineStatus";

mod document;
pub mod names;

pub use document::EmfDocument;

/// The `Function` dimension's values.
pub mod functions {
    pub const AGGREGATOR: &str = "Aggregator";
    pub const IDLE_SCANNER: &str = "IdleScanner";
    pub const STATUS_API: &str = "StatusApi";
    pub const STATUS_STREAM: &str = "StatusStream";
}

/// The dimension naming a WebSocket route.
pub const ROUTE: &str = "Route";

/// The dimension naming the function on every metric.
pub const FUNCTION: &str = "Function";
/// The dimension naming a scanner shard.
pub const SHARD: &str = "Shard";
/// The dimension naming an HTTP status code.
pub const STATUS_CODE: &str = "StatusCode";

/// Receives each EMF document (one JSON line, without its newline).
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where a function's metrics go.
#[derive(Clone)]
enum Sink {
    /// Lambda: stdout, which CloudWatch Logs reads.
    Stdout,
    /// A test's capture or the local stack's summary.
    Lines(LineSink),
}

/// A function's metric emitter: which function it speaks for, and where
/// its EMF lines go. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    function: &'static str,
    sink: Sink,
}

/// EMF lines a [`Metrics::capture`] collected, for tests.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// Every line so far, parsed.
    pub fn documents(&self) -> Vec<EmfDocument> {
        lock(&self.0).iter().filter_map(|line| EmfDocument::parse(line)).collect()
    }

    /// Every line so far, as printed.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.0).clone()
    }

    /// Forgets the lines so far.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// The values one call records, handed to [`Metrics::emit`]'s closure.
pub struct Measures {
    function: &'static str,
}

impl Measures {
    /// Adds `value` to counter `name` (a zero is not printed).
    pub fn count(&self, name: &'static str, value: usize) {
        metrics::counter!(name, FUNCTION => self.function).increment(value as u64);
    }

    /// Adds `value` to counter `name` under one more dimension.
    pub fn count_by(&self, name: &'static str, dimension: &'static str, at: String, value: usize) {
        metrics::counter!(name, FUNCTION => self.function, dimension => at).increment(value as u64);
    }

    /// Records one sample of `name` (a size, a depth, a duration in ms).
    pub fn sample(&self, name: &'static str, value: f64) {
        metrics::histogram!(name, FUNCTION => self.function).record(value);
    }

    /// Records one sample of `name` under one more dimension.
    pub fn sample_by(&self, name: &'static str, dimension: &'static str, at: String, value: f64) {
        metrics::histogram!(name, FUNCTION => self.function, dimension => at).record(value);
    }
}

/// One call at a time records and flushes (see the module docs).
static EMITTING: Mutex<()> = Mutex::new(());
static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while emitting leaves nothing half-done that matters here.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The process's recorder, installed on first use. `None` if another
/// recorder was installed first; metrics are then off, and say so once.
fn collector() -> Option<&'static Collector> {
    *COLLECTOR.get_or_init(|| match Builder::new().cloudwatch_namespace(NAMESPACE).init() {
        Ok(collector) => {
            describe();
            Some(collector)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics recorder not installed; no EMF metrics from this process");
            None
        }
    })
}

/// Units CloudWatch shows; everything not named here is a count.
fn describe() {
    use names::*;
    for name in [
        RECORDS_APPLIED,
        RECORDS_MALFORMED,
        DEAD_LETTERED,
        DEAD_LETTER_FAILURES,
        USERS_WRITTEN,
        CONTENTION_RETRIES,
        REDIS_FAILURES,
        USERS_SENT_TO_REPAIR,
        REDIS_HITS,
        SQL_FALLBACKS,
        RATE_LIMITED,
        RESPONSES,
        USERS_SCANNED,
        TRANSITIONS,
        REPAIRS_DRAINED,
        INDEX_REBUILDS,
        SHARDS_FAILED,
        PUBLISH_FAILURES,
        CHANGES_FED,
        FEED_FAILURES,
        EVENTS_PUBLISHED,
        CONNECTIONS_OPENED,
        CONNECTIONS_CLOSED,
        MESSAGES,
        FANOUT_USERS,
        FANOUT_CONNECTIONS,
        FRAMES_SENT,
        CONNECTIONS_GONE,
        POST_FAILURES,
        RESUME_RESETS,
    ] {
        metrics::describe_counter!(name, Unit::Count, "");
    }
    metrics::describe_histogram!(BULK_SIZE, Unit::Count, "");
    metrics::describe_histogram!(OUTBOX_DEPTH, Unit::Count, "");
    metrics::describe_histogram!(SCAN_DURATION, Unit::Milliseconds, "");
    metrics::describe_histogram!(SUBSCRIBED_IDS, Unit::Count, "");
    metrics::describe_histogram!(SUBSCRIPTIONS_ADDED, Unit::Count, "");
    metrics::describe_histogram!(SUBSCRIPTIONS_HELD, Unit::Count, "");
    metrics::describe_histogram!(RESUME_LOG_ENTRIES, Unit::Count, "");
    metrics::describe_histogram!(RESUME_CURSOR_AGE, Unit::Milliseconds, "");
    metrics::describe_histogram!(FANOUT_LAG, Unit::Milliseconds, "");
}

impl Metrics {
    /// Metrics of `function` (a [`functions`] value) on stdout: what a
    /// Lambda function uses.
    pub fn stdout(function: &'static str) -> Self {
        Self { function, sink: Sink::Stdout }
    }

    /// Metrics of `function` handed, line by line, to `sink`.
    pub fn to_lines(function: &'static str, sink: LineSink) -> Self {
        Self { function, sink: Sink::Lines(sink) }
    }

    /// Metrics of `function` kept in memory for a test to read.
    pub fn capture(function: &'static str) -> (Self, Captured) {
        let captured = Captured::default();
        let lines = captured.0.clone();
        (Self::to_lines(function, Arc::new(move |line| lock(&lines).push(line.to_owned()))), captured)
    }

    /// The `Function` dimension's value.
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// Records one call's values through `record` and writes them as EMF
    /// lines (one per set of dimensions), with `request_id` as the
    /// `RequestId` property when known. Never fails: a line that cannot be
    /// written is logged and dropped.
    pub fn emit(&self, request_id: Option<&str>, record: impl FnOnce(&Measures)) {
        let Some(collector) = collector() else { return };
        let _one_call = lock(&EMITTING);
        record(&Measures { function: self.function });
        if let Some(id) = request_id {
            collector.set_property("RequestId", id.to_owned());
        }
        let result = match &self.sink {
            Sink::Stdout => collector.flush(std::io::stdout().lock()),
            Sink::Lines(sink) => {
                let mut buffer = Vec::new();
                let result = collector.flush(&mut buffer);
                for line in String::from_utf8_lossy(&buffer).lines() {
                    sink(line);
                }
                result
            }
        };
        collector.remove_property("RequestId");
        if let Err(error) = result {
            tracing::warn!(%error, "metrics not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_is_one_flush_with_its_dimensions_and_units() {
        let (metrics, captured) = Metrics::capture("UnitTest");
        metrics.emit(Some("req-1"), |m| {
            m.count("UnitCounter", 3);
            m.count("UnitZero", 0);
            m.sample_by("UnitDuration", SHARD, "4".into(), 12.5);
        });
        let docs = captured.documents();
        assert_eq!(docs.len(), 2, "{:?}", captured.lines());
        let plain = docs.iter().find(|d| d.dimension(SHARD).is_none()).unwrap();
        assert_eq!(plain.namespace, NAMESPACE);
        assert_eq!(plain.dimension(FUNCTION), Some("UnitTest"));
        assert_eq!(plain.values.get("UnitCounter"), Some(&vec![3.0]));
        assert!(!plain.values.contains_key("UnitZero"), "a zero count is not printed");
        assert_eq!(plain.request_id.as_deref(), Some("req-1"));
        let shard = docs.iter().find(|d| d.dimension(SHARD) == Some("4")).unwrap();
        assert_eq!(shard.values.get("UnitDuration"), Some(&vec![12.5]));

        // The next call's flush holds only its own values.
        metrics.emit(None, |m| m.count("UnitCounter", 1));
        let docs = captured.documents();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[2].values.get("UnitCounter"), Some(&vec![1.0]));
        assert!(!docs[2].values.contains_key("UnitDuration"));
        assert_eq!(docs[2].request_id, None);
    }
}
