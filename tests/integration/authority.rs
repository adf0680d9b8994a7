//! Whose word counts (DESIGN §4 property 4, §5, §6): a hide in Redis's
//! `status:visible:{id}` or in SQL is never undone by anything but the
//! visibility route; a user's sessions stay bounded by `MAX_SESSIONS`; and
//! concurrent writers on one user all succeed. Real Redis and MariaDB.

use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, Status};
use status_tests::msk::kafka_batch;
use status_tests::stack::{presence, user, wall_clock_ms, Stack};

fn event(kind: EventKind, id: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent { kind, user_id: user(id), session_id: SessionId::new(session).unwrap(), device: None, ts_ms }
}

async fn set_flag(stack: &Stack, id: u64, value: &str) {
    let mut raw = stack.env.raw_redis().await;
    redis::cmd("SET").arg(stack.env.keys.visible(user(id))).arg(value).query_async::<()>(&mut raw).await.unwrap();
}

async fn flag(stack: &Stack, id: u64) -> Option<String> {
    let mut raw = stack.env.raw_redis().await;
    redis::cmd("GET").arg(stack.env.keys.visible(user(id))).query_async(&mut raw).await.unwrap()
}

/// Loses every Redis key of `id`, as a failover or eviction would.
async fn lose_cache_of(stack: &Stack, id: u64) {
    let mut raw = stack.env.raw_redis().await;
    redis::cmd("DEL")
        .arg(stack.env.keys.status(user(id)))
        .arg(stack.env.keys.visible(user(id)))
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
}

async fn public_status(stack: &Stack, id: u64, now: Millis) -> Status {
    stack.reader.read(&[user(id)], None, now).await.unwrap()[0].status
}

#[tokio::test]
async fn a_hide_written_to_the_redis_flag_survives_events_and_a_cache_loss() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    stack.committer.aggregate(&[event(EventKind::Connected, 42, "a", t0)], t0).await.unwrap();
    set_flag(&stack, 42, "false").await;
    assert_eq!(public_status(&stack, 42, t0 + 1).await, Status::Offline);

    stack.committer.aggregate(&[event(EventKind::Activity, 42, "a", t0 + 2)], t0 + 2).await.unwrap();
    assert_eq!(flag(&stack, 42).await.as_deref(), Some("false"), "an event write keeps the hide");
    assert_eq!(public_status(&stack, 42, t0 + 3).await, Status::Offline);
    let durable = stack.durable(user(42)).await.unwrap();
    assert!(!durable.state.visibility.is_visible(), "the hide was adopted into SQL");

    lose_cache_of(&stack, 42).await;
    assert_eq!(public_status(&stack, 42, t0 + 4).await, Status::Offline, "from SQL after the cache loss");
    let me = stack.reader.read(&[user(42)], Some(user(42)), t0 + 4).await.unwrap().remove(0);
    assert_eq!(me.status, Status::Online, "the user still sees their own truth");

    // Only the visibility route shows the user again.
    stack.committer.set_visibility(user(42), true, t0 + 5).await.unwrap();
    assert_eq!(flag(&stack, 42).await.as_deref(), Some("true"));
    assert_eq!(public_status(&stack, 42, t0 + 6).await, Status::Online);
}

#[tokio::test]
async fn a_hide_found_by_a_read_is_adopted_so_a_cache_loss_cannot_undo_it() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    stack.committer.aggregate(&[event(EventKind::Connected, 43, "a", t0)], t0).await.unwrap();
    set_flag(&stack, 43, "false").await;
    let (views, adopt) = stack.reader.read_adopting(&[user(43), user(44)], None, t0 + 1).await.unwrap();
    assert_eq!(views[0].status, Status::Offline);
    assert_eq!(adopt, vec![user(43)], "only the user whose flag and record disagree");
    stack.committer.adopt_hides(&adopt, t0 + 1).await.unwrap();
    let (_, again) = stack.reader.read_adopting(&[user(43)], None, t0 + 2).await.unwrap();
    assert!(again.is_empty(), "adopted once, nothing left to adopt");

    lose_cache_of(&stack, 43).await;
    let view = stack.reader.read(&[user(43)], None, t0 + 3).await.unwrap().remove(0);
    assert_eq!((view.status, view.last_active_ms), (Status::Offline, Some(t0)));
}

