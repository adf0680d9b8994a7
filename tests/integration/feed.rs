//! The push feed (DESIGN §6 "Push feed", §12) against the real Redis,
//! MariaDB and moto: a commit through the App hands the users it wrote to
//! the stream function in asynchronous invocations of the real
//! `aws-sdk-lambda` client, cut under the payload limit; a feed that fails
//! for a while is carried by the repair buffer to the next scan. Then the
//! local stack's own Invoke API, driven by the same client: `Event` runs in
//! the background (202), `DryRun` runs nothing (204), an unknown function
//! is a 404, and the stack's feed reaches that API without ever failing a
//! write.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use base64::Engine;
use local_stack::settings::Settings;
use local_stack::Stack as LocalStack;
use serde_json::{json, Value};
use status_shared::adapters::lambda::FEED_PAYLOAD_LIMIT;
use status_shared::app::now_ms;
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, UserId};
use status_shared::ports::RepairBuffer;
use status_tests::aws::{endpoint_url, sdk_config, sdk_config_for, AwsTables};
use status_tests::lambda::RecordingLambda;
use status_tests::stack::{Stack, StackOptions};
use status_tests::{clean_up_in_drop, database_server_url, forget_database_and_keys, redis_url, unique_tag};

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

/// The local stack in this process, on free ports, with its own database,
/// keys, tables and bus (removed when dropped), no Kafka and no timer.
struct InProcess {
    invoke_url: String,
    stack_stop: Option<tokio::sync::oneshot::Sender<()>>,
    functions: std::sync::Arc<local_stack::functions::Functions>,
    database_url: String,
    _tables: AwsTables,
    key_prefix: String,
    bus: String,
}

impl InProcess {
    async fn start() -> Self {
        let tables = AwsTables::new().await;
        let tag = unique_tag();
        let database_url = format!("{}/status_feed_{tag}", database_server_url());
        let (key_prefix, bus) = (format!("feed{tag}:"), format!("status-feed-events-{tag}"));
        let env: HashMap<&str, String> = HashMap::from([
            ("AWS_ENDPOINT_URL", endpoint_url()),
            ("REDIS_URL", redis_url()),
            ("DATABASE_URL", database_url.clone()),
            ("KEY_PREFIX", key_prefix.clone()),
            ("REPAIR_TABLE", tables.repair_table.clone()),
            ("DEAD_LETTER_TABLE", tables.dead_letter_table.clone()),
            ("STATUS_EVENT_BUS", bus.clone()),
            ("IDLE_AFTER_MS", "3000".into()),
            ("LOCAL_API_PORT", "0".into()),
            ("LOCAL_INVOKE_PORT", "0".into()),
            ("LOCAL_SCAN_INTERVAL_S", "0".into()),
            ("KAFKA_BOOTSTRAP_SERVERS", "off".into()),
        ]);
        let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("valid settings");
        let stack =
            LocalStack::start(settings).await.expect("the local stack starts (AWS_* set as scripts/test.sh sets them)");
        let invoke_url = stack.listeners.invoke_url();
        assert_eq!(stack.settings.config.stream_function.as_deref(), Some(STREAM));
        assert_eq!(stack.settings.config.lambda_endpoint.as_deref(), Some(invoke_url.as_str()), "the feed goes here");
        let functions = stack.functions.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(stack.serve(async move {
            let _ = stopped.await;
        }));
        Self { invoke_url, stack_stop: Some(stop), functions, database_url, _tables: tables, key_prefix, bus }
    }

    async fn sql_status(&self, id: u64) -> Option<String> {
        let pool = sqlx::MySqlPool::connect(&self.database_url).await.expect("the stack's database");
        let status = sqlx::query_scalar("SELECT status FROM user_status WHERE user_id = ?")
            .bind(id as i64)
            .fetch_optional(&pool)
            .await
            .expect("sql answers");
        pool.close().await;
        status
    }

    /// The sum of `metric` over the functions' metric totals.
    fn metric(&self, function: &str, metric: &str) -> f64 {
        let totals = self.functions.board.json();
        let rows = totals.as_array().cloned().unwrap_or_default();
        rows.iter()
            .filter(|r| r["function"] == function && r["metric"] == metric)
            .map(|r| r["sum"].as_f64().unwrap_or(0.0))
            .sum()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stack_stop.take() {
            let _ = stop.send(());
        }
        let (database_url, prefix, bus) = (self.database_url.clone(), self.key_prefix.clone(), self.bus.clone());
        clean_up_in_drop(async move {
            forget_database_and_keys(&database_url, &redis_url(), &prefix).await;
            let events = aws_sdk_eventbridge::Client::new(&sdk_config().await);
            let _ = events.delete_event_bus().name(&bus).send().await;
        });
    }
}

/// A one-record MSK batch, as the event source would deliver it.
fn kafka_batch(id: u64, ts_ms: Millis) -> Value {
    let value = json!({"type": "session_connected", "user_id": id, "session_id": "s1", "ts_ms": ts_ms}).to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "eventSource": "aws:kafka",
        "records": {"presence.updates-0": [{
            "topic": "presence.updates", "partition": 0, "offset": 0, "timestamp": ts_ms,
            "timestampType": "CREATE_TIME", "key": b64(&id.to_string()), "value": b64(&value), "headers": [],
        }]},
    })
}

#[tokio::test]
async fn the_local_invoke_api_runs_event_invocations_in_the_background_and_the_feed_reaches_it() {
    let local = InProcess::start().await;
    let client = aws_sdk_lambda::Client::new(&sdk_config_for(&local.invoke_url).await);
    // Shard 0 of the 16 default shards.
    let id = 16 * 4_567;

    // A synchronous batch writes the user; the write's feed goes to this
    // stack's Invoke API, where StatusStreamFunction does not exist yet:
    // logged and counted, and the batch succeeds all the same.
    let batch = client
        .invoke()
        .function_name("AggregatorFunction")
        .payload(Blob::new(kafka_batch(id, now_ms()).to_string()))
        .send()
        .await
        .expect("the Invoke API answers");
    assert_eq!(batch.status_code(), 200);
    assert!(batch.function_error().is_none(), "{:?}", batch.payload());
    let summary: Value = serde_json::from_slice(batch.payload().map(|p| p.as_ref()).unwrap_or_default()).unwrap();
    assert_eq!((summary["written"].as_u64(), summary["feed_failed"].as_bool()), (Some(1), Some(true)), "{summary}");
    assert_eq!(local.metric("Aggregator", "FeedFailures"), 1.0);
    assert_eq!(local.sql_status(id).await.as_deref(), Some("online"));

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
    while local.sql_status(id).await.as_deref() != Some("idle") {
        assert!(Instant::now() < deadline, "the scanner never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its metrics are written when the invocation ends, after the write.
    while local.metric("IdleScanner", "FeedFailures") < 1.0 {
        assert!(Instant::now() < deadline, "the scanner's write was never fed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(local.metric("IdleScanner", "FeedFailures"), 1.0, "the scanner's write was fed, once");

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
        .function_name(STREAM)
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(r#"{"feed": []}"#))
        .send()
        .await
        .expect_err("no such function here");
    assert_eq!(missing.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert!(missing.into_service_error().is_resource_not_found_exception());
}
