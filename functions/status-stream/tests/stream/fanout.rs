//! The fan-out of changes: privacy transitions, `next`, 410, lapse,
//! retries, racing fan-outs, and batches of connections.

use std::collections::HashMap;

use serde_json::{json, Value};
use status_shared::domain::stream::ConnectionId;
use status_shared::domain::{EventKind, ManualState, ManualStatus, PresenceEvent, SessionId};
use status_shared::ports::{Begin, StreamRegistry};
use status_shared::services::stream::fanout::FANOUT_BATCH;

use crate::support::*;

fn only(frames: &[Value]) -> Value {
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], json!("status"));
    let statuses = frames[0]["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 1);
    statuses[0].clone()
}

#[tokio::test]
async fn privacy_holds_on_push() {
    // Every change is sent here, activity included (holding it back has
    // its own tests in `hold.rs`).
    let env = Env::with(&[("STREAM_ACTIVITY_REFRESH_MS", "0")]).await;
    env.connect("other", None, NOW).await;
    env.connect("self", Some(1), NOW).await;
    env.subscribe("other", &[1], None, NOW).await;
    env.subscribe("self", &[1], None, NOW).await;
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    env.feed(&[1], NOW + 10).await;
    assert_eq!(only(&env.poster.take("other"))["status"], json!("online"));
    env.poster.take("self");

    // Hide: others get what a departure sends, the user their truth.
    env.committer.set_visibility(id(1), false, NOW + 20).await.unwrap();
    env.feed(&[1], NOW + 20).await;
    assert_eq!(
        only(&env.poster.take("other")),
        json!({"user_id": 1, "status": "offline", "last_active_ms": NOW + 10, "next": null})
    );
    assert!(env.poster.take("self").is_empty(), "the user's own view did not change");

    // Activity while hidden: nothing to others; the user sees it.
    env.event(EventKind::Activity, 1, "a", None, NOW + 30).await;
    env.feed(&[1], NOW + 30).await;
    assert!(env.poster.take("other").is_empty(), "no frame for a hidden user's activity");
    assert_eq!(only(&env.poster.take("self"))["last_active_ms"], json!(NOW + 30));

    // Show: the frame of a return.
    env.committer.set_visibility(id(1), true, NOW + 40).await.unwrap();
    env.feed(&[1], NOW + 40).await;
    let back = only(&env.poster.take("other"));
    assert_eq!((back["status"].clone(), back["last_active_ms"].clone()), (json!("online"), json!(NOW + 30)));

    // A manual status shows to others while online.
    let dnd = ManualStatus { state: ManualState::Dnd, message: Some("focus".into()), expires_at_ms: Some(NOW + 1_000) };
    env.committer.set_manual(id(1), Some(dnd), NOW + 50).await.unwrap();
    env.feed(&[1], NOW + 50).await;
    let manual = only(&env.poster.take("other"));
    assert_eq!(manual["manual"]["state"], json!("dnd"));
    assert_eq!(manual["next"]["at_ms"], json!(NOW + 1_000), "the expiry is the next change");
    assert!(manual["next"].get("manual").is_none());

    // Erasure: what a user never seen reads as.
    let _ = env.committer.erase(id(1), NOW + 60, &NoDeadLetters).await;
    env.feed(&[1], NOW + 61).await;
    assert_eq!(
        only(&env.poster.take("other")),
        json!({"user_id": 1, "status": "offline", "last_active_ms": null, "next": null})
    );
}

#[tokio::test]
async fn next_predicts_the_bulk_read_to_the_millisecond() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.event(EventKind::Connected, 1, "a", Some("web"), NOW).await;
    let entry = env.subscribe("c", &[1], None, NOW + 1).await[0]["statuses"][0].clone();
    let at = entry["next"]["at_ms"].as_i64().unwrap();
    assert_eq!(at, NOW + 300_001);
    assert_eq!(view_json(1, &env.bulk(&[1], None, at - 1).await[0]), shown(&entry));
    let mut next = entry["next"].clone();
    next.as_object_mut().unwrap().remove("at_ms");
    next["user_id"] = json!(1);
    assert_eq!(view_json(1, &env.bulk(&[1], None, at).await[0]), next);
    // 2 s before idle the user becomes active: a frame moves `next` on.
    env.event(EventKind::Activity, 1, "a", Some("web"), NOW + 298_000).await;
    env.feed(&[1], NOW + 298_000).await;
    let moved = only(&env.poster.take("c"));
    assert_eq!(moved["next"]["at_ms"], json!(NOW + 598_001));
    assert_eq!(moved["status"], json!("online"));
}

