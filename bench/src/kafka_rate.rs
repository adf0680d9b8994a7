//! `kafka_e2e`'s third phase: produce → visible while the stack takes a
//! sustained rate, rather than one event alone (DESIGN §10 asks for the
//! figure at the throughput target).
//!
//! `events` events over fresh users are produced at a paced `rate`
//! events/s. Meanwhile a probe, a `session_connected` for a user of its
//! own, is produced every [`PROBE_EVERY`]; every open probe is read back in
//! one bulk read every [`READ_EVERY`], and each one's time runs from just
//! before its enqueue to the first read that shows it. The probes share
//! their partitions' queues with the load, as any event at that rate does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use local_stack::kafka::load::LoadPlan;
use local_stack::kafka::produce::{presence_value, PresenceProducer};
use status_shared::app::now_ms;

use crate::error::Error;
use crate::http::Conn;
use crate::kafka_e2e::bulk_read;

/// How often a probe is produced while the load runs.
pub const PROBE_EVERY: Duration = Duration::from_millis(25);
/// How often the open probes are read back.
const READ_EVERY: Duration = Duration::from_millis(2);
/// How long after the load's last event a probe may take to show before
/// the phase fails.
const PROBE_LIMIT: Duration = Duration::from_secs(60);
/// The first user of the phase's load, past the other phases' users.
const FIRST_LOAD_USER: u64 = 3_000_000;
/// The first probe user, past the latency phase's.
const FIRST_PROBE_USER: u64 = 100_000;

/// What the phase measured.
pub struct AtRate {
    /// Each probe's produce → visible time.
    pub latencies: Vec<Duration>,
    /// The rate the producer kept: events over the time to the last enqueue.
    pub kept_per_s: f64,
}

/// One open probe: its user, its stamp, when it was produced.
struct Probe {
    user: u64,
    ts_ms: i64,
    sent: Instant,
}

/// Runs the phase: `events` events over `users` users at `rate` events/s
/// through `bulk` (the load's producer) and probes through `single`.
/// Errors: a record the broker refused, a probe not visible within
/// [`PROBE_LIMIT`] of the load's end, a failed read.
pub async fn at_rate(
    conn: &mut Conn,
    bulk: &PresenceProducer,
    single: &PresenceProducer,
    events: u64,
    users: u64,
    rate: u64,
) -> Result<AtRate, Error> {
    let mut plan = LoadPlan::new(FIRST_LOAD_USER, users);
    let mut deliveries = Vec::with_capacity(events as usize);
    let mut open: Vec<Probe> = Vec::new();
    let mut latencies = Vec::new();
    let mut next_probe_user = FIRST_PROBE_USER;
    let started = Instant::now();
    let mut next_probe = started;
    let mut last_read = started;
    let mut load_done: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // The load: every event due by now at the paced rate.
        let due = ((now - started).as_secs_f64() * rate as f64) as u64;
        while (deliveries.len() as u64) < due.min(events) {
            let (user, value) = plan.next((rand::random(), rand::random()), now_ms());
            match bulk.enqueue(user, &value) {
                Ok(delivery) => deliveries.push(delivery),
                // librdkafka's queue is full: let it send.
                Err(_) => break,
            }
        }
        if load_done.is_none() && deliveries.len() as u64 == events {
            load_done = Some(Instant::now());
        }
        // A probe every PROBE_EVERY while the load runs.
        if load_done.is_none() && now >= next_probe {
            let ts_ms = now_ms();
            let user = next_probe_user;
            next_probe_user += 1;
            let value = presence_value("session_connected", user, "probe", Some("ios"), ts_ms);
            let sent = Instant::now();
            if single.enqueue(user, &value).is_ok() {
                open.push(Probe { user, ts_ms, sent });
            }
            next_probe += PROBE_EVERY;
        }
        if !open.is_empty() && now - last_read >= READ_EVERY {
            last_read = now;
            let ids: Vec<u64> = open.iter().map(|p| p.user).collect();
            let shown: HashMap<u64, Option<i64>> = bulk_read(conn, &ids)
                .await?
                .iter()
                .map(|s| (s["user_id"].as_u64().unwrap_or(0), s["last_active_ms"].as_i64()))
                .collect();
            open.retain(|p| {
                let visible = shown.get(&p.user).copied().flatten() == Some(p.ts_ms);
                if visible {
                    latencies.push(p.sent.elapsed());
                }
                !visible
            });
        }
        if let Some(done) = load_done {
            if open.is_empty() {
                let kept_per_s = events as f64 / (done - started).as_secs_f64();
                for delivery in deliveries {
                    if !matches!(delivery.await, Ok(Ok(_))) {
                        return Err("a record of the paced load was not delivered to the broker".into());
                    }
                }
                return Ok(AtRate { latencies, kept_per_s });
            }
            if done.elapsed() > PROBE_LIMIT {
                return Err(format!(
                    "{} probes not visible {} s after the paced load",
                    open.len(),
                    PROBE_LIMIT.as_secs()
                )
                .into());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
