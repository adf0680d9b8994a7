//! The Redis and MySQL adapters against the real servers.

use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, Status, UserId, UserRecord};
use status_shared::ports::{CacheRead, CacheWrite, StoreRead, StoreWrite, Write};
use status_tests::stack::user;
use status_tests::TestEnv;

const NOW: Millis = 1_764_270_000_123;

fn event(kind: EventKind, id: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent { kind, user_id: user(id), session_id: SessionId::new(session).unwrap(), device: None, ts_ms }
}

/// A record with two sessions, a tombstone, odd milliseconds and a hidden
/// preference: every field the stores must keep.
fn rich_record() -> UserRecord {
    let mut record = UserRecord { version: 3, announced: Some(Status::Online), written_ms: NOW, ..Default::default() };
    record.state.apply(&event(EventKind::Connected, 7, "phone", NOW - 1_001));
    record.state.apply(&event(EventKind::Activity, 7, "laptop", NOW - 7));
    record.state.apply(&event(EventKind::Disconnected, 7, "tablet", NOW - 3));
    record.state.set_visible(false, NOW - 5);
    record.state.apply(&event(EventKind::Activity, 7, "laptop", NOW - 6));
    record
}

#[tokio::test]
async fn a_record_round_trips_through_redis_to_the_millisecond() {
    let env = TestEnv::new().await;
    let record = rich_record();
    let write = Write { user: user(7), record: &record, next_change_ms: Some(NOW + 1), shows: false };
    env.cache.store(&[write], NOW).await.unwrap();
    let loaded = env.cache.load(&[user(7), user(8)]).await.unwrap();
    assert_eq!(loaded[0].record.as_ref(), Some(&record));
    assert_eq!(loaded[0].visible_flag, Some(false));
    assert_eq!(loaded[1].record, None, "a user never written is a miss");
}

#[tokio::test]
async fn a_record_round_trips_through_mysql_to_the_millisecond() {
    let env = TestEnv::new().await;
    let mut record = rich_record();
    record.version = 1;
    let lost = env
        .store
        .save(&[Write { user: user(7), record: &record, next_change_ms: None, shows: false }], &[], NOW)
        .await
        .unwrap();
    assert!(lost.is_empty());
    let loaded = env.store.load(&[user(7), user(8)]).await.unwrap();
    assert_eq!(loaded.get(&user(7)), Some(&record));
    assert!(!loaded.contains_key(&user(8)));
}

#[tokio::test]
async fn the_seed_columns_hold_the_status_derived_at_the_write() {
    let env = TestEnv::new().await;
    let mut record = UserRecord { version: 1, ..Default::default() };
    record.state.apply(&event(EventKind::Connected, 9, "a", NOW));
    env.store
        .save(&[Write { user: user(9), record: &record, next_change_ms: None, shows: false }], &[], NOW + 10)
        .await
        .unwrap();
    let row: (String, Option<chrono::NaiveDateTime>, u32, bool) =
        sqlx::query_as("SELECT status, last_active_at, device_count, visible FROM user_status WHERE user_id = 9")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!((row.0.as_str(), row.2, row.3), ("online", 1, true));
    // Millisecond precision survives the DATETIME(3) column.
    assert_eq!(row.1.map(|dt| dt.and_utc().timestamp_millis()), Some(NOW));
}

#[tokio::test]
async fn a_stale_writer_loses_the_compare_and_set_and_wins_after_merging() {
    let env = TestEnv::new().await;
    let u = user(11);
    let mut base = UserRecord { version: 1, ..Default::default() };
    base.state.apply(&event(EventKind::Connected, 11, "a", NOW));
    env.store.save(&[Write { user: u, record: &base, next_change_ms: None, shows: false }], &[], NOW).await.unwrap();

    // Two writers load version 1 and each merge their own event.
    let mut first = env.store.load(&[u]).await.unwrap().remove(&u).unwrap();
    let mut second = first.clone();
    let e1 = event(EventKind::Connected, 11, "b", NOW + 1);
    let e2 = event(EventKind::Disconnected, 11, "a", NOW + 2);
    first.state.apply(&e1);
    first.version += 1;
    first.written_ms = NOW + 3;
    second.state.apply(&e2);
    second.version += 1;

    let lost_first = env
        .store
        .save(&[Write { user: u, record: &first, next_change_ms: None, shows: false }], &[], NOW + 3)
        .await
        .unwrap();
    let lost_second = env
        .store
        .save(&[Write { user: u, record: &second, next_change_ms: None, shows: false }], &[], NOW + 3)
        .await
        .unwrap();
    assert!(lost_first.is_empty());
    assert_eq!(lost_second, vec![u], "the stale writer is refused");
    let stored = env.store.load(&[u]).await.unwrap().remove(&u).unwrap();
    assert_eq!(stored, first, "the refused write changed nothing");

    // The refused writer reloads, merges again and retries.
    let mut retry = stored;
    retry.state.apply(&e2);
    retry.version += 1;
    assert!(env
        .store
        .save(&[Write { user: u, record: &retry, next_change_ms: None, shows: false }], &[], NOW + 4)
        .await
        .unwrap()
        .is_empty());
    let last = env.store.load(&[u]).await.unwrap().remove(&u).unwrap();
    assert_eq!(last.version, 3);
    assert_eq!(last.state.derive(NOW + 4, &env.rules).device_count, 1, "both writers' events are kept");
}

