//! The checks behind the fuzz targets in `fuzz/`: each takes arbitrary
//! bytes, feeds them to the decoders at one boundary of the service
//! (DESIGN §3 events, §7 the HTTP API, §5 the stores) and panics only when
//! an invariant of that boundary breaks. A decoder may refuse any input; it
//! may never panic, and what it accepts must be valid.
//!
//! The fuzz targets call these under libFuzzer; `tests/corpus.rs` replays
//! every committed corpus file (`fuzz/corpus/<target>/`) through the same
//! functions in the ordinary test run, where no fuzzer is installed.

use status_shared::domain::Millis;

pub mod apigw_request;
pub mod msk_event;
pub mod redis_record;
pub mod sql_row;

/// The service clock every check runs at (epoch ms): the contract's
/// example time, 2025-11-27T19:00:00Z.
pub const NOW_MS: Millis = 1_764_270_000_000;

/// How far ahead of [`NOW_MS`] an event may be stamped (ms): the
/// aggregator's default `MAX_CLOCK_SKEW_MS`.
pub const MAX_CLOCK_SKEW_MS: i64 = 300_000;

/// A check: arbitrary bytes in, a panic only for a broken invariant.
pub type Check = fn(&[u8]);

/// Every fuzz target by its name (its binary in `fuzz/fuzz_targets/` and
/// its corpus directory `fuzz/corpus/<name>/`), with its check.
pub const TARGETS: &[(&str, Check)] =
    &[("msk_event", msk_event::check), ("apigw_request", apigw_request::check), ("redis_record", redis_record::check)];
