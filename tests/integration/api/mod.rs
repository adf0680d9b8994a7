//! The HTTP API (DESIGN §7) through `StatusApi::handle`, against real Redis
//! and MariaDB. State is built through the real write path
//! (`Committer::aggregate`, and the API's own visibility route), and every
//! read names its `now`, so derivation at read time is tested exactly.
//!
//! This module holds the harness; each area is a module of its own.

mod bulk;
mod cache_headers;
mod derivation;
mod errors;
mod failures;
mod openapi;
mod rate_limit;
mod tolerant_events;
mod visibility;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use status_api::handler::{ApiResponse, StatusApi, MAX_BODY_BYTES, MAX_BULK_IDS};
use status_api::request::{ApiRequest, Caller};
use status_shared::adapters::dynamodb::{DynamoDeadLetters, DynamoRepairBuffer};
use status_shared::adapters::mysql::{connect_lazy, MySqlStore};
use status_shared::adapters::redis::{RedisCache, RedisConn, RedisPollLimiter};
use status_shared::app::{now_ms, Feed, Publisher};
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId};
use status_shared::services::{Committer, Reader};
use status_tests::stack::{api_request as request, free_port, user as id, PrivateRedis, Stack};

type Api = StatusApi<
    RedisCache,
    MySqlStore,
    MySqlStore,
    DynamoRepairBuffer,
    Publisher,
    Feed,
    RedisPollLimiter,
    DynamoDeadLetters,
>;

/// The origin of every clock value in this file: tests pass explicit times
/// so a boundary (exactly `IDLE_AFTER`, one millisecond past it) is hit
/// exactly, never raced against the wall clock.
const T0: Millis = 1_764_270_000_000;

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
            feed: stack.committer.feed.clone(),
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

/// Hides `user` as the user themself at `now` and checks the answer.
async fn hide(api: &Api, user: u64, now: Millis) {
    let body = ok(api, &set_visible(user, false, me(user)), now).await;
    assert_eq!(body, json!({ "user_id": user, "visible": false }));
}
