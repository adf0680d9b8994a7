//! Audiences (DESIGN §13) through the API against real Redis and MariaDB:
//! every viewer class under both defaults on the bulk, single and public
//! routes, from Redis, from the SQL fallback and after a cache loss; the
//! coarse buckets at their edges; the routes' authority and bad input;
//! erasure; the bus events of a rule change.

use super::*;
use status_tests::stack::StackOptions;

const DAY: Millis = 86_400_000;

fn put_audience(user: u64, body: Value, caller: Caller) -> ApiRequest {
    request("PUT", &format!("/v1/users/{user}/audience"), body.to_string(), caller)
}

fn get_audience(user: u64, caller: Caller) -> ApiRequest {
    request("GET", &format!("/v1/users/{user}/audience"), "", caller)
}

/// Sets `user`'s audience as a service at `now` and checks the answer
/// echoes it as stored.
async fn set(api: &Api, user: u64, body: Value, now: Millis) -> Value {
    let answer = ok(api, &put_audience(user, body, Caller::Service), now).await;
    assert_eq!(answer["user_id"], json!(user));
    answer["audience"].clone()
}

/// What every viewer class reads of `user` at `now`, on every route it
/// may use: `(self, excepted, not excepted, service, public)`, each as
/// the whole JSON entry. End users read once on the single route and once
/// in a bulk with a user who never set an audience, which must agree.
/// With `from_sql`, Redis loses every key before each viewer's reads, so
/// each class is answered by the SQL fallback.
async fn every_class(stack: &Stack, api: &Api, users: (u64, u64, u64), now: Millis, from_sql: bool) -> [Value; 5] {
    let (user, listed, other) = users;
    let mut seen = Vec::new();
    for viewer in [user, listed, other] {
        if from_sql {
            stack.env.flush_redis().await;
        }
        allow_another_poll(stack, viewer).await;
        let single = ok(api, &single(user, me(viewer)), now).await;
        allow_another_poll(stack, viewer).await;
        let in_bulk = ok(api, &bulk(&[999, user], me(viewer)), now).await["statuses"][1].clone();
        assert_eq!(single, in_bulk, "viewer {viewer}: single and bulk agree");
        seen.push(single);
    }
    if from_sql {
        stack.env.flush_redis().await;
    }
    let service = ok(api, &single(user, Caller::Service), now).await;
    assert_eq!(ok(api, &bulk(&[user], Caller::Service), now).await["statuses"][0], service);
    seen.push(service);
    if from_sql {
        stack.env.flush_redis().await;
    }
    // The public route ignores who asks.
    let public_route = ok(api, &public(user, me(listed)), now).await;
    seen.push(public_route);
    seen.try_into().expect("five entries")
}

fn never_seen(user: u64) -> Value {
    json!({ "user_id": user, "status": "offline", "last_active_ms": null })
}

#[tokio::test]
async fn every_viewer_class_under_both_defaults_from_redis_and_from_sql() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(70, "a", T0)], T0).await;
    let now = T0 + 1_000;
    let truth = ok(&api, &single(70, Caller::Service), now).await;
    assert_eq!(truth["status"], "online");

    set(&api, 70, json!({"default": "everyone", "except": [71]}), now).await;
    for source in ["redis", "sql", "backfilled"] {
        let [me_, excepted, other, service, public_] =
            every_class(&stack, &api, (70, 71, 72), now, source == "sql").await;
        assert_eq!(me_, truth, "{source}: the user sees themself");
        assert_eq!(excepted, never_seen(70), "{source}: excepted reads as never seen");
        assert_eq!((other, service, public_), (truth.clone(), truth.clone(), truth.clone()), "{source}");
    }

    set(&api, 70, json!({"default": "nobody", "except": [71], "last_seen": "coarse"}), now).await;
    let left_out = json!({ "user_id": 70, "status": "offline", "last_active_ms": null, "last_seen": "recently" });
    for source in ["redis", "sql", "backfilled"] {
        let [me_, listed, other, service, public_] =
            every_class(&stack, &api, (70, 71, 72), now, source == "sql").await;
        assert_eq!((me_, listed), (truth.clone(), truth.clone()), "{source}: the user and the listed friend");
        assert_eq!((other, service, public_), (left_out.clone(), left_out.clone(), left_out.clone()), "{source}");
    }
}

