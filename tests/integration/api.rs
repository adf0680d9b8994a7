//! The HTTP API (DESIGN §7) through `StatusApi::handle`, against real Redis
//! and MariaDB. State is built through the real write path
//! (`Committer::aggregate`, and the API's own visibility route), and every
//! read names its `now`, so derivation at read time is tested exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use status_api::handler::{ApiResponse, StatusApi, MAX_BODY_BYTES, MAX_BULK_IDS};
use status_api::request::{ApiRequest, Caller};
use status_shared::adapters::dynamodb::{DynamoDeadLetters, DynamoRepairBuffer};
use status_shared::adapters::mysql::{connect_lazy, MySqlStore};
use status_shared::adapters::redis::{RedisCache, RedisConn, RedisPollLimiter};
use status_shared::app::{now_ms, Publisher};
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, UserId};
use status_shared::services::{Committer, Reader};
use status_tests::stack::{api_request as request, free_port, PrivateRedis, Stack};

type Api =
    StatusApi<RedisCache, MySqlStore, MySqlStore, DynamoRepairBuffer, Publisher, RedisPollLimiter, DynamoDeadLetters>;

/// The origin of every clock value in this file: tests pass explicit times
/// so a boundary (exactly `IDLE_AFTER`, one millisecond past it) is hit
/// exactly, never raced against the wall clock.
const T0: Millis = 1_764_270_000_000;

// ---------------------------------------------------------------- harness

/// The API over a stack's own stores, wired as `main.rs` wires it.
fn api(stack: &Stack) -> Api {
    api_over(stack, stack.env.cache.clone(), stack.env.store.clone())
}

fn api_over(stack: &Stack, cache: RedisCache, store: MySqlStore) -> Api {
    StatusApi {
        reader: Reader { cache: cache.clone(), store: store.clone(), rules: stack.env.rules },
        committer: Committer {
            cache,
            store,
            repair: stack.committer.repair.clone(),
            publisher: stack.committer.publisher.clone(),
            rules: stack.env.rules,
        },
        limiter: stack.limiter.clone(),
        dead_letters: stack.app.dead_letters.clone(),
    }
}

/// A store on a loopback port nobody listens on: every query fails after
/// the pool's short acquire timeout, as an unreachable Aurora would.
fn unreachable_store(stack: &Stack) -> MySqlStore {
    let url = format!("mysql://root@127.0.0.1:{}/nothing", free_port());
    let pool = connect_lazy(&url, 1, Duration::from_millis(500)).expect("a database url");
    MySqlStore::new(pool.clone(), pool, stack.env.rules)
}

/// An API with neither Redis (connections refused) nor the database.
fn api_with_nothing_up(stack: &Stack) -> Api {
    let redis =
        RedisConn::new(&format!("redis://127.0.0.1:{}", free_port()), Duration::from_millis(200)).expect("a redis url");
    let keys = stack.env.keys.clone();
    let cache = RedisCache::new(
        redis.clone(),
        redis.clone(),
        keys.clone(),
        stack.env.rules,
        stack.env.shards,
        Duration::from_secs(60),
    );
    let mut api = api_over(stack, cache, unreachable_store(stack));
    api.limiter = RedisPollLimiter::new(redis, keys, stack.app.config.poll_window);
    api
}

fn id(raw: u64) -> UserId {
    UserId::new(raw).expect("a valid user id")
}

fn event(kind: EventKind, user: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent {
        kind,
        user_id: id(user),
        session_id: SessionId::new(session).expect("a valid session id"),
        device: Some("ios".into()),
        ts_ms,
    }
}

fn connected(user: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    event(EventKind::Connected, user, session, ts_ms)
}

fn activity(user: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    event(EventKind::Activity, user, session, ts_ms)
}

fn heartbeat(user: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    event(EventKind::Heartbeat, user, session, ts_ms)
}

