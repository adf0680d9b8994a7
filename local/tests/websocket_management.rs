//! The local `@connections` management API driven by the real
//! `aws-sdk-apigatewaymanagement` client with an endpoint override, as
//! the stream function drives it (DESIGN §12, "Locally"), and the bound on
//! what a client that never reads can cost.

mod ws_common;

use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::{Client, Config};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use ws_common::{connection_id, read, Harness};

fn sdk(endpoint: &str) -> Client {
    let config = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn the_sdk_posts_describes_and_deletes_a_connection() {
    let mut gateway = Harness::start().await;
    let (mut client, connect) = gateway.open(Some("11")).await;
    let id = connection_id(&connect);
    // Both endpoint forms: the bare one and one with the stage, as
    // `https://{domain}/{stage}` is given in AWS.
    for endpoint in [gateway.management_url.clone(), format!("{}/local", gateway.management_url)] {
        let api = sdk(&endpoint);
        api.post_to_connection()
            .connection_id(&id)
            .data(Blob::new(r#"{"type":"pong"}"#))
            .send()
            .await
            .expect("the post is accepted");
        assert_eq!(read(&mut client).await, Some(Message::text(r#"{"type":"pong"}"#)));

        let described = api.get_connection().connection_id(&id).send().await.expect("the connection is described");
        let connected_at = described.connected_at().expect("connectedAt").to_millis().unwrap();
        assert_eq!(connected_at, connect["requestContext"]["connectedAt"].as_i64().unwrap());
        assert!(described.last_active_at().expect("lastActiveAt").to_millis().unwrap() >= connected_at);
        let identity = described.identity().expect("an identity");
        assert_eq!(identity.source_ip(), Some("127.0.0.1"));
        assert_eq!(identity.user_agent(), Some("ws-test/1.0"));
    }

    // Exactly 128 KiB is one frame; one byte more is refused 413.
    let api = sdk(&gateway.management_url);
    let largest = "x".repeat(128 * 1024);
    api.post_to_connection().connection_id(&id).data(Blob::new(largest.clone())).send().await.expect("128 KiB fits");
    assert_eq!(read(&mut client).await, Some(Message::text(largest)));
    let too_large = api
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(vec![b'x'; 128 * 1024 + 1]))
        .send()
        .await
        .expect_err("over 128 KiB is refused");
    let service_error = too_large.as_service_error().expect("a service error");
    assert!(service_error.is_payload_too_large_exception(), "{service_error:?}");
    assert_eq!(too_large.raw_response().map(|r| r.status().as_u16()), Some(413));

    // Frames accepted before the delete still arrive, then the close.
    for n in 0..3 {
        api.post_to_connection().connection_id(&id).data(Blob::new(format!("last {n}"))).send().await.unwrap();
    }
    api.delete_connection().connection_id(&id).send().await.expect("the connection is deleted");
    for n in 0..3 {
        assert_eq!(read(&mut client).await, Some(Message::text(format!("last {n}"))));
    }
    match read(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("a normal close, got {other:?}"),
    }
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1000);

    let gone = api.post_to_connection().connection_id(&id).data(Blob::new("late")).send().await.unwrap_err();
    assert!(gone.as_service_error().is_some_and(|e| e.is_gone_exception()), "{gone:?}");
    let raw = gone.raw_response().expect("a response");
    assert_eq!(raw.status().as_u16(), 410);
    assert_eq!(raw.headers().get("x-amzn-ErrorType"), Some("GoneException"));
    let gone = api.get_connection().connection_id(&id).send().await.unwrap_err();
    assert!(gone.as_service_error().is_some_and(|e| e.is_gone_exception()), "{gone:?}");
    let gone = api.delete_connection().connection_id(&id).send().await.unwrap_err();
    assert!(gone.as_service_error().is_some_and(|e| e.is_gone_exception()), "{gone:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_connection_the_client_closed_and_an_unknown_one_are_gone() {
    let mut gateway = Harness::start().await;
    let (mut client, connect) = gateway.open(None).await;
    let id = connection_id(&connect);
    futures::SinkExt::close(&mut client).await.unwrap();
    assert_eq!(gateway.next_event().await["requestContext"]["eventType"], "DISCONNECT");
    let api = sdk(&gateway.management_url);
    for id in [id.as_str(), "AAAAAAAAAAAAAAA=", "no such id"] {
        let gone = api.post_to_connection().connection_id(id).data(Blob::new("x")).send().await.unwrap_err();
        assert!(gone.as_service_error().is_some_and(|e| e.is_gone_exception()), "{id}: {gone:?}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_instead_of_buffered_without_bound() {
    let mut gateway = Harness::start().await;
    // The client never reads from here on: its socket fills, then the
    // gateway's queue, then the gateway gives up on it.
    let (_silent, connect) = gateway.open(Some("12")).await;
    let id = connection_id(&connect);
    let api = sdk(&gateway.management_url);
    let frame = Blob::new(vec![b'y'; 32 * 1024]);
    // 4,000 frames are 128 MiB, far past the socket buffers and the
    // 4 MiB queue together.
    let mut accepted = 0;
    let mut gone = None;
    for _ in 0..4_000 {
        match api.post_to_connection().connection_id(&id).data(frame.clone()).send().await {
            Ok(_) => accepted += 1,
            Err(error) => {
                gone = Some(error);
                break;
            }
        }
    }
    let gone = gone.unwrap_or_else(|| panic!("still accepting after {accepted} frames of 32 KiB"));
    assert!(gone.as_service_error().is_some_and(|e| e.is_gone_exception()), "{gone:?}");
    let again = api.post_to_connection().connection_id(&id).data(Blob::new("x")).send().await.unwrap_err();
    assert!(again.as_service_error().is_some_and(|e| e.is_gone_exception()), "{again:?}");
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["connectionId"], id.as_str());
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1008);
    gateway.stop().await;
}
