//! The four functions of the SAM template, linked into one process: each
//! is the same handler its Lambda `main.rs` wires, built once from one
//! [`App`] and called with the event a Lambda would receive.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use aggregator::handler::{read_batch, AppAggregator};
use futures::FutureExt;

use idle_scanner::handler::{AppScanner, Summary as ScanSummary};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use status_api::handler::{ApiResponse, AppApi};
use status_shared::app::App;
use status_shared::domain::Millis;
use status_shared::telemetry::{functions, Metrics};
use status_stream::handler::AppStream;

use crate::metrics::Board;

/// The functions by their logical ids in `template.yaml`, which is how
/// `sam local start-lambda` names them too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Aggregator,
    IdleScanner,
    StatusApi,
    StatusStream,
}

impl Function {
    /// Every function the stack serves, in the template's order.
    pub const ALL: [Function; 4] =
        [Function::Aggregator, Function::IdleScanner, Function::StatusApi, Function::StatusStream];

    /// The logical id, e.g. `AggregatorFunction`.
    pub fn name(self) -> &'static str {
        match self {
            Function::Aggregator => "AggregatorFunction",
            Function::IdleScanner => "IdleScannerFunction",
            Function::StatusApi => "StatusApiFunction",
            Function::StatusStream => "StatusStreamFunction",
        }
    }

    /// Finds a function by logical id, or by a function ARN ending in it
    /// (`arn:aws:lambda:...:function:AggregatorFunction`), the two forms
    /// SDKs and the CLI send.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.rsplit_once(":function:").map_or(name, |(_, tail)| tail);
        // A version or alias qualifier (`:$LATEST`) names the same code here.
        let name = name.split(':').next().unwrap_or(name);
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Why an invocation failed: what Lambda would report as a function error.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The event is not what the function is triggered with; a Lambda
    /// fails the same way when its runtime cannot deserialize the payload.
    #[error("the event is not {expected}: {source}")]
    InvalidEvent {
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the event is not UTF-8 text")]
    NotText,
    /// The function failed, as its own error table reports it to the
    /// runtime (`aggregator::error`, `idle_scanner::error`).
    #[error("{}", .0.error_message)]
    Function(Diagnostic),
    #[error("the result could not be encoded as JSON")]
    Encode(#[source] serde_json::Error),
    /// The handler panicked: this invocation fails, as `lambda_runtime`
    /// reports a panic, and the process (every other function) carries on.
    #[error("the function panicked: {0}")]
    Panicked(String),
}

impl FunctionError {
    /// The `errorType` Lambda reports with the message.
    pub fn error_type(&self) -> &str {
        match self {
            FunctionError::InvalidEvent { .. } | FunctionError::NotText => "InvalidEvent",
            FunctionError::Function(diagnostic) => &diagnostic.error_type,
            FunctionError::Encode(_) => "EncodeError",
            FunctionError::Panicked(_) => "Runtime.Panic",
        }
    }

    /// The message with its causes, as the `errorMessage` people read.
    pub fn message(&self) -> String {
        status_shared::error::chain(self)
    }
}

/// The four handlers, built once and shared by every request, as a warm
/// Lambda reuses its clients.
pub struct Functions {
    aggregator: AppAggregator,
    api: AppApi,
    scanner: AppScanner,
    stream: AppStream,
    /// Where every call's metrics land (served at `/local/metrics`).
    pub board: Arc<Board>,
    metrics: [Metrics; 4],
}

impl Functions {
    /// Builds each handler through the constructor its function's
    /// `main.rs` uses.
    pub fn new(app: &App) -> Self {
        let board = Arc::new(Board::default());
        let metrics = [
            board.metrics(functions::AGGREGATOR),
            board.metrics(functions::IDLE_SCANNER),
            board.metrics(functions::STATUS_API),
            board.metrics(functions::STATUS_STREAM),
        ];
        Self {
            aggregator: AppAggregator::from_app(app),
            api: AppApi::from_app(app),
            scanner: AppScanner::from_app(app),
            stream: AppStream::from_app(app),
            board,
            metrics,
        }
    }

    /// Every shard, as a bare Scheduled Event asks for.
    pub fn all_shards(&self) -> Vec<u32> {
        self.scanner.all_shards()
    }

    /// Runs `function` on the raw event JSON at `now` and answers its JSON
    /// result, as the Invoke API returns it.
    /// A panic in the handler fails this invocation alone
    /// ([`FunctionError::Panicked`]).
    pub async fn invoke(&self, function: Function, event: &[u8], now: Millis) -> Result<Value, FunctionError> {
        contain(self.invoke_unguarded(function, event, now)).await.unwrap_or_else(Err)
    }

    async fn invoke_unguarded(&self, function: Function, event: &[u8], now: Millis) -> Result<Value, FunctionError> {
        // The CLI sends no payload for an invocation without one, and the
        // Lambda runtime hands the function an empty object then.
        let event: &[u8] = if event.iter().all(u8::is_ascii_whitespace) { b"{}" } else { event };
        match function {
            Function::Aggregator => {
                let payload: Value = parse(event, "an MSK (Kafka) event")?;
                let batch = read_batch(payload)
                    .map_err(|source| FunctionError::InvalidEvent { expected: "an MSK (Kafka) event", source })?;
                let summary = self.aggregator.invoke(&batch, now, None, &self.metrics[0]).await.map_err(failed)?;
                serde_json::to_value(summary).map_err(FunctionError::Encode)
            }
            Function::IdleScanner => {
                let input: Value = parse(event, "JSON")?;
                let summary = self.scanner.invoke(&input, now, None, &self.metrics[1]).await.map_err(failed)?;
                serde_json::to_value(summary).map_err(FunctionError::Encode)
            }
            Function::StatusApi => {
                let text = std::str::from_utf8(event).map_err(|_| FunctionError::NotText)?;
                let event: Value = parse(text.as_bytes(), "JSON")?;
                Ok(self.api.invoke(&event, now, None, &self.metrics[2]).await.into_apigw_json())
            }
            Function::StatusStream => {
                let event: Value = parse(event, "JSON")?;
                self.stream.invoke_measured(&event, now, None, &self.metrics[3]).await.map_err(|error| {
                    failed(Diagnostic { error_type: "StreamError".to_owned(), error_message: error.to_string() })
                })
            }
        }
    }

    /// Scans `shards`; failed shards are listed, not raised, so the timer
    /// can log them and carry on.
    /// A panic fails every shard of the call, and the timer goes on.
    pub async fn scan(&self, shards: &[u32], now: Millis) -> ScanSummary {
        contain(self.scanner.scan_measured(shards, now, None, &self.metrics[1]))
            .await
            .unwrap_or_else(|_| ScanSummary { shards: Vec::new(), failed: shards.to_vec() })
    }

    /// Answers one HTTP API (payload v2) event as the function reads it.
    /// A panic answers what API Gateway answers for a failed integration:
    /// `500 {"message": "Internal Server Error"}`, with nothing of the
    /// panic in it.
    pub async fn http(&self, event: &Value, now: Millis) -> ApiResponse {
        contain(self.api.invoke(event, now, None, &self.metrics[2])).await.unwrap_or_else(|_| ApiResponse {
            status: 500,
            headers: Vec::new(),
            body: serde_json::json!({"message": "Internal Server Error"}),
        })
    }
}

/// Runs one invocation so that a panic in it fails that invocation only,
/// as `lambda_runtime` does in AWS (the release profile unwinds, see the
/// README's "Panics"): the panic is logged with its message and returned
/// as [`FunctionError::Panicked`], and the handler, whose state is
/// clients and configuration only, goes on serving.
pub async fn contain<T>(invocation: impl Future<Output = T>) -> Result<T, FunctionError> {
    AssertUnwindSafe(invocation).catch_unwind().await.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(panic = %message, "a function panicked; this invocation failed, the stack goes on");
        FunctionError::Panicked(message)
    })
}