#[tokio::test]
async fn a_hide_set_in_sql_by_hand_is_not_undone_by_an_event_write() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    stack.committer.aggregate(&[event(EventKind::Connected, 45, "a", t0)], t0).await.unwrap();
    // Another writer of the seed's table hides the user without touching
    // the version.
    sqlx::query("UPDATE user_status SET visible = 0 WHERE user_id = 45").execute(&stack.env.pool).await.unwrap();

    stack.committer.aggregate(&[event(EventKind::Activity, 45, "a", t0 + 10)], t0 + 10).await.unwrap();
    let durable = stack.durable(user(45)).await.unwrap();
    assert!(!durable.state.visibility.is_visible(), "the event write merged into the hidden row");
    assert_eq!(public_status(&stack, 45, t0 + 11).await, Status::Offline, "and Redis now says so too");
    assert_eq!(flag(&stack, 45).await.as_deref(), Some("false"));

    stack.committer.set_visibility(user(45), true, t0 + 12).await.unwrap();
    assert!(stack.durable(user(45)).await.unwrap().state.visibility.is_visible());
    assert_eq!(public_status(&stack, 45, t0 + 13).await, Status::Online);
}

#[tokio::test]
async fn ten_thousand_sessions_of_one_user_keep_only_max_sessions() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    let events: Vec<PresenceEvent> =
        (0..10_000).map(|i| event(EventKind::Connected, 46, &format!("sess-{i:05}"), t0 - 10_000 + i)).collect();
    stack.committer.aggregate(&events, t0).await.unwrap();
    let max = stack.env.rules.max_sessions;
    let cached = stack.cached(user(46)).await.unwrap();
    let durable = stack.durable(user(46)).await.unwrap();
    assert_eq!(cached.state.presence.sessions.len(), max);
    assert_eq!(durable.state, cached.state);
    let oldest_kept = cached.state.presence.sessions.keys().min().unwrap().as_str().to_owned();
    assert_eq!(oldest_kept, format!("sess-{:05}", 10_000 - max), "the newest are kept");
    let mut raw = stack.env.raw_redis().await;
    let field: String =
        redis::cmd("HGET").arg(stack.env.keys.status(user(46))).arg("sessions").query_async(&mut raw).await.unwrap();
    // About 60 bytes a session: id, register and the session's activity
    // (DESIGN §7.1's platforms need it).
    assert!(field.len() < 64 * 64, "the stored field is bounded: {} bytes", field.len());
    // A late duplicate of an evicted session cannot come back.
    stack.committer.aggregate(&[event(EventKind::Connected, 46, "sess-00001", t0 - 9_999)], t0 + 1).await.unwrap();
    assert_eq!(stack.cached(user(46)).await.unwrap().state, durable.state);
}

#[tokio::test]
async fn twelve_concurrent_writers_on_one_user_all_succeed() {
    let stack = Stack::new().await;
    let aggregator = stack.aggregator();
    let t0 = wall_clock_ms();
    let u = 47u64;
    let shard = user(u).shard(stack.env.shards);
    let batches: Vec<_> =
        (0..10).map(|i| kafka_batch(&[presence("session_connected", u, &format!("device-{i}"), t0 + i)])).collect();
    let writers = batches.iter().map(|batch| aggregator.handle(batch, t0 + 20));
    let scan = stack.committer.scan_shard(shard, t0 + 20);
    let show = stack.committer.set_visibility(user(u), true, t0 + 20);
    let (batches_done, scanned, shown) = tokio::join!(futures::future::join_all(writers), scan, show);
    for (i, result) in batches_done.into_iter().enumerate() {
        assert!(result.is_ok(), "batch {i}: {:?}", result.err());
    }
    scanned.expect("the scan succeeds");
    shown.expect("the visibility write succeeds");
    let stored = stack.durable(user(u)).await.unwrap();
    assert_eq!(stored.state.presence.sessions.len(), 10, "every writer's session is in");
    assert_eq!(stack.cached(user(u)).await.unwrap(), stored);
}

