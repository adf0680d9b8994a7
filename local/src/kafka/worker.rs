//! The worker of one partition's lane (DESIGN §9): gathers a batch of that
//! partition's records, calls the function until it succeeds or the
//! retries run out, and commits that partition's offset. Workers of
//! different partitions run side by side, each with its own retries and
//! backoff, so a failing batch holds back only its own partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::{watch, Semaphore};

use crate::kafka::batch::{description, BatchFunction, OnFailure, Outcome, RETRY_DELAY_FIRST, RETRY_DELAY_MAX};
use crate::kafka::event::{event_bytes, fits, msk_event, ranges, PartitionRange};
use crate::kafka::lanes::{GroupContext, Lane, LaneReceiver};
use crate::kafka::pacer::Pacer;
use crate::kafka::settings::KafkaSettings;

/// What every worker of one poller shares.
pub struct Shared<F, D> {
    pub consumer: Arc<StreamConsumer<GroupContext>>,
    pub settings: KafkaSettings,
    pub function: F,
    pub on_failure: D,
    pub event_source_arn: String,
    /// `MSK_MAX_CONCURRENCY` permits when set; unset, one call per
    /// partition is the only bound.
    pub permits: Option<Semaphore>,
    /// One lock per partition, held from a batch's first call to its
    /// commit: a lane that replaces a closed one (the partition came back
    /// after a rebalance) waits for the old lane's call to end.
    pub in_flight: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<()>>>>,
    /// Pauses and resumes the partitions (`pacer.rs`).
    pub pacer: Pacer,
    /// Set when the poller stops.
    pub stopping: watch::Receiver<bool>,
}

impl<F, D> Shared<F, D> {
    fn in_flight(&self, partition: i32) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(partition).or_default().clone()
    }
}

/// Waits until the lane is closed or the poller stops.
async fn halted(closed: &mut watch::Receiver<bool>, stopping: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = closed.wait_for(|c| *c) => {}
        _ = stopping.wait_for(|s| *s) => {}
    }
}

/// Runs one lane until it is closed or the poller stops. A batch whose
/// call is under way then is finished and committed first; one still
/// gathering or waiting to retry is dropped uncommitted.
pub async fn work<F: BatchFunction, D: OnFailure>(shared: Arc<Shared<F, D>>, mut lane: LaneReceiver) {
    let mut stopping = shared.stopping.clone();
    // A record that would have taken its batch past Lambda's payload
    // limit starts the next one.
    let mut carried = None;
    loop {
        let batch = tokio::select! {
            batch = gather(&shared, &lane.lane, &mut lane.records, &mut carried) => batch,
            () = halted(&mut lane.closed, &mut stopping) => return,
        };
        if batch.is_empty() {
            return;
        }
        if deliver(&shared, &mut lane, &batch).await == Outcome::Stopped {
            return;
        }
    }
}

/// Takes `carried`, or waits for a first record, then gathers until the
/// batch is full, its event would pass Lambda's payload limit
/// ([`fits`]; the record that would is left in `carried`), or the window
/// has passed since the first record. Empty only if the lane is gone.
async fn gather<F, D>(
    shared: &Shared<F, D>,
    lane: &Arc<Lane>,
    records: &mut mpsc::UnboundedReceiver<OwnedMessage>,
    carried: &mut Option<OwnedMessage>,
) -> Vec<OwnedMessage> {
    let mut batch = Vec::new();
    let first = match carried.take() {
        Some(first) => first,
        None => match records.recv().await {
            Some(first) => first,
            None => return batch,
        },
    };
    let mut bytes = event_bytes(&first);
    batch.push(first);
    let size = shared.settings.batch_size;
    let deadline = tokio::time::Instant::now() + shared.settings.batching_window;
    while batch.len() < size {
        // What is already waiting is taken without a timer.
        let next = match records.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match tokio::time::timeout_at(deadline, records.recv()).await {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => break,
            },
        };
        let adds = event_bytes(&next);
        if !fits(bytes, adds) {
            *carried = Some(next);
            break;
        }
        bytes += adds;
        batch.push(next);
    }
    if lane.taken(batch.len()) {
        shared.pacer.fill(lane.clone());
    }
    batch
}

