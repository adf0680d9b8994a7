//! The sample events in `events/`, loaded as the Lambda runtime would hand
//! them to each function, through the real handlers and servers.

use aws_lambda_events::event::kafka::KafkaEvent;
use serde_json::Value;
use status_shared::domain::{Millis, Status, UserId};
use status_tests::stack::Stack;

/// The newest `ts_ms` in the samples is 1764270091000; "now" is just after.
const NOW: Millis = 1_764_270_100_000;

fn sample(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("events").join(path);
    std::fs::read_to_string(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()))
}

#[tokio::test]
async fn the_sample_batch_applies_every_record() {
    let stack = Stack::new().await;
    let event: KafkaEvent = serde_json::from_str(&sample("aggregator/batch.json")).unwrap();
    let summary = stack.aggregator().handle(&event, NOW).await.unwrap();
    assert_eq!((summary.records, summary.malformed), (11, 0));
    assert_eq!(summary.applied, 11);
    assert!(summary.users >= 3, "several users: {summary:?}");
}

#[tokio::test]
async fn the_mixed_sample_dead_letters_the_malformed_records_only() {
    let stack = Stack::new().await;
    let event: KafkaEvent = serde_json::from_str(&sample("aggregator/mixed-malformed.json")).unwrap();
    let summary = stack.aggregator().handle(&event, NOW).await.unwrap();
    assert_eq!(summary.records, 7);
    assert!(summary.malformed >= 4, "{summary:?}");
    assert!(summary.applied >= 1, "{summary:?}");
    assert_eq!(summary.applied + summary.malformed, summary.records);
    assert_eq!(stack.aws.scan(&stack.aws.dead_letter_table).await.len(), summary.malformed);
}

#[tokio::test]
async fn every_api_sample_is_answered_as_documented() {
    let stack = Stack::new().await;
    let batch: KafkaEvent = serde_json::from_str(&sample("aggregator/batch.json")).unwrap();
    stack.aggregator().handle(&batch, NOW).await.unwrap();
    let api = stack.api();
    // Both JWT samples are user 42, so the second read falls inside the
    // first one's polling window.
    let expected = [
        ("bulk-iam", 200),
        ("bulk-jwt", 200),
        ("single-jwt", 429),
        ("public", 200),
        ("visibility-jwt", 200),
        ("visibility-iam", 200),
        ("manual-status-jwt", 200),
    ];
    for (name, status) in expected {
        let raw = sample(&format!("status-api/{name}.json"));
        let event: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let answer = api.invoke(&event, NOW, None, &quiet()).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        let json = answer.clone().into_apigw_json();
        assert_eq!(json["statusCode"], status);
        if name.starts_with("bulk") {
            let statuses = answer.body["statuses"].as_array().unwrap();
            assert!(!statuses.is_empty());
            assert!(statuses.iter().all(|s| s["status"].is_string() && s.get("last_active_ms").is_some()));
        }
        if name == "public" {
            assert_eq!(answer.header("cache-control"), Some("public, max-age=30"));
        }
    }
    // User 42 hid themself, then a service showed them again: the truth is
    // back (online: the batch's activity is recent at NOW).
    let record = stack.cached(UserId::new(42).unwrap()).await.unwrap();
    assert!(record.state.visibility.is_visible());
    let views = stack.reader.read(&[UserId::new(42).unwrap()], None, NOW).await.unwrap();
    assert_eq!(views[0].status, record.state.derive(NOW, &stack.env.rules).status);
    assert_ne!(views[0].status, Status::Offline, "user 42 has a live session in the sample batch");
    assert_eq!(views[0].manual.as_ref().map(|m| m.state.as_str()), Some("dnd"), "the manual-status sample set it");
    let raw = sample("status-api/manual-status-clear-jwt.json");
    let answer = api.invoke(&serde_json::from_str(&raw).unwrap(), NOW, None, &quiet()).await;
    assert_eq!((answer.status, &answer.body["manual"]), (200, &Value::Null), "{}", answer.body);
    assert!(stack.reader.read(&[UserId::new(42).unwrap()], None, NOW).await.unwrap()[0].manual.is_none());

    // User 42 shows themself to nobody but users 7 and 9, with a coarse
    // last seen (DESIGN §13); a service reads them back as it was stored.
    for name in ["audience-jwt", "audience-get-iam"] {
        let raw = sample(&format!("status-api/{name}.json"));
        let answer = api.invoke(&serde_json::from_str(&raw).unwrap(), NOW, None, &quiet()).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        let stored = serde_json::json!({"default": "nobody", "except": [7, 9], "last_seen": "coarse"});
        assert_eq!(answer.body["audience"], stored, "{name}");
    }
    let left_out = &stack.reader.read(&[UserId::new(42).unwrap()], None, NOW).await.unwrap()[0];
    assert_eq!((left_out.status, left_out.last_active_ms), (Status::Offline, None));
    assert_eq!(left_out.last_seen.map(|b| b.as_str()), Some("recently"));
    let friend = &stack.reader.read(&[UserId::new(42).unwrap()], Some(UserId::new(7).unwrap()), NOW).await.unwrap()[0];
    assert_ne!(friend.status, Status::Offline, "a listed friend sees the truth");
}

/// Metrics kept in memory and never read: these tests look at answers.
fn quiet() -> status_shared::telemetry::Metrics {
    status_shared::telemetry::Metrics::capture(status_shared::telemetry::functions::STATUS_API).0
}
