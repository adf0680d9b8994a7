//! What one call notes for its metrics on the way (bulk size, Redis hits
//! and SQL fallbacks, what a write published): a task-local that the
//! measured edge scopes around the call, so the routes keep their
//! signatures and a call outside the edge (a test of the handler alone)
//! notes nothing.

use std::cell::RefCell;

use status_shared::services::CommitOutcome;

/// What one call noted for its metrics.
#[derive(Debug, Default)]
pub struct CallMeasures {
    /// Distinct ids of a bulk read.
    pub bulk_size: Option<usize>,
    /// Users a read found in Redis.
    pub hits: usize,
    /// Users a read took from SQL.
    pub fallbacks: usize,
    /// Whether the call went down the write path (so the outbox may have
    /// moved).
    pub wrote: bool,
    /// Outbox events the bus accepted during the call.
    pub published: usize,
    /// Whether a publish left events waiting.
    pub publish_failed: bool,
    /// Users a write sent to the repair buffer (Redis did not take them).
    pub sent_to_repair: usize,
    /// Changes the push feed accepted (DESIGN §12).
    pub fed: usize,
    /// Whether the push feed refused a write's changes.
    pub feed_failed: bool,
}

impl CallMeasures {
    /// Notes what a commit did.
    pub fn commit(&mut self, outcome: &CommitOutcome) {
        self.published += outcome.published;
        self.publish_failed |= outcome.publish_failed;
        self.fed += outcome.fed;
        self.feed_failed |= outcome.feed_failed;
        if !outcome.cache_ok {
            self.sent_to_repair += outcome.written.len();
        }
    }
}

tokio::task_local! {
    pub(crate) static CALL: RefCell<CallMeasures>;
}

/// Notes into the current call's measures; nothing outside a measured call.
pub(crate) fn note(f: impl FnOnce(&mut CallMeasures)) {
    let _ = CALL.try_with(|call| f(&mut call.borrow_mut()));
}
