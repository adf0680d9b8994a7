//! `StatusApiFunction`: wiring only. Clients are built once per process.

use lambda_http::{run, service_fn, Error, Request};
use status_api::handler::StatusApi;
use status_api::request::ApiRequest;
use status_shared::app::{now_ms, App};
use status_shared::config::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let api = StatusApi { reader: app.reader(), committer: app.committer(), limiter: app.limiter.clone() };
    let api = &api;
    run(service_fn(move |request: Request| async move {
        let response = api.handle(&ApiRequest::from_lambda(&request), now_ms()).await;
        Ok::<_, Error>(response.into_http())
    }))
    .await
}
