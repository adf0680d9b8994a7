//! Events as API Gateway may send them: odd claims and shapes are read tolerantly.

use super::*;

/// The sample JWT event of `events/` (user 42 reads user 7) with `claims`.
fn jwt_event(claims: Value) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/status-api/single-jwt.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the sample")).expect("JSON");
    event["requestContext"]["authorizer"]["jwt"]["claims"] = claims;
    event
}

fn proxy_body(answer: &Value) -> Value {
    serde_json::from_str(answer["body"].as_str().expect("a body string")).expect("a JSON body")
}

#[tokio::test]
async fn claims_of_any_json_type_and_a_numeric_sub_are_answered_as_the_user() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(7, "a", T0), connected(42, "b", T0)], T0).await;
    let odd = json!({
        "sub": "42", "exp": 1_893_456_000, "iat": 1_764_270_000, "email_verified": true,
        "groups": ["admins", 3], "address": { "country": "NL" }, "nickname": null, "ratio": 0.25
    });
    let answer = api.invoke(&jwt_event(odd), T0, None, &quiet()).await.into_apigw_json();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(proxy_body(&answer)["status"], "online");
    // The caller was user 42: their poll window is now taken, and a
    // numeric `sub` names the same user.
    let answer =
        api.invoke(&jwt_event(json!({ "sub": 42, "exp": 1_893_456_000 })), T0, None, &quiet()).await.into_apigw_json();
    assert_eq!(answer["statusCode"], 429, "{answer}");
    assert_eq!(proxy_body(&answer)["error"]["code"], "rate_limited");
    // A `sub` of another type is no user id: the token's problem, a 401.
    let answer =
        api.invoke(&jwt_event(json!({ "sub": [42], "exp": true })), T0, None, &quiet()).await.into_apigw_json();
    assert_eq!(
        (answer["statusCode"].as_u64(), proxy_body(&answer)["error"]["code"].as_str()),
        (Some(401), Some("unauthorized"))
    );
}

#[tokio::test]
async fn an_event_that_is_no_http_request_is_a_400_in_the_error_shape_and_changes_nothing() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let mut body_not_text = jwt_event(json!({ "sub": "42" }));
    body_not_text["rawPath"] = json!("/v1/users/42/visibility");
    body_not_text["requestContext"]["http"]["method"] = json!("PUT");
    body_not_text["body"] = json!({ "visible": false });
    for event in [json!({}), json!([1, 2]), json!({ "requestContext": "x" }), body_not_text] {
        let answer = api.invoke(&event, T0, None, &quiet()).await.into_apigw_json();
        assert_eq!(answer["statusCode"], 400, "{event}: {answer}");
        let body = proxy_body(&answer);
        let response = ApiResponse { status: 400, headers: Vec::new(), body };
        assert_error(&response, 400, "invalid_request");
    }
    assert_eq!(stack.durable(id(42)).await, None, "the unreadable hide changed nothing");
}

/// Metrics kept in memory and never read: these tests look at answers.
fn quiet() -> status_shared::telemetry::Metrics {
    status_shared::telemetry::Metrics::capture(status_shared::telemetry::functions::STATUS_API).0
}
