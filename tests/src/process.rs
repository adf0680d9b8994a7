//! The real `online-status-local` binary as a child process, for the
//! end-to-end tests: built once per test process, started with a run of
//! its own (database, key prefix, tables, bus and event queue, all named
//! with [`unique_tag`] and all created by the stack itself, so a test also
//! proves its start-up), driven only through its two endpoints (the HTTP
//! API and the Lambda Invoke API), and cleaned up when dropped, pass or
//! fail.
//!
//! The binary is found by building it: `cargo build -p local-stack --bin
//! online-status-local --message-format=json` reports the executable's path
//! wherever the target directory is, and costs about a second when it is up
//! to date (`env!("CARGO_BIN_EXE_...")` only names binaries of the test's
//! own package). `LOCAL_STACK_BIN=/path/to/online-status-local` skips the
//! build, for CI that built it already.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use status_shared::domain::Millis;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, OnceCell};

use crate::aws::{endpoint_url, sdk_config};
use crate::{clean_up_in_drop, database_server_url, redis_url, unique_tag};

/// Short, so the scanner's effect shows within seconds, yet long enough
/// that a busy 2-core machine still reads `online` right after the batch.
pub const IDLE_AFTER_MS: Millis = 5_000;
/// How long a first build of the binary may take on a cold target dir.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Start-up creates a database, applies migrations and creates tables in
/// moto; seconds normally, but a cold moto is slow to answer at first.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Any one HTTP exchange with the stack.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// An id the harness reads to see the stack answer; nothing writes it.
pub const NEVER_SEEN: u64 = 4199;

/// Builds the binary once per test process, however many tests start it.
pub async fn local_stack_binary() -> PathBuf {
    static BINARY: OnceCell<PathBuf> = OnceCell::const_new();
    BINARY.get_or_init(build_local_stack).await.clone()
}

async fn build_local_stack() -> PathBuf {
    if let Some(path) = std::env::var_os("LOCAL_STACK_BIN") {
        return path.into();
    }
    // The cargo running these tests, so the same toolchain builds the binary.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace");
    let build = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "-p", "local-stack", "--bin", "online-status-local", "--message-format=json"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let output = tokio::time::timeout(BUILD_TIMEOUT, build)
        .await
        .expect("building online-status-local finishes in time")
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo build -p local-stack failed:\n{stdout}");
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "online-status-local")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the online-status-local executable")
}

/// The names one run uses; dropping it removes everything the stack made.
pub struct Resources {
    pub database: String,
    pub key_prefix: String,
    pub repair_table: String,
    pub dead_letter_table: String,
    pub bus: String,
    pub queue: String,
}

impl Resources {
    fn new() -> Self {
        let tag = unique_tag();
        Self {
            database: format!("status_e2e_{tag}"),
            key_prefix: format!("e2e{tag}:"),
            repair_table: format!("status-e2e-repair-{tag}"),
            dead_letter_table: format!("status-e2e-dead-letters-{tag}"),
            bus: format!("status-e2e-events-{tag}"),
            queue: format!("status-e2e-events-{tag}"),
        }
    }

