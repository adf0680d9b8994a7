//! Push across Redis outages (docs/DESIGN.md §12 "State and loss"): the
//! local stack over a Redis server of the test's own, which the test
//! restarts empty, stops and freezes, with real WebSocket clients.

use std::time::Duration;

use serde_json::{json, Value};
use status_shared::app::now_ms;
use status_tests::local::{InProcess, WsClient};
use status_tests::stack::PrivateRedis;

use super::push::{aggregate, presence};

const WAIT: Duration = Duration::from_secs(15);

fn subscribe(ids: &[u64], since: Option<&str>) -> String {
    match since {
        Some(cursor) => json!({"action": "subscribe", "user_ids": ids, "since": cursor}),
        None => json!({"action": "subscribe", "user_ids": ids}),
    }
    .to_string()
}

fn is_data(frame: &Value) -> bool {
    frame["seq"].is_u64()
}

async fn over(redis: &PrivateRedis, name: &str) -> InProcess {
    let url = redis.url();
    InProcess::start(name, &[("REDIS_URL", url.as_str()), ("REDIS_TIMEOUT_MS", "300"), ("STREAM_COALESCE_MS", "0")])
        .await
}

#[tokio::test]
async fn a_client_redis_forgot_is_told_and_closed_at_its_next_ping_and_resumes_with_a_reset() {
    let mut redis = PrivateRedis::start().await;
    let stack = over(&redis, "pushlost").await;
    let (viewer, friend) = (9_301, 9_302);
    let mut client = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    client.send(&subscribe(&[friend], None)).await;
    let snapshot = client.until(WAIT, is_data).await;
    let cursor = snapshot.last().and_then(|f| f["cursor"].as_str()).expect("a cursor").to_owned();
    client.send(r#"{"action":"ping"}"#).await;
    assert_eq!(client.next(WAIT).await, Some(json!({"type": "pong"})));

    // Redis comes back empty: the registry forgot the connection.
    redis.restart().await;
    client.send(r#"{"action":"ping"}"#).await;
    let last = client.until_closed(WAIT).await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0]["error"]["code"], "invalid_request");
    assert!(last[0]["error"]["message"].as_str().is_some_and(|m| m.contains("connect again")), "{last:?}");

    // Connected again, its old cursor answers a reset snapshot, and
    // changes flow.
    let mut again = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    again.send(&subscribe(&[friend], Some(&cursor))).await;
    let reset = again.until(WAIT, is_data).await;
    assert_eq!(
        (&reset[0]["type"], &reset[0]["reset"], &reset[0]["seq"]),
        (&json!("snapshot"), &json!(true), &json!(1))
    );
    aggregate(&stack, &[presence("session_connected", friend, now_ms())]).await;
    let change = again.until(WAIT, is_data).await;
    assert_eq!(change.last().unwrap()["statuses"][0]["status"], "online", "{change:?}");
}

#[tokio::test]
async fn a_connect_while_redis_is_down_is_refused_503_and_succeeds_once_it_is_back() {
    let mut redis = PrivateRedis::start().await;
    let stack = over(&redis, "pushdown").await;
    redis.kill().await;
    match WsClient::try_connect(&stack.ws_url, Some(9_311)).await {
        Err(status) => assert_eq!(status, 503),
        Ok(_) => panic!("a connection the registry could not record was accepted"),
    }
    redis.restart().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut client = loop {
        match WsClient::try_connect(&stack.ws_url, Some(9_311)).await {
            Ok(client) => break client,
            Err(status) => {
                assert_eq!(status, 503);
                assert!(tokio::time::Instant::now() < deadline, "never accepted after Redis came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    client.send(&subscribe(&[9_312], None)).await;
    assert_eq!(client.until(WAIT, is_data).await.last().unwrap()["seq"], 1);
}

#[tokio::test]
async fn a_lock_a_frozen_redis_takes_for_a_message_that_gave_up_does_not_hold_back_later_changes() {
    let redis = PrivateRedis::start().await;
    let stack = over(&redis, "pushfrozen").await;
    let (viewer, friend) = (9_321, 9_322);
    let mut client = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    client.send(&subscribe(&[friend], None)).await;
    client.until(WAIT, is_data).await;

    // Frozen while a subscribe waits on it: the message gives up, and
    // Redis runs its lock-taking script only when it wakes.
    redis.pause();
    client.send(&subscribe(&[friend], None)).await;
    let refused = client.next(WAIT).await.expect("an answer");
    redis.resume();
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");

    // That lock was given back behind it: the next change goes out at
    // once, not after the lock's 10 s, and not failed over to a retry.
    let start = tokio::time::Instant::now();
    aggregate(&stack, &[presence("session_connected", friend, now_ms())]).await;
    let frames = client.until(WAIT, is_data).await;
    assert_eq!(frames.last().unwrap()["statuses"][0]["status"], "online", "{frames:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "the change waited {:?} for a stale lock", start.elapsed());
}
