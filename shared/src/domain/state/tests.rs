use proptest::prelude::*;

use super::*;
use crate::domain::ids::UserId;
use crate::domain::status::Status;
use crate::domain::{ManualStatus, Platform, Platforms};
use crate::domain::{ManualTransition, Transition, UserRecord};

const NOW: Millis = 1_764_270_000_000;

fn ev(kind: EventKind, session: &str, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent {
        kind,
        user_id: UserId::new(42).unwrap(),
        session_id: SessionId::new(session).unwrap(),
        device: None,
        ts_ms,
    }
}

fn on(device: &str, event: PresenceEvent) -> PresenceEvent {
    PresenceEvent { device: Some(device.to_owned()), ..event }
}

/// Devices drawn by the generators: every platform, an unknown device and
/// none, so sessions with and without a platform (and, at equal times,
/// disagreeing ones) meet in every property.
fn arb_device() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("ios".to_owned())),
        Just(Some("web".to_owned())),
        Just(Some("linux".to_owned())),
        Just(Some("tv".to_owned())),
    ]
}

fn presence_of(events: &[PresenceEvent]) -> Presence {
    let mut p = Presence::default();
    for e in events {
        p.apply(e);
    }
    p
}

fn rules() -> Rules {
    Rules::default()
}

#[test]
fn idle_at_exactly_idle_after_is_still_online_and_idle_one_ms_later() {
    let p = presence_of(&[ev(EventKind::Connected, "a", NOW)]);
    let r = rules();
    assert_eq!(p.derive(NOW + r.idle_after_ms, &r).status, Status::Online);
    assert_eq!(p.derive(NOW + r.idle_after_ms + 1, &r).status, Status::Idle);
}

#[test]
fn equal_timestamp_disconnect_wins_in_either_order() {
    for events in [
        [ev(EventKind::Connected, "a", NOW), ev(EventKind::Disconnected, "a", NOW)],
        [ev(EventKind::Disconnected, "a", NOW), ev(EventKind::Connected, "a", NOW)],
    ] {
        let p = presence_of(&events);
        assert_eq!(p.sessions[&SessionId::new("a").unwrap()].register, Register::Disconnected(NOW));
        assert_eq!(p.derive(NOW, &rules()).status, Status::Offline);
        assert_eq!(p.derive(NOW, &rules()).last_active_ms, Some(NOW));
    }
}

#[test]
fn a_tombstone_beats_a_late_connect() {
    let p = presence_of(&[ev(EventKind::Disconnected, "a", NOW), ev(EventKind::Connected, "a", NOW - 10)]);
    let view = p.derive(NOW, &rules());
    assert_eq!(view.status, Status::Offline);
    assert_eq!(view.device_count, 0);
    // The losing connect still counts as the user's last activity.
    assert_eq!(view.last_active_ms, Some(NOW - 10));
}

#[test]
fn heartbeats_keep_a_session_alive_without_counting_as_activity() {
    let r = rules();
    let p = presence_of(&[ev(EventKind::Connected, "a", NOW), ev(EventKind::Heartbeat, "a", NOW + r.session_ttl_ms)]);
    let later = NOW + r.session_ttl_ms + 1000;
    let view = p.derive(later, &r);
    assert_eq!(view.device_count, 1);
    assert_eq!(view.status, Status::Idle);
    assert_eq!(view.last_active_ms, Some(NOW));
}

#[test]
fn a_heartbeat_only_user_is_idle_with_unknown_activity() {
    let p = presence_of(&[ev(EventKind::Heartbeat, "a", NOW)]);
    let view = p.derive(NOW, &rules());
    assert_eq!((view.status, view.last_active_ms, view.device_count), (Status::Idle, None, 1));
}

#[test]
fn a_silent_session_expires_after_session_ttl() {
    let r = rules();
    let p = presence_of(&[ev(EventKind::Connected, "a", NOW)]);
    assert_eq!(p.derive(NOW + r.session_ttl_ms, &r).device_count, 1);
    let gone = p.derive(NOW + r.session_ttl_ms + 1, &r);
    assert_eq!((gone.status, gone.device_count), (Status::Offline, 0));
}

