//! The pacer against the real local broker (DESIGN §9 "pacing"): a
//! partition resting at its end is fetched again soon after a record comes,
//! and a lane back from its high water gets its records at once. Both
//! without waiting for librdkafka's idle broker thread, which sleeps up to
//! a second unless something wakes it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::kafka::KafkaEvent;
use local_stack::kafka::poller::{BatchFunction, FETCH_WAIT_MAX};
use local_stack::kafka::produce::presence_value;
use status_tests::kafka::TestTopic;
use tokio::sync::Notify;

/// Long enough for a loaded 2-core machine; only a broken poller waits it out.
const WAIT: Duration = Duration::from_secs(60);

/// A function that notes when each call came and how many records it
/// held. With `hold_first`, its first call waits for `release`.
#[derive(Clone, Default)]
struct Timed {
    calls: Arc<Mutex<Vec<(Instant, usize)>>>,
    hold_first: bool,
    release: Arc<Notify>,
}

impl Timed {
    fn calls(&self) -> Vec<(Instant, usize)> {
        self.calls.lock().expect("not poisoned").clone()
    }

    fn records(&self) -> usize {
        self.calls().iter().map(|c| c.1).sum()
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&[(Instant, usize)]) -> bool) -> Vec<(Instant, usize)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            assert!(Instant::now() < deadline, "gave up waiting for {what}: {} calls", calls.len());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl BatchFunction for Timed {
    async fn call(&self, event: &KafkaEvent) -> Result<(), String> {
        let first = {
            let mut calls = self.calls.lock().expect("not poisoned");
            calls.push((Instant::now(), event.records.values().map(Vec::len).sum()));
            calls.len() == 1
        };
        if first && self.hold_first {
            self.release.notified().await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_produced_to_a_resting_partition_is_fetched_within_a_bound() {
    let topic = TestTopic::new(1).await;
    let producer = topic.producer();
    let mut settings = topic.settings();
    // A batch closes with what is there, so a call comes when its record does.
    settings.batching_window = Duration::ZERO;
    let function = Timed::default();
    let poller = topic.start_poller(settings, function.clone());
    producer.send(7, &presence_value("activity", 7, "s", Some("ios"), 0), &[]).await.expect("produced");
    function.wait_until("the first record", |c| c.len() == 1).await;

    // Each record comes to a partition resting at its end, at a different
    // moment of librdkafka's one-second sleep.
    let mut took = Vec::new();
    for i in 1..=10u64 {
        tokio::time::sleep(Duration::from_millis(150 + 73 * i)).await;
        let sent = Instant::now();
        producer.send(7, &presence_value("activity", 7, "s", Some("ios"), i as i64), &[]).await.expect("produced");
        let calls = function.wait_until("the record", |c| c.len() as u64 == i + 1).await;
        took.push(calls[i as usize].0 - sent);
    }
    poller.stop().await;
    took.sort();
    // The pacer looks every FETCH_WAIT_MAX; then a resume, a wake and a
    // fetch. Unwoken, librdkafka's broker thread would take up to 1 s.
    let bound = FETCH_WAIT_MAX + Duration::from_millis(350);
    assert!(took.iter().all(|t| *t < bound), "produce to call, sorted: {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_back_from_its_high_water_gets_its_records_at_once() {
    let topic = TestTopic::new(1).await;
    // 10,000 records of 1 KB: a fetch brings about a megabyte, so the lane
    // (high water 1,000 records at batches of 100) fills and drains again
    // and again, each time paused and resumed.
    let total = 10_000usize;
    let producer =
        local_stack::kafka::produce::PresenceProducer::new(&status_tests::kafka::bootstrap_servers(), &topic.name, 5)
            .expect("a producer");
    let value = vec![b'x'; 1_000];
    let mut deliveries = Vec::with_capacity(total);
    for _ in 0..total {
        deliveries.push(producer.enqueue(11, &value).expect("queued"));
    }
    for delivery in deliveries {
        delivery.await.expect("not cancelled").expect("delivered");
    }

    let mut settings = topic.settings();
    // Batches close by count alone, so a call waits only for records.
    settings.batching_window = WAIT;
    settings.batch_size = 100;
    let function = Timed { hold_first: true, ..Timed::default() };
    let poller = topic.start_poller(settings, function.clone());
    function.wait_until("the first call", |c| !c.is_empty()).await;
    // The lane fills past its high water and its partition is paused;
    // librdkafka's broker thread, with nothing to fetch, goes to sleep.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let released = Instant::now();
    function.release.notify_one();
    let calls = function.wait_until("every record", |c| c.iter().map(|c| c.1).sum::<usize>() >= total).await;
    poller.stop().await;
    assert_eq!(function.records(), total, "each record once");

    let mut gaps: Vec<Duration> = calls[1..].windows(2).map(|w| w[1].0 - w[0].0).collect();
    gaps.push(calls[1].0 - released);
    gaps.sort();
    let longest = gaps[gaps.len() - 1];
    // A resume, a wake and a fetch of a megabyte; unwoken, up to 1 s each.
    assert!(longest < Duration::from_millis(400), "the longest gaps between calls: {:?}", &gaps[gaps.len() - 5..]);
}
