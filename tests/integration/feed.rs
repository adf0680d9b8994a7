//! The push feed (DESIGN §6 "Push feed", §12) against the real Redis,
//! MariaDB and moto: a commit through the App hands the users it wrote to
//! the stream function in asynchronous invocations of the real
//! `aws-sdk-lambda` client, cut under the payload limit; a feed that fails
//! for a while is carried by the repair buffer to the next scan. Then the
//! local stack's own Invoke API, driven by the same client: `Event` runs in
//! the background (202), `DryRun` runs nothing (204), an unknown function
//! is a 404, and the stack's feed reaches that API without ever failing a
//! write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::{json, Value};
use status_shared::adapters::lambda::FEED_PAYLOAD_LIMIT;
use status_shared::app::now_ms;
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, UserId};
use status_shared::ports::RepairBuffer;
use status_tests::aws::sdk_config_for;
use status_tests::lambda::RecordingLambda;
use status_tests::local::InProcess;
use status_tests::msk::kafka_batch;
use status_tests::stack::{Stack, StackOptions};

const STREAM: &str = "StatusStreamFunction";

fn user(id: u64) -> UserId {
    UserId::new(id).unwrap()
}

fn connected(id: u64, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent {
        kind: EventKind::Connected,
        user_id: user(id),
        session_id: SessionId::new("s1").unwrap(),
        device: None,
        ts_ms,
    }
}

async fn stack_feeding(lambda: &RecordingLambda) -> Stack {
    Stack::with(StackOptions { feed: Some(lambda.feed(STREAM).await), ..Default::default() }).await
}

#[tokio::test]
async fn a_commit_through_the_app_feeds_the_users_it_wrote_in_one_event_invocation() {
    let lambda = RecordingLambda::start().await;
    let stack = stack_feeding(&lambda).await;
    let now = now_ms();
    let out = stack.committer.aggregate(&[connected(7101, now), connected(7102, now)], now).await.unwrap();
    assert_eq!((out.fed, out.feed_failed), (2, false));

    let calls = lambda.invocations();
    assert_eq!(calls.len(), 1, "one invocation for the whole batch: {calls:?}");
    assert_eq!(calls[0].function, STREAM);
    assert_eq!(calls[0].invocation_type.as_deref(), Some("Event"), "asynchronous");
    let fed = calls[0].feed().feed;
    for change in &fed {
        let durable = stack.durable(change.user_id).await.expect("stored");
        assert_eq!(change.version, durable.version, "the version the commit wrote");
        assert_eq!(change.at_ms, durable.written_ms, "at the write's time");
    }
    let users: BTreeSet<u64> = fed.iter().map(|c| c.user_id.get()).collect();
    assert_eq!(users, BTreeSet::from([7101, 7102]));

    // A replay changes nothing, so nothing is fed; a change of one user
    // feeds that user alone.
    stack.committer.aggregate(&[connected(7101, now), connected(7102, now)], now + 1).await.unwrap();
    assert_eq!(lambda.invocations().len(), 1, "nothing changed, nothing fed");
    stack.committer.set_visibility(user(7102), false, now + 2).await.unwrap();
    assert_eq!(lambda.fed().last(), Some(&(7102, 2)));
    assert_eq!(lambda.invocations().len(), 2);
}

#[tokio::test]
async fn a_large_batch_is_cut_into_invocations_under_the_payload_limit() {
    let lambda = RecordingLambda::start().await;
    let stack = stack_feeding(&lambda).await;
    let now = now_ms();
    let events: Vec<PresenceEvent> = (1..=4_500).map(|id| connected(720_000 + id, now)).collect();
    let out = stack.committer.aggregate(&events, now).await.unwrap();
    assert_eq!(out.fed, 4_500);
    let calls = lambda.invocations();
    assert_eq!(calls.len(), 3, "2,000 changes an invocation at most");
    for call in &calls {
        assert!(call.body.len() < FEED_PAYLOAD_LIMIT, "{} bytes", call.body.len());
        assert!(call.feed().feed.len() <= 2_000);
    }
    let users: BTreeSet<u64> = lambda.fed().iter().map(|(u, _)| *u).collect();
    assert_eq!(users, (720_001..=724_500).collect::<BTreeSet<u64>>(), "every user once");
    assert_eq!(lambda.fed().len(), 4_500);
}