    /// The environment the stack gets, and nothing else: an inherited
    /// `SHARDS` or `LOCAL_EVENTS_QUEUE` must not change what is tested.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", endpoint_url()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("REDIS_URL", redis_url()),
            ("DATABASE_URL", format!("{}/{}", database_server_url(), self.database)),
            ("KEY_PREFIX", self.key_prefix.clone()),
            ("REPAIR_TABLE", self.repair_table.clone()),
            ("DEAD_LETTER_TABLE", self.dead_letter_table.clone()),
            ("STATUS_EVENT_BUS", self.bus.clone()),
            ("LOCAL_EVENTS_QUEUE", self.queue.clone()),
            ("IDLE_AFTER_MS", IDLE_AFTER_MS.to_string()),
            ("LOCAL_SCAN_INTERVAL_S", "1".into()),
            // Port 0: the system picks free ports, and the banner says which.
            ("LOCAL_API_PORT", "0".into()),
            ("LOCAL_INVOKE_PORT", "0".into()),
            ("LOCAL_WS_PORT", "0".into()),
            // No poller: the shared topic and group belong to scripts/up.sh's
            // stack; tests/integration/kafka.rs runs pollers on their own.
            ("KAFKA_BOOTSTRAP_SERVERS", "off".into()),
            ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
        ]
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        let database = self.database.clone();
        let prefix = self.key_prefix.clone();
        let tables = [self.repair_table.clone(), self.dead_letter_table.clone()];
        let (bus, queue) = (self.bus.clone(), self.queue.clone());
        clean_up_in_drop(async move {
            let database_url = format!("{}/{database}", database_server_url());
            crate::forget_database_and_keys(&database_url, &redis_url(), &prefix).await;
            let config = sdk_config().await;
            let dynamo = aws_sdk_dynamodb::Client::new(&config);
            for table in tables {
                let _ = dynamo.delete_table().table_name(table).send().await;
            }
            // The rule the stack made for LOCAL_EVENTS_QUEUE, then the bus.
            let events = aws_sdk_eventbridge::Client::new(&config);
            let rule = format!("online-status-local-to-{queue}");
            let _ = events.remove_targets().rule(&rule).event_bus_name(&bus).ids("local-events-queue").send().await;
            let _ = events.delete_rule().name(&rule).event_bus_name(&bus).send().await;
            let _ = events.delete_event_bus().name(&bus).send().await;
            let sqs = aws_sdk_sqs::Client::new(&config);
            if let Ok(found) = sqs.get_queue_url().queue_name(&queue).send().await {
                if let Some(url) = found.queue_url() {
                    let _ = sqs.delete_queue().queue_url(url).send().await;
                }
            }
        });
    }
}

/// Lines a child wrote, kept so a failure can show them.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    /// Every line so far.
    pub fn text(&self) -> String {
        self.0.lock().map(|lines| lines.join("\n")).unwrap_or_default()
    }
}

/// Reads `stream` to its end on a task (so the child never blocks on a
/// full pipe), keeping each line and sending it on `lines` too.
fn drain(stream: impl AsyncRead + Unpin + Send + 'static, keep: Output, lines: Option<mpsc::UnboundedSender<String>>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(lines) = &lines {
                let _ = lines.send(line.clone());
            }
            if let Ok(mut kept) = keep.0.lock() {
                kept.push(line);
            }
        }
    });
}

/// A started `online-status-local` child: the base URLs its banner names
/// and what it writes to stderr.
pub struct Spawned {
    pub child: Child,
    /// The HTTP API's base URL, `http://127.0.0.1:<port>`.
    pub api: String,
    /// The Lambda Invoke API's base URL.
    pub invoke: String,
    /// Kept so a failure can show it.
    pub stderr: Output,
}

