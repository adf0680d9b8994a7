//! `push_fanout_10000` (DESIGN §10): one user's change reaching the
//! `connections` (10,000) WebSocket connections that watch that user.
//!
//! One run: `connections` end users connect and subscribe to the one
//! watched user (64 at a time, each waiting for its snapshot); a reader
//! task per connection notes when each frame arrived. Then `changes`
//! changes of the watched user, one after another (alternately a connect
//! and a disconnect, so each is a status change nobody holds back),
//! committed through the aggregator. Per change: the spread from the
//! first connection's frame to the last (`spread_ms`, target ≤ 1 s at
//! p99 over the changes), and from the commit to the last frame
//! (`last_ms`). The next change waits until every connection has this
//! one and the coalescing window has passed, so each change is one frame.
//!
//! Posts: the stream function counts each frame its fan-outs posted
//! (`FramesSent`; a post that failed is counted in `PostFailures`, a
//! `410` in `ConnectionsGone`); with neither, every `PostToConnection`
//! call was one of the `FramesSent`. The run also counts the frames the
//! clients received, after a quiet second at the end, so a duplicate or
//! a frame to a connection not watching would show.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use status_shared::app::now_ms;
use status_shared::domain::EventKind;
use status_shared::telemetry::names::{CONNECTIONS_GONE, FRAMES_SENT, POST_FAILURES};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::client::{entry_of, Client};
use super::{raise_open_files, PushStack, FIRST_VIEWER};
use crate::env::{BenchEnv, Servers};
use crate::{workload, Error};

/// The watched user.
const WATCHED: u64 = 7;
/// Connections set up at once.
const SETUP_CONCURRENCY: usize = 64;
/// The most one change may take to reach every connection before the run
/// fails.
const CHANGE_LIMIT: Duration = Duration::from_secs(120);

/// What one run measured.
pub struct Run {
    /// Per change: first frame to last frame.
    pub spreads: Vec<Duration>,
    /// Per change: commit call to last frame.
    pub last: Vec<Duration>,
    pub connect_s: f64,
    /// `FramesSent` by the fan-outs of the changes.
    pub posts: u64,
    pub post_failures: u64,
    pub gone: u64,
    /// Frames the clients received after their snapshots.
    pub received: u64,
}

/// One frame's arrival at one connection: which change it shows
/// (`online`) and when.
struct Arrival {
    online: bool,
    at: Instant,
}

pub async fn run(servers: &Servers, connections: usize, changes: usize) -> Result<Run, Error> {
    raise_open_files(2 * connections as u64 + 4_096)?;
    let env = BenchEnv::create(servers).await?;
    let outcome = async {
        let stack = PushStack::start(servers, &env, None, &[]).await?;
        let measured = measure(&stack, connections, changes).await;
        stack.stop().await;
        measured
    }
    .await;
    env.remove().await;
    outcome
}

async fn measure(stack: &PushStack, connections: usize, changes: usize) -> Result<Run, Error> {
    let user = workload::user(WATCHED)?;
    // The watched user starts offline, having been online once.
    let start = now_ms();
    stack.aggregate(&[workload::event(EventKind::Connected, user, 0, start - 2_000)?]).await?;
    stack.aggregate(&[workload::event(EventKind::Disconnected, user, 0, start - 1_000)?]).await?;

    let started = Instant::now();
    let ws_url = Arc::new(stack.ws_url.clone());
    let clients: Vec<Client> = stream::iter(0..connections as u64)
        .map(|i| {
            let ws_url = ws_url.clone();
            async move {
                let mut client = Client::connect(&ws_url, FIRST_VIEWER + i).await?;
                client.subscribe(&[WATCHED], None).await?;
                client.answer("snapshot").await?;
                Ok::<_, Error>(client)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    let connect_s = started.elapsed().as_secs_f64();

    let (arrivals, mut arrived) = mpsc::unbounded_channel::<Arrival>();
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<_> =
        clients.into_iter().map(|c| tokio::spawn(read(c, arrivals.clone(), stopped.clone()))).collect();
    drop(arrivals);

    let frames_before = stack.stream_metric(FRAMES_SENT);
    let failures_before = stack.stream_metric(POST_FAILURES);
    let gone_before = stack.stream_metric(CONNECTIONS_GONE);
    let (mut spreads, mut last) = (Vec::with_capacity(changes), Vec::with_capacity(changes));
    let mut received = 0u64;
    let mut outcome = Ok(());
    for k in 0..changes {
        let online = k % 2 == 0;
        let kind = if online { EventKind::Connected } else { EventKind::Disconnected };
        let committed = Instant::now();
        if let Err(error) = stack.aggregate(&[workload::event(kind, user, 0, now_ms())?]).await {
            outcome = Err(error);
            break;
        }
        let deadline = committed + CHANGE_LIMIT;
        let (mut first, mut latest, mut count) = (None, committed, 0usize);
        while count < connections {
            match tokio::time::timeout_at(deadline, arrived.recv()).await {
                Ok(Some(arrival)) => {
                    received += 1;
                    if arrival.online == online {
                        count += 1;
                        first.get_or_insert(arrival.at);
                        latest = latest.max(arrival.at);
                    }
                }
                _ => break,
            }
        }
        if count < connections {
            outcome = Err(format!("change {k} reached {count} of {connections} connections").into());
            break;
        }
        spreads.push(latest.duration_since(first.unwrap_or(latest)));
        last.push(latest.duration_since(committed));
        // Past the coalescing window (STREAM_COALESCE_MS, 100 ms) of the
        // frame just sent, so the next change is a frame of its own.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Late or repeated frames, then the fan-outs' metrics (written when
    // each invocation ends).
    let want = frames_before + (connections * spreads.len()) as f64;
    let frames = stack.await_metric(FRAMES_SENT, want, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while arrived.try_recv().is_ok() {
        received += 1;
    }
    let _ = stop.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    outcome?;
    Ok(Run {
        spreads,
        last,
        connect_s,
        posts: (frames - frames_before).max(0.0) as u64,
        post_failures: (stack.stream_metric(POST_FAILURES) - failures_before).max(0.0) as u64,
        gone: (stack.stream_metric(CONNECTIONS_GONE) - gone_before).max(0.0) as u64,
        received,
    })
}

/// Reads one connection's frames until stopped, noting each `status`
/// frame about the watched user; then closes it.
async fn read(mut client: Client, arrivals: mpsc::UnboundedSender<Arrival>, mut stopped: watch::Receiver<bool>) {
    // No timer per connection: 10,000 of them waking would cost the cores.
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        tokio::select! {
            frame = client.next_until(deadline) => match frame {
                Ok(Some(frame)) => {
                    let at = Instant::now();
                    if let Some(entry) = entry_of(&frame, WATCHED) {
                        let _ = arrivals.send(Arrival { online: entry["status"] == "online", at });
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    client.close().await;
}
