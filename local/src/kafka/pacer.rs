//! The pacer (DESIGN §9 "pacing"): the one place that pauses and resumes
//! the poller's partitions, on a thread of its own, since librdkafka's
//! pause, resume and offset queries block.
//!
//! A partition is paused while either of two holds is on it:
//!
//! - **full**: its lane holds [`Lane::high_water`] records or more that
//!   its worker has not taken; lifted once the lane is down to half that;
//! - **resting**: a fetch of it reached its end (librdkafka's
//!   `PartitionEOF`). The local broker answers a fetch with nothing at
//!   once instead of holding it up to `fetch.wait.max.ms` as Kafka does,
//!   so a partition left fetching at its end would be fetched as fast as
//!   the broker answers, thousands of times a second.
//!
//! A rest is never lifted blindly. Every [`FETCH_WAIT_MAX`] while any
//! partition rests, the pacer asks the ends (high watermarks) of all the
//! resting partitions in one ListOffsets request, and lifts the rest of
//! each partition whose end is past the next offset its lane reads. An
//! idle poller so sends about 20 small requests a second and no Fetch at
//! all, and a record produced to a resting partition is fetched within
//! about [`FETCH_WAIT_MAX`] plus two round trips to the broker.
//!
//! librdkafka applies a resume on its main thread without waking the
//! broker thread that fetches the partition, and an idle broker thread
//! sleeps up to a second before it looks again. Any request to that
//! broker wakes it, so after every resume (a rest lifted, or a lane back
//! from its high water) the pacer sends one more ListOffsets for the
//! resumed partitions. librdkafka's resume returns once its main thread
//! has applied it, so the broker thread, woken by the request after it,
//! sees the partition fetchable.
//!
//! The next offset a lane reads is the one after the last record handed
//! to it. A lane that has been handed nothing since the partition was
//! assigned reads where librdkafka started the partition: its committed
//! offset, or with none and `TRIM_HORIZON` the partition's first offset
//! (its end was there: the partition was empty). With `LATEST` and no
//! committed offset that start is unknown here, and such a partition's
//! rest is lifted at every tick, as is any rest whose end could not be
//! asked: a record may cost extra fetches, but never waits for good.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::lanes::{lock, one, GroupContext, Holds, Lane};
use crate::kafka::settings::StartingPosition;

/// How long a fetch may wait for records (`fetch.wait.max.ms`), and how
/// often the pacer asks whether a resting partition has new records: the
/// floor of the produce-to-fetch latency when records trickle in.
pub const FETCH_WAIT_MAX: Duration = Duration::from_millis(50);

/// How long the pacer waits for the broker to answer one of its
/// requests; a request not answered counts as records waiting.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the pacer is told about a lane.
enum Note {
    /// A fetch of the lane's partition reached its end.
    Rest(Arc<Lane>),
    /// The lane's count of records waiting crossed its high water, or fell
    /// while the lane is full.
    Fill(Arc<Lane>),
}

/// The handle of the pacer's thread, which runs until every handle is
/// dropped.
#[derive(Clone)]
pub struct Pacer(mpsc::Sender<Note>);

impl Pacer {
    /// Starts the pacer of `topic`'s partitions read by `consumer`, whose
    /// group starts a partition without committed offset at `start`.
    pub fn start(consumer: Arc<StreamConsumer<GroupContext>>, topic: String, start: StartingPosition) -> Self {
        let (sender, notes) = mpsc::channel();
        let paced = Paced { consumer, topic, start, resting: Vec::new(), tick: None, resumed: Vec::new() };
        std::thread::Builder::new()
            .name("kafka-pacer".into())
            .spawn(move || paced.run(notes))
            .expect("the OS starts a thread");
        Self(sender)
    }

    /// Rests the lane's partition: a fetch of it came back at its end.
    pub fn rest(&self, lane: Arc<Lane>) {
        let _ = self.0.send(Note::Rest(lane));
    }

    /// Has the lane's fill looked at: it crossed the high water, or a lane
    /// that is full had records taken.
    pub fn fill(&self, lane: Arc<Lane>) {
        let _ = self.0.send(Note::Fill(lane));
    }
}

/// The pacer thread's state.
struct Paced {
    consumer: Arc<StreamConsumer<GroupContext>>,
    topic: String,
    start: StartingPosition,
    /// The lanes whose partition rests, each once.
    resting: Vec<Arc<Lane>>,
    /// When the resting partitions' ends are next asked (`None`: none rests).
    tick: Option<Instant>,
    /// Partitions resumed since the broker was last woken.
    resumed: Vec<i32>,
}

