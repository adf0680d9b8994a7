//! No input can crash, wedge or corrupt the service (DESIGN §6, §7): an
//! instant past what every store holds is refused at the edge and changes
//! nothing; state damaged in a store (by hand, or by an older release)
//! fails only its own user, never the batch or the shard beside it; and
//! along one user's transitions no announced `at_ms` goes backwards.

use serde_json::{json, Value};
use sqlx::Executor;
use status_api::request::Caller;
use status_shared::domain::ids::MAX_INSTANT_MS;
use status_shared::domain::{EventKind, Millis};
use status_tests::msk::kafka_batch;
use status_tests::stack::{
    api_request as request, presence, service_views, session_event as event, user, wall_clock_ms, Stack, StackOptions,
};

/// The far-future expiry of the report (year 97036), and a microsecond
/// timestamp sent as ms (year ~57,000, once stored as a zero date).
fn out_of_range_expiries(now: Millis) -> [Millis; 3] {
    [3_000_000_000_000_000, now * 1000, MAX_INSTANT_MS + 1]
}

#[tokio::test]
async fn an_expiry_past_the_last_storable_instant_is_refused_and_changes_nothing() {
    let stack = Stack::new().await;
    let api = stack.api();
    let now = wall_clock_ms();
    // User 1 is offline (never seen), user 2 online.
    stack.committer.aggregate(&[event(EventKind::Connected, 2, "a", Some("ios"), now)], now).await.unwrap();
    for id in [1u64, 2] {
        let before = stack.durable(user(id)).await;
        for expires_at_ms in out_of_range_expiries(now) {
            for caller in [Caller::User(user(id)), Caller::Service] {
                let body = json!({"state": "dnd", "expires_at_ms": expires_at_ms}).to_string();
                let path = format!("/v1/users/{id}/manual-status");
                let answer = api.handle(&request("PUT", &path, body, caller), now + 1).await;
                assert_eq!(answer.status, 400, "{expires_at_ms}: {}", answer.body);
                assert_eq!(answer.body["error"]["code"], "invalid_manual_status", "{}", answer.body);
            }
        }
        assert_eq!(stack.durable(user(id)).await, before, "user {id}: nothing written");
        for entry in service_views(&api, id, now + 2).await {
            assert!(entry.get("manual").is_none(), "{entry}");
        }
    }
    // The last storable instant itself is accepted and read back exactly.
    let body = json!({"state": "away", "expires_at_ms": MAX_INSTANT_MS}).to_string();
    let answer = api.handle(&request("PUT", "/v1/users/2/manual-status", body, Caller::Service), now + 3).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    stack.env.flush_redis().await;
    let entries = service_views(&api, 2, now + 4).await;
    assert_eq!(entries[0]["manual"]["expires_at_ms"], json!(MAX_INSTANT_MS), "from SQL, exactly");

    // The online user's next batch and the scan of their shard still run.
    let batch = kafka_batch(&[presence("session_disconnected", 2, "a", now + 5)]);
    stack.aggregator().handle(&batch, now + 6).await.expect("the next batch is applied");
    let shard = user(2).shard(stack.env.shards);
    let scanned = stack.scanner().handle(&json!({"shard": shard}), now + 7).await.expect("the scan runs");
    assert!(scanned.failed.is_empty());
    assert_eq!(service_views(&api, 2, now + 8).await[0]["status"], "offline");
}

/// Writes `sql` on one connection with no SQL mode, as a person fixing a
/// row by hand might, so zero dates are stored as such.
async fn damage(stack: &Stack, sql: &str) {
    let mut conn = stack.env.pool.acquire().await.unwrap();
    conn.execute("SET SESSION sql_mode = ''").await.unwrap();
    conn.execute(sql).await.unwrap();
}

