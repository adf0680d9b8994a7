//! Bulk reads (DESIGN §7): order, duplicates, limits, never-seen users, one round trip.

use super::*;

#[tokio::test]
async fn bulk_answers_each_distinct_id_once_in_request_order() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let idle_after = stack.env.rules.idle_after_ms;
    write(
        &stack,
        &[
            connected(1, "a", T0 - 1_000),
            connected(2, "b", T0 - idle_after - 5_000),
            heartbeat(2, "b", T0 - 100),
            connected(3, "c", T0 - 2_000),
            disconnected(3, "c", T0 - 1_500),
        ],
        T0,
    )
    .await;
    let body = ok(&api, &bulk(&[3, 1, 3, 99, 2, 1], Caller::Service), T0).await;
    assert_eq!(
        entries(&body),
        vec![
            reads(3, "offline", Some(T0 - 2_000)),
            reads(1, "online", Some(T0 - 1_000)),
            reads(99, "offline", None),
            reads(2, "idle", Some(T0 - idle_after - 5_000)),
        ]
    );
}

#[tokio::test]
async fn users_never_seen_read_offline_with_a_null_last_active_on_every_route() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let body = ok(&api, &bulk(&[404, 405], Caller::Service), T0).await;
    assert_eq!(entries(&body), vec![reads(404, "offline", None), reads(405, "offline", None)]);
    assert_eq!(entry(&ok(&api, &single(404, Caller::Service), T0).await), reads(404, "offline", None));
    assert_eq!(entry(&ok(&api, &public(404, me(1)), T0).await), reads(404, "offline", None));
    // A second read answers from the (now cached) unknown user the same way.
    assert_eq!(entry(&ok(&api, &single(405, me(405)), T0).await), reads(405, "offline", None));
}

/// The events of `a_mix_of_hot_and_cold_users_answers_exactly_as_if_all_were_hot`,
/// in two batches so one stack can lose the first from Redis.
fn mixed_batches(idle_after: Millis, session_ttl: Millis) -> (Vec<PresenceEvent>, Vec<PresenceEvent>) {
    let first = vec![
        connected(10, "a", T0 - 10_000),
        activity(10, "a", T0 - 5_000),
        connected(11, "b", T0 - idle_after - 100_000),
        heartbeat(11, "b", T0 - 1_000),
        connected(12, "c", T0 - 3_000),
    ];
    let second = vec![
        connected(13, "d", T0 - 800),
        connected(14, "e", T0 - 900),
        disconnected(14, "e", T0 - 100),
        connected(15, "f", T0 - session_ttl - 5),
        activity(12, "c", T0 - 1_000),
    ];
    (first, second)
}

#[tokio::test]
async fn a_mix_of_hot_and_cold_users_answers_exactly_as_if_all_were_hot() {
    let rules = status_shared::domain::Rules::default();
    let (first, second) = mixed_batches(rules.idle_after_ms, rules.session_ttl_ms);
    let ids = [13, 10, 16, 14, 11, 15, 12, 10];

    let hot = Stack::new().await;
    let hot_api = api(&hot);
    write(&hot, &first, T0 - 2_500).await;
    ok(&hot_api, &set_visible(12, false, me(12)), T0 - 2_000).await;
    write(&hot, &second, T0).await;

    let mixed = Stack::new().await;
    let mixed_api = api(&mixed);
    write(&mixed, &first, T0 - 2_500).await;
    ok(&mixed_api, &set_visible(12, false, me(12)), T0 - 2_000).await;
    mixed.env.flush_redis().await;
    write(&mixed, &second, T0).await;
    // 10 and 11 now live only in SQL. (12 was reloaded by the second batch.)
    assert!(mixed.cached(id(10)).await.is_none() && mixed.cached(id(11)).await.is_none());
    assert!(mixed.cached(id(13)).await.is_some());

    for now in [T0 + 1_000, T0 + rules.idle_after_ms, T0 + rules.idle_after_ms + 1] {
        let want = ok(&hot_api, &bulk(&ids, Caller::Service), now).await;
        let got = ok(&mixed_api, &bulk(&ids, Caller::Service), now).await;
        assert_eq!(got, want, "at now = T0 + {}", now - T0);
    }
    let seen = entries(&ok(&mixed_api, &bulk(&ids, Caller::Service), T0 + 1_000).await);
    assert_eq!(
        seen,
        vec![
            reads(13, "online", Some(T0 - 800)),
            reads(10, "online", Some(T0 - 5_000)),
            reads(16, "offline", None),
            reads(14, "offline", Some(T0 - 900)),
            reads(11, "idle", Some(T0 - rules.idle_after_ms - 100_000)),
            reads(15, "offline", Some(T0 - rules.session_ttl_ms - 5)),
            reads(12, "offline", Some(T0 - 3_000)),
        ]
    );
}

