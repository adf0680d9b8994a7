//! Audiences (DESIGN §13) when Redis fails, on a Redis server of the
//! test's own: killed (connections refused), stalled (`SIGSTOP`: nothing
//! answered) and refusing writes (`maxmemory` reached under
//! `noeviction`). Setting an audience has the authority of a hide (§6,
//! §13): Redis failing before the durable write answers 503 and changes
//! nothing; Redis failing after it keeps the change, records the repair
//! and answers 503. Either way every viewer class then reads what SQL
//! holds, through the fallback and after the repair.

use std::time::Duration;

use status_shared::domain::{AudienceDefault, AudienceRule, LastSeenRule};

use super::*;

const USER: u64 = 100;
const FRIEND: u64 = 101;
const STRANGER: u64 = 102;
const EXCEPTED: u64 = 103;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    Killed,
    Stalled,
    Refusing,
}

impl Outage {
    async fn begin(self, redis: &mut PrivateRedis, stack: &Stack) {
        match self {
            Self::Killed => redis.kill().await,
            Self::Stalled => redis.pause(),
            Self::Refusing => limit_memory(stack, "1").await,
        }
    }

    async fn end(self, redis: &mut PrivateRedis, stack: &Stack) {
        match self {
            Self::Killed => redis.restart().await,
            Self::Stalled => redis.resume(),
            Self::Refusing => limit_memory(stack, "0").await,
        }
    }
}

/// Sets the private server's `maxmemory` (`"1"`: every write is refused
/// with `OOM`, reads still answer; `"0"`: no limit).
async fn limit_memory(stack: &Stack, bytes: &str) {
    let mut raw = stack.env.raw_redis().await;
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", bytes)] {
        let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(&mut raw).await.expect("redis");
    }
}

fn put_audience(body: &Value, caller: Caller) -> ApiRequest {
    request("PUT", &format!("/v1/users/{USER}/audience"), body.to_string(), caller)
}

fn get_audience() -> ApiRequest {
    request("GET", &format!("/v1/users/{USER}/audience"), "", me(USER))
}

/// Repairs every shard at `now`; returns how many users were repaired.
async fn repair(stack: &Stack, now: Millis) -> usize {
    let mut repaired = 0;
    for shard in 0..stack.env.shards {
        repaired += stack.committer.repair_shard(shard, now).await.expect("the repair runs");
    }
    repaired
}

/// What each viewer class reads of [`USER`] at `now`: the user, the
/// friend, a stranger, the one the first audience excepted (each on the
/// single route and in a bulk, which must agree), a service, and the
/// public route. With `redis_up`, each end user's polling window is
/// forgotten between reads; without, the limit is not counted anyway.
async fn every_viewer(stack: &Stack, api: &Api, now: Millis, redis_up: bool) -> [Value; 6] {
    let mut seen = Vec::new();
    for viewer in [USER, FRIEND, STRANGER, EXCEPTED] {
        if redis_up {
            allow_another_poll(stack, viewer).await;
        }
        let single = ok(api, &single(USER, me(viewer)), now).await;
        if redis_up {
            allow_another_poll(stack, viewer).await;
        }
        let in_bulk = ok(api, &bulk(&[999, USER], me(viewer)), now).await["statuses"][1].clone();
        assert_eq!(single, in_bulk, "viewer {viewer}: single and bulk agree");
        seen.push(single);
    }
    let service = ok(api, &single(USER, Caller::Service), now).await;
    assert_eq!(ok(api, &bulk(&[USER], Caller::Service), now).await["statuses"][0], service);
    seen.push(service);
    seen.push(ok(api, &public(USER, me(STRANGER)), now).await);
    seen.try_into().expect("six entries")
}

