//! When the idle scanner next looks at a user, and how a new due time meets
//! the one a shard's due index already holds (DESIGN §4: stored status is
//! derived at the write, so someone must rewrite it when it changes; §6: a
//! change written without its announcement is still announced).
//!
//! Every writer of a record computes [`next_due`]; the cache adapter's
//! index script only applies [`replaces`] to the scores it finds.

use super::ids::{Millis, MAX_INSTANT_MS};
use super::record::UserRecord;
use super::status::Rules;

/// When the scanner must next look at `record`, written at `now`, in epoch
/// ms; `None` when only a new event can change it.
///
/// At `now` itself when the record owes an announcement (a copy written
/// without announcing, such as a repair or a backfill, after the user's
/// public status changed); else at the next time its derived status may
/// change ([`super::Presence::next_change_after`]), which may be early,
/// never late. A record never stored (version 0) is never due.
///
/// A manual status with an expiry makes the record due at `expires_at_ms`
/// too, so its expiry is announced within one scan interval (DESIGN §7.1);
/// a manual change not yet announced makes it due at once.
///
/// A change due after [`MAX_INSTANT_MS`] (a session stamped near the end of
/// time, whose TTL would end past it) is never due: no store can hold that
/// instant (DESIGN §7), and nothing real changes before it.
pub fn next_due(record: &UserRecord, now: Millis, rules: &Rules) -> Option<Millis> {
    if record.version > 0 && (record.announcement_owed(now, rules) || record.manual_announcement_owed(now)) {
        return Some(now);
    }
    let manual_end = record.state.manual.as_ref().and_then(|m| m.expires_at_ms).filter(|end| *end > now);
    record
        .state
        .presence
        .next_change_after(now, rules)
        .into_iter()
        .chain(manual_end)
        .min()
        .filter(|due| *due <= MAX_INSTANT_MS)
}

/// Whether a writer's due time `proposed`, written at `now`, replaces the
/// index's `current` one (`None`: the user is not in the index).
///
/// An earlier time always wins: waking the scanner early costs one look,
/// late would leave a stored status stale. A current time that has passed
/// is replaced too, even by a later one: a scanner may be working from that
/// old time, and moving it makes the scanner's conditional reschedule
/// (which only moves a score it read) leave the writer's newer time alone.
pub fn replaces(current: Option<Millis>, proposed: Millis, now: Millis) -> bool {
    match current {
        None => true,
        Some(current) => proposed < current || current <= now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, PresenceEvent, SessionId, Status, UserId};

    const NOW: Millis = 1_764_270_000_000;

    fn connected_at(ts_ms: Millis) -> UserRecord {
        let mut record = UserRecord { version: 3, ..Default::default() };
        record.state.apply(&PresenceEvent {
            kind: EventKind::Connected,
            user_id: UserId::new(10).unwrap(),
            session_id: SessionId::new("a").unwrap(),
            device: None,
            ts_ms,
        });
        record
    }

    #[test]
    fn an_announced_online_user_is_due_when_turning_idle() {
        let rules = Rules::default();
        let mut record = connected_at(NOW);
        record.announced = Some(Status::Online);
        assert_eq!(next_due(&record, NOW, &rules), Some(NOW + rules.idle_after_ms + 1));
    }

    #[test]
    fn a_change_past_the_last_storable_instant_is_never_due() {
        let rules = Rules::default();
        let near_end = MAX_INSTANT_MS - rules.idle_after_ms;
        let mut record = connected_at(near_end);
        record.announced = Some(Status::Online);
        assert_eq!(next_due(&record, near_end, &rules), None, "idle and the TTL both fall past the end");
        let seen = MAX_INSTANT_MS - rules.session_ttl_ms - 1;
        let mut earlier = connected_at(seen);
        earlier.announced = Some(Status::Idle);
        let after_idle = seen + rules.idle_after_ms + 10;
        assert_eq!(
            next_due(&earlier, after_idle, &rules),
            Some(MAX_INSTANT_MS),
            "a TTL ending at the last instant is due"
        );
    }

    #[test]
    fn a_copy_that_owes_its_announcement_is_due_at_once() {
        let rules = Rules::default();
        let mut record = connected_at(NOW);
        record.announced = Some(Status::Online);
        let later = NOW + rules.idle_after_ms + 10;
        assert_eq!(next_due(&record, later, &rules), Some(later), "idle is owed, so look now");
        record.announced = Some(Status::Idle);
        assert_eq!(next_due(&record, later, &rules), Some(NOW + rules.session_ttl_ms + 1), "then at the expiry");
    }

    #[test]
    fn a_record_never_stored_owes_nothing() {
        let rules = Rules::default();
        let mut record = connected_at(NOW);
        record.version = 0;
        // Unannounced but version 0: only the presence's own next change.
        assert_eq!(next_due(&record, NOW, &rules), Some(NOW + rules.idle_after_ms + 1));
        assert_eq!(next_due(&UserRecord::default(), NOW, &rules), None, "nothing to ever change");
    }

    #[test]
    fn an_offline_user_who_was_announced_is_never_due() {
        let rules = Rules::default();
        let mut record = connected_at(NOW);
        let after_expiry = NOW + rules.session_ttl_ms + 1;
        record.announced = Some(Status::Offline);
        assert_eq!(next_due(&record, after_expiry, &rules), None);
        record.announced = Some(Status::Idle);
        assert_eq!(next_due(&record, after_expiry, &rules), Some(after_expiry), "offline is still owed");
    }

    #[test]
    fn a_manual_expiry_makes_the_record_due_then() {
        use crate::domain::{ManualState, ManualStatus};
        let rules = Rules::default();
        let mut record = connected_at(NOW);
        record.announced = Some(Status::Online);
        let manual = ManualStatus { state: ManualState::Dnd, message: None, expires_at_ms: Some(NOW + 1000) };
        record.state.manual = Some(manual.clone());
        assert_eq!(next_due(&record, NOW, &rules), Some(NOW), "the start is owed");
        record.announced_manual = Some(manual);
        assert_eq!(next_due(&record, NOW, &rules), Some(NOW + 1000), "then at the expiry, before idle");
        assert_eq!(next_due(&record, NOW + 1000, &rules), Some(NOW + 1000), "at the expiry the clear is owed");
        record.state.set_visible(false, NOW);
        record.announced = Some(Status::Offline);
        assert_eq!(
            next_due(&record, NOW + 1000, &rules),
            Some(NOW + rules.idle_after_ms + 1),
            "nothing is owed for a hidden user"
        );
    }

    #[test]
    fn an_earlier_time_or_a_passed_one_is_replaced() {
        assert!(replaces(None, NOW + 5, NOW), "absent: added");
        assert!(replaces(Some(NOW + 10), NOW + 5, NOW), "earlier wins");
        assert!(!replaces(Some(NOW + 10), NOW + 20, NOW), "a later time waits for the earlier look");
        assert!(!replaces(Some(NOW + 10), NOW + 10, NOW), "the same time is no change");
        assert!(replaces(Some(NOW - 1), NOW + 20, NOW), "a passed time is moved even later");
        assert!(replaces(Some(NOW), NOW + 20, NOW), "a time due exactly now has passed");
    }
}
