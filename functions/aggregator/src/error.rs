//! The aggregator's one error table: what fails an invocation, and what
//! the Lambda runtime reports for it (`errorType`, `errorMessage`).
//!
//! A failed invocation makes the MSK event source retry the whole batch,
//! which convergence makes safe; malformed records never fail one (they
//! are dead-lettered). An event that is not an MSK batch at all is refused
//! as [`AggregatorError::InvalidEvent`].

use lambda_runtime::Diagnostic;
use status_shared::services::CommitError;

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The batch's effect could not be made durable (the database is down,
    /// or so is Redis for a change that needs it). Retryable.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// The payload is not an MSK batch
    /// ([`crate::decode::read_batch`]). Not retryable: the same payload
    /// is refused again.
    #[error("the event is not an MSK batch")]
    InvalidEvent(#[source] serde_json::Error),
}

impl AggregatorError {
    /// Whether a retry of the same batch can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Commit(_) => true,
            Self::InvalidEvent(_) => false,
        }
    }

    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Commit(_) => "CommitError",
            Self::InvalidEvent(_) => "InvalidEvent",
        }
    }
}

impl From<AggregatorError> for Diagnostic {
    fn from(error: AggregatorError) -> Self {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: status_shared::error::chain(&error) }
    }
}
