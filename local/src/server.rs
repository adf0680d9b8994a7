//! The two local endpoints and the scan timer, in one process:
//!
//! - the HTTP API (as `sam local start-api`): each request becomes an API
//!   Gateway payload v2 event ([`crate::apigw`]) for `StatusApiFunction`;
//! - the Lambda Invoke API (as `sam local start-lambda`), answered by
//!   [`crate::invoke`]: function errors included, synchronous or
//!   asynchronous (`Event`, retried as Lambda retries), and
//!   `GET /local/metrics`, the functions' metric totals;
//! - a timer that scans every shard, as the template's schedules would.
//!
//! Shutdown stops accepting, lets requests in flight finish for a few
//! seconds, and stops the timer.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use status_api::error::ApiError;
use status_api::handler::ApiResponse;
use status_shared::app::now_ms;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::apigw::{self, HttpCall};
use crate::functions::Functions;
use crate::http::{json_response, read_body, with_header, BodyError};
use crate::invoke::invoke;

/// The most of an HTTP API body read. Far above the handler's 64 KiB so
/// the handler still sees (and refuses with its own 413) what API Gateway
/// would pass on, while a runaway client cannot fill this process's memory.
pub const API_MAX_BODY: usize = 1024 * 1024;

/// How long requests in flight may take to finish once shutdown starts;
/// a bulk read takes milliseconds, a 10,000-event batch about a second.
const DRAIN: Duration = Duration::from_secs(5);

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {what} (is another online-status-local or sam local running?); set {variable} to another port")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    pub variable: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Both endpoints' sockets, bound before anything is printed so the URLs
/// shown are ones that answer.
pub struct Listeners {
    api: TcpListener,
    invoke: TcpListener,
}

impl Listeners {
    /// Binds on loopback only: the stack has no authentication, and
    /// `X-Local-User` lets any caller be any user.
    pub async fn bind(api_port: u16, invoke_port: u16) -> Result<Self, BindError> {
        let open = |what, variable, port| async move {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            TcpListener::bind(addr).await.map_err(|source| BindError { what, addr, variable, source })
        };
        Ok(Self {
            api: open("HTTP API", "LOCAL_API_PORT", api_port).await?,
            invoke: open("Invoke API", "LOCAL_INVOKE_PORT", invoke_port).await?,
        })
    }

    /// The HTTP API's base URL, with the port actually bound (port 0 in
    /// the settings picks a free one).
    pub fn api_url(&self) -> String {
        url_of(&self.api)
    }

    /// The Invoke API's base URL, with the port actually bound.
    pub fn invoke_url(&self) -> String {
        url_of(&self.invoke)
    }
}

fn url_of(listener: &TcpListener) -> String {
    listener.local_addr().map(|a| format!("http://{a}")).unwrap_or_else(|_| "http://127.0.0.1:?".into())
}

/// Which endpoint a connection came in on.
#[derive(Clone, Copy)]
enum Endpoint {
    Api,
    Invoke,
}

/// Serves both endpoints and runs the scan timer until `shutdown`
/// resolves, then drains.
pub async fn serve(
    listeners: Listeners,
    functions: Arc<Functions>,
    scan_interval: Option<Duration>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let timer = scan_interval.map(|every| tokio::spawn(scan_timer(functions.clone(), every, stopped)));
    let graceful = GracefulShutdown::new();
    let ids = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        let (accepted, endpoint) = tokio::select! {
            accepted = listeners.api.accept() => (accepted, Endpoint::Api),
            accepted = listeners.invoke.accept() => (accepted, Endpoint::Invoke),
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Usually out of file descriptors: pause instead of spinning
                // on an accept that keeps failing.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers go out as they are written (no wait for a delayed ACK).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let (functions, ids) = (functions.clone(), ids.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            let (functions, ids) = (functions.clone(), ids.clone());
            async move {
                let id = request_id(&ids);
                let response = match endpoint {
                    Endpoint::Api => api(&functions, request, peer.ip(), &id).await,
                    Endpoint::Invoke => invoke(&functions, request, &id).await,
                };
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listeners);
    let _ = stop.send(true);
    tracing::info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
    }
    if let Some(timer) = timer {
        // A scan cut short is safe: every write is compare-and-set and the
        // next scan redoes whatever was left.
        timer.abort();
        let _ = timer.await;
    }
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Scans every shard each `every`, the first time one interval after start
/// (as a fresh schedule fires). A scan that overruns delays the next one
/// rather than stacking up, like a schedule whose runs do not overlap.
async fn scan_timer(functions: Arc<Functions>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shards = functions.all_shards();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        let started = Instant::now();
        let summary = functions.scan(&shards, now_ms()).await;
        let transitions: usize = summary.shards.iter().map(|s| s.transitions).sum();
        let written: usize = summary.shards.iter().map(|s| s.written).sum();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if !summary.failed.is_empty() {
            tracing::warn!(failed = ?summary.failed, written, transitions, elapsed_ms, "scheduled scan: some shards failed");
        } else if written > 0 || transitions > 0 {
            tracing::info!(written, transitions, elapsed_ms, "scheduled scan");
        } else {
            // Most scans of an idle local stack find nothing; one line a
            // minute saying so would drown the lines that matter.
            tracing::debug!(elapsed_ms, "scheduled scan: nothing due");
        }
    }
}

/// A request id unique within this process, shaped like API Gateway's
/// (letters, digits and `=`), shared by the event and the response header.
fn request_id(counter: &AtomicU64) -> String {
    format!("{:x}{:06x}=", now_ms(), counter.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
}

/// One HTTP API request: to a payload v2 event, through the function's own
/// reading of it, to the handler, and its answer back to HTTP. What the
/// stack itself refuses (as API Gateway would) is an [`ApiError`] too.
async fn api(functions: &Functions, request: Request<Incoming>, source_ip: IpAddr, id: &str) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match read_body(body, API_MAX_BODY).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let error = ApiError::PayloadTooLarge { limit_bytes: API_MAX_BODY };
            return with_header(to_http(error.into()), "apigw-requestid", id);
        }
        Err(BodyError::Broken) => {
            let error = ApiError::InvalidRequest("the request body could not be read");
            return with_header(to_http(error.into()), "apigw-requestid", id);
        }
    };
    let now = now_ms();
    let event = apigw::to_event(&HttpCall {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
        source_ip,
        request_id: id,
        now,
    });
    let answer = functions.http(&event, now).await;
    tracing::debug!(method = %parts.method, path = parts.uri.path(), status = answer.status, "http api");
    with_header(to_http(answer), "apigw-requestid", id)
}

fn to_http(answer: ApiResponse) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if answer.body.is_null() {
        // 204: no body, so no content type either.
        let mut empty = Response::new(Full::new(Bytes::new()));
        *empty.status_mut() = status;
        empty
    } else {
        json_response(status, &answer.body)
    };
    for (name, value) in &answer.headers {
        response = with_header(response, name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_answers_keep_their_status_and_headers() {
        let answer: ApiResponse = ApiError::RateLimited { retry_after_s: 7 }.into();
        let response = to_http(answer);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["content-type"], "application/json");
    }
}
