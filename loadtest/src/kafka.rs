//! `--kafka`: load through the real path people use. Produces presence
//! events to the local Kafka at `--rate` events/s for `--seconds`, keyed by
//! user id, then reads every user it touched back through the HTTP API
//! (bulk reads of 1,000) until each reads as its last event says, and
//! counts the users that never do: the mismatches, which must be 0.
//!
//! Users are drawn from a fresh random range each run, so a run never
//! reads an earlier run's state. Loopback and bounded: at most
//! `--seconds` of producing and `--drain-seconds` of reading back.

use std::time::{Duration, Instant};

use local_stack::kafka::load::LoadPlan;
use local_stack::kafka::produce::PresenceProducer;
use serde_json::{json, Value};

use crate::http::Conn;
use crate::Options;

/// What the Kafka mode found.
pub struct KafkaReport {
    pub produce_errors: u64,
    pub mismatches: usize,
}

/// Runs the Kafka mode against the stack at `o.api`, producing to
/// `servers`/`topic`.
pub async fn run(o: &Options, servers: &str, topic: &str) -> Result<KafkaReport, String> {
    // A few ms of linger fills librdkafka's batches at these rates.
    let producer = PresenceProducer::new(servers, topic, 5).map_err(|e| format!("kafka producer: {e}"))?;
    let first_user = 1_000_000_000_000 + rand::random::<u64>() % 1_000_000_000_000;
    let mut plan = LoadPlan::new(first_user, o.users);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.seconds);
    let mut deliveries = Vec::new();
    let (mut produced, mut produce_errors) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < deadline && produced < o.max_requests {
        tick.tick().await;
        // Catch up to the rate since the start, so a slow tick is made up.
        let due = (started.elapsed().as_secs_f64() * o.rate as f64) as u64;
        while produced < due.min(o.max_requests) {
            let now = now_ms();
            let (user, value) = plan.next((rand::random(), rand::random()), now);
            match producer.enqueue(user, &value) {
                Ok(delivery) => deliveries.push(delivery),
                Err(_) => produce_errors += 1,
            }
            produced += 1;
        }
    }
    for delivery in deliveries {
        if !matches!(delivery.await, Ok(Ok(_))) {
            produce_errors += 1;
        }
    }
    let producing = started.elapsed();
    println!(
        "load kafka_produce events={produced} errors={produce_errors} per_s={:.0} seconds={:.1} users={}",
        produced as f64 / producing.as_secs_f64(),
        producing.as_secs_f64(),
        plan.users_touched().len()
    );

    let users = plan.users_touched();
    let mut api = Conn::new(o.api.clone());
    let drain_started = Instant::now();
    let mut pending: Vec<u64> = users.clone();
    while !pending.is_empty() && drain_started.elapsed() < Duration::from_secs(o.drain_seconds) {
        let mut still = Vec::new();
        for chunk in pending.chunks(1000) {
            let statuses = bulk_read(&mut api, chunk).await?;
            for entry in &statuses {
                if let Some(user) = entry["user_id"].as_u64() {
                    if !plan.is_applied(user, entry) {
                        still.push(user);
                    }
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The final count reads everyone once more, so a user is judged by
    // what the API answers now, not by an earlier read.
    let mut statuses = Vec::with_capacity(users.len());
    for chunk in users.chunks(1000) {
        statuses.extend(bulk_read(&mut api, chunk).await?);
    }
    let mismatches = plan.mismatches(&statuses);
    println!(
        "load kafka_visible users={} mismatches={mismatches} drain_s={:.2} total_events_per_s={:.0}",
        users.len(),
        drain_started.elapsed().as_secs_f64(),
        produced as f64 / started.elapsed().as_secs_f64()
    );
    Ok(KafkaReport { produce_errors, mismatches })
}

async fn bulk_read(api: &mut Conn, users: &[u64]) -> Result<Vec<Value>, String> {
    let answer = api.post("/v1/status/bulk", &json!({ "user_ids": users }).to_string(), &[]).await?;
    if answer.status != 200 {
        return Err(format!("bulk read answered {}: {}", answer.status, String::from_utf8_lossy(&answer.body)));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("bulk read body: {e}"))?;
    Ok(body["statuses"].as_array().cloned().unwrap_or_default())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
