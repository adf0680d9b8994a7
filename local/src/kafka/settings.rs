//! The local event source's settings (DESIGN §9, §11): which Kafka, which
//! topic and group, and the MSK event source mapping's batching, starting
//! position, retries and on-failure destination.
//!
//! [`EVENT_SOURCE`] is the one home of the numbers the SAM template's MSK
//! event declares too; `tests/integration/kafka.rs` parses `template.yaml`
//! and checks that its defaults equal these.

use std::time::Duration;

use status_shared::config::ConfigError;

/// The MSK event source mapping's settings, as the template declares them
/// and as the local poller uses them unless the environment says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSourceDefaults {
    /// The topic of presence events (DESIGN §3).
    pub topic: &'static str,
    /// The consumer group (template parameter `MskConsumerGroupId`).
    pub consumer_group: &'static str,
    /// Records per batch (`MskBatchSize`): Lambda's MSK default.
    pub batch_size: usize,
    /// The most records a batch may hold: Lambda's limit for MSK.
    pub max_batch_size: usize,
    /// How long a batch waits to fill after its first record, in ms:
    /// Lambda's MSK default when the template sets no window. The template
    /// can only say whole seconds, so its default leaves the window unset.
    pub batching_window_ms: u64,
    /// The longest window Lambda accepts (300 s), in ms.
    pub max_batching_window_ms: u64,
    /// Where a group without committed offsets starts (`MskStartingPosition`).
    pub starting_position: StartingPosition,
    /// Retries of a failed batch before it goes to the on-failure
    /// destination (`MaximumRetryAttempts`): Lambda applies 10 to a Kafka
    /// source that has an on-failure destination and no limit of its own.
    pub max_retries: u32,
    /// The on-failure destination's kind (`DestinationConfig.OnFailure.Type`).
    pub on_failure_type: &'static str,
}

/// The one source of the event source's numbers (see the module docs).
pub const EVENT_SOURCE: EventSourceDefaults = EventSourceDefaults {
    topic: "presence.updates",
    consumer_group: "online-status-aggregator",
    batch_size: 100,
    max_batch_size: 10_000,
    batching_window_ms: 500,
    max_batching_window_ms: 300_000,
    starting_position: StartingPosition::TrimHorizon,
    max_retries: 10,
    on_failure_type: "SQS",
};

/// The local broker when `KAFKA_BOOTSTRAP_SERVERS` is unset (DESIGN §9).
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// Partitions of the topic when the local stack creates it (DESIGN §11).
pub const DEFAULT_PARTITIONS: i32 = 8;
/// The local stand-in for the template's `AggregatorFailureQueue`.
pub const DEFAULT_ON_FAILURE_QUEUE: &str = "presence-updates-failed";
/// How long the consumer group waits for a member that stopped
/// heartbeating before it hands the member's partitions to others:
/// librdkafka's own default `session.timeout.ms` (`KAFKA_SESSION_TIMEOUT_MS`).
/// A restarted poller does not wait it out: it rejoins as the same static
/// member (`poller.rs`).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// The value of `KAFKA_BOOTSTRAP_SERVERS` that turns the poller off, for
/// stacks that only serve the HTTP and Invoke APIs.
pub const POLLER_OFF: &str = "off";

/// Where a consumer group without committed offsets starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record the topic still holds.
    TrimHorizon,
    /// Only records produced after the poller joined.
    Latest,
}

impl StartingPosition {
    /// The name Lambda and the template use.
    pub fn name(self) -> &'static str {
        match self {
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
            StartingPosition::Latest => "LATEST",
        }
    }

    /// Every position the poller accepts, in the template's order.
    pub const ALL: [StartingPosition; 2] = [StartingPosition::Latest, StartingPosition::TrimHorizon];

    /// The `auto.offset.reset` that gives this position to a new group.
    pub fn offset_reset(self) -> &'static str {
        match self {
            StartingPosition::TrimHorizon => "earliest",
            StartingPosition::Latest => "latest",
        }
    }
}

