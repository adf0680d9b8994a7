//! The hot read's read model (DESIGN §10) against real Redis and MariaDB:
//! the bulk read fetches `HMGET status:{id} v sum` plus the visibility flag
//! in one round trip, and for a varied population it answers exactly as the
//! full derivation from the stored registers does, at many `now`s, for the
//! user themself and for others. The same holds on the SQL fallback, after
//! the backfill, for hashes written before the read model existed (read
//! whole, in one more round trip for just those users) and for hides found
//! only in the `status:visible:{id}` flag.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use status_shared::domain::{
    EventKind, ManualState, ManualStatus, Millis, PresenceEvent, Rules, SessionId, Status, UserId, UserRecord, View,
    Visibility,
};
use status_shared::ports::{CacheRead, StoreRead};
use status_tests::stack::{user, wall_clock_ms, Stack, StackOptions};

/// Short rules, so the population's sessions expire, go idle and end their
/// grace within the times read.
const RULES: Rules = Rules { idle_after_ms: 5_000, session_ttl_ms: 20_000, offline_grace_ms: 3_000, max_sessions: 4 };

const USERS: u64 = 90;

/// The population and when it was written.
struct Population {
    users: Vec<UserId>,
    /// When the events were committed.
    written: Millis,
    /// Users whose visibility flag alone says hidden (set by someone else).
    flag_hidden: Vec<UserId>,
}

/// Writes a seeded, varied population through the write path: up to ten
/// events per user (at least one) over three sessions and every kind of device, a third
/// hidden (some shown again), a third with a manual status (some expiring),
/// and a few hidden only in Redis's visibility flag.
async fn populate(stack: &Stack) -> Population {
    let mut rng = StdRng::seed_from_u64(15);
    let written = wall_clock_ms();
    let users: Vec<UserId> = (1..=USERS).map(user).collect();
    let devices = [None, Some("ios"), Some("web"), Some("linux"), Some("tv")];
    let kinds = [EventKind::Connected, EventKind::Heartbeat, EventKind::Activity, EventKind::Disconnected];
    let mut events = Vec::new();
    for u in &users {
        for _ in 0..rng.random_range(1..10) {
            events.push(PresenceEvent {
                kind: kinds[rng.random_range(0..kinds.len())],
                user_id: *u,
                session_id: SessionId::new(format!("s{}", rng.random_range(0..3))).unwrap(),
                device: devices[rng.random_range(0..devices.len())].map(str::to_owned),
                // Some already past retention at the write, so pruned.
                ts_ms: written - rng.random_range(0..30_000),
            });
        }
    }
    stack.committer.aggregate(&events, written).await.unwrap();
    for u in &users {
        match u.get() % 6 {
            0 => {
                stack.committer.set_visibility(*u, false, written + 1).await.unwrap();
            }
            1 => {
                stack.committer.set_visibility(*u, false, written + 1).await.unwrap();
                stack.committer.set_visibility(*u, true, written + 2).await.unwrap();
            }
            _ => {}
        }
        if u.get() % 3 == 0 {
            let expires_at_ms = (u.get() % 2 == 0).then(|| written + rng.random_range(1..40_000));
            let manual = ManualStatus { state: ManualState::Busy, message: Some("a|b:c,1d".into()), expires_at_ms };
            stack.committer.set_manual(*u, Some(manual), written + 3).await.unwrap();
        }
    }
    let flag_hidden: Vec<UserId> = users.iter().copied().filter(|u| u.get() % 10 == 7).collect();
    let mut raw = stack.env.raw_redis().await;
    for u in &flag_hidden {
        let _: () = redis::cmd("SET").arg(stack.env.keys.visible(*u)).arg("false").query_async(&mut raw).await.unwrap();
    }
    Population { users, written, flag_hidden }
}

/// The instants where some answer may flip (± 1 ms) for `records`, and a
/// spread of others, before and after the write.
fn instants(records: &[UserRecord], written: Millis) -> Vec<Millis> {
    let mut edges = vec![written - 5_000, written, written + 45_000];
    for record in records {
        let state = &record.state;
        for session in state.presence.sessions.values() {
            let ts = session.register.ts();
            edges.extend([ts + RULES.session_ttl_ms, ts + RULES.session_ttl_ms + 1 + RULES.offline_grace_ms]);
            edges.extend(session.active_ms.map(|a| a + RULES.idle_after_ms));
        }
        edges.extend(state.presence.last_active_ms.map(|a| a + RULES.idle_after_ms));
        edges.extend(state.manual.as_ref().and_then(|m| m.expires_at_ms));
    }
    edges.sort_unstable();
    edges.dedup();
    // Every fourth edge, each side of it: enough to cross every kind of edge
    // many times while keeping the test quick.
    edges.iter().step_by(4).flat_map(|t| [t - 1, *t, t + 1]).collect()
}

