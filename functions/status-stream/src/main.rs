//! `StatusStreamFunction`: wiring only. Clients are built once per process.
//! A fan-out that left a connection unserved fails the invocation, so an
//! asynchronous invocation is retried (and sends only what did not go out).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use status_shared::app::{now_ms, App};
use status_shared::config::Config;
use status_shared::telemetry::{functions, Metrics};
use status_stream::handler::AppStream;

status_shared::use_mimalloc!();

#[tokio::main]
async fn main() -> Result<(), Error> {
    status_shared::allocator::keep_freed_memory();
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let stream = &AppStream::from_app(&app);
    let metrics = &Metrics::stdout(functions::STATUS_STREAM);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = Some(event.context.request_id.as_str());
        stream.invoke_measured(&event.payload, now_ms(), request_id, metrics).await.map_err(Error::from)
    }))
    .await
}