#[tokio::test]
async fn a_gone_connection_is_forgotten_at_the_first_410() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.connect("d", None, NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    env.subscribe("d", &[1], None, NOW).await;
    env.poster.gone.lock().unwrap().insert("c".into());
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    let answer = env.feed(&[1], NOW + 10).await;
    assert_eq!(answer["fanout"]["gone"], json!(1));
    assert_eq!(answer["fanout"]["frames"], json!(1), "the other watcher is served");
    env.event(EventKind::Disconnected, 1, "a", None, NOW + 20).await;
    assert_eq!(env.feed(&[1], NOW + 20).await["fanout"]["connections"], json!(1), "only d still watches");
}

#[tokio::test]
async fn watches_lapse_after_2_h_15_min_and_disconnect_ends_them() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.connect("d", None, NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    env.subscribe("d", &[1], None, NOW).await;
    env.disconnect("d", NOW + 1).await;
    env.event(EventKind::Connected, 1, "a", None, NOW + 8_099_999).await;
    assert_eq!(env.feed(&[1], NOW + 8_099_999).await["fanout"]["connections"], json!(1));
    env.event(EventKind::Disconnected, 1, "a", None, NOW + 8_100_000).await;
    let lapsed = env.feed(&[1], NOW + 8_100_000).await;
    assert_eq!(lapsed["fanout"]["connections"], json!(0), "lapsed at connect + 2 h 15 min");
    assert_eq!(seqs(&env.poster.take("c")), vec![2]);
    assert!(env.poster.take("d").is_empty());
}

#[tokio::test]
async fn a_repeated_fan_out_sends_nothing_new_and_racing_ones_keep_seq_in_order() {
    let env = Env::with(&[("STREAM_ACTIVITY_REFRESH_MS", "0")]).await;
    env.connect("c", None, NOW).await;
    env.subscribe("c", &[1, 2], None, NOW).await;
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    assert_eq!(env.feed(&[1], NOW + 10).await["fanout"]["frames"], json!(1));
    assert_eq!(env.feed(&[1], NOW + 10).await["fanout"]["frames"], json!(0), "a retry sends only what did not go out");
    assert_eq!(env.feed(&[1], NOW + 5).await["fanout"]["frames"], json!(0), "never an older state after a newer one");
    for round in 0..6 {
        let t = NOW + 100 + round * 10;
        env.event(EventKind::Activity, 1, "a", None, t).await;
        env.event(EventKind::Connected, 2, &format!("s{round}"), None, t).await;
        let feeds = (0..4).map(|k| env.feed(if k % 2 == 0 { &[1, 2] } else { &[2] }, t + k));
        for answer in futures::future::join_all(feeds).await {
            assert_eq!(answer["statusCode"], json!(200));
        }
    }
    let frames = env.poster.take("c");
    let got = seqs(&frames);
    assert_eq!(got, (2..2 + got.len() as u64).collect::<Vec<_>>(), "gap-free and in order");
    let mut held = std::collections::HashMap::new();
    apply(&mut held, &frames);
    let truth = env.bulk(&[1, 2], None, NOW + 200).await;
    assert_eq!(shown(&held[&1]), view_json(1, &truth[0]));
    assert_eq!(shown(&held[&2]), view_json(2, &truth[1]));
}

#[tokio::test]
async fn a_large_change_is_split_into_status_frames_each_with_its_cursor() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    let ids: Vec<u64> = (1..=1_000).collect();
    let snapshot = env.subscribe("c", &ids, None, NOW).await.len() as u64;
    let events: Vec<PresenceEvent> = ids
        .iter()
        .map(|u| PresenceEvent {
            kind: EventKind::Connected,
            user_id: id(*u),
            session_id: SessionId::new("s").unwrap(),
            device: Some("desktop".into()),
            ts_ms: NOW + 10,
        })
        .collect();
    env.committer.aggregate(&events, NOW + 10).await.unwrap();
    env.feed(&ids, NOW + 10).await;
    let frames = env.poster.take("c");
    assert!(frames.len() >= 2, "1,000 changed entries need several frames");
    assert!(env.poster.largest.load(std::sync::atomic::Ordering::SeqCst) <= 32_768);
    let first = snapshot + 1;
    assert_eq!(seqs(&frames), (first..first + frames.len() as u64).collect::<Vec<_>>());
    assert!(frames.iter().all(|f| f["type"] == json!("status") && f["cursor"].is_string() && f.get("part").is_none()));
    let total: usize = frames.iter().map(|f| f["statuses"].as_array().unwrap().len()).sum();
    assert_eq!(total, 1_000);
}

