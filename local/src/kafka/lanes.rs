//! One lane per partition the poller holds (DESIGN §9 "partitions"): the
//! records of that partition waiting for their batch, and the consumer
//! group's view of which partitions are ours.
//!
//! The poller's one consumer hands each record to its partition's lane;
//! the lane's worker (`worker.rs`) gathers, calls and commits. A lane that
//! holds more than [`Lane::high_water`] records pauses its partition's
//! fetching, and its worker resumes it once the lane is down to half that,
//! so a partition whose batch is being retried piles up nothing beyond a
//! few batches while the other partitions keep flowing.
//!
//! A lane also rests its partition after a fetch of it came back empty
//! (the poller's pacer, `poller.rs`): paused until the pacer wakes it, so
//! an idle partition is fetched a few times a second rather than as fast
//! as the broker answers. The partition is paused while either holds it:
//! its lane is full, or it rests.
//!
//! When the group takes a partition away (another poller joined, or this
//! one is leaving) its lane is closed: the records it held are dropped
//! uncommitted, and a batch still retrying stops, so the partition's new
//! owner starts at the committed offset and no record is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use tokio::sync::{mpsc, watch};

/// The records of one partition on their way to its worker.
pub struct Lane {
    pub partition: i32,
    sender: mpsc::UnboundedSender<OwnedMessage>,
    /// Records sent and not yet taken by the worker.
    queued: AtomicUsize,
    /// Why this lane holds its partition paused; the lock is held across
    /// the pause or resume call so the two never cross.
    holds: Mutex<Holds>,
    /// Set once the group took the partition away or the poller stops.
    closed: watch::Sender<bool>,
    high_water: usize,
}

/// The reasons a lane may hold its partition paused, and whether it is.
#[derive(Default)]
struct Holds {
    /// More than the high water is waiting for the worker.
    full: bool,
    /// The last fetch came back empty; the pacer wakes it.
    resting: bool,
    /// Whether the partition is paused at the consumer now.
    paused: bool,
}

/// The worker's end of a [`Lane`].
pub struct LaneReceiver {
    pub lane: Arc<Lane>,
    pub records: mpsc::UnboundedReceiver<OwnedMessage>,
    pub closed: watch::Receiver<bool>,
}

impl Lane {
    /// A lane for `partition` that pauses fetching at `high_water` records.
    pub fn open(partition: i32, high_water: usize) -> (Arc<Self>, LaneReceiver) {
        let (sender, records) = mpsc::unbounded_channel();
        let (closed, closed_rx) = watch::channel(false);
        let lane = Arc::new(Self {
            partition,
            sender,
            queued: AtomicUsize::new(0),
            holds: Mutex::new(Holds::default()),
            closed,
            high_water: high_water.max(1),
        });
        (lane.clone(), LaneReceiver { lane, records, closed: closed_rx })
    }

    /// Records waiting before this lane pauses its partition: a few batches.
    pub fn high_water(batch_size: usize) -> usize {
        batch_size.saturating_mul(4).max(1_000)
    }

