//! Live status end to end (DESIGN §12) through the local stack as
//! `scripts/up.sh` serves it: real WebSocket clients on its WebSocket API,
//! presence through its Invoke API, preferences through its HTTP API, the
//! feed through its Invoke API to `StatusStreamFunction`, and frames back
//! through its `@connections` management API.

use std::time::Duration;

use serde_json::{json, Value};
use status_shared::app::now_ms;
use status_tests::local::{request, InProcess, WsClient};
use status_tests::msk::kafka_batch;

const WAIT: Duration = Duration::from_secs(15);

pub(crate) fn presence(kind: &str, user: u64, ts_ms: i64) -> Value {
    json!({"type": kind, "user_id": user, "session_id": "phone", "ts_ms": ts_ms})
}

/// The entry of `user` in a data frame, if it holds one.
fn entry_of(frame: &Value, user: u64) -> Option<Value> {
    frame["statuses"].as_array()?.iter().find(|e| e["user_id"] == user).cloned()
}

pub(crate) async fn aggregate(stack: &InProcess, values: &[Value]) {
    let path = "/2015-03-31/functions/AggregatorFunction/invocations";
    let (status, body) = request(
        &stack.invoke_url,
        "POST",
        path,
        None,
        Some(&serde_json::to_value(kafka_batch(values)).expect("an MSK event as JSON")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["feed_failed"], false, "{body}");
}

/// Every data frame's seq, in order, is one more than the one before.
fn assert_gap_free(frames: &[Value], from: u64) {
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    let expected: Vec<u64> = (from..from + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "{frames:?}");
}

#[tokio::test]
async fn a_subscriber_sees_a_connect_a_hide_a_return_and_an_erasure_in_order_then_resumes_exactly() {
    let stack = InProcess::start("push", &[]).await;
    let (viewer, friend) = (9_101, 9_102);
    let mut client = WsClient::connect(&stack.ws_url, Some(viewer)).await;

    client.send(&json!({"action": "subscribe", "user_ids": [friend]}).to_string()).await;
    let snapshot = client.until(WAIT, |f| f["type"] == "snapshot").await;
    let first = snapshot.last().unwrap();
    assert_eq!((first["seq"].as_u64(), first["part"].as_u64(), first["parts"].as_u64()), (Some(1), Some(1), Some(1)));
    let never_seen = entry_of(first, friend).expect("the friend's entry");
    assert_eq!((never_seen["status"].as_str(), &never_seen["last_active_ms"]), (Some("offline"), &Value::Null));

    // A connect through the aggregator reaches the subscriber as a status frame.
    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", friend, t0)]).await;
    let mut frames = client.until(WAIT, |f| entry_of(f, friend).is_some_and(|e| e["status"] == "online")).await;
    let online = entry_of(frames.last().unwrap(), friend).unwrap();
    assert_eq!(online["last_active_ms"].as_i64(), Some(t0));
    assert!(online["next"]["at_ms"].as_i64().is_some_and(|at| at > t0), "idle is due later: {online}");

    // Hiding sends exactly a departure: offline, last seen frozen.
    let (status, body) = request(
        &stack.api_url,
        "PUT",
        &format!("/v1/users/{friend}/visibility"),
        Some(friend),
        Some(&json!({"visible": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    frames.extend(client.until(WAIT, |f| entry_of(f, friend).is_some_and(|e| e["status"] == "offline")).await);
    let departed = entry_of(frames.last().unwrap(), friend).unwrap();
    assert_eq!(departed["last_active_ms"].as_i64(), Some(t0), "{departed}");
    assert!(departed.get("platforms").is_none(), "{departed}");

    // The hidden user's activity sends nothing to others.
    aggregate(&stack, &[presence("activity", friend, t0 + 1_000)]).await;
    assert!(client.next(Duration::from_millis(1_500)).await.is_none(), "nothing to send for a hidden user");

    // Showing again sends the return, with the activity made while hidden.
    let (status, _) = request(
        &stack.api_url,
        "PUT",
        &format!("/v1/users/{friend}/visibility"),
        Some(friend),
        Some(&json!({"visible": true})),
    )
    .await;
    assert_eq!(status, 200);
    frames.extend(client.until(WAIT, |f| entry_of(f, friend).is_some_and(|e| e["status"] == "online")).await);
    assert_eq!(entry_of(frames.last().unwrap(), friend).unwrap()["last_active_ms"].as_i64(), Some(t0 + 1_000));
    assert_gap_free(&frames, 2);
    let cursor = frames.last().unwrap()["cursor"].as_str().expect("a cursor").to_owned();

    // The connection drops; meanwhile the friend disconnects. A resume from
    // the last cursor answers just that change, equal to a fresh snapshot.
    client.close().await;
    aggregate(&stack, &[presence("session_disconnected", friend, t0 + 2_000)]).await;
    let mut resumed = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    resumed.send(&json!({"action": "subscribe", "user_ids": [friend], "since": cursor}).to_string()).await;
    let delta = resumed.until(WAIT, |f| f["type"] == "delta").await.pop().unwrap();
    assert_eq!(delta["seq"].as_u64(), Some(1), "seq starts again on the new connection");
    let changed = entry_of(&delta, friend).expect("the change made while away");
    let mut fresh = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    fresh.send(&json!({"action": "subscribe", "user_ids": [friend]}).to_string()).await;
    let snapshot = fresh.until(WAIT, |f| f["type"] == "snapshot").await.pop().unwrap();
    assert_eq!(Some(changed), entry_of(&snapshot, friend), "resume equals a fresh snapshot");

    // An erasure sends the entry of a user never seen.
    let (status, _) = request(&stack.api_url, "DELETE", &format!("/v1/users/{friend}"), None, None).await;
    assert_eq!(status, 204);
    let erased = resumed.until(WAIT, |f| entry_of(f, friend).is_some_and(|e| e["last_active_ms"].is_null())).await;
    assert_eq!(entry_of(erased.last().unwrap(), friend).unwrap()["status"], "offline");
    resumed.close().await;
    fresh.close().await;

    // What the function counted on the way.
    assert!(stack.metric("StatusStream", "ConnectionsOpened") >= 3.0);
    // A fan-out's metrics are written when its invocation ends, after
    // its posts: the erasure's may come a little after its frame.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stack.metric("StatusStream", "FramesSent") < 4.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = stack.metric("StatusStream", "FramesSent");
    assert!(sent >= 4.0, "connect, hide, show, erase: {sent}");
    assert!(stack.metric("StatusStream", "FanoutUsers") >= 4.0);
    assert_eq!(stack.metric("StatusStream", "PostFailures"), 0.0);
}

#[tokio::test]
async fn the_user_sees_themself_others_see_the_hide_and_bad_frames_get_errors_on_an_open_connection() {
    let stack = InProcess::start("push", &[]).await;
    let user = 9_201;
    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", user, t0)]).await;
    let (status, _) = request(
        &stack.api_url,
        "PUT",
        &format!("/v1/users/{user}/visibility"),
        Some(user),
        Some(&json!({"visible": false})),
    )
    .await;
    assert_eq!(status, 200);

    let mut me = WsClient::connect(&stack.ws_url, Some(user)).await;
    let mut service = WsClient::connect(&stack.ws_url, None).await;
    let subscribe = json!({"action": "subscribe", "user_ids": [user]}).to_string();
    me.send(&subscribe).await;
    service.send(&subscribe).await;
    let mine = me.until(WAIT, |f| f["type"] == "snapshot").await.pop().unwrap();
    let theirs = service.until(WAIT, |f| f["type"] == "snapshot").await.pop().unwrap();
    assert_eq!(entry_of(&mine, user).unwrap()["status"], "online", "the user sees their truth");
    assert_eq!(entry_of(&theirs, user).unwrap()["status"], "offline", "a service sees the hide");

    for (bad, code) in [
        ("not json".to_owned(), "invalid_json"),
        (json!({"action": "shout"}).to_string(), "unknown_action"),
        (json!({"action": "subscribe", "user_ids": [0]}).to_string(), "invalid_request"),
        (json!({"action": "subscribe", "user_ids": (1..=1_001).collect::<Vec<u64>>()}).to_string(), "too_many_ids"),
        // Over 128 KiB: an error frame, and the connection stays open.
        (json!({"action": "ping", "pad": "x".repeat(140 * 1024)}).to_string(), "payload_too_large"),
    ] {
        service.send(&bad).await;
        let frame = service.until(WAIT, |f| f["type"] == "error").await.pop().unwrap();
        assert_eq!(frame["error"]["code"], code, "{bad}: {frame}");
        assert!(frame.get("seq").is_none(), "{frame}");
    }
    // One frame over API Gateway's 32 KiB is still one message here.
    service.send(&json!({"action": "ping", "pad": "x".repeat(40 * 1024)}).to_string()).await;
    assert_eq!(service.until(WAIT, |f| f["type"] == "pong").await.pop().unwrap(), json!({"type": "pong"}));

    // Unsubscribed, the service hears nothing of the user's next change.
    service.send(&json!({"action": "unsubscribe", "user_ids": [user]}).to_string()).await;
    let unsubscribed = service.until(WAIT, |f| f["type"] == "unsubscribed").await.pop().unwrap();
    assert_eq!(unsubscribed["user_ids"], json!([user]));
    aggregate(&stack, &[presence("session_disconnected", user, t0 + 1_000)]).await;
    let seen = me.until(WAIT, |f| entry_of(f, user).is_some_and(|e| e["status"] == "offline")).await;
    assert_eq!(seen.last().unwrap()["seq"].as_u64(), Some(2));
    assert!(service.next(Duration::from_millis(1_000)).await.is_none());
    me.close().await;
    service.close().await;
}

#[tokio::test]
async fn a_connection_with_a_bad_identity_is_refused_at_connect() {
    let stack = InProcess::start("push", &[]).await;
    let url = stack.ws_url.clone();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("X-Local-User", "0".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(refused.is_err(), "user 0 is no user");
}

#[tokio::test]
async fn an_online_friends_activity_is_held_back_then_flushed_by_the_scanner_in_one_frame() {
    let refresh_ms = 5_000;
    let stack = InProcess::start("push", &[("STREAM_ACTIVITY_REFRESH_MS", &refresh_ms.to_string())]).await;
    let (viewer, friend) = (9_301, 9_302);
    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", friend, t0)]).await;
    let mut client = WsClient::connect(&stack.ws_url, Some(viewer)).await;
    client.send(&json!({"action": "subscribe", "user_ids": [friend]}).to_string()).await;
    let snapshot = client.until(WAIT, |f| f["type"] == "snapshot").await.pop().unwrap();
    assert_eq!(entry_of(&snapshot, friend).unwrap()["status"], "online");

    // Activity alone, twice: held back, nothing goes out.
    aggregate(&stack, &[presence("activity", friend, t0 + 100)]).await;
    aggregate(&stack, &[presence("activity", friend, t0 + 200)]).await;
    assert!(client.next(Duration::from_millis(1_000)).await.is_none(), "activity alone is held back");

    // Once the refresh has passed, a scan feeds it back: one frame, the latest.
    tokio::time::sleep(Duration::from_millis(refresh_ms as u64)).await;
    let schedule = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let path = "/2015-03-31/functions/IdleScannerFunction/invocations";
    let (status, summary) = request(&stack.invoke_url, "POST", path, None, Some(&schedule)).await;
    assert_eq!(status, 200, "{summary}");
    let flushed: u64 = summary["shards"].as_array().unwrap().iter().filter_map(|s| s["flushed"].as_u64()).sum();
    assert_eq!(flushed, 1, "{summary}");
    let frames = client.until(WAIT, |f| entry_of(f, friend).is_some()).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let entry = entry_of(&frames[0], friend).unwrap();
    assert_eq!((entry["status"].as_str(), entry["last_active_ms"].as_i64()), (Some("online"), Some(t0 + 200)));
    assert_gap_free(&frames, 2);
    assert!(client.next(Duration::from_millis(500)).await.is_none(), "no second frame");
    client.close().await;
    assert!(stack.metric("StatusStream", "EntriesHeld") >= 2.0);
    assert_eq!(stack.metric("IdleScanner", "HeldFlushed"), 1.0);
}

/// What `viewer` (`None`: a service) reads of `user` on the bulk route.
async fn bulk_entry(stack: &InProcess, viewer: Option<u64>, user: u64) -> Value {
    let body = json!({"user_ids": [user]});
    let (status, answer) = request(&stack.api_url, "POST", "/v1/status/bulk", viewer, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["statuses"][0].clone()
}

/// An entry of a frame without its `next`: the bulk read's fields.
fn without_next(mut entry: Value) -> Value {
    entry.as_object_mut().expect("an entry").remove("next");
    entry
}

#[tokio::test]
async fn a_new_audience_sends_each_watcher_whose_view_changes_the_entry_the_bulk_read_now_gives_them() {
    let stack = InProcess::start("push", &[]).await;
    let (user, left_out, friend) = (9_401, 9_402, 9_403);
    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", user, t0)]).await;
    let mut watchers = Vec::new();
    for viewer in [Some(left_out), Some(friend), None] {
        let mut client = WsClient::connect(&stack.ws_url, viewer).await;
        client.send(&json!({"action": "subscribe", "user_ids": [user]}).to_string()).await;
        let snapshot = client.until(WAIT, |f| f["type"] == "snapshot").await.pop().unwrap();
        assert_eq!(entry_of(&snapshot, user).unwrap()["status"], "online");
        watchers.push((viewer, client));
    }
    let set = |body: Value| {
        let api = stack.api_url.clone();
        async move {
            let (status, answer) =
                request(&api, "PUT", &format!("/v1/users/{user}/audience"), Some(user), Some(&body)).await;
            assert_eq!(status, 200, "{answer}");
        }
    };

    // Everyone but one: only that one hears of it, as a user never seen.
    set(json!({"default": "everyone", "except": [left_out]})).await;
    let gone = watchers[0].1.until(WAIT, |f| entry_of(f, user).is_some_and(|e| e["status"] == "offline")).await;
    let entry = entry_of(gone.last().unwrap(), user).unwrap();
    assert_eq!(entry, json!({"user_id": user, "status": "offline", "last_active_ms": null, "next": null}));
    for (_, client) in &mut watchers[1..] {
        assert!(client.next(Duration::from_millis(1_000)).await.is_none(), "an unchanged view sends nothing");
    }

    // Nobody but that one, coarse: every watcher's view changes.
    set(json!({"default": "nobody", "except": [left_out], "last_seen": "coarse"})).await;
    let mut seen = Vec::new();
    for (viewer, client) in &mut watchers {
        let want = if *viewer == Some(left_out) { "online" } else { "offline" };
        let frames = client.until(WAIT, |f| entry_of(f, user).is_some_and(|e| e["status"] == want)).await;
        seen.push((*viewer, entry_of(frames.last().unwrap(), user).unwrap()));
    }
    let (_, coarse) = &seen[1];
    assert_eq!(coarse["last_seen"], "recently", "{coarse}");
    assert_eq!(coarse["next"]["at_ms"].as_i64(), Some(t0 + 3 * 86_400_000 + 1), "{coarse}");
    assert_eq!(coarse["next"]["last_seen"], "within_week", "{coarse}");
    // The push path and the read path give each viewer the same entry.
    for (viewer, pushed) in seen {
        assert_eq!(without_next(pushed), bulk_entry(&stack, viewer, user).await, "viewer {viewer:?}");
    }
    for (_, client) in watchers {
        client.close().await;
    }
}

#[tokio::test]
async fn a_viewer_an_audience_leaves_out_is_sent_no_frame_of_what_the_user_does_but_a_new_bucket() {
    let stack = InProcess::start("push", &[]).await;
    let (withheld, coarse, stranger, friend) = (9_501, 9_502, 9_503, 9_504);
    let users = [withheld, coarse];
    for (user, last_seen) in [(withheld, "none"), (coarse, "coarse")] {
        let body = json!({"default": "nobody", "except": [friend], "last_seen": last_seen});
        let path = format!("/v1/users/{user}/audience");
        let (status, answer) = request(&stack.api_url, "PUT", &path, Some(user), Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let mut left_out = WsClient::connect(&stack.ws_url, Some(stranger)).await;
    let mut allowed = WsClient::connect(&stack.ws_url, Some(friend)).await;
    for client in [&mut left_out, &mut allowed] {
        client.send(&json!({"action": "subscribe", "user_ids": users}).to_string()).await;
        let snapshot = client.until(WAIT, |f| f["type"] == "snapshot").await.pop().unwrap();
        for user in users {
            let never_seen = json!({"user_id": user, "status": "offline", "last_active_ms": null, "next": null});
            assert_eq!(entry_of(&snapshot, user), Some(never_seen));
        }
    }
    let both = |kind: &str, ts: i64| users.map(|user| presence(kind, user, ts)).to_vec();
    let put = |what: &'static str, body: Value| {
        let api = stack.api_url.clone();
        async move {
            for user in users {
                let path = format!("/v1/users/{user}/{what}");
                let (status, answer) = request(&api, "PUT", &path, Some(user), Some(&body)).await;
                assert_eq!(status, 200, "{answer}");
            }
        }
    };

    // A first sign of life: the coarse bucket appears, and that is all the
    // left-out viewer ever learns.
    let t0 = now_ms();
    aggregate(&stack, &both("session_connected", t0)).await;
    let arrived = |want: &'static str| move |f: &Value| entry_of(f, coarse).is_some_and(|e| e["status"] == want);
    allowed.until(WAIT, arrived("online")).await;
    let first = left_out.until(WAIT, |f| entry_of(f, coarse).is_some()).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(entry_of(&first[0], withheld), None, "{first:?}");
    let bucket = without_next(entry_of(&first[0], coarse).unwrap());
    assert_eq!(
        bucket,
        json!({"user_id": coarse, "status": "offline", "last_active_ms": null, "last_seen": "recently"})
    );

    // Activity, a manual status, a hide, activity while hidden, a show and
    // a disconnect: the friend hears of each visible change; the left-out
    // viewer of none, the bucket staying "recently".
    aggregate(&stack, &both("activity", t0 + 1_000)).await;
    put("manual-status", json!({"state": "dnd"})).await;
    allowed.until(WAIT, |f| entry_of(f, coarse).is_some_and(|e| e["manual"]["state"] == "dnd")).await;
    put("visibility", json!({"visible": false})).await;
    allowed.until(WAIT, arrived("offline")).await;
    aggregate(&stack, &both("activity", t0 + 2_000)).await;
    put("visibility", json!({"visible": true})).await;
    allowed.until(WAIT, arrived("online")).await;
    aggregate(&stack, &both("session_disconnected", t0 + 3_000)).await;
    allowed.until(WAIT, arrived("offline")).await;
    let leaked = left_out.next(Duration::from_millis(1_500)).await;
    assert_eq!(leaked, None, "the left-out viewer was sent a frame though its view did not change");

    // A resume carries what was held back: the same view, the edge moved.
    let cursor = first[0]["cursor"].as_str().expect("a cursor").to_owned();
    left_out.send(&json!({"action": "subscribe", "user_ids": users, "since": cursor}).to_string()).await;
    let delta = left_out.until(WAIT, |f| f["type"] == "delta").await.pop().unwrap();
    assert_eq!(entry_of(&delta, withheld), None, "{delta}");
    let held = entry_of(&delta, coarse).expect("the held change");
    let edge = |entry: &Value| entry["next"]["at_ms"].as_i64().expect("the bucket's edge");
    assert!(edge(&held) > edge(&entry_of(&first[0], coarse).unwrap()), "{delta}");
    assert_eq!(without_next(held), bucket, "{delta}");
    // What the left-out viewer reads now is what the bulk read gives them.
    let body = json!({"user_ids": users});
    let (status, answer) = request(&stack.api_url, "POST", "/v1/status/bulk", Some(stranger), Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let never_seen = json!({"user_id": withheld, "status": "offline", "last_active_ms": null});
    assert_eq!(answer["statuses"], json!([never_seen, bucket]));
    left_out.close().await;
    allowed.close().await;
}
