//! No transition lost (DESIGN §6): the transactional outbox against a bus
//! that is missing and then back, and the due index rebuilt from SQL after
//! the cache lost it. Real Redis, MariaDB and moto.

use std::collections::BTreeMap;
use std::time::Duration;

use status_shared::adapters::eventbridge::EventBridgePublisher;
use status_shared::app::Publisher;
use status_shared::domain::{EventKind, Millis, PresenceEvent, SessionId, Status};
use status_shared::ports::{DueIndex, ScheduleSource};
use status_tests::stack::{user, wall_clock_ms, PrivateRedis, Stack, StackOptions};

fn event(kind: EventKind, id: u64, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent { kind, user_id: user(id), session_id: SessionId::new("s").unwrap(), device: None, ts_ms }
}

async fn outbox_rows(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM status_outbox").fetch_one(&stack.env.pool).await.unwrap()
}

#[tokio::test]
async fn transitions_made_while_the_bus_is_missing_arrive_once_each_in_user_order_after_it_returns() {
    let mut stack = Stack::with(StackOptions { events: true, ..Default::default() }).await;
    let sink = stack.sink.take().expect("a bus and queue");
    // The bus the functions are configured with does not exist (deleted,
    // or a brownout): every PutEvents fails as a whole.
    let missing = format!("{}-missing", sink.bus);
    stack.committer.publisher = Publisher::Bus(EventBridgePublisher::new(sink.events.clone(), missing));

    let t0 = wall_clock_ms();
    let users: Vec<u64> = (1..=12).collect();
    let steps = [(EventKind::Connected, 0), (EventKind::Disconnected, 1), (EventKind::Connected, 2)];
    for (kind, step) in steps {
        let batch: Vec<PresenceEvent> = users.iter().map(|u| event(kind, *u, t0 + step)).collect();
        let out = stack.committer.aggregate(&batch, t0 + step).await.expect("the batch is acknowledged");
        assert_eq!(out.transitions.len(), users.len());
        assert!(out.publish_failed, "the bus refused them");
    }
    assert_eq!(outbox_rows(&stack).await, 36, "every transition waits in the outbox");

    // The bus is back: the next scan of each shard drains its outbox.
    stack.committer.publisher = Publisher::Bus(sink.publisher());
    let mut published = 0;
    for shard in 0..stack.env.shards {
        let outcome = stack.committer.scan_shard(shard, t0 + 3).await.unwrap();
        assert!(!outcome.publish_failed);
        published += outcome.published;
    }
    assert_eq!(published, 36);
    assert_eq!(outbox_rows(&stack).await, 0, "accepted events are forgotten");

    let received = sink.drain(36, Duration::from_secs(30)).await;
    let mut by_user: BTreeMap<u64, Vec<(String, String, String)>> = BTreeMap::new();
    for detail in &received {
        by_user.entry(detail["user_id"].as_u64().unwrap()).or_default().push((
            detail["from"].as_str().unwrap().to_owned(),
            detail["to"].as_str().unwrap().to_owned(),
            detail["event_id"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(received.len(), 36, "each event_id once: {received:?}");
    for u in &users {
        let got = &by_user[u];
        let path: Vec<(&str, &str)> = got.iter().map(|(f, t, _)| (f.as_str(), t.as_str())).collect();
        assert_eq!(path, vec![("offline", "online"), ("online", "offline"), ("offline", "online")], "user {u}");
        let ids: Vec<&str> = got.iter().map(|(_, _, id)| id.as_str()).collect();
        assert_eq!(
            ids,
            vec![format!("{u}-1-status_changed"), format!("{u}-2-status_changed"), format!("{u}-3-status_changed")]
        );
    }

    // A drain with nothing waiting sends nothing more.
    for shard in 0..stack.env.shards {
        assert_eq!(stack.committer.scan_shard(shard, t0 + 4).await.unwrap().published, 0);
    }
    assert!(sink.drain(0, Duration::from_secs(2)).await.is_empty(), "no duplicates");
}

#[tokio::test]
async fn without_a_bus_no_outbox_is_kept() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    let out = stack.committer.aggregate(&[event(EventKind::Connected, 5, t0)], t0).await.unwrap();
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(outbox_rows(&stack).await, 0);
}

#[tokio::test]
async fn a_user_due_to_go_idle_after_a_flushall_is_still_stored_and_announced() {
    let redis = PrivateRedis::start().await;
    let stack = Stack::with(StackOptions {
        redis_url: Some(redis.url()),
        redis_timeout: Some(Duration::from_millis(500)),
        events: true,
        ..Default::default()
    })
    .await;
    let sink = stack.sink.as_ref().unwrap();
    let rules = stack.env.rules;
    let now = wall_clock_ms();
    let u = 77u64;
    let shard = user(u).shard(stack.env.shards);
    // Last active 4 min 52 s ago: idle 8 s from now.
    let active = now - rules.idle_after_ms + 8_000;
    stack.committer.aggregate(&[event(EventKind::Connected, u, active)], now).await.unwrap();
    assert_eq!(sink.drain(1, Duration::from_secs(20)).await.len(), 1, "online announced");
    stack.committer.scan_shard(shard, now).await.unwrap();

    let mut raw = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut raw).await.unwrap();

    // Twelve seconds later every shard is scanned, as the schedules would.
    let later = now + 12_000;
    let mut transitions = 0;
    for s in 0..stack.env.shards {
        let outcome = stack.committer.scan_shard(s, later).await.unwrap();
        assert_eq!(outcome.rebuilds, 1, "shard {s}: the lost index is rebuilt once");
        transitions += outcome.transitions;
    }
    assert_eq!(transitions, 1);
    assert_eq!(stack.sql_status(user(u)).await.as_deref(), Some("idle"));
    assert_eq!(stack.redis_status(user(u)).await.as_deref(), Some("idle"));
    let announced = sink.drain(1, Duration::from_secs(20)).await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!((announced[0]["from"].as_str(), announced[0]["to"].as_str()), (Some("online"), Some("idle")));

    // The rebuilt index is complete: the next scan does not rebuild again,
    // and the user is scheduled for their session's expiry.
    let again = stack.committer.scan_shard(shard, later + 1).await.unwrap();
    assert_eq!((again.rebuilds, again.scanned), (0, 0));
    let (due, complete) = stack.env.cache.due(shard, active + rules.session_ttl_ms + 1, 10).await.unwrap();
    assert!(complete);
    assert_eq!(due.iter().map(|(id, _)| id.get()).collect::<Vec<_>>(), vec![u]);
    assert_eq!(stack.durable(user(u)).await.unwrap().state.derive(later, &rules).status, Status::Idle);
}

#[tokio::test]
async fn the_durable_schedule_is_read_by_shard_through_its_index_in_pages() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    let batch: Vec<PresenceEvent> = (1..=100).map(|u| event(EventKind::Connected, u, t0 + u as i64)).collect();
    stack.committer.aggregate(&batch, t0 + 200).await.unwrap();
    // A user who left has no next change and is not in the schedule.
    stack.committer.aggregate(&[event(EventKind::Disconnected, 3, t0 + 300)], t0 + 300).await.unwrap();

    let shards = stack.env.shards;
    let mut seen = Vec::new();
    for shard in 0..shards {
        let mut after = None;
        loop {
            let page = stack.env.store.scheduled(shard, shards, after.as_ref(), 4).await.unwrap();
            assert_eq!(page.unreadable, 0);
            let entries = &page.entries;
            assert!(entries.iter().all(|(u, _)| u.shard(shards) == shard));
            assert!(entries.windows(2).all(|w| (w[0].1, w[0].0) < (w[1].1, w[1].0)), "ordered by (due, user)");
            seen.extend(entries.iter().map(|(u, due)| (u.get(), *due)));
            if page.rows < 4 {
                break;
            }
            after = page.next;
        }
    }
    seen.sort();
    let expected: Vec<(u64, Millis)> =
        (1..=100u64).filter(|u| *u != 3).map(|u| (u, t0 + u as i64 + stack.env.rules.idle_after_ms + 1)).collect();
    assert_eq!(seen, expected);

    // The rebuild's query is a walk of idx_next_change, never a scan of
    // the whole table.
    use sqlx::Row;
    let plan = sqlx::query(
        "EXPLAIN SELECT user_id, next_change_at FROM user_status FORCE INDEX (idx_next_change) \
         WHERE next_change_at IS NOT NULL AND MOD(user_id, 16) = 3 \
         AND (NULL IS NULL OR next_change_at > NULL OR (next_change_at = NULL AND user_id > 0)) \
         ORDER BY next_change_at, user_id LIMIT 10",
    )
    .fetch_all(&stack.env.pool)
    .await
    .unwrap();
    assert_eq!(plan.len(), 1);
    let key: Option<Vec<u8>> = plan[0].try_get("key").unwrap();
    assert_eq!(key.as_deref(), Some(&b"idx_next_change"[..]));
    let access: Vec<u8> = plan[0].try_get("type").unwrap();
    assert_ne!(access, b"ALL", "not a full table scan");
}
