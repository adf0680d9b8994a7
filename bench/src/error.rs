//! The one error type of the benchmark's steps.

/// A benchmark command reports any failure the same way: its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
