//! The aggregator against real Redis, MariaDB and the DynamoDB emulator.

use aggregator::error::AggregatorError;
use status_shared::domain::{Status, UserId};
use status_shared::ports::{CacheRead, StoreError};
use status_shared::services::CommitError;
use status_tests::msk::{kafka_batch, kafka_event};
use status_tests::stack::user;
use status_tests::stack::{presence, wall_clock_ms, PrivateRedis, Stack};

#[tokio::test]
async fn replaying_an_acknowledged_batch_changes_nothing() {
    let stack = Stack::new().await;
    let agg = stack.aggregator();
    let now = wall_clock_ms();
    let batch = kafka_batch(&[
        presence("session_connected", 1, "a", now - 50),
        presence("activity", 1, "a", now - 20),
        presence("session_connected", 2, "b", now - 10),
    ]);
    let first = agg.handle(&batch, now).await.unwrap();
    assert_eq!((first.applied, first.written, first.users), (3, 2, 2));
    let before = (stack.cached(user(1)).await, stack.durable(user(1)).await);
    let again = agg.handle(&batch, now + 5).await.unwrap();
    assert_eq!(again.written, 0, "a replay writes nothing");
    assert_eq!((stack.cached(user(1)).await, stack.durable(user(1)).await), before);
}

#[tokio::test]
async fn the_same_events_in_any_order_and_batching_give_the_same_state() {
    let now = wall_clock_ms();
    let events = vec![
        presence("session_connected", 5, "a", now - 900),
        presence("session_heartbeat", 5, "a", now - 500),
        presence("session_connected", 5, "b", now - 400),
        presence("activity", 5, "b", now - 300),
        presence("session_disconnected", 5, "a", now - 200),
        presence("session_connected", 6, "c", now - 100),
        presence("session_disconnected", 6, "c", now - 100),
    ];
    let in_order = Stack::new().await;
    in_order.aggregator().handle(&kafka_batch(&events), now).await.unwrap();

    let shuffled = Stack::new().await;
    let agg = shuffled.aggregator();
    let mut reversed = events.clone();
    reversed.reverse();
    // Reversed, split over three batches, with duplicates.
    agg.handle(&kafka_batch(&reversed[..3]), now).await.unwrap();
    agg.handle(&kafka_batch(&reversed[2..5]), now).await.unwrap();
    agg.handle(&kafka_batch(&reversed[4..]), now).await.unwrap();

    for id in [5, 6] {
        let a = in_order.durable(user(id)).await.unwrap();
        let b = shuffled.durable(user(id)).await.unwrap();
        assert_eq!(a.state, b.state, "user {id} differs in SQL");
        let ca = in_order.cached(user(id)).await.unwrap();
        let cb = shuffled.cached(user(id)).await.unwrap();
        assert_eq!(ca.state, cb.state, "user {id} differs in Redis");
    }
    let view = in_order.durable(user(5)).await.unwrap().state.derive(now, &in_order.env.rules);
    assert_eq!((view.status, view.device_count, view.last_active_ms), (Status::Online, 1, Some(now - 300)));
    let view = in_order.durable(user(6)).await.unwrap().state.derive(now, &in_order.env.rules);
    assert_eq!(view.status, Status::Offline, "a disconnect at the connect's timestamp wins");
}

#[tokio::test]
async fn a_disconnect_after_every_redis_key_is_gone_still_goes_offline() {
    let stack = Stack::new().await;
    let agg = stack.aggregator();
    let now = wall_clock_ms();
    agg.handle(&kafka_batch(&[presence("session_connected", 9, "a", now - 100)]), now).await.unwrap();
    stack.env.flush_redis().await;
    agg.handle(&kafka_batch(&[presence("session_disconnected", 9, "a", now - 50)]), now).await.unwrap();
    assert_eq!(stack.sql_status(user(9)).await.as_deref(), Some("offline"));
    assert_eq!(stack.redis_status(user(9)).await.as_deref(), Some("offline"));
    let views = stack.reader.read(&[user(9)], None, now).await.unwrap();
    assert_eq!((views[0].status, views[0].last_active_ms), (Status::Offline, Some(now - 100)));
}

