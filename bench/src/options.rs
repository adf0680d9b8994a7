//! Command-line options. Every default is chosen so `scripts/bench.sh`
//! finishes within 15 minutes on the 2-core dev machine; the flags scale a
//! figure up or down without touching the code.

use std::path::PathBuf;

/// The figures, in the order they run (the expensive idle scan last), with
/// the names DESIGN §10 fixes.
pub const FIGURES: [&str; 12] = [
    "bulk_read_hot_1000",
    "bulk_read_hot_1000_audience",
    "bulk_read_cold_1000",
    "aggregate_batch_10000",
    "cold_init",
    "peak_rss_10000",
    "kafka_e2e",
    "push_e2e",
    "push_fanout_10000",
    "stream_subscribe_1000",
    "stream_resume_1000",
    "idle_scan_1m",
];

/// The producer codecs `--kafka-compression` takes (librdkafka's names).
pub const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

pub const USAGE: &str = "\
status-bench: the figures of DESIGN §10 against the local servers

usage: status-bench [options]

  --only NAME            run one figure (repeatable): bulk_read_hot_1000,
                         bulk_read_hot_1000_audience,
                         bulk_read_cold_1000, aggregate_batch_10000,
                         cold_init, peak_rss_10000, kafka_e2e, push_e2e,
                         push_fanout_10000, stream_subscribe_1000,
                         stream_resume_1000, idle_scan_1m
  --runs N               runs per figure; each figure prints the median,
                         min and max over its runs (default 5)
  --hot-iterations N     timed reads per run of bulk_read_hot_1000 and
                         bulk_read_hot_1000_audience (default 1000)
  --cold-iterations N    timed reads per run of bulk_read_cold_1000 (default 500)
  --batches N            timed 10,000-event batches per run of
                         aggregate_batch_10000 (default 5)
  --scan-users N         users of idle_scan_1m (default 1000000)
  --scan-runs N          runs of idle_scan_1m (default 1: it is expensive)
  --kafka-probes N       events timed one by one per run of kafka_e2e (default 40)
  --kafka-events N       events per run of kafka_e2e's throughput phase (default 100000)
  --kafka-users N        users those events are spread over (default 20000)
  --kafka-rate N         events/s of kafka_e2e's third phase, latency at a paced
                         rate (default 20000, the throughput target; 0 skips it)
  --kafka-batch-size N   the poller's MSK_BATCH_SIZE in kafka_e2e (default 100,
                         the event source's default; up to 10000); push_e2e too
  --kafka-compression C  the load producer's compression.type in kafka_e2e: none,
                         gzip, snappy, lz4 or zstd (default lz4, as gateway
                         producers batch and compress)
  --push-probes N        changes timed one by one per run of push_e2e (default 40,
                         up to 999: one subscribe watches them all)
  --fanout-connections N connections watching the one user of
                         push_fanout_10000 (default 10000)
  --fanout-changes N     changes of that user per run (default 10)
  --subscribe-iterations N  timed subscribes per run of stream_subscribe_1000
                         (default 200)
  --resume-connections N connections dropped and resumed per run of
                         stream_resume_1000 (default 1000)
  --bin-dir PATH         where the release function binaries are (default:
                         the directory of this executable)
  -h, --help             this text

servers (loopback only; the bench refuses anything else):
  BENCH_REDIS_URL        default redis://127.0.0.1:6379
  BENCH_DATABASE_URL     MariaDB server, default mysql://root@127.0.0.1:3306
  AWS_ENDPOINT_URL       the DynamoDB emulator, default http://127.0.0.1:5000
  KAFKA_BOOTSTRAP_SERVERS  the Kafka broker of kafka_e2e and push_e2e, default
                         127.0.0.1:9092

push_fanout_10000 runs its WebSocket clients in a child process (this
executable again), so each process holds one socket per connection; both
raise their open-files limit (to the hard limit, and beyond it as root)
and fail saying so when it stays too low.

Every run creates its own database, Redis key prefix and DynamoDB tables
and removes them afterwards; nothing else on the servers is touched.
";

/// What to run and how much.
#[derive(Clone, Debug)]
pub struct Options {
    pub only: Vec<String>,
    pub runs: usize,
    pub hot_iterations: usize,
    pub cold_iterations: usize,
    pub batches: usize,
    pub scan_users: u64,
    pub scan_runs: usize,
    pub kafka_probes: usize,
    pub kafka_events: u64,
    pub kafka_users: u64,
    pub kafka_rate: u64,
    pub kafka_batch_size: usize,
    /// The load producer's `compression.type` in kafka_e2e.
    pub kafka_compression: &'static str,
    pub push_probes: usize,
    pub fanout_connections: usize,
    pub fanout_changes: usize,
    pub subscribe_iterations: usize,
    pub resume_connections: usize,
    pub bin_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            only: Vec::new(),
            runs: 5,
            hot_iterations: 1000,
            cold_iterations: 500,
            batches: 5,
            scan_users: 1_000_000,
            scan_runs: 1,
            kafka_probes: 40,
            kafka_events: 100_000,
            kafka_users: 20_000,
            kafka_rate: 20_000,
            kafka_batch_size: 100,
            kafka_compression: "lz4",
            push_probes: 40,
            fanout_connections: 10_000,
            fanout_changes: 10,
            subscribe_iterations: 200,
            resume_connections: 1000,
            bin_dir: None,
        }
    }
}

