//! `idle_scan_1m`: a full sweep of the 16 shards over a million users of
//! whom 10% have gone stale, as the idle scanner's handler runs it
//! (`idle_scanner::handler::scan`: `Committer::scan_shard` per shard, four
//! at a time), then a second sweep right after, which finds nothing due and
//! shows that the cost follows the stale users, not all users.
//!
//! Time is synthetic: every user connects at `T` (the bench's clock when
//! the run starts), the stale tenth with its last activity a minute
//! earlier. At `T + 4.5 min` exactly the stale users are past `IDLE_AFTER`
//! (due at `T + 4 min`) and the rest are not (due at `T + 5 min`), however
//! long the population took.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use status_shared::app::now_ms;
use status_shared::domain::{EventKind, Millis, UserId};

use crate::env::{BenchEnv, Servers, Tuning, SHARDS};
use crate::error::Error;
use crate::workload;

/// Users per write-path call while populating; each is one Redis load, a
/// few SQL statements and one Redis pipeline.
const LOAD_BATCH: u64 = 10_000;
/// Write-path calls in flight while populating: one waits on SQL while the
/// other waits on Redis.
const LOAD_IN_FLIGHT: usize = 2;
/// How long before `T` the stale users were last active.
const STALE_BY_MS: Millis = 60_000;
/// When the sweep runs, after `T`.
const SWEEP_AT_MS: Millis = 270_000;

/// One run's figures.
pub struct ScanRun {
    pub users: u64,
    pub stale: u64,
    pub populate_s: f64,
    pub sweep_s: f64,
    pub second_sweep_s: f64,
    pub scanned: usize,
    pub written: usize,
    pub transitions: usize,
    pub second_scanned: usize,
    /// Seconds to rebuild all 16 due indexes from SQL after losing them.
    pub rebuild_s: f64,
    /// Users put back by the rebuild.
    pub rebuilt: usize,
}

/// One in ten users of every shard: those whose id, divided by the shard
/// count, is a multiple of ten.
pub fn is_stale(user: u64) -> bool {
    ((user - 1) / u64::from(SHARDS)).is_multiple_of(10)
}

pub async fn run(servers: &Servers, users: u64) -> Result<ScanRun, Error> {
    let env = BenchEnv::create(servers).await?;
    let outcome = run_in(&env, users).await;
    eprintln!("status-bench: idle_scan_1m: removing the run's {users} users");
    env.remove().await;
    outcome
}

async fn run_in(env: &BenchEnv, users: u64) -> Result<ScanRun, Error> {
    let t = now_ms();
    let started = Instant::now();
    populate(env, users, t).await?;
    let populate_s = started.elapsed().as_secs_f64();
    // Let the servers finish flushing what the population wrote, so the
    // sweep is not timed against a backlog of background writes.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stack = env.stack(Tuning::SERVICE).await?;
    let committer = stack.committer();
    let shards: Vec<u32> = (0..SHARDS).collect();
    let now = t + SWEEP_AT_MS;

    let start = Instant::now();
    let first = idle_scanner::handler::scan(&committer, &shards, now).await;
    let sweep_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let second = idle_scanner::handler::scan(&committer, &shards, now).await;
    let second_sweep_s = start.elapsed().as_secs_f64();

    // Lose every due index, then rebuild them as the next scans would.
    let mut raw = env.servers.raw_redis().await?;
    let keys: Vec<String> = shards.iter().map(|s| env.keys.due(*s)).collect();
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut raw).await?;
    let start = Instant::now();
    let rebuilt: Vec<usize> = stream::iter(shards.iter().copied())
        .map(|shard| {
            let committer = &committer;
            async move { committer.rebuild_index(shard, now).await.map(|r| r.users) }
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    let rebuild_s = start.elapsed().as_secs_f64();
    stack.pool.close().await;
    if !first.failed.is_empty() || !second.failed.is_empty() {
        return Err(format!("shards failed: first sweep {:?}, second sweep {:?}", first.failed, second.failed).into());
    }
    let stale = (1..=users).filter(|u| is_stale(*u)).count() as u64;
    Ok(ScanRun {
        users,
        stale,
        populate_s,
        sweep_s,
        second_sweep_s,
        scanned: first.shards.iter().map(|s| s.scanned).sum(),
        written: first.shards.iter().map(|s| s.written).sum(),
        transitions: first.shards.iter().map(|s| s.transitions).sum(),
        second_scanned: second.shards.iter().map(|s| s.scanned).sum(),
        rebuild_s,
        rebuilt: rebuilt.iter().sum(),
    })
}

/// Connects every user through the write path at `t`, in big batches.
async fn populate(env: &BenchEnv, users: u64, t: Millis) -> Result<(), Error> {
    let stack = env.stack(Tuning::LOADER).await?;
    let committer = stack.committer();
    let committer = &committer;
    let started = Instant::now();
    let mut done: u64 = 0;
    let mut last_report = Instant::now();
    let chunks = (0..users.div_ceil(LOAD_BATCH)).map(|i| (1 + i * LOAD_BATCH, LOAD_BATCH.min(users - i * LOAD_BATCH)));
    let mut written = stream::iter(chunks)
        .map(|(first, count)| async move {
            let events = (first..first + count)
                .map(|id| {
                    let ts = if is_stale(id) { t - STALE_BY_MS } else { t };
                    workload::event(EventKind::Connected, UserId::new(id)?, 0, ts)
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let outcome = committer.aggregate(&events, t).await?;
            if !outcome.cache_ok || outcome.written.len() as u64 != count {
                return Err(Error::from(format!(
                    "population batch at {first}: wrote {} of {count}, cache_ok={}",
                    outcome.written.len(),
                    outcome.cache_ok
                )));
            }
            Ok(count)
        })
        .buffer_unordered(LOAD_IN_FLIGHT);
    // Bounded by the number of chunks; each chunk bounded by the stores'
    // timeouts.
    while let Some(count) = written.try_next().await? {
        done += count;
        if last_report.elapsed() >= Duration::from_secs(10) || done == users {
            let elapsed = started.elapsed().as_secs_f64();
            let rate = done as f64 / elapsed.max(1e-9);
            eprintln!(
                "status-bench: idle_scan_1m: populated {done}/{users} users in {elapsed:.0} s ({rate:.0}/s, about {:.0} s left)",
                (users - done) as f64 / rate.max(1.0)
            );
            last_report = Instant::now();
        }
    }
    stack.pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenth_of_every_shard_is_stale() {
        let users = 16 * 1000;
        for shard in 0..SHARDS {
            let in_shard: Vec<u64> = (1..=users).filter(|u| u % u64::from(SHARDS) == u64::from(shard)).collect();
            let stale = in_shard.iter().filter(|u| is_stale(**u)).count();
            assert_eq!(stale * 10, in_shard.len(), "shard {shard}");
        }
        assert_eq!((1..=1_000_000).filter(|u| is_stale(*u)).count(), 100_000);
    }
}
