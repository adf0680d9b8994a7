//! `AggregatorFunction`: wiring only. Clients are built once per process;
//! errors reach the runtime through [`aggregator::error`]'s `Diagnostic`.

use aggregator::handler::AppAggregator;
use aws_lambda_events::event::kafka::KafkaEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use status_shared::app::{now_ms, App};
use status_shared::config::Config;
use status_shared::telemetry::{functions, Metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let aggregator = &AppAggregator::from_app(&app);
    let metrics = &Metrics::stdout(functions::AGGREGATOR);
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        aggregator.invoke(&event.payload, now_ms(), Some(&event.context.request_id), metrics).await
    }))
    .await
}
