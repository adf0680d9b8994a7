//! A minimal Lambda Runtime API (the 2018-06-01 interface a `provided`
//! runtime polls) on a free loopback port, enough to start a release
//! function binary as Lambda would and hand it events:
//!
//! - `GET /2018-06-01/runtime/invocation/next` answers the next queued
//!   event with the `Lambda-Runtime-*` headers; once the queue is empty it
//!   holds the request open, as Lambda does between invocations;
//! - `POST .../invocation/{id}/response`, `.../invocation/{id}/error` and
//!   `.../init/error` are recorded with the time they arrived.
//!
//! HTTP/1.1 (keep-alive, bodies by `Content-Length` or chunked) is
//! hyper's. Every connection task is aborted when the [`RuntimeApi`] is
//! dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::Error;

/// The largest request body accepted: far above any answer of the three
/// functions, far below anything that could hurt the bench.
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a function sent back.
#[derive(Debug)]
pub enum Outcome {
    Response(Vec<u8>),
    Error(Vec<u8>),
    InitError(Vec<u8>),
}

/// An answer and when it arrived.
#[derive(Debug)]
pub struct Answer {
    pub at: Instant,
    pub outcome: Outcome,
}

struct Shared {
    queue: Mutex<VecDeque<(String, Vec<u8>)>>,
    function_arn: String,
    answers: mpsc::UnboundedSender<Answer>,
}

/// A running emulator.
pub struct RuntimeApi {
    pub address: String,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Starts serving `events` (one invocation each, in order) to the
    /// function named `function`; answers arrive on the returned channel.
    pub async fn start(function: &str, events: Vec<Vec<u8>>) -> Result<(Self, mpsc::UnboundedReceiver<Answer>), Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = events
            .into_iter()
            .enumerate()
            .map(|(i, body)| (format!("bench-{:08x}-{i}", rand::random::<u32>()), body))
            .collect();
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
            answers: tx,
        });
        let server = tokio::spawn(async move {
            // Owned by this task: aborting the task drops the set, which
            // aborts every connection, held `next` requests included.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let shared = shared.clone();
                            connections.spawn(async move {
                                let _ = serve(stream, shared).await;
                            });
                        }
                        Err(_) => return,
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok((Self { address, server }, rx))
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves one connection, one request after another (keep-alive); bounded
/// by the client, which is killed at the end of each measurement.
async fn serve(stream: TcpStream, shared: Arc<Shared>) -> Result<(), Error> {
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(request, &shared).await) }
    });
    http1::Builder::new().serve_connection(TokioIo::new(stream), service).await?;
    Ok(())
}

async fn route(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    const PREFIX: &str = "/2018-06-01/runtime/";
    let (parts, body) = request.into_parts();
    let Some(tail) = parts.uri.path().strip_prefix(PREFIX) else {
        return response(StatusCode::NOT_FOUND, &[], b"{\"errorMessage\":\"not found\"}");
    };
    let segments: Vec<&str> = tail.split('/').collect();
    let body = || async {
        match Limited::new(body, MAX_BYTES).collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(_) => Vec::new(),
        }
    };
    let record = |outcome| {
        let _ = shared.answers.send(Answer { at: Instant::now(), outcome });
        response(StatusCode::ACCEPTED, &[], b"{\"status\":\"OK\"}")
    };
    match (parts.method.as_str(), segments.as_slice()) {
        ("GET", ["invocation", "next"]) => {
            let next = shared.queue.lock().ok().and_then(|mut q| q.pop_front());
            match next {
                Some((id, body)) => {
                    let deadline = (std::time::SystemTime::now() + std::time::Duration::from_secs(60))
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis());
                    let headers = [
                        ("Lambda-Runtime-Aws-Request-Id", id.clone()),
                        ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                        ("Lambda-Runtime-Invoked-Function-Arn", shared.function_arn.clone()),
                        ("Lambda-Runtime-Trace-Id", format!("Root=1-00000000-{id};Parent=0000000000000000;Sampled=0")),
                    ];
                    response(StatusCode::OK, &headers, &body)
                }
                // Nothing more to invoke: hold the poll, as Lambda does
                // while the function is idle.
                None => std::future::pending().await,
            }
        }
        ("POST", ["invocation", _, "response"]) => record(Outcome::Response(body().await)),
        ("POST", ["invocation", _, "error"]) => record(Outcome::Error(body().await)),
        ("POST", ["init", "error"]) => record(Outcome::InitError(body().await)),
        _ => response(StatusCode::NOT_FOUND, &[], b"{\"errorMessage\":\"not found\"}"),
    }
}

