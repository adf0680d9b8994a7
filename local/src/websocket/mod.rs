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
//!   and an answer later than [`settings::INTEGRATION_TIMEOUT`] sends
//!   `"Endpoint request timed out"` the same way.
//! - **Size**: a client frame or message over [`settings::MAX_READ_BYTES`]
//!   (1 MiB) is not passed on: the gateway closes the connection with
//!   `1009 Message too big`.
//! - **`$disconnect`** is sent exactly once per connection whose
//!   `$connect` was accepted, whichever side closed, with
//!   `disconnectStatusCode` and `disconnectReason`.
//! - **Time limits**: a connection with no client frame for
//!   `LOCAL_WS_IDLE_TIMEOUT_S` (600 s) or open for
//!   `LOCAL_WS_MAX_CONNECTION_S` (7,200 s) is closed with `1001`.
//! - **Management API** ([`management`]): `POST` sends the body as one
//!   frame (`200`), `GET` describes the connection, `DELETE` closes it
//!   (`204`); an unknown or closed id answers `410` `GoneException`, a
//!   body over [`settings::MAX_MESSAGE_BYTES`] `413` `PayloadTooLargeException`.
//!
//! # Where it differs
//!
//! - A slow reader: each connection's outbound queue is bounded
//!   ([`registry::MAX_QUEUED_BYTES`], [`registry::MAX_QUEUED_FRAMES`]); the
//!   post that would pass the bound closes the connection with `1008`, and
//!   posts to it answer `410` from then on. The close frame waits behind
//!   the frame being written for at most a second (`CLOSE_WRITE`): a client
//!   that reads nothing at all sees the TCP connection end instead,
//!   perhaps in the middle of a frame. API Gateway's own buffering is not
//!   documented.
//! - Outgoing messages are written as one frame each, not split into
//!   32 KiB frames; clients read messages, not frames, so none can tell.
//! - Management calls are not signed or checked.
//! - Client messages: API Gateway's quotas are 32 KiB a frame and 128 KiB
//!   a message, and it may refuse a longer one before any function sees
//!   it. Here every message up to [`settings::MAX_READ_BYTES`] reaches the
//!   function, in frames of any size, so the `payload_too_large` error
//!   frame of DESIGN §12 (over 128 KiB; the connection stays open) can be
//!   seen and tested.

mod connection;
pub mod event;
mod gateway;
pub mod integration;
pub mod management;
pub mod registry;
pub mod settings;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::server::BindError;

pub use gateway::serve_websocket;
pub use integration::{ws_handler, HandlerError, WsHandler};
pub use settings::{GatewaySettings, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTION, DEFAULT_WS_PORT};

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
