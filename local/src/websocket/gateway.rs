//! The accept loop, the dispatch between handshake and management call,
//! the WebSocket handshake with its `$connect`, and `$disconnect` once at
//! the end of each connection (DESIGN §12, "Locally").

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, UPGRADE, USER_AGENT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use status_shared::app::now_ms;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::create_response;

use super::connection::{call, run, Outcome};
use super::event::{new_id, Caller, ConnectionContext};
use super::integration::WsHandler;
use super::management;
use super::registry::{CloseReason, Connection, Registry};
use super::settings::GatewaySettings;

/// How long shutdown waits for connections to close and their
/// `$disconnect` to be handled.
const DRAIN: Duration = Duration::from_secs(5);

/// What every request and connection task shares.
struct Gateway {
    registry: Registry,
    handler: WsHandler,
    settings: GatewaySettings,
    port: u16,
    stopping: AtomicBool,
    /// The number of HTTP connections and WebSocket connection tasks still
    /// running.
    active: watch::Sender<usize>,
}

/// Counts one connection task as running until dropped.
struct ActiveGuard(Arc<Gateway>);

impl ActiveGuard {
    fn new(gateway: &Arc<Gateway>) -> Self {
        gateway.active.send_modify(|n| *n += 1);
        Self(gateway.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serves the WebSocket API and its management API on `listener` until
/// `shutdown` resolves, every route going to `handler` (see the module
/// docs of [`super`]). Shutdown stops accepting, closes every connection
/// with `1001 Going away` and waits up to 5 s for their `$disconnect`.
pub async fn serve_websocket(
    listener: TcpListener,
    settings: GatewaySettings,
    handler: WsHandler,
    shutdown: impl Future<Output = ()>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(settings.port);
    let (active, _) = watch::channel(0);
    let gateway = Arc::new(Gateway {
        registry: Registry::default(),
        handler,
        settings,
        port,
        stopping: AtomicBool::new(false),
        active,
    });
    // Tells the HTTP connections to finish the request in flight and close.
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "websocket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Frames go out as they are written: with Nagle's algorithm a
        // snapshot's later parts wait for the client's delayed ACK (40 ms
        // on Linux), which API Gateway's edge does not add.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let serving = gateway.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let gateway = serving.clone();
            async move { Ok::<_, Infallible>(dispatch(gateway, request, peer).await) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
        let (mut stopped, guard) = (stopped.clone(), ActiveGuard::new(&gateway));
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, %peer, "websocket api connection ended with an error");
            }
            drop(guard);
        });
    }
    drop(listener);
    gateway.stopping.store(true, Ordering::SeqCst);
    gateway.registry.close_all(CloseReason::ShuttingDown);
    let _ = stop.send(true);
    let mut active = gateway.active.subscribe();
    if timeout(DRAIN, active.wait_for(|n| *n == 0)).await.is_err() {
        tracing::warn!("websocket connections still open after {DRAIN:?}; stopping anyway");
    }
}

/// A handshake when the request asks for an upgrade, a management call
/// otherwise.
async fn dispatch(gateway: Arc<Gateway>, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if request.headers().contains_key(UPGRADE) {
        upgrade(gateway, request, peer).await
    } else {
        management::answer(&gateway.registry, request).await
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The `statusCode` of a Lambda proxy answer, if it has a valid one.
fn status_of(answer: &Value) -> Option<StatusCode> {
    let code = answer.get("statusCode")?.as_u64()?;
    StatusCode::from_u16(u16::try_from(code).ok()?).ok()
}

/// Copies the answer's `headers` (string values only) onto `response`.
fn with_answer_headers(mut response: Response<Full<Bytes>>, answer: &Value) -> Response<Full<Bytes>> {
    if let Some(headers) = answer.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            let (Ok(name), Some(Ok(value))) =
                (HeaderName::from_bytes(name.as_bytes()), value.as_str().map(HeaderValue::from_str))
            else {
                continue;
            };
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The WebSocket handshake: identity, the request's validity, `$connect`,
/// then `101 Switching Protocols` and the connection's task.
async fn upgrade(gateway: Arc<Gateway>, mut request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let caller = match Caller::of(request.headers()) {
        Ok(caller) => caller,
        Err(error) => {
            tracing::debug!(%error, "websocket connect refused");
            return json_response(StatusCode::UNAUTHORIZED, &json!({ "message": "Unauthorized" }));
        }
    };
    let mut probe = Request::new(());
    *probe.method_mut() = request.method().clone();
    *probe.version_mut() = request.version();
    *probe.headers_mut() = request.headers().clone();
    let switching = match create_response(&probe) {
        Ok(switching) => switching,
        Err(error) => {
            let message = format!("not a WebSocket handshake: {error}");
            return json_response(StatusCode::BAD_REQUEST, &json!({ "message": message }));
        }
    };
    if gateway.stopping.load(Ordering::SeqCst) {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "message": "Service Unavailable" }));
    }
    let header = |name| request.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let mut connection_id = new_id();
    while gateway.registry.get(&connection_id).is_some() {
        connection_id = new_id();
    }
    let now = now_ms();
    let context = ConnectionContext {
        connection_id,
        connected_at: now,
        caller,
        source_ip: peer.ip(),
        user_agent: header(USER_AGENT).unwrap_or_default(),
        domain_name: header(HOST).unwrap_or_else(|| format!("127.0.0.1:{}", gateway.port)),
        server_port: gateway.port,
    };
    let answer = match call(&gateway.handler, context.connect_event(request.headers(), now)).await {
        Outcome::Answer(answer) => answer,
        Outcome::Failed(message) => {
            tracing::warn!(%message, "$connect handler failed");
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "message": "Internal server error" }));
        }
        Outcome::TimedOut => {
            return json_response(StatusCode::GATEWAY_TIMEOUT, &json!({ "message": "Endpoint request timed out" }));
        }
    };
    let Some(status) = status_of(&answer) else {
        tracing::warn!(%answer, "$connect answer has no valid statusCode");
        return json_response(StatusCode::BAD_GATEWAY, &json!({ "message": "Internal server error" }));
    };
    if !status.is_success() {
        let body = answer.get("body").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut refused = Response::new(Full::new(Bytes::from(body)));
        *refused.status_mut() = status;
        return with_answer_headers(refused, &answer);
    }

    let (connection, ends) = Connection::new(now, peer.ip().to_string(), context.user_agent.clone());
    if !gateway.registry.insert(&context.connection_id, connection.clone()) {
        return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "message": "Internal server error" }));
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let guard = ActiveGuard::new(&gateway);
    tokio::spawn(async move {
        let reason = match on_upgrade.await {
            Ok(upgraded) => run(&gateway.handler, &gateway.settings, &connection, ends, &context, upgraded).await,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed after $connect");
                CloseReason::Dropped
            }
        };
        gateway.registry.remove(&context.connection_id);
        let event = context.disconnect_event(&reason.disconnect(), now_ms());
        if let Outcome::Failed(message) = call(&gateway.handler, event).await {
            tracing::warn!(%message, "$disconnect handler failed");
        }
        drop(guard);
    });

    let (parts, ()) = switching.into_parts();
    let mut response = Response::from_parts(parts, Full::new(Bytes::new()));
    // The answer may add headers (a chosen subprotocol), never replace the
    // handshake's own.
    let handshake = response.headers().clone();
    response = with_answer_headers(response, &answer);
    response.headers_mut().extend(handshake);
    response
}
