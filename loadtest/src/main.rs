//! `status-loadtest`: many concurrent clients against the local stack's
//! HTTP API and Invoke API for a fixed time, mixing bulk reads with
//! presence-event batches, then a report of throughput, p50, p99 and errors.
//!
//! Loopback only, bounded in time and in requests:
//!
//! ```text
//! status-loadtest [--clients 16] [--seconds 20] [--max-requests 200000]
//!                 [--ids 100] [--users 100000] [--first-user 1000000]
//!                 [--events 200] [--write-share 10]
//!                 [--api http://127.0.0.1:3000] [--invoke http://127.0.0.1:3001]
//! status-loadtest --kafka [--rate 5000] [--seconds 20] [--users 100000]
//!                 [--drain-seconds 60] [--api http://127.0.0.1:3000]
//! ```
//!
//! The users are `--first-user ..` `--first-user + --users - 1`: by default
//! a range of ids of their own, clear of the small ids the README's
//! examples use (7, 42), so a load run never changes what they show.
//!
//! `--kafka` produces to `KAFKA_TOPIC` on `KAFKA_BOOTSTRAP_SERVERS` (the
//! local stack's defaults) instead, then reads every user back: see
//! [`kafka`].

mod http;
mod kafka;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

/// What the run is asked to do.
#[derive(Clone, Debug)]
struct Options {
    clients: usize,
    seconds: u64,
    max_requests: u64,
    ids: usize,
    users: u64,
    /// The lowest user id the HTTP mode touches.
    first_user: u64,
    events: usize,
    write_share: u32,
    api: (String, u16),
    invoke: (String, u16),
    /// `--kafka`: produce to Kafka and check every user (see [`kafka`]).
    kafka: bool,
    /// Events per second produced in Kafka mode.
    rate: u64,
    /// The longest wait, after producing, for every user to read right.
    drain_seconds: u64,
}

/// The lowest user id of the HTTP mode's range when `--first-user` is not
/// given: far above the ids people try by hand (the README uses 7 and 42).
const DEFAULT_FIRST_USER: u64 = 1_000_000;

/// One user id of the run's range, drawn uniformly.
fn random_user(o: &Options) -> u64 {
    o.first_user.saturating_add(rand::random::<u64>() % o.users)
}

fn loopback(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// is supported"))?;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').ok_or_else(|| format!("{url}: no port"))?;
    // Never anything but this machine.
    if !(host == "127.0.0.1" || host == "localhost" || host == "[::1]") {
        return Err(format!("{url}: only loopback addresses are allowed"));
    }
    Ok((host.trim_matches(['[', ']']).to_owned(), port.parse().map_err(|_| format!("{url}: bad port"))?))
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        clients: 16,
        seconds: 20,
        max_requests: 200_000,
        ids: 100,
        users: 100_000,
        first_user: DEFAULT_FIRST_USER,
        events: 200,
        write_share: 10,
        api: ("127.0.0.1".into(), 3000),
        invoke: ("127.0.0.1".into(), 3001),
        kafka: false,
        rate: 5000,
        drain_seconds: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--clients" => o.clients = number(value()?)?.clamp(1, 512) as usize,
            "--seconds" => o.seconds = number(value()?)?.clamp(1, 600),
            "--max-requests" => o.max_requests = number(value()?)?.max(1),
            "--ids" => o.ids = number(value()?)?.clamp(1, 1000) as usize,
            "--users" => o.users = number(value()?)?.max(1),
            "--first-user" => o.first_user = number(value()?)?.max(1),
            "--events" => o.events = number(value()?)?.clamp(1, 10_000) as usize,
            "--write-share" => o.write_share = number(value()?)?.min(100) as u32,
            "--api" => o.api = loopback(&value()?)?,
            "--invoke" => o.invoke = loopback(&value()?)?,
            "--kafka" => o.kafka = true,
            "--rate" => o.rate = number(value()?)?.clamp(1, 200_000),
            "--drain-seconds" => o.drain_seconds = number(value()?)?.clamp(1, 600),
            "-h" | "--help" => {
                println!("see the crate docs: status-loadtest [--clients N] [--seconds N] ...");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// One operation's latencies and failures.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
    }

    fn report(&mut self, name: &str, elapsed: Duration) {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let pick = |q: f64| {
            if n == 0 {
                0.0
            } else {
                self.latencies_us[((n as f64 * q).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0
            }
        };
        println!(
            "load {name} requests={n} errors={} per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.errors,
            n as f64 / elapsed.as_secs_f64(),
            pick(0.50),
            pick(0.99),
            pick(1.0),
        );
    }
}

fn bulk_body(o: &Options) -> String {
    let ids: Vec<u64> = (0..o.ids).map(|_| random_user(o)).collect();
    json!({ "user_ids": ids }).to_string()
}

fn events_body(o: &Options) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let kinds = ["session_connected", "session_heartbeat", "activity", "session_disconnected"];
    let records: Vec<serde_json::Value> = (0..o.events)
        .map(|i| {
            let user = random_user(o);
            let value = json!({
                "type": kinds[rand::random::<u32>() as usize % kinds.len()],
                "user_id": user,
                "session_id": format!("load-{}", user % 3),
                "ts_ms": now - (rand::random::<u32>() % 1000) as i64,
            });
            json!({
                "topic": "presence.updates", "partition": 0, "offset": i, "timestamp": now,
                "timestampType": "CREATE_TIME",
                "key": base64::engine::general_purpose::STANDARD.encode(user.to_string()),
                "value": base64::engine::general_purpose::STANDARD.encode(value.to_string()),
                "headers": []
            })
        })
        .collect();
    json!({ "eventSource": "aws:kafka", "records": { "presence.updates-0": records } }).to_string()
}

async fn client(o: Options, deadline: Instant, budget: std::sync::Arc<std::sync::atomic::AtomicU64>) -> (Tally, Tally) {
    let (mut reads, mut writes) = (Tally::default(), Tally::default());
    let mut api = http::Conn::new(o.api.clone());
    let mut invoke = http::Conn::new(o.invoke.clone());
    while Instant::now() < deadline {
        if budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            budget.store(0, std::sync::atomic::Ordering::Relaxed);
            break;
        }
        let write = rand::random::<u32>() % 100 < o.write_share;
        let started = Instant::now();
        let result = if write {
            invoke.post("/2015-03-31/functions/AggregatorFunction/invocations", &events_body(&o), &[]).await
        } else {
            api.post("/v1/status/bulk", &bulk_body(&o), &[]).await
        };
        let tally = if write { &mut writes } else { &mut reads };
        match result {
            // A function error comes back as 200 with this header.
            Ok(r) if r.status == 200 && !r.function_error => {
                tally.latencies_us.push(started.elapsed().as_micros() as u64)
            }
            _ => tally.errors += 1,
        }
    }
    (reads, writes)
}