fn response(status: StatusCode, headers: &[(&'static str, String)], body: &[u8]) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status).header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Full::new(Bytes::copy_from_slice(body))).unwrap_or_else(|_| Response::new(Full::default()))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends `raw` on one connection and reads until `until` has arrived.
    async fn exchange(stream: &mut TcpStream, raw: &[u8], until: &str) -> String {
        stream.write_all(raw).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(until) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early after {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// The release profile unwinds (README "Panics") because
    /// `lambda_runtime` then turns a handler's panic into that invocation's
    /// error and goes on to the next one: a panic costs one invocation,
    /// not the environment.
    #[tokio::test]
    async fn a_handler_panic_costs_one_invocation_and_the_runtime_serves_the_next() {
        let events = vec![b"\"panic\"".to_vec(), b"\"ok\"".to_vec()];
        let (api, mut answers) = RuntimeApi::start("PanicCheck", events).await.unwrap();
        // The runtime reads its settings from the environment; this is the
        // only test of this binary that sets them.
        for (name, value) in [
            ("AWS_LAMBDA_RUNTIME_API", api.address.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "PanicCheck"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "local"),
        ] {
            std::env::set_var(name, value);
        }
        let runtime = tokio::spawn(lambda_runtime::run(lambda_runtime::service_fn(
            |event: lambda_runtime::LambdaEvent<String>| async move {
                if event.payload == "panic" {
                    panic!("a handler bug");
                }
                Ok::<_, lambda_runtime::Error>(format!("served {}", event.payload))
            },
        )));
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), answers.recv()).await.unwrap().unwrap();
        assert!(
            matches!(first.outcome, Outcome::Error(ref b) if String::from_utf8_lossy(b).contains("a handler bug")),
            "{first:?}"
        );
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), answers.recv()).await.unwrap().unwrap();
        assert!(matches!(second.outcome, Outcome::Response(ref b) if b == b"\"served ok\""), "{second:?}");
        assert!(!runtime.is_finished(), "the runtime is still polling for the next invocation");
        runtime.abort();
    }

    #[tokio::test]
    async fn an_event_is_handed_out_and_answers_by_length_or_chunks_are_recorded() {
        let (api, mut answers) = RuntimeApi::start("F", vec![b"{\"n\":1}".to_vec()]).await.unwrap();
        let mut stream = TcpStream::connect(&api.address).await.unwrap();
        let next =
            exchange(&mut stream, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n", "{\"n\":1}")
                .await;
        assert!(next.starts_with("HTTP/1.1 200"), "{next}");
        assert!(
            next.to_ascii_lowercase()
                .contains("lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:f"),
            "{next}"
        );
        let raw = b"POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc";
        assert!(exchange(&mut stream, raw, "OK\"}").await.starts_with("HTTP/1.1 202"));
        let chunked = b"POST /2018-06-01/runtime/invocation/x/error HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n";
        assert!(exchange(&mut stream, chunked, "OK\"}").await.starts_with("HTTP/1.1 202"));
        let first = answers.recv().await.unwrap();
        assert!(matches!(first.outcome, Outcome::Response(ref b) if b == b"abc"), "{first:?}");
        let second = answers.recv().await.unwrap();
        assert!(matches!(second.outcome, Outcome::Error(ref b) if b == b"hi!"), "{second:?}");
    }
}
