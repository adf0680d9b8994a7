//! The Kafka side of the harness: each test's own topic, consumer group and
//! on-failure queue on the real local broker (`KAFKA_BOOTSTRAP_SERVERS`,
//! default `127.0.0.1:9092`, which `scripts/services.sh` starts), a
//! function that records and fails on demand, and a whole local stack
//! (in this process) whose poller reads the test's topic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kafka::KafkaEvent;
use local_stack::kafka::admin::{delete_topic, ensure_topic};
use local_stack::kafka::poller::{BatchFunction, FetchCount, Poller, SqsOnFailure};
use local_stack::kafka::produce::PresenceProducer;
use local_stack::kafka::settings::KafkaSettings;
use tokio::sync::watch;

use crate::aws::{endpoint_url, sdk_config, AwsTables};
use crate::local::{request, InProcess};
use crate::{clean_up_in_drop, forget_database_and_keys, redis_url, unique_tag};

/// The broker the tests use.
pub fn bootstrap_servers() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .ok()
        .filter(|s| !s.trim().is_empty() && s != "off")
        .unwrap_or_else(|| "127.0.0.1:9092".into())
}

/// One test's topic, consumer group and on-failure queue; the topic and
/// queue are deleted when dropped.
pub struct TestTopic {
    pub tag: String,
    pub name: String,
    pub group: String,
    pub partitions: usize,
    pub queue: String,
    pub queue_url: String,
    pub sqs: aws_sdk_sqs::Client,
}

impl TestTopic {
    pub async fn new(partitions: i32) -> Self {
        let tag = unique_tag();
        let name = format!("test.presence.{tag}");
        let made = ensure_topic(&bootstrap_servers(), &name, partitions).await.expect("the broker creates a topic");
        let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
        let queue = format!("test-onfailure-{tag}");
        let created = sqs.create_queue().queue_name(&queue).send().await.expect("moto creates a queue");
        let queue_url = created.queue_url().expect("a queue url").to_owned();
        Self { group: format!("test-group-{tag}"), tag, name, partitions: made, queue, queue_url, sqs }
    }

    /// The local stack's variables that point its poller at this topic,
    /// group and on-failure queue (DESIGN §9).
    pub fn poller_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers()),
            ("KAFKA_TOPIC", self.name.clone()),
            ("KAFKA_CONSUMER_GROUP", self.group.clone()),
            ("LOCAL_ONFAILURE_QUEUE", self.queue.clone()),
        ]
    }

    /// The poller's settings for this topic: every default but the names,
    /// and a short window so tests do not wait half a second per batch.
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings {
            topic: self.name.clone(),
            consumer_group: self.group.clone(),
            on_failure_queue: self.queue.clone(),
            batching_window: Duration::from_millis(100),
            ..KafkaSettings::defaults(&bootstrap_servers())
        }
    }

    pub fn producer(&self) -> PresenceProducer {
        PresenceProducer::new(&bootstrap_servers(), &self.name, 0).expect("a producer")
    }

    pub fn on_failure(&self) -> SqsOnFailure {
        SqsOnFailure { client: self.sqs.clone(), queue_url: self.queue_url.clone() }
    }

    /// Every message on the on-failure queue within `wait`, as JSON.
    pub async fn on_failure_messages(&self, expected: usize, wait: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            out.extend(crate::aws::receive_json(&self.sqs, &self.queue_url).await);
        }
        out
    }

    /// A poller of this topic calling `function`, running until the
    /// returned handle is stopped or dropped.
    pub fn start_poller<F: BatchFunction>(&self, settings: KafkaSettings, function: F) -> RunningPoller {
        let poller =
            Poller::new(settings, &format!("{}-member", self.group), function, self.on_failure(), "arn:test".into())
                .expect("the poller joins");
        let fetches = poller.fetches();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(poller.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        RunningPoller { stop, task: Some(task), fetches }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let (name, sqs, queue_url) = (self.name.clone(), self.sqs.clone(), self.queue_url.clone());
        clean_up_in_drop(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), delete_topic(&bootstrap_servers(), &name)).await;
            let _ = sqs.delete_queue().queue_url(queue_url).send().await;
        });
    }
}

/// A poller running on a task.
pub struct RunningPoller {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The poller's fetch requests, from librdkafka's statistics.
    pub fetches: watch::Receiver<FetchCount>,
}

impl RunningPoller {
    /// Asks it to stop between batches and waits until it has.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("the poller stops").expect("no panic");
        }
    }

    /// Kills it wherever it is, as a crash would: nothing more is committed.
    pub async fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for RunningPoller {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What a [`Scripted`] function does with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Succeed,
    Fail,
    /// Never returns, like a function that hangs until the poller dies.
    Hang,
}

type Script = dyn Fn(usize, &KafkaEvent) -> Answer + Send + Sync;

/// A function that records every event it is called with and answers as
/// its script says for that call (numbered from 0).
#[derive(Clone)]
pub struct Scripted {
    pub calls: Arc<Mutex<Vec<KafkaEvent>>>,
    script: Arc<Script>,
}

impl Scripted {
    pub fn new(script: impl Fn(usize, &KafkaEvent) -> Answer + Send + Sync + 'static) -> Self {
        Self { calls: Arc::default(), script: Arc::new(script) }
    }

    pub fn succeeding() -> Self {
        Self::new(|_, _| Answer::Succeed)
    }