fn disconnected(user: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    event(EventKind::Disconnected, user, session, ts_ms)
}

/// Merges `events` through the aggregator's write path at `now`.
async fn write(stack: &Stack, events: &[PresenceEvent], now: Millis) {
    stack.committer.aggregate(events, now).await.expect("the write path takes the events");
}

fn bulk(ids: &[u64], caller: Caller) -> ApiRequest {
    request("POST", "/v1/status/bulk", json!({ "user_ids": ids }).to_string(), caller)
}

fn single(user: u64, caller: Caller) -> ApiRequest {
    request("GET", &format!("/v1/status/{user}"), "", caller)
}

fn public(user: u64, caller: Caller) -> ApiRequest {
    request("GET", &format!("/v1/public/status/{user}"), "", caller)
}

fn set_visible(user: u64, visible: bool, caller: Caller) -> ApiRequest {
    request("PUT", &format!("/v1/users/{user}/visibility"), json!({ "visible": visible }).to_string(), caller)
}

fn me(user: u64) -> Caller {
    Caller::User(id(user))
}

/// Sends `request` at `now` and returns the body of its `200`.
async fn ok(api: &Api, request: &ApiRequest, now: Millis) -> Value {
    let response = api.handle(request, now).await;
    assert_eq!(response.status, 200, "{} {} answered {}", request.method, request.path, response.body);
    response.body
}

/// One status entry as `(user_id, status, last_active_ms)`, checking it has
/// the contract's three fields (`last_active_ms` present even when null)
/// and nothing else but the optional ones of DESIGN §7.1.
fn entry(body: &Value) -> (u64, String, Option<Millis>) {
    let mut fields: BTreeSet<&str> = body.as_object().expect("an object").keys().map(String::as_str).collect();
    fields.remove("manual");
    fields.remove("platforms");
    assert_eq!(fields, BTreeSet::from(["user_id", "status", "last_active_ms"]), "entry {body}");
    let last_active = &body["last_active_ms"];
    assert!(last_active.is_null() || last_active.is_i64(), "last_active_ms in {body}");
    (
        body["user_id"].as_u64().expect("user_id"),
        body["status"].as_str().expect("status").to_owned(),
        last_active.as_i64(),
    )
}

fn entries(body: &Value) -> Vec<(u64, String, Option<Millis>)> {
    body["statuses"].as_array().expect("statuses").iter().map(entry).collect()
}

fn reads(user: u64, status: &str, last_active_ms: Option<Millis>) -> (u64, String, Option<Millis>) {
    (user, status.to_owned(), last_active_ms)
}

/// Asserts `response` is the contract's error: `status`, a body of only
/// `{"error": {"code", "message"}}`, and no internals.
fn assert_error(response: &ApiResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "answer {}", response.body);
    let body = response.body.as_object().unwrap_or_else(|| panic!("error body {} is not an object", response.body));
    assert_eq!(body.keys().collect::<Vec<_>>(), vec!["error"], "error body {}", response.body);
    let error = body["error"].as_object().unwrap_or_else(|| panic!("error is not an object in {}", response.body));
    let fields: BTreeSet<&str> = error.keys().map(String::as_str).collect();
    assert_eq!(fields, BTreeSet::from(["code", "message"]), "error body {}", response.body);
    assert_eq!(error["code"].as_str(), Some(code), "error body {}", response.body);
    assert!(error["message"].as_str().is_some_and(|m| !m.trim().is_empty()), "empty message in {}", response.body);
    assert_no_internals(response);
}

/// What a leaked panic, `Debug` print or driver error would look like.
fn assert_no_internals(response: &ApiResponse) {
    assert_ne!(response.status, 500, "a 500: {}", response.body);
    let text = response.body.to_string();
    for tell in [
        "panicked",
        "backtrace",
        "RUST_",
        ".rs:",
        "src/",
        "::",
        "Error {",
        "Error(",
        "Some(",
        "None",
        "Ok(",
        "Err(",
        "Vec<",
        "Option<",
        "UserId",
        "String",
        "u64",
        "i64",
        "sqlx",
        "redis",
        "Redis",
        "mysql",
        "MySql",
        "tokio",
        "thread '",
    ] {
        assert!(!text.contains(tell), "{tell:?} leaked into {text}");
    }
}

