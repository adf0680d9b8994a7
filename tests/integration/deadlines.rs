//! Every call to AWS has a deadline (issue 17): with the emulator paused
//! (`SIGSTOP`, a private moto of the test's own), and with Redis and the
//! emulator paused together, each path gives up within the configured
//! `AWS_TIMEOUT_MS` and does what the README's deadlines section says:
//! a batch still succeeds when only the bus and the dead-letter table are
//! gone, fails (to be retried) when its repair cannot be recorded, and a
//! request to the API answers 200 or 503 instead of running out the
//! function's time.
//!
//! The only timed assertions here are against those configured deadlines
//! plus a margin for a loaded 2-core machine; each waits with a bound
//! past which it fails rather than hangs.

use std::time::{Duration, Instant};

use aggregator::error::AggregatorError;
use aggregator::handler::{AppAggregator, Summary};
use aws_lambda_events::event::kafka::KafkaEvent;
use local_stack::provision::create_tables;
use status_api::handler::{ApiResponse, AppApi};
use status_api::request::{ApiRequest, Caller};
use status_shared::app::App;
use status_shared::config::Config;
use status_shared::domain::{Rules, Status, UserRecord};
use status_shared::ports::{CacheRead, StoreRead};
use status_shared::services::CommitError;
use status_tests::aws::{AwsTables, EventSink, Frozen, PrivateMoto};
use status_tests::msk::{kafka_batch, kafka_event};
use status_tests::stack::{presence, user, wall_clock_ms, PrivateRedis};
use status_tests::TestEnv;

/// The deadlines under test, short so the tests are quick: 2 s per call,
/// 1 s per attempt (a cold moto on a busy machine needs most of that).
const AWS_TIMEOUT: Duration = Duration::from_millis(2_000);
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);

/// Room for a loaded machine on top of the deadlines' sum: scheduling,
/// SQL, and the SDK noticing its timer.
const MARGIN: Duration = Duration::from_millis(1_500);

/// How long a call may take before the test gives up on it: the length of
/// the pause. Without deadlines a call waits for the server to wake, so it
/// would still be waiting here.
const FROZEN_FOR: Duration = Duration::from_secs(20);

/// The service as the functions build it (`App::start_with`), over a Redis,
/// a moto and a database of the test's own. Fields drop in order: the
/// clients and the AWS resources go while their servers still run.
struct Rig {
    app: App,
    sink: EventSink,
    tables: AwsTables,
    env: TestEnv,
    redis: PrivateRedis,
    moto: PrivateMoto,
}

impl Rig {
    async fn start() -> Self {
        let (redis, moto) = tokio::join!(PrivateRedis::start(), PrivateMoto::start());
        let env = TestEnv::build(Rules::default(), Some(&redis.url()), REDIS_TIMEOUT).await;
        let tables = AwsTables::on(moto.config().await).await;
        let sink = EventSink::on(moto.config().await).await;
        let pairs = [
            ("REDIS_URL", redis.url()),
            ("REDIS_TIMEOUT_MS", REDIS_TIMEOUT.as_millis().to_string()),
            ("DATABASE_URL", env.database_url.clone()),
            ("KEY_PREFIX", env.keys.prefix().to_owned()),
            ("REPAIR_TABLE", tables.repair_table.clone()),
            ("DEAD_LETTER_TABLE", tables.dead_letter_table.clone()),
            ("STATUS_EVENT_BUS", sink.bus.clone()),
            ("AWS_TIMEOUT_MS", AWS_TIMEOUT.as_millis().to_string()),
            ("AWS_ATTEMPT_TIMEOUT_MS", "1000".to_owned()),
            ("AWS_CONNECT_TIMEOUT_MS", "500".to_owned()),
            ("AWS_MAX_ATTEMPTS", "3".to_owned()),
        ];
        let config = Config::from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
            .expect("a valid configuration");
        // The SDK configuration carries no deadlines of its own: whatever
        // bounds the calls below comes from the service's configuration.
        let app = App::start_with(config, moto.config().await).await.expect("the service starts");
        Self { app, sink, tables, env, redis, moto }
    }

    /// The aggregator function's handler, wired as its `main` wires it.
    fn aggregator(&self) -> AppAggregator {
        AppAggregator::from_app(&self.app)
    }

