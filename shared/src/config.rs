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
    /// Prefix of every Redis key; lets several stacks or tests share one
    /// server without seeing each other.
    pub key_prefix: String,
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
            key_prefix: get("KEY_PREFIX").unwrap_or_default(),
        })
    }
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
    }
}