/// What the full derivation from `records` answers at `now`, with the
/// flag's hides applied as every reader applies them; and the users whose
/// hide a read would hand over for adoption.
fn derived(
    users: &[UserId],
    records: &[UserRecord],
    flag_hidden: &[UserId],
    viewer: Option<UserId>,
    now: Millis,
) -> (Vec<View>, Vec<UserId>) {
    let mut adopt = Vec::new();
    let views = users
        .iter()
        .zip(records)
        .map(|(u, record)| {
            let mut record = record.clone();
            if flag_hidden.contains(u) && record.hide_for_flag(now) {
                adopt.push(*u);
            }
            record.state.view_for(viewer == Some(*u), now, &RULES)
        })
        .collect();
    (views, adopt)
}

/// The whole records Redis holds (`HGETALL`, the writers' load).
async fn cached_records(stack: &Stack, users: &[UserId]) -> Vec<UserRecord> {
    stack.env.cache.load(users).await.unwrap().into_iter().map(|c| c.record.expect("every user is hot")).collect()
}

/// Reads every instant as a service and as a rotating self viewer, and
/// checks each answer (and the hides handed over) against the full
/// derivation; returns the Redis round trips each read took.
async fn reads_match(stack: &Stack, population: &Population, records: &[UserRecord], flag_hidden: &[UserId]) -> u64 {
    let users = &population.users;
    let before = stack.env.redis.round_trips();
    let mut reads = 0;
    for (i, now) in instants(records, population.written).into_iter().enumerate() {
        for viewer in [None, Some(users[i % users.len()])] {
            let (views, adopt) = stack.reader.read_adopting(users, viewer, now).await.unwrap();
            let (want, want_adopt) = derived(users, records, flag_hidden, viewer, now);
            for ((u, got), want) in users.iter().zip(&views).zip(&want) {
                assert_eq!(got, want, "user {u} viewer {viewer:?} at written{:+}", now - population.written);
            }
            assert_eq!(adopt, want_adopt, "at written{:+}", now - population.written);
            reads += 1;
        }
    }
    (stack.env.redis.round_trips() - before) / reads
}

#[tokio::test]
async fn the_hot_read_answers_as_the_full_derivation_in_one_round_trip() {
    let stack = Stack::with(StackOptions { rules: RULES, ..Default::default() }).await;
    let population = populate(&stack).await;
    let records = cached_records(&stack, &population.users).await;
    let kinds = |f: &dyn Fn(&UserRecord) -> bool| records.iter().filter(|r| f(r)).count();
    // The population reaches every part of the read model.
    assert!(kinds(&|r| !r.state.visibility.is_visible()) > 5);
    assert!(kinds(&|r| r.state.manual.is_some()) > 5);
    assert!(kinds(&|r| r.state.presence.newest_tombstone().is_some()) > 5);
    assert!(kinds(&|r| r.state.presence.connections().filter(|c| c.platform.is_some()).count() > 1) > 5);
    let statuses = |now| {
        let (views, _) = derived(&population.users, &records, &[], None, now);
        [Status::Online, Status::Idle, Status::Offline].map(|s| views.iter().filter(|v| v.status == s).count())
    };
    assert!(statuses(population.written).iter().all(|n| *n > 0), "online, idle and offline users at the write");

    let round_trips = reads_match(&stack, &population, &records, &population.flag_hidden).await;
    assert_eq!(round_trips, 1, "one pipelined round trip per bulk read");
}

