//! Every store operation against a real three-primary Redis Cluster.

use std::time::Duration;

use status_shared::adapters::mysql::{connect_lazy, MySqlStore};
use status_shared::adapters::redis::RedisPollLimiter;
use status_shared::domain::{Status, UserId, UserRecord};
use status_shared::ports::{PollLimiter, StoreWrite, Write};
use status_shared::services::Reader;
use status_tests::cluster::LocalCluster;
use status_tests::stack::{connect, free_port, user, wall_clock_ms, Stack, StackOptions};

async fn on_cluster(cluster: &LocalCluster) -> Stack {
    Stack::with(StackOptions { redis_url: Some(cluster.url()), ..Default::default() }).await
}

#[tokio::test]
async fn a_bulk_read_of_a_thousand_ids_is_one_round_trip_per_node_and_spans_every_node() {
    let cluster = LocalCluster::start(3).await;
    let stack = on_cluster(&cluster).await;
    let now = wall_clock_ms();
    let ids: Vec<UserId> = (1..=1000u64).map(user).collect();
    let events: Vec<_> = (1..=1000u64).map(|id| connect(id, now)).collect();
    let written = stack.committer.aggregate(&events, now).await.unwrap();
    assert_eq!(written.written.len(), 1000);
    assert!(written.cache_ok, "the cluster took every write");
    assert!(cluster.key_counts().iter().all(|n| *n > 100), "keys spread over every node: {:?}", cluster.key_counts());

    let before = stack.env.redis.round_trips();
    let views = stack.reader.read(&ids, None, now).await.unwrap();
    assert_eq!(stack.env.redis.round_trips() - before, 3, "one pipeline per primary");
    assert!(views.iter().all(|v| v.status == Status::Online));
}

#[tokio::test]
async fn the_write_path_the_scan_and_the_poll_limit_work_on_a_cluster() {
    let cluster = LocalCluster::start(3).await;
    let stack = on_cluster(&cluster).await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let events: Vec<_> = (1..=64u64).map(|id| connect(id, t0)).collect();
    stack.committer.aggregate(&events, t0).await.unwrap();

    let mut written = 0;
    for shard in 0..stack.env.shards {
        written += stack.committer.scan_shard(shard, t0 + rules.idle_after_ms + 1).await.unwrap().written;
    }
    assert_eq!(written, 64, "every user turned idle through its shard's index");
    for id in [1u64, 17, 64] {
        let record = stack.cached(user(id)).await.expect("cached on the cluster");
        assert!(record.written_ms > t0, "user {id} rewritten by the scan");
        assert_eq!(record.state.derive(t0 + rules.idle_after_ms + 1, &rules).status, Status::Idle);
    }

    let limiter = RedisPollLimiter::new(stack.env.redis.clone(), stack.env.keys.clone(), stack.app.config.poll_window);
    assert_eq!(limiter.acquire(user(5)).await.unwrap(), None);
    assert!(matches!(limiter.acquire(user(5)).await.unwrap(), Some(1..=30)));
    assert_eq!(limiter.acquire(user(6)).await.unwrap(), None);
}

#[tokio::test]
async fn a_cold_read_backfills_into_the_cluster() {
    let cluster = LocalCluster::start(3).await;
    let stack = on_cluster(&cluster).await;
    let now = wall_clock_ms();
    let mut record = UserRecord { version: 1, written_ms: now, ..Default::default() };
    record.state.apply(&connect(77, now));
    stack
        .env
        .store
        .save(&[Write { user: user(77), record: &record, next_change_ms: None, shows: false }], &[], now)
        .await
        .unwrap();
    assert!(stack.cached(user(77)).await.is_none());
    let views = stack.reader.read(&[user(77), user(78)], None, now).await.unwrap();
    assert_eq!(views[0].status, Status::Online);
    assert_eq!(stack.cached(user(77)).await.map(|r| r.state), Some(record.state));
    assert_eq!(stack.cached(user(78)).await.map(|r| r.version), Some(0), "unknown users are cached too");
}

