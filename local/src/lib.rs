//! The whole online status service in one local process, without docker:
//! what `sam local start-api` and `sam local start-lambda` serve together,
//! plus the idle scanner's schedule (DESIGN §9). The three functions'
//! handlers are linked in and called directly, each wired as its Lambda
//! `main.rs` wires it, so local traffic runs the deployed code paths.
//!
//! # Layout
//!
//! - [`settings`]: the environment, with local defaults for what the SAM
//!   template would set.
//! - [`setup`]: creates what the template owns in AWS (database and schema,
//!   tables, bus), idempotently.
//! - [`functions`]: the three handlers behind one `invoke`.
//! - [`metrics`]: the functions' EMF metrics as running totals, served at
//!   `/local/metrics`.
//! - [`apigw`]: an HTTP request as an API Gateway payload v2 event.
//! - [`asynchronous`]: `Event` invocations run in the background, retried
//!   as Lambda retries them.
//! - [`server`]: the HTTP API, both endpoints' listeners, the scan timer,
//!   shutdown; [`invoke`]: the Invoke API; [`http`]: what both answer with.
//! - [`kafka`]: the topic, the MSK event source poller in front of the
//!   aggregator, and the producer.
//! - [`websocket`]: the WebSocket API and its `@connections` management
//!   API on one port, generic over the handler behind its routes.
//! - [`Stack`]: all of it started, for `main.rs` to serve.

pub mod apigw;
pub mod asynchronous;
pub mod functions;
pub mod http;
pub mod invoke;
pub mod kafka;
pub mod metrics;
pub mod provision;
pub mod server;
pub mod settings;
pub mod setup;
pub mod websocket;

use std::sync::Arc;

use status_shared::adapters::aws::load_config;
use status_shared::app::App;

use crate::functions::{Function, Functions};
use crate::kafka::{KafkaStartError, LocalKafka};
use crate::server::{BindError, Listeners};
use crate::settings::{Settings, SettingsError};
use crate::setup::{Prepared, SetupError};
use crate::websocket::{LocalWebSocketApi, WsHandler};

/// Why the local stack did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    App(#[from] status_shared::app::StartError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Kafka(#[from] KafkaStartError),
}

/// A started local stack: resources ready, ports bound, handlers built.
pub struct Stack {
    pub settings: Settings,
    pub prepared: Prepared,
    pub listeners: Listeners,
    pub functions: Arc<Functions>,
    /// The MSK event source poller, unless `KAFKA_BOOTSTRAP_SERVERS=off`.
    pub kafka: Option<LocalKafka>,
    /// The WebSocket API (DESIGN §12, "Locally"), with `StatusStreamFunction`
    /// behind its routes.
    pub websocket: (LocalWebSocketApi, WsHandler),
}

impl Stack {
    /// Prepares every resource, binds both ports, then builds the
    /// functions. The ports are bound before the functions are built so the
    /// push feed's Lambda client can be pointed at this stack's own Invoke
    /// API (`AWS_ENDPOINT_URL_LAMBDA`, unless set), port 0 included; nothing
    /// is served before [`Stack::serve`], so a URL that answers still means
    /// a stack that is ready.
    pub async fn start(mut settings: Settings) -> Result<Self, StartError> {
        let sdk = load_config().await;
        let prepared = setup::prepare(&settings, &sdk).await?;
        let listeners = Listeners::bind(settings.api_port, settings.invoke_port).await?;
        let websocket = LocalWebSocketApi::bind(settings.websocket.clone()).await?;
        settings.config.lambda_endpoint.get_or_insert_with(|| listeners.invoke_url());
        settings.config.stream.endpoint.get_or_insert_with(|| websocket.management_url());
        let app = App::start(settings.config.clone()).await?;
        let functions = Arc::new(Functions::new(&app));
        let kafka = match settings.kafka.clone() {
            Some(kafka) => Some(kafka::start(kafka, functions.clone(), &sdk).await?),
            None => None,
        };
        let websocket = (websocket, stream_handler(functions.clone()));
        Ok(Self { settings, prepared, listeners, functions, kafka, websocket })
    }