#[tokio::test]
async fn hashes_written_before_the_read_model_are_read_whole_in_one_more_round_trip() {
    let stack = Stack::with(StackOptions { rules: RULES, ..Default::default() }).await;
    let population = populate(&stack).await;
    let records = cached_records(&stack, &population.users).await;
    // Every third hash as the previous release wrote it: the same fields,
    // no `sum`.
    let mut raw = stack.env.raw_redis().await;
    for u in population.users.iter().filter(|u| u.get() % 3 == 1) {
        let _: () = redis::cmd("HDEL").arg(stack.env.keys.status(*u)).arg("sum").query_async(&mut raw).await.unwrap();
    }
    // A damaged read model is read whole too, never trusted.
    let _: () = redis::cmd("HSET")
        .arg(stack.env.keys.status(user(2)))
        .arg("sum")
        .arg("1|x|")
        .query_async(&mut raw)
        .await
        .unwrap();

    let round_trips = reads_match(&stack, &population, &records, &population.flag_hidden).await;
    assert_eq!(round_trips, 2, "the whole hashes of just the old users, in one more round trip");
    let before = stack.env.redis.round_trips();
    let fresh: Vec<UserId> = population.users.iter().copied().filter(|u| u.get() % 3 == 0).collect();
    stack.reader.read(&fresh, None, population.written).await.unwrap();
    assert_eq!(stack.env.redis.round_trips() - before, 1, "no second round trip without old hashes");
}

#[tokio::test]
async fn the_sql_fallback_and_the_backfilled_read_models_answer_as_the_full_derivation() {
    let stack = Stack::with(StackOptions { rules: RULES, ..Default::default() }).await;
    let population = populate(&stack).await;
    let durable = stack.env.store.load(&population.users).await.unwrap();
    let records: Vec<UserRecord> = population.users.iter().map(|u| durable[u].clone()).collect();
    for (i, now) in instants(&records, population.written).into_iter().enumerate().step_by(7) {
        // Cold: the keys are gone (flags too), so SQL answers for everyone
        // and the read backfills them.
        stack.env.flush_redis().await;
        let viewer = Some(population.users[i % population.users.len()]);
        let cold = stack.reader.read_counted(&population.users, viewer, now).await.unwrap();
        assert_eq!(cold.fallbacks, population.users.len());
        let (want, _) = derived(&population.users, &records, &[], viewer, now);
        // Hot again, from the read models the backfill wrote.
        let hot = stack.reader.read_counted(&population.users, viewer, now).await.unwrap();
        assert_eq!((hot.hits, hot.fallbacks), (population.users.len(), 0));
        for (u, ((cold, hot), want)) in population.users.iter().zip(cold.views.iter().zip(&hot.views).zip(&want)) {
            assert_eq!(cold, want, "user {u} from SQL at written{:+}", now - population.written);
            assert_eq!(hot, want, "user {u} backfilled at written{:+}", now - population.written);
        }
    }
}

#[tokio::test]
async fn a_hide_set_in_the_flag_shows_at_once_on_the_read_model() {
    let stack = Stack::new().await;
    let now = wall_clock_ms();
    let phone = PresenceEvent {
        kind: EventKind::Connected,
        user_id: user(5),
        session_id: SessionId::new("p").unwrap(),
        device: Some("ios".into()),
        ts_ms: now - 10,
    };
    stack.committer.aggregate(&[phone], now - 5).await.unwrap();
    let before = stack.reader.read(&[user(5)], None, now).await.unwrap();
    assert_eq!((before[0].status, before[0].platforms.is_some()), (Status::Online, true));

    let mut raw = stack.env.raw_redis().await;
    let _: () =
        redis::cmd("SET").arg(stack.env.keys.visible(user(5))).arg("false").query_async(&mut raw).await.unwrap();
    let (views, adopt) = stack.reader.read_adopting(&[user(5)], None, now + 1).await.unwrap();
    assert_eq!(views[0], View::gone(Some(now - 10)), "offline as of the last write, nothing else shown");
    assert_eq!(adopt, vec![user(5)], "handed over for adoption into SQL");
    let own = stack.reader.read(&[user(5)], Some(user(5)), now + 1).await.unwrap();
    assert_eq!(own[0].status, Status::Online, "the user still sees the truth");

    stack.committer.adopt_hides(&adopt, now + 2).await.unwrap();
    let durable = stack.durable(user(5)).await.unwrap();
    assert_eq!(durable.state.visibility, Visibility::Hidden { since_ms: now - 5, last_active_ms: Some(now - 10) });
    let (views, adopt) = stack.reader.read_adopting(&[user(5)], None, now + 3).await.unwrap();
    assert_eq!((views[0].clone(), adopt), (View::gone(Some(now - 10)), vec![]), "the same view, now stored");
}
