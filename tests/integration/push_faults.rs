//! A fan-out that fails or dies midway loses nothing (DESIGN §12 "State
//! and loss"). Real WebSocket clients on the in-process local stack, whose
//! `StatusStreamFunction` posts its frames with the real SDK client
//! through a management API that fails on cue (`FaultyManagement`, in
//! front of the stack's own `@connections` API). Each client does what
//! §12 asks of one, resuming from its last cursor when `seq` skips, and
//! must end holding exactly what the bulk read answers its viewer, each
//! user's states in the order they happened. A duplicate is allowed (an
//! entry is a state), a loss is not.

use std::time::Duration;

use serde_json::{json, Value};
use status_shared::adapters::redis::Keys;
use status_shared::app::now_ms;
use status_shared::domain::stream::ConnectionId;
use status_tests::faults::{Fault, FaultyManagement};
use status_tests::lambda::RecordingLambda;
use status_tests::local::{request, InProcess};
use status_tests::push_client::{without_next, PushClient};
use status_tests::redis_url;

use local_stack::functions::Function;

use super::push::{aggregate, presence};

const WAIT: Duration = Duration::from_secs(30);

/// An entry's `(status, last_active_ms)`: what tells its states apart here.
fn state(entry: &Value) -> (Value, Value) {
    (entry["status"].clone(), entry["last_active_ms"].clone())
}

/// `client` saw `user`'s states in the order of `expected`, skipping
/// some perhaps (coalescing), never going back, and ending at its last.
fn assert_in_order(client: &PushClient, user: u64, expected: &[(Value, Value)]) {
    let mut seen: Vec<(Value, Value)> = Vec::new();
    for entry in client.states_of(user) {
        let entry = state(&entry);
        if seen.last() != Some(&entry) {
            seen.push(entry);
        }
    }
    let mut rest = expected.iter();
    for s in &seen {
        assert!(
            rest.any(|e| e == s),
            "{}: user {user} went {seen:?}, expected in order {expected:?}",
            client.connection
        );
    }
    assert_eq!(seen.last(), expected.last(), "{}: user {user} ends where it should", client.connection);
}

/// The bulk read as `viewer` (an end user's one read per window).
async fn bulk_read(stack: &InProcess, viewer: u64, ids: &[u64]) -> Vec<Value> {
    let (status, body) =
        request(&stack.api_url, "POST", "/v1/status/bulk", Some(viewer), Some(&json!({"user_ids": ids}))).await;
    assert_eq!(status, 200, "{body}");
    body["statuses"].as_array().cloned().expect("statuses")
}

async fn hide(stack: &InProcess, user: u64) {
    let path = format!("/v1/users/{user}/visibility");
    let (status, body) = request(&stack.api_url, "PUT", &path, Some(user), Some(&json!({"visible": false}))).await;
    assert_eq!(status, 200, "{body}");
}

/// The stack's own management API behind `proxy`.
fn management_url(stack: &InProcess) -> String {
    stack.ws_url.replacen("ws://", "http://", 1)
}

