//! Exact resume from a cursor (DESIGN §12): snapshot + status frames +
//! delta equals a fresh snapshot.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use status_shared::domain::EventKind;

use crate::support::*;

fn fresh(frames: &[Value]) -> HashMap<u64, Value> {
    let mut state = HashMap::new();
    apply(&mut state, frames);
    state
}

#[tokio::test]
async fn a_resume_sends_exactly_what_changed_since_the_cursor() {
    let env = Env::new().await;
    env.connect("c1", Some(7), NOW).await;
    let mut held = fresh(&env.subscribe("c1", &[1, 2, 3, 7], None, NOW).await);
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    env.event(EventKind::Connected, 2, "b", None, NOW + 10).await;
    assert_eq!(env.feed(&[1, 2], NOW + 10).await["statusCode"], json!(200));
    let live = env.poster.take("c1");
    assert_eq!(live.len(), 1, "one feed event, one coalesced frame");
    assert_eq!((live[0]["type"].as_str(), live[0]["seq"].as_u64()), (Some("status"), Some(2)));
    apply(&mut held, &live);
    let last = cursor(&live);
    env.disconnect("c1", NOW + 20).await;
    // Changes while away: 3 connects, 2 leaves.
    env.event(EventKind::Connected, 3, "c", None, NOW + 30).await;
    env.event(EventKind::Disconnected, 2, "b", None, NOW + 31).await;
    env.feed(&[2, 3], NOW + 31).await;
    env.connect("c2", Some(7), NOW + 40).await;
    let delta = env.subscribe("c2", &[1, 2, 3, 7], Some(&last), NOW + 40).await;
    assert_eq!(delta.len(), 1);
    assert_eq!((delta[0]["type"].as_str(), delta[0]["seq"].as_u64()), (Some("delta"), Some(1)));
    let mut changed: Vec<u64> =
        delta[0]["statuses"].as_array().unwrap().iter().map(|e| e["user_id"].as_u64().unwrap()).collect();
    changed.sort();
    assert_eq!(changed, vec![2, 3], "1 and 7 are as the client holds them");
    apply(&mut held, &delta);
    env.connect("c3", Some(7), NOW + 40).await;
    assert_eq!(held, fresh(&env.subscribe("c3", &[1, 2, 3, 7], None, NOW + 40).await));
    // Nothing changed since: one empty delta with a fresh cursor.
    let again = env.subscribe("c2", &[1, 2, 3, 7], Some(&cursor(&delta)), NOW + 41).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["type"], json!("delta"));
    assert_eq!(again[0]["statuses"], json!([]));
    assert_eq!(again[0]["seq"], json!(2));
    assert!(again[0]["cursor"].is_string());
}

#[tokio::test]
async fn a_dropped_frame_comes_back_in_the_resume() {
    let env = Env::new().await;
    env.connect("c1", None, NOW).await;
    let first = env.subscribe("c1", &[1, 2], None, NOW).await;
    let mut held = fresh(&first);
    let kept = cursor(&first);
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    env.poster.fail_after.store(env.poster.posts.load(Ordering::SeqCst), Ordering::SeqCst);
    assert_eq!(env.feed(&[1], NOW + 10).await, json!({"statusCode": 500}), "the fan-out is to be retried");
    env.poster.fail_after.store(usize::MAX, Ordering::SeqCst);
    assert!(env.poster.take("c1").is_empty());
    // The client sees nothing, or a gap, and resumes from what it holds.
    env.connect("c2", None, NOW + 20).await;
    let delta = env.subscribe("c2", &[1, 2], Some(&kept), NOW + 20).await;
    assert_eq!(delta[0]["statuses"].as_array().unwrap().len(), 1);
    apply(&mut held, &delta);
    env.connect("c3", None, NOW + 20).await;
    assert_eq!(held, fresh(&env.subscribe("c3", &[1, 2], None, NOW + 20).await));
}

#[tokio::test]
async fn an_unknown_expired_or_foreign_cursor_answers_a_reset_snapshot() {
    let env = Env::new().await;
    env.connect("mine", Some(5), NOW).await;
    let own = cursor(&env.subscribe("mine", &[1], None, NOW).await);
    env.connect("theirs", Some(6), NOW).await;
    let reset = |frames: &[Value]| {
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["type"], json!("snapshot"));
        assert_eq!(frames[0]["reset"], json!(true));
    };
    reset(&env.subscribe("theirs", &[1], Some(&own), NOW + 1).await);
    reset(&env.subscribe("theirs", &[1], Some("garbage!"), NOW + 1).await);
    env.connect("later", Some(5), NOW).await;
    reset(&env.subscribe("later", &[1], Some(&own), NOW + 8_100_001).await);
    let exact = env.subscribe("later", &[1], Some(&own), NOW + 8_100_000).await;
    assert_eq!(exact[0]["type"], json!("delta"), "valid for the whole retention");
}

