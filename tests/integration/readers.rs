//! Reader endpoints: a Redis replica and an Aurora-style reader serve the
//! read path when configured; writes always go to the primaries.

use std::time::{Duration, Instant};

use sqlx::Executor;
use status_shared::adapters::mysql::{connect_lazy, MySqlStore};
use status_shared::adapters::redis::{RedisCache, RedisConn};
use status_shared::app::App;
use status_shared::config::Config;
use status_shared::domain::Status;
use status_shared::services::Reader;
use status_tests::stack::{connect, free_port, user, wall_clock_ms, PrivateRedis, Stack, StackOptions};

#[tokio::test]
async fn a_redis_replica_serves_reads_while_writes_go_to_the_primary() {
    let primary = PrivateRedis::start().await;
    let replica = PrivateRedis::start_replica_of(primary.port).await;
    let stack = Stack::with(StackOptions { redis_url: Some(primary.url()), ..Default::default() }).await;
    let now = wall_clock_ms();
    stack.committer.aggregate(&[connect(8, now)], now).await.unwrap();

    let replica_conn = RedisConn::new(&replica.url(), Duration::from_secs(2)).unwrap();
    let cache = RedisCache::new(
        stack.env.redis.clone(),
        replica_conn.clone(),
        stack.env.keys.clone(),
        stack.env.rules,
        stack.env.shards,
        Duration::from_secs(60),
    );
    let reader = Reader { cache, store: stack.env.store.clone(), rules: stack.env.rules };
    // Replication is asynchronous: wait until the replica has the write.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = redis::Client::open(replica.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    loop {
        let exists: bool =
            redis::cmd("EXISTS").arg(stack.env.keys.status(user(8))).query_async(&mut raw).await.unwrap();
        if exists {
            break;
        }
        assert!(Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (writes_before, reads_before) = (stack.env.redis.round_trips(), replica_conn.round_trips());
    let views = reader.read(&[user(8)], None, now).await.unwrap();
    assert_eq!(views[0].status, Status::Online);
    assert_eq!(replica_conn.round_trips() - reads_before, 1, "the read went to the replica");
    assert_eq!(stack.env.redis.round_trips(), writes_before, "and not to the primary");
}

#[tokio::test]
async fn a_read_only_database_reader_serves_cold_reads_while_writes_use_the_writer() {
    let stack = Stack::new().await;
    let now = wall_clock_ms();
    stack.committer.aggregate(&[connect(9, now)], now).await.unwrap();
    stack.env.flush_redis().await;

    // A SELECT-only account stands in for the Aurora reader endpoint: had a
    // write gone through it, the write would fail.
    let account = format!("reader_{}", stack.env.tag);
    stack.env.pool.execute(format!("CREATE USER '{account}'@'%' IDENTIFIED BY 'pw'").as_str()).await.unwrap();
    stack.env.pool.execute(format!("CREATE USER '{account}'@'localhost' IDENTIFIED BY 'pw'").as_str()).await.unwrap();
    for host in ["%", "localhost"] {
        let grant = format!("GRANT SELECT ON `{}`.* TO '{account}'@'{host}'", stack.env.database);
        stack.env.pool.execute(grant.as_str()).await.unwrap();
    }
    let reader_url = format!("mysql://{account}:pw@127.0.0.1:3306/{}", stack.env.database);
    let reader_pool = connect_lazy(&reader_url, 2, Duration::from_secs(5)).unwrap();
    let store = MySqlStore::new(stack.env.pool.clone(), reader_pool, stack.env.rules);
    let reader = Reader { cache: stack.env.cache.clone(), store, rules: stack.env.rules };
    let views = reader.read(&[user(9)], None, now).await.unwrap();
    assert_eq!(views[0].status, Status::Online, "the cold read came through the reader");

    // A reader that cannot be reached fails cold reads, proving they use it,
    // while writes through the same committer still succeed.
    let dead =
        connect_lazy(&format!("mysql://root@127.0.0.1:{}/x", free_port()), 1, Duration::from_millis(300)).unwrap();
    let broken = Reader {
        cache: stack.env.cache.clone(),
        store: MySqlStore::new(stack.env.pool.clone(), dead, stack.env.rules),
        rules: stack.env.rules,
    };
    stack.env.flush_redis().await;
    assert!(broken.read(&[user(9)], None, now).await.is_err());
    stack.committer.aggregate(&[connect(10, now)], now).await.unwrap();
    for host in ["%", "localhost"] {
        let _ = stack.env.pool.execute(format!("DROP USER '{account}'@'{host}'").as_str()).await;
    }
}

/// The configuration the functions would get, pointing at the test's own
/// servers and tables.
fn config_for(stack: &Stack, redis_reader: Option<String>, database_reader: Option<String>) -> Config {
    let pairs = [
        ("REDIS_URL", Some(stack.env.redis_url.clone())),
        ("REDIS_READER_URL", redis_reader),
        ("DATABASE_URL", Some(stack.env.database_url.clone())),
        ("DATABASE_READER_URL", database_reader),
        ("REPAIR_TABLE", Some(stack.aws.repair_table.clone())),
        ("DEAD_LETTER_TABLE", Some(stack.aws.dead_letter_table.clone())),
        ("KEY_PREFIX", Some(stack.env.keys.prefix().to_owned())),
    ];
    Config::from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.clone())).unwrap()
}

#[tokio::test]
async fn the_functions_read_through_readers_when_set_and_through_primaries_when_not() {
    let stack = Stack::new().await;
    let now = wall_clock_ms();
    let sdk = status_tests::aws::sdk_config().await;
    let unset = App::start_with(config_for(&stack, None, None), sdk.clone()).await.unwrap();
    unset.committer().aggregate(&[connect(12, now)], now).await.unwrap();
    assert_eq!(unset.reader().read(&[user(12)], None, now).await.unwrap()[0].status, Status::Online);

    let dead_redis = format!("redis://127.0.0.1:{}", free_port());
    let dead_db = format!("mysql://root@127.0.0.1:{}/x", free_port());
    let set = App::start_with(config_for(&stack, Some(dead_redis), Some(dead_db)), sdk).await.unwrap();
    // Writes still work: they never touch the readers.
    set.committer().aggregate(&[connect(13, now)], now).await.unwrap();
    assert!(stack.cached(user(13)).await.is_some());
    // Reads go to the (unreachable) readers, so they fail.
    assert!(set.reader().read(&[user(13)], None, now).await.is_err());
}
