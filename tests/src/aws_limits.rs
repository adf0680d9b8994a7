//! AWS's request limits that the emulator does not hold, held by the
//! harness: every SDK client built from a harness configuration
//! ([`crate::aws::sdk_config_for`]) sends its requests through
//! [`LimitedHttp`], which answers a request that AWS would refuse the way
//! AWS does (HTTP 400, `ValidationException`) instead of passing it on to
//! moto, which would accept it. A regression past a limit then fails the
//! tests that drive the code building the call, not production.
//!
//! The check sits in the HTTP client rather than in an SDK interceptor
//! because the harness hands the service an `SdkConfig`
//! (`App::start_with`), from which it builds its own clients: an
//! `SdkConfig` carries an HTTP client to every client built from it, but
//! no interceptors.
//!
//! Held here (the service's numbers, from AWS's documentation):
//!
//! | call | limit |
//! |---|---|
//! | DynamoDB `BatchWriteItem` | 1 to 25 requests in all |
//! | DynamoDB `PutItem`, `BatchWriteItem` | an item of at most 400 KB, attribute names included |
//! | DynamoDB `UpdateTimeToLive` | refuses to enable TTL on a table that has it on |
//! | EventBridge `PutEvents` | 1 to 10 entries, their sizes summing under 256 KB |

use std::fmt;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::{json, Value};

/// BatchWriteItem's most requests per call, over all its tables.
pub const BATCH_WRITE_MAX: usize = 25;

/// DynamoDB's largest item, bytes: 400 KB, attribute names and values.
pub const ITEM_MAX_BYTES: usize = 400 * 1024;

/// PutEvents' most entries per call.
pub const PUT_EVENTS_MAX: usize = 10;

/// PutEvents' bound on the summed entry sizes of one call, bytes: the sum
/// must stay under it.
pub const PUT_EVENTS_MAX_BYTES: usize = 256 * 1024;

/// How long the TTL probe may take before the call it guards fails.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An HTTP client that refuses, as AWS would, the requests that break one
/// of the limits in the module docs, and sends every other one through
/// `inner`.
#[derive(Clone)]
pub struct LimitedHttp {
    inner: SharedHttpClient,
}

impl LimitedHttp {
    /// The SDK's default HTTP client, wrapped.
    pub fn around_default() -> Self {
        use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
        let inner =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::AwsLc)).build_https();
        Self { inner }
    }
}

impl fmt::Debug for LimitedHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitedHttp").finish_non_exhaustive()
    }
}

impl HttpClient for LimitedHttp {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(LimitedConnector { inner: self.inner.http_connector(settings, components) })
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default().to_owned();
        let body: Option<Value> = request.body().bytes().and_then(|b| serde_json::from_slice(b).ok());
        let Some(body) = body else { return self.inner.call(request) };
        if let Some(breach) = breach(&target, &body) {
            eprintln!("AWS limit broken by {target}: {breach}");
            return HttpConnectorFuture::ready(Ok(refusal(&target, &breach)));
        }
        if target == "DynamoDB_20120810.UpdateTimeToLive" && body["TimeToLiveSpecification"]["Enabled"] == json!(true) {
            return self.enable_ttl(request, target, body);
        }
        self.inner.call(request)
    }
}

impl LimitedConnector {
    /// Asks the emulator whether the table has TTL on before letting an
    /// enable through: AWS answers `TimeToLive is already enabled` then,
    /// moto overwrites. The question reuses the request's headers; moto
    /// does not check signatures.
    fn enable_ttl(&self, request: HttpRequest, target: String, body: Value) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            let Some(mut probe) = request.try_clone() else { return inner.call(request).await };
            let question = json!({ "TableName": body["TableName"] }).to_string();
            probe.headers_mut().insert("x-amz-target", "DynamoDB_20120810.DescribeTimeToLive");
            probe.headers_mut().insert("content-length", question.len().to_string());
            *probe.body_mut() = SdkBody::from(question);
            let answer = tokio::time::timeout(PROBE_TIMEOUT, inner.call(probe))
                .await
                .map_err(|e| ConnectorError::timeout(Box::new(e)))??;
            if answer.status().is_success() {
                let bytes = ByteStream::new(answer.into_body())
                    .collect()
                    .await
                    .map_err(|e| ConnectorError::io(Box::new(e)))?
                    .into_bytes();
                let described: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let status = described["TimeToLiveDescription"]["TimeToLiveStatus"].as_str().unwrap_or("");
                if matches!(status, "ENABLED" | "ENABLING") {
                    let breach = "TimeToLive is already enabled".to_owned();
                    eprintln!("AWS limit broken by {target}: {breach}");
                    return Ok(refusal(&target, &breach));
                }
            }
            inner.call(request).await
        })
    }
}

/// What AWS answers a request that breaks a limit: 400 with a
/// `ValidationException` in the JSON protocol's error shape.
fn refusal(target: &str, message: &str) -> HttpResponse {
    let content_type =
        if target.starts_with("DynamoDB") { "application/x-amz-json-1.0" } else { "application/x-amz-json-1.1" };
    let body = json!({ "__type": "ValidationException", "message": message }).to_string();
    let status = StatusCode::try_from(400u16).expect("400 is a status code");
    let mut response = HttpResponse::new(status, SdkBody::from(body));
    response.headers_mut().insert("content-type", content_type);
    response
}

