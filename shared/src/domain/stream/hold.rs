//! Holding back activity (DESIGN §12 "Activity of an online user"): when a
//! new entry only moves an online user's `last_active_ms` (and `next` with
//! it), a connection may be sent it later, at most once per
//! `STREAM_ACTIVITY_REFRESH_MS`, but always before the `next.at_ms` it was
//! last sent comes due. For a viewer an audience leaves out, whose entry
//! only the coarse `last_seen` edge moves, that edge is the only bound.
//! The rule is pure; the fan-out applies it and the scanner flushes what
//! it held.

use crate::domain::Millis;

/// How long before the `next.at_ms` a connection last received a held
/// change must be flushed, in ms: the scanner runs once a minute for each
/// shard, so a flush instant reached just after a run is met by the next
/// one, 60 s later; the other 60 s cover a late or retried run and the
/// asynchronous feed to the stream function.
pub const FLUSH_MARGIN_MS: Millis = 120_000;

/// Clock slack between the functions, in ms: a change is held only when
/// its flush instant is more than this ahead, so the fan-out a flush
/// starts (on another function's clock) never finds it still holdable.
pub const HOLD_SLACK_MS: Millis = 1_000;

/// What a connection was last sent of a user, as far as holding goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    /// When it was sent (epoch ms).
    pub at_ms: Millis,
    /// [`super::Entry::shape`] of the entry sent.
    pub shape: u64,
    /// The `next.at_ms` it carried; `None` for `"next": null`.
    pub next_at: Option<Millis>,
}

impl Shown {
    /// The instant by which a change held against this must go out (epoch
    /// ms): `refresh_ms` after it was sent, and at least
    /// [`FLUSH_MARGIN_MS`] before its `next.at_ms`.
    pub fn flush_at(&self, refresh_ms: i64) -> Millis {
        let refresh = self.at_ms.saturating_add(refresh_ms.max(0));
        match self.next_at {
            Some(next) => refresh.min(next.saturating_sub(FLUSH_MARGIN_MS)),
            None => refresh,
        }
    }
}

/// Whether a new entry of `shape` for a viewer an audience leaves out
/// (DESIGN §13) may be held back at `now` against `shown`, the entry last
/// sent. Such an entry changes by itself only at the edge of its coarse
/// `last_seen`; the user's activity moves just that edge, its `next.at_ms`.
/// Sending that would tell the viewer of each activity as it happens,
/// though the view they have did not change (§12 "Privacy"), so it is held
/// until [`FLUSH_MARGIN_MS`] before the `next.at_ms` last sent, when it
/// must go out (§12 "Activity of an online user"). Returns that instant
/// (epoch ms); `None` (send now) for another shape, nothing sent before,
/// no `next` sent, or that instant no more than [`HOLD_SLACK_MS`] away.
pub fn hold_left_out(shape: u64, shown: Option<&Shown>, now: Millis) -> Option<Millis> {
    let shown = shown?;
    if shape != shown.shape {
        return None;
    }
    let flush = shown.next_at?.saturating_sub(FLUSH_MARGIN_MS);
    (now.saturating_add(HOLD_SLACK_MS) < flush).then_some(flush)
}

/// Whether a new entry of `shape`, `online` or not, may be held back at
/// `now` against `shown`: same shape (status, `manual`, `platforms`), the
/// user online, and the flush instant more than [`HOLD_SLACK_MS`] away.
/// Returns the flush instant when it may (epoch ms). A `refresh_ms` of 0
/// never holds.
pub fn hold(shape: u64, online: bool, shown: Option<&Shown>, now: Millis, refresh_ms: i64) -> Option<Millis> {
    let shown = shown?;
    if refresh_ms <= 0 || !online || shape != shown.shape {
        return None;
    }
    let flush = shown.flush_at(refresh_ms);
    (now.saturating_add(HOLD_SLACK_MS) < flush).then_some(flush)
}
