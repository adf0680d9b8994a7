//! The ports' errors: what a cache, store, bus or repair-buffer call can
//! fail with, each keeping the driver's or SDK's error as its cause without
//! naming its type, so services depend on no driver.

/// A driver's or SDK's error, kept as the cause of a port error without
/// naming its type, so services depend on no driver.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cache call failed. Every failure means "treat Redis as down for
/// this call": callers fall back to SQL and record repairs.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis did not answer within {0} ms")]
    Timeout(u128),
    #[error("redis failed: {0}")]
    Redis(#[source] Cause),
    #[error("redis holds a value this service cannot read: {0}")]
    Corrupt(String),
    /// The client could not reach the right node: a cluster topology it
    /// cannot use, a URL naming no node, a connection of the wrong kind.
    #[error("redis routing failed: {0}")]
    Routing(String),
}

/// Why a durable store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database failed: {0}")]
    Database(#[source] Cause),
    #[error("database holds a value this service cannot read: {0}")]
    Corrupt(String),
    /// A value no column can hold exactly (DESIGN §7's range of instants):
    /// refused before the statement is sent, never clamped.
    #[error("value cannot be stored exactly: {0}")]
    Unencodable(String),
}

/// Why publishing failed after its retries: what was being done, and the
/// SDK's error when one caused it.
#[derive(Debug, thiserror::Error)]
#[error("publishing status_changed failed: {context}{}", describe_cause(.source.as_deref()))]
pub struct PublishError {
    pub context: String,
    #[source]
    pub source: Option<Cause>,
}

impl PublishError {
    /// A failure with no error underneath (say, entries the bus refused).
    pub fn new(context: impl Into<String>) -> Self {
        Self { context: context.into(), source: None }
    }

    /// A failure caused by `source`.
    pub fn caused_by(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self { context: context.into(), source: Some(source.into()) }
    }
}

/// Why the repair buffer (or the dead-letter table) failed: what was being
/// done, and the SDK's error when one caused it.
#[derive(Debug, thiserror::Error)]
#[error("cache-repair buffer failed: {context}{}", describe_cause(.source.as_deref()))]
pub struct RepairError {
    pub context: String,
    #[source]
    pub source: Option<Cause>,
}

impl RepairError {
    /// A failure with no error underneath.
    pub fn new(context: impl Into<String>) -> Self {
        Self { context: context.into(), source: None }
    }

    /// A failure caused by `source`.
    pub fn caused_by(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self { context: context.into(), source: Some(source.into()) }
    }
}

/// `: cause: its cause ...` for a message, or nothing. These errors are
/// logged by their `Display`, and an SDK error says the reason only
/// further down its chain, so the message carries the chain.
pub(super) fn describe_cause(source: Option<&(dyn std::error::Error + Send + Sync + 'static)>) -> String {
    source.map(|cause| format!(": {}", crate::error::chain(cause))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_errors_keep_their_cause_whole_and_say_it() {
        let sdk = std::io::Error::new(std::io::ErrorKind::TimedOut, "dispatch failure");
        let error = PublishError::caused_by("PutEvents to status", sdk);
        assert_eq!(error.to_string(), "publishing status_changed failed: PutEvents to status: dispatch failure");
        let cause = std::error::Error::source(&error).and_then(|c| c.downcast_ref::<std::io::Error>());
        assert_eq!(cause.map(std::io::Error::kind), Some(std::io::ErrorKind::TimedOut), "the SDK's error, not text");
        let plain = RepairError::new("3 items still unprocessed");
        assert_eq!(plain.to_string(), "cache-repair buffer failed: 3 items still unprocessed");
        assert!(std::error::Error::source(&plain).is_none());
        let store = StoreError::Database(Box::new(std::io::Error::other("gone")));
        assert!(std::error::Error::source(&store).is_some_and(|c| c.is::<std::io::Error>()));
    }
}
