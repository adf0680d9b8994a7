//! The push feed's port (DESIGN §12, §6 "Push feed"): how a commit tells
//! the stream function which users' entries changed.

use std::future::Future;

use super::error::{describe_cause, Cause};
use crate::domain::FeedChange;

/// The push feed (DESIGN §12): tells the stream function which users'
/// entries a commit changed, so it fans each change out to the connections
/// watching that user. The fan-out reads the user's state itself, so a
/// change fed twice or late is harmless; one never fed is lost to the
/// watchers, which is why a failed call is remembered (DESIGN §6, "Push
/// feed").
pub trait ChangeFeed: Send + Sync {
    /// Whether a stream function is configured (`STREAM_FUNCTION`). Without
    /// one nothing is fed.
    fn enabled(&self) -> bool;
    /// Hands `changes` (any number; at most one per user is useful) to the
    /// stream function in as few asynchronous invocations as the payload
    /// limit allows: one per commit batch in practice, never one per user.
    /// `Ok` once every invocation was accepted (queued, not yet run).
    /// Errors: [`FeedError`], which says whether a later call may succeed.
    fn changed(&self, changes: &[FeedChange]) -> impl Future<Output = Result<(), FeedError>> + Send;
}

/// Why the feed did not take a call's changes (some chunks may have been
/// taken; feeding them again is harmless): what was being done, the SDK's
/// error when one caused it, and whether trying again later can help.
#[derive(Debug, thiserror::Error)]
#[error("feeding changes to the stream failed: {context}{}", describe_cause(.source.as_deref()))]
pub struct FeedError {
    pub context: String,
    /// `false` when no later call can succeed as configured: the function
    /// does not exist, or refuses the call for good (a permission, a
    /// payload it cannot take). Such changes are logged, not kept.
    pub retryable: bool,
    #[source]
    pub source: Option<Cause>,
}

impl FeedError {
    /// A failure that a later call may not meet (throttling, a timeout, a
    /// service error).
    pub fn transient(context: impl Into<String>, source: Option<Cause>) -> Self {
        Self { context: context.into(), retryable: true, source }
    }

    /// A failure every later call would meet too, until the configuration
    /// changes.
    pub fn permanent(context: impl Into<String>, source: Option<Cause>) -> Self {
        Self { context: context.into(), retryable: false, source }
    }
}
