//! The authorizer against a real issuer served on loopback (`support`):
//! tokens signed in the test with the committed test-only keys.

mod support;

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_runtime::Diagnostic;
use serde_json::{json, Value};
use status_shared::domain::Millis;
use stream_authorizer::config::AuthConfig;
use stream_authorizer::error::{AuthorizerError, Refusal};
use stream_authorizer::handler::Authorizer;
use stream_authorizer::jwks::KeySource;
use stream_authorizer::policy::AuthorizerResponse;
use stream_authorizer::verify::MAX_TOKEN_BYTES;
use support::{Issuer, TestKey, EC_1, RSA_1, RSA_2};

const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/$connect";
const NOW_S: u64 = 1_764_270_100;
const NOW: Millis = NOW_S as Millis * 1000 + 999;

/// An issuer publishing `keys`, and an authorizer trusting it for the
/// audiences `web` and `mobile` that refetches keys whenever asked.
async fn setup(keys: &[&TestKey]) -> (Issuer, Authorizer) {
    setup_with_interval(keys, Duration::ZERO).await
}

async fn setup_with_interval(keys: &[&TestKey], interval: Duration) -> (Issuer, Authorizer) {
    let issuer = Issuer::start(keys).await;
    let config = AuthConfig::new(&issuer.url, "web,mobile").unwrap();
    let source = KeySource::new(&config).unwrap().with_refetch_interval(interval);
    (issuer, Authorizer::with_keys(&config, source))
}

/// Claims that pass: user 42, for `web`, valid for an hour around now.
fn claims(issuer: &Issuer) -> Value {
    json!({"iss": issuer.url, "aud": "web", "sub": "42", "iat": NOW_S, "nbf": NOW_S - 10, "exp": NOW_S + 3600})
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(name);
    } else {
        claims[name] = value;
    }
    claims
}

/// A `$connect` authorizer event carrying `token` in the query string.
fn query_event(token: &str) -> Value {
    json!({"type": "REQUEST", "methodArn": ARN,
        "headers": {"Host": "abcdef123.execute-api.us-east-1.amazonaws.com", "Sec-WebSocket-Version": "13"},
        "queryStringParameters": {"token": token},
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "Cx1="}})
}

fn header_event(authorization: &str) -> Value {
    json!({"type": "REQUEST", "methodArn": ARN, "headers": {"Authorization": authorization}})
}