#[tokio::test]
async fn fan_outs_whose_posts_fail_are_retried_until_every_watcher_holds_the_bulk_read() {
    let proxy = FaultyManagement::start().await;
    let stack =
        InProcess::start("pushfail", &[("STREAM_ENDPOINT", &proxy.url), ("STREAM_ACTIVITY_REFRESH_MS", "0")]).await;
    proxy.forward_to(&management_url(&stack));
    let (f1, f2) = (9_511, 9_512);
    let ids = [f1, f2];
    let viewers = [9_501, 9_502, 9_503];
    let mut clients = Vec::new();
    for viewer in viewers {
        clients.push(PushClient::subscribe(&stack.ws_url, viewer, &ids, WAIT).await);
    }
    let never_seen = state(&clients[0].entries[&f1]);
    assert_eq!(never_seen, (json!("offline"), Value::Null));

    // From now on each connection's next three PostToConnection calls
    // fail. A post is sent once (only a throttle is tried again); a fan-out
    // serves a failed connection again within its invocation (twice), and
    // one that still fails fails the fan-out, which the local stack runs
    // again, as Lambda runs a failed asynchronous event.
    let plans = [
        [Fault::Refuse, Fault::Refuse, Fault::Refuse],
        [Fault::Drop, Fault::Drop, Fault::Drop],
        [Fault::Refuse, Fault::Drop, Fault::Refuse],
    ];
    for (client, plan) in clients.iter().zip(&plans) {
        proxy.plan(&client.connection, plan);
    }

    // Three changes, each fed to its own fan-out, while the posts fail.
    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", f1, t0), presence("session_connected", f2, t0 + 10)]).await;
    hide(&stack, f1).await;
    aggregate(&stack, &[presence("session_disconnected", f2, t0 + 20)]).await;

    let mut expected = Vec::new();
    for (client, viewer) in clients.iter_mut().zip(viewers) {
        let bulk = bulk_read(&stack, viewer, &ids).await;
        client.read_until(WAIT, |c| c.settled() && c.view() == bulk).await;
        expected.push(bulk);
    }
    assert_eq!(proxy.unmet(), 0, "every planned fault was met: {:#?}", proxy.calls());
    let faulted = proxy.calls().iter().filter(|c| c.fault.is_some()).count();
    assert_eq!(faulted, 9);
    // Each failed post is counted once its invocation ends, whether the
    // fan-out served the connection again itself or failed for a retry.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stack.metric("StatusStream", "PostFailures") < 9.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.metric("StatusStream", "PostFailures"), 9.0, "every failed attempt is counted once");

    // Nothing later takes a client back: the retries still running find
    // nothing new, or send the same states again.
    for (client, bulk) in clients.iter_mut().zip(&expected) {
        client.read_while_any(Duration::from_secs(3)).await;
        assert_eq!(&client.view(), bulk, "{}", client.connection);
    }

    let f2_last = state(&expected[0][1]);
    for client in &clients {
        assert_in_order(client, f1, &[never_seen.clone(), (json!("online"), json!(t0)), (json!("offline"), json!(t0))]);
        assert_in_order(client, f2, &[never_seen.clone(), (json!("online"), json!(t0 + 10)), f2_last.clone()]);
        // The failed fan-out had numbered a frame that never came: the
        // client saw the gap (never a silent loss) and resumed, and no
        // number came twice.
        assert!(!client.gaps.is_empty() && client.resumes >= 1, "{}: {:?}", client.connection, client.gaps);
        assert!(client.repeats.is_empty(), "{}: {:?}", client.connection, client.repeats);
    }
    assert_eq!(expected[0][0]["status"], "offline", "the hide is a departure: {:?}", expected[0]);
    for client in clients {
        client.close().await;
    }
}

