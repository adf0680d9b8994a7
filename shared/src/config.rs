//! Typed configuration, read once at start-up from the environment. A bad
//! value fails fast with the variable's name, so a misconfigured function
//! never starts half-working.

use std::time::Duration;

use crate::domain::Rules;

/// Everything the functions read from the environment (DESIGN §11).
#[derive(Clone, Debug)]
pub struct Config {
    pub rules: Rules,
    pub shards: u32,
    pub redis_timeout: Duration,
    pub backfill_ttl: Duration,
    pub poll_window: Duration,
    /// How far ahead of the service clock an event may be stamped.
    pub max_clock_skew_ms: i64,
    pub redis_url: String,
    pub redis_reader_url: Option<String>,
    pub database_url: String,
    pub database_reader_url: Option<String>,
    /// Secrets Manager secret with the database `username` and `password`,
    /// which then override any in the URLs.
    pub database_secret_arn: Option<String>,
    pub repair_table: Option<String>,
    pub dead_letter_table: Option<String>,
    pub status_event_bus: Option<String>,
    /// `STREAM_FUNCTION`: the stream function (name or ARN) that the push
    /// feed invokes after every commit (DESIGN §12); unset, nothing is fed.
    pub stream_function: Option<String>,
    /// `AWS_ENDPOINT_URL_LAMBDA`: where the Lambda client sends `Invoke`,
    /// the SDK's own service-specific override, read here so the local
    /// stack can point it at its Invoke API once that port is bound.
    pub lambda_endpoint: Option<String>,
    /// Prefix of every Redis key; lets several stacks or tests share one
    /// server without seeing each other.
    pub key_prefix: String,
    /// Deadlines and retry budget of every AWS SDK call.
    pub aws: AwsDeadlines,
    /// Live status over WebSocket (DESIGN §12).
    pub stream: StreamConfig,
}

/// The `STREAM_*` settings of DESIGN §12.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// `STREAM_ENDPOINT`: the Management API URL frames are posted to;
    /// `None` when unset (no frames can be posted).
    pub endpoint: Option<String>,
    /// `STREAM_MAX_IDS`: distinct ids one connection may hold (1,000).
    pub max_ids: usize,
    /// `STREAM_CURSOR_RETENTION_S`, in ms: how long a cursor resumes
    /// exactly (8,100 s).
    pub cursor_retention_ms: i64,
    /// `STREAM_COALESCE_MS`: the window within which one connection's
    /// changes go out as one frame (100 ms).
    pub coalesce_ms: i64,
    /// `STREAM_ACTIVITY_REFRESH_MS`: the least time between two frames that
    /// only move an online user's `last_active_ms` (60,000 ms).
    pub activity_refresh_ms: i64,
}

/// How long any one AWS SDK call (DynamoDB, EventBridge, Secrets Manager)
/// may take, and how often the SDK may try it (issue 17: every call to AWS
/// has a deadline). Given to the SDK's own `timeout_config` and
/// `retry_config` by [`crate::adapters::aws::with_deadlines`].
///
/// `operation_timeout` bounds one call whole, every attempt and the pauses
/// between them included, so a stalled service costs a path at most that
/// long per call; it must be at least `attempt_timeout`, which must be at
/// least `connect_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AwsDeadlines {
    /// `AWS_CONNECT_TIMEOUT_MS`: establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// `AWS_ATTEMPT_TIMEOUT_MS`: one attempt, sending the request to the
    /// end of the answer; also the socket read timeout.
    pub attempt_timeout: Duration,
    /// `AWS_TIMEOUT_MS`: the whole call, retries included.
    pub operation_timeout: Duration,
    /// `AWS_MAX_ATTEMPTS`: attempts per call, the first included (the
    /// SDK's own variable, with the same meaning).
    pub max_attempts: u32,
}

impl Default for AwsDeadlines {
    /// 1 s to connect, 1.5 s per attempt, 3 s per call, 3 attempts. AWS
    /// answers these calls in tens of milliseconds, so an attempt past
    /// 1.5 s is a brownout rather than a slow day; 3 s per call keeps the
    /// three AWS steps of a batch (dead letters, repair buffer, publish)
    /// under 10 s together, well inside every function's timeout.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(1_000),
            attempt_timeout: Duration::from_millis(1_500),
            operation_timeout: Duration::from_millis(3_000),
            max_attempts: 3,
        }
    }
}