#[test]
fn device_count_counts_live_sessions_only() {
    let p = presence_of(&[
        ev(EventKind::Connected, "a", NOW),
        ev(EventKind::Connected, "b", NOW),
        ev(EventKind::Connected, "c", NOW),
        ev(EventKind::Disconnected, "c", NOW + 1),
    ]);
    let view = p.derive(NOW + 2, &rules());
    assert_eq!((view.status, view.device_count), (Status::Online, 2));
}

#[test]
fn offline_grace_keeps_the_previous_status_then_lets_go() {
    let r = Rules { offline_grace_ms: 10_000, ..rules() };
    let p = presence_of(&[ev(EventKind::Connected, "a", NOW), ev(EventKind::Disconnected, "a", NOW + 1000)]);
    assert_eq!(p.derive(NOW + 1000, &r).status, Status::Online);
    assert_eq!(p.derive(NOW + 10_999, &r).status, Status::Online);
    assert_eq!(p.derive(NOW + 11_000, &r).status, Status::Offline);
    // Without grace the disconnect shows at once.
    assert_eq!(p.derive(NOW + 1000, &rules()).status, Status::Offline);
}

#[test]
fn a_quick_reconnect_inside_the_grace_never_reads_offline() {
    let r = Rules { offline_grace_ms: 10_000, ..rules() };
    let mut p = presence_of(&[ev(EventKind::Connected, "a", NOW), ev(EventKind::Disconnected, "a", NOW + 1000)]);
    assert_eq!(p.derive(NOW + 3000, &r).status, Status::Online);
    p.apply(&ev(EventKind::Connected, "b", NOW + 3000));
    assert_eq!(p.derive(NOW + 30_000, &r).status, Status::Online);
}

#[test]
fn pruning_drops_old_registers_but_keeps_tombstones_for_the_retention() {
    let r = rules();
    let mut p = presence_of(&[ev(EventKind::Disconnected, "a", NOW), ev(EventKind::Connected, "b", NOW)]);
    p.prune(NOW + r.retention_ms(), &r);
    assert_eq!(p.sessions.len(), 2);
    p.prune(NOW + r.retention_ms() + 1, &r);
    assert!(p.sessions.is_empty());
    assert_eq!(p.last_active_ms, Some(NOW));
}

#[test]
fn next_change_is_when_the_user_turns_idle_then_offline() {
    let r = rules();
    let p = presence_of(&[ev(EventKind::Connected, "a", NOW)]);
    let idle_at = p.next_change_after(NOW, &r).unwrap();
    assert_eq!(idle_at, NOW + r.idle_after_ms + 1);
    assert_eq!(p.derive(idle_at - 1, &r).status, Status::Online);
    assert_eq!(p.derive(idle_at, &r).status, Status::Idle);
    let offline_at = p.next_change_after(idle_at, &r).unwrap();
    assert_eq!(p.derive(offline_at - 1, &r).status, Status::Idle);
    assert_eq!(p.derive(offline_at, &r).status, Status::Offline);
    assert_eq!(p.next_change_after(offline_at, &r), None);
}

#[test]
fn a_disconnected_user_needs_no_further_change_without_grace() {
    let p = presence_of(&[ev(EventKind::Connected, "a", NOW), ev(EventKind::Disconnected, "a", NOW + 1)]);
    assert_eq!(p.next_change_after(NOW + 1, &rules()), None);
    let graceful = Rules { offline_grace_ms: 5000, ..rules() };
    assert_eq!(p.next_change_after(NOW + 1, &graceful), Some(NOW + 5001));
}

#[test]
fn a_hidden_user_reads_as_gone_offline_when_they_hid() {
    let r = rules();
    let mut s = UserState::default();
    s.apply(&ev(EventKind::Connected, "a", NOW));
    s.apply(&ev(EventKind::Activity, "a", NOW + 100));
    s.set_visible(false, NOW + 200);
    s.apply(&ev(EventKind::Activity, "a", NOW + 300));
    let public = s.public_view(NOW + 400, &r);
    assert_eq!(
        public,
        View {
            status: Status::Offline,
            last_active_ms: Some(NOW + 100),
            device_count: 0,
            manual: None,
            platforms: None,
            last_seen: None
        }
    );
    // The user themself still sees the truth.
    let own = s.view_for(true, NOW + 400, &r);
    assert_eq!((own.status, own.last_active_ms, own.device_count), (Status::Online, Some(NOW + 300), 1));
}

