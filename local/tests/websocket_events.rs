//! The local WebSocket API seen from a real client: the proxy events the
//! function is given for connect, messages and disconnect, identity at the
//! upgrade, message order, size limits (DESIGN §12, "Locally").

mod ws_common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use ws_common::{connection_id, read, Behaviour, Harness};

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().expect("an object").keys().map(String::as_str).collect()
}

/// The typed reader of API Gateway's WebSocket events accepts `event`.
fn typed(event: &Value) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(event.clone()).expect("aws_lambda_events reads the event")
}

const CONTEXT_KEYS: [&str; 13] = [
    "apiId",
    "connectedAt",
    "connectionId",
    "domainName",
    "eventType",
    "extendedRequestId",
    "identity",
    "messageDirection",
    "requestId",
    "requestTime",
    "requestTimeEpoch",
    "routeKey",
    "stage",
];

#[tokio::test]
async fn an_end_users_connection_yields_connect_message_and_disconnect_events() {
    let mut gateway = Harness::start().await;
    let (mut client, connect) = gateway.open(Some("42")).await;

    assert_eq!(keys(&connect), BTreeSet::from(["headers", "multiValueHeaders", "requestContext", "isBase64Encoded"]));
    let context = &connect["requestContext"];
    let mut expected: BTreeSet<&str> = CONTEXT_KEYS.into();
    expected.insert("authorizer");
    assert_eq!(keys(context), expected);
    assert_eq!(context["routeKey"], "$connect");
    assert_eq!(context["authorizer"], json!({ "principalId": "42", "user_id": "42" }));
    assert_eq!(context["identity"], json!({ "sourceIp": "127.0.0.1", "userAgent": "ws-test/1.0" }));
    assert_eq!(context["messageDirection"], "IN");
    assert_eq!(context["stage"], "local");
    assert_eq!(context["connectedAt"], context["requestTimeEpoch"]);
    let id = connection_id(&connect);
    assert_eq!(id.len(), 16);
    assert!(id.ends_with('='));
    assert_eq!(connect["headers"]["User-Agent"], "ws-test/1.0");
    assert_eq!(connect["headers"]["Sec-WebSocket-Version"], "13");
    assert_eq!(connect["multiValueHeaders"]["Sec-WebSocket-Version"], json!(["13"]));
    assert_eq!(connect["headers"]["X-Forwarded-For"], "127.0.0.1");
    assert!(connect["headers"].get("X-Local-User").is_none(), "the authorizer consumes X-Local-User");
    let parsed = typed(&connect);
    assert_eq!(parsed.request_context.event_type.as_deref(), Some("CONNECT"));
    assert_eq!(parsed.request_context.authorizer.fields.get("user_id"), Some(&json!("42")));

    let cases: [(Message, &str, Value, bool); 5] = [
        (
            Message::text(r#"{"action":"subscribe","user_ids":[1,2]}"#),
            "subscribe",
            json!(r#"{"action":"subscribe","user_ids":[1,2]}"#),
            false,
        ),
        (
            Message::text(r#"{"action":"unsubscribe","user_ids":[1]}"#),
            "unsubscribe",
            json!(r#"{"action":"unsubscribe","user_ids":[1]}"#),
            false,
        ),
        (Message::text(r#"{"action":"ping"}"#), "ping", json!(r#"{"action":"ping"}"#), false),
        (Message::text("not json"), "$default", json!("not json"), false),
        (
            Message::binary(vec![0xff, 0, 1]),
            "$default",
            json!(base64::engine::general_purpose::STANDARD.encode([0xff, 0, 1])),
            true,
        ),
    ];
    let mut message_ids = BTreeSet::new();
    for (message, route, body, encoded) in cases {
        client.send(message).await.expect("the client sends");
        let event = gateway.next_event().await;
        assert_eq!(keys(&event), BTreeSet::from(["requestContext", "body", "isBase64Encoded"]));
        let context = &event["requestContext"];
        let mut expected: BTreeSet<&str> = CONTEXT_KEYS.into();
        expected.extend(["authorizer", "messageId"]);
        assert_eq!(keys(context), expected);
        assert_eq!(context["eventType"], "MESSAGE");
        assert_eq!(context["routeKey"], route);
        assert_eq!(context["connectionId"], id.as_str());
        assert_eq!(context["connectedAt"], connect["requestContext"]["connectedAt"]);
        assert_eq!(context["authorizer"], json!({ "principalId": "42", "user_id": "42" }));
        assert_eq!(event["body"], body);
        assert_eq!(event["isBase64Encoded"], encoded);
        assert!(message_ids.insert(context["messageId"].as_str().unwrap().to_owned()), "message ids differ");
        assert_eq!(typed(&event).request_context.route_key.as_deref(), Some(route));
    }

    client.close(Some(CloseFrame { code: CloseCode::from(4000), reason: "bye".into() })).await.unwrap();
    let disconnect = gateway.next_event().await;
    let context = &disconnect["requestContext"];
    let mut expected: BTreeSet<&str> = CONTEXT_KEYS.into();
    expected.extend(["authorizer", "disconnectStatusCode", "disconnectReason"]);
    assert_eq!(keys(context), expected);
    assert_eq!(context["eventType"], "DISCONNECT");
    assert_eq!(context["routeKey"], "$disconnect");
    assert_eq!(context["connectionId"], id.as_str());
    assert_eq!(context["disconnectStatusCode"], 4000);
    assert_eq!(context["disconnectReason"], "bye");
    assert_eq!(typed(&disconnect).request_context.disconnect_status_code, Some(4000));

    // A later connection's whole life passes: still one `$disconnect` for
    // the first connection.
    let (other, _) = gateway.open(None).await;
    drop(other);
    let last = gateway.next_event().await;
    assert_eq!(last["requestContext"]["eventType"], "DISCONNECT");
    assert_eq!(last["requestContext"]["disconnectStatusCode"], 1006, "dropped without a close frame");
    let disconnects = gateway
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            e["requestContext"]["connectionId"] == id.as_str() && e["requestContext"]["eventType"] == "DISCONNECT"
        })
        .count();
    assert_eq!(disconnects, 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_connection_without_the_header_is_a_service_signed_in_with_iam() {
    let mut gateway = Harness::start().await;
    let (mut client, connect) = gateway.open(None).await;
    let context = &connect["requestContext"];
    assert_eq!(keys(context), CONTEXT_KEYS.into(), "no authorizer");
    assert_eq!(context["identity"]["accountId"], "123456789012");
    assert!(context["identity"]["userArn"].as_str().unwrap().starts_with("arn:aws:sts::123456789012:assumed-role/"));
    assert!(typed(&connect).request_context.authorizer.fields.is_empty());
    client.send(Message::text(r#"{"action":"ping"}"#)).await.unwrap();
    let message = gateway.next_event().await;
    assert!(message["requestContext"].get("authorizer").is_none());
    assert_eq!(message["requestContext"]["identity"], context["identity"]);
    client.close(None).await.unwrap();
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1005);
    assert_eq!(disconnect["requestContext"]["disconnectReason"], "Client-side close frame status not set");
    gateway.stop().await;
}

#[tokio::test]
async fn an_invalid_local_user_is_refused_before_the_upgrade() {
    let gateway = Harness::start().await;
    for bad in ["0", "abc", "-4", "9223372036854775808", " "] {
        match gateway.connect(Some(bad)).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 401, "{bad:?}"),
            other => panic!("{bad:?} should be refused 401, got {other:?}"),
        }
    }
    assert!(gateway.log.lock().unwrap().is_empty(), "the function never hears of a refused caller");
}

#[tokio::test]
async fn a_connect_answer_that_is_not_2xx_refuses_the_upgrade_with_its_status() {
    let mut gateway = Harness::with(Behaviour {
        connect: Arc::new(|event| {
            let user = event["requestContext"]["authorizer"]["user_id"].as_str();
            Ok(if user == Some("7") {
                json!({ "statusCode": 403, "body": "no" })
            } else {
                json!({ "statusCode": 200 })
            })
        }),
        ..Behaviour::default()
    })
    .await;
    match gateway.connect(Some("7")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("should be refused 403, got {other:?}"),
    }
    assert_eq!(gateway.next_event().await["requestContext"]["eventType"], "CONNECT");
    // The refused connection gets no `$disconnect`: the next event is the
    // next connection's.
    let (_client, connect) = gateway.open(Some("8")).await;
    assert_eq!(connect["requestContext"]["authorizer"]["user_id"], "8");
    gateway.stop().await;
}

#[tokio::test]
async fn messages_of_one_connection_reach_the_handler_one_at_a_time_in_order() {
    let mut gateway =
        Harness::with(Behaviour { message_delay: Duration::from_millis(2), ..Behaviour::default() }).await;
    let (mut client, _) = gateway.open(Some("1")).await;
    for n in 0..40 {
        client.feed(Message::text(format!(r#"{{"action":"ping","n":{n}}}"#))).await.unwrap();
    }
    client.flush().await.unwrap();
    for n in 0..40 {
        let event = gateway.next_event().await;
        let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["n"], n);
    }
    assert!(!gateway.overlap.load(Ordering::SeqCst), "a message was handled while the one before it still ran");
    gateway.stop().await;
}

#[tokio::test]
async fn a_failing_handler_answers_the_client_as_api_gateway_does() {
    let mut gateway = Harness::with(Behaviour { fail_on: Some("explode".into()), ..Behaviour::default() }).await;
    let (mut client, connect) = gateway.open(Some("3")).await;
    client.send(Message::text("explode")).await.unwrap();
    let event = gateway.next_event().await;
    let Some(Message::Text(text)) = read(&mut client).await else { panic!("an error message") };
    let notice: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        notice,
        json!({
            "message": "Internal server error",
            "connectionId": connection_id(&connect),
            "requestId": event["requestContext"]["requestId"],
        })
    );
    gateway.stop().await;
}

/// Sends `total` bytes of text as data frames of at most `frame` bytes.
async fn send_fragmented(client: &mut ws_common::Client, total: usize, frame: usize) {
    let text = vec![b'a'; total];
    let chunks: Vec<&[u8]> = text.chunks(frame).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
        let last = i + 1 == chunks.len();
        client.feed(Message::Frame(Frame::message(chunk.to_vec(), opcode, last))).await.unwrap();
    }
    client.flush().await.unwrap();
}

#[tokio::test]
async fn messages_up_to_1_mib_reach_the_function_and_longer_ones_close_the_connection_with_1009() {
    let mut gateway = Harness::start().await;

    // 128 KiB in 32 KiB frames, one byte more, and one frame of 40 KiB:
    // all passed on, so the function can answer `payload_too_large` for
    // the long one and the connection stays open (DESIGN §12).
    let (mut client, _) = gateway.open(Some("5")).await;
    for (total, frame) in [(128 * 1024, 32 * 1024), (128 * 1024 + 1, 32 * 1024), (40 * 1024, 40 * 1024)] {
        send_fragmented(&mut client, total, frame).await;
        let event = gateway.next_event().await;
        assert_eq!(event["requestContext"]["eventType"], "MESSAGE");
        assert_eq!(event["body"].as_str().map(str::len), Some(total));
    }

    // Over 1 MiB is not, and ends the connection.
    send_fragmented(&mut client, 1024 * 1024 + 1, 64 * 1024).await;
    match read(&mut client).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Size);
            assert_eq!(frame.reason, "Message too big");
        }
        other => panic!("a 1009 close, got {other:?}"),
    }
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["eventType"], "DISCONNECT");
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1009);

    // So is a single frame over 1 MiB.
    let (mut client, _) = gateway.open(Some("5")).await;
    client.send(Message::text("b".repeat(1024 * 1024 + 1))).await.unwrap();
    match read(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("a 1009 close, got {other:?}"),
    }
    assert_eq!(gateway.next_event().await["requestContext"]["disconnectStatusCode"], 1009);
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_going_away_and_reports_it() {
    let mut gateway = Harness::start().await;
    let (mut client, connect) = gateway.open(Some("9")).await;
    gateway.stop().await;
    match read(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("a 1001 close, got {other:?}"),
    }
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["connectionId"], connect["requestContext"]["connectionId"]);
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1001);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let settings =
        local_stack::websocket::GatewaySettings { port: 0, idle_timeout: Duration::from_secs(1), ..Default::default() };
    let mut gateway = Harness::with(Behaviour { settings, ..Behaviour::default() }).await;
    let (mut client, _) = gateway.open(None).await;
    match read(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("a 1001 close, got {other:?}"),
    }
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["disconnectReason"], "Going away: idle timeout");
    gateway.stop().await;
}