#[tokio::test]
async fn cold_users_are_cached_with_a_ttl_of_at_most_sixty_seconds_before_the_answer() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(20, "a", T0 - 100), connected(21, "b", T0 - 200)], T0).await;
    stack.env.flush_redis().await;
    write(&stack, &[connected(22, "c", T0 - 300)], T0).await;

    ok(&api, &bulk(&[20, 21, 22, 23], Caller::Service), T0).await;
    // Checked right after the answer, with nothing else in between: the
    // backfill happened before it was sent.
    for cold in [20, 21, 23] {
        let ttl = ttl_s(&stack, cold).await;
        assert!((1..=60).contains(&ttl), "user {cold}: TTL {ttl} s");
        assert!(stack.cached(id(cold)).await.is_some(), "user {cold} was backfilled");
    }
    assert_eq!(ttl_s(&stack, 22).await, -1, "a hot user keeps no TTL");
    assert_eq!(stack.cached(id(20)).await.map(|r| r.state), stack.durable(id(20)).await.map(|r| r.state));
}

#[tokio::test]
async fn a_thousand_hot_ids_cost_exactly_one_redis_round_trip() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let ids: Vec<u64> = (1_000..2_000).collect();
    let events: Vec<PresenceEvent> = ids.iter().map(|u| connected(*u, "s", T0 - 10)).collect();
    write(&stack, &events, T0).await;

    let before = stack.env.redis.round_trips();
    let body = ok(&api, &bulk(&ids, Caller::Service), T0).await;
    assert_eq!(stack.env.redis.round_trips() - before, 1, "one pipelined round trip");
    let seen = entries(&body);
    assert_eq!(seen.len(), 1_000);
    assert!(seen.iter().zip(&ids).all(|(e, u)| *e == reads(*u, "online", Some(T0 - 10))));
}

#[tokio::test]
async fn a_thousand_ids_with_cold_ones_cost_one_read_and_one_backfill() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let ids: Vec<u64> = (1_000..2_000).collect();
    // 500 only in SQL, 250 hot, 250 never seen.
    let cold: Vec<PresenceEvent> = ids[..500].iter().map(|u| connected(*u, "s", T0 - 10)).collect();
    let hot: Vec<PresenceEvent> = ids[500..750].iter().map(|u| connected(*u, "s", T0 - 20)).collect();
    write(&stack, &cold, T0).await;
    stack.env.flush_redis().await;
    write(&stack, &hot, T0).await;

    let before = stack.env.redis.round_trips();
    let first = ok(&api, &bulk(&ids, Caller::Service), T0).await;
    assert_eq!(stack.env.redis.round_trips() - before, 2, "one read and one backfill");
    let before = stack.env.redis.round_trips();
    let again = ok(&api, &bulk(&ids, Caller::Service), T0).await;
    assert_eq!(stack.env.redis.round_trips() - before, 1, "all hot after the backfill");
    assert_eq!(first, again);
    let seen = entries(&first);
    assert_eq!(seen[0], reads(1_000, "online", Some(T0 - 10)));
    assert_eq!(seen[500], reads(1_500, "online", Some(T0 - 20)));
    assert_eq!(seen[999], reads(1_999, "offline", None));
}