/// A variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`, so tests can pass a map instead of mutating
    /// the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let int = |name: &'static str, default: i64, min: i64, max: i64| -> Result<i64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<i64>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    Ok(_) => Err(ConfigError { name, value: raw, reason: "out of range" }),
                    Err(_) => Err(ConfigError { name, value: raw, reason: "not an integer" }),
                },
            }
        };
        const DAY_MS: i64 = 86_400_000;
        let rules = Rules {
            idle_after_ms: int("IDLE_AFTER_MS", 300_000, 1, DAY_MS)?,
            session_ttl_ms: int("SESSION_TTL_MS", 1_800_000, 1, 7 * DAY_MS)?,
            offline_grace_ms: int("OFFLINE_GRACE_MS", 0, 0, DAY_MS)?,
            max_sessions: int("MAX_SESSIONS", 64, 1, 10_000)? as usize,
        };
        let ms = |v: i64| Duration::from_millis(v as u64);
        let aws = aws_deadlines(&int, &get)?;
        Ok(Self {
            rules,
            shards: int("SHARDS", 16, 1, 4096)? as u32,
            redis_timeout: ms(int("REDIS_TIMEOUT_MS", 500, 1, 60_000)?),
            backfill_ttl: Duration::from_secs(int("BACKFILL_TTL_S", 60, 1, 86_400)? as u64),
            poll_window: Duration::from_secs(int("POLL_WINDOW_S", 30, 1, 3600)? as u64),
            max_clock_skew_ms: int("MAX_CLOCK_SKEW_MS", 300_000, 0, DAY_MS)?,
            redis_url: get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            redis_reader_url: get("REDIS_READER_URL"),
            database_url: get("DATABASE_URL").unwrap_or_else(|| "mysql://root@127.0.0.1:3306/online_status".into()),
            database_reader_url: get("DATABASE_READER_URL"),
            database_secret_arn: get("DATABASE_SECRET_ARN"),
            repair_table: get("REPAIR_TABLE"),
            dead_letter_table: get("DEAD_LETTER_TABLE"),
            status_event_bus: get("STATUS_EVENT_BUS"),
            stream_function: get("STREAM_FUNCTION"),
            lambda_endpoint: get("AWS_ENDPOINT_URL_LAMBDA"),
            key_prefix: get("KEY_PREFIX").unwrap_or_default(),
            aws,
            stream: StreamConfig {
                endpoint: get("STREAM_ENDPOINT"),
                max_ids: int("STREAM_MAX_IDS", 1_000, 1, 100_000)? as usize,
                cursor_retention_ms: int("STREAM_CURSOR_RETENTION_S", 8_100, 1, 86_400)? * 1_000,
                coalesce_ms: int("STREAM_COALESCE_MS", 100, 0, 60_000)?,
                activity_refresh_ms: int("STREAM_ACTIVITY_REFRESH_MS", 60_000, 0, DAY_MS)?,
            },
        })
    }
}

