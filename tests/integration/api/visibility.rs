//! Visibility (DESIGN §4 property 4): a hidden user reads as gone on every path but their own.

use super::*;

#[tokio::test]
async fn a_hidden_user_reads_as_gone_offline_at_the_hide_on_every_path() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let hidden_at = T0 + 1_000;
    write(&stack, &[connected(42, "a", T0), activity(42, "a", T0 + 100)], T0 + 100).await;
    hide(&api, 42, hidden_at).await;
    // Still using the app after hiding.
    write(&stack, &[activity(42, "a", T0 + 2_000)], T0 + 2_000).await;

    let now = T0 + 3_000;
    let gone = reads(42, "offline", Some(T0 + 100));

    // Cache hits.
    assert_eq!(entries(&ok(&api, &bulk(&[42], Caller::Service), now).await), vec![gone.clone()]);
    assert_eq!(entries(&ok(&api, &bulk(&[7, 42], me(7)), now).await)[1], gone);
    assert_eq!(entry(&ok(&api, &single(42, me(8)), now).await), gone);
    assert_eq!(entry(&ok(&api, &single(42, Caller::Service), now).await), gone);
    assert_eq!(entry(&ok(&api, &public(42, Caller::Service), now).await), gone);
    assert_eq!(entry(&ok(&api, &public(42, me(9)), now).await), gone);
    // The CDN caches the public route for everyone: even the user gets the
    // public view there.
    assert_eq!(entry(&ok(&api, &public(42, me(42)), now).await), gone);

    // Stored fields hold the truth; filtering happens on the way out.
    assert_eq!(stack.redis_status(id(42)).await.as_deref(), Some("online"));
    assert_eq!(stack.sql_status(id(42)).await.as_deref(), Some("online"));

    // The SQL fallback, then the backfilled copy.
    stack.env.flush_redis().await;
    assert_eq!(entries(&ok(&api, &bulk(&[42], Caller::Service), now).await), vec![gone.clone()]);
    assert!(stack.cached(id(42)).await.is_some(), "backfilled");
    assert_eq!(entry(&ok(&api, &single(42, me(10)), now).await), gone);
    assert_eq!(entries(&ok(&api, &bulk(&[42, 7], me(11)), now).await)[0], gone);
    assert_eq!(entry(&ok(&api, &public(42, me(42)), now).await), gone);
}

#[tokio::test]
async fn a_hidden_user_still_sees_their_own_truth_on_single_and_bulk() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(43, "a", T0)], T0).await;
    hide(&api, 43, T0 + 1_000).await;
    write(&stack, &[activity(43, "a", T0 + 2_000)], T0 + 2_000).await;
    let now = T0 + 3_000;
    let truth = reads(43, "online", Some(T0 + 2_000));

    assert_eq!(entry(&ok(&api, &single(43, me(43)), now).await), truth);
    allow_another_poll(&stack, 43).await;
    let seen = entries(&ok(&api, &bulk(&[44, 43], me(43)), now).await);
    assert_eq!(seen, vec![reads(44, "offline", None), truth.clone()]);
    // From SQL too.
    stack.env.flush_redis().await;
    assert_eq!(entry(&ok(&api, &single(43, me(43)), now).await), truth);
}

#[tokio::test]
async fn a_late_event_from_before_the_hide_counts_and_a_newer_one_does_not() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let hidden_at = T0 + 10_000;
    write(&stack, &[connected(50, "a", T0)], T0).await;
    hide(&api, 50, hidden_at).await;
    let now = hidden_at + 60_000;
    assert_eq!(entry(&ok(&api, &single(50, Caller::Service), now).await), reads(50, "offline", Some(T0)));

    // Old events arriving late move the frozen "last seen" as if on time.
    write(&stack, &[activity(50, "b", T0 + 4_000)], hidden_at + 5_000).await;
    assert_eq!(entry(&ok(&api, &single(50, Caller::Service), now).await), reads(50, "offline", Some(T0 + 4_000)));
    write(&stack, &[connected(50, "c", hidden_at)], hidden_at + 6_000).await;
    assert_eq!(entry(&ok(&api, &single(50, Caller::Service), now).await), reads(50, "offline", Some(hidden_at)));

    // Newer activity, an older one and a heartbeat before the hide change
    // nothing others see.
    write(
        &stack,
        &[activity(50, "a", hidden_at + 1), activity(50, "a", T0 + 2_000), heartbeat(50, "c", hidden_at - 1)],
        hidden_at + 7_000,
    )
    .await;
    let gone = reads(50, "offline", Some(hidden_at));
    assert_eq!(entry(&ok(&api, &single(50, Caller::Service), now).await), gone);
    assert_eq!(entry(&ok(&api, &public(50, me(50)), now).await), gone);
    assert_eq!(entry(&ok(&api, &single(50, me(50)), now).await), reads(50, "online", Some(hidden_at + 1)));

    // Leaving for real changes nothing for others either.
    write(&stack, &[disconnected(50, "a", now), disconnected(50, "b", now), disconnected(50, "c", now)], now).await;
    assert_eq!(entries(&ok(&api, &bulk(&[50], Caller::Service), now + 1).await), vec![gone]);
}

