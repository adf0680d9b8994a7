//! An EMF line read back into its parts, for tests and the local stack's
//! summary: what CloudWatch would make of it.

use std::collections::BTreeMap;

use serde_json::Value;

/// One EMF line read back: its namespace, dimensions, the values of the
/// metrics it declares, and its properties. For tests and the local
/// stack's summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmfDocument {
    pub namespace: String,
    /// Dimension name to value, for the dimensions the line declares.
    pub dimensions: BTreeMap<String, String>,
    /// Metric name to its values (a counter has one; a sample list many).
    pub values: BTreeMap<String, Vec<f64>>,
    /// Metric name to its unit, as declared.
    pub units: BTreeMap<String, String>,
    /// `RequestId`, when the line carries it.
    pub request_id: Option<String>,
}

impl EmfDocument {
    /// Reads one line; `None` if it is not an EMF document (a log line).
    /// Only metrics declared in `_aws.CloudWatchMetrics` count, as for
    /// CloudWatch.
    pub fn parse(line: &str) -> Option<Self> {
        let root: Value = serde_json::from_str(line).ok()?;
        let directive = root.get("_aws")?.get("CloudWatchMetrics")?.get(0)?;
        let mut doc = EmfDocument {
            namespace: directive.get("Namespace")?.as_str()?.to_owned(),
            request_id: root.get("RequestId").and_then(Value::as_str).map(str::to_owned),
            ..Default::default()
        };
        for set in directive.get("Dimensions")?.as_array()? {
            for name in set.as_array()?.iter().filter_map(Value::as_str) {
                let value = root.get(name)?.as_str()?.to_owned();
                doc.dimensions.insert(name.to_owned(), value);
            }
        }
        for metric in directive.get("Metrics")?.as_array()? {
            let name = metric.get("Name")?.as_str()?.to_owned();
            let values = match root.get(&name)? {
                Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
                other => vec![other.as_f64()?],
            };
            if let Some(unit) = metric.get("Unit").and_then(Value::as_str) {
                doc.units.insert(name.clone(), unit.to_owned());
            }
            doc.values.insert(name, values);
        }
        Some(doc)
    }

    /// The dimension `name`'s value.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions.get(name).map(String::as_str)
    }

    /// The sum of metric `name`'s values in this line (0 when absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.values.get(name).map_or(0.0, |v| v.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_not_documents() {
        assert_eq!(EmfDocument::parse(r#"{"level":"INFO","message":"hi"}"#), None);
        assert_eq!(EmfDocument::parse("plain text"), None);
    }
}
