//! A local WebSocket API on a free port with a recording handler, and a
//! real WebSocket client for it. Each test starts its own gateway, so
//! tests run in parallel without sharing anything.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use local_stack::websocket::{ws_handler, GatewaySettings, HandlerError, LocalWebSocketApi};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that must happen; far above what
/// any of it takes, so only a missing event fails a test.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// What the recording handler answers `$connect`.
pub type ConnectAnswer = Arc<dyn Fn(&Value) -> Result<Value, HandlerError> + Send + Sync>;

/// A running gateway whose handler records every event it is given.
pub struct Harness {
    pub ws_url: String,
    pub management_url: String,
    events: mpsc::UnboundedReceiver<Value>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    /// Every event so far, in the order the handler was called.
    pub log: Arc<Mutex<Vec<Value>>>,
    /// Set when the handler was ever running two message calls at once
    /// (the test handler runs one connection at a time).
    pub overlap: Arc<AtomicBool>,
}

/// Options of the recording handler.
pub struct Behaviour {
    pub connect: ConnectAnswer,
    /// Message bodies that make the handler fail, as a function error.
    pub fail_on: Option<String>,
    /// A pause in each message call, to show calls do not overlap.
    pub message_delay: Duration,
    pub settings: GatewaySettings,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            connect: Arc::new(|_| Ok(json!({ "statusCode": 200 }))),
            fail_on: None,
            message_delay: Duration::ZERO,
            settings: GatewaySettings { port: 0, ..GatewaySettings::default() },
        }
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(Behaviour::default()).await
    }

    pub async fn with(behaviour: Behaviour) -> Self {
        let api = LocalWebSocketApi::bind(behaviour.settings.clone()).await.expect("a free port");
        let (ws_url, management_url) = (api.ws_url(), api.management_url());
        let (tx, events) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(Mutex::new(0u32));
        let overlap = Arc::new(AtomicBool::new(false));
        let flagged = overlap.clone();
        let (recorded, connect, fail_on, delay) =
            (log.clone(), behaviour.connect.clone(), behaviour.fail_on.clone(), behaviour.message_delay);
        let handler = ws_handler(move |event: Value| {
            let (tx, recorded, connect, fail_on, in_flight, overlapped) =
                (tx.clone(), recorded.clone(), connect.clone(), fail_on.clone(), in_flight.clone(), flagged.clone());
            async move {
                recorded.lock().unwrap().push(event.clone());
                let _ = tx.send(event.clone());
                match event["requestContext"]["eventType"].as_str() {
                    Some("CONNECT") => connect(&event),
                    Some("MESSAGE") => {
                        {
                            let mut n = in_flight.lock().unwrap();
                            *n += 1;
                            if *n > 1 {
                                overlapped.store(true, Ordering::SeqCst);
                            }
                        }
                        tokio::time::sleep(delay).await;
                        *in_flight.lock().unwrap() -= 1;
                        if fail_on.is_some() && event["body"].as_str() == fail_on.as_deref() {
                            return Err(HandlerError::new("boom"));
                        }
                        Ok(json!({ "statusCode": 200 }))
                    }
                    _ => Ok(json!({ "statusCode": 200 })),
                }
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(api.serve(handler, async {
            let _ = stopped.await;
        }));
        Self { ws_url, management_url, events, stop: Some(stop), served: Some(served), log, overlap }
    }

    /// The next event the handler was given.
    pub async fn next_event(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, self.events.recv()).await.expect("an event in time").expect("the gateway runs")
    }

    /// Connects with `X-Local-User: {user}` when given.
    pub async fn connect(&self, user: Option<&str>) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = self.ws_url.as_str().into_client_request().expect("a ws url");
        if let Some(user) = user {
            request.headers_mut().insert("X-Local-User", HeaderValue::from_str(user).expect("a header value"));
        }
        request.headers_mut().insert("User-Agent", HeaderValue::from_static("ws-test/1.0"));
        connect_async(request).await.map(|(client, _)| client)
    }

    /// Connects and returns the client with its `$connect` event.
    pub async fn open(&mut self, user: Option<&str>) -> (Client, Value) {
        let client = self.connect(user).await.expect("the upgrade is accepted");
        let event = self.next_event().await;
        assert_eq!(event["requestContext"]["eventType"], "CONNECT");
        (client, event)
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("the gateway stops cleanly");
        }
    }
}

/// The next data or close message the client reads.
pub async fn read(client: &mut Client) -> Option<Message> {
    loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.expect("a frame in time") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The connection id a `$connect` event names.
pub fn connection_id(event: &Value) -> String {
    event["requestContext"]["connectionId"].as_str().expect("a connection id").to_owned()
}
