//! End to end, as a person runs the service locally: the real
//! `online-status-local` binary ([`status_tests::process::LocalStack`]),
//! driven only through its two endpoints (the HTTP API and the Lambda
//! Invoke API), against the real Redis, MariaDB and moto. Each run gets
//! its own database, key prefix, tables, bus and event queue, removed when
//! it ends, pass or fail.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use status_shared::app::now_ms;
use status_shared::domain::Millis;
use status_tests::aws::sdk_config;
use status_tests::msk::{msk_event, Record};
use status_tests::process::{
    call, eventually, local_stack_binary, sample_event, LocalStack, IDLE_AFTER_MS, NEVER_SEEN,
};
use status_tests::redis_url;
use tokio::process::Command;

const ALICE: u64 = 4101;
const BOB: u64 = 4102;
const CAROL: u64 = 4103;

/// An MSK event with one record per `(user, value)`, keyed by user as
/// producers key, stamped now, as JSON for the Invoke API.
fn kafka_batch(records: &[(u64, String)]) -> Value {
    let now = now_ms();
    let event = msk_event(records.iter().map(|(user, value)| Record::keyed(*user, value.clone()).at(now)));
    serde_json::to_value(event).expect("an MSK event serializes")
}

/// [`status_tests::stack::presence`] as a `(user, value)` record.
fn presence(kind: &str, user: u64, session: &str, ts_ms: Millis) -> (u64, String) {
    (user, status_tests::stack::presence(kind, user, session, ts_ms).to_string())
}

