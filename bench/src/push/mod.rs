//! The push figures of DESIGN §10 (§12's WebSocket path): `push_e2e`,
//! `push_fanout_10000`, `stream_subscribe_1000` and `stream_resume_1000`.
//!
//! Each run starts the local stack as `scripts/up.sh` serves it
//! (`local_stack::Stack`), in this process, over the run's own
//! [`BenchEnv`] (database, key prefix, tables) on free ports: the HTTP,
//! Invoke and WebSocket APIs, the push feed from the write path to
//! `StatusStreamFunction` through the Invoke API (an `Event` invocation,
//! as in AWS), and frames back through the `@connections` management API
//! to real WebSocket clients ([`client`]). No event bus and no scan timer,
//! as the other figures run; `push_e2e` adds the run's own Kafka topic and
//! the MSK event source poller.

pub mod client;
pub mod clients;
mod e2e;
mod fanout;
pub mod figures;
mod resume;
mod subscribe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use local_stack::functions::{Function, Functions};
use local_stack::kafka::settings::KafkaSettings;
use local_stack::settings::Settings;
use local_stack::Stack;
use serde_json::Value;
use status_shared::app::now_ms;
use status_shared::domain::PresenceEvent;
use status_shared::telemetry::functions::STATUS_STREAM;

use crate::env::{BenchEnv, Servers};
use crate::{workload, Error};

/// Viewers are end users from this id on, apart from the watched users.
pub const FIRST_VIEWER: u64 = 1_000_000_000;

/// The local stack of one run, serving until [`PushStack::stop`].
pub struct PushStack {
    pub ws_url: String,
    pub api_url: String,
    pub functions: Arc<Functions>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), local_stack::PollerStopped>>,
}

impl PushStack {
    /// Starts the stack over `env` with `extra` variables (such as
    /// `STREAM_ACTIVITY_REFRESH_MS`) and, when given, the MSK poller on
    /// `kafka`.
    pub async fn start(
        servers: &Servers,
        env: &BenchEnv,
        kafka: Option<KafkaSettings>,
        extra: &[(&str, &str)],
    ) -> Result<Self, Error> {
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("AWS_ENDPOINT_URL", servers.aws_endpoint.clone()),
            ("REDIS_URL", servers.redis_url.clone()),
            ("DATABASE_URL", env.database_url.clone()),
            ("KEY_PREFIX", env.key_prefix().to_owned()),
            ("REPAIR_TABLE", env.repair_table().to_owned()),
            ("DEAD_LETTER_TABLE", env.dead_letter_table().to_owned()),
            ("LOCAL_API_PORT", "0".into()),
            ("LOCAL_INVOKE_PORT", "0".into()),
            ("LOCAL_WS_PORT", "0".into()),
            ("LOCAL_SCAN_INTERVAL_S", "0".into()),
            ("KAFKA_BOOTSTRAP_SERVERS", "off".into()),
        ]);
        for (name, value) in extra {
            vars.insert(name, (*value).to_owned());
        }
        let mut settings = Settings::from_lookup(|name| vars.get(name).cloned())?;
        // No bus, as every other figure runs (the local defaults name one).
        settings.config.status_event_bus = None;
        settings.kafka = kafka;
        let stack = Stack::start(settings).await?;
        let ws_url = stack.websocket.0.ws_url();
        let api_url = stack.listeners.api_url();
        let functions = stack.functions.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(stack.serve(async move {
            let _ = stopped.await;
        }));
        Ok(Self { ws_url, api_url, functions, stop, served })
    }

    /// Commits `events` through the aggregator, called in process as the
    /// Invoke API calls it; its push feed goes out as in AWS.
    pub async fn aggregate(&self, events: &[PresenceEvent]) -> Result<(), Error> {
        let batch = serde_json::to_vec(&workload::kafka_event(events))?;
        let answer = self.functions.invoke(Function::Aggregator, &batch, now_ms()).await.map_err(|e| e.message())?;
        if answer["feed_failed"] == true {
            return Err(format!("the aggregator's push feed failed: {answer}").into());
        }
        Ok(())
    }

    /// The total of the stream function's metric `name` so far.
    pub fn stream_metric(&self, name: &str) -> f64 {
        let totals = self.functions.board.json();
        totals
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| r["function"] == STATUS_STREAM && r["metric"] == name)
                    .map(|r| r["sum"].as_f64().unwrap_or(0.0))
                    .sum()
            })
            .unwrap_or(0.0)
    }

    /// Waits until the stream function's metric `name` reaches `want`
    /// (its invocation emits it after its posts), at most `limit`; answers
    /// the total then.
    pub async fn await_metric(&self, name: &str, want: f64, limit: Duration) -> f64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let total = self.stream_metric(name);
            if total >= want || tokio::time::Instant::now() >= deadline {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops serving and waits (bounded) for the stack to drain.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.served).await;
    }
}

/// Raises this process's open-files limit to at least `wanted`: the soft
/// limit up to the hard one, and the hard one too when allowed (root).
/// Errors, saying how to fix it, when the limit stays below `wanted`.
pub fn raise_open_files(wanted: u64) -> Result<(), Error> {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if soft >= wanted {
        return Ok(());
    }
    if rlimit::setrlimit(Resource::NOFILE, wanted, hard.max(wanted)).is_err() {
        let _ = rlimit::setrlimit(Resource::NOFILE, hard, hard);
    }
    let (soft, _) = rlimit::getrlimit(Resource::NOFILE)?;
    if soft < wanted {
        return Err(format!(
            "{wanted} open files are needed (a socket per connection) but the limit is {soft}; raise it \
             (`ulimit -n {wanted}`) or pass a smaller connection count"
        )
        .into());
    }
    Ok(())
}

/// What a figure reads from a run for its line: the `q` quantile of
/// `samples` in ms.
pub fn p_ms(samples: &[Duration], q: f64) -> f64 {
    crate::report::ms(crate::report::percentile(samples, q))
}

/// The entries of a data frame by user id.
pub fn entries(frame: &Value) -> impl Iterator<Item = (u64, &Value)> {
    frame["statuses"].as_array().into_iter().flatten().filter_map(|e| Some((e["user_id"].as_u64()?, e)))
}
