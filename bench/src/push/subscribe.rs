//! `stream_subscribe_1000` (DESIGN §10): a `subscribe` of 1,000 hot ids,
//! timed from the send until every part of the snapshot has arrived.
//!
//! One run: 1,000 users written through the aggregator in a mix of states
//! (online on one or two devices, idle, offline), so Redis holds each
//! one's read model; one end user connects. Untimed warm-up, then
//! `iterations` subscribes of all 1,000 ids on the same connection (a
//! subscribe without `since` answers every entry again, numbered on).
//! Timed in turn with each subscribe, on the same stack:
//! - `floor`: the bulk read of the same 1,000 ids through the HTTP API
//!   (`POST /v1/status/bulk` as a service): the read alone, which a
//!   snapshot adds watching, framing and recording what was sent to;
//! - `ping`: a `ping` and its `pong` on the same connection: the
//!   WebSocket gateway and one invocation, with no data.

use std::time::Duration;

use serde_json::json;
use status_shared::app::now_ms;
use tokio::time::Instant;

use super::client::Client;
use super::{PushStack, FIRST_VIEWER};
use crate::env::{BenchEnv, Servers};
use crate::http::Conn;
use crate::{workload, Error};

/// The subscribed ids.
pub const IDS: u64 = 1000;
const WARM_UP: usize = 20;

/// One run's latencies.
pub struct Run {
    pub subscribe: Vec<Duration>,
    pub floor: Vec<Duration>,
    pub ping: Vec<Duration>,
    /// Snapshot parts per subscribe (frames of at most 32,768 bytes).
    pub parts: u64,
}

pub async fn run(servers: &Servers, iterations: usize) -> Result<Run, Error> {
    let env = BenchEnv::create(servers).await?;
    let outcome = async {
        let stack = PushStack::start(servers, &env, None, &[]).await?;
        let measured = measure(&stack, iterations).await;
        stack.stop().await;
        measured
    }
    .await;
    env.remove().await;
    outcome
}

/// Writes 1,000 users in a mix of states through the aggregator.
pub async fn populate(stack: &PushStack, first: u64, count: u64) -> Result<Vec<u64>, Error> {
    let users = workload::users(first, count)?;
    let events = workload::mixed_population(&users, now_ms())?;
    for chunk in events.chunks(2_000) {
        stack.aggregate(chunk).await?;
    }
    Ok(users.iter().map(|u| u.get()).collect())
}

async fn measure(stack: &PushStack, iterations: usize) -> Result<Run, Error> {
    let ids = populate(stack, 1, IDS).await?;
    let mut client = Client::connect(&stack.ws_url, FIRST_VIEWER).await?;
    let addr = stack.api_url.trim_start_matches("http://");
    let (host, port) = addr.rsplit_once(':').ok_or("the API has no port")?;
    let mut http = Conn::new((host.to_owned(), port.parse()?));
    let body = json!({ "user_ids": ids }).to_string();

    let mut run = Run { subscribe: Vec::new(), floor: Vec::new(), ping: Vec::new(), parts: 0 };
    for i in 0..WARM_UP + iterations {
        let started = Instant::now();
        client.subscribe(&ids, None).await?;
        let frames = client.answer("snapshot").await?;
        let subscribe = started.elapsed();
        let entries: usize = frames
            .iter()
            .filter(|f| f["type"] == "snapshot")
            .filter_map(|f| f["statuses"].as_array().map(Vec::len))
            .sum();
        if entries != ids.len() {
            return Err(format!("a snapshot of {} ids carried {entries} entries", ids.len()).into());
        }

        let started = Instant::now();
        let answer = http.post("/v1/status/bulk", &body, &[]).await?;
        let floor = started.elapsed();
        if answer.status != 200 || answer.function_error {
            return Err(format!("the bulk read answered {}", answer.status).into());
        }

        let started = Instant::now();
        client.ping().await?;
        let ping = started.elapsed();
        if i >= WARM_UP {
            run.subscribe.push(subscribe);
            run.floor.push(floor);
            run.ping.push(ping);
            run.parts = frames.last().and_then(|f| f["parts"].as_u64()).unwrap_or(0);
        }
    }
    client.close().await;
    Ok(run)
}