#[tokio::test]
async fn the_local_stack_serves_presence_reads_invocations_and_the_idle_timer_end_to_end() {
    let stack = LocalStack::start().await;

    // Presence in through the Invoke API, as MSK would deliver it.
    let now = now_ms();
    let batch = kafka_batch(&[
        presence("session_connected", ALICE, "alice-phone", now),
        presence("activity", ALICE, "alice-phone", now),
        presence("session_connected", BOB, "bob-web", now),
        presence("session_heartbeat", BOB, "bob-web", now),
    ]);
    let reply = stack.invoke("AggregatorFunction", &batch).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}\n{}", stack.logs());
    let summary = reply.json();
    assert_eq!((summary["applied"].as_u64(), summary["malformed"].as_u64()), (Some(4), Some(0)), "{summary}");

    // Reads over the HTTP API: bulk as a service, single as an end user.
    let expected = vec![(ALICE, "online".to_owned()), (BOB, "online".to_owned()), (NEVER_SEEN, "offline".to_owned())];
    assert_eq!(stack.bulk(&[ALICE, BOB, NEVER_SEEN]).await, expected);
    let bob = BOB.to_string();
    let single = stack.http("GET", &format!("/v1/status/{ALICE}"), &[("X-Local-User", &bob)], Vec::new()).await;
    assert_eq!(single.status, 200, "{single:?}");
    assert_eq!(single.json()["status"], "online");
    assert_eq!(single.json()["last_active_ms"], now);

    // Path parameters arrive percent-decoded, as API Gateway hands them
    // (DESIGN §9): `%34%32`... here ALICE's id, each digit escaped.
    let escaped: String = ALICE.to_string().bytes().map(|b| format!("%{b:02X}")).collect();
    let single = stack.http("GET", &format!("/v1/status/{escaped}"), &[], Vec::new()).await;
    assert_eq!((single.status, single.json()["user_id"].as_u64()), (200, Some(ALICE)), "{single:?}");

    // An expiry no store can hold is refused, and the process lives on
    // (it used to abort the whole stack).
    let far = json!({"state": "dnd", "expires_at_ms": 3_000_000_000_000_000i64}).to_string().into_bytes();
    let refused = stack.http("PUT", &format!("/v1/users/{ALICE}/manual-status"), &[], far).await;
    assert_eq!(refused.status, 400, "{refused:?}\n{}", stack.logs());
    assert_eq!(refused.json()["error"]["code"], "invalid_manual_status");
    assert_eq!(stack.bulk(&[ALICE]).await, vec![(ALICE, "online".to_owned())], "still serving");

    // A body over the handler's 64 KiB reaches the handler, which refuses it.
    let padded = format!(r#"{{"user_ids": [1], "pad": "{}"}}"#, "x".repeat(70 * 1024)).into_bytes();
    let too_big = stack.http("POST", "/v1/status/bulk", &[], padded).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["error"]["code"], "payload_too_large");

    // StatusApiFunction through the Invoke API, with the sample IAM event.
    let mut event = sample_event("status-api/bulk-iam.json");
    event["body"] = json!(json!({ "user_ids": [ALICE, NEVER_SEEN] }).to_string());
    let reply = stack.invoke("StatusApiFunction", &event).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}");
    let proxy = reply.json();
    assert_eq!(proxy["statusCode"], 200, "{proxy}");
    let body: Value = serde_json::from_str(proxy["body"].as_str().expect("a body string")).expect("a JSON body");
    assert_eq!(body["statuses"][0]["status"], "online");
    assert_eq!(body["statuses"][1]["status"], "offline");

    // The scanner through the Invoke API, with the sample one-shard input.
    let reply = stack.invoke("IdleScannerFunction", &sample_event("idle-scanner/shard.json")).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}");
    assert_eq!(reply.json()["shards"][0]["shard"], 3);

    // What the calls so far printed as metrics, totalled at /local/metrics.
    let totals = call("GET", &format!("{}/local/metrics.json", stack.invoke), &[], Vec::new()).await.json();
    let total = |function: &str, metric: &str, dimensions: &str| {
        totals.as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["function"] == function && r["metric"] == metric && r["dimensions"] == dimensions)
                .and_then(|r| r["sum"].as_f64())
        })
    };
    assert_eq!(total("Aggregator", "RecordsApplied", ""), Some(4.0), "{totals}");
    assert_eq!(
        total("StatusApi", "BulkSize", ""),
        Some(6.0),
        "bulk reads of 3, 1 and 2 ids (the 413 read none): {totals}"
    );
    assert_eq!(total("StatusApi", "Responses", "StatusCode=413"), Some(1.0), "{totals}");
    assert!(total("IdleScanner", "ScanDuration", "Shard=3").is_some(), "{totals}");
    let table = call("GET", &format!("{}/local/metrics", stack.invoke), &[], Vec::new()).await;
    assert!(String::from_utf8_lossy(&table.body)
        .lines()
        .any(|l| l.starts_with("Aggregator") && l.contains("RecordsApplied")));

    // Malformed records are counted and set aside; the good one is applied.
    let mut mixed = vec![presence("activity", CAROL, "carol-tab", now_ms())];
    mixed.push((CAROL, r#"{"type": "activity", "user_id": 4103,"#.to_owned()));
    mixed.push(presence("session_connected", 0, "nobody", now_ms()));
    let reply = stack.invoke("AggregatorFunction", &kafka_batch(&mixed)).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}");
    let summary = reply.json();
    assert_eq!((summary["applied"].as_u64(), summary["malformed"].as_u64()), (Some(1), Some(2)), "{summary}");

    // Calls Lambda itself refuses, and events a function cannot read.
    let reply = stack.invoke("NoSuchFunction", &json!({})).await;
    assert_eq!((reply.status, reply.header("x-amzn-errortype")), (404, Some("ResourceNotFoundException")));
    let reply = stack.invoke("AggregatorFunction", &json!({ "records": "not a map" })).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, Some("Unhandled")));
    assert_eq!(reply.json()["errorType"], "InvalidEvent");
    let reply = stack.invoke("IdleScannerFunction", &json!({ "shard": 9999 })).await;
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{reply:?}");

    // After IDLE_AFTER, reads say idle (they derive it themselves) ...
    let idle_in = Duration::from_millis(IDLE_AFTER_MS as u64) + Duration::from_secs(20);
    eventually(idle_in, "reads show alice idle", || async {
        stack.bulk(&[ALICE]).await == vec![(ALICE, "idle".to_owned())]
    })
    .await;
    // ... and the stored hash says idle too, which only a scan writes:
    // nothing else touched alice since the batch, so the timer ran.
    let redis = redis::Client::open(redis_url())
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let key = format!("{}status:{{{ALICE}}}", stack.resources.key_prefix);
    eventually(Duration::from_secs(15), "the timer scan stores alice idle", || {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move {
            let stored: Option<String> =
                redis::cmd("HGET").arg(&key).arg("status").query_async(&mut redis).await.unwrap_or(None);
            stored.as_deref() == Some("idle")
        }
    })
    .await;

    // Every transition went out as `status_changed`, the scanner's too; the
    // stack routed its bus to LOCAL_EVENTS_QUEUE.
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&stack.resources.queue)
        .send()
        .await
        .expect("the stack made the events queue")
        .queue_url()
        .expect("a queue url")
        .to_owned();
    let mut seen: Vec<(u64, String, String)> = Vec::new();
    let went_idle = (ALICE, "online".to_owned(), "idle".to_owned());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(&went_idle) {
        assert!(Instant::now() < deadline, "no online -> idle event for alice within 20 s; saw {seen:?}");
        // Long polling: answers as soon as a message is there, or after 1 s.
        let received = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(1);
        for message in received.send().await.expect("receive from the events queue").messages() {
            let event: Value = serde_json::from_str(message.body().unwrap_or("{}")).unwrap_or(Value::Null);
            let detail = &event["detail"];
            seen.push((
                detail["user_id"].as_u64().unwrap_or(0),
                detail["from"].as_str().unwrap_or("").to_owned(),
                detail["to"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    assert!(seen.contains(&(ALICE, "offline".to_owned(), "online".to_owned())), "{seen:?}");

    stack.stop().await;
}

#[tokio::test]
async fn the_local_stack_refuses_to_start_without_an_emulator_and_says_how_to_fix_it() {
    let output = Command::new(local_stack_binary().await)
        .env_clear()
        .env("LOCAL_API_PORT", "0")
        .env("LOCAL_INVOKE_PORT", "0")
        .env("LOCAL_WS_PORT", "0")
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("it exits at once")
        .expect("online-status-local runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AWS_ENDPOINT_URL") && stderr.contains("scripts/up.sh"), "{stderr}");
}
