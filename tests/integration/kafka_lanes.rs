//! Partitions as independent lanes (DESIGN §9 "partitions") and the
//! consumer group shared by two pollers, against the real local broker:
//! a batch failing on one partition holds back only that partition, and
//! two pollers of one group split the partitions without applying a
//! record twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine;
use local_stack::kafka::event::{msk_json, MAX_EVENT_BYTES};
use local_stack::kafka::poller::{BatchFunction, Poller};
use local_stack::kafka::produce::presence_value;
use local_stack::kafka::settings::KafkaSettings;
use status_tests::kafka::TestTopic;
use tokio::sync::{watch, Notify};

/// Long enough for a loaded 2-core machine; only a broken poller waits it out.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// (partition, offset) of a record.
pub(crate) type At = (i64, i64);

/// A function that records what it applied and fails every batch holding
/// the poison record. Its first call with the poison waits until `release`
/// is notified, so the test can see the other partitions flow meanwhile.
#[derive(Clone, Default)]
pub(crate) struct Lanes {
    applied: Arc<Mutex<Vec<At>>>,
    /// The values of the records applied, in order.
    pub(crate) values: Arc<Mutex<Vec<Vec<u8>>>>,
    poison_attempts: Arc<Mutex<u32>>,
    poison: Option<At>,
    release: Arc<Notify>,
}

impl Lanes {
    pub(crate) fn applied(&self) -> Vec<At> {
        self.applied.lock().expect("not poisoned").clone()
    }

    fn attempts(&self) -> u32 {
        *self.poison_attempts.lock().expect("not poisoned")
    }

