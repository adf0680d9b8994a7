//! The AWS side of the harness: SDK clients for the emulator (moto), and
//! per-test DynamoDB tables, event bus and SQS queue, named with the test's
//! unique tag so tests run in parallel without seeing each other.
//!
//! The emulator is found through `AWS_ENDPOINT_URL` (default
//! `http://127.0.0.1:5000`); region and credentials come from the usual
//! environment, falling back to `us-east-1` and `test`/`test`, which moto
//! accepts. `scripts/test.sh` starts moto.
//!
//! Partial failures (`UnprocessedItems`, refused PutEvents entries) cannot
//! be provoked in moto, so [`FakeAws`] answers the JSON protocol with
//! whatever a test scripts, to drive the adapters' retry paths.
//!
//! A test that stalls the emulator starts a [`PrivateMoto`] of its own and
//! pauses it (and any other server of its own) through [`Frozen`], which
//! wakes them again however the test ends; the shared moto is never
//! paused.

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use local_stack::provision::{create_bus, create_tables};
use status_shared::adapters::dynamodb::{DynamoDeadLetters, DynamoRepairBuffer};
use status_shared::adapters::eventbridge::{EventBridgePublisher, SOURCE};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::{clean_up_in_drop, unique_tag};

pub use crate::fake_aws::{Answer, FakeAws};

pub fn endpoint_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// The SDK configuration for the emulator. Region and credentials are set
/// on the loader, not in the process environment, which parallel tests
/// share.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(&endpoint_url()).await
}

/// The same configuration, pointed at another endpoint (a [`FakeAws`]).
/// Its HTTP client refuses what AWS would refuse and moto accepts
/// ([`crate::aws_limits`]), for every client built from it, the service's
/// own included.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .http_client(crate::aws_limits::LimitedHttp::around_default());
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        loader = loader.region(Region::new("us-east-1"));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "status-tests"));
    }
    loader.load().await
}

/// One test's own repair and dead-letter tables, deleted when dropped.
pub struct AwsTables {
    pub tag: String,
    pub config: SdkConfig,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub repair_table: String,
    pub dead_letter_table: String,
}

impl AwsTables {
    pub async fn new() -> Self {
        Self::on(sdk_config().await).await
    }

    /// The tables on the emulator `config` points at (a [`PrivateMoto`]).
    pub async fn on(config: SdkConfig) -> Self {
        let tag = unique_tag();
        let dynamo = aws_sdk_dynamodb::Client::new(&config);
        let repair_table = format!("status-repair-{tag}");
        let dead_letter_table = format!("status-dead-letters-{tag}");
        create_tables(&dynamo, &repair_table, &dead_letter_table).await.expect("the emulator creates the tables");
        Self { tag, config, dynamo, repair_table, dead_letter_table }
    }

    pub fn repair_buffer(&self, shards: u32) -> DynamoRepairBuffer {
        DynamoRepairBuffer::new(self.dynamo.clone(), &self.repair_table, shards)
    }

    pub fn dead_letters(&self) -> DynamoDeadLetters {
        DynamoDeadLetters::new(self.dynamo.clone(), &self.dead_letter_table)
    }

    /// Every item of `table`, by a full paginated scan (test tables are
    /// small).
    pub async fn scan(
        &self,
        table: &str,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.dynamo
            .scan()
            .table_name(table)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .expect("scan the test table")
    }
}

impl Drop for AwsTables {
    fn drop(&mut self) {
        let client = self.dynamo.clone();
        let tables = [self.repair_table.clone(), self.dead_letter_table.clone()];
        clean_up_in_drop(async move {
            for table in tables {
                let _ = client.delete_table().table_name(table).send().await;
            }
        });
    }
}

