//! Erasure (DESIGN §7.1 `DELETE /v1/users/{id}`) through the HTTP API
//! against real Redis, MariaDB and moto: every trace goes (Redis keys and
//! index members in every shard, the SQL row and outbox rows, the DynamoDB
//! repair entries and dead letters), the transition to offline is
//! published, a replay of older events leaves the user unseen on the Redis
//! and the SQL path, later events start afresh with versions that continue,
//! and only service callers may erase.

use std::time::Duration;

use serde_json::{json, Value};
use status_api::request::{ApiRequest, Caller};
use status_shared::domain::{EventKind, Millis, UserId};
use status_shared::ports::{CacheWrite, DeadLetter, DeadLetters, RepairBuffer, StoreWrite, Write};
use status_tests::msk::{msk_event, Record};
use status_tests::stack::{
    api_request as request, service_views, session_event as event, user, wall_clock_ms, Stack, StackOptions,
};

fn erase(id: u64, caller: Caller) -> ApiRequest {
    request("DELETE", &format!("/v1/users/{id}"), "", caller)
}

fn letter(offset: i64, user: Option<UserId>) -> DeadLetter {
    DeadLetter {
        topic: "presence.updates".into(),
        partition: 0,
        offset,
        code: "invalid_json".into(),
        reason: "expected value".into(),
        value: Some("bm90IGpzb24=".into()),
        users: user.into_iter().collect(),
        received_ms: 1,
    }
}

/// The entry for `id` on every read route as a service reads it (bulk,
/// single, public), and the user's own view through the same read service
/// (an end user's reads are limited to one per window).
async fn every_view(stack: &Stack, id: u64, now: Millis) -> Vec<Value> {
    let mut views = service_views(&stack.api(), id, now).await;
    let own = stack.reader.read(&[user(id)], Some(user(id)), now).await.unwrap().remove(0);
    let mut own_entry = json!({"user_id": id, "status": own.status.as_str(), "last_active_ms": own.last_active_ms});
    if let Some(manual) = own.manual {
        own_entry["manual"] = json!(manual);
    }
    if let Some(platforms) = own.platforms {
        own_entry["platforms"] = platforms.live().map(|(p, s)| (p.as_str().to_owned(), json!(s.as_str()))).collect();
    }
    views.push(own_entry);
    views
}

fn assert_unseen(views: &[Value], id: u64, when: &str) {
    for view in views {
        assert_eq!(view, &json!({"user_id": id, "status": "offline", "last_active_ms": null}), "{when}");
    }
}

/// Every Redis trace of `id` in this test's keys: its own keys, and its
/// members of every shard's `status:bulk` and `status:due`.
async fn redis_traces(stack: &Stack, id: u64) -> Vec<String> {
    let mut raw = stack.env.raw_redis().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", stack.env.keys.prefix())).query_async(&mut raw).await.unwrap();
    // The erasure guard is not a trace: it holds the version number alone,
    // for 15 minutes.
    let guard = stack.env.keys.erased(user(id));
    let mut traces: Vec<String> =
        keys.iter().filter(|k| k.ends_with(&format!("{{{id}}}")) && **k != guard).cloned().collect();
    for shard in 0..stack.env.shards {
        for key in [stack.env.keys.bulk(shard), stack.env.keys.due(shard)] {
            let score: Option<f64> = redis::cmd("ZSCORE").arg(&key).arg(id).query_async(&mut raw).await.unwrap();
            if score.is_some() {
                traces.push(format!("{key} member {id}"));
            }
        }
    }
    traces
}

