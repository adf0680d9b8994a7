//! Where a timed call's wall time goes, told by the service's own tracing
//! spans: the write path's `load` (Redis, and SQL for misses), `merge`,
//! `commit` (the SQL compare-and-set and outbox), `cache_write` (Redis) and
//! the aggregator's `decode`.
//!
//! A span's time is the wall time from its first entry to its last exit, so
//! an async step counts its waiting on a server too, and a span entered in
//! several polls (or several rounds of the same name) adds up. Only these
//! spans are recorded; nothing is printed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::span::Id;
use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The spans timed, by name, in the order a batch goes through them.
pub const PHASES: [&str; 5] = ["decode", "load", "merge", "commit", "cache_write"];

/// The totals per span name since the last [`PhaseClock::take`].
#[derive(Clone, Default)]
pub struct PhaseClock {
    totals: Arc<Mutex<BTreeMap<&'static str, Duration>>>,
}

/// First entry and last exit of one span.
struct Window {
    first: Instant,
    last: Option<Instant>,
}

impl PhaseClock {
    /// The process's clock, installed as the global tracing subscriber on
    /// first use. `None` if another subscriber was installed first.
    pub fn global() -> Option<&'static PhaseClock> {
        static CLOCK: OnceLock<Option<PhaseClock>> = OnceLock::new();
        CLOCK
            .get_or_init(|| {
                let clock = PhaseClock::default();
                let only_phases = filter_fn(|meta| {
                    meta.is_span()
                        && PHASES.contains(&meta.name())
                        && (meta.target().starts_with("status_shared") || meta.target().starts_with("aggregator"))
                });
                let subscriber = tracing_subscriber::registry().with(clock.clone().with_filter(only_phases));
                tracing::subscriber::set_global_default(subscriber).ok().map(|()| clock)
            })
            .as_ref()
    }

    /// The totals so far, emptied.
    pub fn take(&self) -> BTreeMap<&'static str, Duration> {
        std::mem::take(&mut *self.totals.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl<S> Layer<S> for PhaseClock
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if extensions.get_mut::<Window>().is_none() {
                extensions.insert(Window { first: Instant::now(), last: None });
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(window) = span.extensions_mut().get_mut::<Window>() {
                window.last = Some(Instant::now());
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(Window { first, last: Some(last) }) = extensions.get::<Window>() else { return };
        let mut totals = self.totals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *totals.entry(span.name()).or_default() += last.duration_since(*first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_counts_from_its_first_entry_to_its_last_exit_and_others_are_ignored() {
        let clock = PhaseClock::default();
        let subscriber = tracing_subscriber::registry().with(clock.clone());
        tracing::subscriber::with_default(subscriber, || {
            let load = tracing::info_span!("load");
            load.in_scope(|| std::thread::sleep(Duration::from_millis(5)));
            std::thread::sleep(Duration::from_millis(20));
            load.in_scope(|| std::thread::sleep(Duration::from_millis(5)));
            drop(load);
            tracing::info_span!("commit").in_scope(|| std::thread::sleep(Duration::from_millis(2)));
            drop(tracing::info_span!("never_entered"));
        });
        let totals = clock.take();
        assert!(totals["load"] >= Duration::from_millis(30), "the gap between entries counts: {totals:?}");
        assert!(totals["commit"] >= Duration::from_millis(2));
        assert!(!totals.contains_key("never_entered"));
        assert!(clock.take().is_empty(), "take empties the totals");
    }
}
