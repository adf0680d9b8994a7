//! `stream_resume_1000` (DESIGN §10): `connections` (1,000) connections
//! dropped, then resumed from their cursors while changes keep coming.
//!
//! One run, on a stack with `STREAM_ACTIVITY_REFRESH_MS=0` (so every change
//! is sent at once and the final comparison is exact; a held change would
//! be in a resume's delta all the same):
//! 1. 1,000 users written in a mix of states; each connection (its own end
//!    user) subscribes to `IDS_EACH` of them, each user watched by about
//!    as many connections; the client keeps the snapshot's entries and
//!    applies every `status` frame, keeping the last cursor.
//! 2. Changes start: every `CHANGE_EVERY`, `CHANGES_EACH` connects,
//!    disconnects or activities of random users through the aggregator,
//!    until the end of step 4.
//! 3. After a second of changes, every connection stops reading and is
//!    closed (frames posted meanwhile are lost to it); a second later each
//!    connects again and subscribes with its ids and last cursor, timed
//!    until the last part of its `delta`. Each delta entry equal to what
//!    the client already held counts as `superfluous` (a delta holds only
//!    what changed); a `reset` snapshot instead of a delta counts in
//!    `resets`.
//! 4. The resumed connections read on for a second, the changes stop, and
//!    once quiet (1.5 s) each subscribes again without a cursor: every
//!    entry of that fresh snapshot must equal the one the client built
//!    from snapshot + frames + delta + frames. Entries absent count as
//!    `missing`, different ones as `wrong`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use status_shared::app::now_ms;
use status_shared::domain::EventKind;
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::Client;
use super::subscribe::populate;
use super::{entries, PushStack, FIRST_VIEWER};
use crate::env::{BenchEnv, Servers};
use crate::{workload, Error};

/// Users written, and watched.
const POOL: u64 = 1000;
/// Ids each connection subscribes to.
pub const IDS_EACH: u64 = 20;
const CHANGE_EVERY: Duration = Duration::from_millis(100);
const CHANGES_EACH: usize = 5;
const CONCURRENCY: usize = 64;

/// What one run measured.
pub struct Run {
    pub resume: Vec<Duration>,
    pub delta_entries: u64,
    pub superfluous: u64,
    pub resets: u64,
    pub missing: u64,
    pub wrong: u64,
    /// Events committed while the run went on.
    pub changes: u64,
}

/// What one client holds: its ids, the entries it built, its last cursor.
struct View {
    viewer: u64,
    ids: Vec<u64>,
    held: HashMap<u64, Value>,
    cursor: Option<String>,
}

impl View {
    fn apply(&mut self, frame: &Value) {
        for (user, entry) in entries(frame) {
            self.held.insert(user, entry.clone());
        }
        if let Some(cursor) = frame["cursor"].as_str() {
            self.cursor = Some(cursor.to_owned());
        }
    }
}

pub async fn run(servers: &Servers, connections: usize) -> Result<Run, Error> {
    super::raise_open_files(2 * connections as u64 + 4_096)?;
    let env = BenchEnv::create(servers).await?;
    let outcome = async {
        let stack = Arc::new(PushStack::start(servers, &env, None, &[("STREAM_ACTIVITY_REFRESH_MS", "0")]).await?);
        let measured = measure(&stack, connections).await;
        if let Ok(stack) = Arc::try_unwrap(stack) {
            stack.stop().await;
        }
        measured
    }
    .await;
    env.remove().await;
    outcome
}

