//! Every sample event under `events/` is one its function accepts, and says
//! what its name promises: `sam local invoke -e` and the local Invoke API
//! get the same files, so a broken sample would fail both quietly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aggregator::handler::decode;
use aws_lambda_events::event::kafka::KafkaEvent;
use idle_scanner::handler::shards_of;
use status_api::request::{ApiRequest, Caller};
use status_shared::domain::UserId;
use status_stream::event::StreamEvent;

/// The sample events live at the workspace root, beside `template.yaml`.
fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// Every `.json` file under `events/`, keyed by its path from there
/// (`aggregator/batch.json`).
fn sample_events() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("events/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                let name = path.strip_prefix(root).expect("under events/").to_string_lossy().replace('\\', "/");
                out.insert(name, std::fs::read_to_string(&path).expect("a sample event is text"));
            }
        }
    }
    let root = events_dir();
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// Well after every sample's stamps, so none counts as ahead of the clock.
const LATER: i64 = 1_764_270_000_000 + 86_400_000;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("JSON")
}

fn kafka(text: &str) -> KafkaEvent {
    serde_json::from_str(text).expect("an MSK event")
}

#[test]
fn every_sample_event_is_accepted_by_its_function() {
    let events = sample_events();
    assert!(events.len() >= 10, "expected the documented samples, found {:?}", events.keys());
    for (name, text) in &events {
        let (function, _) = name.split_once('/').unwrap_or(("", ""));
        match function {
            "aggregator" => {
                let event = kafka(text);
                assert_eq!(event.event_source.as_deref(), Some("aws:kafka"), "{name}");
                assert!(!event.records.is_empty(), "{name} has no records");
            }
            "idle-scanner" => {
                let input: serde_json::Value = serde_json::from_str(text).expect("JSON");
                assert!(shards_of(&input, 16).is_ok(), "{name} is not a scanner input");
            }
            "status-api" => {
                // A strict, typed reader accepts it too, as API Gateway's
                // own events are.
                lambda_http::request::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
                let request = ApiRequest::from_event(&json(text)).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(request.path.starts_with("/v1/"), "{name}: path {}", request.path);
            }
            "status-stream" => {
                let event = json(text);
                let read = StreamEvent::read(&event);
                assert!(!matches!(read, StreamEvent::Invalid(_)), "{name}: {read:?}");
                // Each route's sample says its route; a service's carries no
                // authorizer identity, an end user's one.
                if let Some(context) = event.get("requestContext") {
                    let route = context["routeKey"].as_str().unwrap_or_default();
                    let stem = name.trim_start_matches("status-stream/");
                    let expected = match stem.split(['-', '.']).next().unwrap_or_default() {
                        "connect" => "$connect",
                        "disconnect" => "$disconnect",
                        "default" => "$default",
                        other => other,
                    };
                    assert_eq!(route, expected, "{name}");
                    assert_eq!(context.get("authorizer").is_none(), stem.contains("iam"), "{name}");
                }
            }
            "stream-authorizer" => {
                let request = stream_authorizer::request::ConnectRequest::from_event(&json(text));
                assert!(request.method_arn().is_ok() && request.bearer().is_ok(), "{name}");
            }
            other => panic!("{name}: no function named {other:?}; put samples under a function's folder"),
        }
    }
}

#[test]
fn the_sample_batch_has_every_event_type_for_several_users_and_nothing_malformed() {
    let text = &sample_events()["aggregator/batch.json"];
    let event = kafka(text);
    let mut partitions: Vec<_> = event.records.keys().cloned().collect();
    partitions.sort();
    assert_eq!(partitions, ["presence.updates-0", "presence.updates-1"]);
    let decoded = decode(&event, LATER, 300_000);
    assert!(
        decoded.malformed.is_empty(),
        "malformed: {:?}",
        decoded.malformed.iter().map(|d| &d.code).collect::<Vec<_>>()
    );
    let mut users: Vec<_> = decoded.events.iter().map(|e| e.user_id).collect();
    users.sort();
    users.dedup();
    assert!(users.len() >= 3, "users: {users:?}");
    for kind in ["session_connected", "session_heartbeat", "activity", "session_disconnected"] {
        assert!(decoded_has(&event, kind), "no {kind} in the batch");
    }
}

/// Whether some record value decodes to JSON with `"type": kind` (values
/// are base64, so the file's text does not show them).
fn decoded_has(event: &KafkaEvent, kind: &str) -> bool {
    use base64::Engine;
    event.records.values().flatten().filter_map(|r| r.value.as_deref()).any(|v| {
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|json| json["type"] == kind)
    })
}

#[test]
fn the_mixed_batch_sets_aside_each_kind_of_malformed_record_and_keeps_the_good_ones() {
    let event = kafka(&sample_events()["aggregator/mixed-malformed.json"]);
    let decoded = decode(&event, LATER, 300_000);
    assert_eq!(decoded.events.len(), 2, "the two good records are kept");
    assert_eq!(decoded.malformed.len(), 5);
    let codes: Vec<_> = decoded.malformed.iter().map(|d| d.code.as_str()).collect();
    assert!(codes.contains(&"invalid_json"), "{codes:?}");
    assert!(codes.contains(&"invalid_base64"), "{codes:?}");
}

#[test]
fn the_scanner_samples_name_one_shard_and_every_shard() {
    let events = sample_events();
    let one: serde_json::Value = serde_json::from_str(&events["idle-scanner/shard.json"]).expect("JSON");
    assert_eq!(shards_of(&one, 16), Ok(vec![3]));
    let all: serde_json::Value = serde_json::from_str(&events["idle-scanner/all-shards.json"]).expect("JSON");
    assert_eq!(shards_of(&all, 16), Ok((0..16).collect()));
}

#[test]
fn the_api_samples_carry_the_caller_their_name_says() {
    let user_42 = Caller::User(UserId::new(42).expect("a user id"));
    let expected = [
        ("bulk-jwt.json", "POST", "/v1/status/bulk", user_42),
        ("bulk-iam.json", "POST", "/v1/status/bulk", Caller::Service),
        ("single-jwt.json", "GET", "/v1/status/7", user_42),
        ("public.json", "GET", "/v1/public/status/42", Caller::Service),
        ("visibility-jwt.json", "PUT", "/v1/users/42/visibility", user_42),
        ("visibility-iam.json", "PUT", "/v1/users/42/visibility", Caller::Service),
        ("erase-iam.json", "DELETE", "/v1/users/42", Caller::Service),
    ];
    let events = sample_events();
    for (file, method, path, caller) in expected {
        let text = &events[&format!("status-api/{file}")];
        let request = ApiRequest::from_event(&json(text)).expect("a v2 event");
        assert_eq!((request.method.as_str(), request.path.as_str(), request.caller), (method, path, caller), "{file}");
        if method != "GET" && method != "DELETE" {
            let body: serde_json::Value = serde_json::from_slice(&request.body).expect("a JSON body");
            assert!(body.is_object(), "{file}");
        }
    }
}
