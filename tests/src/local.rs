//! The local stack (`local_stack::Stack`) in the test's own process, on
//! free ports, with its own database, keys, tables and bus (removed when
//! dropped), no Kafka poller and no scan timer: the HTTP, Invoke and
//! WebSocket APIs exactly as `scripts/up.sh` serves them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use local_stack::functions::Functions;
use local_stack::settings::Settings;
use local_stack::Stack;

use crate::aws::{endpoint_url, sdk_config, AwsTables};
use crate::{clean_up_in_drop, database_server_url, forget_database_and_keys, redis_url, unique_tag};

/// A running in-process local stack; stops and cleans up when dropped.
pub struct InProcess {
    pub api_url: String,
    pub invoke_url: String,
    /// `ws://127.0.0.1:{port}`.
    pub ws_url: String,
    pub functions: Arc<Functions>,
    pub settings: Settings,
    pub database_url: String,
    pub key_prefix: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The repair and dead-letter tables the stack writes.
    pub tables: AwsTables,
    bus: String,
}

impl InProcess {
    /// Starts a stack named `name` (used in its database and key prefix)
    /// with `extra` variables over the isolating ones.
    pub async fn start(name: &str, extra: &[(&str, &str)]) -> Self {
        let tables = AwsTables::new().await;
        let tag = unique_tag();
        let database_url = format!("{}/status_{name}_{tag}", database_server_url());
        let (key_prefix, bus) = (format!("{name}{tag}:"), format!("status-{name}-events-{tag}"));
        let mut env: HashMap<&str, String> = HashMap::from([
            ("AWS_ENDPOINT_URL", endpoint_url()),
            ("REDIS_URL", redis_url()),
            ("DATABASE_URL", database_url.clone()),
            ("KEY_PREFIX", key_prefix.clone()),
            ("REPAIR_TABLE", tables.repair_table.clone()),
            ("DEAD_LETTER_TABLE", tables.dead_letter_table.clone()),
            ("STATUS_EVENT_BUS", bus.clone()),
            ("LOCAL_API_PORT", "0".into()),
            ("LOCAL_INVOKE_PORT", "0".into()),
            ("LOCAL_WS_PORT", "0".into()),
            ("LOCAL_SCAN_INTERVAL_S", "0".into()),
            ("KAFKA_BOOTSTRAP_SERVERS", "off".into()),
        ]);
        for (name, value) in extra {
            env.insert(name, (*value).to_owned());
        }
        let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("valid settings");
        let stack =
            Stack::start(settings).await.expect("the local stack starts (AWS_* set as scripts/test.sh sets them)");
        let (api_url, invoke_url) = (stack.listeners.api_url(), stack.listeners.invoke_url());
        let ws_url = stack.websocket.0.ws_url();
        let (functions, settings) = (stack.functions.clone(), stack.settings.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(stack.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            api_url,
            invoke_url,
            ws_url,
            functions,
            settings,
            database_url,
            key_prefix,
            stop: Some(stop),
            tables,
            bus,
        }
    }

    /// The sum of `metric` over the functions' metric totals.
    pub fn metric(&self, function: &str, metric: &str) -> f64 {
        let totals = self.functions.board.json();
        let rows = totals.as_array().cloned().unwrap_or_default();
        rows.iter()
            .filter(|r| r["function"] == function && r["metric"] == metric)
            .map(|r| r["sum"].as_f64().unwrap_or(0.0))
            .sum()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (database_url, prefix, bus) = (self.database_url.clone(), self.key_prefix.clone(), self.bus.clone());
        clean_up_in_drop(async move {
            forget_database_and_keys(&database_url, &redis_url(), &prefix).await;
            let events = aws_sdk_eventbridge::Client::new(&sdk_config().await);
            let _ = events.delete_event_bus().name(&bus).send().await;
        });
    }
}

/// One HTTP/1.1 request to `base` (`http://host:port`): the status code
/// and the JSON body (`Null` when there is none). `user` sends
/// `X-Local-User`, as an end user's call; `None` is a service's.
pub async fn request(base: &str, method: &str, path: &str, user: Option<u64>, body: Option<&Value>) -> (u16, Value) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the stack listens");
    let body = body.map(Value::to_string).unwrap_or_default();
    let who = user.map(|u| format!("X-Local-User: {u}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{who}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("request sent");
    stream.write_all(body.as_bytes()).await.expect("body sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response read");
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A WebSocket client of the local stack's WebSocket API.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl WsClient {
    /// Connects as end user `user` (`X-Local-User`), or as a service.
    pub async fn connect(ws_url: &str, user: Option<u64>) -> Self {
        match Self::try_connect(ws_url, user).await {
            Ok(client) => client,
            Err(status) => panic!("the WebSocket API refused the upgrade with {status}"),
        }
    }

    /// [`WsClient::connect`], or the HTTP status the upgrade was refused
    /// with.
    pub async fn try_connect(ws_url: &str, user: Option<u64>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Error;
        let mut request = ws_url.into_client_request().expect("a ws URL");
        if let Some(user) = user {
            request.headers_mut().insert("X-Local-User", user.to_string().parse().expect("a header value"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Self { socket }),
            Err(Error::Http(response)) => Err(response.status().as_u16()),
            Err(error) => panic!("the WebSocket API did not answer the upgrade: {error}"),
        }
    }

    /// The text frames that arrive until the server closes the connection
    /// (a close frame, or the stream's end); panics if it is still open
    /// after `wait`.
    pub async fn until_closed(&mut self, wait: Duration) -> Vec<Value> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => panic!("still open after {wait:?}; got {seen:?}"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return seen,
                Ok(Some(Ok(Message::Text(text)))) => {
                    seen.push(serde_json::from_str(text.as_str()).unwrap_or(Value::Null))
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends one text message.
    pub async fn send(&mut self, text: &str) {
        use futures::SinkExt;
        self.socket.send(Message::text(text)).await.expect("sent");
    }

    /// The next text frame as JSON, or `None` after `wait` or on close.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()??.ok()?;
            match frame {
                Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Frames until one satisfies `done` (returned with those before it),
    /// or panics after `wait`.
    pub async fn until(&mut self, wait: Duration, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.next(left).await else {
                panic!("no frame matched within {wait:?}; got {seen:?}");
            };
            let matched = done(&frame);
            seen.push(frame);
            if matched {
                return seen;
            }
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
