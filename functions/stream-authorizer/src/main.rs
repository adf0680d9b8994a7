//! `StreamAuthorizerFunction`: wiring only. The verifier and its key cache
//! live for the process; errors reach the runtime through
//! [`stream_authorizer::error`]'s `Diagnostic`.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use status_shared::app::now_ms;
use stream_authorizer::config::AuthConfig;
use stream_authorizer::handler::Authorizer;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let authorizer = &Authorizer::new(AuthConfig::from_env()?)?;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        authorizer.handle(&event.payload, now_ms(), Some(&event.context.request_id)).await
    }))
    .await
}
