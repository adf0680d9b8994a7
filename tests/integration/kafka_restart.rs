//! The local stack's process SIGKILLed while records flow, and started
//! again (DESIGN §9 "restarts"): every record the broker acknowledged ends
//! applied, read back over the HTTP API, and nothing goes to the on-failure
//! queue; and the restarted poller takes its partitions back at once
//! rather than after its dead self's session. The stack runs as the
//! `online-status-local` binary, on its own database, key prefix, tables,
//! bus, topic, group and queue.

use std::time::{Duration, Instant};

use local_stack::kafka::produce::presence_value;
use status_tests::database_server_url;
use status_tests::kafka::PollingRun;
use status_tests::process::{local_stack_binary, spawn_local_stack, Spawned};
use status_tests::stack::wall_clock_ms;

const WAIT: Duration = Duration::from_secs(90);

/// The dead poller's session in [`a_restarted_stack_takes_its_partitions_back_without_waiting_out_its_dead_session`]:
/// far longer than [`WAIT`], so a restart that had to wait it out fails.
const DEAD_SESSION_MS: u64 = 600_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_sigkilled_mid_stream_and_started_again_applies_every_acknowledged_record() {
    let run = PollingRun::new(4, database_server_url(), "restart").await;
    let topic = &run.topic;
    let env = run.env();
    let mut stack = spawn_local_stack(env.clone()).await;

    // 40 users, 30 records each: a connect, then activity, each record
    // one ms later than the user's previous one. The first 20 users' records
    // are all produced at once, before the kill, so some are acknowledged
    // and not yet committed when it comes; the other 20 stream on, round by
    // round, through the kill and the restart.
    let (users, rounds) = (7_000u64..7_040, 30i64);
    let base = wall_clock_ms() - 60_000;
    let producer = topic.producer();
    let produce = tokio::spawn(async move {
        let record = |user: u64, round: i64| {
            let kind = if round == 0 { "session_connected" } else { "activity" };
            presence_value(kind, user, "s", Some("ios"), base + round)
        };
        for round in 0..rounds {
            for user in 7_000u64..7_020 {
                producer.send(user, &record(user, round), &[]).await.expect("the broker acknowledges");
            }
        }
        for round in 0..rounds {
            for user in 7_020u64..7_040 {
                producer.send(user, &record(user, round), &[]).await.expect("the broker acknowledges");
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    // Once records are being applied, the process dies where it stands.
    let deadline = Instant::now() + WAIT;
    while stack.status(users.start).await["last_active_ms"].as_i64().unwrap_or(0) < base + 3 {
        assert!(Instant::now() < deadline, "nothing applied:\n{}", stack.stderr.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL: no shutdown, nothing finished or committed.
    stack.child.kill().await.expect("SIGKILL");
    let mut stack = spawn_local_stack(env).await;
    produce.await.expect("every record acknowledged");

    // Every user ends at its last record, whatever was applied twice.
    let last = base + rounds - 1;
    let deadline = Instant::now() + WAIT;
    for user in users {
        loop {
            let body = stack.status(user).await;
            if body["last_active_ms"] == last && body["status"] != "offline" {
                break;
            }
            assert!(Instant::now() < deadline, "user {user} stopped at {body}:\n{}", stack.stderr.text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stack.child.kill().await.expect("SIGKILL");
    assert!(topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}

/// How long after its process was started a stack got to each point.
#[derive(Clone, Copy, Debug)]
struct Resumed {
    /// Its banner: every resource ready, both ports bound.
    banner: Duration,
    /// Its log says the group assigned it partitions.
    assigned: Duration,
    /// The record waiting for it reads as applied over the HTTP API.
    applied: Duration,
}

/// Starts the stack with `env` and watches, every 5 ms, until `user` reads
/// with `last_active_ms` = `ts_ms`.
async fn start_and_watch(env: Vec<(&'static str, String)>, user: u64, ts_ms: i64) -> (Resumed, Spawned) {
    let started = Instant::now();
    let stack = spawn_local_stack(env).await;
    let banner = started.elapsed();
    let mut assigned = None;
    loop {
        if assigned.is_none() && stack.stderr.text().contains("partitions assigned") {
            assigned = Some(started.elapsed());
        }
        if stack.status(user).await["last_active_ms"] == ts_ms {
            break;
        }
        assert!(started.elapsed() < WAIT, "user {user} never read {ts_ms}:\n{}", stack.stderr.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied = started.elapsed();
    (Resumed { banner, assigned: assigned.unwrap_or(applied), applied }, stack)
}

/// A stack started on `run` applies a connect produced before it; it is
/// SIGKILLed, an activity is produced while it is down, and a new stack
/// with the same `env` applies it. How long each start took.
async fn kill_and_restart(run: &PollingRun, env: Vec<(&'static str, String)>) -> (Resumed, Resumed) {
    local_stack_binary().await;
    let producer = run.topic.producer();
    let (user, base) = (7_100, wall_clock_ms() - 60_000);
    producer.send(user, &presence_value("session_connected", user, "s", None, base), &[]).await.expect("produced");
    let (first, mut stack) = start_and_watch(env.clone(), user, base).await;
    stack.child.kill().await.expect("SIGKILL");
    producer.send(user, &presence_value("activity", user, "s", None, base + 1), &[]).await.expect("produced");
    let (again, mut stack) = start_and_watch(env, user, base + 1).await;
    stack.child.kill().await.expect("SIGKILL");
    (first, again)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_stack_takes_its_partitions_back_without_waiting_out_its_dead_session() {
    // Its dead self holds the partitions for 10 minutes unless something
    // takes its place in the group: the restarted stack, as the same
    // static member, does at once.
    let run = PollingRun::new(4, database_server_url(), "rejoin").await;
    let mut env = run.env();
    env.push(("KAFKA_SESSION_TIMEOUT_MS", DEAD_SESSION_MS.to_string()));
    kill_and_restart(&run, env).await;
    assert!(run.topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}

/// Not a test: measures how long a restarted stack takes to resume
/// (`docs/BENCHMARKS.md`, "Restart"). `RESUME_RUNS` runs (default 7),
/// each printing one line, then the medians:
/// `cargo test -p status-tests --test integration kafka_restart::measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, run by hand"]
async fn measure_how_long_a_restarted_stack_takes_to_resume() {
    let runs: usize = std::env::var("RESUME_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(7);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut seen: Vec<(Resumed, Resumed)> = Vec::new();
    for i in 0..runs {
        let run = PollingRun::new(4, database_server_url(), "resume").await;
        let (first, again) = kill_and_restart(&run, run.env()).await;
        println!(
            "resume run={i} first_banner_ms={:.0} first_assigned_ms={:.0} first_applied_ms={:.0} \
             restart_banner_ms={:.0} restart_assigned_ms={:.0} restart_applied_ms={:.0}",
            ms(first.banner),
            ms(first.assigned),
            ms(first.applied),
            ms(again.banner),
            ms(again.assigned),
            ms(again.applied)
        );
        seen.push((first, again));
    }
    let median = |pick: &dyn Fn(&(Resumed, Resumed)) -> Duration| {
        let mut all: Vec<f64> = seen.iter().map(|s| ms(pick(s))).collect();
        all.sort_by(f64::total_cmp);
        all[all.len() / 2]
    };
    println!(
        "resume median runs={runs} first_banner_ms={:.0} first_assigned_ms={:.0} first_applied_ms={:.0} \
         restart_banner_ms={:.0} restart_assigned_ms={:.0} restart_applied_ms={:.0}",
        median(&|s| s.0.banner),
        median(&|s| s.0.assigned),
        median(&|s| s.0.applied),
        median(&|s| s.1.banner),
        median(&|s| s.1.assigned),
        median(&|s| s.1.applied)
    );
}