    /// What the stack serves, for people: the URLs first, one per line
    /// (scripts and the end-to-end test read them from stdout).
    pub fn banner(&self) -> String {
        let config = &self.settings.config;
        let functions = "{AggregatorFunction|IdleScannerFunction|StatusApiFunction|StatusStreamFunction}";
        let mut lines = vec![
            "online-status-local: the online status service is up".to_owned(),
            format!("  HTTP API    {}", self.listeners.api_url()),
            "              header X-Local-User: <id> calls as that user (JWT); no header is a service (IAM)".to_owned(),
            format!("  Invoke API  {}", self.listeners.invoke_url()),
            format!("              POST /2015-03-31/functions/{functions}/invocations"),
            format!(
                "  metrics     {}/local/metrics (totals of every function's EMF metrics)",
                self.listeners.invoke_url().trim_end_matches('/')
            ),
        ];
        let (api, _) = &self.websocket;
        lines.push(format!("  WebSocket   {}", api.ws_url()));
        lines.push("              header X-Local-User: <id> connects as that user; no header is a service".to_owned());
        lines.push(format!("              management {}/@connections/{{connectionId}}", api.management_url()));
        lines.push(match self.settings.scan_interval {
            Some(every) => format!("  idle scan   all {} shards every {} s", config.shards, every.as_secs()),
            None => "  idle scan   timer off (LOCAL_SCAN_INTERVAL_S=0)".to_owned(),
        });
        if let Some(bus) = &config.status_event_bus {
            let queue = self.prepared.events_queue_url.as_deref().map(|q| format!(", copied to {q}"));
            lines.push(format!("  events      status_changed on bus {bus}{}", queue.unwrap_or_default()));
        }
        if let Some(function) = &config.stream_function {
            let endpoint = config.lambda_endpoint.as_deref().unwrap_or("the SDK's Lambda endpoint");
            lines.push(format!("  push feed   every change -> {function} (Event) at {endpoint}"));
        }
        match &self.kafka {
            Some(k) => {
                let s = &k.settings;
                lines.push(format!(
                    "  kafka       {} topic {} ({} partitions) -> AggregatorFunction, group {}",
                    s.bootstrap_servers, s.topic, k.partitions, s.consumer_group
                ));
                lines.push(format!(
                    "              batch {} records or {} ms, from {}, {} retries, then {}",
                    s.batch_size,
                    s.batching_window.as_millis(),
                    s.starting_position.name(),
                    s.max_retries,
                    k.on_failure_queue_url
                ));
            }
            None => lines.push("  kafka       poller off (KAFKA_BOOTSTRAP_SERVERS=off)".to_owned()),
        }
        lines.push(format!("  redis       {}", redact(&config.redis_url)));
        lines.push(format!("  database    {}", redact(&config.database_url)));
        lines.push(format!("  aws         {}", self.settings.aws_endpoint));
        lines.push("Ctrl-C stops.".to_owned());
        lines.join("\n")
    }

    /// Serves until `shutdown` resolves, then drains.
    /// The poller stops after the endpoints have drained: a batch in its
    /// function call finishes and is committed, and nothing new is read.
    /// The WebSocket API stops with the HTTP endpoints. Errors (after the
    /// same drain) when the poller stopped on its own ([`Poller::failed`]):
    /// a stack that polls nothing does not go on serving as if it did.
    ///
    /// [`Poller::failed`]: kafka::poller::Poller::failed
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), PollerStopped> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (api, handler) = self.websocket;
        let websocket = {
            let mut stopped = stopped.clone();
            tokio::spawn(api.serve(handler, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        };
        let failed = self.kafka.as_ref().map_or_else(|| tokio::sync::watch::channel(None).1, |k| k.poller.failed());
        let poller = self.kafka.map(|k| {
            let mut stopped = stopped;
            tokio::spawn(k.poller.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let mut watching = failed.clone();
        let either = async move {
            tokio::select! {
                () = shutdown => {}
                // A closed channel (no poller, or it ended) is no failure.
                Ok(_) = watching.wait_for(Option::is_some) => {}
            }
        };
        server::serve(self.listeners, self.functions, self.settings.scan_interval, either).await;
        let _ = stop.send(true);
        let _ = websocket.await;
        if let Some(poller) = poller {
            let _ = poller.await;
        }
        let reason = failed.borrow().clone();
        reason.map_or(Ok(()), |reason| Err(PollerStopped { reason }))
    }
}

/// The Kafka poller stopped on its own while the stack served.
#[derive(Debug, thiserror::Error)]
#[error("the Kafka poller stopped ({reason}); the stack stopped with it. If another stack polls the same consumer group, give each its own KAFKA_INSTANCE_ID")]
pub struct PollerStopped {
    pub reason: String,
}

/// `StatusStreamFunction` behind the WebSocket API's routes: each proxy
/// event is one invocation, and a function error is what API Gateway sees
/// when the Lambda fails.
fn stream_handler(functions: Arc<Functions>) -> WsHandler {
    websocket::ws_handler(move |event| {
        let functions = functions.clone();
        async move {
            let bytes = serde_json::to_vec(&event).map_err(|e| websocket::HandlerError::new(e.to_string()))?;
            functions
                .invoke(Function::StatusStream, &bytes, status_shared::app::now_ms())
                .await
                .map_err(|e| websocket::HandlerError::new(e.message()))
        }
    })
}

/// `url` with any password replaced by `***`, so a banner or a log line
/// never shows a credential from `DATABASE_URL` or `REDIS_URL`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_in_urls_are_never_shown() {
        assert_eq!(redact("mysql://app:s3cret@db:3306/online_status"), "mysql://app:***@db:3306/online_status");
        assert_eq!(redact("redis://:pw@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
        assert_eq!(redact("mysql://root@127.0.0.1:3306/online_status"), "mysql://root@127.0.0.1:3306/online_status");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
