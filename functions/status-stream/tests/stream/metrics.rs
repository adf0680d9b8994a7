//! What a subscribe adds to the stream function's metrics (DESIGN §12,
//! the README's metrics table): the ids it added and the ids its
//! connection holds, and for a resume the change-log entries it read, the
//! cursor's age and whether it was reset; printed as EMF lines through the
//! shared telemetry, captured from the line sink.

use serde_json::{json, Value};
use status_shared::domain::stream::Cursor;
use status_shared::domain::EventKind;
use status_shared::telemetry::names::{
    RESUME_CURSOR_AGE, RESUME_LOG_ENTRIES, RESUME_RESETS, SUBSCRIBED_IDS, SUBSCRIPTIONS_ADDED, SUBSCRIPTIONS_HELD,
};
use status_shared::telemetry::{functions, Captured, EmfDocument, Metrics, FUNCTION};

use crate::support::*;

/// The one function-wide line printed since the last call, then forgotten.
fn line(captured: &Captured) -> EmfDocument {
    let docs: Vec<EmfDocument> = captured
        .documents()
        .into_iter()
        .filter(|d| d.dimensions.len() == 1 && d.dimension(FUNCTION) == Some(functions::STATUS_STREAM))
        .collect();
    assert_eq!(docs.len(), 1, "one function-wide line per call: {:#?}", captured.lines());
    captured.clear();
    docs.into_iter().next().unwrap_or_default()
}

fn values(doc: &EmfDocument, name: &str) -> Option<Vec<f64>> {
    doc.values.get(name).cloned()
}

/// A subscribe through the measured entry; the frames it got.
async fn subscribe(
    env: &Env,
    metrics: &Metrics,
    connection: &str,
    ids: &[u64],
    since: Option<&str>,
    now: i64,
) -> Vec<Value> {
    let mut body = json!({"action": "subscribe", "user_ids": ids});
    if let Some(cursor) = since {
        body["since"] = json!(cursor);
    }
    let event = json!({"requestContext": {"routeKey": "subscribe", "eventType": "MESSAGE",
        "connectionId": connection}, "body": body.to_string()});
    let answer = env.stream.invoke_measured(&event, now, None, metrics).await.expect("the subscribe is served");
    assert_eq!(answer, json!({"statusCode": 200}), "the route's answer is unchanged");
    env.poster.take(connection)
}

#[tokio::test]
async fn a_subscribe_prints_ids_added_and_held_and_a_resume_its_log_entries_cursor_age_and_reset() {
    let env = Env::with(&[("STREAM_MAX_IDS", "4")]).await;
    let (metrics, captured) = Metrics::capture(functions::STATUS_STREAM);
    env.connect("c1", Some(7), NOW).await;

    subscribe(&env, &metrics, "c1", &[1, 2, 3], None, NOW).await;
    let doc = line(&captured);
    assert_eq!(values(&doc, SUBSCRIBED_IDS), Some(vec![3.0]));
    assert_eq!(values(&doc, SUBSCRIPTIONS_ADDED), Some(vec![3.0]));
    assert_eq!(values(&doc, SUBSCRIPTIONS_HELD), Some(vec![3.0]));
    assert_eq!(values(&doc, RESUME_LOG_ENTRIES), None, "no cursor, no resume");
    assert_eq!(values(&doc, RESUME_CURSOR_AGE), None);

    // One id held already and one new: adds 1, holds 4.
    subscribe(&env, &metrics, "c1", &[3, 4], None, NOW + 1).await;
    let doc = line(&captured);
    assert_eq!(values(&doc, SUBSCRIPTIONS_ADDED), Some(vec![1.0]));
    assert_eq!(values(&doc, SUBSCRIPTIONS_HELD), Some(vec![4.0]));

    // Past STREAM_MAX_IDS: refused, so nothing added or held is printed.
    let refused = subscribe(&env, &metrics, "c1", &[5], None, NOW + 2).await;
    assert_eq!(refused[0]["error"]["code"], json!("too_many_ids"));
    let doc = line(&captured);
    assert_eq!(values(&doc, SUBSCRIBED_IDS), Some(vec![1.0]), "what it asked for");
    assert_eq!(values(&doc, SUBSCRIPTIONS_ADDED), None);
    assert_eq!(values(&doc, SUBSCRIPTIONS_HELD), None);

    // A change, the connection drops, and a new one resumes from the last
    // cursor: c1's sent state holds an entry for each of the four ids.
    env.event(EventKind::Connected, 1, "a", None, NOW + 10).await;
    env.feed(&[1], NOW + 10).await;
    let last = cursor(&env.poster.take("c1"));
    let issued = Cursor::decode(&last).expect("a cursor of this service").issued_ms;
    env.disconnect("c1", NOW + 20).await;
    env.connect("c2", Some(7), NOW + 30).await;
    let delta = subscribe(&env, &metrics, "c2", &[1, 2, 3, 4], Some(&last), NOW + 1_010).await;
    assert_eq!(delta[0]["type"], json!("delta"));
    let doc = line(&captured);
    assert_eq!(values(&doc, RESUME_LOG_ENTRIES), Some(vec![4.0]));
    assert_eq!(values(&doc, RESUME_CURSOR_AGE), Some(vec![(NOW + 1_010 - issued) as f64]));
    assert_eq!(values(&doc, RESUME_RESETS), None, "a counter at zero is not printed");
    assert_eq!(values(&doc, SUBSCRIPTIONS_ADDED), Some(vec![4.0]));

    // A cursor that is not one: a reset snapshot, no log read, no age.
    let reset = subscribe(&env, &metrics, "c2", &[1], Some("not-a-cursor"), NOW + 1_020).await;
    assert_eq!((reset[0]["type"].as_str(), reset[0]["reset"].as_bool()), (Some("snapshot"), Some(true)));
    let doc = line(&captured);
    assert_eq!(values(&doc, RESUME_RESETS), Some(vec![1.0]));
    assert_eq!(values(&doc, RESUME_LOG_ENTRIES), Some(vec![0.0]));
    assert_eq!(values(&doc, RESUME_CURSOR_AGE), None);
    assert_eq!(values(&doc, SUBSCRIPTIONS_ADDED), Some(vec![0.0]));
    assert_eq!(values(&doc, SUBSCRIPTIONS_HELD), Some(vec![4.0]));

    // A well-formed cursor past its retention (or a forged `t` of 0): a
    // reset, and no age beyond the retention is sampled.
    let forged = Cursor { issued_ms: 0, ..Cursor::decode(&last).unwrap() }.encode();
    let reset = subscribe(&env, &metrics, "c2", &[1], Some(&forged), NOW + 1_030).await;
    assert_eq!(reset[0]["reset"], json!(true));
    let doc = line(&captured);
    assert_eq!(values(&doc, RESUME_RESETS), Some(vec![1.0]));
    assert_eq!(values(&doc, RESUME_CURSOR_AGE), None, "a 60-year-old cursor is not an age");
}
