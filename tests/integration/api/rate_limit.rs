//! The end-user poll limit (DESIGN §7): one read per window, `Retry-After` in whole seconds.

use super::*;

fn assert_rate_limited(response: &ApiResponse) {
    assert_error(response, 429, "rate_limited");
    let retry_after = response.header("retry-after").expect("a Retry-After header");
    assert!(retry_after.bytes().all(|b| b.is_ascii_digit()), "Retry-After {retry_after:?} is not whole seconds");
    let seconds: u64 = retry_after.parse().expect("whole seconds");
    assert!((1..=30).contains(&seconds), "Retry-After {seconds}");
}

#[tokio::test]
async fn an_end_users_second_status_read_within_the_window_is_rate_limited() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(70, "a", T0)], T0).await;

    // Single then bulk.
    ok(&api, &single(70, me(71)), T0).await;
    assert_rate_limited(&api.handle(&bulk(&[70], me(71)), T0 + 1).await);
    assert_rate_limited(&api.handle(&single(70, me(71)), T0 + 2).await);
    assert_rate_limited(&api.handle(&single(71, me(71)), T0 + 3).await);
    // Bulk then single.
    ok(&api, &bulk(&[70, 71], me(72)), T0).await;
    assert_rate_limited(&api.handle(&single(70, me(72)), T0 + 1).await);
    assert_rate_limited(&api.handle(&bulk(&[70, 71], me(72)), T0 + 2).await);
}

#[tokio::test]
async fn another_end_user_is_not_affected_by_someone_elses_limit() {
    let stack = Stack::new().await;
    let api = api(&stack);
    ok(&api, &single(70, me(73)), T0).await;
    assert_rate_limited(&api.handle(&single(70, me(73)), T0 + 1).await);
    ok(&api, &single(70, me(74)), T0 + 2).await;
    ok(&api, &bulk(&[70], me(75)), T0 + 3).await;
}

#[tokio::test]
async fn service_callers_are_never_rate_limited() {
    let stack = Stack::new().await;
    let api = api(&stack);
    for i in 0..10 {
        ok(&api, &single(70, Caller::Service), T0 + i).await;
        ok(&api, &bulk(&[70, 71], Caller::Service), T0 + i).await;
    }
}

#[tokio::test]
async fn the_public_and_visibility_routes_are_not_rate_limited_and_take_no_window() {
    let stack = Stack::new().await;
    let api = api(&stack);
    for i in 0..3 {
        ok(&api, &public(70, me(76)), T0 + i).await;
        ok(&api, &set_visible(76, i % 2 == 0, me(76)), T0 + i).await;
    }
    // Neither used the window: the first status read is still allowed.
    ok(&api, &single(70, me(76)), T0 + 10).await;
    assert_rate_limited(&api.handle(&single(70, me(76)), T0 + 11).await);
    // And a limited caller may still use them.
    ok(&api, &public(70, me(76)), T0 + 12).await;
    ok(&api, &set_visible(76, true, me(76)), T0 + 13).await;
}