/// A function's error as the runtime reports it, through the function's
/// own `Diagnostic` mapping.
fn failed(error: impl Into<Diagnostic>) -> FunctionError {
    FunctionError::Function(error.into())
}

fn parse<T: serde::de::DeserializeOwned>(event: &[u8], expected: &'static str) -> Result<T, FunctionError> {
    serde_json::from_slice(event).map_err(|source| FunctionError::InvalidEvent { expected, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_found_by_logical_id_or_arn() {
        assert_eq!(Function::from_name("AggregatorFunction"), Some(Function::Aggregator));
        assert_eq!(
            Function::from_name("arn:aws:lambda:us-east-1:123456789012:function:StatusApiFunction"),
            Some(Function::StatusApi)
        );
        assert_eq!(Function::from_name("IdleScannerFunction:$LATEST"), Some(Function::IdleScanner));
        assert_eq!(Function::from_name("aggregator"), None);
        assert_eq!(Function::from_name(""), None);
    }

    #[tokio::test]
    async fn a_panic_fails_its_own_invocation_and_the_next_one_runs() {
        let panicked: Result<(), FunctionError> = contain(async { panic!("boom at {}", 42) }).await;
        assert!(matches!(&panicked, Err(FunctionError::Panicked(m)) if m == "boom at 42"), "{panicked:?}");
        assert_eq!(panicked.unwrap_err().error_type(), "Runtime.Panic");
        let fixed: Result<(), FunctionError> = contain(async { panic!("static") }).await;
        assert!(matches!(fixed, Err(FunctionError::Panicked(m)) if m == "static"));
        assert_eq!(contain(async { 7 }).await.ok(), Some(7), "the next invocation is served");
        // A panic inside a task the invocation awaits is that task's alone.
        let joined = contain(async { tokio::spawn(async { panic!("in a task") }).await.is_err() }).await;
        assert_eq!(joined.ok(), Some(true));
    }

    #[test]
    fn an_error_message_carries_its_causes_once() {
        let source = serde_json::from_str::<Value>("{").unwrap_err();
        let error = FunctionError::InvalidEvent { expected: "JSON", source };
        let message = error.message();
        assert!(message.starts_with("the event is not JSON: EOF"), "{message}");
        assert_eq!(message.matches("EOF").count(), 1, "{message}");
        assert_eq!(error.error_type(), "InvalidEvent");
    }
}