#[tokio::test]
async fn a_cursor_whose_seq_was_edited_past_what_its_connection_sent_answers_a_reset() {
    use status_shared::domain::stream::Cursor;
    let env = Env::new().await;
    env.connect("c1", Some(5), NOW).await;
    let first = env.subscribe("c1", &[1, 2], None, NOW).await;
    let issued = Cursor::decode(cursor(&first).as_str()).expect("a cursor this service issued");
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    env.feed(&[1], NOW + 10).await;
    assert_eq!(env.poster.take("c1").len(), 1, "user 1's change went out as seq 2");
    env.disconnect("c1", NOW + 20).await;

    // Claiming frames the connection never sent would skip user 1's
    // change; such a cursor is not one this service issued as it reads.
    env.connect("c2", Some(5), NOW + 30).await;
    let edited = Cursor { seq: issued.seq + 5, ..issued.clone() }.encode();
    let frames = env.subscribe("c2", &[1, 2], Some(&edited), NOW + 30).await;
    assert_eq!((frames[0]["type"].as_str(), frames[0]["reset"].as_bool()), (Some("snapshot"), Some(true)));
    assert_eq!(frames[0]["statuses"].as_array().map(Vec::len), Some(2));

    // The seq the connection did reach resumes as a delta; an earlier one
    // resumes too, and re-sends what came after it.
    let reached = Cursor { seq: issued.seq + 1, ..issued.clone() }.encode();
    env.connect("c3", Some(5), NOW + 30).await;
    let delta = env.subscribe("c3", &[1, 2], Some(&reached), NOW + 30).await;
    assert_eq!((delta[0]["type"].as_str(), delta[0]["statuses"].as_array().map(Vec::len)), (Some("delta"), Some(0)));
    env.connect("c4", Some(5), NOW + 30).await;
    let earlier = env.subscribe("c4", &[1, 2], Some(&issued.encode()), NOW + 30).await;
    let changed: Vec<u64> =
        earlier[0]["statuses"].as_array().unwrap().iter().map(|e| e["user_id"].as_u64().unwrap()).collect();
    assert_eq!((earlier[0]["type"].as_str(), changed), (Some("delta"), vec![1]));
}

/// Whether `frames` is one `reset` snapshot (`true`) or one delta (`false`).
fn is_reset(frames: &[Value]) -> bool {
    assert_eq!(frames.len(), 1, "{frames:?}");
    match frames[0]["type"].as_str() {
        Some("snapshot") => frames[0]["reset"] == json!(true),
        Some("delta") => false,
        other => panic!("neither a snapshot nor a delta: {other:?}"),
    }
}

#[tokio::test]
async fn an_end_user_keeps_the_sent_state_of_their_newest_ended_connections_only() {
    use status_shared::domain::stream::limits::KEPT_ENDED_PER_VIEWER;
    let env = Env::new().await;
    let ended = KEPT_ENDED_PER_VIEWER + 2;
    let mut cursors = Vec::new();
    for k in 0..ended {
        let connection = format!("c{k}");
        let at = NOW + k as i64;
        env.connect(&connection, Some(5), at).await;
        cursors.push(cursor(&env.subscribe(&connection, &[1, 2], None, at).await));
        env.disconnect(&connection, at).await;
    }
    // A repeated `$disconnect` keeps nothing twice.
    env.disconnect(&format!("c{}", ended - 1), NOW + 50).await;
    let mut redis = raw_redis().await;
    let sent: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}stream:sent:*", env.prefix)).query_async(&mut redis).await.unwrap();
    assert_eq!(sent.len(), KEPT_ENDED_PER_VIEWER, "{sent:?}");
    let kept: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{}stream:kept:{{5}}", env.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let newest: Vec<String> = (2..ended).map(|k| format!("c{k}")).collect();
    assert_eq!(kept, newest);
    env.connect("back", Some(5), NOW + 100).await;
    for (k, cursor) in cursors.iter().enumerate() {
        let reset = is_reset(&env.subscribe("back", &[1, 2], Some(cursor), NOW + 100).await);
        assert_eq!(reset, k < 2, "connection c{k}: only the two oldest lost their state");
    }
    // A service's connections are not capped.
    let mut theirs = Vec::new();
    for k in 0..ended {
        let connection = format!("s{k}");
        env.connect(&connection, None, NOW + 200).await;
        theirs.push(cursor(&env.subscribe(&connection, &[1], None, NOW + 200).await));
        env.disconnect(&connection, NOW + 200).await;
    }
    env.connect("service", None, NOW + 300).await;
    for cursor in &theirs {
        assert!(!is_reset(&env.subscribe("service", &[1], Some(cursor), NOW + 300).await));
    }
}
