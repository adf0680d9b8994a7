//! What the local stack reads from the environment: the functions' own
//! [`Config`] with local defaults filled in, plus the few variables only
//! the local stack has (ports, the scan timer, an optional event queue).
//!
//! Everything is read through a lookup function, so tests pass a map
//! instead of mutating the process environment.

use std::time::Duration;

use status_shared::config::{Config, ConfigError};

use crate::kafka::settings::KafkaSettings;
use crate::websocket::{GatewaySettings, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTION, DEFAULT_WS_PORT};

/// Values the SAM template gives the functions in AWS, chosen here so a
/// bare `online-status-local` starts against the local servers. A variable
/// that is set (and not blank) always wins.
pub const LOCAL_DEFAULTS: &[(&str, &str)] = &[
    ("REPAIR_TABLE", "online-status-repair"),
    ("DEAD_LETTER_TABLE", "online-status-dead-letters"),
    ("STATUS_EVENT_BUS", "online-status-events"),
    ("DATABASE_URL", "mysql://root@127.0.0.1:3306/online_status"),
    // The push feed (DESIGN §12) invokes it through this stack's own Invoke
    // API (`Stack::start` points `AWS_ENDPOINT_URL_LAMBDA` there); until
    // the stack serves it, the invoke answers 404 and the feed only logs.
    ("STREAM_FUNCTION", "StatusStreamFunction"),
];

/// The HTTP API's port when `LOCAL_API_PORT` is unset, as `sam local
/// start-api` uses (DESIGN §9).
pub const DEFAULT_API_PORT: u16 = 3000;
/// The Invoke API's port when `LOCAL_INVOKE_PORT` is unset, as `sam local
/// start-lambda` uses (DESIGN §9).
pub const DEFAULT_INVOKE_PORT: u16 = 3001;
/// Seconds between scans of every shard: the template's schedules run each
/// shard once a minute.
pub const DEFAULT_SCAN_INTERVAL_S: u64 = 60;