    /// Hands `message` to the worker; pauses the partition if the lane is
    /// full. Answers false if the worker is gone.
    pub fn push<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, topic: &str, message: OwnedMessage) -> bool {
        if self.sender.send(message).is_err() {
            return false;
        }
        let queued = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if queued >= self.high_water {
            let mut holds = lock(&self.holds);
            if !holds.full && self.queued.load(Ordering::SeqCst) >= self.high_water {
                holds.full = true;
                self.apply(&mut holds, consumer, topic);
            }
        }
        true
    }

    /// Counts `n` records as taken by the worker; lifts the lane's hold on
    /// its partition if it was full and is now down to half its high water.
    pub fn taken<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, topic: &str, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        let mut holds = lock(&self.holds);
        if holds.full && self.queued.load(Ordering::SeqCst) <= self.high_water / 2 {
            holds.full = false;
            self.apply(&mut holds, consumer, topic);
        }
    }

    /// Rests the partition: a fetch of it came back empty, so it is not
    /// fetched again until [`Lane::wake`].
    pub fn rest<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, topic: &str) {
        let mut holds = lock(&self.holds);
        if !holds.resting {
            holds.resting = true;
            self.apply(&mut holds, consumer, topic);
        }
    }

    /// Ends the partition's rest; it is fetched again unless the lane is full.
    pub fn wake<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, topic: &str) {
        let mut holds = lock(&self.holds);
        if holds.resting {
            holds.resting = false;
            self.apply(&mut holds, consumer, topic);
        }
    }

    /// Pauses or resumes the partition so that it is paused exactly while
    /// a hold is on. A call the consumer refuses is logged and tried again
    /// at the next change.
    fn apply<C: Consumer<X>, X: ConsumerContext>(&self, holds: &mut Holds, consumer: &C, topic: &str) {
        let pause = holds.full || holds.resting;
        if pause == holds.paused {
            return;
        }
        let list = one(topic, self.partition);
        let done = if pause { consumer.pause(&list) } else { consumer.resume(&list) };
        match done {
            Ok(()) => holds.paused = pause,
            Err(error) => {
                tracing::warn!(%error, partition = self.partition, pause, "cannot pause or resume a partition")
            }
        }
    }

    /// Closes the lane: its worker drops what it holds and stops.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// The lanes of the partitions this poller holds, by partition.
#[derive(Clone, Default)]
pub struct Lanes(Arc<Mutex<HashMap<i32, Arc<Lane>>>>);

impl Lanes {
    pub fn get(&self, partition: i32) -> Option<Arc<Lane>> {
        lock(&self.0).get(&partition).cloned()
    }

    pub fn insert(&self, lane: Arc<Lane>) {
        if let Some(old) = lock(&self.0).insert(lane.partition, lane) {
            old.close();
        }
    }

    /// Closes and forgets the lane of `partition`, if any.
    pub fn close(&self, partition: i32) {
        if let Some(lane) = lock(&self.0).remove(&partition) {
            lane.close();
        }
    }

    /// Closes every lane: the poller is stopping.
    pub fn close_all(&self) {
        for (_, lane) in lock(&self.0).drain() {
            lane.close();
        }
    }
}

/// The consumer's context: closes the lanes of partitions the group takes
/// away, publishes the partitions this poller holds, and the fetch
/// requests librdkafka's statistics count.
pub struct GroupContext {
    pub lanes: Lanes,
    pub assignment: watch::Sender<Vec<i32>>,
    pub fetches: watch::Sender<FetchCount>,
}

/// The fetch requests the poller's consumer has sent, as librdkafka's
/// statistics (`statistics.interval.ms`) last counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchCount {
    /// When librdkafka took the statistics, on its own monotonic clock, in
    /// microseconds (0: no statistics yet).
    pub at_us: i64,
    /// Fetch requests sent to every broker since the consumer started.
    pub requests: i64,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let requests = statistics.brokers.values().filter_map(|b| b.req.get("Fetch")).sum();
        self.fetches.send_replace(FetchCount { at_us: statistics.ts, requests });
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            for element in list.elements() {
                self.lanes.close(element.partition());
            }
            tracing::info!(partitions = ?partitions(list), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                // A partition that comes back starts unpaused, whatever the
                // lane that held it before had done.
                if let Err(error) = consumer.resume(list) {
                    tracing::warn!(%error, "cannot resume assigned partitions");
                }
                tracing::info!(partitions = ?partitions(list), "partitions assigned");
                self.assignment.send_replace(partitions(list));
            }
            Rebalance::Revoke(_) => {
                self.assignment.send_replace(Vec::new());
            }
            Rebalance::Error(error) => tracing::warn!(%error, "consumer group rebalance failed"),
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    let mut out: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
    out.sort_unstable();
    out
}

/// A list naming one partition of `topic`.
pub fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}

/// A poisoned lock still guards plain data here: take it anyway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
