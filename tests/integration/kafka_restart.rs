//! The local stack's process SIGKILLed while records flow, and started
//! again (DESIGN §9 "restarts"): every record the broker acknowledged ends
//! applied, read back over the HTTP API, and nothing goes to the on-failure
//! queue. The stack runs as the `online-status-local` binary, on its own
//! database, key prefix, tables, bus, topic, group and queue.

use std::time::{Duration, Instant};

use local_stack::kafka::produce::presence_value;
use serde_json::Value;
use status_tests::aws::{endpoint_url, sdk_config, AwsTables};
use status_tests::kafka::TestTopic;
use status_tests::process::{spawn_local_stack, try_call, Spawned};
use status_tests::stack::wall_clock_ms;
use status_tests::{clean_up_in_drop, database_server_url, forget_database_and_keys, redis_url};

const WAIT: Duration = Duration::from_secs(90);

/// `GET /v1/status/{user}`'s body, or null when the stack does not answer.
async fn status(stack: &Spawned, user: u64) -> Value {
    match try_call("GET", &format!("{}/v1/status/{user}", stack.api), &[], Vec::new()).await {
        Ok(reply) => serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Everything one run makes outside the topic, removed when dropped.
struct Resources {
    database: String,
    key_prefix: String,
    bus: String,
}

impl Drop for Resources {
    fn drop(&mut self) {
        let (database, prefix, bus) = (self.database.clone(), self.key_prefix.clone(), self.bus.clone());
        clean_up_in_drop(async move {
            forget_database_and_keys(&format!("{}/{database}", database_server_url()), &redis_url(), &prefix).await;
            let events = aws_sdk_eventbridge::Client::new(&sdk_config().await);
            let _ = events.delete_event_bus().name(&bus).send().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_sigkilled_mid_stream_and_started_again_applies_every_acknowledged_record() {
    let topic = TestTopic::new(4).await;
    let tables = AwsTables::new().await;
    let tag = topic.tag.clone();
    let resources = Resources {
        database: format!("status_restart_{tag}"),
        key_prefix: format!("r{tag}:"),
        bus: format!("status-restart-events-{tag}"),
    };
    let mut env: Vec<(&'static str, String)> = vec![
        ("AWS_ENDPOINT_URL", endpoint_url()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("REDIS_URL", redis_url()),
        ("DATABASE_URL", format!("{}/{}", database_server_url(), resources.database)),
        ("KEY_PREFIX", resources.key_prefix.clone()),
        ("REPAIR_TABLE", tables.repair_table.clone()),
        ("DEAD_LETTER_TABLE", tables.dead_letter_table.clone()),
        ("STATUS_EVENT_BUS", resources.bus.clone()),
        ("LOCAL_API_PORT", "0".into()),
        ("LOCAL_INVOKE_PORT", "0".into()),
        ("LOCAL_WS_PORT", "0".into()),
        ("LOCAL_SCAN_INTERVAL_S", "0".into()),
        ("MSK_BATCHING_WINDOW_MS", "100".into()),
        ("MSK_BATCH_SIZE", "20".into()),
        ("RUST_LOG", "info".into()),
    ];
    env.extend(topic.poller_env());
    let mut stack = spawn_local_stack(env.clone()).await;

    // 40 users, 30 records each: a connect, then activity, each record
    // one ms later than the user's previous one. The first 20 users' records
    // are all produced at once, before the kill, so some are acknowledged
    // and not yet committed when it comes; the other 20 stream on, round by
    // round, through the kill and the restart.
    let (users, rounds) = (7_000u64..7_040, 30i64);
    let base = wall_clock_ms() - 60_000;
    let producer = topic.producer();
    let produce = tokio::spawn(async move {
        let record = |user: u64, round: i64| {
            let kind = if round == 0 { "session_connected" } else { "activity" };
            presence_value(kind, user, "s", Some("ios"), base + round)
        };
        for round in 0..rounds {
            for user in 7_000u64..7_020 {
                producer.send(user, &record(user, round), &[]).await.expect("the broker acknowledges");
            }
        }
        for round in 0..rounds {
            for user in 7_020u64..7_040 {
                producer.send(user, &record(user, round), &[]).await.expect("the broker acknowledges");
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    // Once records are being applied, the process dies where it stands.
    let deadline = Instant::now() + WAIT;
    while status(&stack, users.start).await["last_active_ms"].as_i64().unwrap_or(0) < base + 3 {
        assert!(Instant::now() < deadline, "nothing applied:\n{}", stack.stderr.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL: no shutdown, nothing finished or committed.
    stack.child.kill().await.expect("SIGKILL");
    let mut stack = spawn_local_stack(env).await;
    produce.await.expect("every record acknowledged");

    // Every user ends at its last record, whatever was applied twice.
    let last = base + rounds - 1;
    let deadline = Instant::now() + WAIT;
    for user in users {
        loop {
            let body = status(&stack, user).await;
            if body["last_active_ms"] == last && body["status"] != "offline" {
                break;
            }
            assert!(Instant::now() < deadline, "user {user} stopped at {body}:\n{}", stack.stderr.text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stack.child.kill().await.expect("SIGKILL");
    assert!(topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
    drop(resources);
}