async fn measure(stack: &Arc<PushStack>, connections: usize) -> Result<Run, Error> {
    populate(stack, 1, POOL).await?;
    let views = (0..connections as u64).map(|i| View {
        viewer: FIRST_VIEWER + i,
        ids: (0..IDS_EACH).map(|j| (i * IDS_EACH + j) % POOL + 1).collect(),
        held: HashMap::new(),
        cursor: None,
    });
    // 1. Subscribed, snapshot held.
    let ws_url = stack.ws_url.as_str();
    let pairs: Vec<(Client, View)> = stream::iter(views)
        .map(|mut view| async move {
            let mut client = Client::connect(ws_url, view.viewer).await?;
            client.subscribe(&view.ids, None).await?;
            for frame in client.answer("snapshot").await? {
                view.apply(&frame);
            }
            Ok::<_, Error>((client, view))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;

    // 2. Changes keep coming.
    let (stop_changes, changes_stopped) = watch::channel(false);
    let made = Arc::new(AtomicU64::new(0));
    let changer = tokio::spawn(change(stack.clone(), made.clone(), changes_stopped));
    let outcome = phases(stack, pairs, &stop_changes).await;
    let _ = stop_changes.send(true);
    let changed = changer.await.map_err(|e| e.to_string())?;
    let mut run = outcome?;
    changed?;
    run.changes = made.load(Ordering::Relaxed);
    Ok(run)
}

async fn phases(
    stack: &PushStack,
    pairs: Vec<(Client, View)>,
    stop_changes: &watch::Sender<bool>,
) -> Result<Run, Error> {
    // 3. Read for a second, then drop every connection.
    let tracked = track(pairs, Duration::from_secs(1)).await?;
    let views: Vec<View> = tracked
        .into_iter()
        .map(|(client, view)| {
            drop(client);
            view
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ws_url = stack.ws_url.as_str();
    let resumed: Vec<(Client, View, Duration, Tally)> = stream::iter(views)
        .map(|view| async move { resume(ws_url, view).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut run = Run {
        resume: Vec::with_capacity(resumed.len()),
        delta_entries: 0,
        superfluous: 0,
        resets: 0,
        missing: 0,
        wrong: 0,
        changes: 0,
    };
    let mut pairs = Vec::with_capacity(resumed.len());
    for (client, view, took, tally) in resumed {
        run.resume.push(took);
        run.delta_entries += tally.entries;
        run.superfluous += tally.superfluous;
        run.resets += tally.resets;
        pairs.push((client, view));
    }
    // 4. Read on, stop the changes, and once quiet compare with a fresh
    // snapshot (frames that came meanwhile are applied first, in order).
    let pairs = track(pairs, Duration::from_secs(1)).await?;
    let _ = stop_changes.send(true);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let compared: Vec<(u64, u64)> = stream::iter(pairs)
        .map(|(client, view)| compare(client, view))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (missing, wrong) in compared {
        run.missing += missing;
        run.wrong += wrong;
    }
    Ok(run)
}

/// Every client reads and applies frames for `period`, then stops.
async fn track(pairs: Vec<(Client, View)>, period: Duration) -> Result<Vec<(Client, View)>, Error> {
    let until = Instant::now() + period;
    let readers: Vec<_> = pairs
        .into_iter()
        .map(|(mut client, mut view)| {
            tokio::spawn(async move {
                while let Some(frame) = client.next_until(until).await? {
                    view.apply(&frame);
                }
                Ok::<_, Error>((client, view))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(readers.len());
    for reader in readers {
        out.push(reader.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// What one resume's answer held.
#[derive(Default)]
struct Tally {
    entries: u64,
    superfluous: u64,
    resets: u64,
}

/// Connects again and resumes from the view's cursor.
async fn resume(ws_url: &str, mut view: View) -> Result<(Client, View, Duration, Tally), Error> {
    let mut client = Client::connect(ws_url, view.viewer).await?;
    let started = Instant::now();
    client.subscribe(&view.ids, view.cursor.as_deref()).await?;
    let mut tally = Tally::default();
    loop {
        let frame = client.next().await?;
        let kind = frame["type"].as_str().unwrap_or("");
        if kind == "delta" {
            for (user, entry) in entries(&frame) {
                tally.entries += 1;
                if view.held.get(&user) == Some(entry) {
                    tally.superfluous += 1;
                }
            }
        } else if kind == "snapshot" && frame["part"] == 1 {
            tally.resets += 1;
        }
        view.apply(&frame);
        if (kind == "delta" || kind == "snapshot") && frame["part"] == frame["parts"] {
            return Ok((client, view, started.elapsed(), tally));
        }
    }
}

/// A fresh snapshot against the view: (missing, wrong) entries.
async fn compare(mut client: Client, mut view: View) -> Result<(u64, u64), Error> {
    client.subscribe(&view.ids, None).await?;
    let (mut missing, mut wrong) = (0, 0);
    for frame in client.answer("snapshot").await? {
        if frame["type"] != "snapshot" {
            view.apply(&frame);
            continue;
        }
        for (user, entry) in entries(&frame) {
            match view.held.get(&user) {
                None => missing += 1,
                Some(held) if held != entry => wrong += 1,
                Some(_) => {}
            }
        }
    }
    client.close().await;
    Ok((missing, wrong))
}

/// Commits `CHANGES_EACH` random events every `CHANGE_EVERY` until
/// stopped, counting them in `made`.
async fn change(stack: Arc<PushStack>, made: Arc<AtomicU64>, mut stopped: watch::Receiver<bool>) -> Result<(), Error> {
    let mut rng = StdRng::seed_from_u64(24);
    let mut ticks = tokio::time::interval(CHANGE_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|s| *s) => return Ok(()),
        }
        let now = now_ms();
        let mut events = Vec::with_capacity(CHANGES_EACH);
        for _ in 0..CHANGES_EACH {
            let kind = match rng.random_range(0..3) {
                0 => EventKind::Connected,
                1 => EventKind::Disconnected,
                _ => EventKind::Activity,
            };
            let user = workload::user(rng.random_range(1..=POOL))?;
            events.push(workload::event(kind, user, rng.random_range(0..2), now)?);
        }
        stack.aggregate(&events).await?;
        made.fetch_add(CHANGES_EACH as u64, Ordering::Relaxed);
    }
}
