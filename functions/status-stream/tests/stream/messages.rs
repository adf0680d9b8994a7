//! Subscribe, unsubscribe, ping and refused messages.

use serde_json::json;
use status_shared::domain::EventKind;

use crate::support::*;

#[tokio::test]
async fn a_subscribe_answers_a_snapshot_of_the_viewers_entries() {
    let env = Env::new().await;
    env.event(EventKind::Connected, 1, "a", Some("ios"), NOW).await;
    assert_eq!(env.connect("c1", Some(1), NOW).await, json!({"statusCode": 200}));
    assert_eq!(env.connect("c2", None, NOW).await, json!({"statusCode": 200}));
    let own = env.subscribe("c1", &[1, 2, 1], None, NOW + 1).await;
    assert_eq!(own.len(), 1);
    let frame = &own[0];
    assert_eq!((frame["type"].as_str(), frame["seq"].as_u64()), (Some("snapshot"), Some(1)));
    assert_eq!((frame["part"].as_u64(), frame["parts"].as_u64()), (Some(1), Some(1)));
    assert!(frame["cursor"].is_string());
    let statuses = frame["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 2, "duplicates collapse");
    let truth = env.bulk(&[1, 2], Some(1), NOW + 1).await;
    assert_eq!(shown(&statuses[0]), view_json(1, &truth[0]));
    assert_eq!(shown(&statuses[1]), view_json(2, &truth[1]));
    assert_eq!(statuses[0]["platforms"], json!({"mobile": "online"}));
    assert_eq!(statuses[0]["next"]["at_ms"], json!(NOW + 300_001), "idle comes next");
    assert_eq!(statuses[1]["next"], json!(null), "a user never seen changes with time alone never");
    // A service sees the public view, with the same numbering of its own.
    let public = env.subscribe("c2", &[1], None, NOW + 1).await;
    assert_eq!(seqs(&public), vec![1]);
}

#[tokio::test]
async fn a_large_answer_is_split_into_numbered_parts_within_32_kib() {
    let env = Env::new().await;
    env.connect("big", None, NOW).await;
    let ids: Vec<u64> = (1..=1_000).map(|n| 9_000_000_000_000_000_000 + n).collect();
    let frames = env.subscribe("big", &ids, None, NOW).await;
    assert!(frames.len() >= 2, "1,000 entries need more than one frame");
    assert!(env.poster.largest.load(std::sync::atomic::Ordering::SeqCst) <= 32_768);
    let parts = frames.len() as u64;
    for (k, frame) in frames.iter().enumerate() {
        assert_eq!(frame["part"].as_u64(), Some(k as u64 + 1));
        assert_eq!(frame["parts"].as_u64(), Some(parts));
        assert_eq!(frame.get("cursor").is_some(), k as u64 + 1 == parts, "only the last part carries the cursor");
    }
    assert_eq!(seqs(&frames), (1..=parts).collect::<Vec<_>>(), "seq gap-free from 1");
    let total: usize = frames.iter().map(|f| f["statuses"].as_array().unwrap().len()).sum();
    assert_eq!(total, 1_000);
    let again = env.subscribe("big", &ids[4..5], None, NOW).await;
    assert_eq!(seqs(&again), vec![parts + 1], "the next data frame follows on");
}

#[tokio::test]
async fn the_id_cap_counts_distinct_ids_and_adds_nothing_past_it() {
    let env = Env::with(&[("STREAM_MAX_IDS", "3")]).await;
    env.connect("c", None, NOW).await;
    assert_eq!(env.subscribe("c", &[1, 2], None, NOW).await.len(), 1);
    let refused = env.subscribe("c", &[2, 3, 4], None, NOW).await;
    assert_eq!(
        refused,
        vec![json!({"type": "error", "error": {"code": "too_many_ids",
        "message": refused[0]["error"]["message"]}})]
    );
    // Nothing was added: 3 alone still fits, and ids already held cost nothing.
    let fits = env.subscribe("c", &[1, 2, 3], None, NOW).await;
    assert_eq!(seqs(&fits), vec![2], "an error frame has no seq");
    env.event(EventKind::Connected, 4, "s", None, NOW + 5).await;
    env.feed(&[4], NOW + 5).await;
    assert!(env.poster.take("c").is_empty(), "4 was never added");
}

#[tokio::test]
async fn unsubscribe_and_ping_answer_without_seq() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.subscribe("c", &[1, 2], None, NOW).await;
    let answer = env.send("c", r#"{"action":"unsubscribe","user_ids":[2,2]}"#, NOW).await;
    assert_eq!(answer, vec![json!({"type": "unsubscribed", "user_ids": [2]})]);
    assert_eq!(env.send("c", r#"{"action":"ping"}"#, NOW).await, vec![json!({"type": "pong"})]);
    env.event(EventKind::Connected, 2, "s", None, NOW + 5).await;
    env.event(EventKind::Connected, 1, "s", None, NOW + 5).await;
    env.feed(&[1, 2], NOW + 5).await;
    let frames = env.poster.take("c");
    assert_eq!(seqs(&frames), vec![2]);
    let users: Vec<u64> =
        frames[0]["statuses"].as_array().unwrap().iter().map(|e| e["user_id"].as_u64().unwrap()).collect();
    assert_eq!(users, vec![1], "2 is no longer watched");
}

#[tokio::test]
async fn bad_messages_get_error_frames_and_change_nothing() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    let cases = [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_request"),
        (r#"{"action":"subscribe","user_ids":[0]}"#, "invalid_request"),
        (r#"{"action":"subscribe","user_ids":"1"}"#, "invalid_request"),
        (r#"{"action":"subscribe","user_ids":[]}"#, "invalid_request"),
        (r#"{"action":"jump"}"#, "unknown_action"),
    ];
    for (body, code) in cases {
        let frames = env.send("c", body, NOW).await;
        assert_eq!(frames.len(), 1, "{body}");
        assert_eq!(frames[0]["type"], json!("error"));
        assert_eq!(frames[0]["error"]["code"], json!(code), "{body}");
        assert!(frames[0].get("seq").is_none());
    }
    let ids: Vec<String> = (1..=1_001).map(|n| n.to_string()).collect();
    let frames = env.send("c", &format!(r#"{{"action":"subscribe","user_ids":[{}]}}"#, ids.join(",")), NOW).await;
    assert_eq!(frames[0]["error"]["code"], json!("too_many_ids"));
    let huge = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(140_000));
    assert_eq!(env.send("c", &huge, NOW).await[0]["error"]["code"], json!("payload_too_large"));
    // The state is untouched: the next data frame is seq 2, 1 is still watched.
    let next = env.subscribe("c", &[1], None, NOW).await;
    assert_eq!(seqs(&next), vec![2]);
}

#[tokio::test]
async fn connect_refuses_an_identity_that_is_no_user_id() {
    let env = Env::new().await;
    let event = json!({"requestContext": {"routeKey": "$connect", "connectionId": "x",
        "authorizer": {"principalId": "not-a-user"}}});
    assert_eq!(env.stream.invoke(&event, NOW).await, json!({"statusCode": 403}));
    let frames = env.send("x", r#"{"action":"subscribe","user_ids":[1]}"#, NOW).await;
    assert_eq!(frames[0]["error"]["code"], json!("invalid_request"), "never registered");
    assert_eq!(env.stream.invoke(&json!({"hello": 1}), NOW).await, json!({"statusCode": 400}));
    assert_eq!(env.stream.invoke(&json!(null), NOW).await, json!({"statusCode": 400}));
}

/// Milliseconds until `key` expires, as Redis counts (by its own clock,
/// while the registry sets expiries from the service clock `NOW`).
async fn expires_at(key: &str) -> i64 {
    let mut conn = raw_redis().await;
    redis::cmd("PEXPIRETIME").arg(key).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn every_registry_key_expires_and_a_gone_subscriber_is_forgotten() {
    let env = Env::new().await;
    env.connect("c", Some(9), NOW).await;
    env.subscribe("c", &[1, 2], None, NOW + 5).await;
    let p = &env.prefix;
    let lapse = NOW + 8_100_000;
    assert_eq!(expires_at(&format!("{p}stream:conn:{{c}}")).await, lapse);
    assert_eq!(expires_at(&format!("{p}stream:ids:{{c}}")).await, lapse);
    assert_eq!(expires_at(&format!("{p}stream:sent:{{c}}")).await, lapse + 8_100_000, "kept for resumes");
    let mut conn = raw_redis().await;
    let score: Option<i64> =
        redis::cmd("ZSCORE").arg(format!("{p}stream:watch:{{1}}")).arg("c").query_async(&mut conn).await.unwrap();
    assert_eq!(score, Some(lapse), "the watch lapses with the connection");
    env.disconnect("c", NOW + 10).await;
    assert_eq!(expires_at(&format!("{p}stream:conn:{{c}}")).await, -2, "gone");
    assert_eq!(expires_at(&format!("{p}stream:sent:{{c}}")).await, NOW + 10 + 8_100_000);
    let score: Option<i64> =
        redis::cmd("ZSCORE").arg(format!("{p}stream:watch:{{1}}")).arg("c").query_async(&mut conn).await.unwrap();
    assert_eq!(score, None);

    // A 410 answering a subscribe's snapshot forgets the connection too.
    env.connect("g", None, NOW).await;
    env.poster.gone.lock().unwrap().insert("g".into());
    env.subscribe("g", &[1], None, NOW).await;
    assert_eq!(expires_at(&format!("{p}stream:conn:{{g}}")).await, -2);
    assert_eq!(env.feed(&[1], NOW + 20).await["fanout"]["connections"], json!(0));
}

#[tokio::test]
async fn a_message_the_stores_fail_gets_an_unavailable_error_and_sending_it_again_works() {
    let env = Env::new().await;
    env.event(EventKind::Connected, 1, "a", Some("ios"), NOW).await;
    env.event(EventKind::Connected, 2, "a", Some("ios"), NOW).await;
    env.connect("c1", Some(9), NOW).await;
    // User 2's watchers index damaged by hand: the subscribe's watch fails.
    let keys = status_shared::adapters::redis::Keys::new(env.prefix.clone());
    let watch = keys.stream_watch(id(2));
    let mut raw = raw_redis().await;
    let _: () = redis::cmd("SET").arg(&watch).arg("damaged").query_async(&mut raw).await.unwrap();

    let frames = env.subscribe("c1", &[1, 2], None, NOW + 1).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["error"]["code"], "unavailable");
    assert!(frames[0]["error"]["message"].as_str().is_some_and(|m| m.contains("send it again")));
    assert!(frames[0].get("seq").is_none(), "an error frame takes no seq");
    // The ids it added are dropped again: a change of user 1 reaches
    // nobody.
    env.event(EventKind::Disconnected, 1, "a", Some("ios"), NOW + 2).await;
    env.feed(&[1], NOW + 2).await;
    assert!(env.poster.take("c1").is_empty(), "no frame for an id the failed subscribe added");

    // The connection stays usable, and the same message sent again once
    // the stores answer is a whole snapshot numbered from 1.
    assert_eq!(env.send("c1", r#"{"action":"ping"}"#, NOW + 3).await, vec![json!({"type": "pong"})]);
    let _: () = redis::cmd("DEL").arg(&watch).query_async(&mut raw).await.unwrap();
    let again = env.subscribe("c1", &[1, 2], None, NOW + 4).await;
    assert_eq!(seqs(&again), vec![1]);
    assert_eq!(again[0]["type"], "snapshot");
    assert_eq!(again[0]["statuses"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn numbers_reserved_for_parts_that_never_went_out_are_taken_back() {
    use std::sync::atomic::Ordering;
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    let ids: Vec<u64> = (1..=1_000).map(|n| 9_000_000_000_000_000_000 + n).collect();
    // The first part goes out, the second's post fails, and so does the
    // `unavailable` frame after it: the invocation fails.
    let posted = env.poster.posts.load(Ordering::SeqCst);
    env.poster.fail_after.store(posted + 1, Ordering::SeqCst);
    let body = json!({"action": "subscribe", "user_ids": ids}).to_string();
    let event = json!({"requestContext": {"routeKey": "subscribe", "eventType": "MESSAGE", "connectionId": "c"},
        "body": body});
    assert_eq!(env.stream.invoke(&event, NOW).await, json!({"statusCode": 500}));
    assert_eq!(seqs(&env.poster.take("c")), vec![1], "one part out");

    // Part 2 may have arrived (its answer was lost); parts 3 to 6 never
    // did, so the subscribe sent again is numbered from 3.
    env.poster.fail_after.store(usize::MAX, Ordering::SeqCst);
    let again = env.subscribe("c", &ids, None, NOW + 1).await;
    let parts = again.len() as u64;
    assert!(parts >= 3, "{parts} parts");
    assert_eq!(seqs(&again), (3..3 + parts).collect::<Vec<_>>());
}
