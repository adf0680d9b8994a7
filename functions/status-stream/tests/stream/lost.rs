//! A registry that lost a connection or did not answer (docs/DESIGN.md §12
//! "State and loss"): a message on a connection Redis no longer knows is
//! answered "connect again" and the connection closed; a `$connect` the
//! registry could not record is refused `503`; a lock left by a call that
//! died delays a fan-out but does not fail it.

use std::time::Instant;

use serde_json::json;
use status_shared::domain::stream::ConnectionId;
use status_shared::domain::EventKind;
use status_shared::ports::{Begin, StreamRegistry};

use crate::support::*;

/// Every key of this test's prefix, gone: what a failover to an empty
/// replica or a `FLUSHALL` does to the registry.
async fn lose_every_key(env: &Env) {
    let mut raw = raw_redis().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", env.prefix)).query_async(&mut raw).await.unwrap();
    assert!(!keys.is_empty(), "the registry had keys to lose");
    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut raw).await.unwrap();
}

fn closed(env: &Env) -> Vec<String> {
    env.poster.closed.lock().unwrap().clone()
}

#[tokio::test]
async fn a_message_on_a_connection_the_registry_lost_says_connect_again_and_closes_it() {
    let env = Env::new().await;
    env.connect("p", Some(7), NOW).await;
    env.connect("s", Some(7), NOW).await;
    env.connect("u", Some(7), NOW).await;
    for connection in ["p", "s", "u"] {
        assert_eq!(seqs(&env.subscribe(connection, &[1], None, NOW).await), vec![1]);
    }
    // A ping on a known connection checks it and closes nothing.
    assert_eq!(env.send("p", r#"{"action":"ping"}"#, NOW + 1).await, vec![json!({"type": "pong"})]);
    assert!(closed(&env).is_empty());

    lose_every_key(&env).await;
    let messages = [
        ("p", r#"{"action":"ping"}"#),
        ("s", r#"{"action":"subscribe","user_ids":[1]}"#),
        ("u", r#"{"action":"unsubscribe","user_ids":[1]}"#),
    ];
    for (connection, body) in messages {
        let frames = env.send(connection, body, NOW + 2).await;
        assert_eq!(frames.len(), 1, "{body}: {frames:?}");
        assert_eq!(frames[0]["type"], "error");
        assert_eq!(frames[0]["error"]["code"], "invalid_request");
        assert!(frames[0]["error"]["message"].as_str().is_some_and(|m| m.contains("connect again")), "{frames:?}");
    }
    assert_eq!(closed(&env), vec!["p", "s", "u"], "each connection is closed after its answer");

    // Connected again, the old cursor answers a reset snapshot.
    env.connect("p2", Some(7), NOW + 3).await;
    let old = env.subscribe("p2", &[1], None, NOW + 3).await;
    let again = env.subscribe("p2", &[1], Some(&cursor(&old)), NOW + 4).await;
    assert_eq!(again[0]["type"], "delta", "a cursor of the new connection resumes");
    env.connect("p3", Some(7), NOW + 5).await;
    lose_every_key(&env).await;
    env.connect("p3", Some(7), NOW + 5).await;
    let reset = env.subscribe("p3", &[1], Some(&cursor(&old)), NOW + 6).await;
    assert_eq!((reset[0]["type"].clone(), reset[0]["reset"].clone()), (json!("snapshot"), json!(true)));
    assert_eq!(closed(&env).len(), 3, "a registered connection is never closed");
}

#[tokio::test]
async fn a_connect_or_ping_the_registry_cannot_answer_is_refused_as_unavailable() {
    // Nothing listens on port 9: every Redis call fails at once.
    let env = Env::with(&[("REDIS_URL", "redis://127.0.0.1:9"), ("REDIS_TIMEOUT_MS", "300")]).await;
    assert_eq!(env.connect("c", Some(7), NOW).await, json!({"statusCode": 503}));
    let frames = env.send("c", r#"{"action":"ping"}"#, NOW).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["error"]["code"], "unavailable", "a registry that did not answer closes nothing");
    assert!(closed(&env).is_empty());
}

#[tokio::test]
async fn a_lock_left_by_a_call_that_died_delays_a_fan_out_but_does_not_fail_it() {
    let env = Env::with(&[("STREAM_COALESCE_MS", "0")]).await;
    env.connect("c", Some(7), NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    // A call took the lock for 4 s and died: longer than a message waits
    // (3 s), shorter than the lock's own 10 s.
    let c = ConnectionId::new("c").unwrap();
    assert!(matches!(env.app.stream_registry.begin(&c, "dead", 4_000, &[]).await.unwrap(), Begin::Ready(_)));

    env.event(EventKind::Connected, 1, "a", Some("ios"), NOW + 1).await;
    let started = Instant::now();
    let answer = env.feed(&[1], NOW + 1).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(answer["fanout"]["frames"], 1, "{answer}");
    assert!(started.elapsed().as_millis() >= 3_000, "it waited for the lock to run out");
    let frames = env.poster.take("c");
    assert_eq!(seqs(&frames), vec![2]);
    assert_eq!(frames[0]["statuses"][0]["status"], "online");
}

#[tokio::test]
async fn a_post_that_fails_is_served_again_within_the_fan_out_with_the_state_it_read() {
    use std::sync::atomic::Ordering;
    let env = Env::with(&[("STREAM_COALESCE_MS", "0")]).await;
    env.connect("c", Some(7), NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    env.event(EventKind::Connected, 1, "a", Some("ios"), NOW + 1).await;
    env.poster.fail_next.store(1, Ordering::SeqCst);
    let answer = env.feed(&[1], NOW + 1).await;
    assert_eq!(answer["statusCode"], 200, "served within the invocation: {answer}");
    assert_eq!((answer["fanout"]["frames"].clone(), answer["fanout"]["retried"].clone()), (json!(1), json!(1)));
    // The failed post's number may have reached the client, so the retry
    // takes the next: the client sees the gap and resumes.
    let frames = env.poster.take("c");
    assert_eq!(seqs(&frames), vec![3]);
    assert_eq!(frames[0]["statuses"][0]["status"], "online");

    // Failing every round, the invocation fails for Lambda's retry.
    env.event(EventKind::Disconnected, 1, "a", Some("ios"), NOW + 2).await;
    env.poster.fail_next.store(3, Ordering::SeqCst);
    assert_eq!(env.feed(&[1], NOW + 2).await, json!({"statusCode": 500}));
    assert_eq!(env.poster.fail_next.load(Ordering::SeqCst), 0, "three rounds, one post each");
    let again = env.feed(&[1], NOW + 3).await;
    assert_eq!(again["fanout"]["frames"], 1, "{again}");
    assert_eq!(env.poster.take("c").last().unwrap()["statuses"][0]["status"], "offline");
}
