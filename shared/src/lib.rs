//! The online status service's shared library: the presence rules and
//! everything the three Lambda functions have in common.
//!
//! # Layout
//!
//! - [`domain`]: pure rules (events, registers, merge, status, visibility).
//! - [`config`]: typed configuration read once from the environment.
//! - [`ports`]: the small traits services depend on.
//! - [`adapters`]: Redis, MySQL, DynamoDB and EventBridge, the only code that
//!   knows a driver.
//! - [`services`]: aggregate, read and scan, generic over the ports.
//! - [`app`]: start-up wiring from a config to connected adapters;
//!   [`error`]: error text with its causes; [`telemetry`]: metrics as
//!   CloudWatch EMF lines.

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod ports;
pub mod services;
pub mod telemetry;

/// The allocator of every binary that links this crate (the functions, the
/// local stack, the bench, the tests): mimalloc instead of glibc's malloc.
/// A fan-out allocates a few hundred small blocks per frame on several
/// threads at once (the SDK's request, the registry's replies), and
/// glibc's allocator then took about 40% of the process's samples in
/// `_int_malloc`, `malloc_consolidate` and `unlink_chunk` and doubled
/// `push_fanout_10000`'s spread (docs/BENCHMARKS.md, "The allocator, the
/// load producer's codec and prepared statements").
///
/// [`keep_freed_memory`] turns mimalloc's purging off: returning freed
/// pages to the OS a second after they empty put `madvise` calls into the
/// hot read's tail (`bulk_read_hot_1000` p99 1.44 × the seed's read with
/// it, 1.07 × without).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`,
/// `mimalloc.h`); the unit test below checks it is that option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process for reuse instead of returning it to
/// the OS (mimalloc's `purge_delay` = -1). A function's memory is fixed
/// by its Lambda configuration, so returning pages gains nothing; the
/// cost is a higher peak (`peak_rss_10000` 92 MB instead of 40 MB, under
/// its 128 MB target). Called when [`app::Stores`] connects, which every
/// [`app::App`] does at start; calling it again changes nothing.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an option value; any option and
    // value are accepted, and mimalloc reads this one at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reading an option has no precondition.
        let read = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        let before = read();
        // mimalloc's default for purge_delay is 1,000 (ms, `options.c`);
        // the options beside it default to 1 and 0, so a wrong index shows.
        assert!(before == 1000 || before == -1, "purge_delay read {before}");
        keep_freed_memory();
        assert_eq!(read(), -1);
    }
}