#[tokio::test]
async fn two_writers_creating_the_same_user_do_not_both_win() {
    let env = TestEnv::new().await;
    let u = user(12);
    let mut a = UserRecord { version: 1, ..Default::default() };
    a.state.apply(&event(EventKind::Connected, 12, "a", NOW));
    let mut b = UserRecord { version: 1, ..Default::default() };
    b.state.apply(&event(EventKind::Connected, 12, "b", NOW));
    let lost_a =
        env.store.save(&[Write { user: u, record: &a, next_change_ms: None, shows: false }], &[], NOW).await.unwrap();
    let lost_b =
        env.store.save(&[Write { user: u, record: &b, next_change_ms: None, shows: false }], &[], NOW).await.unwrap();
    assert!(lost_a.is_empty());
    assert_eq!(lost_b, vec![u]);
}

#[tokio::test]
async fn a_write_that_innodb_rolls_back_to_break_a_deadlock_is_run_again() {
    use sqlx::Connection;
    let env = TestEnv::new().await;
    // Users 10 and 20, and 40 more that the rival changes so that it weighs
    // more than the writer: InnoDB then rolls the writer back.
    let ids: Vec<u64> = [10, 20].into_iter().chain(100..140).collect();
    let first: Vec<UserRecord> = ids.iter().map(|_| UserRecord { version: 1, ..Default::default() }).collect();
    let writes: Vec<Write<'_>> = ids
        .iter()
        .zip(&first)
        .map(|(id, record)| Write { user: user(*id), record, next_change_ms: None, shows: false })
        .collect();
    assert!(env.store.save(&writes, &[], NOW).await.unwrap().is_empty());

    let mut rival = sqlx::MySqlConnection::connect(&env.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut rival).await.unwrap();
    sqlx::query("UPDATE user_status SET device_count = device_count + 1 WHERE user_id >= 100")
        .execute(&mut rival)
        .await
        .unwrap();
    sqlx::query("SELECT version FROM user_status WHERE user_id = 20 FOR UPDATE").execute(&mut rival).await.unwrap();

    // The writer's one statement takes user 10, then waits for user 20;
    // the rival then asks for user 10: a deadlock.
    let second: Vec<UserRecord> = [10u64, 20].iter().map(|_| UserRecord { version: 2, ..Default::default() }).collect();
    let writes: Vec<Write<'_>> = [10u64, 20]
        .iter()
        .zip(&second)
        .map(|(id, record)| Write { user: user(*id), record, next_change_ms: None, shows: false })
        .collect();
    let rival_side = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let taken =
            sqlx::query("SELECT version FROM user_status WHERE user_id = 10 FOR UPDATE").execute(&mut rival).await;
        sqlx::query("COMMIT").execute(&mut rival).await.unwrap();
        taken
    };
    assert_eq!(env.store.lock_retries(), 0);
    let (saved, taken) = tokio::join!(env.store.save(&writes, &[], NOW), rival_side);
    taken.expect("the rival, heavier, is not the one rolled back");
    assert_eq!(env.store.lock_retries(), 1, "the deadlock happened, and the writer ran again");
    assert_eq!(saved.expect("the writer's transaction ran again after the deadlock"), Vec::<UserId>::new());
    let stored = env.store.load(&[user(10), user(20)]).await.unwrap();
    assert_eq!(stored[&user(10)].version, 2);
    assert_eq!(stored[&user(20)].version, 2);
}