#[tokio::main]
async fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("status-loadtest: {e}");
            std::process::exit(2);
        }
    };
    if o.kafka {
        std::process::exit(kafka_mode(&o).await);
    }
    eprintln!(
        "load: {} clients for {} s, {} ids per bulk read, {} events per batch, {}% writes, users {}..={}",
        o.clients,
        o.seconds,
        o.ids,
        o.events,
        o.write_share,
        o.first_user,
        o.first_user.saturating_add(o.users - 1)
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.seconds);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(o.max_requests));
    let tasks: Vec<_> = (0..o.clients).map(|_| tokio::spawn(client(o.clone(), deadline, budget.clone()))).collect();
    let (mut reads, mut writes) = (Tally::default(), Tally::default());
    for task in tasks {
        if let Ok((r, w)) = task.await {
            reads.merge(r);
            writes.merge(w);
        }
    }
    let elapsed = started.elapsed();
    reads.report("bulk_read", elapsed);
    writes.report("aggregate_batch", elapsed);
    let errors = reads.errors + writes.errors;
    println!(
        "load total requests={} errors={errors} seconds={:.1} clients={}",
        reads.latencies_us.len() + writes.latencies_us.len(),
        elapsed.as_secs_f64(),
        o.clients
    );
    if errors > 0 {
        std::process::exit(1);
    }
}

/// Runs `--kafka` and answers the exit code: 0 only with every event
/// delivered and every user reading right.
async fn kafka_mode(o: &Options) -> i32 {
    let env = |name: &str, default: &str| {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
    };
    let servers = env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
    let topic = env("KAFKA_TOPIC", "presence.updates");
    // Never anything but this machine, as for the HTTP endpoints.
    if let Some(bad) = servers.split(',').find(|s| !(s.starts_with("127.") || s.starts_with("localhost:"))) {
        eprintln!("status-loadtest: KAFKA_BOOTSTRAP_SERVERS {bad}: only loopback addresses are allowed");
        return 2;
    }
    eprintln!(
        "load: --kafka {} events/s for {} s to {topic} on {servers}, users {} (fresh range), then read back",
        o.rate, o.seconds, o.users
    );
    match kafka::run(o, &servers, &topic).await {
        Ok(report) if report.produce_errors == 0 && report.mismatches == 0 => 0,
        Ok(report) => {
            eprintln!(
                "status-loadtest: {} produce errors, {} users not as their last event says",
                report.produce_errors, report.mismatches
            );
            1
        }
        Err(error) => {
            eprintln!("status-loadtest: {error}");
            1
        }
    }
}
