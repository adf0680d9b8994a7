//! The scanner's one error table: what fails an invocation, and what the
//! Lambda runtime reports for it (`errorType`, `errorMessage`).
//!
//! A schedule's invocation is asynchronous: Lambda retries a failed one,
//! and the Errors alarm counts it. Shards that succeeded keep their work.

use lambda_runtime::Diagnostic;

/// Why the input was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("shard must be an integer from 0 to {max}, got {got}")]
    ShardOutOfRange { got: String, max: u32 },
    #[error("expected {{\"shard\": N}} or a Scheduled Event envelope")]
    Unrecognized,
}

/// Why a scan invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum ScannerError {
    /// The input names no shard this function can scan. Not retryable:
    /// the same input fails the same way.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Some shards could not be scanned (Redis or the database did not
    /// answer); the others kept their work. Retryable, and the next
    /// schedule scans them anyway.
    #[error("shards failed: {0:?}")]
    ShardsFailed(Vec<u32>),
}

impl ScannerError {
    /// Whether a retry of the same input can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Input(_) => false,
            Self::ShardsFailed(_) => true,
        }
    }

    /// The `errorType` Lambda reports.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Input(_) => "InputError",
            Self::ShardsFailed(_) => "ShardsFailed",
        }
    }
}

impl From<ScannerError> for Diagnostic {
    fn from(error: ScannerError) -> Self {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: status_shared::error::chain(&error) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_input_is_final_and_failed_shards_are_retried() {
        let input: Diagnostic = ScannerError::Input(InputError::Unrecognized).into();
        assert_eq!(input.error_type, "InputError");
        assert!(input.error_message.starts_with("expected {\"shard\": N}"), "{}", input.error_message);
        assert!(!ScannerError::Input(InputError::Unrecognized).is_retryable());
        let failed = ScannerError::ShardsFailed(vec![2, 5]);
        assert!(failed.is_retryable());
        assert_eq!(Diagnostic::from(failed).error_message, "shards failed: [2, 5]");
    }
}
