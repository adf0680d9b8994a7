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
//! HTTP/1.1 with keep-alive, bodies by `Content-Length` or chunked. Every
//! connection task is aborted when the [`RuntimeApi`] is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::Error;

/// The largest request head or body accepted: far above any answer of the
/// three functions, far below anything that could hurt the bench.
const MAX_BYTES: usize = 64 * 1024 * 1024;
const MAX_HEAD_LINES: usize = 200;

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
                                let _ = serve(stream, &shared).await;
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

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn serve(stream: TcpStream, shared: &Shared) -> Result<(), Error> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    // One request after another on the connection (keep-alive); bounded by
    // the client, which is killed at the end of each measurement.
    loop {
        let Some(request) = read_request(&mut reader).await? else { return Ok(()) };
        let response = route(request, shared).await;
        write.write_all(&response).await?;
        write.flush().await?;
    }
}

async fn route(request: Request, shared: &Shared) -> Vec<u8> {
    const PREFIX: &str = "/2018-06-01/runtime/";
    let Some(tail) = request.path.strip_prefix(PREFIX) else {
        return response(404, &[], b"{\"errorMessage\":\"not found\"}");
    };
    let segments: Vec<&str> = tail.split('/').collect();
    let record = |outcome| {
        let _ = shared.answers.send(Answer { at: Instant::now(), outcome });
        response(202, &[], b"{\"status\":\"OK\"}")
    };
    match (request.method.as_str(), segments.as_slice()) {
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
                    response(200, &headers, &body)
                }
                // Nothing more to invoke: hold the poll, as Lambda does
                // while the function is idle.
                None => std::future::pending().await,
            }
        }
        ("POST", ["invocation", _, "response"]) => record(Outcome::Response(request.body)),
        ("POST", ["invocation", _, "error"]) => record(Outcome::Error(request.body)),
        ("POST", ["init", "error"]) => record(Outcome::InitError(request.body)),
        _ => response(404, &[], b"{\"errorMessage\":\"not found\"}"),
    }
}

fn response(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        _ => "Not Found",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one request; `None` when the client closed the connection.
async fn read_request<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Option<Request>, Error> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(format!("bad request line {line:?}").into());
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut head_bytes = line.len();
    for _ in 0..MAX_HEAD_LINES {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        head_bytes += n;
        if n == 0 || head_bytes > MAX_BYTES {
            return Err("request head cut short or too long".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            let body =
                if chunked { read_chunked(reader).await? } else { read_exact(reader, length.unwrap_or(0)).await? };
            return Ok(Some(Request { method, path, body }));
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    Err("too many header lines".into())
}

async fn read_exact<R: AsyncReadExt + Unpin>(reader: &mut R, length: usize) -> Result<Vec<u8>, Error> {
    if length > MAX_BYTES {
        return Err(format!("body of {length} bytes is too large").into());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

async fn read_chunked<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    let mut line = String::new();
    // Each chunk at least one byte, so the body limit bounds the loop.
    for _ in 0..=MAX_BYTES {
        line.clear();
        reader.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            for _ in 0..MAX_HEAD_LINES {
                line.clear();
                if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
            return Err("too many trailer lines".into());
        }
        if body.len() + size > MAX_BYTES {
            return Err("chunked body too large".into());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        line.clear();
        reader.read_line(&mut line).await?;
    }
    Err("chunked body too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_parse_with_a_length_or_chunks() {
        let raw = b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n";
        let mut reader = BufReader::new(&raw[..]);
        let first = read_request(&mut reader).await.unwrap().unwrap();
        assert_eq!((first.method.as_str(), first.path.as_str(), first.body.as_slice()), ("POST", "/a", &b"abc"[..]));
        let second = read_request(&mut reader).await.unwrap().unwrap();
        assert_eq!((second.path.as_str(), second.body.as_slice()), ("/b", &b"hi!"[..]));
        assert!(read_request(&mut reader).await.unwrap().is_none());
    }
}
