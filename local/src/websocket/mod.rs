//! The local stand-in for API Gateway's WebSocket API (DESIGN §9, §12
//! "Locally"): one port serves both the WebSocket endpoint
//! (`ws://127.0.0.1:3002`) and its management API
//! (`http://127.0.0.1:3002/@connections/{connectionId}`), over the same
//! hyper server as the other local endpoints. A request carrying an
//! `Upgrade` header is a WebSocket handshake; any other is a management
//! call.
//!
//! The gateway is generic over its integration, a [`WsHandler`]: every
//! connect, message and disconnect becomes the WebSocket proxy event API
//! Gateway would send the function ([`event`]), and the handler's answer
//! is read as API Gateway reads a Lambda proxy answer.
//!
//! # What it does as API Gateway does
//!
//! - **`$connect`**: `X-Local-User: N` plays the Lambda REQUEST
//!   authorizer's approval of end user N (`requestContext.authorizer =
//!   {"principalId": "N", "user_id": "N"}` on every event of the
//!   connection); a value that is not a user id (1 to 2^63-1, decimal) is
//!   refused `401` before the upgrade. No header is a service signed in
//!   with IAM: no `authorizer`, the IAM principal in
//!   `requestContext.identity`. An answer whose `statusCode` is not 2xx
//!   refuses the upgrade with that status (and the answer's `headers` and
//!   `body`); a 2xx answer's `headers` go on the `101` response (such as
//!   `Sec-WebSocket-Protocol`). A handler error or a missing `statusCode`
//!   refuses with `500` / `502`.
//! - **Messages** go to the handler one at a time per connection, in the
//!   order received; routes come from `$request.body.action`
//!   ([`event::select_route`]). Binary messages go to `$default`
//!   base64-encoded. Answers to message routes are not sent to the client
//!   (the API has no route responses); a handler error sends the client
//!   `{"message": "Internal server error", "connectionId", "requestId"}`,
//!   and an answer later than [`INTEGRATION_TIMEOUT`] sends
//!   `"Endpoint request timed out"` the same way.
//! - **Size**: a client frame over [`MAX_FRAME_BYTES`] or a message over
//!   [`MAX_MESSAGE_BYTES`] is not passed on: the gateway closes the
//!   connection with `1009 Message too big`, as API Gateway does.
//! - **`$disconnect`** is sent exactly once per connection whose
//!   `$connect` was accepted, whichever side closed, with
//!   `disconnectStatusCode` and `disconnectReason`.
//! - **Time limits**: a connection with no client frame for
//!   `LOCAL_WS_IDLE_TIMEOUT_S` (600 s) or open for
//!   `LOCAL_WS_MAX_CONNECTION_S` (7,200 s) is closed with `1001`.
//! - **Management API** ([`management`]): `POST` sends the body as one
//!   frame (`200`), `GET` describes the connection, `DELETE` closes it
//!   (`204`); an unknown or closed id answers `410` `GoneException`, a
//!   body over [`MAX_MESSAGE_BYTES`] `413` `PayloadTooLargeException`.
//!
//! # Where it differs
//!
//! - A slow reader: each connection's outbound queue is bounded
//!   ([`registry::MAX_QUEUED_BYTES`], [`registry::MAX_QUEUED_FRAMES`]); the
//!   post that would pass the bound closes the connection with `1008`, and
//!   posts to it answer `410` from then on. API Gateway's own buffering is
//!   not documented.
//! - Outgoing messages are written as one frame each, not split into
//!   32 KiB frames; clients read messages, not frames, so none can tell.
//! - Management calls are not signed or checked.

mod connection;
pub mod event;
mod gateway;
pub mod management;
pub mod registry;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::server::BindError;

pub use gateway::serve_websocket;

/// The WebSocket API's port when `LOCAL_WS_PORT` is unset (DESIGN §9).
pub const DEFAULT_WS_PORT: u16 = 3002;

/// API Gateway's idle connection timeout (10 minutes), the default of
/// `LOCAL_WS_IDLE_TIMEOUT_S`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// API Gateway's longest connection (2 hours, DESIGN §12), the default of
/// `LOCAL_WS_MAX_CONNECTION_S`.
pub const DEFAULT_MAX_CONNECTION: Duration = Duration::from_secs(7_200);

/// API Gateway's WebSocket frame size quota, 32 KiB, for client frames.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;

/// API Gateway's message payload quota, 128 KiB (131,072 bytes): the most
/// one client message or one `PostToConnection` body may carry.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// How long the gateway waits for one handler answer: API Gateway's
/// integration timeout, 29 s.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);

/// A failed invocation of the integration, as Lambda reports a function
/// error: its `errorMessage`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// The integration behind every route: takes one WebSocket proxy event
/// (JSON, see [`event`]) and answers as a Lambda proxy integration does,
/// e.g. `{"statusCode": 200}`; `Err` is a function error.
pub type WsHandler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, HandlerError>> + Send + Sync>;

/// A [`WsHandler`] from an async closure.
pub fn ws_handler<F, Fut>(f: F) -> WsHandler
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

/// A handler that accepts every connection and answers every route
/// `{"statusCode": 200}`: a gateway with no function behind it yet.
pub fn accept_all() -> WsHandler {
    ws_handler(|_| async { Ok(json!({ "statusCode": 200 })) })
}

/// The local WebSocket API's settings (DESIGN §9, §11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// `LOCAL_WS_PORT` (3002); 0 picks a free port.
    pub port: u16,
    /// `LOCAL_WS_IDLE_TIMEOUT_S` (600): no client frame for this long
    /// closes the connection.
    pub idle_timeout: Duration,
    /// `LOCAL_WS_MAX_CONNECTION_S` (7,200): a connection open this long
    /// is closed.
    pub max_connection: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self { port: DEFAULT_WS_PORT, idle_timeout: DEFAULT_IDLE_TIMEOUT, max_connection: DEFAULT_MAX_CONNECTION }
    }
}

/// The local WebSocket API with its port bound, not yet serving.
pub struct LocalWebSocketApi {
    listener: TcpListener,
    settings: GatewaySettings,
}

impl LocalWebSocketApi {
    /// Binds `127.0.0.1:{settings.port}`, on loopback only: `X-Local-User`
    /// lets any caller be any user.
    pub async fn bind(settings: GatewaySettings) -> Result<Self, BindError> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), settings.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
            what: "WebSocket API",
            addr,
            variable: "LOCAL_WS_PORT",
            source,
        })?;
        Ok(Self { listener, settings })
    }

    /// `ws://127.0.0.1:{port}`, with the port actually bound.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr_text())
    }

    /// `http://127.0.0.1:{port}`: the management endpoint, what the
    /// function's `STREAM_ENDPOINT` names locally.
    pub fn management_url(&self) -> String {
        format!("http://{}", self.addr_text())
    }

    fn addr_text(&self) -> String {
        self.listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "127.0.0.1:?".into())
    }

    /// Serves until `shutdown` resolves, every route going to `handler`;
    /// see [`serve_websocket`].
    pub async fn serve(self, handler: WsHandler, shutdown: impl Future<Output = ()>) {
        serve_websocket(self.listener, self.settings, handler, shutdown).await;
    }
}