async fn refusal(authorizer: &Authorizer, event: &Value) -> Refusal {
    match authorizer.handle(event, NOW, Some("test")).await {
        Err(AuthorizerError::Unauthorized(refusal)) => refusal,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

fn allow_42() -> Value {
    json!({"principalId": "42", "policyDocument": {"Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ARN}]},
        "context": {"user_id": "42"}})
}

#[tokio::test]
async fn a_valid_rs256_token_in_the_query_is_allowed_as_its_user() {
    let (issuer, authorizer) = setup(&[&RSA_1, &EC_1]).await;
    let response = authorizer.handle(&query_event(&RSA_1.sign(&claims(&issuer))), NOW, None).await.unwrap();
    assert_eq!(serde_json::to_value(&response).unwrap(), allow_42());
}

#[tokio::test]
async fn a_valid_es256_bearer_header_is_allowed_with_a_numeric_sub_and_an_audience_list() {
    let (issuer, authorizer) = setup(&[&RSA_1, &EC_1]).await;
    let claims = with(with(claims(&issuer), "sub", json!(42)), "aud", json!(["other", "mobile"]));
    let event = header_event(&format!("Bearer {}", EC_1.sign(&claims)));
    let response = authorizer.handle(&event, NOW, None).await.unwrap();
    assert_eq!(serde_json::to_value(&response).unwrap(), allow_42());
}

#[tokio::test]
async fn exp_and_nbf_are_judged_with_sixty_seconds_of_leeway() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    let token = |name: &str, value: u64| RSA_1.sign(&with(claims(&issuer), name, json!(value)));
    for allowed in [token("exp", NOW_S - 60), token("nbf", NOW_S + 60)] {
        assert!(authorizer.handle(&query_event(&allowed), NOW, None).await.unwrap().allows());
    }
    let expired = refusal(&authorizer, &query_event(&token("exp", NOW_S - 61))).await;
    assert_eq!(expired, Refusal::Expired { exp: NOW_S - 61, now: NOW_S, leeway: 60 });
    let early = refusal(&authorizer, &query_event(&token("nbf", NOW_S + 61))).await;
    assert_eq!(early, Refusal::NotYetValid { nbf: NOW_S + 61, now: NOW_S, leeway: 60 });
}

#[tokio::test]
async fn another_issuer_or_audience_and_missing_claims_are_refused() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    let cases = [
        ("iss", json!("https://id.example.com"), Refusal::Issuer),
        ("iss", json!(format!("{}/", issuer.url)), Refusal::Issuer),
        ("aud", json!("api"), Refusal::Audience),
        ("aud", json!(["api", "admin"]), Refusal::Audience),
        ("aud", Value::Null, Refusal::MissingClaim("aud".into())),
        ("iss", Value::Null, Refusal::MissingClaim("iss".into())),
        ("exp", Value::Null, Refusal::MissingClaim("exp".into())),
        ("exp", json!("soon"), Refusal::MissingClaim("exp".into())),
    ];
    for (name, value, expected) in cases {
        let token = RSA_1.sign(&with(claims(&issuer), name, value.clone()));
        assert_eq!(refusal(&authorizer, &query_event(&token)).await, expected, "{name} = {value}");
    }
}

#[tokio::test]
async fn a_wrong_key_or_a_key_of_another_algorithm_is_refused() {
    let (issuer, authorizer) = setup(&[&RSA_1, &EC_1]).await;
    let forged = RSA_2.sign_as(Algorithm::RS256, Some(RSA_1.kid), &claims(&issuer));
    assert_eq!(refusal(&authorizer, &query_event(&forged)).await, Refusal::Signature);
    let crossed = EC_1.sign_as(Algorithm::ES256, Some(RSA_1.kid), &claims(&issuer));
    let expected = Refusal::KeyAlgorithm { key: "RS256".into(), token: "ES256".into() };
    assert_eq!(refusal(&authorizer, &query_event(&crossed)).await, expected);
    let no_kid = RSA_1.sign_as(Algorithm::RS256, None, &claims(&issuer));
    assert_eq!(refusal(&authorizer, &query_event(&no_kid)).await, Refusal::NoKid);
    let unknown = RSA_2.sign(&claims(&issuer));
    assert_eq!(refusal(&authorizer, &query_event(&unknown)).await, Refusal::UnknownKid);
}

#[tokio::test]
async fn keys_with_broken_material_refuse_tokens_without_panicking() {
    let (issuer, authorizer) = setup(&[]).await;
    issuer.publish_raw(json!({"keys": [
        {"kty": "RSA", "kid": RSA_1.kid, "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "kid": EC_1.kid, "x": "AQAB", "y": ""},
    ]}));
    for token in [RSA_1.sign(&claims(&issuer)), EC_1.sign(&claims(&issuer))] {
        let refused = refusal(&authorizer, &query_event(&token)).await;
        assert!(matches!(refused, Refusal::Signature | Refusal::Library(_)), "{refused:?}");
    }
}

#[tokio::test]
async fn only_rs256_and_es256_are_accepted() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(json!({"alg": "none", "kid": RSA_1.kid})), b64(claims(&issuer)));
    assert_eq!(refusal(&authorizer, &query_event(&none)).await, Refusal::Malformed("a part is not the JSON expected"));
    // An HMAC keyed with what a careless verifier might take for the key.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(RSA_1.kid.into());
    let secret = EncodingKey::from_secret(RSA_1.jwk().to_string().as_bytes()).unwrap();
    let hs256 = jsonwebtoken::encode(&header, &claims(&issuer), &secret).unwrap();
    assert_eq!(refusal(&authorizer, &query_event(&hs256)).await, Refusal::Algorithm("HS256".into()));
    let rs384 = RSA_1.sign_as(Algorithm::RS384, Some(RSA_1.kid), &claims(&issuer));
    assert_eq!(refusal(&authorizer, &query_event(&rs384)).await, Refusal::Algorithm("RS384".into()));
    let mut critical = Header::new(Algorithm::RS256);
    critical.kid = Some(RSA_1.kid.into());
    critical.crit = Some(vec!["b64".into()]);
    let critical = jsonwebtoken::encode(&critical, &claims(&issuer), &RSA_1.encoding()).unwrap();
    assert_eq!(refusal(&authorizer, &query_event(&critical)).await, Refusal::Critical);
}

#[tokio::test]
async fn malformed_or_missing_tokens_are_refused_without_a_fetch() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    let valid = RSA_1.sign(&claims(&issuer));
    let (head, rest) = valid.split_once('.').unwrap();
    for token in ["abc", "a.b", "a.b.c", "...", "é.é.é", &format!("{head}.{rest}.extra"), &format!("{head}x.{rest}")]
    {
        assert!(matches!(refusal(&authorizer, &query_event(token)).await, Refusal::Malformed(_)), "{token}");
    }
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(refusal(&authorizer, &query_event(&long)).await, Refusal::TooLong { max: MAX_TOKEN_BYTES });
    assert_eq!(refusal(&authorizer, &query_event("")).await, Refusal::NoToken);
    assert_eq!(refusal(&authorizer, &header_event(&format!("Basic {valid}"))).await, Refusal::NotBearer);
    let no_arn = with(query_event(&valid), "methodArn", Value::Null);
    assert_eq!(refusal(&authorizer, &no_arn).await, Refusal::NoMethodArn);
    assert_eq!(issuer.jwks_fetches(), 0, "nothing above needed a key");
}