/// Forgets `user`'s polling window, so one test can make several reads as
/// that end user.
async fn allow_another_poll(stack: &Stack, user: u64) {
    let mut raw = stack.env.raw_redis().await;
    let _: () = redis::cmd("DEL").arg(stack.env.keys.poll(id(user))).query_async(&mut raw).await.expect("redis");
}

async fn ttl_s(stack: &Stack, user: u64) -> i64 {
    let mut raw = stack.env.raw_redis().await;
    redis::cmd("TTL").arg(stack.env.keys.status(id(user))).query_async(&mut raw).await.expect("redis")
}

// -------------------------------------------------------------- bulk reads

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

// ------------------------------------------------- derivation at read time

#[tokio::test]
async fn an_online_user_reads_idle_one_millisecond_after_idle_after_without_any_scanner() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let idle_after = stack.env.rules.idle_after_ms;
    write(&stack, &[connected(30, "a", T0)], T0).await;

    for cold in [false, true] {
        if cold {
            stack.env.flush_redis().await;
        }
        let at_edge = T0 + idle_after;
        let past = at_edge + 1;
        assert_eq!(entry(&ok(&api, &single(30, Caller::Service), at_edge).await), reads(30, "online", Some(T0)));
        assert_eq!(entry(&ok(&api, &single(30, Caller::Service), past).await), reads(30, "idle", Some(T0)));
        assert_eq!(entries(&ok(&api, &bulk(&[30], Caller::Service), past).await), vec![reads(30, "idle", Some(T0))]);
        assert_eq!(entry(&ok(&api, &public(30, Caller::Service), past).await), reads(30, "idle", Some(T0)));
    }
    // Nobody rewrote the stored status: the reader derived `idle` itself.
    assert_eq!(stack.redis_status(id(30)).await.as_deref(), Some("online"));
    assert_eq!(stack.sql_status(id(30)).await.as_deref(), Some("online"));
}

#[tokio::test]
async fn sessions_not_heard_from_for_longer_than_session_ttl_read_offline() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let ttl = stack.env.rules.session_ttl_ms;
    let last_heard = T0 + 60_000;
    write(&stack, &[connected(31, "a", T0), heartbeat(31, "a", last_heard)], last_heard).await;

    for cold in [false, true] {
        if cold {
            stack.env.flush_redis().await;
        }
        // Still connected, but long inactive.
        let body = ok(&api, &bulk(&[31], Caller::Service), last_heard + ttl).await;
        assert_eq!(entries(&body), vec![reads(31, "idle", Some(T0))]);
        // Gone: a crashed presence node cannot pin the user forever. The
        // last activity stays their "last seen".
        let body = ok(&api, &bulk(&[31], Caller::Service), last_heard + ttl + 1).await;
        assert_eq!(entries(&body), vec![reads(31, "offline", Some(T0))]);
    }
}

// -------------------------------------------------------------- visibility

/// Hides `user` as the user themself at `now` and checks the answer.
async fn hide(api: &Api, user: u64, now: Millis) {
    let body = ok(api, &set_visible(user, false, me(user)), now).await;
    assert_eq!(body, json!({ "user_id": user, "visible": false }));
}

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

// -------------------------------------------------------------- rate limit

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

// ------------------------------------------------------------------ errors

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
    let down = api_with_nothing_up(&stack);
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