/// Why the local stack refuses to start before touching anything.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Without an endpoint override the SDK would create tables and a bus in
    /// whatever AWS account this machine's credentials reach; the local
    /// stack only ever talks to an emulator, so it stops instead.
    #[error(
        "AWS_ENDPOINT_URL is not set, and the local stack talks to an AWS emulator only, never to a real \
         account. Run scripts/up.sh (it starts Redis, MariaDB and moto and sets everything), or start moto \
         with `bash scripts/services.sh` and export AWS_ENDPOINT_URL=http://127.0.0.1:5000 \
         AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
    )]
    NoEmulator,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Everything the local stack needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The functions' configuration, exactly as a Lambda would read it.
    pub config: Config,
    /// The emulator every AWS call goes to (`AWS_ENDPOINT_URL`).
    pub aws_endpoint: String,
    /// `LOCAL_API_PORT`; 0 picks a free port (tests use that).
    pub api_port: u16,
    /// `LOCAL_INVOKE_PORT`; 0 picks a free port.
    pub invoke_port: u16,
    /// `LOCAL_SCAN_INTERVAL_S`; `None` (the value 0) turns the timer off,
    /// for benchmarks that scan on their own.
    pub scan_interval: Option<Duration>,
    /// `LOCAL_EVENTS_QUEUE`: an SQS queue (created if absent) that receives
    /// every `status_changed` event on the bus, so people can watch them.
    pub events_queue: Option<String>,
    /// The WebSocket API's port and time limits (`LOCAL_WS_PORT`,
    /// `LOCAL_WS_IDLE_TIMEOUT_S`, `LOCAL_WS_MAX_CONNECTION_S`).
    pub websocket: GatewaySettings,
    /// The MSK event source poller's settings (`KAFKA_*`, `MSK_*`,
    /// `LOCAL_ONFAILURE_QUEUE`); `None` when `KAFKA_BOOTSTRAP_SERVERS=off`.
    pub kafka: Option<KafkaSettings>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`; blank values count as unset, as
    /// [`Config::from_lookup`] treats them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        // Checked first: nothing below may reach AWS before this holds.
        let aws_endpoint = get("AWS_ENDPOINT_URL").ok_or(SettingsError::NoEmulator)?;
        let config = Config::from_lookup(with_local_defaults(&lookup))?;
        let number = |name: &'static str, default: u64, max: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<u64>() {
                    Ok(v) if v <= max => Ok(v),
                    Ok(_) => Err(ConfigError { name, value: raw, reason: "out of range" }),
                    Err(_) => Err(ConfigError { name, value: raw, reason: "not a non-negative integer" }),
                },
            }
        };
        let port = |name: &'static str, default: u16| -> Result<u16, ConfigError> {
            number(name, u64::from(default), u64::from(u16::MAX)).map(|p| p as u16)
        };
        // A day is far beyond any useful local schedule; the bound only
        // catches typos such as a value in milliseconds.
        let scan_s = number("LOCAL_SCAN_INTERVAL_S", DEFAULT_SCAN_INTERVAL_S, 86_400)?;
        // A connection's limits, in seconds: at least 1, at most a day.
        let seconds = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match number(name, default.as_secs(), 86_400)? {
                0 => Err(ConfigError { name, value: "0".into(), reason: "must be at least 1" }),
                s => Ok(Duration::from_secs(s)),
            }
        };
        let websocket = GatewaySettings {
            port: port("LOCAL_WS_PORT", DEFAULT_WS_PORT)?,
            idle_timeout: seconds("LOCAL_WS_IDLE_TIMEOUT_S", DEFAULT_IDLE_TIMEOUT)?,
            max_connection: seconds("LOCAL_WS_MAX_CONNECTION_S", DEFAULT_MAX_CONNECTION)?,
        };
        Ok(Self {
            config,
            aws_endpoint,
            api_port: port("LOCAL_API_PORT", DEFAULT_API_PORT)?,
            invoke_port: port("LOCAL_INVOKE_PORT", DEFAULT_INVOKE_PORT)?,
            scan_interval: (scan_s > 0).then(|| Duration::from_secs(scan_s)),
            events_queue: get("LOCAL_EVENTS_QUEUE"),
            websocket,
            kafka: KafkaSettings::from_lookup(&lookup)?,
        })
    }
}

/// `lookup` with [`LOCAL_DEFAULTS`] behind it: what `Config::from_lookup`
/// reads for the local stack.
pub fn with_local_defaults(lookup: impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        lookup(name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| LOCAL_DEFAULTS.iter().find(|(known, _)| *known == name).map(|(_, value)| (*value).to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    const EMULATOR: (&str, &str) = ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000");

    #[test]
    fn without_an_emulator_the_stack_refuses_to_start_and_says_how_to_fix_it() {
        let err = settings(&[]).unwrap_err();
        assert!(matches!(err, SettingsError::NoEmulator));
        assert!(err.to_string().contains("scripts/up.sh"));
        assert!(matches!(settings(&[("AWS_ENDPOINT_URL", " ")]), Err(SettingsError::NoEmulator)));
    }

    #[test]
    fn unset_variables_get_the_local_defaults() {
        let s = settings(&[EMULATOR]).unwrap();
        assert_eq!(s.config.repair_table.as_deref(), Some("online-status-repair"));
        assert_eq!(s.config.dead_letter_table.as_deref(), Some("online-status-dead-letters"));
        assert_eq!(s.config.status_event_bus.as_deref(), Some("online-status-events"));
        assert_eq!(s.config.database_url, "mysql://root@127.0.0.1:3306/online_status");
        assert_eq!((s.api_port, s.invoke_port), (3000, 3001));
        assert_eq!(s.scan_interval, Some(Duration::from_secs(60)));
        assert_eq!(s.events_queue, None);
        assert_eq!(s.websocket, GatewaySettings::default());
        assert_eq!(s.websocket.port, 3002);
        assert_eq!(s.config.stream_function.as_deref(), Some("StatusStreamFunction"));
        assert_eq!(s.config.lambda_endpoint, None, "set by the stack once its Invoke API is bound");
    }

    #[test]
    fn the_websocket_api_settings_are_read_and_checked() {
        let s = settings(&[
            EMULATOR,
            ("LOCAL_WS_PORT", "0"),
            ("LOCAL_WS_IDLE_TIMEOUT_S", "5"),
            ("LOCAL_WS_MAX_CONNECTION_S", "60"),
        ])
        .unwrap();
        assert_eq!(s.websocket.port, 0);
        assert_eq!(s.websocket.idle_timeout, Duration::from_secs(5));
        assert_eq!(s.websocket.max_connection, Duration::from_secs(60));
        for (name, bad) in
            [("LOCAL_WS_PORT", "65536"), ("LOCAL_WS_IDLE_TIMEOUT_S", "0"), ("LOCAL_WS_MAX_CONNECTION_S", "x")]
        {
            let err = settings(&[EMULATOR, (name, bad)]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn set_variables_win_over_the_local_defaults_and_blank_ones_do_not() {
        let s = settings(&[
            EMULATOR,
            ("REPAIR_TABLE", "mine"),
            ("STATUS_EVENT_BUS", ""),
            ("LOCAL_API_PORT", "0"),
            ("LOCAL_SCAN_INTERVAL_S", "0"),
            ("IDLE_AFTER_MS", "2000"),
        ])
        .unwrap();
        assert_eq!(s.config.repair_table.as_deref(), Some("mine"));
        assert_eq!(s.config.status_event_bus.as_deref(), Some("online-status-events"));
        assert_eq!(s.api_port, 0);
        assert_eq!(s.scan_interval, None);
        assert_eq!(s.config.rules.idle_after_ms, 2000);
    }

    #[test]
    fn a_bad_local_value_names_its_variable() {
        let err = settings(&[EMULATOR, ("LOCAL_INVOKE_PORT", "70000")]).unwrap_err();
        assert!(err.to_string().contains("LOCAL_INVOKE_PORT"), "{err}");
        let err = settings(&[EMULATOR, ("LOCAL_SCAN_INTERVAL_S", "soon")]).unwrap_err();
        assert!(err.to_string().contains("LOCAL_SCAN_INTERVAL_S"), "{err}");
    }
}
