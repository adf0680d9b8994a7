//! What operators see: the EMF lines each function prints for a call
//! (names, dimensions, values), captured through the metrics' line sink
//! while the call runs against real Redis, MariaDB and the emulated AWS;
//! and a Redis connection the server closed between calls (as while a
//! Lambda is frozen) replaced within the call that finds it closed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use status_shared::adapters::eventbridge::EventBridgePublisher;
use status_shared::app::Publisher;
use status_shared::domain::Millis;
use status_shared::ports::RepairBuffer;
use status_shared::telemetry::{
    functions, names, Captured, EmfDocument, Metrics, FUNCTION, NAMESPACE, SHARD, STATUS_CODE,
};
use status_tests::msk::kafka_event;
use status_tests::stack::{connect, presence, user, Stack, StackOptions};

/// Fixed times, so idle transitions land exactly where the test puts them.
const T0: Millis = 1_764_270_000_000;

async fn stack_with_bus() -> Stack {
    Stack::with(StackOptions { events: true, ..Default::default() }).await
}

/// The one line of `captured` without a dimension beyond `Function`.
fn function_line(captured: &Captured, function: &str) -> EmfDocument {
    let docs: Vec<EmfDocument> = captured
        .documents()
        .into_iter()
        .filter(|d| d.dimensions.len() == 1 && d.dimension(FUNCTION) == Some(function))
        .collect();
    assert_eq!(docs.len(), 1, "one function-wide line per call: {:#?}", captured.lines());
    docs.into_iter().next().unwrap_or_default()
}

fn values(doc: &EmfDocument, name: &str) -> Option<Vec<f64>> {
    doc.values.get(name).cloned()
}

#[tokio::test]
async fn an_aggregator_batch_prints_what_it_applied_set_aside_wrote_and_published() {
    let stack = stack_with_bus().await;
    let (metrics, captured) = Metrics::capture(functions::AGGREGATOR);
    let records = vec![
        presence("session_connected", 11, "a", T0).to_string(),
        presence("session_connected", 12, "b", T0).to_string(),
        presence("activity", 11, "a", T0).to_string(),
        "{not json".to_owned(),
    ];
    let summary = stack.aggregator().invoke(&kafka_event(&records), T0, Some("req-agg-1"), &metrics).await.unwrap();
    assert_eq!((summary.applied, summary.malformed, summary.written), (3, 1, 2));

    let line = function_line(&captured, functions::AGGREGATOR);
    assert_eq!(line.namespace, NAMESPACE);
    assert_eq!(line.request_id.as_deref(), Some("req-agg-1"));
    assert_eq!(values(&line, names::RECORDS_APPLIED), Some(vec![3.0]));
    assert_eq!(values(&line, names::RECORDS_MALFORMED), Some(vec![1.0]));
    assert_eq!(values(&line, names::DEAD_LETTERED), Some(vec![1.0]));
    assert_eq!(values(&line, names::USERS_WRITTEN), Some(vec![2.0]));
    assert_eq!(values(&line, names::TRANSITIONS), Some(vec![2.0]));
    assert_eq!(values(&line, names::EVENTS_PUBLISHED), Some(vec![2.0]));
    assert_eq!(values(&line, names::OUTBOX_DEPTH), Some(vec![0.0]), "everything published, nothing waits");
    assert_eq!(line.units.get(names::OUTBOX_DEPTH).map(String::as_str), Some("Count"));
    for absent in [names::PUBLISH_FAILURES, names::REDIS_FAILURES, names::DEAD_LETTER_FAILURES] {
        assert_eq!(values(&line, absent), None, "{absent} is printed only when it happened");
    }
}