    pub(crate) async fn wait_until(&self, what: &str, done: impl Fn(&[At]) -> bool) -> Vec<At> {
        let deadline = Instant::now() + WAIT;
        loop {
            let applied = self.applied();
            if done(&applied) {
                return applied;
            }
            assert!(Instant::now() < deadline, "gave up waiting for {what}; applied so far: {applied:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl BatchFunction for Lanes {
    async fn call(&self, event: &KafkaEvent) -> Result<(), String> {
        let records: Vec<At> = event.records.values().flatten().map(|r| (r.partition, r.offset)).collect();
        if self.poison.is_some_and(|p| records.contains(&p)) {
            let first = {
                let mut attempts = self.poison_attempts.lock().expect("not poisoned");
                *attempts += 1;
                *attempts == 1
            };
            if first {
                self.release.notified().await;
            }
            return Err("the poison record fails the aggregator".into());
        }
        let values = event.records.values().flatten().map(|r| {
            base64::engine::general_purpose::STANDARD.decode(r.value.as_deref().unwrap_or("")).unwrap_or_default()
        });
        self.values.lock().expect("not poisoned").extend(values);
        self.applied.lock().expect("not poisoned").extend(records);
        Ok(())
    }
}

/// A poller of `topic` as static member `member`, running until `stop`.
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    assignment: watch::Receiver<Vec<i32>>,
}

pub(crate) fn start(topic: &TestTopic, settings: KafkaSettings, member: &str, function: impl BatchFunction) -> Running {
    let poller = Poller::new(settings, member, function, topic.on_failure(), "arn:test".into()).expect("joins");
    let assignment = poller.assignment();
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(poller.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Running { stop, task, assignment }
}

impl Running {
    pub(crate) async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("stops").expect("no panic");
    }
}

fn value(user: u64, ts_ms: i64) -> Vec<u8> {
    presence_value("activity", user, "s", Some("ios"), ts_ms)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_batch_holds_back_only_its_partition_and_then_goes_to_the_on_failure_queue() {
    let topic = TestTopic::new(4).await;
    let producer = topic.producer();
    // The poison is the first record of user 1's partition.
    let poison = producer.send(1, &value(1, 0), &[]).await.expect("produced");
    let poison_at = (i64::from(poison.partition), poison.offset);
    let mut expected: BTreeSet<At> = BTreeSet::new();
    let mut behind_poison = 0;
    for user in 2..=60u64 {
        let d = producer.send(user, &value(user, 1), &[]).await.expect("produced");
        if d.partition == poison.partition {
            behind_poison += 1;
        } else {
            expected.insert((i64::from(d.partition), d.offset));
        }
    }
    assert!(expected.iter().map(|r| r.0).collect::<BTreeSet<_>>().len() >= 2, "users spread over partitions");

    let mut settings = topic.settings();
    settings.max_retries = 2;
    let function = Lanes { poison: Some(poison_at), ..Lanes::default() };
    let poller = start(&topic, settings, &format!("{}-member", topic.group), function.clone());

    // The poison batch's first call is still running: every record of the
    // other partitions is applied all the same.
    let applied = function.wait_until("the other partitions", |a| expected.iter().all(|r| a.contains(r))).await;
    assert_eq!(function.attempts(), 1, "the poison batch is in its first call");
    assert!(applied.iter().all(|r| r.0 != poison_at.0), "nothing of the poison's partition goes first");
    function.release.notify_one();

    // After MSK_MAX_RETRIES it is described on the on-failure queue, and
    // only its partition's batch is.
    let described = topic.on_failure_messages(1, WAIT).await;
    assert_eq!(described.len(), 1, "{described:?}");
    let info = &described[0]["KafkaBatchInfo"];
    assert_eq!((info["partition"].as_i64(), info["startOffset"].as_i64()), (Some(poison_at.0), Some(poison_at.1)));
    assert_eq!(described[0]["requestContext"]["approximateInvokeCount"], 3, "the first attempt and 2 retries");
    assert_eq!(function.attempts(), 3);

    // Its partition moves on: a record produced now is applied, and so
    // were the ones behind the poison if they were not in its batch.
    let later = producer.send(1, &value(1, 2), &[]).await.expect("produced");
    let later_at = (i64::from(later.partition), later.offset);
    let applied = function.wait_until("the poison's partition to move on", |a| a.contains(&later_at)).await;
    poller.stop().await;
    let in_poison_batch = info["batchSize"].as_i64().expect("a batch size") - 1;
    let after_poison = applied.iter().filter(|r| r.0 == poison_at.0).count() as i64;
    assert_eq!(after_poison, behind_poison - in_poison_batch + 1, "every record after the poison batch applied");
    let unique: BTreeSet<&At> = applied.iter().collect();
    assert_eq!(unique.len(), applied.len(), "nothing applied twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pollers_in_one_group_split_the_partitions_and_apply_each_record_once() {
    let topic = TestTopic::new(4).await;
    let settings = topic.settings();
    let (one, two) = (Lanes::default(), Lanes::default());
    let first = start(&topic, settings.clone(), &format!("{}-a", topic.group), one.clone());
    let second = start(&topic, settings, &format!("{}-b", topic.group), two.clone());

    // Wait until the group has settled: each holds partitions, none both.
    let deadline = Instant::now() + WAIT;
    let (held_one, held_two) = loop {
        let (a, b) = (first.assignment.borrow().clone(), second.assignment.borrow().clone());
        let all: BTreeSet<i32> = a.iter().chain(&b).copied().collect();
        if !a.is_empty() && !b.is_empty() && all.len() == a.len() + b.len() && all.len() == topic.partitions {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "the group never split the partitions: {a:?} and {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let producer = topic.producer();
    let mut produced: BTreeMap<i64, usize> = BTreeMap::new();
    for i in 0..200u64 {
        let user = 1_000 + i % 40;
        let d = producer.send(user, &value(user, i as i64), &[]).await.expect("produced");
        *produced.entry(i64::from(d.partition)).or_default() += 1;
    }
    let total: usize = produced.values().sum();
    let deadline = Instant::now() + WAIT;
    while one.applied().len() + two.applied().len() < total {
        assert!(Instant::now() < deadline, "only {} of {total} applied", one.applied().len() + two.applied().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment for any record applied twice to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.stop().await;
    second.stop().await;

    let (a, b) = (one.applied(), two.applied());
    let per_partition = |applied: &[At]| {
        let mut out: BTreeMap<i64, usize> = BTreeMap::new();
        for r in applied {
            *out.entry(r.0).or_default() += 1;
        }
        out
    };
    let (count_a, count_b) = (per_partition(&a), per_partition(&b));
    assert!(count_a.keys().all(|p| held_one.contains(&(*p as i32))), "{count_a:?} outside {held_one:?}");
    assert!(count_b.keys().all(|p| held_two.contains(&(*p as i32))), "{count_b:?} outside {held_two:?}");
    let mut together = count_a.clone();
    for (p, n) in &count_b {
        *together.entry(*p).or_default() += n;
    }
    assert_eq!(together, produced, "each partition's records applied once, by one poller");
    let unique: BTreeSet<&At> = a.iter().chain(&b).collect();
    assert_eq!(unique.len(), total, "no record applied twice");
}

/// A function that keeps, per call, how many records the event held and
/// its size as sent (`msk_json`), in bytes.
#[derive(Clone, Default)]
struct Sizes(Arc<Mutex<Vec<(usize, usize)>>>);

impl BatchFunction for Sizes {
    async fn call(&self, event: &KafkaEvent) -> Result<(), String> {
        let bytes = serde_json::to_vec(&msk_json(event).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let records = event.records.values().map(Vec::len).sum();
        self.0.lock().expect("not poisoned").push((records, bytes.len()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_stops_growing_before_lambdas_payload_limit() {
    // Twenty records of 700 KB, all waiting in one partition when its
    // batch (up to 100 records, a 2 s window) is gathered: 18.7 MB as
    // base64, three times what one Lambda invocation takes.
    let topic = TestTopic::new(1).await;
    let settings = KafkaSettings { batching_window: Duration::from_secs(2), ..topic.settings() };
    let producer = topic.producer();
    for i in 0..20u8 {
        producer.send(2_000, &vec![b'a' + i; 700_000], &[]).await.expect("produced");
    }
    let sizes = Sizes::default();
    let running = start(&topic, settings, &format!("{}-a", topic.group), sizes.clone());
    let deadline = Instant::now() + WAIT;
    let calls = loop {
        let calls = sizes.0.lock().expect("not poisoned").clone();
        if calls.iter().map(|(records, _)| records).sum::<usize>() >= 20 {
            break calls;
        }
        assert!(Instant::now() < deadline, "not every record delivered: {calls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.stop().await;

    assert_eq!(calls.iter().map(|(records, _)| records).sum::<usize>(), 20, "each record once: {calls:?}");
    assert!(calls.len() >= 4, "18.7 MB takes at least four calls: {calls:?}");
    assert!(calls.iter().all(|(_, bytes)| *bytes <= MAX_EVENT_BYTES), "every event under 6 MB: {calls:?}");
    assert!(calls.iter().any(|(records, _)| *records > 1), "a batch still takes what fits: {calls:?}");
}

/// A function that holds each call for a moment and keeps the most calls
/// it had in flight at once, and the records it took.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    records: Arc<AtomicUsize>,
}

impl BatchFunction for InFlight {
    async fn call(&self, event: &KafkaEvent) -> Result<(), String> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.records.fetch_add(event.records.values().map(Vec::len).sum(), Ordering::SeqCst);
        Ok(())
    }
}

/// The most calls in flight at once while 80 records over 4 partitions
/// go through a poller with `MSK_MAX_CONCURRENCY` = `max_concurrency`.
async fn most_in_flight(max_concurrency: Option<usize>) -> usize {
    let topic = TestTopic::new(4).await;
    let settings = KafkaSettings { max_concurrency, batch_size: 5, ..topic.settings() };
    let producer = topic.producer();
    let mut partitions = BTreeSet::new();
    for i in 0..80u64 {
        let user = 3_000 + i % 40;
        partitions.insert(producer.send(user, &value(user, i as i64), &[]).await.expect("produced").partition);
    }
    assert_eq!(partitions.len(), 4, "the records span every partition");
    let function = InFlight::default();
    let running = start(&topic, settings, &format!("{}-a", topic.group), function.clone());
    let deadline = Instant::now() + WAIT;
    while function.records.load(Ordering::SeqCst) < 80 {
        assert!(Instant::now() < deadline, "{} of 80 records taken", function.records.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
    function.most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread")]
async fn msk_max_concurrency_bounds_the_calls_in_flight_across_partitions() {
    assert_eq!(most_in_flight(Some(1)).await, 1, "MSK_MAX_CONCURRENCY=1: one call at a time");
    let most = most_in_flight(Some(2)).await;
    assert!(most <= 2, "MSK_MAX_CONCURRENCY=2: {most} calls at once");
    let most = most_in_flight(None).await;
    assert!((2..=4).contains(&most), "unset: one call per partition, side by side; saw {most}");
}