#[tokio::test]
async fn a_genuine_token_whose_sub_is_no_user_id_is_denied() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    for sub in [json!("0"), json!("abc"), json!("9223372036854775808"), json!(-1), json!(1.5), Value::Null] {
        let token = RSA_1.sign(&with(claims(&issuer), "sub", sub.clone()));
        let response = authorizer.handle(&query_event(&token), NOW, None).await.unwrap();
        assert_eq!(response, AuthorizerResponse::deny(ARN), "sub {sub}");
    }
    let top = RSA_1.sign(&with(claims(&issuer), "sub", json!("9223372036854775807")));
    let response = authorizer.handle(&query_event(&top), NOW, None).await.unwrap();
    assert_eq!(response.context.map(|c| c.user_id).as_deref(), Some("9223372036854775807"));
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_key_set_once_more_and_finds_a_rotated_key() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    let authorizer = &authorizer;
    let allowed =
        |token: String| async move { authorizer.handle(&query_event(&token), NOW, None).await.unwrap().allows() };
    assert!(allowed(RSA_1.sign(&claims(&issuer))).await);
    assert!(allowed(RSA_1.sign(&claims(&issuer))).await);
    assert_eq!(issuer.jwks_fetches(), 1, "the key set is cached");
    issuer.publish(&[&RSA_1, &RSA_2]);
    assert!(allowed(RSA_2.sign(&claims(&issuer))).await);
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the new kid");
    let ghost = RSA_2.sign_as(Algorithm::RS256, Some("ghost"), &claims(&issuer));
    assert_eq!(refusal(authorizer, &query_event(&ghost)).await, Refusal::UnknownKid);
    assert_eq!(issuer.jwks_fetches(), 3, "once per unknown kid, not more");
}

#[tokio::test]
async fn unknown_kids_inside_the_refetch_interval_fetch_nothing() {
    let (issuer, authorizer) = setup_with_interval(&[&RSA_1], Duration::from_secs(3600)).await;
    assert!(authorizer.handle(&query_event(&RSA_1.sign(&claims(&issuer))), NOW, None).await.unwrap().allows());
    issuer.publish(&[&RSA_2]);
    for _ in 0..3 {
        assert_eq!(refusal(&authorizer, &query_event(&RSA_2.sign(&claims(&issuer)))).await, Refusal::UnknownKid);
    }
    assert_eq!(issuer.jwks_fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_issuer_is_not_reported_as_unauthorized() {
    let (issuer, authorizer) = setup(&[&RSA_1]).await;
    issuer.fail(true);
    let error = authorizer.handle(&query_event(&RSA_1.sign(&claims(&issuer))), NOW, None).await.unwrap_err();
    assert!(matches!(error, AuthorizerError::KeysUnavailable(_)), "{error:?}");
    assert_ne!(Diagnostic::from(error).error_message, "Unauthorized");
    issuer.fail(false);
    assert!(authorizer.handle(&query_event(&RSA_1.sign(&claims(&issuer))), NOW, None).await.unwrap().allows());
}

#[tokio::test]
async fn a_discovery_document_of_another_issuer_is_refused() {
    let issuer = Issuer::start(&[&RSA_1]).await;
    let config = AuthConfig::new(&format!("{}/", issuer.url), "web").unwrap();
    let authorizer = Authorizer::new(config).unwrap();
    let token = RSA_1.sign(&with(claims(&issuer), "iss", json!(format!("{}/", issuer.url))));
    let error = authorizer.handle(&query_event(&token), NOW, None).await.unwrap_err();
    assert!(error.reason().contains("its issuer is not JWT_ISSUER"), "{}", error.reason());
    assert_eq!(issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn a_refusal_reaches_the_runtime_as_exactly_unauthorized() {
    let (_issuer, authorizer) = setup(&[&RSA_1]).await;
    let error = authorizer.handle(&json!({"methodArn": ARN}), NOW, None).await.unwrap_err();
    let diagnostic = Diagnostic::from(error);
    assert_eq!((diagnostic.error_type.as_str(), diagnostic.error_message.as_str()), ("Unauthorized", "Unauthorized"));
}

#[tokio::test]
async fn events_of_any_shape_are_refused_without_panicking() {
    let (_issuer, authorizer) = setup(&[&RSA_1]).await;
    for event in [
        json!(null),
        json!([]),
        json!(7),
        json!({"methodArn": ARN, "headers": [1], "queryStringParameters": []}),
        json!({"methodArn": ARN, "headers": {"authorization": null}, "queryStringParameters": {"token": 5}}),
    ] {
        assert!(matches!(refusal(&authorizer, &event).await, Refusal::NoMethodArn | Refusal::NoToken), "{event}");
    }
}

#[test]
fn the_sample_event_carries_a_method_arn_and_a_query_token() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/stream-authorizer/connect.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let request = stream_authorizer::request::ConnectRequest::from_event(&event);
    assert!(request.method_arn().unwrap().ends_with("/$connect"));
    let (token, source) = request.bearer().unwrap();
    assert_eq!(source, stream_authorizer::request::TokenSource::Query);
    assert_eq!(token.split('.').count(), 3);
}
