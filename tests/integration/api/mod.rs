//! The HTTP API (DESIGN §7) through `StatusApi::handle`, against real Redis
//! and MariaDB. State is built through the real write path
//! (`Committer::aggregate`, and the API's own visibility route), and every
//! read names its `now`, so derivation at read time is tested exactly.
//!
//! This module holds the harness; each area is a module of its own.

mod audience;
mod audience_outages;
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
use status_api::handler::{ApiResponse, AppApi, MAX_BODY_BYTES, MAX_BULK_IDS};
use status_api::request::{ApiRequest, Caller};
use status_shared::app::{now_ms, App, PoolSize};
use status_shared::config::Config;
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId};
use status_tests::stack::{api_request as request, free_port, user as id, PrivateRedis, Stack};

type Api = AppApi;

/// The origin of every clock value in this file: tests pass explicit times
/// so a boundary (exactly `IDLE_AFTER`, one millisecond past it) is hit
/// exactly, never raced against the wall clock.
const T0: Millis = 1_764_270_000_000;

/// The API over a stack's own stores, wired as `main.rs` wires it.
fn api(stack: &Stack) -> Api {
    stack.api()
}

/// An API started as `main` starts it, from the stack's configuration as
/// `change` leaves it, with one database connection that gives up after
/// 0.5 s (so an unreachable database fails quickly).
async fn api_with(stack: &Stack, change: impl FnOnce(&mut Config)) -> Api {
    let mut config = stack.app.config.clone();
    change(&mut config);
    let pool = PoolSize { connections: 1, acquire_timeout: Duration::from_millis(500) };
    let app = App::start_sized(config, stack.aws.config.clone(), pool).await.expect("the service starts");
    AppApi::from_app(&app)
}

/// A `DATABASE_URL` on a loopback port nobody listens on: every query
/// fails after the pool's short acquire timeout, as an unreachable Aurora
/// would.
fn unreachable_database() -> String {
    format!("mysql://root@127.0.0.1:{}/nothing", free_port())
}

/// An API whose database is unreachable, over the stack's Redis.
async fn api_without_database(stack: &Stack) -> Api {
    api_with(stack, |config| config.database_url = unreachable_database()).await
}

/// An API with neither Redis (connections refused) nor the database.
async fn api_with_nothing_up(stack: &Stack) -> Api {
    api_with(stack, |config| {
        config.redis_url = format!("redis://127.0.0.1:{}", free_port());
        config.redis_timeout = Duration::from_millis(200);
        config.database_url = unreachable_database();
    })
    .await
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
    fields.remove("last_seen");
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