#[tokio::test]
async fn a_change_nobody_watches_costs_one_round_trip_whatever_the_connections() {
    let env = Env::new().await;
    for n in 0..50 {
        let connection = format!("c{n}");
        env.connect(&connection, None, NOW).await;
        env.subscribe(&connection, &[1], None, NOW).await;
    }
    env.event(EventKind::Connected, 2, "a", None, NOW + 10).await;
    let before = env.app.cache.writer().round_trips();
    let answer = env.feed(&[2], NOW + 10).await;
    assert_eq!(answer["fanout"]["connections"], json!(0));
    assert_eq!(env.app.cache.writer().round_trips() - before, 1, "the watchers of user 2 only");
}

#[tokio::test]
async fn a_fan_out_to_many_connections_costs_round_trips_per_batch_not_per_connection() {
    let env = Env::new().await;
    let watchers = 2 * FANOUT_BATCH + 88;
    let mut snapshot_seq = HashMap::new();
    for n in 0..watchers {
        let connection = format!("c{n}");
        env.connect(&connection, None, NOW).await;
        let frames = env.subscribe(&connection, &[1], None, NOW).await;
        snapshot_seq.insert(connection, *seqs(&frames).last().unwrap());
    }
    env.poster.gone.lock().unwrap().insert("c7".into());
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    let before = env.app.cache.writer().round_trips();
    let answer = env.feed(&[1], NOW + 10).await;
    let trips = env.app.cache.writer().round_trips() - before;
    assert_eq!(answer["fanout"]["connections"], json!(watchers));
    assert_eq!(answer["fanout"]["frames"], json!(watchers - 1));
    assert_eq!(answer["fanout"]["gone"], json!(1));
    for n in (0..watchers).filter(|n| *n != 7) {
        let connection = format!("c{n}");
        let frames = env.poster.take(&connection);
        assert_eq!(seqs(&frames), vec![snapshot_seq[&connection] + 1], "{connection}: one frame, the next seq");
        assert_eq!(frames[0]["statuses"][0]["status"], json!("online"));
    }
    // Watchers, the coalescing windows, the read of user 1, then three
    // round trips per batch of 256 and the gone connection's two: about
    // 15, against three per connection (1,800) served one at a time.
    assert!(trips <= 20, "{trips} round trips for {watchers} connections");
}

#[tokio::test]
async fn a_connection_locked_by_another_call_is_served_once_its_lock_is_free() {
    let env = Env::with(&[("STREAM_COALESCE_MS", "0")]).await;
    for connection in ["c", "d"] {
        env.connect(connection, None, NOW).await;
        env.subscribe(connection, &[1], None, NOW).await;
    }
    let mut redis = raw_redis().await;
    let lock = format!("{}stream:lock:{{c}}", env.prefix);
    let () = redis::cmd("SET").arg(&lock).arg("another").arg("PX").arg(300).query_async(&mut redis).await.unwrap();
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    let answer = env.feed(&[1], NOW + 10).await;
    assert_eq!(answer["fanout"]["frames"], json!(2), "{answer}");
    assert_eq!(seqs(&env.poster.take("c")), vec![2]);
    assert_eq!(seqs(&env.poster.take("d")), vec![2]);
    let left: Option<String> = redis::cmd("GET").arg(&lock).query_async(&mut redis).await.unwrap();
    assert_eq!(left, None, "the fan-out gave the lock back");
}

#[tokio::test]
async fn a_lock_is_taken_again_by_its_own_token_and_refused_to_another() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    let registry = &env.app.stream_registry;
    let c = ConnectionId::new("c").unwrap();
    assert!(matches!(registry.begin(&c, "mine", 1_000, &[]).await.unwrap(), Begin::Ready(_)));
    // A batch sent again after a dropped connection does not wait on itself.
    assert!(matches!(registry.begin(&c, "mine", 1_000, &[]).await.unwrap(), Begin::Ready(_)));
    assert_eq!(registry.begin(&c, "theirs", 1_000, &[]).await.unwrap(), Begin::Busy);
    let unknown = ConnectionId::new("nobody").unwrap();
    let begun = registry.begin_many("mine", 1_000, &[(c.clone(), vec![]), (unknown, vec![id(1)])]).await.unwrap();
    assert!(matches!(begun[0], Ok(Begin::Ready(_))));
    assert!(matches!(begun[1], Ok(Begin::Unknown)));
}
