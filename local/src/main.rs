//! `online-status-local`: wiring only. Reads the environment, prepares the
//! local resources, prints the URLs, serves until Ctrl-C or SIGTERM.
//! `online-status-local produce --user 42 ...` publishes one presence event
//! to the local Kafka instead (see [`local_stack::kafka::produce`]).

use std::process::ExitCode;

use local_stack::kafka::produce::{presence_value, PresenceProducer, ProduceArgs, USAGE};
use local_stack::kafka::settings::{KafkaSettings, DEFAULT_BOOTSTRAP_SERVERS};
use local_stack::server::shutdown_signal;
use local_stack::settings::Settings;
use local_stack::Stack;
use status_shared::error::chain;
use tracing_subscriber::EnvFilter;

status_shared::use_mimalloc!();

#[tokio::main]
async fn main() -> ExitCode {
    status_shared::allocator::keep_freed_memory();
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("produce") {
        return produce(args.skip(1)).await;
    }
    // Logs go to stderr so stdout carries only the banner, which scripts
    // and tests read for the URLs. The scanner logs every shard it scans;
    // with the timer scanning all shards each minute that is noise locally,
    // so it speaks only of problems unless RUST_LOG says otherwise.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,status_shared::services::scan=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let started = match Settings::from_env() {
        Ok(settings) => Stack::start(settings).await,
        Err(error) => Err(error.into()),
    };
    let stack = match started {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("online-status-local: {}", chain(&error));
            return ExitCode::FAILURE;
        }
    };
    println!("{}", stack.banner());
    if let Err(error) = stack.serve(shutdown_signal()).await {
        eprintln!("online-status-local: {error}");
        return ExitCode::FAILURE;
    }
    eprintln!("online-status-local: stopped");
    ExitCode::SUCCESS
}

/// `produce`: one presence event, keyed by the user id, to the topic the
/// stack's poller reads; prints where it landed.
async fn produce(args: impl Iterator<Item = String>) -> ExitCode {
    let args = match ProduceArgs::parse(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("online-status-local produce: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = match KafkaSettings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(Some(settings)) => settings,
        Ok(None) => KafkaSettings::defaults(DEFAULT_BOOTSTRAP_SERVERS),
        Err(error) => {
            eprintln!("online-status-local produce: {error}");
            return ExitCode::from(2);
        }
    };
    let ts_ms = args.ts_ms.unwrap_or_else(status_shared::app::now_ms);
    let value = presence_value(&args.kind, args.user_id, &args.session_id, args.device.as_deref(), ts_ms);
    let sent = match PresenceProducer::new(&settings.bootstrap_servers, &settings.topic, 0) {
        Ok(producer) => producer.send(args.user_id, &value, &[]).await,
        Err(error) => Err(error),
    };
    match sent {
        Ok(delivered) => {
            println!(
                "{} partition {} offset {}: {}",
                settings.topic,
                delivered.partition,
                delivered.offset,
                String::from_utf8_lossy(&value)
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "online-status-local produce: could not publish to {} on {}: {error} (is the broker up? scripts/services.sh starts one)",
                settings.topic, settings.bootstrap_servers
            );
            ExitCode::FAILURE
        }
    }
}