#[tokio::test]
async fn a_fan_out_killed_after_posting_to_some_watchers_loses_nothing_when_run_again() {
    let proxy = FaultyManagement::start().await;
    // The feed is taken by a recording Invoke API instead of run, so the
    // test runs the fan-out itself and can end it at the moment it wants.
    let lambda = RecordingLambda::start().await;
    let stack = InProcess::start(
        "pushkill",
        &[("STREAM_ENDPOINT", &proxy.url), ("AWS_ENDPOINT_URL_LAMBDA", &lambda.url), ("STREAM_COALESCE_MS", "0")],
    )
    .await;
    proxy.forward_to(&management_url(&stack));
    let friend = 9_611;
    let viewers = [9_601, 9_602, 9_603];
    let mut clients = Vec::new();
    for viewer in viewers {
        clients.push(PushClient::subscribe(&stack.ws_url, viewer, &[friend], WAIT).await);
    }
    let never_seen = state(&clients[0].entries[&friend]);
    // The first watcher gets its frame but no answer; the second gets its
    // frame and the answer; the third's call is held before it goes on.
    // The SDK's own retries, should an attempt time out first, are held.
    proxy.plan(&clients[0].connection, &[Fault::DeliverThenHold, Fault::Hold, Fault::Hold]);
    proxy.plan(&clients[2].connection, &[Fault::Hold, Fault::Hold, Fault::Hold]);
    let (delivered, answered, held) =
        (clients[0].connection.clone(), clients[1].connection.clone(), clients[2].connection.clone());

    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", friend, t0)]).await;
    let feed = fed(&lambda, 1).await;
    let functions = stack.functions.clone();
    let event = feed.clone();
    let run = tokio::spawn(async move { functions.invoke(Function::StatusStream, &event, now_ms()).await });
    proxy
        .until(WAIT, |calls| {
            let to = |c: &str| calls.iter().filter(move |call| call.connection == c).collect::<Vec<_>>();
            to(delivered.as_str()).iter().any(|c| c.forwarded)
                && to(answered.as_str()).iter().any(|c| c.answered == Some(200))
                && !to(held.as_str()).is_empty()
        })
        .await;
    // ... and once the answered connection's frame is recorded as sent
    // (DESIGN §12: `stream:sent`, `seq` first), which follows its answer.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sent_seq(&stack, &answered, friend).await != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "the answered frame was never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Killed there: two frames out, one recorded as sent, one not sent.
    run.abort();
    assert!(run.await.expect_err("ended before it finished").is_cancelled());
    proxy.plan(&delivered, &[]);
    proxy.plan(&held, &[]);
    let online = (json!("online"), json!(t0));
    for client in &mut clients[..2] {
        client.read_until(WAIT, |c| state(&c.entries[&friend]) == online).await;
    }
    assert_eq!(state(&clients[2].entries[&friend]), never_seen, "the third watcher has nothing yet");

    // Lambda runs a failed event again. The killed run's connection locks
    // lapse first (10 s), so the runs before that fail, as they should.
    let answer = run_until_served(&stack, &feed).await;
    assert_eq!(answer["fanout"]["frames"], 2, "the connection recorded as served gets nothing twice: {answer}");
    for client in &mut clients {
        client.read_until(WAIT, |c| state(&c.entries[&friend]) == online && c.settled()).await;
    }
    // The first watcher's second copy, under the next number.
    clients[0].read_until(WAIT, |c| c.seq >= 3).await;
    // The first watcher got the entry twice under two numbers (at least
    // once); the third found a gap where the killed run's frame was
    // numbered, and resumed.
    let twice = clients[0].history[&friend].iter().filter(|e| state(e) == online).count();
    assert_eq!(twice, 2, "{:?}", clients[0].history);
    assert_eq!((clients[0].seq, clients[0].gaps.len()), (3, 0));
    assert_eq!((clients[1].seq, clients[1].gaps.len()), (2, 0));
    assert_eq!(clients[2].gaps, vec![(2, 3)]);

    // Everything after flows as before, to every watcher.
    aggregate(&stack, &[presence("session_disconnected", friend, t0 + 1_000)]).await;
    let next = fed(&lambda, 2).await;
    run_until_served(&stack, &next).await;
    for (client, viewer) in clients.iter_mut().zip(viewers) {
        let bulk = bulk_read(&stack, viewer, &[friend]).await;
        assert_eq!(bulk[0]["status"], "offline", "{bulk:?}");
        client.read_until(WAIT, |c| c.settled() && c.view() == bulk).await;
        assert!(client.repeats.is_empty(), "{}: {:?}", client.connection, client.repeats);
        let end = state(&bulk[0]);
        assert_in_order(client, friend, &[never_seen.clone(), online.clone(), end]);
        assert_eq!(without_next(&client.entries[&friend]), bulk[0]);
    }
    for client in clients {
        client.close().await;
    }
}

#[tokio::test]
async fn a_post_delivered_whose_answer_was_lost_is_never_sent_again_under_its_number() {
    let (friend, viewer) = (9_711, 9_701);
    let (proxy, stack, mut client) = one_watcher("pushlost", viewer, friend).await;
    // The frame reaches the client, its answer never reaches the poster.
    proxy.plan(&client.connection, &[Fault::DeliverThenDrop]);

    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", friend, t0)]).await;
    let bulk = bulk_read(&stack, viewer, &[friend]).await;
    assert_eq!(bulk[0]["status"], "online", "{bulk:?}");
    client.read_until(WAIT, |c| c.settled() && c.view() == bulk && c.seq >= 3).await;
    client.read_while_any(Duration::from_secs(2)).await;
    assert_eq!(proxy.unmet(), 0, "the planned fault was met: {:#?}", proxy.calls());
    // DESIGN §12: a number is never repeated. The fan-out served the
    // connection again and sent the entry under the next number, so the client holds it
    // twice, numbered 2 and 3, with no gap and no repeat.
    assert!(client.repeats.is_empty(), "seq repeated: {:?}", client.repeats);
    assert!(client.gaps.is_empty(), "{:?}", client.gaps);
    let online = (json!("online"), json!(t0));
    let copies = client.history[&friend].iter().filter(|e| state(e) == online).count();
    assert_eq!(copies, 2, "{:?}", client.history);
    // The snapshot's call, the frame that lost its answer, then its retry.
    let calls = proxy.calls_to(&client.connection);
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[1].fault, Some(Fault::DeliverThenDrop), "{calls:#?}");
    assert!(calls[2..].iter().all(|c| c.fault.is_none() && c.answered == Some(200)), "{calls:#?}");
    assert_eq!(stack.metric("StatusStream", "PostFailures"), 1.0, "the lost answer failed one attempt");
    client.close().await;
}

