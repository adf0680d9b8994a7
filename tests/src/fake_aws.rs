//! A scripted stand-in for an AWS JSON-protocol endpoint ([`FakeAws`]):
//! partial failures (`UnprocessedItems`, refused PutEvents entries) cannot
//! be provoked in moto, so this answers whatever a test scripts, to drive
//! the adapters' retry paths.

use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::aws::sdk_config_for;

/// What a [`FakeAws`] answers: given the request's number (from 0), its
/// `X-Amz-Target` (e.g. `AWSEvents.PutEvents`) and JSON body, the JSON
/// body of a 200 answer.
pub type Answer = dyn Fn(usize, &str, &serde_json::Value) -> serde_json::Value + Send + Sync;

/// A scripted stand-in for an AWS JSON-protocol endpoint (DynamoDB,
/// EventBridge) on a free loopback port, recording every request it gets.
/// Only what the SDK sends is handled: HTTP/1.1, `Content-Length` bodies,
/// kept-alive connections.
pub struct FakeAws {
    pub endpoint: String,
    requests: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAws {
    pub async fn start(
        answer: impl Fn(usize, &str, &serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("a bound address"));
        let requests: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let answer: Arc<Answer> = Arc::new(answer);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, seen.clone(), answer.clone()));
            }
        });
        Self { endpoint, requests, task }
    }

    /// An SDK configuration that sends every call here.
    pub async fn config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint).await
    }

    /// Every request so far: target and JSON body, in arrival order.
    pub fn requests(&self) -> Vec<(String, serde_json::Value)> {
        self.requests.lock().expect("the request log").clone()
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>, answer: Arc<Answer>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut target = String::new();
        let mut length = 0usize;
        let mut line = String::new();
        // The request line, then headers up to the blank line.
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((name, value)) = trimmed.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-amz-target" => target = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let index = {
            let mut log = seen.lock().expect("the request log");
            log.push((target.clone(), body.clone()));
            log.len() - 1
        };
        let reply = answer(index, &target, &body).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{}",
            reply.len(),
            reply
        );
        if reader.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
