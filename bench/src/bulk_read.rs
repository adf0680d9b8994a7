//! `bulk_read_hot_1000` and `bulk_read_cold_1000`: a 1,000-id bulk read
//! through the status API handler in process (`StatusApi::handle`, a service
//! caller, a `POST /v1/status/bulk` body), everything below it real.
//!
//! The hot figure has two floors, each one pipelined round trip through the
//! same `RedisConn`, timed in turn with the handler in the same run so all
//! three see the same server, connection and machine load:
//! - `floor`: the Redis commands the read itself sends
//!   (`RedisCache::load_pipeline`);
//! - `seed_floor`: the seed's read (DESIGN §10), `HMGET status:{id} status
//!   last_active_ms device_count` plus `GET status:visible:{id}` per id.

use std::time::{Duration, Instant};

use redis::Value;
use status_api::handler::AppApi;
use status_api::request::{ApiRequest, Caller};
use status_shared::app::now_ms;
use status_shared::domain::UserId;
use status_shared::ports::CacheRead;

use crate::env::{BenchEnv, Servers, Stack, Tuning};
use crate::error::Error;
use crate::report::{ms, percentile};
use crate::workload;

pub const IDS: u64 = 1000;
/// Untimed reads before a run's timed ones: connections open, caches and
/// allocators warm, as in a function that has served a while.
pub(crate) const WARM_UP: usize = 50;
/// No run may take longer than this, whatever the iteration count.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(300);

type Api = AppApi;

/// One run's latencies.
pub struct ReadRun {
    pub handler: Vec<Duration>,
    pub floor: Vec<Duration>,
    /// The seed's read, for the hot figure only.
    pub seed_floor: Vec<Duration>,
}

impl ReadRun {
    pub fn p(&self, q: f64) -> f64 {
        ms(percentile(&self.handler, q))
    }
    pub fn floor_p(&self, q: f64) -> f64 {
        ms(percentile(&self.floor, q))
    }
    pub fn seed_floor_p(&self, q: f64) -> f64 {
        ms(percentile(&self.seed_floor, q))
    }
}

/// Lambda's price unit for one call of `duration_ms` at 128 MB: GB-seconds,
/// with the duration billed in whole milliseconds (rounded up).
pub fn lambda_gb_s(duration_ms: f64) -> f64 {
    duration_ms.ceil() / 1000.0 * (128.0 / 1024.0)
}

pub(crate) fn api_of(stack: &Stack) -> Api {
    AppApi::from_app(&stack.app)
}

/// The bulk request for `users`, as `ApiRequest::from_event` reads it for
/// an IAM (service) caller.
fn bulk_request(users: &[UserId]) -> ApiRequest {
    let ids: Vec<u64> = users.iter().map(|u| u.get()).collect();
    ApiRequest {
        method: "POST".into(),
        path: "/v1/status/bulk".into(),
        body: serde_json::json!({ "user_ids": ids }).to_string().into_bytes(),
        caller: Caller::Service,
    }
}

/// Writes a mixed population (online, two devices, idle, offline; one in
/// twenty hidden) through the write path, so Redis and SQL hold what the
/// aggregator would have written.
pub(crate) async fn populate(stack: &Stack, users: &[UserId]) -> Result<(), Error> {
    let now = now_ms();
    let events = workload::mixed_population(users, now)?;
    let committer = stack.committer();
    committer.aggregate(&events, now).await?;
    for user in users.iter().filter(|u| workload::is_hidden(**u)) {
        committer.set_visibility(*user, false, now).await?;
    }
    Ok(())
}

pub(crate) fn check(response: &status_api::handler::ApiResponse, want: usize) -> Result<(), Error> {
    let answered = response.body.get("statuses").and_then(serde_json::Value::as_array).map_or(0, Vec::len);
    if response.status != 200 || answered != want {
        return Err(
            format!("bulk read answered {} with {answered} statuses: {}", response.status, response.body).into()
        );
    }
    Ok(())
}

/// One pipelined round trip of the bulk read's Redis commands.
async fn floor_read(stack: &Stack, users: &[UserId]) -> Result<usize, Error> {
    let pipe = stack.cache.load_pipeline(users);
    let values: Vec<Value> = stack.redis.run(|mut conn| async move { pipe.query_async(&mut conn).await }).await?;
    Ok(values.len())
}

/// The seed's read: `HMGET` of its three fields and `GET` of the flag per
/// id, one pipelined round trip.
pub(crate) async fn seed_floor_read(stack: &Stack, users: &[UserId]) -> Result<usize, Error> {
    let mut pipe = redis::pipe();
    for user in users {
        pipe.cmd("HMGET").arg(stack.cache.keys().status(*user)).arg("status").arg("last_active_ms").arg("device_count");
        pipe.cmd("GET").arg(stack.cache.keys().visible(*user));
    }
    let values: Vec<Value> = stack.redis.run(|mut conn| async move { pipe.query_async(&mut conn).await }).await?;
    Ok(values.len())
}