#[tokio::test]
async fn redis_never_goes_back_to_an_older_version() {
    let env = TestEnv::new().await;
    let u = user(13);
    let mut newer = UserRecord { version: 5, written_ms: NOW, ..Default::default() };
    newer.state.apply(&event(EventKind::Connected, 13, "a", NOW));
    let older = UserRecord { version: 4, ..Default::default() };
    env.cache.store(&[Write { user: u, record: &newer, next_change_ms: None, shows: false }], NOW).await.unwrap();
    env.cache.store(&[Write { user: u, record: &older, next_change_ms: None, shows: false }], NOW).await.unwrap();
    env.cache.backfill(&[Write { user: u, record: &older, next_change_ms: None, shows: false }], NOW).await.unwrap();
    let loaded = env.cache.load(&[u]).await.unwrap();
    assert_eq!(loaded[0].record.as_ref(), Some(&newer));
}

#[tokio::test]
async fn a_backfilled_user_expires_while_a_stored_one_stays() {
    let env = TestEnv::new().await;
    let record = UserRecord { version: 1, ..Default::default() };
    env.cache
        .backfill(&[Write { user: user(14), record: &record, next_change_ms: None, shows: false }], NOW)
        .await
        .unwrap();
    env.cache
        .store(&[Write { user: user(15), record: &record, next_change_ms: None, shows: false }], NOW)
        .await
        .unwrap();
    let mut raw = env.raw_redis().await;
    let ttl_backfilled: i64 = redis::cmd("TTL").arg(env.keys.status(user(14))).query_async(&mut raw).await.unwrap();
    let ttl_stored: i64 = redis::cmd("TTL").arg(env.keys.status(user(15))).query_async(&mut raw).await.unwrap();
    assert!((55..=60).contains(&ttl_backfilled), "backfill TTL was {ttl_backfilled}");
    assert_eq!(ttl_stored, -1);
}

#[tokio::test]
async fn reading_a_thousand_users_is_one_round_trip() {
    let env = TestEnv::new().await;
    let records: Vec<(UserId, UserRecord)> = (1..=1000u64)
        .map(|id| {
            let mut r = UserRecord { version: 1, written_ms: NOW, ..Default::default() };
            r.state.apply(&event(EventKind::Connected, id, "s", NOW));
            (user(id), r)
        })
        .collect();
    let writes: Vec<Write<'_>> =
        records.iter().map(|(u, r)| Write { user: *u, record: r, next_change_ms: None, shows: false }).collect();
    env.cache.store(&writes, NOW).await.unwrap();
    let ids: Vec<UserId> = records.iter().map(|(u, _)| *u).collect();
    let before = env.redis.round_trips();
    let loaded = env.cache.load(&ids).await.unwrap();
    assert_eq!(env.redis.round_trips() - before, 1);
    assert_eq!(loaded.len(), 1000);
    assert!(loaded.iter().zip(&records).all(|(c, (_, r))| c.record.as_ref() == Some(r)));
}

#[tokio::test]
async fn keys_follow_the_contract_with_the_user_id_as_hash_tag() {
    let env = TestEnv::new().await;
    let mut record = UserRecord { version: 1, ..Default::default() };
    record.state.apply(&event(EventKind::Connected, 42, "a", NOW));
    env.cache
        .store(&[Write { user: user(42), record: &record, next_change_ms: Some(NOW + 9), shows: false }], NOW)
        .await
        .unwrap();
    let mut raw = env.raw_redis().await;
    let p = env.keys.prefix();
    let fields: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(format!("{p}status:{{42}}")).query_async(&mut raw).await.unwrap();
    assert_eq!(fields["status"], "online");
    assert_eq!(fields["last_active_ms"], NOW.to_string());
    assert_eq!(fields["device_count"], "1");
    let visible: String =
        redis::cmd("GET").arg(format!("{p}status:visible:{{42}}")).query_async(&mut raw).await.unwrap();
    assert_eq!(visible, "true");
    let score: f64 =
        redis::cmd("ZSCORE").arg(format!("{p}status:bulk:{{10}}")).arg(42).query_async(&mut raw).await.unwrap();
    assert_eq!(score as i64, NOW);
}

#[tokio::test]
async fn migrations_create_the_seed_table_on_an_empty_database() {
    let env = TestEnv::new().await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() \
         AND table_name = 'user_status' ORDER BY ordinal_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for seed in ["user_id", "status", "last_active_at", "device_count", "visible", "updated_at"] {
        assert!(columns.iter().any(|c| c == seed), "column {seed} missing from {columns:?}");
    }
    let index: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() \
         AND table_name = 'user_status' AND index_name = 'idx_last_active'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(index, 1);
}

