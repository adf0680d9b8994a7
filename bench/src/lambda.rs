//! `cold_init` and `peak_rss_10000`: the release function binaries started
//! as Lambda starts them, against [`RuntimeApi`], with the service's
//! configuration pointing at a bench run's own database, key prefix and
//! tables.
//!
//! Cold init is the time from just before the process is spawned to the
//! moment its first answer reaches the runtime API: exec and loading,
//! runtime and client set-up (`App::start`), the first poll, and a first
//! invocation that opens its Redis and database connections. Peak memory is
//! the process's high-water mark (`VmHWM`), read once it has answered a
//! 10,000-event batch and is idle, polling for the next one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::env::{BenchEnv, Servers};
use crate::error::Error;
use crate::runtime_api::{Outcome, RuntimeApi};
use crate::{aggregate, workload};

/// How long a function may take to answer before the measurement fails.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);
/// The most of a child's output kept, for the error message if it fails.
const LOG_TAIL: usize = 16 * 1024;

/// One function as the template deploys it.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    /// The binary (`BuildProperties: Binary`).
    pub binary: &'static str,
    /// The logical id, used as the function name.
    pub name: &'static str,
    pub memory_mb: u32,
}

pub const FUNCTIONS: [Function; 3] = [
    Function { binary: "aggregator", name: "AggregatorFunction", memory_mb: 1024 },
    Function { binary: "idle-scanner", name: "IdleScannerFunction", memory_mb: 256 },
    Function { binary: "status-api", name: "StatusApiFunction", memory_mb: 512 },
];

/// The sample API Gateway request of `events/`: a service caller's bulk read.
const STATUS_API_EVENT: &str = include_str!("../../events/status-api/bulk-iam.json");

/// Where the release binaries are: `--bin-dir`, else beside this executable
/// (both are built into the same `target/release`).
pub fn bin_dir(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().ok_or("this executable has no directory")?.to_owned())
}

/// What one invocation of a fresh process showed.
pub struct Invocation {
    pub first_answer: Duration,
    pub peak_rss_kb: u64,
    pub body: serde_json::Value,
}

/// The first invocation's event for `function`: small and valid.
pub fn first_event(function: &Function) -> Result<Vec<u8>, Error> {
    Ok(match function.binary {
        "aggregator" => {
            let now = status_shared::app::now_ms();
            let events = [
                workload::event(status_shared::domain::EventKind::Connected, workload::user(42)?, 0, now - 1_000)?,
                workload::event(status_shared::domain::EventKind::Activity, workload::user(7)?, 0, now - 500)?,
            ];
            serde_json::to_vec(&workload::kafka_event(&events))?
        }
        "idle-scanner" => br#"{"shard": 3}"#.to_vec(),
        _ => STATUS_API_EVENT.as_bytes().to_vec(),
    })
}

/// Starts `function` fresh, hands it `event` and waits for its answer.
pub async fn invoke_fresh(
    env: &BenchEnv,
    dir: &Path,
    function: &Function,
    event: Vec<u8>,
) -> Result<Invocation, Error> {
    let binary = dir.join(function.binary);
    if !binary.is_file() {
        return Err(format!("{} is missing; build it with cargo build --release", binary.display()).into());
    }
    let (api, mut answers) = RuntimeApi::start(function.name, vec![event]).await?;
    let mut command = Command::new(&binary);
    command
        .env_clear()
        .envs(child_env(env, function, &api.address))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = command.spawn()?;
    let pid = child.id().ok_or("the function exited at once")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        child.stdout.take().map(|out| tokio::spawn(keep_tail(out, log.clone()))),
        child.stderr.take().map(|err| tokio::spawn(keep_tail(err, log.clone()))),
    ];

    let waited = tokio::select! {
        answer = tokio::time::timeout(ANSWER_LIMIT, answers.recv()) => answer.ok(),
        // An init error is posted just before the process exits: take it.
        _ = child.wait() => Some(answers.try_recv().ok()),
    };
    // Read the high-water mark while the process is alive and idle.
    let peak_rss_kb = vm_hwm_kb(pid).unwrap_or(0);
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    drop(api);
    let tail = || String::from_utf8_lossy(&log.lock().map(|l| l.clone()).unwrap_or_default()).into_owned();
    let answer = match waited {
        Some(Some(answer)) => answer,
        Some(None) => {
            return Err(format!("{} exited before answering; its output:\n{}", function.binary, tail()).into())
        }
        None => {
            return Err(
                format!("{} did not answer within {ANSWER_LIMIT:?}; its output:\n{}", function.binary, tail()).into()
            )
        }
    };
    let first_answer = answer.at.duration_since(start);
    match answer.outcome {
        Outcome::Response(body) => {
            Ok(Invocation { first_answer, peak_rss_kb, body: serde_json::from_slice(&body).unwrap_or_default() })
        }
        Outcome::Error(body) | Outcome::InitError(body) => Err(format!(
            "{} answered with an error: {}; its output:\n{}",
            function.binary,
            String::from_utf8_lossy(&body),
            tail()
        )
        .into()),
    }
}