/// The local event source: the broker, the topic and the mapping's
/// settings, read from the environment (DESIGN §11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `KAFKA_BOOTSTRAP_SERVERS`, `host:port[,host:port]`.
    pub bootstrap_servers: String,
    /// `KAFKA_TOPIC` (default `presence.updates`); tests use their own.
    pub topic: String,
    /// `KAFKA_PARTITIONS`: partitions given to the topic if the stack
    /// creates it; an existing topic keeps its own.
    pub partitions: i32,
    /// `KAFKA_CONSUMER_GROUP` (default `online-status-aggregator`).
    pub consumer_group: String,
    /// `MSK_BATCH_SIZE`, 1..=10,000.
    pub batch_size: usize,
    /// `MSK_BATCHING_WINDOW_MS`, 0..=300,000.
    pub batching_window: Duration,
    /// `MSK_STARTING_POSITION`, `TRIM_HORIZON` or `LATEST`.
    pub starting_position: StartingPosition,
    /// `MSK_MAX_RETRIES`: retries after the first attempt, 0..=10,000.
    pub max_retries: u32,
    /// `MSK_MAX_CONCURRENCY`: function calls in flight at once, 1..=10,000,
    /// never more than one per partition. `None` (unset) is one per
    /// partition the poller holds, Lambda's own concurrency for Kafka.
    pub max_concurrency: Option<usize>,
    /// `LOCAL_ONFAILURE_QUEUE`: the SQS queue (in the emulator) that gets
    /// the description of each batch given up on.
    pub on_failure_queue: String,
    /// `KAFKA_SESSION_TIMEOUT_MS`, 6,000..=3,600,000: the poller's
    /// `session.timeout.ms` in its group, how long a poller that died
    /// holds its partitions if nothing rejoins in its place (a restarted
    /// one does, at once).
    pub session_timeout: Duration,
    /// `KAFKA_INSTANCE_ID`: the poller's static member id in its group
    /// (`group.instance.id`, up to 249 characters). Unset, the group's
    /// name with `-local-poller`: one stack per group. A second stack in
    /// the same group needs an id of its own; with the same id it fences
    /// the first, whose poller then stops the stack (`poller.rs`).
    pub instance_id: Option<String>,
}

impl KafkaSettings {
    /// The settings for `bootstrap_servers` with every default.
    pub fn defaults(bootstrap_servers: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic: EVENT_SOURCE.topic.to_owned(),
            partitions: DEFAULT_PARTITIONS,
            consumer_group: EVENT_SOURCE.consumer_group.to_owned(),
            batch_size: EVENT_SOURCE.batch_size,
            batching_window: Duration::from_millis(EVENT_SOURCE.batching_window_ms),
            starting_position: EVENT_SOURCE.starting_position,
            max_retries: EVENT_SOURCE.max_retries,
            max_concurrency: None,
            on_failure_queue: DEFAULT_ON_FAILURE_QUEUE.to_owned(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            instance_id: None,
        }
    }