#[tokio::test]
async fn a_user_hidden_before_any_activity_reads_offline_with_no_last_active() {
    let stack = Stack::new().await;
    let api = api(&stack);
    hide(&api, 51, T0).await;
    write(&stack, &[connected(51, "a", T0 + 10)], T0 + 10).await;
    let now = T0 + 20;
    assert_eq!(entry(&ok(&api, &single(51, Caller::Service), now).await), reads(51, "offline", None));
    assert_eq!(entry(&ok(&api, &single(51, me(51)), now).await), reads(51, "online", Some(T0 + 10)));
    stack.env.flush_redis().await;
    assert_eq!(entry(&ok(&api, &public(51, Caller::Service), now).await), reads(51, "offline", None));
}

#[tokio::test]
async fn hiding_again_keeps_the_first_hide_time() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(52, "a", T0)], T0).await;
    hide(&api, 52, T0 + 1_000).await;
    write(&stack, &[activity(52, "a", T0 + 2_000)], T0 + 2_000).await;
    hide(&api, 52, T0 + 3_000).await;
    let body = ok(&api, &single(52, Caller::Service), T0 + 4_000).await;
    assert_eq!(entry(&body), reads(52, "offline", Some(T0)), "a repeated hide cannot reveal later activity");
}

#[tokio::test]
async fn showing_again_restores_the_truth() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(53, "a", T0)], T0).await;
    hide(&api, 53, T0 + 1_000).await;
    write(&stack, &[activity(53, "a", T0 + 2_000)], T0 + 2_000).await;
    let body = ok(&api, &set_visible(53, true, me(53)), T0 + 3_000).await;
    assert_eq!(body, json!({ "user_id": 53, "visible": true }));
    let truth = reads(53, "online", Some(T0 + 2_000));
    let now = T0 + 4_000;
    assert_eq!(entry(&ok(&api, &single(53, Caller::Service), now).await), truth);
    assert_eq!(entry(&ok(&api, &public(53, me(54)), now).await), truth);
    stack.env.flush_redis().await;
    assert_eq!(entries(&ok(&api, &bulk(&[53], me(55)), now).await), vec![truth]);
}

#[tokio::test]
async fn only_the_user_themself_or_a_service_may_set_visibility() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(60, "a", T0)], T0).await;
    let visible = reads(60, "online", Some(T0));

    let refused = api.handle(&set_visible(60, false, me(61)), T0 + 100).await;
    assert_error(&refused, 403, "forbidden");
    assert_eq!(entry(&ok(&api, &single(60, Caller::Service), T0 + 200).await), visible, "nothing was saved");

    ok(&api, &set_visible(60, false, Caller::Service), T0 + 300).await;
    assert_eq!(entry(&ok(&api, &single(60, Caller::Service), T0 + 400).await), reads(60, "offline", Some(T0)));
    assert_error(&api.handle(&set_visible(60, true, me(61)), T0 + 500).await, 403, "forbidden");
    assert_error(&api.handle(&set_visible(60, true, Caller::BadSubject), T0 + 500).await, 401, "unauthorized");
    assert_eq!(entry(&ok(&api, &single(60, Caller::Service), T0 + 600).await), reads(60, "offline", Some(T0)));
}

#[tokio::test]
async fn visibility_requests_that_break_the_contract_are_refused_and_change_nothing() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(62, "a", T0)], T0).await;
    let put = |path: &str, body: &str| request("PUT", path, body, me(62));
    let path = "/v1/users/62/visibility";
    let cases = [
        (put(path, "{"), "invalid_json"),
        (put(path, ""), "invalid_json"),
        (put(path, "visible=false"), "invalid_json"),
        (put(path, "{}"), "invalid_request"),
        (put(path, r#"{"visible": "false"}"#), "invalid_request"),
        (put(path, r#"{"visible": null}"#), "invalid_request"),
        (put(path, r#"{"visible": 0}"#), "invalid_request"),
        (put(path, "[false]"), "invalid_request"),
        (put(path, "false"), "invalid_request"),
        (put("/v1/users/abc/visibility", r#"{"visible": false}"#), "invalid_user_id"),
        (put("/v1/users/0/visibility", r#"{"visible": false}"#), "invalid_user_id"),
    ];
    for (request, code) in &cases {
        let response = api.handle(request, T0 + 100).await;
        assert_error(&response, 400, code);
    }
    let oversized = format!(r#"{{"visible": false, "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    assert_error(&api.handle(&put(path, &oversized), T0 + 100).await, 413, "payload_too_large");
    assert_eq!(entry(&ok(&api, &single(62, Caller::Service), T0 + 200).await), reads(62, "online", Some(T0)));
}
