//! The local MSK event source poller (DESIGN §9): reads the topic as the
//! consumer group, gathers batches, calls the function with the MSK event,
//! and commits only once the function succeeded.
//!
//! Semantics kept from Lambda's MSK event source mapping:
//!
//! - each partition is a lane of its own (`lanes.rs`, `worker.rs`): at
//!   most one batch of a partition is in flight, different partitions run
//!   side by side, and `MSK_MAX_CONCURRENCY` (unset: one per partition)
//!   bounds the calls in flight;
//! - a batch holds one partition's records; it closes at `MSK_BATCH_SIZE`
//!   records or `MSK_BATCHING_WINDOW_MS` after its first record;
//! - a function error retries the same batch, whole, with a backoff of
//!   its own; nothing after it in its partition is applied first, and the
//!   other partitions keep flowing;
//! - after `MSK_MAX_RETRIES` retries, the description of the batch (topic,
//!   partition, offset range) goes to the on-failure queue, and then the
//!   batch is committed and its partition moves on;
//! - offsets live in the broker under the consumer group, each partition's
//!   committed after its own batch, so a poller that died resumes at the
//!   last committed offset: at least once, never skipped.
//!
//! A fetch that reaches a partition's end rests that partition until the
//! broker has records past it (the pacer, `pacer.rs`): the local broker
//! answers an empty fetch at once instead of holding it up to
//! `fetch.wait.max.ms` as Kafka does, so librdkafka would otherwise fetch
//! an idle partition as fast as the broker answers. librdkafka reports the
//! end (`enable.partition.eof`) and the pacer pauses the partition; it
//! asks the resting partitions' ends every [`FETCH_WAIT_MAX`] and resumes
//! those with new records. A fetch that brings records is never followed
//! by a rest, so records that flow are not slowed.
//!
//! The poller is a static member of its group (`group.instance.id`): one
//! that restarts takes its partitions back at once instead of waiting out
//! the session of its dead self. The function is a [`BatchFunction`], so
//! tests can inject one that fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::Message;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use crate::kafka::lanes::FetchCount;
use crate::kafka::lanes::{GroupContext, Lane, Lanes, Pushed};
use crate::kafka::pacer::Pacer;
pub use crate::kafka::pacer::FETCH_WAIT_MAX;
use crate::kafka::record;
use crate::kafka::settings::KafkaSettings;
use crate::kafka::worker::{work, Shared};

pub use crate::kafka::batch::{BatchFunction, OnFailure, SqsOnFailure};

/// How often librdkafka's statistics are taken (see [`Poller::fetches`]).
const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);

/// Why the poller could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot read topic {topic} from Kafka at {servers} (is the broker up? scripts/services.sh starts one)")]
pub struct PollerError {
    pub topic: String,
    pub servers: String,
    #[source]
    pub source: Box<KafkaError>,
}

/// The poller: one consumer in the group, one function, one destination.
pub struct Poller<F, D> {
    consumer: Arc<StreamConsumer<GroupContext>>,
    lanes: Lanes,
    assignment: watch::Receiver<Vec<i32>>,
    fetches: watch::Receiver<FetchCount>,
    settings: KafkaSettings,
    function: F,
    on_failure: D,
    event_source_arn: String,
    /// Why the poller stopped on its own, once it has.
    failed: watch::Sender<Option<String>>,
}