#[tokio::test]
async fn reads_and_writes_follow_slots_that_moved_to_another_node() {
    let cluster = LocalCluster::start(3).await;
    let stack = on_cluster(&cluster).await;
    let now = wall_clock_ms();
    let ids: Vec<UserId> = (1..=600u64).map(user).collect();
    stack.committer.aggregate(&(1..=600u64).map(|id| connect(id, now)).collect::<Vec<_>>(), now).await.unwrap();
    // The client learns the slot map on its first call; the map then
    // changes under it.
    assert!(stack.reader.read(&ids, None, now).await.unwrap().iter().all(|v| v.status == Status::Online));
    let before = cluster.key_counts();
    cluster.reshard(0, 1, 2000);
    let after = cluster.key_counts();
    assert!(after[0] < before[0] && after[1] > before[1], "keys moved with their slots: {before:?} -> {after:?}");

    // Redis answers MOVED for the moved slots: the client reads the map
    // again and retries, so every user still reads from Redis. A reader
    // whose database is unreachable proves no read fell back to SQL.
    let dead = connect_lazy(&format!("mysql://root@127.0.0.1:{}/nothing", free_port()), 1, Duration::from_millis(300))
        .expect("a database url");
    let redis_only = Reader {
        cache: stack.env.cache.clone(),
        store: MySqlStore::new(dead.clone(), dead, stack.env.rules),
        rules: stack.env.rules,
    };
    let redis_before = stack.env.redis.round_trips();
    let views = redis_only.read(&ids, None, now).await.expect("every user read from Redis");
    assert!(views.iter().all(|v| v.status == Status::Online));
    assert!(stack.env.redis.round_trips() - redis_before > 3, "a retry after the map changed");
    // Writes land on the new owners too.
    let later = now + 1;
    let events: Vec<_> = (1..=600u64).map(|id| connect(id, later)).collect();
    let outcome = stack.committer.aggregate(&events, later).await.unwrap();
    assert!(outcome.cache_ok, "the cluster took every write after the move");
    for id in [1u64, 300, 600] {
        let cached = stack.cached(user(id)).await.expect("cached on its new node");
        assert_eq!(cached.state.presence.last_active_ms, Some(later));
    }
}

#[tokio::test]
async fn with_a_dead_node_reads_answer_from_sql_and_writes_are_kept_for_repair() {
    let mut cluster = LocalCluster::start(3).await;
    let stack = Stack::with(StackOptions {
        redis_url: Some(cluster.url()),
        redis_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .await;
    let now = wall_clock_ms();
    let ids: Vec<UserId> = (1..=200u64).map(user).collect();
    stack.committer.aggregate(&(1..=200u64).map(|id| connect(id, now)).collect::<Vec<_>>(), now).await.unwrap();
    cluster.kill(2);

    // Part of every bulk read lives on the dead node: the read answers
    // from SQL instead, and answers the same.
    let views = stack.reader.read(&ids, None, now).await.expect("SQL answers when a node is gone");
    assert!(views.iter().all(|v| v.status == Status::Online));
    // A write is durable in SQL and its users wait in the repair buffer.
    let later = now + 1;
    let outcome = stack.committer.aggregate(&[connect(7, later), connect(8, later)], later).await.unwrap();
    assert!(!outcome.cache_ok, "the cluster could not take the batch");
    assert_eq!(stack.durable(user(7)).await.and_then(|r| r.state.presence.last_active_ms), Some(later));
    let buffered = stack.aws.scan(&stack.aws.repair_table).await.len();
    assert_eq!(buffered, 2, "both users wait for a repair");
}

#[tokio::test]
async fn audiences_are_read_in_one_more_round_trip_per_node_on_a_cluster() {
    use status_shared::domain::{Audience, AudienceDefault, LastSeenRule};
    let cluster = LocalCluster::start(3).await;
    let stack = on_cluster(&cluster).await;
    let now = wall_clock_ms();
    let ids: Vec<UserId> = (1..=90u64).map(user).collect();
    let events: Vec<_> = (1..=90u64).map(|id| connect(id, now)).collect();
    stack.committer.aggregate(&events, now).await.unwrap();
    let (listed, other) = (user(5_000), user(5_001));
    for id in &ids {
        let default = if id.get() % 2 == 0 { AudienceDefault::Everyone } else { AudienceDefault::Nobody };
        let audience = Audience::new(default, [listed], LastSeenRule::Withheld).unwrap();
        stack.committer.set_audience(*id, &audience, now).await.unwrap();
    }

    let before = stack.env.redis.round_trips();
    let seen = stack.reader.read(&ids, Some(listed), now).await.unwrap();
    assert_eq!(
        stack.env.redis.round_trips() - before,
        6,
        "the read models, then the lists: a pipeline per primary each"
    );
    for (id, view) in ids.iter().zip(&seen) {
        let want = if id.get() % 2 == 0 { Status::Offline } else { Status::Online };
        assert_eq!(view.status, want, "user {id} to the listed viewer");
    }
    let seen = stack.reader.read(&ids, Some(other), now).await.unwrap();
    for (id, view) in ids.iter().zip(&seen) {
        let want = if id.get() % 2 == 0 { Status::Online } else { Status::Offline };
        assert_eq!(view.status, want, "user {id} to a viewer not listed");
    }
    // A service needs no list: one round trip per primary, as without audiences.
    let before = stack.env.redis.round_trips();
    let seen = stack.reader.read(&ids, None, now).await.unwrap();
    assert_eq!(stack.env.redis.round_trips() - before, 3);
    assert_eq!(seen.iter().filter(|v| v.status == Status::Online).count(), 45, "the everyone half");
}
