//! `AggregatorFunction`: wiring only. Clients are built once per process;
//! errors reach the runtime through [`aggregator::error`]'s `Diagnostic`.

use aggregator::error::AggregatorError;
use aggregator::handler::{read_batch, AppAggregator};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use status_shared::app::{now_ms, App};
use status_shared::config::Config;
use status_shared::telemetry::{functions, Metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let aggregator = &AppAggregator::from_app(&app);
    let metrics = &Metrics::stdout(functions::AGGREGATOR);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let batch = read_batch(event.payload).map_err(AggregatorError::InvalidEvent)?;
        aggregator.invoke(&batch, now_ms(), Some(&event.context.request_id), metrics).await
    }))
    .await
}