#[tokio::test]
async fn malformed_records_are_dead_lettered_and_the_good_ones_applied() {
    let stack = Stack::new().await;
    let agg = stack.aggregator();
    let now = wall_clock_ms();
    let values = vec![
        presence("session_connected", 11, "a", now).to_string(),
        "{not json".to_owned(),
        presence("session_connected", 0, "a", now).to_string(),
        serde_json::json!({"type": "activity", "user_id": 12, "session_id": "s"}).to_string(),
        presence("activity", 12, &"x".repeat(129), now).to_string(),
        presence("session_connected", 12, "b", now).to_string(),
    ];
    let event = kafka_event(&values);
    let summary = agg.handle(&event, now).await.unwrap();
    assert_eq!((summary.records, summary.applied, summary.malformed), (6, 2, 4));
    assert!(!summary.dead_letter_failed);
    assert_eq!(stack.sql_status(user(11)).await.as_deref(), Some("online"));
    assert_eq!(stack.sql_status(user(12)).await.as_deref(), Some("online"));
    let letters = stack.aws.scan(&stack.aws.dead_letter_table).await;
    assert_eq!(letters.len(), 4);
    let mut codes: Vec<String> =
        letters.iter().filter_map(|item| item.get("code").and_then(|v| v.as_s().ok()).cloned()).collect();
    codes.sort();
    assert_eq!(codes, vec!["invalid_json", "invalid_session_id", "invalid_user_id", "missing_field"]);
    // A replay of the batch does not duplicate the dead letters.
    agg.handle(&event, now).await.unwrap();
    assert_eq!(stack.aws.scan(&stack.aws.dead_letter_table).await.len(), 4);
}

#[tokio::test]
async fn a_ten_thousand_event_batch_costs_the_same_redis_round_trips_as_ten_events() {
    let stack = Stack::new().await;
    let agg = stack.aggregator();
    let now = wall_clock_ms();
    let small: Vec<_> = (0..10u64).map(|i| presence("session_connected", 100_000 + i, "s", now - 10)).collect();
    let big: Vec<_> = (0..10_000u64)
        .map(|i| {
            let kind = ["session_connected", "session_heartbeat", "activity", "session_disconnected"][(i % 4) as usize];
            presence(kind, 1 + i % 2500, &format!("s{}", i % 3), now - 10_000 + (i as i64))
        })
        .collect();
    let before = stack.env.redis.round_trips();
    agg.handle(&kafka_batch(&small), now).await.unwrap();
    let small_trips = stack.env.redis.round_trips() - before;
    let before = stack.env.redis.round_trips();
    let summary = agg.handle(&kafka_batch(&big), now).await.unwrap();
    let big_trips = stack.env.redis.round_trips() - before;
    assert_eq!(summary.applied, 10_000);
    assert_eq!(summary.users, 2500);
    assert_eq!(summary.written, 2500);
    assert_eq!(big_trips, small_trips, "round trips must not grow with the batch");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_status").fetch_one(&stack.env.pool).await.unwrap();
    assert_eq!(rows, 2510);
}

#[tokio::test]
async fn when_the_database_is_down_the_batch_fails_so_the_source_retries_it() {
    let mut stack = Stack::new().await;
    let now = wall_clock_ms();
    let dead = status_shared::adapters::mysql::connect_lazy(
        &format!("mysql://root@127.0.0.1:{}/nothing", status_tests::stack::free_port()),
        1,
        std::time::Duration::from_millis(500),
    )
    .unwrap();
    stack.app.store = status_shared::adapters::mysql::MySqlStore::new(dead.clone(), dead, stack.env.rules);
    let agg = stack.aggregator();
    let result = agg.handle(&kafka_batch(&[presence("session_connected", 3, "a", now)]), now).await;
    // The runtime is told a retryable commit failure caused by the store,
    // which the event source answers by retrying the batch.
    let error = result.expect_err("the batch must fail");
    assert!(error.is_retryable());
    assert!(
        matches!(&error, AggregatorError::Commit(CommitError::Store(StoreError::Database(_)))),
        "the store's failure, kept as the cause: {error:?}"
    );
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "CommitError");
    assert!(diagnostic.error_message.starts_with("durable store unavailable: database failed"), "{diagnostic:?}");
    assert!(stack.cached(user(3)).await.is_none(), "nothing reached Redis before SQL");
    assert!(stack.durable(user(3)).await.is_none(), "nor the real database");
    assert!(stack.aws.scan(&stack.aws.repair_table).await.is_empty(), "nor the repair buffer");
}