    /// The poller's static member id: `KAFKA_INSTANCE_ID`, or the group's
    /// name with `-local-poller`. A restarted stack rejoins under the same
    /// id and takes its partitions back at once.
    pub fn member_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| format!("{}-local-poller", self.consumer_group))
    }

    /// Reads through `lookup` (blank counts as unset). `None` when
    /// `KAFKA_BOOTSTRAP_SERVERS=off`: no poller.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let servers = get("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|| DEFAULT_BOOTSTRAP_SERVERS.to_owned());
        if servers.eq_ignore_ascii_case(POLLER_OFF) {
            return Ok(None);
        }
        let number = |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(raw) => match raw.parse::<u64>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    Ok(_) => Err(ConfigError { name, value: raw, reason: "out of range" }),
                    Err(_) => Err(ConfigError { name, value: raw, reason: "not a non-negative integer" }),
                },
            }
        };
        let d = Self::defaults(&servers);
        let starting_position = match get("MSK_STARTING_POSITION") {
            None => d.starting_position,
            Some(raw) => StartingPosition::ALL.into_iter().find(|p| p.name() == raw).ok_or(ConfigError {
                name: "MSK_STARTING_POSITION",
                value: raw,
                reason: "must be TRIM_HORIZON or LATEST",
            })?,
        };
        Ok(Some(Self {
            topic: get("KAFKA_TOPIC").unwrap_or(d.topic),
            // A topic of more than 10,000 partitions is a typo here.
            partitions: number("KAFKA_PARTITIONS", d.partitions as u64, 1, 10_000)? as i32,
            consumer_group: get("KAFKA_CONSUMER_GROUP").unwrap_or(d.consumer_group),
            batch_size: number("MSK_BATCH_SIZE", d.batch_size as u64, 1, EVENT_SOURCE.max_batch_size as u64)? as usize,
            batching_window: Duration::from_millis(number(
                "MSK_BATCHING_WINDOW_MS",
                EVENT_SOURCE.batching_window_ms,
                0,
                EVENT_SOURCE.max_batching_window_ms,
            )?),
            starting_position,
            // Lambda accepts 0..=10,000 retry attempts for Kafka sources.
            max_retries: number("MSK_MAX_RETRIES", u64::from(d.max_retries), 0, 10_000)? as u32,
            max_concurrency: match get("MSK_MAX_CONCURRENCY") {
                None => d.max_concurrency,
                Some(_) => Some(number("MSK_MAX_CONCURRENCY", 1, 1, 10_000)? as usize),
            },
            on_failure_queue: get("LOCAL_ONFAILURE_QUEUE").unwrap_or(d.on_failure_queue),
            // Kafka's own bounds: the broker's group.min.session.timeout.ms
            // default, and librdkafka's most.
            session_timeout: Duration::from_millis(number(
                "KAFKA_SESSION_TIMEOUT_MS",
                d.session_timeout.as_millis() as u64,
                6_000,
                3_600_000,
            )?),
            instance_id: match get("KAFKA_INSTANCE_ID") {
                // Kafka's limit on a group.instance.id, in its own
                // alphabet (as a topic name's).
                Some(id)
                    if id.len() > 249
                        || id == "."
                        || id == ".."
                        || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
                {
                    return Err(ConfigError {
                        name: "KAFKA_INSTANCE_ID",
                        value: id,
                        reason: "must be 1 to 249 of a-z A-Z 0-9 . _ -, and not . or ..",
                    })
                }
                id => id,
            },
            bootstrap_servers: servers,
        }))
    }

    /// The `eventSourceArn` the poller puts in each event: an MSK cluster
    /// ARN naming this local cluster, since there is no real one.
    pub fn event_source_arn(&self, region: &str) -> String {
        format!("arn:aws:kafka:{region}:000000000000:cluster/online-status-local/{}", self.topic)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<KafkaSettings>, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KafkaSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn unset_variables_give_the_event_sources_defaults() {
        let s = read(&[]).unwrap().unwrap();
        assert_eq!(s, KafkaSettings::defaults("127.0.0.1:9092"));
        assert_eq!(s.batch_size, 100);
        assert_eq!(s.batching_window, Duration::from_millis(500));
        assert_eq!(s.starting_position, StartingPosition::TrimHorizon);
        assert_eq!((s.max_retries, s.partitions), (10, 8));
        assert_eq!(s.on_failure_queue, "presence-updates-failed");
        assert_eq!(s.consumer_group, "online-status-aggregator");
        assert_eq!(s.max_concurrency, None, "one call per partition");
        assert_eq!(s.session_timeout, Duration::from_secs(45), "librdkafka's own");
    }

    #[test]
    fn set_variables_win_and_off_turns_the_poller_off() {
        let s = read(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093"),
            ("MSK_BATCH_SIZE", "10000"),
            ("MSK_BATCHING_WINDOW_MS", "0"),
            ("MSK_STARTING_POSITION", "LATEST"),
            ("MSK_MAX_RETRIES", "0"),
            ("KAFKA_TOPIC", "t"),
            ("MSK_MAX_CONCURRENCY", "3"),
            ("KAFKA_SESSION_TIMEOUT_MS", "300000"),
            ("KAFKA_INSTANCE_ID", "stack-b.2_x"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.member_id(), "stack-b.2_x");
        assert_eq!(read(&[]).unwrap().unwrap().member_id(), "online-status-aggregator-local-poller");
        assert_eq!(
            (s.bootstrap_servers.as_str(), s.batch_size, s.batching_window),
            ("kafka:9093", 10_000, Duration::ZERO)
        );
        assert_eq!((s.starting_position, s.max_retries, s.topic.as_str()), (StartingPosition::Latest, 0, "t"));
        assert_eq!(s.max_concurrency, Some(3));
        assert_eq!(s.session_timeout, Duration::from_secs(300));
        assert_eq!(read(&[("KAFKA_BOOTSTRAP_SERVERS", "off")]).unwrap(), None);
    }

    #[test]
    fn out_of_range_values_name_their_variable() {
        for (name, value) in [
            ("MSK_BATCH_SIZE", "0"),
            ("MSK_BATCH_SIZE", "10001"),
            ("MSK_BATCHING_WINDOW_MS", "300001"),
            ("MSK_STARTING_POSITION", "AT_TIMESTAMP"),
            ("KAFKA_PARTITIONS", "0"),
            ("MSK_MAX_RETRIES", "-1"),
            ("MSK_MAX_CONCURRENCY", "0"),
            ("KAFKA_SESSION_TIMEOUT_MS", "5999"),
            ("KAFKA_INSTANCE_ID", "a b"),
            ("KAFKA_INSTANCE_ID", "x/y"),
            ("KAFKA_INSTANCE_ID", "."),
            ("KAFKA_INSTANCE_ID", ".."),
        ] {
            let err = read(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name, "{value}");
        }
        assert_eq!(read(&[("KAFKA_INSTANCE_ID", &"i".repeat(250))]).unwrap_err().name, "KAFKA_INSTANCE_ID");
        assert!(read(&[("KAFKA_INSTANCE_ID", &"i".repeat(249))]).is_ok());
    }
}