// ---------------------------------------------------------------- failures

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
    let api = api_over(&stack, stack.env.cache.clone(), unreachable_store(&stack));
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
    let api = api_over(&stack, stack.env.cache.clone(), unreachable_store(&stack));
    assert_eq!(ok(&api, &bulk(&[86], Caller::Service), T0).await, want);
    // A cold user needs the database.
    assert_error(&api.handle(&bulk(&[86, 87], Caller::Service), T0).await, 503, "unavailable");
}

// ------------------------------------------------------------- cache headers

#[tokio::test]
async fn only_the_public_route_is_cacheable_by_the_cdn() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(90, "a", T0)], T0).await;

    let response = api.handle(&public(90, Caller::Service), T0).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("cache-control"), Some("public, max-age=30"));
    // As the function returns it to API Gateway and to the local Invoke API.
    assert_eq!(response.into_apigw_json()["headers"]["cache-control"], "public, max-age=30");

    for request in [
        single(90, Caller::Service),
        bulk(&[90], Caller::Service),
        set_visible(90, true, Caller::Service),
        public(0, Caller::Service),
        request("GET", "/v1/nothing", "", Caller::Service),
    ] {
        let response = api.handle(&request, T0).await;
        let cache_control = response.header("cache-control").unwrap_or("").to_ascii_lowercase();
        assert!(
            !cache_control.contains("public") && !cache_control.contains("max-age"),
            "{} {} ({}) sent cache-control {cache_control:?}",
            request.method,
            request.path,
            response.status
        );
    }
}

// ----------------------------------------------------------------- openapi

/// Follows local `$ref`s.
fn resolve<'a>(doc: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {reference}"));
        node = doc.pointer(pointer).unwrap_or_else(|| panic!("{reference} points nowhere"));
    }
    node
}

