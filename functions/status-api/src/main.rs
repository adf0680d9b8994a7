//! `StatusApiFunction`: wiring only. Clients are built once per process.
//!
//! The function takes the raw event (`serde_json::Value`) rather than a
//! typed request, so an odd JWT claim is read by our tolerant parser
//! instead of failing the runtime's deserialization; it never fails, so
//! its error type is `Infallible`.

use std::convert::Infallible;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use status_api::handler::AppApi;
use status_shared::app::{now_ms, App};
use status_shared::config::Config;
use status_shared::telemetry::{functions, Metrics};

status_shared::use_mimalloc!();

#[tokio::main]
async fn main() -> Result<(), Error> {
    status_shared::allocator::keep_freed_memory();
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let api = &AppApi::from_app(&app);
    let metrics = &Metrics::stdout(functions::STATUS_API);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let answer = api.invoke(&event.payload, now_ms(), Some(&event.context.request_id), metrics).await;
        Ok::<_, Infallible>(answer.into_apigw_json())
    }))
    .await
}