/// What the command line asked for.
pub enum Parsed {
    Run(Options),
    Help,
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
                _ => (arg.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Ok(Parsed::Help);
            }
            let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--only" => {
                    let name = value()?;
                    if !FIGURES.contains(&name.as_str()) {
                        return Err(format!("unknown figure {name:?}; known: {}", FIGURES.join(", ")));
                    }
                    options.only.push(name);
                }
                "--runs" => options.runs = count(&flag, &value()?, 1, 100)?,
                "--hot-iterations" => options.hot_iterations = count(&flag, &value()?, 10, 100_000)?,
                "--cold-iterations" => options.cold_iterations = count(&flag, &value()?, 10, 100_000)?,
                "--batches" => options.batches = count(&flag, &value()?, 1, 1000)?,
                "--scan-users" => options.scan_users = count(&flag, &value()?, 1_000, 10_000_000)? as u64,
                "--scan-runs" => options.scan_runs = count(&flag, &value()?, 1, 100)?,
                "--kafka-probes" => options.kafka_probes = count(&flag, &value()?, 1, 10_000)?,
                "--kafka-events" => options.kafka_events = count(&flag, &value()?, 1_000, 10_000_000)? as u64,
                "--kafka-users" => options.kafka_users = count(&flag, &value()?, 1, 10_000_000)? as u64,
                "--kafka-rate" => options.kafka_rate = count(&flag, &value()?, 0, 1_000_000)? as u64,
                "--kafka-batch-size" => options.kafka_batch_size = count(&flag, &value()?, 1, 10_000)?,
                "--kafka-compression" => {
                    let codec = value()?;
                    options.kafka_compression = CODECS
                        .iter()
                        .find(|c| **c == codec)
                        .ok_or(format!("--kafka-compression is one of {}", CODECS.join(", ")))?;
                }
                "--push-probes" => options.push_probes = count(&flag, &value()?, 1, 999)?,
                "--fanout-connections" => options.fanout_connections = count(&flag, &value()?, 1, 50_000)?,
                "--fanout-changes" => options.fanout_changes = count(&flag, &value()?, 1, 1000)?,
                "--subscribe-iterations" => options.subscribe_iterations = count(&flag, &value()?, 10, 100_000)?,
                "--resume-connections" => options.resume_connections = count(&flag, &value()?, 1, 10_000)?,
                "--bin-dir" => options.bin_dir = Some(PathBuf::from(value()?)),
                _ => return Err(format!("unknown option {arg:?}")),
            }
        }
        Ok(Parsed::Run(options))
    }

    /// Whether `figure` is to run.
    pub fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure)
    }
}

fn count(flag: &str, raw: &str, min: usize, max: usize) -> Result<usize, String> {
    match raw.replace('_', "").parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} takes an integer from {min} to {max}, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        match Options::parse(args.iter().map(|a| a.to_string()))? {
            Parsed::Run(options) => Ok(options),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_run_everything_five_times() {
        let options = parse(&[]).unwrap();
        assert_eq!(options.runs, 5);
        assert_eq!(options.scan_users, 1_000_000);
        assert!(FIGURES.iter().all(|f| options.wants(f)));
    }

    #[test]
    fn only_narrows_and_values_parse_both_ways() {
        let options = parse(&["--only", "cold_init", "--runs=2", "--scan-users", "10_000"]).unwrap();
        assert!(options.wants("cold_init"));
        assert!(!options.wants("idle_scan_1m"));
        assert_eq!(options.runs, 2);
        assert_eq!(options.scan_users, 10_000);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(parse(&["--only", "everything"]).is_err());
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--runs"]).is_err());
        assert!(parse(&["--fast"]).is_err());
        assert!(matches!(Options::parse(["--help".to_string()]), Ok(Parsed::Help)));
    }

    #[test]
    fn the_load_producer_compresses_with_lz4_unless_told_another_codec() {
        assert_eq!(parse(&[]).unwrap().kafka_compression, "lz4");
        assert_eq!(parse(&["--kafka-compression", "none"]).unwrap().kafka_compression, "none");
        assert_eq!(parse(&["--kafka-compression", "zstd"]).unwrap().kafka_compression, "zstd");
        assert!(parse(&["--kafka-compression", "brotli"]).is_err());
    }

    #[test]
    fn the_paced_phase_defaults_to_the_throughput_target_and_zero_skips_it() {
        assert_eq!(parse(&[]).unwrap().kafka_rate, 20_000);
        assert_eq!(parse(&["--kafka-rate", "0"]).unwrap().kafka_rate, 0);
        assert!(parse(&["--kafka-rate", "fast"]).is_err());
        assert!(parse(&["--kafka-rate", "2000000"]).is_err());
    }
}
