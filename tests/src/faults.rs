//! A management API that fails on cue (DESIGN §12 "State and loss"): an
//! HTTP server standing between `StatusStreamFunction`'s real
//! `aws-sdk-apigatewaymanagement` client (`STREAM_ENDPOINT` names it) and
//! the local stack's `@connections` API. Each call to a connection takes
//! the next [`Fault`] planned for it, if any, and is otherwise forwarded
//! as it came. Every call is logged, so a test can wait for the moment a
//! fan-out is in (say, after one connection got its frame and before
//! another did) and can check that each planned fault really happened.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use local_stack::websocket::management::connection_id;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a held call stays unanswered before its connection is closed:
/// longer than the SDK's whole call (3 s by default), so the caller gives
/// up or is ended first.
const HOLD: Duration = Duration::from_secs(20);

/// What one call to a connection meets instead of a plain forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Not forwarded; answered `500 InternalServerErrorException`, which
    /// the SDK treats as a failure that may pass.
    Refuse,
    /// Not forwarded; the TCP connection is closed without an answer.
    Drop,
    /// Forwarded (the client gets the frame); then the TCP connection is
    /// closed without an answer, so the caller cannot know it went out.
    DeliverThenDrop,
    /// Forwarded, then held unanswered: a caller that dies meanwhile dies
    /// after the frame went out.
    DeliverThenHold,
    /// Not forwarded, and held unanswered.
    Hold,
    /// Not forwarded; answered `429 LimitExceededException`, API Gateway's
    /// throttle, which refuses a post before delivering it.
    Throttle,
}

/// One call, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The connection id in the path.
    pub connection: String,
    pub method: String,
    /// The planned fault it met, `None` for a plain forward.
    pub fault: Option<Fault>,
    /// Whether it reached the stack's management API.
    pub forwarded: bool,
    /// The status answered to the caller; `None` while held, or when the
    /// connection was closed instead.
    pub answered: Option<u16>,
}

#[derive(Default)]
struct State {
    upstream: Option<String>,
    plans: HashMap<String, VecDeque<Fault>>,
    calls: Vec<Call>,
}

/// The faulting management API; stops when dropped.
pub struct FaultyManagement {
    /// `http://127.0.0.1:{port}`: what `STREAM_ENDPOINT` is set to.
    pub url: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FaultyManagement {
    /// Listens on a free port; calls fail `502` until [`Self::forward_to`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move { answer(request, &state).await }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Self { url, state, task }
    }

    /// Forwards to the management API at `upstream` (`http://host:port`).
    pub fn forward_to(&self, upstream: &str) {
        self.lock().upstream = Some(upstream.trim_end_matches('/').to_owned());
    }

    /// The next calls to `connection` meet `faults`, one each, in order;
    /// calls after them are forwarded. Replaces any plan left for it.
    pub fn plan(&self, connection: &str, faults: &[Fault]) {
        self.lock().plans.insert(connection.to_owned(), faults.iter().copied().collect());
    }

    /// Faults planned and not yet met, over all connections.
    pub fn unmet(&self) -> usize {
        self.lock().plans.values().map(VecDeque::len).sum()
    }

    /// Every call so far, in arrival order (a held one as it is now).
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far to `connection`.
    pub fn calls_to(&self, connection: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.connection == connection).collect()
    }

    /// Waits until the log satisfies `done`, checking every 10 ms; panics
    /// with the log after `wait`.
    pub async fn until(&self, wait: Duration, done: impl Fn(&[Call]) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let calls = self.calls();
            if done(&calls) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the calls never matched within {wait:?}: {calls:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }
}

impl Drop for FaultyManagement {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The closed-connection outcome: hyper ends the connection without a
/// response when the service fails.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed without an answer, as planned")
    }
}

impl std::error::Error for Closed {}

async fn answer(request: Request<Incoming>, state: &Mutex<State>) -> Result<Response<Full<Bytes>>, Closed> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let connection = connection_id(parts.uri.path()).unwrap_or_default();
    let (fault, upstream, index) = {
        let mut state = state.lock().expect("not poisoned");
        let fault = state.plans.get_mut(&connection).and_then(VecDeque::pop_front);
        let index = state.calls.len();
        let forwarded = !matches!(fault, Some(Fault::Refuse | Fault::Drop | Fault::Hold | Fault::Throttle));
        state.calls.push(Call { connection, method: parts.method.to_string(), fault, forwarded, answered: None });
        (fault, state.upstream.clone(), index)
    };
    let record = |status: Option<u16>| state.lock().expect("not poisoned").calls[index].answered = status;
    let forwarded = match fault {
        Some(Fault::Refuse) => {
            record(Some(500));
            return Ok(error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerErrorException"));
        }
        Some(Fault::Throttle) => {
            record(Some(429));
            return Ok(error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"));
        }
        Some(Fault::Drop) => return Err(Closed),
        Some(Fault::Hold) => {
            tokio::time::sleep(HOLD).await;
            return Err(Closed);
        }
        _ => forward(upstream.as_deref(), &parts, body).await,
    };
    match fault {
        Some(Fault::DeliverThenDrop) => Err(Closed),
        Some(Fault::DeliverThenHold) => {
            tokio::time::sleep(HOLD).await;
            Err(Closed)
        }
        _ => {
            record(Some(forwarded.status().as_u16()));
            Ok(forwarded)
        }
    }
}

/// The call sent on to `upstream` as it came, over a connection of its
/// own; its answer, or `502` when there is none.
async fn forward(upstream: Option<&str>, parts: &hyper::http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let Some(upstream) = upstream else {
        return error(StatusCode::BAD_GATEWAY, "NoUpstream");
    };
    let addr = upstream.trim_start_matches("http://");
    let Ok(stream) = TcpStream::connect(addr).await else {
        return error(StatusCode::BAD_GATEWAY, "UpstreamDown");
    };
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return error(StatusCode::BAD_GATEWAY, "UpstreamDown");
    };
    tokio::spawn(connection);
    let mut request = Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
    for (name, value) in &parts.headers {
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Full::new(body)) else {
        return error(StatusCode::BAD_GATEWAY, "BadRequest");
    };
    let Ok(response) = sender.send_request(request).await else {
        return error(StatusCode::BAD_GATEWAY, "UpstreamDown");
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Response::from_parts(parts, Full::new(body))
}

fn error(status: StatusCode, kind: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(r#"{{"message":"{kind} (injected)"}}"#))));
    *response.status_mut() = status;
    response.headers_mut().insert("x-amzn-errortype", kind.parse().expect("a header value"));
    response
}