#[tokio::test]
async fn a_manual_status_stored_past_the_range_fails_neither_the_next_batch_nor_the_scan() {
    let stack = Stack::new().await;
    let api = stack.api();
    let now = wall_clock_ms();
    stack
        .committer
        .aggregate(
            &[event(EventKind::Connected, 3, "a", None, now), event(EventKind::Connected, 4, "b", None, now)],
            now,
        )
        .await
        .unwrap();
    // What an earlier release let through, in both stores.
    let far = r#"{"state":"dnd","message":null,"expires_at_ms":3000000000000000}"#;
    damage(&stack, &format!("UPDATE user_status SET manual_status = '{far}' WHERE user_id = 3")).await;
    let mut redis = stack.env.raw_redis().await;
    let key = stack.env.keys.status(user(3));
    let _: () = redis::cmd("HSET").arg(&key).arg("manual").arg(far).query_async(&mut redis).await.unwrap();

    // User 3's disconnect and user 4's activity share one batch.
    let batch =
        kafka_batch(&[presence("session_disconnected", 3, "a", now + 10), presence("activity", 4, "b", now + 10)]);
    let done = stack.aggregator().handle(&batch, now + 11).await.expect("the batch is applied");
    assert_eq!(done.malformed, 0);
    assert_eq!(service_views(&api, 3, now + 12).await[0]["status"], "offline");
    let four = &service_views(&api, 4, now + 12).await[0];
    assert_eq!((&four["status"], &four["last_active_ms"]), (&json!("online"), &json!(now + 10)));
    let stored = stack.durable(user(3)).await.expect("a row");
    assert_eq!(stored.state.manual, None, "the damaged value is gone, replaced by the write");
    let shard = user(3).shard(stack.env.shards);
    let scanned = stack.scanner().handle(&json!({"shard": shard}), now + 13).await.expect("the scan runs");
    assert!(scanned.failed.is_empty());
}

#[tokio::test]
async fn a_zero_date_row_in_a_shard_fails_nothing_beside_it() {
    let stack = Stack::with(StackOptions { events: true, ..Default::default() }).await;
    let rules = stack.env.rules;
    let shards = stack.env.shards;
    let now = wall_clock_ms();
    // Five users of one shard online; one row's times zeroed by hand.
    let ids: Vec<u64> = (0..5).map(|i| 5 + i * u64::from(shards)).collect();
    let connects: Vec<_> = ids.iter().map(|id| event(EventKind::Connected, *id, "s", None, now)).collect();
    stack.committer.aggregate(&connects, now).await.unwrap();
    let damaged = ids[2];
    damage(
        &stack,
        &format!(
            "UPDATE user_status SET next_change_at = '0000-00-00 00:00:00', updated_at = '0000-00-00 00:00:00' \
             WHERE user_id = {damaged}"
        ),
    )
    .await;
    let shard = user(ids[0]).shard(shards);
    stack.sink.as_ref().unwrap().drain(ids.len(), std::time::Duration::from_secs(10)).await;

    // The cache is lost: the scan rebuilds the due index from SQL.
    stack.env.flush_redis().await;
    let later = now + rules.idle_after_ms + 10;
    let summary = stack.scanner().handle(&json!({"shard": shard}), later).await.expect("the shard scans");
    assert!(summary.failed.is_empty());
    let scanned = &summary.shards[0];
    assert_eq!((scanned.rebuilds, scanned.unreadable_rows), (1, 1), "{scanned:?}");
    for id in &ids {
        assert_eq!(stack.sql_status(user(*id)).await.as_deref(), Some("idle"), "user {id} stored idle");
    }
    let events = stack.sink.as_ref().unwrap().drain(ids.len(), std::time::Duration::from_secs(20)).await;
    let mut idle: Vec<u64> =
        events.iter().filter(|e| e["to"] == "idle").filter_map(|e| e["user_id"].as_u64()).collect();
    idle.sort_unstable();
    idle.dedup();
    assert_eq!(idle, ids, "every user of the shard announced idle: {events:?}");
    // The damaged row was rewritten whole by that scan.
    let row: (Option<String>,) =
        sqlx::query_as("SELECT CAST(next_change_at AS CHAR) FROM user_status WHERE user_id = ?")
            .bind(damaged as i64)
            .fetch_one(&stack.env.pool)
            .await
            .unwrap();
    assert!(row.0.as_deref().is_some_and(|t| !t.starts_with("0000")), "{row:?}");
}

