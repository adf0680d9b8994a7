//! `asyncapi.yaml` checked against the live stack: every frame the
//! WebSocket API sends (snapshot, reset snapshot, delta, status, pong,
//! unsubscribed, each error code) fits the schema of its `type` and has no
//! field the document does not name; every request example is accepted.

use std::time::Duration;

use serde_json::{json, Value};
use status_shared::app::now_ms;
use status_tests::local::{request, InProcess, WsClient};
use status_tests::msk::kafka_batch;
use status_tests::schema::{conforms, resolve, undocumented};

const WAIT: Duration = Duration::from_secs(15);

fn document() -> Value {
    serde_yaml::from_str(include_str!("../../asyncapi.yaml")).expect("asyncapi.yaml is YAML")
}

/// The payload schema the document gives frames of `kind`.
fn schema_of<'a>(doc: &'a Value, kind: &str) -> &'a Value {
    let name = match kind {
        "snapshot" => "Snapshot",
        "delta" => "Delta",
        "status" => "Status",
        "pong" => "Pong",
        "unsubscribed" => "Unsubscribed",
        "error" => "Error",
        other => panic!("a frame of type {other:?} that asyncapi.yaml does not document"),
    };
    let payload = &doc["components"]["messages"][name]["payload"];
    assert!(!payload.is_null(), "no message {name}");
    resolve(doc, payload.get("schema").unwrap_or(payload))
}

fn check(doc: &Value, frame: &Value) {
    let kind = frame["type"].as_str().unwrap_or_else(|| panic!("a frame without a type: {frame}"));
    let schema = schema_of(doc, kind);
    conforms(doc, schema, frame, kind).unwrap_or_else(|e| panic!("{e} in {frame}"));
    let extra = undocumented(doc, schema, frame, kind);
    assert!(extra.is_empty(), "fields asyncapi.yaml does not name: {extra:?} in {frame}");
}

#[tokio::test]
async fn every_frame_the_websocket_api_sends_fits_asyncapi_yaml() {
    let doc = document();
    // Every change is sent at once, so the activity below makes a `status`.
    let stack = InProcess::start("asyncapi", &[("STREAM_ACTIVITY_REFRESH_MS", "0")]).await;
    let (viewer, friend) = (9_301, 9_302);
    let t0 = now_ms();
    let invoke = |values: Vec<Value>| {
        let body = serde_json::to_value(kafka_batch(&values)).expect("JSON");
        let url = stack.invoke_url.clone();
        async move {
            let path = "/2015-03-31/functions/AggregatorFunction/invocations";
            let (status, answer) = request(&url, "POST", path, None, Some(&body)).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    let connected = |ts: i64| json!({"type": "session_connected", "user_id": friend, "session_id": "tab", "device": "web", "ts_ms": ts});
    invoke(vec![connected(t0)]).await;
    let (status, _) = request(
        &stack.api_url,
        "PUT",
        &format!("/v1/users/{friend}/manual-status"),
        Some(friend),
        Some(&json!({"state": "busy", "message": "deploying", "expires_at_ms": t0 + 3_600_000})),
    )
    .await;
    assert_eq!(status, 200);

    let mut client = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    let mut frames = Vec::new();
    client.send(&json!({"action": "subscribe", "user_ids": [friend, 9_303]}).to_string()).await;
    frames.extend(client.until(WAIT, |f| f["type"] == "snapshot").await);
    invoke(vec![json!({"type": "activity", "user_id": friend, "session_id": "tab", "ts_ms": t0 + 1})]).await;
    frames.extend(client.until(WAIT, |f| f["type"] == "status").await);
    let cursor = frames.last().unwrap()["cursor"].as_str().expect("a cursor").to_owned();
    client.send(&json!({"action": "subscribe", "user_ids": [friend], "since": cursor}).to_string()).await;
    frames.extend(client.until(WAIT, |f| f["type"] == "delta").await);
    client.send(&json!({"action": "subscribe", "user_ids": [friend], "since": "not-ours"}).to_string()).await;
    let reset = client.until(WAIT, |f| f["type"] == "snapshot").await;
    assert_eq!(reset.last().unwrap()["reset"], true, "{reset:?}");
    frames.extend(reset);
    client.send(&json!({"action": "ping"}).to_string()).await;
    frames.extend(client.until(WAIT, |f| f["type"] == "pong").await);
    client.send(&json!({"action": "unsubscribe", "user_ids": [9_303]}).to_string()).await;
    frames.extend(client.until(WAIT, |f| f["type"] == "unsubscribed").await);
    let many: Vec<u64> = (10_000..11_000).collect();
    client.send(&json!({"action": "subscribe", "user_ids": many}).to_string()).await;
    frames.extend(
        client.until(WAIT, |f| f["type"] == "error" || f["type"] == "snapshot" && f["part"] == f["parts"]).await,
    );
    for bad in
        ["{", &json!({"action": "shout"}).to_string(), &json!({"action": "subscribe", "user_ids": []}).to_string()]
    {
        client.send(bad).await;
        frames.extend(client.until(WAIT, |f| f["type"] == "error").await);
    }
    client.close().await;

    let kinds: std::collections::BTreeSet<&str> = frames.iter().filter_map(|f| f["type"].as_str()).collect();
    for kind in ["snapshot", "delta", "status", "pong", "unsubscribed", "error"] {
        assert!(kinds.contains(kind), "no {kind} frame was seen: {frames:?}");
    }
    let codes: std::collections::BTreeSet<&str> = frames.iter().filter_map(|f| f["error"]["code"].as_str()).collect();
    for code in ["too_many_ids", "invalid_json", "unknown_action", "invalid_request"] {
        assert!(codes.contains(code), "no {code} error was seen: {codes:?}");
    }
    for frame in &frames {
        check(&doc, frame);
    }
}

#[test]
fn the_request_examples_fit_their_schemas_and_every_message_has_a_payload() {
    let doc = document();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        if let Some(example) = schema.get("example") {
            conforms(&doc, schema, example, name).unwrap_or_else(|e| panic!("{name}'s example: {e}"));
        }
    }
    for (name, message) in doc["components"]["messages"].as_object().expect("messages") {
        assert!(message.get("payload").is_some(), "message {name} has no payload");
    }
}
