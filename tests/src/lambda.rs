//! A Lambda Invoke API that records what it is sent, for tests of the push
//! feed (DESIGN §6 "Push feed"): the service's own `aws-sdk-lambda` client
//! talks to it through an endpoint override, as it talks to Lambda. It
//! answers an invocation 202, as Lambda answers `Event`, or, while told to
//! refuse, 500 `ServiceException`, a failure the SDK and the feed treat as
//! one that may pass.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use status_shared::adapters::lambda::LambdaFeed;
use status_shared::app::Feed;
use status_shared::domain::{FeedChange, FeedEvent};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::aws::sdk_config_for;

/// One invocation as received.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The function named in the path.
    pub function: String,
    /// `X-Amz-Invocation-Type`, if sent.
    pub invocation_type: Option<String>,
    pub body: Bytes,
}

impl Invocation {
    /// The body as the stream function reads it.
    pub fn feed(&self) -> FeedEvent {
        serde_json::from_slice(&self.body).expect("a feed event")
    }
}

/// The recording Invoke API; stops when dropped.
pub struct RecordingLambda {
    pub url: String,
    calls: Arc<Mutex<Vec<Invocation>>>,
    refusing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl RecordingLambda {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let refusing = Arc::new(AtomicBool::new(false));
        let (seen, refuse) = (calls.clone(), refusing.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, refuse) = (seen.clone(), refuse.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (seen, refuse) = (seen.clone(), refuse.clone());
                    async move { Ok::<_, Infallible>(answer(request, &seen, &refuse).await) }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Self { url, calls, refusing, task }
    }

    /// The push feed as the service builds it, invoking `function` here.
    pub async fn feed(&self, function: &str) -> Feed {
        let client = aws_sdk_lambda::Client::new(&sdk_config_for(&self.url).await);
        Feed::Lambda(LambdaFeed::new(client, function))
    }

    /// From now on, refuse (500) or take (202) every invocation.
    pub fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
    }

    /// Every invocation taken so far, in order.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// Every change fed so far, in order, as `(user, version)`.
    pub fn fed(&self) -> Vec<(u64, u64)> {
        let changes: Vec<FeedChange> = self.invocations().iter().flat_map(|i| i.feed().feed).collect();
        changes.iter().map(|c| (c.user_id.get(), c.version)).collect()
    }

    /// Forgets the invocations so far.
    pub fn clear(&self) {
        self.calls.lock().expect("not poisoned").clear();
    }
}

impl Drop for RecordingLambda {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    seen: &Mutex<Vec<Invocation>>,
    refuse: &AtomicBool,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let function = parts
        .uri
        .path()
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .unwrap_or_default()
        .to_owned();
    let invocation_type = parts.headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if refuse.load(Ordering::SeqCst) {
        let mut response = Response::new(Full::new(Bytes::from_static(br#"{"message":"refused by the test"}"#)));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response.headers_mut().insert("x-amzn-errortype", "ServiceException".parse().expect("a header value"));
        return response;
    }
    seen.lock().expect("not poisoned").push(Invocation { function, invocation_type, body });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}
