//! The request as the handler sees it: method, path, body and caller,
//! taken once from the API Gateway v2 event so nothing past here reads the
//! raw event.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use status_shared::domain::UserId;

/// Who is calling, from `requestContext.authorizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An end user (JWT authorizer) whose `sub` is this user id.
    User(UserId),
    /// An end user whose token carries no usable `sub`.
    BadSubject,
    /// A service (IAM authorizer), or a request with no authorizer: API
    /// Gateway only lets those through on routes configured without one
    /// (the public route) or with IAM.
    Service,
}

/// A request reduced to what the routes need.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub caller: Caller,
}

impl ApiRequest {
    pub fn from_lambda(request: &Request) -> Self {
        let body = match request.body() {
            Body::Empty => Vec::new(),
            Body::Text(text) => text.as_bytes().to_vec(),
            Body::Binary(bytes) => bytes.clone(),
            _ => Vec::new(),
        };
        let raw = request.raw_http_path();
        let path = if raw.is_empty() { request.uri().path().to_owned() } else { raw.to_owned() };
        Self { method: request.method().as_str().to_owned(), path, body, caller: caller_of(request) }
    }
}

fn caller_of(request: &Request) -> Caller {
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
        return Caller::Service;
    };
    let Some(authorizer) = &context.authorizer else {
        return Caller::Service;
    };
    match &authorizer.jwt {
        Some(jwt) => match jwt.claims.get("sub").and_then(|sub| sub.parse::<UserId>().ok()) {
            Some(user) => Caller::User(user),
            None => Caller::BadSubject,
        },
        None => Caller::Service,
    }
}
