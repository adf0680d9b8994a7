//! `status-bench`: the benchmark command of DESIGN §10. It measures the
//! service's figures against the local servers (Redis, MariaDB, the AWS
//! emulator) and prints one line per figure:
//!
//! ```text
//! bench bulk_read_hot_1000 p50_ms=0.91 ... p99_ms=1.40 ... floor_p99_ms=1.10 ... ratio_p99=1.27 ... runs=5 ...
//! ```
//!
//! Each figure is the median over several runs (`--runs`), with `_min` and
//! `_max` beside it; each run has its own database, key prefix and tables.
//! `scripts/bench.sh` starts the servers, builds in release and runs this;
//! `docs/BENCHMARKS.md` says what each figure means.
//!
//! # Layout
//!
//! - [`options`]: the command line.
//! - [`env`]: the servers (loopback only) and one run's private slice.
//! - [`workload`]: events, MSK batches and populations.
//! - [`bulk_read`], [`aggregate`], [`idle_scan`]: the in-process figures.
//! - [`lambda`] over [`runtime_api`]: the release binaries, started as
//!   Lambda starts them.
//! - [`kafka_e2e`]: through the real local Kafka, the poller and the HTTP
//!   API.
//! - [`push`]: the WebSocket push path (DESIGN §12) through the local
//!   stack, with real WebSocket clients.
//! - [`report`]: percentiles, medians and the output line.
//! - [`phases`]: where the aggregator's time goes, by its tracing spans.
//! - [`error`]: the one error type of every step.

mod aggregate;
mod audience_read;
mod bulk_read;
mod env;
mod error;
// The load test's loopback HTTP client, shared rather than written twice.
#[path = "../../loadtest/src/http.rs"]
mod http;
mod idle_scan;
mod kafka_e2e;
mod kafka_rate;
mod lambda;
mod options;
mod phases;
mod push;
mod report;
mod runtime_api;
mod workload;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use env::{cleanup_interrupted, Servers};
use error::Error;
use options::{Options, Parsed, USAGE};
use report::{Line, Spread};

status_shared::use_mimalloc!();

fn main() -> ExitCode {
    status_shared::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(push::clients::SUBCOMMAND) {
        return fanout_clients(&args[1..]);
    }
    let options = match Options::parse(args) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("status-bench: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("status-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(options))
}