    pub fn calls(&self) -> Vec<KafkaEvent> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// Waits until `done` holds for the calls so far, or panics after `wait`.
    pub async fn wait_until(&self, wait: Duration, done: impl Fn(&[KafkaEvent]) -> bool) -> Vec<KafkaEvent> {
        let deadline = Instant::now() + wait;
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            assert!(Instant::now() < deadline, "gave up waiting; {} calls so far: {calls:#?}", calls.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl BatchFunction for Scripted {
    async fn call(&self, event: &KafkaEvent) -> Result<(), String> {
        let n = {
            let mut calls = self.calls.lock().expect("not poisoned");
            calls.push(event.clone());
            calls.len() - 1
        };
        match (self.script)(n, event) {
            Answer::Succeed => Ok(()),
            Answer::Fail => Err(format!("scripted failure of call {n}")),
            Answer::Hang => std::future::pending().await,
        }
    }
}

/// Every record of `events` as (partition, offset, decoded value), in the
/// order the calls and each partition's records came.
pub fn records(events: &[KafkaEvent]) -> Vec<(i64, i64, serde_json::Value)> {
    use base64::Engine;
    let mut out = Vec::new();
    for event in events {
        let mut groups: Vec<_> = event.records.values().collect();
        groups.sort_by_key(|g| g.first().map(|r| r.partition));
        for record in groups.into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(record.value.as_deref().unwrap_or(""))
                .unwrap_or_default();
            let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            out.push((record.partition, record.offset, value));
        }
    }
    out
}

/// The whole local stack in this process ([`InProcess`]), on the test's
/// own database, key prefix, tables, bus, topic, group and on-failure
/// queue, its poller reading the topic; stopped and cleaned up when
/// dropped.
pub struct KafkaStack {
    /// First, so it stops before the topic goes.
    pub local: InProcess,
    pub topic: TestTopic,
}

impl KafkaStack {
    pub async fn start(partitions: i32) -> Self {
        let topic = TestTopic::new(partitions).await;
        let mut env = topic.poller_env();
        env.push(("MSK_BATCHING_WINDOW_MS", "100".into()));
        let extra: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let local = InProcess::start("kafka", &extra).await;
        Self { local, topic }
    }

    /// `GET path` on the stack's HTTP API, as a service: the status code
    /// and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        request(&self.local.api_url, "GET", path, None, None).await
    }

    /// Reads `GET /v1/status/{user}` until `done` holds for its body, or
    /// panics after `wait` with the last answer.
    pub async fn status_until(
        &self,
        user: u64,
        wait: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + wait;
        loop {
            let (status, body) = self.get(&format!("/v1/status/{user}")).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "user {user} never matched; last answer {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Everything a spawned `online-status-local` (`process::spawn_local_stack`)
/// needs to poll a topic of its own: the topic, group and on-failure queue,
/// DynamoDB tables, and a database, key prefix and bus named after the
/// topic's tag. The stack creates the database, bus and queue itself;
/// dropping this removes them all.
pub struct PollingRun {
    pub topic: TestTopic,
    pub tables: AwsTables,
    /// The MariaDB server, `mysql://user@host:port` (no database).
    pub database_server: String,
    pub database: String,
    pub key_prefix: String,
    pub bus: String,
}

impl PollingRun {
    /// A run on a new topic of `partitions` partitions, its database on
    /// `database_server` (`crate::database_server_url()`, or a server of
    /// the test's own), every name starting with `name`.
    pub async fn new(partitions: i32, database_server: String, name: &str) -> Self {
        let topic = TestTopic::new(partitions).await;
        let tables = AwsTables::new().await;
        let tag = topic.tag.clone();
        Self {
            database: format!("status_{name}_{tag}"),
            key_prefix: format!("{name}{tag}:"),
            bus: format!("status-{name}-events-{tag}"),
            topic,
            tables,
            database_server,
        }
    }

    /// The stack's whole environment: the emulator, Redis, this run's
    /// database, prefix, tables, bus, topic, group and queue, ports picked
    /// by the system, no scanner, and batches of at most 20 records that
    /// close 100 ms after their first.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env: Vec<(&'static str, String)> = vec![
            ("AWS_ENDPOINT_URL", endpoint_url()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("REDIS_URL", redis_url()),
            ("DATABASE_URL", format!("{}/{}", self.database_server, self.database)),
            ("KEY_PREFIX", self.key_prefix.clone()),
            ("REPAIR_TABLE", self.tables.repair_table.clone()),
            ("DEAD_LETTER_TABLE", self.tables.dead_letter_table.clone()),
            ("STATUS_EVENT_BUS", self.bus.clone()),
            ("LOCAL_API_PORT", "0".into()),
            ("LOCAL_INVOKE_PORT", "0".into()),
            ("LOCAL_WS_PORT", "0".into()),
            ("LOCAL_SCAN_INTERVAL_S", "0".into()),
            ("MSK_BATCHING_WINDOW_MS", "100".into()),
            ("MSK_BATCH_SIZE", "20".into()),
            ("RUST_LOG", "info".into()),
        ];
        env.extend(self.topic.poller_env());
        env
    }
}

impl Drop for PollingRun {
    fn drop(&mut self) {
        let database_url = format!("{}/{}", self.database_server, self.database);
        let (prefix, bus) = (self.key_prefix.clone(), self.bus.clone());
        clean_up_in_drop(async move {
            forget_database_and_keys(&database_url, &redis_url(), &prefix).await;
            let events = aws_sdk_eventbridge::Client::new(&sdk_config().await);
            let _ = events.delete_event_bus().name(&bus).send().await;
        });
    }
}
