//! Failures of the stores (DESIGN §6): answers from SQL while Redis is down, 503 when neither answers.

use super::*;

/// Requests whose answers must not change when Redis goes away.
fn outage_reads() -> Vec<ApiRequest> {
    vec![
        bulk(&[80, 81, 82, 83, 84, 80], Caller::Service),
        single(81, Caller::Service),
        public(83, Caller::Service),
        public(80, me(83)),
        // The hidden user themself. While Redis is down the poll limit
        // cannot be counted and the handler lets end users through, so the
        // same read answers again.
        bulk(&[83, 80], me(83)),
    ]
}

async fn write_outage_users(stack: &Stack, api: &Api) {
    let idle_after = stack.env.rules.idle_after_ms;
    write(
        stack,
        &[
            connected(80, "a", T0 - 1_000),
            connected(81, "b", T0 - idle_after - 1_000),
            heartbeat(81, "b", T0 - 10),
            connected(82, "c", T0 - 2_000),
            disconnected(82, "c", T0 - 1_000),
            connected(83, "d", T0 - 5_000),
        ],
        T0 - 500,
    )
    .await;
    hide(api, 83, T0 - 400).await;
    write(stack, &[activity(83, "d", T0 - 300)], T0 - 300).await;
}

#[tokio::test]
async fn with_redis_killed_reads_still_answer_from_sql_as_before() {
    let mut redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let api = api(&stack);
    write_outage_users(&stack, &api).await;

    let mut before = Vec::new();
    for request in outage_reads() {
        before.push(ok(&api, &request, T0).await);
    }
    assert_eq!(before[0]["statuses"][3], json!({ "user_id": 83, "status": "offline", "last_active_ms": T0 - 5_000 }));
    assert_eq!(
        before[4]["statuses"][0],
        json!({ "user_id": 83, "status": "online", "last_active_ms": T0 - 300, "platforms": { "mobile": "online" } })
    );

    redis.kill().await;
    for (request, want) in outage_reads().iter().zip(&before) {
        assert_eq!(&ok(&api, request, T0).await, want, "{} {}", request.method, request.path);
    }
}

#[tokio::test]
async fn with_redis_not_answering_reads_answer_from_sql_within_the_timeout() {
    let redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let api = api(&stack);
    write_outage_users(&stack, &api).await;
    let want = ok(&api, &bulk(&[80, 81, 82, 83, 84], Caller::Service), T0).await;

    redis.pause();
    let started = Instant::now();
    let got = api.handle(&bulk(&[80, 81, 82, 83, 84], Caller::Service), T0).await;
    let took = started.elapsed();
    redis.resume();
    assert_eq!((got.status, &got.body), (200, &want));
    assert!(took < Duration::from_secs(2), "a stalled redis held the read for {took:?}");
}

#[tokio::test]
async fn with_redis_killed_and_the_database_unreachable_reads_are_503_with_the_error_shape() {
    let mut redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    write(&stack, &[connected(85, "a", T0)], T0).await;
    redis.kill().await;
    let api = api_without_database(&stack).await;
    for request in [
        bulk(&[85], Caller::Service),
        single(85, Caller::Service),
        single(85, me(85)),
        public(85, Caller::Service),
        set_visible(85, false, me(85)),
    ] {
        let response = api.handle(&request, T0).await;
        assert_error(&response, 503, "unavailable");
        let retry_after: u64 = response.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
        assert!(retry_after >= 1);
    }
}

#[tokio::test]
async fn with_only_the_database_unreachable_hot_users_still_answer_from_redis() {
    let stack = Stack::new().await;
    write(&stack, &[connected(86, "a", T0)], T0).await;
    let want = ok(&api(&stack), &bulk(&[86], Caller::Service), T0).await;
    let api = api_without_database(&stack).await;
    assert_eq!(ok(&api, &bulk(&[86], Caller::Service), T0).await, want);
    // A cold user needs the database.
    assert_error(&api.handle(&bulk(&[86, 87], Caller::Service), T0).await, 503, "unavailable");
}
