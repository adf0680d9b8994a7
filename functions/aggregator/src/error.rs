//! The aggregator's one error table: what fails an invocation, and what
//! the Lambda runtime reports for it (`errorType`, `errorMessage`).
//!
//! A failed invocation makes the MSK event source retry the whole batch,
//! which convergence makes safe; malformed records never fail one (they
//! are dead-lettered). An event that is not an MSK batch at all is refused
//! by the runtime's own deserialization before the handler runs.

use lambda_runtime::Diagnostic;
use status_shared::services::CommitError;

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The batch's effect could not be made durable (the database is down,
    /// or so is Redis for a change that needs it). Retryable.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

impl AggregatorError {
    /// Whether a retry of the same batch can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Commit(_) => true,
        }
    }

    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Commit(_) => "CommitError",
        }
    }
}

impl From<AggregatorError> for Diagnostic {
    fn from(error: AggregatorError) -> Self {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: status_shared::error::chain(&error) }
    }
}