    /// The API function's handler, wired as its `main` wires it.
    fn api(&self) -> AppApi {
        AppApi::from_app(&self.app)
    }

    /// Runs batches until one has written its dead letter and published
    /// its transition, so the pause that follows stalls calls on live
    /// connections as well as new ones, and a cold emulator's first slow
    /// answers are not taken for the pause's effect.
    async fn warm_up(&self) {
        for id in 1_001..1_006 {
            let (result, _) = self.batch(&connect_and_garbage(id)).await;
            let summary = result.expect("a warm-up batch succeeds");
            if !summary.publish_failed && !summary.dead_letter_failed {
                return;
            }
        }
        panic!("the emulator never took a whole batch");
    }

    fn freeze_moto(&self) -> Frozen {
        Frozen::new(&[self.moto.pid()])
    }

    fn freeze_redis_and_moto(&self) -> Frozen {
        Frozen::new(&[self.redis.pid(), self.moto.pid()])
    }

    /// Handles `event` as the aggregator would, with how long it took.
    async fn batch(&self, event: &KafkaEvent) -> (Result<Summary, AggregatorError>, Duration) {
        let aggregator = self.aggregator();
        let started = Instant::now();
        let result = tokio::time::timeout(FROZEN_FOR, aggregator.handle(event, wall_clock_ms()))
            .await
            .unwrap_or_else(|_| panic!("the batch was still waiting after {FROZEN_FOR:?}: a call has no deadline"));
        (result, started.elapsed())
    }

    /// Answers `request` as the API would, with how long it took.
    async fn request(&self, request: &ApiRequest) -> (ApiResponse, Duration) {
        let api = self.api();
        let started = Instant::now();
        let response = tokio::time::timeout(FROZEN_FOR, api.handle(request, wall_clock_ms()))
            .await
            .unwrap_or_else(|_| panic!("{} {} was still waiting after {FROZEN_FOR:?}", request.method, request.path));
        (response, started.elapsed())
    }
}

/// The seed column of the SQL row of `id`.
async fn sql_status(env: &TestEnv, id: u64) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM user_status WHERE user_id = ?")
        .bind(id as i64)
        .fetch_optional(&env.pool)
        .await
        .expect("sql answers")
}

fn get_status(id: u64) -> ApiRequest {
    ApiRequest { method: "GET".into(), path: format!("/v1/status/{id}"), body: Vec::new(), caller: Caller::Service }
}

fn put_visible(id: u64, visible: bool) -> ApiRequest {
    ApiRequest {
        method: "PUT".into(),
        path: format!("/v1/users/{id}/visibility"),
        body: serde_json::json!({ "visible": visible }).to_string().into_bytes(),
        caller: Caller::Service,
    }
}

/// A batch of one connect of `id` and one malformed record, so the batch
/// writes a dead letter and publishes a transition.
fn connect_and_garbage(id: u64) -> KafkaEvent {
    let good = presence("session_connected", id, "phone", wall_clock_ms()).to_string();
    kafka_event(&[good, "{not json".to_owned()])
}

#[tokio::test]
async fn with_the_emulator_frozen_a_batch_succeeds_within_the_aws_deadline() {
    let rig = Rig::start().await;
    rig.warm_up().await;

    let frozen = rig.freeze_moto();
    let (result, took) = rig.batch(&connect_and_garbage(102)).await;
    frozen.thaw();
    let summary = result.expect("a batch whose only failures are the bus and the dead letters succeeds");
    // Two AWS steps in a row (dead letters, then publish), each bounded by
    // the call deadline; Redis and SQL answer.
    let bound = AWS_TIMEOUT * 2 + MARGIN;
    assert!(took < bound, "took {took:?}, more than {bound:?}");
    assert_eq!((summary.applied, summary.malformed, summary.transitions), (1, 1, 1));
    assert!(summary.dead_letter_failed, "the dead letter could not be written, and that was noticed");
    assert!(summary.publish_failed, "the publish could not be made, and that was noticed");
    assert!(summary.cache_ok, "redis answered");

    // Once everything answers, the state is what the batch said.
    let views = rig.app.reader().read(&[user(102)], None, wall_clock_ms()).await.expect("a read answers");
    assert_eq!(views[0].status, Status::Online);
    assert_eq!(sql_status(&rig.env, 102).await.as_deref(), Some("online"));
}