async fn sql_count(stack: &Stack, table: &str, id: u64) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = ?"))
        .bind(id as i64)
        .fetch_one(&stack.env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_erasure_removes_every_trace_announces_offline_and_a_replay_leaves_the_user_unseen() {
    let mut stack = Stack::with(StackOptions { events: true, ..Default::default() }).await;
    let sink = stack.sink.take().expect("a bus and queue");
    let api = stack.api();
    let (id, other) = (11, 12);
    let t0 = wall_clock_ms();
    // The last event is stamped ahead of the service clock (as far as
    // MAX_CLOCK_SKEW_MS lets it), past the erasure's own time.
    let history = [
        event(EventKind::Connected, id, "phone", Some("ios"), t0),
        event(EventKind::Connected, id, "tab", Some("web"), t0 + 1),
        event(EventKind::Activity, id, "tab", Some("web"), t0 + 2),
        event(EventKind::Heartbeat, id, "tab", Some("web"), t0 + 60_000),
    ];
    stack.committer.aggregate(&history, t0 + 2).await.unwrap();
    stack.committer.aggregate(&[event(EventKind::Connected, other, "s", None, t0)], t0 + 2).await.unwrap();
    let dnd =
        request("PUT", &format!("/v1/users/{id}/manual-status"), json!({"state": "dnd"}).to_string(), Caller::Service);
    assert_eq!(api.handle(&dnd, t0 + 3).await.status, 200);
    // The user's own poll limit key, a repair entry and dead letters.
    let own = api.handle(&request("GET", &format!("/v1/status/{id}"), "", Caller::User(user(id))), t0 + 3).await;
    assert_eq!(own.status, 200);
    stack.app.repair.record(&[user(id), user(other)]).await.unwrap();
    stack
        .app
        .dead_letters
        .put(&[letter(1, Some(user(id))), letter(2, Some(user(other))), letter(3, None)])
        .await
        .unwrap();
    assert!(!redis_traces(&stack, id).await.is_empty(), "the user is in Redis before");
    let before: Vec<Value> = sink.drain(3, Duration::from_secs(20)).await;
    assert!(before.len() >= 3, "online for both users and the dnd: {before:?}");

    let erased_at = t0 + 10;
    let gone = api.handle(&erase(id, Caller::Service), erased_at).await;
    assert_eq!((gone.status, &gone.body), (204, &Value::Null));
    let apigw = gone.clone().into_apigw_json();
    assert_eq!((apigw["statusCode"].as_u64(), apigw["body"].as_str()), (Some(204), Some("")), "no body");

    assert_eq!(redis_traces(&stack, id).await, Vec::<String>::new(), "no key and no index member left");
    assert!(!redis_traces(&stack, other).await.is_empty(), "another user is untouched");
    assert_eq!(sql_count(&stack, "user_status", id).await, 0, "the row is gone");
    assert_eq!(sql_count(&stack, "user_status", other).await, 1);
    let shard = user(id).shard(stack.env.shards);
    let pending: Vec<UserId> = stack.app.repair.pending(shard).await.unwrap().iter().map(|p| p.user).collect();
    assert!(!pending.contains(&user(id)), "the repair entry is gone: {pending:?}");
    let other_pending = stack.app.repair.pending(user(other).shard(stack.env.shards)).await.unwrap();
    assert!(other_pending.iter().any(|p| p.user == user(other)), "another user's entry stays");
    let letters = &stack.app.dead_letters;
    assert_eq!(letters.get("presence.updates", 0, 1).await.unwrap(), None, "the user's dead letter is gone");
    assert!(letters.get("presence.updates", 0, 2).await.unwrap().is_some(), "another user's stays");
    assert!(letters.get("presence.updates", 0, 3).await.unwrap().is_some(), "a letter naming no user stays");

    // The bus hears that the user went offline, and the manual status end.
    let after = sink.drain(2, Duration::from_secs(20)).await;
    let status: Vec<&Value> =
        after.iter().filter(|d| d["event_id"].as_str().unwrap().ends_with("-status_changed")).collect();
    assert_eq!(status.len(), 1, "{after:?}");
    assert_eq!(
        (&status[0]["from"], &status[0]["to"], &status[0]["at_ms"]),
        (&json!("online"), &json!("offline"), &json!(erased_at))
    );
    let manual: Vec<&Value> =
        after.iter().filter(|d| d["event_id"].as_str().unwrap().ends_with("-manual_status_changed")).collect();
    assert_eq!(manual.len(), 1, "{after:?}");
    assert_eq!((&manual[0]["from"]["state"], &manual[0]["to"]), (&json!("dnd"), &Value::Null));
    assert_eq!(sql_count(&stack, "status_outbox", id).await, 0, "published, then deleted");
    let erasure_event_id = status[0]["event_id"].as_str().unwrap().to_owned();

    assert_unseen(&every_view(&stack, id, erased_at + 1).await, id, "right after the erasure");

    // A replay of the whole history, and a late event stamped at the
    // erasure itself: ignored, on the Redis path and on the SQL path.
    let mut replay = history.to_vec();
    replay.push(event(EventKind::Activity, id, "tab", Some("web"), erased_at));
    stack.committer.aggregate(&replay, erased_at + 2).await.unwrap();
    assert_unseen(&every_view(&stack, id, erased_at + 3).await, id, "after a replay, from Redis");
    stack.env.flush_redis().await;
    assert_unseen(&every_view(&stack, id, erased_at + 4).await, id, "after a replay, from SQL");
    stack.committer.aggregate(&replay, erased_at + 5).await.unwrap();
    assert_unseen(&every_view(&stack, id, erased_at + 6).await, id, "after a replay into a flushed cache");
    assert_eq!(sql_count(&stack, "user_status", id).await, 0, "a replay writes no row");
    let mut raw = stack.env.raw_redis().await;
    for key in [stack.env.keys.status(user(id)), stack.env.keys.visible(user(id))] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await.unwrap();
        assert!(ttl == -2 || (0..=60_000).contains(&ttl), "{key} is gone or a read's backfill (PTTL {ttl})");
    }
    assert_eq!(sink.drain(0, Duration::from_secs(2)).await, Vec::<Value>::new(), "a replay announces nothing");

    // Erasing again is fine and changes nothing anyone sees.
    assert_eq!(api.handle(&erase(id, Caller::Service), erased_at + 7).await.status, 204);
    assert_unseen(&every_view(&stack, id, erased_at + 8).await, id, "after a second erasure");

    // Later events start afresh, under versions after the erasure's.
    let back = t0 + 60_001;
    stack.committer.aggregate(&[event(EventKind::Connected, id, "new", Some("desktop"), back)], back).await.unwrap();
    for view in every_view(&stack, id, back + 1).await {
        assert_eq!((&view["status"], &view["last_active_ms"]), (&json!("online"), &json!(back)), "{view}");
        assert_eq!(view["platforms"], json!({"desktop": "online"}), "only the new session: {view}");
        assert!(view.get("manual").is_none(), "the old manual status is gone: {view}");
    }
    let fresh = sink.drain(1, Duration::from_secs(20)).await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!((&fresh[0]["from"], &fresh[0]["to"]), (&json!("offline"), &json!("online")));
    let version_of = |event_id: &str| event_id.split('-').nth(1).unwrap().parse::<u64>().unwrap();
    assert!(
        version_of(fresh[0]["event_id"].as_str().unwrap()) > version_of(&erasure_event_id),
        "versions continue after the erasure: {} after {erasure_event_id}",
        fresh[0]["event_id"]
    );
}