/// Replaces a key of `id` by a value of the wrong type, as a hand edit or a
/// stray writer might.
async fn damage(stack: &Stack, key: String, command: &[&str]) {
    let mut raw = stack.env.raw_redis().await;
    redis::cmd("DEL").arg(&key).query_async::<()>(&mut raw).await.unwrap();
    let mut cmd = redis::cmd(command[0]);
    cmd.arg(&key);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<()>(&mut raw).await.unwrap();
}

#[tokio::test]
async fn a_key_of_the_wrong_type_fails_only_its_own_user_and_the_next_write_repairs_it() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    let connected: Vec<PresenceEvent> =
        [60, 61, 62].iter().map(|id| event(EventKind::Connected, *id, "a", t0)).collect();
    stack.committer.aggregate(&connected, t0).await.unwrap();
    // 60 is hidden by the flag alone; 61's hash is a string; 62's flag is
    // a hash.
    set_flag(&stack, 60, "false").await;
    damage(&stack, stack.env.keys.status(user(61)), &["SET", "junk"]).await;
    damage(&stack, stack.env.keys.visible(user(62)), &["HSET", "f", "v"]).await;

    let read = stack.reader.read(&[user(60), user(61), user(62)], None, t0 + 1).await.unwrap();
    assert_eq!(read[0].status, Status::Offline, "the flag's hide holds beside a damaged key");
    assert_eq!(read[1].status, Status::Online, "the user with the damaged hash reads from SQL");
    assert_eq!(read[2].status, Status::Offline, "a damaged flag hides, as anything but true does");

    // A batch with the damaged users in it reaches Redis for everyone.
    let active: Vec<PresenceEvent> =
        [60, 61, 62, 63].iter().map(|id| event(EventKind::Activity, *id, "a", t0 + 2)).collect();
    let outcome = stack.committer.aggregate(&active, t0 + 2).await.unwrap();
    assert!(outcome.cache_ok, "one damaged key does not fail the batch's cache write");
    let cached = stack.cached(user(61)).await.expect("the string was replaced by the user's hash");
    assert_eq!(cached.state.presence.last_active_ms, Some(t0 + 2));
    assert_eq!(stack.cached(user(63)).await.unwrap().state.presence.last_active_ms, Some(t0 + 2));
    assert_eq!(flag(&stack, 60).await.as_deref(), Some("false"));
    assert_eq!(public_status(&stack, 62, t0 + 3).await, Status::Offline, "still hidden after the write");
}

#[tokio::test]
async fn a_hash_holding_bytes_that_are_not_text_fails_only_its_own_user() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    let connected: Vec<PresenceEvent> =
        [70, 71, 72].iter().map(|id| event(EventKind::Connected, *id, "a", t0)).collect();
    stack.committer.aggregate(&connected, t0).await.unwrap();
    set_flag(&stack, 71, "false").await;
    let mut raw = stack.env.raw_redis().await;
    for field in ["sum", "sessions"] {
        redis::cmd("HSET")
            .arg(stack.env.keys.status(user(72)))
            .arg(field)
            .arg(&[0xffu8, 0xfe][..])
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
    }

    let read = stack.reader.read(&[user(70), user(71), user(72)], None, t0 + 1).await.unwrap();
    assert_eq!(read[0].status, Status::Online);
    assert_eq!(read[1].status, Status::Offline, "the flag's hide holds beside the damaged hash");
    assert_eq!(read[2].status, Status::Online, "the damaged user reads from SQL");

    let gone: Vec<PresenceEvent> = [70, 72].iter().map(|id| event(EventKind::Disconnected, *id, "a", t0 + 2)).collect();
    let outcome = stack.committer.aggregate(&gone, t0 + 2).await.unwrap();
    assert!(outcome.cache_ok, "the batch reaches Redis for both users");
    assert_eq!(public_status(&stack, 70, t0 + 3).await, Status::Offline);
    assert_eq!(public_status(&stack, 72, t0 + 3).await, Status::Offline);
    assert!(stack.cached(user(72)).await.is_some(), "the damaged hash was replaced");
}
