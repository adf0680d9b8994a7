//! The integration behind every route: the function a proxy event goes
//! to, as API Gateway's Lambda proxy integration calls it.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{json, Value};

/// A failed invocation of the integration, as Lambda reports a function
/// error: its `errorMessage`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// The integration behind every route: takes one WebSocket proxy event
/// (JSON, see [`super::event`]) and answers as a Lambda proxy integration does,
/// e.g. `{"statusCode": 200}`; `Err` is a function error.
pub type WsHandler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, HandlerError>> + Send + Sync>;

/// A [`WsHandler`] from an async closure.
pub fn ws_handler<F, Fut>(f: F) -> WsHandler
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

/// A handler that accepts every connection and answers every route
/// `{"statusCode": 200}`: a gateway with no function behind it yet.
pub fn accept_all() -> WsHandler {
    ws_handler(|_| async { Ok(json!({ "statusCode": 200 })) })
}