#[tokio::test]
async fn appear_offline_still_hides_from_allowed_viewers() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(73, "a", T0)], T0).await;
    set(&api, 73, json!({"default": "nobody", "except": [74], "last_seen": "coarse"}), T0 + 1).await;
    hide(&api, 73, T0 + 10).await;
    write(&stack, &[activity(73, "a", T0 + 4 * DAY)], T0 + 4 * DAY).await;
    let now = T0 + 4 * DAY + 1;
    let [me_, listed, other, ..] = every_class(&stack, &api, (73, 74, 75), now, false).await;
    assert_eq!(me_["last_active_ms"], json!(T0 + 4 * DAY));
    assert_eq!(listed, json!({ "user_id": 73, "status": "offline", "last_active_ms": T0 }), "frozen at the hide");
    assert_eq!(other["last_seen"], "within_week", "the bucket of the frozen value, not of the new activity");
}

#[tokio::test]
async fn the_coarse_buckets_turn_at_3_7_and_30_days_to_the_millisecond() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(76, "a", T0), disconnected(76, "a", T0 + 1)], T0 + 1).await;
    set(&api, 76, json!({"default": "nobody", "last_seen": "coarse"}), T0 + 2).await;
    for (edge, at, past) in
        [(3, "recently", "within_week"), (7, "within_week", "within_month"), (30, "within_month", "long_ago")]
    {
        for (now, want) in [(T0 + edge * DAY - 1, at), (T0 + edge * DAY, at), (T0 + edge * DAY + 1, past)] {
            let body = ok(&api, &single(76, Caller::Service), now).await;
            assert_eq!(body["last_seen"], want, "{} ms after the last activity", now - T0);
            assert_eq!(body["last_active_ms"], Value::Null);
        }
    }
    // Someone never seen has no last seen to bucket.
    set(&api, 77, json!({"default": "nobody", "last_seen": "coarse"}), T0).await;
    assert_eq!(ok(&api, &single(77, Caller::Service), T0).await, never_seen(77));
}

#[tokio::test]
async fn get_answers_what_was_put_sorted_and_the_default_for_who_never_set_one() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let default = json!({"user_id": 78, "audience": {"default": "everyone", "except": [], "last_seen": "none"}});
    assert_eq!(ok(&api, &get_audience(78, me(78)), T0).await, default);
    let put = ok(&api, &put_audience(78, json!({"default": "nobody", "except": [9, 3, 9]}), me(78)), T0).await;
    let stored = json!({"user_id": 78, "audience": {"default": "nobody", "except": [3, 9], "last_seen": "none"}});
    assert_eq!(put, stored);
    assert_eq!(ok(&api, &get_audience(78, Caller::Service), T0 + 1).await, stored);
    stack.env.flush_redis().await;
    assert_eq!(ok(&api, &get_audience(78, me(78)), T0 + 2).await, stored);
    ok(&api, &put_audience(78, json!({"default": "everyone"}), me(78)), T0 + 3).await;
    assert_eq!(ok(&api, &get_audience(78, me(78)), T0 + 4).await, default);
}

#[tokio::test]
async fn only_the_user_or_a_service_may_set_or_read_an_audience() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(79, "a", T0)], T0).await;
    let body = json!({"default": "nobody"});
    assert_error(&api.handle(&put_audience(79, body.clone(), me(80)), T0 + 1).await, 403, "forbidden");
    let refused = api.handle(&get_audience(79, me(80)), T0 + 1).await;
    assert_error(&refused, 403, "forbidden");
    assert_eq!(refused.body["error"]["message"], "only the user may read their audience", "a read changes nothing");
    assert_error(&api.handle(&put_audience(79, body, Caller::BadSubject), T0 + 1).await, 401, "unauthorized");
    assert_eq!(ok(&api, &single(79, Caller::Service), T0 + 2).await["status"], "online", "nothing changed");
}

