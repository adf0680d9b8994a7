//! The coarse "last seen" of DESIGN §13: how long ago a user was last
//! active, told in four buckets to a viewer left out of their audience who
//! may learn no more than that. The one home of the bucket edges. Depends
//! only on ids, so the view ([`super::View`]) can carry a bucket without a
//! cycle between the audience rule and the state.

use std::fmt;
use std::str::FromStr;

use super::ids::Millis;

/// One day in milliseconds.
pub const DAY_MS: Millis = 24 * 60 * 60 * 1000;
/// Up to this age (inclusive) a last activity is `recently`: 3 days.
pub const RECENTLY_MS: Millis = 3 * DAY_MS;
/// Up to this age (inclusive) it is `within_week`: 7 days.
pub const WITHIN_WEEK_MS: Millis = 7 * DAY_MS;
/// Up to this age (inclusive) it is `within_month`: 30 days; older is
/// `long_ago`.
pub const WITHIN_MONTH_MS: Millis = 30 * DAY_MS;

/// A coarse last seen (DESIGN §13), on the wire `"recently" |
/// "within_week" | "within_month" | "long_ago"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LastSeen {
    Recently,
    WithinWeek,
    WithinMonth,
    LongAgo,
}

impl LastSeen {
    /// Every bucket, nearest first.
    pub const ALL: [LastSeen; 4] = [Self::Recently, Self::WithinWeek, Self::WithinMonth, Self::LongAgo];

    /// The bucket of a last activity at `last_active_ms` read at `now`
    /// (both epoch ms). Each edge belongs to the nearer bucket: exactly 3
    /// days ago is still `recently`, a millisecond more is `within_week`.
    /// An activity stamped after `now` (a producer's clock ahead of the
    /// reader's) is `recently`. Saturating: no pair of instants overflows.
    pub fn of(last_active_ms: Millis, now: Millis) -> LastSeen {
        let age = now.saturating_sub(last_active_ms);
        if age <= RECENTLY_MS {
            Self::Recently
        } else if age <= WITHIN_WEEK_MS {
            Self::WithinWeek
        } else if age <= WITHIN_MONTH_MS {
            Self::WithinMonth
        } else {
            Self::LongAgo
        }
    }

    /// The first instant after `now` at which [`LastSeen::of`] of the same
    /// activity names another bucket, or `None` from `long_ago` on (the
    /// push path's `next`, DESIGN §12).
    pub fn next_change_after(last_active_ms: Millis, now: Millis) -> Option<Millis> {
        let edge = match Self::of(last_active_ms, now) {
            Self::Recently => RECENTLY_MS,
            Self::WithinWeek => WITHIN_WEEK_MS,
            Self::WithinMonth => WITHIN_MONTH_MS,
            Self::LongAgo => return None,
        };
        Some(last_active_ms.saturating_add(edge).saturating_add(1))
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recently => "recently",
            Self::WithinWeek => "within_week",
            Self::WithinMonth => "within_month",
            Self::LongAgo => "long_ago",
        }
    }
}

impl fmt::Display for LastSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LastSeen {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|b| b.as_str() == s).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_764_270_000_000;

    #[test]
    fn each_edge_belongs_to_the_nearer_bucket_and_one_ms_more_moves_on() {
        for (edge, at, past) in [
            (RECENTLY_MS, LastSeen::Recently, LastSeen::WithinWeek),
            (WITHIN_WEEK_MS, LastSeen::WithinWeek, LastSeen::WithinMonth),
            (WITHIN_MONTH_MS, LastSeen::WithinMonth, LastSeen::LongAgo),
        ] {
            assert_eq!(LastSeen::of(NOW - edge + 1, NOW), at, "{edge} - 1 ms");
            assert_eq!(LastSeen::of(NOW - edge, NOW), at, "exactly {edge}");
            assert_eq!(LastSeen::of(NOW - edge - 1, NOW), past, "{edge} + 1 ms");
        }
        assert_eq!((RECENTLY_MS, WITHIN_WEEK_MS, WITHIN_MONTH_MS), (259_200_000, 604_800_000, 2_592_000_000));
    }

    #[test]
    fn the_future_and_the_extremes_neither_overflow_nor_mislead() {
        assert_eq!(LastSeen::of(NOW + 5_000, NOW), LastSeen::Recently);
        assert_eq!(LastSeen::of(NOW, NOW), LastSeen::Recently);
        assert_eq!(LastSeen::of(Millis::MIN, Millis::MAX), LastSeen::LongAgo);
        assert_eq!(LastSeen::of(Millis::MAX, Millis::MIN), LastSeen::Recently);
        assert_eq!(LastSeen::next_change_after(Millis::MAX, Millis::MAX), Some(Millis::MAX));
    }

    #[test]
    fn the_next_change_is_the_first_instant_of_the_next_bucket() {
        let active = NOW - DAY_MS;
        let mut now = NOW;
        let mut seen = vec![LastSeen::of(active, now)];
        while let Some(at) = LastSeen::next_change_after(active, now) {
            assert_eq!(LastSeen::of(active, at - 1), *seen.last().unwrap(), "still the same just before");
            now = at;
            seen.push(LastSeen::of(active, now));
        }
        assert_eq!(seen, LastSeen::ALL.to_vec());
    }

    #[test]
    fn wire_names_round_trip() {
        for bucket in LastSeen::ALL {
            assert_eq!(bucket.as_str().parse::<LastSeen>(), Ok(bucket));
        }
        assert!("lately".parse::<LastSeen>().is_err());
    }
}