#[tokio::test]
async fn an_outbox_the_bus_refuses_grows_in_the_aggregator_and_drains_in_the_scanner() {
    let mut stack = stack_with_bus().await;
    let good = stack.app.publisher.clone();
    let events = stack.sink.as_ref().map(|sink| sink.events.clone()).unwrap();
    stack.app.publisher = Publisher::Bus(EventBridgePublisher::new(events, format!("missing-{}", stack.env.tag)));
    let (metrics, captured) = Metrics::capture(functions::AGGREGATOR);
    let batch: Vec<String> =
        [21, 22, 23].iter().map(|id| presence("session_connected", *id, "s", T0).to_string()).collect();
    let summary = stack.aggregator().invoke(&kafka_event(&batch), T0, None, &metrics).await.unwrap();
    assert!(summary.publish_failed);
    let line = function_line(&captured, functions::AGGREGATOR);
    assert_eq!(values(&line, names::PUBLISH_FAILURES), Some(vec![1.0]));
    assert_eq!(values(&line, names::OUTBOX_DEPTH), Some(vec![3.0]), "the three transitions wait");
    assert_eq!(values(&line, names::EVENTS_PUBLISHED), None);

    // The bus is back: the scan of each shard drains its part and says so.
    stack.app.publisher = good;
    let (metrics, captured) = Metrics::capture(functions::IDLE_SCANNER);
    let scanner = stack.scanner();
    let shards = scanner.all_shards();
    let summary = scanner.scan_measured(&shards, T0 + 1_000, Some("req-scan-drain"), &metrics).await;
    assert!(summary.failed.is_empty());
    let line = function_line(&captured, functions::IDLE_SCANNER);
    assert_eq!(values(&line, names::EVENTS_PUBLISHED), Some(vec![3.0]));
    let by_shard: Vec<EmfDocument> =
        captured.documents().into_iter().filter(|d| d.values.contains_key(names::OUTBOX_DEPTH)).collect();
    assert_eq!(by_shard.len(), shards.len(), "one outbox depth per shard scanned");
    for doc in &by_shard {
        assert!(doc.dimension(SHARD).is_some());
        assert_eq!(values(doc, names::OUTBOX_DEPTH), Some(vec![0.0]), "shard {:?} drained", doc.dimension(SHARD));
    }
}

#[tokio::test]
async fn a_scan_prints_users_scanned_transitions_repairs_rebuilds_and_its_duration_per_shard() {
    let stack = stack_with_bus().await;
    let shards = stack.env.shards;
    // Two users of one shard go idle; a third waits in the repair buffer.
    let (a, b, c) = (u64::from(shards) + 3, 2 * u64::from(shards) + 3, 3 * u64::from(shards) + 3);
    stack.committer.aggregate(&[connect(a, T0), connect(b, T0), connect(c, T0)], T0).await.unwrap();
    stack.app.repair.record(&[user(c)]).await.unwrap();
    // A cache loss: the due index goes too, and the scan rebuilds it.
    stack.env.flush_redis().await;

    let (metrics, captured) = Metrics::capture(functions::IDLE_SCANNER);
    let later = T0 + stack.env.rules.idle_after_ms + 1;
    let summary = stack.scanner().invoke(&json!({"shard": 3}), later, Some("req-scan-1"), &metrics).await.unwrap();
    assert_eq!(summary.shards.len(), 1);

    let line = function_line(&captured, functions::IDLE_SCANNER);
    assert_eq!(line.request_id.as_deref(), Some("req-scan-1"));
    assert_eq!(values(&line, names::REPAIRS_DRAINED), Some(vec![1.0]));
    assert_eq!(values(&line, names::INDEX_REBUILDS), Some(vec![1.0]));
    assert_eq!(values(&line, names::USERS_SCANNED), Some(vec![3.0]));
    assert_eq!(values(&line, names::TRANSITIONS), Some(vec![3.0]), "online to idle, each announced");
    // The scan announces the three transitions. A bus that does not answer
    // within its deadline (the shared emulator on a loaded machine) leaves
    // them in the outbox instead, and the lines say that as exactly.
    let published = values(&line, names::EVENTS_PUBLISHED);
    let waiting = match published.as_deref() {
        Some([3.0]) => {
            assert_eq!(values(&line, names::PUBLISH_FAILURES), None);
            0.0
        }
        None => {
            assert_eq!(values(&line, names::PUBLISH_FAILURES), Some(vec![1.0]), "the failed publish is counted");
            3.0
        }
        other => panic!("published {other:?}: all three or none"),
    };
    let shard_line = captured
        .documents()
        .into_iter()
        .find(|d| d.dimension(SHARD) == Some("3") && d.values.contains_key(names::SCAN_DURATION))
        .expect("a duration line for shard 3");
    assert_eq!(shard_line.dimension(FUNCTION), Some(functions::IDLE_SCANNER));
    assert_eq!(values(&shard_line, names::SCAN_DURATION), Some(vec![summary.shards[0].duration_ms as f64]));
    assert_eq!(shard_line.units.get(names::SCAN_DURATION).map(String::as_str), Some("Milliseconds"));
    assert_eq!(values(&shard_line, names::OUTBOX_DEPTH), Some(vec![waiting]));
}

