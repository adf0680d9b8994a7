//! `push_fanout_10000` (DESIGN §10): one user's change reaching the
//! `connections` (10,000) WebSocket connections that watch that user.
//!
//! One run: the stack serves in this process; the `connections` end users
//! are real WebSocket clients in a child process ([`super::clients`]), so
//! that each process holds one socket per connection. They connect and
//! subscribe to the one watched user (64 at a time, each waiting for its
//! snapshot) and report each frame's arrival, in microseconds since the
//! epoch, over the child's standard output. Then `changes` changes of the
//! watched user, one after another (alternately a connect and a
//! disconnect, so each is a status change nobody holds back), committed
//! through the aggregator. Per change: the spread from the first
//! connection's frame to the last (`spread_ms`, target ≤ 1 s at p99 over
//! the changes), and from the commit to the last frame (`last_ms`). The
//! next change waits until every connection has this one and the
//! coalescing window has passed, so each change is one frame.
//!
//! Posts: the stream function counts each frame its fan-outs posted
//! (`FramesSent`; a post that failed is counted in `PostFailures`, a
//! `410` in `ConnectionsGone`); with neither, every `PostToConnection`
//! call was one of the `FramesSent`. The run also counts the frames the
//! clients received, after a quiet second at the end, so a duplicate or
//! a frame to a connection not watching would show.

use std::process::Stdio;
use std::time::Duration;

use status_shared::app::now_ms;
use status_shared::domain::EventKind;
use status_shared::telemetry::names::{CONNECTIONS_GONE, FRAMES_SENT, POST_FAILURES};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::clients::{epoch_us, Report, SUBCOMMAND};
use super::{raise_open_files, PushStack, FIRST_VIEWER};
use crate::env::{BenchEnv, Servers};
use crate::{workload, Error};

/// The watched user.
const WATCHED: u64 = 7;
/// The most one change may take to reach every connection before the run
/// fails.
const CHANGE_LIMIT: Duration = Duration::from_secs(120);
/// The most the clients may take to connect and subscribe.
const SETUP_LIMIT: Duration = Duration::from_secs(600);

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

pub async fn run(servers: &Servers, connections: usize, changes: usize) -> Result<Run, Error> {
    // The stack's side: a server socket per connection.
    raise_open_files(connections as u64 + 4_096)?;
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

/// The client process and its reports.
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    reports: mpsc::UnboundedReceiver<Report>,
}

impl Clients {
    /// Starts this executable as the client process for `connections`
    /// end users at `ws_url`.
    fn start(ws_url: &str, connections: usize) -> Result<Self, Error> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .arg(ws_url)
            .arg(connections.to_string())
            .arg(FIRST_VIEWER.to_string())
            .arg(WATCHED.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the client process: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("the client process has no standard output")?;
        let (sender, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::with_capacity(64 * 1024, stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let report =
                    Report::parse(&line).unwrap_or_else(|| Report::Error(format!("unreadable report {line:?}")));
                if sender.send(report).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, stdin, reports })
    }

    /// The next report before `deadline`; `None` when the process ended
    /// or the deadline passed.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Option<Report> {
        tokio::time::timeout_at(deadline, self.reports.recv()).await.ok().flatten()
    }

    /// Closes the client process's input, so it closes its connections,
    /// and waits for it to end (bounded, then killed); returns the frames
    /// it reported meanwhile.
    async fn stop(mut self) -> u64 {
        drop(self.stdin.take());
        let mut frames = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Some(report) = self.next(deadline).await {
            match report {
                Report::Frame { .. } => frames += 1,
                Report::Closed | Report::Error(_) => break,
                Report::Connected(_) => {}
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        frames
    }
}

async fn measure(stack: &PushStack, connections: usize, changes: usize) -> Result<Run, Error> {
    let user = workload::user(WATCHED)?;
    // The watched user starts offline, having been online once.
    let start = now_ms();
    stack.aggregate(&[workload::event(EventKind::Connected, user, 0, start - 2_000)?]).await?;
    stack.aggregate(&[workload::event(EventKind::Disconnected, user, 0, start - 1_000)?]).await?;

    let mut clients = Clients::start(&stack.ws_url, connections)?;
    let connect_s = match clients.next(tokio::time::Instant::now() + SETUP_LIMIT).await {
        Some(Report::Connected(seconds)) => seconds,
        Some(Report::Error(error)) => return Err(format!("the client process failed: {error}").into()),
        other => return Err(format!("the client process did not connect: {other:?}").into()),
    };

    let frames_before = stack.stream_metric(FRAMES_SENT);
    let failures_before = stack.stream_metric(POST_FAILURES);
    let gone_before = stack.stream_metric(CONNECTIONS_GONE);
    let (mut spreads, mut last) = (Vec::with_capacity(changes), Vec::with_capacity(changes));
    let mut received = 0u64;
    let mut outcome = Ok(());
    for k in 0..changes {
        let online = k % 2 == 0;
        let kind = if online { EventKind::Connected } else { EventKind::Disconnected };
        let committed_us = epoch_us();
        let committed = tokio::time::Instant::now();
        if let Err(error) = stack.aggregate(&[workload::event(kind, user, 0, now_ms())?]).await {
            outcome = Err(error);
            break;
        }
        let deadline = committed + CHANGE_LIMIT;
        let (mut first, mut latest, mut count) = (u64::MAX, committed_us, 0usize);
        let mut failed = None;
        while count < connections {
            match clients.next(deadline).await {
                Some(Report::Frame { online: shows, at_us }) => {
                    received += 1;
                    if shows == online {
                        count += 1;
                        first = first.min(at_us);
                        latest = latest.max(at_us);
                    }
                }
                Some(Report::Error(error)) => {
                    failed = Some(format!("the client process failed: {error}"));
                    break;
                }
                Some(_) | None => break,
            }
        }
        if let Some(error) = failed {
            outcome = Err(error.into());
            break;
        }
        if count < connections {
            outcome = Err(format!("change {k} reached {count} of {connections} connections").into());
            break;
        }
        spreads.push(Duration::from_micros(latest.saturating_sub(first)));
        last.push(Duration::from_micros(latest.saturating_sub(committed_us)));
        // Past the coalescing window (STREAM_COALESCE_MS, 100 ms) of the
        // frame just sent, so the next change is a frame of its own.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Late or repeated frames, then the fan-outs' metrics (written when
    // each invocation ends).
    let want = frames_before + (connections * spreads.len()) as f64;
    let frames = stack.await_metric(FRAMES_SENT, want, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(report) = clients.reports.try_recv() {
        if let Report::Frame { .. } = report {
            received += 1;
        }
    }
    received += clients.stop().await;
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
