//! One upgraded WebSocket connection's task: the client's messages in
//! order to the handler, the bounded outbound queue to the socket, and the
//! close frame at the end (DESIGN §12, "Locally").

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use status_shared::app::now_ms;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::event::{ConnectionContext, MessageData};
use super::integration::WsHandler;
use super::registry::{CloseReason, Connection, ConnectionEnds};
use super::settings::{GatewaySettings, INTEGRATION_TIMEOUT, MAX_MESSAGE_BYTES, MAX_READ_BYTES, READ_BUFFER_BYTES};

/// How long a closing connection may take to write its close frame.
const CLOSE_WRITE: std::time::Duration = std::time::Duration::from_secs(1);

/// How one handler call went.
pub(super) enum Outcome {
    Answer(Value),
    Failed(String),
    TimedOut,
}

/// Calls the handler once, within [`INTEGRATION_TIMEOUT`]; a panic in it
/// counts as a function error, as Lambda reports one.
pub(super) async fn call(handler: &WsHandler, event: Value) -> Outcome {
    match timeout(INTEGRATION_TIMEOUT, AssertUnwindSafe(handler(event)).catch_unwind()).await {
        Ok(Ok(Ok(answer))) => Outcome::Answer(answer),
        Ok(Ok(Err(error))) => Outcome::Failed(error.message),
        Ok(Err(_panic)) => Outcome::Failed("the handler panicked".to_owned()),
        Err(_) => Outcome::TimedOut,
    }
}

/// Runs one upgraded connection until it ends; returns why it ended.
pub(super) async fn run(
    handler: &WsHandler,
    settings: &GatewaySettings,
    connection: &Connection,
    ends: ConnectionEnds,
    context: &ConnectionContext,
    upgraded: Upgraded,
) -> CloseReason {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(Some(MAX_READ_BYTES))
        .max_message_size(Some(MAX_READ_BYTES))
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES);
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let ConnectionEnds { outbound, closing } = ends;
    tokio::join!(
        read_frames(handler, settings, connection, context, stream, closing.clone()),
        write_frames(connection, sink, outbound, closing.clone()),
    );
    let reason = closing.borrow().clone();
    reason.unwrap_or(CloseReason::Dropped)
}

type Sink = futures::stream::SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>;
type Stream = futures::stream::SplitStream<WebSocketStream<TokioIo<Upgraded>>>;

/// Reads the client's frames and hands each message to the handler, one
/// at a time, until the connection is closing for any reason.
async fn read_frames(
    handler: &WsHandler,
    settings: &GatewaySettings,
    connection: &Connection,
    context: &ConnectionContext,
    mut stream: Stream,
    mut closing: watch::Receiver<Option<CloseReason>>,
) {
    let expires = Instant::now() + settings.max_connection;
    let mut idle_until = Instant::now() + settings.idle_timeout;
    loop {
        if closing.borrow_and_update().is_some() {
            return;
        }
        let next = tokio::select! {
            next = stream.next() => next,
            _ = closing.changed() => return,
            () = sleep_until(idle_until) => {
                connection.close(CloseReason::Idle);
                return;
            }
            () = sleep_until(expires) => {
                connection.close(CloseReason::Expired);
                return;
            }
        };
        idle_until = Instant::now() + settings.idle_timeout;
        let now = now_ms();
        connection.touch(now);
        let data = match next {
            Some(Ok(Message::Text(ref text))) => MessageData::Text(text.as_str()),
            Some(Ok(Message::Binary(ref bytes))) => MessageData::Binary(bytes),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = match frame {
                    Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
                    None => (1005, String::new()),
                };
                connection.close(CloseReason::ByClient { code, reason });
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(WsError::Capacity(_))) => {
                connection.close(CloseReason::TooBig);
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, connection_id = %context.connection_id, "websocket read failed");
                connection.close(CloseReason::Dropped);
                return;
            }
            None => {
                connection.close(CloseReason::Dropped);
                return;
            }
        };
        let (event, request_id) = context.message_event(data, now);
        let failure = match call(handler, event).await {
            Outcome::Answer(_) => continue,
            Outcome::Failed(message) => {
                tracing::warn!(%message, connection_id = %context.connection_id, "message handler failed");
                "Internal server error"
            }
            Outcome::TimedOut => "Endpoint request timed out",
        };
        let notice = json!({
            "message": failure,
            "connectionId": context.connection_id,
            "requestId": request_id,
        });
        connection.enqueue(Message::text(notice.to_string()));
    }
}

/// Writes queued frames until the connection is closing, then what is
/// still queued and the close frame, within [`CLOSE_WRITE`]. A socket that
/// stays stuck (a client that stopped reading) is just dropped.
async fn write_frames(
    connection: &Connection,
    mut sink: Sink,
    mut outbound: mpsc::Receiver<(Message, usize)>,
    mut closing: watch::Receiver<Option<CloseReason>>,
) {
    loop {
        if closing.borrow_and_update().is_some() {
            break;
        }
        let frame = tokio::select! {
            frame = outbound.recv() => frame,
            _ = closing.changed() => break,
        };
        let Some((frame, bytes)) = frame else { break };
        let send = sink.send(frame);
        tokio::pin!(send);
        // A frame being written when the connection starts closing still
        // goes out, unless the socket stays stuck (a client not reading).
        let written = tokio::select! {
            written = &mut send => written,
            _ = closing.changed() => match timeout(CLOSE_WRITE, &mut send).await {
                Ok(written) => written,
                Err(_) => break,
            },
        };
        connection.sent(bytes);
        if written.is_err() {
            connection.close(CloseReason::Dropped);
            break;
        }
    }
    let reason = closing.borrow().clone();
    let goodbye = async {
        match reason {
            Some(CloseReason::ByClient { .. } | CloseReason::Dropped) | None => {}
            Some(reason) => {
                // Frames accepted before the close (`200` to their posts)
                // go out first, unless the reader is why it closes.
                if reason != CloseReason::SlowReader {
                    while let Ok((frame, bytes)) = outbound.try_recv() {
                        connection.sent(bytes);
                        if sink.feed(frame).await.is_err() {
                            break;
                        }
                    }
                }
                let disconnect = reason.disconnect();
                let frame = CloseFrame { code: reason.code(), reason: disconnect.reason.into() };
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
        }
        let _ = sink.close().await;
    };
    let _ = timeout(CLOSE_WRITE, goodbye).await;
}