/// Whether `value` fits `schema` as far as these tests need: types,
/// required fields, enums, nullability, bounds and array sizes.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if value.is_null() {
        return match schema.get("nullable") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(format!("{at} is null")),
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at} = {value} is not one of {allowed:?}"));
        }
    }
    let bound = |name: &str| schema.get(name).and_then(|b| b.as_i64().map(i128::from).or(b.as_u64().map(i128::from)));
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let object = value.as_object().ok_or_else(|| format!("{at} is not an object"))?;
            for field in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let field = field.as_str().expect("required names are strings");
                if !object.contains_key(field) {
                    return Err(format!("{at}.{field} is required but missing"));
                }
            }
            for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
                if let Some(inner) = object.get(name) {
                    conforms(doc, property, inner, &format!("{at}.{name}"))?;
                }
            }
        }
        Some("array") => {
            let items = value.as_array().ok_or_else(|| format!("{at} is not an array"))?;
            let len = items.len() as i128;
            if bound("minItems").is_some_and(|min| len < min) || bound("maxItems").is_some_and(|max| len > max) {
                return Err(format!("{at} has {len} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    conforms(doc, item_schema, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        Some("integer") => {
            let n = value.as_i64().map(i128::from).or(value.as_u64().map(i128::from));
            let n = n.ok_or_else(|| format!("{at} = {value} is not an integer"))?;
            if bound("minimum").is_some_and(|min| n < min) || bound("maximum").is_some_and(|max| n > max) {
                return Err(format!("{at} = {n} is out of bounds"));
            }
        }
        Some("string") if !value.is_string() => return Err(format!("{at} is not a string")),
        Some("boolean") if !value.is_boolean() => return Err(format!("{at} is not a boolean")),
        _ => {}
    }
    Ok(())
}

/// A header value as the JSON its schema describes.
fn header_value(doc: &Value, schema: &Value, raw: &str) -> Value {
    match resolve(doc, schema).get("type").and_then(Value::as_str) {
        Some("integer") => raw.parse::<i64>().map_or_else(|_| Value::String(raw.to_owned()), Value::from),
        _ => Value::String(raw.to_owned()),
    }
}

/// Checks `response` against the documented response object `documented`:
/// its headers are sent and fit, its JSON body fits, and an error's code is
/// one of the documented examples.
fn check_documented(doc: &Value, documented: &Value, response: &ApiResponse, what: &str) {
    let documented = resolve(doc, documented);
    for (name, header) in documented.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let header = resolve(doc, header);
        let raw = response.header(name).unwrap_or_else(|| panic!("{what}: documented header {name} not sent"));
        let schema = header.get("schema").expect("a header schema");
        conforms(doc, schema, &header_value(doc, schema, raw), &format!("{what} header {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Headers a client must act on are documented wherever they are sent.
    let names: Vec<String> = documented
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let must_document: &[&str] =
        if matches!(response.status, 200 | 204) { &["cache-control"] } else { &["retry-after", "allow"] };
    for name in must_document {
        if response.header(name).is_some() {
            assert!(names.iter().any(|n| n == name), "{what}: sends {name} but does not document it");
        }
    }
    if response.status == 204 {
        assert!(documented.get("content").is_none(), "{what}: a 204 documents no body");
        assert_eq!(response.body, Value::Null, "{what}: a 204 sends no body");
        return;
    }
    let content = documented.pointer("/content/application~1json").unwrap_or_else(|| panic!("{what}: no JSON body"));
    let schema = content.get("schema").unwrap_or_else(|| panic!("{what}: no schema"));
    conforms(doc, schema, &response.body, what).unwrap_or_else(|e| panic!("{e} in {}", response.body));
    if let Some(examples) = content.get("examples").and_then(Value::as_object) {
        let codes: Vec<&Value> = examples.values().map(|e| &resolve(doc, e)["value"]["error"]["code"]).collect();
        assert!(
            codes.contains(&&response.body["error"]["code"]),
            "{what}: code {} is not among {codes:?}",
            response.body
        );
    }
}

/// One request through the handler and the status it must get.
struct Probe {
    method: &'static str,
    route: &'static str,
    status: u16,
    request: ApiRequest,
    /// Sent once first: what takes an end user's polling window.
    first: Option<ApiRequest>,
    /// Send to the API with neither Redis nor the database.
    down: bool,
}

fn probe(method: &'static str, route: &'static str, status: u16, request: ApiRequest) -> Probe {
    Probe { method, route, status, request, first: None, down: false }
}

#[tokio::test]
async fn openapi_yaml_documents_exactly_the_routes_statuses_and_fields_the_handler_answers() {
    let doc: Value = serde_yaml::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml is YAML");
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.0.") || version.starts_with("3.1."), "OpenAPI {version}");

    // Exactly the contract's routes.
    let methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    let mut operations: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if methods.contains(&method.as_str()) {
                operations.insert((method.to_uppercase(), path.clone()), operation);
            }
        }
    }
    let routes: BTreeSet<(String, String)> = operations.keys().cloned().collect();
    let contract: BTreeSet<(String, String)> = [
        ("POST", "/v1/status/bulk"),
        ("GET", "/v1/status/{user_id}"),
        ("GET", "/v1/public/status/{user_id}"),
        ("PUT", "/v1/users/{user_id}/visibility"),
        ("PUT", "/v1/users/{user_id}/manual-status"),
        ("DELETE", "/v1/users/{user_id}/manual-status"),
        ("DELETE", "/v1/users/{user_id}"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(routes, contract);

    // The two security schemes, and who may call what.
    let schemes = doc.pointer("/components/securitySchemes").and_then(Value::as_object).expect("security schemes");
    assert_eq!(schemes.len(), 2, "{schemes:?}");
    let jwt = schemes
        .iter()
        .find(|(_, s)| s["type"] == "http" && s["scheme"] == "bearer" && s["bearerFormat"] == "JWT")
        .map(|(name, _)| name.clone())
        .expect("a JWT bearer scheme for end users");
    let sigv4 = schemes
        .iter()
        .find(|(_, s)| s["x-amazon-apigateway-authtype"] == "awsSigv4")
        .map(|(name, _)| name.clone())
        .expect("an AWS SigV4 (IAM) scheme for services");
    for ((method, path), operation) in &operations {
        let names: BTreeSet<&str> = operation["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} states its security"))
            .iter()
            .flat_map(|requirement| requirement.as_object().expect("a requirement").keys().map(String::as_str))
            .collect();
        let want: BTreeSet<&str> = if path.starts_with("/v1/public/") {
            BTreeSet::new()
        } else if (method.as_str(), path.as_str()) == ("DELETE", "/v1/users/{user_id}") {
            // Erasure is for service callers only (DESIGN §7.1).
            BTreeSet::from([sigv4.as_str()])
        } else {
            BTreeSet::from([jwt.as_str(), sigv4.as_str()])
        };
        assert_eq!(names, want, "{method} {path} security");
    }

    // Every status each route can answer, provoked through the handler.
    let stack = Stack::new().await;
    let api = api(&stack);
    let down = api_with_nothing_up(&stack);
    write(&stack, &[connected(90, "a", T0)], T0).await;
    let (bulk_route, single_route, public_route, visibility_route) =
        ("/v1/status/bulk", "/v1/status/{user_id}", "/v1/public/status/{user_id}", "/v1/users/{user_id}/visibility");
    let oversized = "x".repeat(MAX_BODY_BYTES + 1);
    let oversized_manual = oversized.clone();
    let manual_route = "/v1/users/{user_id}/manual-status";
    let erase_route = "/v1/users/{user_id}";
    let manual = |id: u64, body: &str, caller: Caller| {
        request("PUT", &format!("/v1/users/{id}/manual-status"), body.to_owned(), caller)
    };
    let clear_manual = |path: &str, caller: Caller| request("DELETE", path, "", caller);
    let probes = vec![
        probe("POST", bulk_route, 200, bulk(&[90, 91], Caller::Service)),
        probe("POST", bulk_route, 400, request("POST", "/v1/status/bulk", r#"{"user_ids": []}"#, Caller::Service)),
        probe("POST", bulk_route, 401, bulk(&[90], Caller::BadSubject)),
        probe("POST", bulk_route, 413, request("POST", "/v1/status/bulk", oversized.clone(), Caller::Service)),
        Probe { first: Some(bulk(&[90], me(92))), ..probe("POST", bulk_route, 429, bulk(&[90], me(92))) },
        Probe { down: true, ..probe("POST", bulk_route, 503, bulk(&[90], Caller::Service)) },
        probe("GET", single_route, 200, single(90, me(93))),
        probe("GET", single_route, 400, single_path("/v1/status/abc")),
        probe("GET", single_route, 401, single(90, Caller::BadSubject)),
        Probe { first: Some(single(90, me(94))), ..probe("GET", single_route, 429, single(91, me(94))) },
        Probe { down: true, ..probe("GET", single_route, 503, single(90, Caller::Service)) },
        probe("GET", public_route, 200, public(90, me(95))),
        probe("GET", public_route, 400, single_path("/v1/public/status/0")),
        Probe { down: true, ..probe("GET", public_route, 503, public(90, Caller::Service)) },
        probe("PUT", visibility_route, 200, set_visible(96, false, me(96))),
        probe("PUT", visibility_route, 400, request("PUT", "/v1/users/96/visibility", "{}", me(96))),
        probe("PUT", visibility_route, 401, set_visible(96, false, Caller::BadSubject)),
        probe("PUT", visibility_route, 403, set_visible(96, false, me(97))),
        probe("PUT", visibility_route, 413, request("PUT", "/v1/users/96/visibility", oversized.clone(), me(96))),
        Probe { down: true, ..probe("PUT", visibility_route, 503, set_visible(96, true, me(96))) },
        probe("PUT", manual_route, 200, manual(98, r#"{"state": "dnd", "message": "focus"}"#, me(98))),
        probe("PUT", manual_route, 400, manual(98, r#"{"state": "asleep"}"#, me(98))),
        probe("PUT", manual_route, 401, manual(98, r#"{"state": "dnd"}"#, Caller::BadSubject)),
        probe("PUT", manual_route, 403, manual(98, r#"{"state": "dnd"}"#, me(97))),
        probe("PUT", manual_route, 413, request("PUT", "/v1/users/98/manual-status", oversized_manual, me(98))),
        Probe { down: true, ..probe("PUT", manual_route, 503, manual(98, r#"{"state": "dnd"}"#, me(98))) },
        probe("DELETE", manual_route, 200, clear_manual("/v1/users/98/manual-status", me(98))),
        probe("DELETE", manual_route, 400, clear_manual("/v1/users/abc/manual-status", Caller::Service)),
        probe("DELETE", manual_route, 401, clear_manual("/v1/users/98/manual-status", Caller::BadSubject)),
        probe("DELETE", manual_route, 403, clear_manual("/v1/users/98/manual-status", me(97))),
        Probe { down: true, ..probe("DELETE", manual_route, 503, clear_manual("/v1/users/98/manual-status", me(98))) },
        probe("DELETE", erase_route, 204, clear_manual("/v1/users/99", Caller::Service)),
        probe("DELETE", erase_route, 400, clear_manual("/v1/users/0", Caller::Service)),
        probe("DELETE", erase_route, 401, clear_manual("/v1/users/99", Caller::BadSubject)),
        probe("DELETE", erase_route, 403, clear_manual("/v1/users/99", me(99))),
        Probe { down: true, ..probe("DELETE", erase_route, 503, clear_manual("/v1/users/99", Caller::Service)) },
    ];
    let mut provoked: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for p in &probes {
        let target = if p.down { &down } else { &api };
        if let Some(first) = &p.first {
            ok(target, first, T0).await;
        }
        let response = target.handle(&p.request, T0).await;
        let what = format!("{} {} -> {}", p.method, p.route, p.status);
        assert_eq!(response.status, p.status, "{what}: the handler answered {}", response.body);
        let operation = operations[&(p.method.to_owned(), p.route.to_owned())];
        let documented = operation["responses"]
            .get(p.status.to_string())
            .unwrap_or_else(|| panic!("{what}: the handler answers it but openapi.yaml does not document it"));
        check_documented(&doc, documented, &response, &what);
        if p.status == 200 {
            if let Some(body_schema) = operation.pointer("/requestBody/content/application~1json/schema") {
                let sent: Value = serde_json::from_slice(&p.request.body).expect("a JSON request");
                conforms(&doc, body_schema, &sent, &format!("{what} request")).unwrap_or_else(|e| panic!("{e}"));
            }
        } else if p.status == 400 {
            if let Some(body_schema) = operation.pointer("/requestBody/content/application~1json/schema") {
                let sent: Value = serde_json::from_slice(&p.request.body).expect("a JSON request");
                assert!(
                    conforms(&doc, body_schema, &sent, "refused").is_err(),
                    "{what}: the schema allows the refused body"
                );
            }
        }
        provoked.entry((p.method.to_owned(), p.route.to_owned())).or_default().insert(p.status.to_string());
    }
    for (key, operation) in &operations {
        let documented: BTreeSet<String> =
            operation["responses"].as_object().expect("responses").keys().cloned().collect();
        assert_eq!(provoked.get(key), Some(&documented), "{key:?}: documented statuses vs the handler's");
    }

    // Answers on no route: documented once, under components.
    let not_found = api.handle(&request("GET", "/v1/nothing", "", Caller::Service), T0).await;
    assert_eq!(not_found.status, 404);
    check_documented(&doc, &doc["components"]["responses"]["NotFound"], &not_found, "404");
    let wrong_method = api.handle(&request("DELETE", "/v1/status/90", "", Caller::Service), T0).await;
    assert_eq!(wrong_method.status, 405);
    check_documented(&doc, &doc["components"]["responses"]["MethodNotAllowed"], &wrong_method, "405");
}

fn single_path(path: &str) -> ApiRequest {
    request("GET", path, "", Caller::Service)
}

/// A request body's example is what a caller copies first, so each must be
/// accepted as it stands, today: read with the wall clock rather than `T0`,
/// since an example whose `expires_at_ms` the clock has passed is refused
/// in real use (schemathesis sends every example too).
#[tokio::test]
async fn every_request_example_in_openapi_yaml_is_accepted_now() {
    let doc: Value = serde_yaml::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml is YAML");
    let stack = Stack::new().await;
    let api = api(&stack);
    let mut sent = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Some(schema) = operation.pointer("/requestBody/content/application~1json/schema") else { continue };
            let schema = resolve(&doc, schema);
            let what = format!("{} {path} example", method.to_uppercase());
            let example = schema.get("example").unwrap_or_else(|| panic!("{what}: every request schema has one"));
            conforms(&doc, schema, example, &what).unwrap_or_else(|e| panic!("{e}"));
            let concrete = path.replace("{user_id}", "1");
            let body = serde_json::to_vec(example).expect("JSON");
            let response =
                api.handle(&request(&method.to_uppercase(), &concrete, body, Caller::Service), now_ms()).await;
            assert_eq!(response.status, 200, "{what}: answered {}", response.body);
            check_documented(&doc, &operation["responses"]["200"], &response, &what);
            sent += 1;
        }
    }
    // Bulk, visibility and manual status take a body.
    assert_eq!(sent, 3);
}

/// A hide must never be acknowledged while Redis could still serve the old,
/// visible copy: readers trust a Redis hit (property 4 allows no window).
#[tokio::test]
async fn a_hide_saved_while_redis_stalls_never_leaks_once_redis_answers_again() {
    let redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let api = api(&stack);
    write(&stack, &[connected(88, "a", T0)], T0).await;
    redis.pause();
    let hidden = api.handle(&set_visible(88, false, me(88)), T0 + 1_000).await;
    redis.resume();
    // Not acknowledged while Redis stalls: the caller is told to retry and
    // nothing changed, so nothing can leak.
    assert_eq!(hidden.status, 503);
    assert_eq!(stack.durable(id(88)).await.map(|r| r.state.visibility.is_visible()), Some(true));
    let retried = api.handle(&set_visible(88, false, me(88)), T0 + 1_500).await;
    assert_eq!(retried.status, 200);
    let body = ok(&api, &single(88, Caller::Service), T0 + 2_000).await;
    assert_eq!(entry(&body), reads(88, "offline", Some(T0)), "the acknowledged hide leaked");
}

// ------------------------------------------------------------ tolerant events

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
    let answer = api.handle_event(&jwt_event(odd), T0).await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(proxy_body(&answer)["status"], "online");
    // The caller was user 42: their poll window is now taken, and a
    // numeric `sub` names the same user.
    let answer = api.handle_event(&jwt_event(json!({ "sub": 42, "exp": 1_893_456_000 })), T0).await;
    assert_eq!(answer["statusCode"], 429, "{answer}");
    assert_eq!(proxy_body(&answer)["error"]["code"], "rate_limited");
    // A `sub` of another type is no user id: the token's problem, a 401.
    let answer = api.handle_event(&jwt_event(json!({ "sub": [42], "exp": true })), T0).await;
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
        let answer = api.handle_event(&event, T0).await;
        assert_eq!(answer["statusCode"], 400, "{event}: {answer}");
        let body = proxy_body(&answer);
        let response = ApiResponse { status: 400, headers: Vec::new(), body };
        assert_error(&response, 400, "invalid_request");
    }
    assert_eq!(stack.durable(id(42)).await, None, "the unreadable hide changed nothing");
}