#[tokio::test]
async fn a_throttled_post_is_tried_again_within_its_fan_out_and_arrives_in_order() {
    let (friend, viewer) = (9_811, 9_801);
    let (proxy, stack, mut client) = one_watcher("pushthrottle", viewer, friend).await;
    // Two throttles: one short of the poster's limit (POST_ATTEMPTS, 3).
    proxy.plan(&client.connection, &[Fault::Throttle, Fault::Throttle]);

    let t0 = now_ms();
    aggregate(&stack, &[presence("session_connected", friend, t0)]).await;
    let bulk = bulk_read(&stack, viewer, &[friend]).await;
    client.read_until(WAIT, |c| c.settled() && c.view() == bulk).await;
    client.read_while_any(Duration::from_secs(1)).await;
    assert_eq!(proxy.unmet(), 0, "both throttles were met: {:#?}", proxy.calls());
    // The calls after the snapshot's: two refused, the third through.
    let calls = proxy.calls_to(&client.connection);
    let answered: Vec<_> = calls.iter().skip(1).map(|c| c.answered).collect();
    assert_eq!(answered, [Some(429), Some(429), Some(200)], "{calls:#?}");
    // Sent within the one fan-out: the next number, nothing failed.
    assert_eq!((client.seq, client.gaps.len(), client.repeats.len()), (2, 0, 0));
    assert_eq!(stack.metric("StatusStream", "PostFailures"), 0.0);
    client.close().await;
}

/// A stack posting through a fresh faulting proxy (no coalescing), and
/// one client of `viewer` subscribed to `friend`.
async fn one_watcher(tag: &str, viewer: u64, friend: u64) -> (FaultyManagement, InProcess, PushClient) {
    let proxy = FaultyManagement::start().await;
    let stack = InProcess::start(tag, &[("STREAM_ENDPOINT", &proxy.url), ("STREAM_COALESCE_MS", "0")]).await;
    proxy.forward_to(&management_url(&stack));
    let client = PushClient::subscribe(&stack.ws_url, viewer, &[friend], WAIT).await;
    (proxy, stack, client)
}

/// The `seq` of the last entry of `user` recorded as sent on `connection`.
async fn sent_seq(stack: &InProcess, connection: &str, user: u64) -> Option<u64> {
    let key = Keys::new(stack.key_prefix.clone()).stream_sent(&ConnectionId::new(connection).expect("an id"));
    let client = redis::Client::open(redis_url()).expect("a Redis URL");
    let mut redis = client.get_multiplexed_async_connection().await.expect("Redis answers");
    let sent: Option<String> = redis::cmd("HGET").arg(&key).arg(user).query_async(&mut redis).await.expect("HGET");
    sent?.split(':').next()?.parse().ok()
}

/// The `n`th feed event the write path handed to `StatusStreamFunction`.
async fn fed(lambda: &RecordingLambda, n: usize) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let calls = lambda.invocations();
        let feeds: Vec<_> = calls.iter().filter(|c| c.function.starts_with("StatusStreamFunction")).collect();
        if let Some(call) = feeds.get(n - 1) {
            assert_eq!(call.invocation_type.as_deref(), Some("Event"));
            return call.body.to_vec();
        }
        assert!(tokio::time::Instant::now() < deadline, "feed {n} never came: {calls:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the feed `event` as Lambda retries an asynchronous invocation,
/// until a run serves every connection; its answer.
async fn run_until_served(stack: &InProcess, event: &[u8]) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match stack.functions.invoke(Function::StatusStream, event, now_ms()).await {
            Ok(answer) => return answer,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "never served: {}", error.message());
            }
        }
    }
}
