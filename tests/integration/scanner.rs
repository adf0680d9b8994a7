//! The idle scanner against real Redis, MariaDB and the AWS emulator, with
//! `status_changed` events read back from a queue behind the bus.

use std::collections::HashMap;
use std::time::Duration;

use idle_scanner::handler::shards_of;
use serde_json::{json, Value};
use status_shared::domain::{EventKind, Millis, PresenceEvent, Rules, SessionId};
use status_tests::stack::user;
use status_tests::stack::{wall_clock_ms, PrivateRedis, Stack, StackOptions};

fn ev(kind: EventKind, id: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent { kind, user_id: user(id), session_id: SessionId::new(session).unwrap(), device: None, ts_ms }
}

async fn with_events(rules: Rules) -> Stack {
    Stack::with(StackOptions { rules, events: true, ..Default::default() }).await
}

/// `(user, from, to)` of each published event, sorted.
fn transitions(details: &[Value]) -> Vec<(u64, String, String)> {
    let mut out: Vec<_> = details
        .iter()
        .map(|d| {
            (
                d["user_id"].as_u64().unwrap(),
                d["from"].as_str().unwrap().to_owned(),
                d["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn t(user: u64, from: &str, to: &str) -> (u64, String, String) {
    (user, from.to_owned(), to.to_owned())
}

#[tokio::test]
async fn an_inactive_user_turns_idle_in_storage_when_idle_after_passes() {
    let stack = with_events(Rules::default()).await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let u = 17u64;
    let shard = user(u).shard(stack.env.shards);
    stack.committer.aggregate(&[ev(EventKind::Connected, u, "a", t0)], t0).await.unwrap();

    let early = stack.committer.scan_shard(shard, t0 + rules.idle_after_ms).await.unwrap();
    assert_eq!((early.scanned, early.written), (0, 0), "nothing is due at exactly IDLE_AFTER");
    assert_eq!(stack.redis_status(user(u)).await.as_deref(), Some("online"));

    let due = stack.committer.scan_shard(shard, t0 + rules.idle_after_ms + 1).await.unwrap();
    assert_eq!((due.scanned, due.written, due.transitions), (1, 1, 1));
    assert_eq!(stack.redis_status(user(u)).await.as_deref(), Some("idle"));
    assert_eq!(stack.sql_status(user(u)).await.as_deref(), Some("idle"));

    let details = stack.sink.as_ref().unwrap().drain(2, Duration::from_secs(10)).await;
    assert_eq!(transitions(&details), vec![t(u, "offline", "online"), t(u, "online", "idle")]);
    let idle = details.iter().find(|d| d["to"] == "idle").unwrap();
    assert_eq!(idle["at_ms"].as_i64(), Some(t0 + rules.idle_after_ms + 1));
}

#[tokio::test]
async fn a_ghost_session_expires_and_the_user_leaves_the_scan() {
    let stack = with_events(Rules::default()).await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let u = 33u64;
    let shard = user(u).shard(stack.env.shards);
    stack.committer.aggregate(&[ev(EventKind::Connected, u, "crashed-node", t0)], t0).await.unwrap();
    stack.committer.scan_shard(shard, t0 + rules.idle_after_ms + 1).await.unwrap();
    let gone = stack.committer.scan_shard(shard, t0 + rules.session_ttl_ms + 1).await.unwrap();
    assert_eq!(gone.transitions, 1);
    assert_eq!(stack.sql_status(user(u)).await.as_deref(), Some("offline"));
    assert_eq!(stack.redis_status(user(u)).await.as_deref(), Some("offline"));

    let mut raw = stack.env.raw_redis().await;
    let score: Option<f64> =
        redis::cmd("ZSCORE").arg(stack.env.keys.due(shard)).arg(u).query_async(&mut raw).await.unwrap();
    assert_eq!(score, None, "an offline user needs no further scan");
    let later = stack.committer.scan_shard(shard, t0 + 10 * rules.session_ttl_ms).await.unwrap();
    assert_eq!(later.scanned, 0);

    let details = stack.sink.as_ref().unwrap().drain(3, Duration::from_secs(10)).await;
    assert_eq!(transitions(&details), vec![t(u, "idle", "offline"), t(u, "offline", "online"), t(u, "online", "idle")]);
}

#[tokio::test]
async fn a_reconnect_inside_the_grace_emits_nothing_and_a_real_leave_emits_offline_after_it() {
    let rules = Rules { offline_grace_ms: 10_000, ..Rules::default() };
    let stack = with_events(rules).await;
    let t0 = wall_clock_ms();
    let (quick, gone) = (41u64, 42u64);
    let events = [ev(EventKind::Connected, quick, "a", t0), ev(EventKind::Connected, gone, "b", t0)];
    stack.committer.aggregate(&events, t0).await.unwrap();
    // Both disconnect; only `quick` comes back, within the grace.
    let leave = [ev(EventKind::Disconnected, quick, "a", t0 + 1000), ev(EventKind::Disconnected, gone, "b", t0 + 1000)];
    let left = stack.committer.aggregate(&leave, t0 + 1000).await.unwrap();
    assert!(left.transitions.is_empty(), "inside the grace nobody is offline yet");
    stack.committer.aggregate(&[ev(EventKind::Connected, quick, "c", t0 + 4000)], t0 + 4000).await.unwrap();

    for id in [quick, gone] {
        stack.committer.scan_shard(user(id).shard(stack.env.shards), t0 + 11_000).await.unwrap();
    }
    assert_eq!(stack.sql_status(user(gone)).await.as_deref(), Some("offline"));
    assert_eq!(stack.sql_status(user(quick)).await.as_deref(), Some("online"));
    let details = stack.sink.as_ref().unwrap().drain(3, Duration::from_secs(10)).await;
    assert_eq!(
        transitions(&details),
        vec![t(quick, "offline", "online"), t(gone, "offline", "online"), t(gone, "online", "offline")]
    );
}

/// Outbox events of `shard` still waiting for the bus.
async fn waiting_in(stack: &Stack, shard: u32) -> u64 {
    let depth = stack.env.store.outbox_depth_by_shard(stack.env.shards).await.expect("the outbox is counted");
    depth.get(&shard).copied().unwrap_or(0)
}

#[tokio::test]
async fn two_scanners_on_one_shard_publish_each_transition_once() {
    let stack = with_events(Rules::default()).await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let shard = 5u32;
    // 40 users of shard 5.
    let ids: Vec<u64> = (0..40u64).map(|i| 5 + 16 * i).collect();
    let events: Vec<_> = ids.iter().map(|id| ev(EventKind::Connected, *id, "s", t0)).collect();
    stack.committer.aggregate(&events, t0).await.unwrap();

    let at = t0 + rules.idle_after_ms + 1;
    let (a, b) = tokio::join!(stack.committer.scan_shard(shard, at), stack.committer.scan_shard(shard, at));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.transitions + b.transitions, ids.len(), "each user's transition is claimed by one scanner");
    // What the bus did not take within AWS_TIMEOUT_MS (the shared emulator
    // on a loaded machine) waits in the outbox; later drains, each past the
    // claims of the one before, send it, still once.
    for round in 1..=5 {
        if waiting_in(&stack, shard).await == 0 {
            break;
        }
        stack.committer.drain_shard(shard, at + round * 60_000).await;
    }
    assert_eq!(waiting_in(&stack, shard).await, 0, "the outbox of the shard drained");

    // Stops one empty poll after the last expected event, so a duplicate
    // sent with the others shows up too.
    let details = stack.sink.as_ref().unwrap().drain(ids.len(), Duration::from_secs(60)).await;
    let mut idle_events: HashMap<u64, usize> = HashMap::new();
    for (id, _, to) in transitions(&details) {
        if to == "idle" {
            *idle_events.entry(id).or_default() += 1;
        }
    }
    assert_eq!(idle_events.len(), ids.len());
    assert!(idle_events.values().all(|n| *n == 1), "a transition was published twice");
}

#[tokio::test]
async fn a_hidden_user_going_idle_and_offline_publishes_nothing() {
    let stack = with_events(Rules::default()).await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let u = 77u64;
    let shard = user(u).shard(stack.env.shards);
    stack.committer.aggregate(&[ev(EventKind::Connected, u, "a", t0)], t0).await.unwrap();
    stack.committer.set_visibility(user(u), false, t0 + 10).await.unwrap();
    let idle = stack.committer.scan_shard(shard, t0 + rules.idle_after_ms + 1).await.unwrap();
    let offline = stack.committer.scan_shard(shard, t0 + rules.session_ttl_ms + 1).await.unwrap();
    assert_eq!((idle.written, idle.transitions), (1, 0), "stored state still follows the truth");
    assert_eq!((offline.written, offline.transitions), (1, 0));
    assert_eq!(stack.sql_status(user(u)).await.as_deref(), Some("offline"));
    let details = stack.sink.as_ref().unwrap().drain(2, Duration::from_secs(10)).await;
    assert_eq!(transitions(&details), vec![t(u, "offline", "online"), t(u, "online", "offline")]);
    assert!(details.iter().all(|d| d["to"] != "idle"), "going idle while hidden is never revealed");
}

#[tokio::test]
async fn the_scan_repairs_redis_from_sql_after_an_outage() {
    let mut redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let t0 = wall_clock_ms();
    let u = 90u64;
    let shard = user(u).shard(stack.env.shards);
    stack.committer.aggregate(&[ev(EventKind::Connected, u, "a", t0)], t0).await.unwrap();
    redis.kill().await;
    let during = stack.committer.aggregate(&[ev(EventKind::Activity, u, "a", t0 + 100)], t0 + 100).await.unwrap();
    assert!(!during.cache_ok);
    assert!(stack.committer.scan_shard(shard, t0 + 200).await.is_err(), "no scan while redis is down");
    assert_eq!(stack.aws.scan(&stack.aws.repair_table).await.len(), 1, "the buffer still holds the user");

    redis.restart().await;
    let outcome = stack.committer.scan_shard(shard, t0 + 300).await.unwrap();
    assert_eq!(outcome.repaired, 1);
    assert!(stack.aws.scan(&stack.aws.repair_table).await.is_empty());
    let cached = stack.cached(user(u)).await.expect("rewritten from SQL");
    let durable = stack.durable(user(u)).await.expect("in SQL");
    assert_eq!((cached.version, cached.state), (durable.version, durable.state));
}

#[tokio::test]
async fn a_scan_costs_nothing_when_nobody_is_due() {
    let stack = Stack::new().await;
    let t0 = wall_clock_ms();
    let events: Vec<_> = (1..=2000u64).map(|id| ev(EventKind::Connected, id, "s", t0)).collect();
    stack.committer.aggregate(&events, t0).await.unwrap();
    // The first scan of a new index checks it against SQL's schedule once.
    stack.committer.scan_shard(3, t0 + 500).await.unwrap();
    let trips = stack.env.redis.round_trips();
    let outcome = stack.committer.scan_shard(3, t0 + 1000).await.unwrap();
    assert_eq!((outcome.scanned, outcome.written, outcome.pages), (0, 0, 0));
    assert!(stack.env.redis.round_trips() - trips <= 1, "one look at the due index");
}

#[tokio::test]
async fn a_scheduled_event_envelope_scans_every_shard() {
    let stack = Stack::new().await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let events: Vec<_> = (1..=64u64).map(|id| ev(EventKind::Connected, id, "s", t0)).collect();
    stack.committer.aggregate(&events, t0).await.unwrap();
    let envelope = json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let summary = stack.scanner().handle(&envelope, t0 + rules.idle_after_ms + 1).await.unwrap();
    assert!(summary.failed.is_empty());
    assert_eq!(summary.shards.len(), 16);
    assert_eq!(summary.shards.iter().map(|s| s.written).sum::<usize>(), 64);
    let one = shards_of(&json!({"shard": 2}), stack.env.shards).unwrap();
    assert_eq!(one, vec![2]);
}

#[tokio::test]
async fn an_event_landing_while_a_scanner_works_keeps_its_own_wake_up() {
    use status_shared::ports::DueIndex;
    let stack = Stack::new().await;
    let rules = stack.env.rules;
    let t0 = wall_clock_ms();
    let u = 21u64;
    let shard = user(u).shard(stack.env.shards);
    stack.committer.aggregate(&[ev(EventKind::Connected, u, "a", t0)], t0).await.unwrap();
    let at = t0 + rules.idle_after_ms + 1;
    // A scanner reads the user as due...
    let (due, _) = stack.env.cache.due(shard, at, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    // ...a fresh activity lands and is written with its own wake-up...
    stack.committer.aggregate(&[ev(EventKind::Activity, u, "a", at)], at).await.unwrap();
    // ...and the scanner, working from the older state, reschedules.
    stack.env.cache.settle(shard, &[(user(u), due[0].1, None)]).await.unwrap();
    let mut raw = stack.env.raw_redis().await;
    let score: Option<f64> =
        redis::cmd("ZSCORE").arg(stack.env.keys.due(shard)).arg(u).query_async(&mut raw).await.unwrap();
    assert_eq!(score.map(|s| s as i64), Some(at + rules.idle_after_ms + 1), "the fresh wake-up survives");
}