/// A test's own event bus, with a rule that forwards every
/// `status.service` event on it to a test-owned SQS queue, so a test can
/// read back exactly what was published.
pub struct EventSink {
    pub tag: String,
    pub bus: String,
    pub rule: String,
    pub queue_url: String,
    pub events: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl EventSink {
    pub async fn new() -> Self {
        Self::on(sdk_config().await).await
    }

    /// The bus, rule and queue on the emulator `config` points at.
    pub async fn on(config: SdkConfig) -> Self {
        let tag = unique_tag();
        let bus = format!("status-events-{tag}");
        Self::on_bus(config, tag, bus).await
    }

    /// A sink on the bus named `bus`, created if missing (a restarted
    /// emulator has lost it), with a rule and queue named by `tag`.
    pub async fn on_bus(config: SdkConfig, tag: String, bus: String) -> Self {
        let events = aws_sdk_eventbridge::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let rule = format!("status-to-queue-{tag}");
        create_bus(&events, &bus).await.expect("the emulator creates the bus");
        // Idempotent, like the adapter's own setup.
        create_bus(&events, &bus).await.expect("creating the bus again is fine");

        let queue_url = sqs
            .create_queue()
            .queue_name(format!("status-events-{tag}"))
            .send()
            .await
            .expect("create the queue")
            .queue_url()
            .expect("the queue has a url")
            .to_owned();
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("read the queue arn")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("the queue has an arn");

        // Real AWS would also need a queue policy letting EventBridge send;
        // the emulator does not check one.
        events
            .put_rule()
            .name(&rule)
            .event_bus_name(&bus)
            .event_pattern(serde_json::json!({ "source": [SOURCE] }).to_string())
            .send()
            .await
            .expect("create the rule");
        events
            .put_targets()
            .rule(&rule)
            .event_bus_name(&bus)
            .targets(Target::builder().id("queue").arn(queue_arn).build().expect("a complete target"))
            .send()
            .await
            .expect("point the rule at the queue");
        Self { tag, bus, rule, queue_url, events, sqs }
    }

    pub fn publisher(&self) -> EventBridgePublisher {
        EventBridgePublisher::new(self.events.clone(), &self.bus)
    }

    /// Receives events until `expected` have arrived or `timeout` passes,
    /// then listens once more so extra (duplicate) events show up too, and
    /// returns the `detail` of each, in arrival order. Received messages are
    /// deleted.
    pub async fn drain(&self, expected: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut details = Vec::new();
        // Bounded twice: by the deadline and by the number of polls, each
        // of which waits at most a second.
        let max_polls = timeout.as_secs() as usize + 2;
        for _ in 0..max_polls {
            let got = self.receive().await;
            let done = details.len() >= expected;
            let empty = got.is_empty();
            details.extend(got);
            // Stop after one empty poll past the expected count, or at the
            // deadline; an early empty poll only means "not yet".
            if (done && empty) || Instant::now() >= deadline {
                break;
            }
        }
        details
    }

    async fn receive(&self) -> Vec<serde_json::Value> {
        let bodies = receive_json(&self.sqs, &self.queue_url).await;
        bodies.into_iter().map(|body| body.get("detail").cloned().unwrap_or(serde_json::Value::Null)).collect()
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        let events = self.events.clone();
        let sqs = self.sqs.clone();
        let (bus, rule, queue_url) = (self.bus.clone(), self.rule.clone(), self.queue_url.clone());
        clean_up_in_drop(async move {
            let _ = events.remove_targets().rule(&rule).event_bus_name(&bus).ids("queue").send().await;
            let _ = events.delete_rule().name(&rule).event_bus_name(&bus).send().await;
            let _ = events.delete_event_bus().name(&bus).send().await;
            let _ = sqs.delete_queue().queue_url(queue_url).send().await;
        });
    }
}

/// A moto server of the test's own on a free loopback port, killed when
/// dropped. Pausing it ([`Frozen`]) stands for an AWS brownout: connections
/// are still accepted by the kernel, but nothing is answered.
pub struct PrivateMoto {
    pub port: u16,
    child: Child,
}

impl PrivateMoto {
    /// Starts moto and waits until it answers (it imports every service's
    /// backend first, which takes seconds on a busy machine).
    pub async fn start() -> Self {
        Self::start_on(crate::free_port()).await
    }

    async fn start_on(port: u16) -> Self {
        // Through the project's launcher, as `scripts/services.sh` starts
        // the shared one (it parses moto's JSONPath expressions once).
        let launcher = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto_server.py");
        let child = Command::new("python3")
            .arg(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with moto[server] is installed (scripts/services.sh installs it)");
        let moto = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !moto.answers().await {
            assert!(Instant::now() < deadline, "private moto did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The SDK configuration for this server, with the SDK's own defaults
    /// for everything else (no deadlines: those are the service's to add).
    pub async fn config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint()).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("private moto is running")
    }

    /// Kills the server, paused or not, so whatever it had not answered is
    /// lost with everything it held, and starts an empty one on the same
    /// port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        *self = Self::start_on(self.port).await;
    }

    /// Whether moto's dashboard answers an HTTP request within a second.
    async fn answers(&self) -> bool {
        let probe = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.ok()?;
            Some(head.starts_with(b"HTTP/1."))
        };
        matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(true)))
    }
}

/// Processes paused with `SIGSTOP` (they keep their sockets, so clients
/// connect and wait, as with a server that stopped answering), woken with
/// `SIGCONT` when this is dropped: a failing assertion cannot leave a
/// server paused for the tests after it.
#[must_use = "the processes wake as soon as this is dropped"]
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    pub fn new(pids: &[u32]) -> Self {
        let frozen = Self { pids: pids.to_vec() };
        for pid in &frozen.pids {
            signal("-STOP", *pid);
        }
        frozen
    }

    /// Wakes them now.
    pub fn thaw(self) {}

    /// For processes killed while paused: there is nothing left to wake,
    /// and their ids may be reused.
    pub fn forget(mut self) {
        self.pids.clear();
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.pids {
            signal("-CONT", *pid);
        }
    }
}

fn signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status();
    // Never panic in a drop; a failed STOP shows up as the test's own
    // failure (nothing stalls).
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("kill {signal} {pid} failed: {status:?}");
    }
}

/// One receive of up to 10 messages from `queue_url` (waiting up to 1 s),
/// each body parsed as JSON; received messages are deleted.
pub async fn receive_json(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<serde_json::Value> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from the queue");
    let mut bodies = Vec::new();
    for message in out.messages() {
        bodies.push(serde_json::from_str(message.body().unwrap_or_default()).expect("a JSON message body"));
        if let Some(handle) = message.receipt_handle() {
            sqs.delete_message().queue_url(queue_url).receipt_handle(handle).send().await.expect("delete a message");
        }
    }
    bodies
}
