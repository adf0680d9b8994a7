//! The functions' metrics, made visible locally: every EMF line a function
//! prints is read back and folded into running totals, which the Invoke
//! API serves as a table at `GET /local/metrics` (and as JSON at
//! `/local/metrics.json`), and each call's line is logged readably at
//! debug level (`RUST_LOG=local_stack::metrics=debug`). Watching the table
//! while a scan runs or a load test writes shows the counts move.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use status_shared::telemetry::{EmfDocument, Metrics, FUNCTION};

/// One metric under one set of dimensions, since the stack started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Values recorded (calls that reported it, or samples).
    pub count: u64,
    pub sum: f64,
    pub max: f64,
    pub last: f64,
}

/// `(function, metric, other dimensions as "Name=value,...")`.
type Key = (String, String, String);

/// Running totals of every metric the local functions reported.
#[derive(Default)]
pub struct Board {
    totals: Mutex<BTreeMap<Key, Totals>>,
}

impl Board {
    /// Metrics for `function` that land on this board.
    pub fn metrics(self: &Arc<Self>, function: &'static str) -> Metrics {
        let board = self.clone();
        Metrics::to_lines(function, Arc::new(move |line| board.record_line(line)))
    }

    /// Folds one EMF line in; anything else is ignored.
    pub fn record_line(&self, line: &str) {
        let Some(doc) = EmfDocument::parse(line) else { return };
        let function = doc.dimension(FUNCTION).unwrap_or_default().to_owned();
        let others: Vec<String> =
            doc.dimensions.iter().filter(|(name, _)| *name != FUNCTION).map(|(n, v)| format!("{n}={v}")).collect();
        let others = others.join(",");
        if tracing::enabled!(tracing::Level::DEBUG) {
            let values: Vec<String> = doc.values.iter().map(|(name, v)| format!("{name}={v:?}")).collect();
            tracing::debug!(target: "local_stack::metrics", "{function} {others} {}", values.join(" "));
        }
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        for (name, values) in &doc.values {
            let entry = totals.entry((function.clone(), name.clone(), others.clone())).or_default();
            for value in values {
                entry.count += 1;
                entry.sum += value;
                entry.max = if entry.count == 1 { *value } else { entry.max.max(*value) };
                entry.last = *value;
            }
        }
    }

    /// Every total, by function, metric and dimensions.
    pub fn snapshot(&self) -> Vec<(Key, Totals)> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The totals as JSON: `[{"function", "metric", "dimensions", "count", "sum", "max", "last"}]`.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .snapshot()
            .into_iter()
            .map(|((function, metric, dimensions), t)| {
                serde_json::json!({"function": function, "metric": metric, "dimensions": dimensions,
                    "count": t.count, "sum": t.sum, "max": t.max, "last": t.last})
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    /// The totals as a table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<12} {:<20} {:<16} {:>8} {:>12} {:>10} {:>10}\n",
            "function", "metric", "dimensions", "count", "sum", "max", "last"
        );
        for ((function, metric, dimensions), t) in self.snapshot() {
            out.push_str(&format!(
                "{function:<12} {metric:<20} {dimensions:<16} {:>8} {:>12} {:>10} {:>10}\n",
                t.count, t.sum, t.max, t.last
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fold_into_totals_by_function_metric_and_dimensions() {
        let board = Arc::new(Board::default());
        let metrics = board.metrics("BoardTest");
        metrics.emit(None, |m| {
            m.count("BoardApplied", 3);
            m.sample_by("BoardDuration", "Shard", "2".into(), 40.0);
        });
        metrics.emit(None, |m| {
            m.count("BoardApplied", 2);
            m.sample_by("BoardDuration", "Shard", "2".into(), 10.0);
        });
        board.record_line("not a metric line");
        let applied = Totals { count: 2, sum: 5.0, max: 3.0, last: 2.0 };
        let duration = Totals { count: 2, sum: 50.0, max: 40.0, last: 10.0 };
        let snapshot: BTreeMap<Key, Totals> = board.snapshot().into_iter().collect();
        assert_eq!(snapshot.get(&("BoardTest".into(), "BoardApplied".into(), String::new())), Some(&applied));
        assert_eq!(snapshot.get(&("BoardTest".into(), "BoardDuration".into(), "Shard=2".into())), Some(&duration));
        assert!(board.table().lines().any(|l| l.starts_with("BoardTest") && l.contains("Shard=2")));
    }
}