#[tokio::test]
async fn a_write_merged_before_the_erasure_loses_and_is_merged_again_from_the_watermark() {
    let stack = Stack::new().await;
    let api = stack.api();
    let id = 21;
    let t0 = 1_764_270_000_000;
    stack.committer.aggregate(&[event(EventKind::Connected, id, "a", Some("ios"), t0)], t0).await.unwrap();
    // A writer that loaded the user before the erasure...
    let before = stack.env.store.load_current(&[user(id)]).await.unwrap().remove(&user(id)).unwrap();
    assert_eq!(api.handle(&erase(id, Caller::Service), t0 + 10).await.status, 204);
    // ...saves after it: lost, nothing written.
    let mut stale = before.clone();
    stale.version += 1;
    stale.written_ms = t0 + 11;
    let lost = stack
        .env
        .store
        .save(&[Write::derived(user(id), &stale, t0 + 11, &stack.env.rules)], &[], t0 + 11)
        .await
        .unwrap();
    assert_eq!(lost, vec![user(id)], "a write from before the erasure loses its compare-and-set");
    assert_eq!(sql_count(&stack, "user_status", id).await, 0);

    // Its Redis write, or a read's backfill of what it loaded before the
    // erasure, landing late: refused by the erasure's guard.
    let late = [Write::derived(user(id), &before, t0 + 12, &stack.env.rules)];
    stack.env.cache.store(&late, t0 + 12).await.unwrap();
    stack.env.cache.backfill(&late, t0 + 12).await.unwrap();
    assert_eq!(stack.cached(user(id)).await, None, "the old record stays out of Redis");
    assert_unseen(&every_view(&stack, id, t0 + 13).await, id, "after late writes");

    // Past the guard (gone here by hand; it lasts 15 minutes), the old
    // record can land in the cache; the next write of the user loses in
    // SQL, merges again from the watermark, and rewrites Redis: the old
    // history does not come back.
    let mut raw = stack.env.raw_redis().await;
    let _: () = redis::cmd("DEL").arg(stack.env.keys.erased(user(id))).query_async(&mut raw).await.unwrap();
    stack.env.cache.store(&late, t0 + 12).await.unwrap();
    assert!(stack.cached(user(id)).await.is_some());
    let next = t0 + 20;
    let outcome = stack
        .committer
        .aggregate(
            &[event(EventKind::Heartbeat, id, "b", None, next), event(EventKind::Activity, id, "a", None, t0 + 5)],
            next,
        )
        .await
        .unwrap();
    assert!(outcome.retried >= 1, "merged again after losing: {outcome:?}");
    let view = &every_view(&stack, id, next + 1).await[0];
    assert_eq!(view["status"], "idle", "only the heartbeat after the erasure counts: {view}");
    assert_eq!(view["last_active_ms"], Value::Null, "no activity from before the erasure: {view}");
    assert!(view.get("platforms").is_some_and(|p| p == &json!({})), "the ios session is gone: {view}");
}

