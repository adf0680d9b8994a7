//! `push_e2e` (DESIGN §10): from a record produced to the local Kafka until
//! a subscribed WebSocket client receives the `status` frame carrying it.
//!
//! One run: the stack with the run's own topic and poller; one end user
//! connects and subscribes to the `probes + 1` users (a snapshot, all
//! never seen); then one `session_connected` per user, one at a time,
//! each timed from the produce call to the arrival of the `status` frame
//! whose entry for that user is online at the record's `ts_ms`. The
//! first is timed apart (`first_probe_ms`): it also waits for the poller
//! to join its consumer group. Between the produce and the frame: the
//! batching window, the aggregator's commit, the push feed's `Event`
//! invocation, the fan-out and the `PostToConnection`.

use std::time::{Duration, Instant};

use local_stack::kafka::produce::{presence_value, PresenceProducer};
use status_shared::app::now_ms;

use super::client::{entry_of, Client};
use super::{PushStack, FIRST_VIEWER};
use crate::env::{BenchEnv, Servers};
use crate::kafka_e2e::{remove_kafka, settings_for};
use crate::Error;

/// Watched users start here (ids below the viewers').
const FIRST_USER: u64 = 1;

/// What one run measured.
pub struct Run {
    pub first_probe: Duration,
    pub latencies: Vec<Duration>,
}

/// One run over its own environment and topic, removed afterwards.
pub async fn run(servers: &Servers, probes: usize, batch_size: usize, window: Duration) -> Result<Run, Error> {
    let env = BenchEnv::create(servers).await?;
    let kafka = match settings_for(&env, batch_size, window) {
        Ok(kafka) => kafka,
        Err(error) => {
            env.remove().await;
            return Err(error);
        }
    };
    let outcome = async {
        let stack = PushStack::start(servers, &env, Some(kafka.clone()), &[]).await?;
        let measured = measure(&stack, &kafka.bootstrap_servers, &kafka.topic, probes).await;
        stack.stop().await;
        measured
    }
    .await;
    remove_kafka(servers, &kafka).await;
    env.remove().await;
    outcome
}

async fn measure(stack: &PushStack, bootstrap: &str, topic: &str, probes: usize) -> Result<Run, Error> {
    let users: Vec<u64> = (FIRST_USER..=FIRST_USER + probes as u64).collect();
    let mut client = Client::connect(&stack.ws_url, FIRST_VIEWER).await?;
    client.subscribe(&users, None).await?;
    client.answer("snapshot").await?;
    let producer = PresenceProducer::new(bootstrap, topic, 0)?;
    let first_probe = probe(&mut client, &producer, users[0]).await?;
    let mut latencies = Vec::with_capacity(probes);
    for user in &users[1..] {
        latencies.push(probe(&mut client, &producer, *user).await?);
    }
    client.close().await;
    Ok(Run { first_probe, latencies })
}

/// Produces a `session_connected` for `user` and answers how long until
/// the client held the `status` frame showing it.
async fn probe(client: &mut Client, producer: &PresenceProducer, user: u64) -> Result<Duration, Error> {
    let ts_ms = now_ms();
    let started = Instant::now();
    producer.send(user, &presence_value("session_connected", user, "probe", Some("ios"), ts_ms), &[]).await?;
    loop {
        let frame = client.next().await?;
        let arrived = frame["type"] == "status"
            && entry_of(&frame, user).is_some_and(|e| e["status"] == "online" && e["last_active_ms"] == ts_ms);
        if arrived {
            return Ok(started.elapsed());
        }
    }
}