/// Calls the function until it succeeds or the retries run out, then
/// commits; sends the description first when it gave up.
async fn deliver<F: BatchFunction, D: OnFailure>(
    shared: &Shared<F, D>,
    lane: &mut LaneReceiver,
    batch: &[OwnedMessage],
) -> Outcome {
    let settings = &shared.settings;
    let event = msk_event(batch, &shared.event_source_arn, &settings.bootstrap_servers);
    let ranges = ranges(batch);
    let mut stopping = shared.stopping.clone();
    let slot = shared.in_flight(lane.lane.partition);
    let mut delay = RETRY_DELAY_FIRST;
    let mut attempts = 0;
    let last_error = loop {
        // Only this lane's partition waits for the permit and the slot.
        let permit = tokio::select! {
            permit = acquire(shared.permits.as_ref()) => permit,
            () = halted(&mut lane.closed, &mut stopping) => return Outcome::Stopped,
        };
        let guard = tokio::select! {
            guard = slot.lock() => guard,
            () = halted(&mut lane.closed, &mut stopping) => return Outcome::Stopped,
        };
        attempts += 1;
        let called = shared.function.call(&event).await;
        drop(permit);
        let error = match called {
            Ok(()) => {
                commit(shared, lane, &ranges).await;
                drop(guard);
                return Outcome::Done { attempts };
            }
            Err(error) => error,
        };
        drop(guard);
        tracing::warn!(
            partition = lane.lane.partition, attempt = attempts, records = batch.len(), %error,
            "function failed; the batch will be retried"
        );
        if attempts > settings.max_retries {
            break error;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = halted(&mut lane.closed, &mut stopping) => return Outcome::Stopped,
        }
        delay = (delay * 2).min(RETRY_DELAY_MAX);
    };
    // Every description must be on the queue before the commit, or a
    // crash in between would lose the batch for good; a queue that
    // refuses is retried for as long as it takes.
    for range in &ranges {
        let description = description(range, attempts, &last_error, &settings.consumer_group);
        let mut delay = RETRY_DELAY_FIRST;
        while let Err(error) = shared.on_failure.send(&description).await {
            tracing::warn!(%error, queue = %settings.on_failure_queue, "on-failure queue refused; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = halted(&mut lane.closed, &mut stopping) => return Outcome::Stopped,
            }
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        }
        tracing::error!(
            topic = %range.topic, partition = range.partition, first_offset = range.first_offset,
            last_offset = range.last_offset, attempts, "batch given up on; its description is on the on-failure queue"
        );
    }
    let guard = slot.lock().await;
    commit(shared, lane, &ranges).await;
    drop(guard);
    Outcome::GaveUp { attempts }
}

/// A permit when `MSK_MAX_CONCURRENCY` is set; the semaphore is never
/// closed, so this waits for one.
async fn acquire(permits: Option<&Semaphore>) -> Option<tokio::sync::SemaphorePermit<'_>> {
    match permits {
        Some(permits) => permits.acquire().await.ok(),
        None => None,
    }
}

/// Commits the offset after the partition's last record, synchronously
/// (on a blocking thread, as librdkafka's call blocks). A lane the group
/// took away commits nothing: the partition's new owner has started at
/// the committed offset, which must not move under it. A failed commit is
/// logged: the records will be delivered again, never skipped.
async fn commit<F, D>(shared: &Shared<F, D>, lane: &LaneReceiver, ranges: &[PartitionRange]) {
    if *lane.closed.borrow() && !*shared.stopping.borrow() {
        tracing::info!(partition = lane.lane.partition, "partition revoked mid-batch; its new owner delivers it again");
        return;
    }
    let mut offsets = TopicPartitionList::new();
    for r in ranges {
        if let Err(error) = offsets.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.last_offset + 1)) {
            tracing::warn!(%error, "cannot name an offset to commit");
        }
    }
    let consumer = shared.consumer.clone();
    let committed = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "commit failed; the batch will be delivered again"),
        Err(error) => tracing::warn!(%error, "commit task failed; the batch will be delivered again"),
    }
}
