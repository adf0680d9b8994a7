//! A minimal HTTP/1.1 keep-alive client over loopback: enough for JSON
//! requests with `Content-Length` answers, without pulling in a client
//! library.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The parts of an answer the load test looks at.
pub struct Answer {
    pub status: u16,
    pub function_error: bool,
    /// The answer's body, for the reads the Kafka mode checks.
    pub body: Vec<u8>,
}

/// One client connection, reopened when the server closes it.
pub struct Conn {
    addr: (String, u16),
    stream: Option<BufReader<TcpStream>>,
}

/// Longest wait for one answer; a slower one counts as an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

impl Conn {
    pub fn new(addr: (String, u16)) -> Self {
        Self { addr, stream: None }
    }

    pub async fn post(&mut self, path: &str, body: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(path, body, headers)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err("timed out".into())
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect((self.addr.0.as_str(), self.addr.1)).await.map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr.0,
            self.addr.1,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.get_mut().write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;

        let mut line = String::new();
        stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
        let (mut length, mut function_error, mut close) = (0usize, false, false);
        loop {
            line.clear();
            stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                match name.as_str() {
                    "content-length" => length = value.parse().map_err(|_| "bad content-length")?,
                    "x-amz-function-error" => function_error = true,
                    "connection" if value.eq_ignore_ascii_case("close") => close = true,
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        if close {
            self.stream = None;
        }
        Ok(Answer { status, function_error, body })
    }
}