impl<F: BatchFunction, D: OnFailure> Poller<F, D> {
    /// Joins the consumer group as static member `instance_id` and
    /// subscribes. A static member that restarts takes its partitions back
    /// at once instead of waiting out the session of its dead self; two
    /// pollers of one group need two ids, and split the partitions.
    pub fn new(
        settings: KafkaSettings,
        instance_id: &str,
        function: F,
        on_failure: D,
        event_source_arn: String,
    ) -> Result<Self, PollerError> {
        let error = |source| PollerError {
            topic: settings.topic.clone(),
            servers: settings.bootstrap_servers.clone(),
            source: Box::new(source),
        };
        let lanes = Lanes::default();
        let (assigned, assignment) = watch::channel(Vec::new());
        let (counted, fetches) = watch::channel(FetchCount::default());
        let context = GroupContext { lanes: lanes.clone(), assignment: assigned, fetches: counted };
        let consumer: StreamConsumer<GroupContext> = ClientConfig::new()
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("group.id", &settings.consumer_group)
            .set("group.instance.id", instance_id)
            .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
            // librdkafka's default (5 min), or the session if longer, which
            // it must not be.
            .set("max.poll.interval.ms", settings.session_timeout.as_millis().max(300_000).to_string())
            .set("client.id", "online-status-local-poller")
            // Offsets move only when this code commits them.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", settings.starting_position.offset_reset())
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX.as_millis().to_string())
            // An empty fetch is reported, so the pacer rests its partition.
            .set("enable.partition.eof", "true")
            .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string())
            .create_with_context(context)
            .map_err(error)?;
        consumer.subscribe(&[&settings.topic]).map_err(error)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            lanes,
            assignment,
            fetches,
            settings,
            function,
            on_failure,
            event_source_arn,
            failed: watch::channel(None).0,
        })
    }

    /// Set, with the reason, when the poller stops on its own: librdkafka
    /// reported a fatal error, after which its consumer reads nothing more
    /// (another member joined the group under this one's static id). The
    /// stack then stops too, rather than serve with no poller.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    /// The partitions this poller holds, updated after each rebalance
    /// (empty until the group has assigned it any).
    pub fn assignment(&self) -> watch::Receiver<Vec<i32>> {
        self.assignment.clone()
    }

    /// The fetch requests the poller has sent, updated every second from
    /// librdkafka's statistics: what shows whether an idle poller is idle.
    pub fn fetches(&self) -> watch::Receiver<FetchCount> {
        self.fetches.clone()
    }

    /// Polls until `shutdown` resolves, handing each record to its
    /// partition's lane. Then each lane whose function call is under way
    /// finishes and commits it; a batch still gathering or waiting to
    /// retry is dropped uncommitted.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop, stopping) = watch::channel(false);
        let high_water = Lane::high_water(self.settings.batch_size);
        let topic = self.settings.topic.clone();
        let pacer = Pacer::start(self.consumer.clone(), topic, self.settings.starting_position);
        let shared = Arc::new(Shared {
            consumer: self.consumer.clone(),
            permits: self.settings.max_concurrency.map(Semaphore::new),
            settings: self.settings,
            function: self.function,
            on_failure: self.on_failure,
            event_source_arn: self.event_source_arn,
            in_flight: Default::default(),
            pacer: pacer.clone(),
            stopping,
        });
        // Dropping the set (this future cancelled, as a crash) aborts
        // every worker with it.
        let mut workers = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                () = &mut shutdown => break,
            };
            let (partition, message) = match message {
                Ok(message) => (message.partition(), Some(record::detach(&message))),
                Err(KafkaError::PartitionEOF(partition)) => (partition, None),
                Err(error @ KafkaError::MessageConsumptionFatal(_)) => {
                    let reason = match self.consumer.client().fatal_error() {
                        Some((code, text)) => format!("{code:?}: {text}"),
                        None => error.to_string(),
                    };
                    tracing::error!(%reason, member = %shared.settings.member_id(), group = %shared.settings.consumer_group,
                        "the Kafka poller stopped: a fatal error; a second stack in this group needs its own KAFKA_INSTANCE_ID");
                    self.failed.send_replace(Some(reason));
                    break;
                }
                Err(error) => {
                    // Broker down or a rebalance: librdkafka reconnects itself.
                    tracing::warn!(%error, "kafka poll failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while workers.try_join_next().is_some() {}
            let lane = match self.lanes.get(partition) {
                Some(lane) => lane,
                None => {
                    let (lane, receiver) = Lane::open(partition, high_water);
                    self.lanes.insert(lane.clone());
                    workers.spawn(work(shared.clone(), receiver));
                    lane
                }
            };
            let Some(message) = message else {
                // The fetch reached the partition's end.
                pacer.rest(lane);
                continue;
            };
            match lane.push(message) {
                Pushed::Queued => {}
                Pushed::HighWater => pacer.fill(lane),
                Pushed::WorkerGone => {
                    tracing::warn!(partition, "a lane's worker is gone; its records come again after a rebalance")
                }
            }
        }
        drop(pacer);
        stop.send_replace(true);
        while workers.join_next().await.is_some() {}
        self.lanes.close_all();
    }
}
