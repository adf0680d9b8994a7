//! `online-status-local`: wiring only. Reads the environment, prepares the
//! local resources, prints the URLs, serves until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use local_stack::server::shutdown_signal;
use local_stack::settings::Settings;
use local_stack::Stack;
use status_shared::error::chain;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
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
    stack.serve(shutdown_signal()).await;
    eprintln!("online-status-local: stopped");
    ExitCode::SUCCESS
}
