//! Kafka for real (DESIGN §9): the local MSK event source poller against
//! the real local broker, each test on its own topic, consumer group and
//! on-failure queue. Pollers here call a scripted function (to make it
//! fail, hang or record) or the whole local stack (to read the result over
//! HTTP).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use local_stack::kafka::poller::FetchCount;
use local_stack::kafka::produce::presence_value;
use local_stack::kafka::settings::{StartingPosition, EVENT_SOURCE};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use status_tests::kafka::{bootstrap_servers, records, Answer, KafkaStack, Scripted, TestTopic};
use status_tests::stack::wall_clock_ms;
use tokio::sync::watch;

/// Long enough for a loaded 2-core machine; only a broken poller waits it out.
const WAIT: Duration = Duration::from_secs(60);

fn value_of(kind: &str, user: u64, session: &str, ts_ms: i64) -> Vec<u8> {
    presence_value(kind, user, session, Some("ios"), ts_ms)
}

/// The offsets the group has committed, per partition (absent: none).
fn committed(topic: &TestTopic) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers())
        .set("group.id", &topic.group)
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    for p in 0..topic.partitions as i32 {
        partitions.add_partition(&topic.name, p);
    }
    let offsets = consumer.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
    offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_produced_event_is_visible_over_http() {
    let stack = KafkaStack::start(4).await;
    let producer = stack.topic.producer();
    let now = wall_clock_ms();
    // Header bytes of 0x80 and above reach the function as negative
    // numbers (Java's signed bytes) and the aggregator takes the record.
    let headers: [(&str, &[u8]); 1] = [("trace", &[0x00, 0x7f, 0x80, 0xff])];
    producer.send(42, &value_of("session_connected", 42, "phone", now), &headers).await.expect("produced");
    let body = stack.status_until(42, WAIT, |b| b["status"] == "online").await;
    assert_eq!(body["last_active_ms"], now);

    producer.send(42, &value_of("session_disconnected", 42, "phone", now + 1), &[]).await.expect("produced");
    let body = stack.status_until(42, WAIT, |b| b["status"] == "offline").await;
    assert_eq!(body["last_active_ms"], now, "a disconnect does not move last_active_ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_records_go_to_dead_letters_and_do_not_block_the_good_ones() {
    let stack = KafkaStack::start(1).await;
    let producer = stack.topic.producer();
    let now = wall_clock_ms();
    producer.send_keyed(Some("77"), b"not json at all", &[]).await.expect("produced");
    producer.send(77, br#"{"type":"session_connected","user_id":77}"#, &[]).await.expect("produced");
    producer.send(78, &value_of("session_connected", 78, "web", now), &[]).await.expect("produced");
    stack.status_until(78, WAIT, |b| b["status"] == "online").await;
    // Both malformed records are dead letters; the good one behind them in
    // the same partition was applied.
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = stack.local.tables.scan(&stack.local.tables.dead_letter_table).await;
        if dead.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    let (_, body) = stack.get("/v1/status/77").await;
    assert_eq!(body["status"], "offline", "a malformed record changes nothing: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_has_the_msk_shape_and_each_partition_keeps_its_order() {
    let topic = TestTopic::new(4).await;
    let producer = topic.producer();
    let function = Scripted::succeeding();
    let mut settings = topic.settings();
    settings.batch_size = 7;
    let poller = topic.start_poller(settings, function.clone());
    // 20 users, 10 events each, interleaved: each user's events must reach
    // the function in the order produced.
    let (users, per_user) = (20u64, 10i64);
    for i in 0..per_user {
        for user in 1..=users {
            producer.send(user, &value_of("activity", user, "s", i), &[("n", &[0x80])]).await.expect("produced");
        }
    }
    let calls = function.wait_until(WAIT, |c| records(c).len() >= (users as i64 * per_user) as usize).await;
    poller.stop().await;

    let mut seen: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    let mut partition_of: BTreeMap<u64, i64> = BTreeMap::new();
    for (partition, _, value) in records(&calls) {
        let user = value["user_id"].as_u64().expect("a user id");
        seen.entry(user).or_default().push(value["ts_ms"].as_i64().expect("ts_ms"));
        assert_eq!(*partition_of.entry(user).or_insert(partition), partition, "one partition owns a user");
    }
    for (user, order) in &seen {
        assert_eq!(order, &(0..per_user).collect::<Vec<_>>(), "user {user}");
    }
    assert!(partition_of.values().collect::<BTreeSet<_>>().len() > 1, "keys spread over partitions");
    for event in &calls {
        assert!(event.records.values().map(Vec::len).sum::<usize>() <= 7, "a batch holds at most MSK_BATCH_SIZE");
        assert_eq!(event.event_source.as_deref(), Some("aws:kafka"));
        assert_eq!(event.bootstrap_servers.as_deref(), Some(bootstrap_servers().as_str()));
        for (group, records) in &event.records {
            for (i, r) in records.iter().enumerate() {
                assert_eq!(group, &format!("{}-{}", topic.name, r.partition));
                assert_eq!(r.topic.as_deref(), Some(topic.name.as_str()));
                assert_eq!(r.headers, vec![[("n".to_owned(), vec![-128i8])].into()], "0x80 arrives as -128");
                let key = base64::engine::general_purpose::STANDARD.decode(r.key.as_deref().unwrap()).unwrap();
                assert!(String::from_utf8(key).unwrap().parse::<u64>().is_ok(), "the key is the user id");
                if i > 0 {
                    assert!(r.offset > records[i - 1].offset, "offsets rise within a partition");
                }
            }
        }
    }
    let ends: BTreeMap<i32, i64> = committed(&topic);
    assert_eq!(ends.values().sum::<i64>(), users as i64 * per_user, "every record committed: {ends:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_batch_is_retried_whole_and_nothing_behind_it_goes_first() {
    let topic = TestTopic::new(1).await;
    let producer = topic.producer();
    for i in 0..6 {
        producer.send(9, &value_of("activity", 9, "s", i), &[]).await.expect("produced");
    }
    let mut settings = topic.settings();
    settings.batch_size = 3;
    // Batches close by count alone, however the broker splits its fetches
    // and however slow a loaded machine is between them.
    settings.batching_window = WAIT;
    settings.max_retries = 5;
    // The first batch fails twice, then succeeds.
    let function = Scripted::new(|n, _| if n < 2 { Answer::Fail } else { Answer::Succeed });
    let poller = topic.start_poller(settings, function.clone());
    let calls = function.wait_until(WAIT, |c| records(c).iter().any(|r| r.1 == 5)).await;
    poller.stop().await;

    let offsets: Vec<Vec<i64>> =
        calls.iter().map(|c| records(std::slice::from_ref(c)).into_iter().map(|r| r.1).collect()).collect();
    assert_eq!(offsets[0], vec![0, 1, 2], "the first batch");
    assert_eq!(offsets[1], offsets[0], "retried whole");
    assert_eq!(offsets[2], offsets[0], "retried whole, then it succeeds");
    assert_eq!(offsets[3], vec![3, 4, 5], "only then the records behind it");
    assert_eq!(committed(&topic)[&0], 6);
    assert!(topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_max_retries_the_batch_goes_to_the_on_failure_queue_and_the_poller_moves_on() {
    let topic = TestTopic::new(1).await;
    let producer = topic.producer();
    for i in 0..3 {
        producer.send(5, &value_of("activity", 5, "s", i), &[]).await.expect("produced");
    }
    let mut settings = topic.settings();
    settings.batch_size = 3;
    // Batches close by count alone: with a short window, a loaded machine
    // could close the first batch before the broker's next fetch brought
    // the rest of it, and the test would describe another batch.
    settings.batching_window = WAIT;
    settings.max_retries = 2;
    // Any batch holding offset 0 fails, every time.
    let function = Scripted::new(|_, event| {
        let poisoned = event.records.values().flatten().any(|r| r.offset == 0);
        if poisoned {
            Answer::Fail
        } else {
            Answer::Succeed
        }
    });
    let poller = topic.start_poller(settings, function.clone());
    let described = topic.on_failure_messages(1, WAIT).await;
    assert_eq!(described.len(), 1, "{described:?}");
    let info = &described[0]["KafkaBatchInfo"];
    assert_eq!(info["topic"], topic.name.as_str());
    assert_eq!(
        (info["partition"].as_i64(), info["startOffset"].as_i64(), info["endOffset"].as_i64()),
        (Some(0), Some(0), Some(2))
    );
    assert_eq!(info["batchSize"], 3);
    assert_eq!(described[0]["requestContext"]["approximateInvokeCount"], 3, "the first attempt and 2 retries");

    // It moved on: the next batch is delivered, and the offsets are past
    // the given-up batch.
    for i in 3..6 {
        producer.send(5, &value_of("activity", 5, "s", i), &[]).await.expect("produced");
    }
    let calls = function.wait_until(WAIT, |c| records(c).iter().any(|r| r.1 == 5)).await;
    poller.stop().await;
    assert_eq!(calls.len(), 4, "3 attempts of the first batch, then the next");
    assert_eq!(committed(&topic)[&0], 6);
}

/// The poller's fetch count once librdkafka's statistics were taken at
/// `after_us` on its clock or later.
async fn fetches_at(fetches: &watch::Receiver<FetchCount>, after_us: i64) -> FetchCount {
    let mut fetches = fetches.clone();
    let seen = async { fetches.wait_for(|f| f.at_us > 0 && f.at_us >= after_us).await.map(|f| *f) };
    tokio::time::timeout(WAIT, seen).await.expect("statistics come every second").expect("the poller runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_poller_fetches_a_few_times_a_second_not_as_fast_as_the_broker_answers() {
    let topic = TestTopic::new(4).await;
    let producer = topic.producer();
    producer.send(3, &value_of("activity", 3, "s", 1), &[]).await.expect("produced");
    let function = Scripted::succeeding();
    let poller = topic.start_poller(topic.settings(), function.clone());
    // Past its join and its first batch, the poller has nothing more to read.
    function.wait_until(WAIT, |c| !records(c).is_empty()).await;

    // Two of librdkafka's statistics at least 3 s apart on its own clock.
    let first = fetches_at(&poller.fetches, 0).await;
    let last = fetches_at(&poller.fetches, first.at_us + 3_000_000).await;
    let seconds = (last.at_us - first.at_us) as f64 / 1e6;
    let sent = last.requests - first.requests;
    let per_second = sent as f64 / seconds;
    // Unpaced, the local broker answers empty fetches at once and the
    // poller sends over a thousand a second (fewer on a loaded machine,
    // never near this bound). Paced, a resting partition is not fetched
    // until the broker has records past its end: none at all while idle.
    // Load only lowers the figure.
    assert!(per_second < 5.0, "{sent} fetch requests in {seconds:.1} s: {per_second:.1}/s");

    // A resting partition still wakes: a record produced now is delivered.
    producer.send(3, &value_of("activity", 3, "s", 2), &[]).await.expect("produced");
    function.wait_until(WAIT, |c| records(c).len() == 2).await;
    poller.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poller_that_dies_mid_stream_resumes_at_the_committed_offset_and_skips_nothing() {
    let topic = TestTopic::new(2).await;
    let producer = topic.producer();
    let total = 60u64;
    for i in 0..total {
        producer.send(100 + i % 6, &value_of("activity", 100 + i % 6, "s", i as i64), &[]).await.expect("produced");
    }
    let mut settings = topic.settings();
    settings.batch_size = 5;
    // The first poller applies 3 batches, then hangs in the next call of
    // each partition and dies.
    let first = Scripted::new(|n, _| if n < 3 { Answer::Succeed } else { Answer::Hang });
    let poller = topic.start_poller(settings.clone(), first.clone());
    first.wait_until(WAIT, |c| c.len() >= 4).await;
    poller.crash().await;
    let applied: BTreeSet<(i64, i64)> = records(&first.calls()[..3]).into_iter().map(|r| (r.0, r.1)).collect();
    let hung: BTreeSet<(i64, i64)> = records(&first.calls()[3..]).into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(applied.len(), 15);
    // Partitions commit on their own, so the other partition's last commit
    // may land just after the crash; it must come to what was applied.
    let done = |partition: i32| applied.iter().filter(|(p, _)| *p == i64::from(partition)).count() as i64;
    let deadline = std::time::Instant::now() + WAIT;
    let committed_at_crash = loop {
        let offsets = committed(&topic);
        if offsets.iter().all(|(p, o)| *o == done(*p))
            && offsets.len() == applied.iter().map(|r| r.0).collect::<BTreeSet<_>>().len()
        {
            break offsets;
        }
        assert!(std::time::Instant::now() < deadline, "committed {offsets:?}, applied {applied:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A new poller in the same group (same static member) starts at the
    // committed offsets: the hung batch comes again, nothing is skipped.
    let second = Scripted::succeeding();
    let poller = topic.start_poller(settings, second.clone());
    let calls = second.wait_until(WAIT, |c| records(c).len() as u64 >= total - 15).await;
    poller.stop().await;
    let again: Vec<(i64, i64)> = records(&calls).into_iter().map(|r| (r.0, r.1)).collect();
    for (partition, offset) in &committed_at_crash {
        let first_again = again.iter().find(|(p, _)| *p == i64::from(*partition)).map(|r| r.1);
        assert_eq!(first_again, Some(*offset), "partition {partition} resumes at its committed offset");
    }
    assert!(hung.iter().all(|r| again.contains(r)), "the batch in flight at the crash is delivered again");
    let everything: BTreeSet<(i64, i64)> = applied.iter().copied().chain(again.iter().copied()).collect();
    assert_eq!(everything.len() as u64, total, "every record delivered, none skipped");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_producer_partitions_by_the_user_id_as_javas_client_does() {
    let topic = TestTopic::new(8).await;
    let producer = topic.producer();
    for user in [1u64, 42, 4101, 9_007_199_254_740_993] {
        let delivered = producer.send(user, &value_of("activity", user, "s", 1), &[]).await.expect("produced");
        let expected = (murmur2(user.to_string().as_bytes()) & 0x7fff_ffff) % 8;
        assert_eq!(delivered.partition as u32, expected, "user {user}");
    }
}

/// Kafka's murmur2 (its Java client's `Utils.murmur2`, seed 0x9747b28c),
/// written out here so the test does not trust the producer's own choice.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// The template's MSK event and the local poller's defaults are one set of
/// numbers: `EVENT_SOURCE` is their source, and this holds the template to it.
#[test]
fn the_templates_msk_event_matches_the_local_pollers_defaults() {
    let template: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../template.yaml")).expect("template.yaml is YAML");
    let template = cloudformation_json(&template);
    let parameter = |name: &str| template["Parameters"][name].clone();
    let msk = &template["Resources"]["AggregatorFunction"]["Properties"]["Events"]["PresenceUpdates"]["Properties"];
    assert_eq!(msk["Topics"], serde_json::json!([EVENT_SOURCE.topic]));
    assert_eq!(msk["BatchSize"]["Ref"], "MskBatchSize");
    assert_eq!(parameter("MskBatchSize")["Default"], EVENT_SOURCE.batch_size);
    assert_eq!(parameter("MskBatchSize")["MaxValue"], EVENT_SOURCE.max_batch_size);
    // The template can only say whole seconds; its default leaves the
    // window unset, which is Lambda's 500 ms for MSK.
    assert_eq!(parameter("MskBatchingWindowSeconds")["Default"], "");
    assert_eq!(EVENT_SOURCE.batching_window_ms, 500);
    assert_eq!(
        msk["MaximumBatchingWindowInSeconds"]["Fn::If"][1]["Ref"], "MskBatchingWindowSeconds",
        "the window is the parameter when set"
    );
    assert_eq!(msk["StartingPosition"]["Ref"], "MskStartingPosition");
    assert_eq!(parameter("MskStartingPosition")["Default"], EVENT_SOURCE.starting_position.name());
    let allowed: BTreeSet<String> =
        serde_json::from_value(parameter("MskStartingPosition")["AllowedValues"].clone()).unwrap();
    assert_eq!(allowed, StartingPosition::ALL.iter().map(|p| p.name().to_owned()).collect());
    assert_eq!(msk["ConsumerGroupId"]["Ref"], "MskConsumerGroupId");
    assert_eq!(parameter("MskConsumerGroupId")["Default"], EVENT_SOURCE.consumer_group);
    assert_eq!(msk["MaximumRetryAttempts"], EVENT_SOURCE.max_retries);
    assert_eq!(msk["DestinationConfig"]["OnFailure"]["Type"], EVENT_SOURCE.on_failure_type);
}

/// A CloudFormation document as JSON: the short tags (`!Ref X`, `!If [...]`)
/// become their long forms (`{"Ref": "X"}`, `{"Fn::If": [...]}`).
fn cloudformation_json(yaml: &serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => n.as_i64().map_or_else(|| serde_json::json!(n.as_f64()), Value::from),
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(items.iter().map(cloudformation_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.iter().map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), cloudformation_json(v))).collect(),
        ),
        Y::Tagged(tagged) => {
            let name = tagged.tag.to_string();
            let name = name.trim_start_matches('!');
            let key = if name == "Ref" { name.to_owned() } else { format!("Fn::{name}") };
            serde_json::json!({ key: cloudformation_json(&tagged.value) })
        }
    }
}