/// The environment Lambda gives a function, plus the service's own.
fn child_env(env: &BenchEnv, function: &Function, runtime_api: &str) -> Vec<(String, String)> {
    let servers: &Servers = &env.servers;
    let mut vars = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", function.memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", format!("2026/01/01/[$LATEST]bench{}", env.tag)),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", function.name)),
        // As the template configures the functions' logging.
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ("REDIS_URL", servers.redis_url.clone()),
        ("DATABASE_URL", env.database_url.clone()),
        ("REPAIR_TABLE", env.repair_table().to_owned()),
        ("DEAD_LETTER_TABLE", env.dead_letter_table().to_owned()),
        ("KEY_PREFIX", env.key_prefix().to_owned()),
        ("SHARDS", crate::env::SHARDS.to_string()),
        ("AWS_ENDPOINT_URL", servers.aws_endpoint.clone()),
        ("AWS_REGION", servers.aws_region.clone()),
        ("AWS_ACCESS_KEY_ID", servers.aws_access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", servers.aws_secret_access_key.clone()),
        // Never look for instance credentials: there is no instance.
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("TZ", ":UTC".to_owned()),
    ];
    if let Some(token) = &servers.aws_session_token {
        vars.push(("AWS_SESSION_TOKEN", token.clone()));
    }
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Keeps the last [`LOG_TAIL`] bytes of a child's output; reading it also
/// keeps the child from blocking on a full pipe.
async fn keep_tail(mut from: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 8192];
    // Ends when the child's end of the pipe closes (it exits or is killed).
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if let Ok(mut log) = into.lock() {
            log.extend_from_slice(&buf[..n]);
            let excess = log.len().saturating_sub(LOG_TAIL);
            log.drain(..excess);
        }
    }
}

/// The process's peak resident set, in KiB, from `/proc/<pid>/status`.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Checks that an answer is a success of its function, not merely an answer.
pub fn check_answer(function: &Function, body: &serde_json::Value) -> Result<(), Error> {
    let ok = match function.binary {
        "aggregator" => body.get("cache_ok") == Some(&serde_json::Value::Bool(true)),
        "idle-scanner" => body.get("failed").and_then(serde_json::Value::as_array).is_some_and(Vec::is_empty),
        _ => body.get("statusCode").and_then(serde_json::Value::as_u64) == Some(200),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} answered, but not with a success: {body}", function.binary).into())
    }
}

/// One run of `cold_init`: each function started fresh once.
pub async fn cold_init_run(servers: &Servers, dir: &Path) -> Result<Vec<Duration>, Error> {
    let env = BenchEnv::create(servers).await?;
    let mut times = Vec::new();
    let mut outcome = Ok(());
    for function in &FUNCTIONS {
        let result = async {
            let invocation = invoke_fresh(&env, dir, function, first_event(function)?).await?;
            check_answer(function, &invocation.body)?;
            Ok::<_, Error>(invocation.first_answer)
        }
        .await;
        match result {
            Ok(time) => {
                eprintln!(
                    "status-bench: cold_init: {} answered after {:.1} ms",
                    function.binary,
                    crate::report::ms(time)
                );
                times.push(time);
            }
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    env.remove().await;
    outcome.map(|()| times)
}

/// One run of `peak_rss_10000`: a fresh aggregator handles one batch of
/// 10,000 events over 5,000 users; returns its peak RSS in MiB.
pub async fn peak_rss_run(servers: &Servers, dir: &Path) -> Result<f64, Error> {
    let env = BenchEnv::create(servers).await?;
    let result = async {
        let events = workload::mixed_batch(1, aggregate::USERS, aggregate::EVENTS, status_shared::app::now_ms(), 99)?;
        let event = serde_json::to_vec(&workload::kafka_event(&events))?;
        let function = &FUNCTIONS[0];
        let invocation = invoke_fresh(&env, dir, function, event).await?;
        check_answer(function, &invocation.body)?;
        let applied = invocation.body.get("applied").and_then(serde_json::Value::as_u64);
        if applied != Some(aggregate::EVENTS as u64) {
            return Err(format!("the aggregator applied {applied:?} of {} events", aggregate::EVENTS).into());
        }
        if invocation.peak_rss_kb == 0 {
            return Err("could not read the aggregator's VmHWM".into());
        }
        Ok(invocation.peak_rss_kb as f64 / 1024.0)
    }
    .await;
    env.remove().await;
    result
}
