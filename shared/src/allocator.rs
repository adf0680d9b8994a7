//! The allocator, chosen per binary (docs/DESIGN.md §10, docs/BENCHMARKS.md
//! "The allocator, per binary").
//!
//! The binaries that serve many small requests at once on several threads
//! allocate with mimalloc: `status-api`, `status-stream`, the local stack
//! (`online-status-local`, which hosts them) and the benchmark that
//! measures them in its own process. A fan-out allocates a few hundred
//! small blocks per frame (the SDK's request, the registry's replies), and
//! glibc's allocator then took about 40% of the process's samples and
//! doubled `push_fanout_10000`'s spread.
//!
//! The batch functions (`aggregator`, `idle-scanner`) and the authorizer
//! keep glibc's allocator: a batch's memory is a few large buffers and
//! many blocks freed together, glibc returns the large ones to the OS
//! as they go, and mimalloc raised `peak_rss_10000` from 41.7 MB to
//! 92 MB (63 MB with mimalloc's older v2 series), where Lambda bills the
//! memory a function is configured with.
//!
//! A binary opts in with [`use_mimalloc!`] at its root and calls
//! [`keep_freed_memory`] first thing in `main`.

pub use mimalloc::MiMalloc;

/// Makes mimalloc the global allocator of the binary whose root invokes
/// it (one `static`, `ALLOCATOR`). Only a binary's `main.rs` may use it:
/// a program has one global allocator.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        /// mimalloc, as `status_shared::allocator` says.
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::MiMalloc = $crate::allocator::MiMalloc;
    };
}

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`,
/// `mimalloc.h`); the unit test below checks it is that option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory mimalloc freed in the process for reuse instead of
/// returning it to the OS a second after it empties (mimalloc's
/// `purge_delay` = -1): those returns put `madvise` calls into the hot
/// read's tail (`bulk_read_hot_1000` p99 1.44 × the seed's read with
/// them, 1.07 × without). A function's memory is fixed by its Lambda
/// configuration, so returning pages gains nothing. For the binaries of
/// [`use_mimalloc!`]; calling it again changes nothing, and in a binary
/// that allocates with glibc it changes nothing either.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an option value; any option and
    // value are accepted, and mimalloc reads this one at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
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
