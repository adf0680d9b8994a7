//! `bulk_read_hot_1000_audience` (DESIGN §10): `bulk_read_hot_1000` where
//! one user in ten of the 1,000 is behind an audience (DESIGN §13) whose
//! list names 100 viewers, half of them `everyone` but those, half `nobody`
//! but those, read by an end user, so those 100 users cost a list lookup:
//! one more round trip, one `SMISMEMBER` per such user.
//!
//! Each timed read is made by a viewer of its own, so the poll limit
//! (DESIGN §7, one read per window) lets it through; its `SET NX` is part
//! of what an end user's read costs. Two floors are timed in turn with the
//! handler, in the same run: `floor`, the two pipelined round trips the
//! read sends besides it (the read models, then the lists), and
//! `seed_floor`, the seed's read of the same 1,000 ids, against which §10
//! sets the target (p99 at most 1.3 times).

use std::time::{Duration, Instant};

use status_api::request::{ApiRequest, Caller};
use status_shared::app::now_ms;
use status_shared::domain::{Audience, AudienceDefault, LastSeenRule, UserId};
use status_shared::ports::{CacheRead, ListAsk};

use crate::bulk_read::{api_of, check, populate, seed_floor_read, time_floor, ReadRun, IDS, RUN_LIMIT, WARM_UP};
use crate::env::{BenchEnv, Servers, Stack, Tuning};
use crate::Error;

/// The first viewer id; viewers are taken in turn from here.
const FIRST_VIEWER: u64 = 50_000_000;
/// Viewers each list names, from the first 2,000 viewer ids (§10: 100).
const LISTED: u64 = 100;
/// One user in this many has an audience (§10: one in ten).
const EVERY: u64 = 10;

/// How many of the 1,000 users have an audience.
pub const WITH_AUDIENCE: u64 = IDS / EVERY;

/// Whether `user` is one of the run's users behind an audience.
fn has_audience(user: UserId) -> bool {
    user.get().is_multiple_of(EVERY)
}

/// A run of `bulk_read_hot_1000_audience`.
pub async fn run(servers: &Servers, iterations: usize) -> Result<ReadRun, Error> {
    let env = BenchEnv::create(servers).await?;
    let outcome = run_in(&env, iterations).await;
    env.remove().await;
    outcome
}

fn audience_of(user: UserId) -> Result<Audience, Error> {
    let default =
        if (user.get() / EVERY).is_multiple_of(2) { AudienceDefault::Everyone } else { AudienceDefault::Nobody };
    let listed = (0..LISTED).map(|k| UserId::new(FIRST_VIEWER + (user.get() * 97 + k * 101) % 2_000));
    Ok(Audience::new(default, listed.collect::<Result<Vec<_>, _>>()?, LastSeenRule::Coarse)?)
}

async fn run_in(env: &BenchEnv, iterations: usize) -> Result<ReadRun, Error> {
    let stack = env.stack(Tuning::SERVICE).await?;
    let users = crate::workload::users(1, IDS)?;
    populate(&stack, &users).await?;
    let committer = stack.committer();
    let now = now_ms();
    let restricted: Vec<UserId> = users.iter().copied().filter(|u| has_audience(*u)).collect();
    for user in &restricted {
        committer.set_audience(*user, &audience_of(*user)?, now).await?;
    }
    let hits = stack.cache.load(&users).await?.iter().filter(|c| c.record.is_some()).count();
    if hits != users.len() {
        return Err(format!("only {hits} of {} users are hot in Redis", users.len()).into());
    }
    let api = api_of(&stack);
    let ids: Vec<u64> = users.iter().map(|u| u.get()).collect();
    let body = serde_json::json!({ "user_ids": ids }).to_string().into_bytes();
    let mut run = ReadRun {
        handler: Vec::with_capacity(iterations),
        floor: Vec::with_capacity(iterations),
        seed_floor: Vec::with_capacity(iterations),
    };
    let started = Instant::now();
    for i in 0..WARM_UP + iterations {
        if started.elapsed() > RUN_LIMIT {
            return Err(format!("audience read run passed {RUN_LIMIT:?} after {i} iterations").into());
        }
        let viewer = UserId::new(FIRST_VIEWER + i as u64)?;
        let request = ApiRequest {
            method: "POST".into(),
            path: "/v1/status/bulk".into(),
            body: body.clone(),
            caller: Caller::User(viewer),
        };
        // Rotate which goes first, so none always follows another's
        // traffic.
        let (mut handler, mut floor, mut seed) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for step in 0..3 {
            match (i + step) % 3 {
                0 => {
                    let start = Instant::now();
                    let response = api.handle(&request, now_ms()).await;
                    handler = start.elapsed();
                    check(&response, users.len())?;
                }
                1 => floor = floor_read(&stack, &users, &restricted, viewer).await?,
                _ => seed = time_floor(&users, seed_floor_read(&stack, &users)).await?,
            }
        }
        if i >= WARM_UP {
            run.handler.push(handler);
            run.floor.push(floor);
            run.seed_floor.push(seed);
        }
    }
    stack.pool.close().await;
    Ok(run)
}

/// The read's two round trips without the service around them: the read
/// models and flags of `users`, then one `SMISMEMBER` per user of
/// `restricted`.
async fn floor_read(stack: &Stack, users: &[UserId], restricted: &[UserId], viewer: UserId) -> Result<Duration, Error> {
    let start = Instant::now();
    let pipe = stack.cache.load_pipeline(users);
    let values: Vec<redis::Value> =
        stack.redis.run(|mut conn| async move { pipe.query_async(&mut conn).await }).await?;
    // Every restricted user's list is asked: the tags come from the
    // benchmark's own audiences, and a tag the set does not hold still
    // costs the command.
    let asks: Vec<ListAsk> =
        restricted.iter().map(|user| ListAsk { user: *user, tag: status_shared::domain::ListTag(0), viewer }).collect();
    let lists = stack.cache.listed_batch(&asks);
    let replies = stack.redis.exec_replies(lists).await?;
    let elapsed = start.elapsed();
    if values.len() != users.len() * 2 || replies.len() != restricted.len() {
        return Err(format!("floor read got {} and {} replies", values.len(), replies.len()).into());
    }
    Ok(elapsed)
}
