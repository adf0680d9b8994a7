//! Errors in the contract's shape (DESIGN §7): every refused request, and nothing changed by it.

use super::*;

#[tokio::test]
async fn an_unknown_route_is_404_with_the_error_shape() {
    let stack = Stack::new().await;
    let api = api(&stack);
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v1/nothing"),
        ("GET", "/v1/status"),
        ("GET", "/v1/status/1/extra"),
        ("POST", "/v2/status/bulk"),
        ("PUT", "/v1/users/1/avatar"),
        ("GET", "/v1/public/status"),
    ] {
        for caller in [Caller::Service, me(1), Caller::BadSubject] {
            assert_error(&api.handle(&request(method, path, "", caller), T0).await, 404, "not_found");
        }
    }
}

#[tokio::test]
async fn a_known_route_with_another_method_is_405_naming_the_allowed_one() {
    let stack = Stack::new().await;
    let api = api(&stack);
    for (method, path, allowed) in [
        ("GET", "/v1/status/bulk", "POST"),
        ("DELETE", "/v1/status/1", "GET"),
        ("POST", "/v1/public/status/1", "GET"),
        ("GET", "/v1/users/1/visibility", "PUT"),
    ] {
        let response = api.handle(&request(method, path, "", Caller::Service), T0).await;
        assert_error(&response, 405, "method_not_allowed");
        assert_eq!(response.header("allow"), Some(allowed));
    }
}

#[tokio::test]
async fn bad_requests_are_400_with_the_contract_codes() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let post = |body: &str| request("POST", "/v1/status/bulk", body, Caller::Service);
    let get = |path: &str| request("GET", path, "", Caller::Service);
    let cases = [
        (post("{"), "invalid_json"),
        (post(""), "invalid_json"),
        (post(r#"{"user_ids": [1,]}"#), "invalid_json"),
        (post("[1, 2]"), "invalid_request"),
        (post(r#"{"ids": [1]}"#), "invalid_request"),
        (post(r#"{"user_ids": "1"}"#), "invalid_request"),
        (post(r#"{"user_ids": null}"#), "invalid_request"),
        (post(r#"{"user_ids": {"0": 1}}"#), "invalid_request"),
        (post(r#"{"user_ids": []}"#), "empty_request"),
        (post(r#"{"user_ids": [1, 0]}"#), "invalid_user_id"),
        (post(r#"{"user_ids": [-1]}"#), "invalid_user_id"),
        (post(r#"{"user_ids": ["1"]}"#), "invalid_user_id"),
        (post(r#"{"user_ids": [1.5]}"#), "invalid_user_id"),
        (post(r#"{"user_ids": [null]}"#), "invalid_user_id"),
        (post(r#"{"user_ids": [9223372036854775808]}"#), "invalid_user_id"),
        (get("/v1/status/abc"), "invalid_user_id"),
        (get("/v1/status/0"), "invalid_user_id"),
        (get("/v1/status/-3"), "invalid_user_id"),
        (get("/v1/status/1.0"), "invalid_user_id"),
        (get("/v1/status/9223372036854775808"), "invalid_user_id"),
        (get("/v1/public/status/abc"), "invalid_user_id"),
        (get("/v1/public/status/0"), "invalid_user_id"),
    ];
    for (request, code) in &cases {
        let response = api.handle(request, T0).await;
        assert_error(&response, 400, code);
    }
    // The largest id is a user id.
    ok(&api, &get("/v1/status/9223372036854775807"), T0).await;
}

#[tokio::test]
async fn too_many_ids_counts_the_ids_as_sent_before_duplicates_collapse() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let all_the_same = |n: usize| {
        request("POST", "/v1/status/bulk", format!(r#"{{"user_ids": [{}]}}"#, vec!["5"; n].join(",")), Caller::Service)
    };
    assert_error(&api.handle(&all_the_same(MAX_BULK_IDS + 1), T0).await, 400, "too_many_ids");
    let distinct: Vec<u64> = (1..=MAX_BULK_IDS as u64 + 1).collect();
    assert_error(&api.handle(&bulk(&distinct, Caller::Service), T0).await, 400, "too_many_ids");
    let body = ok(&api, &all_the_same(MAX_BULK_IDS), T0).await;
    assert_eq!(entries(&body), vec![reads(5, "offline", None)]);
}

#[tokio::test]
async fn a_body_over_64_kib_is_413_and_one_of_exactly_64_kib_is_read() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let padded = |len: usize| {
        let head = r#"{"user_ids": [1, 2]"#;
        let body = format!("{head}{}}}", " ".repeat(len - head.len() - 1));
        assert_eq!(body.len(), len);
        request("POST", "/v1/status/bulk", body, Caller::Service)
    };
    assert_eq!(MAX_BODY_BYTES, 64 * 1024);
    let body = ok(&api, &padded(MAX_BODY_BYTES), T0).await;
    assert_eq!(entries(&body).len(), 2);
    assert_error(&api.handle(&padded(MAX_BODY_BYTES + 1), T0).await, 413, "payload_too_large");
    // Size is checked before anything else: not even parsed.
    let garbage = request("POST", "/v1/status/bulk", vec![b'{'; 1 << 20], Caller::Service);
    assert_error(&api.handle(&garbage, T0).await, 413, "payload_too_large");
}

#[tokio::test]
async fn a_token_whose_sub_is_not_a_user_id_is_401_except_on_the_public_route() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(63, "a", T0)], T0).await;
    for request in
        [bulk(&[63], Caller::BadSubject), single(63, Caller::BadSubject), set_visible(63, false, Caller::BadSubject)]
    {
        assert_error(&api.handle(&request, T0).await, 401, "unauthorized");
    }
    // The public route looks at no identity.
    assert_eq!(entry(&ok(&api, &public(63, Caller::BadSubject), T0).await), reads(63, "online", Some(T0)));
}

#[tokio::test]
async fn no_answer_ever_carries_a_stack_trace_or_a_rust_type_name() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let down = api_with_nothing_up(&stack).await;
    let post = |body: Vec<u8>| request("POST", "/v1/status/bulk", body, Caller::Service);
    let hostile = [
        post(vec![b'['; 60_000]),
        post(format!(r#"{{"user_ids": {}1{}}}"#, "[".repeat(200), "]".repeat(200)).into_bytes()),
        post(vec![0xff, 0xfe, b'{', 0x80]),
        post(br#"{"user_ids": [1e400]}"#.to_vec()),
        post(br#"{"user_ids": [18446744073709551616]}"#.to_vec()),
        post(br#"{"user_ids": [1], "user_ids": "twice"}"#.to_vec()),
        request("GET", "/v1/status/\u{661}\u{662}", "", Caller::Service),
        request("GET", "/v1/status/%00", "", Caller::Service),
        request("PUT", "/v1/users/1/visibility", vec![0xc3, 0x28], me(1)),
        request("PATCH", "/v1/status/1", "", Caller::Service),
    ];
    for request in &hostile {
        let response = api.handle(request, T0).await;
        assert!((400..500).contains(&response.status), "{} answered {}", request.path, response.status);
        assert!(response.body["error"]["code"].is_string(), "error shape: {}", response.body);
        assert_no_internals(&response);
    }
    for request in
        [bulk(&[1, 2], Caller::Service), single(1, me(1)), public(1, Caller::Service), set_visible(1, false, me(1))]
    {
        let response = down.handle(&request, T0).await;
        assert_error(&response, 503, "unavailable");
    }
}