#[test]
fn a_late_old_event_counts_for_a_hidden_user_as_if_it_came_in_time() {
    let mut s = UserState::default();
    s.apply(&ev(EventKind::Connected, "a", NOW));
    s.set_visible(false, NOW + 200);
    s.apply(&ev(EventKind::Activity, "b", NOW + 150));
    s.apply(&ev(EventKind::Activity, "b", NOW + 250));
    assert_eq!(s.public_view(NOW + 300, &rules()).last_active_ms, Some(NOW + 150));
}

#[test]
fn hiding_a_user_never_seen_shows_no_last_activity_and_unhiding_restores_the_truth() {
    let mut s = UserState::default();
    s.set_visible(false, NOW);
    assert_eq!(s.public_view(NOW, &rules()), View::UNKNOWN);
    s.apply(&ev(EventKind::Connected, "a", NOW + 1));
    assert_eq!(s.public_view(NOW + 2, &rules()), View::UNKNOWN);
    s.set_visible(true, NOW + 3);
    assert_eq!(s.public_view(NOW + 3, &rules()).status, Status::Online);
}

#[test]
fn hiding_twice_keeps_the_first_hide_time() {
    let mut s = UserState::default();
    s.apply(&ev(EventKind::Connected, "a", NOW));
    s.set_visible(false, NOW + 10);
    s.apply(&ev(EventKind::Activity, "a", NOW + 20));
    s.set_visible(false, NOW + 30);
    assert_eq!(s.visibility, Visibility::Hidden { since_ms: NOW + 10, last_active_ms: Some(NOW) });
}

#[test]
fn announce_reports_each_real_public_change_once() {
    let r = rules();
    let mut rec = UserRecord::default();
    assert_eq!(rec.announce(NOW, &r), None, "a user never seen stays offline");
    rec.state.apply(&ev(EventKind::Connected, "a", NOW));
    assert_eq!(rec.announce(NOW, &r), Some(Transition { from: Status::Offline, to: Status::Online, at_ms: NOW }));
    assert_eq!(rec.announce(NOW + 1, &r), None);
    rec.state.set_visible(false, NOW + 2);
    assert_eq!(rec.announce(NOW + 2, &r).map(|t| t.to), Some(Status::Offline));
    // Going idle while hidden reveals nothing.
    assert_eq!(rec.announce(NOW + r.idle_after_ms + 10, &r), None);
    rec.state.set_visible(true, NOW + r.idle_after_ms + 20);
    assert_eq!(rec.announce(NOW + r.idle_after_ms + 20, &r).map(|t| t.to), Some(Status::Idle));
}

// ---- properties -------------------------------------------------------

fn arb_event() -> impl Strategy<Value = PresenceEvent> {
    let kind = prop_oneof![
        Just(EventKind::Connected),
        Just(EventKind::Heartbeat),
        Just(EventKind::Activity),
        Just(EventKind::Disconnected),
    ];
    // A few sessions and a narrow time range make ties and overlaps common.
    (kind, 0..4u8, 0..40i64, arb_device())
        .prop_map(|(kind, s, t, device)| PresenceEvent { device, ..ev(kind, &format!("s{s}"), NOW + t * 1000) })
}

fn arb_presence() -> impl Strategy<Value = Presence> {
    prop::collection::vec(arb_event(), 0..12).prop_map(|events| presence_of(&events))
}

