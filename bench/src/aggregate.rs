//! `aggregate_batch_10000`: batches of 10,000 presence events over 5,000
//! users through the aggregator's handler in process
//! (`Aggregator::handle`: base64, JSON, merge, SQL compare-and-set, Redis),
//! against the real servers.
//!
//! The floor writes the same final states directly, `StoreWrite::save`
//! then `CacheWrite::store` of the batch's records: the I/O any design must
//! do for that batch, without decoding, merging or the compare-and-set
//! check.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aggregator::handler::{AppAggregator, Summary};
use status_shared::app::now_ms;
use status_shared::domain::{UserId, UserRecord};
use status_shared::ports::{CacheRead, CacheWrite, StoreWrite, Write};

use crate::env::{BenchEnv, Servers, Stack, Tuning};
use crate::error::Error;
use crate::phases::{PhaseClock, PHASES};
use crate::workload;

pub const EVENTS: usize = 10_000;
pub const USERS: u64 = 5_000;

/// One run's figures.
pub struct AggregateRun {
    pub events_per_s: f64,
    pub floor_events_per_s: f64,
    /// The first batch, where every user is new (SQL inserts), untimed in
    /// the figure itself.
    pub first_events_per_s: f64,
    pub round_trips_10: u64,
    pub round_trips_10000: u64,
    pub retried: usize,
    /// The floor's two halves per batch, in milliseconds: where the I/O time
    /// of a batch goes.
    pub floor_sql_ms: f64,
    pub floor_redis_ms: f64,
    /// The handler's time per batch, in milliseconds.
    pub handler_ms: f64,
    /// Per batch, in milliseconds: the handler's time in each of
    /// [`PHASES`] (its tracing spans), then `other` for the rest (sorting,
    /// building the writes and outbox events). Empty when the span clock
    /// could not be installed.
    pub phases_ms: Vec<(&'static str, f64)>,
}

/// The floor of one batch.
struct Floor {
    sql: Duration,
    redis: Duration,
}

pub async fn run(servers: &Servers, batches: usize) -> Result<AggregateRun, Error> {
    let env = BenchEnv::create(servers).await?;
    let outcome = run_in(&env, batches).await;
    env.remove().await;
    outcome
}

async fn run_in(env: &BenchEnv, batches: usize) -> Result<AggregateRun, Error> {
    let stack = env.stack(Tuning::SERVICE).await?;
    let aggregator = AppAggregator::from_app(&stack.app);

    // The first batch meets every user for the first time.
    let first = workload::kafka_event(&workload::mixed_batch(1, USERS, EVENTS, now_ms(), 1)?);
    let (first_time, _, _) = handle(&aggregator, &stack, &first, EVENTS).await?;

    let small = workload::kafka_event(&workload::mixed_batch(1, 10, 10, now_ms(), 2)?);
    let (_, round_trips_10, _) = handle(&aggregator, &stack, &small, 10).await?;

    // Only the timed batches' spans count.
    let clock = PhaseClock::global();
    if let Some(clock) = clock {
        clock.take();
    }
    let mut handler_time = Duration::ZERO;
    let mut floor_sql = Duration::ZERO;
    let mut floor_redis = Duration::ZERO;
    let mut round_trips_10000 = 0;
    let mut retried = 0;
    for batch in 0..batches {
        let events = workload::mixed_batch(1, USERS, EVENTS, now_ms(), 10 + batch as u64)?;
        let users: Vec<UserId> = events.iter().map(|e| e.user_id).collect::<BTreeSet<_>>().into_iter().collect();
        let kafka = workload::kafka_event(&events);
        let (elapsed, round_trips, summary) = handle(&aggregator, &stack, &kafka, EVENTS).await?;
        handler_time += elapsed;
        round_trips_10000 = round_trips_10000.max(round_trips);
        retried += summary.retried;
        let floor = floor(&stack, &users).await?;
        floor_sql += floor.sql;
        floor_redis += floor.redis;
    }
    let per_batch_ms = |d: Duration| d.as_secs_f64() * 1000.0 / batches as f64;
    let mut phases_ms = Vec::new();
    if let Some(clock) = clock {
        let totals = clock.take();
        let named: Vec<(&'static str, f64)> =
            PHASES.iter().map(|p| (*p, per_batch_ms(totals.get(p).copied().unwrap_or_default()))).collect();
        let other = per_batch_ms(handler_time) - named.iter().map(|(_, ms)| ms).sum::<f64>();
        phases_ms = named;
        phases_ms.push(("other", other));
    }
    stack.pool.close().await;
    let total = (EVENTS * batches) as f64;
    let floor_time = floor_sql + floor_redis;
    Ok(AggregateRun {
        events_per_s: total / handler_time.as_secs_f64(),
        floor_events_per_s: total / floor_time.as_secs_f64(),
        first_events_per_s: EVENTS as f64 / first_time.as_secs_f64(),
        round_trips_10,
        round_trips_10000,
        retried,
        floor_sql_ms: per_batch_ms(floor_sql),
        floor_redis_ms: per_batch_ms(floor_redis),
        handler_ms: per_batch_ms(handler_time),
        phases_ms,
    })
}

/// Times one batch; returns the time, the Redis round trips it took, and
/// its summary, after checking that every event was applied with Redis up.
async fn handle(
    aggregator: &AppAggregator,
    stack: &Stack,
    kafka: &aws_lambda_events::event::kafka::KafkaEvent,
    want: usize,
) -> Result<(Duration, u64, Summary), Error> {
    let before = stack.redis.round_trips();
    let start = Instant::now();
    let summary = aggregator.handle(kafka, now_ms()).await?;
    let elapsed = start.elapsed();
    let round_trips = stack.redis.round_trips() - before;
    if summary.applied != want || summary.malformed != 0 || !summary.cache_ok {
        return Err(format!("batch not applied cleanly: {summary:?}").into());
    }
    Ok((elapsed, round_trips, summary))
}

/// Writes the users' current records again, one version up, straight to
/// both stores; returns the time of each of the two writes.
async fn floor(stack: &Stack, users: &[UserId]) -> Result<Floor, Error> {
    let cached = stack.cache.load(users).await?;
    let mut records: Vec<(UserId, UserRecord)> = Vec::with_capacity(users.len());
    for (user, hit) in users.iter().zip(cached) {
        let mut record = hit.record.ok_or_else(|| format!("user {user} is not in Redis after its batch"))?;
        record.version += 1;
        records.push((*user, record));
    }
    let now = now_ms();
    let rules = stack.rules;
    let writes: Vec<Write<'_>> =
        records.iter().map(|(user, record)| Write::derived(*user, record, now, &rules)).collect();
    let start = Instant::now();
    let lost = stack.store.save(&writes, &[], now).await?;
    let sql = start.elapsed();
    let start = Instant::now();
    stack.cache.store(&writes, now).await?;
    let redis = start.elapsed();
    if !lost.is_empty() {
        return Err(format!("floor write lost {} compare-and-sets", lost.len()).into());
    }
    Ok(Floor { sql, redis })
}
