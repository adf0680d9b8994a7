//! Every store operation against a real three-primary Redis Cluster.

use status_shared::adapters::redis::RedisPollLimiter;
use status_shared::domain::{Status, UserId, UserRecord};
use status_shared::ports::{PollLimiter, StoreWrite, Write};
use status_tests::cluster::LocalCluster;
use status_tests::stack::{connect, user, wall_clock_ms, Stack, StackOptions};

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

    let limiter =
        RedisPollLimiter::new(stack.env.redis.clone(), stack.env.keys.clone(), std::time::Duration::from_secs(30));
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
