//! What fails a stream invocation as a whole.

use status_shared::services::StreamError;

/// Why an invocation failed as a whole: its caller should run it again
/// (a fan-out is idempotent, so a retry sends only what did not go out).
#[derive(Debug, thiserror::Error)]
pub enum InvokeFailure {
    #[error("stream call failed: {0}")]
    Stream(#[from] StreamError),
    /// `failed` connections still unserved after the retries within the
    /// invocation; `retried` attempts had failed before (each counted in
    /// `PostFailures`).
    #[error("fan-out left {failed} connections unserved")]
    Unserved { failed: usize, retried: usize },
}
