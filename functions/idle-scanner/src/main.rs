//! `IdleScannerFunction`: wiring only. Clients are built once per process;
//! errors reach the runtime through [`idle_scanner::error`]'s `Diagnostic`.

use idle_scanner::handler::AppScanner;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use status_shared::app::{now_ms, App};
use status_shared::config::Config;
use status_shared::telemetry::{functions, Metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let scanner = &AppScanner::from_app(&app);
    let metrics = &Metrics::stdout(functions::IDLE_SCANNER);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        scanner.invoke(&event.payload, now_ms(), Some(&event.context.request_id), metrics).await
    }))
    .await
}