#[tokio::test]
async fn a_damaged_row_is_read_as_what_can_be_salvaged_on_every_path() {
    let stack = Stack::new().await;
    let api = stack.api();
    let now = wall_clock_ms();
    stack
        .committer
        .aggregate(
            &[event(EventKind::Connected, 6, "a", None, now), event(EventKind::Connected, 7, "b", None, now)],
            now,
        )
        .await
        .unwrap();
    damage(
        &stack,
        "UPDATE user_status SET updated_at = '0000-00-00 00:00:00', last_active_at = '0000-00-00 00:00:00', \
         sessions = '{broken', announced = NULL WHERE user_id = 6",
    )
    .await;
    stack.env.flush_redis().await;
    // Reads answer both users from SQL, the damaged one as never seen.
    let body = json!({"user_ids": [6, 7]}).to_string();
    let answer = api.handle(&request("POST", "/v1/status/bulk", body, Caller::Service), now + 1).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["statuses"][1]["status"], "online");
    assert_eq!(answer.body["statuses"][0]["status"], "offline");
    // Writes of both go through, and the damaged row is replaced.
    stack
        .committer
        .aggregate(
            &[event(EventKind::Activity, 6, "a", None, now + 2), event(EventKind::Activity, 7, "b", None, now + 2)],
            now + 2,
        )
        .await
        .expect("a batch beside a damaged row is applied");
    let entries = service_views(&api, 6, now + 3).await;
    assert_eq!((&entries[0]["status"], &entries[0]["last_active_ms"]), (&json!("online"), &json!(now + 2)));
    let stored = stack.durable(user(6)).await.expect("a row");
    assert_eq!(stored.written_ms, now + 2, "the write replaced the damaged row");
}

/// A hide whose clock read a little before a connect's, committed after it
/// (it lost the compare-and-set and merged again), still announces its
/// departure no earlier than the arrival it follows (DESIGN §8).
#[tokio::test]
async fn a_hide_committed_after_a_connect_is_never_announced_before_it() {
    let stack = Stack::with(StackOptions { events: true, ..Default::default() }).await;
    let now = wall_clock_ms();
    // In order, deterministically: the connect at X, then a hide read at X - 2.
    let connected = stack.committer.aggregate(&[event(EventKind::Connected, 8, "a", None, now)], now).await.unwrap();
    let hidden = stack.committer.set_visibility(user(8), false, now - 2).await.unwrap();
    let (arrival, departure) = (connected.transitions[0].1, hidden.transitions[0].1);
    assert!(departure.at_ms >= arrival.at_ms, "{arrival:?} then {departure:?}");
    let events = stack.sink.as_ref().unwrap().drain(2, std::time::Duration::from_secs(20)).await;
    assert_monotonic_per_user(&events);
    assert_eq!(events.len(), 2, "{events:?}");

    // Racing, over many users: whichever order the two commit in, the
    // versions' `at_ms` never go backwards.
    let trials = 40u64;
    let mut expected = 0;
    for id in 100..100 + trials {
        let x = wall_clock_ms();
        let arrival = [event(EventKind::Connected, id, "a", None, x)];
        let (connect, hide) = tokio::join!(
            stack.committer.aggregate(&arrival, x),
            stack.committer.set_visibility(user(id), false, x - 2),
        );
        let (connect, hide) = (connect.unwrap(), hide.unwrap());
        expected += connect.transitions.len() + hide.transitions.len();
        if let (Some((_, up)), Some((_, down))) = (connect.transitions.first(), hide.transitions.first()) {
            assert!(down.at_ms >= up.at_ms, "user {id}: {up:?} then {down:?}");
        }
    }
    let events = stack.sink.as_ref().unwrap().drain(expected, std::time::Duration::from_secs(30)).await;
    assert!(events.len() >= expected, "{} of {expected}", events.len());
    assert_monotonic_per_user(&events);
}

/// Orders each user's `status_changed` details by the version in their
/// `event_id` and checks `at_ms` never decreases along it.
fn assert_monotonic_per_user(events: &[Value]) {
    let mut by_user: std::collections::BTreeMap<u64, Vec<(u64, i64)>> = Default::default();
    for e in events {
        let id = e["event_id"].as_str().unwrap_or_default();
        let version: u64 = id.split('-').nth(1).and_then(|v| v.parse().ok()).expect("an event id with a version");
        by_user.entry(e["user_id"].as_u64().unwrap()).or_default().push((version, e["at_ms"].as_i64().unwrap()));
    }
    for (user, mut seen) in by_user {
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "user {user}: at_ms went backwards: {seen:?}");
    }
}