#[tokio::test]
async fn with_redis_and_the_emulator_frozen_a_batch_fails_within_the_deadlines_and_its_retry_converges() {
    let rig = Rig::start().await;
    let event = kafka_batch(&[presence("session_connected", 201, "phone", wall_clock_ms())]);
    rig.warm_up().await;

    let frozen = rig.freeze_redis_and_moto();
    let (result, took) = rig.batch(&event).await;
    frozen.thaw();
    // Redis's load and store each wait out REDIS_TIMEOUT_MS; the repair
    // record and the publish each wait out AWS_TIMEOUT_MS.
    let bound = REDIS_TIMEOUT * 2 + AWS_TIMEOUT * 2 + MARGIN;
    assert!(took < bound, "took {took:?}, more than {bound:?}");
    // Acknowledging a batch whose cache is stale with no repair recorded
    // would leave Redis wrong until the user's next event.
    assert!(
        matches!(result, Err(AggregatorError::Commit(CommitError::Repair(_)))),
        "the batch fails for its repair: {result:?}"
    );
    // The durable write happened before the repair failed.
    assert_eq!(sql_status(&rig.env, 201).await.as_deref(), Some("online"));

    // The event source retries the batch once everything answers again.
    let (retry, _) = rig.batch(&event).await;
    let retry = retry.expect("the retried batch succeeds");
    assert!(retry.cache_ok);
    let cached = rig.env.cache.load(&[user(201)]).await.expect("redis answers").remove(0).record;
    let durable = rig.env.store.load(&[user(201)]).await.expect("sql answers").remove(&user(201));
    assert!(cached.is_some(), "the retry wrote redis");
    // The same record, whenever each copy was written.
    let unstamped = |record: Option<UserRecord>| record.map(|r| UserRecord { written_ms: 0, ..r });
    assert_eq!(unstamped(cached), unstamped(durable), "redis holds what SQL holds");
    let views = rig.app.reader().read(&[user(201)], None, wall_clock_ms()).await.expect("a read answers");
    assert_eq!(views[0].status, Status::Online);
}