#[tokio::test]
async fn the_due_script_applies_the_domain_rule() {
    use status_shared::domain::schedule::replaces;
    let env = TestEnv::new().await;
    let mut raw = env.raw_redis().await;
    let mut record = UserRecord { version: 1, ..Default::default() };
    record.state.apply(&event(EventKind::Connected, 16, "a", NOW));
    // Each case: the score already in the index (if any), then a writer's
    // due time at NOW. Users 16, 32, ... live in shard 0 of 16.
    let cases: [(Option<Millis>, Millis); 6] = [
        (None, NOW + 5),
        (Some(NOW + 10), NOW + 5),
        (Some(NOW + 10), NOW + 20),
        (Some(NOW + 10), NOW + 10),
        (Some(NOW - 1), NOW + 20),
        (Some(NOW), NOW + 20),
    ];
    let key = format!("{}status:due:{{0}}", env.keys.prefix());
    for (i, (current, proposed)) in cases.into_iter().enumerate() {
        let u = user(16 * (i as u64 + 1));
        if let Some(current) = current {
            let _: () = redis::cmd("ZADD").arg(&key).arg(current).arg(u.get()).query_async(&mut raw).await.unwrap();
        }
        env.cache
            .store(&[Write { user: u, record: &record, next_change_ms: Some(proposed), shows: false }], NOW)
            .await
            .unwrap();
        let score: f64 = redis::cmd("ZSCORE").arg(&key).arg(u.get()).query_async(&mut raw).await.unwrap();
        let expected = if replaces(current, proposed, NOW) { Some(proposed) } else { current };
        assert_eq!(Some(score as Millis), expected, "case {i}: {current:?} then {proposed}");
    }
}

#[tokio::test]
async fn a_poll_limit_key_without_expiry_holds_a_caller_back_for_one_window_at_most() {
    use status_shared::adapters::redis::RedisPollLimiter;
    use status_shared::ports::PollLimiter;
    let env = TestEnv::new().await;
    let limiter = RedisPollLimiter::new(env.redis.clone(), env.keys.clone(), std::time::Duration::from_secs(30));
    let mut raw = env.raw_redis().await;
    let key = env.keys.poll(user(8));
    redis::cmd("HSET").arg(&key).arg("f").arg("v").query_async::<()>(&mut raw).await.unwrap();
    assert_eq!(limiter.acquire(user(8)).await.unwrap(), None, "a key no limiter wrote does not hold the caller");
    assert!(matches!(limiter.acquire(user(8)).await.unwrap(), Some(1..=30)), "the window holds again");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await.unwrap();
    assert!((1..=30_000).contains(&ttl), "the key expires now (PTTL {ttl})");
}

#[tokio::test]
async fn a_list_is_written_back_only_while_the_record_names_it_and_never_after_an_erasure() {
    use status_shared::domain::{AudienceDefault, AudienceRule, LastSeenRule, ListTag};
    use status_shared::ports::{Erasure, StoreAudience, StoreErase};
    let env = TestEnv::new().await;
    let rule =
        AudienceRule { default: AudienceDefault::Nobody, last_seen: LastSeenRule::Coarse, list: Some(ListTag(41)) };
    let friends = [user(8), user(9)];
    let mut record = rich_record();
    record.version = 1;
    record.state.audience = rule;

    // No record yet: nothing is written.
    assert!(!env.store.restore_list(user(7), rule, &friends, NOW).await.unwrap());
    assert_eq!(listed(&env.store).await, None);

    // The record names the rule, its list is gone: written back.
    let write = Write { user: user(7), record: &record, next_change_ms: None, shows: false };
    assert!(env.store.save(&[write], &[], NOW).await.unwrap().is_empty());
    assert!(env.store.restore_list(user(7), rule, &friends, NOW).await.unwrap());
    assert_eq!(listed(&env.store).await, Some(friends.to_vec()));
    // Another rule (another tag) is not the record's.
    let other = AudienceRule { list: Some(ListTag(42)), ..rule };
    assert!(!env.store.restore_list(user(7), other, &friends, NOW).await.unwrap());

    // After the erasure, no list comes back.
    let erasure = Erasure { user: user(7), expected_version: 1, version: 2, at_ms: NOW + 1 };
    assert!(env.store.erase(&erasure, &[]).await.unwrap());
    assert_eq!(listed(&env.store).await, None);
    assert!(!env.store.restore_list(user(7), rule, &friends, NOW + 2).await.unwrap());
    assert_eq!(listed(&env.store).await, None);
}

/// User 7's list under tag 41, as SQL holds it.
async fn listed(store: &status_shared::adapters::mysql::MySqlStore) -> Option<Vec<UserId>> {
    use status_shared::domain::ListTag;
    use status_shared::ports::StoreAudience;
    store.load_lists(&[(user(7), ListTag(41))]).await.unwrap().remove(&(user(7), ListTag(41)))
}