/// The client process of `push_fanout_10000` ([`push::clients`]).
fn fanout_clients(args: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("status-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if runtime.block_on(push::clients::main(args)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(options: Options) -> ExitCode {
    let servers = match Servers::from_env().await {
        Ok(servers) => servers,
        Err(error) => {
            eprintln!("status-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        failures = figures(&options, &servers) => {
            if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        _ = tokio::signal::ctrl_c() => {
            // The figures' future is dropped by now, which kills any
            // function process it started; what remains is data.
            eprintln!("status-bench: interrupted; removing the runs' databases, keys and tables");
            cleanup_interrupted(&servers).await;
            ExitCode::from(130)
        }
    }
}

/// Runs every wanted figure, the expensive idle scan last; returns how many
/// failed.
async fn figures(options: &Options, servers: &Servers) -> usize {
    let mut failures = 0;
    let mut figure = |name: &'static str, outcome: Result<(), Error>| {
        if let Err(error) = outcome {
            failures += 1;
            eprintln!("status-bench: {name} failed: {error}");
            Line::new(name).value("failed", "yes").print();
        }
    };
    if options.wants("bulk_read_hot_1000") {
        figure("bulk_read_hot_1000", bulk_read_hot(options, servers).await);
    }
    if options.wants("bulk_read_hot_1000_audience") {
        figure("bulk_read_hot_1000_audience", bulk_read_audience(options, servers).await);
    }
    if options.wants("bulk_read_cold_1000") {
        figure("bulk_read_cold_1000", bulk_read_cold(options, servers).await);
    }
    if options.wants("aggregate_batch_10000") {
        figure("aggregate_batch_10000", aggregate_batch(options, servers).await);
    }
    if options.wants("cold_init") {
        figure("cold_init", cold_init(options, servers).await);
    }
    if options.wants("peak_rss_10000") {
        figure("peak_rss_10000", peak_rss(options, servers).await);
    }
    if options.wants("kafka_e2e") {
        figure("kafka_e2e", kafka_e2e(options, servers).await);
    }
    if options.wants("push_e2e") {
        figure("push_e2e", push::figures::push_e2e(options, servers).await);
    }
    if options.wants("push_fanout_10000") {
        figure("push_fanout_10000", push::figures::push_fanout(options, servers).await);
    }
    if options.wants("stream_subscribe_1000") {
        figure("stream_subscribe_1000", push::figures::stream_subscribe(options, servers).await);
    }
    if options.wants("stream_resume_1000") {
        figure("stream_resume_1000", push::figures::stream_resume(options, servers).await);
    }
    // Last: removing a million users leaves Redis and MariaDB freeing
    // memory and purging rows for a while, which would slow what follows.
    if options.wants("idle_scan_1m") {
        figure("idle_scan_1m", idle_scan(options, servers).await);
    }
    failures
}

/// The longest one run of a figure may take before it is abandoned (and
/// its database, keys and tables removed): far beyond what any run needs,
/// so only a hung server trips it.
const RUN_LIMIT: Duration = Duration::from_secs(10 * 60);
/// The same for the idle scan, whose population alone takes a minute per
/// million users.
const SCAN_RUN_LIMIT: Duration = Duration::from_secs(60 * 60);

/// Runs `one` `runs` times, saying on stderr how far it got.
async fn runs<T, F, Fut>(
    servers: &Servers,
    name: &str,
    runs: usize,
    limit: Duration,
    mut one: F,
) -> Result<Vec<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut out = Vec::with_capacity(runs);
    for run in 1..=runs {
        eprintln!("status-bench: {name}: run {run}/{runs}");
        match tokio::time::timeout(limit, one()).await {
            Ok(result) => out.push(result?),
            Err(_) => {
                // The run was dropped mid-way; what it created is still
                // registered, so remove it here.
                cleanup_interrupted(servers).await;
                return Err(format!("run {run} did not finish within {limit:?}").into());
            }
        }
    }
    Ok(out)
}

fn spread<T>(runs: &[T], f: impl Fn(&T) -> f64) -> Spread {
    Spread::of(&runs.iter().map(f).collect::<Vec<_>>())
}

async fn bulk_read_hot(options: &Options, servers: &Servers) -> Result<(), Error> {
    let n = options.hot_iterations;
    let all = runs(servers, "bulk_read_hot_1000", options.runs, RUN_LIMIT, || bulk_read::hot_run(servers, n)).await?;
    let p99 = spread(&all, |r| r.p(0.99));
    let ratio = spread(&all, |r| r.p(0.99) / r.floor_p(0.99));
    let ratio_seed = spread(&all, |r| r.p(0.99) / r.seed_floor_p(0.99));
    Line::new("bulk_read_hot_1000")
        .spread("p50_ms", spread(&all, |r| r.p(0.5)), 2)
        .spread("p99_ms", p99, 2)
        .spread("floor_p50_ms", spread(&all, |r| r.floor_p(0.5)), 2)
        .spread("floor_p99_ms", spread(&all, |r| r.floor_p(0.99)), 2)
        .spread("ratio_p99", ratio, 2)
        .spread("seed_floor_p50_ms", spread(&all, |r| r.seed_floor_p(0.5)), 2)
        .spread("seed_floor_p99_ms", spread(&all, |r| r.seed_floor_p(0.99)), 2)
        .spread("ratio_seed_p99", ratio_seed, 2)
        .spread("lambda_gb_s", spread(&all, |r| bulk_read::lambda_gb_s(r.p(0.5))), 6)
        .value("runs", all.len())
        .value("iterations", n)
        .value("ids", bulk_read::IDS)
        .value("target_p99_ms", 5)
        .value("target_ratio_seed_p99", 1.2)
        .meets(p99.median < 5.0 && ratio_seed.median <= 1.2)
        .print();
    Ok(())
}

async fn bulk_read_audience(options: &Options, servers: &Servers) -> Result<(), Error> {
    let n = options.hot_iterations;
    let name = "bulk_read_hot_1000_audience";
    let all = runs(servers, name, options.runs, RUN_LIMIT, || audience_read::run(servers, n)).await?;
    let ratio_seed = spread(&all, |r| r.p(0.99) / r.seed_floor_p(0.99));
    Line::new(name)
        .spread("p50_ms", spread(&all, |r| r.p(0.5)), 2)
        .spread("p99_ms", spread(&all, |r| r.p(0.99)), 2)
        .spread("floor_p50_ms", spread(&all, |r| r.floor_p(0.5)), 2)
        .spread("floor_p99_ms", spread(&all, |r| r.floor_p(0.99)), 2)
        .spread("ratio_p99", spread(&all, |r| r.p(0.99) / r.floor_p(0.99)), 2)
        .spread("seed_floor_p99_ms", spread(&all, |r| r.seed_floor_p(0.99)), 2)
        .spread("ratio_seed_p99", ratio_seed, 2)
        .value("runs", all.len())
        .value("iterations", n)
        .value("ids", bulk_read::IDS)
        .value("with_audience", audience_read::WITH_AUDIENCE)
        .value("target_ratio_seed_p99", 1.3)
        .meets(ratio_seed.median <= 1.3)
        .print();
    Ok(())
}

async fn bulk_read_cold(options: &Options, servers: &Servers) -> Result<(), Error> {
    let n = options.cold_iterations;
    let all = runs(servers, "bulk_read_cold_1000", options.runs, RUN_LIMIT, || bulk_read::cold_run(servers, n)).await?;
    let p99 = spread(&all, |r| r.p(0.99));
    Line::new("bulk_read_cold_1000")
        .spread("p50_ms", spread(&all, |r| r.p(0.5)), 2)
        .spread("p99_ms", p99, 2)
        .value("runs", all.len())
        .value("iterations", n)
        .value("ids", bulk_read::IDS)
        .value("target_p99_ms", 50)
        .meets(p99.median < 50.0)
        .print();
    Ok(())
}

async fn aggregate_batch(options: &Options, servers: &Servers) -> Result<(), Error> {
    let batches = options.batches;
    let all =
        runs(servers, "aggregate_batch_10000", options.runs, RUN_LIMIT, || aggregate::run(servers, batches)).await?;
    let events_per_s = spread(&all, |r| r.events_per_s);
    let round_trips_10 = all.iter().map(|r| r.round_trips_10).max().unwrap_or(0);
    let round_trips_10000 = all.iter().map(|r| r.round_trips_10000).max().unwrap_or(0);
    let mut line = Line::new("aggregate_batch_10000")
        .spread("events_per_s", events_per_s, 0)
        .spread("floor_events_per_s", spread(&all, |r| r.floor_events_per_s), 0)
        .spread("ratio", spread(&all, |r| r.floor_events_per_s / r.events_per_s), 2)
        .median("floor_sql_ms", spread(&all, |r| r.floor_sql_ms), 1)
        .median("floor_redis_ms", spread(&all, |r| r.floor_redis_ms), 1)
        .median("handler_ms", spread(&all, |r| r.handler_ms), 1);
    // Where the handler's time goes, per batch: each phase's median.
    if let Some(first) = all.first() {
        for (i, (name, _)) in first.phases_ms.iter().enumerate() {
            let phase = spread(&all, |r| r.phases_ms.get(i).map_or(f64::NAN, |(_, ms)| *ms));
            line = line.median(&format!("phase_{name}_ms"), phase, 1);
        }
    }
    line.value("round_trips_10", round_trips_10)
        .value("round_trips_10000", round_trips_10000)
        .median("first_batch_events_per_s", spread(&all, |r| r.first_events_per_s), 0)
        .value("retried", all.iter().map(|r| r.retried).sum::<usize>())
        .value("events", aggregate::EVENTS)
        .value("users", aggregate::USERS)
        .value("batches", batches)
        .value("runs", all.len())
        .value("target_events_per_s", 50_000)
        .meets(events_per_s.median >= 50_000.0 && round_trips_10000 == round_trips_10)
        .print();
    Ok(())
}

async fn idle_scan(options: &Options, servers: &Servers) -> Result<(), Error> {
    let users = options.scan_users;
    let all =
        runs(servers, "idle_scan_1m", options.scan_runs, SCAN_RUN_LIMIT, || idle_scan::run(servers, users)).await?;
    let sweep_s = spread(&all, |r| r.sweep_s);
    let last = all.last().ok_or("no run")?;
    Line::new("idle_scan_1m")
        .spread("sweep_s", sweep_s, 2)
        .spread("second_sweep_s", spread(&all, |r| r.second_sweep_s), 3)
        .value("users", last.users)
        .value("shards", env::SHARDS)
        .value("stale", last.stale)
        .value("scanned", last.scanned)
        .value("written", last.written)
        .value("transitions", last.transitions)
        .value("second_scanned", last.second_scanned)
        .spread("rebuild_s", spread(&all, |r| r.rebuild_s), 2)
        .value("rebuilt", last.rebuilt)
        .median("populate_s", spread(&all, |r| r.populate_s), 1)
        .value("runs", all.len())
        .value("target_sweep_s", 30)
        .meets(sweep_s.median < 30.0 && all.iter().all(|r| r.written as u64 == r.stale))
        .print();
    Ok(())
}

async fn cold_init(options: &Options, servers: &Servers) -> Result<(), Error> {
    let dir = lambda::bin_dir(options.bin_dir.as_deref())?;
    let all = runs(servers, "cold_init", options.runs, RUN_LIMIT, || lambda::cold_init_run(servers, &dir)).await?;
    for (i, function) in lambda::FUNCTIONS.iter().enumerate() {
        let times = spread(&all, |r| report::ms(r[i]));
        Line::new("cold_init")
            .value("function", function.binary)
            .number("p50_ms", times.median, 1)
            .number("min_ms", times.min, 1)
            .number("max_ms", times.max, 1)
            .value("runs", all.len())
            .value("target_ms", 50)
            .meets(times.median < 50.0)
            .print();
    }
    Ok(())
}

async fn peak_rss(options: &Options, servers: &Servers) -> Result<(), Error> {
    let dir = lambda::bin_dir(options.bin_dir.as_deref())?;
    let all = runs(servers, "peak_rss_10000", options.runs, RUN_LIMIT, || lambda::peak_rss_run(servers, &dir)).await?;
    let mb = spread(&all, |r| *r);
    Line::new("peak_rss_10000")
        .spread("peak_rss_mb", mb, 1)
        .value("function", "aggregator")
        .value("events", aggregate::EVENTS)
        .value("users", aggregate::USERS)
        .value("runs", all.len())
        .value("target_mb", 128)
        .meets(mb.max < 128.0)
        .print();
    Ok(())
}

async fn kafka_e2e(options: &Options, servers: &Servers) -> Result<(), Error> {
    let window = std::time::Duration::from_millis(local_stack::kafka::settings::EVENT_SOURCE.batching_window_ms);
    let shape = kafka_e2e::Shape {
        probes: options.kafka_probes,
        events: options.kafka_events,
        users: options.kafka_users,
        batch_size: options.kafka_batch_size,
        compression: options.kafka_compression,
        window,
        rate: options.kafka_rate,
    };
    let all = runs(servers, "kafka_e2e", options.runs, RUN_LIMIT, || kafka_e2e::run(servers, shape)).await?;
    let (p50, p99, events_per_s) = kafka_e2e::spreads(&all);
    let lost: usize = all.iter().map(|r| r.lost).sum();
    let target_p99_ms = window.as_millis() as f64 + 250.0;
    Line::new("kafka_e2e")
        .spread("p50_ms", p50, 1)
        .spread("p99_ms", p99, 1)
        .median("first_probe_ms", spread(&all, |r| crate::report::ms(r.first_probe)), 1)
        .spread("events_per_s", events_per_s, 0)
        .median("produce_per_s", spread(&all, |r| r.produce_per_s), 0)
        .value("lost", lost)
        .median("rate_p50_ms", spread(&all, |r| r.rate_p(0.5)), 1)
        .median("rate_p99_ms", spread(&all, |r| r.rate_p(0.99)), 1)
        .value("rate_events_per_s", shape.rate)
        .median("rate_kept_per_s", spread(&all, |r| r.at_rate.as_ref().map_or(0.0, |a| a.kept_per_s)), 0)
        .value("probes", shape.probes)
        .value("events", shape.events)
        .value("users", shape.users)
        .value("partitions", kafka_e2e::PARTITIONS)
        .value("batch_size", shape.batch_size)
        .value("window_ms", window.as_millis())
        .value("runs", all.len())
        .value("target_p99_ms", target_p99_ms)
        .value("target_events_per_s", 20_000)
        .meets(p99.median < target_p99_ms && events_per_s.median >= 20_000.0 && lost == 0)
        .print();
    Ok(())
}