#[tokio::test]
async fn a_connection_is_closed_when_it_reaches_its_longest_duration() {
    let settings = local_stack::websocket::GatewaySettings {
        port: 0,
        max_connection: Duration::from_secs(1),
        ..Default::default()
    };
    let mut gateway = Harness::with(Behaviour { settings, ..Behaviour::default() }).await;
    let (mut client, _) = gateway.open(Some("10")).await;
    // Activity does not extend it, unlike the idle timeout.
    client.send(Message::text(r#"{"action":"ping"}"#)).await.unwrap();
    assert_eq!(gateway.next_event().await["requestContext"]["routeKey"], "ping");
    match read(&mut client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("a 1001 close, got {other:?}"),
    }
    let disconnect = gateway.next_event().await;
    assert_eq!(disconnect["requestContext"]["disconnectReason"], "Going away: connection duration exceeded");
    gateway.stop().await;
}

#[tokio::test]
async fn headers_of_the_connect_answer_reach_the_client_such_as_a_chosen_subprotocol() {
    let mut gateway = Harness::with(Behaviour {
        connect: Arc::new(|event| {
            let offered = event["headers"]["Sec-WebSocket-Protocol"].as_str().unwrap_or_default().to_owned();
            Ok(json!({ "statusCode": 200, "headers": { "Sec-WebSocket-Protocol": offered } }))
        }),
        ..Behaviour::default()
    })
    .await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(gateway.ws_url.as_str())
            .unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "status.v1".parse().unwrap());
    let (_client, response) = tokio_tungstenite::connect_async(request).await.expect("the subprotocol is agreed");
    assert_eq!(response.headers()["sec-websocket-protocol"], "status.v1");
    assert_eq!(gateway.next_event().await["requestContext"]["eventType"], "CONNECT");
    gateway.stop().await;
}