/// An HTTP API v2 event from the sample JWT bulk request, for `body`,
/// with `sub` as the caller (`None`: a service caller, no authorizer).
fn bulk_event(body: Value, sub: Option<u64>) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/status-api/bulk-jwt.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["body"] = json!(body.to_string());
    event["isBase64Encoded"] = json!(false);
    match sub {
        Some(sub) => event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(sub.to_string()),
        None => {
            event["requestContext"].as_object_mut().unwrap().remove("authorizer");
        }
    }
    event
}

fn status_of(answer: &Value, user: u64) -> String {
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let entry = body["statuses"].as_array().unwrap().iter().find(|s| s["user_id"] == json!(user)).cloned();
    entry.map(|s| s["status"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn an_api_read_prints_bulk_size_hits_fallbacks_and_responses_by_code() {
    let stack = stack_with_bus().await;
    stack.committer.aggregate(&[connect(31, T0), connect(32, T0)], T0).await.unwrap();
    let api = stack.api();
    let (metrics, captured) = Metrics::capture(functions::STATUS_API);

    // 31 and 32 are in Redis; 33 is unknown, so SQL is asked (and the
    // answer cached); the duplicate counts once.
    let answer = api
        .invoke(&bulk_event(json!({"user_ids": [31, 32, 33, 31]}), None), T0, Some("req-api-1"), &metrics)
        .await
        .into_apigw_json();
    assert_eq!(answer["statusCode"], json!(200));
    assert_eq!(status_of(&answer, 31), "online");
    let line = function_line(&captured, functions::STATUS_API);
    assert_eq!(line.request_id.as_deref(), Some("req-api-1"));
    assert_eq!(values(&line, names::BULK_SIZE), Some(vec![3.0]));
    assert_eq!(values(&line, names::REDIS_HITS), Some(vec![2.0]));
    assert_eq!(values(&line, names::SQL_FALLBACKS), Some(vec![1.0]));
    assert_eq!(values(&line, names::OUTBOX_DEPTH), None, "a read does not count the outbox");
    let ok = captured.documents().into_iter().find(|d| d.dimension(STATUS_CODE).is_some()).unwrap();
    assert_eq!((ok.dimension(STATUS_CODE), values(&ok, names::RESPONSES)), (Some("200"), Some(vec![1.0])));

    // An end user reading twice in one poll window: the second is a 429.
    captured.clear();
    let mine = bulk_event(json!({"user_ids": [31]}), Some(32));
    assert_eq!(api.invoke(&mine, T0, None, &metrics).await.into_apigw_json()["statusCode"], json!(200));
    assert_eq!(api.invoke(&mine, T0 + 1, None, &metrics).await.into_apigw_json()["statusCode"], json!(429));
    let docs = captured.documents();
    let codes: Vec<(Option<&str>, f64)> = docs
        .iter()
        .filter(|d| d.dimensions.len() == 2)
        .map(|d| (d.dimension(STATUS_CODE), d.sum(names::RESPONSES)))
        .collect();
    assert_eq!(codes, vec![(Some("200"), 1.0), (Some("429"), 1.0)]);
    let limited: f64 = docs.iter().map(|d| d.sum(names::RATE_LIMITED)).sum();
    assert_eq!(limited, 1.0);
}

#[tokio::test]
async fn a_visibility_change_prints_what_it_published_and_the_outbox_depth() {
    let stack = stack_with_bus().await;
    stack.committer.aggregate(&[connect(41, T0)], T0).await.unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/status-api/visibility-iam.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["rawPath"] = json!("/v1/users/41/visibility");
    event["requestContext"]["http"]["path"] = json!("/v1/users/41/visibility");
    event["body"] = json!(json!({"visible": false}).to_string());
    event["isBase64Encoded"] = json!(false);
    let (metrics, captured) = Metrics::capture(functions::STATUS_API);
    let answer = stack.api().invoke(&event, T0 + 10, None, &metrics).await.into_apigw_json();
    assert_eq!(answer["statusCode"], json!(200), "{answer}");
    let line = function_line(&captured, functions::STATUS_API);
    assert_eq!(values(&line, names::EVENTS_PUBLISHED), Some(vec![1.0]), "online to offline, announced");
    assert_eq!(values(&line, names::OUTBOX_DEPTH), Some(vec![0.0]));
    assert_eq!(values(&line, names::BULK_SIZE), None);
}

/// An API event on `path` with `method` and `body`, from the sample IAM
/// event (a service caller).
fn service_event(method: &str, path: &str, body: Option<Value>) -> Value {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/status-api/visibility-iam.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["body"] = body.map_or(Value::Null, |b| json!(b.to_string()));
    event["isBase64Encoded"] = json!(false);
    event
}

#[tokio::test]
async fn a_manual_status_change_prints_what_it_published_and_the_outbox_depth() {
    let stack = stack_with_bus().await;
    stack.committer.aggregate(&[connect(42, T0)], T0).await.unwrap();
    let event = service_event("PUT", "/v1/users/42/manual-status", Some(json!({"state": "dnd"})));
    let (metrics, captured) = Metrics::capture(functions::STATUS_API);
    let answer = stack.api().invoke(&event, T0 + 10, None, &metrics).await.into_apigw_json();
    assert_eq!(answer["statusCode"], json!(200), "{answer}");
    let line = function_line(&captured, functions::STATUS_API);
    assert_eq!(values(&line, names::EVENTS_PUBLISHED), Some(vec![1.0]), "the manual status start, announced");
    assert_eq!(values(&line, names::OUTBOX_DEPTH), Some(vec![0.0]));
}

#[tokio::test]
async fn an_erasure_whose_announcement_the_bus_refuses_prints_a_publish_failure() {
    let mut stack = stack_with_bus().await;
    stack.committer.aggregate(&[connect(43, T0)], T0).await.unwrap();
    let events = stack.sink.as_ref().map(|sink| sink.events.clone()).unwrap();
    stack.app.publisher = Publisher::Bus(EventBridgePublisher::new(events, format!("missing-{}", stack.env.tag)));
    let (metrics, captured) = Metrics::capture(functions::STATUS_API);
    let answer = stack
        .api()
        .invoke(&service_event("DELETE", "/v1/users/43", None), T0 + 10, None, &metrics)
        .await
        .into_apigw_json();
    assert_eq!(answer["statusCode"], json!(204), "{answer}");
    let line = function_line(&captured, functions::STATUS_API);
    assert_eq!(values(&line, names::PUBLISH_FAILURES), Some(vec![1.0]), "online to offline waits in the outbox");
    assert_eq!(values(&line, names::OUTBOX_DEPTH), Some(vec![1.0]));
}

/// While a Lambda is frozen the server may close its connection (idle
/// timeout, failover, `CLIENT KILL`). The next call must notice and use a
/// new connection inside `REDIS_TIMEOUT_MS`, and answer from Redis, not
/// fall back to SQL.
#[tokio::test]
async fn a_redis_connection_closed_while_frozen_is_replaced_within_the_call() {
    let timeout = Duration::from_millis(500);
    let stack = Stack::with(StackOptions { redis_timeout: Some(timeout), ..Default::default() }).await;
    stack.committer.aggregate(&[connect(51, T0)], T0).await.unwrap();
    let api = stack.api();
    let (metrics, captured) = Metrics::capture(functions::STATUS_API);
    let event = bulk_event(json!({"user_ids": [51]}), None);
    assert_eq!(status_of(&api.invoke(&event, T0, None, &metrics).await.into_apigw_json(), 51), "online");

    let client_id = || async {
        stack
            .env
            .redis
            .run(|mut c| async move { redis::cmd("CLIENT").arg("ID").query_async::<i64>(&mut c).await })
            .await
    };
    let before = client_id().await.unwrap();
    let mut admin =
        redis::Client::open(stack.env.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(before).query_async(&mut admin).await.unwrap();
    assert_eq!(killed, 1, "the function's connection was closed by the server");
    // Let the close reach the client, as it would during a freeze.
    tokio::time::sleep(Duration::from_millis(50)).await;

    captured.clear();
    let started = Instant::now();
    let answer = api.invoke(&event, T0 + 1, None, &metrics).await.into_apigw_json();
    let took = started.elapsed();
    assert_eq!(answer["statusCode"], json!(200));
    assert_eq!(status_of(&answer, 51), "online");
    let line = function_line(&captured, functions::STATUS_API);
    assert_eq!(values(&line, names::REDIS_HITS), Some(vec![1.0]), "answered from Redis on a new connection");
    assert_eq!(values(&line, names::SQL_FALLBACKS), None);
    assert!(took < timeout + Duration::from_millis(250), "replaced within REDIS_TIMEOUT_MS: took {took:?}");
    assert_ne!(client_id().await.unwrap(), before, "a new connection");
}