/// Why AWS would refuse the call `target` with JSON `body`, if it would.
pub fn breach(target: &str, body: &Value) -> Option<String> {
    match target {
        "DynamoDB_20120810.BatchWriteItem" => {
            let tables = body["RequestItems"].as_object()?;
            let requests: Vec<&Value> = tables.values().filter_map(Value::as_array).flatten().collect();
            if requests.is_empty() || requests.len() > BATCH_WRITE_MAX {
                return Some(format!(
                    "Too many items requested for the BatchWriteItem call: {} (1 to {BATCH_WRITE_MAX})",
                    requests.len()
                ));
            }
            requests.iter().find_map(|r| oversized(&r["PutRequest"]["Item"]))
        }
        "DynamoDB_20120810.PutItem" => oversized(&body["Item"]),
        "AWSEvents.PutEvents" => {
            let entries = body["Entries"].as_array()?;
            if entries.is_empty() || entries.len() > PUT_EVENTS_MAX {
                return Some(format!("{} entries in one PutEvents call (1 to {PUT_EVENTS_MAX})", entries.len()));
            }
            let total: usize = entries.iter().map(entry_size).sum();
            (total >= PUT_EVENTS_MAX_BYTES)
                .then(|| format!("Total size of the entries in the request is over the limit: {total} bytes"))
        }
        _ => None,
    }
}

fn oversized(item: &Value) -> Option<String> {
    let size = item_size(item.as_object()?);
    (size > ITEM_MAX_BYTES).then(|| format!("Item size has exceeded the maximum allowed size: {size} bytes"))
}

/// A PutEvents entry's size as EventBridge counts it: 14 bytes for `Time`
/// when given, and the UTF-8 bytes of `Source`, `DetailType`, `Detail` and
/// each of `Resources`.
pub fn entry_size(entry: &Value) -> usize {
    let text = |name: &str| entry[name].as_str().map_or(0, str::len);
    let time = if entry.get("Time").is_some_and(|t| !t.is_null()) { 14 } else { 0 };
    let resources: usize =
        entry["Resources"].as_array().map_or(0, |r| r.iter().filter_map(Value::as_str).map(str::len).sum());
    time + text("Source") + text("DetailType") + text("Detail") + resources
}

/// An item's size in DynamoDB's counting, from its JSON wire form, never
/// under the real one: each attribute's name in UTF-8 bytes plus its
/// value; a number counts its digits and one byte more (DynamoDB keeps
/// about one byte per two digits), binary its decoded bytes, a list or map
/// 3 bytes plus 1 per element.
pub fn item_size(item: &serde_json::Map<String, Value>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return 0 };
    let each = |f: fn(&Value) -> usize| inner.as_array().map_or(0, |items| items.iter().map(f).sum::<usize>());
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        "N" => inner.as_str().map_or(0, |n| n.len() + 1),
        "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
        "BOOL" | "NULL" => 1,
        "SS" => each(|v| v.as_str().map_or(0, str::len)),
        "NS" => each(|v| v.as_str().map_or(0, |n| n.len() + 1)),
        "BS" => each(|v| v.as_str().map_or(0, |b| b.len() * 3 / 4)),
        "L" => 3 + each(|v| 1 + value_size(v)),
        "M" => 3 + inner.as_object().map_or(0, |m| m.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_write_of_26_requests_or_none_is_refused() {
        let put = json!({ "PutRequest": { "Item": { "id": { "S": "a" } } } });
        let body = |n: usize| json!({ "RequestItems": { "t": vec![put.clone(); n] } });
        assert!(breach("DynamoDB_20120810.BatchWriteItem", &body(25)).is_none());
        assert!(breach("DynamoDB_20120810.BatchWriteItem", &body(26)).is_some());
        assert!(breach("DynamoDB_20120810.BatchWriteItem", &body(0)).is_some());
        // The 25 count over every table of the call.
        let two = json!({ "RequestItems": { "a": vec![put.clone(); 13], "b": vec![put.clone(); 13] } });
        assert!(breach("DynamoDB_20120810.BatchWriteItem", &two).is_some());
    }

    #[test]
    fn an_item_over_400_kb_is_refused_names_included() {
        let item = |name: &str, value: usize| json!({ "Item": { name: { "S": "x".repeat(value) } } });
        assert!(breach("DynamoDB_20120810.PutItem", &item("v", ITEM_MAX_BYTES - 1)).is_none());
        assert!(breach("DynamoDB_20120810.PutItem", &item("vv", ITEM_MAX_BYTES - 1)).is_some());
        let nested = json!({ "Item": { "m": { "M": { "k": { "L": [{ "S": "x".repeat(ITEM_MAX_BYTES) }] } } } } });
        assert!(breach("DynamoDB_20120810.PutItem", &nested).is_some());
    }

    #[test]
    fn put_events_counts_entries_and_their_documented_sizes() {
        let entry = |detail: usize| json!({ "Source": "s", "DetailType": "d", "Detail": "x".repeat(detail) });
        assert_eq!(
            entry_size(&json!({ "Source": "ab", "DetailType": "é", "Detail": "{}", "Time": 1 })),
            2 + 2 + 2 + 14
        );
        assert!(breach("AWSEvents.PutEvents", &json!({ "Entries": vec![entry(1); 10] })).is_none());
        assert!(breach("AWSEvents.PutEvents", &json!({ "Entries": vec![entry(1); 11] })).is_some());
        let half = PUT_EVENTS_MAX_BYTES / 2;
        // Each entry is 2 bytes and its detail: the sum must stay under the bound.
        assert!(breach("AWSEvents.PutEvents", &json!({ "Entries": [entry(half - 2), entry(half - 2)] })).is_some());
        assert!(breach("AWSEvents.PutEvents", &json!({ "Entries": [entry(half - 2), entry(half - 3)] })).is_none());
    }
}
