//! `kafka_e2e` (DESIGN §10): presence events through the real local Kafka,
//! the local MSK event source poller and the aggregator, read back through
//! the HTTP API.
//!
//! One run is one private stack (database, key prefix, tables, topic of
//! `PARTITIONS` partitions, consumer group), wired as the local stack wires
//! it but with no event bus, as the other figures run:
//!
//! 1. latency: one first event, timed on its own (`first_probe_ms`: it
//!    includes the poller joining its consumer group, once per start), then
//!    `probes` events, one at a time, each for a fresh user; the time from
//!    the produce call to the first bulk read (polled every 2 ms) that shows
//!    it. The poller's batch is alone, so this is the batching window plus
//!    the work.
//! 2. throughput: `events` events over `users` users enqueued as fast as
//!    the producer takes them; then a wait, asking the broker every 10 ms,
//!    until the consumer group has committed past every produced record
//!    (the poller commits only after the aggregator succeeded), then bulk
//!    reads until every user reads as its last event says. events/s is the
//!    events over the time from the first enqueue to the last user right.
//!    Users never right within the drain limit are `lost`. Waiting on the
//!    broker instead of reading every user again and again keeps the
//!    bench's own reads off the two cores while the poller works.
//! 3. latency at rate (`kafka_rate.rs`): `events` more events at a paced
//!    `rate` events/s, with a probe every 25 ms timed as in 1; skipped when
//!    `rate` is 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use local_stack::functions::Functions;
use local_stack::kafka::admin::{delete_topic, GroupOffsets};
use local_stack::kafka::load::LoadPlan;
use local_stack::kafka::produce::{presence_value, PresenceProducer};
use local_stack::kafka::settings::KafkaSettings;
use local_stack::server::{serve, Listeners};
use serde_json::{json, Value};
use status_shared::app::{now_ms, App};
use status_shared::config::Config;

use crate::env::{BenchEnv, Servers};
use crate::error::Error;
use crate::http::Conn;
use crate::report::{percentile, Spread};

/// Partitions of the run's topic: the local stack's default.
pub const PARTITIONS: i32 = 8;
/// How long the throughput phase may take to show every user after the
/// last event was produced before the rest count as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(180);

/// What one run measured.
pub struct Run {
    /// The first event after the poller started.
    pub first_probe: Duration,
    pub latencies: Vec<Duration>,
    pub events_per_s: f64,
    pub produce_per_s: f64,
    pub lost: usize,
    /// Phase 3, when it ran.
    pub at_rate: Option<crate::kafka_rate::AtRate>,
}

impl Run {
    pub fn p(&self, q: f64) -> f64 {
        crate::report::ms(percentile(&self.latencies, q))
    }

    /// Percentile `q` of phase 3's probes, in ms (0 when it did not run).
    pub fn rate_p(&self, q: f64) -> f64 {
        self.at_rate.as_ref().map_or(0.0, |r| crate::report::ms(percentile(&r.latencies, q)))
    }
}

/// The broker: `KAFKA_BOOTSTRAP_SERVERS`, loopback only, default the local one.
pub fn bootstrap_servers() -> Result<String, Error> {
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    if servers.split(',').all(|s| s.starts_with("127.") || s.starts_with("localhost:")) {
        Ok(servers)
    } else {
        Err(format!("KAFKA_BOOTSTRAP_SERVERS={servers} is not a loopback address; the bench only runs locally").into())
    }
}

/// The knobs of one run.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub probes: usize,
    pub events: u64,
    pub users: u64,
    pub batch_size: usize,
    /// The throughput phases' producer's `compression.type`.
    pub compression: &'static str,
    pub window: Duration,
    /// Phase 3's paced rate, events/s; 0 skips it.
    pub rate: u64,
}

/// One run, its resources removed afterwards whatever happens.
pub async fn run(servers: &Servers, shape: Shape) -> Result<Run, Error> {
    let env = BenchEnv::create(servers).await?;
    let kafka = match settings_for(&env, shape.batch_size, shape.window) {
        Ok(kafka) => kafka,
        Err(error) => {
            env.remove().await;
            return Err(error);
        }
    };
    let outcome = measure(servers, &env, &kafka, shape).await;
    remove_kafka(servers, &kafka).await;
    env.remove().await;
    outcome
}

/// The event source of one run over `env`: its own topic of
/// [`PARTITIONS`] partitions, consumer group and on-failure queue, named
/// by the run's tag, on the loopback broker.
pub fn settings_for(env: &BenchEnv, batch_size: usize, window: Duration) -> Result<KafkaSettings, Error> {
    Ok(KafkaSettings {
        topic: format!("bench.presence.{}", env.tag),
        consumer_group: format!("bench-{}", env.tag),
        on_failure_queue: format!("bench-onfailure-{}", env.tag),
        partitions: PARTITIONS,
        batch_size,
        batching_window: window,
        ..KafkaSettings::defaults(&bootstrap_servers()?)
    })
}

/// Deletes the run's topic and on-failure queue; each step bounded, a
/// failure ignored (the names are the run's own).
pub async fn remove_kafka(servers: &Servers, kafka: &KafkaSettings) {
    let _ = tokio::time::timeout(Duration::from_secs(10), delete_topic(&kafka.bootstrap_servers, &kafka.topic)).await;
    let sqs = aws_sdk_sqs::Client::new(&servers.sdk);
    if let Ok(found) = sqs.get_queue_url().queue_name(&kafka.on_failure_queue).send().await {
        if let Some(url) = found.queue_url() {
            let _ = sqs.delete_queue().queue_url(url).send().await;
        }
    }
}

