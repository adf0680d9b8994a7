//! The stream function's metrics (DESIGN §12, the README's "Operating
//! it"): connections opened and closed, messages by route, the ids a
//! subscribe asks for, adds and holds, per resume the change-log entries
//! read, the cursor's age and resets, and per fan-out the users,
//! connections, frames, entries held back, `410`s, failed posts and the
//! lag from the earliest commit to the end of the fan-out. Read off the
//! event, the answer and what a subscribe did, so the routes keep their
//! signatures.

use serde_json::Value;
use status_shared::domain::{FeedChange, Millis};
use status_shared::services::Subscribed;
use status_shared::telemetry::names::{
    CONNECTIONS_CLOSED, CONNECTIONS_GONE, CONNECTIONS_OPENED, ENTRIES_HELD, FANOUT_CONNECTIONS, FANOUT_LAG,
    FANOUT_USERS, FRAMES_SENT, MESSAGES, POST_FAILURES, RESUME_CURSOR_AGE, RESUME_LOG_ENTRIES, RESUME_RESETS,
    SUBSCRIBED_IDS, SUBSCRIPTIONS_ADDED, SUBSCRIPTIONS_HELD,
};
use status_shared::telemetry::{Measures, ROUTE};

use crate::error::InvokeFailure;
use crate::event::StreamEvent;

/// The oldest claim of a commit instant a feed change may make and still
/// be sampled as `FanoutLag`: one day (ms). A feed is the committers' (or
/// the scanner's flush of held entries, minutes old at most); a change
/// claiming an older commit is a forged or broken feed, which must not
/// set off the fan-out lag alarm, and is left out of the sample.
pub const FANOUT_LAG_SAMPLED_MS: Millis = 24 * 3_600_000;

/// A fan-out's lag as `FanoutLag` samples it: from the earliest commit of
/// `changes` to `now` (ms), 0 for a commit stamped later than `now`;
/// `None` when no change has a commit within [`FANOUT_LAG_SAMPLED_MS`]
/// before `now`.
pub fn fanout_lag_ms(changes: &[FeedChange], now: Millis) -> Option<Millis> {
    changes
        .iter()
        .map(|change| now.saturating_sub(change.at_ms).max(0))
        .filter(|lag| *lag <= FANOUT_LAG_SAMPLED_MS)
        .max()
}

/// Notes what one invocation did, finished at `now` (ms).
pub fn record(m: &Measures, event: &StreamEvent, raw: &Value, outcome: &Result<Value, InvokeFailure>, now: Millis) {
    let answered = outcome.as_ref().ok();
    match event {
        StreamEvent::Connect { .. } => {
            if answered.is_some_and(|a| a["statusCode"] == 200) {
                m.count(CONNECTIONS_OPENED, 1);
            }
        }
        StreamEvent::Disconnect { .. } => m.count(CONNECTIONS_CLOSED, 1),
        StreamEvent::Message { body, .. } => {
            let route = raw["requestContext"]["routeKey"].as_str().unwrap_or("$default");
            let route = match route {
                "subscribe" | "unsubscribe" | "ping" => route,
                _ => "$default",
            };
            m.count_by(MESSAGES, ROUTE, route.to_owned(), 1);
            if route == "subscribe" {
                let ids = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|b| b["user_ids"].as_array().map(Vec::len))
                    .unwrap_or(0);
                m.sample(SUBSCRIBED_IDS, ids as f64);
            }
        }
        StreamEvent::Feed(feed) => {
            if let Some(fanout) = answered.map(|a| &a["fanout"]) {
                let count = |field: &str| fanout[field].as_u64().map_or(0, |n| usize::try_from(n).unwrap_or(0));
                m.count(FANOUT_USERS, count("users"));
                m.count(FANOUT_CONNECTIONS, count("connections"));
                m.count(FRAMES_SENT, count("frames"));
                m.count(ENTRIES_HELD, count("held"));
                m.count(CONNECTIONS_GONE, count("gone"));
                m.count(POST_FAILURES, count("retried"));
            }
            if let Err(InvokeFailure::Unserved { failed, retried }) = outcome {
                m.count(POST_FAILURES, failed.saturating_add(*retried));
            }
            if let Some(lag) = fanout_lag_ms(&feed.feed, now) {
                m.sample(FANOUT_LAG, lag as f64);
            }
        }
        StreamEvent::Invalid(_) => {}
    }
}

/// Notes what an accepted subscribe did: the ids it added and the ids its
/// connection holds; for a resume, the change-log entries it read, the
/// cursor's age (ms) and whether it was answered by a `reset` snapshot.
pub fn record_subscribe(m: &Measures, subscribed: &Subscribed) {
    m.sample(SUBSCRIPTIONS_ADDED, subscribed.added as f64);
    m.sample(SUBSCRIPTIONS_HELD, subscribed.held as f64);
    if let Some(resume) = &subscribed.resume {
        m.sample(RESUME_LOG_ENTRIES, resume.log_entries as f64);
        if let Some(age) = resume.cursor_age_ms {
            m.sample(RESUME_CURSOR_AGE, age as f64);
        }
        m.count(RESUME_RESETS, usize::from(resume.reset));
    }
}

#[cfg(test)]
mod tests {
    use status_shared::domain::UserId;

    use super::*;

    fn change(at_ms: Millis) -> FeedChange {
        FeedChange { user_id: UserId::new(7).expect("id"), version: 1, at_ms }
    }

    #[test]
    fn the_lag_is_from_the_earliest_commit_and_never_negative() {
        let now = 1_800_000_000_000;
        assert_eq!(fanout_lag_ms(&[change(now - 40), change(now - 250), change(now + 9)], now), Some(250));
        assert_eq!(fanout_lag_ms(&[change(now + 9)], now), Some(0));
        assert_eq!(fanout_lag_ms(&[], now), None);
    }

    #[test]
    fn a_commit_claimed_more_than_a_day_ago_is_not_sampled() {
        let now = 1_800_000_000_000;
        assert_eq!(fanout_lag_ms(&[change(now - FANOUT_LAG_SAMPLED_MS)], now), Some(FANOUT_LAG_SAMPLED_MS));
        assert_eq!(fanout_lag_ms(&[change(now - FANOUT_LAG_SAMPLED_MS - 1)], now), None);
        assert_eq!(fanout_lag_ms(&[change(0), change(-5), change(now - 30)], now), Some(30));
    }
}