#[tokio::test]
async fn only_a_service_caller_may_erase_and_a_refusal_changes_nothing() {
    let stack = Stack::new().await;
    let api = stack.api();
    let id = 31;
    let t0 = 1_764_270_000_000;
    stack.committer.aggregate(&[event(EventKind::Connected, id, "a", None, t0)], t0).await.unwrap();
    let refusals = [
        (erase(id, Caller::User(user(id))), 403, "forbidden"),
        (erase(id, Caller::User(user(32))), 403, "forbidden"),
        (erase(id, Caller::BadSubject), 401, "unauthorized"),
        (request("DELETE", "/v1/users/0", "", Caller::Service), 400, "invalid_user_id"),
        (request("DELETE", "/v1/users/abc", "", Caller::Service), 400, "invalid_user_id"),
        (request("GET", &format!("/v1/users/{id}"), "", Caller::Service), 405, "method_not_allowed"),
    ];
    for (call, status, code) in refusals {
        let r = api.handle(&call, t0 + 1).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{} {}: {}",
            call.method,
            call.path,
            r.body
        );
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let view = &every_view(&stack, id, t0 + 2).await[1];
    assert_eq!((&view["status"], &view["last_active_ms"]), (&json!("online"), &json!(t0)), "nothing changed");
    assert_eq!(sql_count(&stack, "user_erasure", id).await, 0, "no watermark either");
    // A user never seen may be erased: nothing to remove, still 204.
    assert_eq!(api.handle(&erase(33, Caller::Service), t0 + 3).await.status, 204);
    assert_unseen(&every_view(&stack, 33, t0 + 4).await, 33, "never seen, erased");
    // Reads of users never seen are cached for the backfill TTL only,
    // visibility flag included: nothing stays behind for good.
    assert_unseen(&every_view(&stack, 34, t0 + 5).await, 34, "never seen");
    let mut raw = stack.env.raw_redis().await;
    for key in [stack.env.keys.status(user(34)), stack.env.keys.visible(user(34))] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await.unwrap();
        assert!((1..=60_000).contains(&ttl), "{key} expires with the backfill (PTTL {ttl})");
    }
}