async fn measure(servers: &Servers, env: &BenchEnv, kafka: &KafkaSettings, shape: Shape) -> Result<Run, Error> {
    let vars: HashMap<&str, String> = HashMap::from([
        ("REDIS_URL", servers.redis_url.clone()),
        ("DATABASE_URL", env.database_url.clone()),
        ("KEY_PREFIX", env.key_prefix().to_owned()),
        ("REPAIR_TABLE", env.repair_table().to_owned()),
        ("DEAD_LETTER_TABLE", env.dead_letter_table().to_owned()),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).cloned())?;
    let app = App::start_with(config, servers.sdk.clone()).await?;
    let functions = Arc::new(Functions::new(&app));
    let local = local_stack::kafka::start(kafka.clone(), functions.clone(), &servers.sdk).await?;
    let listeners = Listeners::bind(0, 0).await?;
    let api = listeners.api_url();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut poller_stop = stopped.clone();
    let poller = tokio::spawn(local.poller.run(async move {
        let _ = poller_stop.wait_for(|s| *s).await;
    }));
    let mut server_stop = stopped;
    let server = tokio::spawn(serve(listeners, functions, None, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));

    let outcome = phases(&api, kafka, shape).await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), poller).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    outcome
}

async fn phases(api: &str, kafka: &KafkaSettings, shape: Shape) -> Result<Run, Error> {
    let addr = api.trim_start_matches("http://");
    let (host, port) = addr.rsplit_once(':').ok_or("the API has no port")?;
    let mut conn = Conn::new((host.to_owned(), port.parse()?));
    let producer = PresenceProducer::new(&kafka.bootstrap_servers, &kafka.topic, 0)?;

    // 1. Latency, one event at a time; the first apart.
    let first_probe = probe(&mut conn, &producer, shape.probes as u64 + 1).await?;
    let mut latencies = Vec::with_capacity(shape.probes);
    for i in 0..shape.probes as u64 {
        latencies.push(probe(&mut conn, &producer, 1 + i).await?);
    }

    // 2. Throughput: everything at once, then read until all are right.
    let bulk = PresenceProducer::compressed(&kafka.bootstrap_servers, &kafka.topic, 5, shape.compression)?;
    let mut plan = LoadPlan::new(1_000_000, shape.users);
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(shape.events as usize);
    for _ in 0..shape.events {
        let (user, value) = plan.next((rand::random(), rand::random()), now_ms());
        loop {
            match bulk.enqueue(user, &value) {
                Ok(delivery) => break deliveries.push(delivery),
                // librdkafka's queue is full: let it send.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    // The offset after each partition's last record.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(delivered)) => {
                let end = ends.entry(delivered.partition).or_default();
                *end = (*end).max(delivered.offset + 1);
            }
            _ => return Err("a record was not delivered to the broker".into()),
        }
    }
    let produced = started.elapsed();
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    let group = GroupOffsets::new(&kafka.bootstrap_servers, &kafka.consumer_group, &kafka.topic)?;
    let (partitions, ends): (Vec<i32>, Vec<i64>) = ends.into_iter().unzip();
    while Instant::now() < drain_deadline {
        let committed = group.committed(&partitions).await?;
        if committed.iter().zip(&ends).all(|(c, end)| c >= end) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let users = plan.users_touched();
    let mut pending = users.clone();
    while !pending.is_empty() && Instant::now() < drain_deadline {
        let mut still = Vec::new();
        for chunk in pending.chunks(1000) {
            for entry in bulk_read(&mut conn, chunk).await? {
                let user = entry["user_id"].as_u64().unwrap_or(0);
                if !plan.is_applied(user, &entry) {
                    still.push(user);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let visible = started.elapsed();
    let mut statuses = Vec::with_capacity(users.len());
    for chunk in users.chunks(1000) {
        statuses.extend(bulk_read(&mut conn, chunk).await?);
    }
    let lost = plan.mismatches(&statuses);

    // 3. Latency while the stack takes a sustained rate.
    let at_rate = if shape.rate > 0 {
        Some(crate::kafka_rate::at_rate(&mut conn, &bulk, &producer, shape.events, shape.users, shape.rate).await?)
    } else {
        None
    };
    Ok(Run {
        first_probe,
        latencies,
        events_per_s: shape.events as f64 / visible.as_secs_f64(),
        produce_per_s: shape.events as f64 / produced.as_secs_f64(),
        lost,
        at_rate,
    })
}

/// Produces a `session_connected` for `user` and answers how long it took
/// to show through the HTTP API.
async fn probe(conn: &mut Conn, producer: &PresenceProducer, user: u64) -> Result<Duration, Error> {
    let ts_ms = now_ms();
    let started = Instant::now();
    producer.send(user, &presence_value("session_connected", user, "probe", Some("ios"), ts_ms), &[]).await?;
    loop {
        let statuses = bulk_read(conn, &[user]).await?;
        if statuses.first().and_then(|s| s["last_active_ms"].as_i64()) == Some(ts_ms) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("probe for user {user} not visible within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The `statuses` of one bulk read of `users` through the HTTP API.
pub async fn bulk_read(conn: &mut Conn, users: &[u64]) -> Result<Vec<Value>, Error> {
    let answer = conn.post("/v1/status/bulk", &json!({ "user_ids": users }).to_string(), &[]).await?;
    if answer.status != 200 || answer.function_error {
        return Err(format!("bulk read answered {}", answer.status).into());
    }
    let body: Value = serde_json::from_slice(&answer.body)?;
    Ok(body["statuses"].as_array().cloned().unwrap_or_default())
}

/// The medians over runs of what the line prints.
pub fn spreads(runs: &[Run]) -> (Spread, Spread, Spread) {
    let of = |f: &dyn Fn(&Run) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
    (of(&|r| r.p(0.5)), of(&|r| r.p(0.99)), of(&|r| r.events_per_s))
}