#[tokio::test]
async fn with_redis_and_the_emulator_frozen_the_api_answers_200_or_503_in_time() {
    let rig = Rig::start().await;
    rig.warm_up().await;
    let (done, _) = rig.batch(&kafka_batch(&[presence("session_connected", 301, "phone", wall_clock_ms())])).await;
    done.expect("the batch succeeds");
    // Hidden before the pause, so showing during it is a real change (and
    // the hide's publish warms the API's own AWS path).
    let (hidden, _) = rig.request(&put_visible(301, false)).await;
    assert_eq!(hidden.status, 200, "{:?}", hidden.body);

    let frozen = rig.freeze_redis_and_moto();
    let (read, read_took) = rig.request(&get_status(301)).await;
    // Showing works without Redis, so it goes on to the repair buffer and
    // the bus: the route of the API that calls AWS.
    let (put, put_took) = rig.request(&put_visible(301, true)).await;
    frozen.thaw();

    // Reads never call AWS: SQL answers once Redis has timed out (offline:
    // the user is hidden).
    assert_eq!((read.status, &read.body["status"]), (200, &serde_json::json!("offline")), "{:?}", read.body);
    let bound = REDIS_TIMEOUT * 2 + MARGIN;
    assert!(read_took < bound, "the read took {read_took:?}, more than {bound:?}");
    // The visibility write is durable but Redis and the repair buffer both
    // failed: 503, so the caller retries.
    assert_eq!(put.status, 503, "{:?}", put.body);
    assert_eq!(put.body["error"]["code"], "unavailable");
    let bound = REDIS_TIMEOUT * 2 + AWS_TIMEOUT * 2 + MARGIN;
    assert!(put_took < bound, "the visibility write took {put_took:?}, more than {bound:?}");

    // Once everything answers, the retry goes through and the user shows.
    let (again, _) = rig.request(&put_visible(301, true)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let (read, _) = rig.request(&get_status(301)).await;
    assert_eq!((read.status, &read.body["status"]), (200, &serde_json::json!("online")), "{:?}", read.body);
}

/// A transition whose publish ran into the deadline is delivered once the
/// bus answers again. The emulator is killed while paused rather than woken:
/// woken, moto would still answer the requests the kernel queued for it
/// (the publish that timed out arrives late, once per attempt), which real
/// AWS does not promise; killed, the requests of the frozen period are lost
/// as a brownout may lose them, and only the service's own record of the
/// transition can bring it back.
#[tokio::test]
async fn transitions_of_the_frozen_period_are_delivered_afterwards() {
    let mut rig = Rig::start().await;
    rig.warm_up().await;

    let frozen = rig.freeze_moto();
    let (result, _) = rig.batch(&kafka_batch(&[presence("session_connected", 402, "phone", wall_clock_ms())])).await;
    assert!(result.expect("the batch succeeds").publish_failed);
    rig.moto.restart().await;
    frozen.forget();
    // The same bus, tables and a fresh queue on the new, empty emulator.
    let config = rig.moto.config().await;
    create_tables(&aws_sdk_dynamodb::Client::new(&config), &rig.tables.repair_table, &rig.tables.dead_letter_table)
        .await
        .expect("the tables again");
    let sink = EventSink::on_bus(config, rig.sink.tag.clone(), rig.sink.bus.clone()).await;
    // The transition waited in the outbox; the next scan of each shard
    // drains it (with any warm-up event whose publication had failed).
    let committer = rig.app.committer();
    let mut published = 0;
    for shard in 0..rig.app.config.shards {
        let outcome = committer.scan_shard(shard, wall_clock_ms()).await.expect("the scan succeeds");
        assert!(!outcome.publish_failed, "shard {shard}: the bus takes the drain");
        published += outcome.published;
    }
    assert!(published >= 1, "the frozen period's transition was waiting in the outbox");

    // Delivered at least once afterwards (consumers deduplicate on
    // `event_id`), and nothing but what waited.
    let details = sink.drain(published, Duration::from_secs(10)).await;
    let frozen: Vec<_> = details.iter().filter(|d| d["user_id"].as_u64() == Some(402)).collect();
    assert!(!frozen.is_empty(), "the transition of the frozen period was never delivered: {details:?}");
    for detail in frozen {
        assert_eq!(detail["to"].as_str(), Some("online"), "{detail}");
        assert_eq!(detail["event_id"].as_str(), Some("402-1-status_changed"), "{detail}");
    }
    for detail in &details {
        let user = detail["user_id"].as_u64().unwrap_or(0);
        assert!(user == 402 || (1_001..1_006).contains(&user), "only waiting events are sent: {detail}");
    }
}

/// The template's `Timeout` of each function covers the AWS steps one
/// invocation takes in a row when AWS does not answer (each bounded by the
/// template's `AWS_TIMEOUT_MS`), plus Redis (`REDIS_TIMEOUT_MS` per round
/// trip) and the SQL pool's 3 s, with half as much again to spare; the
/// API's also stays inside API Gateway's 30 s.
#[test]
fn each_function_timeout_covers_its_deadlines_with_room_to_spare() {
    let template: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../template.yaml")).expect("template.yaml is YAML");
    let variables = &template["Globals"]["Function"]["Environment"]["Variables"];
    let redis_timeout_ms = template["Parameters"]["RedisTimeoutMs"]["Default"].as_u64().expect("a default");
    // Only the AWS_* values are literals; the rest are parameters.
    let text = |name: &str| name.starts_with("AWS_").then(|| variables[name].as_str().map(str::to_owned)).flatten();
    let aws = Config::from_lookup(text).expect("the template's AWS_* values are valid together").aws;
    let aws_ms = aws.operation_timeout.as_millis() as u64;
    const SQL_MS: u64 = 3_000;
    let timeout_ms = |function: &str| {
        let own = &template["Resources"][function]["Properties"]["Timeout"];
        own.as_u64().or(template["Globals"]["Function"]["Timeout"].as_u64()).expect("a timeout") * 1_000
    };
    // (function, AWS steps in a row, Redis round trips that may time out)
    for (function, aws_steps, redis_trips) in
        [("AggregatorFunction", 3, 2), ("IdleScannerFunction", 3, 2), ("StatusApiFunction", 2, 2)]
    {
        let worst = aws_steps * aws_ms + redis_trips * redis_timeout_ms + SQL_MS;
        let timeout = timeout_ms(function);
        assert!(2 * timeout >= 3 * worst, "{function}: Timeout {timeout} ms, worst case {worst} ms");
    }
    assert!(timeout_ms("StatusApiFunction") < 30_000, "inside API Gateway's 30 s");
}