#[tokio::test]
async fn a_feed_refused_for_a_while_waits_in_the_repair_buffer_and_the_next_scan_feeds_it() {
    let lambda = RecordingLambda::start().await;
    let stack = stack_feeding(&lambda).await;
    let (id, now) = (7301, now_ms());
    let shard = user(id).shard(stack.env.shards);
    lambda.refuse(true);
    let out = stack.committer.aggregate(&[connected(id, now)], now).await.expect("the commit stands");
    assert!(out.feed_failed);
    assert_eq!(stack.durable(user(id)).await.map(|r| r.version), Some(1), "the change is durable");
    let pending = stack.app.repair.pending(shard).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.user).collect::<Vec<_>>(), vec![user(id)], "kept in DynamoDB");

    // Still refused: the scan keeps it.
    stack.committer.scan_shard(shard, now + 1).await.unwrap();
    assert_eq!(stack.app.repair.pending(shard).await.unwrap().len(), 1);

    lambda.refuse(false);
    let scan = stack.committer.scan_shard(shard, now + 2).await.unwrap();
    assert_eq!((scan.repaired, scan.fed, scan.feed_failed), (1, 1, false));
    assert_eq!(lambda.fed(), vec![(id, 1)], "fed from SQL by the repair");
    assert!(stack.app.repair.pending(shard).await.unwrap().is_empty(), "cleared once fed");
}

fn connected_json(id: u64) -> Value {
    json!({"type": "session_connected", "user_id": id, "session_id": "s1", "ts_ms": now_ms()})
}

async fn sql_status(local: &InProcess, id: u64) -> Option<String> {
    let pool = sqlx::MySqlPool::connect(&local.database_url).await.expect("the stack's database");
    let status = sqlx::query_scalar("SELECT status FROM user_status WHERE user_id = ?")
        .bind(id as i64)
        .fetch_optional(&pool)
        .await
        .expect("sql answers");
    pool.close().await;
    status
}

#[tokio::test]
async fn the_local_invoke_api_runs_event_invocations_in_the_background_and_the_feed_reaches_it() {
    let local = InProcess::start("feed", &[("IDLE_AFTER_MS", "3000")]).await;
    let client = aws_sdk_lambda::Client::new(&sdk_config_for(&local.invoke_url).await);
    // Shard 0 of the 16 default shards.
    let id = 16 * 4_567;

    // A synchronous batch writes the user; the write's feed goes to this
    // stack's own Invoke API, as an Event invocation of
    // StatusStreamFunction.
    let batch = client
        .invoke()
        .function_name("AggregatorFunction")
        .payload(Blob::new(serde_json::to_string(&kafka_batch(&[connected_json(id)])).expect("JSON")))
        .send()
        .await
        .expect("the Invoke API answers");
    assert_eq!(batch.status_code(), 200);
    assert!(batch.function_error().is_none(), "{:?}", batch.payload());
    let summary: Value = serde_json::from_slice(batch.payload().map(|p| p.as_ref()).unwrap_or_default()).unwrap();
    assert_eq!((summary["written"].as_u64(), summary["feed_failed"].as_bool()), (Some(1), Some(false)), "{summary}");
    assert_eq!(local.metric("Aggregator", "ChangesFed"), 1.0);
    assert_eq!(local.metric("Aggregator", "FeedFailures"), 0.0);
    assert_eq!(sql_status(&local, id).await.as_deref(), Some("online"));

    // Once idle is due, an Event invocation of the scanner is answered at
    // once and its effect shows.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let event = client
        .invoke()
        .function_name("IdleScannerFunction")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(r#"{"shard": 0}"#))
        .send()
        .await
        .expect("queued");
    assert_eq!(event.status_code(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_status(&local, id).await.as_deref() != Some("idle") {
        assert!(Instant::now() < deadline, "the scanner never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its metrics are written when the invocation ends, after the write.
    while local.metric("IdleScanner", "ChangesFed") < 1.0 {
        assert!(Instant::now() < deadline, "the scanner's write was never fed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(local.metric("IdleScanner", "ChangesFed"), 1.0, "the scanner's write was fed, once");
    assert_eq!(local.metric("IdleScanner", "FeedFailures"), 0.0);

    // DryRun runs nothing.
    let dry = client
        .invoke()
        .function_name("IdleScannerFunction")
        .invocation_type(InvocationType::DryRun)
        .payload(Blob::new(r#"{"shard": 0}"#))
        .send()
        .await
        .expect("checked");
    assert_eq!(dry.status_code(), 204);

    // An unknown function is the SDK's ResourceNotFoundException, Event or not.
    let missing = client
        .invoke()
        .function_name("NoSuchFunction")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(r#"{"feed": []}"#))
        .send()
        .await
        .expect_err("no such function here");
    assert_eq!(missing.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert!(missing.into_service_error().is_resource_not_found_exception());
}
