//! The frame poster over the real SDK client against a real HTTP server
//! that answers as the Management API does (DESIGN §12): a frame is a
//! `POST /@connections/{id}`; a closed connection answers `410` with
//! `x-amzn-ErrorType: GoneException`.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use status_shared::adapters::apigw::ApiGatewayPoster;
use status_shared::domain::stream::ConnectionId;
use status_shared::ports::{FramePoster, Posted};

type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

async fn answer(request: Request<Incoming>, seen: Seen) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (method, path) = (request.method().to_string(), request.uri().path().to_owned());
    let body = request.into_body().collect().await?.to_bytes().to_vec();
    seen.lock().unwrap().push((method, path.clone(), body));
    let response = if path.ends_with("/gone") {
        Response::builder()
            .status(410)
            .header("x-amzn-ErrorType", "GoneException")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"message\":\"Gone\"}")))
    } else if path.ends_with("/broken") {
        Response::builder().status(400).header("x-amzn-ErrorType", "BadRequestException").body(Full::new(Bytes::new()))
    } else {
        Response::builder().status(200).body(Full::new(Bytes::new()))
    };
    Ok(response.unwrap())
}

/// A management API on a free loopback port; returns its URL.
async fn serve(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(request, seen.clone()));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    url
}

/// An SDK configuration with fixed test credentials, as the function gets.
fn sdk() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::SharedCredentialsProvider::new(
            aws_sdk_apigatewaymanagement::config::Credentials::new("test", "test", None, None, "test"),
        ))
        .build()
}

#[tokio::test]
async fn frames_go_out_through_the_sdk_and_410_is_gone() {
    let seen: Seen = Arc::default();
    let url = serve(seen.clone()).await;
    let sdk = sdk();
    let poster = ApiGatewayPoster::new(&sdk, Some(&url));
    let frame = r#"{"type":"pong"}"#;
    assert_eq!(poster.post(&ConnectionId::new("abc=").unwrap(), frame).await.unwrap(), Posted::Sent);
    assert_eq!(poster.post(&ConnectionId::new("gone").unwrap(), frame).await.unwrap(), Posted::Gone);
    assert!(poster.post(&ConnectionId::new("broken").unwrap(), frame).await.is_err());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "POST");
    assert!(seen[0].1 == "/@connections/abc%3D" || seen[0].1 == "/@connections/abc=", "{}", seen[0].1);
    assert_eq!(seen[0].2, frame.as_bytes());
    assert!(ApiGatewayPoster::disabled().post(&ConnectionId::new("x").unwrap(), frame).await.is_err());
}

#[tokio::test]
async fn a_close_is_a_delete_through_the_sdk_and_a_gone_connection_counts_as_closed() {
    let seen: Seen = Arc::default();
    let url = serve(seen.clone()).await;
    let sdk = sdk();
    // Two endpoints, as deployed (the user and the service API).
    let poster = ApiGatewayPoster::new(&sdk, Some(&format!("{url},{url}")));
    poster.close(&ConnectionId::new("abc").unwrap()).await.expect("closed");
    poster.close(&ConnectionId::new("gone").unwrap()).await.expect("a gone connection counts as closed");
    assert!(poster.close(&ConnectionId::new("broken").unwrap()).await.is_err());
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str)> = seen.iter().map(|(method, path, _)| (method.as_str(), path.as_str())).collect();
    assert_eq!(
        calls,
        vec![
            ("DELETE", "/@connections/abc"),
            ("DELETE", "/@connections/gone"),
            ("DELETE", "/@connections/gone"),
            ("DELETE", "/@connections/broken"),
        ],
        "a close stops at the API that knew the connection; a gone one is asked of both"
    );
    assert!(ApiGatewayPoster::disabled().close(&ConnectionId::new("x").unwrap()).await.is_err());
}