/// A run of `bulk_read_hot_1000`.
pub async fn hot_run(servers: &Servers, iterations: usize) -> Result<ReadRun, Error> {
    let env = BenchEnv::create(servers).await?;
    let outcome = hot_in(&env, iterations).await;
    env.remove().await;
    outcome
}

async fn hot_in(env: &BenchEnv, iterations: usize) -> Result<ReadRun, Error> {
    let stack = env.stack(Tuning::SERVICE).await?;
    let users = workload::users(1, IDS)?;
    populate(&stack, &users).await?;
    let hits = stack.cache.load(&users).await?.iter().filter(|c| c.record.is_some()).count();
    if hits != users.len() {
        return Err(format!("only {hits} of {} users are hot in Redis", users.len()).into());
    }
    let api = api_of(&stack);
    let request = bulk_request(&users);
    let mut run = ReadRun {
        handler: Vec::with_capacity(iterations),
        floor: Vec::with_capacity(iterations),
        seed_floor: Vec::with_capacity(iterations),
    };
    let started = Instant::now();
    for i in 0..WARM_UP + iterations {
        if started.elapsed() > RUN_LIMIT {
            return Err(format!("hot read run passed {RUN_LIMIT:?} after {i} iterations").into());
        }
        // Rotate which goes first, so none always follows another's
        // traffic.
        let (mut handler, mut floor, mut seed) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for step in 0..3 {
            match (i + step) % 3 {
                0 => handler = time_handler(&api, &request, users.len()).await?,
                1 => floor = time_floor(&users, floor_read(&stack, &users)).await?,
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

async fn time_handler(api: &Api, request: &ApiRequest, want: usize) -> Result<Duration, Error> {
    let start = Instant::now();
    let response = api.handle(request, now_ms()).await;
    let elapsed = start.elapsed();
    check(&response, want)?;
    Ok(elapsed)
}

pub(crate) async fn time_floor(
    users: &[UserId],
    read: impl std::future::Future<Output = Result<usize, Error>>,
) -> Result<Duration, Error> {
    let start = Instant::now();
    let replies = read.await?;
    let elapsed = start.elapsed();
    if replies != users.len() * 2 {
        return Err(format!("floor read got {replies} replies for {} users", users.len()).into());
    }
    Ok(elapsed)
}

/// A run of `bulk_read_cold_1000`: the users are in SQL only; before each
/// read (untimed) their keys are deleted, so every read misses Redis
/// entirely, loads all 1,000 from SQL and backfills them.
pub async fn cold_run(servers: &Servers, iterations: usize) -> Result<ReadRun, Error> {
    let env = BenchEnv::create(servers).await?;
    let outcome = cold_in(&env, iterations).await;
    env.remove().await;
    outcome
}

async fn cold_in(env: &BenchEnv, iterations: usize) -> Result<ReadRun, Error> {
    let stack = env.stack(Tuning::SERVICE).await?;
    let users = workload::users(1, IDS)?;
    populate(&stack, &users).await?;
    let mut raw = env.servers.raw_redis().await?;
    let keys: Vec<String> = users.iter().flat_map(|u| [env.keys.status(*u), env.keys.visible(*u)]).collect();
    let api = api_of(&stack);
    let request = bulk_request(&users);
    let warm_up = WARM_UP / 5;
    let mut run = ReadRun { handler: Vec::with_capacity(iterations), floor: Vec::new(), seed_floor: Vec::new() };
    let started = Instant::now();
    for i in 0..warm_up + iterations {
        if started.elapsed() > RUN_LIMIT {
            return Err(format!("cold read run passed {RUN_LIMIT:?} after {i} iterations").into());
        }
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut raw).await?;
        let elapsed = time_handler(&api, &request, users.len()).await?;
        if i == 0 {
            // The read must have backfilled every user it missed.
            let hits = stack.cache.load(&users).await?.iter().filter(|c| c.record.is_some()).count();
            if hits != users.len() {
                return Err(format!("a cold read backfilled {hits} of {} users", users.len()).into());
            }
        }
        if i >= warm_up {
            run.handler.push(elapsed);
        }
    }
    stack.pool.close().await;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::lambda_gb_s;

    #[test]
    fn gb_seconds_bill_whole_milliseconds_at_128_mb() {
        assert!((lambda_gb_s(6.2) - 0.000_875).abs() < 1e-12, "7 ms x 0.125 GB");
        assert!((lambda_gb_s(1.0) - 0.000_125).abs() < 1e-12);
        assert!(lambda_gb_s(0.01) > 0.0, "a call is billed at least 1 ms");
    }
}