/// Reads the `AWS_*` deadlines, refusing an order that could not hold (an
/// attempt longer than the call, a connect longer than the attempt).
fn aws_deadlines(
    int: &impl Fn(&'static str, i64, i64, i64) -> Result<i64, ConfigError>,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<AwsDeadlines, ConfigError> {
    let defaults = AwsDeadlines::default();
    let ms = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(int(name, default.as_millis() as i64, 1, 600_000)? as u64))
    };
    let deadlines = AwsDeadlines {
        connect_timeout: ms("AWS_CONNECT_TIMEOUT_MS", defaults.connect_timeout)?,
        attempt_timeout: ms("AWS_ATTEMPT_TIMEOUT_MS", defaults.attempt_timeout)?,
        operation_timeout: ms("AWS_TIMEOUT_MS", defaults.operation_timeout)?,
        max_attempts: int("AWS_MAX_ATTEMPTS", i64::from(defaults.max_attempts), 1, 10)? as u32,
    };
    let refuse =
        |name: &'static str, reason: &'static str| ConfigError { name, value: get(name).unwrap_or_default(), reason };
    if deadlines.attempt_timeout > deadlines.operation_timeout {
        return Err(refuse("AWS_ATTEMPT_TIMEOUT_MS", "longer than AWS_TIMEOUT_MS"));
    }
    if deadlines.connect_timeout > deadlines.attempt_timeout {
        return Err(refuse("AWS_CONNECT_TIMEOUT_MS", "longer than AWS_ATTEMPT_TIMEOUT_MS"));
    }
    Ok(deadlines)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = from(&[]).unwrap();
        assert_eq!(c.rules, Rules::default());
        assert_eq!(c.shards, 16);
        assert_eq!(c.redis_timeout, Duration::from_millis(500));
        assert_eq!(c.backfill_ttl, Duration::from_secs(60));
        assert_eq!(c.poll_window, Duration::from_secs(30));
        assert_eq!(c.rules.max_sessions, 64);
        assert_eq!(c.aws, AwsDeadlines::default());
        assert_eq!(c.aws.operation_timeout, Duration::from_millis(3_000));
        assert_eq!(
            c.stream,
            StreamConfig {
                endpoint: None,
                max_ids: 1_000,
                cursor_retention_ms: 8_100_000,
                coalesce_ms: 100,
                activity_refresh_ms: 60_000
            }
        );
    }

    #[test]
    fn aws_deadlines_are_read_and_must_nest() {
        let c = from(&[
            ("AWS_CONNECT_TIMEOUT_MS", "100"),
            ("AWS_ATTEMPT_TIMEOUT_MS", "200"),
            ("AWS_TIMEOUT_MS", "500"),
            ("AWS_MAX_ATTEMPTS", "2"),
        ])
        .unwrap();
        assert_eq!(
            c.aws,
            AwsDeadlines {
                connect_timeout: Duration::from_millis(100),
                attempt_timeout: Duration::from_millis(200),
                operation_timeout: Duration::from_millis(500),
                max_attempts: 2,
            }
        );
        let err = from(&[("AWS_ATTEMPT_TIMEOUT_MS", "5000")]).unwrap_err();
        assert_eq!((err.name, err.value.as_str()), ("AWS_ATTEMPT_TIMEOUT_MS", "5000"));
        assert_eq!(from(&[("AWS_CONNECT_TIMEOUT_MS", "2000")]).unwrap_err().name, "AWS_CONNECT_TIMEOUT_MS");
        assert_eq!(from(&[("AWS_MAX_ATTEMPTS", "0")]).unwrap_err().reason, "out of range");
        assert_eq!(from(&[("AWS_TIMEOUT_MS", "soon")]).unwrap_err().reason, "not an integer");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = from(&[("SHARDS", "sixteen")]).unwrap_err();
        assert_eq!(err.name, "SHARDS");
        assert!(err.to_string().contains("SHARDS"));
        assert_eq!(from(&[("IDLE_AFTER_MS", "0")]).unwrap_err().reason, "out of range");
        assert_eq!(from(&[("MAX_SESSIONS", "0")]).unwrap_err().name, "MAX_SESSIONS");
    }

    #[test]
    fn values_are_read() {
        let c = from(&[("IDLE_AFTER_MS", "1000"), ("OFFLINE_GRACE_MS", "5000"), ("KEY_PREFIX", "t1:")]).unwrap();
        assert_eq!(c.rules.idle_after_ms, 1000);
        assert_eq!(c.rules.offline_grace_ms, 5000);
        assert_eq!(c.key_prefix, "t1:");
        assert_eq!((c.stream_function, c.lambda_endpoint), (None, None));
        let c =
            from(&[("STREAM_FUNCTION", "StatusStreamFunction"), ("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:3001")])
                .unwrap();
        assert_eq!(c.stream_function.as_deref(), Some("StatusStreamFunction"));
        assert_eq!(c.lambda_endpoint.as_deref(), Some("http://127.0.0.1:3001"));
    }
}