/// Runs `batches` through a stack, pausing its private Redis around the
/// middle ones, and returns the stack after the repair.
async fn redis_outage_then_repair(pause: bool) {
    let now = wall_clock_ms();
    let batches: Vec<Vec<serde_json::Value>> = vec![
        vec![presence("session_connected", 21, "a", now - 900), presence("session_connected", 22, "b", now - 900)],
        vec![presence("activity", 21, "a", now - 600), presence("session_connected", 23, "c", now - 600)],
        vec![presence("session_disconnected", 22, "b", now - 500), presence("session_heartbeat", 21, "a", now - 400)],
        vec![presence("session_connected", 24, "d", now - 300), presence("activity", 23, "c", now - 200)],
    ];
    let users: Vec<UserId> = (21..=24).map(user).collect();

    // The run without an outage.
    let control = Stack::new().await;
    let control_agg = control.aggregator();
    for batch in &batches {
        control_agg.handle(&kafka_batch(batch), now).await.unwrap();
    }

    let mut redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let agg = stack.aggregator();
    agg.handle(&kafka_batch(&batches[0]), now).await.unwrap();
    if pause {
        redis.pause();
    } else {
        redis.kill().await;
    }
    for batch in &batches[1..3] {
        let summary = agg.handle(&kafka_batch(batch), now).await.expect("accepted while redis is down");
        assert!(!summary.cache_ok);
    }
    // Reads answer from SQL meanwhile, as the control would.
    let during = stack.reader.read(&users, None, now).await.expect("reads fall back to SQL");
    let control_mid = Stack::new().await;
    let mid_agg = control_mid.aggregator();
    for batch in &batches[..3] {
        mid_agg.handle(&kafka_batch(batch), now).await.unwrap();
    }
    assert_eq!(during, control_mid.reader.read(&users, None, now).await.unwrap());

    if pause {
        redis.resume();
    } else {
        redis.restart().await;
    }
    agg.handle(&kafka_batch(&batches[3]), now).await.unwrap();
    let repaired: usize = {
        let mut total = 0;
        for shard in 0..stack.env.shards {
            total += stack.committer.repair_shard(shard, now).await.unwrap();
        }
        total
    };
    assert!(repaired >= 3, "the users written during the outage were buffered, got {repaired}");
    assert!(stack.aws.scan(&stack.aws.repair_table).await.is_empty(), "the buffer is cleared");

    let control_records = control.env.cache.load(&users).await.unwrap();
    let records = stack.env.cache.load(&users).await.unwrap();
    for ((u, want), got) in users.iter().zip(control_records).zip(records) {
        if pause || got.record.is_some() {
            let (want, got) = (want.record.unwrap(), got.record.expect("repaired into redis"));
            assert_eq!(got.state, want.state, "user {u}");
            assert_eq!(got.version, want.version, "user {u}");
        }
    }
    let final_views = stack.reader.read(&users, None, now).await.unwrap();
    assert_eq!(final_views, control.reader.read(&users, None, now).await.unwrap());
}

#[tokio::test]
async fn a_redis_that_stops_answering_loses_nothing_and_is_repaired_to_the_same_state() {
    redis_outage_then_repair(true).await;
}

#[tokio::test]
async fn a_redis_that_refuses_connections_loses_nothing_and_is_repaired() {
    redis_outage_then_repair(false).await;
}

#[tokio::test]
async fn stored_state_survives_the_loss_of_every_redis_key() {
    let stack = Stack::new().await;
    let agg = stack.aggregator();
    let now = wall_clock_ms();
    agg.handle(
        &kafka_batch(&[presence("session_connected", 31, "a", now - 100), presence("activity", 31, "a", now - 40)]),
        now,
    )
    .await
    .unwrap();
    let before = stack.reader.read(&[user(31)], None, now).await.unwrap();
    stack.env.flush_redis().await;
    let after = stack.reader.read(&[user(31)], None, now).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after[0].status, Status::Online);
    assert!(stack.env.cache.load(&[user(31)]).await.unwrap()[0].record.is_some(), "the read backfilled redis");
    let durable = stack.durable(user(31)).await.expect("the batch is durable in SQL");
    assert_eq!(durable.state.presence.last_active_ms, Some(now - 40), "the newest activity is the durable one");
}
