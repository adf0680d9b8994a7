//! End to end, as a person runs the service locally: the real
//! `online-status-local` binary, driven only through its two endpoints (the
//! HTTP API and the Lambda Invoke API), against the real Redis, MariaDB and
//! moto.
//!
//! Each run gets its own database, key prefix, tables, bus and event queue,
//! all named with [`unique_tag`] and all created by the stack itself, so
//! the test also proves its start-up; they are removed when the run ends,
//! pass or fail.
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

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use status_shared::app::now_ms;
use status_shared::domain::Millis;
use status_tests::aws::{endpoint_url, sdk_config};
use status_tests::{clean_up_in_drop, database_server_url, redis_url, unique_tag};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, OnceCell};

/// Short, so the scanner's effect shows within seconds, yet long enough
/// that a busy 2-core machine still reads `online` right after the batch.
const IDLE_AFTER_MS: Millis = 5_000;
/// How long a first build of the binary may take on a cold target dir.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Start-up creates a database, applies migrations and creates tables in
/// moto; seconds normally, but a cold moto is slow to answer at first.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Any one HTTP exchange with the stack.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

const ALICE: u64 = 4101;
const BOB: u64 = 4102;
const CAROL: u64 = 4103;
const NEVER_SEEN: u64 = 4199;

/// Builds the binary once per test process, however many tests start it.
async fn local_stack_binary() -> PathBuf {
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
struct Resources {
    database: String,
    key_prefix: String,
    repair_table: String,
    dead_letter_table: String,
    bus: String,
    queue: String,
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
            status_tests::forget_database_and_keys(&database_url, &redis_url(), &prefix).await;
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
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn text(&self) -> String {
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

/// A running `online-status-local`. The child is killed if the test fails
/// before stopping it; `resources` then cleans up after it.
struct LocalStack {
    child: Child,
    api: String,
    invoke: String,
    stderr: Output,
    resources: Resources,
}

impl LocalStack {
    async fn start() -> Self {
        let resources = Resources::new();
        let mut command = Command::new(local_stack_binary().await);
        command
            .env_clear()
            .envs(resources.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("online-status-local starts");
        let (stdout, stderr) = (Output::default(), Output::default());
        let (tx, mut banner) = mpsc::unbounded_channel();
        drain(child.stdout.take().expect("piped stdout"), stdout.clone(), Some(tx));
        drain(child.stderr.take().expect("piped stderr"), stderr.clone(), None);

        // The banner names both URLs once the ports are bound, which is
        // after every resource is ready.
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
        let stack =
            Self { child, api: api.expect("an API URL"), invoke: invoke.expect("an invoke URL"), stderr, resources };
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

    fn logs(&self) -> String {
        self.stderr.text()
    }

    /// A call to the HTTP API.
    async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        call(method, &format!("{}{path}", self.api), headers, body).await
    }

    /// A synchronous Lambda invocation through the Invoke API.
    async fn invoke(&self, function: &str, event: &Value) -> Reply {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.invoke);
        call("POST", &url, &[], event.to_string().into_bytes()).await
    }

    /// Statuses of `users` from the bulk route, as a service caller.
    async fn bulk(&self, users: &[u64]) -> Vec<(u64, String)> {
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
    async fn stop(mut self) {
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

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    try_call(method, url, headers, body).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// One HTTP/1.1 exchange on its own connection, bounded by [`CALL_TIMEOUT`].
async fn try_call(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Reply, String> {
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

/// An MSK event with one record per `(user, value)`, on partition
/// `user % 2` as producers key by user id; values are base64 as MSK sends.
fn kafka_batch(records: &[(u64, String)]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut partitions = serde_json::Map::new();
    for (offset, (user, value)) in records.iter().enumerate() {
        let partition = user % 2;
        let record = json!({
            "topic": "presence.updates", "partition": partition, "offset": offset, "timestamp": now_ms(),
            "timestampType": "CREATE_TIME", "key": b64(&user.to_string()), "value": b64(value), "headers": [],
        });
        let list = partitions.entry(format!("presence.updates-{partition}")).or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(record);
        }
    }
    json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/online-status-e2e/0000",
        "records": partitions,
    })
}

fn presence(kind: &str, user: u64, session: &str, ts_ms: Millis) -> (u64, String) {
    (user, json!({ "type": kind, "user_id": user, "session_id": session, "device": "ios", "ts_ms": ts_ms }).to_string())
}

/// A sample event from `events/`, the same file `sam local invoke -e` takes.
fn sample_event(path: &str) -> Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).expect("a JSON sample event")
}

/// Polls `check` every 200 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
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

#[tokio::test]
async fn the_local_stack_serves_presence_reads_invocations_and_the_idle_timer_end_to_end() {
    let stack = LocalStack::start().await;

    // Presence in through the Invoke API, as MSK would deliver it.
    let now = now_ms();
    let batch = kafka_batch(&[
        presence("session_connected", ALICE, "alice-phone", now),
        presence("activity", ALICE, "alice-phone", now),
        presence("session_connected", BOB, "bob-web", now),
        presence("session_heartbeat", BOB, "bob-web", now),
    ]);
    let reply = stack.invoke("AggregatorFunction", &batch).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}\n{}", stack.logs());
    let summary = reply.json();
    assert_eq!((summary["applied"].as_u64(), summary["malformed"].as_u64()), (Some(4), Some(0)), "{summary}");

    // Reads over the HTTP API: bulk as a service, single as an end user.
    let expected = vec![(ALICE, "online".to_owned()), (BOB, "online".to_owned()), (NEVER_SEEN, "offline".to_owned())];
    assert_eq!(stack.bulk(&[ALICE, BOB, NEVER_SEEN]).await, expected);
    let bob = BOB.to_string();
    let single = stack.http("GET", &format!("/v1/status/{ALICE}"), &[("X-Local-User", &bob)], Vec::new()).await;
    assert_eq!(single.status, 200, "{single:?}");
    assert_eq!(single.json()["status"], "online");
    assert_eq!(single.json()["last_active_ms"], now);

    // Path parameters arrive percent-decoded, as API Gateway hands them
    // (DESIGN §9): `%34%32`... here ALICE's id, each digit escaped.
    let escaped: String = ALICE.to_string().bytes().map(|b| format!("%{b:02X}")).collect();
    let single = stack.http("GET", &format!("/v1/status/{escaped}"), &[], Vec::new()).await;
    assert_eq!((single.status, single.json()["user_id"].as_u64()), (200, Some(ALICE)), "{single:?}");

    // An expiry no store can hold is refused, and the process lives on
    // (it used to abort the whole stack).
    let far = json!({"state": "dnd", "expires_at_ms": 3_000_000_000_000_000i64}).to_string().into_bytes();
    let refused = stack.http("PUT", &format!("/v1/users/{ALICE}/manual-status"), &[], far).await;
    assert_eq!(refused.status, 400, "{refused:?}\n{}", stack.logs());
    assert_eq!(refused.json()["error"]["code"], "invalid_manual_status");
    assert_eq!(stack.bulk(&[ALICE]).await, vec![(ALICE, "online".to_owned())], "still serving");

    // A body over the handler's 64 KiB reaches the handler, which refuses it.
    let padded = format!(r#"{{"user_ids": [1], "pad": "{}"}}"#, "x".repeat(70 * 1024)).into_bytes();
    let too_big = stack.http("POST", "/v1/status/bulk", &[], padded).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["error"]["code"], "payload_too_large");

    // StatusApiFunction through the Invoke API, with the sample IAM event.
    let mut event = sample_event("status-api/bulk-iam.json");
    event["body"] = json!(json!({ "user_ids": [ALICE, NEVER_SEEN] }).to_string());
    let reply = stack.invoke("StatusApiFunction", &event).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}");
    let proxy = reply.json();
    assert_eq!(proxy["statusCode"], 200, "{proxy}");
    let body: Value = serde_json::from_str(proxy["body"].as_str().expect("a body string")).expect("a JSON body");
    assert_eq!(body["statuses"][0]["status"], "online");
    assert_eq!(body["statuses"][1]["status"], "offline");

    // The scanner through the Invoke API, with the sample one-shard input.
    let reply = stack.invoke("IdleScannerFunction", &sample_event("idle-scanner/shard.json")).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}");
    assert_eq!(reply.json()["shards"][0]["shard"], 3);

    // What the calls so far printed as metrics, totalled at /local/metrics.
    let totals = call("GET", &format!("{}/local/metrics.json", stack.invoke), &[], Vec::new()).await.json();
    let total = |function: &str, metric: &str, dimensions: &str| {
        totals.as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["function"] == function && r["metric"] == metric && r["dimensions"] == dimensions)
                .and_then(|r| r["sum"].as_f64())
        })
    };
    assert_eq!(total("Aggregator", "RecordsApplied", ""), Some(4.0), "{totals}");
    assert_eq!(
        total("StatusApi", "BulkSize", ""),
        Some(6.0),
        "bulk reads of 3, 1 and 2 ids (the 413 read none): {totals}"
    );
    assert_eq!(total("StatusApi", "Responses", "StatusCode=413"), Some(1.0), "{totals}");
    assert!(total("IdleScanner", "ScanDuration", "Shard=3").is_some(), "{totals}");
    let table = call("GET", &format!("{}/local/metrics", stack.invoke), &[], Vec::new()).await;
    assert!(String::from_utf8_lossy(&table.body)
        .lines()
        .any(|l| l.starts_with("Aggregator") && l.contains("RecordsApplied")));

    // Malformed records are counted and set aside; the good one is applied.
    let mut mixed = vec![presence("activity", CAROL, "carol-tab", now_ms())];
    mixed.push((CAROL, r#"{"type": "activity", "user_id": 4103,"#.to_owned()));
    mixed.push(presence("session_connected", 0, "nobody", now_ms()));
    let reply = stack.invoke("AggregatorFunction", &kafka_batch(&mixed)).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, None), "{reply:?}");
    let summary = reply.json();
    assert_eq!((summary["applied"].as_u64(), summary["malformed"].as_u64()), (Some(1), Some(2)), "{summary}");

    // Calls Lambda itself refuses, and events a function cannot read.
    let reply = stack.invoke("NoSuchFunction", &json!({})).await;
    assert_eq!((reply.status, reply.header("x-amzn-errortype")), (404, Some("ResourceNotFoundException")));
    let reply = stack.invoke("AggregatorFunction", &json!({ "records": "not a map" })).await;
    assert_eq!((reply.status, reply.header("x-amz-function-error")), (200, Some("Unhandled")));
    assert_eq!(reply.json()["errorType"], "InvalidEvent");
    let reply = stack.invoke("IdleScannerFunction", &json!({ "shard": 9999 })).await;
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{reply:?}");

    // After IDLE_AFTER, reads say idle (they derive it themselves) ...
    let idle_in = Duration::from_millis(IDLE_AFTER_MS as u64) + Duration::from_secs(20);
    eventually(idle_in, "reads show alice idle", || async {
        stack.bulk(&[ALICE]).await == vec![(ALICE, "idle".to_owned())]
    })
    .await;
    // ... and the stored hash says idle too, which only a scan writes:
    // nothing else touched alice since the batch, so the timer ran.
    let redis = redis::Client::open(redis_url())
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let key = format!("{}status:{{{ALICE}}}", stack.resources.key_prefix);
    eventually(Duration::from_secs(15), "the timer scan stores alice idle", || {
        let (mut redis, key) = (redis.clone(), key.clone());
        async move {
            let stored: Option<String> =
                redis::cmd("HGET").arg(&key).arg("status").query_async(&mut redis).await.unwrap_or(None);
            stored.as_deref() == Some("idle")
        }
    })
    .await;

    // Every transition went out as `status_changed`, the scanner's too; the
    // stack routed its bus to LOCAL_EVENTS_QUEUE.
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(&stack.resources.queue)
        .send()
        .await
        .expect("the stack made the events queue")
        .queue_url()
        .expect("a queue url")
        .to_owned();
    let mut seen: Vec<(u64, String, String)> = Vec::new();
    let went_idle = (ALICE, "online".to_owned(), "idle".to_owned());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(&went_idle) {
        assert!(Instant::now() < deadline, "no online -> idle event for alice within 20 s; saw {seen:?}");
        // Long polling: answers as soon as a message is there, or after 1 s.
        let received = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(1);
        for message in received.send().await.expect("receive from the events queue").messages() {
            let event: Value = serde_json::from_str(message.body().unwrap_or("{}")).unwrap_or(Value::Null);
            let detail = &event["detail"];
            seen.push((
                detail["user_id"].as_u64().unwrap_or(0),
                detail["from"].as_str().unwrap_or("").to_owned(),
                detail["to"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    assert!(seen.contains(&(ALICE, "offline".to_owned(), "online".to_owned())), "{seen:?}");

    stack.stop().await;
}

#[tokio::test]
async fn the_local_stack_refuses_to_start_without_an_emulator_and_says_how_to_fix_it() {
    let output = Command::new(local_stack_binary().await)
        .env_clear()
        .env("LOCAL_API_PORT", "0")
        .env("LOCAL_INVOKE_PORT", "0")
        .env("LOCAL_WS_PORT", "0")
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("it exits at once")
        .expect("online-status-local runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AWS_ENDPOINT_URL") && stderr.contains("scripts/up.sh"), "{stderr}");
}