#[tokio::test]
async fn audience_bodies_that_break_the_contract_are_refused_and_change_nothing() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(81, "a", T0)], T0).await;
    set(&api, 81, json!({"default": "everyone", "except": [82]}), T0).await;
    let put = |body: String| request("PUT", "/v1/users/81/audience", body, me(81));
    let over = format!(r#"{{"default": "nobody", "except": [{}]}}"#, vec!["5"; 1001].join(","));
    let cases = [
        (put(over), 400, "too_many_ids"),
        (put(r#"{"default": "nobody", "except": [5, 0]}"#.into()), 400, "invalid_user_id"),
        (put(r#"{"default": "nobody", "except": [5, "6"]}"#.into()), 400, "invalid_user_id"),
        (put(r#"{"default": "friends"}"#.into()), 400, "invalid_request"),
        (put(r#"{"default": "nobody", "last_seen": "exact"}"#.into()), 400, "invalid_request"),
        (put(r#"{"except": [5]}"#.into()), 400, "invalid_request"),
        (put("{".into()), 400, "invalid_json"),
        (put(format!(r#"{{"default": "nobody", "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES))), 413, "payload_too_large"),
        (request("PUT", "/v1/users/0/audience", r#"{"default": "nobody"}"#, me(81)), 400, "invalid_user_id"),
    ];
    for (request, status, code) in &cases {
        assert_error(&api.handle(request, T0 + 1).await, *status, code);
    }
    let stored = json!({"user_id": 81, "audience": {"default": "everyone", "except": [82], "last_seen": "none"}});
    assert_eq!(ok(&api, &get_audience(81, me(81)), T0 + 2).await, stored);
    assert_eq!(ok(&api, &single(81, Caller::Service), T0 + 2).await["status"], "online");
}

#[tokio::test]
async fn a_list_lost_from_redis_alone_is_read_from_sql_and_cached_again() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(83, "a", T0)], T0).await;
    set(&api, 83, json!({"default": "everyone", "except": [84]}), T0).await;
    let key = stack.env.keys.audience(id(83));
    let mut raw = stack.env.raw_redis().await;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut raw).await.expect("redis");
    assert_eq!(ok(&api, &single(83, me(84)), T0 + 1).await, never_seen(83), "still excepted");
    let members: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query_async(&mut raw).await.expect("redis");
    assert!(members.contains(&"84".to_owned()) && members.iter().any(|m| m.starts_with('#')), "{members:?}");
    // A list stored under another tag is not taken for this one.
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut raw).await.expect("redis");
    let _: () = redis::cmd("SADD").arg(&key).arg("#1").query_async(&mut raw).await.expect("redis");
    allow_another_poll(&stack, 84).await;
    assert_eq!(ok(&api, &single(83, me(84)), T0 + 2).await, never_seen(83), "a stale list is not trusted");
}

#[tokio::test]
async fn erasure_removes_the_audience_everywhere() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(85, "a", T0)], T0).await;
    set(&api, 85, json!({"default": "nobody", "except": [86], "last_seen": "coarse"}), T0).await;
    let response = api.handle(&request("DELETE", "/v1/users/85", "", Caller::Service), T0 + 1).await;
    assert_eq!(response.status, 204, "{}", response.body);
    let default = json!({"user_id": 85, "audience": {"default": "everyone", "except": [], "last_seen": "none"}});
    assert_eq!(ok(&api, &get_audience(85, Caller::Service), T0 + 2).await, default);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_audience WHERE user_id = 85")
        .fetch_one(&stack.env.pool)
        .await
        .expect("sql");
    assert_eq!(rows, 0);
    let mut raw = stack.env.raw_redis().await;
    let exists: i64 =
        redis::cmd("EXISTS").arg(stack.env.keys.audience(id(85))).query_async(&mut raw).await.expect("redis");
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn a_rule_change_that_changes_the_public_view_is_published_and_no_other() {
    let stack = Stack::with(StackOptions { events: true, ..Default::default() }).await;
    let api = api(&stack);
    let sink = stack.sink.as_ref().expect("a bus read back through a queue");
    // Each step's events, `(from, to)` in order; the sink waits for the
    // count named, then once more, so an extra event shows up too.
    let published = |expected: usize| async move {
        let details = sink.drain(expected, Duration::from_secs(30)).await;
        details
            .iter()
            .map(|d| {
                assert_eq!(d["user_id"], json!(86), "{d}");
                (d["from"].as_str().unwrap().to_owned(), d["to"].as_str().unwrap().to_owned())
            })
            .collect::<Vec<_>>()
    };
    let t = |from: &str, to: &str| (from.to_owned(), to.to_owned());

    write(&stack, &[connected(86, "a", T0)], T0).await;
    assert_eq!(published(1).await, vec![t("offline", "online")]);
    // Nobody: the public view goes offline, which is announced.
    set(&api, 86, json!({"default": "nobody", "last_seen": "coarse"}), T0 + 1).await;
    assert_eq!(published(1).await, vec![t("online", "offline")]);
    // Naming friends, or going coarse, leaves the public out still: nothing.
    set(&api, 86, json!({"default": "nobody", "except": [87, 88]}), T0 + 2).await;
    assert_eq!(published(0).await, vec![]);
    // Everyone but one: the public is never excepted, so it sees the
    // user online again.
    set(&api, 86, json!({"default": "everyone", "except": [87]}), T0 + 3).await;
    assert_eq!(published(1).await, vec![t("offline", "online")]);
    set(&api, 86, json!({"default": "everyone"}), T0 + 4).await;
    assert_eq!(published(0).await, vec![]);
    // The user leaves: announced as any transition.
    write(&stack, &[disconnected(86, "a", T0 + 5)], T0 + 5).await;
    assert_eq!(published(1).await, vec![t("online", "offline")]);
}

#[tokio::test]
async fn an_end_users_next_read_asks_the_lists_it_saw_in_the_same_round_trip() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(91, "a", T0), connected(92, "a", T0), connected(95, "a", T0)], T0).await;
    set(&api, 91, json!({"default": "everyone", "except": [93]}), T0).await;
    let users = [id(91), id(92), id(95)];
    let now = T0 + 1_000;
    let read = |viewer: u64| {
        let (reader, redis) = (&stack.reader, &stack.env.redis);
        async move {
            let before = redis.round_trips();
            let views = reader.read(&users, Some(id(viewer)), now).await.expect("read");
            (views, redis.round_trips() - before)
        }
    };

    let (first, trips) = read(93).await;
    assert_eq!(trips, 2, "the first read learns which list to ask: the load, then the list");
    assert!(first[0].last_active_ms.is_none() && first[1].last_active_ms.is_some(), "93 is excepted by 91 only");
    let (again, trips) = read(93).await;
    assert_eq!((again, trips), (first, 1), "the list is asked with the load");
    let (other, trips) = read(94).await;
    assert!(other.iter().all(|view| view.last_active_ms.is_some()), "94 is not excepted");
    assert_eq!(trips, 1, "a guess is per user, for any end user");
    let (itself, trips) = read(91).await;
    assert!(itself[0].last_active_ms.is_some() && trips == 1, "the user reads themself, in one round trip");

    // A new audience draws a new tag: the guess under the old one is not
    // taken, and the list is asked again.
    set(&api, 91, json!({"default": "everyone", "except": [94]}), now).await;
    let (after, trips) = read(94).await;
    assert!(after[0].last_active_ms.is_none() && after[1].last_active_ms.is_some(), "94 is excepted now");
    assert_eq!(trips, 2, "the stale guess cost a second round trip");
    let (freed, trips) = read(93).await;
    assert!(freed[0].last_active_ms.is_some() && trips == 1, "93 is not excepted any more");

    // A service caller never asks a list.
    let before = stack.env.redis.round_trips();
    let service = stack.reader.read(&users, None, now).await.expect("read");
    assert!(service.iter().all(|view| view.last_active_ms.is_some()));
    assert_eq!(stack.env.redis.round_trips() - before, 1);
}
