//! The two local endpoints and the scan timer, in one process:
//!
//! - the HTTP API (as `sam local start-api`): each request becomes an API
//!   Gateway payload v2 event ([`crate::apigw`]) for `StatusApiFunction`;
//! - the Lambda Invoke API (as `sam local start-lambda`):
//!   `POST /2015-03-31/functions/{name}/invocations` with the event as body,
//!   answered as Lambda answers, function errors included, synchronous or
//!   asynchronous (`Event`, retried as Lambda retries);
//! - a timer that scans every shard, as the template's schedules would;
//! - `GET /local/metrics` on the Invoke API: the functions' metric totals.
//!
//! Shutdown stops accepting, lets requests in flight finish for a few
//! seconds, and stops the timer.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use status_api::error::ApiError;
use status_api::handler::ApiResponse;
use status_shared::app::now_ms;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::apigw::{self, HttpCall};
use crate::functions::{Function, Functions};

/// The most of an HTTP API body read. Far above the handler's 64 KiB so
/// the handler still sees (and refuses with its own 413) what API Gateway
/// would pass on, while a runaway client cannot fill this process's memory.
pub const API_MAX_BODY: usize = 1024 * 1024;

/// The most of an invocation payload read: Lambda's limit for synchronous
/// invocations, which a 10,000-record MSK batch stays under.
pub const INVOKE_MAX_BODY: usize = 6 * 1024 * 1024;

/// How long requests in flight may take to finish once shutdown starts;
/// a bulk read takes milliseconds, a 10,000-event batch about a second.
const DRAIN: Duration = Duration::from_secs(5);

/// The Invoke API's path prefix and suffix around the function name.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const INVOKE_SUFFIX: &str = "/invocations";
/// Where the Invoke API serves the functions' metric totals.
pub const METRICS_PATH: &str = "/local/metrics";

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

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn with_header(mut response: Response<Full<Bytes>>, name: &'static str, value: &str) -> Response<Full<Bytes>> {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
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

/// One Invoke API call, answered as Lambda answers: 200 with the result, or
/// 200 with `X-Amz-Function-Error` and `{errorMessage, errorType}` when the
/// function failed; 4xx only when the call itself is wrong (404
/// `ResourceNotFoundException` for a function this stack does not serve).
/// `X-Amz-Invocation-Type: Event` is answered 202 at once and run in the
/// background with Lambda's retries ([`crate::asynchronous`]); `DryRun` is
/// answered 204 and runs nothing.
async fn invoke(functions: &Arc<Functions>, request: Request<Incoming>, id: &str) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if parts.method == Method::GET && parts.uri.path().starts_with(METRICS_PATH) {
        return metrics_page(functions, parts.uri.path(), id);
    }
    let name = parts.uri.path().strip_prefix(INVOKE_PREFIX).and_then(|rest| rest.strip_suffix(INVOKE_SUFFIX));
    let Some(name) = name.filter(|_| parts.method == Method::POST) else {
        let message = format!("{} {} is not a Lambda Invoke call", parts.method, parts.uri.path());
        return service_error(StatusCode::NOT_FOUND, "UnknownOperationException", &message, id);
    };
    let name = percent_decode(name);
    let Some(function) = Function::from_name(&name) else {
        let known: Vec<_> = Function::ALL.iter().map(|f| f.name()).collect();
        let message = format!("Function not found: {name} (this stack serves {})", known.join(", "));
        return service_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &message, id);
    };
    let event = match read_body(body, INVOKE_MAX_BODY).await {
        Ok(event) => event,
        Err(BodyError::TooLarge) => {
            let message =
                format!("Request must be smaller than {INVOKE_MAX_BODY} bytes for the InvokeFunction operation");
            return service_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", &message, id);
        }
        Err(BodyError::Broken) => {
            return service_error(StatusCode::BAD_REQUEST, "InvalidRequestContentException", "unreadable body", id)
        }
    };
    let invocation_type = parts.headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    match invocation_type {
        // Lambda checks the call and runs nothing.
        "DryRun" => {
            let mut response = with_header(Response::new(Full::default()), "x-amzn-requestid", id);
            *response.status_mut() = StatusCode::NO_CONTENT;
            return response;
        }
        // Lambda queues the event and answers at once; here "the queue" is
        // a task that retries as Lambda does, and its outcome goes to the log.
        "Event" => {
            crate::asynchronous::spawn(functions.clone(), function, event, id.to_owned());
            let mut response = with_header(Response::new(Full::default()), "x-amzn-requestid", id);
            *response.status_mut() = StatusCode::ACCEPTED;
            return response;
        }
        _ => {}
    }
    let started = Instant::now();
    let outcome = functions.invoke(function, &event, now_ms()).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let response = match outcome {
        Ok(result) => {
            tracing::info!(function = function.name(), elapsed_ms, "invoked");
            json_response(StatusCode::OK, &result)
        }
        Err(error) => {
            let message = error.message();
            tracing::warn!(function = function.name(), elapsed_ms, error_type = error.error_type(), %message, "function error");
            let body = json!({ "errorMessage": message, "errorType": error.error_type() });
            with_header(json_response(StatusCode::OK, &body), "x-amz-function-error", "Unhandled")
        }
    };
    let response = with_header(response, "x-amz-executed-version", "$LATEST");
    with_header(response, "x-amzn-requestid", id)
}

/// The functions' metric totals: a table at `/local/metrics`, JSON at
/// `/local/metrics.json` (see [`crate::metrics`]).
fn metrics_page(functions: &Functions, path: &str, id: &str) -> Response<Full<Bytes>> {
    if path.ends_with(".json") {
        return json_response(StatusCode::OK, &functions.board.json());
    }
    let mut response = Response::new(Full::new(Bytes::from(functions.board.table())));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    with_header(response, "x-amzn-requestid", id)
}

/// An error of the Invoke API itself (not of the function), in the shape
/// the AWS SDKs read: the type in `x-amzn-ErrorType`, a message in the body.
fn service_error(status: StatusCode, error_type: &str, message: &str, id: &str) -> Response<Full<Bytes>> {
    let body = json!({ "Type": "User", "message": message, "__type": error_type });
    let response = with_header(json_response(status, &body), "x-amzn-errortype", error_type);
    with_header(response, "x-amzn-requestid", id)
}

/// Decodes `%XX` escapes: SDKs escape the colons of a function ARN in the
/// path. A malformed escape is kept as sent, and then names no function.
fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_arns_in_the_invoke_path_are_decoded() {
        assert_eq!(
            percent_decode("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3AAggregatorFunction"),
            "arn:aws:lambda:us-east-1:123456789012:function:AggregatorFunction"
        );
        assert_eq!(percent_decode("Plain%zzName%"), "Plain%zzName%");
    }

    #[test]
    fn api_answers_keep_their_status_and_headers() {
        let answer: ApiResponse = ApiError::RateLimited { retry_after_s: 7 }.into();
        let response = to_http(answer);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["content-type"], "application/json");
    }
}
