//! A stored version past what any history reaches (DESIGN §6: above
//! `MAX_VERSION`, so damage) fails only its own user: the batch and the
//! shard beside it are applied, the damaged row is replaced by the user's
//! next write, and no version arithmetic overflows, in SQL or in Rust.

use serde_json::json;
use sqlx::Executor;
use status_api::request::Caller;
use status_shared::domain::record::MAX_VERSION;
use status_shared::domain::EventKind;
use status_tests::msk::kafka_batch;
use status_tests::stack::{
    api_request as request, presence, service_views, session_event as event, user, wall_clock_ms, Stack,
};

/// Sets user `id`'s stored version to `u64::MAX`, as a hand edit might.
async fn damage_version(stack: &Stack, id: u64) {
    let sql = format!("UPDATE user_status SET version = {} WHERE user_id = {id}", u64::MAX);
    stack.env.pool.execute(sql.as_str()).await.unwrap();
}

async fn stored_version(stack: &Stack, id: u64) -> u64 {
    sqlx::query_scalar("SELECT version FROM user_status WHERE user_id = ?")
        .bind(id as i64)
        .fetch_one(&stack.env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_beside_a_row_at_the_largest_version_is_applied() {
    let stack = Stack::new().await;
    let api = stack.api();
    let now = wall_clock_ms();
    let connects = [event(EventKind::Connected, 11, "a", None, now), event(EventKind::Connected, 12, "b", None, now)];
    stack.committer.aggregate(&connects, now).await.unwrap();
    damage_version(&stack, 11).await;
    let damaged_before = stack.committer.store.damaged_rows();

    // From Redis first (it still holds version 1), then from SQL alone.
    for (round, flush) in [(0, false), (1, true)] {
        if flush {
            stack.env.flush_redis().await;
        }
        let at = now + 10 * (round + 1);
        let batch = kafka_batch(&[presence("activity", 11, "a", at), presence("activity", 12, "b", at)]);
        let done = stack.aggregator().handle(&batch, at + 1).await.expect("the batch is applied");
        assert_eq!(done.malformed, 0);
        let twelve = &service_views(&api, 12, at + 2).await[0];
        assert_eq!((&twelve["status"], &twelve["last_active_ms"]), (&json!("online"), &json!(at)), "round {round}");
        let version = stored_version(&stack, 11).await;
        assert!(version <= MAX_VERSION, "the damaged row was replaced by the write: {version}");
        damage_version(&stack, 11).await;
    }
    assert!(stack.committer.store.damaged_rows() > damaged_before, "the damage is counted");
}

#[tokio::test]
async fn a_row_at_the_largest_version_does_not_stop_its_shard_turning_idle() {
    let stack = Stack::new().await;
    let rules = stack.env.rules;
    let shards = u64::from(stack.env.shards);
    let now = wall_clock_ms();
    let (damaged, other) = (13, 13 + shards);
    let connects =
        [event(EventKind::Connected, damaged, "a", None, now), event(EventKind::Connected, other, "b", None, now)];
    stack.committer.aggregate(&connects, now).await.unwrap();
    damage_version(&stack, damaged).await;
    let mut redis = stack.env.raw_redis().await;
    let key = stack.env.keys.status(user(damaged));
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();

    let shard = user(other).shard(stack.env.shards);
    let later = now + rules.idle_after_ms + 10;
    let summary = stack.scanner().handle(&json!({"shard": shard}), later).await.expect("the shard scans");
    assert!(summary.failed.is_empty(), "{summary:?}");
    assert_eq!(stack.sql_status(user(other)).await.as_deref(), Some("idle"), "the other user turned idle");
    assert!(stored_version(&stack, damaged).await <= MAX_VERSION, "the damaged row was handled");
}

#[tokio::test]
async fn erasing_a_user_at_the_largest_version_never_wraps_the_watermark() {
    let stack = Stack::new().await;
    let api = stack.api();
    let now = wall_clock_ms();
    stack.committer.aggregate(&[event(EventKind::Connected, 14, "a", None, now)], now).await.unwrap();
    damage_version(&stack, 14).await;
    stack.env.flush_redis().await;
    let erased = api.handle(&request("DELETE", "/v1/users/14", "", Caller::Service), now + 1).await;
    assert_eq!(erased.status, 204, "{}", erased.body);
    let watermark: u64 = sqlx::query_scalar("SELECT last_version FROM user_erasure WHERE user_id = 14")
        .fetch_one(&stack.env.pool)
        .await
        .unwrap();
    assert!((1..=MAX_VERSION).contains(&watermark), "a version after the damaged one's reading: {watermark}");
    // The user comes back under versions that continue the watermark's.
    let back = now + 100;
    stack.committer.aggregate(&[event(EventKind::Connected, 14, "a", None, back)], back).await.unwrap();
    assert_eq!(stored_version(&stack, 14).await, watermark + 1);
}
