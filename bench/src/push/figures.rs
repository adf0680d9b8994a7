//! The four push figures' lines, each against its DESIGN §10 target.

use std::time::Duration;

use super::{e2e, fanout, p_ms, resume, subscribe};
use crate::env::Servers;
use crate::options::Options;
use crate::report::Line;
use crate::{runs, spread, Error, RUN_LIMIT};

/// `push_e2e`: p99 under `MSK_BATCHING_WINDOW_MS` + 500 ms.
pub async fn push_e2e(options: &Options, servers: &Servers) -> Result<(), Error> {
    let window = Duration::from_millis(local_stack::kafka::settings::EVENT_SOURCE.batching_window_ms);
    let (probes, batch_size) = (options.push_probes, options.kafka_batch_size);
    let all =
        runs(servers, "push_e2e", options.runs, RUN_LIMIT, || e2e::run(servers, probes, batch_size, window)).await?;
    let p99 = spread(&all, |r| p_ms(&r.latencies, 0.99));
    let target_p99_ms = window.as_millis() as f64 + 500.0;
    Line::new("push_e2e")
        .spread("p50_ms", spread(&all, |r| p_ms(&r.latencies, 0.5)), 1)
        .spread("p99_ms", p99, 1)
        .median("first_probe_ms", spread(&all, |r| crate::report::ms(r.first_probe)), 1)
        .value("probes", probes)
        .value("batch_size", batch_size)
        .value("window_ms", window.as_millis())
        .value("runs", all.len())
        .value("target_p99_ms", target_p99_ms)
        .meets(p99.median < target_p99_ms)
        .print();
    Ok(())
}

/// `push_fanout_10000`: the last frame within 1 s of the first (p99 over
/// changes), one post per watching connection and change.
pub async fn push_fanout(options: &Options, servers: &Servers) -> Result<(), Error> {
    let (connections, changes) = (options.fanout_connections, options.fanout_changes);
    let all =
        runs(servers, "push_fanout_10000", options.runs, RUN_LIMIT, || fanout::run(servers, connections, changes))
            .await?;
    let spread_p99 = spread(&all, |r| p_ms(&r.spreads, 0.99));
    let want = (connections * changes) as u64;
    let posts_exact = all.iter().all(|r| r.posts == want && r.post_failures == 0 && r.gone == 0);
    let received_exact = all.iter().all(|r| r.received == want);
    Line::new("push_fanout_10000")
        .spread("spread_p50_ms", spread(&all, |r| p_ms(&r.spreads, 0.5)), 1)
        .spread("spread_p99_ms", spread_p99, 1)
        .spread("last_p50_ms", spread(&all, |r| p_ms(&r.last, 0.5)), 1)
        .spread("last_p99_ms", spread(&all, |r| p_ms(&r.last, 0.99)), 1)
        .median("posts_per_change", spread(&all, |r| r.posts as f64 / changes as f64), 1)
        .median("received_per_change", spread(&all, |r| r.received as f64 / changes as f64), 1)
        .value("post_failures", all.iter().map(|r| r.post_failures).sum::<u64>())
        .value("gone", all.iter().map(|r| r.gone).sum::<u64>())
        .median("connect_s", spread(&all, |r| r.connect_s), 1)
        .value("connections", connections)
        .value("changes", changes)
        .value("runs", all.len())
        .value("target_spread_p99_ms", 1000)
        .value("target_posts_per_change", connections)
        .meets(spread_p99.median <= 1000.0 && posts_exact && received_exact)
        .print();
    Ok(())
}

/// `stream_subscribe_1000`: every part of a 1,000-id snapshot, p99 under
/// 25 ms.
pub async fn stream_subscribe(options: &Options, servers: &Servers) -> Result<(), Error> {
    let n = options.subscribe_iterations;
    let all = runs(servers, "stream_subscribe_1000", options.runs, RUN_LIMIT, || subscribe::run(servers, n)).await?;
    let p99 = spread(&all, |r| p_ms(&r.subscribe, 0.99));
    Line::new("stream_subscribe_1000")
        .spread("p50_ms", spread(&all, |r| p_ms(&r.subscribe, 0.5)), 2)
        .spread("p99_ms", p99, 2)
        .spread("floor_p50_ms", spread(&all, |r| p_ms(&r.floor, 0.5)), 2)
        .spread("floor_p99_ms", spread(&all, |r| p_ms(&r.floor, 0.99)), 2)
        .spread("ratio_p99", spread(&all, |r| p_ms(&r.subscribe, 0.99) / p_ms(&r.floor, 0.99)), 2)
        .spread("ping_p99_ms", spread(&all, |r| p_ms(&r.ping, 0.99)), 2)
        .value("parts", all.last().map_or(0, |r| r.parts))
        .value("ids", subscribe::IDS)
        .value("iterations", n)
        .value("runs", all.len())
        .value("target_p99_ms", 25)
        .meets(p99.median < 25.0)
        .print();
    Ok(())
}

/// `stream_resume_1000`: nothing missing or wrong against a fresh
/// snapshot, and no delta entry the client already held.
pub async fn stream_resume(options: &Options, servers: &Servers) -> Result<(), Error> {
    let connections = options.resume_connections;
    let all =
        runs(servers, "stream_resume_1000", options.runs, RUN_LIMIT, || resume::run(servers, connections)).await?;
    let sum = |f: fn(&resume::Run) -> u64| all.iter().map(f).sum::<u64>();
    let (missing, wrong, superfluous, resets) =
        (sum(|r| r.missing), sum(|r| r.wrong), sum(|r| r.superfluous), sum(|r| r.resets));
    Line::new("stream_resume_1000")
        .spread("resume_p50_ms", spread(&all, |r| p_ms(&r.resume, 0.5)), 1)
        .spread("resume_p99_ms", spread(&all, |r| p_ms(&r.resume, 0.99)), 1)
        .median("delta_entries_per_resume", spread(&all, |r| r.delta_entries as f64 / connections as f64), 2)
        .median("changes_per_run", spread(&all, |r| r.changes as f64), 0)
        .value("missing", missing)
        .value("wrong", wrong)
        .value("superfluous", superfluous)
        .value("resets", resets)
        .value("connections", connections)
        .value("ids_each", resume::IDS_EACH)
        .value("runs", all.len())
        .value("target", "missing=0,wrong=0,superfluous=0")
        .meets(missing == 0 && wrong == 0 && superfluous == 0 && resets == 0)
        .print();
    Ok(())
}
