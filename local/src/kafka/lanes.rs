//! One lane per partition the poller holds (DESIGN §9 "partitions"): the
//! records of that partition waiting for their batch, and the consumer
//! group's view of which partitions are ours.
//!
//! The poller's one consumer hands each record to its partition's lane;
//! the lane's worker (`worker.rs`) gathers, calls and commits. A lane that
//! holds [`Lane::high_water`] records or more has its partition paused,
//! and resumed once the lane is down to half that, so a partition whose
//! batch is being retried piles up nothing beyond a few batches while the
//! other partitions keep flowing. A partition also rests after a fetch of
//! it reached its end. The pacer (`pacer.rs`) decides both, and is the one
//! place that pauses and resumes; a lane only counts, and keeps the
//! pacer's holds on its partition.
//!
//! When the group takes a partition away (another poller joined, or this
//! one is leaving) its lane is closed: the records it held are dropped
//! uncommitted, and a batch still retrying stops, so the partition's new
//! owner starts at the committed offset and no record is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::{mpsc, watch};

/// [`Lane::next`] before the lane was handed a record.
const UNKNOWN: i64 = -1;

/// The records of one partition on their way to its worker.
pub struct Lane {
    pub partition: i32,
    sender: mpsc::UnboundedSender<OwnedMessage>,
    /// Records sent and not yet taken by the worker.
    queued: AtomicUsize,
    /// The offset after the last record handed to this lane, or what the
    /// pacer learnt it starts at ([`UNKNOWN`] until either).
    next: AtomicI64,
    /// Whether the pacer holds the partition paused as full; the worker
    /// reads it to tell the pacer when records were taken.
    pub(crate) full: AtomicBool,
    /// The pacer's holds on the partition: only the pacer's thread takes
    /// this lock.
    pub(crate) holds: Mutex<Holds>,
    /// Set once the group took the partition away or the poller stops.
    closed: watch::Sender<bool>,
    high_water: usize,
}

/// The reasons the pacer may hold a partition paused, and whether it is.
#[derive(Default)]
pub(crate) struct Holds {
    /// The lane reached its high water and is not down to half yet.
    pub full: bool,
    /// A fetch reached the partition's end and no record came since.
    pub resting: bool,
    /// Whether the partition is paused at the consumer now.
    pub paused: bool,
}

/// What became of a record handed to a lane.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the lane just reached its high water: tell the pacer.
    HighWater,
    /// The lane's worker is gone; the record was dropped.
    WorkerGone,
}

/// The worker's end of a [`Lane`].
pub struct LaneReceiver {
    pub lane: Arc<Lane>,
    pub records: mpsc::UnboundedReceiver<OwnedMessage>,
    pub closed: watch::Receiver<bool>,
}

impl Lane {
    /// A lane for `partition` that is full at `high_water` records.
    pub fn open(partition: i32, high_water: usize) -> (Arc<Self>, LaneReceiver) {
        let (sender, records) = mpsc::unbounded_channel();
        let (closed, closed_rx) = watch::channel(false);
        let lane = Arc::new(Self {
            partition,
            sender,
            queued: AtomicUsize::new(0),
            next: AtomicI64::new(UNKNOWN),
            full: AtomicBool::new(false),
            holds: Mutex::new(Holds::default()),
            closed,
            high_water: high_water.max(1),
        });
        (lane.clone(), LaneReceiver { lane, records, closed: closed_rx })
    }

    /// Records waiting before a lane is full: a few batches.
    pub fn high_water(batch_size: usize) -> usize {
        batch_size.saturating_mul(4).max(1_000)
    }

    /// This lane's high water, in records.
    pub(crate) fn high_water_mark(&self) -> usize {
        self.high_water
    }

    /// Records handed to the worker and not taken yet.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// The offset this lane reads next, if known.
    pub(crate) fn next(&self) -> Option<i64> {
        Some(self.next.load(Ordering::SeqCst)).filter(|n| *n != UNKNOWN)
    }

    /// Sets where the lane starts reading, unless it was handed a record.
    pub(crate) fn learn_next(&self, start: i64) {
        let _ = self.next.compare_exchange(UNKNOWN, start, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Hands `message` to the worker.
    pub fn push(&self, message: OwnedMessage) -> Pushed {
        self.next.store(message.offset() + 1, Ordering::SeqCst);
        if self.sender.send(message).is_err() {
            return Pushed::WorkerGone;
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) + 1 == self.high_water {
            Pushed::HighWater
        } else {
            Pushed::Queued
        }
    }

    /// Counts `n` records as taken by the worker. Answers whether the
    /// pacer must look at the lane: it holds the partition as full.
    pub fn taken(&self, n: usize) -> bool {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        self.full.load(Ordering::SeqCst)
    }

    /// Whether the lane was closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
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
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
