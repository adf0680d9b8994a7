//! A WebSocket client of the local WebSocket API (DESIGN §12), as an app
//! holds one: tokio-tungstenite over loopback, `X-Local-User` standing for
//! the authorizer's approval of an end user.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Error;

/// How long any one answer may take before the figure fails: far beyond
/// what a loaded machine needs, so only a lost frame trips it.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// The read buffer of one client, in bytes: small, since 10,000 of them
/// share the process (tungstenite's default is 128 KiB each); it grows for
/// a larger frame.
const READ_BUFFER_BYTES: usize = 8 * 1024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One open connection.
pub struct Client {
    socket: Socket,
}

/// A data frame's entry for `user`, if it carries one.
pub fn entry_of(frame: &Value, user: u64) -> Option<&Value> {
    frame["statuses"].as_array()?.iter().find(|e| e["user_id"] == user)
}

impl Client {
    /// Connects as end user `viewer` (`X-Local-User`).
    pub async fn connect(ws_url: &str, viewer: u64) -> Result<Self, Error> {
        let mut request = ws_url.into_client_request()?;
        request.headers_mut().insert("X-Local-User", viewer.to_string().parse()?);
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (socket, _) = tokio::time::timeout(ANSWER_LIMIT, connecting).await.map_err(|_| "connect timed out")??;
        Ok(Self { socket })
    }

    /// Sends one text message.
    pub async fn send(&mut self, text: &str) -> Result<(), Error> {
        Ok(self.socket.send(Message::text(text)).await?)
    }

    /// `subscribe` for `users`, resuming from `since` when given.
    pub async fn subscribe(&mut self, users: &[u64], since: Option<&str>) -> Result<(), Error> {
        let mut body = serde_json::json!({ "action": "subscribe", "user_ids": users });
        if let Some(cursor) = since {
            body["since"] = Value::from(cursor);
        }
        self.send(&body.to_string()).await
    }

    /// The next text frame as JSON, or `None` once `deadline` has passed.
    /// A closed connection or an `error` frame is an error.
    pub async fn next_until(&mut self, deadline: Instant) -> Result<Option<Value>, Error> {
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return Ok(None);
            };
            match frame.ok_or("the server closed the connection")?? {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(text.as_str())?;
                    if value["type"] == "error" {
                        return Err(format!("the server answered an error frame: {value}").into());
                    }
                    return Ok(Some(value));
                }
                Message::Close(close) => return Err(format!("the server closed the connection: {close:?}").into()),
                _ => continue,
            }
        }
    }

    /// The next text frame, waiting at most [`ANSWER_LIMIT`].
    pub async fn next(&mut self) -> Result<Value, Error> {
        self.next_until(Instant::now() + ANSWER_LIMIT).await?.ok_or_else(|| "no frame within the limit".into())
    }

    /// Frames until the last part of a `kind` answer (`snapshot` or
    /// `delta`), returned with every frame before it in arrival order
    /// (`status` frames may come between the parts' turns).
    pub async fn answer(&mut self, kind: &str) -> Result<Vec<Value>, Error> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await?;
            let done = frame["type"] == kind && frame["part"].as_u64().is_some() && frame["part"] == frame["parts"];
            frames.push(frame);
            if done {
                return Ok(frames);
            }
        }
    }

    /// A `ping` and its `pong`, skipping any data frame meanwhile.
    pub async fn ping(&mut self) -> Result<(), Error> {
        self.send(r#"{"action":"ping"}"#).await?;
        while self.next().await?["type"] != "pong" {}
        Ok(())
    }

    /// Closes the connection, as a client going away does.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.socket.close(None)).await;
    }
}