proptest! {
    #[test]
    fn any_order_and_duplication_of_events_gives_the_same_state(
        (events, shuffled) in prop::collection::vec(arb_event(), 0..24)
            .prop_flat_map(|events| (Just(events.clone()), prop::collection::vec(any::<bool>(), events.len())))
            .prop_flat_map(|(events, dup)| {
                let copies: Vec<PresenceEvent> =
                    events.iter().chain(events.iter().zip(&dup).filter(|(_, d)| **d).map(|(e, _)| e)).cloned().collect();
                (Just(events), Just(copies).prop_shuffle())
            }),
    ) {
        prop_assert_eq!(presence_of(&shuffled), presence_of(&events));
    }

    #[test]
    fn join_is_commutative(a in arb_presence(), b in arb_presence()) {
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn join_is_associative(a in arb_presence(), b in arb_presence(), c in arb_presence()) {
        let mut left = a.clone();
        left.join(&b);
        left.join(&c);
        let mut bc = b.clone();
        bc.join(&c);
        let mut right = a.clone();
        right.join(&bc);
        prop_assert_eq!(left, right);
    }

    #[test]
    fn join_is_idempotent(a in arb_presence()) {
        let mut aa = a.clone();
        aa.join(&a);
        prop_assert_eq!(aa, a);
    }

    #[test]
    fn joining_two_halves_equals_applying_all(events in prop::collection::vec(arb_event(), 0..24), split in 0..24usize) {
        let split = split.min(events.len());
        let mut joined = presence_of(&events[..split]);
        joined.join(&presence_of(&events[split..]));
        prop_assert_eq!(joined, presence_of(&events));
    }

    #[test]
    fn pruning_at_a_common_time_keeps_convergence(
        events in prop::collection::vec(arb_event(), 0..24),
        cut in 0..24usize,
        later in 0..4_000_000i64,
    ) {
        // One replica prunes part-way through, the other only at the end.
        let r = Rules { session_ttl_ms: 10_000, ..Rules::default() };
        let cut = cut.min(events.len());
        let mid = NOW + later / 2;
        let end = NOW + later;
        let mut a = presence_of(&events[..cut]);
        a.prune(mid, &r);
        for e in &events[cut..] { a.apply(e); }
        a.prune(end, &r);
        let mut b = presence_of(&events);
        b.prune(end, &r);
        prop_assert_eq!(a.derive(end, &r), b.derive(end, &r));
        // Registers and the newest activity converge exactly. A session's
        // platform and activity are forgotten with its pruned register, so
        // a later event that names no device may revive it without them on
        // one replica only (the limit documented on `Presence::cap`).
        let registers = |p: &Presence| p.sessions.iter().map(|(id, s)| (id.clone(), s.register)).collect::<Vec<_>>();
        prop_assert_eq!(registers(&a), registers(&b));
        prop_assert_eq!(a.last_active_ms, b.last_active_ms);
    }

    #[test]
    fn reads_never_show_online_after_idle_after(events in prop::collection::vec(arb_event(), 1..12), at in 0..700_000i64) {
        // Events span 40 s from NOW and reads go to 700 s past it, well
        // beyond IDLE_AFTER (300 s) yet inside SESSION_TTL, so both sides
        // of the boundary are drawn with sessions still live.
        let r = Rules::default();
        let p = presence_of(&events);
        let now = NOW + at;
        let view = p.derive(now, &r);
        let recent = view.last_active_ms.is_some_and(|la| la >= now - r.idle_after_ms);
        if view.status == Status::Online {
            prop_assert!(recent, "online at {} with last activity {:?}", now, view.last_active_ms);
        }
        if view.device_count > 0 {
            let expected = if recent { Status::Online } else { Status::Idle };
            prop_assert_eq!(view.status, expected);
        }
    }

    #[test]
    fn next_change_is_never_late(events in prop::collection::vec(arb_event(), 1..12), grace in 0..20_000i64, at in 0..200_000i64) {
        let r = Rules { idle_after_ms: 30_000, session_ttl_ms: 90_000, offline_grace_ms: grace, ..Rules::default() };
        let p = presence_of(&events);
        let now = NOW + at;
        let before = p.derive(now, &r).status;
        let next = p.next_change_after(now, &r);
        // Sample the interval up to the announced change: nothing differs.
        let until = next.unwrap_or(now + 400_000);
        let mut t = now;
        while t < until {
            prop_assert_eq!(p.derive(t, &r).status, before, "changed at {} before {:?}", t, next);
            t += 997;
        }
        prop_assert_eq!(p.derive(until - 1, &r).status, before);
    }
}

mod manual_and_erasure;
mod session_cap;