impl Paced {
    fn run(mut self, notes: mpsc::Receiver<Note>) {
        loop {
            let note = match self.tick {
                None => notes.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => notes.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match note {
                Ok(note) => self.take(note),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Whatever else is already waiting, before anyone is woken.
            while let Ok(note) = notes.try_recv() {
                self.take(note);
            }
            if self.tick.is_some_and(|at| at <= Instant::now()) {
                self.tick_now();
            }
            self.wake();
        }
    }

    fn take(&mut self, note: Note) {
        match note {
            Note::Rest(lane) => {
                let mut holds = lock(&lane.holds);
                holds.resting = true;
                self.apply(&lane, &mut holds);
                drop(holds);
                if !self.resting.iter().any(|l| Arc::ptr_eq(l, &lane)) {
                    self.resting.push(lane);
                }
                self.tick.get_or_insert_with(|| Instant::now() + FETCH_WAIT_MAX);
            }
            Note::Fill(lane) => {
                let mut holds = lock(&lane.holds);
                let high_water = lane.high_water_mark();
                if !holds.full && lane.queued() >= high_water {
                    holds.full = true;
                    lane.full.store(true, Ordering::SeqCst);
                    // The worker reads `full` after it takes records: either
                    // it saw the hold and tells the pacer again, or what it
                    // took shows here.
                    if lane.queued() <= high_water / 2 {
                        holds.full = false;
                        lane.full.store(false, Ordering::SeqCst);
                    }
                } else if holds.full && lane.queued() <= high_water / 2 {
                    holds.full = false;
                    lane.full.store(false, Ordering::SeqCst);
                }
                self.apply(&lane, &mut holds);
            }
        }
    }

    /// Lifts the rest of every resting partition that has records past
    /// its lane's next offset, or whose end or next offset is not known.
    fn tick_now(&mut self) {
        self.resting.retain(|lane| !lane.is_closed());
        let ends = if self.resting.is_empty() { HashMap::new() } else { self.ends() };
        for lane in self.resting.iter().filter(|lane| lane.next().is_none()) {
            if let Some(start) = self.start_of(lane, ends.get(&lane.partition).copied()) {
                lane.learn_next(start);
            }
        }
        let mut still = Vec::new();
        for lane in std::mem::take(&mut self.resting) {
            let due = match (lane.next(), ends.get(&lane.partition)) {
                (Some(next), Some(end)) => *end > next,
                _ => true,
            };
            if due {
                let mut holds = lock(&lane.holds);
                holds.resting = false;
                self.apply(&lane, &mut holds);
            } else {
                still.push(lane);
            }
        }
        self.resting = still;
        self.tick = (!self.resting.is_empty()).then(|| Instant::now() + FETCH_WAIT_MAX);
    }

    /// The end of every resting partition, in one request; a partition
    /// whose end the broker did not give is left out.
    fn ends(&self) -> HashMap<i32, i64> {
        let partitions: Vec<i32> = self.resting.iter().map(|lane| lane.partition).collect();
        self.offsets(&partitions, Offset::End)
    }

    /// Where librdkafka started the partition of `lane`, which has been
    /// handed nothing since (see the module docs); `None` if unknown.
    fn start_of(&self, lane: &Lane, end: Option<i64>) -> Option<i64> {
        let committed = self
            .consumer
            .committed_offsets(one(&self.topic, lane.partition), QUERY_TIMEOUT)
            .map_err(|error| tracing::debug!(%error, partition = lane.partition, "cannot ask a committed offset"))
            .ok()?;
        match committed.elements().first().map(|e| e.offset()) {
            // Past the end the broker answered, librdkafka reset it: where
            // to is not known here.
            Some(Offset::Offset(offset)) => end.filter(|end| offset <= *end).map(|_| offset),
            Some(Offset::Invalid) | None if self.start == StartingPosition::TrimHorizon => {
                self.offsets(&[lane.partition], Offset::Beginning).get(&lane.partition).copied()
            }
            _ => None,
        }
    }

    /// The offsets of `partitions` at `at` (their first or their end), in
    /// one ListOffsets request per broker.
    fn offsets(&self, partitions: &[i32], at: Offset) -> HashMap<i32, i64> {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            if let Err(error) = list.add_partition_offset(&self.topic, *partition, at) {
                tracing::warn!(%error, partition, "cannot name a partition to ask");
            }
        }
        match self.consumer.offsets_for_times(list, QUERY_TIMEOUT) {
            Ok(list) => list
                .elements()
                .iter()
                .filter(|e| e.error().is_ok())
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some((e.partition(), offset)),
                    _ => None,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "cannot ask the partitions' offsets");
                HashMap::new()
            }
        }
    }

    /// Pauses or resumes the lane's partition so that it is paused exactly
    /// while a hold is on; a partition no longer ours is left alone. A call
    /// the consumer refuses is logged and tried again at the next change.
    fn apply(&mut self, lane: &Lane, holds: &mut Holds) {
        let pause = holds.full || holds.resting;
        if pause == holds.paused || lane.is_closed() {
            return;
        }
        let list = one(&self.topic, lane.partition);
        let done = if pause { self.consumer.pause(&list) } else { self.consumer.resume(&list) };
        match done {
            Ok(()) => {
                holds.paused = pause;
                if !pause {
                    self.resumed.push(lane.partition);
                }
            }
            Err(error) => {
                tracing::warn!(%error, partition = lane.partition, pause, "cannot pause or resume a partition")
            }
        }
    }

    /// Wakes the broker thread of the partitions resumed since the last
    /// wake with one request to it (see the module docs).
    fn wake(&mut self) {
        if self.resumed.is_empty() {
            return;
        }
        let resumed = std::mem::take(&mut self.resumed);
        self.offsets(&resumed, Offset::End);
    }
}
