//! The local stack's process SIGKILLed while records flow, and started
//! again (DESIGN §9 "restarts"): every record the broker acknowledged ends
//! applied, read back over the HTTP API, and nothing goes to the on-failure
//! queue. The stack runs as the `online-status-local` binary, on its own
//! database, key prefix, tables, bus, topic, group and queue.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use local_stack::kafka::produce::presence_value;
use serde_json::Value;
use status_tests::aws::{endpoint_url, sdk_config, AwsTables};
use status_tests::kafka::{bootstrap_servers, TestTopic};
use status_tests::stack::wall_clock_ms;
use status_tests::{clean_up_in_drop, database_server_url, forget_database_and_keys, redis_url};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(90);

/// The binary, built once per test process (`LOCAL_STACK_BIN` skips it).
async fn binary() -> PathBuf {
    static BINARY: OnceCell<PathBuf> = OnceCell::const_new();
    BINARY
        .get_or_init(|| async {
            if let Some(path) = std::env::var_os("LOCAL_STACK_BIN") {
                return path.into();
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace");
            let output = Command::new(cargo)
                .current_dir(workspace)
                .args(["build", "-p", "local-stack", "--bin", "online-status-local", "--message-format=json"])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .await
                .expect("cargo runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "cargo build -p local-stack failed:\n{stdout}");
            stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "online-status-local")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo names the online-status-local executable")
        })
        .await
        .clone()
}

/// One stack process and what it printed.
struct Process {
    child: Child,
    api: String,
    log: Arc<Mutex<String>>,
}

impl Process {
    async fn start(env: &[(&'static str, String)]) -> Self {
        let mut child = Command::new(binary().await)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("online-status-local starts");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let keep = log.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                keep.lock().expect("not poisoned").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let deadline = tokio::time::Instant::now() + WAIT;
        let api = loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let url = line.trim_start().strip_prefix("HTTP API").map(|r| r.trim().to_owned());
                    if let Some(url) = url.filter(|u| u.starts_with("http://")) {
                        break url;
                    }
                }
                _ => panic!("the stack printed no HTTP API URL:\n{}", log.lock().expect("not poisoned")),
            }
        };
        // Keep reading stdout so the stack never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, api, log }
    }

    /// SIGKILL: no shutdown, nothing finished or committed.
    async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// `GET /v1/status/{user}`'s body, or null when it does not answer.
    async fn status(&self, user: u64) -> Value {
        let addr = self.api.trim_start_matches("http://").to_owned();
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else { return Value::Null };
        let request = format!("GET /v1/status/{user} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return Value::Null;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

/// Everything one run makes outside the topic, removed when dropped.
struct Resources {
    database: String,
    key_prefix: String,
    bus: String,
}

impl Drop for Resources {
    fn drop(&mut self) {
        let (database, prefix, bus) = (self.database.clone(), self.key_prefix.clone(), self.bus.clone());
        clean_up_in_drop(async move {
            forget_database_and_keys(&format!("{}/{database}", database_server_url()), &redis_url(), &prefix).await;
            let events = aws_sdk_eventbridge::Client::new(&sdk_config().await);
            let _ = events.delete_event_bus().name(&bus).send().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_sigkilled_mid_stream_and_started_again_applies_every_acknowledged_record() {
    let topic = TestTopic::new(4).await;
    let tables = AwsTables::new().await;
    let tag = topic.tag.clone();
    let resources = Resources {
        database: format!("status_restart_{tag}"),
        key_prefix: format!("r{tag}:"),
        bus: format!("status-restart-events-{tag}"),
    };
    let env: Vec<(&'static str, String)> = vec![
        ("AWS_ENDPOINT_URL", endpoint_url()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("REDIS_URL", redis_url()),
        ("DATABASE_URL", format!("{}/{}", database_server_url(), resources.database)),
        ("KEY_PREFIX", resources.key_prefix.clone()),
        ("REPAIR_TABLE", tables.repair_table.clone()),
        ("DEAD_LETTER_TABLE", tables.dead_letter_table.clone()),
        ("STATUS_EVENT_BUS", resources.bus.clone()),
        ("LOCAL_API_PORT", "0".into()),
        ("LOCAL_INVOKE_PORT", "0".into()),
        ("LOCAL_SCAN_INTERVAL_S", "0".into()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers()),
        ("KAFKA_TOPIC", topic.name.clone()),
        ("KAFKA_CONSUMER_GROUP", topic.group.clone()),
        ("LOCAL_ONFAILURE_QUEUE", topic.queue.clone()),
        ("MSK_BATCHING_WINDOW_MS", "100".into()),
        ("MSK_BATCH_SIZE", "20".into()),
        ("RUST_LOG", "info".into()),
    ];
    let mut stack = Process::start(&env).await;

    // 40 users, 30 records each: a connect, then activity, each record
    // one ms later than the user's previous one. The first 20 users' records
    // are all produced at once, before the kill, so some are acknowledged
    // and not yet committed when it comes; the other 20 stream on, round by
    // round, through the kill and the restart.
    let (users, rounds) = (7_000u64..7_040, 30i64);
    let base = wall_clock_ms() - 60_000;
    let producer = topic.producer();
    let produce = tokio::spawn(async move {
        let record = |user: u64, round: i64| {
            let kind = if round == 0 { "session_connected" } else { "activity" };
            presence_value(kind, user, "s", Some("ios"), base + round)
        };
        for round in 0..rounds {
            for user in 7_000u64..7_020 {
                producer.send(user, &record(user, round), &[]).await.expect("the broker acknowledges");
            }
        }
        for round in 0..rounds {
            for user in 7_020u64..7_040 {
                producer.send(user, &record(user, round), &[]).await.expect("the broker acknowledges");
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    // Once records are being applied, the process dies where it stands.
    let deadline = Instant::now() + WAIT;
    while stack.status(users.start).await["last_active_ms"].as_i64().unwrap_or(0) < base + 3 {
        assert!(Instant::now() < deadline, "nothing applied:\n{}", stack.log.lock().expect("not poisoned"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.kill().await;
    let mut stack = Process::start(&env).await;
    produce.await.expect("every record acknowledged");

    // Every user ends at its last record, whatever was applied twice.
    let last = base + rounds - 1;
    let deadline = Instant::now() + WAIT;
    for user in users {
        loop {
            let body = stack.status(user).await;
            if body["last_active_ms"] == last && body["status"] != "offline" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "user {user} stopped at {body}:\n{}",
                stack.log.lock().expect("not poisoned")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stack.kill().await;
    assert!(topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
    drop(resources);
}
