//! `IdleScannerFunction`: wiring only. Clients are built once per process.

use idle_scanner::handler::{scan, shards_of};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use status_shared::app::{now_ms, App};
use status_shared::config::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::start(Config::from_env()?).await?;
    let committer = app.committer();
    let (committer, shards) = (&committer, app.config.shards);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let wanted = shards_of(&event.payload, shards)?;
        let summary = scan(committer, &wanted, now_ms()).await;
        if !summary.failed.is_empty() {
            // Fail the invocation so the Errors alarm sees it; the shards
            // that succeeded keep their work.
            return Err(Error::from(format!("shards failed: {:?}", summary.failed)));
        }
        Ok(summary)
    }))
    .await
}