/// Starts the binary with exactly `env` (nothing inherited) and returns
/// once its banner names both URLs, which it prints after every resource
/// is ready and both ports are bound; panics with the stack's log when it
/// exits first or prints none within 90 s. Killed when dropped.
pub async fn spawn_local_stack(env: Vec<(&'static str, String)>) -> Spawned {
    let mut command = Command::new(local_stack_binary().await);
    command.env_clear().envs(env).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().expect("online-status-local starts");
    let (stdout, stderr) = (Output::default(), Output::default());
    let (tx, mut banner) = mpsc::unbounded_channel();
    drain(child.stdout.take().expect("piped stdout"), stdout.clone(), Some(tx));
    drain(child.stderr.take().expect("piped stderr"), stderr.clone(), None);

    let url_on = |line: &str, label: &str| {
        line.trim_start()
            .strip_prefix(label)
            .and_then(|rest| rest.split_whitespace().find(|w| w.starts_with("http://")))
            .map(str::to_owned)
    };
    let (mut api, mut invoke) = (None, None);
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while api.is_none() || invoke.is_none() {
        match tokio::time::timeout_at(deadline, banner.recv()).await {
            Ok(Some(line)) => {
                api = api.or_else(|| url_on(&line, "HTTP API"));
                invoke = invoke.or_else(|| url_on(&line, "Invoke API"));
            }
            Ok(None) => {
                let status = child.wait().await;
                panic!("online-status-local exited ({status:?}) before serving:\n{}", stderr.text());
            }
            Err(_) => panic!("online-status-local printed no URLs within {START_TIMEOUT:?}:\n{}", stderr.text()),
        }
    }
    Spawned { child, api: api.expect("an API URL"), invoke: invoke.expect("an invoke URL"), stderr }
}

impl Spawned {
    /// `GET /v1/status/{user}`'s body, as a service reads it, or null when
    /// the stack does not answer (it is starting, or was killed).
    pub async fn status(&self, user: u64) -> Value {
        match try_call("GET", &format!("{}/v1/status/{user}", self.api), &[], Vec::new()).await {
            Ok(reply) => serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// A running `online-status-local`. The child is killed if the test fails
/// before stopping it; `resources` then cleans up after it.
pub struct LocalStack {
    child: Child,
    /// The HTTP API's base URL, `http://127.0.0.1:<port>`.
    pub api: String,
    /// The Lambda Invoke API's base URL.
    pub invoke: String,
    stderr: Output,
    pub resources: Resources,
}

impl LocalStack {
    /// Starts the binary over a run of its own and returns once both
    /// URLs are printed and the HTTP API answers; panics with the stack's
    /// log when it does not within 90 s.
    pub async fn start() -> Self {
        let resources = Resources::new();
        let Spawned { child, api, invoke, stderr } = spawn_local_stack(resources.env()).await;
        let stack = Self { child, api, invoke, stderr, resources };
        stack.wait_until_it_answers().await;
        stack
    }

    async fn wait_until_it_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = format!("{}/v1/public/status/{NEVER_SEEN}", self.api);
            match try_call("GET", &url, &[], Vec::new()).await {
                Ok(reply) if reply.status == 200 => return,
                other if Instant::now() >= deadline => {
                    panic!("the HTTP API does not answer: {other:?}\n{}", self.logs())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// What the stack wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.text()
    }

    /// A call to the HTTP API.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        call(method, &format!("{}{path}", self.api), headers, body).await
    }

    /// A synchronous Lambda invocation through the Invoke API.
    pub async fn invoke(&self, function: &str, event: &Value) -> Reply {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.invoke);
        call("POST", &url, &[], event.to_string().into_bytes()).await
    }

    /// Statuses of `users` from the bulk route, as a service caller.
    pub async fn bulk(&self, users: &[u64]) -> Vec<(u64, String)> {
        let body = json!({ "user_ids": users }).to_string().into_bytes();
        let reply = self.http("POST", "/v1/status/bulk", &[], body).await;
        assert_eq!(reply.status, 200, "bulk read: {reply:?}\n{}", self.logs());
        reply.json()["statuses"]
            .as_array()
            .expect("a statuses array")
            .iter()
            .map(|s| (s["user_id"].as_u64().unwrap_or(0), s["status"].as_str().unwrap_or("").to_owned()))
            .collect()
    }

    /// Stops the stack as Ctrl-C or a service manager would, and checks it
    /// goes quietly and promptly.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("the stack is still running");
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the stack stops within 15 s of SIGTERM")
            .expect("its exit status");
        assert!(status.success(), "the stack exits cleanly on SIGTERM: {status:?}\n{}", self.logs());
    }
}

/// One HTTP answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics, showing it, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// [`try_call`], panicking on a transport failure.
pub async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    try_call(method, url, headers, body).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// One HTTP/1.1 exchange on its own connection, bounded by [`CALL_TIMEOUT`].
pub async fn try_call(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Reply, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let authority = uri.authority().ok_or("no authority")?.to_string();
    let exchange = async {
        let stream = TcpStream::connect(&authority).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(uri.path_and_query().map_or("/", |p| p.as_str()));
        request = request.header("host", &authority).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange).await.map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
}

/// A sample event from `events/`, the same file `sam local invoke -e` takes.
pub fn sample_event(path: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).expect("a JSON sample event")
}

/// Polls `check` every 200 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