async fn an_audience_set_while_redis_is(outage: Outage) {
    let mut redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let api = api(&stack);
    write(&stack, &[connected(USER, "a", T0)], T0).await;
    let truth = ok(&api, &single(USER, Caller::Service), T0 + 1).await;
    assert_eq!(truth["status"], "online");
    let never_seen = json!({ "user_id": USER, "status": "offline", "last_active_ms": null });
    let left_out = json!({ "user_id": USER, "status": "offline", "last_active_ms": null, "last_seen": "recently" });

    let first = json!({ "default": "everyone", "except": [EXCEPTED], "last_seen": "none" });
    ok(&api, &put_audience(&first, Caller::Service), T0 + 2).await;
    let first_rule = stack.durable(id(USER)).await.expect("stored").state.audience;
    let first_reads = [truth.clone(), truth.clone(), truth.clone(), never_seen, truth.clone(), truth.clone()];
    assert_eq!(every_viewer(&stack, &api, T0 + 3, true).await, first_reads);

    outage.begin(&mut redis, &stack).await;
    let second = json!({ "default": "nobody", "except": [FRIEND], "last_seen": "coarse" });
    let started = Instant::now();
    let refused = api.handle(&put_audience(&second, me(USER)), T0 + 10).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{outage:?} held the write for {:?}", started.elapsed());
    assert_error(&refused, 503, "unavailable");
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!(retry_after >= 1, "{outage:?}");

    // The route reads the audience from SQL, whatever Redis does.
    let stored = |audience: &Value| json!({ "user_id": USER, "audience": audience });
    let durable = stack.durable(id(USER)).await.expect("stored").state.audience;
    if outage == Outage::Refusing {
        // Redis failed after the durable write: the change stands.
        assert_eq!((durable.default, durable.last_seen), (AudienceDefault::Nobody, LastSeenRule::Coarse));
        assert!(durable.list.is_some() && durable.list != first_rule.list, "a new list: {durable:?}");
        assert_eq!(ok(&api, &get_audience(), T0 + 11).await, stored(&second));
    } else {
        // Redis failed before it: nothing changed anywhere.
        assert_eq!(durable, first_rule, "{outage:?}");
        assert_ne!(durable, AudienceRule::EVERYONE);
        assert_eq!(ok(&api, &get_audience(), T0 + 11).await, stored(&first));
        // Meanwhile every class reads from SQL, the list too.
        assert_eq!(every_viewer(&stack, &api, T0 + 12, false).await, first_reads, "{outage:?}: from SQL");
    }

    outage.end(&mut redis, &stack).await;
    let repaired = repair(&stack, T0 + 20).await;
    assert_eq!(repaired, usize::from(outage == Outage::Refusing), "{outage:?}: only a durable change is repaired");
    let second_reads = [truth.clone(), truth, left_out.clone(), left_out.clone(), left_out.clone(), left_out];
    if outage == Outage::Refusing {
        assert_eq!(every_viewer(&stack, &api, T0 + 21, true).await, second_reads, "after the repair");
    } else {
        assert_eq!(every_viewer(&stack, &api, T0 + 21, true).await, first_reads, "{outage:?}: still the first");
    }
    // The client's retry answers 200 and every class reads it, from Redis
    // and again from SQL after a cache loss.
    ok(&api, &put_audience(&second, me(USER)), T0 + 30).await;
    assert_eq!(every_viewer(&stack, &api, T0 + 31, true).await, second_reads, "{outage:?}");
    stack.env.flush_redis().await;
    assert_eq!(every_viewer(&stack, &api, T0 + 32, true).await, second_reads, "{outage:?}: from SQL");
    assert_eq!(repair(&stack, T0 + 33).await, 0, "{outage:?}: nothing left to repair");
}

#[tokio::test]
async fn an_audience_set_while_redis_is_killed_is_refused_and_changes_nothing() {
    an_audience_set_while_redis_is(Outage::Killed).await;
}

#[tokio::test]
async fn an_audience_set_while_redis_is_stalled_is_refused_within_the_timeout_and_changes_nothing() {
    an_audience_set_while_redis_is(Outage::Stalled).await;
}

#[tokio::test]
async fn an_audience_set_while_redis_refuses_writes_is_kept_in_sql_repaired_and_read_by_every_class() {
    an_audience_set_while_redis_is(Outage::Refusing).await;
}
