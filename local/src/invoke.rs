//! The local Lambda Invoke API (as `sam local start-lambda`):
//! `POST /2015-03-31/functions/{name}/invocations` with the event as body,
//! answered as Lambda answers, synchronous or asynchronous, and the
//! functions' metric totals at [`METRICS_PATH`].

use std::sync::Arc;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use status_shared::app::now_ms;

use crate::functions::{Function, Functions};
use crate::http::{json_response, read_body, with_header, BodyError};

/// The most of an invocation payload read: Lambda's limit for synchronous
/// invocations, which a 10,000-record MSK batch stays under.
pub const INVOKE_MAX_BODY: usize = 6 * 1024 * 1024;

/// The Invoke API's path prefix and suffix around the function name.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const INVOKE_SUFFIX: &str = "/invocations";
/// Where the Invoke API serves the functions' metric totals.
pub const METRICS_PATH: &str = "/local/metrics";

/// One Invoke API call, answered as Lambda answers: 200 with the result, or
/// 200 with `X-Amz-Function-Error` and `{errorMessage, errorType}` when the
/// function failed; 4xx only when the call itself is wrong (404
/// `ResourceNotFoundException` for a function this stack does not serve).
/// `X-Amz-Invocation-Type: Event` is answered 202 at once and run in the
/// background with Lambda's retries ([`crate::asynchronous`]); `DryRun` is
/// answered 204 and runs nothing.
pub(crate) async fn invoke(functions: &Arc<Functions>, request: Request<Incoming>, id: &str) -> Response<Full<Bytes>> {
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
}
