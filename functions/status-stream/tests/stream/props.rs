//! Property: over random event histories, the entries pushed to a
//! connection, applied in order, equal the bulk read at the end but for
//! held-back activity, whose `next` has not come due; with the delta of a
//! resume from the last cursor applied, they equal it exactly, and each
//! entry's `next` predicts the bulk read at `next.at_ms` (DESIGN §12).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use status_shared::domain::{EventKind, ManualState, ManualStatus, Millis};

use crate::support::*;

#[derive(Clone, Debug)]
enum Op {
    Event(EventKind, u64, u8, Option<&'static str>),
    Visible(u64, bool),
    Manual(u64, Option<i64>),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(EventKind::Connected),
        Just(EventKind::Heartbeat),
        Just(EventKind::Activity),
        Just(EventKind::Disconnected)
    ];
    let device = prop_oneof![Just(None), Just(Some("ios")), Just(Some("web"))];
    prop_oneof![
        4 => (kind, 0..3u64, 0..2u8, device).prop_map(|(k, u, s, d)| Op::Event(k, u, s, d)),
        1 => (0..3u64, any::<bool>()).prop_map(|(u, v)| Op::Visible(u, v)),
        1 => (0..3u64, prop::option::of(1..600_000i64)).prop_map(|(u, e)| Op::Manual(u, e)),
        2 => prop_oneof![1..1_000i64, 290_000..310_000i64, 1_790_000..1_810_000i64].prop_map(Op::Advance),
    ]
}

static CASE: AtomicU64 = AtomicU64::new(0);

/// The coalescing window of the property's stream function (ms): short,
/// so the cases stay quick, yet crossed by many of their steps.
const COALESCE_MS: i64 = 20;

/// The frames `connection` got, applied to what it holds; its last cursor
/// kept.
fn receive(env: &Env, connection: &str, held: &mut HashMap<u64, Value>, cursors: &mut HashMap<String, String>) {
    let frames = env.poster.take(connection);
    apply(held, &frames);
    if let Some(last) = frames.iter().rev().find_map(|f| f["cursor"].as_str()) {
        cursors.insert(connection.to_owned(), last.to_owned());
    }
}

async fn run(env: &Env, ops: &[Op]) {
    let case = CASE.fetch_add(1, Ordering::SeqCst);
    let base = 1_000 + case * 10;
    let users = [base, base + 1, base + 2];
    let (service, own) = (format!("s{case}"), format!("u{case}"));
    let mut now: Millis = NOW;
    env.connect(&service, None, now).await;
    env.connect(&own, Some(base), now).await;
    let mut held: HashMap<String, HashMap<u64, Value>> = HashMap::new();
    let mut cursors: HashMap<String, String> = HashMap::new();
    for connection in [&service, &own] {
        let frames = env.subscribe(connection, &users, None, now).await;
        apply(held.entry(connection.clone()).or_default(), &frames);
        cursors.insert(connection.clone(), cursor(&frames));
    }
    for op in ops {
        match op {
            Op::Event(kind, u, s, device) => {
                now += 1;
                env.event(*kind, users[*u as usize], &format!("s{s}"), *device, now).await;
            }
            Op::Visible(u, visible) => {
                now += 1;
                env.committer.set_visibility(id(users[*u as usize]), *visible, now).await.unwrap();
            }
            Op::Manual(u, expires) => {
                now += 1;
                let manual =
                    ManualStatus { state: ManualState::Busy, message: None, expires_at_ms: expires.map(|e| now + e) };
                env.committer.set_manual(id(users[*u as usize]), Some(manual), now).await.unwrap();
            }
            Op::Advance(ms) => now += ms,
        }
        assert_eq!(env.feed(&users, now).await["statusCode"], json!(200));
        for connection in [&service, &own] {
            receive(env, connection, held.get_mut(connection.as_str()).unwrap(), &mut cursors);
        }
    }
    // Past every coalescing window, so the last fan-out reads at `now`.
    now += 2 * COALESCE_MS + 1;
    assert_eq!(env.feed(&users, now).await["statusCode"], json!(200));
    for (connection, viewer) in [(&service, None), (&own, Some(base))] {
        let mine = held.get_mut(connection.as_str()).unwrap();
        receive(env, connection, mine, &mut cursors);
        let truth = env.bulk(&users, viewer, now).await;
        for (user, view) in users.iter().zip(&truth) {
            // Held back: only `last_active_ms` (and `next`) of an online
            // user differ, and the `next` the client holds is not yet due.
            let (entry, truth) = (shown(&mine[user]), view_json(*user, view));
            if entry != truth {
                let mut without = (entry.clone(), truth.clone());
                without.0.as_object_mut().unwrap().remove("last_active_ms");
                without.1.as_object_mut().unwrap().remove("last_active_ms");
                assert_eq!(without.0, without.1, "{connection} user {user}: only activity is held");
                assert_eq!(truth["status"], json!("online"), "{connection} user {user}");
                let due = mine[user]["next"]["at_ms"].as_i64().unwrap_or(i64::MAX);
                assert!(due > now, "{connection} user {user}: a held change outlived the next it was sent");
            }
        }
        // A resume from the last cursor carries what was held back.
        let resumed = format!("{connection}r");
        env.connect(&resumed, viewer, now).await;
        let delta = env.subscribe(&resumed, &users, Some(&cursors[connection.as_str()]), now).await;
        assert!(delta.iter().all(|f| f["type"] == json!("delta")), "{delta:?}");
        apply(mine, &delta);
        for (user, view) in users.iter().zip(&truth) {
            let entry = &held[connection.as_str()][user];
            assert_eq!(shown(entry), view_json(*user, view), "{connection} user {user} at the end");
            let Some(at) = entry["next"]["at_ms"].as_i64() else { continue };
            let mut next = entry["next"].clone();
            next.as_object_mut().unwrap().remove("at_ms");
            next["user_id"] = json!(user);
            let at_next = env.bulk(&[*user], viewer, at).await;
            assert_eq!(view_json(*user, &at_next[0]), next, "{connection} user {user}: next");
            let before = env.bulk(&[*user], viewer, at - 1).await;
            assert_eq!(view_json(*user, &before[0]), shown(entry), "{connection} user {user}: until next");
        }
    }
}

#[test]
fn pushed_entries_equal_the_bulk_read_and_next_predicts_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let coalesce = COALESCE_MS.to_string();
    let env = rt.block_on(Env::with(&[("STREAM_COALESCE_MS", coalesce.as_str())]));
    let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
    let result = runner.run(&prop::collection::vec(op(), 1..14), |ops| {
        rt.block_on(run(&env, &ops));
        Ok(())
    });
    drop(env);
    result.unwrap();
}
