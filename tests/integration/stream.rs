//! The stream function's registry on a real three-primary Redis Cluster
//! (DESIGN §12): every script touches one connection's slot, and the
//! watch sets are written through routed batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use status_shared::domain::stream::ConnectionId;
use status_shared::ports::{FramePoster, PostError, Posted};
use status_stream::handler::Stream;
use status_tests::cluster::LocalCluster;
use status_tests::stack::{connect, wall_clock_ms, Stack, StackOptions};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<HashMap<String, Vec<Value>>>>);

impl FramePoster for Recorder {
    async fn post(&self, connection: &ConnectionId, frame: &str) -> Result<Posted, PostError> {
        let value = serde_json::from_str(frame).map_err(|e| PostError::caused_by("not JSON", e))?;
        self.0.lock().unwrap().entry(connection.as_str().to_owned()).or_default().push(value);
        Ok(Posted::Sent)
    }

    /// Every connection of this test stays registered: a close is a bug.
    async fn close(&self, connection: &ConnectionId) -> Result<(), PostError> {
        panic!("the registry forgot connection {connection}")
    }
}

impl Recorder {
    fn take(&self, connection: &str) -> Vec<Value> {
        self.0.lock().unwrap().remove(connection).unwrap_or_default()
    }
}

fn ws(route: &str, connection: &str, body: Option<Value>) -> Value {
    let mut event = json!({"requestContext": {"routeKey": route, "connectionId": connection}});
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
    }
    event
}

#[tokio::test]
async fn subscribe_fan_out_resume_and_disconnect_work_on_a_cluster() {
    let cluster = LocalCluster::start(3).await;
    let stack = Stack::with(StackOptions { redis_url: Some(cluster.url()), ..Default::default() }).await;
    let recorder = Recorder::default();
    let stream = Stream::with_poster(&stack.app, recorder.clone());
    let now = wall_clock_ms();
    let ok = json!({"statusCode": 200});
    let ids: Vec<u64> = (1..=300).collect();
    assert_eq!(stream.invoke(&ws("$connect", "c1", None), now).await, ok);
    let subscribe = json!({"action": "subscribe", "user_ids": ids});
    assert_eq!(stream.invoke(&ws("subscribe", "c1", Some(subscribe)), now).await, ok);
    let snapshot = recorder.take("c1");
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0]["statuses"].as_array().unwrap().len(), 300);
    let cursor = snapshot[0]["cursor"].as_str().unwrap().to_owned();

    // Users on every node change; one frame carries them all.
    let events: Vec<_> = (1..=300u64).step_by(7).map(|id| connect(id, now + 1)).collect();
    stack.committer.aggregate(&events, now + 1).await.unwrap();
    let feed: Vec<Value> =
        (1..=300u64).step_by(7).map(|id| json!({"user_id": id, "version": 1, "at_ms": now + 1})).collect();
    let answer = stream.invoke(&json!({"feed": feed}), now + 1).await;
    assert_eq!(answer["fanout"]["frames"], json!(1), "{answer}");
    let live = recorder.take("c1");
    assert_eq!(live[0]["seq"], json!(2));
    assert_eq!(live[0]["statuses"].as_array().unwrap().len(), events.len());

    // Away, then back from the snapshot's cursor: the changes come again.
    assert_eq!(stream.invoke(&ws("$disconnect", "c1", None), now + 2).await, ok);
    assert_eq!(stream.invoke(&ws("$connect", "c2", None), now + 3).await, ok);
    let resume = json!({"action": "subscribe", "user_ids": ids, "since": cursor});
    assert_eq!(stream.invoke(&ws("subscribe", "c2", Some(resume)), now + 3).await, ok);
    let delta = recorder.take("c2");
    assert_eq!(delta[0]["type"], json!("delta"));
    assert_eq!(delta[0]["statuses"].as_array().unwrap().len(), events.len());
    // c1 is gone from every watch set: only c2 is served.
    let again = stream.invoke(&json!({"feed": [{"user_id": 1, "version": 1, "at_ms": now + 4}]}), now + 4).await;
    assert_eq!(again["fanout"]["connections"], json!(1));
}