#[tokio::test]
async fn a_shard_index_damaged_by_hand_does_not_block_an_erasure() {
    let stack = Stack::new().await;
    let api = stack.api();
    let (id, t0) = (41, 1_764_270_000_000);
    stack.committer.aggregate(&[event(EventKind::Connected, id, "a", None, t0)], t0).await.unwrap();
    let other_shard = (user(id).shard(stack.env.shards) + 1) % stack.env.shards;
    let mut raw = stack.env.raw_redis().await;
    redis::cmd("SET").arg(stack.env.keys.bulk(other_shard)).arg("junk").query_async::<()>(&mut raw).await.unwrap();
    assert_eq!(api.handle(&erase(id, Caller::Service), t0 + 1).await.status, 204);
    assert_unseen(&every_view(&stack, id, t0 + 2).await, id, "erased beside a damaged index");
    let own = user(id).shard(stack.env.shards);
    for key in [stack.env.keys.bulk(own), stack.env.keys.due(own)] {
        let score: Option<f64> = redis::cmd("ZSCORE").arg(&key).arg(id).query_async(&mut raw).await.unwrap();
        assert_eq!(score, None, "{key} no longer holds the user");
    }
    let exists: i64 = redis::cmd("EXISTS").arg(stack.env.keys.status(user(id))).query_async(&mut raw).await.unwrap();
    assert_eq!(exists, 0, "the user's hash is gone");
}

/// An MSK event of `records` (key, value), all on partition 0 of
/// `presence.updates`, at offsets 0, 1, ...
fn keyed_batch(records: &[(Option<&str>, String)]) -> aws_lambda_events::event::kafka::KafkaEvent {
    msk_event(records.iter().map(|(key, value)| Record::value(value.clone()).with_key(*key).on_partition(0)))
}

#[tokio::test]
async fn an_erasure_finds_every_dead_letter_that_names_the_user_by_key_or_value() {
    let stack = Stack::new().await;
    let (id, other) = (31, 32);
    let now = wall_clock_ms();
    let refused: [(Option<&str>, String); 6] = [
        // Offsets 0 to 2 name the user; 3 to 5 do not.
        (None, json!({"type": "activity", "user_id": id.to_string(), "session_id": "s", "ts_ms": now}).to_string()),
        (Some("32"), json!({"type": "nap", "user_id": id, "session_id": "s", "ts_ms": now}).to_string()),
        (None, format!(r#"{{"type":"activity","user_id": {id},"session_id":"s","device":"ios","ts"#)),
        (None, json!({"type": "activity", "user_id": other.to_string(), "session_id": "s"}).to_string()),
        (Some("32"), "not json".to_owned()),
        (None, "neither json nor a user".to_owned()),
    ];
    let summary = stack.aggregator().handle(&keyed_batch(&refused), now).await.unwrap();
    assert_eq!((summary.malformed, summary.dead_letter_failed), (6, false));
    let letters = &stack.app.dead_letters;
    for offset in 0..6 {
        assert!(letters.get("presence.updates", 0, offset).await.unwrap().is_some(), "letter {offset} is kept");
    }

    let gone = stack.api().handle(&erase(id, Caller::Service), now + 10).await;
    assert_eq!(gone.status, 204);
    for offset in 0..3 {
        let left = letters.get("presence.updates", 0, offset).await.unwrap();
        assert_eq!(left, None, "letter {offset} names user {id} and is erased with it");
    }
    for offset in 3..6 {
        let left = letters.get("presence.updates", 0, offset).await.unwrap();
        assert!(left.is_some(), "letter {offset} does not name user {id} and stays");
    }
    let mixed = keyed_batch(&refused[1..2]);
    assert_eq!(stack.aggregator().handle(&mixed, now).await.unwrap().malformed, 1);
    let kept = letters.get("presence.updates", 0, 0).await.unwrap().expect("the letter again");
    assert_eq!(kept.users, vec![user(other), user(id)], "the key's user first, then the value's");
}
